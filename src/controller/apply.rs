//! Children brought into place under one field manager: created when the cache shows none
//! (a create costs the API server less than a server-side apply, and nearly every child is
//! written once), server-side applied when it changes, skipped when the cached object already
//! carries the same fingerprint; and deletion of children the spec no longer wants (found by
//! the owner-uid label, so nothing the operator does not own is touched).
//!
//! A create leaves the operator's fields under an `Update` entry of its managed fields, which
//! a later apply would not take over: a field the spec drops would stay. Before the first
//! apply to a created object the entry is handed over to the operator's `Apply` entry, as
//! kubectl does when it moves an object to server-side apply; from then on each apply owns
//! exactly the fields it applies.

use std::collections::BTreeSet;
use std::fmt::Debug;

use futures::future::try_join_all;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::applied::Applied;
use super::build::{Desired, Environment, Preview, stamp};
use super::cached::CachedMeta;
use super::children::Stores;
use super::slim::{Keeps, created, label};
use super::store::ChildStore;
use crate::client::{create_params, gone_is_ok};
use crate::naming::{APPLIED_HASH, HOST, MANAGER, OWNER_UID};

/// Brings every child of `env` into place in the preview namespace and deletes the owned
/// children of each kind that it no longer holds.
pub async fn environment(
    client: &Client,
    stores: &Stores,
    preview: &Preview<'_>,
    env: Environment,
) -> Result<(), ApplyError> {
    let (c, s, a) = (client, stores, &*stores.applied);
    let scope = Scope {
        namespace: &preview.namespace,
        owner_uid: &preview.owner.uid,
    };
    // Destructured without `..`: a new kind of child does not compile until it is applied.
    let Environment {
        network_policy,
        quota,
        limit_range,
        stateful_sets,
        deployments,
        services,
        ingresses,
        role_bindings,
        held,
        delivery,
    } = env;
    let f = &s.flux;
    let stateful_sets = Desired::exactly(stateful_sets).holding(&held);
    let deployments = deployments.holding(&held);
    // The kinds are independent: apply them concurrently, so a new preview costs one round
    // trip to the API server instead of one per object.
    futures::try_join!(
        sync(
            c,
            a,
            &s.network_policies,
            scope,
            Desired::exactly(vec![network_policy])
        ),
        sync(c, a, &s.quotas, scope, Desired::exactly(vec![quota])),
        sync(
            c,
            a,
            &s.limit_ranges,
            scope,
            Desired::exactly(vec![limit_range])
        ),
        sync(c, a, &s.stateful_sets, scope, stateful_sets),
        sync(c, a, &s.deployments, scope, deployments),
        sync(c, a, &s.services, scope, services),
        sync(c, a, &s.ingresses, scope, ingresses),
        sync(
            c,
            a,
            &s.role_bindings,
            scope,
            Desired::exactly(role_bindings)
        ),
        sync(c, a, &f.service_accounts, scope, delivery.service_accounts),
        sync(c, a, &f.git_repositories, scope, delivery.git_repositories),
        sync(
            c,
            a,
            &f.helm_repositories,
            scope,
            delivery.helm_repositories
        ),
        sync(c, a, &f.oci_repositories, scope, delivery.oci_repositories),
        sync(c, a, &f.helm_releases, scope, delivery.helm_releases),
        sync(c, a, &f.kustomizations, scope, delivery.kustomizations),
    )?;
    Ok(())
}

/// A host `env` would claim that an Ingress of another preview already serves, with a
/// message; checked before anything is applied, so a preview never takes another's URL.
pub fn host_conflict(
    ingresses: &ChildStore<CachedMeta<Ingress>>,
    env: &Environment,
) -> Option<String> {
    let served = ingresses.state();
    env.ingresses.objects.iter().find_map(|wanted| {
        let host = wanted.annotations().get(HOST)?;
        let other = served.iter().find(|i| {
            i.kept(HOST) == Some(host.as_str())
                && i.metadata.deletion_timestamp.is_none()
                && (i.namespace() != wanted.namespace() || i.name_any() != wanted.name_any())
        })?;
        Some(format!(
            "host {host} is already served by Ingress {}/{}; rename the service",
            other.namespace().unwrap_or_default(),
            other.name_any()
        ))
    })
}

