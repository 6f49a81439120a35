//! What a preview's status means outside the status: Events for people, the comment and
//! commit status on the pull request, metrics. [`consequences`] decides what a change calls
//! for (pure) and [`publish`] sends it; [`sync_pull_request`] brings the commit status up to
//! date. Neither waits on anyone.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::events;
use super::status;
use super::writes::Transition;
use crate::api::{
    Phase, PreviewEnvironment, PreviewEnvironmentStatus, Reason, TestPhase, condition,
};
use crate::scm::poster::Poster;
use crate::scm::status::{CommitStatus, State};
use crate::scm::{check, comment, deployment};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::mpsc;
use tracing::debug;

/// One Event to publish about the preview.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub kind: events::Kind,
    pub reason: events::Reason,
    pub note: String,
}

/// A test that finished in this transition, for the test metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedTest {
    pub succeeded: bool,
    pub took: Option<Duration>,
}

/// Everything a transition calls for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Consequences {
    pub events: Vec<Announcement>,
    /// Time from first sight of the sha to Ready, when the preview just became Ready.
    pub ready_after: Option<Duration>,
    pub tests_finished: Vec<FinishedTest>,
}

/// What `transition` calls for at `now`, besides the commit status (see [`pull_request_lags`]).
pub fn consequences(transition: &Transition, now: Timestamp) -> Consequences {
    let (before, after) = (transition.before.as_ref(), &transition.after);
    let phase_event = phase_announcement(before, after);
    // A preview that reaches Ready or Failed says so with the reason (TestFailed...) and the
    // tests' summary, in one Event or (Ready after progress) in the status alone; the results
    // that ended it get no Event each.
    let results_told = matches!(after.phase, Some(Phase::Ready | Phase::Failed))
        && (phase_event.is_some() || before.and_then(|b| b.phase) != after.phase);
    let finished = finished_tests(before, after);
    let mut events: Vec<Announcement> = phase_event.into_iter().collect();
    if !results_told {
        events.extend(finished.iter().map(|t| test_announcement(t)));
    }
    let was_ready = before.and_then(|p| p.phase) == Some(Phase::Ready);
    let ready_after = (after.phase == Some(Phase::Ready) && !was_ready)
        .then_some(after.sha_observed_at.as_ref())
        .flatten()
        .map(|since| now.duration_since(since.0).unsigned_abs());
    Consequences {
        events,
        ready_after,
        tests_finished: finished
            .iter()
            .map(|t| FinishedTest {
                succeeded: t.phase == TestPhase::Succeeded,
                took: match (&t.started_at, &t.finished_at) {
                    (Some(start), Some(end)) => Some(end.0.duration_since(start.0).unsigned_abs()),
                    _ => None,
                },
            })
            .collect(),
    }
}

/// Whether the class admits the preview to the point of reporting on its pull request: the
/// repository is bound to its namespace (admitted, or only waiting for a slot).
pub fn may_report(status: &PreviewEnvironmentStatus) -> bool {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::ADMITTED)
        .is_some_and(|c| c.status == "True" || c.reason == Reason::ConcurrencyLimit.as_str())
}

/// One Event when the phase or the Ready reason changes, except for progress.
fn phase_announcement(
    before: Option<&PreviewEnvironmentStatus>,
    after: &PreviewEnvironmentStatus,
) -> Option<Announcement> {
    let ready_of = |s: &PreviewEnvironmentStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == condition::READY)
            .cloned()
    };
    let phase = after.phase?;
    let ready = ready_of(after)?;
    let old_reason = before.and_then(ready_of).map(|c| c.reason);
    if before.and_then(|p| p.phase) == Some(phase) && old_reason.as_deref() == Some(&ready.reason) {
        return None;
    }
    if phase == Phase::Sleeping || before.and_then(|p| p.phase) == Some(Phase::Sleeping) {
        return sleep_announcement(before, after);
    }
    // Progress (deploying, setting up, testing) is in the status; an Event each would cost
    // an API write for nothing a developer needs to act on.
    if status::on_the_way(after) {
        return None;
    }
    // Ready after nothing but progress is the expected end: the status, the commit status
    // and the PR comment say it, and an Event per preview and push would be the one write
    // above what a plain client makes. Ready after a problem (a failed test, a crash loop, a
    // wait for a slot) is news, and gets one.
    if phase == Phase::Ready && before.is_none_or(status::on_the_way) {
        return None;
    }
    // Deleting was someone's own act (CI, a person, or the operator, which says why in its
    // own Event: Expired, PullRequestClosed...); the status shows Terminating.
    if phase == Phase::Terminating {
        return None;
    }
    let ends = matches!(phase, Phase::Ready | Phase::Failed);
    Some(Announcement {
        kind: if phase == Phase::Failed {
            events::Kind::Warning
        } else {
            events::Kind::Normal
        },
        reason: if ends {
            events::Reason::condition(&ready.reason)?
        } else {
            events::Reason::Phase(phase)
        },
        note: format!("{}: {}", phase.as_str(), ready.message),
    })
}

