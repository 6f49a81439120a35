//! The `preview.dev/v1alpha1` `PreviewClass` API: the platform team's policy, cluster-scoped,
//! so tenants (who can only write in their own namespaces) cannot change it. It says which
//! tenant namespaces may preview which repositories, and the limits, hardening and ingress
//! of their previews.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation marking the class that serves previews naming none.
pub const DEFAULT_CLASS: &str = "preview.dev/is-default-class";

/// Running previews per tenant namespace when the class sets no limit: enough for a team's
/// open pull requests, not enough for one tenant to crowd out the others.
pub const DEFAULT_ACTIVE_PER_NAMESPACE: usize = 10;

/// Previews that may exist per tenant namespace when the class sets no limit, running or not:
/// every one is cached whole by every replica, and a refused one still costs a reconcile.
pub const DEFAULT_EXISTING_PER_NAMESPACE: usize = 50;

/// The largest PersistentVolumeClaim a dependency may ask for when the class sets no maximum.
pub const DEFAULT_MAX_CLAIM_SIZE: &str = "10Gi";

/// What the operator says about a class (written by `controller::classes`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreviewClassStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// PreviewEnvironments the class serves now (those naming it, and, for the default
    /// class, those naming none).
    #[serde(default)]
    pub previews: i64,
    /// The tenant namespaces it binds, the first few.
    #[serde(default)]
    pub tenants: String,
    /// `Ready`: every Secret it names exists (`ClassNotReady` names the missing ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Policy for the previews of the tenants it lists.
// clippy reads repeated `type_ = "string"` inside the printcolumn(...) lists as duplicated
// attributes; they are separate columns.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "preview.dev",
    version = "v1alpha1",
    kind = "PreviewClass",
    plural = "previewclasses",
    shortname = "pclass",
    derive = "PartialEq",
    derive = "Default",
    doc = "Policy for previews: which tenant namespaces may preview which repositories, and their limits.",
    status = "PreviewClassStatus",
    printcolumn(
        name = "Default",
        type_ = "string",
        json_path = ".metadata.annotations.preview\\.dev/is-default-class"
    ),
    printcolumn(name = "Tenants", type_ = "string", json_path = ".status.tenants"),
    printcolumn(name = "TTL", type_ = "string", json_path = ".spec.ttl.default"),
    printcolumn(name = "Previews", type_ = "integer", json_path = ".status.previews"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PreviewClassSpec {
    /// Who may preview which repositories; empty means nobody.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 200))]
    pub tenants: Vec<Tenant>,

    /// Time to live of a preview: the default, and the most a spec may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<TtlPolicy>,

    /// Hard cap on a preview's life counted from its creation, whatever its headSha does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 24), regex(pattern = super::DURATION_PATTERN))]
    pub max_lifetime: Option<String>,

    /// Running previews allowed; the others wait in Pending, first come first served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,

    /// Hardening of every preview namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<NamespacePolicy>,

    /// Where exposed services are published; without it nothing is exposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressPolicy>,

    /// Image prefixes previews may use (e.g. "ghcr.io/acme/"); empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), inner(length(min = 1, max = 256)))]
    pub allowed_registries: Vec<String>,

    /// Pod annotation keys previews may set, as globs (e.g. "prometheus.io/*"); empty means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), inner(length(min = 1, max = 253)))]
    pub allowed_pod_annotations: Vec<String>,

    /// Secrets in the platform Secrets namespace (the chart's platformSecrets.namespace) copied
    /// into every preview namespace, where pods may use them only as imagePullSecrets (the
    /// ingress TLS Secret is copied the same way, for the ingress controller).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub image_pull_secrets: Vec<SecretRef>,

    /// When previews sleep (their workloads scaled to zero) and how long they may sleep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<SleepPolicy>,

    /// Delivery through Flux (templates' `helmReleases` and `kustomizations`): where the pull
    /// requests' repositories are fetched from and which chart repositories are allowed.
    /// Without it, previews of this class may not use Flux.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flux: Option<FluxPolicy>,
}

/// How the previews of a class are delivered through Flux.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FluxPolicy {
    /// Where pull requests' repositories are cloned from: a preview of `acme/shop` fetches
    /// `<gitURL>acme/shop.git` at its head sha, e.g. `https://github.com/`.
    #[serde(default, rename = "gitURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^(https?|ssh)://\S+/$"))]
    pub git_url: Option<String>,
    /// A Secret in the platform Secrets namespace with the Git credentials (`username` and
    /// `password`, or `identity` and `known_hosts`), copied into each preview namespace for
    /// Flux only: pods may not read it there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
    )]
    pub git_secret_name: Option<String>,
    /// Chart repository URL prefixes charts may come from (`https://charts.example.com/`,
    /// `oci://ghcr.io/acme/charts/`), compared in whole path segments; empty: none, only
    /// charts in the pull request's repository.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 50),
        inner(length(min = 1, max = 512), regex(pattern = r"^(https?|oci)://\S+$"))
    )]
    pub chart_repositories: Vec<String>,
}

/// Sleeping previews cost nothing but their storage; they wake on demand.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SleepPolicy {
    /// A preview sleeps after this long without a new headSha, a spec change or a wake, and
    /// no test running, e.g. "2h". A preview or template may ask for less, never more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 24), regex(pattern = super::DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("afterIdle must be a positive duration such as 2h"))]
    pub after_idle: Option<String>,

    /// Windows in which every preview sleeps (nights, weekends); each ends with a wake.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub schedules: Vec<SleepSchedule>,

    /// A preview that has slept this long is deleted, e.g. "72h".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 24), regex(pattern = super::DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("deleteAfterSleeping must be a positive duration such as 72h"))]
    pub delete_after_sleeping: Option<String>,

    /// Whether the `preview.dev/never-sleep: "true"` annotation keeps a preview awake.
    #[serde(default)]
    pub allow_never_sleep: bool,
}

