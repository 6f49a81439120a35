//! PURE: a PreviewEnvironment's spec plus the operator's config become the objects that should
//! exist. No client, no clock: everything here is tested as plain functions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapKeySelector, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, HTTPGetAction, LimitRange, LimitRangeItem, LimitRangeSpec,
    LocalObjectReference, Namespace, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceQuota, ResourceQuotaSpec,
    SeccompProfile, Secret, SecretKeySelector, SecurityContext, Service, ServicePort,
    ServiceSpec as CoreServiceSpec, TCPSocketAction, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IPBlock, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, NetworkPolicy, NetworkPolicyEgressRule,
    NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    ServiceBackendPort,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::template::{DependencySpec, RunOn, SetupSpec};
use crate::api::{self, PreviewEnvironmentSpec, ServiceSpec, TestSpec, parse_duration};
use crate::config::Config;
use crate::naming::{self, APPLIED_HASH, COMPONENT, OWNER_REF, Owner, PART_OF, SHA, short_hash};
use crate::template::Rendered;

/// Name of the RoleBinding granting the class's viewers `view` in a preview namespace.
pub const VIEWERS_NAME: &str = "preview-viewers";
/// Name of the RoleBinding granting the operator's ServiceAccount the chart's log reader role
/// in a preview namespace (`--log-reader-role`).
pub const LOG_READER_NAME: &str = "preview-operator-logs";
/// Annotation of a preview namespace: the names (comma-separated) of the Secrets copied into
/// it from the platform's namespace (image pull secrets, the ingress TLS Secret). The chart's
/// admission policy refuses pods there that use one other than as an image pull secret.
pub const PLATFORM_SECRETS: &str = "preview.dev/platform-secrets";
/// Name of the NetworkPolicy, ResourceQuota and LimitRange in every preview namespace.
pub const HARDENING_NAME: &str = "preview-defaults";
/// `preview.dev/component` value of service children.
pub const COMPONENT_SERVICE: &str = "service";
/// `preview.dev/component` value of test Jobs.
pub const COMPONENT_TEST: &str = "test";
/// `preview.dev/component` value of dependency children.
pub const COMPONENT_DEPENDENCY: &str = "dependency";
/// `preview.dev/component` value of setup Jobs.
pub const COMPONENT_SETUP: &str = "setup";

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
        }
    }

    /// Name of the Job running `test` of this preview now.
    pub fn job_name(&self, test: &str) -> String {
        job_name(test, &self.spec.head_sha, self.rerun_tests)
    }

    /// Name of the Job running `setup` of this preview now: per sha, or once per preview.
    pub fn setup_job_name(&self, setup: &SetupSpec) -> String {
        match setup.run_on {
            RunOn::EverySha => format!(
                "setup-{}-{}",
                setup.job.name,
                naming::short_sha(&self.spec.head_sha)
            ),
            RunOn::Once => format!("setup-{}", setup.job.name),
        }
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
}

impl<K> Desired<K> {
    /// Exactly these.
    pub fn exactly(objects: Vec<K>) -> Self {
        Desired {
            objects,
            exclusive: true,
        }
    }

    /// These, and leave the others alone.
    pub fn also(objects: Vec<K>) -> Self {
        Desired {
            objects,
            exclusive: false,
        }
    }
}

/// Everything in a preview namespace except the test Jobs (which wait for the services); the
/// namespace itself is [`namespace`], created first.
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
}

impl Preview<'_> {
    fn labels(&self) -> BTreeMap<String, String> {
        self.owner.labels()
    }

    fn owner_annotation(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(
            OWNER_REF.to_string(),
            format!("{}/{}", self.owner.namespace, self.owner.name),
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

    fn hardening_meta(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(HARDENING_NAME.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
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
            .collect(),
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
    }
}

/// The preview namespace, with its ownership and Pod Security labels, and the names of the
/// platform's Secrets copied into it (for the chart's admission policy: only the operator may
/// set `preview.dev/` annotations, and tenants cannot write preview namespaces).
pub fn namespace(preview: &Preview<'_>, config: &Config) -> Namespace {
    let mut labels = preview.labels();
    let level = config.pod_security_level.as_str();
    for mode in ["enforce", "audit", "warn"] {
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}"),
            level.to_string(),
        );
        labels.insert(
            format!("pod-security.kubernetes.io/{mode}-version"),
            "latest".to_string(),
        );
    }
    let mut annotations = preview.owner_annotation();
    annotations.insert(
        PLATFORM_SECRETS.to_string(),
        config.copied_secrets().join(","),
    );
    Namespace {
        metadata: ObjectMeta {
            name: Some(preview.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// Default-deny ingress and egress: pods accept traffic only from their own namespace and
/// the ingress controller's, and reach only their own namespace, DNS and the class's
/// allow-lists.
fn network_policy(preview: &Preview<'_>, config: &Config) -> NetworkPolicy {
    let namespace_named = |name: &str| NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                name.to_string(),
            )])),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let same_namespace = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: preview.hardening_meta(),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![
                    same_namespace.clone(),
                    namespace_named(&config.ingress_namespace),
                ]),
                ..NetworkPolicyIngressRule::default()
            }]),
            egress: Some(egress_rules(config, same_namespace, namespace_named)),
        }),
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

/// The copy of a Secret of the platform's or the team's namespace in the preview namespace: same name, type
/// and data, owned like every other child.
pub fn secret_copy(preview: &Preview<'_>, source: &Secret) -> Secret {
    let name = source.metadata.name.clone().unwrap_or_default();
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            ..preview.hardening_meta()
        },
        type_: source.type_.clone(),
        data: source.data.clone(),
        ..Secret::default()
    }
}

