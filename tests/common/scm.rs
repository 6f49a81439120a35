//! The loopback stand-ins for GitHub's and GitLab's REST APIs that the SCM tests point an
//! operator (or the SCM client) of their own at. GitHub: commit statuses (recorded, with
//! scripted failures), pull requests open or closed, pull request comments, and a GitHub App's
//! installation tokens and check runs (JWTs verified with the App's public key); a test serves
//! only the [`Route`]s it needs, so an operator that calls anything else gets a 404 the test
//! would notice. GitLab: commit statuses, merge requests and their notes. Both: one thread of
//! comments whose authors a test sets, to tell the operator's own comment from forged ones.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, patch, post, put};
use serde_json::{Value, json};

/// Serves `app` (a stand-in for GitHub or GitLab) on a free port of 127.0.0.1 until the test
/// ends, and returns its base URL.
pub async fn serve_locally(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// The families of GitHub routes the stand-in can answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /repos/{owner}/{repo}/statuses/{sha}`, recorded in [`GitHub::received`].
    Statuses,
    /// `GET /repos/{owner}/{repo}/pulls` and `…/pulls/{n}`, from [`GitHub::set`].
    Pulls,
    /// `GET`/`POST …/issues/{n}/comments` and `PATCH …/issues/comments/{id}`.
    Comments,
    /// The App's installation lookup and installation tokens, for JWTs of [`GitHub::app`].
    App,
    /// Check runs: created and edited with the installation token, none listed.
    CheckRuns,
}

/// One commit status post the stand-in got, and the code it answered.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub authorization: String,
    pub body: Value,
    pub answered: u16,
}

/// GitHub as far as the operator talks to it. Clones share the state, so the test keeps one
/// and the server another.
#[derive(Clone, Default)]
pub struct GitHub {
    /// Every commit status post, in arrival order.
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Answers to give to status posts, in order, before answering 201.
    pub script: Arc<Mutex<Vec<u16>>>,
    /// Status posts of this state to refuse with 500, and how many more times.
    pub refuse: Arc<Mutex<Option<(String, u32)>>>,
    /// Pull requests by number: open (true) or closed; absent ones are 404.
    pub open: Arc<Mutex<BTreeMap<i64, bool>>>,
    /// While set, every pull request read fails with 502.
    pub failing: Arc<AtomicBool>,
    /// Comments by id: (pull request, body).
    pub comments: Arc<Mutex<BTreeMap<u64, (i64, String)>>>,
    /// The App's public key; without it no JWT verifies.
    pub app_key: Option<Arc<DecodingKey>>,
    /// Every App and check run request, in arrival order.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// JWTs the stand-in could not verify.
    pub bad_jwts: Arc<Mutex<Vec<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A handler that panicked must not hide what the others recorded.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GitHub {
    /// A stand-in that answers status posts with `script` first, then 201.
    pub fn with_script(script: Vec<u16>) -> GitHub {
        GitHub {
            script: Arc::new(Mutex::new(script)),
            ..GitHub::default()
        }
    }

    /// A stand-in for GitHub App [`APP_ID`], verifying JWTs with `public_pem`.
    pub fn app(public_pem: &str) -> GitHub {
        let key = DecodingKey::from_rsa_pem(public_pem.as_bytes()).expect("key");
        GitHub {
            app_key: Some(Arc::new(key)),
            ..GitHub::default()
        }
    }

    /// Serves `routes` on 127.0.0.1 and returns the base URL.
    pub async fn serve(&self, routes: &[Route]) -> String {
        serve_locally(self.router(routes)).await
    }

    /// The router of `routes`, to serve or to merge with a test's own.
    pub fn router(&self, routes: &[Route]) -> Router {
        let mut app = Router::new();
        if routes.contains(&Route::Pulls) {
            app = app
                .route("/repos/{owner}/{repo}/pulls", get(list_pulls))
                .route("/repos/{owner}/{repo}/pulls/{n}", get(one_pull));
        }
        if routes.contains(&Route::Statuses) {
            app = app.route("/repos/{owner}/{repo}/statuses/{sha}", post(statuses));
        }
        if routes.contains(&Route::Comments) {
            app = app
                .route(
                    "/repos/{owner}/{repo}/issues/{n}/comments",
                    get(list_comments).post(create_comment),
                )
                .route(
                    "/repos/{owner}/{repo}/issues/comments/{id}",
                    patch(edit_comment),
                );
        }
        if routes.contains(&Route::App) {
            app = app
                .route("/repos/{owner}/{repo}/installation", get(installation))
                .route("/app/installations/{id}/access_tokens", post(access_token));
        }
        if routes.contains(&Route::CheckRuns) {
            app = app
                .route("/repos/{owner}/{repo}/check-runs", post(create_check_run))
                .route(
                    "/repos/{owner}/{repo}/check-runs/{id}",
                    patch(update_check_run),
                )
                .route(
                    "/repos/{owner}/{repo}/commits/{sha}/check-runs",
                    get(no_check_runs),
                );
        }
        app.with_state(self.clone())
    }

    /// Marks pull request `pr` open or closed.
    pub fn set(&self, pr: i64, open: bool) {
        lock(&self.open).insert(pr, open);
    }

    /// Makes every pull request read fail (502) or answer again.
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The comments posted so far, by id: (pull request, body).
    pub fn comments(&self) -> MutexGuard<'_, BTreeMap<u64, (i64, String)>> {
        lock(&self.comments)
    }

