//! Every kind of object the operator keeps in a preview namespace, declared once: its cache,
//! how the cache is pruned, and the watch that wakes the owning preview when it changes.
//!
//! A new child kind is one field of [`Stores`] plus one line in [`watch`]; the apply step
//! (`controller::rollout`) destructures `build::Environment` without `..`, so the kind does
//! not compile until it is also applied. What each cache keeps of its objects is in `slim`;
//! what this process applied that the caches do not show yet in `applied`.

use std::collections::HashMap;

use futures::future::{BoxFuture, join_all};
use futures::stream::{BoxStream, select_all};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::warn;

use super::applied::Applied;
use super::cached::{CachedDeployment, CachedJob, CachedMeta, CachedStatefulSet};
use super::pods::StuckPods;
use super::slim::{
    self, INGRESS, JOB, Keeps, NAMESPACE, OWNED, WORKLOAD, keep_all, no_managed_fields,
    prune_deployment, prune_kustomization, prune_release, slim,
};
use super::store::{Changes, ChildStore};
use crate::api::PreviewEnvironment;
use crate::api::class::PreviewClass;
use crate::api::template::PreviewTemplate;
use crate::flux::{GitRepository, HelmRelease, HelmRepository, Kustomization, OCIRepository};
use crate::naming;

/// Caches of the previews and of everything the operator manages, filled by the watches.
#[derive(Clone)]
pub struct Stores {
    pub previews: Store<PreviewEnvironment>,
    /// The platform team's classes.
    pub classes: Store<PreviewClass>,
    /// Labels of every namespace, for classes that select tenants by label.
    pub tenants: Store<CachedMeta<Namespace>>,
    /// Secrets of the platform Secrets namespace (--platform-secrets-namespace, else the
    /// operator's own): the class's pull and TLS Secrets, copied into previews.
    pub platform_secrets: Store<Secret>,
    pub namespaces: Store<CachedMeta<Namespace>>,
    /// The teams' templates; a change re-renders the previews that name one.
    pub templates: Store<PreviewTemplate>,
    /// Their status says whether a service is available (compact: see `cached`).
    pub deployments: ChildStore<CachedDeployment>,
    /// The dependencies, cached like Deployments.
    pub stateful_sets: ChildStore<CachedStatefulSet>,
    /// Their status is the test result.
    pub jobs: ChildStore<CachedJob>,
    /// Pods with a stuck container (only those).
    pub stuck_pods: StuckPods,
    pub services: ChildStore<CachedMeta<Service>>,
    pub ingresses: ChildStore<CachedMeta<Ingress>>,
    pub network_policies: ChildStore<CachedMeta<NetworkPolicy>>,
    pub quotas: ChildStore<CachedMeta<ResourceQuota>>,
    pub limit_ranges: ChildStore<CachedMeta<LimitRange>>,
    pub role_bindings: ChildStore<CachedMeta<RoleBinding>>,
    /// What Flux delivers (empty, and not watched, where Flux's CRDs are not served).
    pub flux: FluxStores,
    /// Not a watch: what this process applied that the caches above may not show yet.
    pub applied: std::sync::Arc<Applied>,
}

/// The caches of the Flux objects in preview namespaces. Releases keep their status and the
/// newest history entry, not their values (a tenant's, up to 64 KiB each).
#[derive(Clone)]
pub struct FluxStores {
    /// Whether the API server serves Flux's kinds (checked at start).
    pub installed: bool,
    pub service_accounts: ChildStore<CachedMeta<ServiceAccount>>,
    pub git_repositories: ChildStore<GitRepository>,
    pub helm_repositories: ChildStore<HelmRepository>,
    pub oci_repositories: ChildStore<OCIRepository>,
    pub helm_releases: ChildStore<HelmRelease>,
    pub kustomizations: ChildStore<Kustomization>,
}

impl FluxStores {
    /// Empty caches that no watch fills: Flux is not installed.
    fn absent() -> Self {
        FluxStores {
            installed: false,
            service_accounts: ChildStore::default(),
            git_repositories: ChildStore::default(),
            helm_repositories: ChildStore::default(),
            oci_repositories: ChildStore::default(),
            helm_releases: ChildStore::default(),
            kustomizations: ChildStore::default(),
        }
    }
}

/// The watches of one controller: their caches, and what they trigger.
pub struct Watches {
    pub stores: Stores,
    /// Changed PreviewEnvironments (spec or finalizers; see [`watch`]).
    pub previews: BoxStream<'static, Result<PreviewEnvironment, watcher::Error>>,
    /// Previews to reconcile because one of their children changed.
    pub triggers: BoxStream<'static, ObjectRef<PreviewEnvironment>>,
    /// Resolves once every cache holds its first list; false if a watch ended first.
    pub synced: BoxFuture<'static, bool>,
}

