//! GitHub's merge queue: a `merge_group` `destroyed` delivery tears down the previews that
//! stand for that group (`spec.mergeGroup`), at its head commit only, since GitHub offers no
//! call to confirm that a group is gone.

use std::sync::Arc;

use axum::http::StatusCode;
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use tracing::{info, warn};

use super::{
    Delivery, Guard, ParseError, Repository, Teardown, TeardownError, WebhookState, at_head, bound,
    commit, enqueue,
};
use crate::api::PreviewEnvironment;
use crate::client::gone_is_ok;
use crate::metrics::WebhookResult;
use crate::scm::{ClosedPr, Provider};

/// A `merge_group` delivery: only `destroyed` is acted on.
pub(super) fn parse(body: &[u8]) -> Result<Delivery, ParseError> {
    #[derive(Deserialize)]
    struct Event {
        merge_group: Group,
        repository: Repository,
    }
    #[derive(Deserialize)]
    struct Group {
        head_ref: String,
        head_sha: String,
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ParseError::Malformed(e.to_string()))?;
    match value["action"].as_str() {
        Some("destroyed") => {}
        Some(_) => return Ok(Delivery::Ignored),
        None => {
            return Err(ParseError::Malformed(
                "a merge_group event without an action".into(),
            ));
        }
    }
    let e: Event =
        serde_json::from_value(value).map_err(|e| ParseError::Malformed(e.to_string()))?;
    let group = crate::api::environment::short_ref(&e.merge_group.head_ref);
    if !group.starts_with("gh-readonly-queue/") || !e.repository.full_name.contains('/') {
        return Err(ParseError::Malformed(
            "a merge group ref outside gh-readonly-queue/, or no repository".into(),
        ));
    }
    Ok(Delivery::GroupDestroyed {
        repository: e.repository.full_name,
        group: group.to_string(),
        head_sha: commit(&e.merge_group.head_sha),
    })
}

/// Answers a destroyed merge queue group and queues the teardown of its previews. GitHub has
/// no call to confirm that a group is gone, so only previews at the group's head commit go
/// (a group's ref and head commit are its identity; a replay finds nothing newer to delete).
pub(super) fn destroyed(
    state: &WebhookState,
    repository: String,
    group: String,
    head_sha: Option<String>,
    delivery: Option<String>,
) -> (WebhookResult, StatusCode, String) {
    let Some(sha) = head_sha.clone() else {
        return (
            WebhookResult::Ignored,
            StatusCode::ACCEPTED,
            format!("nothing deleted: the merge group {group} delivery names no head commit\n"),
        );
    };
    let text =
        format!("tearing down the previews of merge group {group} of {repository} at {sha}\n");
    let teardown = Teardown {
        pr: ClosedPr {
            provider: Provider::Github,
            repository,
            number: 0,
            merged: false,
        },
        group: Some(group),
        head_sha,
        delivery,
    };
    enqueue(state, teardown, text)
}

/// PURE: the previews of merge queue group `group` (its ref without `refs/heads/`) of GitHub
/// repository `repository` at the group's head commit `head_sha`.
pub fn group_previews<'a>(
    previews: &'a [Arc<PreviewEnvironment>],
    repository: &str,
    group: &str,
    head_sha: Option<&str>,
) -> Vec<&'a Arc<PreviewEnvironment>> {
    previews
        .iter()
        .filter(|pe| pe.spec.provider() == Provider::Github)
        .filter(|pe| pe.spec.repository.eq_ignore_ascii_case(repository))
        .filter(|pe| {
            pe.spec
                .merge_group
                .as_ref()
                .is_some_and(|g| g.branch() == group)
        })
        .filter(|pe| at_head(&pe.spec.head_sha, head_sha))
        .collect()
}

/// Deletes the previews of a destroyed merge queue group whose class binds their namespace to
/// its repository.
pub(super) async fn tear_down(
    client: &Client,
    repository: &str,
    group: &str,
    head_sha: Option<&str>,
    guard: &Guard,
) -> Result<(), TeardownError> {
    let classes = guard.classes.state();
    let previews = guard.previews.state();
    let mut failed = None;
    for pe in group_previews(&previews, repository, group, head_sha) {
        let ns = pe.namespace().unwrap_or_default();
        if !bound(pe, &ns, &classes, &guard.tenants) {
            warn!(namespace = %ns, name = %pe.name_any(), repository, "not deleting a preview whose class does not bind its namespace to the repository");
            continue;
        }
        let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &ns);
        match gone_is_ok(api.delete(&pe.name_any(), &DeleteParams::default()).await) {
            Ok(Some(_)) => {
                info!(namespace = %ns, name = %pe.name_any(), group, "merge group destroyed; deleting its preview")
            }
            Ok(None) => {}
            Err(error) => failed = Some(error),
        }
    }
    failed.map_or(Ok(()), |e| Err(e.into()))
}
