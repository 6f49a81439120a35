//! What the caches keep of each object: only what the operator reads. At 1000 previews, eight
//! children each, the caches are most of the operator's memory, so every kind is pruned as
//! its watch delivers it (`children::watch` names the pruning per kind).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::apply::has_created_entry;
use super::cached::CachedDeployment;
use crate::api::PreviewEnvironment;
use crate::flux::{GitRepository, HelmRelease, HelmRepository, Kustomization, OCIRepository};
use crate::naming::{self, APPLIED_HASH, OWNER_REF};

/// Where client-side `kubectl apply` keeps the last spec it applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A cached preview: without managed fields (a third of a stored object) or the copy of the
/// spec `kubectl apply` keeps in an annotation (CI applies previews so; the operator never
/// reads it).
pub fn preview(pe: &mut PreviewEnvironment) {
    no_managed_fields(pe);
    if let Some(annotations) = pe.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The cache-only annotation of a child the operator created and has not applied since (its
/// fields are under the create's `Update` entry, so the next apply must `apply::hand_over` first).
/// A key in the annotation map a cached child has anyway, instead of keeping that managed
/// fields entry (about 250 bytes a child: at 1000 previews, eight children each, 2 MB). Never
/// sent to the API server; one that comes from it is dropped before the flag is set
/// ([`slim`]).
pub const CREATED: &str = "preview.dev/cached-created";

/// Whether a cached object carries the [`CREATED`] flag.
pub fn created<K: Keeps>(o: &K) -> bool {
    o.kept(CREATED).is_some()
}

/// The labels and annotations a cached child keeps (its kind's list below, and the
/// [`CREATED`] flag), in one allocation: keys from the list, values boxed. A label or
/// annotation map costs a 0.5 KiB node however few entries it has; these are a few dozen
/// bytes. At 1000 previews a thousand maps are half a MiB, and most previews have seven
/// such children.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kept(Box<[(&'static str, Box<str>)]>);

impl Kept {
    /// The value kept under `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        (self.0.iter()).find(|(k, _)| *k == key).map(|(_, v)| &**v)
    }

    /// Moves the labels and annotations of `meta` named in `keep` out of its maps (which it
    /// drops), with the [`CREATED`] flag when `created`. A label wins over an annotation of
    /// the same key, as [`Keeps::kept`] reads them.
    fn take(meta: &mut ObjectMeta, keep: &'static [&'static str], created: bool) -> Kept {
        let (mut labels, mut annotations) = (
            meta.labels.take().unwrap_or_default(),
            meta.annotations.take().unwrap_or_default(),
        );
        let kept = (keep.iter())
            .filter_map(|&key| {
                let value = labels.remove(key).or_else(|| annotations.remove(key))?;
                Some((key, value.into_boxed_str()))
            })
            .chain(created.then(|| (CREATED, Box::default())));
        Kept(kept.collect())
    }
}

/// A kind the caches keep slim: where its kept labels and annotations are, and how they are
/// read. Every reader of a cached child's labels or annotations goes through
/// [`Keeps::kept`]: for a compacted child (`compact` is `Some`) its maps are empty.
pub trait Keeps: Resource {
    /// Where the kind keeps what it keeps compactly; `None`: in its annotation map.
    fn compact(&self) -> Option<&Kept> {
        None
    }
    fn compact_mut(&mut self) -> Option<&mut Kept> {
        None
    }

    /// Label or annotation `key`: as kept compactly, else from the maps (an object read
    /// whole, a test fixture, a kind that keeps its maps).
    fn kept(&self, key: &str) -> Option<&str> {
        if let Some(value) = self.compact().and_then(|k| k.get(key)) {
            return Some(value);
        }
        let meta = self.meta();
        (meta.labels.as_ref().and_then(|l| l.get(key)))
            .or_else(|| meta.annotations.as_ref()?.get(key))
            .map(String::as_str)
    }
}

