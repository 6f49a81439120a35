//! Operator settings: the platform team's policy (TTLs, concurrency, quotas, ingress, pod
//! security) as command-line flags with `PREVIEW_OPERATOR_*` environment fallbacks.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, ValueEnum};

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

/// Policy flags. Each reads `PREVIEW_OPERATOR_<FLAG>` when not given on the command line.
#[derive(Args, Clone, Debug)]
pub struct PolicyArgs {
    /// Time to live of a preview whose spec has no ttl.
    #[arg(long, env = "PREVIEW_OPERATOR_DEFAULT_TTL", default_value = "72h", value_parser = duration_arg)]
    pub default_ttl: Duration,

    /// Longest ttl a spec may ask for; longer is a PolicyViolation.
    #[arg(long, env = "PREVIEW_OPERATOR_MAX_TTL", default_value = "7d", value_parser = duration_arg)]
    pub max_ttl: Duration,

    /// Running previews allowed per tenant namespace (0 = unlimited); the rest wait in Pending.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_MAX_PREVIEWS_PER_NAMESPACE",
        default_value_t = 0
    )]
    pub max_previews_per_namespace: usize,

    /// Prefix of preview namespace names.
    #[arg(long, env = "PREVIEW_OPERATOR_NAMESPACE_PREFIX", default_value = "pr-")]
    pub namespace_prefix: String,

    /// Pod Security Standard enforced in preview namespaces.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_POD_SECURITY_LEVEL",
        value_enum,
        default_value = "restricted"
    )]
    pub pod_security_level: PodSecurityLevel,

    /// Base domain for exposed services (`<service>-<namespace>.<domain>`); no Ingress without it.
    #[arg(long, env = "PREVIEW_OPERATOR_INGRESS_BASE_DOMAIN")]
    pub ingress_base_domain: Option<String>,

    /// IngressClass of exposed services.
    #[arg(long, env = "PREVIEW_OPERATOR_INGRESS_CLASS")]
    pub ingress_class: Option<String>,

    /// TLS Secret (in each preview namespace, e.g. replicated there) for exposed services;
    /// URLs are https when set.
    #[arg(long, env = "PREVIEW_OPERATOR_INGRESS_TLS_SECRET")]
    pub ingress_tls_secret: Option<String>,

    /// Namespace of the ingress controller, allowed through the default-deny NetworkPolicy.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_INGRESS_NAMESPACE",
        default_value = "ingress-nginx"
    )]
    pub ingress_namespace: String,

    /// ResourceQuota of every preview namespace, as `resource=quantity` pairs.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_QUOTA",
        value_delimiter = ',',
        default_value = "requests.cpu=4,requests.memory=8Gi,limits.memory=16Gi,pods=50"
    )]
    pub quota: Vec<String>,

    /// Default container requests in preview namespaces (LimitRange), as `resource=quantity`.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_DEFAULT_REQUESTS",
        value_delimiter = ',',
        default_value = "cpu=50m,memory=64Mi"
    )]
    pub default_requests: Vec<String>,

    /// Default container limits in preview namespaces (LimitRange), as `resource=quantity`.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_DEFAULT_LIMITS",
        value_delimiter = ',',
        default_value = "memory=512Mi"
    )]
    pub default_limits: Vec<String>,

    /// How long a Deployment may take to make progress before it is reported as failed.
    #[arg(long, env = "PREVIEW_OPERATOR_PROGRESS_DEADLINE", default_value = "5m", value_parser = duration_arg)]
    pub progress_deadline: Duration,
}

/// Settings the pure build and status steps need, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub max_previews_per_namespace: usize,
    pub namespace_prefix: String,
    pub pod_security_level: PodSecurityLevel,
    pub ingress: Option<IngressConfig>,
    pub ingress_namespace: String,
    pub quota: BTreeMap<String, String>,
    pub default_requests: BTreeMap<String, String>,
    pub default_limits: BTreeMap<String, String>,
    pub progress_deadline: Duration,
}

/// Where exposed services are published.
#[derive(Clone, Debug, PartialEq)]
pub struct IngressConfig {
    pub base_domain: String,
    pub class: Option<String>,
    pub tls_secret: Option<String>,
}

