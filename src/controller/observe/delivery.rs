//! PURE: where each of a preview's Flux deliveries stands, read from what Flux reports.
//!
//! A release counts only when Flux says Ready **for the generation the operator applied** and
//! **at the head sha**: a chart from the pull request's repository carries the commit in its
//! version (`0.1.0+<first 12 hex digits>`, `reconcileStrategy: Revision`), and a
//! Kustomization names the commit it applied (`main@sha1:<sha>`). A Ready for the previous
//! commit is not Ready, nor is a HelmRelease's Ready before its release is in its history.
//! Flux's failures (a failed install or upgrade, a build or health check that failed, a source
//! it cannot fetch) fail the preview with Flux's own message.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use super::model::ServiceState;
use crate::api::Reason;
use crate::api::delivery::{HelmReleaseSpec, KustomizationSpec};
use crate::flux::{FluxStatus, HelmRelease, Kustomization, SourceStatus};
use crate::naming::short_sha;

/// The kinds a delivery is made with, as `status.releases[].kind` names them.
pub const HELM_RELEASE: &str = "HelmRelease";
pub const KUSTOMIZATION: &str = "Kustomization";

/// One delivery as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedRelease {
    pub name: String,
    pub kind: &'static str,
    pub state: ServiceState,
    /// What Flux runs now: the chart version, or the source revision applied.
    pub revision: Option<String>,
}

/// A source as the deliveries see it: what it is, for messages, and what it reports.
pub struct Source<'a> {
    pub what: String,
    pub status: Option<&'a SourceStatus>,
    pub generation: Option<i64>,
}

/// Reasons with which Flux says a release or kustomization failed, rather than that it is
/// still on its way (helm-controller's and kustomize-controller's API).
const FAILED: [&str; 10] = [
    "InstallFailed",
    "UpgradeFailed",
    "TestFailed",
    "RollbackFailed",
    "UninstallFailed",
    "InitFailed",
    "BuildFailed",
    "HealthCheckFailed",
    "ReconciliationFailed",
    "PruneFailed",
];

/// Where a HelmRelease stands. `path`: the chart comes from the pull request's repository, so
/// its version must carry `head_sha`.
pub fn helm_release(
    spec: &HelmReleaseSpec,
    object: Option<&HelmRelease>,
    source: &Source<'_>,
    head_sha: &str,
) -> ObservedRelease {
    let what = format!("helmRelease {}", spec.name);
    let Some(release) = object else {
        return observed(
            spec.name.clone(),
            HELM_RELEASE,
            progressing(&what, "not created yet"),
            None,
        );
    };
    let status = release.status.as_ref();
    let revision = status
        .and_then(|s| s.history.first())
        .map(|h| h.chart_version.clone())
        .filter(|v| !v.is_empty());
    // Ready without a release in the history says nothing about what runs: helm-controller
    // can report the Ready of a generation before it records the release (seen in CI as a
    // Ready preview whose release named no chart version), so it counts only once recorded.
    let (at_head, behind) = match (&spec.chart.path, &revision) {
        (_, None) => (false, "no release recorded yet".to_string()),
        (None, Some(_)) => (true, String::new()),
        (Some(_), Some(version)) => (
            chart_at(version, head_sha),
            format!("not at {} yet", short_sha(head_sha)),
        ),
    };
    let common = status.map(|s| &s.common);
    let state = state(
        &what,
        common,
        release.metadata.generation,
        at_head,
        source,
        &behind,
    );
    observed(spec.name.clone(), HELM_RELEASE, state, revision)
}

/// Where a Kustomization stands; it is always at the pull request's head sha.
pub fn kustomization(
    spec: &KustomizationSpec,
    object: Option<&Kustomization>,
    source: &Source<'_>,
    head_sha: &str,
) -> ObservedRelease {
    let what = format!("kustomization {}", spec.name);
    let Some(k) = object else {
        return observed(
            spec.name.clone(),
            KUSTOMIZATION,
            progressing(&what, "not created yet"),
            None,
        );
    };
    let status = k.status.as_ref();
    let revision = status.and_then(|s| s.last_applied_revision.clone());
    let at_head = revision
        .as_deref()
        .is_some_and(|r| revision_at(r, head_sha));
    let state = state(
        &what,
        status.map(|s| &s.common),
        k.metadata.generation,
        at_head,
        source,
        &format!("not applied at {} yet", short_sha(head_sha)),
    );
    observed(spec.name.clone(), KUSTOMIZATION, state, revision)
}

