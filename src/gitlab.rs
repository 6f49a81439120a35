//! GitLab, for previews with `spec.provider: gitlab`: commit statuses on the merge request's
//! sha, one note per preview on the merge request, and the merge request's state (for the
//! webhook's confirmation and the resync), through GitLab's REST API (v4) with a token.
//!
//! A small client over hyper rather than the `gitlab` crate: the operator needs five
//! endpoints, and that crate brings a second HTTP stack (reqwest), a GraphQL client and a
//! token check at start-up; this way every call is counted, bounded and rate-limit aware in
//! the same way as GitHub's.
//!
//! This is GitLab's [`Forge`]: merge request notes are the comments, an environment per
//! preview its deployment ([`environments`]), and `POST /webhooks/gitlab` deliveries are read
//! by [`hook`].

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::credential::Credential;
use crate::metrics::Metrics;
use futures::future::BoxFuture;

use crate::scm::deployment::Deployment;
use crate::scm::status::{CommitStatus, Outcome, State};
use crate::scm::{Answer, Author, Forge, Me, Posted, PrState, Provider, ScmError, TIMEOUT};

mod environments;
pub mod hook;

/// Pages of 100 read when listing (open merge requests, notes).
const MAX_PAGES: u32 = 20;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Where GitLab is and the operator's token there.
#[derive(Clone)]
pub struct GitLabConfig {
    /// e.g. `https://gitlab.com` or `https://gitlab.example.com`.
    pub url: String,
    /// Read on every call, so a rotated token file is used without a restart.
    pub token: Credential,
}

/// A GitLab client.
pub struct GitLab {
    client: HttpsClient,
    api: String,
    token: Credential,
    metrics: Arc<Metrics>,
    /// The token's user, once asked, and the token's version it is of (a new token may be
    /// someone else's). Async, so concurrent first callers ask once.
    me: tokio::sync::Mutex<Option<(u64, Me)>>,
    /// The environments written, for the poster (which alone takes it, so it never waits).
    environments: tokio::sync::Mutex<environments::Known>,
}

#[derive(Deserialize)]
struct MergeRequest {
    iid: i64,
    state: String,
}

#[derive(Deserialize)]
struct Note {
    id: u64,
    #[serde(default)]
    body: String,
    #[serde(default)]
    author: Option<User>,
}

#[derive(Deserialize)]
struct User {
    id: u64,
}

/// A project path as one URL path segment: `group/sub/project` → `group%2Fsub%2Fproject`.
/// Paths are checked at admission (letters, digits, `_.-` and `/`), so only `/` needs it.
pub fn project_id(path: &str) -> String {
    path.replace('/', "%2F")
}

