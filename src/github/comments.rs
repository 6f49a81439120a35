//! Pull request comments on GitHub: they are issue comments (`/issues/{number}/comments`).

use http::Method;
use serde::Deserialize;

use super::GitHub;
use crate::scm::{Author, Posted, ScmError};

#[derive(Deserialize)]
struct IssueComment {
    id: u64,
    #[serde(default)]
    body: String,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    performed_via_github_app: Option<App>,
}

#[derive(Deserialize)]
struct User {
    id: u64,
    #[serde(default, rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct App {
    id: u64,
}

impl IssueComment {
    fn posted(self) -> Posted {
        Posted {
            id: self.id,
            author: Author {
                user_id: self.user.as_ref().map(|u| u.id),
                bot: self.user.is_some_and(|u| u.kind == "Bot"),
                app_id: self.performed_via_github_app.map(|a| a.id),
            },
            body: self.body,
        }
    }
}

impl GitHub {
    /// Page `page` (of 100) of the comments on pull request `pr` of `repo`.
    pub(super) async fn issue_comments(
        &self,
        repo: &str,
        pr: i64,
        page: u32,
    ) -> Result<Vec<Posted>, ScmError> {
        let path = format!("/repos/{repo}/issues/{pr}/comments?per_page=100&page={page}");
        let comments: Vec<IssueComment> = self
            .call(repo, Method::GET, &path, "comments", None)
            .await?
            .json("comments")?;
        Ok(comments.into_iter().map(IssueComment::posted).collect())
    }

    /// Edits comment `id` (or creates one) on pull request `pr` of `repo`; its id.
    pub(super) async fn write_issue_comment(
        &self,
        repo: &str,
        pr: i64,
        id: Option<u64>,
        body: &str,
    ) -> Result<u64, ScmError> {
        let payload = serde_json::json!({ "body": body });
        let (method, path, endpoint) = match id {
            Some(id) => (
                Method::PATCH,
                format!("/repos/{repo}/issues/comments/{id}"),
                "comment_edit",
            ),
            None => (
                Method::POST,
                format!("/repos/{repo}/issues/{pr}/comments"),
                "comment_create",
            ),
        };
        self.call(repo, method, &path, endpoint, Some(&payload))
            .await
            .and_then(|a| a.json::<IssueComment>(endpoint))
            .map(|c| c.id)
    }
}
