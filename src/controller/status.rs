//! PURE: what the operator observed (children, pods, policy decisions) becomes the
//! PreviewEnvironment's status: phase, conditions with actionable reasons, services, tests.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{
    PreviewEnvironmentSpec, PreviewEnvironmentStatus, ServiceSpec, ServiceStatus, TestPhase,
    TestStatus, condition,
};
use crate::naming::SHA;

use super::build::job_name;

/// Why a preview is not rolled out at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Go ahead.
    Open,
    /// Waiting for a slot of the tenant's concurrency limit.
    ConcurrencyLimit { limit: usize, position: usize },
    /// The spec breaks operator policy (for example a ttl above the maximum).
    PolicyViolation(String),
    /// The preview namespace's name is taken by a namespace the operator does not own.
    NamespaceConflict(String),
    /// A previous namespace of the same name is still being deleted.
    NamespaceTerminating(String),
    /// The API server refused a child object (retried with backoff); the message says why.
    ApplyFailed(String),
}

/// A service's pods are stuck for a reason a developer must fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    pub reason: String,
    pub message: String,
}

/// Waiting reasons of a container that will not fix themselves.
const STUCK_REASONS: [&str; 6] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The first stuck container among a service's pods, if any.
pub fn pod_problem<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<PodProblem> {
    pods.into_iter().find_map(|pod| {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        statuses.iter().find_map(|cs| {
            let waiting = cs.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.clone()?;
            STUCK_REASONS
                .contains(&reason.as_str())
                .then(|| PodProblem {
                    message: format!(
                        "container {} of pod {name} is in {reason}: {}",
                        cs.name,
                        waiting.message.clone().unwrap_or_default()
                    ),
                    reason,
                })
        })
    })
}

/// Everything observed for one reconcile.
#[derive(Clone, Debug, Default)]
pub struct Observed<'a> {
    /// Deployments by service name.
    pub deployments: BTreeMap<String, &'a Deployment>,
    /// Jobs of the current headSha by test name.
    pub jobs: BTreeMap<String, &'a Job>,
    /// Stuck pods by service name.
    pub pod_problems: BTreeMap<String, PodProblem>,
}

/// Inputs of [`compute`] that are not observations.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    pub spec: &'a PreviewEnvironmentSpec,
    pub generation: Option<i64>,
    pub previous: Option<&'a PreviewEnvironmentStatus>,
    pub now: Time,
    pub gate: Gate,
    pub namespace: String,
    pub url: Option<String>,
    pub service_urls: BTreeMap<String, String>,
    pub sha_observed_at: Time,
    pub expires_at: Time,
}

/// Where one service is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceState {
    Available,
    Progressing(String),
    Failed { reason: String, message: String },
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// Whether a Deployment runs `head_sha` with every wanted pod available and no old pod left.
pub fn service_state(
    svc: &ServiceSpec,
    deployment: Option<&Deployment>,
    head_sha: &str,
    problem: Option<&PodProblem>,
) -> ServiceState {
    let Some(d) = deployment else {
        return ServiceState::Progressing(format!("{}: not created yet", svc.name));
    };
    let status = d.status.clone().unwrap_or_default();
    for c in status.conditions.iter().flatten() {
        if c.type_ == "ReplicaFailure" && c.status == "True" {
            let message = c.message.clone().unwrap_or_default();
            let reason = if message.contains("exceeded quota") {
                "QuotaExceeded"
            } else if message.contains("violates PodSecurity") {
                "PodSecurityViolation"
            } else {
                "ReplicaFailure"
            };
            return ServiceState::Failed {
                reason: reason.to_string(),
                message: format!("service {}: {message}", svc.name),
            };
        }
    }
    if let Some(p) = problem {
        return ServiceState::Failed {
            reason: p.reason.clone(),
            message: format!("service {}: {}", svc.name, p.message),
        };
    }
    let template_sha = d
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(SHA));
    let wanted = svc.replicas;
    let current = template_sha.map(String::as_str) == Some(head_sha)
        && status.observed_generation >= d.metadata.generation;
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if current && updated >= wanted && available >= wanted && total == wanted {
        return ServiceState::Available;
    }
    for c in status.conditions.iter().flatten() {
        if c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        {
            return ServiceState::Failed {
                reason: "ProgressDeadlineExceeded".to_string(),
                message: format!(
                    "service {}: rollout made no progress in time ({}/{wanted} available); \
                     check its pods' events",
                    svc.name, available
                ),
            };
        }
    }
    ServiceState::Progressing(format!(
        "{} ({}/{wanted} available at {})",
        svc.name,
        if current { available } else { 0 },
        short(head_sha)
    ))
}