    /// The status posts so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }
}

async fn statuses(
    State(state): State<GitHub>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let refused = match lock(&state.refuse).as_mut() {
        Some((st, left)) if *left > 0 && body["state"] == st.as_str() => {
            *left -= 1;
            true
        }
        _ => false,
    };
    let answer = {
        let mut script = lock(&state.script);
        if refused {
            500
        } else if script.is_empty() {
            201
        } else {
            script.remove(0)
        }
    };
    lock(&state.received).push(Received {
        path: format!("/repos/{owner}/{repo}/statuses/{sha}"),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        body,
        answered: answer,
    });
    let mut response_headers = HeaderMap::new();
    if answer == 403 {
        // GitHub's secondary rate limit: retry after a second.
        response_headers.insert("x-ratelimit-remaining", "0".parse().expect("header"));
        response_headers.insert("retry-after", "1".parse().expect("header"));
    }
    let code = StatusCode::from_u16(answer).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, response_headers, "{}")
}

async fn list_pulls(State(s): State<GitHub>) -> impl IntoResponse {
    if s.failing.load(Ordering::SeqCst) {
        return (StatusCode::BAD_GATEWAY, "[]".to_string());
    }
    let open: Vec<Value> = lock(&s.open)
        .iter()
        .filter(|(_, open)| **open)
        .map(|(n, _)| json!({"number": n, "state": "open"}))
        .collect();
    (StatusCode::OK, Value::Array(open).to_string())
}

async fn one_pull(
    State(s): State<GitHub>,
    Path((_, _, n)): Path<(String, String, i64)>,
) -> impl IntoResponse {
    if s.failing.load(Ordering::SeqCst) {
        return (StatusCode::BAD_GATEWAY, "{}".to_string());
    }
    match lock(&s.open).get(&n) {
        Some(open) => (
            StatusCode::OK,
            json!({"number": n, "state": if *open { "open" } else { "closed" }}).to_string(),
        ),
        None => (StatusCode::NOT_FOUND, "{}".to_string()),
    }
}

fn body_of(request: &str) -> String {
    serde_json::from_str::<Value>(request).unwrap_or(Value::Null)["body"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn list_comments(
    State(s): State<GitHub>,
    Path((_, _, n)): Path<(String, String, i64)>,
) -> impl IntoResponse {
    let all: Vec<Value> = s
        .comments()
        .iter()
        .filter(|(_, (pr, _))| *pr == n)
        .map(|(id, (_, body))| json!({"id": id, "body": body}))
        .collect();
    (StatusCode::OK, Value::Array(all).to_string())
}

async fn create_comment(
    State(s): State<GitHub>,
    Path((_, _, n)): Path<(String, String, i64)>,
    request: String,
) -> impl IntoResponse {
    let text = body_of(&request);
    let mut all = s.comments();
    let id = all.len() as u64 + 1;
    all.insert(id, (n, text.clone()));
    (
        StatusCode::CREATED,
        json!({"id": id, "body": text}).to_string(),
    )
}

async fn edit_comment(
    State(s): State<GitHub>,
    Path((_, _, id)): Path<(String, String, u64)>,
    request: String,
) -> impl IntoResponse {
    let text = body_of(&request);
    match s.comments().get_mut(&id) {
        Some(c) => {
            c.1 = text.clone();
            (StatusCode::OK, json!({"id": id, "body": text}).to_string())
        }
        None => (StatusCode::NOT_FOUND, "{}".to_string()),
    }
}

/// The App the stand-in knows, its one installation, and the token it hands out.
pub const APP_ID: u64 = 4242;
pub const INSTALLATION: u64 = 99;
pub const INSTALLATION_TOKEN: &str = "ghs_installation-token-of-the-test";

/// One request the stand-in got: method, path, Authorization (or PRIVATE-TOKEN) and body.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: &'static str,
    pub path: String,
    pub credential: String,
    pub body: Value,
}

/// The token of a `Bearer` Authorization header, empty without one.
pub fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string()
}