/// A weekly window in which previews sleep.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SleepSchedule {
    /// Days the window starts on: "Mon-Fri", "Sat,Sun", "Mon,Wed-Fri".
    #[schemars(
        length(min = 3, max = 64),
        regex(
            pattern = r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun)(-(Mon|Tue|Wed|Thu|Fri|Sat|Sun))?(,(Mon|Tue|Wed|Thu|Fri|Sat|Sun)(-(Mon|Tue|Wed|Thu|Fri|Sat|Sun))?)*$"
        )
    )]
    pub days: String,
    /// When the window starts, "HH:MM" (24h) in `timeZone`.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub sleep_at: String,
    /// When it ends (the next day when earlier than `sleepAt`); previews wake then.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub wake_at: String,
    /// An IANA time zone, e.g. "Europe/Berlin"; UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
}

/// A Secret by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretRef {
    /// The Secret's name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// Tenant namespaces and the repositories they may preview.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.namespaces) > 0 || has(self.namespaceSelector)").message("a tenant needs namespaces or a namespaceSelector"))]
pub struct Tenant {
    /// Namespaces by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 500))]
    pub namespaces: Vec<String>,

    /// Namespaces by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Repositories as `owner/name` globs; `*` matches within one path segment; case-insensitive.
    #[schemars(length(min = 1, max = 200))]
    pub repositories: Vec<String>,

    /// Where these repositories are hosted: `github`, `gitlab` or both; default `[github]`. A
    /// path bound on one provider is not bound on the other: `acme/shop` on GitHub and a
    /// GitLab project `acme/shop` may belong to different people.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub providers: Vec<super::Provider>,

    /// RBAC subjects granted the built-in `view` role in these tenants' preview namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub viewers: Vec<Viewer>,
}

impl Tenant {
    /// Whether this tenant's repositories are on `provider`.
    pub fn hosted_on(&self, provider: super::Provider) -> bool {
        if self.providers.is_empty() {
            provider == super::Provider::Github
        } else {
            self.providers.contains(&provider)
        }
    }
}

/// An RBAC subject: a Group or a User.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Viewer {
    /// `Group` or `User`.
    #[schemars(regex(pattern = r"^(Group|User)$"))]
    pub kind: String,
    /// The group's or user's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Time to live of previews.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TtlPolicy {
    /// For previews whose spec names no ttl (default 72h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 24), regex(pattern = super::DURATION_PATTERN))]
    pub default: Option<String>,
    /// The longest a spec may ask for (default 7d); longer is a PolicyViolation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 24), regex(pattern = super::DURATION_PATTERN))]
    pub max: Option<String>,
}

/// Running previews allowed at once.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Per tenant namespace (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub active_per_namespace: Option<i32>,
    /// Per repository, over every tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub active_per_repository: Option<i32>,
    /// Over every preview of this class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub active: Option<i32>,
    /// Previews that may exist per tenant namespace, running, waiting or refused (default 50).
    /// The oldest keep their place; newer ones are refused with PolicyViolation until older
    /// ones are deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub existing_per_namespace: Option<i32>,
}

/// Hardening of every preview namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespacePolicy {
    /// Pod Security Standard enforced: privileged, baseline or restricted (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(privileged|baseline|restricted)$"))]
    pub pod_security_level: Option<String>,
    /// ResourceQuota `hard` of every preview namespace; merged over the operator's defaults
    /// (which include `requests.storage: 20Gi` and `persistentvolumeclaims: "10"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    pub quota: BTreeMap<String, String>,
    /// The largest PersistentVolumeClaim a dependency may ask for (`storage.size`), e.g.
    /// "10Gi" (the default); larger is a PolicyViolation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("maxClaimSize must be a positive quantity such as 10Gi"))]
    pub max_claim_size: Option<String>,
    /// LimitRange of every container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_range: Option<LimitRangePolicy>,
    /// Where pods may connect to; everything else is denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressPolicy>,
}

/// Container defaults and ceilings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LimitRangePolicy {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20))]
    pub default_requests: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20))]
    pub default_limits: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 20))]
    pub max: BTreeMap<String, String>,
}

/// Egress allowed from preview pods besides their own namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EgressPolicy {
    /// DNS to kube-system (default true).
    #[serde(default = "yes")]
    pub allow_dns: bool,
    /// CIDRs pods may reach (e.g. "0.0.0.0/0" for the internet); link-local addresses (cloud
    /// metadata) stay blocked unless listed themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub allow_cidrs: Vec<String>,
    /// Namespaces pods may reach, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub allow_namespaces: Vec<String>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        EgressPolicy {
            allow_dns: true,
            allow_cidrs: Vec::new(),
            allow_namespaces: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// Where exposed services are published.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngressPolicy {
    /// Hosts are `<service>-<preview>-<hash>.<baseDomain>`.
    #[schemars(length(min = 1, max = 200))]
    pub base_domain: String,
    /// IngressClass of the Ingresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// TLS Secret (a wildcard certificate for the base domain) in each preview namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Namespace of the ingress controller, allowed in by the NetworkPolicy (default ingress-nginx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_namespace: Option<String>,
}
