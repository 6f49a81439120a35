//! Loopback stand-ins for GitHub's deployments and GitLab's environments: every request is
//! recorded with its body, deployments and environments are kept so that listing finds what
//! was created, and answers carry the fields the operator reads (`id`, and for GitLab
//! `external_url` and `state`). Each gives a router to merge into a test's GitHub or GitLab.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use serde_json::{Value, json};

/// One request a stand-in got.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub body: Value,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A handler that panicked must not hide what the others recorded.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// GitHub's deployments of every repository: created ones kept as `{id, sha, ref,
/// environment}`, newest last.
#[derive(Clone, Default)]
pub struct GitHubDeployments {
    pub seen: Arc<Mutex<Vec<Request>>>,
    pub created: Arc<Mutex<Vec<Value>>>,
}

#[derive(serde::Deserialize)]
struct Listing {
    environment: Option<String>,
    sha: Option<String>,
}

impl GitHubDeployments {
    /// `GET`/`POST /repos/{owner}/{repo}/deployments` and `POST …/deployments/{id}/statuses`.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/repos/{owner}/{repo}/deployments",
                get(gh_list).post(gh_create),
            )
            .route(
                "/repos/{owner}/{repo}/deployments/{id}/statuses",
                post(gh_status),
            )
            .with_state(self.clone())
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Request> {
        lock(&self.seen).clone()
    }

    /// The states posted on deployment `id`, in order.
    pub fn states(&self, id: u64) -> Vec<String> {
        let suffix = format!("/deployments/{id}/statuses");
        self.seen()
            .into_iter()
            .filter(|r| r.path.ends_with(&suffix))
            .map(|r| r.body["state"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The deployments created so far.
    pub fn created(&self) -> Vec<Value> {
        lock(&self.created).clone()
    }

    fn record(&self, method: &'static str, path: String, body: &str) {
        lock(&self.seen).push(Request {
            method,
            path,
            body: serde_json::from_str(body).unwrap_or(Value::Null),
        });
    }
}

async fn gh_list(
    State(s): State<GitHubDeployments>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<Listing>,
) -> (StatusCode, String) {
    s.record("GET", format!("/repos/{owner}/{repo}/deployments"), "");
    let found: Vec<Value> = (lock(&s.created).iter().rev())
        .filter(|d| {
            q.environment
                .as_ref()
                .is_none_or(|e| d["environment"] == *e)
        })
        .filter(|d| q.sha.as_ref().is_none_or(|sha| d["sha"] == *sha))
        .cloned()
        .collect();
    (StatusCode::OK, Value::Array(found).to_string())
}

async fn gh_create(
    State(s): State<GitHubDeployments>,
    Path((owner, repo)): Path<(String, String)>,
    body: String,
) -> (StatusCode, String) {
    s.record("POST", format!("/repos/{owner}/{repo}/deployments"), &body);
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut created = lock(&s.created);
    let id = 1000 + created.len() as u64;
    let deployment = json!({
        "id": id, "sha": request["ref"], "ref": request["ref"],
        "environment": request["environment"], "task": "deploy",
        "transient_environment": request["transient_environment"],
        "production_environment": request["production_environment"],
    });
    created.push(deployment.clone());
    (StatusCode::CREATED, deployment.to_string())
}

async fn gh_status(
    State(s): State<GitHubDeployments>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    body: String,
) -> (StatusCode, String) {
    let path = format!("/repos/{owner}/{repo}/deployments/{id}/statuses");
    s.record("POST", path, &body);
    if !lock(&s.created).iter().any(|d| d["id"] == id) {
        return (StatusCode::NOT_FOUND, "{}".into());
    }
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let status = json!({"id": 1, "state": request["state"],
                        "environment_url": request["environment_url"]});
    (StatusCode::CREATED, status.to_string())
}

/// GitLab's environments of every project: `{id, name, external_url, state}`.
#[derive(Clone, Default)]
pub struct GitLabEnvironments {
    pub seen: Arc<Mutex<Vec<Request>>>,
    pub environments: Arc<Mutex<Vec<Value>>>,
}

#[derive(serde::Deserialize)]
struct ByName {
    name: Option<String>,
}

impl GitLabEnvironments {
    /// `GET`/`POST /api/v4/projects/{id}/environments`, `PUT …/environments/{id}` and
    /// `POST …/environments/{id}/stop`.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/api/v4/projects/{project}/environments",
                get(gl_list).post(gl_create),
            )
            .route(
                "/api/v4/projects/{project}/environments/{id}",
                put(gl_update),
            )
            .route(
                "/api/v4/projects/{project}/environments/{id}/stop",
                post(gl_stop),
            )
            .with_state(self.clone())
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Request> {
        lock(&self.seen).clone()
    }

    /// The environments as they are now.
    pub fn environments(&self) -> Vec<Value> {
        lock(&self.environments).clone()
    }

    fn record(&self, method: &'static str, path: String, body: &str) {
        lock(&self.seen).push(Request {
            method,
            path,
            body: serde_json::from_str(body).unwrap_or(Value::Null),
        });
    }
}

async fn gl_list(
    State(s): State<GitLabEnvironments>,
    Path(project): Path<String>,
    Query(q): Query<ByName>,
) -> (StatusCode, String) {
    s.record("GET", format!("/projects/{project}/environments"), "");
    let found: Vec<Value> = (lock(&s.environments).iter())
        .filter(|e| q.name.as_ref().is_none_or(|n| e["name"] == *n))
        .cloned()
        .collect();
    (StatusCode::OK, Value::Array(found).to_string())
}

async fn gl_create(
    State(s): State<GitLabEnvironments>,
    Path(project): Path<String>,
    body: String,
) -> (StatusCode, String) {
    s.record("POST", format!("/projects/{project}/environments"), &body);
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut all = lock(&s.environments);
    if all.iter().any(|e| e["name"] == request["name"]) {
        return (
            StatusCode::BAD_REQUEST,
            json!({"message": {"name": ["has already been taken"]}}).to_string(),
        );
    }
    let environment = json!({
        "id": 100 + all.len() as u64, "name": request["name"],
        "external_url": request["external_url"], "tier": request["tier"], "state": "available",
    });
    all.push(environment.clone());
    (StatusCode::CREATED, environment.to_string())
}

async fn gl_update(
    State(s): State<GitLabEnvironments>,
    Path((project, id)): Path<(String, u64)>,
    body: String,
) -> (StatusCode, String) {
    s.record(
        "PUT",
        format!("/projects/{project}/environments/{id}"),
        &body,
    );
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut all = lock(&s.environments);
    match all.iter_mut().find(|e| e["id"] == id) {
        Some(e) => {
            e["external_url"] = request["external_url"].clone();
            (StatusCode::OK, e.to_string())
        }
        None => (StatusCode::NOT_FOUND, "{}".into()),
    }
}

async fn gl_stop(
    State(s): State<GitLabEnvironments>,
    Path((project, id)): Path<(String, u64)>,
    body: String,
) -> (StatusCode, String) {
    s.record(
        "POST",
        format!("/projects/{project}/environments/{id}/stop"),
        &body,
    );
    let mut all = lock(&s.environments);
    match all.iter_mut().find(|e| e["id"] == id) {
        Some(e) => {
            e["state"] = "stopped".into();
            (StatusCode::OK, e.to_string())
        }
        None => (StatusCode::NOT_FOUND, "{}".into()),
    }
}
