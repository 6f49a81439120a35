//! GitHub's merge queue: a `merge_group` `destroyed` delivery tears down the previews that
//! stand for that group (`spec.mergeGroup`), at its head commit only, since GitHub offers no
//! call to confirm that a group is gone.

use std::sync::Arc;

use axum::http::StatusCode;
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use super::{Guard, Teardown, TeardownError, WebhookState, at_head, bound, enqueue};
use crate::api::PreviewEnvironment;
use crate::client::gone_is_ok;
use crate::metrics::WebhookResult;
use crate::scm::{ClosedPr, Provider};

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
