//! The per-tenant concurrency limit: previews over it wait in `Pending`, first come first
//! served, and the first in line starts when a running preview of the tenant goes away.
//!
//! Only previews that could run wait in line: one its class refuses, or whose template is
//! missing or does not render, holds no place, so a tenant cannot fill a queue (its own, a
//! repository's or a class's) with previews that never start.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use super::cached::CachedMeta;
use super::slim::Keeps;
use super::status::Gate;
use crate::api::{PreviewEnvironment, Reason, condition};
use crate::config::Limits;
use crate::naming::{OWNER_UID, Owner, PreviewKey};
use crate::sync::lock;

/// The queue's state in this process.
pub struct Queue {
    /// Previews admitted under the limits whose namespace may not be cached yet.
    admitted: Mutex<HashSet<String>>,
    /// Whether each preview this process has planned could run (admitted by its class, its
    /// template rendered), by UID. A preview not planned yet is judged by its status.
    could_run: Mutex<HashMap<String, bool>>,
    /// Serialises decisions, so two reconciles cannot both take the last slot.
    deciding: tokio::sync::Mutex<()>,
    /// Wakes previews waiting for a slot.
    wake: mpsc::UnboundedSender<ObjectRef<PreviewEnvironment>>,
}

/// One scope of a limit: which previews count against it.
struct Scope<'a> {
    limit: usize,
    name: String,
    covers: Box<dyn Fn(&PreviewEnvironment) -> bool + 'a>,
}

impl Queue {
    /// An empty queue; `wake` reconciles the previews it hands a slot.
    pub fn new(wake: mpsc::UnboundedSender<ObjectRef<PreviewEnvironment>>) -> Self {
        Queue {
            admitted: Mutex::default(),
            could_run: Mutex::default(),
            deciding: tokio::sync::Mutex::new(()),
            wake,
        }
    }

    /// Decides whether `pe`, not running yet unless `running` says so, may start now under
    /// `limits`: per tenant namespace, per repository, and over its class.
    pub async fn admit(
        &self,
        pe: &PreviewEnvironment,
        running: bool,
        limits: &Limits,
        previews: &Store<PreviewEnvironment>,
        namespaces: &Store<CachedMeta<Namespace>>,
    ) -> Gate {
        let uid = pe.uid().unwrap_or_default();
        if running || lock(&self.admitted).contains(&uid) {
            return Gate::Open;
        }
        let _one_at_a_time = self.deciding.lock().await;
        // One set of running previews per decision, not a scan of every namespace per peer:
        // at 1000 previews arriving at once the decisions are serialised, and a quadratic
        // one kept later previews from their namespace for tens of seconds.
        let mut running: HashSet<String> = lock(&self.admitted).clone();
        running.extend(
            namespaces
                .state()
                .iter()
                .filter_map(|ns| ns.kept(OWNER_UID).map(str::to_string)),
        );
        let is_running = |p: &PreviewEnvironment| {
            p.metadata
                .uid
                .as_ref()
                .is_some_and(|uid| running.contains(uid))
        };
        let live: Vec<Arc<PreviewEnvironment>> = previews
            .state()
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let verdicts = lock(&self.could_run);
        for scope in scopes(pe, limits) {
            let (running, waiting): (Vec<&PreviewEnvironment>, Vec<&PreviewEnvironment>) = live
                .iter()
                .map(Arc::as_ref)
                .filter(|p| (scope.covers)(p))
                .filter(|p| is_running(p) || in_line(p, &verdicts))
                .partition(|p| is_running(p));
            let gate = place(scope.limit, &running, waiting, &uid, &scope.name);
            if !gate.is_open() {
                return gate;
            }
        }
        drop(verdicts);
        lock(&self.admitted).insert(uid);
        Gate::Open
    }

    /// Records whether the preview `uid` could run now (its class admits it and its template
    /// renders). One that turned out not to wakes the previews waiting behind it.
    pub fn note(&self, uid: &str, could_run: bool, previews: &Store<PreviewEnvironment>) {
        let before = lock(&self.could_run).insert(uid.to_string(), could_run);
        if !could_run && before != Some(false) {
            self.wake_waiting(previews);
        }
    }

    /// Gives back the slot of a preview that did not start after all.
    pub fn give_back(&self, uid: &str) {
        lock(&self.admitted).remove(uid);
    }