impl GitHub {
    fn record(&self, method: &'static str, path: String, credential: String, body: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Seen {
                method,
                path,
                credential,
                body: serde_json::from_str(body).unwrap_or(Value::Null),
            });
    }

    /// Whether `headers` carry a JWT signed with the App's key (RS256), issued by the App and
    /// not expired.
    fn app_signed(&self, headers: &HeaderMap) -> bool {
        let token = bearer(headers);
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "iat"]);
        let issued_by_the_app = self.app_key.as_deref().is_some_and(|key| {
            jsonwebtoken::decode::<Value>(&token, key, &validation).is_ok_and(|data| {
                let iss = &data.claims["iss"];
                iss.as_u64() == Some(APP_ID) || iss.as_str() == Some(&APP_ID.to_string())
            })
        });
        if !issued_by_the_app {
            self.bad_jwts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(token);
        }
        issued_by_the_app
    }

    /// The App and check run requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn installation(
    State(s): State<GitHub>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    s.record(
        "GET",
        format!("/repos/{owner}/{repo}/installation"),
        bearer(&headers),
        "",
    );
    if !s.app_signed(&headers) {
        return (StatusCode::UNAUTHORIZED, "{}".into());
    }
    (StatusCode::OK, json!({"id": INSTALLATION}).to_string())
}

async fn access_token(
    State(s): State<GitHub>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    s.record(
        "POST",
        format!("/app/installations/{id}/access_tokens"),
        bearer(&headers),
        "",
    );
    if id != INSTALLATION || !s.app_signed(&headers) {
        return (StatusCode::UNAUTHORIZED, "{}".into());
    }
    let expires =
        k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(1);
    (
        StatusCode::CREATED,
        json!({
            "token": INSTALLATION_TOKEN,
            "expires_at": expires.to_string(),
            "permissions": {"checks": "write", "statuses": "write",
                            "pull_requests": "write", "metadata": "read"},
        })
        .to_string(),
    )
}

async fn create_check_run(
    State(s): State<GitHub>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    s.record(
        "POST",
        format!("/repos/{owner}/{repo}/check-runs"),
        bearer(&headers),
        &body,
    );
    if bearer(&headers) != INSTALLATION_TOKEN {
        return (StatusCode::UNAUTHORIZED, "{}".into());
    }
    let id = s.seen().len() as u64 + 1000;
    (StatusCode::CREATED, json!({"id": id}).to_string())
}

async fn update_check_run(
    State(s): State<GitHub>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    s.record(
        "PATCH",
        format!("/repos/{owner}/{repo}/check-runs/{id}"),
        bearer(&headers),
        &body,
    );
    if bearer(&headers) != INSTALLATION_TOKEN {
        return (StatusCode::UNAUTHORIZED, "{}".into());
    }
    (StatusCode::OK, json!({"id": id}).to_string())
}

async fn no_check_runs() -> (StatusCode, String) {
    (
        StatusCode::OK,
        json!({"total_count": 0, "check_runs": []}).to_string(),
    )
}

/// GitLab as far as the operator uses it: commit statuses, merge requests (opened unless set)
/// and their notes, every request recorded with its PRIVATE-TOKEN.
#[derive(Clone, Default)]
pub struct GitLab {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Merge request states by iid ("opened", "merged").
    pub states: Arc<Mutex<BTreeMap<i64, String>>>,
    /// Notes by id: body.
    pub notes: Arc<Mutex<BTreeMap<u64, String>>>,
}

