//! The Jobs of a preview: its setup Jobs (once the dependencies are ready, before the
//! services) and its tests (once every service is available), one Job each per headSha.
//! Jobs of older shas, of steps no longer in the spec, or of an edited step are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::cached::CachedJob;
use super::slim::Keeps;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};

use super::apply::{self, ApplyError};
use super::build::{self, Preview};
use super::context::Context;
use super::error::Error;
use crate::api::Reason;
use crate::api::template::RunOn;
use crate::client::{create_params, exists_is_ok};
use crate::config::Config;
use crate::naming::{RUN_REASON, RUN_SPEC, TESTED};

/// What the test Jobs run against: the fingerprint of the workloads as they run
/// (`rollouts::tested`), and why they run again at the same sha, if they do.
pub struct Tested<'a> {
    pub workloads: &'a str,
    pub reason: Option<Reason>,
}

/// The test Jobs: stale ones removed (their test or what it tests changed), missing ones
/// created when `all_available`.
pub async fn tests(
    ctx: &Context,
    preview: &Preview<'_>,
    config: &Config,
    jobs: &[Arc<CachedJob>],
    all_available: bool,
    tested: Tested<'_>,
) -> Result<(), Error> {
    let wanted = preview
        .spec
        .tests
        .iter()
        .map(|t| {
            let mut job = build::stamp(build::test_job(preview, config, t));
            let annotations = job.metadata.annotations.get_or_insert_with(BTreeMap::new);
            annotations.insert(TESTED.to_string(), tested.workloads.to_string());
            if let Some(reason) = tested.reason {
                annotations.insert(RUN_REASON.to_string(), reason.as_str().to_string());
            }
            job
        })
        .collect();
    run(ctx, preview, Wanted::new(wanted), jobs, all_available).await
}

/// The setup Jobs: stale ones removed, missing ones created when `dependencies_ready`. A
/// `Once` Job is kept whatever the sha, so it never runs twice for a preview.
pub async fn setup(
    ctx: &Context,
    preview: &Preview<'_>,
    config: &Config,
    jobs: &[Arc<CachedJob>],
    dependencies_ready: bool,
) -> Result<(), Error> {
    let mut wanted = Wanted::new(
        preview
            .setup
            .iter()
            .map(|s| build::stamp(build::setup_job(preview, config, s)))
            .collect(),
    );
    wanted.pinned = preview
        .setup
        .iter()
        .filter(|s| s.run_on == RunOn::Once)
        .map(|s| preview.setup_job_name(s))
        .collect();
    run(ctx, preview, wanted, jobs, dependencies_ready).await
}

/// The Jobs one step wants, by name.
pub struct Wanted {
    jobs: BTreeMap<String, Job>,
    /// Names kept as they are even when the wanted Job differs.
    pinned: BTreeSet<String>,
}

impl Wanted {
    fn new(jobs: Vec<Job>) -> Self {
        Wanted {
            jobs: jobs.into_iter().map(|j| (j.name_any(), j)).collect(),
            pinned: BTreeSet::new(),
        }
    }
}

/// Removes stale Jobs, then creates the missing ones when `start`.
async fn run(
    ctx: &Context,
    preview: &Preview<'_>,
    wanted: Wanted,
    jobs: &[Arc<CachedJob>],
    start: bool,
) -> Result<(), Error> {
    let ns = &preview.namespace;
    for name in stale(jobs, &wanted) {
        apply::delete::<Job>(&ctx.client, ns, &name, &DeleteParams::background()).await?;
    }
    if !start {
        return Ok(());
    }
    let existing: BTreeSet<String> = jobs.iter().map(|j| j.name_any()).collect();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    for (name, job) in wanted.jobs {
        if existing.contains(&name) {
            continue;
        }
        // Already there: the cache has not caught up with an earlier create.
        exists_is_ok(api.create(&create_params(), &job).await).map_err(|source| {
            Error::from(ApplyError::Apply {
                kind: "Job".into(),
                namespace: ns.clone(),
                name,
                source,
            })
        })?;
    }
    Ok(())
}

/// PURE: the Jobs to delete: not wanted any more, or wanted for another step spec or (tests)
/// other workloads. A Job's template is immutable, so a step edited without a new sha runs
/// again; a change of how the class dresses its pod (pull secrets, resource defaults) does
/// not make a setup Job run twice. A Job made before these marks existed is kept.
pub fn stale(jobs: &[Arc<CachedJob>], wanted: &Wanted) -> Vec<String> {
    let differs = |job: &CachedJob, wanted: &Job, key: &str| match (
        job.kept(key),
        wanted.annotations().get(key),
    ) {
        (Some(ran), Some(wants)) => ran != wants.as_str(),
        _ => false,
    };
    jobs.iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter(|j| match wanted.jobs.get(&j.name_any()) {
            None => true,
            Some(_) if wanted.pinned.contains(&j.name_any()) => false,
            Some(w) => differs(j, w, RUN_SPEC) || differs(j, w, TESTED),
        })
        .map(|j| j.name_any())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn job(name: &str, marks: &[(&str, &str)]) -> Arc<CachedJob> {
        let mut j = fixtures::job(serde_json::json!([]), 0, 0);
        j.metadata.name = Some(name.into());
        j.metadata.annotations = Some(
            marks
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        Arc::new(j)
    }

    fn wanted(name: &str, marks: &[(&str, &str)]) -> Job {
        Job {
            metadata: job(name, marks).metadata.clone(),
            ..Job::default()
        }
    }

    #[test]
    fn jobs_of_other_shas_and_edited_tests_are_stale() {
        let mut wanted = Wanted::new(vec![
            wanted("e2e-abcdef0", &[(RUN_SPEC, "h1")]),
            wanted("unit-abcdef0", &[(RUN_SPEC, "h2")]),
            wanted("setup-seed", &[(RUN_SPEC, "h3")]),
        ]);
        wanted.pinned.insert("setup-seed".to_string());
        let jobs = [
            job("e2e-abcdef0", &[(RUN_SPEC, "h1")]),
            job("unit-abcdef0", &[(RUN_SPEC, "old")]),
            job("e2e-1234567", &[(RUN_SPEC, "h0")]),
            job("setup-seed", &[(RUN_SPEC, "from-an-older-sha")]),
        ];
        assert_eq!(
            stale(&jobs, &wanted),
            vec!["unit-abcdef0", "e2e-1234567"],
            "a pinned (runOn: Once) Job stays whatever its template"
        );
    }

    #[test]
    fn a_test_runs_again_when_what_it_tests_changed_and_setup_only_when_its_step_did() {
        let wanted = Wanted::new(vec![
            wanted("e2e-abcdef0", &[(RUN_SPEC, "t"), (TESTED, "workloads-2")]),
            wanted("setup-migrate-abcdef0", &[(RUN_SPEC, "s")]),
        ]);
        // The class added a pull secret: the setup Job's whole template differs, its step
        // does not; the services' pod templates changed, so the test is stale.
        let jobs = [
            job(
                "e2e-abcdef0",
                &[(RUN_SPEC, "t"), (TESTED, "workloads-1"), (APPLIED, "a")],
            ),
            job("setup-migrate-abcdef0", &[(RUN_SPEC, "s"), (APPLIED, "b")]),
        ];
        assert_eq!(stale(&jobs, &wanted), vec!["e2e-abcdef0"]);
        // A Job of an operator that did not mark Jobs yet is kept.
        let legacy = [job("e2e-abcdef0", &[(APPLIED, "a")])];
        assert!(stale(&legacy, &wanted).is_empty());
    }

    const APPLIED: &str = crate::naming::APPLIED_HASH;
}
