//! The calls the operator makes on a source-code host, whichever it is: [`Forge`] is what
//! GitHub (`crate::github`) and GitLab (`crate::gitlab`) each implement, and all the rest of
//! [`crate::scm`] (the poster, the comment writer, the webhook's confirmation, the resync)
//! is written against it, so that neither knows the other and a third provider is one more
//! implementation.
//!
//! The futures are boxed so that providers can sit behind one `Arc<dyn Forge>` per provider.

use std::collections::BTreeSet;

use futures::future::BoxFuture;

use super::deployment::Deployment;
use super::status::{CommitStatus, Outcome};
use super::{Me, Posted, PrState, Provider, ScmError};

/// One provider's implementation of what the operator asks and writes there.
pub trait Forge: Send + Sync {
    /// Which provider this is.
    fn provider(&self) -> Provider;

    /// Who the operator is there: what its own comments are recognised by.
    fn me(&self) -> BoxFuture<'_, Result<Me, ScmError>>;

    /// Whether pull request `number` of `repository` is open or closed (merged counts as
    /// closed).
    fn state<'a>(
        &'a self,
        repository: &'a str,
        number: i64,
    ) -> BoxFuture<'a, Result<PrState, ScmError>>;

    /// The numbers of the open pull requests of `repository`.
    fn open<'a>(&'a self, repository: &'a str) -> BoxFuture<'a, Result<BTreeSet<i64>, ScmError>>;

    /// Whether statuses are written as check runs carrying the check output (a GitHub App).
    fn writes_checks(&self) -> bool {
        false
    }

    /// One attempt to post `status` on its commit (a commit status, or a check run).
    fn post_status<'a>(&'a self, status: &'a CommitStatus) -> BoxFuture<'a, Outcome>;

    /// Page `page` (of 100) of the comments on pull request `number` of `repository`.
    fn comments<'a>(
        &'a self,
        repository: &'a str,
        number: i64,
        page: u32,
    ) -> BoxFuture<'a, Result<Vec<Posted>, ScmError>>;

    /// Edits comment `id` (or creates one) on pull request `number` to say `body`; its id.
    fn write_comment<'a>(
        &'a self,
        repository: &'a str,
        number: i64,
        id: Option<u64>,
        body: &'a str,
    ) -> BoxFuture<'a, Result<u64, ScmError>>;

    /// One attempt to bring the preview's deployment (GitHub) or environment (GitLab) to
    /// what `deployment` says.
    fn deploy<'a>(&'a self, deployment: &'a Deployment) -> BoxFuture<'a, Outcome>;
}