fn observed(
    name: String,
    kind: &'static str,
    state: ServiceState,
    revision: Option<String>,
) -> ObservedRelease {
    ObservedRelease {
        name,
        kind,
        state,
        revision,
    }
}

fn progressing(what: &str, message: &str) -> ServiceState {
    ServiceState::Progressing(format!("{what}: {message}"))
}

/// The state of one Flux object from its conditions, the generation applied, whether it is at
/// the head sha, and its source.
fn state(
    what: &str,
    status: Option<&FluxStatus>,
    generation: Option<i64>,
    at_head: bool,
    source: &Source<'_>,
    behind: &str,
) -> ServiceState {
    let Some(status) = status else {
        return source_failure(source).unwrap_or_else(|| progressing(what, "waiting for Flux"));
    };
    let condition = |kind: &str| status.conditions.iter().find(|c| c.type_ == kind);
    // Conditions of an older generation say nothing about what was applied last. The Ready
    // condition carries its own generation: an install denied by RBAC leaves the status's
    // `observedGeneration` at -1 while Ready already says why.
    let observed = condition("Ready")
        .and_then(|c| c.observed_generation)
        .or(status.observed_generation);
    if observed != generation {
        return source_failure(source).unwrap_or_else(|| progressing(what, "waiting for Flux"));
    }
    // Stalled says only that Flux gave up ("Failed to install after 1 attempt(s)"); a
    // HelmRelease's Released condition keeps why (the admission denial, the bad template).
    let why = condition("Released").filter(|c| c.status == "False");
    if let Some(stalled) = condition("Stalled").filter(|c| c.status == "True") {
        return failed(what, why.unwrap_or(stalled));
    }
    match condition("Ready") {
        Some(ready) if ready.status == "True" && at_head => ServiceState::Available,
        Some(ready) if ready.status == "True" => progressing(what, behind),
        Some(ready) if ready.status == "False" && FAILED.contains(&ready.reason.as_str()) => {
            failed(what, why.unwrap_or(ready))
        }
        Some(other) => source_failure(source).unwrap_or_else(|| progressing(what, &other.message)),
        None => source_failure(source).unwrap_or_else(|| progressing(what, "waiting for Flux")),
    }
}

fn failed(what: &str, condition: &Condition) -> ServiceState {
    ServiceState::Failed {
        reason: Reason::DeliveryFailed,
        message: format!("{what}: {} ({})", condition.message, condition.reason),
    }
}

/// A source that reports it cannot fetch (at the generation applied): the delivery fails with
/// the source's message, not with the release's "waiting for the artifact".
fn source_failure(source: &Source<'_>) -> Option<ServiceState> {
    let status = source.status?;
    if status.common.observed_generation != source.generation {
        return None;
    }
    let condition = |kind: &str| status.common.conditions.iter().find(|c| c.type_ == kind);
    let broken = condition("Stalled")
        .filter(|c| c.status == "True")
        .or_else(|| {
            condition("FetchFailed")
                .filter(|c| c.status == "True")
                .filter(|_| condition("Ready").is_none_or(|r| r.status != "True"))
        })?;
    Some(ServiceState::Failed {
        reason: Reason::DeliveryFailed,
        message: format!("{}: {} ({})", source.what, broken.message, broken.reason),
    })
}

/// Whether a chart version built from a Git source is at `head_sha`: Flux appends the first 12
/// hex digits of the commit (`0.1.0+4f2c9e1d0a3b`).
pub fn chart_at(version: &str, head_sha: &str) -> bool {
    let Some((_, build)) = version.rsplit_once('+') else {
        return false;
    };
    let sha = head_sha.to_ascii_lowercase();
    !build.is_empty() && (sha.starts_with(build) || build.starts_with(&sha))
}

/// Whether a source revision (`main@sha1:<sha>`, `sha1:<sha>`, or a bare sha) is `head_sha`.
pub fn revision_at(revision: &str, head_sha: &str) -> bool {
    let sha = revision.rsplit(':').next().unwrap_or(revision);
    let sha = sha.rsplit('@').next().unwrap_or(sha);
    !sha.is_empty() && sha.eq_ignore_ascii_case(head_sha)
}

