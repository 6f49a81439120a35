//! Reading pull requests' state from GitHub, so that only a pull request GitHub itself reports
//! closed deletes a preview: a webhook's "closed" is confirmed before deleting (a replayed
//! delivery of a reopened PR deletes nothing), and the fail-safe resync finds PRs whose
//! webhook never arrived. Every answer but an explicit "closed" deletes nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;

use super::{GitHubConfig, HttpsClient, https_client};
use crate::metrics::Metrics;

/// Longest a call to GitHub may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read (100 pull requests of a page are well under it).
const MAX_ANSWER: usize = 8 * 1024 * 1024;
/// Pages of open pull requests read per repository, 100 each.
const MAX_PAGES: u32 = 20;

/// Where a pull request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrState {
    Open,
    Closed,
}

/// Why GitHub could not tell.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScmError {
    #[error("GitHub answered {status} to {what}")]
    Status { status: u16, what: String },
    #[error("GitHub could not be reached for {what}: {message}")]
    Unreachable { what: String, message: String },
    #[error("GitHub did not answer {what} within {}s", TIMEOUT.as_secs())]
    Timeout { what: String },
    #[error("GitHub's answer to {what} is not understood: {message}")]
    Malformed { what: String, message: String },
}

#[derive(Deserialize)]
struct Pull {
    number: i64,
    state: String,
}

/// Reads pull requests with the operator's token.
pub struct Pulls {
    client: HttpsClient,
    config: GitHubConfig,
    metrics: Arc<Metrics>,
}

impl Pulls {
    pub fn new(config: GitHubConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        Ok(Pulls {
            client: https_client()?,
            config,
            metrics,
        })
    }

    /// Whether pull request `number` of `repository` is open or closed (merged counts as
    /// closed).
    pub async fn state(&self, repository: &str, number: i64) -> Result<PrState, ScmError> {
        let what = format!("{repository}#{number}");
        let body = self
            .get(
                &format!("/repos/{repository}/pulls/{number}"),
                "pull",
                &what,
            )
            .await?;
        let pull: Pull = serde_json::from_slice(&body).map_err(|e| ScmError::Malformed {
            what: what.clone(),
            message: e.to_string(),
        })?;
        match pull.state.as_str() {
            "open" => Ok(PrState::Open),
            "closed" => Ok(PrState::Closed),
            other => Err(ScmError::Malformed {
                what,
                message: format!("state {other:?}"),
            }),
        }
    }

    /// The numbers of the open pull requests of `repository`.
    pub async fn open(&self, repository: &str) -> Result<BTreeSet<i64>, ScmError> {
        let what = format!("the open pull requests of {repository}");
        let mut open = BTreeSet::new();
        for page in 1..=MAX_PAGES {
            let path = format!("/repos/{repository}/pulls?state=open&per_page=100&page={page}");
            let body = self.get(&path, "pulls", &what).await?;
            let pulls: Vec<Pull> =
                serde_json::from_slice(&body).map_err(|e| ScmError::Malformed {
                    what: what.clone(),
                    message: e.to_string(),
                })?;
            let full = pulls.len() == 100;
            open.extend(
                pulls
                    .into_iter()
                    .filter(|p| p.state == "open")
                    .map(|p| p.number),
            );
            if !full {
                break;
            }
        }
        Ok(open)
    }

    async fn get(&self, path: &str, endpoint: &str, what: &str) -> Result<Bytes, ScmError> {
        let url = format!("{}{path}", self.config.api_url.trim_end_matches('/'));
        let request = Request::get(&url)
            .header("authorization", format!("Bearer {}", self.config.token))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("user-agent", "preview-operator")
            .body(Full::new(Bytes::new()))
            .map_err(|e| ScmError::Unreachable {
                what: what.to_string(),
                message: e.to_string(),
            })?;
        let answer = tokio::time::timeout(TIMEOUT, async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|e| ScmError::Unreachable {
                        what: what.to_string(),
                        message: e.to_string(),
                    })?;
            let status = response.status();
            if let Some(left) = response
                .headers()
                .get("x-ratelimit-remaining")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
            {
                self.metrics.scm_rate_limit_remaining("github", left);
            }
            self.metrics
                .scm_request("github", endpoint, status.as_u16());
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| ScmError::Unreachable {
                    what: what.to_string(),
                    message: e.to_string(),
                })?
                .to_bytes();
            if !status.is_success() {
                return Err(ScmError::Status {
                    status: status.as_u16(),
                    what: what.to_string(),
                });
            }
            Ok(body)
        })
        .await;
        answer.unwrap_or_else(|_| {
            self.metrics.scm_request("github", endpoint, 0);
            Err(ScmError::Timeout {
                what: what.to_string(),
            })
        })
    }
}
