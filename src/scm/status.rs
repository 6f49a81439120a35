//! What a commit status is, whichever provider it is posted to, and what one attempt to post
//! it came to (rate limits read from the answer's headers).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde::Serialize;
use tracing::debug;

use crate::api::ReportedStatus;
use crate::github::checks;
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
    pub check: Option<Arc<checks::Output>>,
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
