//! The template's dependencies (backing services such as a database): one StatefulSet each,
//! with its data volume (a claim when sized, else an emptyDir), behind a Service of its name.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, ExecAction, HTTPGetAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, Service, ServicePort, ServiceSpec as CoreServiceSpec, TCPSocketAction, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    COMPONENT_DEPENDENCY, Preview, env_vars, non_empty, pull_secrets,
    restricted_pod_security_context, restricted_security_context,
};
use crate::api::template::DependencySpec;
use crate::config::Config;
use crate::naming::{self, COMPONENT, PART_OF};

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

/// The PersistentVolumeClaim the StatefulSet of `dependency` makes for its one pod
/// (`<claim template>-<StatefulSet>-<ordinal>`).
pub fn claim_name(dependency: &str) -> String {
    format!("{DATA_VOLUME}-{dependency}-0")
}

/// A dependency: one pod of a StatefulSet with its data volume. It carries no sha, so a new
/// commit does not restart the database under it.
pub(super) fn dependency(
    preview: &Preview<'_>,
    config: &Config,
    dep: &DependencySpec,
) -> StatefulSet {
    let selector = dependency_selector(&dep.name);
    let mut pod_labels = preview.owner.cost_labels();
    pod_labels.extend(selector.clone());
    pod_labels.insert(naming::MANAGED_BY.to_string(), naming::MANAGER.to_string());
    let (volumes, claims) = data_volume(dep);
    let mut stateful_set = StatefulSet {
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
                    containers: vec![dependency_container(dep)],
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
    };
    if let Some(spec) = &stateful_set.spec {
        super::mark_pod_template(&mut stateful_set.metadata, &spec.template);
    }
    stateful_set
}

/// The dependency's one container, hardened, with its data volume mounted.
fn dependency_container(dep: &DependencySpec) -> Container {
    let mount_path = dep
        .storage
        .as_ref()
        .map_or("/data", |s| s.mount_path.as_str());
    Container {
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
        readiness_probe: readiness_probe(dep),
        volume_mounts: Some(vec![VolumeMount {
            name: DATA_VOLUME.to_string(),
            mount_path: mount_path.to_string(),
            ..VolumeMount::default()
        }]),
        security_context: Some(restricted_security_context()),
        ..Container::default()
    }
}

/// The template's readiness check on the dependency's port: a TCP connect, a command, an
/// HTTP path, or none.
fn readiness_probe(dep: &DependencySpec) -> Option<Probe> {
    dep.readiness.as_ref().map(|r| Probe {
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
    })
}

/// The dependency's data volume: a claim template of its size, or a pod volume without one
/// (exactly one of the two is set).
fn data_volume(dep: &DependencySpec) -> (Option<Vec<Volume>>, Option<Vec<PersistentVolumeClaim>>) {
    let claim_size = dep.storage.as_ref().and_then(|s| s.size.clone());
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
    (volumes, claims)
}

/// The Service in front of a dependency, named after it: `db:5432` inside the namespace.
pub(super) fn dependency_service(preview: &Preview<'_>, dep: &DependencySpec) -> Service {
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

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use super::super::fixtures::{from_template, shop};
    use super::super::{Stage, environment};
    use super::*;

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
}
