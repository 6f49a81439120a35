//! Helpers shared by the cluster tests: a client for the rig, the CRD installed from the
//! committed manifest, kubectl, metrics and extra operator processes. Tenants and classes are
//! in `tenant`, spec fixtures in `spec`, polling with a deadline in `wait`, the loopback
//! GitHub/GitLab stand-in in `scm`; their items are re-exported here so tests name them
//! `common::…`. Previews delivered through Flux (its rig, classes, Git fixtures) are in `flux`.
#![allow(dead_code)] // each test binary uses a different subset

pub mod deployments;
pub mod flux;
pub mod scm;
mod spec;
mod tenant;
mod wait;

// Each test binary uses a different subset of the re-exports, as of the helpers.
#[allow(unused_imports)]
pub use scm::serve_locally;
#[allow(unused_imports)]
pub use spec::{Spec, preview, shop, shop_template, slim, spec};
#[allow(unused_imports)]
pub use tenant::{Tenant, TestClass, TestNamespace};
#[allow(unused_imports)]
pub use wait::{await_condition, await_event, await_gone, await_ready, wait_for};

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

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

/// The environment variable `name` that hack/test.sh sets for the cluster tests; panics with
/// the command to run when it is missing.
pub fn rig_var(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the cluster tests with hack/test.sh"))
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
    /// Starts it and returns once it listens on its `--http-addr`: a port found free can be
    /// taken again before the operator binds it (by any connection the machine opens), so a
    /// start that fails on it is retried on another.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Operator {
        for _ in 0..3 {
            if let Some(operator) = Self::try_start(args, envs) {
                return operator;
            }
        }
        panic!("the operator could not listen on a free port three times")
    }

    fn try_start(args: &[&str], envs: &[(&str, &str)]) -> Option<Operator> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let addr = format!("127.0.0.1:{port}");
        // Its log, for when a test fails (hack/test.sh shows the warnings and errors).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-operators");
        std::fs::create_dir_all(&dir).expect("a directory for the operators' logs");
        let path = dir.join(format!("{port}.log"));
        let log = std::fs::File::create(&path).expect("a log file");
        let stderr = log.try_clone().expect("the log file, twice");
        let mut child = Command::new(rig_var("PREVIEW_OPERATOR_BIN"))
            .args(["run", "--http-addr", &addr, "--wake-addr", "127.0.0.1:0"])
            .args(["--health-addr", "127.0.0.1:0"])
            .args(args)
            .env("KUBECONFIG", rig_var("PREVIEW_OPERATOR_KUBECONFIG"))
            .envs(envs.iter().copied())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .expect("the operator starts");
        // Polled with a deadline: it binds within a second of starting (before it calls
        // anything a test serves), and says so in its log.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.contains(&format!("listening addr={addr} flag=\"--http-addr\"")) {
                return Some(Operator {
                    child,
                    metrics: format!("http://{addr}/metrics"),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                if text.contains(&format!("failed to listen on {addr}")) {
                    return None;
                }
                panic!("the operator exited ({status}) before listening:\n{text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the operator did not listen on {addr} within 30 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
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