/// Starts (lazily: the streams do the work once polled) one cached watch per kind.
/// `selector` limits the previews this process reconciles.
pub fn watch(
    client: &Client,
    selector: Option<&str>,
    platform_namespace: &str,
    flux_installed: bool,
) -> Watches {
    let (previews, preview_stream) = preview_watch(client, selector);
    let mut w = Builder::new(client, wait_until_ready(previews.clone()));
    let namespaces = w.namespaces.clone();
    let stores = Stores {
        classes: w.classes(previews.clone()),
        tenants: w.tenants(previews.clone()),
        platform_secrets: w.platform_secrets(platform_namespace, previews.clone()),
        templates: w.templates(previews.clone()),
        previews,
        deployments: w.child(WORKLOAD, prune_deployment),
        stateful_sets: w.child(WORKLOAD, keep_all),
        jobs: w.child(JOB, keep_all),
        stuck_pods: w.stuck_pods(),
        services: w.child(OWNED, keep_all),
        ingresses: w.child(INGRESS, keep_all),
        network_policies: w.child(OWNED, keep_all),
        quotas: w.child(OWNED, keep_all),
        limit_ranges: w.child(OWNED, keep_all),
        role_bindings: w.child(OWNED, keep_all),
        flux: if flux_installed {
            FluxStores {
                installed: true,
                service_accounts: w.child(OWNED, keep_all),
                git_repositories: w.child(OWNED, keep_all),
                helm_repositories: w.child(OWNED, keep_all),
                oci_repositories: w.child(OWNED, keep_all),
                helm_releases: w.child(OWNED, prune_release),
                kustomizations: w.child(OWNED, prune_kustomization),
            }
        } else {
            FluxStores::absent()
        },
        applied: Default::default(),
        namespaces,
    };
    let synced = join_all(w.synced).map(|all| all.into_iter().all(|ok| ok));
    Watches {
        stores,
        previews: preview_stream,
        triggers: select_all(w.triggers).boxed(),
        synced: synced.boxed(),
    }
}

/// The previews' own cache (pruned: `slim::preview`), and the changes that trigger a reconcile.
fn preview_watch(
    client: &Client,
    selector: Option<&str>,
) -> (
    Store<PreviewEnvironment>,
    BoxStream<'static, Result<PreviewEnvironment, watcher::Error>>,
) {
    use kube::runtime::{Predicate, PredicateConfig, predicates};
    let mut config = watcher::Config::default().any_semantic();
    if let Some(selector) = selector {
        config = config.labels(selector);
    }
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(Api::<PreviewEnvironment>::all(client.clone()), config).modify(slim::preview),
    )
    .default_backoff()
    .applied_objects()
    // Status-only changes (most of them this operator's own writes) trigger nothing: the
    // spec (generation, which deletion also bumps), the finalizers and a rerun or wake
    // request are what it acts on. The cache above still sees every change.
    .predicate_filter(
        predicates::generation
            .combine(predicates::finalizers)
            .combine(|pe: &PreviewEnvironment| annotation(pe, naming::RERUN_TESTS))
            .combine(|pe: &PreviewEnvironment| annotation(pe, naming::WAKE_REQUEST)),
        PredicateConfig::default(),
    );
    (reader, stream.boxed())
}

/// A predicate on the value of annotation `key` (a rerun or wake request).
fn annotation(pe: &PreviewEnvironment, key: &str) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let value = pe.annotations().get(key)?;
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    Some(hasher.finish())
}

/// What a cached watch needs of the kind it watches.
trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

struct Builder {
    client: Client,
    /// The preview namespaces, by name: whose preview a child's namespace is.
    namespaces: Store<CachedMeta<Namespace>>,
    triggers: Vec<BoxStream<'static, ObjectRef<PreviewEnvironment>>>,
    synced: Vec<BoxFuture<'static, bool>>,
}

impl Builder {
    /// Starts with the preview namespaces' cache (cluster-scoped, so by name), which also
    /// triggers their owners: the namespace carries the owner, and says it for its children.
    fn new(client: &Client, previews_synced: BoxFuture<'static, bool>) -> Self {
        let (reader, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher(Api::all(client.clone()), managed()).modify(|o| slim(o, NAMESPACE, keep_all)),
        )
        .default_backoff()
        .touched_objects()
        .filter_map(|event| async move {
            owner_of_child(&ok_or_warn::<CachedMeta<Namespace>>(event)?)
        });
        Builder {
            client: client.clone(),
            triggers: vec![stream.boxed()],
            synced: vec![previews_synced, wait_until_ready(reader.clone())],
            namespaces: reader,
        }
    }