/// One Event when a preview falls asleep or wakes, with the Awake condition's reason.
fn sleep_announcement(
    before: Option<&PreviewEnvironmentStatus>,
    after: &PreviewEnvironmentStatus,
) -> Option<Announcement> {
    let awake = |s: &PreviewEnvironmentStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == condition::AWAKE)
            .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()))
    };
    let (now_awake, reason, message) = awake(after)?;
    if before.and_then(awake).map(|a| a.0) == Some(now_awake) {
        return None;
    }
    Some(Announcement {
        kind: events::Kind::Normal,
        reason: if now_awake {
            events::Reason::Woke
        } else {
            events::Reason::asleep(&reason)?
        },
        note: message,
    })
}

/// Tests whose run at a sha has a result now that it did not have before.
fn finished_tests<'a>(
    before: Option<&PreviewEnvironmentStatus>,
    after: &'a PreviewEnvironmentStatus,
) -> Vec<&'a crate::api::TestStatus> {
    after
        .tests
        .iter()
        .filter(|t| matches!(t.phase, TestPhase::Succeeded | TestPhase::Failed))
        .filter(|t| {
            let old = before
                .and_then(|p| p.tests.iter().find(|o| o.name == t.name && o.sha == t.sha))
                .map(|o| o.phase);
            old != Some(t.phase)
        })
        .collect()
}

fn test_announcement(t: &crate::api::TestStatus) -> Announcement {
    let (kind, reason) = if t.phase == TestPhase::Succeeded {
        (events::Kind::Normal, events::Reason::TestSucceeded)
    } else {
        (events::Kind::Warning, Reason::TestFailed.into())
    };
    Announcement {
        kind,
        reason,
        note: t
            .message
            .clone()
            .unwrap_or_else(|| format!("test {} passed at {}", t.name, t.sha)),
    }
}

/// Sends what `transition` of `pe` calls for.
pub fn publish(ctx: &Context, pe: &PreviewEnvironment, transition: &Transition) {
    let namespace = pe.namespace().unwrap_or_default();
    let tenant = namespace.as_str();
    let c = consequences(transition, Timestamp::now());
    if let Some(took) = c.ready_after {
        ctx.metrics.ready_after(took, tenant, &pe.spec.repository);
    }
    for t in &c.tests_finished {
        ctx.metrics
            .test_finished(t.succeeded, t.took, tenant, &pe.spec.repository);
    }
    if let Some(reporter) = ctx.reporter(pe.spec.provider())
        && may_report(&transition.after)
        // A merge queue group's preview reports on the group's commit only: the pull
        // request's comment and deployment belong to the pull request's own preview.
        && pe.spec.merge_group.is_none()
    {
        let preview = crate::naming::PreviewKey::of(pe).to_string();
        let (repository, pr) = (&pe.spec.repository, pe.spec.pull_request);
        if let Some(comments) = &reporter.comments {
            let comment = if transition.after.phase == Some(Phase::Terminating) {
                Some(comment::torn_down(repository, pr, &preview))
            } else {
                comment::render(repository, pr, &preview, &transition.after)
            };
            if let Some(comment) = comment {
                comments.send(comment);
            }
        }
        if let Some(deployment) = deployment::of(repository, &preview, &transition.after) {
            reporter.poster.deployment(deployment);
        }
    }
    for a in c.events {
        announce(ctx, pe, a);
    }
}