    /// Frees the slot of a preview being torn down and wakes every preview waiting for a
    /// slot (the freed one may count in another tenant's repository or class limit).
    pub fn release(&self, owner: &Owner, previews: &Store<PreviewEnvironment>) {
        self.give_back(&owner.uid);
        lock(&self.could_run).remove(&owner.uid);
        self.wake_waiting(previews);
        // Previews of the same namespace refused over the class's limit of previews that
        // exist may fit now.
        for refused in previews.state().iter().filter(|p| {
            p.metadata.namespace.as_deref() == Some(owner.namespace.as_str())
                && p.metadata.deletion_timestamp.is_none()
                && refused_by_status(p)
        }) {
            let _ = self.wake.send(ObjectRef::from_obj(refused.as_ref()));
        }
    }

    fn wake_waiting(&self, previews: &Store<PreviewEnvironment>) {
        for waiting in waiting(previews) {
            // The receiver lives as long as the controller; after that nobody waits.
            let _ = self.wake.send(waiting);
        }
    }
}

/// The scopes whose limits `pe` counts against.
fn scopes<'a>(pe: &'a PreviewEnvironment, limits: &Limits) -> Vec<Scope<'a>> {
    let tenant = pe.metadata.namespace.clone().unwrap_or_default();
    let repository = pe.spec.repository.to_ascii_lowercase();
    let class = pe.spec.preview_class_name.clone();
    let mut scopes = vec![Scope {
        limit: limits.per_namespace,
        name: "in this namespace".to_string(),
        covers: Box::new(move |p| p.metadata.namespace.as_deref() == Some(tenant.as_str())),
    }];
    if let Some(limit) = limits.per_repository {
        scopes.push(Scope {
            limit,
            name: format!("for repository {}", pe.spec.repository),
            covers: Box::new(move |p| p.spec.repository.eq_ignore_ascii_case(&repository)),
        });
    }
    if let Some(limit) = limits.active {
        scopes.push(Scope {
            limit,
            name: "in this PreviewClass".to_string(),
            covers: Box::new(move |p| p.spec.preview_class_name == class),
        });
    }
    scopes
}

/// How many of the previews holding the slots a queued preview's message names.
const HOLDERS_NAMED: usize = 3;

/// PURE: the gate of preview `uid` among the `waiting` previews of one scope, with the
/// `running` ones taking slots of `limit`. Oldest first; the name breaks ties so every replica
/// agrees.
pub fn place(
    limit: usize,
    running: &[&PreviewEnvironment],
    waiting: Vec<&PreviewEnvironment>,
    uid: &str,
    scope: &str,
) -> Gate {
    // Counted, not sorted: a decision is linear in the previews waiting.
    fn order(p: &PreviewEnvironment) -> (Option<jiff::Timestamp>, Option<&str>) {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.name.as_deref(),
        )
    }
    let position = match waiting
        .iter()
        .find(|p| p.metadata.uid.as_deref() == Some(uid))
    {
        Some(me) => 1 + waiting.iter().filter(|p| order(p) < order(me)).count(),
        None => waiting.len() + 1,
    };
    if running.len() + position <= limit {
        return Gate::Open;
    }
    Gate::ConcurrencyLimit {
        limit,
        position: (running.len() + position).saturating_sub(limit),
        scope: scope.to_string(),
        held_by: holders(running),
    }
}

/// PURE: the oldest few of `running` by `namespace/name`, and how many more there are: the
/// oldest free their slots last, but they are the ones a developer can ask about.
fn holders(running: &[&PreviewEnvironment]) -> String {
    let mut oldest: Vec<&PreviewEnvironment> = running.to_vec();
    oldest.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.name.clone(),
        )
    });
    let mut names: Vec<String> = (oldest.iter().take(HOLDERS_NAMED))
        .map(|p| PreviewKey::of(p).to_string())
        .collect();
    if names.is_empty() {
        // Slots taken by previews this process admitted but the cache does not show yet.
        return "previews starting now".to_string();
    }
    if running.len() > HOLDERS_NAMED {
        names.push(format!("{} more", running.len() - HOLDERS_NAMED));
    }
    names.join(", ")
}

/// PURE: whether `p`, not running, waits in line: as this process last planned it, else as
/// its status says.
fn in_line(p: &PreviewEnvironment, verdicts: &HashMap<String, bool>) -> bool {
    let uid = p.metadata.uid.as_deref().unwrap_or_default();
    verdicts
        .get(uid)
        .copied()
        .unwrap_or_else(|| !refused_by_status(p))
}

