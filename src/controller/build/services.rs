//! The services of a preview: a Deployment per service, a Service per service with a port,
//! an Ingress per exposed one (routed to the operator's wake listener while the preview
//! sleeps), and the URLs they are reached at.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PodSpec, PodTemplateSpec, Probe, Service, ServicePort,
    ServiceSpec as CoreServiceSpec,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    COMPONENT_SERVICE, Preview, env_vars, non_empty, pull_secrets, restricted_pod_security_context,
    restricted_security_context,
};
use crate::api::ServiceSpec;
use crate::config::Config;
use crate::naming::{self, COMPONENT, PART_OF, SHA};

/// Labels selecting the pods of one service.
pub fn service_selector(service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (COMPONENT.to_string(), COMPONENT_SERVICE.to_string()),
        (PART_OF.to_string(), service.to_string()),
    ])
}

pub(super) fn deployment(preview: &Preview<'_>, config: &Config, svc: &ServiceSpec) -> Deployment {
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
    let mut deployment = Deployment {
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
    };
    if let Some(spec) = &deployment.spec {
        super::mark_pod_template(&mut deployment.metadata, &spec.template);
    }
    deployment
}

pub(super) fn service(preview: &Preview<'_>, svc: &ServiceSpec) -> Option<Service> {
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

/// The Service a sleeping preview's Ingress routes to: the operator's wake listener.
pub const WAKE_SERVICE: &str = "preview-wake";
/// The wake listener's port on the operator's Service.
pub const WAKE_PORT: i32 = 8081;

/// While asleep, a Service of the operator's wake listener in the preview namespace (an
/// ExternalName: an Ingress routes only to Services of its own namespace).
pub(super) fn wake_service(preview: &Preview<'_>, config: &Config) -> Option<Service> {
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

pub(super) fn ingress(
    preview: &Preview<'_>,
    config: &Config,
    svc: &ServiceSpec,
) -> Option<Ingress> {
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

pub(super) fn cluster_url(service: &str, namespace: &str, port: i32) -> String {
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{preview, spec, with_ingress};
    use super::super::{Stage, environment};
    use super::*;

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
}
