//! The Jobs of a preview: setup Jobs (migrations, seeds) that run before the services roll
//! out, test Jobs that run against them, their names, and the environment they get.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::services::cluster_url;
use super::{
    COMPONENT_SETUP, COMPONENT_TEST, Preview, env_vars, non_empty, non_empty_map, preview_url,
    pull_secrets, restricted_pod_security_context, restricted_security_context,
};
use crate::api::template::{RunOn, SetupSpec};
use crate::api::{TestSpec, parse_duration};
use crate::config::Config;
use crate::naming::{self, COMPONENT, PART_OF, SHA, short_hash};

impl Preview<'_> {
    /// Name of the Job running `test` of this preview now.
    pub fn job_name(&self, test: &str) -> String {
        job_name(test, &self.spec.head_sha, self.rerun_tests)
    }

    /// Name of the Job running `setup` of this preview now: per sha, or once per preview.
    pub fn setup_job_name(&self, setup: &SetupSpec) -> String {
        match setup.run_on {
            RunOn::EverySha => format!(
                "setup-{}-{}",
                setup.job.name,
                naming::short_sha(&self.spec.head_sha)
            ),
            RunOn::Once => format!("setup-{}", setup.job.name),
        }
    }
}

/// Name of the Job running `test` for `sha`: `<test>-<first 7 of sha>`, plus a short hash of
/// the rerun request when there is one, so a rerun gets new Jobs at the same sha.
pub fn job_name(test: &str, sha: &str, rerun: Option<&str>) -> String {
    let sha = naming::short_sha(sha);
    match rerun {
        Some(request) => format!("{test}-{sha}-{}", short_hash(request)),
        None => format!("{test}-{sha}"),
    }
}

/// `PREVIEW_<SERVICE>_URL`: upper case, dashes become underscores.
fn service_url_var(service: &str) -> String {
    format!(
        "PREVIEW_{}_URL",
        service.to_ascii_uppercase().replace('-', "_")
    )
}

/// The environment every test container gets.
pub fn test_environment(preview: &Preview<'_>, config: &Config) -> Vec<EnvVar> {
    let var = |name: &str, value: String| EnvVar {
        name: name.to_string(),
        value: Some(value),
        ..EnvVar::default()
    };
    let mut vars = vec![
        var("PREVIEW_NAMESPACE", preview.namespace.clone()),
        var("PREVIEW_REPOSITORY", preview.spec.repository.clone()),
        var("PREVIEW_PR", preview.spec.pull_request.to_string()),
        var("PREVIEW_SHA", preview.spec.head_sha.clone()),
    ];
    if let Some(url) = preview_url(preview, config) {
        vars.push(var("PREVIEW_URL", url));
    }
    for svc in &preview.spec.services {
        if let Some(port) = svc.port {
            // Tests run inside the cluster: they reach every service by its DNS name.
            vars.push(var(
                &service_url_var(&svc.name),
                cluster_url(&svc.name, &preview.namespace, port),
            ));
        }
    }
    vars
}

/// The Job running one test for the current headSha.
pub fn test_job(preview: &Preview<'_>, config: &Config, test: &TestSpec) -> Job {
    let mut env = test_environment(preview, config);
    env.extend(env_vars(&test.env));
    let mut job = job(
        preview,
        config,
        JobKind {
            name: preview.job_name(&test.name),
            component: COMPONENT_TEST,
            env: env.clone(),
        },
        test,
    );
    // What the test itself is: its spec and what it is told (URLs follow the class's
    // ingress); not how the class dresses its pod.
    super::mark_run_spec(&mut job.metadata, &(test, env));
    job
}

/// The environment every setup container gets: who the preview is (the services are not
/// up yet, so no URLs).
fn setup_environment(preview: &Preview<'_>) -> Vec<EnvVar> {
    test_environment(preview, &Config::default())
        .into_iter()
        .filter(|v| !v.name.ends_with("_URL"))
        .collect()
}

/// The Job running one setup step for the current headSha (or once, see [`RunOn`]).
pub fn setup_job(preview: &Preview<'_>, config: &Config, setup: &SetupSpec) -> Job {
    let mut env = setup_environment(preview);
    env.extend(env_vars(&setup.job.env));
    let mut job = job(
        preview,
        config,
        JobKind {
            name: preview.setup_job_name(setup),
            component: COMPONENT_SETUP,
            env: env.clone(),
        },
        &setup.job,
    );
    super::mark_run_spec(&mut job.metadata, &(setup, env));
    job
}

