//! The policy a preview runs under: the operator's defaults (and its few operator-wide flags,
//! with `PREVIEW_OPERATOR_*` environment fallbacks) overlaid with the preview's PreviewClass.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::api::class::{
    DEFAULT_ACTIVE_PER_NAMESPACE, DEFAULT_EXISTING_PER_NAMESPACE, DEFAULT_MAX_CLAIM_SIZE,
    EgressPolicy, PreviewClassSpec, SleepPolicy, Viewer,
};
use crate::api::{format_duration, parse_duration};

/// Pod Security Standard level enforced in preview namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PodSecurityLevel {
    Privileged,
    Baseline,
    Restricted,
}

impl PodSecurityLevel {
    /// The level as the `pod-security.kubernetes.io/enforce` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PodSecurityLevel::Privileged => "privileged",
            PodSecurityLevel::Baseline => "baseline",
            PodSecurityLevel::Restricted => "restricted",
        }
    }
}

/// Parses a duration flag (`30s`, `10m`, `72h`, `7d`) with a message that shows the format.
pub fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration such as 30s, 10m, 72h or 7d"))
}

/// Operator-wide settings that are not tenant policy (that is in the PreviewClass). Each flag
/// reads `PREVIEW_OPERATOR_<FLAG>` when not given on the command line.
#[derive(Args, Clone, Debug)]
pub struct PolicyArgs {
    /// Prefix of preview namespace names.
    #[arg(long, env = "PREVIEW_OPERATOR_NAMESPACE_PREFIX", default_value = "pr-")]
    pub namespace_prefix: String,

    /// How long a Deployment may take to make progress before it is reported as failed.
    #[arg(long, env = "PREVIEW_OPERATOR_PROGRESS_DEADLINE", default_value = "5m", value_parser = duration_arg)]
    pub progress_deadline: Duration,

    /// DNS name of the operator's Service (the chart sets it): a sleeping preview's Ingress
    /// routes there, port 8081, so a visit wakes it. Without it a sleeping preview's URL
    /// answers 503 until something else wakes it.
    #[arg(long, env = "PREVIEW_OPERATOR_WAKE_SERVICE")]
    pub wake_service: Option<String>,

    /// The chart's ClusterRole that reads pods' logs (the chart sets it when testLogs are on):
    /// bound to the operator's own ServiceAccount in each preview namespace, so it reads the
    /// logs of its test Jobs there and nowhere else. Without it no such binding is made.
    #[arg(long, env = "PREVIEW_OPERATOR_LOG_READER_ROLE")]
    pub log_reader_role: Option<String>,

    /// The chart's ClusterRole Flux applies a preview's charts and kustomizations with (what
    /// `edit` allows, minus NetworkPolicies, quotas, LimitRanges and RBAC): bound in each
    /// preview namespace that delivers through Flux to its own ServiceAccount, which Flux
    /// impersonates. Without it previews may not deliver through Flux.
    #[arg(long, env = "PREVIEW_OPERATOR_FLUX_APPLIER_ROLE")]
    pub flux_applier_role: Option<String>,
}

/// The policy one preview runs under: its PreviewClass over the operator's defaults. The pure
/// build and status steps take it as it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// Hard cap from creation.
    pub max_lifetime: Option<Duration>,
    pub limits: Limits,
    pub namespace_prefix: String,
    pub pod_security_level: PodSecurityLevel,
    pub ingress: Option<IngressConfig>,
    pub ingress_namespace: String,
    pub quota: BTreeMap<String, String>,
    /// The largest PersistentVolumeClaim a dependency may ask for, as a quantity ("10Gi").
    pub max_claim_size: String,
    pub default_requests: BTreeMap<String, String>,
    pub default_limits: BTreeMap<String, String>,
    pub max_limits: BTreeMap<String, String>,
    pub egress: EgressPolicy,
    pub progress_deadline: Duration,
    /// Image prefixes; empty means any.
    pub allowed_registries: Vec<String>,
    /// Pod annotation key globs; empty means none.
    pub allowed_pod_annotations: Vec<String>,
    /// Secrets of the platform Secrets namespace pods use to pull images (copied into each
    /// preview).
    pub image_pull_secrets: Vec<String>,
    /// Subjects granted `view` in the preview namespaces (from the tenant entries that admit
    /// the preview).
    pub viewers: Vec<Viewer>,
    /// When previews sleep (the class's policy).
    pub sleep: Option<SleepPolicy>,
    /// Where a sleeping preview's Ingress sends visitors: the operator's wake listener.
    pub wake_service: Option<String>,
    /// Who reads test logs in preview namespaces, through which role (`--log-reader-role`).
    pub log_reader: Option<LogReader>,
    /// The ClusterRole Flux applies with in preview namespaces (`--flux-applier-role`).
    pub flux_applier_role: Option<String>,
    /// The class's Flux settings; none: no delivery through Flux.
    pub flux: Option<FluxConfig>,
}