/// Where one test run is, from its Job.
pub fn test_status(name: &str, sha: &str, job: Option<&Job>) -> TestStatus {
    let mut status = TestStatus {
        name: name.to_string(),
        sha: sha.to_string(),
        phase: TestPhase::Pending,
        job: None,
        started_at: None,
        finished_at: None,
        message: Some("waiting for every service to be available".to_string()),
    };
    let Some(job) = job else {
        return status;
    };
    let job_name = job
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| job_name(name, sha));
    let js = job.status.clone().unwrap_or_default();
    status.job = Some(job_name.clone());
    status.started_at = js.start_time.clone();
    status.message = None;
    let conditions = js.conditions.unwrap_or_default();
    let done = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    if let Some(c) = done("Complete") {
        status.phase = TestPhase::Succeeded;
        status.finished_at = js
            .completion_time
            .or_else(|| c.last_transition_time.clone());
    } else if let Some(c) = done("Failed") {
        status.phase = TestPhase::Failed;
        status.finished_at = c.last_transition_time.clone();
        let timed_out = c.reason.as_deref() == Some("DeadlineExceeded");
        let attempts = js.failed.unwrap_or(0);
        status.message = Some(if timed_out {
            format!(
                "test {name} timed out at {}: job {job_name} ran past its timeout; \
                 see kubectl logs job/{job_name}",
                short(sha)
            )
        } else {
            format!(
                "test {name} failed at {} after {attempts} attempt(s) ({}): see kubectl logs job/{job_name}",
                short(sha),
                c.reason.clone().unwrap_or_else(|| "Failed".into())
            )
        });
    } else if js.active.unwrap_or(0) > 0 || js.start_time.is_some() {
        status.phase = TestPhase::Running;
    } else {
        status.message = Some("job created, waiting for its pod".to_string());
    }
    status
}

fn condition(kind: &str, ok: bool, reason: &str, message: String, ctx: &Context<'_>) -> Condition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status does not flip, so it says since when.
    let since = ctx
        .previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| ctx.now.clone());
    Condition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: ctx.generation,
        last_transition_time: since,
    }
}

/// The status the PreviewEnvironment should have.
/// Whether `next` differs from `previous` only in progress within the same state: replica
/// counts, a test's Job appearing and going from Pending to Running, condition messages. Such a change can wait a
/// moment and be written together with the next one. Anything a client acts on (phase, a
/// condition's status or reason, shas, URL, expiry, a test's result) cannot.
pub fn progress_only(previous: &PreviewEnvironmentStatus, next: &PreviewEnvironmentStatus) -> bool {
    fn without_progress(s: &PreviewEnvironmentStatus) -> PreviewEnvironmentStatus {
        let mut s = s.clone();
        for svc in &mut s.services {
            svc.ready_replicas = 0;
        }
        for t in &mut s.tests {
            if matches!(t.phase, TestPhase::Pending | TestPhase::Running) {
                t.phase = TestPhase::Pending;
                t.message = None;
            }
            t.started_at = None;
            t.job = None;
        }
        for c in &mut s.conditions {
            c.message.clear();
        }
        s
    }
    previous != next && without_progress(previous) == without_progress(next)
}