    /// A cached watch of one child kind, keeping the labels and annotations `keep`
    /// (compacted, `slim::Kept`, where the kind can), that also triggers the owner. For
    /// `CachedMeta<K>` it asks for metadata only (kube picks metadata requests for that type),
    /// which is all most kinds need.
    fn child<K: Watched + Changes + Keeps>(
        &mut self,
        keep: &'static [&'static str],
        prune: fn(&mut K),
    ) -> ChildStore<K> {
        let store = ChildStore::default();
        let events = watcher(Api::<K>::all(self.client.clone()), managed())
            .modify(move |o| slim(o, keep, prune))
            .default_backoff();
        let namespaces = self.namespaces.clone();
        let stream = store.reflect(events).filter_map(move |event| {
            let owner =
                ok_or_warn::<_>(event).and_then(|child| owner_in(&namespaces, child.as_ref()));
            async move { owner }
        });
        self.triggers.push(stream.boxed());
        let ready = store.clone();
        self.synced
            .push(async move { ready.wait_until_ready().await }.boxed());
        store
    }

    /// Every PreviewClass. A change of one re-evaluates every preview: which class serves a
    /// preview can change with it (the default annotation), and class changes are rare. A
    /// change of a class's status (its own, written every few seconds while previews come
    /// and go, `classes`) wakes nothing.
    fn classes(&mut self, previews: Store<PreviewEnvironment>) -> Store<PreviewClass> {
        let (reader, writer) = reflector::store();
        let mut seen: HashMap<String, u64> = HashMap::new();
        let stream = reflector(
            writer,
            watcher(
                Api::<PreviewClass>::all(self.client.clone()),
                watcher::Config::default().any_semantic(),
            )
            .modify(no_managed_fields),
        )
        .default_backoff()
        .filter_map(move |event| {
            let changed = match event {
                Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => {
                    let policy = class_policy(&c);
                    seen.insert(c.name_any(), policy) != Some(policy)
                }
                Ok(watcher::Event::Delete(c)) => seen.remove(&c.name_any()).is_some(),
                Ok(watcher::Event::Init | watcher::Event::InitDone) => false,
                Err(error) => ok_or_warn::<PreviewClass>(Err(error)).is_some(),
            };
            async move { changed.then_some(()) }
        })
        .flat_map(move |()| {
            let all: Vec<_> = (previews.state().iter())
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect();
            futures::stream::iter(all)
        });
        self.triggers.push(stream.boxed());
        self.synced.push(wait_until_ready(reader.clone()));
        reader
    }

    /// Every PreviewTemplate. A change re-renders the previews of its namespace that name it.
    fn templates(&mut self, previews: Store<PreviewEnvironment>) -> Store<PreviewTemplate> {
        let (reader, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher(
                Api::<PreviewTemplate>::all(self.client.clone()),
                watcher::Config::default().any_semantic(),
            )
            .modify(no_managed_fields),
        )
        .default_backoff()
        .touched_objects()
        .filter_map(|event| async move { ok_or_warn::<PreviewTemplate>(event) })
        .flat_map(move |template| {
            let (ns, name) = (template.namespace(), template.name_any());
            let users: Vec<_> = previews
                .state()
                .iter()
                .filter(|p| p.namespace() == ns)
                .filter(|p| p.spec.template_ref.as_ref().map(|t| &t.name) == Some(&name))
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect();
            futures::stream::iter(users)
        });
        self.triggers.push(stream.boxed());
        self.synced.push(wait_until_ready(reader.clone()));
        reader
    }

    /// The Secrets of the platform Secrets namespace. A change (a rotated pull secret or
    /// certificate) re-evaluates every preview, so the copies follow.
    fn platform_secrets(
        &mut self,
        namespace: &str,
        previews: Store<PreviewEnvironment>,
    ) -> Store<Secret> {
        self.waking_all(Api::namespaced(self.client.clone(), namespace), previews)
    }

    /// The labels of every namespace but the preview namespaces (nothing else is kept: a few
    /// hundred bytes each). A tenant namespace whose labels change re-evaluates its previews,
    /// which a class may now select or no longer select. A preview namespace is never a
    /// tenant (a preview must not be able to start previews), and at 1000 previews leaving
    /// them out saves a thousand entries.
    fn tenants(&mut self, previews: Store<PreviewEnvironment>) -> Store<CachedMeta<Namespace>> {
        let (reader, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher(
                Api::<CachedMeta<Namespace>>::all(self.client.clone()),
                watcher::Config::default()
                    .labels(&format!("{}!={}", naming::MANAGED_BY, naming::MANAGER))
                    .any_semantic(),
            )
            .modify(|ns| {
                no_managed_fields(ns);
                ns.annotations_mut().clear();
                ns.metadata.owner_references = None;
                ns.metadata.finalizers = None;
            }),
        )
        .default_backoff()
        .touched_objects()
        .filter_map(|event| async move { ok_or_warn::<CachedMeta<Namespace>>(event) })
        .flat_map(move |ns| {
            let name = ns.name_any();
            let inside: Vec<_> = previews
                .state()
                .iter()
                .filter(|p| p.namespace().as_deref() == Some(name.as_str()))
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect();
            futures::stream::iter(inside)
        });
        self.triggers.push(stream.boxed());
        self.synced.push(wait_until_ready(reader.clone()));
        reader
    }

    /// A cached watch of `api` whose every change wakes every preview.
    fn waking_all<K: Watched>(
        &mut self,
        api: Api<K>,
        previews: Store<PreviewEnvironment>,
    ) -> Store<K> {
        let (reader, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher(api, watcher::Config::default().any_semantic()).modify(no_managed_fields),
        )
        .default_backoff()
        .touched_objects()
        .filter_map(|event| async move { ok_or_warn::<K>(event) })
        .flat_map(move |_changed| {
            let all: Vec<_> = previews
                .state()
                .iter()
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect();
            futures::stream::iter(all)
        });
        self.triggers.push(stream.boxed());
        self.synced.push(wait_until_ready(reader.clone()));
        reader
    }

    /// Stuck pods wake their preview. Pods carry no owner annotation; their namespace does.
    fn stuck_pods(&mut self) -> StuckPods {
        let pods = StuckPods::default();
        let namespaces = self.namespaces.clone();
        let stream = pods
            .stream(&self.client, managed())
            .filter_map(move |event| {
                let owner = ok_or_warn::<k8s_openapi::api::core::v1::Pod>(event)
                    .and_then(|pod| owner_in(&namespaces, &pod));
                async move { owner }
            });
        self.triggers.push(stream.boxed());
        let ready = pods.clone();
        self.synced
            .push(async move { ready.wait_until_ready().await }.boxed());
        pods
    }
}

