//! Fleet changes: a PreviewClass or PreviewTemplate edit that changes what hundreds of running
//! previews run. Such a change rolls out to at most `--max-concurrent-rollouts` previews at a
//! time ([`Rollouts`]); the others keep running what they run, stay Ready, and say that they
//! wait (`UpToDate=False RolloutQueued`). A preview's own change (a new sha, an edited spec)
//! never waits for a slot: CI is waiting for it.
//!
//! What a preview has rolled out is recorded in its status (`status.revision`: the class's and
//! template's generations), so the cause of a change survives a restart: [`cause`] compares
//! it with the generations the plan sees. The tests run again when the workloads they test
//! changed ([`tested`]), with the cause as their reason.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use super::apply::Cached;
use super::build::{Environment, fingerprint};
use super::cached::{CachedDeployment, CachedStatefulSet};
use super::children::Stores;
use super::gate::Verdict;
use super::observe::Observed;
use super::slim::Keeps;
use crate::api::{PreviewEnvironment, PreviewEnvironmentStatus, Reason, Revision, TestPhase};
use crate::naming::POD_TEMPLATE;
use crate::sync::lock;

/// The rollout slots of fleet changes, shared by every reconcile of this process.
pub struct Rollouts {
    /// Previews rolling a fleet change out at once; 0: no limit.
    limit: usize,
    inner: Mutex<Slots>,
    wake: mpsc::UnboundedSender<ObjectRef<PreviewEnvironment>>,
}

#[derive(Default)]
struct Slots {
    /// The uids holding a slot.
    running: BTreeSet<String>,
    /// The previews waiting for one, first come first served.
    waiting: VecDeque<(String, ObjectRef<PreviewEnvironment>)>,
    /// The previews each change failed on (`Fleet::change`), so far.
    failed: HashMap<String, BTreeSet<String>>,
}

/// Previews a change must fail on before it rolls out no further: one failure may be a flaky
/// test, two are the change.
pub const HALT_AFTER: usize = 2;
/// Changes whose failures are remembered at most (the oldest are forgotten first).
const REMEMBERED_CHANGES: usize = 1000;

impl Rollouts {
    /// Slots for `limit` previews at once; `wake` reconciles a preview handed a slot.
    pub fn new(limit: usize, wake: mpsc::UnboundedSender<ObjectRef<PreviewEnvironment>>) -> Self {
        Rollouts {
            limit,
            inner: Mutex::new(Slots::default()),
            wake,
        }
    }

    /// Takes a slot for the preview `uid` (or keeps the one it holds): `Err(ahead)` when none
    /// is free, with how many previews wait before it; it is woken when its turn comes.
    pub fn start(&self, uid: &str, key: ObjectRef<PreviewEnvironment>) -> Result<(), usize> {
        let mut slots = lock(&self.inner);
        if slots.running.contains(uid) {
            return Ok(());
        }
        let position = slots.waiting.iter().position(|(u, _)| u == uid);
        let ahead = position.unwrap_or(slots.waiting.len());
        // Free slots go to the first in line: a preview woken out of turn waits on.
        if self.limit == 0 || slots.running.len() + ahead < self.limit {
            if let Some(at) = position {
                slots.waiting.remove(at);
            }
            slots.running.insert(uid.to_string());
            return Ok(());
        }
        if position.is_none() {
            slots.waiting.push_back((uid.to_string(), key));
        }
        Err(ahead)
    }

    /// The preview `uid` finished its rollout, gave it up or is gone: its slot (or its place
    /// in line) goes, and the previews first in line are woken for the free slots.
    pub fn finish(&self, uid: &str) {
        let mut slots = lock(&self.inner);
        let held = slots.running.remove(uid);
        slots.waiting.retain(|(u, _)| u != uid);
        if !held {
            return;
        }
        let free = self.limit.saturating_sub(slots.running.len());
        for (_, key) in slots.waiting.iter().take(free) {
            let _ = self.wake.send(key.clone());
        }
    }

