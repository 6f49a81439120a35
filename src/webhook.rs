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
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::PreviewEnvironment;
use crate::api::class::PreviewClass;
use crate::client::gone_is_ok;
use crate::controller::cached::CachedMeta;
use crate::controller::policy;
use crate::credential::Credential;
use crate::github::hook::GitHubHook;
use crate::gitlab::hook::GitLabHook;
use crate::metrics::{Metrics, WebhookResult};
pub use crate::scm::ClosedPr;
use crate::scm::hook::{Delivery, Hook};
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

/// `POST /webhooks/<provider>`: one delivery of `H`'s, answered 2xx whenever it is
/// authentic (acted on or not), since a provider disables a hook that keeps answering 4xx.
async fn deliver<H: Hook>(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let answer = |result: WebhookResult, code: StatusCode, text: String| {
        state.metrics.webhook_delivery(result);
        (code, text)
    };
    if !H::authentic(state.secret.current().as_bytes(), &headers, &body) {
        return answer(
            WebhookResult::Unauthorized,
            StatusCode::UNAUTHORIZED,
            format!("missing or wrong {}\n", H::AUTH_HEADER),
        );
    }
    let delivery = H::delivery_id(&headers);
    if let Some(id) = &delivery
        && !lock(&state.seen).first_time(id)
    {
        return answer(
            WebhookResult::Duplicate,
            StatusCode::OK,
            format!("delivery {id} already handled\n"),
        );
    }
    let (result, code, text) = match H::parse(&headers, &body) {
        Ok(Delivery::Ping) => (WebhookResult::Ping, StatusCode::OK, "pong\n".into()),
        Ok(Delivery::Ignored) => (
            WebhookResult::Ignored,
            StatusCode::ACCEPTED,
            "event needs nothing\n".into(),
        ),
        Ok(Delivery::Closed { pr, head_sha }) => close(&state, pr, head_sha, delivery),
        Ok(Delivery::GroupDestroyed {
            repository,
            group,
            head_sha,
        }) => merge_group::destroyed(&state, repository, group, head_sha, delivery),
        Err(e) => (
            WebhookResult::Malformed,
            StatusCode::BAD_REQUEST,
            format!("{e}\n"),
        ),
    };
    answer(result, code, text)
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
                .route("/webhooks/github", post(deliver::<GitHubHook>))
                .with_state(state),
        );
    }
    if let Some(state) = gitlab {
        router = router.merge(
            Router::new()
                .route("/webhooks/gitlab", post(deliver::<GitLabHook>))
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
    pub tenants: Store<CachedMeta<Namespace>>,
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
    tenants: &Store<CachedMeta<Namespace>>,
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
