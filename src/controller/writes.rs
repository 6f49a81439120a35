//! The operator's own writes to PreviewEnvironments (the finalizer and the status), and the
//! bookkeeping of them that lets a reconcile tell a cache that has not caught up with its own
//! last write from a change someone else made, and the pacing of status writes: which
//! changes ([`progress_only`], [`step_forward`]) may wait to be written with the next.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use super::error::Error;
use crate::api::{
    Phase, PreviewEnvironment, PreviewEnvironmentStatus, Reason, TestPhase, condition,
};
use crate::naming::MANAGER;
use crate::sync::lock;

/// Finalizer that holds a PreviewEnvironment until its namespace is gone.
pub const FINALIZER: &str = "preview.dev/teardown";

/// How long a reconcile waits for the cache to show this process's own last write before it
/// assumes someone else wrote after it and goes on with what the cache holds.
const OWN_WRITE_VISIBLE_WITHIN: Duration = Duration::from_secs(2);
/// How long a new preview's first status waits to be written while the preview is only on
/// its way: one that is Ready within it costs one status write, its verdict. A status write
/// costs the API server more than creating a child (a custom resource's status is validated
/// against the whole schema, its CEL rules included, and its managed fields are updated), and
/// it was most of what the operator costs the API server beyond the objects themselves. 20 s
/// covers a preview of a few services on a busy cluster (100 arriving at once are Ready
/// within 10-17 s on the bench rig); one that takes longer shows `Deploying` after it, and a
/// problem or a verdict is never held.
const FIRST_STATUS_HOLD: Duration = Duration::from_secs(20);
/// How much longer the first status waits for every other preview that waits for its own
/// first status too. Previews that arrive together go through the same API server: a burst
/// of K previews is Ready after about K × this on the 2-core bench rig (1000 in 120-175 s),
/// so a fixed hold would have every preview of a burst of a thousand write a `Deploying` its
/// verdict follows a minute later, a thousand status writes while the API server is at its
/// busiest (the cost grows with the burst instead of staying one write per preview). A lone
/// preview waits [`FIRST_STATUS_HOLD`].
const FIRST_STATUS_HOLD_PER_WAITING: Duration = Duration::from_millis(160);
/// The longest a first status waits, however large the burst: past it a developer who looks
/// sees `Deploying` rather than nothing.
const FIRST_STATUS_HOLD_MAX: Duration = Duration::from_secs(180);
/// How long a preview being torn down waits before its status says `Terminating`, grown like
/// the first status's in a burst (by [`FIRST_STATUS_HOLD_PER_WAITING`] for every other preview
/// being torn down, up to [`FIRST_STATUS_HOLD_MAX`]). Most namespaces are gone within it, and
/// then the pull request is told "torn down" without a status write nobody reads: the object
/// goes with its finalizer a moment later. At a thousand previews deleted together the
/// namespace controller works through their namespaces for minutes, and a `Terminating`
/// written for each was a thousand writes competing with it for the API server. A teardown
/// that lasts longer (a finalizer in the namespace that nobody removes) shows `Terminating`.
const TERMINATING_HOLD: Duration = Duration::from_secs(20);
/// How long a step forward on the way to a verdict (setup done, services available, tests
/// started) waits to be written. Nobody acts on a step (CI waits for the verdict), and at a
/// thousand previews each step takes tens of seconds: written at once, every step was a write
/// per preview while the API server was busiest. A step that lasts longer (tests running for
/// minutes) is still shown, after this long.
const STEP_HOLD: Duration = Duration::from_secs(30);
/// Progress within a settled state (a Ready preview's replica count going down and up) is
/// written at most this often.
const SETTLED_PROGRESS_EVERY: Duration = Duration::from_secs(60);
/// What a hold that waits for the next step asks of the requeue: nothing soon, the change
/// of a child that makes the step brings the preview back.
const UNTIL_THE_NEXT_STEP: Duration = Duration::from_secs(3600);

/// This process's last write to each preview (by UID): when, and the resourceVersion it
/// produced. Used to coalesce progress-only status changes and to wait for the cache to
/// catch up with our own write instead of acting on (and writing over) an older copy.
#[derive(Default)]
pub struct Writes {
    by_uid: Mutex<ByUid>,
}

#[derive(Default)]
struct ByUid {
    previews: HashMap<String, Written>,
    /// How many of them wait for their first status (a burst's size).
    awaiting_first: usize,
    /// How many of them are being torn down and do not say so yet (a burst of deletions).
    tearing_down: usize,
}

