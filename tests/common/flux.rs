//! Previews delivered through Flux on the rig: what hack/test.sh serves (the Flux controllers,
//! a loopback Helm repository and Git host, hack/rig/flux-fixtures), Git repositories and
//! commits made through the fixtures server's control endpoint, a class that allows Flux, and
//! Flux's objects read as dynamic objects.
//!
//! Classes and templates are written as JSON through dynamic objects, not the crate's types:
//! the API server, not a Rust type, decides what a field means.

use std::process::Command;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};

use super::{Tenant, TestClass, rig_var, wait_for};

/// The demo chart of the fixtures (a Deployment with a sidecar and a ConfigMap volume, the
/// ConfigMap, a Service, an Ingress).
pub const CHART: &str = "demo";
/// The fixtures' directory: the demo chart and the kustomization.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/rig/flux-fixtures");
/// The registry every image of the fixtures comes from; test classes allow only it.
pub const REGISTRY: &str = "registry.preview.invalid/";
/// The base domain of the test classes: a preview's host is `<namespace>.preview.test`.
pub const BASE_DOMAIN: &str = "preview.test";
/// The ServiceAccount Flux impersonates in a preview namespace.
pub const APPLIER: &str = "preview-applier";
/// The GitRepository of the pull request's repository at `sha`: one per commit.
pub fn source(sha: &str) -> String {
    format!("source-{}", &sha[..12])
}

/// What hack/test.sh serves for Flux, read from its environment. Panics, naming the command,
/// when it is missing, so no Flux test passes without the rig and Flux.
#[derive(Clone, Debug)]
pub struct FluxRig {
    /// The Helm repository serving the demo chart (`http://127.0.0.1:P/`).
    pub helm_repo: String,
    /// The demo chart's version there.
    pub chart_version: String,
    /// The Git host: `<git_url><owner>/<repo>.git` is a repository (ends with `/`).
    pub git_url: String,
    /// The fixtures server's control endpoint (`http://127.0.0.1:P/-/`).
    pub control: String,
    /// The ClusterRole the operator binds to the applier in preview namespaces.
    pub applier_role: String,
}

impl FluxRig {
    pub fn from_env() -> FluxRig {
        let rig = FluxRig {
            helm_repo: rig_var("PREVIEW_FLUX_HELM_REPO"),
            chart_version: rig_var("PREVIEW_FLUX_CHART_VERSION"),
            git_url: rig_var("PREVIEW_FLUX_GIT_URL"),
            control: rig_var("PREVIEW_FLUX_CONTROL"),
            applier_role: rig_var("PREVIEW_OPERATOR_FLUX_APPLIER_ROLE"),
        };
        // The fixtures server answers (an empty POST is refused, but by the server).
        let (code, body) = post(&format!("{}commit", rig.control), &[], None);
        assert_eq!(
            code, 400,
            "the Flux fixtures server at {} does not answer (hack/test.sh starts it): {body}",
            rig.control
        );
        rig
    }

    /// Creates the Git repository `repository` (`owner/name`) with one commit holding the demo
    /// chart under `charts/demo` and the kustomization under `deploy`, and returns its full sha.
    pub fn create_repository(&self, repository: &str) -> String {
        self.commit(
            repository,
            &[
                ("charts/demo", &format!("{FIXTURES}/charts/demo")),
                ("deploy", &format!("{FIXTURES}/kustomize/demo")),
            ],
        )
    }

    /// As [`Self::create_repository`], at a commit whose short sha is digits only: what YAML
    /// reads as a number.
    pub fn create_repository_with_short_sha_of_digits(&self, repository: &str) -> String {
        let mut query = vec![
            ("repo", repository.to_string()),
            ("shortsha", "digits".to_string()),
        ];
        query.extend([
            ("dir", format!("charts/demo={FIXTURES}/charts/demo")),
            ("dir", format!("deploy={FIXTURES}/kustomize/demo")),
        ]);
        let sha = self.control_call("commit", &query, None);
        assert!(sha[..7].bytes().all(|b| b.is_ascii_digit()), "{sha}");
        sha
    }

