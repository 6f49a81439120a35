//! The fail-safe resync: GitHub does not retry a webhook delivery that never arrived (nor
//! does GitLab, after a few attempts), so now and then the leader lists the open pull (merge)
//! requests of every repository that has previews and deletes the previews whose PR the
//! provider explicitly reports closed. Anything else (an error, a timeout, a PR reported
//! open) deletes nothing; a repository that cannot be asked about shows `ScmReachable=False`
//! on its previews until it can.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::reflector::ObjectRef;
use tracing::{info, warn};

use super::context::Context;
use super::events;
use super::report::{self, Announcement};
use crate::api::{PreviewEnvironment, Provider};
use crate::client::gone_is_ok;
use crate::scm::{PrState, Scm};

/// Resyncs every `interval` while this process leads; without credentials there is nothing
/// to do.
pub async fn run(ctx: Arc<Context>, scm: Arc<Scm>, interval: Duration) {
    if !scm.knows(Provider::Github) && !scm.knows(Provider::Gitlab) {
        return;
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !*ctx.synced.borrow() || !*ctx.leader.borrow() {
            continue;
        }
        resync(&ctx, &scm).await;
    }
}

async fn resync(ctx: &Context, scm: &Scm) {
    let mut by_repository: BTreeMap<(Provider, String), Vec<Arc<PreviewEnvironment>>> =
        BTreeMap::new();
    for pe in ctx.stores.previews.state() {
        // Only previews their class admits: a tenant cannot spend the shared token's rate
        // limit on repositories its class does not give it.
        let admitted = pe.status.as_ref().is_some_and(report::may_report);
        let provider = pe.spec.provider();
        if pe.metadata.deletion_timestamp.is_none() && admitted && scm.knows(provider) {
            by_repository
                .entry((provider, pe.spec.repository.to_ascii_lowercase()))
                .or_default()
                .push(pe);
        }
    }
    for ((provider, repository), previews) in by_repository {
        let found = match scm.open(provider, &repository).await {
            Ok(open) => {
                let closing = previews
                    .iter()
                    .filter(|p| !open.contains(&p.spec.pull_request));
                delete_closed(ctx, scm, provider, &repository, closing).await
            }
            Err(error) => Err(error.to_string()),
        };
        if let Err(why) = &found {
            warn!(%provider, %repository, %why, "resync could not ask; nothing deleted");
        }
        if ctx.resync.record(provider, &repository, found) {
            // The previews show it in their ScmReachable condition.
            for pe in &previews {
                ctx.wake(ObjectRef::from_obj(pe.as_ref()));
            }
        }
    }
}

/// Deletes each of `candidates` (previews whose PR is not among the open ones) that the
/// provider reports closed when asked about that one PR.
async fn delete_closed<'a>(
    ctx: &Context,
    scm: &Scm,
    provider: Provider,
    repository: &str,
    candidates: impl Iterator<Item = &'a Arc<PreviewEnvironment>>,
) -> Result<(), String> {
    for pe in candidates {
        let number = pe.spec.pull_request;
        match scm.state(provider, repository, number).await {
            Ok(PrState::Closed) => {}
            // Opened after the list was taken.
            Ok(PrState::Open) => continue,
            Err(error) => return Err(error.to_string()),
        }
        let ns = pe.namespace().unwrap_or_default();
        report::announce(
            ctx,
            pe,
            Announcement {
                kind: events::Kind::Normal,
                reason: events::Reason::PullRequestClosed,
                note: format!(
                    "{provider} reports {repository}#{number} closed (found by the resync); \
                     deleting the preview"
                ),
            },
        );
        let api: Api<PreviewEnvironment> = Api::namespaced(ctx.client.clone(), &ns);
        match gone_is_ok(api.delete(&pe.name_any(), &DeleteParams::default()).await) {
            Ok(_) => {
                ctx.metrics.resync_deleted();
                info!(namespace = %ns, name = %pe.name_any(), %repository, pr = number, "resync: pull request closed; deleting its preview");
            }
            Err(error) => {
                warn!(namespace = %ns, name = %pe.name_any(), %error, "resync: failed to delete a preview")
            }
        }
    }
    Ok(())
}