/// The preview whose namespace `child` is in, as the namespace cache says. A child seen
/// before its namespace wakes nobody, and needs not: the namespace's own event, later, wakes
/// the preview, whose reconcile then finds the child cached.
fn owner_in<K: Resource>(
    namespaces: &Store<CachedMeta<Namespace>>,
    child: &K,
) -> Option<ObjectRef<PreviewEnvironment>> {
    let ns = namespaces.get(&ObjectRef::new(child.meta().namespace.as_deref()?))?;
    owner_of_child(ns.as_ref())
}

/// What of a class its previews depend on: its spec (the generation) and its annotations
/// (which class is the default), not its status.
fn class_policy(class: &PreviewClass) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    class.metadata.generation.hash(&mut hasher);
    class.annotations().hash(&mut hasher);
    hasher.finish()
}

/// A watch error is retried with backoff by the stream itself; say so where an operator
/// looks: a watch that keeps failing (CRD missing, RBAC denied) keeps `/readyz` at 503.
fn ok_or_warn<K>(event: Result<K, watcher::Error>) -> Option<K> {
    match event {
        Ok(object) => Some(object),
        Err(error) => {
            warn!(kind = std::any::type_name::<K>(), %error, "watch failed; retrying");
            None
        }
    }
}

/// Maps a child to its owning PreviewEnvironment through the owner annotation.
pub fn owner_of_child<K: Keeps>(child: &K) -> Option<ObjectRef<PreviewEnvironment>> {
    let (ns, name) = naming::owner_ref(child.kept(naming::OWNER_REF))?;
    Some(ObjectRef::new(name).within(ns))
}

/// Waits for one cache to be filled. A store's readiness wakes only the task that polled it
/// last (the controller polls the preview store itself), so poll again now and then instead
/// of waiting for a wake-up that may go to someone else.
fn wait_until_ready<K>(store: Store<K>) -> BoxFuture<'static, bool>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    async move {
        loop {
            let poll = store.wait_until_ready();
            match tokio::time::timeout(std::time::Duration::from_millis(200), poll).await {
                Ok(result) => return result.is_ok(),
                Err(_elapsed) => continue,
            }
        }
    }
    .boxed()
}

/// Watch configuration for everything the operator manages.
fn managed() -> watcher::Config {
    watcher::Config::default()
        .labels(&naming::managed_selector())
        .any_semantic()
}
