//! Spec fixtures: the inline spec builder, its slim template form, and the shop template.

use preview_operator::api::PreviewEnvironment;

/// The one spec fixture of the cluster tests: `repository` PR `pr` at `sha` with one `web`
/// service on port 8080 and no tests, grown with the methods below. JSON, not the typed spec:
/// invalid specs must reach the API server untouched.
pub fn spec(repository: &str, pr: i64, sha: &str) -> Spec {
    Spec(serde_json::json!({
        "repository": repository,
        "pullRequest": pr,
        "headSha": sha,
        "services": [{"name": "web", "image": "web:1", "port": 8080}],
    }))
}

/// The slim PreviewEnvironment CI applies for a team's template: PR 12 of `acme/shop` at `sha`,
/// with no services; name the template with [`Spec::template`]. The same builder as [`spec`],
/// so the two forms grow with the same methods.
pub fn slim(sha: &str) -> Spec {
    Spec(serde_json::json!({
        "repository": "acme/shop",
        "pullRequest": 12,
        "headSha": sha,
    }))
}

/// See [`spec`] and [`slim`].
#[derive(Clone, Debug)]
pub struct Spec(pub serde_json::Value);

impl Spec {
    /// Replaces the services.
    pub fn services(self, services: serde_json::Value) -> Spec {
        self.with("services", services)
    }

    /// Replaces the tests.
    pub fn tests(self, tests: serde_json::Value) -> Spec {
        self.with("tests", tests)
    }

    /// Names the PreviewTemplate the preview is made from.
    pub fn template(self, name: &str) -> Spec {
        self.with("templateRef", serde_json::json!({"name": name}))
    }

    /// Sets the images CI built, by service name.
    pub fn images(self, images: serde_json::Value) -> Spec {
        self.with("images", images)
    }

    /// Sets the template's parameters.
    pub fn parameters(self, parameters: serde_json::Value) -> Spec {
        self.with("parameters", parameters)
    }

    /// Names the PreviewClass.
    pub fn class(self, name: &str) -> Spec {
        self.with("previewClassName", serde_json::Value::from(name))
    }

    /// Replaces the pull request number.
    pub fn pull_request(self, pr: i64) -> Spec {
        self.with("pullRequest", serde_json::Value::from(pr))
    }

    /// Sets any other field of the spec.
    pub fn with(mut self, field: &str, value: serde_json::Value) -> Spec {
        self.0[field] = value;
        self
    }

    pub fn json(self) -> serde_json::Value {
        self.0
    }

    /// The PreviewEnvironment `name` with this spec.
    pub fn named(self, name: &str) -> PreviewEnvironment {
        preview(name, serde_json::json!({}), self.0)
    }

    /// The PreviewEnvironment `name` with this spec and these labels.
    pub fn labelled(self, name: &str, labels: serde_json::Value) -> PreviewEnvironment {
        preview(name, labels, self.0)
    }
}

/// A PreviewEnvironment from JSON; `labels` may be `{}`. Prefer [`spec`].
pub fn preview(
    name: &str,
    labels: serde_json::Value,
    spec: serde_json::Value,
) -> PreviewEnvironment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "preview.dev/v1alpha1",
        "kind": "PreviewEnvironment",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }))
    .unwrap_or_else(|e| panic!("test fixture {name} is not a PreviewEnvironment: {e}"))
}

/// The inline shop of the lifecycle tests: PR 7 of `acme/shop` at `sha`, an exposed `web`
/// with a readiness path, a `worker`, and an `e2e` test, all tagged with `sha`.
pub fn shop(sha: &str) -> serde_json::Value {
    spec("acme/shop", 7, sha)
        .services(serde_json::json!([
            {"name": "web", "image": format!("ghcr.io/acme/web:{sha}"), "port": 8080, "expose": true,
             "readinessPath": "/healthz"},
            {"name": "worker", "image": format!("ghcr.io/acme/worker:{sha}")}
        ]))
        .tests(serde_json::json!([{"name": "e2e", "image": format!("ghcr.io/acme/e2e:{sha}"), "timeout": "5m"}]))
        .json()
}

/// A team's template: a parameter, a copied Secret and ConfigMap, a PostgreSQL-like dependency,
/// a migration setup Job, a service reading both sources, and a test.
pub fn shop_template() -> serde_json::Value {
    serde_json::json!({
        "parameters": [{"name": "seed", "default": "small", "pattern": "^(small|large)$"}],
        "secrets": [{"name": "shop-db"}],
        "configMaps": [{"name": "shop-config"}],
        "dependencies": [{
            "name": "db", "image": "ghcr.io/acme/postgres:17", "port": 5432,
            "readiness": {"tcpSocket": true},
            "env": [{"name": "POSTGRES_PASSWORD",
                     "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "password"}}}],
        }],
        "setup": [{"name": "migrate", "image": "ghcr.io/acme/shop-migrate:<< shortSha >>",
                   "args": ["--seed", "<< params.seed >>"], "timeout": "5m"}],
        "services": [{
            "name": "web", "image": "ghcr.io/acme/shop-web:<< shortSha >>", "port": 8080,
            "env": [
                {"name": "DB_PASSWORD",
                 "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "password"}}},
                {"name": "MODE",
                 "valueFrom": {"configMapKeyRef": {"name": "shop-config", "key": "mode"}}},
                {"name": "PR", "value": "pr-<< pullRequest >>"},
            ],
        }],
        "tests": [{"name": "e2e", "image": "ghcr.io/acme/shop-e2e:<< shortSha >>", "timeout": "5m"}],
    })
}
