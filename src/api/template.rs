//! The `preview.dev/v1alpha1` `PreviewTemplate` API: what a team's application needs in a
//! preview, defined once per repository in the team's namespace. CI's PreviewEnvironment then
//! names the template and carries only the pull request, its sha, images and parameters.
//!
//! Template strings (images, commands, arguments, environment values) may use `<< key >>`
//! substitution; see the top-level `template` module for the keys and the rendering.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::delivery::{HelmReleaseSpec, KustomizationSpec};
use super::{
    DNS_LABEL_PATTERN, EnvVar, IMAGE_LOWERCASE_MESSAGE, IMAGE_LOWERCASE_RULE, IMAGE_PATTERN,
    MAX_ARGS, MAX_COMMAND, MAX_ENV, ServiceSpec, TEMPLATE_TEXT_BUDGET, TestSpec, text_budget,
};
use k8s_openapi::api::core::v1::ResourceRequirements;

/// The content of a team's previews: parameters, copied Secrets and ConfigMaps, backing
/// services, setup Jobs, services and tests.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "preview.dev",
    version = "v1alpha1",
    kind = "PreviewTemplate",
    plural = "previewtemplates",
    shortname = "ptpl",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    doc = "What a team's application needs in a preview, defined once per repository.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.dependencies) || !has(self.services) || self.dependencies.all(d, !self.services.exists(s, s.name == d.name))").message("a dependency and a service may not share a name (both get a Service of that name): rename one"))]
#[x_kube(validation = Rule::new("(has(self.services) && self.services.size() > 0) || (has(self.helmReleases) && self.helmReleases.size() > 0) || (has(self.kustomizations) && self.kustomizations.size() > 0)").message("a template needs services, helmReleases or kustomizations: something to preview"))]
#[x_kube(validation = Rule::new("!has(self.helmReleases) || !has(self.kustomizations) || self.helmReleases.all(h, !self.kustomizations.exists(k, k.name == h.name))").message("a helmRelease and a kustomization may not share a name (both name a Flux object): rename one"))]
#[x_kube(validation = text_budget(&[("dependencies", false, true), ("setup", true, false), ("services", true, false), ("tests", true, false)], "dependencies, setup Jobs, services and tests", TEMPLATE_TEXT_BUDGET))]
pub struct PreviewTemplateSpec {
    /// When the previews of this template sleep: sooner than their class says, never later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleep: Option<super::PreviewSleep>,

    /// Values a PreviewEnvironment may set in `spec.parameters`, used as `<< params.NAME >>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("parameter names must be unique"))]
    pub parameters: Vec<Parameter>,

    /// Secrets of this namespace copied into every preview namespace (kept in sync). The
    /// operator reads them only once the namespace has opted in with a RoleBinding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("secret names must be unique"))]
    pub secrets: Vec<SourceRef>,

    /// ConfigMaps of this namespace copied into every preview namespace (kept in sync).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("config map names must be unique"))]
    pub config_maps: Vec<SourceRef>,

    /// Backing services (a database, a cache) rolled out and ready before anything else: a
    /// StatefulSet and a Service each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("dependency names must be unique"))]
    pub dependencies: Vec<DependencySpec>,

    /// Jobs (migrations, seed data) run after the dependencies are ready and before the
    /// services roll out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("setup names must be unique"))]
    pub setup: Vec<SetupSpec>,

    /// The services, as in a PreviewEnvironment; `env` may also use `valueFrom` of the
    /// Secrets and ConfigMaps declared above. Optional when `helmReleases` or
    /// `kustomizations` deliver the application.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("service names must be unique"))]
    pub services: Vec<ServiceSpec>,

    /// Helm charts released into each preview namespace by Flux, after the setup Jobs and
    /// before the tests: from a chart repository the PreviewClass allows, or from a path of
    /// the pull request's repository at its head sha.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("helmReleases names must be unique"))]
    pub helm_releases: Vec<HelmReleaseSpec>,

    /// Kustomize directories of the pull request's repository applied into each preview
    /// namespace by Flux at its head sha, like `helmReleases`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("kustomizations names must be unique"))]
    pub kustomizations: Vec<KustomizationSpec>,