impl ByUid {
    /// The entry of `uid`, made if new.
    fn entry(&mut self, uid: &str) -> &mut Written {
        self.previews.entry(uid.to_string()).or_default()
    }

    /// Marks whether `uid` waits for its first status, keeping the count.
    fn set_awaiting_first(&mut self, uid: &str, awaiting: bool) {
        let entry = self.entry(uid);
        if entry.first.is_some() == awaiting {
            return;
        }
        entry.first = awaiting.then(|| Hold::new(FIRST_STATUS_HOLD));
        if awaiting {
            self.awaiting_first += 1;
        } else {
            self.awaiting_first = self.awaiting_first.saturating_sub(1);
        }
    }

    /// Marks whether `uid` is being torn down without saying so yet, keeping the count.
    fn set_tearing_down(&mut self, uid: &str, tearing_down: bool) {
        let entry = self.entry(uid);
        if entry.teardown.is_some() == tearing_down {
            return;
        }
        entry.teardown = tearing_down.then(|| Hold::new(TERMINATING_HOLD));
        if tearing_down {
            self.tearing_down += 1;
        } else {
            self.tearing_down = self.tearing_down.saturating_sub(1);
        }
    }
}

/// A status held while a burst goes through the API server: since when, and for how long
/// (the longest the burst called for while it waited).
#[derive(Clone, Copy, Debug)]
struct Hold {
    since: Instant,
    hold: Duration,
}

impl Hold {
    /// A hold of `base` from now.
    fn new(base: Duration) -> Self {
        Hold {
            since: Instant::now(),
            hold: base,
        }
    }

    /// Grows the hold (of at least `base`) to what `waiting` previews call for, and says how
    /// long is left.
    fn left(&mut self, base: Duration, waiting: usize) -> Option<Duration> {
        // The largest burst seen while waiting, not the current one: as the burst drains,
        // its last previews (the slowest) would otherwise all be written at once, just before
        // their verdicts.
        self.hold = self.hold.max(burst_hold(base, waiting));
        self.hold.checked_sub(self.since.elapsed())
    }
}

#[derive(Clone, Debug, Default)]
struct Written {
    at: Option<Instant>,
    status_at: Option<Instant>,
    /// Since when a step forward waits to be written.
    step_since: Option<Instant>,
    /// While the first status waits: since when, and how long it may, grown with the largest
    /// burst seen meanwhile.
    first: Option<Hold>,
    /// While a teardown does not say `Terminating` yet: since when, and for how long it may not.
    teardown: Option<Hold>,
    resource_version: Option<String>,
}

impl Writes {
    /// Records a write to a preview that produced `written` (the object the API server returned).
    fn record(&self, written: &PreviewEnvironment, status: bool) {
        let Some(uid) = written.uid() else {
            return;
        };
        let now = Instant::now();
        let mut all = lock(&self.by_uid);
        if status {
            all.set_awaiting_first(&uid, false);
            all.set_tearing_down(&uid, false);
        }
        let entry = all.entry(&uid);
        entry.at = Some(now);
        entry.resource_version = written.resource_version();
        if status {
            entry.status_at = Some(now);
            entry.step_since = None;
        }
    }

    /// Whether the cached `pe` is older than this process's own last write to it: then acting
    /// on it would redo (and re-announce) what was just done, or fail on a stale
    /// resourceVersion.
    pub fn cache_is_behind(&self, pe: &PreviewEnvironment) -> bool {
        if pe.metadata.deletion_timestamp.is_some() {
            return false;
        }
        let Some(uid) = pe.uid() else {
            return false;
        };
        lock(&self.by_uid).previews.get(&uid).is_some_and(|w| {
            w.resource_version.is_some()
                && w.resource_version != pe.resource_version()
                && w.at
                    .is_some_and(|at| at.elapsed() < OWN_WRITE_VISIBLE_WITHIN)
        })
    }