    /// Records that `change` failed on `preview` (`namespace/name`).
    pub fn failed(&self, change: &str, preview: &str) {
        let mut slots = lock(&self.inner);
        if slots.failed.len() >= REMEMBERED_CHANGES && !slots.failed.contains_key(change) {
            slots.failed.clear();
        }
        let on = slots.failed.entry(change.to_string()).or_default();
        on.insert(preview.to_string());
    }

    /// The previews `change` failed on, once they are enough to stop its rollout.
    pub fn halted(&self, change: &str) -> Option<Vec<String>> {
        let slots = lock(&self.inner);
        let on = slots.failed.get(change)?;
        (on.len() >= HALT_AFTER).then(|| on.iter().cloned().collect())
    }

    /// Previews rolling a fleet change out at once; 0: no limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The previews rolling a fleet change out now.
    pub fn running(&self) -> usize {
        lock(&self.inner).running.len()
    }
}

/// PURE: why the workloads of a preview would change although its own spec did not: it runs
/// an earlier generation of its template or class than the plan sees. `None` for a preview
/// that has not settled on its own spec yet (new, a new sha, an edited spec): that rollout is
/// its own.
pub fn cause(
    previous: Option<&PreviewEnvironmentStatus>,
    generation: Option<i64>,
    head_sha: &str,
    now: Revision,
) -> Option<Reason> {
    let previous = previous?;
    let settled = previous.observed_generation == generation
        && previous.deployed_sha.as_deref() == Some(head_sha);
    let ran = previous.revision.filter(|_| settled)?;
    if ran.template_generation != now.template_generation {
        Some(Reason::TemplateChanged)
    } else if ran.class_generation != now.class_generation {
        Some(Reason::ClassChanged)
    } else {
        None
    }
}

/// The workloads of `env` whose pods would change: cached with another pod template. A
/// workload not cached yet is new, and no one's pods change by creating it.
pub fn changed(env: &Environment, stores: &Stores) -> BTreeSet<String> {
    let ns = env.network_policy.metadata.namespace.as_deref();
    let differs = |meta: &ObjectMeta, cached: Option<String>| {
        let wanted = meta.annotations.as_ref()?.get(POD_TEMPLATE)?;
        (cached.as_deref() != Some(wanted.as_str())).then(|| meta.name.clone())?
    };
    let deployments = env.deployments.objects.iter().filter_map(|d| {
        let name = d.metadata.name.as_deref()?;
        let cached = pod_template(&stores.deployments, ns, name)?;
        differs(&d.metadata, cached)
    });
    let stateful_sets = env.stateful_sets.iter().filter_map(|s| {
        let name = s.metadata.name.as_deref()?;
        let cached = pod_template(&stores.stateful_sets, ns, name)?;
        differs(&s.metadata, cached)
    });
    deployments.chain(stateful_sets).collect()
}

/// `Some(its pod template's fingerprint)` of a cached, live workload.
fn pod_template<S: Cached>(
    store: &super::store::ChildStore<S>,
    namespace: Option<&str>,
    name: &str,
) -> Option<Option<String>> {
    let mut key = ObjectRef::<S>::new(name);
    if let Some(ns) = namespace {
        key = key.within(ns);
    }
    let cached = store.get(&key)?;
    if cached.meta().deletion_timestamp.is_some() {
        return None;
    }
    Some(cached.kept(POD_TEMPLATE).map(str::to_string))
}

/// PURE: the fingerprint of what a preview's workloads run now, as cached: what its tests
/// test. Workloads of an operator that did not mark them count alike whatever they run.
pub fn tested(
    deployments: &[Arc<CachedDeployment>],
    stateful_sets: &[Arc<CachedStatefulSet>],
) -> String {
    fn mark<K: Keeps>(workload: &K) -> (String, Option<String>) {
        (
            workload.meta().name.clone().unwrap_or_default(),
            workload.kept(POD_TEMPLATE).map(str::to_string),
        )
    }
    let mut workloads: Vec<_> = (deployments.iter())
        .map(|d| ("Deployment", mark(d.as_ref())))
        .chain(
            stateful_sets
                .iter()
                .map(|s| ("StatefulSet", mark(s.as_ref()))),
        )
        .collect();
    workloads.sort();
    fingerprint(&workloads)
}

