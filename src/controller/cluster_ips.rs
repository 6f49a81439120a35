//! Creating Services that need a ClusterIP, a few at a time.
//!
//! kube-apiserver allocates ClusterIPs one at a time: its allocator holds one lock across the
//! write of the IPAddress object that records each address (`MetaAllocator::
//! AllocateNextService` in Kubernetes 1.36). Under load that write takes 50-60 ms, so
//! concurrent Service creates queue in the API server. A first reconcile creates a preview's children at once and waits
//! for all of them: at 1000 new previews, every one of the 16 workers waited about 0.9 s for
//! its Service while its Deployments had been created in 70 ms, and the first pass over the
//! previews was as slow as the Services could be allocated (measured: docs/contributing/
//! benchmarks.md, session 17).
//!
//! So at most [`AT_ONCE`] reconciles create Services at a time ([`ClusterIps::turn`]); the
//! others create everything else and hold their new Services back ([`take_turn`]), wait in
//! line, and are woken when a turn ends. A preview whose Service does not exist yet is not
//! available (`observe`), so its tests never start before their URL resolves.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::applied::Applied;
use super::build::{Desired, Environment};
use super::cached::CachedMeta;
use super::context::Context;
use super::store::ChildStore;
use crate::api::PreviewEnvironment;
use crate::sync::lock;

/// Reconciles creating Services at once: enough to keep the API server's allocator busy
/// (one allocating, the next ones on their way), few enough that no worker waits long.
pub const AT_ONCE: usize = 4;

/// Longest a preview waiting for a turn goes without a reconcile: each ending turn wakes
/// one, so this only bounds a wake-up lost to a preview that was woken and did not ask.
pub const RETRY: Duration = Duration::from_secs(30);

/// The turns to create Services, shared by every reconcile of this process.
pub struct ClusterIps {
    turns: Arc<Semaphore>,
    line: Mutex<Line>,
    wake: mpsc::UnboundedSender<ObjectRef<PreviewEnvironment>>,
}

#[derive(Default)]
struct Line {
    /// Previews that held Services back, oldest first: (uid, key).
    waiting: VecDeque<(String, ObjectRef<PreviewEnvironment>)>,
    /// Previews woken for a turn that have not asked again yet.
    woken: HashSet<String>,
}

/// A turn to create Services; when it ends (dropped), the first preview in line is woken.
pub struct Turn {
    permit: Option<OwnedSemaphorePermit>,
    ips: Arc<ClusterIps>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.ips.wake_first();
    }
}

impl ClusterIps {
    /// `at_once` turns; `wake` reconciles a preview whose turn may have come.
    pub fn new(at_once: usize, wake: mpsc::UnboundedSender<ObjectRef<PreviewEnvironment>>) -> Self {
        ClusterIps {
            turns: Arc::new(Semaphore::new(at_once)),
            line: Mutex::default(),
            wake,
        }
    }

    /// A turn for the preview `uid` to create its Services now, or `None`: it waits in line.
    /// Not first come first served: a free turn goes to whichever reconcile asks, as a
    /// preview woken for it (after the controller's debounce) would leave it unused meanwhile.
    pub fn turn(self: &Arc<Self>, uid: &str, key: &ObjectRef<PreviewEnvironment>) -> Option<Turn> {
        let mut line = lock(&self.line);
        line.woken.remove(uid);
        match self.turns.clone().try_acquire_owned() {
            Ok(permit) => {
                line.waiting.retain(|(u, _)| u != uid);
                Some(Turn {
                    permit: Some(permit),
                    ips: self.clone(),
                })
            }
            Err(_) => {
                if !line.waiting.iter().any(|(u, _)| u == uid) {
                    line.waiting.push_back((uid.to_string(), key.clone()));
                }
                None
            }
        }
    }

    /// The preview `uid` needs no turn (any more): it leaves the line. A turn it was woken
    /// for goes to the next in line, so a preview that no longer asks never stalls the others.
    pub fn leave(&self, uid: &str) {
        let mut line = lock(&self.line);
        if line.waiting.is_empty() && line.woken.is_empty() {
            return;
        }
        let before = line.waiting.len();
        line.waiting.retain(|(u, _)| u != uid);
        let left = line.woken.remove(uid) || line.waiting.len() < before;
        drop(line);
        if left && self.turns.available_permits() > 0 {
            self.wake_first();
        }
    }

    /// How many previews wait for a turn.
    pub fn waiting(&self) -> usize {
        lock(&self.line).waiting.len()
    }

