//! Reporting on the pull request: commit statuses (`pending` while deploying or testing,
//! `success` when Ready, `failure` when tests fail, `error` on other failures, linking the
//! preview's URL), or check runs as a GitHub App; GitLab's commit statuses go through the same
//! poster.
//!
//! Statuses are posted by one background task, in order, one per real change of the preview's
//! status (never per reconcile), retried with capped backoff, waiting out rate limits; a
//! reconcile only enqueues and never waits for GitHub.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::{Phase, PreviewEnvironmentStatus, Reason, condition};
use crate::metrics::{CommitStatusResult, Metrics};

pub mod checks;
mod client;
pub mod comment;
mod pulls;
pub use client::{Credentials, GitHub, GitHubConfig};
pub use pulls::Pulls;

use crate::scm::Backend;
pub use crate::scm::status::{CommitStatus, Outcome, State, rate_limit_wait};

/// The commit status a preview's status calls for; `None` while it is torn down or has not
/// been looked at yet.
pub fn commit_status(
    repository: &str,
    preview: &str,
    status: &PreviewEnvironmentStatus,
) -> Option<CommitStatus> {
    let phase = status.phase?;
    let sha = status.observed_sha.clone()?;
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY);
    let summary = status.test_summary.clone().unwrap_or_default();
    let (state, description) = match phase {
        // Asleep is not a result: the pull request keeps what it showed.
        Phase::Terminating | Phase::Sleeping => return None,
        Phase::Pending => (
            State::Pending,
            format!(
                "waiting: {}",
                ready.map(|c| c.reason.as_str()).unwrap_or("queued")
            ),
        ),
        Phase::Deploying => (State::Pending, "deploying the services".to_string()),
        Phase::Testing => (State::Pending, format!("testing: {summary}")),
        Phase::Ready => (State::Success, format!("ready: {summary}")),
        Phase::Failed => {
            let reason = ready.map(|c| c.reason.clone()).unwrap_or_default();
            let test_failed = matches!(
                Reason::parse(&reason),
                Some(Reason::TestFailed | Reason::TestTimedOut)
            );
            let state = if test_failed {
                State::Failure
            } else {
                State::Error
            };
            let message = ready.map(|c| c.message.clone()).unwrap_or_default();
            (state, format!("{reason}: {message}"))
        }
    };
    Some(CommitStatus {
        repository: repository.to_string(),
        sha,
        context: format!("preview/{preview}"),
        state,
        // GitHub refuses descriptions over 140 characters. The message may carry what a test
        // printed: one line, and no mentions, wherever the description is shown.
        description: crate::scm::markdown::plain_line(&description)
            .chars()
            .take(140)
            .collect(),
        target_url: status
            .url
            .clone()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://")),
        check: None,
    })
}

#[derive(Serialize)]
struct Body<'a> {
    state: State,
    description: &'a str,
    context: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_url: Option<&'a str>,
}

/// Sender side handed to the controller.
#[derive(Clone)]
pub struct StatusSender {
    tx: mpsc::Sender<CommitStatus>,
    checks: bool,
}

impl StatusSender {
    /// Whether check runs are written (the operator is a GitHub App) rather than statuses.
    pub fn checks(&self) -> bool {
        self.checks
    }

    /// Enqueues without waiting; when the queue is full the status is dropped with a warning
    /// (the next change posts a fresh one) rather than slowing the reconcile down.
    pub fn send(&self, status: CommitStatus) {
        if let Err(error) = self.tx.try_send(status) {
            warn!(%error, "commit status queue full; dropping a status");
        }
    }
}

/// Longest wait for a rate limit to reset before giving a status up.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(15 * 60);
const ATTEMPTS: u32 = 6;

/// Starts a poster task; every status the provider accepts is handed to `posted`. As a GitHub
/// App it writes check runs, else commit statuses (on GitLab too).
pub fn start(
    backend: Backend,
    metrics: Arc<Metrics>,
    posted: mpsc::UnboundedSender<CommitStatus>,
) -> StatusSender {
    let (tx, rx) = mpsc::channel(4096);
    let checks = matches!(&backend, Backend::GitHub(github) if github.is_app());
    tokio::spawn(run(backend, metrics, rx, posted));
    StatusSender { tx, checks }
}

async fn attempt(backend: &Backend, checks: &mut checks::Runs, status: &CommitStatus) -> Outcome {
    let github = match backend {
        Backend::GitHub(github) => github,
        Backend::GitLab(gitlab) => return gitlab.post_status(status).await,
    };
    if github.is_app() {
        return checks.write(github, status).await;
    }
    let path = format!("/repos/{}/statuses/{}", status.repository, status.sha);
    let body = Body {
        state: status.state,
        description: &status.description,
        context: &status.context,
        target_url: status.target_url.as_deref(),
    };
    let Ok(body) = serde_json::to_value(&body) else {
        return Outcome::GiveUp("status does not serialize".into());
    };
    let answer = github
        .call(
            &status.repository,
            Method::POST,
            &path,
            "statuses",
            Some(&body),
        )
        .await;
    Outcome::of(answer)
}