// What the caches keep of labels and annotations, by kind: only what the operator reads (a
// kept entry costs about 100 bytes, and a map of more than eleven a second 0.5 KB node; at
// 1000 previews, eight children each, the maps were most of the operator's memory). The
// owner's UID says whose a child is, the applied fingerprint whether it is in place.
/// Most children.
pub(super) const OWNED: &[&str] = &[naming::OWNER_UID, APPLIED_HASH];
/// Deployments and StatefulSets: what their pod template runs (`rollouts`).
pub(super) const WORKLOAD: &[&str] = &[naming::OWNER_UID, APPLIED_HASH, naming::POD_TEMPLATE];
/// Jobs: setup or test, and what a test ran against and why (`jobs`, `observe`).
pub(super) const JOB: &[&str] = &[
    naming::OWNER_UID,
    APPLIED_HASH,
    naming::COMPONENT,
    naming::RUN_SPEC,
    naming::TESTED,
    naming::RUN_REASON,
];
/// Ingresses: the host, and whose it is for the wake server, which has no namespace cache.
pub(super) const INGRESS: &[&str] = &[naming::OWNER_UID, APPLIED_HASH, naming::HOST, OWNER_REF];
/// Preview namespaces: whose they are, and what a sleeping Flux preview's workloads ran
/// (`delivered`). Compacted like the children: the two maps were 1 KiB of a namespace's 1.5.
/// The watch selects them by the managed-by label, and nobody but the operator writes them.
pub(super) const NAMESPACE: &[&str] = &[
    naming::MANAGED_BY,
    naming::OWNER_UID,
    naming::OWNER_NAMESPACE,
    OWNER_REF,
    APPLIED_HASH,
    naming::REPLICAS_BEFORE_SLEEP,
];

/// What every cached child keeps of its metadata: the labels and annotations in `keep`
/// (compacted where the kind can, [`Kept`]), and of the managed fields (most of an object's
/// metadata, and never read here) only whether the operator created the object, as the
/// [`CREATED`] flag.
pub(super) fn slim<K: Keeps>(o: &mut K, keep: &'static [&'static str], prune: fn(&mut K)) {
    let created = has_created_entry(o.managed_fields());
    no_managed_fields(o);
    if o.compact().is_some() {
        let kept = Kept::take(o.meta_mut(), keep, created);
        if let Some(compact) = o.compact_mut() {
            *compact = kept;
        }
    } else {
        fold_labels(o);
        in_maps(o, keep, created);
    }
    prune(o);
}

/// Keeps the labels and annotations in `keep` where they are, and the flag.
fn in_maps<K: Resource>(o: &mut K, keep: &[&str], created: bool) {
    o.labels_mut().retain(|k, _| keep.contains(&k.as_str()));
    // `keep` never names the flag, so one set in the cluster is dropped here.
    o.annotations_mut()
        .retain(|k, _| keep.contains(&k.as_str()));
    if created {
        o.annotations_mut()
            .insert(CREATED.to_string(), String::new());
    }
}

/// Flux's kinds keep their (folded) maps: a few per preview that delivers through Flux.
impl Keeps for GitRepository {}
impl Keeps for HelmRepository {}
impl Keeps for OCIRepository {}
impl Keeps for HelmRelease {}
impl Keeps for Kustomization {}

/// Drops the managed fields, buffer and all (`clear()` would keep the buffer: about half a
/// KiB for a preview's few entries).
pub(super) fn no_managed_fields<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// Keeps nothing extra.
pub(super) fn keep_all<K>(_: &mut K) {}

/// A Deployment as the operator reads it: of its status conditions only a replica failure and
/// a rollout that stopped progressing (`observe::model::service_state`). The healthy
/// `Available` and `Progressing` conditions, two messages and four timestamps on every
/// Deployment, were a third of a cached Deployment; a change of their wording alone no longer
/// wakes the preview either.
pub(super) fn prune_deployment(o: &mut CachedDeployment) {
    let Some(status) = o.status.as_mut() else {
        return;
    };
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| {
            (c.type_ == "ReplicaFailure" && c.status == "True")
                || (c.type_ == "Progressing" && c.status == "False")
        });
        for c in conditions.iter_mut() {
            c.last_update_time = None;
        }
    }
    if status.conditions.as_ref().is_some_and(Vec::is_empty) {
        status.conditions = None;
    }
}

