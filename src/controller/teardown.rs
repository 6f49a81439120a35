//! Teardown: expiry, the finalizer's cleanup (delete the preview
//! namespace and hold the finalizer until it is gone), and the orphan sweep that deletes
//! managed namespaces whose PreviewEnvironment no longer exists.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tracing::{debug, info, warn};

use super::cached::CachedMeta;
use super::children::FluxStores;
use super::commit;
use super::context::Context;
use super::delivered;
use super::error::Error;
use super::events;
use super::lifetime::Lifetime;
use super::report::{self, Announcement};
use super::slim::Keeps;
use super::writes::Transition;
use crate::api::{Phase, PreviewEnvironment, PreviewEnvironmentStatus, format_duration};
use crate::client::{gone_is_ok, is_status};
use crate::naming::{self, OWNER_NAMESPACE, OWNER_UID, Owner};

/// Deletes an expired preview (its finalizer then tears it down), saying why in an Event.
pub async fn expire(
    ctx: &Context,
    pe: &PreviewEnvironment,
    owner: &Owner,
    lifetime: &Lifetime,
) -> Result<Action, Error> {
    let note = format!(
        "time to live {} ran out; deleting the preview",
        format_duration(lifetime.ttl)
    );
    delete(ctx, pe, owner, events::Reason::Expired, note).await
}

/// Deletes a preview that slept as long as its class allows, saying so in an Event.
pub async fn slept_too_long(
    ctx: &Context,
    pe: &PreviewEnvironment,
    owner: &Owner,
    slept: Duration,
) -> Result<Action, Error> {
    let note = format!(
        "slept {} (the class's deleteAfterSleeping); deleting the preview",
        format_duration(slept)
    );
    delete(ctx, pe, owner, events::Reason::SleptTooLong, note).await
}

/// Deletes `pe` for `reason` (its finalizer then tears it down).
async fn delete(
    ctx: &Context,
    pe: &PreviewEnvironment,
    owner: &Owner,
    reason: events::Reason,
    note: String,
) -> Result<Action, Error> {
    report::announce(
        ctx,
        pe,
        Announcement {
            kind: events::Kind::Normal,
            reason,
            note,
        },
    );
    gone_is_ok(
        Api::<PreviewEnvironment>::namespaced(ctx.client.clone(), &owner.namespace)
            .delete(&owner.name, &DeleteParams::default())
            .await,
    )
    .map_err(|source| Error::Expire {
        name: owner.name.clone(),
        source,
    })?;
    Ok(Action::await_change())
}

/// The finalizer's cleanup: frees the preview's concurrency slot, says Terminating, deletes
/// the namespace and holds the finalizer (by a waiting error) until the namespace is gone.
pub async fn cleanup(pe: &PreviewEnvironment, ctx: &Context) -> Result<Action, Error> {
    let owner =
        Owner::of(pe).ok_or_else(|| Error::Incomplete(pe.name_any(), "namespace or uid"))?;
    let ns_name = naming::preview_namespace_of(pe, &owner, &ctx.config.namespace_prefix);
    ctx.queue.release(&owner, &ctx.stores.previews);
    // The namespace first: its deletion is what takes long (the namespace controller), so it
    // starts before anything else is written.
    let cached = cached_namespace(&ctx.stores.namespaces, &ns_name, &owner.uid);
    let gone = if cached.as_ref().is_some_and(|ns| ns.deleting) {
        // Its deletion is under way, and its end (a watch event) wakes this preview again:
        // no call to the API server while waiting.
        Gone::Deleting
    } else {
        let deleted = async {
            delivered::suspend_all(&ctx.client, &ctx.stores.flux, &ns_name).await?;
            match cached.and_then(|ns| ns.uid) {
                Some(uid) => delete_cached_namespace(&ctx.client, &ns_name, &owner.uid, uid).await,
                None => delete_owned_namespace(&ctx.client, &ns_name, &owner.uid).await,
            }
        };
        deleted.await.map_err(|source| Error::DeleteNamespace {
            name: ns_name.clone(),
            source,
        })?
    };
    if gone == Gone::Deleting {
        // Said while the namespace controller works, once it has worked a while
        // (`TERMINATING_HOLD`): most teardowns end first, and a status written then would be
        // read by no one.
        if let Some(terminating) = terminating(pe.status.as_ref())
            && ctx.writes.terminating_hold(&owner.uid).is_none()
        {
            commit::commit(ctx, pe, &owner.uid, terminating).await?;
        }
        return Err(Error::TeardownInProgress(ns_name));
    }
    // Gone (or never ours): the finalizer goes now. The pull request hears it is torn down
    // here when the status never said Terminating (that write tells it otherwise).
    if let Some(terminating) = terminating(pe.status.as_ref()) {
        let transition = Transition {
            before: pe.status.clone(),
            after: terminating,
        };
        report::publish(ctx, pe, &transition);
    }
    ctx.forget(pe, &owner.uid, &ns_name);
    if let Some(deleted) = &pe.metadata.deletion_timestamp {
        ctx.metrics
            .torn_down(Timestamp::now().duration_since(deleted.0).unsigned_abs());
    }
    info!(namespace = %owner.namespace, name = %owner.name, preview_namespace = %ns_name, "torn down");
    Ok(Action::await_change())
}

