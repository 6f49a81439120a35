//! The per-tenant concurrency limit: previews over it wait in `Pending`, first come first
//! served, and the first in line starts when a running preview of the tenant goes away.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use super::status::Gate;
use crate::api::{PreviewEnvironment, Reason, condition};
use crate::naming::{OWNER_UID, Owner};
use crate::sync::lock;

/// The queue's state in this process.
pub struct Queue {
    limit: usize,
    /// Previews admitted under the limit whose namespace may not be cached yet.
    admitted: Mutex<HashSet<String>>,
    /// Serialises decisions, so two reconciles cannot both take the last slot.
    deciding: tokio::sync::Mutex<()>,
    /// Wakes previews waiting for a slot.
    wake: mpsc::UnboundedSender<ObjectRef<PreviewEnvironment>>,
}

impl Queue {
    /// A queue of `limit` running previews per tenant (0: no limit); `wake` reconciles the
    /// previews it hands over.
    pub fn new(limit: usize, wake: mpsc::UnboundedSender<ObjectRef<PreviewEnvironment>>) -> Self {
        Queue {
            limit,
            admitted: Mutex::default(),
            deciding: tokio::sync::Mutex::new(()),
            wake,
        }
    }

    /// Decides whether `pe`, not running yet unless `running` says so, may start now.
    pub async fn admit(
        &self,
        pe: &PreviewEnvironment,
        running: bool,
        previews: &Store<PreviewEnvironment>,
        namespaces: &Store<PartialObjectMeta<Namespace>>,
    ) -> Gate {
        let uid = pe.uid().unwrap_or_default();
        if self.limit == 0 || running || lock(&self.admitted).contains(&uid) {
            return Gate::Open;
        }
        let _one_at_a_time = self.deciding.lock().await;
        let tenant = pe.namespace().unwrap_or_default();
        let admitted = lock(&self.admitted).clone();
        let namespaces = namespaces.state();
        let is_running = |p: &PreviewEnvironment| {
            let uid = p.uid().unwrap_or_default();
            admitted.contains(&uid)
                || namespaces
                    .iter()
                    .any(|ns| ns.labels().get(OWNER_UID) == Some(&uid))
        };
        let peers: Vec<Arc<PreviewEnvironment>> = previews
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(tenant.as_str()))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let running = peers.iter().filter(|p| is_running(p)).count();
        let waiting: Vec<&PreviewEnvironment> = peers
            .iter()
            .map(Arc::as_ref)
            .filter(|p| !is_running(p))
            .collect();
        let gate = place(self.limit, running, waiting, &uid);
        if gate.is_open() {
            lock(&self.admitted).insert(uid);
        }
        gate
    }

    /// Gives back the slot of a preview that did not start after all.
    pub fn give_back(&self, uid: &str) {
        lock(&self.admitted).remove(uid);
    }

    /// Frees the slot of a preview being torn down and wakes the previews waiting in its
    /// tenant, so the first in line starts.
    pub fn release(&self, owner: &Owner, previews: &Store<PreviewEnvironment>) {
        self.give_back(&owner.uid);
        for waiting in waiting_in(previews, &owner.namespace) {
            // The receiver lives as long as the controller; after that nobody waits.
            let _ = self.wake.send(waiting);
        }
    }
}

/// PURE: the gate of preview `uid` among the tenant's `waiting` previews, with `running`
/// of `limit` slots taken. Oldest first; the name breaks ties so every replica agrees.
pub fn place(
    limit: usize,
    running: usize,
    mut waiting: Vec<&PreviewEnvironment>,
    uid: &str,
) -> Gate {
    waiting.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.clone().map(|t| t.0),
            p.name_any(),
        )
    });
    let position = waiting
        .iter()
        .position(|p| p.uid().as_deref() == Some(uid))
        .map_or(waiting.len() + 1, |i| i + 1);
    if running + position <= limit {
        Gate::Open
    } else {
        Gate::ConcurrencyLimit {
            limit,
            position: (running + position).saturating_sub(limit),
        }
    }
}

/// The PreviewEnvironments waiting in `tenant` for a concurrency slot.
fn waiting_in(
    previews: &Store<PreviewEnvironment>,
    tenant: &str,
) -> Vec<ObjectRef<PreviewEnvironment>> {
    previews
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(tenant))
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
        assert_eq!(place(2, 0, waiting(), "uid-c-first"), Gate::Open);
        assert_eq!(place(2, 0, waiting(), "uid-b-second"), Gate::Open);
        assert_eq!(
            place(2, 0, waiting(), "uid-a-third"),
            Gate::ConcurrencyLimit {
                limit: 2,
                position: 1
            }
        );
        assert_eq!(
            place(2, 1, waiting(), "uid-b-second"),
            Gate::ConcurrencyLimit {
                limit: 2,
                position: 1
            },
            "one slot taken: only the oldest starts"
        );
    }

    #[test]
    fn the_name_breaks_ties_between_previews_created_in_the_same_second() {
        let (x, y) = (created_at("x", 5), created_at("y", 5));
        assert_eq!(place(1, 0, vec![&y, &x], "uid-x"), Gate::Open);
        assert!(!place(1, 0, vec![&y, &x], "uid-y").is_open());
    }
}
