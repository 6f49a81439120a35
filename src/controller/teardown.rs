//! Teardown: the time to live and expiry, the finalizer's cleanup (delete the preview
//! namespace and hold the finalizer until it is gone), and the orphan sweep that deletes
//! managed namespaces whose PreviewEnvironment no longer exists.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, PartialObjectMeta, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tracing::{debug, info, warn};

use super::context::Context;
use super::error::Error;
use super::events;
use super::report::{self, Announcement};
use super::writes;
use crate::api::{
    Phase, PreviewEnvironment, PreviewEnvironmentStatus, format_duration, parse_duration,
};
use crate::client::gone_is_ok;
use crate::config::Config;
use crate::naming::{self, OWNER_NAMESPACE, OWNER_UID, Owner};

/// A preview's time to live: since when it counts, until when, and whether the spec asked
/// for more than policy allows.
#[derive(Clone, Debug, PartialEq)]
pub struct Lifetime {
    pub ttl: Duration,
    /// Why the asked ttl was refused (the preview then lives for the maximum).
    pub violation: Option<String>,
    /// First sight of the current headSha.
    pub since: Timestamp,
    pub expires: Time,
}

impl Lifetime {
    /// The lifetime of `pe` at `now`: ttl counted from the first sight of its headSha, and
    /// never past the class's lifetime cap counted from its creation.
    pub fn of(pe: &PreviewEnvironment, config: &Config, now: Timestamp) -> Self {
        let (ttl, violation) = effective_ttl(pe.spec.ttl.as_deref(), config);
        let created = pe.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let since = sha_observed_at(pe.status.as_ref(), created, &pe.spec.head_sha, now);
        let mut expires = expires_at(since, ttl);
        if let (Some(cap), Some(created)) = (config.max_lifetime, &pe.metadata.creation_timestamp) {
            let capped = expires_at(created.0, cap);
            if capped.0 < expires.0 {
                expires = capped;
            }
        }
        Lifetime {
            ttl,
            violation,
            since,
            expires,
        }
    }

    pub fn expired(&self, now: Timestamp) -> bool {
        now >= self.expires.0
    }

    /// Time left; zero once expired.
    pub fn left(&self, now: Timestamp) -> Duration {
        if self.expired(now) {
            return Duration::ZERO;
        }
        self.expires.0.duration_since(now).unsigned_abs()
    }
}

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
    delete(ctx, pe, owner, "Expired", note).await
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
    delete(ctx, pe, owner, "SleptTooLong", note).await
}