/// A HelmRelease as the operator reads it: its status and newest release, not its values.
pub(super) fn prune_release(o: &mut HelmRelease) {
    fold_labels(o);
    o.spec.values = None;
    o.spec.values_from.clear();
    if let Some(status) = o.status.as_mut() {
        status.history.truncate(1);
    }
}

/// A Kustomization as the operator reads it: its status, not its images and substitutions.
pub(super) fn prune_kustomization(o: &mut Kustomization) {
    fold_labels(o);
    o.spec.images.clear();
    o.spec.post_build = None;
}

/// A cached child that keeps its maps (Flux's kinds) keeps one instead of two: the labels it
/// keeps move into its annotations (a map costs half a KiB even with one entry). Read them
/// with [`label`]. Namespaces keep their labels where they are.
pub(super) fn fold_labels<K: Resource>(o: &mut K) {
    if let Some(labels) = o.meta_mut().labels.take() {
        o.annotations_mut().extend(labels);
    }
}

/// Label `key` of a child, wherever the cache keeps it ([`Keeps::kept`]).
pub fn label<'a, K: Keeps>(o: &'a K, key: &str) -> Option<&'a str> {
    o.kept(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::cached::CachedJob;
    use std::collections::BTreeMap;

    #[test]
    fn a_cached_deployment_keeps_only_the_conditions_that_say_a_rollout_failed() {
        use serde_json::json;
        let read = |conditions: serde_json::Value| {
            let mut d: CachedDeployment = serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "status": {"observedGeneration": 2, "availableReplicas": 1, "conditions": conditions}
            }))
            .expect("a Deployment");
            prune_deployment(&mut d);
            d.status.expect("status")
        };
        let healthy = read(json!([
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability.",
             "lastUpdateTime": "2026-12-07T00:00:00Z", "lastTransitionTime": "2026-12-07T00:00:00Z"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
             "message": "ReplicaSet \"web-5d9c\" has successfully progressed.",
             "lastUpdateTime": "2026-12-07T00:00:00Z", "lastTransitionTime": "2026-12-07T00:00:00Z"}
        ]));
        assert_eq!(healthy.conditions, None);
        assert_eq!(healthy.available_replicas, Some(1));
        let failing = read(json!([
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": "ReplicaSet \"web-5d9c\" has timed out progressing.",
             "lastUpdateTime": "2026-12-07T00:00:00Z"},
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
             "message": "pods \"web-5d9c-x\" is forbidden: exceeded quota: preview"}
        ]));
        let kept: Vec<_> = (conditions_of(&failing).iter())
            .map(|c| (c.type_.as_str(), c.reason.as_deref(), c.message.is_some()))
            .collect();
        assert_eq!(
            kept,
            [
                ("Progressing", Some("ProgressDeadlineExceeded"), true),
                ("ReplicaFailure", Some("FailedCreate"), true)
            ]
        );
        assert!(
            conditions_of(&failing)
                .iter()
                .all(|c| c.last_update_time.is_none())
        );
    }

    fn conditions_of(
        s: &k8s_openapi::api::apps::v1::DeploymentStatus,
    ) -> &[k8s_openapi::api::apps::v1::DeploymentCondition] {
        s.conditions.as_deref().unwrap_or_default()
    }

    /// A Job's metadata with these labels and annotations.
    fn job_with(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> CachedJob {
        let map = |entries: &[(&str, &str)]| {
            Some(
                (entries.iter())
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let mut job = CachedJob::default();
        job.metadata.labels = map(labels);
        job.metadata.annotations = map(annotations);
        job
    }

    #[test]
    fn a_cached_child_keeps_its_listed_labels_and_annotations_compactly_and_they_still_read() {
        let mut job = job_with(
            &[(naming::OWNER_UID, "uid-1"), ("app", "web")],
            &[
                (APPLIED_HASH, "h1"),
                (naming::RUN_REASON, "NewSha"),
                ("note", "x"),
            ],
        );
        assert_eq!(label(&job, naming::OWNER_UID), Some("uid-1"), "read whole");
        slim(&mut job, JOB, keep_all);
        assert_eq!(job.metadata.labels, None, "no map is left");
        assert_eq!(job.metadata.annotations, None);
        assert_eq!(label(&job, naming::OWNER_UID), Some("uid-1"));
        assert_eq!(job.kept(APPLIED_HASH), Some("h1"));
        assert_eq!(job.kept(naming::RUN_REASON), Some("NewSha"));
        assert_eq!(job.kept("app"), None, "not on the kind's list");
        assert_eq!(job.kept("note"), None);
        assert!(!created(&job));
    }

    #[test]
    fn a_label_is_read_before_an_annotation_of_the_same_key_whole_or_compacted() {
        let mut job = job_with(
            &[(naming::OWNER_UID, "the-label")],
            &[(naming::OWNER_UID, "an-annotation")],
        );
        assert_eq!(label(&job, naming::OWNER_UID), Some("the-label"));
        slim(&mut job, OWNED, keep_all);
        assert_eq!(label(&job, naming::OWNER_UID), Some("the-label"));
    }

    #[test]
    fn a_kind_that_keeps_its_maps_keeps_one_and_its_labels_still_read() {
        let mut release = HelmRelease::default();
        release.metadata.labels = Some(BTreeMap::from([(
            naming::OWNER_UID.to_string(),
            "uid-1".to_string(),
        )]));
        release.metadata.annotations = Some(BTreeMap::from([
            (APPLIED_HASH.to_string(), "h1".to_string()),
            ("note".to_string(), "x".to_string()),
        ]));
        slim(&mut release, OWNED, prune_release);
        assert!(release.metadata.labels.is_none());
        assert_eq!(label(&release, naming::OWNER_UID), Some("uid-1"));
        assert_eq!(release.kept(APPLIED_HASH), Some("h1"));
        assert_eq!(release.kept("note"), None);
    }

    #[test]
    fn a_cached_child_keeps_whether_the_operator_created_it_as_a_flag_not_its_managed_fields() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let entry = |manager: &str, operation: &str| ManagedFieldsEntry {
            manager: Some(manager.to_string()),
            operation: Some(operation.to_string()),
            ..ManagedFieldsEntry::default()
        };
        let child = |entries: Vec<ManagedFieldsEntry>, annotations: &[&str]| {
            let annotations: Vec<_> = annotations.iter().map(|k| (*k, "x")).collect();
            let mut job = job_with(&[], &annotations);
            job.metadata.managed_fields = Some(entries);
            slim(&mut job, OWNED, keep_all);
            job
        };
        let new = child(vec![entry(naming::MANAGER, "Update")], &[APPLIED_HASH]);
        assert!(new.metadata.managed_fields.is_none());
        assert!(created(&new));
        assert_eq!(new.kept(APPLIED_HASH), Some("x"));
        let applied = child(vec![entry(naming::MANAGER, "Apply")], &[APPLIED_HASH]);
        assert!(!created(&applied));
        // The flag is the cache's own: one set in the cluster says nothing.
        let forged = child(vec![entry("someone", "Update")], &[CREATED, "other"]);
        assert!(!created(&forged));
        assert_eq!(forged.compact, Kept::default());
        // A preview namespace is compacted too: its owner and the flag, no maps.
        let mut ns =
            crate::controller::cached::CachedMeta::<k8s_openapi::api::core::v1::Namespace>::default(
            );
        ns.metadata.managed_fields = Some(vec![entry(naming::MANAGER, "Update")]);
        ns.metadata.labels = Some(BTreeMap::from([(
            naming::OWNER_UID.to_string(),
            "uid-1".to_string(),
        )]));
        slim(&mut ns, NAMESPACE, keep_all);
        assert!(created(&ns));
        assert_eq!(ns.kept(naming::OWNER_UID), Some("uid-1"));
        assert_eq!((ns.metadata.labels, ns.metadata.annotations), (None, None));
    }
}
