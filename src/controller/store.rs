//! The cache of one kind of child, by namespace.
//!
//! A reconcile reads the children of one preview namespace. kube's reflector store can only
//! be scanned whole for that: at 1000 previews each pass cloned and filtered one to two
//! thousand objects per kind, about fifteen times per reconcile, and that scan was most of
//! the operator's CPU (on a machine where the API server waits for the same cores). Here
//! the objects are kept by namespace, so reading one namespace costs what it holds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::{Stream, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::sync::{read, write};

type ByNamespace<K> = HashMap<String, Vec<Arc<K>>>;

/// Objects of one kind by namespace, filled by [`ChildStore::reflect`].
pub struct ChildStore<K> {
    objects: Arc<RwLock<ByNamespace<K>>>,
    ready: watch::Receiver<bool>,
    ready_tx: Arc<watch::Sender<bool>>,
}

impl<K> Clone for ChildStore<K> {
    fn clone(&self) -> Self {
        ChildStore {
            objects: self.objects.clone(),
            ready: self.ready.clone(),
            ready_tx: self.ready_tx.clone(),
        }
    }
}

impl<K> Default for ChildStore<K> {
    fn default() -> Self {
        let (ready_tx, ready) = watch::channel(false);
        ChildStore {
            objects: Arc::default(),
            ready,
            ready_tx: Arc::new(ready_tx),
        }
    }
}

impl<K: Resource> ChildStore<K> {
    /// The cached object `key` names.
    pub fn get(&self, key: &ObjectRef<K>) -> Option<Arc<K>> {
        let all = read(&self.objects);
        let here = all.get(key.namespace.as_deref().unwrap_or_default())?;
        here.iter().find(|o| name(o.as_ref()) == key.name).cloned()
    }

    /// The cached objects of `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        read(&self.objects)
            .get(namespace)
            .cloned()
            .unwrap_or_default()
    }

    /// Every cached object (for the rare reader of all namespaces: a host lookup).
    pub fn state(&self) -> Vec<Arc<K>> {
        read(&self.objects).values().flatten().cloned().collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        read(&self.objects).values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        read(&self.objects).is_empty()
    }

    /// True once the first list has been taken in; false if the cache was dropped first.
    pub async fn wait_until_ready(&self) -> bool {
        self.ready.clone().wait_for(|r| *r).await.is_ok()
    }
}

impl<K: Resource + Changes> ChildStore<K> {
    /// Keeps this cache current from `events` (a watch), passing on each object an event
    /// changed: created, deleted, or different in anything but its resourceVersion (a
    /// ResourceQuota's usage, which the cache does not keep, changes with every pod: at 1000
    /// previews such events were half of all reconciles). A relist (`Init` …
    /// `InitDone`) replaces the whole cache at its end, so objects deleted while the watch
    /// was down are not kept.
    pub fn reflect<S>(
        &self,
        events: S,
    ) -> impl Stream<Item = Result<Arc<K>, watcher::Error>> + Send + 'static
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
        K: Send + Sync + 'static,
    {
        let this = self.clone();
        let mut relist: Option<ByNamespace<K>> = None;
        events
            .map_ok(move |event| this.apply(event, &mut relist))
            .try_filter_map(|touched| futures::future::ready(Ok(touched)))
    }

    /// Applies one event; returns the object it touched.
    fn apply(
        &self,
        event: watcher::Event<K>,
        relist: &mut Option<ByNamespace<K>>,
    ) -> Option<Arc<K>> {
        match event {
            watcher::Event::Init => {
                *relist = Some(HashMap::new());
                None
            }
            // A relist (a watch that expired) wakes only the owners of what changed meanwhile.
            watcher::Event::InitApply(object) => {
                let object = Arc::new(object);
                let before = match relist.as_mut() {
                    Some(pending) => {
                        upsert(pending, object.clone());
                        find(&read(&self.objects), &object)
                    }
                    None => upsert(&mut write(&self.objects), object.clone()),
                };
                changed(before, object)
            }
            watcher::Event::InitDone => {
                if let Some(pending) = relist.take() {
                    *write(&self.objects) = pending;
                }
                self.ready_tx.send_replace(true);
                None
            }
            watcher::Event::Apply(object) => {
                let object = Arc::new(object);
                let before = upsert(&mut write(&self.objects), object.clone());
                changed(before, object)
            }
            watcher::Event::Delete(object) => {
                remove(&mut write(&self.objects), &object);
                Some(Arc::new(object))
            }
        }
    }
}