    /// A commit on `repository` whose tree is exactly these directories (each under its
    /// prefix); creates the repository if missing. Returns the full sha.
    pub fn commit(&self, repository: &str, dirs: &[(&str, &str)]) -> String {
        let mut query = vec![("repo", repository.to_string())];
        query.extend(dirs.iter().map(|(p, d)| ("dir", format!("{p}={d}"))));
        self.control_call("commit", &query, None)
    }

    /// Pushes a commit on `repository` that writes `content` to `path` and keeps every other
    /// file, as a pull request's new head; returns the new full sha.
    pub fn push_file(&self, repository: &str, path: &str, content: &str) -> String {
        self.control_call(
            "file",
            &[("repo", repository.to_string()), ("path", path.to_string())],
            Some(content),
        )
    }

    fn control_call(&self, endpoint: &str, query: &[(&str, String)], body: Option<&str>) -> String {
        let (code, answer) = post(&format!("{}{endpoint}", self.control), query, body);
        assert_eq!(code, 200, "POST {endpoint} {query:?}: {answer}");
        let line: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("the fixtures server's answer {answer:?}: {e}"));
        let sha = line["commit"].as_str().unwrap_or_default().to_string();
        assert!(is_full_sha(&sha), "not a full sha: {line}");
        sha
    }

    /// The clone URL the operator must fetch `repository` from.
    pub fn clone_url(&self, repository: &str) -> String {
        format!("{}{repository}.git", self.git_url)
    }

    /// A PreviewClass for `tenant` that allows Flux (this rig's Git host and Helm repository),
    /// the fixtures' registry only, an ingress under [`BASE_DOMAIN`], and `extra` on top
    /// (e.g. `{"sleep": ...}`; a `null` field removes one, e.g. `{"flux": null}`).
    pub async fn class(&self, tenant: &Tenant, extra: Value) -> TestClass {
        self.class_named(tenant, &format!("flux-{}", tenant.namespace.name), extra)
            .await
    }

    /// [`class`](FluxRig::class) named `name`, for a tenant with several classes.
    pub async fn class_named(&self, tenant: &Tenant, name: &str, extra: Value) -> TestClass {
        let mut spec = json!({
            "tenants": [{"namespaces": [tenant.namespace.name], "repositories": ["acme/*"]}],
            "ingress": {"baseDomain": BASE_DOMAIN},
            "allowedRegistries": [REGISTRY],
            "allowedPodAnnotations": ["preview.dev/simulate"],
            "flux": {"gitURL": self.git_url, "chartRepositories": [self.helm_repo]},
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                if v.is_null() {
                    spec.remove(k);
                } else {
                    spec.insert(k.clone(), v.clone());
                }
            }
        }
        let name = name.to_string();
        create(
            &tenant.client,
            &preview_resource("PreviewClass", "previewclasses"),
            None,
            json!({
                "apiVersion": "preview.dev/v1alpha1", "kind": "PreviewClass",
                "metadata": {"name": name}, "spec": spec,
            }),
        )
        .await;
        TestClass { name }
    }

    /// A HelmRelease entry named `name` of the demo chart from the Helm repository, with the
    /// web image tagged with the preview's short sha, the Ingress on the preview's host, and
    /// `values` merged on top.
    pub fn chart_release(&self, name: &str, values: Value) -> Value {
        json!({
            "name": name,
            "chart": {"repository": self.helm_repo, "name": CHART, "version": self.chart_version},
            "values": merge(default_values(), values),
        })
    }
}

/// A HelmRelease entry named `name` of the demo chart from `charts/demo` of the pull request's
/// repository, with `values` merged on top of [`chart_release`](FluxRig::chart_release)'s.
pub fn path_release(name: &str, values: Value) -> Value {
    json!({
        "name": name,
        "chart": {"path": "./charts/demo"},
        "values": merge(default_values(), values),
    })
}

/// The values every test release starts from: images from [`REGISTRY`] tagged with the
/// preview's short sha, the Ingress on the preview's own host.
fn default_values() -> Value {
    json!({
        "image": {"repository": format!("{REGISTRY}demo/web"), "tag": "<< shortSha >>"},
        "ingress": {"host": "<< host >>"},
    })
}

/// The Kustomization entry `name` of the repository's `deploy` directory, its backend image
/// tagged with the preview's short sha.
pub fn kustomization(name: &str) -> Value {
    json!({
        "name": name,
        "path": "./deploy",
        "images": [{"name": format!("{REGISTRY}demo/backend"), "newTag": "<< shortSha >>"}],
    })
}

