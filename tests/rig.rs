//! The rig is real: the controller-manager, scheduler and KWOK nodes run Deployments and Jobs,
//! fail pods annotated to fail, and delete namespaces.

mod common;

use std::time::Duration;

use common::{TestNamespace, client, delete_namespace_and_wait, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

fn deployment(name: &str, annotations: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": [{"name": "main", "image": "example.com/app:1"}]}
            }
        }
    }))
    .expect("deployment fixture")
}

fn job(name: &str, annotations: Value) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "example.com/test:1"}]
                }
            }
        }
    }))
    .expect("job fixture")
}

fn condition_true(conditions: &[(String, String)], kind: &str) -> bool {
    conditions.iter().any(|(t, s)| t == kind && s == "True")
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_deployment_becomes_available_on_kwok_nodes() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "rig-deploy").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    api.create(&PostParams::default(), &deployment("web", json!({})))
        .await
        .expect("create deployment");
    wait_for(
        "the Deployment to be Available",
        Duration::from_secs(60),
        || async {
            let d = api.get("web").await.map_err(|e| e.to_string())?;
            let status = d.status.unwrap_or_default();
            let conditions: Vec<_> = status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .map(|c| (c.type_, c.status))
                .collect();
            if condition_true(&conditions, "Available") && status.available_replicas == Some(2) {
                Ok(())
            } else {
                Err(format!(
                    "{conditions:?}, available {:?}",
                    status.available_replicas
                ))
            }
        },
    )
    .await;
}

async fn job_outcome(api: &Api<Job>, name: &str) -> String {
    wait_for(
        &format!("Job {name} to finish"),
        Duration::from_secs(60),
        || async {
            let j = api.get(name).await.map_err(|e| e.to_string())?;
            let conditions: Vec<_> = j
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .map(|c| (c.type_, c.status))
                .collect();
            if condition_true(&conditions, "Complete") {
                Ok("Complete".to_string())
            } else if condition_true(&conditions, "Failed") {
                Ok("Failed".to_string())
            } else {
                Err(format!("{conditions:?}"))
            }
        },
    )
    .await
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_job_succeeds_and_a_job_annotated_to_fail_fails() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "rig-jobs").await;
    let api: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    api.create(&PostParams::default(), &job("passes", json!({})))
        .await
        .expect("create passing job");
    api.create(
        &PostParams::default(),
        &job("fails", json!({"preview.dev/simulate": "fail"})),
    )
    .await
    .expect("create failing job");
    assert_eq!(job_outcome(&api, "passes").await, "Complete");
    assert_eq!(job_outcome(&api, "fails").await, "Failed");
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_deployment_annotated_to_fail_crash_loops_and_never_becomes_ready() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "rig-crash").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    api.create(
        &PostParams::default(),
        &deployment("crashy", json!({"preview.dev/simulate": "fail"})),
    )
    .await
    .expect("create deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    wait_for(
        "both pods to be in CrashLoopBackOff",
        Duration::from_secs(60),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=crashy"))
                .await
                .map_err(|e| e.to_string())?;
            let reasons: Vec<Option<String>> = list
                .items
                .iter()
                .map(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .and_then(|cs| cs.first())
                        .and_then(|c| c.state.as_ref())
                        .and_then(|s| s.waiting.as_ref())
                        .and_then(|w| w.reason.clone())
                })
                .collect();
            if reasons.len() == 2
                && reasons
                    .iter()
                    .all(|r| r.as_deref() == Some("CrashLoopBackOff"))
            {
                Ok(())
            } else {
                Err(format!("{reasons:?}"))
            }
        },
    )
    .await;
    let d = api.get("crashy").await.expect("get deployment");
    assert_eq!(
        d.status.and_then(|s| s.ready_replicas).unwrap_or(0),
        0,
        "a crash-looping pod must never count as ready"
    );
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn deleting_a_namespace_completes() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "rig-delete").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    api.create(&PostParams::default(), &deployment("web", json!({})))
        .await
        .expect("create deployment");
    // The namespace controller must finalize the namespace, pods and all.
    delete_namespace_and_wait(&client, &ns.name, Duration::from_secs(120)).await;
}