/// The source a delivery reads, as found in the caches.
pub fn source_of<'a, K>(
    object: Option<&'a K>,
    what: String,
    status: impl Fn(&'a K) -> Option<&'a SourceStatus>,
) -> Source<'a>
where
    K: kube::Resource,
{
    Source {
        what,
        generation: object.and_then(|o| o.meta().generation),
        status: object.and_then(status),
    }
}

/// The name of a cached object, for finding a delivery's own.
pub fn named<'a, K: ResourceExt>(objects: &'a [std::sync::Arc<K>], name: &str) -> Option<&'a K> {
    objects
        .iter()
        .find(|o| o.name_any() == name)
        .map(std::sync::Arc::as_ref)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flux::{HelmReleaseStatus, KustomizationStatus, ReleaseSnapshot};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const SHA: &str = "4f2c9e1d0a3b5c6d7e8f90123456789abcdef012";

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    fn path_release() -> HelmReleaseSpec {
        serde_json::from_value(
            serde_json::json!({"name": "web", "chart": {"path": "./charts/web"}}),
        )
        .expect("spec")
    }

    fn release(
        generation: i64,
        observed: i64,
        version: &str,
        conditions: Vec<Condition>,
    ) -> HelmRelease {
        let mut hr = HelmRelease::new("web", Default::default());
        hr.metadata.generation = Some(generation);
        hr.status = Some(HelmReleaseStatus {
            common: FluxStatus {
                observed_generation: Some(observed),
                conditions,
            },
            history: vec![ReleaseSnapshot {
                chart_version: version.into(),
                status: "deployed".into(),
            }],
        });
        hr
    }

    fn no_source() -> Source<'static> {
        Source {
            what: "gitRepository source".into(),
            status: None,
            generation: None,
        }
    }

    #[test]
    fn a_release_ready_for_the_previous_commit_is_not_ready() {
        let ready = vec![condition("Ready", "True", "UpgradeSucceeded", "ok")];
        let old = release(2, 2, "0.1.0+0123456789ab", ready.clone());
        let new = release(2, 2, "0.1.0+4f2c9e1d0a3b", ready);
        let spec = path_release();
        assert!(matches!(
            helm_release(&spec, Some(&old), &no_source(), SHA).state,
            ServiceState::Progressing(m) if m.contains("not at 4f2c9e1")
        ));
        let at_head = helm_release(&spec, Some(&new), &no_source(), SHA);
        assert_eq!(at_head.state, ServiceState::Available);
        assert_eq!(at_head.revision.as_deref(), Some("0.1.0+4f2c9e1d0a3b"));
    }

    #[test]
    fn a_ready_release_without_a_recorded_release_is_not_ready() {
        let ready = vec![condition("Ready", "True", "InstallSucceeded", "ok")];
        let mut unrecorded = release(2, 2, "0.1.0", ready);
        if let Some(status) = unrecorded.status.as_mut() {
            status.history.clear();
        }
        let spec: HelmReleaseSpec = serde_json::from_value(serde_json::json!({
            "name": "web",
            "chart": {"repository": "https://charts.example.com", "name": "web", "version": "0.1.0"}
        }))
        .expect("spec");
        let observed = helm_release(&spec, Some(&unrecorded), &no_source(), SHA);
        assert!(
            matches!(&observed.state, ServiceState::Progressing(m) if m.contains("no release recorded")),
            "{observed:?}"
        );
        assert_eq!(observed.revision, None);
    }

    #[test]
    fn a_ready_of_an_older_generation_is_not_ready() {
        let ready = vec![condition("Ready", "True", "UpgradeSucceeded", "ok")];
        let stale = release(3, 2, "0.1.0+4f2c9e1d0a3b", ready);
        assert!(matches!(
            helm_release(&path_release(), Some(&stale), &no_source(), SHA).state,
            ServiceState::Progressing(_)
        ));
    }

    #[test]
    fn flux_failures_fail_the_delivery_with_fluxs_message() {
        let forbidden = "Helm install failed for release pr-1/web with chart demo@0.1.0: \
                         networkpolicies.networking.k8s.io is forbidden";
        let failed = release(
            1,
            1,
            "0.1.0+4f2c9e1d0a3b",
            // As helm-controller leaves a failed install without retries: Ready and Stalled
            // say it gave up, Released says why.
            vec![
                condition(
                    "Ready",
                    "False",
                    "RetriesExceeded",
                    "Failed to install after 1 attempt(s)",
                ),
                condition("Released", "False", "InstallFailed", forbidden),
                condition(
                    "Stalled",
                    "True",
                    "RetriesExceeded",
                    "Failed to install after 1 attempt(s)",
                ),
            ],
        );
        let state = helm_release(&path_release(), Some(&failed), &no_source(), SHA).state;
        let ServiceState::Failed { reason, message } = state else {
            panic!("not failed: {state:?}");
        };
        assert_eq!(reason, Reason::DeliveryFailed);
        assert!(message.starts_with("helmRelease web: "), "{message}");
        assert!(message.contains("is forbidden"), "{message}");
        let only_ready = release(
            1,
            1,
            "",
            vec![condition("Ready", "False", "InstallFailed", forbidden)],
        );
        assert!(matches!(
            helm_release(&path_release(), Some(&only_ready), &no_source(), SHA).state,
            ServiceState::Failed { message, .. } if message.contains("forbidden")
        ));
    }

    #[test]
    fn a_denied_install_fails_although_the_status_generation_never_moved() {
        let mut ready = condition(
            "Ready",
            "False",
            "InstallFailed",
            "roles.rbac.authorization.k8s.io is forbidden",
        );
        ready.observed_generation = Some(1);
        let denied = release(1, -1, "", vec![ready]);
        assert!(matches!(
            helm_release(&path_release(), Some(&denied), &no_source(), SHA).state,
            ServiceState::Failed { message, .. } if message.contains("forbidden")
        ));
    }

    #[test]
    fn a_source_that_cannot_be_fetched_fails_the_waiting_delivery() {
        let waiting = release(
            1,
            1,
            "",
            vec![condition(
                "Ready",
                "False",
                "ArtifactFailed",
                "waiting for the artifact",
            )],
        );
        let broken = SourceStatus {
            common: FluxStatus {
                observed_generation: Some(4),
                conditions: vec![condition(
                    "FetchFailed",
                    "True",
                    "GitOperationFailed",
                    "failed to checkout and determine revision: unable to clone",
                )],
            },
            artifact: None,
        };
        let source = Source {
            what: "gitRepository source (http://127.0.0.1/acme/shop.git)".into(),
            status: Some(&broken),
            generation: Some(4),
        };
        let state = helm_release(&path_release(), Some(&waiting), &source, SHA).state;
        assert!(
            matches!(&state, ServiceState::Failed { message, .. } if message.contains("unable to clone")),
            "{state:?}"
        );
        // A source whose failure is of an older generation (the sha it fetches changed) waits.
        let older = Source {
            generation: Some(5),
            ..source
        };
        assert!(matches!(
            helm_release(&path_release(), Some(&waiting), &older, SHA).state,
            ServiceState::Progressing(_)
        ));
    }

    #[test]
    fn a_kustomization_counts_at_the_head_commit_only() {
        let spec: KustomizationSpec =
            serde_json::from_value(serde_json::json!({"name": "app", "path": "./deploy"}))
                .expect("spec");
        let at = |revision: &str| {
            let mut k = Kustomization::new("app", Default::default());
            k.metadata.generation = Some(1);
            k.status = Some(KustomizationStatus {
                common: FluxStatus {
                    observed_generation: Some(1),
                    conditions: vec![condition("Ready", "True", "ReconciliationSucceeded", "ok")],
                },
                last_applied_revision: Some(revision.into()),
            });
            kustomization(&spec, Some(&k), &no_source(), SHA).state
        };
        assert_eq!(at(&format!("main@sha1:{SHA}")), ServiceState::Available);
        assert_eq!(at(&format!("sha1:{SHA}")), ServiceState::Available);
        assert!(matches!(
            at("main@sha1:0123456789abcdef0123456789abcdef01234567"),
            ServiceState::Progressing(_)
        ));
    }

    #[test]
    fn chart_versions_and_revisions_name_their_commit() {
        assert!(chart_at("0.1.0+4f2c9e1d0a3b", SHA));
        assert!(!chart_at("0.1.0", SHA));
        assert!(!chart_at("0.1.0+", SHA));
        assert!(!chart_at("0.1.0+0123456789ab", SHA));
        assert!(revision_at(&format!("main@sha1:{SHA}"), SHA));
        assert!(revision_at(SHA, SHA));
        assert!(!revision_at("main@sha1:", SHA));
    }
}