/// A setup Job and a test Job from [`REGISTRY`], tagged with the preview's short sha, in
/// template form; `spec` is extended with them.
pub fn with_setup_and_tests(mut spec: Value) -> Value {
    spec["setup"] = json!([{"name": "migrate", "image": format!("{REGISTRY}demo/migrate:<< shortSha >>"),
                            "timeout": "5m"}]);
    spec["tests"] = json!([{"name": "e2e", "image": format!("{REGISTRY}demo/e2e:<< shortSha >>"),
                            "timeout": "5m"}]);
    spec
}

/// Creates PreviewTemplate `name` in the tenant namespace from `spec` (JSON as in a manifest).
pub async fn create_template(tenant: &Tenant, name: &str, spec: Value) {
    create(
        &tenant.client,
        &preview_resource("PreviewTemplate", "previewtemplates"),
        Some(&tenant.namespace.name),
        json!({
            "apiVersion": "preview.dev/v1alpha1", "kind": "PreviewTemplate",
            "metadata": {"name": name}, "spec": spec,
        }),
    )
    .await;
}

/// The slim PreviewEnvironment spec of PR `pr` of `repository` at `sha` from template
/// `template` in class `class`.
pub fn preview_spec(repository: &str, pr: i64, sha: &str, template: &str, class: &str) -> Value {
    json!({
        "repository": repository,
        "pullRequest": pr,
        "headSha": sha,
        "templateRef": {"name": template},
        "previewClassName": class,
    })
}

/// The repository a test previews: `acme/<its tenant namespace>`, so tests never share one.
pub fn repository_of(tenant: &Tenant) -> String {
    format!("acme/{}", tenant.namespace.name)
}

/// The host of the preview whose namespace is `ns`.
pub fn host_of(ns: &str) -> String {
    format!("{ns}.{BASE_DOMAIN}")
}

/// A sha no repository has, for previews whose chart comes from the Helm repository.
pub const UNFETCHED_SHA: &str = "5ca1ab1e0ddba11c0ffee5ca1ab1e0ddba11c0ff";

pub fn is_full_sha(sha: &str) -> bool {
    sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The kinds of Flux's API the operator writes in preview namespaces, with their versions as
/// the rig's Flux serves them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    HelmRelease,
    Kustomization,
    GitRepository,
    HelmRepository,
    OCIRepository,
    /// Made by helm-controller for each HelmRelease, not by the operator.
    HelmChart,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::HelmRelease,
        Kind::Kustomization,
        Kind::GitRepository,
        Kind::HelmRepository,
        Kind::OCIRepository,
        Kind::HelmChart,
    ];

    pub fn resource(self) -> ApiResource {
        let (group, version, kind, plural) = match self {
            Kind::HelmRelease => (
                "helm.toolkit.fluxcd.io",
                "v2",
                "HelmRelease",
                "helmreleases",
            ),
            Kind::Kustomization => (
                "kustomize.toolkit.fluxcd.io",
                "v1",
                "Kustomization",
                "kustomizations",
            ),
            Kind::GitRepository => (
                "source.toolkit.fluxcd.io",
                "v1",
                "GitRepository",
                "gitrepositories",
            ),
            Kind::HelmRepository => (
                "source.toolkit.fluxcd.io",
                "v1",
                "HelmRepository",
                "helmrepositories",
            ),
            Kind::OCIRepository => (
                "source.toolkit.fluxcd.io",
                "v1",
                "OCIRepository",
                "ocirepositories",
            ),
            Kind::HelmChart => ("source.toolkit.fluxcd.io", "v1", "HelmChart", "helmcharts"),
        };
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }

    /// This kind's objects in namespace `ns`.
    pub fn api(self, client: &Client, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), ns, &self.resource())
    }

    /// This kind's objects in every namespace.
    pub fn api_all(self, client: &Client) -> Api<DynamicObject> {
        Api::all_with(client.clone(), &self.resource())
    }
}

