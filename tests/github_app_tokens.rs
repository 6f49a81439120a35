//! A GitHub App's installation tokens are minted once per installation and reused until they
//! near expiry, not once per call: checked against the loopback GitHub stand-in of the cluster
//! tests, without a cluster.

#[allow(dead_code)] // the stand-in serves more routes than these tests use
#[path = "common/scm.rs"]
mod scm;

use std::sync::Arc;

use http::Method;
use preview_operator::github::{Credentials, GitHub, GitHubConfig};
use preview_operator::metrics::Metrics;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use scm::{APP_ID, GitHub as StandIn, INSTALLATION_TOKEN, Route};

/// The operator's client as the App, and the stand-in that knows the App's public key.
async fn app() -> (Arc<GitHub>, StandIn) {
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("a key");
    let private_pem = key.to_pkcs1_pem(LineEnding::LF).expect("PEM");
    let public_pem = rsa::RsaPublicKey::from(&key)
        .to_public_key_pem(LineEnding::LF)
        .expect("PEM");
    let stand_in = StandIn::app(&public_pem);
    let url = stand_in
        .serve(&[Route::App, Route::Statuses, Route::CheckRuns])
        .await;
    let config = GitHubConfig {
        api_url: url,
        credentials: Credentials::App {
            id: APP_ID,
            private_key: private_pem.as_str().into(),
        },
    };
    let github = GitHub::new(&config, Arc::new(Metrics::new())).expect("a client");
    (github, stand_in)
}

fn token_requests(stand_in: &StandIn) -> usize {
    stand_in
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("/access_tokens"))
        .count()
}

#[tokio::test]
async fn an_installation_token_is_minted_once_for_many_calls_to_its_repositories() {
    let (github, stand_in) = app().await;
    let body = serde_json::json!({"state": "pending", "context": "preview/team/pr-1"});
    // 43 calls, as many as a busy preview's lifetime of statuses, over two repositories of
    // the same installation.
    for n in 0..43 {
        let repository = if n % 2 == 0 { "acme/shop" } else { "acme/cart" };
        let path = format!("/repos/{repository}/statuses/c0ffee{n:02}");
        let answer = github
            .call(repository, Method::POST, &path, "statuses", Some(&body))
            .await
            .expect("an answer");
        assert_eq!(answer.status, http::StatusCode::CREATED, "call {n}");
    }
    let received = stand_in.received();
    assert_eq!(received.len(), 43);
    assert!(
        received
            .iter()
            .all(|r| r.authorization.ends_with(INSTALLATION_TOKEN)),
        "every call carries the installation token"
    );
    assert_eq!(
        token_requests(&stand_in),
        1,
        "one installation, one token: {:?}",
        stand_in
            .seen()
            .iter()
            .map(|s| s.path.as_str())
            .collect::<Vec<_>>()
    );
    let lookups = stand_in
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("/installation"))
        .count();
    assert_eq!(lookups, 2, "each repository's installation looked up once");
}

#[tokio::test]
async fn concurrent_callers_share_the_installations_client() {
    let (github, stand_in) = app().await;
    let body = serde_json::json!({"state": "success", "context": "preview/team/pr-2"});
    // A first call mints the token; then ten at once reuse it.
    github
        .call(
            "acme/shop",
            Method::POST,
            "/repos/acme/shop/statuses/c0ffee",
            "statuses",
            Some(&body),
        )
        .await
        .expect("an answer");
    let calls = (0..10).map(|_| {
        github.call(
            "acme/shop",
            Method::POST,
            "/repos/acme/shop/statuses/c0ffee",
            "statuses",
            Some(&body),
        )
    });
    for answer in futures::future::join_all(calls).await {
        assert!(answer.expect("an answer").status.is_success());
    }
    assert_eq!(token_requests(&stand_in), 1);
}