/// The PRIVATE-TOKEN header, empty without one.
pub fn private_token(headers: &HeaderMap) -> String {
    headers
        .get("private-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

impl GitLab {
    /// Serves GitLab's API under `/api/v4` on 127.0.0.1 and returns the base URL.
    pub async fn serve(&self) -> String {
        let app = Router::new()
            .route("/api/v4/projects/{project}/statuses/{sha}", post(gl_status))
            .route(
                "/api/v4/projects/{project}/merge_requests",
                get(gl_merge_requests),
            )
            .route(
                "/api/v4/projects/{project}/merge_requests/{iid}",
                get(gl_merge_request),
            )
            .route(
                "/api/v4/projects/{project}/merge_requests/{iid}/notes",
                get(gl_list_notes).post(gl_create_note),
            )
            .route(
                "/api/v4/projects/{project}/merge_requests/{iid}/notes/{id}",
                put(gl_edit_note),
            )
            .with_state(self.clone());
        serve_locally(app).await
    }

    fn record(&self, method: &'static str, path: String, headers: &HeaderMap, body: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Seen {
                method,
                path,
                credential: private_token(headers),
                body: serde_json::from_str(body).unwrap_or(Value::Null),
            });
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The notes so far, by id.
    pub fn notes(&self) -> BTreeMap<u64, String> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn gl_status(
    State(s): State<GitLab>,
    Path((project, sha)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    s.record(
        "POST",
        format!("/projects/{project}/statuses/{sha}"),
        &headers,
        &body,
    );
    (StatusCode::CREATED, "{}".into())
}

async fn gl_merge_request(
    State(s): State<GitLab>,
    Path((project, iid)): Path<(String, i64)>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    s.record(
        "GET",
        format!("/projects/{project}/merge_requests/{iid}"),
        &headers,
        "",
    );
    let state = s
        .states
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&iid)
        .cloned()
        .unwrap_or_else(|| "opened".into());
    (
        StatusCode::OK,
        json!({"iid": iid, "state": state}).to_string(),
    )
}

async fn gl_merge_requests(State(s): State<GitLab>) -> (StatusCode, String) {
    let open: Vec<Value> = s
        .states
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|(_, state)| *state == "opened")
        .map(|(iid, state)| json!({"iid": iid, "state": state}))
        .collect();
    (StatusCode::OK, Value::Array(open).to_string())
}

async fn gl_list_notes(State(s): State<GitLab>) -> (StatusCode, String) {
    let notes: Vec<Value> = s
        .notes()
        .iter()
        .map(|(id, body)| json!({"id": id, "body": body}))
        .collect();
    (StatusCode::OK, Value::Array(notes).to_string())
}

async fn gl_create_note(
    State(s): State<GitLab>,
    Path((project, iid)): Path<(String, i64)>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    s.record(
        "POST",
        format!("/projects/{project}/merge_requests/{iid}/notes"),
        &headers,
        &body,
    );
    let text = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["body"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut notes = s.notes.lock().unwrap_or_else(|p| p.into_inner());
    let id = notes.len() as u64 + 500;
    notes.insert(id, text.clone());
    (
        StatusCode::CREATED,
        json!({"id": id, "body": text}).to_string(),
    )
}

async fn gl_edit_note(
    State(s): State<GitLab>,
    Path((project, iid, id)): Path<(String, i64, u64)>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    s.record(
        "PUT",
        format!("/projects/{project}/merge_requests/{iid}/notes/{id}"),
        &headers,
        &body,
    );
    let text = serde_json::from_str::<Value>(&body).unwrap_or(Value::Null)["body"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    s.notes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, text.clone());
    (StatusCode::OK, json!({"id": id, "body": text}).to_string())
}

/// The comments of one pull request (GitHub) or merge request (GitLab) with their authors, for
/// the tests that the comment writer edits only its own identity's comment; served without the
/// rig, merged with [`GitHub::router`] for an App.
#[derive(Clone, Default)]
pub struct Thread {
    /// By id: the author's fields (`user` and `performed_via_github_app` on GitHub, `author`
    /// on GitLab) and the body.
    comments: Arc<Mutex<BTreeMap<u64, (Value, String)>>>,
    /// The author's fields of the comments the operator creates.
    poster: Arc<Mutex<Value>>,
    /// What the operator did: `user`, `create <id>`, `edit <id>`.
    log: Arc<Mutex<Vec<String>>>,
}

/// Who the stand-in's token belongs to (`GET /user` on both providers).
pub const OUR_USER: u64 = 42;

impl Thread {
    pub fn new(poster: Value, forged: &[Value], marker: &str) -> Thread {
        let thread = Thread {
            poster: Arc::new(Mutex::new(poster)),
            ..Thread::default()
        };
        for (n, author) in forged.iter().enumerate() {
            thread.lock_comments().insert(
                n as u64 + 1,
                (author.clone(), format!("{marker}\nforged {n}, @all look")),
            );
        }
        thread
    }

    pub fn lock_comments(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Value, String)>> {
        self.comments.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note(&self, what: String) {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The comments as listed: each with its id, body and author's fields.
    fn listed(&self) -> String {
        let all: Vec<Value> = self
            .lock_comments()
            .iter()
            .map(|(id, (author, body))| {
                let mut c = author.clone();
                c["id"] = json!(id);
                c["body"] = json!(body);
                c
            })
            .collect();
        Value::Array(all).to_string()
    }

    fn create(&self, request: &str) -> (StatusCode, String) {
        let body = serde_json::from_str::<Value>(request).unwrap_or(Value::Null)["body"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let poster = self
            .poster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut comments = self.lock_comments();
        let id = comments.keys().max().copied().unwrap_or_default() + 1;
        comments.insert(id, (poster, body.clone()));
        drop(comments);
        self.note(format!("create {id}"));
        (
            StatusCode::CREATED,
            json!({"id": id, "body": body}).to_string(),
        )
    }

    fn edit(&self, id: u64, request: &str) -> (StatusCode, String) {
        let body = serde_json::from_str::<Value>(request).unwrap_or(Value::Null)["body"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.note(format!("edit {id}"));
        match self.lock_comments().get_mut(&id) {
            Some(c) => {
                c.1 = body.clone();
                (StatusCode::OK, json!({"id": id, "body": body}).to_string())
            }
            None => (StatusCode::NOT_FOUND, "{}".into()),
        }
    }

    fn user(&self) -> (StatusCode, String) {
        self.note("user".into());
        (
            StatusCode::OK,
            json!({"id": OUR_USER, "login": "preview-bot", "username": "preview-bot"}).to_string(),
        )
    }

    /// GitHub's routes for issue comments and `GET /user`.
    pub fn github(&self) -> Router {
        Router::new()
            .route(
                "/user",
                get(|State(t): State<Thread>| async move { t.user() }),
            )
            .route(
                "/repos/{owner}/{repo}/issues/{n}/comments",
                get(|State(t): State<Thread>| async move { (StatusCode::OK, t.listed()) }).post(
                    |State(t): State<Thread>, request: String| async move { t.create(&request) },
                ),
            )
            .route(
                "/repos/{owner}/{repo}/issues/comments/{id}",
                patch(
                    |State(t): State<Thread>,
                     Path((_, _, id)): Path<(String, String, u64)>,
                     request: String| async move { t.edit(id, &request) },
                ),
            )
            .with_state(self.clone())
    }

    /// GitLab's routes for merge request notes and `GET /user`.
    pub fn gitlab(&self) -> Router {
        Router::new()
            .route(
                "/api/v4/user",
                get(|State(t): State<Thread>| async move { t.user() }),
            )
            .route(
                "/api/v4/projects/{project}/merge_requests/{iid}/notes",
                get(|State(t): State<Thread>| async move { (StatusCode::OK, t.listed()) }).post(
                    |State(t): State<Thread>, request: String| async move { t.create(&request) },
                ),
            )
            .route(
                "/api/v4/projects/{project}/merge_requests/{iid}/notes/{id}",
                put(
                    |State(t): State<Thread>,
                     Path((_, _, id)): Path<(String, i64, u64)>,
                     request: String| async move { t.edit(id, &request) },
                ),
            )
            .with_state(self.clone())
    }
}