    /// How long `next` may wait before it is written (`None`: write now). On the expected path
    /// a preview costs one status write per state a user would want to see, none for the
    /// progress within it: a new preview's first status waits [`FIRST_STATUS_HOLD`] for the
    /// verdict, longer in a burst ([`FIRST_STATUS_HOLD_PER_WAITING`]); a step to the next
    /// phase (tests started) waits [`STEP_HOLD`]; a step within
    /// a phase (setup done, services deploying) and progress on the way (a replica ready, a
    /// test's Job started) are never written on their own but with the next phase or the
    /// verdict, and progress within a settled state at most every
    /// [`SETTLED_PROGRESS_EVERY`]. Problems and verdicts are never held.
    pub fn hold(
        &self,
        uid: &str,
        previous: Option<&PreviewEnvironmentStatus>,
        next: &PreviewEnvironmentStatus,
    ) -> Option<Duration> {
        let mut all = lock(&self.by_uid);
        let Some(previous) = previous else {
            if !on_the_way(next) {
                return None;
            }
            all.set_awaiting_first(uid, true);
            let waiting = all.awaiting_first;
            return all
                .entry(uid)
                .first
                .as_mut()?
                .left(FIRST_STATUS_HOLD, waiting);
        };
        let written = all.entry(uid);
        if progress_only(previous, next) {
            if on_the_way(next) {
                return Some(UNTIL_THE_NEXT_STEP);
            }
            return SETTLED_PROGRESS_EVERY.checked_sub(written.status_at?.elapsed());
        }
        if step_forward(previous, next) {
            // A step within the phase (setup done, services rolling out) is written with the
            // next phase: at a thousand previews a Deploying that lasts a minute would
            // otherwise be written again at each step.
            if previous.phase == next.phase {
                return Some(UNTIL_THE_NEXT_STEP);
            }
            let since = *written.step_since.get_or_insert_with(Instant::now);
            return STEP_HOLD.checked_sub(since.elapsed());
        }
        None
    }

    /// How long the status of `uid`, whose teardown is under way, may wait before it says
    /// `Terminating` (`None`: say it now): [`TERMINATING_HOLD`], longer in a burst.
    pub fn terminating_hold(&self, uid: &str) -> Option<Duration> {
        let mut all = lock(&self.by_uid);
        all.set_tearing_down(uid, true);
        let waiting = all.tearing_down;
        all.entry(uid)
            .teardown
            .as_mut()?
            .left(TERMINATING_HOLD, waiting)
    }

    /// Forgets a preview that is gone.
    pub fn forget(&self, uid: &str) {
        let mut all = lock(&self.by_uid);
        if all.previews.contains_key(uid) {
            all.set_awaiting_first(uid, false);
            all.set_tearing_down(uid, false);
        }
        all.previews.remove(uid);
    }
}

/// How long a held status waits (at least `base`) while `waiting` previews (this one
/// included) wait for theirs.
fn burst_hold(base: Duration, waiting: usize) -> Duration {
    let others = u32::try_from(waiting.saturating_sub(1)).unwrap_or(u32::MAX);
    base.saturating_add(FIRST_STATUS_HOLD_PER_WAITING.saturating_mul(others))
        .min(FIRST_STATUS_HOLD_MAX.max(base))
}

/// Whether `next` differs from `previous` only in progress within the same state: replica
/// counts, a test's Job appearing and going from Pending to Running, condition messages. Such a change can wait a
/// moment and be written together with the next one. Anything a client acts on (phase, a
/// condition's status or reason, shas, URL, expiry, a test's result) cannot.
pub fn progress_only(previous: &PreviewEnvironmentStatus, next: &PreviewEnvironmentStatus) -> bool {
    fn without_progress(s: &PreviewEnvironmentStatus) -> PreviewEnvironmentStatus {
        let mut s = s.clone();
        for svc in &mut s.services {
            svc.ready_replicas = 0;
        }
        for d in &mut s.dependencies {
            d.ready_replicas = 0;
        }
        for t in s.tests.iter_mut().chain(s.setup.iter_mut()) {
            if matches!(t.phase, TestPhase::Pending | TestPhase::Running) {
                t.phase = TestPhase::Pending;
                t.message = None;
            }
            t.started_at = None;
            t.job = None;
        }
        for c in &mut s.conditions {
            c.message.clear();
        }
        s
    }
    previous != next && without_progress(previous) == without_progress(next)
}

/// Ready reasons of progress on the way to a verdict, as opposed to a verdict or a problem.
const PROGRESS: [Reason; 5] = [
    Reason::Deploying,
    Reason::TestsRunning,
    Reason::WaitingForServices,
    Reason::SetupRunning,
    Reason::DependencyNotReady,
];

/// Whether `s` is on its way to a verdict with nothing wrong: deploying or testing for a
/// reason of progress. Nobody has to act on such a status.
pub fn on_the_way(s: &PreviewEnvironmentStatus) -> bool {
    matches!(s.phase, Some(Phase::Deploying | Phase::Testing))
        && s.conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .and_then(|c| Reason::parse(&c.reason))
            .is_some_and(|r| PROGRESS.contains(&r))
}

