//! Unit tests of `webhook`.

use super::*;

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