pub fn compute(ctx: &Context<'_>, observed: &Observed<'_>) -> PreviewEnvironmentStatus {
    use crate::api::Phase;
    let spec = ctx.spec;
    let sha = spec.head_sha.as_str();

    let states: Vec<(&ServiceSpec, ServiceState)> = spec
        .services
        .iter()
        .map(|s| {
            let state = service_state(
                s,
                observed.deployments.get(&s.name).copied(),
                sha,
                observed.pod_problems.get(&s.name),
            );
            (s, state)
        })
        .collect();
    let all_available = states.iter().all(|(_, s)| *s == ServiceState::Available);
    let service_failure = states.iter().find_map(|(_, s)| match s {
        ServiceState::Failed { reason, message } => Some((reason.clone(), message.clone())),
        _ => None,
    });

    let tests: Vec<TestStatus> = spec
        .tests
        .iter()
        .map(|t| test_status(&t.name, sha, observed.jobs.get(&t.name).copied()))
        .collect();
    let passed = tests
        .iter()
        .filter(|t| t.phase == TestPhase::Succeeded)
        .count();
    let failed_test = tests.iter().find(|t| t.phase == TestPhase::Failed);
    let failed_count = tests
        .iter()
        .filter(|t| t.phase == TestPhase::Failed)
        .count();

    let gate_reason = match &ctx.gate {
        Gate::Open => None,
        Gate::ConcurrencyLimit { limit, position } => Some((
            "ConcurrencyLimit",
            format!(
                "waiting for a slot: at most {limit} previews may run in this namespace; \
                 this one is number {position} in the queue"
            ),
        )),
        Gate::PolicyViolation(m) => Some(("PolicyViolation", m.clone())),
        Gate::NamespaceConflict(m) => Some(("NamespaceConflict", m.clone())),
        Gate::NamespaceTerminating(m) => Some(("NamespaceTerminating", m.clone())),
        Gate::ApplyFailed(m) => Some(("ApplyFailed", m.clone())),
    };

    let available = match (&gate_reason, &service_failure) {
        (Some((reason, message)), _) => {
            condition(condition::AVAILABLE, false, reason, message.clone(), ctx)
        }
        (None, Some((reason, message))) => {
            condition(condition::AVAILABLE, false, reason, message.clone(), ctx)
        }
        (None, None) if all_available => condition(
            condition::AVAILABLE,
            true,
            "ServicesAvailable",
            format!(
                "all {} services are available at {}",
                spec.services.len(),
                short(sha)
            ),
            ctx,
        ),
        (None, None) => {
            let waiting: Vec<String> = states
                .iter()
                .filter_map(|(_, s)| match s {
                    ServiceState::Progressing(m) => Some(m.clone()),
                    _ => None,
                })
                .collect();
            condition(
                condition::AVAILABLE,
                false,
                "Deploying",
                format!("waiting for {}", waiting.join(", ")),
                ctx,
            )
        }
    };

    let tests_succeeded = if spec.tests.is_empty() {
        condition(
            condition::TESTS_SUCCEEDED,
            true,
            "NoTests",
            "the spec has no tests".to_string(),
            ctx,
        )
    } else if let Some((reason, message)) = &gate_reason {
        condition(
            condition::TESTS_SUCCEEDED,
            false,
            reason,
            message.clone(),
            ctx,
        )
    } else if let Some(t) = failed_test {
        let timed_out = tests.iter().any(|t| {
            t.phase == TestPhase::Failed
                && t.message
                    .as_deref()
                    .is_some_and(|m| m.contains("timed out"))
        });
        condition(
            condition::TESTS_SUCCEEDED,
            false,
            if timed_out {
                "TestTimedOut"
            } else {
                "TestFailed"
            },
            t.message.clone().unwrap_or_default(),
            ctx,
        )
    } else if passed == tests.len() {
        condition(
            condition::TESTS_SUCCEEDED,
            true,
            "TestsSucceeded",
            format!("{passed}/{} tests passed at {}", tests.len(), short(sha)),
            ctx,
        )
    } else if !all_available {
        condition(
            condition::TESTS_SUCCEEDED,
            false,
            "WaitingForServices",
            format!(
                "tests run at {} once every service is available",
                short(sha)
            ),
            ctx,
        )
    } else {
        condition(
            condition::TESTS_SUCCEEDED,
            false,
            "TestsRunning",
            format!(
                "{passed}/{} tests passed so far at {}",
                tests.len(),
                short(sha)
            ),
            ctx,
        )
    };

    let ready = if available.status == "True" && tests_succeeded.status == "True" {
        condition(
            condition::READY,
            true,
            "Ready",
            match &ctx.url {
                Some(url) => format!("preview is ready at {url}"),
                None => "preview is ready".to_string(),
            },
            ctx,
        )
    } else {
        let blocking = if available.status != "True" {
            &available
        } else {
            &tests_succeeded
        };
        condition(
            condition::READY,
            false,
            &blocking.reason,
            blocking.message.clone(),
            ctx,
        )
    };

    let phase = match &ctx.gate {
        Gate::ConcurrencyLimit { .. } | Gate::NamespaceTerminating(_) => Phase::Pending,
        Gate::PolicyViolation(_) | Gate::NamespaceConflict(_) | Gate::ApplyFailed(_) => {
            Phase::Failed
        }
        Gate::Open if service_failure.is_some() || failed_test.is_some() => Phase::Failed,
        Gate::Open if !all_available => Phase::Deploying,
        Gate::Open if passed < tests.len() => Phase::Testing,
        Gate::Open => Phase::Ready,
    };

    let deployed_sha = if all_available && ctx.gate == Gate::Open {
        Some(sha.to_string())
    } else {
        ctx.previous.and_then(|p| p.deployed_sha.clone())
    };

    let test_summary = if tests.is_empty() {
        "no tests".to_string()
    } else if failed_count > 0 {
        format!("{passed}/{} passed, {failed_count} failed", tests.len())
    } else {
        format!("{passed}/{} passed", tests.len())
    };

    let services = states
        .iter()
        .map(|(s, _)| {
            let ready = observed
                .deployments
                .get(&s.name)
                .and_then(|d| d.status.as_ref())
                .and_then(|st| st.ready_replicas)
                .unwrap_or(0);
            ServiceStatus {
                name: s.name.clone(),
                ready_replicas: ready,
                replicas: s.replicas,
                url: ctx.service_urls.get(&s.name).cloned(),
            }
        })
        .collect();

    let started = matches!(ctx.gate, Gate::Open);
    PreviewEnvironmentStatus {
        observed_generation: ctx.generation,
        phase: Some(phase),
        namespace: Some(ctx.namespace.clone()),
        deployed_sha,
        url: if started { ctx.url.clone() } else { None },
        observed_sha: Some(sha.to_string()),
        sha_observed_at: Some(ctx.sha_observed_at.clone()),
        expires_at: Some(ctx.expires_at.clone()),
        test_summary: Some(test_summary),
        services,
        tests,
        conditions: vec![available, tests_succeeded, ready],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;
    use k8s_openapi::jiff::Timestamp;

    fn spec(tests: usize) -> PreviewEnvironmentSpec {
        let tests: Vec<_> = (0..tests)
            .map(|i| serde_json::json!({"name": format!("t{i}"), "image": "t:1"}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "repository": "acme/shop", "pullRequest": 1, "headSha": "abcdef0123",
            "services": [{"name": "web", "image": "w:1", "port": 80}, {"name": "db", "image": "d:1"}],
            "tests": tests,
        }))
        .expect("fixture")
    }

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("valid time"))
    }

    fn ctx<'a>(
        spec: &'a PreviewEnvironmentSpec,
        previous: Option<&'a PreviewEnvironmentStatus>,
    ) -> Context<'a> {
        Context {
            spec,
            generation: Some(3),
            previous,
            now: time(1_000),
            gate: Gate::Open,
            namespace: "pr-x-123456".into(),
            url: Some("http://web".into()),
            service_urls: BTreeMap::new(),
            sha_observed_at: time(900),
            expires_at: time(10_000),
        }
    }

    fn deployment(sha: &str, replicas: i32, available: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "x", "generation": 2},
            "spec": {"selector": {}, "template": {"metadata": {"annotations": {"preview.dev/sha": sha}}}},
            "status": {"observedGeneration": 2, "replicas": replicas, "updatedReplicas": replicas,
                       "availableReplicas": available, "readyReplicas": available}
        }))
        .expect("deployment fixture")
    }

    fn job(conditions: serde_json::Value, active: i32, failed: i32) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "t0-abcdef0"},
            "status": {"conditions": conditions, "active": active, "failed": failed,
                       "startTime": "2026-01-01T00:00:00Z"}
        }))
        .expect("job fixture")
    }

    fn cond<'a>(s: &'a PreviewEnvironmentStatus, kind: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == kind)
            .expect("condition present")
    }

    #[test]
    fn replica_counts_and_a_running_test_are_progress_but_phases_and_results_are_not() {
        let spec = spec(1);
        let (web0, web1, db1) = (
            deployment("abcdef0123", 1, 0),
            deployment("abcdef0123", 1, 1),
            deployment("abcdef0123", 1, 1),
        );
        fn observe<'a>(
            web: &'a Deployment,
            db: &'a Deployment,
            job: Option<&'a Job>,
        ) -> Observed<'a> {
            Observed {
                deployments: BTreeMap::from([("web".into(), web), ("db".into(), db)]),
                jobs: job
                    .map(|j| BTreeMap::from([("t0".to_string(), j)]))
                    .unwrap_or_default(),
                ..Observed::default()
            }
        }
        let deploying = compute(&ctx(&spec, None), &observe(&web0, &db1, None));
        let pending = compute(&ctx(&spec, None), &observe(&web1, &db1, None));
        let running_job = job(serde_json::json!([]), 1, 0);
        let running = compute(&ctx(&spec, None), &observe(&web1, &db1, Some(&running_job)));
        let done_job = job(
            serde_json::json!([{"type": "Complete", "status": "True",
                                 "lastTransitionTime": "2026-01-01T00:01:00Z"}]),
            0,
            0,
        );
        let done = compute(&ctx(&spec, None), &observe(&web1, &db1, Some(&done_job)));
        let mut one_more_replica = deploying.clone();
        one_more_replica.services[1].ready_replicas += 1;

        assert!(progress_only(&deploying, &one_more_replica));
        assert!(progress_only(&pending, &running), "Pending to Running");
        assert!(!progress_only(&deploying, &pending), "Deploying to Testing");
        assert!(!progress_only(&running, &done), "a result");
        assert!(!progress_only(&done, &done), "no change at all");
    }

    #[test]
    fn nothing_created_yet_is_deploying() {
        let spec = spec(1);
        let s = compute(&ctx(&spec, None), &Observed::default());
        assert_eq!(s.phase, Some(Phase::Deploying));
        assert_eq!(cond(&s, "Available").reason, "Deploying");
        assert_eq!(cond(&s, "TestsSucceeded").reason, "WaitingForServices");
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(s.tests[0].phase, TestPhase::Pending);
        assert_eq!(s.test_summary.as_deref(), Some("0/1 passed"));
        assert_eq!(cond(&s, "Ready").observed_generation, Some(3));
    }

    #[test]
    fn available_services_without_tests_are_ready() {
        let spec = spec(0);
        let (web, db) = (
            deployment("abcdef0123", 1, 1),
            deployment("abcdef0123", 1, 1),
        );
        let observed = Observed {
            deployments: BTreeMap::from([("web".into(), &web), ("db".into(), &db)]),
            ..Observed::default()
        };
        let s = compute(&ctx(&spec, None), &observed);
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(cond(&s, "TestsSucceeded").reason, "NoTests");
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(s.deployed_sha.as_deref(), Some("abcdef0123"));
        assert_eq!(s.services[0].ready_replicas, 1);
    }

    #[test]
    fn pods_of_an_older_sha_do_not_count_as_available() {
        let spec = spec(1);
        let (web, db) = (deployment("0000000", 1, 1), deployment("abcdef0123", 1, 1));
        let previous = PreviewEnvironmentStatus {
            deployed_sha: Some("0000000".into()),
            ..PreviewEnvironmentStatus::default()
        };
        let observed = Observed {
            deployments: BTreeMap::from([("web".into(), &web), ("db".into(), &db)]),
            ..Observed::default()
        };
        let s = compute(&ctx(&spec, Some(&previous)), &observed);
        assert_eq!(s.phase, Some(Phase::Deploying));
        assert_eq!(
            s.deployed_sha.as_deref(),
            Some("0000000"),
            "the old sha stays deployed"
        );
        assert!(
            cond(&s, "Available")
                .message
                .contains("web (0/1 available at abcdef0)")
        );
    }

    #[test]
    fn test_lifecycle_running_then_failed_then_timed_out() {
        let spec = spec(1);
        let (web, db) = (
            deployment("abcdef0123", 1, 1),
            deployment("abcdef0123", 1, 1),
        );
        let running = job(serde_json::json!([]), 1, 0);
        let failed = job(
            serde_json::json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                 "lastTransitionTime": "2026-01-01T00:01:00Z"}]),
            0,
            1,
        );
        let timed_out = job(
            serde_json::json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]),
            0,
            0,
        );
        let deployments = BTreeMap::from([("web".to_string(), &web), ("db".to_string(), &db)]);
        let with_job = |j| Observed {
            deployments: deployments.clone(),
            jobs: BTreeMap::from([("t0".to_string(), j)]),
            ..Observed::default()
        };

        let s = compute(&ctx(&spec, None), &with_job(&running));
        assert_eq!(s.phase, Some(Phase::Testing));
        assert_eq!(s.tests[0].phase, TestPhase::Running);
        assert_eq!(cond(&s, "TestsSucceeded").reason, "TestsRunning");

        let s = compute(&ctx(&spec, None), &with_job(&failed));
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(cond(&s, "TestsSucceeded").reason, "TestFailed");
        assert_eq!(cond(&s, "Ready").reason, "TestFailed");
        assert!(
            cond(&s, "Ready")
                .message
                .contains("kubectl logs job/t0-abcdef0")
        );
        assert_eq!(s.test_summary.as_deref(), Some("0/1 passed, 1 failed"));
        assert!(s.tests[0].finished_at.is_some());

        let s = compute(&ctx(&spec, None), &with_job(&timed_out));
        assert_eq!(cond(&s, "TestsSucceeded").reason, "TestTimedOut");
    }

    #[test]
    fn crash_looping_pods_fail_the_preview_with_the_reason() {
        let spec = spec(1);
        let web = deployment("abcdef0123", 1, 0);
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1"},
            "status": {"containerStatuses": [{"name": "web", "image": "w", "imageID": "", "ready": false,
                "restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}}]}
        }))
        .expect("pod fixture");
        let problem = pod_problem([&pod]).expect("a problem");
        let observed = Observed {
            deployments: BTreeMap::from([("web".into(), &web)]),
            pod_problems: BTreeMap::from([("web".into(), problem)]),
            ..Observed::default()
        };
        let s = compute(&ctx(&spec, None), &observed);
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(cond(&s, "Available").reason, "CrashLoopBackOff");
        assert!(cond(&s, "Available").message.contains("service web"));
    }

    #[test]
    fn quota_and_progress_deadline_failures_are_named() {
        let svc = &spec(0).services[0];
        let mut quota = deployment("abcdef0123", 0, 0);
        quota.status.as_mut().expect("status").conditions = Some(vec![serde_json::from_value(
            serde_json::json!({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                               "message": "pods \"web-1\" is forbidden: exceeded quota: preview-defaults"}),
        )
        .expect("condition")]);
        let ServiceState::Failed { reason, .. } =
            service_state(svc, Some(&quota), "abcdef0123", None)
        else {
            panic!("quota must fail the service");
        };
        assert_eq!(reason, "QuotaExceeded");

        let mut stuck = deployment("abcdef0123", 1, 0);
        stuck.status.as_mut().expect("status").conditions = Some(vec![serde_json::from_value(
            serde_json::json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}),
        )
        .expect("condition")]);
        let ServiceState::Failed { reason, .. } =
            service_state(svc, Some(&stuck), "abcdef0123", None)
        else {
            panic!("deadline must fail the service");
        };
        assert_eq!(reason, "ProgressDeadlineExceeded");
    }

    #[test]
    fn gates_keep_the_preview_pending_or_failed_with_their_reason() {
        let spec = spec(1);
        let mut c = ctx(&spec, None);
        c.gate = Gate::ConcurrencyLimit {
            limit: 2,
            position: 1,
        };
        let s = compute(&c, &Observed::default());
        assert_eq!(s.phase, Some(Phase::Pending));
        assert_eq!(cond(&s, "Ready").reason, "ConcurrencyLimit");
        assert_eq!(s.url, None, "a preview that has not started has no URL");

        c.gate = Gate::PolicyViolation("ttl 30d is above the maximum 7d".into());
        let s = compute(&c, &Observed::default());
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(cond(&s, "Ready").reason, "PolicyViolation");
        assert_eq!(cond(&s, "TestsSucceeded").reason, "PolicyViolation");

        c.gate = Gate::ApplyFailed("failed to apply Service web: range is full".into());
        let s = compute(&c, &Observed::default());
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(cond(&s, "Ready").reason, "ApplyFailed");
        assert!(cond(&s, "Available").message.contains("range is full"));
    }

    #[test]
    fn transition_time_is_kept_while_a_condition_does_not_flip() {
        let spec = spec(0);
        let first = compute(&ctx(&spec, None), &Observed::default());
        let mut later = ctx(&spec, Some(&first));
        later.now = time(2_000);
        let second = compute(&later, &Observed::default());
        assert_eq!(cond(&second, "Ready").last_transition_time, time(1_000));
        assert_eq!(
            first, second,
            "same observations give the same status: no write"
        );
    }
}
