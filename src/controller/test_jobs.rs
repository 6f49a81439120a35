//! The tests of a preview: one Job per test for the current headSha, created once every
//! service is available; Jobs of older shas, of tests no longer in the spec, or of an edited
//! test are removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};

use super::apply::{self, ApplyError};
use super::build::{self, Preview};
use super::context::Context;
use super::error::Error;
use crate::client::{create_params, exists_is_ok};
use crate::config::Config;
use crate::naming::APPLIED_HASH;

/// Removes stale Jobs, then creates the missing ones when `all_available`.
pub async fn run(
    ctx: &Context,
    preview: &Preview<'_>,
    config: &Config,
    jobs: &[Arc<Job>],
    all_available: bool,
) -> Result<(), Error> {
    let ns = &preview.namespace;
    let wanted: BTreeMap<String, Job> = preview
        .spec
        .tests
        .iter()
        .map(|t| {
            let job = build::stamp(build::test_job(preview, config, t));
            (job.name_any(), job)
        })
        .collect();
    for name in stale(jobs, &wanted) {
        apply::delete::<Job>(&ctx.client, ns, &name, &DeleteParams::background()).await?;
    }
    if !all_available {
        return Ok(());
    }
    let existing: BTreeSet<String> = jobs.iter().map(|j| j.name_any()).collect();
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    for (name, job) in wanted {
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
pub fn stale(jobs: &[Arc<Job>], wanted: &BTreeMap<String, Job>) -> Vec<String> {
    jobs.iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter(|j| match wanted.get(&j.name_any()) {
            None => true,
            Some(w) => w.annotations().get(APPLIED_HASH) != j.annotations().get(APPLIED_HASH),
        })
        .map(|j| j.name_any())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn job(name: &str, hash: &str) -> Arc<Job> {
        let mut j = fixtures::job(serde_json::json!([]), 0, 0);
        j.metadata.name = Some(name.into());
        j.metadata.annotations = Some(BTreeMap::from([(APPLIED_HASH.into(), hash.into())]));
        Arc::new(j)
    }

    #[test]
    fn jobs_of_other_shas_and_edited_tests_are_stale() {
        let wanted = BTreeMap::from([
            (
                "e2e-abcdef0".to_string(),
                (*job("e2e-abcdef0", "h1")).clone(),
            ),
            (
                "unit-abcdef0".to_string(),
                (*job("unit-abcdef0", "h2")).clone(),
            ),
        ]);
        let jobs = [
            job("e2e-abcdef0", "h1"),
            job("unit-abcdef0", "old"),
            job("e2e-1234567", "h0"),
        ];
        assert_eq!(stale(&jobs, &wanted), vec!["unit-abcdef0", "e2e-1234567"]);
    }
}
