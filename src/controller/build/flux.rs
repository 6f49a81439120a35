//! PURE: the Flux objects that deliver a preview's own charts and kustomizations, and the
//! identity Flux applies them with.
//!
//! Flux renders and applies; the operator keeps the order and the limits. Every object here
//! names the preview's own ServiceAccount ([`APPLIER`]), which Flux impersonates, bound only in
//! the preview namespace to the chart's applier role (`--flux-applier-role`: `edit` without
//! NetworkPolicies, quotas, LimitRanges or RBAC), so a chart can neither lift the namespace's
//! hardening nor leave it. The pull request's repository is fetched at its head sha, and every
//! source and release comes only after the setup Jobs at that sha succeeded (the same
//! [`Stage`] as the built-in services).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{COMPONENT_DELIVERY, Desired, Preview, Stage};
use crate::api::delivery::{HelmReleaseSpec as Release, KustomizationSpec as Kustomize};
use crate::config::Config;
use crate::flux::{
    self, GitReference, GitRepository, GitRepositorySpec, HelmChartTemplate, HelmChartTemplateSpec,
    HelmRelease, HelmRepository, HelmRepositorySpec, Kustomization, KustomizeImage, LayerSelector,
    LocalRef, OCIRepository, OCIRepositorySpec, OciReference, PostBuild, Remediated, Remediation,
    SourceRef, ValuesReference,
};
use crate::naming::short_sha;

/// The ServiceAccount (and its RoleBinding) Flux applies a preview's charts as.
pub const APPLIER: &str = "preview-applier";
/// The part of the GitRepository of the pull request's repository (see [`source_name`]).
const SOURCE: &str = "source";
/// How often Flux looks again without a change of ours: sources are pinned (a commit, a
/// version), so only drift and chart repository updates are found this way.
const INTERVAL: &str = "1h";

/// Everything Flux needs in a preview namespace. Empty (and exclusive) for a preview that
/// does not deliver through Flux, so its objects go when a template stops using it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub service_accounts: Desired<ServiceAccount>,
    pub git_repositories: Desired<GitRepository>,
    pub helm_repositories: Desired<HelmRepository>,
    pub oci_repositories: Desired<OCIRepository>,
    pub helm_releases: Desired<HelmRelease>,
    pub kustomizations: Desired<Kustomization>,
}

impl Delivery {
    fn none() -> Self {
        Delivery {
            service_accounts: Desired::exactly(Vec::new()),
            git_repositories: Desired::exactly(Vec::new()),
            helm_repositories: Desired::exactly(Vec::new()),
            oci_repositories: Desired::exactly(Vec::new()),
            helm_releases: Desired::exactly(Vec::new()),
            kustomizations: Desired::exactly(Vec::new()),
        }
    }

    /// Leaves the sources and releases as they are (neither applied nor deleted): before the
    /// setup Jobs at the head sha succeeded, or while Flux's identity is not in place yet.
    pub fn hold(&mut self) {
        self.git_repositories = Desired::also(Vec::new());
        self.helm_repositories = Desired::also(Vec::new());
        self.oci_repositories = Desired::also(Vec::new());
        self.helm_releases = Desired::also(Vec::new());
        self.kustomizations = Desired::also(Vec::new());
    }

    /// Whether anything is delivered through Flux.
    pub fn is_empty(&self) -> bool {
        self.service_accounts.objects.is_empty()
    }
}

/// The host a preview's own charts may expose: `<namespace>.<base domain>`, and names ending
/// in `-` and it (the chart's admission policy holds them to that); none when the class
/// publishes nothing.
pub fn preview_host(preview: &Preview<'_>, config: &Config) -> Option<String> {
    let ingress = config.ingress.as_ref()?;
    Some(format!("{}.{}", preview.namespace, ingress.base_domain))
}