    /// Wakes the preview first in line: it leaves the line, and asks again when it comes.
    fn wake_first(&self) {
        let mut line = lock(&self.line);
        if let Some((uid, key)) = line.waiting.pop_front() {
            line.woken.insert(uid);
            // Nobody listening means the controller is shutting down.
            let _ = self.wake.send(key);
        }
    }
}

/// PURE: whether creating `svc` allocates a ClusterIP (not headless, not ExternalName).
pub fn allocates(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return true;
    };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    type_ != "ExternalName" && spec.cluster_ip.as_deref() != Some("None")
}

/// The names of the Services in `desired` that would be created now: they allocate a
/// ClusterIP, and neither the cache nor this process's own writes know them.
pub fn to_create(
    desired: &Desired<Service>,
    cached: &ChildStore<CachedMeta<Service>>,
    applied: &Applied,
) -> BTreeSet<String> {
    (desired.objects.iter())
        .filter(|svc| allocates(svc))
        .filter_map(|svc| {
            let name = svc.metadata.name.as_deref()?;
            let namespace = svc.metadata.namespace.as_deref()?;
            let key = ObjectRef::new(name).within(namespace);
            let known = cached.get(&key).is_some()
                || applied.recorded(&("Service".to_string(), namespace.into(), name.into()));
            (!known).then(|| name.to_string())
        })
        .collect()
}

/// The reconcile's step: takes a turn for the preview when it has Services to create; without
/// one, holds them back in `env` (neither created nor deleted) and says so with `true`.
pub fn take_turn(
    ctx: &Context,
    pe: &PreviewEnvironment,
    uid: &str,
    env: &mut Environment,
) -> (Option<Turn>, bool) {
    let new = to_create(&env.services, &ctx.stores.services, &ctx.stores.applied);
    if new.is_empty() {
        ctx.cluster_ips.leave(uid);
        return (None, false);
    }
    match ctx.cluster_ips.turn(uid, &ObjectRef::from_obj(pe)) {
        Some(turn) => (Some(turn), false),
        None => {
            env.services.hold(&new);
            (None, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ServiceSpec;

    use super::*;

    fn key(name: &str) -> ObjectRef<PreviewEnvironment> {
        ObjectRef::new(name).within("team")
    }

    #[test]
    fn turns_are_limited_and_each_one_that_ends_wakes_the_first_in_line() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ips = Arc::new(ClusterIps::new(2, tx));
        let a = ips.turn("a", &key("a")).expect("a free turn");
        let b = ips.turn("b", &key("b")).expect("a free turn");
        assert!(ips.turn("c", &key("c")).is_none(), "both turns are taken");
        assert!(ips.turn("d", &key("d")).is_none());
        assert!(ips.turn("c", &key("c")).is_none(), "asking again");
        assert_eq!(ips.waiting(), 2, "c waits once, then d");
        drop(a);
        assert_eq!(rx.try_recv().ok(), Some(key("c")), "the first in line");
        assert!(rx.try_recv().is_err(), "one turn ended, one preview woken");
        let c = ips.turn("c", &key("c")).expect("the freed turn");
        assert_eq!(ips.waiting(), 1);
        drop((b, c));
        assert_eq!(rx.try_recv().ok(), Some(key("d")));
        assert_eq!(ips.waiting(), 0);
    }

    #[test]
    fn a_preview_that_no_longer_waits_passes_a_free_turn_on() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ips = Arc::new(ClusterIps::new(1, tx));
        let a = ips.turn("a", &key("a")).expect("a free turn");
        assert!(ips.turn("b", &key("b")).is_none());
        assert!(ips.turn("c", &key("c")).is_none());
        drop(a);
        assert_eq!(rx.try_recv().ok(), Some(key("b")));
        // b was deleted, or its Services were created meanwhile: its turn is not taken.
        ips.leave("b");
        ips.leave("never-waited");
        assert_eq!(rx.try_recv().ok(), Some(key("c")), "c is woken instead");
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn only_services_with_a_cluster_ip_wait() {
        let svc = |type_: Option<&str>, ip: Option<&str>| Service {
            spec: Some(ServiceSpec {
                type_: type_.map(str::to_string),
                cluster_ip: ip.map(str::to_string),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        assert!(allocates(&svc(None, None)));
        assert!(allocates(&svc(Some("ClusterIP"), None)));
        assert!(allocates(&svc(Some("NodePort"), None)));
        assert!(
            !allocates(&svc(Some("ExternalName"), None)),
            "the wake Service"
        );
        assert!(!allocates(&svc(None, Some("None"))), "headless");
    }
}
