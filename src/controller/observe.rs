//! What the caches hold of one preview's children, read once per reconcile into
//! [`Observed`] and passed on to the test and status steps. [`children`] reads each part
//! (services, tests, dependencies, setup) in a small step of its own; the model they fill
//! is in [`model`].

pub mod delivery;
pub mod model;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::cached::{CachedDeployment, CachedJob, CachedStatefulSet};
use super::slim::Keeps;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::apply::owned;
use super::build::COMPONENT_SETUP;
use super::build::flux::{chart_source_name, source_name};
use super::build::{self, Preview};
use super::children::{FluxStores, Stores};
use super::pods;
use super::rollouts;
use super::slim::label;
use crate::naming::{COMPONENT, SHA, TESTED};
use crate::testlog::TestLog;
pub use model::{Observed, ObservedService, Run, ServiceState, TestRun};

/// The label the Job controller puts on the pods of a Job.
const JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// The preview's children as cached: the status step's observations, and every test and
/// setup Job of the preview (their steps remove those of older shas).
pub struct Children {
    pub observed: Observed,
    pub jobs: Vec<Arc<CachedJob>>,
    pub setup_jobs: Vec<Arc<CachedJob>>,
    /// The fingerprint of what the workloads run now (`rollouts::tested`).
    pub tested: String,
}

/// What the caches hold of one preview, read once and shared by the steps below.
struct Cached<'a> {
    preview: &'a Preview<'a>,
    logs: &'a BTreeMap<String, Arc<TestLog>>,
    deployments: Vec<Arc<CachedDeployment>>,
    stateful_sets: Vec<Arc<CachedStatefulSet>>,
    /// The names of the preview's Services that exist (a service is reachable only then).
    services: BTreeSet<String>,
    /// The kept pods of the preview's namespace (stuck, failed or unplaced).
    kept: Vec<Arc<Pod>>,
    /// Flux's objects, when the preview delivers through Flux.
    flux: &'a FluxStores,
}

pub fn children(
    stores: &Stores,
    preview: &Preview<'_>,
    logs: &BTreeMap<String, Arc<TestLog>>,
) -> Children {
    let (ns, uid) = (preview.namespace.as_str(), preview.owner.uid.as_str());
    let (setup_jobs, jobs): (Vec<_>, Vec<_>) = owned(&stores.jobs, ns, uid)
        .into_iter()
        .partition(|j| label(j.as_ref(), COMPONENT) == Some(COMPONENT_SETUP));
    let deployments = owned(&stores.deployments, ns, uid);
    let stateful_sets = owned(&stores.stateful_sets, ns, uid);
    let tested = rollouts::tested(&deployments, &stateful_sets);
    let services = (owned(&stores.services, ns, uid).iter())
        .map(|s| s.name_any())
        .collect();
    let cached = Cached {
        preview,
        logs,
        deployments,
        stateful_sets,
        services,
        kept: stores.stuck_pods.in_namespace(ns),
        flux: &stores.flux,
    };
    // A test run against workloads that changed since tests nothing that runs now: it is
    // about to be replaced, and its verdict must not show meanwhile.
    let current: Vec<Arc<CachedJob>> = (jobs.iter())
        .filter(|j| j.kept(TESTED).is_none_or(|t| t == tested))
        .cloned()
        .collect();
    let observed = Observed {
        services: cached.services(),
        tests: cached.tests(&current),
        dependencies: cached.dependencies(),
        setup: cached.setup(&setup_jobs),
        releases: cached.releases(),
    };
    Children {
        observed,
        jobs,
        setup_jobs,
        tested,
    }
}

