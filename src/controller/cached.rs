//! The workloads as the caches keep them: the metadata, and of the spec and status only what
//! the status step reads. They are read straight from the watch, so a Deployment's pod spec
//! (most of its size) is skipped by the parser instead of parsed and dropped, and a cached
//! Deployment takes a few hundred bytes instead of the k8s-openapi struct's 2.4 KB plus its
//! maps. At 1000 previews the workload caches are most of the operator's memory.
//!
//! Each type answers to its kind's API (same group, version and plural), so `Api<CachedJob>`
//! watches Jobs; writes still go through the k8s-openapi types (`apply::sync` takes the
//! written kind and the cached kind apart).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};
use kube::Resource;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::slim::{Keeps, Kept};
use crate::naming::SHA;

/// A Deployment: its metadata, the sha its pod template runs and its status.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CachedDeployment {
    #[serde(default, deserialize_with = "meta")]
    pub metadata: ObjectMeta,
    /// Its labels and annotations, once the cache compacted them (`slim`).
    #[serde(skip)]
    pub compact: Kept,
    #[serde(default)]
    pub spec: Option<WorkloadSpec>,
    #[serde(default)]
    pub status: Option<DeploymentStatus>,
}

/// A StatefulSet (a dependency): its metadata and status.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CachedStatefulSet {
    #[serde(default, deserialize_with = "meta")]
    pub metadata: ObjectMeta,
    /// Its labels and annotations, once the cache compacted them (`slim`).
    #[serde(skip)]
    pub compact: Kept,
    #[serde(default)]
    pub status: Option<StatefulSetStatus>,
}

/// A Job (a test or setup run): its metadata and status, which is the result.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CachedJob {
    #[serde(default, deserialize_with = "meta")]
    pub metadata: ObjectMeta,
    /// Its labels and annotations, once the cache compacted them (`slim`).
    #[serde(skip)]
    pub compact: Kept,
    #[serde(default)]
    pub status: Option<JobStatus>,
}

/// A Pod as the stuck-pod watch reads it: its metadata and status. Every event of every
/// preview pod is read (a few per pod while it starts) to find the few that are stuck, and
/// the spec, most of a pod's JSON, is skipped by the parser instead of parsed and dropped.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CachedPod {
    #[serde(default, deserialize_with = "meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<PodStatus>,
}

impl From<CachedPod> for Pod {
    fn from(pod: CachedPod) -> Pod {
        Pod {
            metadata: pod.metadata,
            spec: None,
            status: pod.status,
        }
    }
}

/// An object of kind `K` as a metadata-only watch delivers it: what `PartialObjectMeta<K>` is,
/// its metadata read by [`meta`]. Asks for metadata only, as `PartialObjectMeta` does.
#[derive(Deserialize)]
#[serde(bound = "")]
pub struct CachedMeta<K> {
    #[serde(default, deserialize_with = "meta")]
    pub metadata: ObjectMeta,
    /// Its labels and annotations, once the cache compacted them (`slim`; a tenant's
    /// namespace keeps its labels in their map, for the classes' selectors).
    #[serde(skip)]
    pub compact: Kept,
    #[serde(skip)]
    kind: PhantomData<fn() -> K>,
}

impl<K> From<ObjectMeta> for CachedMeta<K> {
    fn from(metadata: ObjectMeta) -> Self {
        CachedMeta {
            metadata,
            compact: Kept::default(),
            kind: PhantomData,
        }
    }
}

impl<K> Default for CachedMeta<K> {
    fn default() -> Self {
        ObjectMeta::default().into()
    }
}

