//! Unit tests of `webhook`.

use super::*;

#[test]
fn githubs_documented_test_vector_verifies() {
    // From GitHub's "Validating webhook deliveries" documentation.
    let secret = b"It's a Secret to Everybody";
    let body = b"Hello, World!";
    let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert!(signature_valid(secret, body, Some(signature)));
    assert!(!signature_valid(b"another secret", body, Some(signature)));
    assert!(!signature_valid(secret, b"Hello, World?", Some(signature)));
}

#[test]
fn malformed_signature_headers_are_refused() {
    let secret = b"s";
    for header in [
        None,
        Some(""),
        Some("sha256="),
        Some("sha1=757107ea0eb2509fc211221cce984b8a37570b6d"),
        Some("sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
        Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1"),
        Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17ff"),
        Some("sha256=é57107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1"),
    ] {
        assert!(!signature_valid(secret, b"x", header), "{header:?}");
    }
}

fn event(action: &str, number: serde_json::Value, repo: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "action": action,
        "number": number,
        "pull_request": {"number": number, "merged": true, "head": {"sha": "abc"}},
        "repository": {"full_name": repo}
    }))
    .expect("json")
}

#[test]
fn a_closed_pull_request_is_recognised() {
    let body = event(
        "closed",
        serde_json::json!(12),
        serde_json::json!("Acme/Shop"),
    );
    assert_eq!(
        parse("pull_request", &body),
        Ok(Delivery::Closed {
            pr: ClosedPr {
                provider: Provider::Github,
                repository: "Acme/Shop".into(),
                number: 12,
                merged: true
            },
            head_sha: None,
        }),
        "\"abc\" is too short to be a commit"
    );
    let opened = event("opened", serde_json::json!(12), serde_json::json!("a/b"));
    assert_eq!(parse("pull_request", &opened), Ok(Delivery::Ignored));
    assert_eq!(parse("push", b"{}"), Ok(Delivery::Ignored));
    assert_eq!(parse("ping", b"{\"zen\": \"x\"}"), Ok(Delivery::Ping));
}