/// Where a class's previews fetch what Flux delivers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FluxConfig {
    /// Prefix of the pull requests' repositories' clone URLs (`<git_url><repository>.git`).
    pub git_url: Option<String>,
    /// The Git credentials Secret of the platform Secrets namespace, copied for Flux.
    pub git_secret: Option<String>,
    /// Chart repository URL prefixes charts may come from.
    pub chart_repositories: Vec<String>,
}

/// The operator's own ServiceAccount and the chart's ClusterRole it is bound to in every
/// preview namespace, to read the logs of its test Jobs there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogReader {
    pub role: String,
    pub service_account: String,
    pub namespace: String,
}

/// Running previews allowed at once, per scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub per_namespace: usize,
    /// Previews that may exist per tenant namespace, running or not.
    pub existing_per_namespace: usize,
    pub per_repository: Option<usize>,
    pub active: Option<usize>,
}

/// Where exposed services are published.
#[derive(Clone, Debug, PartialEq)]
pub struct IngressConfig {
    pub base_domain: String,
    pub class: Option<String>,
    pub tls_secret: Option<String>,
}

/// A flag or class value that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "ttl.default ({}) is longer than ttl.max ({})",
        format_duration(*default),
        format_duration(*max)
    )]
    DefaultAboveMax { default: Duration, max: Duration },
    #[error("--namespace-prefix {0:?} must be lower-case letters, digits and dashes, at most 20")]
    BadPrefix(String),
    #[error("{field} {value:?} is not a duration such as 72h or 7d")]
    BadDuration { field: &'static str, value: String },
}

impl PolicyArgs {
    /// Validates the flags into the defaults every class starts from.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let prefix_ok = self.namespace_prefix.len() <= 20
            && self
                .namespace_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !prefix_ok {
            return Err(ConfigError::BadPrefix(self.namespace_prefix));
        }
        Ok(Config {
            namespace_prefix: self.namespace_prefix,
            progress_deadline: self.progress_deadline,
            wake_service: self.wake_service.filter(|s| !s.is_empty()),
            ..Config::default()
        })
    }
}

impl Config {
    /// The Secrets of the platform Secrets namespace (`--platform-secrets-namespace`) every
    /// preview namespace gets a copy of: the image pull secrets and the ingress TLS Secret.
    pub fn copied_secrets(&self) -> Vec<String> {
        let mut names = self.image_pull_secrets.clone();
        if let Some(tls) = self.ingress.as_ref().and_then(|i| i.tls_secret.clone()) {
            names.push(tls);
        }
        if let Some(git) = self.flux.as_ref().and_then(|f| f.git_secret.clone()) {
            names.push(git);
        }
        names.sort();
        names.dedup();
        names
    }

