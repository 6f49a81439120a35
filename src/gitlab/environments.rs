//! A GitLab environment per preview, named `preview/<namespace>/<name>` (GitLab shows the
//! `preview/` ones as a folder), whose external URL is the preview's, so the merge request
//! and the project's Environments page link it; stopped on teardown.
//!
//! GitLab starts an environment only through a deployment of a pipeline, so a preview
//! recreated under the name of a stopped one links its URL from the stopped environment.

use std::collections::HashMap;

use http::Method;
use serde::{Deserialize, Serialize};

use super::{GitLab, project_id, status_outcome};
use crate::scm::deployment::{Deployment, DeploymentState};
use crate::scm::status::Outcome;

/// An environment as GitLab lists it.
#[derive(Deserialize)]
struct Environment {
    id: u64,
    #[serde(default)]
    external_url: Option<String>,
    #[serde(default)]
    state: String,
}

/// `postApiV4ProjectsIdEnvironments`'s body.
#[derive(Serialize)]
struct Create<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_url: Option<&'a str>,
    tier: &'static str,
}

/// (project, environment) → (id, external URL) as last written.
#[derive(Default)]
pub(super) struct Known(HashMap<(String, String), (u64, Option<String>)>);

impl GitLab {
    /// One attempt to bring the environment of `d` to it: created, or its URL updated, or
    /// stopped when `d` is inactive.
    pub(super) async fn environment(&self, d: &Deployment) -> Outcome {
        let key = (d.repository.clone(), d.environment.clone());
        let known = self.environments.lock().await.0.get(&key).cloned();
        if d.state != DeploymentState::Inactive
            && let Some((_, url)) = &known
            && *url == d.url
        {
            return Outcome::Posted;
        }
        let found = match known {
            Some((id, url)) => Some(Environment {
                id,
                external_url: url,
                state: "available".into(),
            }),
            None => match self.find_environment(d).await {
                Ok(found) => found,
                Err(outcome) => return outcome,
            },
        };
        let project = project_id(&d.repository);
        let (outcome, written) = match (found, d.state) {
            (None, DeploymentState::Inactive) => return Outcome::Posted,
            (Some(env), DeploymentState::Inactive) if env.state == "stopped" => {
                (Outcome::Posted, None)
            }
            (Some(env), DeploymentState::Inactive) => {
                let path = format!("/projects/{project}/environments/{}/stop", env.id);
                let answer = self
                    .call(Method::POST, &path, "environment_stop", None)
                    .await;
                (status_outcome(answer), None)
            }
            (Some(env), _) if env.external_url == d.url || d.url.is_none() => {
                (Outcome::Posted, Some((env.id, env.external_url)))
            }
            (Some(env), _) => {
                let path = format!("/projects/{project}/environments/{}", env.id);
                let body = serde_json::json!({ "external_url": d.url });
                let answer = self
                    .call(Method::PUT, &path, "environment_update", Some(&body))
                    .await;
                (status_outcome(answer), Some((env.id, d.url.clone())))
            }
            (None, _) => match self.create_environment(d).await {
                Ok(id) => (Outcome::Posted, Some((id, d.url.clone()))),
                Err(outcome) => return outcome,
            },
        };
        let mut known = self.environments.lock().await;
        match (&outcome, written) {
            (Outcome::Posted, Some(written)) => {
                if known.0.len() > 50_000 {
                    // Bounded memory: a lost id is found again by listing.
                    known.0.clear();
                }
                known.0.insert(key, written);
            }
            _ => {
                known.0.remove(&key);
            }
        }
        outcome
    }

    /// The environment of `d`'s name, if the project has it.
    async fn find_environment(&self, d: &Deployment) -> Result<Option<Environment>, Outcome> {
        let path = format!(
            "/projects/{}/environments?name={}",
            project_id(&d.repository),
            d.environment
        );
        match self.call(Method::GET, &path, "environments", None).await {
            Ok(a) if a.status.is_success() => a
                .json::<Vec<Environment>>("environments")
                .map(|found| found.into_iter().next())
                .map_err(|e| Outcome::GiveUp(e.to_string())),
            other => Err(status_outcome(other)),
        }
    }

    /// Creates the environment of `d`; its id.
    async fn create_environment(&self, d: &Deployment) -> Result<u64, Outcome> {
        let body = Create {
            name: &d.environment,
            external_url: d.url.as_deref(),
            tier: "development",
        };
        let body = serde_json::to_value(&body).map_err(|e| Outcome::GiveUp(e.to_string()))?;
        let path = format!("/projects/{}/environments", project_id(&d.repository));
        match (self.call(Method::POST, &path, "environment_create", Some(&body))).await {
            Ok(a) if a.status.is_success() => a
                .json::<Environment>("environment")
                .map(|e| e.id)
                .map_err(|e| Outcome::GiveUp(e.to_string())),
            other => Err(status_outcome(other)),
        }
    }
}
