//! The `PreviewEnvironment` spec: its types, the admission rules (OpenAPI bounds, patterns,
//! CEL rules, size budgets) and the printer columns of `kubectl get previewenv`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::core::{Message, Rule};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::DURATION_PATTERN;
use super::status::PreviewEnvironmentStatus;

/// A short-lived environment for one pull request: a hardened namespace with the PR's
/// services, and test Jobs run against them.
// clippy reads repeated `type_ = "string"` inside the printcolumn(...) lists as duplicated
// attributes; they are separate columns.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "preview.dev",
    version = "v1alpha1",
    kind = "PreviewEnvironment",
    plural = "previewenvironments",
    shortname = "previewenv",
    shortname = "pe",
    namespaced,
    status = "PreviewEnvironmentStatus",
    derive = "PartialEq",
    doc = "A short-lived, tested environment for one pull request.",
    printcolumn(name = "PR", type_ = "integer", json_path = ".spec.pullRequest"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Tests", type_ = "string", json_path = ".status.testSummary"),
    printcolumn(name = "URL", type_ = "string", json_path = ".status.url"),
    // A string, not a date: kubectl prints a future date column as "<invalid>".
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Repository",
        type_ = "string",
        json_path = ".spec.repository",
        priority = "1"
    ),
    printcolumn(
        name = "SHA",
        type_ = "string",
        json_path = ".spec.headSha",
        priority = "1"
    ),
    printcolumn(
        name = "Namespace",
        type_ = "string",
        json_path = ".status.namespace",
        priority = "1"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.templateRef) || (has(self.services) && size(self.services) > 0)").message("a preview needs services: list them in spec.services, or name a PreviewTemplate in spec.templateRef"))]