/// Whether `next` only moves `previous` a step forward on the way to a verdict at the same sha
/// and generation: a dependency became ready, setup finished, the services became available,
/// the tests started. Nobody waits for that (CI waits for Ready), so it may wait a moment to
/// be written together with the next step or the verdict.
pub fn step_forward(previous: &PreviewEnvironmentStatus, next: &PreviewEnvironmentStatus) -> bool {
    on_the_way(previous)
        && on_the_way(next)
        && previous.observed_sha == next.observed_sha
        && previous.observed_generation == next.observed_generation
}

/// What a status write changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub before: Option<PreviewEnvironmentStatus>,
    pub after: PreviewEnvironmentStatus,
}

/// Adds the finalizer to a new preview and goes on with the patched object. kube's
/// `finalizer()` would add it and stop, leaving the real work to the next reconcile that the
/// patch triggers: one more watch round trip, debounce and queue wait for every new preview.
/// Where the chart's MutatingAdmissionPolicy runs, a preview has it from its creation and
/// this writes nothing.
pub async fn add_finalizer(
    writes: &Writes,
    api: &Api<PreviewEnvironment>,
    pe: Arc<PreviewEnvironment>,
) -> Result<Arc<PreviewEnvironment>, Error> {
    if !needs_finalizer(&pe) {
        return Ok(pe);
    }
    let mut finalizers = pe.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    // The resourceVersion makes the merge patch conditional: if someone else changed the
    // finalizers meanwhile, it fails with a conflict instead of overwriting theirs.
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": pe.resource_version(),
            "finalizers": finalizers,
        }
    });
    // Under the operator's own field manager, so its writes to a preview are told apart from
    // the creator's (where the chart's policy set the finalizer at creation there are none).
    let params = PatchParams {
        field_manager: Some(MANAGER.to_string()),
        ..PatchParams::default()
    };
    let mut patched = api
        .patch(&pe.name_any(), &params, &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::AddFinalizer {
            name: pe.name_any(),
            source,
        })?;
    patched.metadata.managed_fields = None;
    writes.record(&patched, false);
    Ok(Arc::new(patched))
}

/// A live preview without our finalizer gets it; a deleted one never does.
pub fn needs_finalizer(pe: &PreviewEnvironment) -> bool {
    pe.metadata.deletion_timestamp.is_none() && !pe.finalizers().iter().any(|f| f == FINALIZER)
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct StatusPatch<'a> {
    api_version: &'static str,
    kind: &'static str,
    status: &'a PreviewEnvironmentStatus,
}

