//! PURE: what the operator observed (children, pods, policy decisions) becomes the
//! PreviewEnvironment's status: phase, conditions with actionable reasons, services, tests.
//!
//! [`compute`] is one small function per condition (`available`, `tests_succeeded`, `ready`)
//! plus the phase; each returns a [`Verdict`] that `compute` turns into a `metav1.Condition`.

use std::collections::BTreeMap;

use super::cached::{CachedDeployment, CachedJob, CachedStatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::build::Stage;
use super::sleep;
use crate::api::{
    Phase, PreviewEnvironmentSpec, PreviewEnvironmentStatus, Reason, ServiceSpec, ServiceStatus,
    TestPhase, TestStatus, condition,
};
use crate::naming::short_sha;

/// Why a preview is not rolled out at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Go ahead.
    Open,
    /// The PreviewClass does not admit the preview; nothing is created or reported.
    NotAdmitted { reason: Reason, message: String },
    /// Waiting for a slot: at most `limit` previews may run `scope` ("in this namespace"...).
    ConcurrencyLimit {
        limit: usize,
        position: usize,
        scope: String,
    },
    /// Another preview already serves an Ingress host this one would use.
    HostConflict(String),
    /// The spec breaks operator policy (for example a ttl above the maximum).
    PolicyViolation(String),
    /// The preview namespace's name is taken by a namespace the operator does not own.
    NamespaceConflict(String),
    /// A previous namespace of the same name is still being deleted.
    NamespaceTerminating(String),
    /// The API server refused a child object (retried with backoff); the message says why.
    ApplyFailed(String),
    /// Admitted, but the preview cannot be rolled out as it is: its template is missing or
    /// cannot be rendered, or what the template declares cannot be read.
    Blocked { reason: Reason, message: String },
}

impl Gate {
    pub fn is_open(&self) -> bool {
        *self == Gate::Open
    }

    /// `Admitted`: whether the class lets the preview start (a conflict found later on the
    /// way, like a foreign namespace, is not an admission question).
    pub fn admitted(&self, class: Option<&str>) -> Verdict {
        let refused = matches!(
            self,
            Gate::NotAdmitted { .. } | Gate::ConcurrencyLimit { .. } | Gate::PolicyViolation(_)
        );
        match self.verdict().filter(|_| refused) {
            Some(refusal) => refusal,
            None => Verdict::yes(
                Reason::Admitted,
                match class {
                    Some(class) => format!("admitted by PreviewClass {class}"),
                    None => "admitted".to_string(),
                },
            ),
        }
    }

    /// The reason and message every condition carries while the gate is closed.
    fn verdict(&self) -> Option<Verdict> {
        let (reason, message) = match self {
            Gate::Open => return None,
            Gate::NotAdmitted { reason, message } => (*reason, message.clone()),
            Gate::ConcurrencyLimit {
                limit,
                position,
                scope,
            } => (
                Reason::ConcurrencyLimit,
                format!(
                    "waiting for a slot: at most {limit} previews may run {scope}; \
                     this one is number {position} in the queue"
                ),
            ),
            Gate::HostConflict(m) => (Reason::HostConflict, m.clone()),
            Gate::PolicyViolation(m) => (Reason::PolicyViolation, m.clone()),
            Gate::NamespaceConflict(m) => (Reason::NamespaceConflict, m.clone()),
            Gate::NamespaceTerminating(m) => (Reason::NamespaceTerminating, m.clone()),
            Gate::ApplyFailed(m) => (Reason::ApplyFailed, m.clone()),
            Gate::Blocked { reason, message } => (*reason, message.clone()),
        };
        Some(Verdict::no(reason, message))
    }
}

/// A service's pods are stuck for a reason a developer must fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProblem {
    pub reason: Reason,
    pub message: String,
}