    /// The policy of a preview of `class`: its settings over these defaults.
    pub fn with_class(&self, class: &PreviewClassSpec) -> Result<Config, ConfigError> {
        let duration = |field: &'static str, value: &Option<String>, default: Duration| match value
        {
            None => Ok(default),
            Some(text) => parse_duration(text).ok_or_else(|| ConfigError::BadDuration {
                field,
                value: text.clone(),
            }),
        };
        let ttl = class.ttl.clone().unwrap_or_default();
        let default_ttl = duration("ttl.default", &ttl.default, self.default_ttl)?;
        let max_ttl = duration("ttl.max", &ttl.max, self.max_ttl)?;
        if default_ttl > max_ttl {
            return Err(ConfigError::DefaultAboveMax {
                default: default_ttl,
                max: max_ttl,
            });
        }
        let max_lifetime = match &class.max_lifetime {
            None => self.max_lifetime,
            Some(_) => Some(duration("maxLifetime", &class.max_lifetime, max_ttl)?),
        };
        let limits = class.limits.clone().unwrap_or_default();
        let namespace = class.namespace.clone().unwrap_or_default();
        let limit_range = namespace.limit_range.unwrap_or_default();
        let merged = |defaults: &BTreeMap<String, String>, over: BTreeMap<String, String>| {
            let mut all = defaults.clone();
            all.extend(over);
            all
        };
        let ingress = class.ingress.clone();
        Ok(Config {
            default_ttl,
            max_ttl,
            max_lifetime,
            limits: Limits {
                per_namespace: limits
                    .active_per_namespace
                    .map_or(self.limits.per_namespace, slots),
                existing_per_namespace: limits
                    .existing_per_namespace
                    .map_or(self.limits.existing_per_namespace, slots),
                per_repository: limits.active_per_repository.map(slots),
                active: limits.active.map(slots),
            },
            namespace_prefix: self.namespace_prefix.clone(),
            pod_security_level: match namespace.pod_security_level.as_deref() {
                Some("privileged") => PodSecurityLevel::Privileged,
                Some("baseline") => PodSecurityLevel::Baseline,
                _ => PodSecurityLevel::Restricted,
            },
            ingress_namespace: ingress
                .as_ref()
                .and_then(|i| i.controller_namespace.clone())
                .unwrap_or_else(|| self.ingress_namespace.clone()),
            ingress: ingress.map(|i| IngressConfig {
                base_domain: i.base_domain,
                class: i.class_name.filter(|c| !c.is_empty()),
                tls_secret: i.tls_secret_name.filter(|s| !s.is_empty()),
            }),
            quota: merged(&self.quota, namespace.quota),
            max_claim_size: namespace
                .max_claim_size
                .unwrap_or_else(|| self.max_claim_size.clone()),
            default_requests: merged(&self.default_requests, limit_range.default_requests),
            default_limits: merged(&self.default_limits, limit_range.default_limits),
            max_limits: merged(&self.max_limits, limit_range.max),
            egress: namespace.egress.unwrap_or_default(),
            progress_deadline: self.progress_deadline,
            allowed_registries: class.allowed_registries.clone(),
            allowed_pod_annotations: class.allowed_pod_annotations.clone(),
            image_pull_secrets: class
                .image_pull_secrets
                .iter()
                .map(|s| s.name.clone())
                .collect(),
            viewers: Vec::new(),
            sleep: class.sleep.clone(),
            wake_service: self.wake_service.clone(),
            log_reader: self.log_reader.clone(),
            flux_applier_role: self.flux_applier_role.clone(),
            flux: class.flux.as_ref().map(|f| FluxConfig {
                git_url: f.git_url.clone(),
                git_secret: f.git_secret_name.clone(),
                chart_repositories: f.chart_repositories.clone(),
            }),
        })
    }
}

/// A limit from the class as a number of slots (admission keeps it at least 1).
fn slots(n: i32) -> usize {
    usize::try_from(n).unwrap_or(0).max(1)
}