/// The status that says a preview is being torn down, unless it says so already.
pub fn terminating(status: Option<&PreviewEnvironmentStatus>) -> Option<PreviewEnvironmentStatus> {
    if status.and_then(|s| s.phase) == Some(Phase::Terminating) {
        return None;
    }
    let mut status = status.cloned().unwrap_or_default();
    status.phase = Some(Phase::Terminating);
    Some(status)
}

/// What the cache shows of preview namespace `name`, if it shows it as `owner_uid`'s.
struct CachedNamespace {
    uid: Option<String>,
    deleting: bool,
}

fn cached_namespace(
    namespaces: &Store<CachedMeta<Namespace>>,
    name: &str,
    owner_uid: &str,
) -> Option<CachedNamespace> {
    let ns = namespaces.get(&ObjectRef::new(name))?;
    (ns.kept(OWNER_UID) == Some(owner_uid)).then(|| CachedNamespace {
        uid: ns.metadata.uid.clone(),
        deleting: ns.metadata.deletion_timestamp.is_some(),
    })
}

/// What became of a namespace the operator wanted gone.
#[derive(Debug, PartialEq, Eq)]
pub enum Gone {
    /// It does not exist (any more).
    Yes,
    /// Deletion is under way.
    Deleting,
    /// It exists but is not ours to delete.
    NotOurs,
}

/// Deletes namespace `name` if it carries `owner_uid`, and says whether it is gone. The UID is
/// also a delete precondition, so a namespace re-created by someone else in between is safe.
pub async fn delete_owned_namespace(
    client: &Client,
    name: &str,
    owner_uid: &str,
) -> Result<Gone, kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let Some(ns) = api.get_metadata_opt(name).await? else {
        return Ok(Gone::Yes);
    };
    if ns.labels().get(OWNER_UID).map(String::as_str) != Some(owner_uid) {
        return Ok(Gone::NotOurs);
    }
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Gone::Deleting);
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: ns.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    Ok(match gone_is_ok(api.delete(name, &params).await)? {
        Some(_) => Gone::Deleting,
        None => Gone::Yes,
    })
}

/// Deletes namespace `name`, which the cache shows as `owner_uid`'s with UID `uid`, without
/// reading it first (at 1000 previews that read was a thousand requests more while the
/// namespace controller needs the API server most). The UID precondition keeps it safe: a
/// namespace deleted and re-created meanwhile, by anyone, fails it (409), and is then read
/// and judged like one the cache does not show.
async fn delete_cached_namespace(
    client: &Client,
    name: &str,
    owner_uid: &str,
    uid: String,
) -> Result<Gone, kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match gone_is_ok(api.delete(name, &params).await) {
        Ok(Some(_)) => Ok(Gone::Deleting),
        Ok(None) => Ok(Gone::Yes),
        Err(e) if is_status(&e, 409) => delete_owned_namespace(client, name, owner_uid).await,
        Err(e) => Err(e),
    }
}

