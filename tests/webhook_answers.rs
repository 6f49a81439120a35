//! What the webhook routes answer to the providers' own example deliveries of every event
//! kind (tests/fixtures/github/README.md, tests/fixtures/gitlab/README.md): every authentic
//! delivery 2xx, acted on or not, since GitLab disables a hook that keeps answering 4xx and
//! GitHub lists every refusal as a failed delivery; 4xx only for an unauthentic or garbled one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use hmac::{Hmac, KeyInit, Mac};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use preview_operator::credential::Credential;
use preview_operator::metrics::Metrics;
use preview_operator::scm::Provider;
use preview_operator::webhook::{self, SeenDeliveries, Teardown, WebhookState};
use sha2::Sha256;
use tokio::sync::mpsc;
use tower::ServiceExt;

const SECRET_TEXT: &str = "It's a Secret to Everybody";
const SECRET: &[u8] = SECRET_TEXT.as_bytes();

/// The routes of both providers, without credentials to confirm a close, and the queue of
/// the teardowns they start.
fn router() -> (axum::Router, mpsc::Receiver<Teardown>) {
    let (closed, queued) = mpsc::channel(1024);
    let state = || WebhookState {
        secret: Credential::fixed(SECRET_TEXT),
        seen: Arc::new(Mutex::new(SeenDeliveries::new(1024))),
        closed: closed.clone(),
        metrics: Arc::new(Metrics::new()),
        confirms: false,
    };
    (
        webhook::router(Some(state()), Some(state()), 512 * 1024),
        queued,
    )
}

async fn send(router: &axum::Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.expect("an answer");
    let code = response.status();
    let body = response.into_body().collect().await.expect("a body");
    (code, String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

fn github(event: &str, body: &[u8], secret: &[u8]) -> Request<Body> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("a key");
    mac.update(body);
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Request::post("/webhooks/github")
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-hub-signature-256", format!("sha256={signature}"))
        .body(Body::from(body.to_vec()))
        .expect("a request")
}

fn gitlab(body: &[u8], token: &str) -> Request<Body> {
    Request::post("/webhooks/gitlab")
        .header("content-type", "application/json")
        .header("x-gitlab-token", token)
        .body(Body::from(body.to_vec()))
        .expect("a request")
}

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a fixture directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[tokio::test]
async fn every_real_github_delivery_is_answered_2xx() {
    let (router, _queued) = router();
    let files = fixtures("github/webhooks");
    assert!(files.len() > 50, "the examples are there");
    let mut refused = Vec::new();
    for file in &files {
        // The directory is the event's name (X-GitHub-Event), as in octokit/webhooks.
        let event = file
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .expect("an event directory");
        let body = std::fs::read(file).expect("a fixture");
        let (code, text) = send(&router, github(event, &body, SECRET)).await;
        if !code.is_success() {
            refused.push(format!("{}: {code} {text}", file.display()));
        }
    }
    assert!(refused.is_empty(), "refused: {refused:#?}");
}

#[tokio::test]
async fn every_real_gitlab_delivery_is_answered_2xx() {
    let (router, mut queued) = router();
    let token = String::from_utf8_lossy(SECRET).into_owned();
    let mut refused = Vec::new();
    for file in fixtures("gitlab/webhooks") {
        let body = std::fs::read(&file).expect("a fixture");
        let (code, text) = send(&router, gitlab(&body, &token)).await;
        if !code.is_success() {
            refused.push(format!("{}: {code} {text}", file.display()));
        }
    }
    assert!(refused.is_empty(), "refused: {refused:#?}");
    assert!(
        queued.try_recv().is_err(),
        "none of them closes a merge request"
    );
}

#[tokio::test]
async fn unauthentic_or_garbled_deliveries_are_refused() {
    let (router, _queued) = router();
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gitlab/webhooks/push.json"),
    )
    .expect("a fixture");
    assert_eq!(
        send(&router, gitlab(&body, "not the secret")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&router, gitlab(b"{not json", "It's a Secret to Everybody"))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(&router, github("push", &body, b"another secret"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&router, github("pull_request", b"[]", SECRET)).await.0,
        StatusCode::BAD_REQUEST
    );
}

/// A real merge request delivery (`action: open`) turned into a close or a merge.
fn gitlab_closing(action: &str) -> Vec<u8> {
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/gitlab/webhooks/merge_request.json"),
    )
    .expect("a fixture");
    let mut hook: serde_json::Value = serde_json::from_slice(&body).expect("json");
    hook["object_attributes"]["action"] = action.into();
    serde_json::to_vec(&hook).expect("json")
}

#[tokio::test]
async fn without_a_gitlab_token_a_close_or_merge_deletes_only_previews_at_its_last_commit() {
    let (router, mut queued) = router();
    let token = String::from_utf8_lossy(SECRET).into_owned();
    for (action, merged) in [("close", false), ("merge", true)] {
        let (code, text) = send(&router, gitlab(&gitlab_closing(action), &token)).await;
        assert_eq!(code, StatusCode::ACCEPTED, "{text}");
        assert!(
            text.contains("only the previews of gitlabhq/gitlab-test!1 at da1560886d4f")
                && text.contains("no GitLab credentials"),
            "{text}"
        );
        let teardown = queued.try_recv().expect("a teardown");
        assert_eq!(teardown.pr.provider, Provider::Gitlab);
        assert_eq!(teardown.pr.merged, merged);
        assert_eq!(
            teardown.head_sha.as_deref(),
            Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7"),
            "what an unconfirmed teardown may delete"
        );
    }

    // A close that names no commit deletes nothing at all.
    let mut hook: serde_json::Value =
        serde_json::from_slice(&gitlab_closing("close")).expect("json");
    hook["object_attributes"]
        .as_object_mut()
        .expect("attributes")
        .remove("last_commit");
    let body = serde_json::to_vec(&hook).expect("json");
    let (code, text) = send(&router, gitlab(&body, &token)).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert!(text.starts_with("nothing deleted"), "{text}");
    assert!(queued.try_recv().is_err());
}

#[tokio::test]
async fn a_destroyed_merge_group_queues_the_teardown_of_its_previews_at_its_head() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github");
    let body = std::fs::read(dir.join("derived/merge_group/destroyed.payload.json"))
        .expect("the derived delivery");
    // The derivation is a delivery GitHub could send: it meets the event's schema.
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("schemas/merge_group.destroyed.schema.json")).expect("schema"),
    )
    .expect("JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid schema");
    let delivery: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let errors: Vec<String> = validator
        .iter_errors(&delivery)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    let (router, mut queued) = router();
    let (code, text) = send(&router, github("merge_group", &body, SECRET)).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{text}");
    let teardown = queued.try_recv().expect("a teardown is queued");
    assert_eq!(
        teardown.group.as_deref(),
        Some("gh-readonly-queue/main/pr-104-929f8209d40f77f4abc622a499c93a83babdbe64")
    );
    assert_eq!(teardown.pr.repository, "octo-org/octo-repo");
    assert_eq!(
        teardown.head_sha.as_deref(),
        Some("2ffea6db159f6b6c47a24e778fb9ef40cf6b1c7d")
    );
    // A group asking for checks is not a teardown.
    let requested = std::fs::read(dir.join("webhooks/merge_group/checks_requested.payload.json"))
        .expect("the real delivery");
    let (code, _) = send(&router, github("merge_group", &requested, SECRET)).await;
    assert!(code.is_success());
    assert!(queued.try_recv().is_err());
}
