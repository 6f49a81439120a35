//! Fixtures of the unit tests: one builder per object, with the values the tests share.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::api::{Condition, PreviewEnvironment, PreviewEnvironmentSpec};
use crate::controller::cached::{CachedDeployment, CachedJob};

/// The head sha of every fixture.
pub const SHA: &str = "abcdef0123";

/// A spec of `acme/shop` PR 1 at [`SHA`] with these services and tests (JSON as in a manifest).
pub fn spec(services: Value, tests: Value) -> PreviewEnvironmentSpec {
    serde_json::from_value(json!({
        "repository": "acme/shop", "pullRequest": 1, "headSha": SHA,
        "services": services, "tests": tests,
    }))
    .expect("spec fixture")
}

/// Services `web` (port 80) and `db`, and `tests` tests named `t0`, `t1`...
pub fn web_and_db(tests: usize) -> PreviewEnvironmentSpec {
    let tests: Vec<_> = (0..tests)
        .map(|i| json!({"name": format!("t{i}"), "image": "t:1"}))
        .collect();
    spec(
        json!([{"name": "web", "image": "w:1", "port": 80}, {"name": "db", "image": "d:1"}]),
        json!(tests),
    )
}

/// A stored PreviewEnvironment `team-shop/<name>` with UID `uid-<name>` and [`web_and_db`]`(1)`.
pub fn preview(name: &str) -> PreviewEnvironment {
    let mut pe = PreviewEnvironment::new(name, web_and_db(1));
    pe.metadata.namespace = Some("team-shop".into());
    pe.metadata.uid = Some(format!("uid-{name}"));
    pe.metadata.generation = Some(1);
    pe
}

pub fn time(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).expect("valid time"))
}

/// A condition of `type_` with `status` and `reason`, as the operator writes them.
pub fn condition(type_: &str, status: &str, reason: &str) -> Condition {
    Condition {
        type_: type_.to_string().into(),
        status: status.to_string().into(),
        reason: reason.to_string().into(),
        message: String::new(),
        last_transition_time: time(0),
        observed_generation: Some(1),
    }
}

/// A Deployment whose pod template runs `sha`, with these replica counts.
pub fn deployment(sha: &str, replicas: i32, available: i32) -> CachedDeployment {
    serde_json::from_value(json!({
        "metadata": {"name": "x", "generation": 2},
        "spec": {"selector": {}, "template": {"metadata": {"annotations": {"preview.dev/sha": sha}}}},
        "status": {"observedGeneration": 2, "replicas": replicas, "updatedReplicas": replicas,
                   "availableReplicas": available, "readyReplicas": available}
    }))
    .expect("deployment fixture")
}

/// The Job of test `t0` at [`SHA`] with these conditions and pod counts.
pub fn job(conditions: Value, active: i32, failed: i32) -> CachedJob {
    serde_json::from_value(json!({
        "metadata": {"name": "t0-abcdef0", "namespace": "pr-x"},
        "status": {"conditions": conditions, "active": active, "failed": failed,
                   "startTime": "2026-01-01T00:00:00Z"}
    }))
    .expect("job fixture")
}

/// The preview of `rendered`, owned by `team-shop/shop` (UID `uid-shop`).
pub fn built(rendered: &crate::template::Rendered) -> crate::controller::build::Preview<'_> {
    crate::controller::build::Preview::new(
        rendered,
        crate::naming::Owner {
            namespace: "team-shop".into(),
            name: "shop".into(),
            uid: "uid-shop".into(),
            repository: rendered.spec.repository.clone(),
            pull_request: rendered.spec.pull_request,
        },
        "pr-shop-0123456789abcdef".into(),
        None,
    )
}