/// The first stuck container among a service's pods, if any.
pub fn pod_problem<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<PodProblem> {
    pods.into_iter().find_map(|pod| {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        statuses.iter().find_map(|cs| {
            let waiting = cs.state.as_ref()?.waiting.as_ref()?;
            let reason = Reason::parse(waiting.reason.as_deref()?)
                .filter(|r| Reason::STUCK_CONTAINER.contains(r))?;
            Some(PodProblem {
                message: format!(
                    "container {} of pod {name} is in {}: {}",
                    cs.name,
                    reason.as_str(),
                    waiting.message.clone().unwrap_or_default()
                ),
                reason,
            })
        })
    })
}

/// Why a pod cannot be scheduled, as the scheduler says (for example a PersistentVolumeClaim
/// no StorageClass binds, or no node with room): not a failure (an autoscaler or a
/// provisioner may still fix it), but what a developer needs to know while waiting.
pub fn unschedulable<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<String> {
    pods.into_iter().find_map(|pod| {
        let conditions = pod.status.as_ref()?.conditions.as_ref()?;
        let c = conditions.iter().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })?;
        Some(format!(
            "pod {} cannot be scheduled: {}",
            pod.metadata.name.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default()
        ))
    })
}

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
}

impl Observed {
    /// Observes every service and test of `spec` through its children, looked up by name:
    /// a service's Deployment and the problem of its stuck pods, a test's Job and the output
    /// of its failed pod.
    pub fn new<'a>(
        spec: &PreviewEnvironmentSpec,
        deployment: impl Fn(&str) -> Option<&'a CachedDeployment>,
        problem: impl Fn(&ServiceSpec) -> Option<PodProblem>,
        job: impl Fn(&str) -> Option<&'a CachedJob>,
        output: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let sha = spec.head_sha.as_str();
        Observed {
            services: spec
                .services
                .iter()
                .map(|s| ObservedService::new(s, deployment(&s.name), sha, || problem(s)))
                .collect(),
            tests: spec
                .tests
                .iter()
                .map(|t| {
                    let job = job(&t.name);
                    // Only a failed run's output is worth a look.
                    let output = job.filter(|j| job_failed(j)).and_then(|_| output(&t.name));
                    test_run(Run::Test, &t.name, sha, job, output.as_deref())
                })
                .collect(),
            dependencies: Vec::new(),
            setup: Vec::new(),
        }
    }

    /// A preview of which nothing exists yet.
    pub fn nothing(spec: &PreviewEnvironmentSpec) -> Self {
        Observed::new(spec, |_| None, |_| None, |_| None, |_| None)
    }

    pub fn all_available(&self) -> bool {
        self.services
            .iter()
            .all(|s| s.state == ServiceState::Available)
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
    fn service_failure(&self) -> Option<(Reason, &str)> {
        fn failed(s: &ObservedService) -> Option<(Reason, &str)> {
            match &s.state {
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
        (self.dependencies.iter().find_map(failed))
            .or(setup)
            .or_else(|| self.services.iter().find_map(failed))
    }

    fn count(&self, phase: TestPhase) -> usize {
        self.tests
            .iter()
            .filter(|t| t.status.phase == phase)
            .count()
    }

    fn failed_test(&self) -> Option<&TestRun> {
        self.tests
            .iter()
            .find(|t| t.status.phase == TestPhase::Failed)
    }
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
    /// The rerun request the test Jobs run for.
    pub rerun_tests: Option<String>,
    /// The PreviewClass that serves the preview, when there is one.
    pub class: Option<String>,
    /// Awake or asleep, and the activity the idle time counts from.
    pub sleep: SleepStatus,
    /// Whether the last resync could ask GitHub about the repository (none: never asked).
    pub scm: Option<Result<(), String>>,
}

/// What the status says about sleeping.
#[derive(Clone, Debug)]
pub struct SleepStatus {
    pub state: sleep::State,
    pub last_active: Time,
    /// The `preview.dev/wake-request` value this status has acted on.
    pub wake_request: Option<String>,
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

/// Lines of a failed test's output kept in its status (the end, where the failure is).
const OUTPUT_LINES: usize = 10;
/// Characters of a failed test's output kept in its status.
const OUTPUT_CHARS: usize = 800;

/// The end of what a failed test printed: the termination message of its failed container
/// (with `FallbackToLogsOnError`, the end of its log when it wrote no message).
pub fn test_output<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<String> {
    let message = pods.into_iter().find_map(|pod| {
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        statuses.iter().find_map(|cs| {
            let terminated = cs.state.as_ref()?.terminated.as_ref()?;
            (terminated.exit_code != 0).then_some(())?;
            terminated.message.clone().filter(|m| !m.trim().is_empty())
        })
    })?;
    let lines: Vec<&str> = message.trim_end().lines().collect();
    let tail = lines[lines.len().saturating_sub(OUTPUT_LINES)..].join("\n");
    let skip = tail.chars().count().saturating_sub(OUTPUT_CHARS);
    Some(tail.chars().skip(skip).collect())
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

/// What one condition says: True or False, why, and a message for a developer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub reason: Reason,
    pub message: String,
}

impl Verdict {
    fn yes(reason: Reason, message: String) -> Self {
        Verdict {
            ok: true,
            reason,
            message,
        }
    }

    fn no(reason: Reason, message: String) -> Self {
        Verdict {
            ok: false,
            reason,
            message,
        }
    }

    /// As a condition of type `kind`, keeping the transition time while the status does not
    /// flip, so it says since when.
    fn condition(self, kind: &str, ctx: &Context<'_>) -> Condition {
        let status = if self.ok { "True" } else { "False" };
        let since = ctx
            .previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == kind))
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| ctx.now.clone());
        Condition {
            type_: kind.to_string(),
            status: status.to_string(),
            reason: self.reason.as_str().to_string(),
            message: self.message,
            observed_generation: ctx.generation,
            last_transition_time: since,
        }
    }
}

