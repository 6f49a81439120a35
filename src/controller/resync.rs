//! The fail-safe resync: GitHub does not retry a webhook delivery that never arrived, so now
//! and then the leader lists the open pull requests of every repository that has previews and
//! deletes the previews whose PR GitHub explicitly reports closed. Anything else (an error, a
//! timeout, a PR reported open) deletes nothing; a repository GitHub cannot be asked about
//! shows `ScmReachable=False` on its previews until it can.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use kube::runtime::reflector::ObjectRef;
use tracing::{info, warn};

use super::context::Context;
use super::events;
use super::report::{self, Announcement};
use crate::api::PreviewEnvironment;
use crate::client::gone_is_ok;
use crate::github::{PrState, Pulls};
use crate::sync::lock;

/// Whether GitHub could be asked about each repository (lower case) at the last resync:
/// `Err` holds why not. Repositories never asked about are absent.
#[derive(Default)]
pub struct Reachability {
    repositories: Mutex<HashMap<String, Result<(), String>>>,
}

impl Reachability {
    /// What the last resync found for `repository`.
    pub fn of(&self, repository: &str) -> Option<Result<(), String>> {
        lock(&self.repositories)
            .get(&repository.to_ascii_lowercase())
            .cloned()
    }

    /// Records what a resync found; true when it changed.
    fn record(&self, repository: &str, found: Result<(), String>) -> bool {
        let mut all = lock(&self.repositories);
        let key = repository.to_ascii_lowercase();
        let changed = all.get(&key) != Some(&found);
        all.insert(key, found);
        changed
    }
}

/// Resyncs every `interval` while this process leads; without a token there is nothing to do.
pub async fn run(ctx: Arc<Context>, pulls: Option<Arc<Pulls>>, interval: Duration) {
    let Some(pulls) = pulls else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !*ctx.synced.borrow() || !*ctx.leader.borrow() {
            continue;
        }
        resync(&ctx, &pulls).await;
    }
}

async fn resync(ctx: &Context, pulls: &Pulls) {
    let mut by_repository: BTreeMap<String, Vec<Arc<PreviewEnvironment>>> = BTreeMap::new();
    for pe in ctx.stores.previews.state() {
        // Only previews their class admits: a tenant cannot spend the shared token's rate
        // limit on repositories its class does not give it.
        let admitted = pe.status.as_ref().is_some_and(report::may_report);
        if pe.metadata.deletion_timestamp.is_none() && admitted {
            by_repository
                .entry(pe.spec.repository.to_ascii_lowercase())
                .or_default()
                .push(pe);
        }
    }
    for (repository, previews) in by_repository {
        let found = match pulls.open(&repository).await {
            Ok(open) => {
                let closing = previews
                    .iter()
                    .filter(|p| !open.contains(&p.spec.pull_request));
                delete_closed(ctx, pulls, &repository, closing).await
            }
            Err(error) => Err(error.to_string()),
        };
        if let Err(why) = &found {
            warn!(%repository, %why, "resync could not ask GitHub; nothing deleted");
        }
        if ctx.resync.record(&repository, found) {
            // The previews show it in their ScmReachable condition.
            for pe in &previews {
                ctx.wake(ObjectRef::from_obj(pe.as_ref()));
            }
        }
    }
}

/// Deletes each of `candidates` (previews whose PR is not among the open ones) that GitHub
/// reports closed when asked about that one PR.
async fn delete_closed<'a>(
    ctx: &Context,
    pulls: &Pulls,
    repository: &str,
    candidates: impl Iterator<Item = &'a Arc<PreviewEnvironment>>,
) -> Result<(), String> {
    for pe in candidates {
        let number = pe.spec.pull_request;
        match pulls.state(repository, number).await {
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
                reason: "PullRequestClosed".to_string(),
                note: format!(
                    "GitHub reports {repository}#{number} closed (found by the resync); \
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