/// A kind of object the operator writes into preview namespaces.
pub trait Child:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Serialize
    + DeserializeOwned
    + Clone
    + Debug
{
}

impl<K> Child for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug
{
}

/// What a cache of children holds (the object itself, or its metadata), its labels and
/// annotations read through [`Keeps`].
pub trait Cached:
    Resource<DynamicType: Default + Eq + std::hash::Hash + Clone> + Keeps + Clone
{
}

impl<S> Cached for S where
    S: Resource<DynamicType: Default + Eq + std::hash::Hash + Clone> + Keeps + Clone
{
}

/// The preview namespace and owner whose children one apply covers.
#[derive(Clone, Copy)]
struct Scope<'a> {
    namespace: &'a str,
    owner_uid: &'a str,
}

/// Applies every `desired` object of one kind, then (when they are all that is wanted)
/// deletes the owned ones not among them.
async fn sync<K, S>(
    client: &Client,
    applied: &Applied,
    store: &ChildStore<S>,
    scope: Scope<'_>,
    desired: Desired<K>,
) -> Result<(), ApplyError>
where
    K: Child,
    S: Cached,
{
    let mut keep: BTreeSet<String> = desired.objects.iter().map(|o| o.name_any()).collect();
    keep.extend(desired.held);
    try_join_all(
        desired
            .objects
            .into_iter()
            .map(|o| apply(client, store, applied, o)),
    )
    .await?;
    let (namespace, owner_uid) = (scope.namespace, scope.owner_uid);
    if desired.exclusive && !extras(store, namespace, owner_uid, &keep).is_empty() {
        // Boxed, as deleting is rare: awaited in place, its request future would make every
        // kind's slot in `environment`'s join as large (in every reconcile in flight).
        Box::pin(delete_extras::<K, S>(
            client, store, namespace, owner_uid, &keep,
        ))
        .await?;
    }
    Ok(())
}

/// A write to a child failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("failed to apply {kind} {namespace}/{name}: {source}")]
    Apply {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to delete {kind} {namespace}/{name}: {source}")]
    Delete {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The fingerprint a cached copy carries, unless it is being deleted.
pub fn cached_hash<S: Keeps>(cached: Option<&S>) -> Option<String> {
    let cached = cached?;
    if cached.meta().deletion_timestamp.is_some() {
        return None;
    }
    cached.kept(APPLIED_HASH).map(str::to_string)
}

/// Applies `desired` unless the cache shows it is already in place, or this process applied
/// it and the cache has not caught up yet. Returns whether it wrote.
pub async fn apply<K, S>(
    client: &Client,
    store: &ChildStore<S>,
    applied: &Applied,
    desired: K,
) -> Result<bool, ApplyError>
where
    K: Child,
    S: Cached,
{
    let desired = stamp(desired);
    let name = desired.name_any();
    let namespace = desired.namespace().unwrap_or_default();
    let want = desired.annotations().get(APPLIED_HASH).cloned();
    let cached = store.get(&ObjectRef::new(&name).within(&namespace));
    let cached_version = cached.as_ref().and_then(|c| c.resource_version());
    let key = (K::kind(&()).into_owned(), namespace.clone(), name.clone());
    if let Some(want) = &want {
        if cached_hash(cached.as_deref()).as_ref() == Some(want) {
            applied.settled(&key);
            return Ok(false);
        }
        if applied.in_flight(&key, cached_version.as_ref(), want) {
            return Ok(false);
        }
    }
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let failed = |source| ApplyError::Apply {
        kind: K::kind(&()).into_owned(),
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    };
    match &cached {
        None => match create(&api, &desired).await {
            Ok(()) => {
                if let Some(want) = want {
                    applied.record(key, cached_version, want);
                }
                return Ok(true);
            }
            // The cache had not caught up with it: apply over it as over any cached one.
            Err(kube::Error::Api(e)) if e.code == 409 => hand_over(&api, &name).await,
            Err(e) => Err(e),
        },
        Some(c) if created(c.as_ref()) => hand_over(&api, &name).await,
        Some(_) => Ok(()),
    }
    .map_err(failed)?;
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(failed)?;
    if let Some(want) = want {
        applied.record(key, cached_version, want);
    }
    Ok(true)
}

/// Creates `desired` under the operator's field manager.
async fn create<K: Child>(api: &Api<K>, desired: &K) -> Result<(), kube::Error> {
    api.create(&create_params(), desired).await.map(drop)
}

/// Whether `entries` hold the operator's `Update` entry: a create's, or an update's that was
/// not an apply.
pub fn has_created_entry(entries: &[ManagedFieldsEntry]) -> bool {
    entries.iter().any(|e| is_own(e, "Update"))
}

fn is_own(entry: &ManagedFieldsEntry, operation: &str) -> bool {
    entry.manager.as_deref() == Some(MANAGER)
        && entry.operation.as_deref() == Some(operation)
        && entry.subresource.as_deref().unwrap_or_default().is_empty()
}

/// Moves the fields of the operator's `Update` entry of `name` into its `Apply` entry, so
/// the next apply owns (and may drop) them. Conditional on the resourceVersion read: a
/// change in between fails with a conflict and the reconcile is retried.
pub async fn hand_over<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let live = api.get_metadata(name).await?;
    let Some(entries) = handed_over(live.managed_fields()) else {
        return Ok(());
    };
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": live.resource_version(),
            "managedFields": entries,
        }
    });
    let params = PatchParams {
        field_manager: Some(MANAGER.to_string()),
        ..PatchParams::default()
    };
    api.patch_metadata(name, &params, &Patch::Merge(&patch))
        .await
        .map(drop)
}

