//! What the caches hold of one preview's children, read once per reconcile into
//! [`Observed`] and passed on to the test and status steps.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::apply::owned;
use super::build::{self, Preview};
use super::children::Stores;
use super::status::{self, Observed};
use crate::naming::SHA;

/// The label the Job controller puts on the pods of a Job.
const JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// The preview's children as cached: the status step's observations, and every Job of the
/// preview (the test step removes those of older shas).
pub struct Children {
    pub observed: Observed,
    pub jobs: Vec<Arc<Job>>,
}

pub fn children(stores: &Stores, preview: &Preview<'_>) -> Children {
    let (ns, uid) = (preview.namespace.as_str(), preview.owner.uid.as_str());
    let sha = preview.spec.head_sha.as_str();
    let deployments = owned(&stores.deployments, ns, uid);
    let jobs = owned(&stores.jobs, ns, uid);
    // The pods of a rollout in progress tell why it is stuck (CrashLoopBackOff,
    // ImagePullBackOff...). Only pods at headSha count: an old, crashing ReplicaSet that
    // the new sha replaces is not this rollout's problem.
    let kept = stores.stuck_pods.in_namespace(ns);
    let stuck: Vec<&Arc<Pod>> = kept
        .iter()
        .filter(|p| p.annotations().get(SHA).map(String::as_str) == Some(sha))
        .collect();
    let deployment = |name: &str| -> Option<&Deployment> {
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
    // The Job of this sha and rerun request; older ones are on their way out.
    let job = |test: &str| -> Option<&Job> {
        let name = preview.job_name(test);
        jobs.iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .find(|j| j.name_any() == name)
            .map(Arc::as_ref)
    };
    let output = |test: &str| {
        let name = preview.job_name(test);
        status::test_output(
            kept.iter()
                .map(Arc::as_ref)
                .filter(|p| p.labels().get(JOB_NAME).map(String::as_str) == Some(name.as_str())),
        )
    };
    let observed = Observed::new(preview.spec, deployment, problem, job, output);
    Children { observed, jobs }
}