impl Default for Config {
    /// The operator's defaults, under every class.
    fn default() -> Self {
        Config {
            default_ttl: Duration::from_secs(72 * 3600),
            max_ttl: Duration::from_secs(7 * 86_400),
            max_lifetime: None,
            limits: Limits {
                per_namespace: DEFAULT_ACTIVE_PER_NAMESPACE,
                existing_per_namespace: DEFAULT_EXISTING_PER_NAMESPACE,
                per_repository: None,
                active: None,
            },
            namespace_prefix: "pr-".into(),
            pod_security_level: PodSecurityLevel::Restricted,
            ingress: None,
            ingress_namespace: "ingress-nginx".into(),
            // Ephemeral storage, persistent volumes and the common GPU resources are capped
            // too: a namespace without a quota for them could take a node's disk, the
            // storage backend's capacity or every accelerator.
            quota: BTreeMap::from([
                ("requests.cpu".into(), "4".into()),
                ("requests.memory".into(), "8Gi".into()),
                ("limits.memory".into(), "16Gi".into()),
                ("requests.ephemeral-storage".into(), "20Gi".into()),
                ("limits.ephemeral-storage".into(), "40Gi".into()),
                ("requests.nvidia.com/gpu".into(), "0".into()),
                ("requests.amd.com/gpu".into(), "0".into()),
                ("requests.storage".into(), "20Gi".into()),
                ("persistentvolumeclaims".into(), "10".into()),
                ("services.loadbalancers".into(), "0".into()),
                ("services.nodeports".into(), "0".into()),
                ("pods".into(), "50".into()),
            ]),
            max_claim_size: DEFAULT_MAX_CLAIM_SIZE.into(),
            default_requests: BTreeMap::from([
                ("cpu".into(), "50m".into()),
                ("memory".into(), "64Mi".into()),
                ("ephemeral-storage".into(), "100Mi".into()),
            ]),
            // A LimitRange max needs a default limit for the same resource, or containers
            // without one are refused.
            default_limits: BTreeMap::from([
                ("cpu".into(), "1".into()),
                ("memory".into(), "512Mi".into()),
                ("ephemeral-storage".into(), "1Gi".into()),
            ]),
            max_limits: BTreeMap::from([
                ("cpu".into(), "2".into()),
                ("memory".into(), "4Gi".into()),
            ]),
            egress: EgressPolicy::default(),
            progress_deadline: Duration::from_secs(300),
            allowed_registries: Vec::new(),
            allowed_pod_annotations: Vec::new(),
            image_pull_secrets: Vec::new(),
            viewers: Vec::new(),
            sleep: None,
            wake_service: None,
            log_reader: None,
            flux_applier_role: None,
            flux: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::class::{Limits as ClassLimits, NamespacePolicy, TtlPolicy};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        policy: PolicyArgs,
    }

    #[test]
    fn flag_defaults_match_config_default() {
        let cli = Cli::try_parse_from(["x"]).expect("defaults parse");
        assert_eq!(cli.policy.into_config().expect("valid"), Config::default());
        let cli = Cli::try_parse_from(["x", "--namespace-prefix", "PR_"]).expect("parses");
        assert!(cli.policy.into_config().is_err());
    }

    #[test]
    fn a_class_overrides_the_defaults_it_names() {
        let class = PreviewClassSpec {
            ttl: Some(TtlPolicy {
                default: Some("1h".into()),
                max: Some("2d".into()),
            }),
            limits: Some(ClassLimits {
                active_per_namespace: Some(2),
                ..ClassLimits::default()
            }),
            ..PreviewClassSpec::default()
        };
        let config = Config::default().with_class(&class).expect("valid");
        assert_eq!(config.default_ttl, Duration::from_secs(3600));
        assert_eq!(config.max_ttl, Duration::from_secs(2 * 86_400));
        assert_eq!(config.limits.per_namespace, 2);
        assert_eq!(config.quota, Config::default().quota, "quota defaults stay");
        let empty = Config::default()
            .with_class(&PreviewClassSpec::default())
            .expect("valid");
        assert_eq!(empty.limits.per_namespace, 10, "never unlimited by default");
    }

    #[test]
    fn every_preview_namespace_gets_a_storage_quota_and_a_claim_maximum_by_default() {
        let config = Config::default()
            .with_class(&PreviewClassSpec::default())
            .expect("valid");
        assert_eq!(
            config.quota.get("requests.storage").map(String::as_str),
            Some("20Gi")
        );
        assert_eq!(
            config
                .quota
                .get("persistentvolumeclaims")
                .map(String::as_str),
            Some("10")
        );
        assert_eq!(config.max_claim_size, "10Gi");
        assert_eq!(config.limits.existing_per_namespace, 50);
    }

    #[test]
    fn a_class_sets_its_storage_quota_claim_maximum_and_existing_limit() {
        let class = PreviewClassSpec {
            limits: Some(ClassLimits {
                existing_per_namespace: Some(7),
                ..ClassLimits::default()
            }),
            namespace: Some(NamespacePolicy {
                quota: BTreeMap::from([("requests.storage".into(), "100Gi".into())]),
                max_claim_size: Some("50Gi".into()),
                ..NamespacePolicy::default()
            }),
            ..PreviewClassSpec::default()
        };
        let config = Config::default().with_class(&class).expect("valid");
        assert_eq!(
            config.quota.get("requests.storage").map(String::as_str),
            Some("100Gi")
        );
        assert_eq!(config.max_claim_size, "50Gi");
        assert_eq!(config.limits.existing_per_namespace, 7);
    }

    #[test]
    fn a_default_ttl_above_the_maximum_is_refused_in_the_spec_units() {
        let class = PreviewClassSpec {
            ttl: Some(TtlPolicy {
                default: Some("3d".into()),
                max: Some("1d".into()),
            }),
            ..PreviewClassSpec::default()
        };
        let err = Config::default().with_class(&class).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "ttl.default (3d) is longer than ttl.max (1d)"
        );
    }
}
