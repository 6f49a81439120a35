//! PURE: the observation model, what one reconcile saw of a preview's children (services,
//! dependencies, tests, setup), and the functions that read one child into it. The status
//! step turns an [`Observed`] into conditions; nothing here reads a cache or the API.

use crate::api::{PreviewEnvironmentSpec, Reason, ServiceSpec, TestPhase, TestStatus};
use crate::controller::build::Stage;
use crate::controller::cached::{CachedDeployment, CachedJob, CachedStatefulSet};
use crate::controller::pods::PodProblem;
use crate::controller::slim::Keeps;
use crate::naming::{RUN_REASON, short_sha};

/// Where one service is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceState {
    Available,
    Progressing(String),
    Failed { reason: Reason, message: String },
}

impl ServiceState {
    /// A rollout in progress whose pods are stuck has failed, for the pods' reason.
    /// `what` names it: "service web", "dependency db".
    pub fn with_problem(self, what: &str, problem: Option<&PodProblem>) -> ServiceState {
        match (self, problem) {
            (ServiceState::Progressing(_), Some(p)) => ServiceState::Failed {
                reason: p.reason,
                message: format!("{what}: {}", p.message),
            },
            (state, _) => state,
        }
    }
}

/// One service as observed: its state and its pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedService {
    pub name: String,
    pub state: ServiceState,
    pub ready_replicas: i32,
    pub replicas: i32,
}

impl ObservedService {
    /// Observes `svc` through its Deployment (if any); `problem` is asked for only while the
    /// rollout is in progress, since only then do stuck pods explain anything.
    pub fn new(
        svc: &ServiceSpec,
        deployment: Option<&CachedDeployment>,
        head_sha: &str,
        problem: impl FnOnce() -> Option<PodProblem>,
    ) -> Self {
        let state = match service_state(svc, deployment, head_sha) {
            progressing @ ServiceState::Progressing(_) => {
                progressing.with_problem(&format!("service {}", svc.name), problem().as_ref())
            }
            state => state,
        };
        ObservedService {
            name: svc.name.clone(),
            state,
            ready_replicas: deployment
                .and_then(|d| d.status.as_ref())
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
            replicas: svc.replicas,
        }
    }
}

/// One test's run at headSha, and whether it failed by running out of time.
#[derive(Clone, Debug, PartialEq)]
pub struct TestRun {
    pub status: TestStatus,
    pub timed_out: bool,
}

/// Everything one reconcile observed of a preview's children, derived once and passed on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Every service of the spec, in order.
    pub services: Vec<ObservedService>,
    /// Every test of the spec at headSha, in order.
    pub tests: Vec<TestRun>,
    /// Every dependency of the template, in order.
    pub dependencies: Vec<ObservedService>,
    /// Every setup Job of the template at headSha, in order.
    pub setup: Vec<TestRun>,
    /// Every Flux delivery of the template (Helm releases, then kustomizations), in order.
    pub releases: Vec<super::delivery::ObservedRelease>,
}

impl Observed {
    /// A preview of which nothing exists yet.
    pub fn nothing(spec: &PreviewEnvironmentSpec) -> Self {
        let sha = spec.head_sha.as_str();
        Observed {
            services: (spec.services.iter())
                .map(|s| ObservedService::new(s, None, sha, || None))
                .collect(),
            tests: (spec.tests.iter())
                .map(|t| test(&t.name, sha, None, || None))
                .collect(),
            dependencies: Vec::new(),
            setup: Vec::new(),
            releases: Vec::new(),
        }
    }

    /// Every service and every Flux delivery is available at headSha.
    pub fn all_available(&self) -> bool {
        (self.services.iter()).all(|s| s.state == ServiceState::Available)
            && (self.releases.iter()).all(|r| r.state == ServiceState::Available)
    }

    /// How far the rollout may go: dependencies ready, then setup succeeded, then services.
    pub fn stage(&self) -> Stage {
        if !(self.dependencies.iter()).all(|d| d.state == ServiceState::Available) {
            Stage::Dependencies
        } else if !(self.setup.iter()).all(|s| s.status.phase == TestPhase::Succeeded) {
            Stage::Setup
        } else {
            Stage::Services
        }
    }

    /// A stuck dependency, a failed setup Job or a failed service, in the order of a rollout.
    pub(crate) fn service_failure(&self) -> Option<(Reason, &str)> {
        fn failed(state: &ServiceState) -> Option<(Reason, &str)> {
            match state {
                ServiceState::Failed { reason, message } => Some((*reason, message.as_str())),
                _ => None,
            }
        }
        let setup = self.setup.iter().find_map(|s| {
            (s.status.phase == TestPhase::Failed).then(|| {
                (
                    Reason::SetupFailed,
                    s.status.message.as_deref().unwrap_or(""),
                )
            })
        });
        (self.dependencies.iter().find_map(|d| failed(&d.state)))
            .or(setup)
            .or_else(|| self.releases.iter().find_map(|r| failed(&r.state)))
            .or_else(|| self.services.iter().find_map(|s| failed(&s.state)))
    }