/// Whether the owner a managed namespace names still exists. Asks the API server when the
/// cache says no, so a lagging cache never gets a live preview's namespace deleted.
pub async fn owner_exists(
    client: &Client,
    previews: &Store<PreviewEnvironment>,
    ns: &CachedMeta<Namespace>,
) -> Result<bool, kube::Error> {
    let Some(uid) = ns.kept(OWNER_UID) else {
        // Not stamped by us with an owner: not ours to judge.
        return Ok(true);
    };
    if previews
        .state()
        .iter()
        .any(|p| p.uid().as_deref() == Some(uid))
    {
        return Ok(true);
    }
    let Some((owner_ns, owner_name)) = naming::owner_ref(ns.kept(naming::OWNER_REF)) else {
        return Ok(false);
    };
    if ns.kept(OWNER_NAMESPACE) != Some(owner_ns) {
        return Ok(false);
    }
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), owner_ns);
    Ok(api
        .get_metadata_opt(owner_name)
        .await?
        .is_some_and(|p| p.uid().as_deref() == Some(uid)))
}

/// One pass of the orphan sweep: deletes managed namespaces whose owner is gone. Returns how
/// many it deleted.
pub async fn sweep_orphans(
    client: &Client,
    previews: &Store<PreviewEnvironment>,
    namespaces: &Store<CachedMeta<Namespace>>,
    flux: &FluxStores,
) -> Result<usize, kube::Error> {
    let mut deleted = 0;
    for ns in namespaces.state() {
        if ns.metadata.deletion_timestamp.is_some()
            || owner_exists(client, previews, ns.as_ref()).await?
        {
            continue;
        }
        let Some(uid) = ns.kept(OWNER_UID).map(str::to_string) else {
            continue;
        };
        let name = ns.name_any();
        delivered::suspend_all(client, flux, &name).await?;
        if delete_owned_namespace(client, &name, &uid).await? == Gone::Deleting {
            info!(namespace = %name, owner_uid = %uid, "deleted orphaned preview namespace");
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Runs the orphan sweep at start-up (once the caches are filled) and then every `interval`.
pub async fn run_sweeper(
    client: Client,
    previews: Store<PreviewEnvironment>,
    namespaces: Store<CachedMeta<Namespace>>,
    flux: FluxStores,
    interval: Duration,
    mut synced: tokio::sync::watch::Receiver<bool>,
    leader: tokio::sync::watch::Receiver<bool>,
) {
    if synced.wait_for(|s| *s).await.is_err() {
        return;
    }
    debug!(?interval, "orphan sweep started");
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if !*leader.borrow() {
            continue;
        }
        if let Err(error) = sweep_orphans(&client, &previews, &namespaces, &flux).await {
            warn!(%error, "orphan sweep failed; retrying at the next interval");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_says_terminating_once() {
        let first = terminating(None).expect("a status to write");
        assert_eq!(first.phase, Some(Phase::Terminating));
        assert_eq!(terminating(Some(&first)), None, "nothing more to write");
        let ready = PreviewEnvironmentStatus {
            phase: Some(Phase::Ready),
            url: Some("http://web".into()),
            ..PreviewEnvironmentStatus::default()
        };
        let next = terminating(Some(&ready)).expect("a status to write");
        assert_eq!(next.url, ready.url, "the rest of the status is kept");
    }

    #[test]
    fn durations_read_like_the_spec_format() {
        assert_eq!(format_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(format_duration(Duration::from_secs(90_061)), "1d1h1m1s");
    }
}
