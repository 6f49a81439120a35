//! GitHub's implementation of [`Forge`]: commit statuses, or check runs as a GitHub App
//! ([`checks`]); one comment per preview ([`comments`]); a deployment per preview
//! ([`deployments`]); pull requests' state ([`pulls`]); and the webhook ([`hook`]). The
//! client ([`GitHub`]) mints one installation token per installation and reuses it.

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use http::Method;
use serde::Serialize;

use crate::scm::deployment::Deployment;
use crate::scm::status::{CommitStatus, Outcome, State};
use crate::scm::{Forge, Me, Posted, PrState, Provider, ScmError};

pub mod checks;
mod client;
mod comments;
pub mod deployments;
pub mod hook;
mod pulls;

pub use client::{Credentials, GitHub, GitHubConfig};

impl Forge for GitHub {
    fn provider(&self) -> Provider {
        Provider::Github
    }

    fn me(&self) -> BoxFuture<'_, Result<Me, ScmError>> {
        Box::pin(GitHub::me(self))
    }

    fn state<'a>(
        &'a self,
        repository: &'a str,
        number: i64,
    ) -> BoxFuture<'a, Result<PrState, ScmError>> {
        Box::pin(self.pull_state(repository, number))
    }

    fn open<'a>(&'a self, repository: &'a str) -> BoxFuture<'a, Result<BTreeSet<i64>, ScmError>> {
        Box::pin(self.open_pulls(repository))
    }

    fn writes_checks(&self) -> bool {
        self.is_app()
    }

    fn post_status<'a>(&'a self, status: &'a CommitStatus) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            if self.is_app() {
                return self.runs.lock().await.write(self, status).await;
            }
            self.post_commit_status(status).await
        })
    }

    fn comments<'a>(
        &'a self,
        repository: &'a str,
        number: i64,
        page: u32,
    ) -> BoxFuture<'a, Result<Vec<Posted>, ScmError>> {
        Box::pin(self.issue_comments(repository, number, page))
    }

    fn write_comment<'a>(
        &'a self,
        repository: &'a str,
        number: i64,
        id: Option<u64>,
        body: &'a str,
    ) -> BoxFuture<'a, Result<u64, ScmError>> {
        Box::pin(self.write_issue_comment(repository, number, id, body))
    }

    fn deploy<'a>(&'a self, deployment: &'a Deployment) -> BoxFuture<'a, Outcome> {
        Box::pin(async move { self.deployments.lock().await.write(self, deployment).await })
    }
}

/// `repos/create-commit-status`'s body.
#[derive(Serialize)]
struct StatusBody<'a> {
    state: State,
    description: &'a str,
    context: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_url: Option<&'a str>,
}

impl GitHub {
    /// One attempt to post `status` as a commit status.
    async fn post_commit_status(&self, status: &CommitStatus) -> Outcome {
        let path = format!("/repos/{}/statuses/{}", status.repository, status.sha);
        let body = StatusBody {
            state: status.state,
            description: &status.description,
            context: &status.context,
            target_url: status.target_url.as_deref(),
        };
        let Ok(body) = serde_json::to_value(&body) else {
            return Outcome::GiveUp("status does not serialize".into());
        };
        let answer = self
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
}
