//! The preview namespace and what makes it safe before any workload runs: its Pod Security
//! labels, the default-deny NetworkPolicy with the class's egress allow-lists, the
//! ResourceQuota and LimitRange, the viewers' and log reader's RoleBindings, and the copies of
//! the platform's and the team's Secrets and ConfigMaps.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota,
    ResourceQuotaSpec, Secret,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Preview, non_empty};
use crate::config::Config;

/// Name of the RoleBinding granting the class's viewers `view` in a preview namespace.
pub const VIEWERS_NAME: &str = "preview-viewers";
/// Name of the RoleBinding granting the operator's ServiceAccount the chart's log reader role
/// in a preview namespace (`--log-reader-role`).
pub const LOG_READER_NAME: &str = "preview-operator-logs";
/// Annotation of a preview namespace: the names (comma-separated) of the Secrets copied into
/// it from the platform's namespace (image pull secrets, the ingress TLS Secret). The chart's
/// admission policy refuses pods there that use one other than as an image pull secret.
pub const PLATFORM_SECRETS: &str = "preview.dev/platform-secrets";
/// Annotation of a preview namespace delivering through Flux: the class's registry prefixes
/// (comma-separated; empty: any), which the chart's admission policy enforces on what a chart
/// renders there.
pub const ALLOWED_REGISTRIES: &str = "preview.dev/allowed-registries";
/// Annotation of a preview namespace delivering through Flux: the host its charts may expose
/// (`<namespace>.<base domain>`, and names ending in `-` and it); absent: none.
pub const PREVIEW_HOST: &str = "preview.dev/host";
/// Name of the NetworkPolicy, ResourceQuota and LimitRange in every preview namespace.
pub const HARDENING_NAME: &str = "preview-defaults";

impl Preview<'_> {
    /// Metadata of the objects there is one of per preview namespace (hardening, bindings,
    /// copies): owned like every child, without a component.
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
    // Only where Flux applies: what the operator renders itself it checks itself.
    if preview.delivers_through_flux() {
        annotations.insert(
            ALLOWED_REGISTRIES.to_string(),
            config.allowed_registries.join(","),
        );
        if let Some(host) = super::flux::preview_host(preview, config) {
            annotations.insert(PREVIEW_HOST.to_string(), host);
        }
    }
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
pub(super) fn network_policy(preview: &Preview<'_>, config: &Config) -> NetworkPolicy {
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

/// Developers of the tenant may read pods, logs, Events and Jobs of their previews: the
/// class's viewers get the built-in `view` ClusterRole in the preview namespace, and nothing
/// wider (the operator may bind only `view`).
pub(super) fn viewers(preview: &Preview<'_>, config: &Config) -> Option<RoleBinding> {
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
pub(super) fn log_reader(preview: &Preview<'_>, config: &Config) -> Option<RoleBinding> {
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

pub(super) fn resource_quota(preview: &Preview<'_>, config: &Config) -> ResourceQuota {
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
pub(super) fn limit_range(preview: &Preview<'_>, config: &Config) -> LimitRange {
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

/// The copy of a Secret of the platform's or the team's namespace in the preview namespace:
/// same name, type and data, owned like every other child.
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::{preview, spec};
    use super::super::{Stage, environment};
    use super::*;
    use crate::config::{IngressConfig, LogReader};

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
}