    /// Test Jobs run once per headSha after every service is available.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, t.name == s.name))").message("test names must be unique"))]
    #[x_kube(validation = Rule::new("self.all(t, !t.name.startsWith('setup-'))").message("test names may not start with setup- (setup Jobs are named setup-<name>-<sha>)"))]
    pub tests: Vec<TestSpec>,
}

/// A value the PreviewEnvironment may set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Parameter {
    /// Used as `<< params.NAME >>`: letters, digits and underscores.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$")
    )]
    pub name: String,
    /// The value when the PreviewEnvironment sets none; without a default it must set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub default: Option<String>,
    /// A regular expression a value must match, e.g. "^(small|large)$".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub pattern: Option<String>,
}

/// An object of the template's namespace, by name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SourceRef {
    /// Its name; the copy in the preview namespace has the same name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
}

/// A backing service: one pod of a StatefulSet, reached through a Service of its name.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(IMAGE_LOWERCASE_RULE).message(IMAGE_LOWERCASE_MESSAGE))]
pub struct DependencySpec {
    /// DNS-1123 label of at most 30 characters; names the StatefulSet and the Service.
    #[schemars(length(min = 1, max = 30), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,

    /// Container image reference; `<< key >>` substitution applies.
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: String,

    /// The port the Service forwards to.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_COMMAND), inner(length(max = 1024)))]
    pub command: Vec<String>,

    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ARGS), inner(length(max = 1024)))]
    pub args: Vec<String>,

    /// Environment variables; `valueFrom` may name the template's Secrets and ConfigMaps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ENV))]
    pub env: Vec<EnvVar>,

    /// Its data volume: a PersistentVolumeClaim of `size`, else an emptyDir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,

    /// When the dependency counts as ready; none: as soon as its container runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,

    /// Compute resources of the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::bounded_resources")]
    pub resources: Option<ResourceRequirements>,
}

/// The data volume of a dependency.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Size of a PersistentVolumeClaim, e.g. "1Gi", at most 1Ti (the class's
    /// `namespace.maxClaimSize` may allow less); without it the volume is an emptyDir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 16),
        regex(pattern = r"^[0-9]+(\.[0-9]+)?(k|M|G|T|Ki|Mi|Gi|Ti)?$")
    )]
    // The pattern keeps out the P and E suffixes (and lets the CEL quantity parse only sane
    // text); the rule bounds the value: "999999Gi" matches the pattern.
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0')) && quantity(self).compareTo(quantity('1Ti')) <= 0").message("storage.size must be a quantity from 1 byte to 1Ti, such as 1Gi or 500Mi; the PreviewClass may allow less (namespace.maxClaimSize)"))]
    pub size: Option<String>,
    /// Where the volume is mounted, e.g. /var/lib/postgresql/data.
    #[serde(default = "default_mount_path")]
    #[schemars(length(min = 2, max = 256), regex(pattern = r"^/\S*$"))]
    pub mount_path: String,
}

fn default_mount_path() -> String {
    "/data".to_string()
}

/// A readiness check of a dependency: exactly one of the three.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.tcpSocket) && self.tcpSocket, has(self.exec), has(self.httpPath)].filter(x, x).size() == 1").message("readiness needs exactly one of tcpSocket: true, exec or httpPath"))]
pub struct Readiness {
    /// Ready once the port accepts connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<bool>,
    /// Ready once this command exits 0, e.g. ["pg_isready", "-U", "postgres"].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_COMMAND), inner(length(max = 1024)))]
    pub exec: Option<Vec<String>>,
    /// Ready once an HTTP GET of this path on the port succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^/\S*$"))]
    pub http_path: Option<String>,
}

/// A setup Job: shaped like a test, run after the dependencies and before the services.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SetupSpec {
    /// The Job, as a test is declared.
    #[serde(flatten)]
    pub job: TestSpec,
    /// `EverySha` (migrations: before every new commit rolls out) or `Once` (seed data: once
    /// per preview).
    #[serde(default)]
    pub run_on: RunOn,
}

/// When a setup Job runs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunOn {
    /// Before the services roll out at every new headSha.
    #[default]
    EverySha,
    /// Once per preview, before its first rollout.
    Once,
}