impl GitLab {
    pub fn new(config: &GitLabConfig, metrics: Arc<Metrics>) -> anyhow::Result<Arc<GitLab>> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Arc::new(GitLab {
            client: Client::builder(TokioExecutor::new()).build(https),
            api: format!("{}/api/v4", config.url.trim_end_matches('/')),
            token: config.token.clone(),
            metrics,
            me: tokio::sync::Mutex::new(None),
            environments: Default::default(),
        }))
    }

    /// One call: `path` below `/api/v4`, counted as `endpoint`. Every answer is `Ok`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        endpoint: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, ScmError> {
        let what = format!("{endpoint} {path}");
        let provider = Provider::Gitlab;
        let unreachable = |message: String| ScmError::Unreachable {
            provider,
            what: what.clone(),
            message,
        };
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.api))
            .header("private-token", &*self.token.current())
            .header("user-agent", "preview-operator")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .map_err(|e| unreachable(e.to_string()))?;
        let answer = tokio::time::timeout(TIMEOUT, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            Answer::read(
                provider,
                endpoint,
                response,
                "ratelimit-remaining",
                &self.metrics,
            )
            .await
            .map_err(unreachable)
        })
        .await;
        answer.unwrap_or_else(|_| {
            self.metrics.scm_request(Provider::Gitlab, endpoint, 0);
            Err(ScmError::Timeout {
                provider,
                what: what.clone(),
            })
        })
    }

    /// Whether merge request `iid` of `project` is open (closed, merged and locked count as
    /// closed: a locked one is being merged).
    pub async fn state(&self, project: &str, iid: i64) -> Result<PrState, ScmError> {
        let path = format!("/projects/{}/merge_requests/{iid}", project_id(project));
        let what = format!("{project}!{iid}");
        let mr: MergeRequest = self
            .call(Method::GET, &path, "merge_request", None)
            .await?
            .json(&what)?;
        Ok(match mr.state.as_str() {
            "opened" => PrState::Open,
            _ => PrState::Closed,
        })
    }

    /// The iids of the open merge requests of `project`.
    pub async fn open(&self, project: &str) -> Result<BTreeSet<i64>, ScmError> {
        let what = format!("the open merge requests of {project}");
        let mut open = BTreeSet::new();
        for page in 1..=MAX_PAGES {
            let path = format!(
                "/projects/{}/merge_requests?state=opened&per_page=100&page={page}",
                project_id(project)
            );
            let mrs: Vec<MergeRequest> = self
                .call(Method::GET, &path, "merge_requests", None)
                .await?
                .json(&what)?;
            let full = mrs.len() == 100;
            open.extend(
                mrs.into_iter()
                    .filter(|m| m.state == "opened")
                    .map(|m| m.iid),
            );
            if !full {
                break;
            }
        }
        Ok(open)
    }

    /// Posts `status` as a commit status of the project.
    pub async fn post_status(&self, status: &CommitStatus) -> Outcome {
        let path = format!(
            "/projects/{}/statuses/{}",
            project_id(&status.repository),
            status.sha
        );
        let mut body = serde_json::json!({
            "state": state(status),
            "name": status.context,
            "description": status.description,
        });
        if let Some(url) = &status.target_url {
            body["target_url"] = url.clone().into();
        }
        let answer = self
            .call(Method::POST, &path, "statuses", Some(&body))
            .await;
        status_outcome(answer)
    }

    /// The token's user (`GET /user`, asked once): the author of the operator's notes.
    pub async fn me(&self) -> Result<Me, ScmError> {
        let mut known = self.me.lock().await;
        let version = self.token.versioned().version;
        if let Some((of, me)) = *known
            && of == version
        {
            return Ok(me);
        }
        let what = "the token's user (GET /user)";
        let user: User = self
            .call(Method::GET, "/user", "user", None)
            .await?
            .json(what)?;
        let me = Me::User(user.id);
        *known = Some((version, me));
        Ok(me)
    }

    /// Page `page` (of 100) of the notes on merge request `iid`.
    pub async fn notes(&self, project: &str, iid: i64, page: u32) -> Result<Vec<Posted>, ScmError> {
        let path = format!(
            "/projects/{}/merge_requests/{iid}/notes?per_page=100&page={page}",
            project_id(project)
        );
        let notes: Vec<Note> = self
            .call(Method::GET, &path, "notes", None)
            .await?
            .json("notes")?;
        Ok(notes
            .into_iter()
            .map(|n| Posted {
                id: n.id,
                body: n.body,
                author: Author {
                    user_id: n.author.map(|a| a.id),
                    ..Author::default()
                },
            })
            .collect())
    }

    /// Edits note `id` (or creates one) on merge request `iid` to say `body`; its id.
    pub async fn write_note(
        &self,
        project: &str,
        iid: i64,
        id: Option<u64>,
        body: &str,
    ) -> Result<u64, ScmError> {
        let base = format!(
            "/projects/{}/merge_requests/{iid}/notes",
            project_id(project)
        );
        let payload = serde_json::json!({ "body": body });
        let answer = match id {
            Some(id) => {
                self.call(
                    Method::PUT,
                    &format!("{base}/{id}"),
                    "note_edit",
                    Some(&payload),
                )
                .await?
            }
            None => {
                self.call(Method::POST, &base, "note_create", Some(&payload))
                    .await?
            }
        };
        Ok(answer.json::<Note>("note")?.id)
    }
}

impl Forge for GitLab {
    fn provider(&self) -> Provider {
        Provider::Gitlab
    }

