//! GitHub `pull_request` and GitLab merge request webhooks: when a PR (MR) closes, merged or
//! not, every PreviewEnvironment of that repository and PR whose class binds it to its
//! namespace is deleted, even if the CI job that should have deleted it never ran.
//!
//! Deliveries are verified (GitHub: HMAC-SHA256 `X-Hub-Signature-256`; GitLab: the
//! `X-Gitlab-Token` secret; both compared in constant time), bounded in size and time,
//! deduplicated by their delivery id, and answered at once: the deletions run afterwards on a
//! background task, after asking the provider whether the PR really is closed.
//!
//! A signature proves that the provider sent a body once, not that it is news: a captured
//! close delivery can be replayed under a fresh delivery id after the PR was reopened. Without
//! credentials to ask the provider, a close therefore deletes only the previews at the commit
//! the delivery names (its head sha), which a reopened PR's previews are not once they have
//! moved on.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use sha2::Sha256;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::PreviewEnvironment;
use crate::api::class::PreviewClass;
use crate::client::gone_is_ok;
use crate::controller::policy;
use crate::credential::Credential;
use crate::metrics::{Metrics, WebhookResult};
pub use crate::scm::ClosedPr;
use crate::scm::{PrState, Provider, Scm, ScmError};
use crate::sync::lock;

/// A closed pull request (or a destroyed merge queue group) to tear down, and the delivery
/// that said so (forgotten again when the teardown cannot run, so a redelivery is handled
/// instead of answered "already handled").
#[derive(Clone, Debug)]
pub struct Teardown {
    pub pr: ClosedPr,
    /// The merge queue group (its ref without `refs/heads/`) whose previews go, instead of
    /// the pull request's: `pr.number` is then not compared.
    pub group: Option<String>,
    /// The PR's head commit when it closed, as the delivery says (GitHub
    /// `pull_request.head.sha`, GitLab `object_attributes.last_commit.id`): what an
    /// unconfirmed close may delete.
    pub head_sha: Option<String>,
    pub delivery: Option<String>,
}

/// Checks `X-Hub-Signature-256` (`sha256=<hex>`) against the body, in constant time.
pub fn signature_valid(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&expected).is_ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[derive(Deserialize)]
struct PullRequestEvent {
    pull_request: PullRequest,
    repository: Repository,
}

#[derive(Deserialize)]
struct PullRequest {
    number: i64,
    #[serde(default)]
    merged: Option<bool>,
    #[serde(default)]
    head: Option<Head>,
}

#[derive(Deserialize)]
struct Head {
    sha: String,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

/// What a delivery asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Ping,
    /// A closed PR and its head sha (lower-case hex), when the delivery names a valid one.
    Closed {
        pr: ClosedPr,
        head_sha: Option<String>,
    },
    /// A merge queue group was destroyed (merged, invalidated or dequeued): its previews go.
    GroupDestroyed {
        repository: String,
        /// Its ref without `refs/heads/`.
        group: String,
        head_sha: Option<String>,
    },
    Ignored,
}

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed pull_request payload: {0}")]
    Malformed(String),
}

/// Interprets a verified delivery.
pub fn parse(event: &str, body: &[u8]) -> Result<Delivery, ParseError> {
    match event {
        "ping" => Ok(Delivery::Ping),
        "pull_request" => {
            let value: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| ParseError::Malformed(e.to_string()))?;
            // Only a close is read further: an action the operator does not act on is
            // ignored whatever else it carries, so no authentic delivery is refused for
            // fields the operator does not read.
            match value["action"].as_str() {
                Some("closed") => {}
                Some(_) => return Ok(Delivery::Ignored),
                None => {
                    return Err(ParseError::Malformed(
                        "a pull_request event without an action".into(),
                    ));
                }
            }
            let e: PullRequestEvent =
                serde_json::from_value(value).map_err(|e| ParseError::Malformed(e.to_string()))?;
            if e.pull_request.number < 1 || !e.repository.full_name.contains('/') {
                return Err(ParseError::Malformed(
                    "pull request number or repository name out of range".into(),
                ));
            }
            Ok(Delivery::Closed {
                head_sha: e.pull_request.head.and_then(|h| commit(&h.sha)),
                pr: ClosedPr {
                    provider: Provider::Github,
                    repository: e.repository.full_name,
                    number: e.pull_request.number,
                    merged: e.pull_request.merged.unwrap_or(false),
                },
            })
        }
        "merge_group" => merge_group::parse(body),
        _ => Ok(Delivery::Ignored),
    }
}

/// A commit id from a delivery, lower-cased: SHA-1 or SHA-256 hex, else nothing.
fn commit(text: &str) -> Option<String> {
    let valid = (7..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| text.to_ascii_lowercase())
}

