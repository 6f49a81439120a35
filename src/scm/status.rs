//! What a commit status is, whichever provider it is posted to, and what one attempt to post
//! it came to (rate limits read from the answer's headers).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde::Serialize;
use tracing::debug;

use crate::api::{Phase, PreviewEnvironmentStatus, Reason, ReportedStatus, condition};
use crate::scm::check;
use crate::scm::{Answer, ScmError};

/// GitHub's commit status states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Success,
    Failure,
    Error,
}

/// One commit status to post.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitStatus {
    /// `owner/name`.
    pub repository: String,
    pub sha: String,
    /// `preview/<namespace>/<PreviewEnvironment name>`: unique per preview, so one tenant's
    /// preview never writes over another's status on the same commit.
    pub context: String,
    pub state: State,
    pub description: String,
    pub target_url: Option<String>,
    /// With a GitHub App, the check run's output (a commit status has no room for it).
    pub check: Option<Arc<check::Output>>,
}

impl CommitStatus {
    /// What the preview's status records once this is posted.
    pub fn reported(&self) -> ReportedStatus {
        ReportedStatus {
            sha: self.sha.clone(),
            state: self.state.as_str().to_string(),
            description: self.description.clone(),
        }
    }

    /// The preview (`namespace`, `name`) its context names.
    pub fn preview(&self) -> Option<(&str, &str)> {
        crate::naming::PreviewKey::parts(self.context.strip_prefix("preview/")?)
    }
}

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
                ready.map(|c| c.reason.as_ref()).unwrap_or("queued")
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

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
        }
    }
}

/// What one attempt came to.
pub enum Outcome {
    Posted,
    Retry(Duration),
    GiveUp(String),
}

/// How long a rate-limited answer asks us to wait: `Retry-After` seconds, else until
/// `X-RateLimit-Reset` when `X-RateLimit-Remaining` is 0. `None` when it is not a rate limit.
pub fn rate_limit_wait(
    status: StatusCode,
    headers: &HeaderMap,
    now_epoch: u64,
) -> Option<Duration> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(secs) = header("retry-after") {
        return Some(Duration::from_secs(secs));
    }
    if header("x-ratelimit-remaining") == Some(0) {
        let reset = header("x-ratelimit-reset").unwrap_or(now_epoch + 60);
        return Some(Duration::from_secs(reset.saturating_sub(now_epoch).max(1)));
    }
    // A 429 without hints: back off a minute, as GitHub's docs advise.
    (status == StatusCode::TOO_MANY_REQUESTS).then_some(Duration::from_secs(60))
}

impl Outcome {
    /// What an answer (or none) means for the attempt.
    pub fn of(answer: Result<Answer, ScmError>) -> Outcome {
        let answer = match answer {
            Ok(answer) => answer,
            Err(error) => return Outcome::Retry(Duration::ZERO).with_note(&error.to_string()),
        };
        let code = answer.status;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        if code.is_success() {
            Outcome::Posted
        } else if let Some(wait) = rate_limit_wait(code, &answer.headers, now) {
            Outcome::Retry(wait)
        } else if code.is_server_error() || code == StatusCode::REQUEST_TIMEOUT {
            Outcome::Retry(Duration::ZERO)
        } else {
            Outcome::GiveUp(format!("{} answered {code}", answer.provider))
        }
    }
}

impl Outcome {
    fn with_note(self, note: &str) -> Self {
        debug!(note, "commit status attempt failed");
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Condition;
    use http::{HeaderMap, StatusCode};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
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
                reason: reason.to_string().into(),
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
