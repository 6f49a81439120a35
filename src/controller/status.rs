//! PURE: what the operator observed (children, pods, policy decisions) becomes the
//! PreviewEnvironment's status: phase, conditions with actionable reasons, services, tests.
//!
//! [`compute`] is one small function per condition (`available`, `tests_succeeded`, `ready`)
//! plus the phase; each returns a [`Verdict`] that `compute` turns into a `metav1.Condition`.
//! What it reads lives apart: the observation model in `observe`, the pod readers in `pods`,
//! the gate in `gate`, the pacing of status writes in `writes`; their old paths here stay.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::build::Stage;
use super::sleep;
use crate::api::{
    Condition, Phase, PreviewEnvironmentSpec, PreviewEnvironmentStatus, Reason, ReleaseStatus,
    Revision, ServiceStatus, TestPhase, condition,
};
use crate::naming::short_sha;

pub use super::gate::{Gate, Truth, Verdict};
use super::observe::delivery::ObservedRelease;
pub use super::observe::model::{
    Observed, ObservedService, Run, ServiceState, TestRun, service_state, test_run,
};
pub use super::pods::{PodProblem, pod_problem, test_output, unschedulable};
pub use super::writes::{on_the_way, progress_only, step_forward};

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
    /// Whether the last resync could ask the provider about the repository (none: never asked).
    pub scm: Option<Result<(), String>>,
    /// Of a preview that rolled out: its `UpToDate` verdict and the class and template
    /// generations it has rolled out (`rollouts`).
    pub fleet: Option<(Verdict, Option<Revision>)>,
}

/// What the status says about sleeping.
#[derive(Clone, Debug)]
pub struct SleepStatus {
    pub state: sleep::State,
    pub last_active: Time,
    /// The `preview.dev/wake-request` value this status has acted on.
    pub wake_request: Option<String>,
}

impl Verdict {
    /// As a condition of type `kind`, keeping the transition time while the status does not
    /// flip, so it says since when.
    fn condition(self, kind: &'static str, ctx: &Context<'_>) -> Condition {
        let status = self.truth.as_str();
        let since = ctx
            .previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == kind))
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| ctx.now.clone());
        Condition {
            type_: kind.into(),
            status: status.into(),
            reason: self.reason.as_str().into(),
            message: self.message,
            observed_generation: ctx.generation,
            last_transition_time: since,
        }
    }
}

/// `Available`: every service rolled out at headSha.
pub fn available(gate: &Gate, observed: &Observed, sha: &str) -> Verdict {
    if let Some(closed) = gate.unobserved() {
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
                "all {} are available at {}",
                counted(observed),
                short_sha(sha)
            ),
        );
    }
    let progressing = |state: &ServiceState| match state {
        ServiceState::Progressing(m) => Some(m.clone()),
        _ => None,
    };
    let waiting: Vec<String> = (observed.releases.iter())
        .filter_map(|r| progressing(&r.state))
        .chain(
            observed
                .services
                .iter()
                .filter_map(|s| progressing(&s.state)),
        )
        .collect();
    Verdict::no(
        Reason::Deploying,
        format!("waiting for {}", waiting.join(", ")),
    )
}

/// "3 services", "2 releases", "1 service and 1 release": what `Available` counts.
fn counted(observed: &Observed) -> String {
    let (services, releases) = (observed.services.len(), observed.releases.len());
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    match (services, releases) {
        (s, 0) => format!("{s} services"),
        (0, r) => plural(r, "release"),
        (s, r) => format!("{} and {}", plural(s, "service"), plural(r, "release")),
    }
}

/// One Flux delivery in the status.
fn release_status(r: &ObservedRelease) -> ReleaseStatus {
    ReleaseStatus {
        name: r.name.clone(),
        kind: r.kind.to_string(),
        ready: r.state == ServiceState::Available,
        revision: r.revision.clone(),
        message: match &r.state {
            ServiceState::Available => None,
            ServiceState::Progressing(m) | ServiceState::Failed { message: m, .. } => {
                Some(m.clone())
            }
        },
    }
}

/// `TestsSucceeded`: every test at headSha passed (true when there are none).
pub fn tests_succeeded(gate: &Gate, observed: &Observed, sha: &str) -> Verdict {
    // Before the gate opens the tests are not even known: a template that was not rendered
    // has none to show, whatever it declares.
    if let Some(closed) = gate.unobserved() {
        return closed;
    }
    let total = observed.tests.len();
    let passed = observed.count(TestPhase::Succeeded);
    let sha = short_sha(sha);
    if total == 0 {
        return Verdict::yes(Reason::NoTests, "the spec has no tests".to_string());
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
    if available.ok() && tests_succeeded.ok() {
        return Verdict::yes(
            Reason::Ready,
            match url {
                Some(url) => format!("preview is ready at {url}"),
                None => "preview is ready".to_string(),
            },
        );
    }
    let blocking = if available.ok() {
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
            // Nothing runs before the gate opens, so there is nothing to be awake.
            (ctx.gate.unobserved())
                .unwrap_or_else(|| Verdict::yes(Reason::Awake, "its workloads run".to_string())),
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
        let provider = ctx.spec.provider().title();
        let verdict = match scm {
            Ok(()) => Verdict::yes(
                Reason::ScmReachable,
                format!("the resync could ask {provider} about this repository"),
            ),
            Err(why) => Verdict::no(
                Reason::ScmUnreachable,
                format!("{why}; nothing is deleted until {provider} answers again"),
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
        // Only a namespace that exists for the preview is named: a refused or queued preview
        // has none, and one taken by someone else is not its own.
        namespace: if open || ctx.gate.closed_inside_namespace() {
            Some(ctx.namespace.clone())
        } else {
            ctx.previous.and_then(|p| p.namespace.clone())
        },
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
        releases: observed.releases.iter().map(release_status).collect(),
        revision: match &ctx.fleet {
            Some((_, revision)) => *revision,
            None => ctx.previous.and_then(|p| p.revision),
        },
        conditions: [
            Some(
                ctx.gate
                    .admitted(ctx.class.as_deref())
                    .condition(condition::ADMITTED, ctx),
            ),
            Some(available.condition(condition::AVAILABLE, ctx)),
            Some(tests_succeeded.condition(condition::TESTS_SUCCEEDED, ctx)),
            Some(ready.condition(condition::READY, ctx)),
            (ctx.fleet.as_ref().map(|(verdict, _)| verdict.clone()))
                .or_else(|| ctx.gate.unobserved())
                .map(|verdict| verdict.condition(condition::UP_TO_DATE, ctx)),
        ]
        .into_iter()
        .flatten()
        .collect(),
    }
}

#[cfg(test)]
mod tests;