/// A flag value that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{flag}: {value:?} is not resource=quantity")]
    BadPair { flag: &'static str, value: String },
    #[error(
        "--default-ttl ({}) is longer than --max-ttl ({})",
        format_duration(*default),
        format_duration(*max)
    )]
    DefaultAboveMax { default: Duration, max: Duration },
    #[error("--namespace-prefix {0:?} must be lower-case letters, digits and dashes, at most 20")]
    BadPrefix(String),
}

fn pairs(flag: &'static str, values: &[String]) -> Result<BTreeMap<String, String>, ConfigError> {
    values
        .iter()
        .filter(|v| !v.trim().is_empty())
        .map(|v| match v.split_once('=') {
            Some((k, q)) if !k.trim().is_empty() && !q.trim().is_empty() => {
                Ok((k.trim().to_string(), q.trim().to_string()))
            }
            _ => Err(ConfigError::BadPair {
                flag,
                value: v.clone(),
            }),
        })
        .collect()
}

impl PolicyArgs {
    /// Validates the flags into a [`Config`].
    pub fn into_config(self) -> Result<Config, ConfigError> {
        if self.default_ttl > self.max_ttl {
            return Err(ConfigError::DefaultAboveMax {
                default: self.default_ttl,
                max: self.max_ttl,
            });
        }
        let prefix_ok = self.namespace_prefix.len() <= 20
            && self
                .namespace_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !prefix_ok {
            return Err(ConfigError::BadPrefix(self.namespace_prefix));
        }
        let ingress = self
            .ingress_base_domain
            .filter(|d| !d.is_empty())
            .map(|base_domain| IngressConfig {
                base_domain,
                class: self.ingress_class.filter(|c| !c.is_empty()),
                tls_secret: self.ingress_tls_secret.filter(|s| !s.is_empty()),
            });
        Ok(Config {
            default_ttl: self.default_ttl,
            max_ttl: self.max_ttl,
            max_previews_per_namespace: self.max_previews_per_namespace,
            namespace_prefix: self.namespace_prefix,
            pod_security_level: self.pod_security_level,
            ingress,
            ingress_namespace: self.ingress_namespace,
            quota: pairs("quota", &self.quota)?,
            default_requests: pairs("default-requests", &self.default_requests)?,
            default_limits: pairs("default-limits", &self.default_limits)?,
            progress_deadline: self.progress_deadline,
        })
    }
}

impl Default for Config {
    /// The defaults of the flags; handy for tests.
    fn default() -> Self {
        Config {
            default_ttl: Duration::from_secs(72 * 3600),
            max_ttl: Duration::from_secs(7 * 86_400),
            max_previews_per_namespace: 0,
            namespace_prefix: "pr-".into(),
            pod_security_level: PodSecurityLevel::Restricted,
            ingress: None,
            ingress_namespace: "ingress-nginx".into(),
            quota: BTreeMap::from([
                ("requests.cpu".into(), "4".into()),
                ("requests.memory".into(), "8Gi".into()),
                ("limits.memory".into(), "16Gi".into()),
                ("pods".into(), "50".into()),
            ]),
            default_requests: BTreeMap::from([
                ("cpu".into(), "50m".into()),
                ("memory".into(), "64Mi".into()),
            ]),
            default_limits: BTreeMap::from([("memory".into(), "512Mi".into())]),
            progress_deadline: Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let cli = Cli::try_parse_from(["x", "--quota", "cpu"]).expect("parses");
        let err = cli
            .policy
            .into_config()
            .expect_err("cpu alone is not a pair");
        assert!(err.to_string().contains("--quota"), "{err}");

        let cli =
            Cli::try_parse_from(["x", "--default-ttl", "10d", "--max-ttl", "1d"]).expect("parses");
        assert!(cli.policy.into_config().is_err());

        assert!(Cli::try_parse_from(["x", "--max-ttl", "forever"]).is_err());
    }

    #[test]
    fn ingress_needs_a_base_domain() {
        let cli = Cli::try_parse_from(["x", "--ingress-class", "nginx"]).expect("parses");
        assert_eq!(cli.policy.into_config().expect("valid").ingress, None);
        let cli = Cli::try_parse_from(["x", "--ingress-base-domain", "preview.example.com"])
            .expect("parses");
        let ingress = cli.policy.into_config().expect("valid").ingress;
        assert_eq!(
            ingress.map(|i| i.base_domain).as_deref(),
            Some("preview.example.com")
        );
    }
}
