//! A GitHub deployment per preview and head sha, in the transient, non-production
//! environment `preview/<namespace>/<name>`, so the pull request shows "View deployment"
//! linking the preview's URL. Its statuses follow the preview (`in_progress`, `success`,
//! `failure`); a new success retires the sha before it (`auto_inactive`), and teardown posts
//! `inactive` on the newest.
//!
//! Deployments are created with `auto_merge: false` and no required contexts: the commit is
//! the pull request's own and the preview's check is what the preview is waiting for, so
//! GitHub must neither merge the default branch into it nor wait for other checks.

use std::collections::HashMap;

use http::Method;
use serde::{Deserialize, Serialize};

use super::GitHub;
use crate::scm::deployment::{Deployment, DeploymentState};
use crate::scm::status::Outcome;

/// `repos/create-deployment`'s body.
#[derive(Serialize)]
struct Create<'a> {
    #[serde(rename = "ref")]
    sha: &'a str,
    environment: &'a str,
    description: &'a str,
    transient_environment: bool,
    production_environment: bool,
    auto_merge: bool,
    required_contexts: [&'a str; 0],
}

/// `repos/create-deployment-status`'s body.
#[derive(Serialize)]
struct Status<'a> {
    state: &'static str,
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment_url: Option<&'a str>,
    auto_inactive: bool,
}

#[derive(Deserialize)]
struct Created {
    id: u64,
}

/// (repository, environment) of a deployment.
type Environment = (String, String);

/// The deployments created so far: per environment, the newest one's sha and id.
#[derive(Default)]
pub(crate) struct Known {
    newest: HashMap<Environment, (String, u64)>,
}

impl Known {
    /// One attempt to bring the deployment of `d`'s environment to `d`.
    pub(crate) async fn write(&mut self, github: &GitHub, d: &Deployment) -> Outcome {
        let key = (d.repository.clone(), d.environment.clone());
        let id = match (self.newest.get(&key), d.state) {
            (Some((_, id)), DeploymentState::Inactive) => *id,
            (Some((sha, id)), _) if *sha == d.sha => *id,
            (_, DeploymentState::Inactive) => match newest(github, d, None).await {
                Ok(Some(id)) => id,
                // Nothing was ever deployed there: nothing to retire.
                Ok(None) => return Outcome::Posted,
                Err(outcome) => return outcome,
            },
            _ => match newest(github, d, Some(&d.sha)).await {
                Ok(Some(id)) => id,
                Ok(None) => match create(github, d).await {
                    Ok(id) => id,
                    Err(outcome) => return outcome,
                },
                Err(outcome) => return outcome,
            },
        };
        if self.newest.len() > 50_000 {
            // Bounded memory: a lost id is found again by listing.
            self.newest.clear();
        }
        self.newest.insert(key.clone(), (d.sha.clone(), id));
        let outcome = post_status(github, d, id).await;
        if d.state == DeploymentState::Inactive && matches!(outcome, Outcome::Posted) {
            self.newest.remove(&key);
        }
        outcome
    }
}

/// The newest deployment of `d`'s environment (at `sha`, when given), written before a
/// restart or by an earlier sha.
async fn newest(
    github: &GitHub,
    d: &Deployment,
    sha: Option<&str>,
) -> Result<Option<u64>, Outcome> {
    let mut path = format!(
        "/repos/{}/deployments?environment={}&per_page=1",
        d.repository, d.environment
    );
    if let Some(sha) = sha {
        path.push_str(&format!("&sha={sha}"));
    }
    let answer = github
        .call(&d.repository, Method::GET, &path, "deployments", None)
        .await;
    match answer {
        Ok(a) if a.status.is_success() => a
            .json::<Vec<Created>>("deployments")
            .map(|found| found.first().map(|f| f.id))
            .map_err(|e| Outcome::GiveUp(e.to_string())),
        other => Err(Outcome::of(other)),
    }
}

/// Creates the deployment of `d`'s sha; its id.
async fn create(github: &GitHub, d: &Deployment) -> Result<u64, Outcome> {
    let body = Create {
        sha: &d.sha,
        environment: &d.environment,
        description: "preview-operator",
        transient_environment: true,
        production_environment: false,
        auto_merge: false,
        required_contexts: [],
    };
    let body = serde_json::to_value(&body).map_err(|e| Outcome::GiveUp(e.to_string()))?;
    let path = format!("/repos/{}/deployments", d.repository);
    let answer = github
        .call(
            &d.repository,
            Method::POST,
            &path,
            "deployment_create",
            Some(&body),
        )
        .await;
    match answer {
        // 201 is a deployment; 202 would be a merge GitHub made instead, never asked for.
        Ok(a) if a.status == http::StatusCode::CREATED => a
            .json::<Created>("deployment")
            .map(|c| c.id)
            .map_err(|e| Outcome::GiveUp(e.to_string())),
        Ok(a) if a.status.is_success() => Err(Outcome::GiveUp(format!(
            "GitHub answered {} to a deployment of {} without creating it",
            a.status, d.sha
        ))),
        other => Err(Outcome::of(other)),
    }
}

/// Posts `d`'s state on deployment `id`.
async fn post_status(github: &GitHub, d: &Deployment, id: u64) -> Outcome {
    let body = Status {
        state: d.state.as_str(),
        description: &d.description,
        environment_url: d
            .url
            .as_deref()
            .filter(|_| d.state != DeploymentState::Inactive),
        auto_inactive: true,
    };
    let Ok(body) = serde_json::to_value(&body) else {
        return Outcome::GiveUp("deployment status does not serialize".into());
    };
    let path = format!("/repos/{}/deployments/{id}/statuses", d.repository);
    let answer = github
        .call(
            &d.repository,
            Method::POST,
            &path,
            "deployment_status",
            Some(&body),
        )
        .await;
    Outcome::of(answer)
}