/// Posts the commit status `status` calls for unless the pull request shows it already (as
/// acknowledged in the status): a new verdict, or one that was dropped or lost with a
/// restart. Returns whether the pull request is behind, so the reconcile looks again soon.
pub fn sync_pull_request(
    ctx: &Context,
    pe: &PreviewEnvironment,
    status: &PreviewEnvironmentStatus,
) -> bool {
    let Some(poster) = ctx.reporter(pe.spec.provider()).map(|r| &r.poster) else {
        return false;
    };
    let preview = crate::naming::PreviewKey::of(pe).to_string();
    let Some(wanted) = pull_request_lags(&pe.spec.repository, &preview, status) else {
        return false;
    };
    // The poster posts a status once; a repeat of one in flight or posted is dropped there.
    poster.status(with_check(poster, ctx, status, wanted));
    true
}

/// PURE: the commit status that `status` of `preview` (`namespace/name`) calls for, when the
/// pull request does not show it yet. A preview its class does not admit says nothing there:
/// its repository may not be its tenant's to report on.
pub fn pull_request_lags(
    repository: &str,
    preview: &str,
    status: &PreviewEnvironmentStatus,
) -> Option<CommitStatus> {
    crate::scm::status::commit_status(repository, preview, status)
        .filter(|_| may_report(status))
        .filter(|wanted| !platform_change_in_flight(status, wanted))
        .filter(|wanted| status.reported_commit_status.as_ref() != Some(&wanted.reported()))
}

/// PURE: whether `status` shows a change of the preview's class on its way (waiting for its
/// turn, rolling out, or held for a missing Secret) at a sha the pull request already shows a
/// result for: a platform change says nothing on the pull request until it has a verdict.
fn platform_change_in_flight(status: &PreviewEnvironmentStatus, wanted: &CommitStatus) -> bool {
    let platform = status.conditions.iter().any(|c| {
        c.type_ == condition::UP_TO_DATE
            && c.status == "False"
            && matches!(
                Reason::parse(&c.reason),
                Some(Reason::ClassChanged | Reason::RolloutQueued | Reason::ClassNotReady)
            )
    });
    let shown = status
        .reported_commit_status
        .as_ref()
        .is_some_and(|r| r.sha == wanted.sha);
    platform && shown && wanted.state == State::Pending
}

/// With check runs, `commit_status` with the output its check run shows: the status and the
/// logs of its finished tests.
fn with_check(
    poster: &Poster,
    ctx: &Context,
    status: &PreviewEnvironmentStatus,
    mut commit_status: CommitStatus,
) -> CommitStatus {
    if !poster.checks() {
        return commit_status;
    }
    let logs = ctx.logs.of(status.namespace.as_deref().unwrap_or_default());
    let by_test = status
        .tests
        .iter()
        .filter_map(|t| Some((t.name.clone(), logs.get(t.job.as_deref()?)?.clone())))
        .collect();
    commit_status.check = Some(std::sync::Arc::new(check::output(status, &by_test)));
    commit_status
}

/// Records every commit status GitHub accepted in its preview's status (one merge patch
/// each, under a field manager of its own), so a restart knows what the pull request shows.
pub async fn record_posted(client: Client, mut posted: mpsc::UnboundedReceiver<CommitStatus>) {
    let params = PatchParams {
        field_manager: Some(POSTER.to_string()),
        ..PatchParams::default()
    };
    while let Some(status) = posted.recv().await {
        let Some((namespace, name)) = status.preview() else {
            continue;
        };
        let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), namespace);
        let patch = serde_json::json!({"status": {"reportedCommitStatus": status.reported()}});
        if let Err(error) = api.patch_status(name, &params, &Patch::Merge(&patch)).await {
            // The next reconcile posts it again (the poster skips what it already posted).
            debug!(%error, namespace, name, "failed to record a posted commit status");
        }
    }
}

/// Field manager of the acknowledgements of posted commit statuses.
const POSTER: &str = "preview-operator-github";