/// Whether the status of `p` says it cannot run as it is: its class refuses it (for another
/// reason than the queue) or its template is missing or does not render. For previews this
/// process has not planned yet, as after a restart.
fn refused_by_status(p: &PreviewEnvironment) -> bool {
    let Some(status) = &p.status else {
        return false;
    };
    status.conditions.iter().any(|c| {
        let refused = c.type_ == condition::ADMITTED
            && c.status == "False"
            && c.reason != Reason::ConcurrencyLimit.as_str();
        let blocked = c.type_ == condition::READY
            && (c.reason == Reason::TemplateNotFound.as_str()
                || c.reason == Reason::TemplateError.as_str());
        refused || blocked
    })
}

/// The PreviewEnvironments waiting for a concurrency slot.
fn waiting(previews: &Store<PreviewEnvironment>) -> Vec<ObjectRef<PreviewEnvironment>> {
    previews
        .state()
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == condition::READY))
                .is_some_and(|c| c.reason == Reason::ConcurrencyLimit.as_str())
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn created_at(name: &str, secs: i64) -> PreviewEnvironment {
        let mut pe = fixtures::preview(name);
        pe.metadata.creation_timestamp = Some(fixtures::time(secs));
        pe
    }

    #[test]
    fn previews_start_oldest_first_while_slots_are_free() {
        let (a, b, c) = (
            created_at("c-first", 1),
            created_at("b-second", 2),
            created_at("a-third", 3),
        );
        let waiting = || vec![&c, &a, &b];
        let queued = |position, held_by: &str| Gate::ConcurrencyLimit {
            limit: 2,
            position,
            scope: "here".into(),
            held_by: held_by.into(),
        };
        assert_eq!(place(2, &[], waiting(), "uid-c-first", "here"), Gate::Open);
        assert_eq!(place(2, &[], waiting(), "uid-b-second", "here"), Gate::Open);
        assert_eq!(
            place(2, &[], waiting(), "uid-a-third", "here"),
            queued(1, "previews starting now")
        );
        let old = created_at("old", 0);
        assert_eq!(
            place(2, &[&old], waiting(), "uid-b-second", "here"),
            queued(1, "team-shop/old"),
            "one slot taken: only the oldest starts, and the queued one hears who holds it"
        );
    }

    #[test]
    fn the_name_breaks_ties_between_previews_created_in_the_same_second() {
        let (x, y) = (created_at("x", 5), created_at("y", 5));
        assert_eq!(place(1, &[], vec![&y, &x], "uid-x", "here"), Gate::Open);
        assert!(!place(1, &[], vec![&y, &x], "uid-y", "here").is_open());
    }

    #[test]
    fn a_queued_preview_hears_the_oldest_holders_and_how_many_more() {
        let running: Vec<PreviewEnvironment> = (0..5)
            .rev()
            .map(|i| created_at(&format!("pr-{i}"), i))
            .collect();
        let running: Vec<&PreviewEnvironment> = running.iter().collect();
        assert_eq!(
            holders(&running),
            "team-shop/pr-0, team-shop/pr-1, team-shop/pr-2, 2 more"
        );
    }

    fn with_ready(name: &str, admitted: &str, reason: &str) -> PreviewEnvironment {
        let mut pe = created_at(name, 1);
        let condition = |type_: &str, status: &str| {
            serde_json::json!({"type": type_, "status": status, "reason": reason, "message": "",
                               "lastTransitionTime": "2026-12-01T00:00:00Z"})
        };
        pe.status = Some(
            serde_json::from_value(serde_json::json!({"conditions": [
                condition("Admitted", admitted), condition("Ready", "False")]}))
            .expect("status"),
        );
        pe
    }

    #[test]
    fn only_previews_that_could_run_wait_in_line() {
        let none = HashMap::new();
        assert!(in_line(&created_at("new", 1), &none), "not planned yet");
        assert!(in_line(
            &with_ready("q", "False", "ConcurrencyLimit"),
            &none
        ));
        for reason in ["RepositoryNotAllowed", "NoPreviewClass", "PolicyViolation"] {
            assert!(
                !in_line(&with_ready("r", "False", reason), &none),
                "{reason}"
            );
        }
        for reason in ["TemplateNotFound", "TemplateError"] {
            assert!(
                !in_line(&with_ready("t", "True", reason), &none),
                "{reason}"
            );
        }
        // This process's own plan wins over a status written before.
        let planned = HashMap::from([("uid-t".to_string(), true), ("uid-new".to_string(), false)]);
        assert!(in_line(
            &with_ready("t", "True", "TemplateNotFound"),
            &planned
        ));
        assert!(!in_line(&created_at("new", 1), &planned));
    }
}
