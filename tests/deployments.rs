//! A preview is a GitHub deployment from its rollout to its teardown (`--github-deployments`):
//! one transient, non-production deployment per sha in environment
//! `preview/<namespace>/<name>`, `success` with the preview's URL (after `in_progress` when the
//! rollout outlasts a status write), a new one for a new sha, and `inactive` once the preview
//! is deleted. GitHub is the loopback
//! stand-in of `common::scm` and `common::deployments`; an operator of this test's own
//! (scoped by `--selector`) posts to it.

mod common;

use std::time::Duration;

use common::deployments::GitHubDeployments;
use common::scm::{GitHub, Route};
use common::{
    Operator, TestNamespace, await_ready, client, install_crd, require_operator, wait_for,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use preview_operator::api::PreviewEnvironment;
use serde_json::{Value, json};

/// The deployment of `sha` in `environment`, once one was created.
fn deployment(stand_in: &GitHubDeployments, environment: &str, sha: &str) -> Option<Value> {
    stand_in
        .created()
        .into_iter()
        .find(|d| d["environment"] == environment && d["sha"] == sha)
}

/// Waits until the deployment of `sha` in `environment` shows `state` last; its id and the
/// states it was given.
async fn await_state(
    stand_in: &GitHubDeployments,
    environment: &str,
    sha: &str,
    state: &str,
) -> (u64, Vec<String>) {
    wait_for(
        &format!("deployment of {sha} {state}"),
        Duration::from_secs(90),
        || async {
            let d = deployment(stand_in, environment, sha)
                .ok_or_else(|| format!("created: {:?}", stand_in.created()))?;
            let id = d["id"].as_u64().unwrap_or_default();
            let states = stand_in.states(id);
            (states.last().map(String::as_str) == Some(state))
                .then(|| (id, states.clone()))
                .ok_or_else(|| format!("{states:?}"))
        },
    )
    .await
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_preview_is_a_deployment_from_rollout_to_teardown() {
    require_operator();
    let client = client().await;
    install_crd(&client).await;
    let tenant = TestNamespace::create(&client, "gh-deploy").await;
    let shard = tenant.name.clone();
    let github = GitHub::default();
    let deployments = GitHubDeployments::default();
    let url = common::scm::serve_locally(
        github
            .router(&[Route::Statuses])
            .merge(deployments.router()),
    )
    .await;
    let _operator = Operator::start(
        &[
            "--selector",
            &format!("preview.dev/shard={shard}"),
            "--github-api-url",
            &url,
            "--github-deployments",
        ],
        &[("PREVIEW_OPERATOR_GITHUB_TOKEN", "test-token")],
    );
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &tenant.name);
    let pe = common::spec("acme/shop", 12, "a1b2c3d4")
        .labelled("shop", json!({"preview.dev/shard": shard}));
    api.create(&PostParams::default(), &pe)
        .await
        .expect("create");
    let ready = await_ready(&api, "shop", Duration::from_secs(90)).await;
    let preview_url = ready.status.and_then(|s| s.url).expect("a URL");
    let environment = format!("preview/{shard}/shop");

    let (first, states) = await_state(&deployments, &environment, "a1b2c3d4", "success").await;
    // A rollout that ends before the status is first written shows no `in_progress`.
    assert!(
        (states.iter()).all(|s| s == "in_progress" || s == "success"),
        "{states:?}"
    );
    let seen = deployments.seen();
    let created = (seen.iter())
        .find(|r| r.method == "POST" && r.path == "/repos/acme/shop/deployments")
        .expect("a deployment created");
    assert_eq!(created.body["ref"], "a1b2c3d4");
    assert_eq!(created.body["environment"], environment.as_str());
    assert_eq!(created.body["transient_environment"], true);
    assert_eq!(created.body["production_environment"], false);
    assert_eq!(created.body["auto_merge"], false);
    assert_eq!(created.body["required_contexts"], json!([]));
    let success = (seen.iter().rev())
        .find(|r| r.path.ends_with(&format!("/deployments/{first}/statuses")))
        .expect("a status");
    assert_eq!(success.body["environment_url"], preview_url.as_str());

    // A new sha is a new deployment; its success retires the one before (auto_inactive).
    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"headSha": "e5f6a7b8"}})),
    )
    .await
    .expect("a new sha");
    let (second, states) = await_state(&deployments, &environment, "e5f6a7b8", "success").await;
    assert_ne!(first, second);
    assert!(
        (states.iter()).all(|s| s == "in_progress" || s == "success"),
        "{states:?}"
    );
    let status = (deployments.seen().into_iter().rev())
        .find(|r| r.path.ends_with(&format!("/deployments/{second}/statuses")))
        .expect("a status");
    assert_eq!(status.body["auto_inactive"], true);

    api.delete("shop", &DeleteParams::default())
        .await
        .expect("delete");
    await_state(&deployments, &environment, "e5f6a7b8", "inactive").await;
    assert_eq!(
        deployments.created().len(),
        2,
        "one deployment per sha, none per reconcile"
    );
    common::await_gone("the preview", Duration::from_secs(120), || {
        api.get_opt("shop")
    })
    .await;
}