impl Cached<'_> {
    fn sha(&self) -> &str {
        self.preview.spec.head_sha.as_str()
    }

    /// Every service of the spec through its Deployment, and its stuck pods while it rolls out.
    fn services(&self) -> Vec<ObservedService> {
        // The pods of a rollout in progress tell why it is stuck (CrashLoopBackOff,
        // ImagePullBackOff...). Only pods at headSha count: an old, crashing ReplicaSet that
        // the new sha replaces is not this rollout's problem.
        let stuck: Vec<&Pod> = (self.kept.iter())
            .map(Arc::as_ref)
            .filter(|p| p.annotations().get(SHA).map(String::as_str) == Some(self.sha()))
            .collect();
        let problem = |svc: &crate::api::ServiceSpec| {
            let selector = build::service_selector(&svc.name);
            pods::pod_problem(
                (stuck.iter().copied())
                    .filter(|p| selector.iter().all(|(k, v)| p.labels().get(k) == Some(v))),
            )
        };
        (self.preview.spec.services.iter())
            .map(|svc| {
                let deployment = (self.deployments.iter())
                    .find(|d| d.name_any() == svc.name)
                    .map(Arc::as_ref);
                ObservedService::new(svc, deployment, self.sha(), || problem(svc)).reachable(
                    svc.port.is_none() || self.services.contains(&svc.name),
                    &format!("service {}", svc.name),
                )
            })
            .collect()
    }

    /// Every test of the spec at headSha through its Job.
    fn tests(&self, jobs: &[Arc<CachedJob>]) -> Vec<TestRun> {
        (self.preview.spec.tests.iter())
            .map(|test| {
                let name = self.preview.job_name(&test.name);
                model::test(&test.name, self.sha(), live(jobs, &name), || {
                    self.output(&name)
                })
            })
            .collect()
    }

    /// Where to look when a dependency with a claim cannot be placed: most often no
    /// StorageClass binds its PersistentVolumeClaim.
    fn claim_hint(&self, dependency: &str) -> String {
        let ns = &self.preview.namespace;
        let claim = build::claim_name(dependency);
        format!(
            "its PersistentVolumeClaim {claim} asks for the cluster's default StorageClass (the \
             template names none): `kubectl get pvc -n {ns} {claim}` and `kubectl get \
             storageclass` show whether one binds it"
        )
    }

    /// Every dependency of the template through its StatefulSet and its pods.
    fn dependencies(&self) -> Vec<ObservedService> {
        (self.preview.dependencies.iter())
            .map(|d| {
                let sts = self.stateful_sets.iter().find(|s| s.name_any() == d.name);
                // A dependency carries no sha: any of its stuck or unplaced pods explains it.
                let selector = build::dependency_selector(&d.name);
                let its_pods = || {
                    (self.kept.iter())
                        .map(Arc::as_ref)
                        .filter(|p| selector.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
                };
                let sized = d.storage.as_ref().is_some_and(|s| s.size.is_some());
                ObservedService::dependency(
                    &d.name,
                    sts.map(Arc::as_ref),
                    || pods::pod_problem(its_pods()),
                    || {
                        let why = pods::unschedulable(its_pods())?;
                        Some(if sized {
                            format!("{why}; {}", self.claim_hint(&d.name))
                        } else {
                            why
                        })
                    },
                )
                .reachable(
                    self.services.contains(&d.name),
                    &format!("dependency {}", d.name),
                )
            })
            .collect()
    }

    /// Every setup Job of the template at headSha.
    fn setup(&self, setup_jobs: &[Arc<CachedJob>]) -> Vec<TestRun> {
        (self.preview.setup.iter())
            .map(|s| {
                let name = self.preview.setup_job_name(s);
                let job = live(setup_jobs, &name);
                let failed_output = job.and_then(|_| self.output(&name));
                model::test_run(
                    Run::Setup,
                    &s.job.name,
                    self.sha(),
                    job,
                    failed_output.as_deref(),
                )
            })
            .collect()
    }

    /// Every Helm release and kustomization of the template through Flux's objects and the
    /// sources they read.
    fn releases(&self) -> Vec<delivery::ObservedRelease> {
        let preview = self.preview;
        if !preview.delivers_through_flux() {
            return Vec::new();
        }
        let (ns, uid) = (preview.namespace.as_str(), preview.owner.uid.as_str());
        let git = owned(&self.flux.git_repositories, ns, uid);
        let source = source_name(&preview.spec.head_sha);
        let git = delivery::named(&git, &source);
        let git_source = || {
            let what = format!("gitRepository {source} ({})", preview.spec.repository);
            delivery::source_of(git, what, |g| g.status.as_ref())
        };
        let helm = owned(&self.flux.helm_repositories, ns, uid);
        let oci = owned(&self.flux.oci_repositories, ns, uid);
        let releases = owned(&self.flux.helm_releases, ns, uid);
        let kustomizations = owned(&self.flux.kustomizations, ns, uid);
        let sha = self.sha();
        let helm_releases = preview.helm_releases.iter().map(|r| {
            let source = if r.chart.path.is_some() {
                git_source()
            } else {
                let name = chart_source_name(&r.name);
                let url = r.chart.repository.as_deref().unwrap_or_default();
                let what = format!("chart repository {name} ({url})");
                match delivery::named(&oci, &name) {
                    Some(o) => delivery::source_of(Some(o), what, |o| o.status.as_ref()),
                    None => delivery::source_of(delivery::named(&helm, &name), what, |h| {
                        h.status.as_ref()
                    }),
                }
            };
            delivery::helm_release(r, delivery::named(&releases, &r.name), &source, sha)
        });
        let kustomized = preview.kustomizations.iter().map(|k| {
            delivery::kustomization(
                k,
                delivery::named(&kustomizations, &k.name),
                &git_source(),
                sha,
            )
        });
        helm_releases.chain(kustomized).collect()
    }

    /// What the failed container said it failed of, else the end of its log.
    fn output(&self, job_name: &str) -> Option<String> {
        pods::test_output(
            (self.kept.iter())
                .map(Arc::as_ref)
                .filter(|p| p.labels().get(JOB_NAME).map(String::as_str) == Some(job_name)),
        )
        .or_else(|| {
            (self.logs.get(job_name))
                .map(|l| l.tail.clone())
                .filter(|t| !t.is_empty())
        })
    }
}

/// The Job of this name; older ones are on their way out.
fn live<'j>(jobs: &'j [Arc<CachedJob>], name: &str) -> Option<&'j CachedJob> {
    jobs.iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .find(|j| j.name_any() == name)
        .map(Arc::as_ref)
}