/// The RoleBinding that lets Flux apply as [`APPLIER`] in the preview namespace, and only
/// there; none without Flux delivery or without the applier role.
pub fn applier_binding(preview: &Preview<'_>, config: &Config) -> Option<RoleBinding> {
    if !preview.delivers_through_flux() {
        return None;
    }
    let role = config.flux_applier_role.as_ref()?;
    Some(RoleBinding {
        metadata: meta(preview, APPLIER, APPLIER),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_string(),
            kind: "ClusterRole".to_string(),
            name: role.clone(),
        },
        subjects: Some(vec![Subject {
            api_group: None,
            kind: "ServiceAccount".to_string(),
            name: APPLIER.to_string(),
            namespace: Some(preview.namespace.clone()),
        }]),
    })
}

/// The Flux objects of `preview` at `stage`: its identity always, its sources and releases
/// from [`Stage::Services`] on (held as they are before), suspended while it sleeps.
pub fn delivery(preview: &Preview<'_>, config: &Config, stage: Stage) -> Delivery {
    if !preview.delivers_through_flux() {
        return Delivery::none();
    }
    let service_account = ServiceAccount {
        metadata: meta(preview, APPLIER, APPLIER),
        // Nothing runs as it: Flux impersonates it, so no pod needs its token.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };
    let mut delivery = Delivery {
        service_accounts: Desired::exactly(vec![service_account]),
        ..Delivery::none()
    };
    if stage != Stage::Services {
        delivery.hold();
        return delivery;
    }
    let suspend = preview.asleep.then_some(true);
    let repository_needed = !preview.kustomizations.is_empty()
        || preview.helm_releases.iter().any(|h| h.chart.path.is_some());
    if repository_needed {
        delivery.git_repositories.objects = vec![git_repository(preview, config, suspend)];
    }
    for release in preview.helm_releases {
        match chart_source(release) {
            ChartFrom::Helm(url) => delivery
                .helm_repositories
                .objects
                .push(helm_repository(preview, release, url, suspend)),
            ChartFrom::Oci(url) => delivery
                .oci_repositories
                .objects
                .push(oci_repository(preview, release, url, suspend)),
            ChartFrom::Path(_) => {}
        }
        delivery
            .helm_releases
            .objects
            .push(helm_release(preview, config, release, suspend));
    }
    delivery.kustomizations.objects = (preview.kustomizations.iter())
        .map(|k| kustomization(preview, config, k, suspend))
        .collect();
    delivery
}

/// Where a release's chart comes from.
enum ChartFrom<'a> {
    /// A Helm repository (`https://`, `http://`).
    Helm(&'a str),
    /// An OCI registry path (`oci://`), the chart's name appended.
    Oci(String),
    /// A directory of the pull request's repository.
    Path(&'a str),
}

fn chart_source(release: &Release) -> ChartFrom<'_> {
    let chart = &release.chart;
    match (&chart.path, &chart.repository) {
        (Some(path), _) => ChartFrom::Path(path),
        (None, Some(url)) if url.starts_with("oci://") => ChartFrom::Oci(format!(
            "{}/{}",
            url.trim_end_matches('/'),
            chart.name.as_deref().unwrap_or_default()
        )),
        (None, url) => ChartFrom::Helm(url.as_deref().unwrap_or_default()),
    }
}

/// The name of the chart repository source of `release`.
pub fn chart_source_name(release: &str) -> String {
    format!("chart-{release}")
}

/// The name of the GitRepository of the pull request's repository at `head_sha`:
/// `source-<first 12 hex digits>`. One per commit, so a new sha is a new source: a release
/// or Kustomization moves to it in the same write that brings its new values and images,
/// and Flux waits for the new commit's chart before it upgrades (once, with both), instead
/// of upgrading for the values with the old chart and again when the chart follows.
pub fn source_name(head_sha: &str) -> String {
    let sha = head_sha.to_ascii_lowercase();
    format!("{SOURCE}-{}", sha.get(..12).unwrap_or(&sha))
}

/// The clone URL of the preview's repository under the class's `gitURL`.
pub fn repository_url(preview: &Preview<'_>, config: &Config) -> Option<String> {
    let base = config.flux.as_ref()?.git_url.as_ref()?;
    Some(format!("{base}{}.git", preview.spec.repository))
}

fn git_repository(preview: &Preview<'_>, config: &Config, suspend: Option<bool>) -> GitRepository {
    let secret = (config.flux.as_ref()).and_then(|f| f.git_secret.clone());
    GitRepository {
        metadata: meta(preview, &source_name(&preview.spec.head_sha), SOURCE),
        spec: GitRepositorySpec {
            // The policy refuses a preview that needs the repository when the class has no
            // gitURL; this is never applied empty.
            url: repository_url(preview, config).unwrap_or_default(),
            interval: INTERVAL.to_string(),
            reference: Some(GitReference {
                commit: preview.spec.head_sha.clone(),
            }),
            secret_ref: secret.map(|name| LocalRef { name }),
            suspend,
            timeout: None,
        },
        status: None,
    }
}

fn helm_repository(
    preview: &Preview<'_>,
    release: &Release,
    url: &str,
    suspend: Option<bool>,
) -> HelmRepository {
    HelmRepository {
        metadata: meta(preview, &chart_source_name(&release.name), &release.name),
        spec: HelmRepositorySpec {
            url: url.to_string(),
            interval: INTERVAL.to_string(),
            suspend,
            timeout: None,
        },
        status: None,
    }
}

fn oci_repository(
    preview: &Preview<'_>,
    release: &Release,
    url: String,
    suspend: Option<bool>,
) -> OCIRepository {
    let version = release.chart.version.clone();
    // An exact version is a tag; anything else (a range, `1.x`) a semver constraint.
    let exact = version.as_deref().is_some_and(|v| {
        let v = v.trim_start_matches('v');
        !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.')
    });
    let reference = match version {
        Some(v) if exact => OciReference {
            tag: Some(v),
            semver: None,
        },
        Some(v) => OciReference {
            tag: None,
            semver: Some(v),
        },
        None => OciReference {
            tag: Some("latest".to_string()),
            semver: None,
        },
    };
    OCIRepository {
        metadata: meta(preview, &chart_source_name(&release.name), &release.name),
        spec: OCIRepositorySpec {
            url,
            interval: INTERVAL.to_string(),
            reference: Some(reference),
            layer_selector: Some(LayerSelector {
                media_type: flux::HELM_CHART_LAYER.to_string(),
                operation: "copy".to_string(),
            }),
            suspend,
        },
        status: None,
    }
}

fn helm_release(
    preview: &Preview<'_>,
    config: &Config,
    release: &Release,
    suspend: Option<bool>,
) -> HelmRelease {
    let from = |kind: &str, name: String| SourceRef {
        kind: kind.to_string(),
        name,
    };
    let (chart, chart_ref) = match chart_source(release) {
        ChartFrom::Path(path) => (
            Some(chart_template(
                path,
                None,
                from("GitRepository", source_name(&preview.spec.head_sha)),
                // The chart's version gets the commit: a new sha is a new chart, and the
                // release's history shows which one it runs (`observe::delivery`).
                Some("Revision"),
            )),
            None,
        ),
        ChartFrom::Helm(_) => (
            Some(chart_template(
                release.chart.name.as_deref().unwrap_or_default(),
                release.chart.version.clone(),
                from("HelmRepository", chart_source_name(&release.name)),
                None,
            )),
            None,
        ),
        ChartFrom::Oci(_) => (
            None,
            Some(from("OCIRepository", chart_source_name(&release.name))),
        ),
    };
    // No retries: a failed install or upgrade is reported at once, and a new sha (a new
    // generation) tries again.
    let no_retries = Some(Remediated {
        remediation: Some(Remediation { retries: 0 }),
    });
    HelmRelease {
        metadata: meta(preview, &release.name, &release.name),
        spec: flux::HelmReleaseSpec {
            interval: INTERVAL.to_string(),
            chart,
            chart_ref,
            release_name: Some(release.name.clone()),
            service_account_name: Some(APPLIER.to_string()),
            suspend,
            timeout: Some(timeout(config)),
            install: no_retries.clone(),
            upgrade: no_retries,
            values_from: (release.values_from.iter())
                .map(|v| ValuesReference {
                    kind: v.kind.as_str().to_string(),
                    name: v.name.clone(),
                    values_key: v.values_key.clone(),
                })
                .collect(),
            values: release.values.clone(),
        },
        status: None,
    }
}

fn chart_template(
    chart: &str,
    version: Option<String>,
    source_ref: SourceRef,
    reconcile_strategy: Option<&str>,
) -> HelmChartTemplate {
    HelmChartTemplate {
        spec: HelmChartTemplateSpec {
            chart: chart.to_string(),
            version,
            source_ref,
            reconcile_strategy: reconcile_strategy.map(str::to_string),
            interval: Some(INTERVAL.to_string()),
        },
    }
}

fn kustomization(
    preview: &Preview<'_>,
    config: &Config,
    k: &Kustomize,
    suspend: Option<bool>,
) -> Kustomization {
    Kustomization {
        metadata: meta(preview, &k.name, &k.name),
        spec: flux::KustomizationSpec {
            interval: INTERVAL.to_string(),
            path: k.path.clone(),
            prune: true,
            source_ref: SourceRef {
                kind: "GitRepository".to_string(),
                name: source_name(&preview.spec.head_sha),
            },
            service_account_name: Some(APPLIER.to_string()),
            // Every namespaced object lands in the preview namespace, whatever the manifests
            // say; cluster-scoped ones are refused by the applier's role.
            target_namespace: Some(preview.namespace.clone()),
            suspend,
            timeout: Some(timeout(config)),
            // Ready only once what it applied is ready: the tests wait for it.
            wait: Some(true),
            images: (k.images.iter())
                .map(|i| KustomizeImage {
                    name: i.name.clone(),
                    new_name: i.new_name.clone(),
                    new_tag: i.new_tag.clone(),
                })
                .collect(),
            post_build: Some(PostBuild {
                substitute: substitutions(preview, config),
            }),
        },
        status: None,
    }
}

/// The keys a kustomization's manifests may use as `${key}` (Flux's post-build substitution):
/// the template keys that do not need the template's parameters, and `quote`.
///
/// Flux substitutes in the YAML it renders from the built objects, where the manifest's own
/// quotes are gone: a short sha of digits only (one in 27) or `1e5…` comes back a number, and a
/// string field refuses it. `${quote}${shortSha}${quote}` keeps it a string (Flux's documented
/// remedy, with the double quote as a variable), so the operator always defines `quote`.
fn substitutions(preview: &Preview<'_>, config: &Config) -> BTreeMap<String, String> {
    let spec = preview.spec;
    let mut keys = BTreeMap::from([
        ("headSha".to_string(), spec.head_sha.clone()),
        (
            "shortSha".to_string(),
            short_sha(&spec.head_sha).to_string(),
        ),
        ("pullRequest".to_string(), spec.pull_request.to_string()),
        ("repository".to_string(), spec.repository.clone()),
        ("namespace".to_string(), preview.namespace.clone()),
        ("name".to_string(), preview.owner.name.clone()),
        ("quote".to_string(), "\"".to_string()),
    ]);
    if let Some(branch) = &spec.branch {
        keys.insert("branch".to_string(), branch.clone());
        keys.insert("branchSlug".to_string(), crate::template::slug(branch));
    }
    if let Some(host) = preview_host(preview, config) {
        keys.insert("host".to_string(), host);
    }
    keys
}

/// How long Flux waits for an install, upgrade or health check: the rollout's deadline.
fn timeout(config: &Config) -> String {
    format!("{}s", config.progress_deadline.as_secs())
}

fn meta(preview: &Preview<'_>, name: &str, part: &str) -> ObjectMeta {
    preview.child_meta(name, COMPONENT_DELIVERY, part)
}
