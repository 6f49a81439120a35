//! What the caches hold of one preview's children, read once per reconcile into
//! [`Observed`] and passed on to the test and status steps.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::cached::{CachedDeployment, CachedJob};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::apply::owned;
use super::build::COMPONENT_SETUP;
use super::build::{self, Preview};
use super::children::{Stores, label};
use super::status::{self, Observed, ObservedService};
use crate::naming::{COMPONENT, SHA};
use crate::testlog::TestLog;

/// The label the Job controller puts on the pods of a Job.
const JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// The preview's children as cached: the status step's observations, and every test and
/// setup Job of the preview (their steps remove those of older shas).
pub struct Children {
    pub observed: Observed,
    pub jobs: Vec<Arc<CachedJob>>,
    pub setup_jobs: Vec<Arc<CachedJob>>,
}

pub fn children(
    stores: &Stores,
    preview: &Preview<'_>,
    logs: &BTreeMap<String, Arc<TestLog>>,
) -> Children {
    let (ns, uid) = (preview.namespace.as_str(), preview.owner.uid.as_str());
    let sha = preview.spec.head_sha.as_str();
    let deployments = owned(&stores.deployments, ns, uid);
    let stateful_sets = owned(&stores.stateful_sets, ns, uid);
    let (setup_jobs, jobs): (Vec<_>, Vec<_>) = owned(&stores.jobs, ns, uid)
        .into_iter()
        .partition(|j| label(j.as_ref(), COMPONENT) == Some(COMPONENT_SETUP));
    // The pods of a rollout in progress tell why it is stuck (CrashLoopBackOff,
    // ImagePullBackOff...). Only pods at headSha count: an old, crashing ReplicaSet that
    // the new sha replaces is not this rollout's problem.
    let kept = stores.stuck_pods.in_namespace(ns);
    let stuck: Vec<&Arc<Pod>> = kept
        .iter()
        .filter(|p| p.annotations().get(SHA).map(String::as_str) == Some(sha))
        .collect();
    let deployment = |name: &str| -> Option<&CachedDeployment> {
        deployments
            .iter()
            .find(|d| d.name_any() == name)
            .map(Arc::as_ref)
    };
    let problem = |svc: &crate::api::ServiceSpec| {
        let selector = build::service_selector(&svc.name);
        status::pod_problem(
            stuck
                .iter()
                .map(|p| p.as_ref())
                .filter(|p| selector.iter().all(|(k, v)| p.labels().get(k) == Some(v))),
        )
    };
    // The Job of this name; older ones are on their way out.
    fn live<'j>(jobs: &'j [Arc<CachedJob>], name: &str) -> Option<&'j CachedJob> {
        jobs.iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .find(|j| j.name_any() == name)
            .map(Arc::as_ref)
    }
    // What the failed container said it failed of, else the end of its log.
    let output = |job_name: &str| {
        status::test_output(
            kept.iter()
                .map(Arc::as_ref)
                .filter(|p| p.labels().get(JOB_NAME).map(String::as_str) == Some(job_name)),
        )
        .or_else(|| {
            logs.get(job_name)
                .map(|l| l.tail.clone())
                .filter(|t| !t.is_empty())
        })
    };
    let mut observed = Observed::new(
        preview.spec,
        deployment,
        problem,
        |test| live(&jobs, &preview.job_name(test)),
        |test| output(&preview.job_name(test)),
    );
    observed.dependencies = preview
        .dependencies
        .iter()
        .map(|d| {
            let sts = stateful_sets.iter().find(|s| s.name_any() == d.name);
            // A dependency carries no sha: any of its stuck or unplaced pods explains it.
            let selector = build::dependency_selector(&d.name);
            let its_pods = || {
                kept.iter()
                    .map(Arc::as_ref)
                    .filter(|p| selector.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
            };
            ObservedService::dependency(
                &d.name,
                sts.map(Arc::as_ref),
                || status::pod_problem(its_pods()),
                || status::unschedulable(its_pods()),
            )
        })
        .collect();
    observed.setup = preview
        .setup
        .iter()
        .map(|s| {
            let name = preview.setup_job_name(s);
            let job = live(&setup_jobs, &name);
            let failed_output = job.and_then(|_| output(&name));
            status::test_run(
                status::Run::Setup,
                &s.job.name,
                sha,
                job,
                failed_output.as_deref(),
            )
        })
        .collect();
    Children {
        observed,
        jobs,
        setup_jobs,
    }
}
