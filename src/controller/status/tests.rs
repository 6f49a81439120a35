//! Tests of [`compute`](super::compute): small fixtures of observed children in, the status
//! and conditions a developer would read out.

use k8s_openapi::api::core::v1::Pod;

use super::*;
use crate::controller::build::Stage;
use crate::controller::cached::{CachedDeployment, CachedJob, CachedStatefulSet};
use crate::controller::observe;
use crate::fixtures::{deployment, job, time, web_and_db as spec};

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
        rerun_tests: None,
        class: Some("standard".into()),
        sleep: SleepStatus {
            state: sleep::State::Awake,
            last_active: time(900),
            wake_request: None,
        },
        scm: None,
        fleet: None,
    }
}

/// What a reconcile would observe given these children by name.
fn observe(
    spec: &PreviewEnvironmentSpec,
    deployments: &[(&str, &CachedDeployment)],
    jobs: &[(&str, &CachedJob)],
    problems: &[(&str, PodProblem)],
) -> Observed {
    let sha = spec.head_sha.as_str();
    let deployment = |name: &str| {
        deployments
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| *d)
    };
    let problem = |name: &str| {
        problems
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.clone())
    };
    let job = |name: &str| jobs.iter().find(|(n, _)| *n == name).map(|(_, j)| *j);
    Observed {
        services: (spec.services.iter())
            .map(|s| ObservedService::new(s, deployment(&s.name), sha, || problem(&s.name)))
            .collect(),
        tests: (spec.tests.iter())
            .map(|t| {
                observe::model::test(&t.name, sha, job(&t.name), || {
                    Some("line 1\nassertion failed: 2 == 3".to_string())
                })
            })
            .collect(),
        dependencies: Vec::new(),
        setup: Vec::new(),
        releases: Vec::new(),
    }
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
    let both = |web| observe(&spec, &[("web", web), ("db", &db1)], &[], &[]);
    let deploying = compute(&ctx(&spec, None), &both(&web0));
    let pending = compute(&ctx(&spec, None), &both(&web1));
    let running_job = job(serde_json::json!([]), 1, 0);
    let with_job = |j| observe(&spec, &[("web", &web1), ("db", &db1)], &[("t0", j)], &[]);
    let running = compute(&ctx(&spec, None), &with_job(&running_job));
    let done_job = job(
        serde_json::json!([{"type": "Complete", "status": "True",
                             "lastTransitionTime": "2026-01-01T00:01:00Z"}]),
        0,
        0,
    );
    let done = compute(&ctx(&spec, None), &with_job(&done_job));
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
    let s = compute(&ctx(&spec, None), &Observed::nothing(&spec));
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
    let observed = observe(&spec, &[("web", &web), ("db", &db)], &[], &[]);
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
    let observed = observe(&spec, &[("web", &web), ("db", &db)], &[], &[]);
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
    let with_job = |j| observe(&spec, &[("web", &web), ("db", &db)], &[("t0", j)], &[]);

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
            .contains("kubectl logs -n pr-x job/t0-abcdef0")
    );
    assert!(
        cond(&s, "Ready")
            .message
            .ends_with("last output:\nline 1\nassertion failed: 2 == 3"),
        "the end of the failed test's output is in the message"
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
    let observed = observe(&spec, &[("web", &web)], &[], &[("web", problem)]);
    let s = compute(&ctx(&spec, None), &observed);
    assert_eq!(s.phase, Some(Phase::Failed));
    assert_eq!(cond(&s, "Available").reason, "CrashLoopBackOff");
    assert!(cond(&s, "Available").message.contains("service web"));
}