    pub(crate) fn count(&self, phase: TestPhase) -> usize {
        self.tests
            .iter()
            .filter(|t| t.status.phase == phase)
            .count()
    }

    pub(crate) fn failed_test(&self) -> Option<&TestRun> {
        self.tests
            .iter()
            .find(|t| t.status.phase == TestPhase::Failed)
    }
}

/// Whether a Deployment runs `head_sha` with every wanted pod available and no old pod left.
pub fn service_state(
    svc: &ServiceSpec,
    deployment: Option<&CachedDeployment>,
    head_sha: &str,
) -> ServiceState {
    let Some(d) = deployment else {
        return ServiceState::Progressing(format!("{}: not created yet", svc.name));
    };
    let status = d.status.clone().unwrap_or_default();
    let conditions = status.conditions.clone().unwrap_or_default();
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
    {
        let message = c.message.clone().unwrap_or_default();
        let reason = if message.contains("exceeded quota") {
            Reason::QuotaExceeded
        } else if message.contains("violates PodSecurity") {
            Reason::PodSecurityViolation
        } else {
            Reason::ReplicaFailure
        };
        return ServiceState::Failed {
            reason,
            message: format!("service {}: {message}", svc.name),
        };
    }
    let wanted = svc.replicas;
    let current =
        d.template_sha() == Some(head_sha) && status.observed_generation >= d.metadata.generation;
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if current && updated >= wanted && available >= wanted && total == wanted {
        return ServiceState::Available;
    }
    let deadline_exceeded = conditions.iter().any(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some(Reason::ProgressDeadlineExceeded.as_str())
    });
    if deadline_exceeded {
        return ServiceState::Failed {
            reason: Reason::ProgressDeadlineExceeded,
            message: format!(
                "service {}: rollout made no progress in time ({available}/{wanted} available); \
                 check its pods' events",
                svc.name
            ),
        };
    }
    ServiceState::Progressing(format!(
        "{} ({}/{wanted} available at {})",
        svc.name,
        if current { available } else { 0 },
        short_sha(head_sha)
    ))
}

impl ObservedService {
    /// Observes a dependency through its StatefulSet: ready once its one pod is ready at the
    /// current revision; `problem` explains a pod that is stuck.
    /// Available only once its Service exists (`exists`): tests and users reach it by that
    /// name, and its creation may wait for a turn (`cluster_ips`). `what` names it.
    pub fn reachable(mut self, exists: bool, what: &str) -> Self {
        if !exists && self.state == ServiceState::Available {
            self.state =
                ServiceState::Progressing(format!("{what}: its Service is not created yet"));
        }
        self
    }

    pub fn dependency(
        name: &str,
        stateful_set: Option<&CachedStatefulSet>,
        problem: impl FnOnce() -> Option<PodProblem>,
        unscheduled: impl FnOnce() -> Option<String>,
    ) -> Self {
        let status = stateful_set.and_then(|s| s.status.clone());
        let ready = status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
        let current = stateful_set.is_some_and(|s| {
            let st = s.status.clone().unwrap_or_default();
            st.observed_generation >= s.metadata.generation
                && (st.update_revision.is_none() || st.update_revision == st.current_revision)
        });
        let state = match stateful_set {
            None => ServiceState::Progressing(format!("dependency {name}: not created yet")),
            Some(_) if current && ready >= 1 => ServiceState::Available,
            Some(_) => {
                let waiting = match unscheduled() {
                    Some(why) => format!("dependency {name} (0/1 ready; {why})"),
                    None => format!("dependency {name} (0/1 ready)"),
                };
                ServiceState::Progressing(waiting)
                    .with_problem(&format!("dependency {name}"), problem().as_ref())
            }
        };
        ObservedService {
            name: name.to_string(),
            state,
            ready_replicas: ready,
            replicas: 1,
        }
    }
}

fn job_failed(job: &CachedJob) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
}

/// What a Job runs: a test, or a setup step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    Test,
    Setup,
}

impl Run {
    fn noun(self) -> &'static str {
        match self {
            Run::Test => "test",
            Run::Setup => "setup",
        }
    }

    fn waiting_for(self) -> &'static str {
        match self {
            Run::Test => "waiting for every service to be available",
            Run::Setup => "waiting for every dependency to be ready",
        }
    }
}

/// One test of the spec at headSha through its Job; `output` is asked for only when the Job
/// failed, since only a failed run's output is worth a look.
pub fn test(
    name: &str,
    sha: &str,
    job: Option<&CachedJob>,
    output: impl FnOnce() -> Option<String>,
) -> TestRun {
    let output = job.filter(|j| job_failed(j)).and_then(|_| output());
    test_run(Run::Test, name, sha, job, output.as_deref())
}