/// `entries` with the operator's `Update` entry folded into its `Apply` entry (or turned into
/// one); `None` when there is no such entry.
pub fn handed_over(entries: &[ManagedFieldsEntry]) -> Option<Vec<ManagedFieldsEntry>> {
    let at = entries.iter().position(|e| is_own(e, "Update"))?;
    let mut entries = entries.to_vec();
    let update = entries.remove(at);
    match entries.iter_mut().find(|e| is_own(e, "Apply")) {
        Some(apply) => {
            let mut fields = apply
                .fields_v1
                .take()
                .map_or(serde_json::Value::Null, |f| f.0);
            union(&mut fields, update.fields_v1.map(|f| f.0));
            apply.fields_v1 = Some(FieldsV1(fields));
        }
        None => entries.push(ManagedFieldsEntry {
            operation: Some("Apply".to_string()),
            ..update
        }),
    }
    Some(entries)
}

/// Adds the field set `other` (FieldsV1: nested maps whose leaves are `{}`) to `into`.
fn union(into: &mut serde_json::Value, other: Option<serde_json::Value>) {
    use serde_json::Value;
    match (into, other) {
        (_, None) => {}
        (Value::Object(a), Some(Value::Object(b))) => {
            for (k, v) in b {
                union(
                    a.entry(k).or_insert(Value::Object(Default::default())),
                    Some(v),
                );
            }
        }
        (into @ Value::Null, Some(v)) => *into = v,
        (_, Some(_)) => {}
    }
}

/// Cached objects in `namespace` owned by `owner_uid`.
pub fn owned<S>(store: &ChildStore<S>, namespace: &str, owner_uid: &str) -> Vec<std::sync::Arc<S>>
where
    S: Cached,
{
    let mut here = store.in_namespace(namespace);
    here.retain(|o| label(o.as_ref(), OWNER_UID) == Some(owner_uid));
    here
}

