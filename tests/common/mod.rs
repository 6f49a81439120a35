//! Helpers shared by the cluster tests: a client for the rig, temporary tenant namespaces,
//! the CRD installed from the committed manifest, and polling with a deadline.
#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use preview_operator::api::PreviewEnvironment;

/// Field manager the tests use for their own writes.
pub const TEST_MANAGER: &str = "preview-operator-tests";

/// A client for the rig named by `KUBECONFIG`. Panics with the command to run when the rig is
/// missing, so a cluster test can never pass without one.
pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: cluster tests need the rig; run them with hack/test.sh"
    );
    let client = Client::try_default()
        .await
        .expect("failed to build a client from KUBECONFIG (is the rig up? hack/cluster.sh up)");
    client
        .apiserver_version()
        .await
        .expect("the rig's API server does not answer (hack/cluster.sh status)");
    client
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what` and the last
/// observation. Tests never sleep to synchronise; they wait for what they need.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(observed) => observed,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last observed: {last}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A tenant namespace that exists for one test. Deleted when dropped (also when the test
/// panics), without waiting, so a failing test does not leave its objects behind.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Creates `<prefix>-<random suffix>`.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = format!("{prefix}-{}", random_suffix());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"preview.dev/test": "true"}}
        }))
        .expect("namespace object");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("failed to create test namespace {name}: {e}"));
        // Pods cannot be created before the namespace's default ServiceAccount exists.
        let sa_api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_for(
            "the test namespace's default ServiceAccount",
            Duration::from_secs(30),
            || async {
                match sa_api.get_opt("default").await {
                    Ok(Some(_)) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        TestNamespace { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot be async; kubectl is on PATH in the rig's environment.
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
    }
}

fn random_suffix() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:08x}", hasher.finish() as u32)
}

/// Installs the committed CRD manifest (server-side apply) and waits until it is Established.
pub async fn install_crd(client: &Client) -> CustomResourceDefinition {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/previewenvironments.yaml");
    let text = std::fs::read_to_string(path).expect("crds/previewenvironments.yaml is readable");
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&text).expect("the committed CRD parses");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &crd.name_any(),
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("the API server accepts the CRD");
    wait_for(
        "the CRD to be Established",
        Duration::from_secs(30),
        || async {
            let crd = api.get(&crd.name_any()).await.map_err(|e| e.to_string())?;
            let established = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                Ok(crd)
            } else {
                Err(format!("{:?}", crd.status))
            }
        },
    )
    .await
}

/// Deletes a namespace and waits until it is really gone.
pub async fn delete_namespace_and_wait(client: &Client, name: &str, timeout: Duration) {
    let api: Api<Namespace> = Api::all(client.clone());
    api.delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("failed to delete namespace {name}: {e}"));
    wait_for(&format!("namespace {name} to be gone"), timeout, || async {
        match api.get_opt(name).await {
            Ok(None) => Ok(()),
            Ok(Some(ns)) => Err(format!("still there: {:?}", ns.status)),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}

/// Runs the rig's kubectl and returns (success, stdout, stderr).
pub fn kubectl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl runs (the rig's bin directory is on PATH in hack/test.sh)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until PreviewEnvironment `name` has condition `kind` with `status` (and `reason`, when
/// given) for its current generation, and returns the object.
pub async fn await_condition(
    api: &Api<preview_operator::api::PreviewEnvironment>,
    name: &str,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    timeout: Duration,
) -> preview_operator::api::PreviewEnvironment {
    wait_for(
        &format!("{name} to have {kind}={status} ({reason:?})"),
        timeout,
        || async {
            let pe = api.get(name).await.map_err(|e| e.to_string())?;
            let generation = pe.metadata.generation;
            let found = pe
                .status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == kind))
                .cloned();
            match found {
                Some(c)
                    if c.status == status
                        && reason.is_none_or(|r| r == c.reason)
                        && c.observed_generation == generation =>
                {
                    Ok(pe)
                }
                other => Err(format!(
                    "{other:?}, phase {:?}",
                    pe.status.and_then(|s| s.phase)
                )),
            }
        },
    )
    .await
}

/// Waits until `get` finds nothing.
pub async fn await_gone<F, Fut, T>(what: &str, timeout: Duration, get: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, kube::Error>>,
    T: std::fmt::Debug,
{
    let get = std::cell::RefCell::new(get);
    wait_for(&format!("{what} to be gone"), timeout, || async {
        let fut = (get.borrow_mut())();
        match fut.await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

/// The operator must be running for lifecycle tests: hack/test.sh starts it. Fails fast, with
/// the reason, when it is not.
pub fn require_operator() {
    assert!(
        std::env::var_os("PREVIEW_OPERATOR_UNDER_TEST").is_some(),
        "lifecycle tests need the operator running against the rig; run them with hack/test.sh"
    );
}

/// Appends a measured figure to target/measurements.log, which hack/test.sh prints at the end.
pub fn record(line: &str) {
    use std::io::Write as _;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/measurements.log");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Scrapes a metrics endpoint into `name{labels} -> value`.
pub async fn scrape(url: &str) -> std::collections::BTreeMap<String, f64> {
    let out = Command::new("curl")
        .args(["-fsS", url])
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "scraping {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// One metric's value, 0 when absent.
pub fn metric(m: &std::collections::BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().unwrap_or(0.0)
}

/// The sum of every series whose name (with labels) starts with `prefix`.
pub fn sum_prefix(m: &std::collections::BTreeMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// An extra operator process a test starts itself (as the chart's ServiceAccount), killed
/// when dropped. Tests scope it with `--selector` so it never touches other tests' previews.
pub struct Operator {
    pub child: std::process::Child,
    pub metrics: String,
}

impl Operator {
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Operator {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: run the cluster tests with hack/test.sh")
            })
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(var("PREVIEW_OPERATOR_BIN"))
            .args(["run", "--http-addr", &addr, "--wake-addr", "127.0.0.1:0"])
            .args(["--health-addr", "127.0.0.1:0"])
            .args(args)
            .env("KUBECONFIG", var("PREVIEW_OPERATOR_KUBECONFIG"))
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the operator starts");
        Operator {
            child,
            metrics: format!("http://{addr}/metrics"),
        }
    }

    /// Whether it holds the lease, `None` while its endpoint does not answer yet.
    pub async fn leads(&self) -> Option<bool> {
        let out = Command::new("curl")
            .args(["-fsS", &self.metrics])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("preview_operator_leader "))
            .map(|l| l.ends_with(" 1"))
    }

    /// Write requests (create, update, patch, delete) it made, by any path.
    pub async fn writes(&self) -> f64 {
        let m = scrape(&self.metrics).await;
        ["create", "update", "patch", "delete"]
            .iter()
            .map(|verb| {
                let prefix = format!("preview_operator_kubernetes_requests_total{{verb=\"{verb}\"");
                sum_prefix(&m, &prefix)
            })
            .sum()
    }

    pub async fn reconciles(&self) -> f64 {
        metric(
            &scrape(&self.metrics).await,
            "preview_operator_reconciles_total",
        )
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// See [`spec`].
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

/// A tenant of the running operator for one test: a client, a temporary tenant namespace
/// and the PreviewEnvironments API in it.
pub struct Tenant {
    pub client: Client,
    pub namespace: TestNamespace,
    pub api: Api<PreviewEnvironment>,
}

impl Tenant {
    /// Needs the operator hack/test.sh starts; installs the CRD and a namespace `<prefix>-…`.
    pub async fn new(prefix: &str) -> Tenant {
        require_operator();
        let client = client().await;
        install_crd(&client).await;
        let namespace = TestNamespace::create(&client, prefix).await;
        let api = Api::namespaced(client.clone(), &namespace.name);
        Tenant {
            client,
            namespace,
            api,
        }
    }

    pub async fn create(&self, name: &str, spec: serde_json::Value) -> PreviewEnvironment {
        self.api
            .create(
                &PostParams::default(),
                &preview(name, serde_json::json!({}), spec),
            )
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"))
    }

    /// The preview namespace of `name` (the operator runs with the default prefix).
    pub fn preview_ns(&self, name: &str) -> String {
        preview_operator::naming::preview_namespace("pr-", &self.namespace.name, name)
    }

    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.api
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": spec})),
            )
            .await
            .unwrap_or_else(|e| panic!("patch {name}: {e}"));
    }

    /// Creates PreviewTemplate `name` in the tenant namespace from `spec` (JSON).
    pub async fn create_template(&self, name: &str, spec: serde_json::Value) {
        let template: preview_operator::api::template::PreviewTemplate =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "preview.dev/v1alpha1", "kind": "PreviewTemplate",
                "metadata": {"name": name}, "spec": spec,
            }))
            .unwrap_or_else(|e| panic!("template fixture {name}: {e}"));
        self.templates()
            .create(&PostParams::default(), &template)
            .await
            .unwrap_or_else(|e| panic!("create template {name}: {e}"));
    }

    pub fn templates(&self) -> Api<preview_operator::api::template::PreviewTemplate> {
        Api::namespaced(self.client.clone(), &self.namespace.name)
    }

    /// Replaces the spec of PreviewTemplate `name` with `spec` (JSON).
    pub async fn set_template(&self, name: &str, spec: serde_json::Value) {
        self.templates()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": spec})),
            )
            .await
            .unwrap_or_else(|e| panic!("update template {name}: {e}"));
    }

    /// Lets the operator read this namespace's Secrets and ConfigMaps: the one RoleBinding to
    /// the chart's source-reader ClusterRole that the README tells a team to create.
    pub async fn grant_sources(&self) {
        let release =
            std::env::var("PREVIEW_CHART_RELEASE").unwrap_or_else(|_| "preview-operator".into());
        let namespace =
            std::env::var("PREVIEW_CHART_NAMESPACE").unwrap_or_else(|_| "preview-system".into());
        let binding: k8s_openapi::api::rbac::v1::RoleBinding =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "preview-operator-sources"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": format!("{release}-source-reader")},
                "subjects": [{"kind": "ServiceAccount", "name": release, "namespace": namespace}],
            }))
            .expect("role binding fixture");
        Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(
            self.client.clone(),
            &self.namespace.name,
        )
        .create(&PostParams::default(), &binding)
        .await
        .unwrap_or_else(|e| panic!("grant the operator the tenant's sources: {e}"));
    }

    /// Creates the Secret `shop-db` and the ConfigMap `shop-config` of [`shop_template`].
    pub async fn create_shop_sources(&self, password: &str) {
        let ns = &self.namespace.name;
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "shop-db"}, "stringData": {"password": password}}),
        )
        .expect("secret fixture");
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create secret shop-db");
        let map: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "shop-config"}, "data": {"mode": "preview"}}),
        )
        .expect("config map fixture");
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &map)
            .await
            .expect("create config map shop-config");
    }

    /// Deletes `name` and waits until it is gone (the operator's teardown included).
    pub async fn delete_and_wait(&self, name: &str) {
        let timeout = Duration::from_secs(120);
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {name}: {e}"));
        let api = self.api.clone();
        await_gone(&format!("preview {name}"), timeout, || api.get_opt(name)).await;
    }
}

/// A PreviewClass for one test, deleted when dropped (also when the test panics).
pub struct TestClass {
    pub name: String,
}

impl TestClass {
    /// Creates PreviewClass `name` with `spec` (JSON as in a manifest).
    pub async fn create(client: &Client, name: &str, spec: serde_json::Value) -> TestClass {
        let class: preview_operator::api::class::PreviewClass =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "preview.dev/v1alpha1", "kind": "PreviewClass",
                "metadata": {"name": name}, "spec": spec,
            }))
            .unwrap_or_else(|e| panic!("class fixture {name}: {e}"));
        Api::<preview_operator::api::class::PreviewClass>::all(client.clone())
            .create(&PostParams::default(), &class)
            .await
            .unwrap_or_else(|e| panic!("create class {name}: {e}"));
        TestClass {
            name: name.to_string(),
        }
    }
}

impl Drop for TestClass {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "previewclass",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .output();
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

/// Serves `app` (a stand-in for GitHub) on a free port of 127.0.0.1 until the test ends, and
/// returns its base URL.
pub async fn serve_locally(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}