/// Queues one Event about `pe`.
pub fn announce(ctx: &Context, pe: &PreviewEnvironment, a: Announcement) {
    ctx.events.send(events::Note {
        kind: a.kind,
        reason: a.reason,
        note: a.note,
        regarding: pe.object_ref(&()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Condition;
    use crate::api::TestStatus;
    use crate::fixtures::{self, SHA};

    fn admitted(yes: bool) -> Condition {
        Condition {
            type_: condition::ADMITTED.into(),
            status: if yes { "True" } else { "False" }.into(),
            reason: if yes {
                "Admitted"
            } else {
                "RepositoryNotAllowed"
            }
            .into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: fixtures::time(100),
        }
    }

    #[test]
    fn a_preview_its_class_refuses_posts_no_commit_status() {
        let mut refused = status(Phase::Failed, "RepositoryNotAllowed", &[]);
        refused.conditions[0] = admitted(false);
        assert_eq!(lags(&refused), None);
        let c = of(None, refused);
        assert_eq!(c.events.len(), 1, "the tenant still hears why");
    }

    fn status(phase: Phase, reason: &str, tests: &[(TestPhase, i64)]) -> PreviewEnvironmentStatus {
        PreviewEnvironmentStatus {
            phase: Some(phase),
            observed_sha: Some(SHA.into()),
            sha_observed_at: Some(fixtures::time(100)),
            conditions: vec![
                admitted(true),
                Condition {
                    type_: condition::READY.into(),
                    status: if phase == Phase::Ready {
                        "True"
                    } else {
                        "False"
                    }
                    .into(),
                    reason: reason.to_string().into(),
                    message: format!("{reason} message"),
                    observed_generation: Some(1),
                    last_transition_time: fixtures::time(100),
                },
            ],
            tests: tests
                .iter()
                .enumerate()
                .map(|(i, (phase, took))| TestStatus {
                    name: format!("t{i}"),
                    sha: SHA.into(),
                    phase: *phase,
                    job: None,
                    started_at: Some(fixtures::time(100)),
                    finished_at: Some(fixtures::time(100 + took)),
                    message: (*phase == TestPhase::Failed).then(|| "t failed".to_string()),
                    reason: None,
                })
                .collect(),
            ..PreviewEnvironmentStatus::default()
        }
    }

    fn of(
        before: Option<PreviewEnvironmentStatus>,
        after: PreviewEnvironmentStatus,
    ) -> Consequences {
        let t = Transition { before, after };
        consequences(&t, fixtures::time(130).0)
    }

    /// The commit status `status` of the fixture preview still has to post.
    fn lags(status: &PreviewEnvironmentStatus) -> Option<CommitStatus> {
        pull_request_lags("acme/shop", "team-shop/shop-pr-1", status)
    }

    #[test]
    fn the_pull_request_hears_of_a_verdict_until_it_shows_it() {
        let mut ready = status(Phase::Ready, "Ready", &[(TestPhase::Succeeded, 20)]);
        let wanted = lags(&ready).expect("not shown yet");
        assert_eq!(wanted.state, State::Success);
        assert_eq!(wanted.context, "preview/team-shop/shop-pr-1");
        ready.reported_commit_status = Some(wanted.reported());
        assert_eq!(lags(&ready), None, "acknowledged: nothing to post");
        let mut failed = status(Phase::Failed, "TestFailed", &[(TestPhase::Failed, 5)]);
        failed.reported_commit_status = ready.reported_commit_status.clone();
        assert_eq!(
            lags(&failed).map(|s| s.state),
            Some(State::Failure),
            "a new verdict replaces the one shown"
        );
    }

    #[test]
    fn becoming_ready_is_a_success_status_and_the_time_to_ready_but_no_event() {
        let testing = status(Phase::Testing, "TestsRunning", &[(TestPhase::Running, 0)]);
        let ready = status(Phase::Ready, "Ready", &[(TestPhase::Succeeded, 20)]);
        assert!(
            of(None, ready.clone()).events.is_empty(),
            "Ready as the first status"
        );
        assert_eq!(lags(&ready).map(|s| s.state), Some(State::Success));
        let c = of(Some(testing), ready);
        assert!(c.events.is_empty(), "{:?}", c.events);
        assert_eq!(c.ready_after, Some(Duration::from_secs(30)));
        assert_eq!(
            c.tests_finished,
            vec![FinishedTest {
                succeeded: true,
                took: Some(Duration::from_secs(20))
            }]
        );
    }

    #[test]
    fn ready_after_a_problem_is_an_event() {
        let failed = status(Phase::Failed, "TestFailed", &[(TestPhase::Failed, 5)]);
        let ready = status(Phase::Ready, "Ready", &[(TestPhase::Succeeded, 20)]);
        let c = of(Some(failed), ready);
        assert_eq!(c.events.len(), 1, "{:?}", c.events);
        assert_eq!(c.events[0].reason, "Ready");
        assert_eq!(c.events[0].kind, events::Kind::Normal);
        let crashing = status(Phase::Deploying, "CrashLoopBackOff", &[]);
        let ready = status(Phase::Ready, "Ready", &[]);
        assert_eq!(of(Some(crashing), ready).events.len(), 1);
    }

    #[test]
    fn a_failed_test_fails_the_commit_status_with_a_warning() {
        let testing = status(Phase::Testing, "TestsRunning", &[(TestPhase::Running, 0)]);
        let failed = status(Phase::Failed, "TestFailed", &[(TestPhase::Failed, 5)]);
        assert_eq!(lags(&failed).map(|s| s.state), Some(State::Failure));
        let c = of(Some(testing), failed);
        assert_eq!(c.events.len(), 1);
        assert_eq!(c.events[0].kind, events::Kind::Warning);
        assert_eq!(c.events[0].reason, "TestFailed");
        assert_eq!(c.ready_after, None);
    }

    #[test]
    fn a_test_result_without_a_phase_change_gets_its_own_event() {
        let one_running = status(
            Phase::Testing,
            "TestsRunning",
            &[(TestPhase::Running, 0), (TestPhase::Running, 0)],
        );
        let mut one_done = status(
            Phase::Testing,
            "TestsRunning",
            &[(TestPhase::Succeeded, 3), (TestPhase::Running, 0)],
        );
        one_done.reported_commit_status = lags(&one_running).map(|s| s.reported());
        assert_eq!(
            lags(&one_done),
            None,
            "still pending: nothing new for the PR"
        );
        let c = of(Some(one_running), one_done);
        assert_eq!(c.events.len(), 1);
        assert_eq!(c.events[0].reason, "TestSucceeded");
        assert_eq!(c.tests_finished.len(), 1);
    }

    #[test]
    fn progress_towards_a_verdict_is_not_an_event() {
        let deploying = status(Phase::Deploying, "Deploying", &[]);
        let testing = status(Phase::Testing, "TestsRunning", &[(TestPhase::Running, 0)]);
        assert!(of(None, deploying.clone()).events.is_empty());
        let c = of(Some(deploying), testing.clone());
        assert!(c.events.is_empty(), "{:?}", c.events);
        assert_eq!(
            lags(&testing).map(|s| s.state),
            Some(State::Pending),
            "the pull request still hears of it"
        );
        let stuck = status(Phase::Deploying, "CrashLoopBackOff", &[]);
        let c = of(Some(testing), stuck);
        assert_eq!(c.events.len(), 1, "a problem is an event");
        assert_eq!(c.events[0].reason, "Deploying");
    }

    #[test]
    fn progress_within_a_phase_calls_for_nothing() {
        let a = status(Phase::Deploying, "Deploying", &[]);
        let mut b = a.clone();
        b.conditions[1].message = "waiting for web (1/2 available)".into();
        assert_eq!(of(Some(a), b), Consequences::default());
    }

    #[test]
    fn terminating_is_no_event_and_posts_no_commit_status() {
        let ready = status(Phase::Ready, "Ready", &[]);
        let mut terminating = ready.clone();
        terminating.phase = Some(Phase::Terminating);
        assert_eq!(lags(&terminating), None);
        let c = of(Some(ready), terminating);
        assert!(c.events.is_empty(), "{:?}", c.events);
    }
}