/// The head sha of a GitLab merge request delivery: `object_attributes.last_commit.id`.
fn gitlab_head_sha(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Hook {
        object_attributes: Attributes,
    }
    #[derive(Deserialize)]
    struct Attributes {
        last_commit: LastCommit,
    }
    #[derive(Deserialize)]
    struct LastCommit {
        id: String,
    }
    let hook: Hook = serde_json::from_slice(body).ok()?;
    commit(&hook.object_attributes.last_commit.id)
}

/// Whether a preview at `spec_sha` is at the commit a delivery names. A spec may hold an
/// abbreviation (7 to 40 hex digits, checked at admission) of the full sha the delivery
/// carries.
pub fn at_head(spec_sha: &str, head_sha: Option<&str>) -> bool {
    head_sha.is_some_and(|head| spec_sha.len() >= 7 && head.starts_with(spec_sha))
}

/// Remembers the last `capacity` delivery ids: GitHub redelivers on timeouts and by hand.
#[derive(Debug)]
pub struct SeenDeliveries {
    order: VecDeque<String>,
    set: HashSet<String>,
    capacity: usize,
}

impl SeenDeliveries {
    pub fn new(capacity: usize) -> Self {
        SeenDeliveries {
            order: VecDeque::new(),
            set: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Forgets `id`, so a redelivery of a delivery that could not be handled is handled.
    pub fn forget(&mut self, id: &str) {
        if self.set.remove(id) {
            self.order.retain(|o| o != id);
        }
    }

    /// Records `id`; false when it was seen before.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(id.to_string());
        self.set.insert(id.to_string());
        true
    }
}

/// What the webhook handler needs.
#[derive(Clone)]
pub struct WebhookState {
    /// Read per delivery, so a rotated secret file is checked against without a restart.
    pub secret: Credential,
    pub seen: Arc<Mutex<SeenDeliveries>>,
    pub closed: mpsc::Sender<Teardown>,
    pub metrics: Arc<Metrics>,
    /// Whether the operator has credentials to ask this provider whether a PR is closed
    /// (what the answer tells the sender).
    pub confirms: bool,
}

async fn handle(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let answer = |result: WebhookResult, code: StatusCode, text: String| {
        state.metrics.webhook_delivery(result);
        (code, text)
    };
    let secret = state.secret.current();
    if !signature_valid(secret.as_bytes(), &body, header("x-hub-signature-256")) {
        return answer(
            WebhookResult::Unauthorized,
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-Hub-Signature-256\n".into(),
        );
    }
    let event = header("x-github-event").unwrap_or_default().to_string();
    if let Some(id) = header("x-github-delivery")
        && !lock(&state.seen).first_time(id)
    {
        return answer(
            WebhookResult::Duplicate,
            StatusCode::OK,
            format!("delivery {id} already handled\n"),
        );
    }
    match parse(&event, &body) {
        Ok(Delivery::Ping) => answer(WebhookResult::Ping, StatusCode::OK, "pong\n".into()),
        Ok(Delivery::Ignored) => answer(
            WebhookResult::Ignored,
            StatusCode::ACCEPTED,
            format!("event {event:?} needs nothing\n"),
        ),
        Ok(Delivery::Closed { pr, head_sha }) => {
            let delivery = header("x-github-delivery").map(str::to_string);
            let (result, code, text) = close(&state, pr, head_sha, delivery);
            answer(result, code, text)
        }
        Ok(Delivery::GroupDestroyed {
            repository,
            group,
            head_sha,
        }) => {
            let delivery = header("x-github-delivery").map(str::to_string);
            let (result, code, text) =
                merge_group::destroyed(&state, repository, group, head_sha, delivery);
            answer(result, code, text)
        }
        Err(e) => answer(
            WebhookResult::Malformed,
            StatusCode::BAD_REQUEST,
            format!("{e}\n"),
        ),
    }
}

/// Answers a close and queues its teardown, unless nothing could be deleted: without
/// credentials to confirm it and without a head sha to match, a close deletes nothing.
fn close(
    state: &WebhookState,
    pr: ClosedPr,
    head_sha: Option<String>,
    delivery: Option<String>,
) -> (WebhookResult, StatusCode, String) {
    let (sep, provider) = match pr.provider {
        Provider::Github => ('#', "GitHub"),
        Provider::Gitlab => ('!', "GitLab"),
    };
    let what = format!("{}{sep}{}", pr.repository, pr.number);
    let text = match (&head_sha, state.confirms) {
        (_, true) => {
            format!("tearing down previews of {what} once {provider} confirms it is closed\n")
        }
        (Some(sha), false) => format!(
            "tearing down only the previews of {what} at {sha}: the operator has no {provider} \
             credentials to confirm that it is closed, and previews at other commits may belong \
             to it reopened\n"
        ),
        (None, false) => {
            return (
                WebhookResult::Ignored,
                StatusCode::ACCEPTED,
                format!(
                    "nothing deleted: the operator has no {provider} credentials to confirm that \
                     {what} is closed, and the delivery names no head commit\n"
                ),
            );
        }
    };
    let teardown = Teardown {
        pr,
        group: None,
        head_sha,
        delivery,
    };
    enqueue(state, teardown, text)
}

/// Queues a teardown; the work happens after answering. A full queue means the sender should
/// retry, so the delivery is forgotten (a redelivery is handled, not answered "duplicate").
fn enqueue(
    state: &WebhookState,
    teardown: Teardown,
    text: String,
) -> (WebhookResult, StatusCode, String) {
    match state.closed.try_send(teardown) {
        Ok(()) => (WebhookResult::Accepted, StatusCode::ACCEPTED, text),
        Err(refused) => {
            if let Some(id) = refused.into_inner().delivery {
                lock(&state.seen).forget(&id);
            }
            (
                WebhookResult::Busy,
                StatusCode::SERVICE_UNAVAILABLE,
                "teardown queue full, retry later\n".into(),
            )
        }
    }
}

/// `POST /webhooks/gitlab`: a merge request closed or merged, told with the secret token.
async fn handle_gitlab(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    use subtle::ConstantTimeEq;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let answer = |result: WebhookResult, code: StatusCode, text: String| {
        state.metrics.webhook_delivery(result);
        (code, text)
    };
    let token = header("x-gitlab-token").unwrap_or_default().as_bytes();
    let secret = state.secret.current();
    if token.is_empty() || !bool::from(token.ct_eq(secret.as_bytes())) {
        return answer(
            WebhookResult::Unauthorized,
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-Gitlab-Token\n".into(),
        );
    }
    let delivery = header("x-gitlab-event-uuid")
        .or_else(|| header("idempotency-key"))
        .map(|id| format!("gitlab:{id}"));
    if let Some(id) = &delivery
        && !lock(&state.seen).first_time(id)
    {
        return answer(
            WebhookResult::Duplicate,
            StatusCode::OK,
            format!("delivery {id} already handled\n"),
        );
    }
    match crate::gitlab::parse_hook(&body) {
        Ok(Some(pr)) => {
            let (result, code, text) = close(&state, pr, gitlab_head_sha(&body), delivery);
            answer(result, code, text)
        }
        Ok(None) => answer(
            WebhookResult::Ignored,
            StatusCode::ACCEPTED,
            "event needs nothing\n".into(),
        ),
        Err(e) => answer(
            WebhookResult::Malformed,
            StatusCode::BAD_REQUEST,
            format!("{e}\n"),
        ),
    }
}

/// Deliveries handled at once; more wait (up to [`DELIVERY_TIMEOUT`]).
const CONCURRENT_DELIVERIES: usize = 32;
/// Longest a delivery may take, reading its body included: a slow sender is cut off.
const DELIVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `POST /webhooks/github` and, with `gitlab` state, `POST /webhooks/gitlab`, refusing
/// bodies over `max_body` bytes with 413 (by their Content-Length before reading, else as
/// soon as they pass it), at most [`CONCURRENT_DELIVERIES`] at a time, each within
/// [`DELIVERY_TIMEOUT`].
pub fn router(
    github: Option<WebhookState>,
    gitlab: Option<WebhookState>,
    max_body: usize,
) -> Router {
    let limits = tower::ServiceBuilder::new()
        .layer(axum::error_handling::HandleErrorLayer::new(
            |_: tower::BoxError| async {
                (StatusCode::REQUEST_TIMEOUT, "delivery took too long\n")
            },
        ))
        .timeout(DELIVERY_TIMEOUT)
        .concurrency_limit(CONCURRENT_DELIVERIES);
    let mut router = Router::new();
    if let Some(state) = github {
        router = router.merge(
            Router::new()
                .route("/webhooks/github", post(handle))
                .with_state(state),
        );
    }
    if let Some(state) = gitlab {
        router = router.merge(
            Router::new()
                .route("/webhooks/gitlab", post(handle_gitlab))
                .with_state(state),
        );
    }
    router.layer(DefaultBodyLimit::max(max_body)).layer(limits)
}

/// What a teardown checks before it deletes anything.
#[derive(Clone)]
pub struct Guard {
    /// Confirms a "closed" with the provider, when the operator has credentials there.
    pub scm: Arc<Scm>,
    pub previews: Store<PreviewEnvironment>,
    pub classes: Store<PreviewClass>,
    /// The labels of every namespace, for classes that select tenants by label.
    pub tenants: Store<PartialObjectMeta<Namespace>>,
    pub metrics: Arc<Metrics>,
}

/// Why a teardown did not finish (a redelivery runs it again).
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("could not confirm that the pull request is closed: {0}")]
    Unconfirmed(#[from] ScmError),
    #[error("failed to delete a preview: {0}")]
    Delete(#[from] kube::Error),
}

/// Deletes the PreviewEnvironments of each closed PR whose class binds their namespace to
/// that repository. A teardown that could not finish forgets its delivery, so GitHub's
/// "Redeliver" runs it again.
pub async fn run_teardowns(
    client: Client,
    mut closed: mpsc::Receiver<Teardown>,
    seen: Arc<Mutex<SeenDeliveries>>,
    guard: Guard,
) {
    while let Some(Teardown {
        pr,
        group,
        head_sha,
        delivery,
    }) = closed.recv().await
    {
        let done = match &group {
            Some(group) => {
                merge_group::tear_down(&client, &pr.repository, group, head_sha.as_deref(), &guard)
                    .await
            }
            None => tear_down(&client, &pr, head_sha.as_deref(), &guard).await,
        };
        if let Err(error) = done {
            warn!(%error, repository = %pr.repository, pr = pr.number, "failed to tear down the previews of a closed PR; a redelivery retries");
            if let Some(id) = delivery {
                lock(&seen).forget(&id);
            }
        }
    }
}

async fn tear_down(
    client: &Client,
    pr: &ClosedPr,
    head_sha: Option<&str>,
    guard: &Guard,
) -> Result<(), TeardownError> {
    // The signature proves GitHub sent this body once, not that the PR is closed now: a
    // replayed delivery of a PR reopened since must delete nothing.
    let confirms = guard.scm.knows(pr.provider);
    if confirms
        && guard
            .scm
            .state(pr.provider, &pr.repository, pr.number)
            .await?
            == PrState::Open
    {
        guard.metrics.confirmation_refused();
        info!(provider = %pr.provider, repository = %pr.repository, pr = pr.number, "a closed delivery for a pull request the provider reports open (replayed, or reopened since): nothing deleted");
        return Ok(());
    }
    let classes = guard.classes.state();
    let mut failed = None;
    for pe in guard.previews.state().iter().filter(|pe| {
        pe.spec.pull_request == pr.number
            && pe.spec.provider() == pr.provider
            && pe.spec.repository.eq_ignore_ascii_case(&pr.repository)
    }) {
        let ns = pe.namespace().unwrap_or_default();
        if !confirms && !at_head(&pe.spec.head_sha, head_sha) {
            info!(namespace = %ns, name = %pe.name_any(), head_sha = pe.spec.head_sha, closed_at = head_sha.unwrap_or_default(), "not deleting a preview at another commit than the closed PR's head: without credentials the close cannot be confirmed (a replay, or the PR reopened since)");
            continue;
        }
        if !bound(pe, &ns, &classes, &guard.tenants) {
            warn!(namespace = %ns, name = %pe.name_any(), repository = %pr.repository, "not deleting a preview whose class does not bind its namespace to the repository");
            continue;
        }
        let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &ns);
        match gone_is_ok(api.delete(&pe.name_any(), &DeleteParams::default()).await) {
            Ok(Some(_)) => {
                info!(namespace = %ns, name = %pe.name_any(), merged = pr.merged, "pull request closed; deleting its preview")
            }
            Ok(None) => {}
            // Go on with the others; the delivery is retried as a whole.
            Err(error) => failed = Some(error),
        }
    }
    failed.map_or(Ok(()), |e| Err(e.into()))
}

/// Whether the class of `pe` binds its namespace `ns` to its repository: only then may a
/// delivery about that repository delete it.
fn bound(
    pe: &PreviewEnvironment,
    ns: &str,
    classes: &[Arc<PreviewClass>],
    tenants: &Store<PartialObjectMeta<Namespace>>,
) -> bool {
    let Ok(class) = policy::class_of(pe, classes) else {
        return false;
    };
    let labels = tenants
        .get(&ObjectRef::new(ns))
        .map(|n| n.labels().clone())
        .unwrap_or_default();
    !policy::binding(&class, ns, &labels, &pe.spec.repository, pe.spec.provider()).is_empty()
}

mod merge_group;

pub use merge_group::group_previews;

#[cfg(test)]
mod tests;