#[x_kube(validation = Rule::new("!has(self.templateRef) || (!has(self.services) && !has(self.tests))").message("spec.templateRef and spec.services/spec.tests are exclusive: the template holds the services and tests"))]
#[x_kube(validation = Rule::new("has(self.templateRef) || (!has(self.images) && !has(self.parameters))").message("spec.images and spec.parameters need a spec.templateRef"))]
#[x_kube(validation = Rule::new("(has(self.provider) && self.provider == 'gitlab') || self.repository.matches('^[^/]+/[^/]+$')").message("a GitHub repository is owner/name; a path with subgroups (group/sub/project) needs provider: gitlab"))]
#[x_kube(validation = Rule::new("!has(self.mergeGroup) || !has(self.provider) || self.provider == 'github'").message("mergeGroup is GitHub's merge queue: it needs provider github"))]
#[x_kube(validation = text_budget(&[("services", true, false), ("tests", true, false)], "services and tests", PREVIEW_TEXT_BUDGET))]
pub struct PreviewEnvironmentSpec {
    /// The repository: "owner/name" on GitHub, the project path on GitLab (subgroups allowed:
    /// "group/sub/project").
    #[schemars(
        length(min = 3, max = 255),
        regex(pattern = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("repository is immutable: create a new PreviewEnvironment for another repository"))]
    #[x_kube(validation = Rule::new("!self.matches('(^|/)[.][.]?(/|$)')").message("repository path segments may not be . or ..: write owner/name as the hosting service shows it"))]
    pub repository: String,

    /// Where the repository is hosted: github (the default) or gitlab. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("provider is immutable: create a new PreviewEnvironment"))]
    pub provider: Option<Provider>,

    /// The pull request number (on GitLab, the merge request's iid).
    #[schemars(range(min = 1, max = 2_147_483_647))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("pullRequest is immutable: create a new PreviewEnvironment for another pull request"))]
    pub pull_request: i64,

    /// The commit to deploy and test: 7 to 40 lowercase hex digits.
    #[schemars(length(min = 7, max = 40), regex(pattern = r"^[0-9a-f]{7,40}$"))]
    pub head_sha: String,

    /// The GitHub merge queue group this preview stands for, instead of its pull request's
    /// head: `headSha` is the group's head commit (`github.event.merge_group.head_sha`), where
    /// its check is reported, and the group's `merge_group` `destroyed` delivery tears it down.
    /// `pullRequest` names the pull request the group tests. GitHub only. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("mergeGroup is immutable: create a new PreviewEnvironment for another merge group"))]
    pub merge_group: Option<MergeGroup>,

    /// The pull request's branch, for display only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub branch: Option<String>,

    /// The PreviewClass whose policy applies; the default class when unset. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("previewClassName is immutable: create a new PreviewEnvironment for another class"))]
    pub preview_class_name: Option<String>,

    /// How long the environment lives after the operator first saw the current headSha, e.g.
    /// "72h", "1d12h", "30m". Default and maximum come from the operator's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 24), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("ttl must be a positive duration such as 72h, 1d12h or 30m"))]
    pub ttl: Option<String>,

    /// The PreviewTemplate of this namespace that holds the services, tests and everything
    /// else; exclusive with `services` and `tests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<TemplateRef>,

    /// Images that replace the template's, by service, dependency, setup or test name: CI's
    /// freshly built tags. Only with `templateRef`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 30 && size(self[k]) <= 512)").message("images maps a name (at most 30 characters) to an image reference (at most 512)"))]
    pub images: BTreeMap<String, String>,

    /// Values of the template's parameters, checked against its names and patterns. Only
    /// with `templateRef`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 63 && size(self[k]) <= 512)").message("parameter names may have at most 63 characters and values at most 512"))]
    pub parameters: BTreeMap<String, String>,

    /// When this preview sleeps: sooner than its class says, never later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<PreviewSleep>,

    /// The services to roll out without a template: 1 to 20, names unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("service names must be unique"))]
    #[x_kube(validation = Rule::new("self.all(s, !has(s.env) || s.env.all(e, !has(e.valueFrom)))").message("env valueFrom needs a PreviewTemplate that declares the Secret or ConfigMap: move the services into a template"))]
    pub services: Vec<ServiceSpec>,

    /// Test Jobs run once per headSha after every service is available: 0 to 10, names unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("test names must be unique"))]
    #[x_kube(validation = Rule::new("self.all(s, !has(s.env) || s.env.all(e, !has(e.valueFrom)))").message("env valueFrom needs a PreviewTemplate that declares the Secret or ConfigMap: move the tests into a template"))]
    pub tests: Vec<TestSpec>,
}

/// Where a repository is hosted.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Github,
    Gitlab,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
        }
    }

    /// The provider's name as people write it, for messages.
    pub fn title(self) -> &'static str {
        match self {
            Provider::Github => "GitHub",
            Provider::Gitlab => "GitLab",
        }
    }
}

/// A GitHub merge queue group, by its ref.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MergeGroup {
    /// The group's ref, as `github.event.merge_group.head_ref` gives it:
    /// `refs/heads/gh-readonly-queue/<base>/pr-<n>-<sha>` (`refs/heads/` may be left out).
    #[schemars(
        length(min = 17, max = 255),
        regex(pattern = r"^(refs/heads/)?gh-readonly-queue/[^\s]+$")
    )]
    pub head_ref: String,
}

impl MergeGroup {
    /// The ref without `refs/heads/`, as both spellings compare.
    pub fn branch(&self) -> &str {
        short_ref(&self.head_ref)
    }
}

/// A branch ref without `refs/heads/`.
pub fn short_ref(head_ref: &str) -> &str {
    head_ref.strip_prefix("refs/heads/").unwrap_or(head_ref)
}

impl PreviewEnvironmentSpec {
    /// Where the repository is hosted.
    pub fn provider(&self) -> Provider {
        self.provider.unwrap_or_default()
    }
}

// Size bounds. Every replica caches every PreviewEnvironment and PreviewTemplate whole, so the
// schema bounds the size of each: counts of lists here, lengths of strings at each field, and
// one budget for the free text of a spec's containers (`text_budget`), since per-item
// bounds alone multiply (20 services x 64 args x 1024 characters made 1.3 MiB). The worst
// cases these allow are computed from the generated schema and checked in
// `controller::limits::spec_size`.