#[test]
fn gates_keep_the_preview_pending_or_failed_with_their_reason() {
    let spec = spec(1);
    let mut c = ctx(&spec, None);
    let s = compute(&c, &Observed::nothing(&spec));
    assert_eq!(cond(&s, "Admitted").status, "True");
    assert!(cond(&s, "Admitted").message.contains("standard"));
    c.gate = Gate::ConcurrencyLimit {
        limit: 2,
        position: 1,
        scope: "in this namespace".into(),
        held_by: "team-a/pr-1".into(),
    };
    let s = compute(&c, &Observed::nothing(&spec));
    assert_eq!(s.phase, Some(Phase::Pending));
    assert_eq!(cond(&s, "Ready").reason, "ConcurrencyLimit");
    assert_eq!(cond(&s, "Admitted").reason, "ConcurrencyLimit");

    c.gate = Gate::NotAdmitted {
        reason: Reason::RepositoryNotAllowed,
        message: "PreviewClass standard does not let team-a preview acme/pay".into(),
    };
    let s = compute(&c, &Observed::nothing(&spec));
    assert_eq!(s.phase, Some(Phase::Failed));
    assert_eq!(cond(&s, "Admitted").status, "False");
    assert_eq!(cond(&s, "Admitted").reason, "RepositoryNotAllowed");
    assert_eq!(cond(&s, "Ready").reason, "RepositoryNotAllowed");
    assert_eq!(
        cond(&s, "Ready").status,
        "False",
        "what CI waits for is decided"
    );
    for unobserved in ["Available", "TestsSucceeded", "Awake"] {
        assert_eq!(
            (
                cond(&s, unobserved).status.as_ref(),
                cond(&s, unobserved).reason.as_ref()
            ),
            ("Unknown", "RepositoryNotAllowed"),
            "{unobserved}: nothing ran, so nothing is known"
        );
    }
    assert_eq!(s.url, None);
    assert_eq!(s.url, None, "a preview that has not started has no URL");

    c.gate = Gate::PolicyViolation("ttl 30d is above the maximum 7d".into());
    let s = compute(&c, &Observed::nothing(&spec));
    assert_eq!(s.phase, Some(Phase::Failed));
    assert_eq!(cond(&s, "Ready").reason, "PolicyViolation");
    assert_eq!(cond(&s, "TestsSucceeded").reason, "PolicyViolation");

    c.gate = Gate::ApplyFailed("failed to apply Service web: range is full".into());
    let s = compute(&c, &Observed::nothing(&spec));
    assert_eq!(s.phase, Some(Phase::Failed));
    assert_eq!(cond(&s, "Ready").reason, "ApplyFailed");
    assert!(cond(&s, "Available").message.contains("range is full"));
}

#[test]
fn transition_time_is_kept_while_a_condition_does_not_flip() {
    let spec = spec(0);
    let first = compute(&ctx(&spec, None), &Observed::nothing(&spec));
    let mut later = ctx(&spec, Some(&first));
    later.now = time(2_000);
    let second = compute(&later, &Observed::nothing(&spec));
    assert_eq!(cond(&second, "Ready").last_transition_time, time(1_000));
    assert_eq!(
        first, second,
        "same observations give the same status: no write"
    );
}

fn stateful_set(ready: i32) -> CachedStatefulSet {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db", "generation": 1},
        "spec": {"selector": {}, "serviceName": "db", "template": {}},
        "status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": ready,
                   "currentRevision": "db-1", "updateRevision": "db-1"}
    }))
    .expect("stateful set fixture")
}