    fn me(&self) -> BoxFuture<'_, Result<Me, ScmError>> {
        Box::pin(GitLab::me(self))
    }

    fn state<'a>(
        &'a self,
        repository: &'a str,
        number: i64,
    ) -> BoxFuture<'a, Result<PrState, ScmError>> {
        Box::pin(GitLab::state(self, repository, number))
    }

    fn open<'a>(&'a self, repository: &'a str) -> BoxFuture<'a, Result<BTreeSet<i64>, ScmError>> {
        Box::pin(GitLab::open(self, repository))
    }

    fn post_status<'a>(&'a self, status: &'a CommitStatus) -> BoxFuture<'a, Outcome> {
        Box::pin(GitLab::post_status(self, status))
    }

    fn comments<'a>(
        &'a self,
        repository: &'a str,
        number: i64,
        page: u32,
    ) -> BoxFuture<'a, Result<Vec<Posted>, ScmError>> {
        Box::pin(self.notes(repository, number, page))
    }

    fn write_comment<'a>(
        &'a self,
        repository: &'a str,
        number: i64,
        id: Option<u64>,
        body: &'a str,
    ) -> BoxFuture<'a, Result<u64, ScmError>> {
        Box::pin(self.write_note(repository, number, id, body))
    }

    fn deploy<'a>(&'a self, deployment: &'a Deployment) -> BoxFuture<'a, Outcome> {
        Box::pin(self.environment(deployment))
    }
}

/// What GitLab's answer to a commit status post means for the poster.
fn status_outcome(answer: Result<Answer, ScmError>) -> Outcome {
    let Ok(a) = &answer else {
        return Outcome::of(answer);
    };
    // GitLab refuses a status in the state it already shows ("Cannot transition status
    // via :run from :running"): the merge request shows what we meant, which is enough.
    if a.status == StatusCode::BAD_REQUEST
        && String::from_utf8_lossy(&a.body).contains("Cannot transition status")
    {
        return Outcome::Posted;
    }
    // 409: another status of the same commit and name is being written ("update in progress,
    // retry"): not a refusal of this one, so it is retried with the poster's backoff (after
    // Retry-After when GitLab gives one), like a rate limit.
    if a.status == StatusCode::CONFLICT {
        let wait = a
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(std::time::Duration::from_secs)
            .unwrap_or_default();
        return Outcome::Retry(wait);
    }
    Outcome::of(answer)
}

/// GitLab's commit status states: `running` while deploying or testing, `pending` while
/// queued.
fn state(status: &CommitStatus) -> &'static str {
    match status.state {
        State::Pending if status.description.starts_with("waiting") => "pending",
        State::Pending => "running",
        State::Success => "success",
        State::Failure | State::Error => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: u16, body: &str, headers: &[(&str, &str)]) -> Result<Answer, ScmError> {
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        Ok(Answer {
            provider: Provider::Gitlab,
            status: StatusCode::from_u16(code).expect("code"),
            headers: map,
            body: Bytes::from(body.to_string()),
        })
    }

    #[test]
    fn a_status_update_in_progress_is_retried_not_given_up() {
        let conflict = answer(409, r#"{"message":"409 Conflict"}"#, &[]);
        assert!(
            matches!(status_outcome(conflict), Outcome::Retry(wait) if wait.is_zero()),
            "retried with the poster's backoff"
        );
        let told = answer(409, "{}", &[("retry-after", "3")]);
        assert!(matches!(
            status_outcome(told),
            Outcome::Retry(wait) if wait == std::time::Duration::from_secs(3)
        ));
        let limited = answer(429, "{}", &[("retry-after", "7")]);
        assert!(matches!(
            status_outcome(limited),
            Outcome::Retry(wait) if wait == std::time::Duration::from_secs(7)
        ));
        let same = answer(
            400,
            r#"{"message":"Cannot transition status via :run from :running"}"#,
            &[],
        );
        assert!(matches!(status_outcome(same), Outcome::Posted));
        let refused = answer(403, r#"{"message":"403 Forbidden"}"#, &[]);
        assert!(
            matches!(status_outcome(refused), Outcome::GiveUp(why) if why.contains("GitLab")),
            "a refusal is final, and says who refused"
        );
    }

    #[test]
    fn project_paths_become_one_segment() {
        assert_eq!(project_id("acme/platform/shop"), "acme%2Fplatform%2Fshop");
    }
}
