//! PURE: a PreviewEnvironment's spec plus the operator's config become the objects that should
//! exist. No client, no clock: everything here is tested as plain functions.
//!
//! This module holds what every builder shares (the [`Preview`], the rollout [`Stage`], object
//! metadata, hardened pod settings, the applied fingerprint) and [`environment`], which assembles
//! one object family per file: `namespace` (the namespace, its hardening, bindings and copied
//! Secrets/ConfigMaps), `dependencies`, `services` (Deployments, Services, Ingresses, URLs) and
//! `jobs` (setup and test Jobs).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapKeySelector, EnvVar, EnvVarSource, LimitRange, LocalObjectReference,
    PodSecurityContext, ResourceQuota, SeccompProfile, SecretKeySelector, SecurityContext, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::delivery::{HelmReleaseSpec, KustomizationSpec};
use crate::api::template::{DependencySpec, SetupSpec};
use crate::api::{self, PreviewEnvironmentSpec};
use crate::config::Config;
use crate::naming::{
    APPLIED_HASH, COMPONENT, OWNER_REF, Owner, PART_OF, POD_TEMPLATE, PreviewKey, RUN_SPEC,
};
use crate::template::Rendered;

mod dependencies;
#[cfg(test)]
mod fixtures;
pub mod flux;
mod jobs;
mod namespace;
mod services;

pub use dependencies::{claim_name, dependency_selector};
pub use jobs::{job_name, setup_job, test_environment, test_job};
pub use namespace::{
    HARDENING_NAME, LOG_READER_NAME, PLATFORM_SECRETS, VIEWERS_NAME, config_map_copy, namespace,
    secret_copy,
};
pub use services::{
    WAKE_PORT, WAKE_SERVICE, ingress_host, preview_url, service_selector, service_url,
};

use dependencies::{dependency, dependency_service};
use namespace::{limit_range, log_reader, network_policy, resource_quota, viewers};
use services::{deployment, ingress, service, wake_service};

/// `preview.dev/component` value of service children.
pub const COMPONENT_SERVICE: &str = "service";
/// `preview.dev/component` value of test Jobs.
pub const COMPONENT_TEST: &str = "test";
/// `preview.dev/component` value of dependency children.
pub const COMPONENT_DEPENDENCY: &str = "dependency";
/// `preview.dev/component` value of setup Jobs.
pub const COMPONENT_SETUP: &str = "setup";
/// `preview.dev/component` value of the Flux objects that deliver a preview.
pub const COMPONENT_DELIVERY: &str = "delivery";

/// What the builders need to know about one PreviewEnvironment.
#[derive(Clone, Debug)]
pub struct Preview<'a> {
    /// The spec as rolled out: with its template's services and tests when it names one.
    pub spec: &'a PreviewEnvironmentSpec,
    /// The template's backing services (none without a template).
    pub dependencies: &'a [DependencySpec],
    /// The template's setup Jobs (none without a template).
    pub setup: &'a [SetupSpec],
    pub owner: Owner,
    /// The preview namespace.
    pub namespace: String,
    /// The `preview.dev/rerun-tests` value the test Jobs run for, if any.
    pub rerun_tests: Option<&'a str>,
    /// Asleep: workloads at zero replicas, exposed hosts routed to the wake listener.
    pub asleep: bool,
    /// The template's Helm charts, delivered through Flux.
    pub helm_releases: &'a [HelmReleaseSpec],
    /// The template's kustomizations, delivered through Flux.
    pub kustomizations: &'a [KustomizationSpec],
}

impl<'a> Preview<'a> {
    /// The preview of `rendered`, owned by `owner`, in the preview namespace `namespace`.
    pub fn new(
        rendered: &'a Rendered,
        owner: Owner,
        namespace: String,
        rerun_tests: Option<&'a str>,
    ) -> Self {
        Preview {
            spec: &rendered.spec,
            dependencies: &rendered.dependencies,
            setup: &rendered.setup,
            owner,
            namespace,
            rerun_tests,
            asleep: false,
            helm_releases: &rendered.helm_releases,
            kustomizations: &rendered.kustomizations,
        }
    }

    /// Whether Flux delivers part of the preview.
    pub fn delivers_through_flux(&self) -> bool {
        !self.helm_releases.is_empty() || !self.kustomizations.is_empty()
    }
}

