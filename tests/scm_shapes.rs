//! The bodies the operator sends to GitHub and GitLab, recorded by the loopback stand-ins,
//! checked against the published request schemas (tests/fixtures/api/README.md): states and
//! conclusions from their enums, required fields present, lengths within their limits.

#[allow(dead_code)] // the stand-in serves more routes than these tests use
#[path = "common/scm.rs"]
mod scm;

#[allow(dead_code)]
#[path = "common/deployments.rs"]
mod deployments;

use std::sync::Arc;
use std::time::Duration;

use preview_operator::github::{Credentials, GitHub, GitHubConfig};
use preview_operator::gitlab::{self as gl, GitLabConfig};
use preview_operator::metrics::Metrics;
use preview_operator::scm::deployment::{Deployment, DeploymentState, MAX_DESCRIPTION};
use preview_operator::scm::status::{CommitStatus, State};
use preview_operator::scm::{Forge, poster};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use scm::{APP_ID, GitHub as StandIn, GitLab as GitLabStandIn, Route};
use serde_json::Value;

fn schema(name: &str) -> jsonschema::Validator {
    let path = format!(
        "{}/tests/fixtures/api/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let file: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("a schema")).expect("json");
    jsonschema::validator_for(&file["schema"]).expect("a valid schema")
}

fn assert_valid(validator: &jsonschema::Validator, body: &Value, what: &str) {
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {body}\n{errors:#?}");
}

/// Every state a preview reports, with a description as long as the operator sends.
fn statuses() -> Vec<CommitStatus> {
    [State::Pending, State::Success, State::Failure, State::Error]
        .into_iter()
        .enumerate()
        .map(|(n, state)| CommitStatus {
            repository: "acme/shop".into(),
            sha: format!("c0ffee{n:02}"),
            context: "preview/team/pr-1".into(),
            state,
            description: "x".repeat(140),
            target_url: Some("https://pr-1.previews.example.com".into()),
            check: None,
        })
        .collect()
}

/// Posts every status through the operator's poster and waits until each was acknowledged.
async fn post_all(github: Arc<GitHub>) {
    post(github, statuses()).await;
}

/// Posts `all` through the operator's poster to `forge` and waits until each was
/// acknowledged.
async fn post(forge: Arc<dyn Forge>, all: Vec<CommitStatus>) {
    let (posted, mut acknowledged) = tokio::sync::mpsc::unbounded_channel();
    let poster = poster::start(forge, false, Arc::new(Metrics::new()), posted);
    for status in &all {
        poster.status(status.clone());
    }
    for _ in &all {
        tokio::time::timeout(Duration::from_secs(20), acknowledged.recv())
            .await
            .expect("posted in time")
            .expect("posted");
    }
}

#[tokio::test]
async fn commit_statuses_match_githubs_request_schema() {
    let stand_in = StandIn::default();
    let url = stand_in.serve(&[Route::Statuses]).await;
    let config = GitHubConfig {
        api_url: url,
        credentials: Credentials::Token("ghp_test".into()),
    };
    post_all(GitHub::new(&config, Arc::new(Metrics::new())).expect("a client")).await;
    let validator = schema("github-create-commit-status");
    assert!(
        !validator.is_valid(&serde_json::json!({"state": "failed", "context": "c"})),
        "GitLab's state name is not GitHub's: the schema tells them apart"
    );
    let received = stand_in.received();
    assert_eq!(received.len(), 4);
    for r in received {
        assert_valid(&validator, &r.body, &r.path);
    }
}

#[tokio::test]
async fn check_runs_match_githubs_request_schemas() {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("a key");
    let private_pem = key.to_pkcs1_pem(LineEnding::LF).expect("PEM");
    let public_pem = rsa::RsaPublicKey::from(&key)
        .to_public_key_pem(LineEnding::LF)
        .expect("PEM");
    let stand_in = StandIn::app(&public_pem);
    let url = stand_in.serve(&[Route::App, Route::CheckRuns]).await;
    let config = GitHubConfig {
        api_url: url,
        credentials: Credentials::App {
            id: APP_ID,
            private_key: private_pem.as_str().into(),
        },
    };
    post_all(GitHub::new(&config, Arc::new(Metrics::new())).expect("a client")).await;
    let (create, update) = (
        schema("github-create-check-run"),
        schema("github-update-check-run"),
    );
    let mut checked = 0;
    for seen in stand_in.seen() {
        let validator = match seen.method {
            "POST" if seen.path.ends_with("/check-runs") => &create,
            "PATCH" if seen.path.contains("/check-runs/") => &update,
            _ => continue,
        };
        assert_valid(validator, &seen.body, &seen.path);
        checked += 1;
    }
    assert!(checked >= 4, "one check run per status at least: {checked}");
}

/// The statuses of [`statuses`] and one more that is queued ("waiting…"): on GitLab a pending
/// preview is `running` while it deploys and `pending` only while it waits.
fn gitlab_statuses() -> Vec<CommitStatus> {
    let mut all = statuses();
    all.push(CommitStatus {
        sha: "c0ffee99".into(),
        description: "waiting for a slot".into(),
        ..all[0].clone()
    });
    all
}

#[tokio::test]
async fn commit_statuses_match_gitlabs_request_schema() {
    let stand_in = GitLabStandIn::default();
    let config = GitLabConfig {
        url: stand_in.serve().await,
        token: "glpat-test".into(),
    };
    let gitlab = gl::GitLab::new(&config, Arc::new(Metrics::new())).expect("a client");
    post(gitlab, gitlab_statuses()).await;
    let validator = schema("gitlab-post-commit-status");
    assert!(
        !validator.is_valid(&serde_json::json!({"state": "failure", "name": "c"})),
        "GitHub's state name is not GitLab's: the schema tells them apart"
    );
    let seen: Vec<_> = stand_in
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.contains("/statuses/"))
        .collect();
    assert_eq!(seen.len(), 5, "{seen:?}");
    for s in &seen {
        assert_valid(&validator, &s.body, &s.path);
    }
    let states: std::collections::BTreeSet<&str> = seen
        .iter()
        .filter_map(|s| s.body["state"].as_str())
        .collect();
    assert_eq!(
        states,
        ["failed", "pending", "running", "success"].into(),
        "every state the operator maps to was sent and checked"
    );
}

/// A preview's deployment through its whole life: in progress, success at a sha, a second
/// sha, and teardown; descriptions as long as the operator sends.
fn lifecycle() -> Vec<Deployment> {
    let at = |sha: &str, state| Deployment {
        repository: "acme/shop".into(),
        environment: "preview/team/pr-1".into(),
        sha: sha.into(),
        state,
        url: Some("https://pr-1.previews.example.com".into()),
        description: "x".repeat(MAX_DESCRIPTION),
    };
    vec![
        at("c0ffee01", DeploymentState::InProgress),
        at("c0ffee01", DeploymentState::Success),
        at("c0ffee02", DeploymentState::InProgress),
        at("c0ffee02", DeploymentState::Failure),
        at("c0ffee02", DeploymentState::Inactive),
    ]
}

/// Hands `all` to a poster on `forge` that reports deployments, and waits until `done` says
/// the stand-in has seen them.
async fn deploy(forge: Arc<dyn Forge>, all: Vec<Deployment>, done: impl Fn() -> bool) {
    let (posted, _acknowledged) = tokio::sync::mpsc::unbounded_channel();
    let poster = poster::start(forge, true, Arc::new(Metrics::new()), posted);
    for d in all {
        poster.deployment(d);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "not posted in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn deployments_match_githubs_request_schemas() {
    let stand_in = deployments::GitHubDeployments::default();
    let url = scm::serve_locally(stand_in.router()).await;
    let config = GitHubConfig {
        api_url: url,
        credentials: Credentials::Token("ghp_test".into()),
    };
    let github = GitHub::new(&config, Arc::new(Metrics::new())).expect("a client");
    let statuses_posted = || {
        let seen = stand_in.seen();
        seen.iter()
            .filter(|r| r.path.ends_with("/statuses"))
            .count()
            == 5
    };
    deploy(github, lifecycle(), statuses_posted).await;
    let (create, status) = (
        schema("github-create-deployment"),
        schema("github-create-deployment-status"),
    );
    assert!(
        !status.is_valid(&serde_json::json!({"state": "running"})),
        "GitLab's state name is not GitHub's: the schema tells them apart"
    );
    let mut states = Vec::new();
    for r in stand_in.seen() {
        let validator = match r.method {
            "POST" if r.path.ends_with("/deployments") => &create,
            "POST" if r.path.ends_with("/statuses") => &status,
            _ => continue,
        };
        assert_valid(validator, &r.body, &r.path);
        // GitHub's prose, not its schema, limits a description to 140 characters.
        let description = r.body["description"].as_str().unwrap_or_default();
        assert!(description.chars().count() <= 140, "{description}");
        if let Some(state) = r.body["state"].as_str() {
            states.push(state.to_string());
        }
    }
    assert_eq!(
        states,
        [
            "in_progress",
            "success",
            "in_progress",
            "failure",
            "inactive"
        ],
        "every state the operator maps to was sent and checked"
    );
    assert_eq!(stand_in.created().len(), 2, "one deployment per sha");
}

#[tokio::test]
async fn environments_match_gitlabs_request_schemas() {
    let stand_in = deployments::GitLabEnvironments::default();
    let url = scm::serve_locally(stand_in.router()).await;
    let config = GitLabConfig {
        url,
        token: "glpat-test".into(),
    };
    let gitlab = gl::GitLab::new(&config, Arc::new(Metrics::new())).expect("a client");
    let mut all = lifecycle();
    // A URL that changed (a renamed host) is written to the environment.
    for d in &mut all[2..] {
        d.url = Some("https://pr-1.previews.example.net".into());
    }
    let stopped = || stand_in.seen().iter().any(|r| r.path.ends_with("/stop"));
    deploy(gitlab, all, stopped).await;
    let (create, update, stop) = (
        schema("gitlab-post-environment"),
        schema("gitlab-put-environment"),
        schema("gitlab-post-environment-stop"),
    );
    let mut checked = Vec::new();
    for r in stand_in.seen() {
        let validator = match r.method {
            "POST" if r.path.ends_with("/environments") => &create,
            "PUT" => &update,
            "POST" if r.path.ends_with("/stop") => &stop,
            _ => continue,
        };
        // A stop carries no body; GitLab's description requires none.
        let body = if r.body.is_null() {
            serde_json::json!({})
        } else {
            r.body.clone()
        };
        assert_valid(validator, &body, &r.path);
        checked.push(r.method);
    }
    assert_eq!(checked, ["POST", "PUT", "POST"], "{:?}", stand_in.seen());
    let environments = stand_in.environments();
    assert_eq!(environments.len(), 1, "{environments:?}");
    assert_eq!(environments[0]["name"], "preview/team/pr-1");
    assert_eq!(environments[0]["tier"], "development");
    assert_eq!(
        environments[0]["external_url"],
        "https://pr-1.previews.example.net"
    );
    assert_eq!(environments[0]["state"], "stopped");
}
