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
use crate::naming::{PART_OF, SHA};

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
    let stuck: Vec<Arc<Pod>> = stores
        .stuck_pods
        .in_namespace(ns)
        .into_iter()
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
                .map(Arc::as_ref)
                .filter(|p| selector.iter().all(|(k, v)| p.labels().get(k) == Some(v))),
        )
    };
    let job = |test: &str| -> Option<&Job> {
        jobs.iter()
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .filter(|j| j.labels().get(SHA).map(String::as_str) == Some(sha))
            .find(|j| j.labels().get(PART_OF).map(String::as_str) == Some(test))
            .map(Arc::as_ref)
    };
    let observed = Observed::new(preview.spec, deployment, problem, job);
    Children { observed, jobs }
}