/// `Available`: every service rolled out at headSha.
pub fn available(gate: &Gate, observed: &Observed, sha: &str) -> Verdict {
    if let Some(closed) = gate.verdict() {
        return closed;
    }
    if let Some((reason, message)) = observed.service_failure() {
        return Verdict::no(reason, message.to_string());
    }
    let sha7 = short_sha(sha);
    match observed.stage() {
        Stage::Dependencies => {
            let waiting: Vec<&str> = (observed.dependencies.iter())
                .filter_map(|d| match &d.state {
                    ServiceState::Progressing(m) => Some(m.as_str()),
                    _ => None,
                })
                .collect();
            return Verdict::no(
                Reason::DependencyNotReady,
                format!(
                    "waiting for {}; setup and services follow",
                    waiting.join(", ")
                ),
            );
        }
        Stage::Setup => {
            let running: Vec<&str> = (observed.setup.iter())
                .filter(|s| s.status.phase != TestPhase::Succeeded)
                .map(|s| s.status.name.as_str())
                .collect();
            return Verdict::no(
                Reason::SetupRunning,
                format!(
                    "setup {} running at {sha7}; the services roll out once it succeeded",
                    running.join(", ")
                ),
            );
        }
        Stage::Services => {}
    }
    if observed.all_available() {
        return Verdict::yes(
            Reason::ServicesAvailable,
            format!(
                "all {} services are available at {}",
                observed.services.len(),
                short_sha(sha)
            ),
        );
    }
    let waiting: Vec<&str> = observed
        .services
        .iter()
        .filter_map(|s| match &s.state {
            ServiceState::Progressing(m) => Some(m.as_str()),
            _ => None,
        })
        .collect();
    Verdict::no(
        Reason::Deploying,
        format!("waiting for {}", waiting.join(", ")),
    )
}