/// `object`, unless it is `before` but for its resourceVersion.
fn changed<K: Changes>(before: Option<Arc<K>>, object: Arc<K>) -> Option<Arc<K>> {
    before
        .is_none_or(|before| object.changed_from(&before))
        .then_some(object)
}

fn find<K: Resource>(all: &ByNamespace<K>, object: &K) -> Option<Arc<K>> {
    let here = all.get(namespace(object))?;
    here.iter()
        .find(|o| name(o.as_ref()) == name(object))
        .cloned()
}

fn name<K: Resource>(object: &K) -> &str {
    object.meta().name.as_deref().unwrap_or_default()
}

fn namespace<K: Resource>(object: &K) -> &str {
    object.meta().namespace.as_deref().unwrap_or_default()
}

/// Stores `object`, returning the copy it replaces.
fn upsert<K: Resource>(all: &mut ByNamespace<K>, object: Arc<K>) -> Option<Arc<K>> {
    let here = match all.get_mut(namespace(object.as_ref())) {
        Some(here) => here,
        None => all
            .entry(namespace(object.as_ref()).to_string())
            .or_default(),
    };
    match here
        .iter_mut()
        .find(|o| name(o.as_ref()) == name(object.as_ref()))
    {
        Some(slot) => Some(std::mem::replace(slot, object)),
        None => {
            here.push(object);
            None
        }
    }
}

/// Whether a new copy of a cached object differs from the cached one in anything the cache
/// keeps but its resourceVersion: only such a change can matter to the owner.
pub trait Changes {
    fn changed_from(&self, before: &Self) -> bool;
}

impl<K> Changes for super::cached::CachedMeta<K> {
    fn changed_from(&self, before: &Self) -> bool {
        !same_meta(&self.metadata, &before.metadata) || self.compact != before.compact
    }
}

/// Kinds whose spec and status the cache keeps (pruned), and their compacted labels and
/// annotations.
macro_rules! changes_in_spec_and_status {
    ($($kind:ty { $($field:ident),* }),* $(,)?) => {$(
        impl Changes for $kind {
            fn changed_from(&self, before: &Self) -> bool {
                !same_meta(&self.metadata, &before.metadata)
                    $(|| self.$field != before.$field)*
            }
        }
    )*};
}

changes_in_spec_and_status!(
    super::cached::CachedDeployment {
        compact,
        spec,
        status
    },
    super::cached::CachedStatefulSet { compact, status },
    super::cached::CachedJob { compact, status },
    crate::flux::GitRepository { spec, status },
    crate::flux::HelmRepository { spec, status },
    crate::flux::OCIRepository { spec, status },
    crate::flux::HelmRelease { spec, status },
    crate::flux::Kustomization { spec, status },
);

/// `a == b` but for the resourceVersion. Destructured without `..`: a new field of
/// ObjectMeta does not compile until it is compared (or said not to matter).
fn same_meta(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    let ObjectMeta {
        annotations,
        creation_timestamp,
        deletion_grace_period_seconds,
        deletion_timestamp,
        finalizers,
        generate_name,
        generation,
        labels,
        managed_fields,
        name,
        namespace,
        owner_references,
        resource_version: _,
        self_link,
        uid,
    } = a;
    *annotations == b.annotations
        && *creation_timestamp == b.creation_timestamp
        && *deletion_grace_period_seconds == b.deletion_grace_period_seconds
        && *deletion_timestamp == b.deletion_timestamp
        && *finalizers == b.finalizers
        && *generate_name == b.generate_name
        && *generation == b.generation
        && *labels == b.labels
        && *managed_fields == b.managed_fields
        && *name == b.name
        && *namespace == b.namespace
        && *owner_references == b.owner_references
        && *self_link == b.self_link
        && *uid == b.uid
}