impl<K> Clone for CachedMeta<K> {
    fn clone(&self) -> Self {
        CachedMeta {
            metadata: self.metadata.clone(),
            compact: self.compact.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for CachedMeta<K> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("CachedMeta")
            .field("metadata", &self.metadata)
            .field("compact", &self.compact)
            .finish()
    }
}

impl<K: Resource> Keeps for CachedMeta<K> {
    fn compact(&self) -> Option<&Kept> {
        Some(&self.compact)
    }
    fn compact_mut(&mut self) -> Option<&mut Kept> {
        Some(&mut self.compact)
    }
}

/// The workloads keep their labels and annotations compactly.
macro_rules! compact {
    ($($kind:ty),*) => {$(
        impl Keeps for $kind {
            fn compact(&self) -> Option<&Kept> {
                Some(&self.compact)
            }
            fn compact_mut(&mut self) -> Option<&mut Kept> {
                Some(&mut self.compact)
            }
        }
    )*};
}

compact!(CachedDeployment, CachedStatefulSet, CachedJob);

impl<K: Resource> Resource for CachedMeta<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn metadata_api() -> bool {
        true
    }
    fn kind(dt: &K::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &K::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &K::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &K::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Reads an object's metadata without the field sets of its managed fields. Every watch event
/// carries them (an entry per controller that wrote the object: a third of a Pod's or a
/// Deployment's JSON), the caches drop them anyway (`slim`), and parsing them into JSON values
/// was a tenth of the operator's CPU at 1000 previews. Of each entry the parser keeps who
/// wrote it, how and through which subresource (what `apply::has_created_entry` reads) and
/// skips the rest.
pub fn meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    Option::<Meta>::deserialize(d).map(|m| m.map(ObjectMeta::from).unwrap_or_default())
}

/// `ObjectMeta` as the API server writes it, but for the managed fields.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    managed_fields: Option<Vec<Writer>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

/// Of a managed fields entry, who wrote it and how (not what: its field set is skipped).
#[derive(Deserialize)]
struct Writer {
    manager: Option<String>,
    operation: Option<String>,
    subresource: Option<String>,
}

impl From<Meta> for ObjectMeta {
    /// An `ObjectMeta` literal without `..`: a field k8s-openapi adds does not compile until it
    /// is read here.
    fn from(m: Meta) -> ObjectMeta {
        let managed_fields = m.managed_fields.map(|entries| {
            (entries.into_iter())
                .map(|w| ManagedFieldsEntry {
                    manager: w.manager,
                    operation: w.operation,
                    subresource: w.subresource,
                    ..ManagedFieldsEntry::default()
                })
                .collect()
        });
        ObjectMeta {
            annotations: m.annotations,
            creation_timestamp: m.creation_timestamp,
            deletion_grace_period_seconds: m.deletion_grace_period_seconds,
            deletion_timestamp: m.deletion_timestamp,
            finalizers: m.finalizers,
            generate_name: m.generate_name,
            generation: m.generation,
            labels: m.labels,
            managed_fields,
            name: m.name,
            namespace: m.namespace,
            owner_references: m.owner_references,
            resource_version: m.resource_version,
            self_link: m.self_link,
            uid: m.uid,
        }
    }
}

/// Of a workload's spec, the sha its pod template is annotated with.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct WorkloadSpec {
    #[serde(default, rename = "template")]
    template: PodTemplate,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
struct PodTemplate {
    #[serde(default)]
    metadata: PodTemplateMeta,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
struct PodTemplateMeta {
    /// The `preview.dev/sha` annotation, the only one kept (a map would cost 0.5 KB).
    #[serde(default, rename = "annotations", deserialize_with = "sha_annotation")]
    sha: Option<String>,
}

impl CachedDeployment {
    /// The headSha the pod template runs, from its annotation.
    pub fn template_sha(&self) -> Option<&str> {
        self.spec.as_ref()?.template.metadata.sha.as_deref()
    }
}

/// Reads an annotation map (or null), keeping the value of [`SHA`] only.
fn sha_annotation<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct OnlySha;
    impl<'de> Visitor<'de> for OnlySha {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of annotations")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut sha = None;
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key == SHA {
                    sha = Some(map.next_value::<String>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(sha)
        }
    }
    d.deserialize_any(OnlySha)
}

/// Each cached type answers to the API of the kind it caches.
macro_rules! cached_as {
    ($cached:ty, $kind:ty) => {
        impl Resource for $cached {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::kind(dt)
            }
            fn group(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::group(dt)
            }
            fn version(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::version(dt)
            }
            fn plural(dt: &()) -> Cow<'_, str> {
                <$kind as Resource>::plural(dt)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

cached_as!(CachedDeployment, Deployment);
cached_as!(CachedStatefulSet, StatefulSet);
cached_as!(CachedJob, Job);
cached_as!(CachedPod, Pod);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::PartialObjectMeta;
    use serde_json::json;

    #[test]
    fn a_deployment_is_read_without_its_pod_spec_and_keeps_the_sha() {
        let d: CachedDeployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "pr-1", "generation": 3},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"},
                             "annotations": {"other": "x", "preview.dev/sha": "abc1234", "z": {"nested": 1}}},
                "spec": {"containers": [{"name": "web", "image": "ghcr.io/acme/web:1"}]}}},
            "status": {"observedGeneration": 3, "availableReplicas": 2}
        }))
        .expect("a Deployment reads as a CachedDeployment");
        assert_eq!(d.template_sha(), Some("abc1234"));
        assert_eq!(d.status.and_then(|s| s.available_replicas), Some(2));
        let bare: CachedDeployment = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"template": {"metadata": {"annotations": null}}}
        }))
        .expect("no annotations");
        assert_eq!(bare.template_sha(), None);
        assert_eq!(
            CachedDeployment::url_path(&(), Some("pr-1")),
            Deployment::url_path(&(), Some("pr-1"))
        );
        assert_eq!(CachedJob::url_path(&(), None), Job::url_path(&(), None));
    }

    #[test]
    fn metadata_is_read_whole_but_for_the_field_sets_of_its_managed_fields() {
        use k8s_openapi::api::core::v1::Service;
        let object = json!({
            "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": {
                "name": "web", "namespace": "pr-1", "uid": "u-1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2026-12-07T00:00:00Z",
                "labels": {"app.kubernetes.io/managed-by": "preview-operator"},
                "annotations": {"preview.dev/applied-hash": "h1"},
                "finalizers": ["f"],
                "ownerReferences": [{"apiVersion": "v1", "kind": "Namespace", "name": "pr-1", "uid": "n-1"}],
                "managedFields": [
                    {"manager": "preview-operator", "operation": "Update", "apiVersion": "v1",
                     "time": "2026-12-07T00:00:00Z", "fieldsType": "FieldsV1",
                     "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}},
                    {"manager": "kube-controller-manager", "operation": "Update",
                     "subresource": "status", "fieldsV1": {"f:status": {}}}
                ]
            }
        });
        let full: PartialObjectMeta<Service> =
            serde_json::from_value(object.clone()).expect("PartialObjectMeta");
        let cached: CachedMeta<Service> = serde_json::from_value(object).expect("CachedMeta");
        let writers = |m: &ObjectMeta| -> Vec<(Option<String>, Option<String>, Option<String>)> {
            (m.managed_fields.iter().flatten())
                .map(|e| {
                    (
                        e.manager.clone(),
                        e.operation.clone(),
                        e.subresource.clone(),
                    )
                })
                .collect()
        };
        assert_eq!(writers(&cached.metadata), writers(&full.metadata));
        assert!((cached.metadata.managed_fields.iter().flatten()).all(|e| e.fields_v1.is_none()));
        let mut expected = full.metadata.clone();
        expected.managed_fields = cached.metadata.managed_fields.clone();
        assert_eq!(cached.metadata, expected);
        assert_eq!(
            CachedMeta::<Service>::url_path(&(), Some("pr-1")),
            Service::url_path(&(), Some("pr-1"))
        );
        assert!(CachedMeta::<Service>::metadata_api());
        let bare: CachedMeta<Service> =
            serde_json::from_value(json!({"metadata": null})).expect("null metadata");
        assert_eq!(bare.metadata, ObjectMeta::default());
    }

    #[test]
    fn a_pod_is_read_without_its_spec_and_keeps_what_says_it_is_stuck() {
        let pod: Pod = serde_json::from_value::<CachedPod>(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "pr-1", "annotations": {"preview.dev/sha": "abc1234"}},
            "spec": {"containers": [{"name": "web", "image": "ghcr.io/acme/web:1"}], "nodeName": "n1"},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "web", "image": "ghcr.io/acme/web:1", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}
        }))
        .expect("a Pod reads as a CachedPod")
        .into();
        assert!(pod.spec.is_none());
        assert_eq!(
            super::super::pods::pod_problem([&pod]).map(|p| p.reason),
            Some(crate::api::Reason::ImagePullBackOff)
        );
        assert_eq!(
            CachedPod::url_path(&(), Some("pr-1")),
            Pod::url_path(&(), Some("pr-1"))
        );
    }
}