/// What tells a test Job from a setup Job.
struct JobKind {
    name: String,
    component: &'static str,
    env: Vec<EnvVar>,
}

/// A Job running `test` (a test or a setup step) once, hardened like the services.
fn job(preview: &Preview<'_>, config: &Config, kind: JobKind, test: &TestSpec) -> Job {
    let sha = &preview.spec.head_sha;
    let JobKind {
        name,
        component,
        env,
    } = kind;
    let mut meta = preview.child_meta(&name, component, &test.name);
    if let Some(labels) = meta.labels.as_mut() {
        labels.insert(SHA.to_string(), sha.clone());
    }
    let deadline = parse_duration(&test.timeout)
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(30 * 60);
    let mut pod_labels = preview.owner.cost_labels();
    pod_labels.extend([
        (COMPONENT.to_string(), component.to_string()),
        (PART_OF.to_string(), test.name.clone()),
        (naming::MANAGED_BY.to_string(), naming::MANAGER.to_string()),
    ]);
    pod_labels.insert(SHA.to_string(), sha.clone());
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(test.retries),
            active_deadline_seconds: Some(deadline),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: non_empty_map(test.pod_annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_string()),
                    containers: vec![Container {
                        name: test.name.clone(),
                        image: Some(test.image.clone()),
                        command: non_empty(test.command.clone()),
                        args: non_empty(test.args.clone()),
                        env: Some(env),
                        resources: test.resources.clone(),
                        security_context: Some(restricted_security_context()),
                        // A failed test's status shows the end of its output even when the
                        // image writes no termination message.
                        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
                        ..Container::default()
                    }],
                    automount_service_account_token: Some(false),
                    image_pull_secrets: pull_secrets(config),
                    security_context: Some(restricted_pod_security_context()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::ResourceExt;

    use super::super::fixtures::{from_template, preview, shop, spec, with_ingress};
    use super::*;

    #[test]
    fn test_job_gets_the_preview_environment_deadline_and_retries() {
        let spec = spec();
        let p = preview(&spec);
        let job = test_job(&p, &with_ingress(false), &spec.tests[0]);
        assert_eq!(job.metadata.name.as_deref(), Some("e2e-4f2c9e1"));
        let js = job.spec.expect("spec");
        assert_eq!(js.backoff_limit, Some(2));
        assert_eq!(js.active_deadline_seconds, Some(1200));
        let pod = js.template;
        assert_eq!(
            pod.metadata.and_then(|m| m.annotations).unwrap_or_default()["preview.dev/simulate"],
            "fail"
        );
        let env: BTreeMap<String, String> = pod.spec.expect("pod").containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(env["PREVIEW_NAMESPACE"], "pr-shop-pr-123-abcdef");
        assert_eq!(env["PREVIEW_REPOSITORY"], "acme/shop");
        assert_eq!(env["PREVIEW_PR"], "123");
        assert_eq!(env["PREVIEW_SHA"], "4f2c9e1d8b7a");
        assert_eq!(
            env["PREVIEW_URL"],
            "http://web-pr-shop-pr-123-abcdef.preview.example.com"
        );
        assert_eq!(
            env["PREVIEW_API_V2_URL"],
            "http://api-v2.pr-shop-pr-123-abcdef.svc.cluster.local:9090"
        );
        assert_eq!(env["EXTRA"], "1");
        assert!(
            !env.contains_key("PREVIEW_WORKER_URL"),
            "worker has no port"
        );
    }

    #[test]
    fn setup_jobs_run_per_sha_or_once_and_are_hardened() {
        let rendered = shop();
        let p = from_template(&rendered);
        let migrate = setup_job(&p, &Config::default(), &rendered.setup[0]);
        assert_eq!(migrate.name_any(), "setup-migrate-4f2c9e1");
        let seed = setup_job(&p, &Config::default(), &rendered.setup[1]);
        assert_eq!(seed.name_any(), "setup-seed");
        let labels = migrate.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(COMPONENT).map(String::as_str),
            Some(COMPONENT_SETUP)
        );
        let pod = migrate.spec.expect("spec").template.spec.expect("pod");
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(c.security_context, Some(restricted_security_context()));
        let vars: Vec<_> = c.env.iter().flatten().map(|v| v.name.as_str()).collect();
        assert!(vars.contains(&"PREVIEW_SHA") && !vars.iter().any(|v| v.ends_with("_URL")));
    }
}