/// `TestsSucceeded`: every test at headSha passed (true when there are none).
pub fn tests_succeeded(gate: &Gate, observed: &Observed, sha: &str) -> Verdict {
    let total = observed.tests.len();
    let passed = observed.count(TestPhase::Succeeded);
    let sha = short_sha(sha);
    if total == 0 {
        return Verdict::yes(Reason::NoTests, "the spec has no tests".to_string());
    }
    if let Some(closed) = gate.verdict() {
        return closed;
    }
    if let Some(t) = observed.failed_test() {
        // One timed-out test names the failure, whichever failed first.
        let reason = if observed
            .tests
            .iter()
            .any(|t| t.status.phase == TestPhase::Failed && t.timed_out)
        {
            Reason::TestTimedOut
        } else {
            Reason::TestFailed
        };
        return Verdict::no(reason, t.status.message.clone().unwrap_or_default());
    }
    if passed == total {
        return Verdict::yes(
            Reason::TestsSucceeded,
            format!("{passed}/{total} tests passed at {sha}"),
        );
    }
    if !observed.all_available() {
        return Verdict::no(
            Reason::WaitingForServices,
            format!("tests run at {sha} once every service is available"),
        );
    }
    Verdict::no(
        Reason::TestsRunning,
        format!("{passed}/{total} tests passed so far at {sha}"),
    )
}

/// `Ready`: both others; otherwise the first that is not, with its reason.
pub fn ready(available: &Verdict, tests_succeeded: &Verdict, url: Option<&str>) -> Verdict {
    if available.ok && tests_succeeded.ok {
        return Verdict::yes(
            Reason::Ready,
            match url {
                Some(url) => format!("preview is ready at {url}"),
                None => "preview is ready".to_string(),
            },
        );
    }
    let blocking = if available.ok {
        tests_succeeded
    } else {
        available
    };
    Verdict::no(blocking.reason, blocking.message.clone())
}

/// Where the preview is in its life.
pub fn phase(gate: &Gate, observed: &Observed) -> Phase {
    match gate {
        Gate::ConcurrencyLimit { .. } | Gate::NamespaceTerminating(_) => Phase::Pending,
        Gate::NotAdmitted { .. }
        | Gate::PolicyViolation(_)
        | Gate::NamespaceConflict(_)
        | Gate::HostConflict(_)
        | Gate::ApplyFailed(_)
        | Gate::Blocked { .. } => Phase::Failed,
        Gate::Open if observed.service_failure().is_some() || observed.failed_test().is_some() => {
            Phase::Failed
        }
        Gate::Open if observed.stage() < Stage::Services || !observed.all_available() => {
            Phase::Deploying
        }
        Gate::Open if observed.count(TestPhase::Succeeded) < observed.tests.len() => Phase::Testing,
        Gate::Open => Phase::Ready,
    }
}

