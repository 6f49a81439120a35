//! Rotated credential files are used without a restart: the webhook secrets, the GitHub token,
//! the GitHub App's key and the GitLab token are each swapped the way the kubelet swaps a
//! mounted Secret, and the next uses after the recheck interval carry the new one. Against the
//! webhook routes and the loopback stand-ins of the cluster tests, without a cluster.

#[allow(dead_code)] // the stand-in serves more routes than these tests use
#[path = "common/scm.rs"]
mod scm;

use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use hmac::{Hmac, KeyInit, Mac};
use http::{Method, Request, StatusCode};
use preview_operator::credential::Credential;
use preview_operator::github::{Credentials, GitHub, GitHubConfig};
use preview_operator::gitlab::{GitLab, GitLabConfig};
use preview_operator::metrics::Metrics;
use preview_operator::webhook::{self, SeenDeliveries, WebhookState};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use scm::{APP_ID, GitHub as StandIn, Route};
use sha2::Sha256;
use tower::ServiceExt;

/// How often the credentials here are re-read: short, so the tests are quick; the operator's
/// is `credential::RECHECK`.
const RECHECK: Duration = Duration::from_millis(50);

/// How long a rotation may take to be seen before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// A Secret mounted the kubelet's way: `<key> -> ..data/<key>`, `..data` a symlink to the
/// directory of the current content, swapped by renaming a new symlink over it.
struct Mount {
    dir: PathBuf,
    key: &'static str,
    generation: u32,
}

