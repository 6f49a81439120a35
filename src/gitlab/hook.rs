//! GitLab's webhook (`POST /webhooks/gitlab`): deliveries authenticated by the secret token
//! in `X-Gitlab-Token`; a merge request closing or merging is acted on, every other authentic
//! event is ignored.

use http::HeaderMap;
use serde::Deserialize;

use crate::scm::hook::{Delivery, Hook, ParseError, commit, header};
use crate::scm::{ClosedPr, Provider};

/// GitLab's deliveries.
pub struct GitLabHook;

impl Hook for GitLabHook {
    const PROVIDER: Provider = Provider::Gitlab;
    const AUTH_HEADER: &'static str = "X-Gitlab-Token";

    fn authentic(secret: &[u8], headers: &HeaderMap, _body: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let token = header(headers, "x-gitlab-token")
            .unwrap_or_default()
            .as_bytes();
        !token.is_empty() && bool::from(token.ct_eq(secret))
    }

    fn delivery_id(headers: &HeaderMap) -> Option<String> {
        (header(headers, "x-gitlab-event-uuid").or_else(|| header(headers, "idempotency-key")))
            .map(|id| format!("gitlab:{id}"))
    }

    fn parse(_headers: &HeaderMap, body: &[u8]) -> Result<Delivery, ParseError> {
        match parse_hook(body) {
            Ok(Some(pr)) => Ok(Delivery::Closed {
                pr,
                head_sha: head_sha(body),
            }),
            Ok(None) => Ok(Delivery::Ignored),
            Err(e) => Err(ParseError::Malformed(e)),
        }
    }
}

/// The fields of a merge request delivery that closes or merges, all required.
#[derive(Deserialize)]
struct ClosingHook {
    object_attributes: HookMr,
    project: HookProject,
}

#[derive(Deserialize)]
struct HookMr {
    iid: i64,
}

#[derive(Deserialize)]
struct HookProject {
    path_with_namespace: String,
}

/// What a verified GitLab delivery asks for: a merge request closed or merged, or nothing.
///
/// Only a JSON object is a delivery (else `Err`); of those, only a merge request's `close` or
/// `merge` is read further and must name its merge request and project. Every other event
/// (notes, pipelines, pushes, wiki pages, system hooks that carry `event_name` instead of
/// `object_kind`, merge request updates) is `Ok(None)` whatever its shape: GitLab disables a
/// hook that keeps answering 4xx, so an event the operator does not act on must not be
/// refused for fields it does not read.
pub fn parse_hook(body: &[u8]) -> Result<Option<ClosedPr>, String> {
    let hook: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if !hook.is_object() {
        return Err("a delivery that is not a JSON object".into());
    }
    if hook["object_kind"] != "merge_request" {
        return Ok(None);
    }
    let merged = match hook["object_attributes"]["action"].as_str() {
        Some("merge") => true,
        Some("close") => false,
        _ => return Ok(None),
    };
    let closing: ClosingHook = serde_json::from_value(hook).map_err(|e| {
        format!(
            "a merge request {} without its iid or project: {e}",
            if merged { "merge" } else { "close" }
        )
    })?;
    let (mr, project) = (closing.object_attributes, closing.project);
    if mr.iid < 1 || !project.path_with_namespace.contains('/') {
        return Err("merge request iid or project path out of range".into());
    }
    Ok(Some(ClosedPr {
        provider: Provider::Gitlab,
        repository: project.path_with_namespace,
        number: mr.iid,
        merged,
    }))
}