/// Command words per container.
pub(crate) const MAX_COMMAND: u32 = 16;
/// Arguments per container.
pub(crate) const MAX_ARGS: u32 = 32;
/// Environment variables per container.
pub(crate) const MAX_ENV: u32 = 32;
/// Pod annotations per container.
pub(crate) const MAX_POD_ANNOTATIONS: u32 = 16;
/// Characters of command, args, env and pod annotations of all containers of a
/// PreviewEnvironment together.
pub const PREVIEW_TEXT_BUDGET: usize = 32 * 1024;
/// The same for a PreviewTemplate (which may have 50 containers and `valueFrom` references).
pub const TEMPLATE_TEXT_BUDGET: usize = 64 * 1024;

/// The CEL rule that keeps the free text of the containers in the lists `kinds` (each with
/// whether it has `podAnnotations` and `readiness`) within `budget` characters: command words,
/// arguments, env names, values and `valueFrom` references, pod annotation keys and values,
/// readiness commands; `what` names the lists in the message. Linear in the items, so its
/// estimated cost stays within the API server's limit (checked on the rig).
pub(crate) fn text_budget(kinds: &[(&str, bool, bool)], what: &str, budget: usize) -> Rule {
    let words = |list: &str| format!("(has(c.{list}) ? c.{list}.map(x, size(x)).sum() : 0)");
    let key_ref = |r: &str| {
        format!(
            "(has(e.valueFrom.{r}) ? size(e.valueFrom.{r}.name) + size(e.valueFrom.{r}.key) : 0)"
        )
    };
    let env = format!(
        "(has(c.env) ? c.env.map(e, size(e.name) + (has(e.value) ? size(e.value) : 0) + \
         (has(e.valueFrom) ? {} + {} : 0)).sum() : 0)",
        key_ref("secretKeyRef"),
        key_ref("configMapKeyRef")
    );
    let per_kind = kinds.iter().map(|(list, annotations, readiness)| {
        let mut parts = vec![words("command"), words("args"), env.clone()];
        if *annotations {
            parts.push(
                "(has(c.podAnnotations) ? c.podAnnotations.map(k, size(k) + \
                 size(c.podAnnotations[k])).sum() : 0)"
                    .to_string(),
            );
        }
        if *readiness {
            parts.push(
                "(has(c.readiness) && has(c.readiness.exec) ? \
                 c.readiness.exec.map(x, size(x)).sum() : 0)"
                    .to_string(),
            );
        }
        format!(
            "(has(self.{list}) ? self.{list}.map(c, {}).sum() : 0)",
            parts.join(" + ")
        )
    });
    let total = per_kind.collect::<Vec<_>>().join(" + ");
    // A static message: one that prints the total (messageExpression) is estimated at more
    // than 100 times the API server's cost limit, and the CRD is refused.
    Rule::new(format!("{total} <= {budget}")).message(Message::Message(format!(
        "the command, args, env (names, values and valueFrom references) and podAnnotations of \
         all {what} may hold at most {budget} characters together: shorten them, or move \
         configuration into a ConfigMap the containers read"
    )))
}

/// The schema of a container's `resources`: core/v1 ResourceRequirements with bounds, since
/// its maps and lists are unbounded in the Kubernetes schema. Quantities are checked for their
/// syntax too, so a typo is refused at admission rather than when the pod is created.
pub(crate) fn bounded_resources(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let quantities = serde_json::json!({
        "type": "object",
        "maxProperties": 6,
        "additionalProperties": {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": 24,
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": true,
        },
        "x-kubernetes-validations": [{
            "rule": "self.all(k, size(k) <= 63)",
            "message": "resource names may have at most 63 characters",
        }],
    });
    let name = serde_json::json!({"type": "string", "maxLength": 63});
    let schema = serde_json::json!({
        "description": "Compute resources of the container: requests, limits (at most 6 each).",
        "type": "object",
        "nullable": true,
        "properties": {
            "limits": quantities,
            "requests": quantities,
            "claims": {
                "type": "array",
                "maxItems": 2,
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": name, "request": name},
                },
            },
        },
    });
    schemars::Schema::try_from(schema).unwrap_or_default()
}