#[test]
fn hostile_payloads_are_malformed_not_panics() {
    let cases: Vec<Vec<u8>> = vec![
        b"{\"action\": \"closed\", \"pull_request\": {\"number\": 1".to_vec(),
        b"not json".to_vec(),
        b"[]".to_vec(),
        b"{}".to_vec(),
        event("closed", serde_json::json!("12"), serde_json::json!("a/b")),
        event("closed", serde_json::json!(1e300), serde_json::json!("a/b")),
        event(
            "closed",
            serde_json::json!(u64::MAX),
            serde_json::json!("a/b"),
        ),
        event("closed", serde_json::json!(-4), serde_json::json!("a/b")),
        event("closed", serde_json::json!(0), serde_json::json!("a/b")),
        event("closed", serde_json::json!(3), serde_json::json!(42)),
        event(
            "closed",
            serde_json::json!(3),
            serde_json::json!("no-slash"),
        ),
        serde_json::to_vec(
            &serde_json::json!({"action": "closed", "repository": {"full_name": "a/b"}}),
        )
        .expect("json"),
    ];
    for body in cases {
        assert!(
            matches!(parse("pull_request", &body), Err(ParseError::Malformed(_))),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}

const GITHUB_CLOSED: &[u8] =
    include_bytes!("../../tests/fixtures/webhooks/github-pull_request-closed.json");
const GITLAB_MERGE_REQUEST: &[u8] =
    include_bytes!("../../tests/fixtures/webhooks/gitlab-merge_request.json");

#[test]
fn a_real_github_close_delivery_names_its_head_sha() {
    assert_eq!(
        parse("pull_request", GITHUB_CLOSED),
        Ok(Delivery::Closed {
            pr: ClosedPr {
                provider: Provider::Github,
                repository: "Codertocat/Hello-World".into(),
                number: 2,
                merged: false
            },
            head_sha: Some("ec26c3e57ca3a959ca5aad62de7213c562f8c821".into()),
        })
    );
}

#[test]
fn a_real_gitlab_merge_request_delivery_names_its_last_commit() {
    assert_eq!(
        gitlab_head_sha(GITLAB_MERGE_REQUEST).as_deref(),
        Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
    );
    let mut hook: serde_json::Value = serde_json::from_slice(GITLAB_MERGE_REQUEST).expect("json");
    hook["object_attributes"]["last_commit"]["id"] = "not a sha".into();
    assert_eq!(
        gitlab_head_sha(&serde_json::to_vec(&hook).expect("json")),
        None
    );
    assert_eq!(gitlab_head_sha(b"{}"), None);
}

#[test]
fn an_unconfirmed_close_matches_only_previews_at_its_head() {
    let head = Some("ec26c3e57ca3a959ca5aad62de7213c562f8c821");
    assert!(at_head("ec26c3e57ca3a959ca5aad62de7213c562f8c821", head));
    assert!(
        at_head("ec26c3e", head),
        "an abbreviation of the same commit"
    );
    assert!(!at_head("ec26c3", head), "shorter than admission allows");
    assert!(!at_head("", head));
    assert!(!at_head("0f26c3e57ca3a959", head), "another commit");
    assert!(!at_head("ec26c3e", None), "a delivery without a head");
    assert_eq!(commit("EC26C3E").as_deref(), Some("ec26c3e"));
    assert_eq!(commit("ec26c3e57ca3a959ca5aad62de7213c562f8c821zz"), None);
    assert_eq!(commit(&"a".repeat(65)), None);
}

fn webhook_state(confirms: bool) -> (WebhookState, mpsc::Receiver<Teardown>) {
    let (closed, queued) = mpsc::channel(4);
    let state = WebhookState {
        secret: Credential::fixed("s"),
        seen: Arc::new(Mutex::new(SeenDeliveries::new(4))),
        closed,
        metrics: Arc::new(Metrics::new()),
        confirms,
    };
    (state, queued)
}

fn closed_pr() -> ClosedPr {
    ClosedPr {
        provider: Provider::Github,
        repository: "acme/shop".into(),
        number: 2,
        merged: false,
    }
}

#[test]
fn the_answer_to_an_unconfirmable_close_says_what_it_deletes() {
    let sha = "ec26c3e57ca3a959ca5aad62de7213c562f8c821";
    let (state, mut queued) = webhook_state(false);
    let (result, code, text) = close(&state, closed_pr(), Some(sha.into()), None);
    assert_eq!(
        (result, code),
        (WebhookResult::Accepted, StatusCode::ACCEPTED)
    );
    assert!(
        text.contains("only the previews of acme/shop#2 at ec26c3e57ca3")
            && text.contains("no GitHub credentials"),
        "{text}"
    );
    let queued = queued.try_recv().expect("queued");
    assert_eq!(queued.head_sha.as_deref(), Some(sha));

    let (state, mut queued) = webhook_state(false);
    let (result, code, text) = close(&state, closed_pr(), None, None);
    assert_eq!(
        (result, code),
        (WebhookResult::Ignored, StatusCode::ACCEPTED)
    );
    assert!(text.starts_with("nothing deleted"), "{text}");
    assert!(
        queued.try_recv().is_err(),
        "nothing to delete, nothing queued"
    );

    let (state, mut queued) = webhook_state(true);
    let (_, code, text) = close(&state, closed_pr(), None, None);
    assert_eq!(code, StatusCode::ACCEPTED);
    assert!(text.contains("once GitHub confirms"), "{text}");
    assert!(queued.try_recv().is_ok());
}

#[test]
fn repeated_deliveries_are_recognised_within_capacity() {
    let mut seen = SeenDeliveries::new(2);
    assert!(seen.first_time("a"));
    assert!(!seen.first_time("a"));
    assert!(seen.first_time("b"));
    assert!(seen.first_time("c"));
    assert!(
        seen.first_time("a"),
        "the oldest is forgotten past capacity"
    );
}

#[test]
fn a_destroyed_group_names_only_its_previews_at_its_head() {
    let group = |name: &str, repo: &str, head_ref: Option<&str>, sha: &str| {
        let mut spec = serde_json::json!({"repository": repo, "pullRequest": 7, "headSha": sha,
                                          "services": [{"name": "web", "image": "web:1"}]});
        if let Some(head_ref) = head_ref {
            spec["mergeGroup"] = serde_json::json!({"headRef": head_ref});
        }
        Arc::new(
            serde_json::from_value::<PreviewEnvironment>(serde_json::json!({
                "apiVersion": "preview.dev/v1alpha1", "kind": "PreviewEnvironment",
                "metadata": {"name": name, "namespace": "team"}, "spec": spec,
            }))
            .expect("preview"),
        )
    };
    let queue = "gh-readonly-queue/main/pr-7-abc";
    let previews = vec![
        group(
            "full-ref",
            "acme/shop",
            Some(&format!("refs/heads/{queue}")),
            "c0ffee01",
        ),
        group("short-ref", "Acme/Shop", Some(queue), "c0ffee0123"),
        group("pr-itself", "acme/shop", None, "c0ffee01"),
        group(
            "other-group",
            "acme/shop",
            Some("gh-readonly-queue/main/pr-8-def"),
            "c0ffee01",
        ),
        group("other-sha", "acme/shop", Some(queue), "deadbeef"),
        group("other-repo", "acme/web", Some(queue), "c0ffee01"),
    ];
    let names: Vec<String> =
        group_previews(&previews, "acme/shop", queue, Some("c0ffee0123456789"))
            .iter()
            .map(|pe| pe.name_any())
            .collect();
    assert_eq!(names, vec!["full-ref", "short-ref"]);
    assert!(group_previews(&previews, "acme/shop", queue, None).is_empty());
}
