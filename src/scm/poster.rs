//! One background task per provider posts what the pull request shows of its previews:
//! commit statuses (or check runs, as a GitHub App) and deployments (GitHub deployments,
//! GitLab environments).
//!
//! Posts go out in order, each real change once (never per reconcile), retried with capped
//! backoff, waiting out rate limits; a reconcile only enqueues and never waits for the
//! provider. Every commit status the provider accepts is handed to `posted`, so the preview's
//! status can record what the pull request shows.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Forge;
use super::deployment::Deployment;
use super::status::{CommitStatus, Outcome};
use crate::metrics::{CommitStatusResult, Metrics};

/// What the poster writes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Post {
    Status(CommitStatus),
    Deployment(Deployment),
}

impl Post {
    /// What a later post replaces: a commit status per (repository, sha, context), a
    /// deployment per (repository, environment).
    fn key(&self) -> (bool, String, String, String) {
        match self {
            Post::Status(s) => (true, s.repository.clone(), s.sha.clone(), s.context.clone()),
            Post::Deployment(d) => (
                false,
                d.repository.clone(),
                d.environment.clone(),
                String::new(),
            ),
        }
    }
}

/// The sending side handed to the controller.
#[derive(Clone)]
pub struct Poster {
    tx: mpsc::Sender<Post>,
    checks: bool,
    deployments: bool,
}

impl Poster {
    /// Whether check runs are written (the operator is a GitHub App) rather than statuses.
    pub fn checks(&self) -> bool {
        self.checks
    }

    /// Whether previews' deployments are reported.
    pub fn deployments(&self) -> bool {
        self.deployments
    }

    /// Enqueues `status` without waiting; when the queue is full it is dropped with a warning
    /// (the next change posts a fresh one) rather than slowing the reconcile down.
    pub fn status(&self, status: CommitStatus) {
        self.send(Post::Status(status));
    }

    /// Enqueues `deployment` without waiting, when deployments are reported.
    pub fn deployment(&self, deployment: Deployment) {
        if self.deployments {
            self.send(Post::Deployment(deployment));
        }
    }

    fn send(&self, post: Post) {
        if let Err(error) = self.tx.try_send(post) {
            warn!(%error, "pull request report queue full; dropping a report");
        }
    }
}

/// Longest wait for a rate limit to reset before giving a post up.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(15 * 60);
const ATTEMPTS: u32 = 6;

/// Starts a poster on `forge`, reporting deployments when `deployments` is set; every commit
/// status the provider accepts is handed to `posted`.
pub fn start(
    forge: Arc<dyn Forge>,
    deployments: bool,
    metrics: Arc<Metrics>,
    posted: mpsc::UnboundedSender<CommitStatus>,
) -> Poster {
    let (tx, rx) = mpsc::channel(4096);
    let checks = forge.writes_checks();
    tokio::spawn(run(forge, metrics, rx, posted));
    Poster {
        tx,
        checks,
        deployments,
    }
}

async fn run(
    forge: Arc<dyn Forge>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Post>,
    posted: mpsc::UnboundedSender<CommitStatus>,
) {
    // The last post written per key: never post the same one twice.
    let mut last: HashMap<(bool, String, String, String), Post> = HashMap::new();
    while let Some(post) = rx.recv().await {
        let key = post.key();
        if last.get(&key) == Some(&post) {
            continue;
        }
        let ok = deliver(forge.as_ref(), &metrics, &post).await;
        if let (true, Post::Status(status)) = (ok, &post) {
            // Nobody listening (shutting down) just means it is not recorded.
            let _ = posted.send(status.clone());
        }
        if ok {
            last.insert(key, post);
        }
        // Bounded memory: posts of long-gone shas are not needed.
        if last.len() > 50_000 {
            last.clear();
        }
    }
}

/// Posts `post`, retrying what may pass later; whether the provider took it.
async fn deliver(forge: &dyn Forge, metrics: &Metrics, post: &Post) -> bool {
    let mut delay = Duration::from_secs(1);
    let mut result = CommitStatusResult::Failed;
    let (repository, what) = match post {
        Post::Status(s) => (
            &s.repository,
            format!("commit status {:?} on {}", s.state, s.sha),
        ),
        Post::Deployment(d) => (
            &d.repository,
            format!("deployment {} {}", d.environment, d.state.as_str()),
        ),
    };
    for n in 1..=ATTEMPTS {
        let outcome = match post {
            Post::Status(s) => forge.post_status(s).await,
            Post::Deployment(d) => forge.deploy(d).await,
        };
        match outcome {
            Outcome::Posted => {
                result = CommitStatusResult::Posted;
                info!(%repository, %what, "posted");
                break;
            }
            Outcome::GiveUp(why) => {
                warn!(%repository, %what, %why, "refused");
                break;
            }
            Outcome::Retry(wait) if n < ATTEMPTS => {
                let wait = if wait.is_zero() { delay } else { wait };
                if wait > MAX_RATE_LIMIT_WAIT {
                    warn!(?wait, %repository, %what, "rate limited for too long; dropped");
                    break;
                }
                if matches!(post, Post::Status(_)) {
                    metrics.commit_status(CommitStatusResult::Retried);
                }
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
            Outcome::Retry(_) => {}
        }
    }
    if matches!(post, Post::Status(_)) {
        metrics.commit_status(result);
    }
    result == CommitStatusResult::Posted
}
