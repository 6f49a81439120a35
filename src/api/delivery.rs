//! Delivery through Flux: the parts of a `PreviewTemplate` that bring a team's own Helm charts
//! and kustomizations into its previews (`spec.helmReleases`, `spec.kustomizations`).
//!
//! The fields say what to deliver, not how Flux does it, so another engine (an Argo CD
//! Application per entry) could map the same fields later: a chart from a chart repository or
//! from a path of the pull request's repository at its head sha, values, and a kustomize
//! directory with image overrides. The operator turns them into Flux objects
//! (`controller::build::flux`).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::DNS_LABEL_PATTERN;

/// The most Helm values one template may hold, serialized, in bytes: the values are copied
/// into each preview's HelmRelease and substituted like every template string.
pub const MAX_VALUES_BYTES: usize = 64 * 1024;

/// A Helm chart released into each preview namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseSpec {
    /// DNS-1123 label of at most 30 characters: the release's name in the preview namespace.
    #[schemars(length(min = 1, max = 30), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,

    /// Where the chart comes from.
    pub chart: ChartSource,

    /// Helm values; `<< key >>` substitution applies to every string in them (not to keys).
    /// At most 64 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub values: Option<serde_json::Value>,

    /// Values read from the template's copied ConfigMaps and Secrets (`spec.configMaps`,
    /// `spec.secrets`), merged in order before `values`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub values_from: Vec<ValuesFrom>,
}

/// A chart from a chart repository (`repository`, `name`, `version`) or from a directory of
/// the pull request's repository at its head sha (`path`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.path) ? !has(self.repository) && !has(self.name) && !has(self.version) : has(self.repository) && has(self.name)").message("chart needs either path (a chart directory in the pull request's repository) or repository and name (and a version), not both"))]
pub struct ChartSource {
    /// A Helm repository (`https://`) or an OCI registry path (`oci://`) that the
    /// PreviewClass allows (`spec.flux.chartRepositories`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^(https?|oci)://\S+$"))]
    pub repository: Option<String>,

    /// The chart's name in that repository (for `oci://`, the last path segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$")
    )]
    pub name: Option<String>,

    /// A version or semver range, e.g. `1.2.3` or `1.x`; the newest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub version: Option<String>,

    /// A chart directory in the pull request's repository, e.g. `./charts/shop`; the chart is
    /// taken at `headSha`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^\.?/?[A-Za-z0-9._/-]+$")
    )]
    #[x_kube(validation = Rule::new("!self.split('/').exists(s, s == '..')").message("chart.path may not leave the repository (no '..')"))]
    pub path: Option<String>,
}

/// Helm values from one of the template's copied ConfigMaps or Secrets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ValuesFrom {
    /// `ConfigMap` or `Secret`.
    pub kind: ValuesKind,
    /// Its name: one the template declares in `spec.configMaps` or `spec.secrets`.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The key holding the values; `values.yaml` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub values_key: Option<String>,
}

/// The kind a `valuesFrom` entry reads.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValuesKind {
    ConfigMap,
    Secret,
}

impl ValuesKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ValuesKind::ConfigMap => "ConfigMap",
            ValuesKind::Secret => "Secret",
        }
    }
}

/// A kustomize directory of the pull request's repository, applied at its head sha.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationSpec {
    /// DNS-1123 label of at most 30 characters.
    #[schemars(length(min = 1, max = 30), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: String,

    /// The directory holding `kustomization.yaml`, e.g. `./deploy/preview`.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^\.?/?[A-Za-z0-9._/-]*$")
    )]
    #[x_kube(validation = Rule::new("!self.split('/').exists(s, s == '..')").message("path may not leave the repository (no '..')"))]
    pub path: String,

    /// Image overrides, as kustomize's `images`: `<< key >>` substitution applies to
    /// `newName` and `newTag`. A PreviewEnvironment's `spec.images` entry whose key is the
    /// last path segment of `name` replaces both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub images: Vec<ImageOverride>,
}

/// One kustomize image override.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageOverride {
    /// The image name in the manifests, e.g. `ghcr.io/acme/shop-web`.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// The name to use instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub new_name: Option<String>,
    /// The tag to use, e.g. `<< shortSha >>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub new_tag: Option<String>,
}

/// Any JSON object, kept as it is by the API server.
fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