impl Mount {
    fn new(test: &str, key: &'static str, content: &str) -> Mount {
        let dir = std::env::temp_dir().join(format!(
            "preview-operator-rotation-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory");
        let mut mount = Mount {
            dir,
            key,
            generation: 0,
        };
        mount.rotate(content);
        symlink(format!("..data/{key}"), mount.file()).expect("the key's link");
        mount
    }

    fn file(&self) -> PathBuf {
        self.dir.join(self.key)
    }

    fn credential(&self) -> Credential {
        Credential::from_file("--test-file", &self.file(), RECHECK).expect("a credential")
    }

    fn rotate(&mut self, content: &str) {
        self.generation += 1;
        let data = format!("..2026_12_05_{}", self.generation);
        std::fs::create_dir_all(self.dir.join(&data)).expect("a data directory");
        std::fs::write(self.dir.join(&data).join(self.key), content).expect("the content");
        let tmp = self.dir.join("..data_tmp");
        symlink(&data, &tmp).expect("the new link");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("the swap");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Tries `attempt` until it holds, or fails the test with `what` after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !attempt().await {
        assert!(
            start.elapsed() < DEADLINE,
            "not within {DEADLINE:?}: {what}"
        );
        tokio::time::sleep(RECHECK / 5).await;
    }
}

fn webhook_router(github: Credential, gitlab: Credential) -> axum::Router {
    let (closed, _) = tokio::sync::mpsc::channel(16);
    let state = |secret| WebhookState {
        secret,
        seen: Arc::new(Mutex::new(SeenDeliveries::new(1024))),
        closed: closed.clone(),
        metrics: Arc::new(Metrics::new()),
        confirms: false,
    };
    webhook::router(Some(state(github)), Some(state(gitlab)), 512 * 1024)
}

async fn answer(router: &axum::Router, request: Request<Body>) -> StatusCode {
    router
        .clone()
        .oneshot(request)
        .await
        .expect("an answer")
        .status()
}

/// A GitHub ping signed with `secret`.
fn github_ping(secret: &str) -> Request<Body> {
    let body = br#"{"zen":"Keep it logically awesome."}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("a key");
    mac.update(body);
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Request::post("/webhooks/github")
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-hub-signature-256", format!("sha256={signature}"))
        .body(Body::from(&body[..]))
        .expect("a request")
}

/// A GitLab push hook told with `token`.
fn gitlab_push(token: &str) -> Request<Body> {
    Request::post("/webhooks/gitlab")
        .header("content-type", "application/json")
        .header("x-gitlab-event", "Push Hook")
        .header("x-gitlab-token", token)
        .body(Body::from(r#"{"object_kind":"push"}"#))
        .expect("a request")
}

#[tokio::test]
async fn rotated_webhook_secrets_are_checked_against_without_a_restart() {
    let mut github_secret = Mount::new("webhook-github", "secret", "secret-a\n");
    let mut gitlab_secret = Mount::new("webhook-gitlab", "token", "token-a\n");
    let router = webhook_router(github_secret.credential(), gitlab_secret.credential());
    assert!(answer(&router, github_ping("secret-a")).await.is_success());
    assert!(answer(&router, gitlab_push("token-a")).await.is_success());

    github_secret.rotate("secret-b\n");
    gitlab_secret.rotate("token-b\n");
    eventually(
        "a GitHub delivery signed with the new secret is accepted",
        || {
            let router = router.clone();
            async move { answer(&router, github_ping("secret-b")).await.is_success() }
        },
    )
    .await;
    eventually("a GitLab delivery with the new token is accepted", || {
        let router = router.clone();
        async move { answer(&router, gitlab_push("token-b")).await.is_success() }
    })
    .await;
    assert_eq!(
        answer(&router, github_ping("secret-a")).await,
        StatusCode::UNAUTHORIZED,
        "the old GitHub secret is refused"
    );
    assert_eq!(
        answer(&router, gitlab_push("token-a")).await,
        StatusCode::UNAUTHORIZED,
        "the old GitLab token is refused"
    );
}

/// Posts a commit status to `acme/shop` and returns how the call went.
async fn post_status(github: &GitHub) -> Option<StatusCode> {
    let body = serde_json::json!({"state": "pending", "context": "preview/team/pr-1"});
    github
        .call(
            "acme/shop",
            Method::POST,
            "/repos/acme/shop/statuses/c0ffee",
            "statuses",
            Some(&body),
        )
        .await
        .ok()
        .map(|answer| answer.status)
}

#[tokio::test]
async fn a_rotated_github_token_is_sent_without_a_restart() {
    let stand_in = StandIn::default();
    let url = stand_in.serve(&[Route::Statuses]).await;
    let mut token = Mount::new("github-token", "token", "ghp_first\n");
    let config = GitHubConfig {
        api_url: url,
        credentials: Credentials::Token(token.credential()),
    };
    let github = GitHub::new(&config, Arc::new(Metrics::new())).expect("a client");
    let last_authorization = || {
        stand_in
            .received()
            .last()
            .map(|r| r.authorization.clone())
            .unwrap_or_default()
    };
    assert_eq!(post_status(&github).await, Some(StatusCode::CREATED));
    assert!(last_authorization().ends_with(" ghp_first"));

    token.rotate("ghp_second\n");
    eventually("a status is posted with the new token", || async {
        post_status(&github).await;
        last_authorization().ends_with(" ghp_second")
    })
    .await;
    post_status(&github).await;
    assert!(
        last_authorization().ends_with(" ghp_second"),
        "the old token is not used again"
    );
}

/// A key pair of the App: the private key (PEM) and the public key the stand-in verifies with.
fn app_key() -> (String, String) {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("a key");
    let private_pem = key.to_pkcs1_pem(LineEnding::LF).expect("PEM");
    let public_pem = rsa::RsaPublicKey::from(&key)
        .to_public_key_pem(LineEnding::LF)
        .expect("PEM");
    (private_pem.to_string(), public_pem)
}

/// Whether `jwt` was signed with the private key of `public_pem`.
fn signed_by(jwt: &str, public_pem: &str) -> bool {
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(public_pem.as_bytes()).expect("a key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat"]);
    jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &validation).is_ok()
}

#[tokio::test]
async fn a_rotated_app_key_signs_the_next_jwts_and_replaces_the_installation_clients() {
    let (old_private, old_public) = app_key();
    let (new_private, new_public) = app_key();
    // The stand-in knows only the old key, so a JWT of the new key is recorded as refused:
    // that is how the test sees which key signed it.
    let stand_in = StandIn::app(&old_public);
    let url = stand_in.serve(&[Route::App, Route::Statuses]).await;
    let mut key = Mount::new("app-key", "private-key.pem", &old_private);
    // Re-read on every use, so each rotation below is seen by the next call.
    let private_key =
        Credential::from_file("--test-file", &key.file(), Duration::ZERO).expect("a credential");
    let config = GitHubConfig {
        api_url: url,
        credentials: Credentials::App {
            id: APP_ID,
            private_key,
        },
    };
    let github = GitHub::new(&config, Arc::new(Metrics::new())).expect("a client");
    let minted_with = |public_pem: &str| {
        stand_in
            .seen()
            .iter()
            .filter(|s| s.path.ends_with("/access_tokens"))
            .filter(|s| signed_by(&s.credential, public_pem))
            .count()
    };
    assert_eq!(post_status(&github).await, Some(StatusCode::CREATED));
    assert_eq!(post_status(&github).await, Some(StatusCode::CREATED));
    assert_eq!(minted_with(&old_public), 1, "one token for both calls");

    key.rotate("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n");
    assert_eq!(
        post_status(&github).await,
        Some(StatusCode::CREATED),
        "a key file that holds no key keeps the last key's clients"
    );
    assert_eq!(minted_with(&old_public), 1, "and their token");

    key.rotate(&new_private);
    post_status(&github).await;
    assert_eq!(
        minted_with(&new_public),
        1,
        "the installation's client was replaced and asked for a token with a JWT of the new key"
    );
}

#[tokio::test]
async fn a_rotated_gitlab_token_is_sent_without_a_restart() {
    let stand_in = scm::GitLab::default();
    let url = stand_in.serve().await;
    let mut token = Mount::new("gitlab-token", "token", "glpat-first\n");
    let config = GitLabConfig {
        url,
        token: token.credential(),
    };
    let gitlab = GitLab::new(&config, Arc::new(Metrics::new())).expect("a client");
    let read = || async {
        let path = "/projects/acme%2Fshop/merge_requests/1";
        let _ = gitlab.call(Method::GET, path, "merge_request", None).await;
        stand_in
            .seen()
            .last()
            .map(|s| s.credential.clone())
            .unwrap_or_default()
    };
    assert_eq!(read().await, "glpat-first");

    token.rotate("glpat-second\n");
    eventually("a request carries the new token", || async {
        read().await == "glpat-second"
    })
    .await;
}