/// How far a preview's rollout may go: its dependencies come first, then its setup Jobs, then
/// its services (which are left as they are until then, so a new sha never rolls out ahead of
/// its migrations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Waiting for the dependencies to be ready.
    Dependencies,
    /// Dependencies ready; waiting for the setup Jobs at headSha to succeed.
    Setup,
    /// Setup done: the services roll out and the tests run.
    Services,
}

/// Objects of one kind that should exist, and whether the preview's other objects of that
/// kind should go (`false` while the services are held back: they stay as they are).
#[derive(Clone, Debug)]
pub struct Desired<K> {
    pub objects: Vec<K>,
    pub exclusive: bool,
    /// Names left as they are: neither applied nor deleted.
    pub held: BTreeSet<String>,
}

impl<K> Desired<K> {
    /// Exactly these.
    pub fn exactly(objects: Vec<K>) -> Self {
        Desired {
            objects,
            exclusive: true,
            held: BTreeSet::new(),
        }
    }

    /// These, and leave the others alone.
    pub fn also(objects: Vec<K>) -> Self {
        Desired {
            objects,
            exclusive: false,
            held: BTreeSet::new(),
        }
    }
}

impl<K: kube::Resource> Desired<K> {
    /// These, but the ones named in `held` left as they are.
    pub fn holding(mut self, held: &BTreeSet<String>) -> Self {
        self.hold(held);
        self
    }

    /// Leaves the ones named in `held` as they are (neither applied nor deleted).
    pub fn hold(&mut self, held: &BTreeSet<String>) {
        let (kept, objects): (Vec<K>, Vec<K>) = std::mem::take(&mut self.objects)
            .into_iter()
            .partition(|o| o.meta().name.as_ref().is_some_and(|n| held.contains(n)));
        self.held
            .extend(kept.iter().filter_map(|o| o.meta().name.clone()));
        self.objects = objects;
    }
}

/// Everything in a preview namespace except the test Jobs (which wait for the services); the
/// namespace itself is [`namespace()`], created first.
#[derive(Clone, Debug)]
pub struct Environment {
    pub network_policy: NetworkPolicy,
    pub quota: ResourceQuota,
    pub limit_range: LimitRange,
    /// One per dependency of the template.
    pub stateful_sets: Vec<StatefulSet>,
    pub deployments: Desired<Deployment>,
    /// The dependencies' and the services'.
    pub services: Desired<Service>,
    pub ingresses: Desired<Ingress>,
    /// The class's viewers get the built-in `view` role here (none: no binding), and the
    /// operator the chart's log reader role (`--log-reader-role`; none without it).
    pub role_bindings: Vec<RoleBinding>,
    /// Deployments and StatefulSets left as they run (neither applied nor deleted): a fleet
    /// change waiting for its rollout slot (`rollouts`).
    pub held: BTreeSet<String>,
    /// What Flux delivers, and the identity it applies with.
    pub delivery: flux::Delivery,
}

impl Environment {
    /// Leaves the workloads `names` as they run.
    pub fn hold(&mut self, names: BTreeSet<String>) {
        self.held.extend(names);
    }
}

impl Preview<'_> {
    fn labels(&self) -> BTreeMap<String, String> {
        self.owner.labels()
    }

    fn owner_annotation(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(
            OWNER_REF.to_string(),
            PreviewKey::from(&self.owner).to_string(),
        )])
    }

    fn child_meta(&self, name: &str, component: &str, part: &str) -> ObjectMeta {
        let mut labels = self.labels();
        labels.insert(COMPONENT.to_string(), component.to_string());
        labels.insert(PART_OF.to_string(), part.to_string());
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            annotations: Some(self.owner_annotation()),
            ..ObjectMeta::default()
        }
    }
}