/// "passed/total" for the printer column.
fn test_summary(observed: &Observed) -> String {
    let total = observed.tests.len();
    let passed = observed.count(TestPhase::Succeeded);
    match observed.count(TestPhase::Failed) {
        _ if total == 0 => "no tests".to_string(),
        0 => format!("{passed}/{total} passed"),
        failed => format!("{passed}/{total} passed, {failed} failed"),
    }
}

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
        for d in &mut s.dependencies {
            d.ready_replicas = 0;
        }
        for t in s.tests.iter_mut().chain(s.setup.iter_mut()) {
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

/// Ready reasons of progress on the way to a verdict, as opposed to a verdict or a problem.
const PROGRESS: [Reason; 5] = [
    Reason::Deploying,
    Reason::TestsRunning,
    Reason::WaitingForServices,
    Reason::SetupRunning,
    Reason::DependencyNotReady,
];

/// Whether `s` is on its way to a verdict with nothing wrong: deploying or testing for a
/// reason of progress. Nobody has to act on such a status.
pub fn on_the_way(s: &PreviewEnvironmentStatus) -> bool {
    matches!(s.phase, Some(Phase::Deploying | Phase::Testing))
        && s.conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .and_then(|c| Reason::parse(&c.reason))
            .is_some_and(|r| PROGRESS.contains(&r))
}

/// Whether `next` only moves `previous` a step forward on the way to a verdict at the same sha
/// and generation: a dependency became ready, setup finished, the services became available,
/// the tests started. Nobody waits for that (CI waits for Ready), so it may wait a moment to
/// be written together with the next step or the verdict.
pub fn step_forward(previous: &PreviewEnvironmentStatus, next: &PreviewEnvironmentStatus) -> bool {
    on_the_way(previous)
        && on_the_way(next)
        && previous.observed_sha == next.observed_sha
        && previous.observed_generation == next.observed_generation
}

/// The status the PreviewEnvironment should have.
pub fn compute(ctx: &Context<'_>, observed: &Observed) -> PreviewEnvironmentStatus {
    let sleeping = &ctx.sleep;
    let (mut status, awake) = match sleeping.state {
        sleep::State::Asleep { reason, since } => (
            asleep(ctx),
            Verdict::no(
                reason,
                format!(
                    "asleep since {} ({}); a new headSha, a new preview.dev/wake-request \
                     annotation or a visit to its URL wakes it",
                    Time(since).0,
                    if reason == Reason::Schedule {
                        "a sleep window of its PreviewClass"
                    } else {
                        "idle"
                    }
                ),
            ),
        ),
        sleep::State::Awake => (
            awake(ctx, observed),
            Verdict::yes(Reason::Awake, "its workloads run".to_string()),
        ),
    };
    status.conditions.retain(|c| c.type_ != condition::AWAKE);
    status
        .conditions
        .push(awake.condition(condition::AWAKE, ctx));
    status
        .conditions
        .retain(|c| c.type_ != condition::SCM_REACHABLE);
    if let Some(scm) = &ctx.scm {
        let verdict = match scm {
            Ok(()) => Verdict::yes(
                Reason::ScmReachable,
                "the resync could ask GitHub about this repository".to_string(),
            ),
            Err(why) => Verdict::no(
                Reason::ScmUnreachable,
                format!("{why}; nothing is deleted until GitHub answers again"),
            ),
        };
        status
            .conditions
            .push(verdict.condition(condition::SCM_REACHABLE, ctx));
    }
    status.last_active_at = Some(sleeping.last_active.clone());
    status.observed_wake_request = sleeping.wake_request.clone();
    status.sleeping_since = match sleeping.state {
        sleep::State::Asleep { since, .. } => Some(Time(since)),
        sleep::State::Awake => None,
    };
    status
}

/// A sleeping preview's status: what it last showed awake (a sleeping preview has not
/// failed), with no pod ready and phase Sleeping.
fn asleep(ctx: &Context<'_>) -> PreviewEnvironmentStatus {
    let mut s = ctx.previous.cloned().unwrap_or_default();
    s.observed_generation = ctx.generation;
    s.phase = Some(Phase::Sleeping);
    s.namespace = Some(ctx.namespace.clone());
    s.expires_at = Some(ctx.expires_at.clone());
    for svc in s.services.iter_mut().chain(s.dependencies.iter_mut()) {
        svc.ready_replicas = 0;
    }
    for c in &mut s.conditions {
        c.observed_generation = ctx.generation;
    }
    s
}

/// The status of an awake preview, from what its children show.
fn awake(ctx: &Context<'_>, observed: &Observed) -> PreviewEnvironmentStatus {
    let sha = ctx.spec.head_sha.as_str();
    let open = ctx.gate.is_open();
    let available = available(&ctx.gate, observed, sha);
    let tests_succeeded = tests_succeeded(&ctx.gate, observed, sha);
    let ready = ready(&available, &tests_succeeded, ctx.url.as_deref());
    let deployed_sha = if open && observed.all_available() {
        Some(sha.to_string())
    } else {
        ctx.previous.and_then(|p| p.deployed_sha.clone())
    };
    PreviewEnvironmentStatus {
        observed_generation: ctx.generation,
        phase: Some(phase(&ctx.gate, observed)),
        namespace: Some(ctx.namespace.clone()),
        deployed_sha,
        url: ctx.url.clone().filter(|_| open),
        observed_sha: Some(sha.to_string()),
        sha_observed_at: Some(ctx.sha_observed_at.clone()),
        expires_at: Some(ctx.expires_at.clone()),
        observed_rerun_tests: ctx.rerun_tests.clone(),
        // Written by the commit-status poster's acknowledgements, never by this step.
        reported_commit_status: ctx.previous.and_then(|p| p.reported_commit_status.clone()),
        test_summary: Some(test_summary(observed)),
        services: observed
            .services
            .iter()
            .map(|s| ServiceStatus {
                name: s.name.clone(),
                ready_replicas: s.ready_replicas,
                replicas: s.replicas,
                url: ctx.service_urls.get(&s.name).cloned(),
            })
            .collect(),
        tests: observed.tests.iter().map(|t| t.status.clone()).collect(),
        last_active_at: None,
        sleeping_since: None,
        observed_wake_request: None,
        dependencies: observed
            .dependencies
            .iter()
            .map(|d| ServiceStatus {
                name: d.name.clone(),
                ready_replicas: d.ready_replicas,
                replicas: d.replicas,
                url: None,
            })
            .collect(),
        setup: observed.setup.iter().map(|t| t.status.clone()).collect(),
        conditions: vec![
            ctx.gate
                .admitted(ctx.class.as_deref())
                .condition(condition::ADMITTED, ctx),
            available.condition(condition::AVAILABLE, ctx),
            tests_succeeded.condition(condition::TESTS_SUCCEEDED, ctx),
            ready.condition(condition::READY, ctx),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        }
    }

    /// What a reconcile would observe given these children by name.
    fn observe(
        spec: &PreviewEnvironmentSpec,
        deployments: &[(&str, &CachedDeployment)],
        jobs: &[(&str, &CachedJob)],
        problems: &[(&str, PodProblem)],
    ) -> Observed {
        Observed::new(
            spec,
            |name| {
                deployments
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, d)| *d)
            },
            |svc| {
                problems
                    .iter()
                    .find(|(n, _)| *n == svc.name)
                    .map(|(_, p)| p.clone())
            },
            |name| jobs.iter().find(|(n, _)| *n == name).map(|(_, j)| *j),
            |_| Some("line 1\nassertion failed: 2 == 3".to_string()),
        )
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
    fn a_failed_tests_output_is_cut_to_its_last_lines() {
        let lines: Vec<String> = (1..=30).map(|i| format!("line {i}")).collect();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "t0-abcdef0-x"},
            "status": {"containerStatuses": [{"name": "t0", "image": "t", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 1, "message": lines.join("\n")}}}]}
        }))
        .expect("pod fixture");
        let output = test_output([&pod]).expect("output");
        assert!(
            output.starts_with("line 21\n") && output.ends_with("line 30"),
            "{output}"
        );
        let mut passed = pod.clone();
        if let Some(cs) = passed
            .status
            .as_mut()
            .and_then(|s| s.container_statuses.as_mut())
        {
            cs[0]
                .state
                .as_mut()
                .and_then(|s| s.terminated.as_mut())
                .expect("terminated")
                .exit_code = 0;
        }
        assert_eq!(
            test_output([&passed]),
            None,
            "a passing container says nothing"
        );
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
            (awake.status.as_str(), awake.reason.as_str()),
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
    fn an_unplaceable_pod_says_what_the_scheduler_said() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db-0"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable",
                "message": "pod has unbound immediate PersistentVolumeClaims"}]}
        }))
        .expect("pod");
        assert_eq!(
            unschedulable([&pod]).as_deref(),
            Some("pod db-0 cannot be scheduled: pod has unbound immediate PersistentVolumeClaims")
        );
        let mut kept = pod.clone();
        crate::controller::pods::prune(&mut kept);
        assert!(
            unschedulable([&kept]).is_some(),
            "the cache keeps what says it"
        );
    }
}