/// The copy of a ConfigMap of the template's namespace in the preview namespace: same name
/// and data, owned like every other child.
pub fn config_map_copy(preview: &Preview<'_>, source: &ConfigMap) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: source.metadata.name.clone(),
            ..preview.hardening_meta()
        },
        data: source.data.clone(),
        binary_data: source.binary_data.clone(),
        ..ConfigMap::default()
    }
}

/// Developers of the tenant may read pods, logs, Events and Jobs of their previews: the
/// class's viewers get the built-in `view` ClusterRole in the preview namespace, and nothing
/// wider (the operator may bind only `view`).
fn viewers(preview: &Preview<'_>, config: &Config) -> Option<RoleBinding> {
    if config.viewers.is_empty() {
        return None;
    }
    Some(RoleBinding {
        metadata: ObjectMeta {
            name: Some(VIEWERS_NAME.to_string()),
            ..preview.hardening_meta()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "ClusterRole".to_string(),
            name: "view".to_string(),
        },
        subjects: Some(
            config
                .viewers
                .iter()
                .map(|v| Subject {
                    api_group: Some("rbac.authorization.k8s.io".to_string()),
                    kind: v.kind.clone(),
                    name: v.name.clone(),
                    namespace: None,
                })
                .collect(),
        ),
    })
}

/// The operator reads the logs of its test and setup Jobs in this preview namespace only: its
/// own ServiceAccount gets the chart's log reader ClusterRole here (the operator may bind that
/// role and `view`, nothing else), instead of `pods/log` in every namespace.
fn log_reader(preview: &Preview<'_>, config: &Config) -> Option<RoleBinding> {
    let reader = config.log_reader.as_ref()?;
    Some(RoleBinding {
        metadata: ObjectMeta {
            name: Some(LOG_READER_NAME.to_string()),
            ..preview.hardening_meta()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "ClusterRole".to_string(),
            name: reader.role.clone(),
        },
        subjects: Some(vec![Subject {
            api_group: None,
            kind: "ServiceAccount".to_string(),
            name: reader.service_account.clone(),
            namespace: Some(reader.namespace.clone()),
        }]),
    })
}

/// Link-local ranges: cloud metadata endpoints (169.254.169.254) live there.
const LINK_LOCAL: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];

/// Egress of unreviewed pull-request code: its own namespace, DNS, and only what the class
/// allows besides; everything else (cloud metadata, the API server, other tenants, the
/// operator) is denied.
fn egress_rules(
    config: &Config,
    same_namespace: NetworkPolicyPeer,
    namespace_named: impl Fn(&str) -> NetworkPolicyPeer,
) -> Vec<NetworkPolicyEgressRule> {
    let egress = &config.egress;
    let mut rules = vec![NetworkPolicyEgressRule {
        to: Some(vec![same_namespace]),
        ..NetworkPolicyEgressRule::default()
    }];
    if egress.allow_dns {
        let dns = |protocol: &str| NetworkPolicyPort {
            port: Some(IntOrString::Int(53)),
            protocol: Some(protocol.to_string()),
            ..NetworkPolicyPort::default()
        };
        rules.push(NetworkPolicyEgressRule {
            to: Some(vec![namespace_named("kube-system")]),
            ports: Some(vec![dns("UDP"), dns("TCP")]),
        });
    }
    let mut peers: Vec<NetworkPolicyPeer> = egress
        .allow_cidrs
        .iter()
        .map(|cidr| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.clone(),
                // A wide range still keeps link-local addresses out, unless it is one itself.
                except: non_empty(
                    LINK_LOCAL
                        .iter()
                        .filter(|ll| strictly_contains(cidr, ll))
                        .map(|ll| ll.to_string())
                        .collect(),
                ),
            }),
            ..NetworkPolicyPeer::default()
        })
        .collect();
    peers.extend(egress.allow_namespaces.iter().map(|n| namespace_named(n)));
    if !peers.is_empty() {
        rules.push(NetworkPolicyEgressRule {
            to: Some(peers),
            ..NetworkPolicyEgressRule::default()
        });
    }
    rules
}

/// Whether network `outer` strictly contains network `inner` (both `address/prefix`); false
/// for anything that does not parse (the API server then says what is wrong with it).
fn strictly_contains(outer: &str, inner: &str) -> bool {
    fn parse(cidr: &str) -> Option<(u128, u32, bool)> {
        let (addr, prefix) = cidr.split_once('/')?;
        let prefix: u32 = prefix.parse().ok()?;
        match addr.parse::<std::net::IpAddr>().ok()? {
            std::net::IpAddr::V4(a) => Some((u128::from(u32::from(a)) << 96, prefix, true)),
            std::net::IpAddr::V6(a) => Some((u128::from(a), prefix, false)),
        }
    }
    let (Some((a, pa, v4a)), Some((b, pb, v4b))) = (parse(outer), parse(inner)) else {
        return false;
    };
    let mask = |p: u32| u128::MAX.checked_shl(128 - p.min(128)).unwrap_or(0);
    v4a == v4b && pa < pb && pb <= 128 && (a & mask(pa)) == (b & mask(pa))
}

fn quantities(map: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    if map.is_empty() {
        return None;
    }
    Some(
        map.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect(),
    )
}

fn resource_quota(preview: &Preview<'_>, config: &Config) -> ResourceQuota {
    ResourceQuota {
        metadata: preview.hardening_meta(),
        spec: Some(ResourceQuotaSpec {
            hard: quantities(&config.quota),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    }
}

/// Defaults for containers that set no resources, so the quota does not refuse them.
fn limit_range(preview: &Preview<'_>, config: &Config) -> LimitRange {
    LimitRange {
        metadata: preview.hardening_meta(),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".to_string(),
                default: quantities(&config.default_limits),
                default_request: quantities(&config.default_requests),
                max: quantities(&config.max_limits),
                ..LimitRangeItem::default()
            }],
        }),
    }
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