/// Writes `status` unless it is what the preview already has; returns what changed.
pub async fn write_status(
    client: &Client,
    writes: &Writes,
    pe: &PreviewEnvironment,
    status: PreviewEnvironmentStatus,
) -> Result<Option<Transition>, Error> {
    if pe.status.as_ref() == Some(&status) {
        return Ok(None);
    }
    let name = pe.name_any();
    let api: Api<PreviewEnvironment> =
        Api::namespaced(client.clone(), &pe.namespace().unwrap_or_default());
    // The reported commit status belongs to the poster's acknowledgements (report.rs): left
    // out here, so this field manager never owns it and never writes an older value back.
    let body = PreviewEnvironmentStatus {
        reported_commit_status: None,
        ..status.clone()
    };
    let patch = StatusPatch {
        api_version: "preview.dev/v1alpha1",
        kind: "PreviewEnvironment",
        status: &body,
    };
    let written = api
        .patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::Status { name, source })?;
    writes.record(&written, true);
    Ok(Some(Transition {
        before: pe.status.clone(),
        after: status,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn only_a_live_preview_without_it_needs_the_finalizer() {
        let mut pe = fixtures::preview("shop-pr-1");
        assert!(needs_finalizer(&pe));
        pe.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
        assert!(!needs_finalizer(&pe));
        pe.metadata.finalizers = Some(vec!["someone.else/keep".to_string()]);
        pe.metadata.deletion_timestamp = Some(fixtures::time(10));
        assert!(!needs_finalizer(&pe), "a deleted preview never gets it");
    }

    /// The fixture preview at resourceVersion `version`, and its UID.
    fn preview_at(version: &str) -> (PreviewEnvironment, String) {
        let mut pe = fixtures::preview("shop-pr-1");
        pe.metadata.resource_version = Some(version.into());
        let uid = pe.uid().expect("uid");
        (pe, uid)
    }

    /// A status at the fixture's sha in `phase`, Ready for `ready_reason` ("Ready": True).
    fn status(phase: crate::api::Phase, ready_reason: &str) -> PreviewEnvironmentStatus {
        PreviewEnvironmentStatus {
            phase: Some(phase),
            observed_sha: Some(fixtures::SHA.into()),
            observed_generation: Some(1),
            conditions: vec![fixtures::condition(
                crate::api::condition::READY,
                if ready_reason == "Ready" {
                    "True"
                } else {
                    "False"
                },
                ready_reason,
            )],
            ..PreviewEnvironmentStatus::default()
        }
    }

    #[test]
    fn a_step_forward_waits_a_moment_for_the_verdict_but_a_verdict_or_problem_never_waits() {
        let writes = Writes::default();
        let (pe, uid) = preview_at("6");
        let (deploying, testing, ready) = (
            status(crate::api::Phase::Deploying, "Deploying"),
            status(crate::api::Phase::Testing, "TestsRunning"),
            status(crate::api::Phase::Ready, "Ready"),
        );
        let setup = status(crate::api::Phase::Deploying, "SetupRunning");
        let crashing = status(crate::api::Phase::Deploying, "CrashLoopBackOff");
        writes.record(&pe, true);
        let held = writes.hold(&uid, Some(&deploying), &testing);
        assert!(
            held.is_some_and(|d| d <= STEP_HOLD && d > FIRST_STATUS_HOLD),
            "{held:?}"
        );
        assert_eq!(
            writes.hold(&uid, Some(&setup), &deploying),
            Some(UNTIL_THE_NEXT_STEP),
            "setup done, services deploying: a step within Deploying, written with the next phase"
        );
        assert_eq!(writes.hold(&uid, Some(&deploying), &ready), None);
        assert_eq!(writes.hold(&uid, Some(&testing), &ready), None);
        assert_eq!(
            writes.hold(&uid, Some(&deploying), &crashing),
            None,
            "a problem"
        );
        let mut new_sha = testing.clone();
        new_sha.observed_sha = Some("f".repeat(40));
        assert_eq!(
            writes.hold(&uid, Some(&deploying), &new_sha),
            None,
            "another sha is news"
        );
    }

    #[test]
    fn a_new_previews_first_status_waits_for_the_verdict_unless_something_is_wrong() {
        use crate::api::Phase;
        let writes = Writes::default();
        let (pe, uid) = preview_at("2");
        let deploying = status(Phase::Deploying, "Deploying");
        // Also one this process has not written yet (the finalizer came with the create).
        let held = writes.hold(&uid, None, &deploying);
        assert!(held.is_some_and(|d| d <= FIRST_STATUS_HOLD), "{held:?}");
        writes.record(&pe, false);
        let held = writes.hold(&uid, None, &deploying);
        assert!(held.is_some_and(|d| d <= FIRST_STATUS_HOLD), "{held:?}");
        for problem in [
            status(Phase::Deploying, "CrashLoopBackOff"),
            status(Phase::Pending, "ConcurrencyLimit"),
            status(Phase::Failed, "PolicyViolation"),
        ] {
            assert_eq!(writes.hold(&uid, None, &problem), None, "{problem:?}");
        }
    }

    #[test]
    fn in_a_burst_the_first_status_waits_longer_and_a_written_or_gone_preview_leaves_it() {
        use crate::api::Phase;
        let writes = Writes::default();
        let deploying = status(Phase::Deploying, "Deploying");
        let (first, first_uid) = preview_at("2");
        let lone = writes.hold(&first_uid, None, &deploying);
        assert!(lone.is_some_and(|d| d <= FIRST_STATUS_HOLD), "{lone:?}");
        let uids: Vec<String> = (0..100).map(|i| format!("uid-{i}")).collect();
        for uid in &uids {
            writes.hold(uid, None, &deploying);
        }
        // 100 more wait: 20 s + 100 × 160 ms, for the first one too (it is still waiting).
        let burst = writes.hold(&first_uid, None, &deploying);
        assert!(
            burst.is_some_and(|d| d > Duration::from_secs(35) && d <= Duration::from_secs(36)),
            "{burst:?}"
        );
        writes.record(&first, true);
        for uid in &uids {
            writes.forget(uid);
        }
        assert_eq!(lock(&writes.by_uid).awaiting_first, 0);
        // The burst has drained: a new preview waits as a lone one does.
        let held = writes.hold("uid-after", None, &deploying);
        assert!(held.is_some_and(|d| d <= FIRST_STATUS_HOLD), "{held:?}");
        assert_eq!(
            burst_hold(FIRST_STATUS_HOLD, 100_000),
            FIRST_STATUS_HOLD_MAX
        );
    }

    #[test]
    fn a_teardown_says_terminating_only_when_it_lasts_and_later_in_a_burst() {
        let writes = Writes::default();
        let lone = writes.terminating_hold("uid-lone");
        assert!(lone.is_some_and(|d| d <= TERMINATING_HOLD), "{lone:?}");
        let uids: Vec<String> = (0..100).map(|i| format!("uid-{i}")).collect();
        for uid in &uids {
            writes.terminating_hold(uid);
        }
        // 100 more are torn down with it: 20 s + 100 × 160 ms.
        let burst = writes.terminating_hold("uid-lone");
        assert!(
            burst.is_some_and(|d| d > Duration::from_secs(35) && d <= Duration::from_secs(36)),
            "{burst:?}"
        );
        // Saying Terminating (a status write) or being gone ends the wait.
        let (mut said, _) = preview_at("7");
        said.metadata.uid = Some("uid-lone".into());
        writes.record(&said, true);
        for uid in &uids {
            writes.forget(uid);
        }
        assert_eq!(lock(&writes.by_uid).tearing_down, 0);
        // A burst drained: the next teardown waits as a lone one does, and the first
        // statuses were never counted with it.
        let next = writes.terminating_hold("uid-next");
        assert!(next.is_some_and(|d| d <= TERMINATING_HOLD), "{next:?}");
        assert_eq!(lock(&writes.by_uid).awaiting_first, 0);
    }

    #[test]
    fn the_cache_is_behind_only_briefly_after_our_own_write() {
        let writes = Writes::default();
        let mut pe = fixtures::preview("shop-pr-1");
        pe.metadata.resource_version = Some("5".into());
        assert!(!writes.cache_is_behind(&pe), "nothing written yet");
        let mut written = pe.clone();
        written.metadata.resource_version = Some("6".into());
        writes.record(&written, true);
        assert!(writes.cache_is_behind(&pe), "the cache still shows 5");
        assert!(!writes.cache_is_behind(&written));
        pe.metadata.deletion_timestamp = Some(fixtures::time(10));
        assert!(
            !writes.cache_is_behind(&pe),
            "a deletion is acted on at once"
        );
    }

    #[test]
    fn progress_on_the_way_waits_for_the_next_step_and_results_are_not_held() {
        let writes = Writes::default();
        let (pe, uid) = preview_at("4");
        let with_ready = |ready_replicas| {
            let mut s = status(crate::api::Phase::Deploying, "Deploying");
            s.services = vec![crate::api::ServiceStatus {
                name: "web".into(),
                ready_replicas,
                replicas: 2,
                url: None,
            }];
            s
        };
        let (before, progress) = (with_ready(0), with_ready(1));
        assert!(on_the_way(&progress), "{progress:?}");
        assert_eq!(
            writes.hold(&uid, Some(&before), &progress),
            Some(UNTIL_THE_NEXT_STEP),
            "progress alone is never written, however long ago the last write was"
        );
        writes.record(&pe, true);
        assert_eq!(
            writes.hold(&uid, Some(&before), &progress),
            Some(UNTIL_THE_NEXT_STEP)
        );
        let mut ready = progress.clone();
        ready.phase = Some(crate::api::Phase::Ready);
        assert_eq!(
            writes.hold(&uid, Some(&before), &ready),
            None,
            "a phase change"
        );
    }

    #[test]
    fn progress_of_a_settled_preview_is_written_at_most_once_a_minute() {
        use crate::api::Phase;
        let writes = Writes::default();
        let (pe, uid) = preview_at("3");
        let ready = status(Phase::Ready, "Ready");
        let mut fewer = ready.clone();
        fewer.services = vec![crate::api::ServiceStatus {
            name: "web".into(),
            ready_replicas: 1,
            ..Default::default()
        }];
        let mut more = fewer.clone();
        more.services[0].ready_replicas = 2;
        assert!(progress_only(&fewer, &more));
        assert_eq!(
            writes.hold(&uid, Some(&fewer), &more),
            None,
            "not written by this process yet: written"
        );
        writes.record(&pe, true);
        let held = writes.hold(&uid, Some(&fewer), &more);
        assert!(
            held.is_some_and(|d| d > STEP_HOLD && d <= SETTLED_PROGRESS_EVERY),
            "{held:?}"
        );
    }
}