fn remove<K: Resource>(all: &mut ByNamespace<K>, object: &K) {
    let ns = namespace(object);
    let Some(here) = all.get_mut(ns) else {
        return;
    };
    here.retain(|o| name(o.as_ref()) != name(object));
    if here.is_empty() {
        all.remove(ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::slim::{OWNED, keep_all, slim};
    use crate::naming::APPLIED_HASH;

    type Service = super::super::cached::CachedMeta<k8s_openapi::api::core::v1::Service>;

    fn svc(ns: &str, name: &str, version: &str) -> Service {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            resource_version: Some(version.into()),
            ..ObjectMeta::default()
        }
        .into()
    }

    fn names(objects: &[Arc<Service>]) -> Vec<(&str, &str)> {
        let mut all: Vec<_> = objects
            .iter()
            .map(|o| (namespace(o.as_ref()), name(o.as_ref())))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn objects_are_found_by_namespace_and_replaced_by_name() {
        let store = ChildStore::<Service>::default();
        let mut relist = None;
        for event in [
            watcher::Event::Apply(svc("a", "web", "1")),
            watcher::Event::Apply(svc("a", "db", "1")),
            watcher::Event::Apply(svc("b", "web", "1")),
            watcher::Event::Apply(svc("a", "web", "2")),
        ] {
            store.apply(event, &mut relist);
        }
        assert_eq!(names(&store.in_namespace("a")), [("a", "db"), ("a", "web")]);
        assert_eq!(names(&store.in_namespace("c")), []);
        let web = store
            .get(&ObjectRef::new("web").within("a"))
            .expect("cached");
        assert_eq!(web.metadata.resource_version.as_deref(), Some("2"));
        assert_eq!(store.len(), 3);

        store.apply(watcher::Event::Delete(svc("a", "db", "2")), &mut relist);
        store.apply(watcher::Event::Delete(svc("b", "web", "2")), &mut relist);
        assert_eq!(names(&store.state()), [("a", "web")]);
        assert!(store.get(&ObjectRef::new("web").within("b")).is_none());
    }

    #[test]
    fn only_changes_beyond_the_resource_version_wake_the_owner() {
        let store = ChildStore::<Service>::default();
        let mut relist = None;
        let mut woke = |event| store.apply(event, &mut relist).is_some();
        assert!(
            woke(watcher::Event::Apply(svc("a", "quota", "1"))),
            "created"
        );
        // The quota controller writes the usage: the metadata cache sees a new version only.
        assert!(!woke(watcher::Event::Apply(svc("a", "quota", "2"))));
        let mut deleting = svc("a", "quota", "3");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(woke(watcher::Event::Apply(deleting)), "being deleted");
        assert!(woke(watcher::Event::Delete(svc("a", "quota", "4"))), "gone");
        // A relist after a dropped watch wakes the owners of what changed meanwhile only.
        assert!(woke(watcher::Event::Apply(svc("a", "web", "5"))));
        assert!(!woke(watcher::Event::Init));
        assert!(!woke(watcher::Event::InitApply(svc("a", "web", "6"))));
        assert!(woke(watcher::Event::InitApply(svc("b", "db", "7"))), "new");
        assert!(!woke(watcher::Event::InitDone));
        let mut edited = svc("a", "web", "8");
        edited.metadata.annotations = Some([("h".to_string(), "2".to_string())].into());
        assert!(woke(watcher::Event::Apply(edited)), "annotated");
        // As the watch delivers it: the kept annotation compacted.
        let slimmed = |version: &str, hash: &str| {
            let mut s = svc("a", "db", version);
            s.metadata.annotations = Some([(APPLIED_HASH.to_string(), hash.to_string())].into());
            slim(&mut s, OWNED, keep_all);
            watcher::Event::Apply(s)
        };
        assert!(woke(slimmed("9", "h1")), "compacted");
        assert!(!woke(slimmed("10", "h1")));
        assert!(woke(slimmed("11", "h2")), "its applied fingerprint changed");
    }

    #[test]
    fn a_relist_replaces_the_cache_at_its_end() {
        let store = ChildStore::<Service>::default();
        let mut relist = None;
        store.apply(watcher::Event::Apply(svc("a", "gone", "1")), &mut relist);
        store.apply(watcher::Event::Init, &mut relist);
        store.apply(
            watcher::Event::InitApply(svc("b", "kept", "2")),
            &mut relist,
        );
        // Until the relist ends, readers see the old state.
        assert_eq!(names(&store.state()), [("a", "gone")]);
        assert!(!*store.ready.borrow());
        store.apply(watcher::Event::InitDone, &mut relist);
        assert_eq!(names(&store.state()), [("b", "kept")]);
        assert!(*store.ready.borrow());
    }
}