/// A Kubernetes quantity: "100m", "1.5", "512Mi", "2G", "1e3".
const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// One of the pull request's services: a Deployment, plus a Service when it has a port, plus an
/// Ingress when exposed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.expose) || !self.expose || has(self.port)").message("expose: true needs a port to route to: set port"))]
#[x_kube(validation = Rule::new("!has(self.readinessPath) || has(self.port)").message("readinessPath needs a port to probe: set port"))]
#[x_kube(validation = Rule::new(IMAGE_LOWERCASE_RULE).message(IMAGE_LOWERCASE_MESSAGE))]
pub struct ServiceSpec {
    /// DNS-1123 label of at most 30 characters; names the Deployment and Service.
    #[schemars(length(min = 1, max = 30), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,

    /// Container image reference.
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: String,

    /// Container port; creates a Service when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Creates an Ingress at `<service>-<preview-namespace>.<base domain>`; needs `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expose: Option<bool>,

    /// Number of pods, 0 to 10.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 10))]
    pub replicas: i32,

    /// Overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_COMMAND), inner(length(max = 1024)))]
    pub command: Vec<String>,

    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ARGS), inner(length(max = 1024)))]
    pub args: Vec<String>,

    /// Plain environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ENV))]
    pub env: Vec<EnvVar>,

    /// Compute resources of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "bounded_resources")]
    pub resources: Option<ResourceRequirements>,

    /// HTTP path of a readiness probe on `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^/\S*$"))]
    pub readiness_path: Option<String>,

    /// Annotations on the service's pods; the class says which keys are allowed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_POD_ANNOTATIONS))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 253 && size(self[k]) <= 1024)").message("pod annotation keys may have at most 253 characters and values at most 1024"))]
    pub pod_annotations: BTreeMap<String, String>,
}

/// A test Job run against the environment once per headSha.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(IMAGE_LOWERCASE_RULE).message(IMAGE_LOWERCASE_MESSAGE))]
pub struct TestSpec {
    /// DNS-1123 label of at most 30 characters; the Job is named `<name>-<short sha>`.
    #[schemars(length(min = 1, max = 30), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,

    /// Container image reference.
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: String,

    /// Overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_COMMAND), inner(length(max = 1024)))]
    pub command: Vec<String>,

    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ARGS), inner(length(max = 1024)))]
    pub args: Vec<String>,

    /// Plain environment variables, in addition to the PREVIEW_* ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ENV))]
    pub env: Vec<EnvVar>,

    /// Compute resources of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "bounded_resources")]
    pub resources: Option<ResourceRequirements>,

    /// Annotations on the test's pod; the class says which keys are allowed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = MAX_POD_ANNOTATIONS))]
    #[x_kube(validation = Rule::new("self.all(k, size(k) <= 253 && size(self[k]) <= 1024)").message("pod annotation keys may have at most 253 characters and values at most 1024"))]
    pub pod_annotations: BTreeMap<String, String>,

    /// How long the test may run (the Job's activeDeadlineSeconds), e.g. "30m".
    #[serde(default = "default_timeout")]
    #[schemars(length(min = 2, max = 24), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("timeout must be a positive duration such as 30m or 1h"))]
    pub timeout: String,

    /// How often a failed test is retried (the Job's backoffLimit), 0 to 5.
    #[serde(default)]
    #[schemars(range(min = 0, max = 5))]
    pub retries: i32,
}

/// A preview's (or template's) own idle time.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreviewSleep {
    /// Sleep after this long idle, e.g. "30m"; the class's afterIdle is the most it may be.
    #[schemars(length(min = 2, max = 24), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("self.matches('[1-9]')").message("afterIdle must be a positive duration such as 30m"))]
    pub after_idle: String,
}