/// Where one preview stands with the changes of its class and template.
#[derive(Clone, Debug, Default)]
pub struct Fleet {
    /// The generations the plan sees.
    pub now: Revision,
    /// Why its workloads change while its own spec did not.
    pub cause: Option<Reason>,
    /// `Some(ahead)` while its change waits for a rollout slot.
    pub queued: Option<usize>,
    /// Secrets its class names that do not exist (left out until they do).
    pub missing_secrets: Vec<String>,
    /// Whether this reconcile changes workloads (or the cache does not show the change yet).
    pub changing: bool,
    /// Why the change cannot be rolled out at all (a Secret the template names cannot be
    /// read): the preview keeps running what it ran.
    pub blocked: Option<(Reason, String)>,
    /// The change, as its rollout is remembered: `PreviewClass standard@3`,
    /// `PreviewTemplate team/shop@5`.
    pub change: Option<String>,
    /// The previews the change failed on, when its rollout stopped before this preview.
    pub halted: Option<Vec<String>>,
    /// The class and template, for messages.
    pub class: Option<String>,
    pub template: Option<String>,
    pub limit: usize,
}

impl Fleet {
    /// PURE: whether the preview now runs and has tested what its class and template say:
    /// nothing waits, every service is available and no test or setup run is unfinished.
    pub fn rolled_out(&self, observed: &Observed) -> bool {
        let unfinished =
            |phase: TestPhase| matches!(phase, TestPhase::Pending | TestPhase::Running);
        // What this pass observed is from before its own change: not rolled out yet. A class
        // whose Secret is missing has not been rolled out whole either; its creation will.
        self.queued.is_none()
            && self.blocked.is_none()
            && self.halted.is_none()
            && !self.changing
            && self.missing_secrets.is_empty()
            && observed.all_available()
            && !(observed.tests.iter()).any(|t| unfinished(t.status.phase))
            && (observed.setup.iter()).all(|s| s.status.phase == TestPhase::Succeeded)
    }

    /// PURE: the `UpToDate` condition.
    pub fn up_to_date(&self, rolled_out: bool) -> Verdict {
        let class = self.class.as_deref().unwrap_or("(none)");
        if let Some((reason, message)) = &self.blocked {
            return Verdict::no(
                *reason,
                format!(
                    "the change of PreviewTemplate {} is not rolled out: {message}; the preview \
                     keeps running what it ran",
                    self.template.as_deref().unwrap_or_default()
                ),
            );
        }
        if !self.missing_secrets.is_empty() {
            return Verdict::no(
                Reason::ClassNotReady,
                format!(
                    "PreviewClass {class} names Secret {} that does not exist where the \
                     operator copies it from; the preview keeps running without it until the \
                     platform team creates it (`kubectl get previewclass {class} -o yaml` says \
                     the same)",
                    self.missing_secrets.join(", ")
                ),
            );
        }
        let what = match self.cause {
            Some(Reason::TemplateChanged) => format!(
                "PreviewTemplate {}",
                self.template.as_deref().unwrap_or_default()
            ),
            _ => format!("PreviewClass {class}"),
        };
        if let Some(failed_on) = &self.halted {
            return Verdict::no(
                Reason::RolloutHalted,
                format!(
                    "the change of its {what} ({}) failed on {} and rolls out no further; the \
                     preview keeps running what it ran until the change is fixed (a new \
                     generation rolls out again)",
                    self.change.as_deref().unwrap_or_default(),
                    failed_on.join(", ")
                ),
            );
        }
        if let Some(ahead) = self.queued {
            return Verdict::no(
                Reason::RolloutQueued,
                format!(
                    "a change of its {what} waits for a rollout slot ({} previews roll out at \
                     once, {ahead} wait before this one); it keeps running what it runs",
                    self.limit
                ),
            );
        }
        match self.cause.filter(|_| !rolled_out) {
            Some(reason) => Verdict::no(
                reason,
                format!("rolling out a change of its {what}; its tests run again for it"),
            ),
            None => Verdict::yes(
                Reason::UpToDate,
                "runs what its PreviewClass and PreviewTemplate say".to_string(),
            ),
        }
    }
}

#[cfg(test)]
mod tests;