/// The head sha of a GitLab merge request delivery: `object_attributes.last_commit.id`.
fn head_sha(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Hook {
        object_attributes: Attributes,
    }
    #[derive(Deserialize)]
    struct Attributes {
        last_commit: LastCommit,
    }
    #[derive(Deserialize)]
    struct LastCommit {
        id: String,
    }
    let hook: Hook = serde_json::from_slice(body).ok()?;
    commit(&hook.object_attributes.last_commit.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_request_hooks_that_close_or_merge_tear_down() {
        let hook = |action: &str| {
            serde_json::json!({
                "object_kind": "merge_request",
                "project": {"path_with_namespace": "acme/platform/shop"},
                "object_attributes": {"iid": 7, "action": action},
            })
            .to_string()
        };
        let closed = parse_hook(hook("merge").as_bytes()).expect("parsed");
        assert_eq!(
            closed,
            Some(ClosedPr {
                provider: Provider::Gitlab,
                repository: "acme/platform/shop".into(),
                number: 7,
                merged: true
            })
        );
        assert!(
            parse_hook(hook("close").as_bytes())
                .expect("parsed")
                .is_some_and(|c| !c.merged)
        );
        assert_eq!(parse_hook(hook("update").as_bytes()), Ok(None));
        assert_eq!(parse_hook(br#"{"object_kind": "push"}"#), Ok(None));
        assert!(parse_hook(b"not json").is_err());
        assert!(parse_hook(b"[]").is_err(), "not an object");
        let garbled =
            br#"{"object_kind": "merge_request", "object_attributes": {"action": "merge"}}"#;
        assert!(
            parse_hook(garbled).is_err(),
            "a merge naming no merge request"
        );
    }

    /// GitLab's example deliveries of every event kind (tests/fixtures/gitlab/README.md).
    const EVENTS: &[(&str, &[u8])] = &[
        (
            "build",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/build.json"),
        ),
        (
            "deployment",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/deployment.json"),
        ),
        (
            "feature_flag",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/feature_flag.json"),
        ),
        (
            "issue",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/issue.json"),
        ),
        (
            "job",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/job.json"),
        ),
        (
            "member",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/member.json"),
        ),
        (
            "merge_request",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/merge_request.json"),
        ),
        (
            "note_commit",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/note_commit.json"),
        ),
        (
            "note_issue",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/note_issue.json"),
        ),
        (
            "note_merge_request",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/note_merge_request.json"),
        ),
        (
            "note_snippet",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/note_snippet.json"),
        ),
        (
            "pipeline",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/pipeline.json"),
        ),
        (
            "push",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/push.json"),
        ),
        (
            "release",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/release.json"),
        ),
        (
            "resource_access_token_group",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/resource_access_token_group.json"),
        ),
        (
            "resource_access_token_project",
            include_bytes!(
                "../../tests/fixtures/gitlab/webhooks/resource_access_token_project.json"
            ),
        ),
        (
            "service_merge_request",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/service_merge_request.json"),
        ),
        (
            "subgroup",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/subgroup.json"),
        ),
        (
            "tag_push",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/tag_push.json"),
        ),
        (
            "wiki_page",
            include_bytes!("../../tests/fixtures/gitlab/webhooks/wiki_page.json"),
        ),
    ];

    #[test]
    fn every_real_event_the_operator_does_not_act_on_is_ignored_not_refused() {
        for (name, body) in EVENTS {
            assert_eq!(parse_hook(body), Ok(None), "{name}");
        }
    }

    #[test]
    fn a_real_merge_request_delivery_tears_down_when_it_closes_or_merges() {
        let (_, open) = EVENTS[6];
        for (action, merged) in [("close", false), ("merge", true)] {
            let mut hook: serde_json::Value = serde_json::from_slice(open).expect("json");
            hook["object_attributes"]["action"] = action.into();
            let body = serde_json::to_vec(&hook).expect("json");
            assert_eq!(
                parse_hook(&body),
                Ok(Some(ClosedPr {
                    provider: Provider::Gitlab,
                    repository: "gitlabhq/gitlab-test".into(),
                    number: 1,
                    merged,
                })),
                "{action}"
            );
        }
    }

    const GITLAB_MERGE_REQUEST: &[u8] =
        include_bytes!("../../tests/fixtures/webhooks/gitlab-merge_request.json");

    #[test]
    fn a_real_gitlab_merge_request_delivery_names_its_last_commit() {
        assert_eq!(
            head_sha(GITLAB_MERGE_REQUEST).as_deref(),
            Some("da1560886d4f094c3e6c9ef40349f7d38b5d27d7")
        );
        let mut hook: serde_json::Value =
            serde_json::from_slice(GITLAB_MERGE_REQUEST).expect("json");
        hook["object_attributes"]["last_commit"]["id"] = "not a sha".into();
        assert_eq!(head_sha(&serde_json::to_vec(&hook).expect("json")), None);
        assert_eq!(head_sha(b"{}"), None);
    }
}