/// Where one test (or setup) run is, from its Job and, when it failed, the end of its output.
pub fn test_run(
    run: Run,
    name: &str,
    sha: &str,
    job: Option<&CachedJob>,
    output: Option<&str>,
) -> TestRun {
    let noun = run.noun();
    let mut status = TestStatus {
        name: name.to_string(),
        sha: sha.to_string(),
        phase: TestPhase::Pending,
        job: None,
        started_at: None,
        finished_at: None,
        message: Some(run.waiting_for().to_string()),
        reason: None,
    };
    let Some(job) = job else {
        return TestRun {
            status,
            timed_out: false,
        };
    };
    let job_name = job
        .metadata
        .name
        .clone()
        .unwrap_or_else(|| name.to_string());
    let js = job.status.clone().unwrap_or_default();
    status.job = Some(job_name.clone());
    status.started_at = js.start_time.clone();
    status.message = None;
    status.reason = job.kept(RUN_REASON).map(str::to_string);
    let conditions = js.conditions.unwrap_or_default();
    let done = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    let mut timed_out = false;
    if let Some(c) = done("Complete") {
        status.phase = TestPhase::Succeeded;
        status.finished_at = js
            .completion_time
            .or_else(|| c.last_transition_time.clone());
    } else if let Some(c) = done("Failed") {
        status.phase = TestPhase::Failed;
        status.finished_at = c.last_transition_time.clone();
        timed_out = c.reason.as_deref() == Some("DeadlineExceeded");
        let attempts = js.failed.unwrap_or(0);
        let sha = short_sha(sha);
        // Where to look, as a command a developer can paste: the namespace is not theirs.
        let logs = match job.metadata.namespace.as_deref() {
            Some(ns) => format!("kubectl logs -n {ns} job/{job_name}"),
            None => format!("kubectl logs job/{job_name}"),
        };
        let mut message = if timed_out {
            format!(
                "{noun} {name} timed out at {sha}: job {job_name} ran past its timeout; see {logs}"
            )
        } else {
            format!(
                "{noun} {name} failed at {sha} after {attempts} attempt(s) ({}): see {logs}",
                c.reason.clone().unwrap_or_else(|| "Failed".into())
            )
        };
        if let Some(output) = output {
            message.push_str("\nlast output:\n");
            message.push_str(output);
        }
        status.message = Some(message);
    } else if js.active.unwrap_or(0) > 0 || js.start_time.is_some() {
        status.phase = TestPhase::Running;
    } else {
        status.message = Some("job created, waiting for its pod".to_string());
    }
    TestRun { status, timed_out }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{deployment, web_and_db as spec};

    #[test]
    fn quota_and_progress_deadline_failures_are_named() {
        let svc = &spec(0).services[0];
        let mut quota = deployment("abcdef0123", 0, 0);
        quota.status.as_mut().expect("status").conditions = Some(vec![serde_json::from_value(
            serde_json::json!({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                               "message": "pods \"web-1\" is forbidden: exceeded quota: preview-defaults"}),
        )
        .expect("condition")]);
        let ServiceState::Failed { reason, .. } = service_state(svc, Some(&quota), "abcdef0123")
        else {
            panic!("quota must fail the service");
        };
        assert_eq!(reason, Reason::QuotaExceeded);

        let mut stuck = deployment("abcdef0123", 1, 0);
        stuck.status.as_mut().expect("status").conditions = Some(vec![serde_json::from_value(
            serde_json::json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}),
        )
        .expect("condition")]);
        let ServiceState::Failed { reason, .. } = service_state(svc, Some(&stuck), "abcdef0123")
        else {
            panic!("deadline must fail the service");
        };
        assert_eq!(reason, Reason::ProgressDeadlineExceeded);
    }

    #[test]
    fn an_available_service_whose_service_is_not_created_yet_is_not_available() {
        let svc = &spec(0).services[0];
        let web = deployment("abcdef0123", 1, 1);
        let observed = |exists| {
            ObservedService::new(svc, Some(&web), "abcdef0123", || None)
                .reachable(exists, "service web")
        };
        assert_eq!(observed(true).state, ServiceState::Available);
        assert_eq!(
            observed(false).state,
            ServiceState::Progressing("service web: its Service is not created yet".into()),
            "its tests would not reach it yet"
        );
        let rolling = deployment("abcdef0123", 1, 0);
        let state = ObservedService::new(svc, Some(&rolling), "abcdef0123", || None)
            .reachable(false, "service web")
            .state;
        assert!(
            matches!(&state, ServiceState::Progressing(m) if m.contains("0/1 available")),
            "a rollout in progress says how far it got: {state:?}"
        );
    }

    #[test]
    fn a_stuck_dependency_fails_with_the_reason_of_its_pod() {
        let sts = stateful_set(0);
        let problem = PodProblem {
            reason: Reason::CrashLoopBackOff,
            message: "container db of pod db-0 is in CrashLoopBackOff: back-off".into(),
        };
        let d = ObservedService::dependency("db", Some(&sts), || Some(problem), || None);
        match d.state {
            ServiceState::Failed { reason, message } => {
                assert_eq!(reason, Reason::CrashLoopBackOff);
                assert!(message.starts_with("dependency db: "), "{message}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
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
}