/// The PreviewEnvironments of the tenant as dynamic objects: their status as the API server
/// holds it (`status.releases`), whatever the crate's types know.
pub fn previews(tenant: &Tenant) -> Api<DynamicObject> {
    Api::namespaced_with(
        tenant.client.clone(),
        &tenant.namespace.name,
        &preview_resource("PreviewEnvironment", "previewenvironments"),
    )
}

/// `status.releases` of preview `name`.
pub async fn releases(tenant: &Tenant, name: &str) -> Vec<Value> {
    let pe = previews(tenant)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get preview {name}: {e}"));
    pe.data["status"]["releases"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until every entry of `status.releases` of preview `name` is ready and there are
/// `count` of them; returns them.
pub async fn await_releases_ready(
    tenant: &Tenant,
    name: &str,
    count: usize,
    timeout: Duration,
) -> Vec<Value> {
    wait_for(
        &format!("{count} ready releases in {name}'s status"),
        timeout,
        || async {
            let releases = releases(tenant, name).await;
            if releases.len() == count && releases.iter().all(|r| r["ready"] == json!(true)) {
                Ok(releases)
            } else {
                Err(format!("{releases:?}"))
            }
        },
    )
    .await
}

/// Condition `kind` of a Flux object: (status, reason, message, lastTransitionTime).
pub fn flux_condition(
    object: &DynamicObject,
    kind: &str,
) -> Option<(String, String, String, String)> {
    let conditions = object.data["status"]["conditions"].as_array()?;
    let c = conditions.iter().find(|c| c["type"] == kind)?;
    let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((
        text("status"),
        text("reason"),
        text("message"),
        text("lastTransitionTime"),
    ))
}

/// Whether a Flux object is Ready for its current generation.
pub fn flux_ready(object: &DynamicObject) -> bool {
    let generation = object.metadata.generation;
    let conditions = object.data["status"]["conditions"].as_array();
    conditions.is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"] == "Ready"
                && c["status"] == "True"
                && c["observedGeneration"].as_i64() == generation
        })
    })
}

/// The newest entry of a HelmRelease's `status.history` (the release Helm made last).
pub fn newest_release(helm_release: &DynamicObject) -> Value {
    helm_release.data["status"]["history"][0].clone()
}

/// Every Flux object (of [`Kind::ALL`]) in namespace `ns`, as `Kind/name`.
pub async fn flux_objects(client: &Client, ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        let list = kind
            .api(client, ns)
            .list(&Default::default())
            .await
            .unwrap_or_else(|e| panic!("list {kind:?} in {ns}: {e}"));
        out.extend(
            list.items
                .iter()
                .map(|o| format!("{kind:?}/{}", o.metadata.name.clone().unwrap_or_default())),
        );
    }
    out
}

fn preview_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("preview.dev", "v1alpha1", kind),
        plural,
    )
}

async fn create(client: &Client, resource: &ApiResource, ns: Option<&str>, object: Value) {
    let object: DynamicObject =
        serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("{object}: {e}"));
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create {} {:?}: {e}", resource.kind, object.metadata.name));
}

/// `b` merged into `a`, objects key by key; anything else in `b` replaces.
pub fn merge(mut a: Value, b: Value) -> Value {
    match (a.as_object_mut(), b) {
        (Some(into), Value::Object(from)) => {
            for (k, v) in from {
                let merged = merge(into.remove(&k).unwrap_or(Value::Null), v);
                into.insert(k, merged);
            }
            a
        }
        (_, b) => b,
    }
}

/// POSTs to the fixtures server with curl (a local, short request): the status code and body.
fn post(url: &str, query: &[(&str, String)], body: Option<&str>) -> (u16, String) {
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect();
    let url = format!("{url}?{}", query.join("&"));
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "30",
        "-X",
        "POST",
        "-w",
        "\n%{http_code}",
        &url,
    ]);
    // The body (a file's content) goes in through standard input, as it is.
    if body.is_some() {
        cmd.args(["--data-binary", "@-"])
            .stdin(std::process::Stdio::piped());
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("curl runs");
    if let (Some(text), Some(mut stdin)) = (body, child.stdin.take()) {
        use std::io::Write as _;
        stdin
            .write_all(text.as_bytes())
            .expect("write the request body");
    }
    let out = child.wait_with_output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (
        code.trim().parse().unwrap_or(0),
        format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