#[test]
fn dependencies_then_setup_come_before_the_services() {
    let spec = spec(1);
    let sts = stateful_set(0);
    let mut o = observe(&spec, &[], &[], &[]);
    o.dependencies = vec![ObservedService::dependency(
        "db",
        Some(&sts),
        || None,
        || Some("pod db-0 cannot be scheduled: unbound PersistentVolumeClaims".into()),
    )];
    o.setup = vec![test_run(Run::Setup, "migrate", "abcdef0", None, None)];
    assert_eq!(o.stage(), Stage::Dependencies);
    let s = compute(&ctx(&spec, None), &o);
    assert_eq!(cond(&s, condition::AVAILABLE).reason, "DependencyNotReady");
    let waiting = &cond(&s, condition::AVAILABLE).message;
    assert!(waiting.contains("db (0/1 ready"), "{waiting}");
    assert!(
        waiting.contains("unbound PersistentVolumeClaims"),
        "says why: {waiting}"
    );
    assert_eq!(s.phase, Some(Phase::Deploying));
    assert_eq!(s.dependencies[0].ready_replicas, 0);
    assert_eq!(
        s.setup[0].message.as_deref(),
        Some("waiting for every dependency to be ready")
    );

    let ready = stateful_set(1);
    o.dependencies = vec![ObservedService::dependency(
        "db",
        Some(&ready),
        || None,
        || None,
    )];
    assert_eq!(o.stage(), Stage::Setup);
    let s = compute(&ctx(&spec, None), &o);
    assert_eq!(cond(&s, condition::AVAILABLE).reason, "SetupRunning");
    assert_eq!(s.phase, Some(Phase::Deploying));

    let failed = job(
        serde_json::json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]),
        0,
        1,
    );
    o.setup = vec![test_run(
        Run::Setup,
        "migrate",
        "abcdef0",
        Some(&failed),
        Some("no table"),
    )];
    let s = compute(&ctx(&spec, None), &o);
    let available = cond(&s, condition::AVAILABLE);
    assert_eq!(available.reason, "SetupFailed");
    assert!(
        available.message.starts_with("setup migrate failed"),
        "{}",
        available.message
    );
    assert!(available.message.contains("no table"));
    assert_eq!(s.phase, Some(Phase::Failed));
    assert_eq!(cond(&s, condition::READY).reason, "SetupFailed");

    let done = job(
        serde_json::json!([{"type": "Complete", "status": "True"}]),
        0,
        0,
    );
    o.setup = vec![test_run(
        Run::Setup,
        "migrate",
        "abcdef0",
        Some(&done),
        None,
    )];
    assert_eq!(o.stage(), Stage::Services);
}

#[test]
fn a_sleeping_preview_keeps_its_results_and_says_why_it_sleeps() {
    let spec = spec(1);
    let done = job(
        serde_json::json!([{"type": "Complete", "status": "True"}]),
        0,
        0,
    );
    let d = deployment(&spec.head_sha, 1, 1);
    let o = observe(&spec, &[("web", &d), ("db", &d)], &[("t0", &done)], &[]);
    let ready = compute(&ctx(&spec, None), &o);
    assert_eq!(ready.phase, Some(Phase::Ready));
    assert_eq!(cond(&ready, condition::AWAKE).status, "True");

    let mut asleep = ctx(&spec, Some(&ready));
    asleep.sleep.state = sleep::State::Asleep {
        reason: Reason::Idle,
        since: time(950).0,
    };
    let nothing_runs = observe(&spec, &[], &[], &[]);
    let s = compute(&asleep, &nothing_runs);
    assert_eq!(s.phase, Some(Phase::Sleeping));
    assert_eq!(s.sleeping_since, Some(time(950)));
    let awake = cond(&s, condition::AWAKE);
    assert_eq!(
        (awake.status.as_ref(), awake.reason.as_ref()),
        ("False", "Idle")
    );
    assert_eq!(
        cond(&s, condition::READY).status,
        "True",
        "asleep is not failed"
    );
    assert_eq!(s.tests, ready.tests, "the results stay");
    assert!(s.services.iter().all(|svc| svc.ready_replicas == 0));
}

#[test]
fn the_resync_condition_names_the_provider_of_the_preview() {
    let mut s = spec(1);
    s.provider = Some(crate::api::Provider::Gitlab);
    let mut c = ctx(&s, None);
    c.scm = Some(Err("GitLab answered 503".into()));
    let status = compute(&c, &Observed::nothing(&s));
    let scm = cond(&status, condition::SCM_REACHABLE);
    assert!(
        scm.message.contains("until GitLab answers"),
        "{}",
        scm.message
    );
    assert!(!scm.message.contains("GitHub"), "{}", scm.message);
    c.scm = Some(Ok(()));
    let status = compute(&c, &Observed::nothing(&s));
    assert!(
        cond(&status, condition::SCM_REACHABLE)
            .message
            .contains("ask GitLab")
    );
}