/// Deletes `pe` for `reason` (its finalizer then tears it down).
async fn delete(
    ctx: &Context,
    pe: &PreviewEnvironment,
    owner: &Owner,
    reason: &str,
    note: String,
) -> Result<Action, Error> {
    report::announce(
        ctx,
        pe,
        Announcement {
            kind: events::Kind::Normal,
            reason: reason.to_string(),
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
    let ns_name = preview_namespace_of(pe, &owner, &ctx.config);
    ctx.queue.release(&owner, &ctx.stores.previews);
    // The namespace first: its deletion is what takes long (the namespace controller), so it
    // starts before anything else is written.
    let gone = if deleting_as_cached(&ctx.stores.namespaces, &ns_name, &owner.uid) {
        // Its deletion is under way, and its end (a watch event) wakes this preview again:
        // no call to the API server while waiting.
        Gone::Deleting
    } else {
        delete_owned_namespace(&ctx.client, &ns_name, &owner.uid)
            .await
            .map_err(|source| Error::DeleteNamespace {
                name: ns_name.clone(),
                source,
            })?
    };
    if let Some(terminating) = terminating(pe.status.as_ref()) {
        let transition = writes::write_status(&ctx.client, &ctx.writes, pe, terminating).await?;
        if let Some(t) = transition {
            report::publish(ctx, pe, &t);
        }
    }
    if gone == Gone::Deleting {
        return Err(Error::TeardownInProgress(ns_name));
    }
    // The bookkeeping of a preview that is gone goes with it, so the maps stay as large as
    // the number of live previews.
    ctx.writes.forget(&owner.uid);
    ctx.copies.forget(&ns_name);
    ctx.stores.applied.forget(&ns_name);
    ctx.logs.forget(&ns_name);
    ctx.costs.forget(&owner.uid);
    crate::sync::lock(&ctx.failures).remove(&kube::runtime::reflector::ObjectRef::from_obj(pe));
    if let Some(deleted) = &pe.metadata.deletion_timestamp {
        ctx.metrics
            .torn_down(Timestamp::now().duration_since(deleted.0).unsigned_abs());
    }
    info!(namespace = %owner.namespace, name = %owner.name, preview_namespace = %ns_name, "torn down");
    Ok(Action::await_change())
}

/// The preview namespace of `pe`: the one its status names (so a preview keeps its namespace
/// when the naming scheme changes), else the one its name gives. Either is used only once it
/// proves to carry the preview's owner-uid label.
pub fn preview_namespace_of(pe: &PreviewEnvironment, owner: &Owner, config: &Config) -> String {
    pe.status
        .as_ref()
        .and_then(|s| s.namespace.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            naming::preview_namespace(&config.namespace_prefix, &owner.namespace, &owner.name)
        })
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

/// The ttl a spec asks for (or the default), and whether it breaks the configured maximum.
pub fn effective_ttl(spec_ttl: Option<&str>, config: &Config) -> (Duration, Option<String>) {
    let asked = spec_ttl
        .and_then(parse_duration)
        .unwrap_or(config.default_ttl);
    if asked > config.max_ttl {
        let message = format!(
            "spec.ttl {} is longer than the maximum of {} this operator allows; lower spec.ttl",
            spec_ttl.unwrap_or_default(),
            format_duration(config.max_ttl)
        );
        // A preview that breaks policy still expires, at the maximum.
        return (config.max_ttl, Some(message));
    }
    (asked, None)
}

/// When the current headSha was first seen: kept from the status while the sha is the same;
/// for a preview without a status yet, its creation (its first status may wait a few seconds
/// to be written with the verdict, and the clock must not restart on every reconcile till
/// then); else now. The time to live counts from there.
pub fn sha_observed_at(
    status: Option<&PreviewEnvironmentStatus>,
    created: Option<Timestamp>,
    head_sha: &str,
    now: Timestamp,
) -> Timestamp {
    match status {
        None => created.map_or(now, |c| c.min(now)),
        Some(s) => Some(s)
            .filter(|s| s.observed_sha.as_deref() == Some(head_sha))
            .and_then(|s| s.sha_observed_at.as_ref())
            .map_or(now, |t| t.0),
    }
}

/// `since + ttl`, saturating instead of overflowing on absurd values.
pub fn expires_at(since: Timestamp, ttl: Duration) -> Time {
    let ttl = SignedDuration::try_from(ttl).unwrap_or(SignedDuration::MAX);
    Time(since.checked_add(ttl).unwrap_or(Timestamp::MAX))
}

/// Whether the cache shows namespace `name` of `owner_uid` being deleted already.
fn deleting_as_cached(
    namespaces: &Store<PartialObjectMeta<Namespace>>,
    name: &str,
    owner_uid: &str,
) -> bool {
    namespaces.get(&ObjectRef::new(name)).is_some_and(|ns| {
        ns.metadata.deletion_timestamp.is_some()
            && ns.labels().get(OWNER_UID).map(String::as_str) == Some(owner_uid)
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

/// Whether the owner a managed namespace names still exists. Asks the API server when the
/// cache says no, so a lagging cache never gets a live preview's namespace deleted.
pub async fn owner_exists(
    client: &Client,
    previews: &Store<PreviewEnvironment>,
    ns: &ObjectMeta,
) -> Result<bool, kube::Error> {
    let no_labels = BTreeMap::new();
    let labels = ns.labels.as_ref().unwrap_or(&no_labels);
    let Some(uid) = labels.get(OWNER_UID) else {
        // Not stamped by us with an owner: not ours to judge.
        return Ok(true);
    };
    if previews
        .state()
        .iter()
        .any(|p| p.uid().as_deref() == Some(uid.as_str()))
    {
        return Ok(true);
    }
    let Some((owner_ns, owner_name)) = ns.annotations.as_ref().and_then(naming::owner_ref) else {
        return Ok(false);
    };
    if labels.get(OWNER_NAMESPACE).map(String::as_str) != Some(owner_ns) {
        return Ok(false);
    }
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), owner_ns);
    Ok(api
        .get_metadata_opt(owner_name)
        .await?
        .is_some_and(|p| p.uid().as_deref() == Some(uid.as_str())))
}

/// One pass of the orphan sweep: deletes managed namespaces whose owner is gone. Returns how
/// many it deleted.
pub async fn sweep_orphans(
    client: &Client,
    previews: &Store<PreviewEnvironment>,
    namespaces: &Store<PartialObjectMeta<Namespace>>,
) -> Result<usize, kube::Error> {
    let mut deleted = 0;
    for ns in namespaces.state() {
        if ns.metadata.deletion_timestamp.is_some()
            || owner_exists(client, previews, &ns.metadata).await?
        {
            continue;
        }
        let Some(uid) = ns.labels().get(OWNER_UID).cloned() else {
            continue;
        };
        let name = ns.name_any();
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
    namespaces: Store<PartialObjectMeta<Namespace>>,
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
        if let Err(error) = sweep_orphans(&client, &previews, &namespaces).await {
            warn!(%error, "orphan sweep failed; retrying at the next interval");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_above_the_maximum_is_a_violation_that_still_expires_at_the_maximum() {
        let config = Config::default();
        let (ttl, violation) = effective_ttl(Some("30d"), &config);
        assert_eq!(ttl, config.max_ttl);
        let message = violation.expect("a violation");
        assert!(
            message.contains("30d") && message.contains("7d"),
            "{message}"
        );
        assert_eq!(
            effective_ttl(Some("1h"), &config),
            (Duration::from_secs(3600), None)
        );
        assert_eq!(effective_ttl(None, &config), (config.default_ttl, None));
    }

    #[test]
    fn the_clock_restarts_only_for_a_new_sha() {
        let t0 = Timestamp::from_second(1_000).expect("time");
        let now = Timestamp::from_second(5_000).expect("time");
        let status = PreviewEnvironmentStatus {
            observed_sha: Some("aaaaaaa".into()),
            sha_observed_at: Some(Time(t0)),
            ..PreviewEnvironmentStatus::default()
        };
        let created = Some(Timestamp::from_second(900).expect("time"));
        assert_eq!(sha_observed_at(Some(&status), created, "aaaaaaa", now), t0);
        assert_eq!(sha_observed_at(Some(&status), created, "bbbbbbb", now), now);
        assert_eq!(
            sha_observed_at(None, created, "aaaaaaa", now),
            Timestamp::from_second(900).expect("time"),
            "no status yet: counted from creation, not from each reconcile"
        );
        assert_eq!(sha_observed_at(None, None, "aaaaaaa", now), now);
        assert_eq!(
            expires_at(t0, Duration::from_secs(60)).0,
            Timestamp::from_second(1_060).expect("time")
        );
    }

    #[test]
    fn a_preview_expires_ttl_after_its_sha_was_first_seen() {
        let config = Config::default();
        let mut pe = crate::fixtures::preview("shop-pr-1");
        pe.spec.ttl = Some("1h".into());
        pe.status = Some(PreviewEnvironmentStatus {
            observed_sha: Some(pe.spec.head_sha.clone()),
            sha_observed_at: Some(Time(Timestamp::from_second(1_000).expect("time"))),
            ..PreviewEnvironmentStatus::default()
        });
        let at = |s| Timestamp::from_second(s).expect("time");
        let lifetime = Lifetime::of(&pe, &config, at(2_000));
        assert!(!lifetime.expired(at(4_599)));
        assert_eq!(lifetime.left(at(4_599)), Duration::from_secs(1));
        assert!(lifetime.expired(at(4_600)));
        assert_eq!(lifetime.left(at(9_999)), Duration::ZERO);
        pe.spec.head_sha = "1234567".into();
        let renewed = Lifetime::of(&pe, &config, at(5_000));
        assert!(!renewed.expired(at(5_000)), "a new sha restarts the clock");
    }

    #[test]
    fn the_lifetime_cap_counts_from_creation_whatever_the_sha_does() {
        let config = Config {
            max_lifetime: Some(Duration::from_secs(3600)),
            ..Config::default()
        };
        let mut pe = crate::fixtures::preview("shop-pr-1");
        pe.metadata.creation_timestamp = Some(Time(Timestamp::from_second(1_000).expect("time")));
        let at = |s| Timestamp::from_second(s).expect("time");
        let lifetime = Lifetime::of(&pe, &config, at(4_000));
        assert_eq!(
            lifetime.expires.0,
            at(4_600),
            "a new sha at 4000 does not extend it"
        );
    }

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