/// The desired environment at `stage`: hardening, a StatefulSet and a Service per dependency,
/// and from [`Stage::Services`] on one Deployment (+ Service, + Ingress) per service.
pub fn environment(preview: &Preview<'_>, config: &Config, stage: Stage) -> Environment {
    let services = &preview.spec.services;
    let dependency_services = preview
        .dependencies
        .iter()
        .map(|d| dependency_service(preview, d));
    let (deployments, services, ingresses) = if stage == Stage::Services {
        (
            Desired::exactly(
                services
                    .iter()
                    .map(|s| deployment(preview, config, s))
                    .collect(),
            ),
            Desired::exactly(
                dependency_services
                    .chain(services.iter().filter_map(|s| service(preview, s)))
                    .chain(wake_service(preview, config))
                    .collect(),
            ),
            Desired::exactly(
                services
                    .iter()
                    .filter_map(|s| ingress(preview, config, s))
                    .collect(),
            ),
        )
    } else {
        (
            Desired::also(Vec::new()),
            Desired::also(dependency_services.collect()),
            Desired::also(Vec::new()),
        )
    };
    Environment {
        role_bindings: viewers(preview, config)
            .into_iter()
            .chain(log_reader(preview, config))
            .chain(flux::applier_binding(preview, config))
            .collect(),
        delivery: flux::delivery(preview, config, stage),
        network_policy: network_policy(preview, config),
        quota: resource_quota(preview, config),
        limit_range: limit_range(preview, config),
        stateful_sets: preview
            .dependencies
            .iter()
            .map(|d| dependency(preview, config, d))
            .collect(),
        deployments,
        services,
        ingresses,
        held: BTreeSet::new(),
    }
}

/// The image pull secrets pods name (their copies in the preview namespace).
fn pull_secrets(config: &Config) -> Option<Vec<LocalObjectReference>> {
    non_empty(
        config
            .image_pull_secrets
            .iter()
            .map(|name| LocalObjectReference { name: name.clone() })
            .collect(),
    )
}

/// A container that passes the `restricted` Pod Security Standard.
fn restricted_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Capabilities::default()
        }),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