async fn run(
    backend: Backend,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<CommitStatus>,
    posted: mpsc::UnboundedSender<CommitStatus>,
) {
    // The last status posted per (repository, sha, context): never post the same one twice.
    let mut last: HashMap<(String, String, String), CommitStatus> = HashMap::new();
    let mut checks = checks::Runs::default();
    while let Some(status) = rx.recv().await {
        let key = (
            status.repository.clone(),
            status.sha.clone(),
            status.context.clone(),
        );
        if last.get(&key) == Some(&status) {
            continue;
        }
        let mut delay = Duration::from_secs(1);
        let mut result = CommitStatusResult::Failed;
        for n in 1..=ATTEMPTS {
            match attempt(&backend, &mut checks, &status).await {
                Outcome::Posted => {
                    result = CommitStatusResult::Posted;
                    info!(repository = %status.repository, sha = %status.sha, state = ?status.state, "posted commit status");
                    break;
                }
                Outcome::GiveUp(why) => {
                    warn!(repository = %status.repository, sha = %status.sha, %why, "commit status refused");
                    break;
                }
                Outcome::Retry(wait) if n < ATTEMPTS => {
                    let wait = if wait.is_zero() { delay } else { wait };
                    if wait > MAX_RATE_LIMIT_WAIT {
                        warn!(?wait, "rate limited for too long; dropping a commit status");
                        break;
                    }
                    metrics.commit_status(CommitStatusResult::Retried);
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
                Outcome::Retry(_) => {}
            }
        }
        metrics.commit_status(result);
        if result == CommitStatusResult::Posted {
            // Nobody listening (shutting down) just means it is not recorded.
            let _ = posted.send(status.clone());
            last.insert(key, status);
        }
        // Bounded memory: statuses of long-gone shas are not needed.
        if last.len() > 50_000 {
            last.clear();
            checks = checks::Runs::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    fn status(phase: Phase, reason: &str) -> PreviewEnvironmentStatus {
        PreviewEnvironmentStatus {
            phase: Some(phase),
            observed_sha: Some("abcdef0".into()),
            url: Some("https://web.example.com".into()),
            test_summary: Some("1/2 passed, 1 failed".into()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: reason.into(),
                message: "test e2e failed".into(),
                observed_generation: None,
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
            }],
            ..PreviewEnvironmentStatus::default()
        }
    }

    #[test]
    fn phases_map_to_github_states() {
        let state =
            |phase, reason| commit_status("a/b", "pr-1", &status(phase, reason)).map(|s| s.state);
        assert_eq!(state(Phase::Deploying, "Deploying"), Some(State::Pending));
        assert_eq!(state(Phase::Testing, "TestsRunning"), Some(State::Pending));
        assert_eq!(state(Phase::Ready, "Ready"), Some(State::Success));
        assert_eq!(state(Phase::Failed, "TestFailed"), Some(State::Failure));
        assert_eq!(state(Phase::Failed, "TestTimedOut"), Some(State::Failure));
        assert_eq!(state(Phase::Failed, "CrashLoopBackOff"), Some(State::Error));
        assert_eq!(state(Phase::Terminating, "x"), None);
        let s = commit_status("a/b", "team/pr-1", &status(Phase::Ready, "Ready")).expect("status");
        assert_eq!(s.context, "preview/team/pr-1");
        assert_eq!(s.target_url.as_deref(), Some("https://web.example.com"));
    }

    #[test]
    fn descriptions_fit_githubs_limit() {
        let mut st = status(Phase::Failed, "TestFailed");
        st.conditions[0].message = "x".repeat(500);
        let s = commit_status("a/b", "n", &st).expect("status");
        assert!(s.description.chars().count() <= 140);
    }

    #[test]
    fn a_description_is_one_line_that_mentions_nobody() {
        let mut st = status(Phase::Failed, "TestFailed");
        st.conditions[0].message = "test e2e failed\nlast output:\n@org/team @all".into();
        let s = commit_status("a/b", "n", &st).expect("status");
        assert_eq!(
            s.description,
            "TestFailed: test e2e failed last output: @\u{200B}org/team @\u{200B}all"
        );
    }

    #[test]
    fn rate_limits_are_read_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &h, 100),
            None,
            "a plain 403 is final"
        );
        h.insert("x-ratelimit-remaining", "0".parse().expect("header"));
        h.insert("x-ratelimit-reset", "130".parse().expect("header"));
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &h, 100),
            Some(Duration::from_secs(30))
        );
        h.insert("retry-after", "7".parse().expect("header"));
        assert_eq!(
            rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &h, 100),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limit_wait(StatusCode::INTERNAL_SERVER_ERROR, &h, 100),
            None
        );
    }
}