/// Labels selecting the pods of one service.
pub fn service_selector(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (COMPONENT.to_string(), COMPONENT_SERVICE.to_string()),
        (PART_OF.to_string(), service.to_string()),
    ])
}

fn deployment(preview: &Preview<'_>, config: &Config, svc: &ServiceSpec) -> Deployment {
    let selector = service_selector(&svc.name);
    let mut pod_labels = preview.owner.cost_labels();
    pod_labels.extend(selector.clone());
    pod_labels.insert(naming::MANAGED_BY.to_string(), naming::MANAGER.to_string());
    let mut pod_annotations = svc.pod_annotations.clone();
    // The sha on the pod template makes a new headSha roll the pods even when the image tag
    // did not change, and tells the status step which commit the pods run.
    pod_annotations.insert(SHA.to_string(), preview.spec.head_sha.clone());

    let readiness_probe = match (&svc.readiness_path, svc.port) {
        (Some(path), Some(port)) => Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.clone()),
                port: IntOrString::Int(port),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        _ => None,
    };
    let container = Container {
        name: svc.name.clone(),
        image: Some(svc.image.clone()),
        command: non_empty(svc.command.clone()),
        args: non_empty(svc.args.clone()),
        env: non_empty(env_vars(&svc.env)),
        resources: svc.resources.clone(),
        ports: svc.port.map(|port| {
            vec![ContainerPort {
                container_port: port,
                name: Some("http".to_string()),
                ..ContainerPort::default()
            }]
        }),
        readiness_probe,
        security_context: Some(restricted_security_context()),
        ..Container::default()
    };
    Deployment {
        metadata: preview.child_meta(&svc.name, COMPONENT_SERVICE, &svc.name),
        spec: Some(DeploymentSpec {
            replicas: Some(if preview.asleep { 0 } else { svc.replicas }),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            progress_deadline_seconds: i32::try_from(config.progress_deadline.as_secs()).ok(),
            revision_history_limit: Some(2),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    automount_service_account_token: Some(false),
                    image_pull_secrets: pull_secrets(config),
                    security_context: Some(restricted_pod_security_context()),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn service(preview: &Preview<'_>, svc: &ServiceSpec) -> Option<Service> {
    let port = svc.port?;
    Some(Service {
        metadata: preview.child_meta(&svc.name, COMPONENT_SERVICE, &svc.name),
        spec: Some(CoreServiceSpec {
            selector: Some(service_selector(&svc.name)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_string()),
                port,
                target_port: Some(IntOrString::Int(port)),
                ..ServicePort::default()
            }]),
            ..CoreServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// Labels selecting the pod of one dependency.
pub fn dependency_selector(dependency: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (COMPONENT.to_string(), COMPONENT_DEPENDENCY.to_string()),
        (PART_OF.to_string(), dependency.to_string()),
    ])
}

/// Group owning a dependency's data volume.
const DEPENDENCY_FS_GROUP: i64 = 1000;

/// Name of a dependency's data volume (and of its claim template).
const DATA_VOLUME: &str = "data";

/// A dependency: one pod of a StatefulSet with its data volume. It carries no sha, so a new
/// commit does not restart the database under it.
fn dependency(preview: &Preview<'_>, config: &Config, dep: &DependencySpec) -> StatefulSet {
    let selector = dependency_selector(&dep.name);
    let mut pod_labels = preview.owner.cost_labels();
    pod_labels.extend(selector.clone());
    pod_labels.insert(naming::MANAGED_BY.to_string(), naming::MANAGER.to_string());
    let storage = dep.storage.as_ref();
    let mount_path = storage.map_or("/data", |s| s.mount_path.as_str());
    let claim_size = storage.and_then(|s| s.size.clone());
    let readiness_probe = dep.readiness.as_ref().map(|r| Probe {
        tcp_socket: (r.tcp_socket == Some(true)).then(|| TCPSocketAction {
            port: IntOrString::Int(dep.port),
            ..TCPSocketAction::default()
        }),
        exec: r.exec.clone().map(|command| ExecAction {
            command: Some(command),
        }),
        http_get: r.http_path.clone().map(|path| HTTPGetAction {
            path: Some(path),
            port: IntOrString::Int(dep.port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        ..Probe::default()
    });
    let container = Container {
        name: dep.name.clone(),
        image: Some(dep.image.clone()),
        command: non_empty(dep.command.clone()),
        args: non_empty(dep.args.clone()),
        env: non_empty(env_vars(&dep.env)),
        resources: dep.resources.clone(),
        ports: Some(vec![ContainerPort {
            container_port: dep.port,
            name: Some("main".to_string()),
            ..ContainerPort::default()
        }]),
        readiness_probe,
        volume_mounts: Some(vec![VolumeMount {
            name: DATA_VOLUME.to_string(),
            mount_path: mount_path.to_string(),
            ..VolumeMount::default()
        }]),
        security_context: Some(restricted_security_context()),
        ..Container::default()
    };
    // Without a size the data lives as long as the pod: enough for a seeded preview database.
    let volumes = claim_size.is_none().then(|| {
        vec![Volume {
            name: DATA_VOLUME.to_string(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }]
    });
    let claims = claim_size.map(|size| {
        vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(DATA_VOLUME.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_string()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".to_string(), Quantity(size))])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }]
    });
    StatefulSet {
        metadata: preview.child_meta(&dep.name, COMPONENT_DEPENDENCY, &dep.name),
        spec: Some(StatefulSetSpec {
            replicas: Some(if preview.asleep { 0 } else { 1 }),
            service_name: Some(dep.name.clone()),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes,
                    automount_service_account_token: Some(false),
                    image_pull_secrets: pull_secrets(config),
                    // A non-root database must be able to write its volume whatever user its
                    // image runs as: the volume's group, which every container joins.
                    security_context: Some(PodSecurityContext {
                        fs_group: Some(DEPENDENCY_FS_GROUP),
                        ..restricted_pod_security_context()
                    }),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: claims,
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// The Service in front of a dependency, named after it: `db:5432` inside the namespace.
fn dependency_service(preview: &Preview<'_>, dep: &DependencySpec) -> Service {
    Service {
        metadata: preview.child_meta(&dep.name, COMPONENT_DEPENDENCY, &dep.name),
        spec: Some(CoreServiceSpec {
            selector: Some(dependency_selector(&dep.name)),
            ports: Some(vec![ServicePort {
                name: Some("main".to_string()),
                port: dep.port,
                target_port: Some(IntOrString::Int(dep.port)),
                ..ServicePort::default()
            }]),
            ..CoreServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The Service a sleeping preview's Ingress routes to: the operator's wake listener.
pub const WAKE_SERVICE: &str = "preview-wake";
/// The wake listener's port on the operator's Service.
pub const WAKE_PORT: i32 = 8081;

/// While asleep, a Service of the operator's wake listener in the preview namespace (an
/// ExternalName: an Ingress routes only to Services of its own namespace).
fn wake_service(preview: &Preview<'_>, config: &Config) -> Option<Service> {
    let host = config.wake_service.as_ref().filter(|_| preview.asleep)?;
    let exposes = preview.spec.services.iter().any(|s| s.expose == Some(true));
    if !exposes || config.ingress.is_none() {
        return None;
    }
    Some(Service {
        metadata: preview.child_meta(WAKE_SERVICE, COMPONENT_SERVICE, WAKE_SERVICE),
        spec: Some(CoreServiceSpec {
            type_: Some("ExternalName".to_string()),
            external_name: Some(host.clone()),
            ports: Some(vec![ServicePort {
                name: Some("wake".to_string()),
                port: WAKE_PORT,
                ..ServicePort::default()
            }]),
            ..CoreServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// Host of an exposed service: `<service>-<readable part of the namespace>-<its hash>.<domain>`.
/// The preview namespace ends in a 64-bit hash of its PreviewEnvironment; the host keeps it
/// whole at its end, so two previews never share a host whatever their services are called
/// (`web-pr-shop` in one cannot take `web` of another). The readable middle is shortened to
/// keep the label within DNS's 63 characters.
pub fn ingress_host(service: &str, namespace: &str, domain: &str) -> String {
    let (readable, hash) = namespace.rsplit_once('-').unwrap_or(("", namespace));
    let room = 63usize.saturating_sub(service.len() + hash.len() + 2);
    let readable = readable
        .get(..room.min(readable.len()))
        .unwrap_or_default()
        .trim_end_matches('-');
    if readable.is_empty() {
        format!("{service}-{hash}.{domain}")
    } else {
        format!("{service}-{readable}-{hash}.{domain}")
    }
}

fn ingress(preview: &Preview<'_>, config: &Config, svc: &ServiceSpec) -> Option<Ingress> {
    let ingress_config = config.ingress.as_ref()?;
    let port = svc.port?;
    if svc.expose != Some(true) {
        return None;
    }
    let host = ingress_host(&svc.name, &preview.namespace, &ingress_config.base_domain);
    // Asleep, a visit goes to the operator's wake listener instead, which wakes the preview.
    let (backend, backend_port) = match (&config.wake_service, preview.asleep) {
        (Some(_), true) => (WAKE_SERVICE.to_string(), WAKE_PORT),
        _ => (svc.name.clone(), port),
    };
    let mut metadata = preview.child_meta(&svc.name, COMPONENT_SERVICE, &svc.name);
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(naming::HOST.to_string(), host.clone());
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: ingress_config.class.clone(),
            tls: ingress_config.tls_secret.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(host),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".to_string()),
                        path_type: "Prefix".to_string(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: backend,
                                port: Some(ServiceBackendPort {
                                    number: Some(backend_port),
                                    ..ServiceBackendPort::default()
                                }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

/// URL of one service: its Ingress when exposed and a base domain is configured, else its
/// in-cluster DNS name. `None` when it has no port.
pub fn service_url(preview: &Preview<'_>, config: &Config, svc: &ServiceSpec) -> Option<String> {
    let port = svc.port?;
    if let (Some(true), Some(ingress)) = (svc.expose, config.ingress.as_ref()) {
        let scheme = if ingress.tls_secret.is_some() {
            "https"
        } else {
            "http"
        };
        let host = ingress_host(&svc.name, &preview.namespace, &ingress.base_domain);
        return Some(format!("{scheme}://{host}"));
    }
    Some(cluster_url(&svc.name, &preview.namespace, port))
}

fn cluster_url(service: &str, namespace: &str, port: i32) -> String {
    format!("http://{service}.{namespace}.svc.cluster.local:{port}")
}

/// The preview's URL: the first exposed service's, else the first service with a port's.
pub fn preview_url(preview: &Preview<'_>, config: &Config) -> Option<String> {
    let services = &preview.spec.services;
    services
        .iter()
        .find(|s| s.expose == Some(true) && s.port.is_some())
        .or_else(|| services.iter().find(|s| s.port.is_some()))
        .and_then(|s| service_url(preview, config, s))
}

/// Name of the Job running `test` for `sha`: `<test>-<first 7 of sha>`, plus a short hash of
/// the rerun request when there is one, so a rerun gets new Jobs at the same sha.
pub fn job_name(test: &str, sha: &str, rerun: Option<&str>) -> String {
    let sha = naming::short_sha(sha);
    match rerun {
        Some(request) => format!("{test}-{sha}-{}", short_hash(request)),
        None => format!("{test}-{sha}"),
    }
}

/// `PREVIEW_<SERVICE>_URL`: upper case, dashes become underscores.
fn service_url_var(service: &str) -> String {
    format!(
        "PREVIEW_{}_URL",
        service.to_ascii_uppercase().replace('-', "_")
    )
}

/// The environment every test container gets.
pub fn test_environment(preview: &Preview<'_>, config: &Config) -> Vec<EnvVar> {
    let var = |name: &str, value: String| EnvVar {
        name: name.to_string(),
        value: Some(value),
        ..EnvVar::default()
    };
    let mut vars = vec![
        var("PREVIEW_NAMESPACE", preview.namespace.clone()),
        var("PREVIEW_REPOSITORY", preview.spec.repository.clone()),
        var("PREVIEW_PR", preview.spec.pull_request.to_string()),
        var("PREVIEW_SHA", preview.spec.head_sha.clone()),
    ];
    if let Some(url) = preview_url(preview, config) {
        vars.push(var("PREVIEW_URL", url));
    }
    for svc in &preview.spec.services {
        if let Some(port) = svc.port {
            // Tests run inside the cluster: they reach every service by its DNS name.
            vars.push(var(
                &service_url_var(&svc.name),
                cluster_url(&svc.name, &preview.namespace, port),
            ));
        }
    }
    vars
}

/// The Job running one test for the current headSha.
pub fn test_job(preview: &Preview<'_>, config: &Config, test: &TestSpec) -> Job {
    let mut env = test_environment(preview, config);
    env.extend(env_vars(&test.env));
    job(
        preview,
        config,
        JobKind {
            name: preview.job_name(&test.name),
            component: COMPONENT_TEST,
            env,
        },
        test,
    )
}

/// The environment every setup container gets: who the preview is (the services are not
/// up yet, so no URLs).
fn setup_environment(preview: &Preview<'_>) -> Vec<EnvVar> {
    test_environment(preview, &Config::default())
        .into_iter()
        .filter(|v| !v.name.ends_with("_URL"))
        .collect()
}

/// The Job running one setup step for the current headSha (or once, see [`RunOn`]).
pub fn setup_job(preview: &Preview<'_>, config: &Config, setup: &SetupSpec) -> Job {
    let mut env = setup_environment(preview);
    env.extend(env_vars(&setup.job.env));
    job(
        preview,
        config,
        JobKind {
            name: preview.setup_job_name(setup),
            component: COMPONENT_SETUP,
            env,
        },
        &setup.job,
    )
}

/// What tells a test Job from a setup Job.
struct JobKind {
    name: String,
    component: &'static str,
    env: Vec<EnvVar>,
}

/// A Job running `test` (a test or a setup step) once, hardened like the services.
fn job(preview: &Preview<'_>, config: &Config, kind: JobKind, test: &TestSpec) -> Job {
    let sha = &preview.spec.head_sha;
    let JobKind {
        name,
        component,
        env,
    } = kind;
    let mut meta = preview.child_meta(&name, component, &test.name);
    if let Some(labels) = meta.labels.as_mut() {
        labels.insert(SHA.to_string(), sha.clone());
    }
    let deadline = parse_duration(&test.timeout)
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(30 * 60);
    let mut pod_labels = preview.owner.cost_labels();
    pod_labels.extend([
        (COMPONENT.to_string(), component.to_string()),
        (PART_OF.to_string(), test.name.clone()),
        (naming::MANAGED_BY.to_string(), naming::MANAGER.to_string()),
    ]);
    pod_labels.insert(SHA.to_string(), sha.clone());
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(test.retries),
            active_deadline_seconds: Some(deadline),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: non_empty_map(test.pod_annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_string()),
                    containers: vec![Container {
                        name: test.name.clone(),
                        image: Some(test.image.clone()),
                        command: non_empty(test.command.clone()),
                        args: non_empty(test.args.clone()),
                        env: Some(env),
                        resources: test.resources.clone(),
                        security_context: Some(restricted_security_context()),
                        // A failed test's status shows the end of its output even when the
                        // image writes no termination message.
                        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
                        ..Container::default()
                    }],
                    automount_service_account_token: Some(false),
                    image_pull_secrets: pull_secrets(config),
                    security_context: Some(restricted_pod_security_context()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// Fingerprint of an object as the operator would apply it.
pub fn fingerprint<T: Serialize>(object: &T) -> String {
    // serde_json writes struct fields in declaration order and BTreeMaps sorted, so equal
    // objects always serialize alike.
    let bytes = serde_json::to_vec(object).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().take(10).map(|b| format!("{b:02x}")).collect()
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
    use super::*;
    use crate::config::{IngressConfig, LogReader};

    fn spec() -> PreviewEnvironmentSpec {
        serde_json::from_value(serde_json::json!({
            "repository": "acme/shop",
            "pullRequest": 123,
            "headSha": "4f2c9e1d8b7a",
            "services": [
                {"name": "web", "image": "web:1", "port": 8080, "expose": true, "readinessPath": "/healthz",
                 "podAnnotations": {"team": "shop"}},
                {"name": "api-v2", "image": "api:1", "port": 9090, "replicas": 2},
                {"name": "worker", "image": "worker:1", "env": [{"name": "Q", "value": "orders"}]}
            ],
            "tests": [{"name": "e2e", "image": "e2e:1", "timeout": "20m", "retries": 2,
                       "env": [{"name": "EXTRA", "value": "1"}],
                       "podAnnotations": {"preview.dev/simulate": "fail"}}]
        }))
        .expect("fixture")
    }

    fn preview(spec: &PreviewEnvironmentSpec) -> Preview<'_> {
        Preview {
            spec,
            dependencies: &[],
            setup: &[],
            owner: Owner {
                namespace: "team-shop".into(),
                name: "shop-pr-123".into(),
                uid: "uid-1".into(),
                repository: spec.repository.clone(),
                pull_request: spec.pull_request,
            },
            namespace: "pr-shop-pr-123-abcdef".into(),
            rerun_tests: None,
            asleep: false,
        }
    }

    fn with_ingress(tls: bool) -> Config {
        Config {
            ingress: Some(IngressConfig {
                base_domain: "preview.example.com".into(),
                class: Some("nginx".into()),
                tls_secret: tls.then(|| "wildcard".to_string()),
            }),
            ..Config::default()
        }
    }

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
    fn namespace_enforces_the_configured_pod_security_level() {
        let spec = spec();
        let ns = namespace(&preview(&spec), &Config::default());
        let labels = ns.metadata.labels.unwrap_or_default();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(ns.metadata.name.as_deref(), Some("pr-shop-pr-123-abcdef"));
    }

    #[test]
    fn namespace_names_the_platform_secrets_copied_into_it() {
        let spec = spec();
        let annotation = |config: &Config| {
            let ns = namespace(&preview(&spec), config);
            ns.metadata.annotations.unwrap_or_default()[PLATFORM_SECRETS].clone()
        };
        assert_eq!(annotation(&Config::default()), "");
        let config = Config {
            image_pull_secrets: vec!["registry".into(), "mirror".into()],
            ingress: Some(IngressConfig {
                base_domain: "preview.example.com".into(),
                class: None,
                tls_secret: Some("wildcard-tls".into()),
            }),
            ..Config::default()
        };
        // The policy splits the value on commas: the same names the copies get.
        assert_eq!(annotation(&config), "mirror,registry,wildcard-tls");
        assert_eq!(
            annotation(&config).split(',').collect::<Vec<_>>(),
            config.copied_secrets()
        );
    }

    #[test]
    fn the_operator_reads_logs_through_a_binding_in_each_preview_namespace() {
        let spec = spec();
        let names = |config: &Config| {
            environment(&preview(&spec), config, Stage::Services)
                .role_bindings
                .into_iter()
                .map(|b| b.metadata.name.unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert!(names(&Config::default()).is_empty(), "no --log-reader-role");
        let config = Config {
            log_reader: Some(LogReader {
                role: "preview-operator-log-reader".into(),
                service_account: "preview-operator".into(),
                namespace: "preview-system".into(),
            }),
            ..Config::default()
        };
        assert_eq!(names(&config), [LOG_READER_NAME]);
        let env = environment(&preview(&spec), &config, Stage::Services);
        let binding = &env.role_bindings[0];
        assert_eq!(
            binding.metadata.namespace.as_deref(),
            Some("pr-shop-pr-123-abcdef")
        );
        assert_eq!(binding.role_ref.kind, "ClusterRole");
        assert_eq!(binding.role_ref.name, "preview-operator-log-reader");
        let subjects = binding.subjects.clone().unwrap_or_default();
        assert_eq!(subjects.len(), 1);
        assert_eq!(
            (
                subjects[0].kind.as_str(),
                subjects[0].name.as_str(),
                subjects[0].namespace.as_deref()
            ),
            ("ServiceAccount", "preview-operator", Some("preview-system"))
        );
    }

    #[test]
    fn network_policy_denies_ingress_except_namespace_and_ingress_controller() {
        let spec = spec();
        let env = environment(&preview(&spec), &Config::default(), Stage::Services);
        let np = env.network_policy.spec.expect("spec");
        assert_eq!(
            np.policy_types,
            Some(vec!["Ingress".to_string(), "Egress".to_string()])
        );
        let from = np.ingress.expect("rules")[0].from.clone().expect("peers");
        assert_eq!(from.len(), 2);
        assert_eq!(from[0].pod_selector, Some(LabelSelector::default()));
        let ns_labels = from[1]
            .namespace_selector
            .clone()
            .and_then(|s| s.match_labels)
            .expect("namespace selector");
        assert_eq!(ns_labels["kubernetes.io/metadata.name"], "ingress-nginx");
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
    fn services_and_ingresses_follow_ports_and_expose() {
        let spec = spec();
        let p = preview(&spec);
        let env = environment(&p, &with_ingress(true), Stage::Services);
        let names = |v: Vec<Option<String>>| v.into_iter().flatten().collect::<Vec<_>>();
        assert_eq!(
            names(
                env.deployments
                    .objects
                    .iter()
                    .map(|d| d.metadata.name.clone())
                    .collect()
            ),
            ["web", "api-v2", "worker"]
        );
        assert_eq!(
            names(
                env.services
                    .objects
                    .iter()
                    .map(|s| s.metadata.name.clone())
                    .collect()
            ),
            ["web", "api-v2"]
        );
        assert_eq!(
            names(
                env.ingresses
                    .objects
                    .iter()
                    .map(|s| s.metadata.name.clone())
                    .collect()
            ),
            ["web"]
        );
        let ing = env.ingresses.objects[0].spec.clone().expect("spec");
        assert_eq!(ing.ingress_class_name.as_deref(), Some("nginx"));
        let host = ing.rules.expect("rules")[0].host.clone().expect("host");
        assert_eq!(host, "web-pr-shop-pr-123-abcdef.preview.example.com");
        assert_eq!(
            preview_url(&p, &with_ingress(true)).as_deref(),
            Some("https://web-pr-shop-pr-123-abcdef.preview.example.com")
        );
        // Without a base domain nothing is exposed, and the URL is the in-cluster one.
        let env = environment(&p, &Config::default(), Stage::Services);
        assert!(env.ingresses.objects.is_empty());
        assert_eq!(
            preview_url(&p, &Config::default()).as_deref(),
            Some("http://web.pr-shop-pr-123-abcdef.svc.cluster.local:8080")
        );
    }

    #[test]
    fn deployment_has_probe_replicas_and_sha_on_the_pod_template() {
        let spec = spec();
        let env = environment(&preview(&spec), &Config::default(), Stage::Services);
        let web = env.deployments.objects[0].spec.clone().expect("spec");
        let template = web.template.clone();
        let annotations = template
            .metadata
            .and_then(|m| m.annotations)
            .unwrap_or_default();
        assert_eq!(annotations[SHA], "4f2c9e1d8b7a");
        assert_eq!(annotations["team"], "shop");
        let container = &template.spec.expect("pod").containers[0];
        let probe = container
            .readiness_probe
            .clone()
            .and_then(|p| p.http_get)
            .expect("probe");
        assert_eq!(probe.path.as_deref(), Some("/healthz"));
        assert_eq!(probe.port, IntOrString::Int(8080));
        assert_eq!(
            env.deployments.objects[1]
                .spec
                .clone()
                .and_then(|s| s.replicas),
            Some(2)
        );
        assert_eq!(web.progress_deadline_seconds, Some(300));
    }

    #[test]
    fn test_job_gets_the_preview_environment_deadline_and_retries() {
        let spec = spec();
        let p = preview(&spec);
        let job = test_job(&p, &with_ingress(false), &spec.tests[0]);
        assert_eq!(job.metadata.name.as_deref(), Some("e2e-4f2c9e1"));
        let js = job.spec.expect("spec");
        assert_eq!(js.backoff_limit, Some(2));
        assert_eq!(js.active_deadline_seconds, Some(1200));
        let pod = js.template;
        assert_eq!(
            pod.metadata.and_then(|m| m.annotations).unwrap_or_default()["preview.dev/simulate"],
            "fail"
        );
        let env: BTreeMap<String, String> = pod.spec.expect("pod").containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(env["PREVIEW_NAMESPACE"], "pr-shop-pr-123-abcdef");
        assert_eq!(env["PREVIEW_REPOSITORY"], "acme/shop");
        assert_eq!(env["PREVIEW_PR"], "123");
        assert_eq!(env["PREVIEW_SHA"], "4f2c9e1d8b7a");
        assert_eq!(
            env["PREVIEW_URL"],
            "http://web-pr-shop-pr-123-abcdef.preview.example.com"
        );
        assert_eq!(
            env["PREVIEW_API_V2_URL"],
            "http://api-v2.pr-shop-pr-123-abcdef.svc.cluster.local:9090"
        );
        assert_eq!(env["EXTRA"], "1");
        assert!(
            !env.contains_key("PREVIEW_WORKER_URL"),
            "worker has no port"
        );
    }

    #[test]
    fn egress_is_denied_but_for_the_namespace_dns_and_the_class_allow_lists() {
        let spec = spec();
        let np = environment(&preview(&spec), &Config::default(), Stage::Services)
            .network_policy
            .spec
            .expect("spec");
        let egress = np.egress.clone().expect("egress rules");
        assert_eq!(egress.len(), 2, "own namespace and DNS only: {egress:?}");
        assert_eq!(
            egress[0].to.clone().expect("peers")[0].pod_selector,
            Some(LabelSelector::default())
        );
        let dns_ports = egress[1].ports.clone().expect("ports");
        assert!(
            dns_ports
                .iter()
                .all(|p| p.port == Some(IntOrString::Int(53)))
        );

        let mut config = Config::default();
        config.egress.allow_dns = false;
        config.egress.allow_cidrs = vec!["0.0.0.0/0".into(), "10.0.0.0/8".into()];
        config.egress.allow_namespaces = vec!["shared-db".into()];
        let np = environment(&preview(&spec), &config, Stage::Services)
            .network_policy
            .spec
            .expect("spec");
        let egress = np.egress.expect("egress rules");
        assert_eq!(egress.len(), 2, "no DNS rule: {egress:?}");
        let peers = egress[1].to.clone().expect("peers");
        let internet = peers[0].ip_block.clone().expect("ip block");
        assert_eq!(internet.except, Some(vec!["169.254.0.0/16".to_string()]));
        assert_eq!(peers[1].ip_block.clone().expect("ip block").except, None);
        assert!(peers[2].namespace_selector.is_some());
    }

    #[test]
    fn link_local_is_cut_only_out_of_ranges_that_contain_it() {
        assert!(strictly_contains("0.0.0.0/0", "169.254.0.0/16"));
        assert!(strictly_contains("169.0.0.0/8", "169.254.0.0/16"));
        assert!(!strictly_contains("10.0.0.0/8", "169.254.0.0/16"));
        assert!(!strictly_contains("169.254.0.0/16", "169.254.0.0/16"));
        assert!(strictly_contains("::/0", "fe80::/10"));
        assert!(!strictly_contains("0.0.0.0/0", "fe80::/10"));
        assert!(!strictly_contains("nonsense", "fe80::/10"));
    }

    #[test]
    fn hosts_of_two_previews_never_collide_whatever_the_service_names() {
        let a = naming::preview_namespace("pr-", "team-b", "shop");
        let b = naming::preview_namespace("pr-", "team-a", "x");
        // A crafted service name that spells out another preview's readable part.
        let crafted = format!("web-{}", a.rsplit_once('-').expect("hash").0);
        assert_ne!(
            ingress_host("web", &a, "example.com"),
            ingress_host(&crafted, &b, "example.com")
        );
        assert!(ingress_host("web", &a, "example.com").ends_with(&format!(
            "-{}.example.com",
            a.rsplit_once('-').expect("hash").1
        )));
    }

    #[test]
    fn long_ingress_hosts_stay_valid_dns_labels() {
        let ns = format!("pr-{}-abcdef", "x".repeat(53));
        let host = ingress_host(&"s".repeat(30), &ns, "example.com");
        let first = host.split('.').next().unwrap_or_default();
        assert!(first.len() <= 63, "{first}");
        assert_ne!(host, ingress_host(&"s".repeat(29), &ns, "example.com"));
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

    use kube::ResourceExt;

    fn shop() -> Rendered {
        let template: crate::api::template::PreviewTemplateSpec =
            serde_json::from_value(serde_json::json!({
                "secrets": [{"name": "shop-db"}],
                "dependencies": [
                    {"name": "db", "image": "postgres:17", "port": 5432,
                     "readiness": {"exec": ["pg_isready"]},
                     "storage": {"size": "1Gi", "mountPath": "/var/lib/postgresql/data"},
                     "env": [{"name": "POSTGRES_PASSWORD",
                              "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "password"}}}]},
                    {"name": "cache", "image": "redis:7", "port": 6379, "readiness": {"tcpSocket": true}}
                ],
                "setup": [{"name": "migrate", "image": "migrate:1"},
                          {"name": "seed", "image": "seed:1", "runOn": "Once"}],
                "services": [{"name": "web", "image": "web:1", "port": 8080}],
            }))
            .expect("template fixture");
        crate::template::render(
            &spec(),
            crate::template::Target {
                name: "shop-pr-123",
                namespace: "pr-shop-pr-123-abcdef",
                template: "shop",
            },
            &template,
        )
        .expect("renders")
    }

    fn from_template(rendered: &Rendered) -> Preview<'_> {
        Preview {
            dependencies: &rendered.dependencies,
            setup: &rendered.setup,
            ..preview(&rendered.spec)
        }
    }

    #[test]
    fn dependencies_are_hardened_stateful_sets_behind_a_service_of_their_name() {
        let rendered = shop();
        let env = environment(
            &from_template(&rendered),
            &Config::default(),
            Stage::Services,
        );
        let db = &env.stateful_sets[0];
        let spec = db.spec.clone().expect("spec");
        assert_eq!(spec.service_name.as_deref(), Some("db"));
        let claims = spec
            .volume_claim_templates
            .expect("a claim for a sized volume");
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        let pod = spec.template.spec.expect("pod spec");
        assert_eq!(pod.automount_service_account_token, Some(false));
        let security = pod.security_context.clone().expect("pod security context");
        assert_eq!(security.run_as_non_root, Some(true));
        assert!(
            security.fs_group.is_some(),
            "a non-root database can write its volume"
        );
        assert!(pod.volumes.is_none(), "the claim is the volume");
        let c = &pod.containers[0];
        assert_eq!(c.security_context, Some(restricted_security_context()));
        assert_eq!(
            c.volume_mounts.as_ref().expect("mount")[0].mount_path,
            "/var/lib/postgresql/data"
        );
        let probe = c.readiness_probe.clone().expect("probe");
        assert!(probe.exec.is_some() && probe.tcp_socket.is_none());
        let password = &c.env.as_ref().expect("env")[0];
        let secret = password.value_from.clone().and_then(|v| v.secret_key_ref);
        assert_eq!(
            secret.map(|r| (r.name, r.key)),
            Some(("shop-db".into(), "password".into()))
        );
        assert!(password.value.is_none());
        let cache = env.stateful_sets[1].spec.clone().expect("spec");
        assert!(cache.volume_claim_templates.is_none());
        let cache_pod = cache.template.spec.expect("pod");
        assert!(cache_pod.volumes.expect("emptyDir")[0].empty_dir.is_some());
        assert!(
            cache_pod.containers[0]
                .readiness_probe
                .clone()
                .expect("probe")
                .tcp_socket
                .is_some()
        );
        let names: Vec<_> = env.services.objects.iter().map(|s| s.name_any()).collect();
        assert_eq!(names, vec!["db", "cache", "web"]);
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

    #[test]
    fn setup_jobs_run_per_sha_or_once_and_are_hardened() {
        let rendered = shop();
        let p = from_template(&rendered);
        let migrate = setup_job(&p, &Config::default(), &rendered.setup[0]);
        assert_eq!(migrate.name_any(), "setup-migrate-4f2c9e1");
        let seed = setup_job(&p, &Config::default(), &rendered.setup[1]);
        assert_eq!(seed.name_any(), "setup-seed");
        let labels = migrate.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(COMPONENT).map(String::as_str),
            Some(COMPONENT_SETUP)
        );
        let pod = migrate.spec.expect("spec").template.spec.expect("pod");
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(c.security_context, Some(restricted_security_context()));
        let vars: Vec<_> = c.env.iter().flatten().map(|v| v.name.as_str()).collect();
        assert!(vars.contains(&"PREVIEW_SHA") && !vars.iter().any(|v| v.ends_with("_URL")));
    }
}