/// The PreviewTemplate a preview is rendered from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TemplateRef {
    /// A PreviewTemplate in the PreviewEnvironment's namespace.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// An environment variable: a plain value, or (in templates) a key of a declared Secret or
/// ConfigMap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.valueFrom) || !has(self.value) || self.value == ''").message("env: set value or valueFrom, not both"))]
pub struct EnvVar {
    /// Variable name.
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    )]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    #[schemars(length(max = 2048))]
    pub value: String,
    /// A key of a Secret or ConfigMap the template declares (templates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvSource>,
}

/// Where a variable's value comes from: exactly one of the two.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)").message("valueFrom needs exactly one of secretKeyRef or configMapKeyRef"))]
pub struct EnvSource {
    /// A key of one of the template's `secrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
    /// A key of one of the template's `configMaps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
}

/// One key of a named object.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct KeyRef {
    /// The Secret's or ConfigMap's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

pub(crate) const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// An image reference without whitespace; in templates it may hold `<< key >>` substitutions.
pub(crate) const IMAGE_PATTERN: &str = r"^([^\s<>]|<<[^<>]*>>)+$";
/// CEL: the image's name (registry and repository, before a `:tag` or `@digest`) has no
/// capitals. A registry refuses them, and an allow-list check of `ghcr.io/Acme/web` would
/// blame the registry instead. `<< key >>` substitutions (`<< shortSha >>`) are left alone;
/// what they render to is checked by the operator.
pub(crate) const IMAGE_LOWERCASE_RULE: &str = "self.image.matches('^([^<>A-Z:@]|<<[^<>]*>>)+(:[0-9]+/([^<>A-Z:@]|<<[^<>]*>>)+)?(:([^<>@/]|<<[^<>]*>>)+)?(@[^<>]+)?$')";
pub(crate) const IMAGE_LOWERCASE_MESSAGE: &str = "image names are lowercase: write ghcr.io/acme/web:V1, not ghcr.io/Acme/web:V1 (only the tag may have capitals)";

fn default_replicas() -> i32 {
    1
}

fn default_timeout() -> String {
    "30m".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_with_capitals_are_refused_and_tags_and_substitutions_are_not() {
        let pattern = IMAGE_LOWERCASE_RULE
            .strip_prefix("self.image.matches('")
            .and_then(|p| p.strip_suffix("')"))
            .expect("one matches() call");
        // CEL's matches() is RE2, as the regex crate.
        let re = regex::Regex::new(pattern).expect("the rule's regex compiles");
        for good in [
            "web:1",
            "postgres:17",
            "ghcr.io/acme/shop-web:4f2c9e1",
            "ghcr.io/acme/shop-web:V1.2-RC",
            "ghcr.io/acme/shop-web:<< shortSha >>",
            "ghcr.io/acme/<< params.app >>:<< shortSha >>",
            "<< params.image >>",
            "localhost:5000/acme/web:Tag",
            "ghcr.io/acme/web@sha256:0123abcd",
            "ghcr.io/acme/web:1.0@sha256:0123abcd",
        ] {
            assert!(re.is_match(good), "{good} is a valid reference");
        }
        for bad in [
            "ghcr.io/Acme/web:1",
            "ghcr.io/acme/Web",
            "GHCR.io/acme/web:1",
            "localhost:5000/Acme/web",
        ] {
            assert!(!re.is_match(bad), "{bad} has capitals in its name");
        }
    }

    #[test]
    fn defaults_apply_when_optional_fields_are_missing() {
        let spec: PreviewEnvironmentSpec = serde_json::from_value(serde_json::json!({
            "repository": "acme/shop",
            "pullRequest": 7,
            "headSha": "4f2c9e1",
            "services": [{"name": "web", "image": "web:1"}],
            "tests": [{"name": "e2e", "image": "e2e:1"}],
        }))
        .expect("minimal spec deserializes");
        assert_eq!(spec.services[0].replicas, 1);
        assert_eq!(spec.tests[0].timeout, "30m");
        assert_eq!(spec.tests[0].retries, 0);
    }
}