fn restricted_pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn env_vars(env: &[api::EnvVar]) -> Vec<EnvVar> {
    env.iter()
        .map(|e| match &e.value_from {
            // The template checked that it declares the Secret or ConfigMap named here; the
            // copy in the preview namespace has the same name.
            Some(from) => EnvVar {
                name: e.name.clone(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: from.secret_key_ref.as_ref().map(|r| SecretKeySelector {
                        name: r.name.clone(),
                        key: r.key.clone(),
                        optional: None,
                    }),
                    config_map_key_ref: from.config_map_key_ref.as_ref().map(|r| {
                        ConfigMapKeySelector {
                            name: r.name.clone(),
                            key: r.key.clone(),
                            optional: None,
                        }
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            None => EnvVar {
                name: e.name.clone(),
                value: Some(e.value.clone()),
                ..EnvVar::default()
            },
        })
        .collect()
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn non_empty_map(m: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then_some(m)
}

/// Fingerprint of an object as the operator would apply it.
pub fn fingerprint<T: Serialize>(object: &T) -> String {
    // serde_json writes struct fields in declaration order and BTreeMaps sorted, so equal
    // objects always serialize alike.
    let bytes = serde_json::to_vec(object).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().take(10).map(|b| format!("{b:02x}")).collect()
}

/// Marks a workload with the fingerprint of its pod template ([`POD_TEMPLATE`]): what its
/// pods run, apart from how many there are.
pub(super) fn mark_pod_template<T: Serialize>(meta: &mut ObjectMeta, template: &T) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE.to_string(), fingerprint(template));
}

/// Marks a test or setup Job with the fingerprint of its step's own spec ([`RUN_SPEC`]).
pub(super) fn mark_run_spec<T: Serialize>(meta: &mut ObjectMeta, step: &T) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(RUN_SPEC.to_string(), fingerprint(step));
}

/// Stamps `object`'s metadata with its own fingerprint (computed without the stamp).
pub fn stamp<T: Serialize + kube::Resource>(mut object: T) -> T {
    if let Some(annotations) = object.meta_mut().annotations.as_mut() {
        annotations.remove(APPLIED_HASH);
    }
    let hash = fingerprint(&object);
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(APPLIED_HASH.to_string(), hash);
    object
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::ResourceExt;

    use super::fixtures::{from_template, preview, shop, spec, with_ingress};
    use super::*;
    use crate::naming;

    #[test]
    fn every_child_carries_the_ownership_labels_and_owner_annotation() {
        let spec = spec();
        let p = preview(&spec);
        let env = environment(&p, &with_ingress(false), Stage::Services);
        let ns = namespace(&p, &with_ingress(false));
        let metas = std::iter::once(&ns.metadata)
            .chain([
                &env.network_policy.metadata,
                &env.quota.metadata,
                &env.limit_range.metadata,
            ])
            .chain(env.deployments.objects.iter().map(|d| &d.metadata))
            .chain(env.services.objects.iter().map(|s| &s.metadata))
            .chain(env.ingresses.objects.iter().map(|i| &i.metadata));
        for meta in metas {
            let labels = meta.labels.clone().unwrap_or_default();
            assert_eq!(
                labels.get(naming::OWNER_UID).map(String::as_str),
                Some("uid-1")
            );
            assert_eq!(
                labels.get(naming::MANAGED_BY).map(String::as_str),
                Some("preview-operator")
            );
            assert_eq!(
                labels.get(naming::REPOSITORY).map(String::as_str),
                Some("acme.shop")
            );
            let annotations = meta.annotations.clone().unwrap_or_default();
            assert_eq!(annotations[OWNER_REF], "team-shop/shop-pr-123");
        }
    }

    #[test]
    fn containers_comply_with_restricted() {
        let spec = spec();
        let p = preview(&spec);
        let env = environment(&p, &Config::default(), Stage::Services);
        let job = test_job(&p, &Config::default(), &spec.tests[0]);
        let pods = env
            .deployments
            .objects
            .iter()
            .map(|d| d.spec.clone().expect("spec").template)
            .chain([job.spec.expect("spec").template]);
        for pod in pods {
            let pod = pod.spec.expect("pod spec");
            assert_eq!(
                pod.security_context.and_then(|s| s.run_as_non_root),
                Some(true)
            );
            for c in pod.containers {
                let sc = c.security_context.expect("security context");
                assert_eq!(sc.allow_privilege_escalation, Some(false));
                assert_eq!(sc.run_as_non_root, Some(true));
                assert_eq!(
                    sc.capabilities.and_then(|c| c.drop),
                    Some(vec!["ALL".into()])
                );
                assert_eq!(
                    sc.seccomp_profile.map(|p| p.type_).as_deref(),
                    Some("RuntimeDefault")
                );
            }
        }
    }

    #[test]
    fn fingerprints_change_with_content_only() {
        let spec = spec();
        let p = preview(&spec);
        let a = stamp(
            environment(&p, &Config::default(), Stage::Services)
                .deployments
                .objects[0]
                .clone(),
        );
        let b = stamp(
            environment(&p, &Config::default(), Stage::Services)
                .deployments
                .objects[0]
                .clone(),
        );
        assert_eq!(a, b);
        let mut changed = spec.clone();
        changed.head_sha = "0000000".into();
        let c = stamp(
            environment(&preview(&changed), &Config::default(), Stage::Services)
                .deployments
                .objects[0]
                .clone(),
        );
        let hash = |d: &Deployment| {
            d.metadata.annotations.clone().unwrap_or_default()[APPLIED_HASH].clone()
        };
        assert_ne!(hash(&a), hash(&c));
        // Stamping twice does not fold the old stamp into the new one.
        assert_eq!(hash(&stamp(a.clone())), hash(&a));
    }

    #[test]
    fn services_are_held_back_until_setup_is_done() {
        let rendered = shop();
        let p = from_template(&rendered);
        for stage in [Stage::Dependencies, Stage::Setup] {
            let env = environment(&p, &Config::default(), stage);
            assert_eq!(env.stateful_sets.len(), 2, "{stage:?}");
            assert!(env.deployments.objects.is_empty() && !env.deployments.exclusive);
            assert!(env.ingresses.objects.is_empty() && !env.ingresses.exclusive);
            let names: Vec<_> = env.services.objects.iter().map(|s| s.name_any()).collect();
            assert_eq!(
                names,
                vec!["db", "cache"],
                "only the dependencies' Services"
            );
            assert!(
                !env.services.exclusive,
                "the services' own stay as they are"
            );
        }
        let env = environment(&p, &Config::default(), Stage::Services);
        assert!(env.deployments.exclusive && env.deployments.objects.len() == 1);
    }
}