/// Whether the caches show the preview's Flux identity (the ServiceAccount and RoleBinding
/// `preview-applier`) in its namespace.
pub fn applier_in_place(stores: &Stores, preview: &Preview<'_>) -> bool {
    let (ns, uid) = (preview.namespace.as_str(), preview.owner.uid.as_str());
    let applier = super::build::flux::APPLIER;
    let named = |name: String| name == applier;
    owned(&stores.flux.service_accounts, ns, uid)
        .iter()
        .any(|a| named(a.name_any()))
        && owned(&stores.role_bindings, ns, uid)
            .iter()
            .any(|b| named(b.name_any()))
}

/// Names of cached objects in `namespace` owned by `owner_uid` that are not in `keep`.
pub fn extras<S>(
    store: &ChildStore<S>,
    namespace: &str,
    owner_uid: &str,
    keep: &BTreeSet<String>,
) -> Vec<String>
where
    S: Cached,
{
    owned(store, namespace, owner_uid)
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .map(|o| o.name_any())
        .filter(|n| !keep.contains(n))
        .collect()
}

/// Deletes `namespace/name` of kind `K`; already gone counts as done.
pub async fn delete<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    params: &DeleteParams,
) -> Result<(), ApplyError>
where
    K: Child,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    gone_is_ok(api.delete(name, params).await).map_err(|source| ApplyError::Delete {
        kind: K::kind(&()).into_owned(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        source,
    })?;
    Ok(())
}

/// Deletes every owned object of kind `K` in `namespace` that is not in `keep`.
pub async fn delete_extras<K, S>(
    client: &Client,
    store: &ChildStore<S>,
    namespace: &str,
    owner_uid: &str,
    keep: &BTreeSet<String>,
) -> Result<usize, ApplyError>
where
    K: Child,
    S: Cached,
{
    let names = extras(store, namespace, owner_uid, keep);
    for name in &names {
        delete::<K>(client, namespace, name, &DeleteParams::background()).await?;
    }
    Ok(names.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(
        manager: &str,
        operation: &str,
        subresource: Option<&str>,
        fields: serde_json::Value,
    ) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.to_string()),
            operation: Some(operation.to_string()),
            api_version: Some("apps/v1".to_string()),
            fields_type: Some("FieldsV1".to_string()),
            fields_v1: Some(FieldsV1(fields)),
            subresource: subresource.map(str::to_string),
            time: None,
        }
    }

    #[test]
    fn a_created_objects_fields_become_the_operators_applied_fields() {
        let created = entry(
            MANAGER,
            "Update",
            None,
            json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {}}}}}),
        );
        let status = entry(
            "kube-controller-manager",
            "Update",
            Some("status"),
            json!({"f:status": {}}),
        );
        let scaled = entry(
            MANAGER,
            "Update",
            Some("scale"),
            json!({"f:spec": {"f:replicas": {}}}),
        );
        let entries = vec![created.clone(), status.clone(), scaled.clone()];
        assert!(has_created_entry(&entries));
        let handed = handed_over(&entries).expect("an Update entry of the operator");
        assert_eq!(handed.len(), 3, "{handed:?}");
        assert!(
            handed.contains(&status) && handed.contains(&scaled),
            "others untouched"
        );
        let applied = handed
            .iter()
            .find(|e| is_own(e, "Apply"))
            .expect("an Apply entry");
        assert_eq!(applied.fields_v1, created.fields_v1);
        assert!(!has_created_entry(&handed), "nothing left to hand over");
        assert_eq!(handed_over(&handed), None);
    }

    #[test]
    fn a_handed_over_update_joins_an_existing_apply_entry() {
        let update = entry(
            MANAGER,
            "Update",
            None,
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:x": {}}}),
        );
        let apply = entry(
            MANAGER,
            "Apply",
            None,
            json!({"f:metadata": {"f:labels": {"f:b": {}}}}),
        );
        let handed = handed_over(&[apply, update]).expect("handed over");
        assert_eq!(handed.len(), 1);
        assert_eq!(
            handed[0].fields_v1.as_ref().map(|f| &f.0),
            Some(
                &json!({"f:metadata": {"f:labels": {"f:a": {}, "f:b": {}}}, "f:spec": {"f:x": {}}})
            )
        );
    }
}
