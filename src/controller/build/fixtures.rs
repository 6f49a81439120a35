//! Fixtures of the builders' unit tests: the `acme/shop` PR 123 preview, inline and from a
//! template with dependencies and setup Jobs.

use super::Preview;
use crate::api::PreviewEnvironmentSpec;
use crate::config::{Config, IngressConfig};
use crate::naming::Owner;
use crate::template::Rendered;

/// `acme/shop` PR 123: `web` (exposed, probed), `api-v2` (two replicas), `worker` (no port),
/// and an `e2e` test.
pub fn spec() -> PreviewEnvironmentSpec {
    serde_json::from_value(serde_json::json!({
        "repository": "acme/shop",
        "pullRequest": 123,
        "headSha": "4f2c9e1d8b7a",
        "services": [
            {"name": "web", "image": "web:1", "port": 8080, "expose": true, "readinessPath": "/healthz",
             "podAnnotations": {"team": "shop"}},
            {"name": "api-v2", "image": "api:1", "port": 9090, "replicas": 2},
            {"name": "worker", "image": "worker:1", "env": [{"name": "Q", "value": "orders"}]}
        ],
        "tests": [{"name": "e2e", "image": "e2e:1", "timeout": "20m", "retries": 2,
                   "env": [{"name": "EXTRA", "value": "1"}],
                   "podAnnotations": {"preview.dev/simulate": "fail"}}]
    }))
    .expect("fixture")
}

/// The preview of `spec` without a template, in `pr-shop-pr-123-abcdef`.
pub fn preview(spec: &PreviewEnvironmentSpec) -> Preview<'_> {
    Preview {
        spec,
        dependencies: &[],
        setup: &[],
        owner: Owner {
            namespace: "team-shop".into(),
            name: "shop-pr-123".into(),
            uid: "uid-1".into(),
            repository: spec.repository.clone(),
            pull_request: spec.pull_request,
        },
        namespace: "pr-shop-pr-123-abcdef".into(),
        rerun_tests: None,
        asleep: false,
        helm_releases: &[],
        kustomizations: &[],
    }
}

/// A config exposing services under `preview.example.com`, with a TLS Secret or not.
pub fn with_ingress(tls: bool) -> Config {
    Config {
        ingress: Some(IngressConfig {
            base_domain: "preview.example.com".into(),
            class: Some("nginx".into()),
            tls_secret: tls.then(|| "wildcard".to_string()),
        }),
        ..Config::default()
    }
}

/// [`spec`] rendered through a template with dependencies `db` (sized volume) and `cache`, and
/// setup Jobs `migrate` (every sha) and `seed` (once).
pub fn shop() -> Rendered {
    let template: crate::api::template::PreviewTemplateSpec =
        serde_json::from_value(serde_json::json!({
            "secrets": [{"name": "shop-db"}],
            "dependencies": [
                {"name": "db", "image": "postgres:17", "port": 5432,
                 "readiness": {"exec": ["pg_isready"]},
                 "storage": {"size": "1Gi", "mountPath": "/var/lib/postgresql/data"},
                 "env": [{"name": "POSTGRES_PASSWORD",
                          "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "password"}}}]},
                {"name": "cache", "image": "redis:7", "port": 6379, "readiness": {"tcpSocket": true}}
            ],
            "setup": [{"name": "migrate", "image": "migrate:1"},
                      {"name": "seed", "image": "seed:1", "runOn": "Once"}],
            "services": [{"name": "web", "image": "web:1", "port": 8080}],
        }))
        .expect("template fixture");
    crate::template::render(
        &spec(),
        crate::template::Target {
            name: "shop-pr-123",
            namespace: "pr-shop-pr-123-abcdef",
            template: "shop",
            host: None,
        },
        &template,
    )
    .expect("renders")
}

/// The preview of `rendered`, with its dependencies and setup Jobs.
pub fn from_template(rendered: &Rendered) -> Preview<'_> {
    Preview {
        dependencies: &rendered.dependencies,
        setup: &rendered.setup,
        ..preview(&rendered.spec)
    }
}
