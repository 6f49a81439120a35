//! The Jobs of a preview: its setup Jobs (once the dependencies are ready, before the
//! services) and its tests (once every service is available), one Job each per headSha.
//! Jobs of older shas, of steps no longer in the spec, or of an edited step are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::cached::CachedJob;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};

use super::apply::{self, ApplyError};
use super::build::{self, Preview};
use super::context::Context;
use super::error::Error;
use crate::api::template::RunOn;
use crate::client::{create_params, exists_is_ok};
use crate::config::Config;
use crate::naming::APPLIED_HASH;

/// The test Jobs: stale ones removed, missing ones created when `all_available`.
pub async fn tests(
    ctx: &Context,
    preview: &Preview<'_>,
    config: &Config,
    jobs: &[Arc<CachedJob>],
    all_available: bool,
) -> Result<(), Error> {
    let wanted = preview
        .spec
        .tests
        .iter()
        .map(|t| build::stamp(build::test_job(preview, config, t)))
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

/// PURE: the Jobs to delete: not wanted any more, or wanted with another template (a Job's
/// template is immutable, so a test edited without a new sha runs again).
pub fn stale(jobs: &[Arc<CachedJob>], wanted: &Wanted) -> Vec<String> {
    jobs.iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter(|j| match wanted.jobs.get(&j.name_any()) {
            None => true,
            Some(_) if wanted.pinned.contains(&j.name_any()) => false,
            Some(w) => w.annotations().get(APPLIED_HASH) != j.annotations().get(APPLIED_HASH),
        })
        .map(|j| j.name_any())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn job(name: &str, hash: &str) -> Arc<CachedJob> {
        let mut j = fixtures::job(serde_json::json!([]), 0, 0);
        j.metadata.name = Some(name.into());
        j.metadata.annotations = Some(BTreeMap::from([(APPLIED_HASH.into(), hash.into())]));
        Arc::new(j)
    }

    fn wanted(name: &str, hash: &str) -> Job {
        Job {
            metadata: job(name, hash).metadata.clone(),
            ..Job::default()
        }
    }

    #[test]
    fn jobs_of_other_shas_and_edited_tests_are_stale() {
        let mut wanted = Wanted::new(vec![
            wanted("e2e-abcdef0", "h1"),
            wanted("unit-abcdef0", "h2"),
            wanted("setup-seed", "h3"),
        ]);
        wanted.pinned.insert("setup-seed".to_string());
        let jobs = [
            job("e2e-abcdef0", "h1"),
            job("unit-abcdef0", "old"),
            job("e2e-1234567", "h0"),
            job("setup-seed", "from-an-older-sha"),
        ];
        assert_eq!(
            stale(&jobs, &wanted),
            vec!["unit-abcdef0", "e2e-1234567"],
            "a pinned (runOn: Once) Job stays whatever its template"
        );
    }
}
