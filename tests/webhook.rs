//! GitHub webhooks against the running operator (hack/test.sh enables them with a secret it
//! generates): signed close events tear down exactly the matching previews; unsigned, forged,
//! oversized and malformed deliveries change nothing; answers come within a second.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{TestNamespace, await_gone, client, install_crd, require_operator, wait_for};
use hmac::{Hmac, KeyInit, Mac};
use kube::api::{Api, PostParams};
use preview_operator::api::PreviewEnvironment;
use serde_json::json;
use sha2::Sha256;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the cluster tests with hack/test.sh"))
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// POSTs to the operator's webhook on loopback with plain HTTP/1.1; returns the status code.
fn post(headers: &[(&str, String)], body: &[u8]) -> u16 {
    let addr = env("PREVIEW_OPERATOR_HTTP");
    let mut stream = TcpStream::connect(&addr).expect("connect to the operator");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut request = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    // The server may answer (413) and close before reading a large body; ignore write errors.
    let _ = stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.write_all(body));
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {response:?}"))
}

fn delivery(event: &str, id: &str, secret: Option<&str>, body: &[u8]) -> u16 {
    let mut headers = vec![
        ("X-GitHub-Event", event.to_string()),
        ("X-GitHub-Delivery", id.to_string()),
    ];
    if let Some(secret) = secret {
        headers.push(("X-Hub-Signature-256", sign(secret, body)));
    }
    post(&headers, body)
}

fn pr_event(action: &str, repo: &str, number: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "action": action,
        "number": number,
        "pull_request": {"number": number, "merged": action == "closed", "head": {"sha": "abcdef0"}},
        "repository": {"full_name": repo}
    }))
    .expect("json")
}

fn preview(name: &str, repo: &str, pr: i64) -> PreviewEnvironment {
    common::spec(repo, pr, "abcdef0")
        .services(json!([{"name": "web", "image": "web:1"}]))
        .named(name)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{:?}", std::process::id(), Instant::now())
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_signed_close_event_tears_down_only_the_matching_previews() {
    require_operator();
    let secret = env("PREVIEW_WEBHOOK_SECRET");
    let client = client().await;
    install_crd(&client).await;
    let a = TestNamespace::create(&client, "hook-a").await;
    let b = TestNamespace::create(&client, "hook-b").await;
    let api_a: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &a.name);
    let api_b: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &b.name);
    // The repository name is unique per run, so other tests' previews can never match.
    let repo = format!("acme/shop-{}", std::process::id());
    let pp = PostParams::default();
    api_a
        .create(&pp, &preview("match", &repo, 5))
        .await
        .expect("create");
    api_a
        .create(&pp, &preview("other-pr", &repo, 6))
        .await
        .expect("create");
    api_a
        .create(&pp, &preview("other-repo", "acme/elsewhere", 5))
        .await
        .expect("create");
    api_b
        .create(&pp, &preview("match-upper", &repo.to_uppercase(), 5))
        .await
        .expect("create");
    // Let the operator take them (finalizer added), so deletion exercises the real teardown.
    for (api, name) in [(&api_a, "match"), (&api_b, "match-upper")] {
        wait_for("the finalizer", Duration::from_secs(30), || async {
            let pe = api.get(name).await.map_err(|e| e.to_string())?;
            (!pe.metadata.finalizers.unwrap_or_default().is_empty())
                .then_some(())
                .ok_or_else(|| "no finalizer yet".to_string())
        })
        .await;
    }

    let close = pr_event("closed", &repo, 5);
    // Refused deliveries change nothing.
    assert_eq!(
        delivery("pull_request", &unique("unsigned"), None, &close),
        401
    );
    assert_eq!(
        delivery(
            "pull_request",
            &unique("forged"),
            Some("wrong secret"),
            &close
        ),
        401
    );
    let huge = vec![b' '; 2 * 1024 * 1024];
    assert_eq!(
        delivery("pull_request", &unique("huge"), Some(&secret), &huge),
        413
    );
    assert_eq!(
        delivery(
            "pull_request",
            &unique("bad"),
            Some(&secret),
            b"{\"action\": \"clo"
        ),
        400
    );
    assert_eq!(
        delivery("ping", &unique("ping"), Some(&secret), b"{\"zen\": \"hi\"}"),
        200
    );
    assert_eq!(delivery("push", &unique("push"), Some(&secret), b"{}"), 202);
    for name in ["match", "other-pr", "other-repo"] {
        assert!(
            api_a
                .get_opt(name)
                .await
                .expect("get")
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        );
    }

    let id = unique("close");
    assert_eq!(delivery("pull_request", &id, Some(&secret), &close), 202);
    assert_eq!(
        delivery("pull_request", &id, Some(&secret), &close),
        200,
        "a redelivery is recognised"
    );
    await_gone("the matching preview", Duration::from_secs(120), || {
        api_a.get_opt("match")
    })
    .await;
    await_gone(
        "the matching preview in another tenant",
        Duration::from_secs(120),
        || api_b.get_opt("match-upper"),
    )
    .await;
    for name in ["other-pr", "other-repo"] {
        let pe = api_a.get_opt(name).await.expect("get").expect("left alone");
        assert!(
            pe.metadata.deletion_timestamp.is_none(),
            "{name} must not be deleted"
        );
    }
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn signed_deliveries_are_answered_within_a_second() {
    require_operator();
    let secret = env("PREVIEW_WEBHOOK_SECRET");
    let body = pr_event("synchronize", "acme/latency", 1);
    let mut latencies: Vec<Duration> = (0..300)
        .map(|i| {
            let start = Instant::now();
            let code = delivery(
                "pull_request",
                &format!("lat-{}-{i}", std::process::id()),
                Some(&secret),
                &body,
            );
            assert_eq!(code, 202);
            start.elapsed()
        })
        .collect();
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    common::record(&format!(
        "webhook answer latency over {} signed deliveries: p50 {p50:?}, p99 {p99:?}",
        latencies.len()
    ));
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
}
