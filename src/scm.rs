//! The provider-neutral side of reporting on pull requests. [`Forge`] is the set of calls a
//! provider implements (`crate::github`, `crate::gitlab`); written against it are the poster
//! of commit statuses, check runs and deployments ([`poster`]), the comment writer
//! ([`comment`]), what a check and a deployment show ([`check`], [`deployment`]), the
//! webhook's delivery types ([`hook`]), and [`Scm`], which asks the provider a preview names
//! about its pull requests (the webhook's confirmation and the resync). [`Reporters`] holds,
//! per provider, where a preview's reports go.
//!
//! Also here: what every provider's call comes to ([`Answer`], [`ScmError`]) and who wrote a
//! comment ([`Me`], [`Author`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

pub use crate::api::Provider;

pub mod check;
pub mod comment;
pub mod deployment;
mod forge;
pub mod hook;
pub mod markdown;
pub mod poster;
pub mod status;

pub use forge::Forge;

/// Longest a call to GitHub or GitLab may take.
pub const TIMEOUT: Duration = Duration::from_secs(15);

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Github => "GitHub",
            Provider::Gitlab => "GitLab",
        })
    }
}

/// A pull request that closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedPr {
    pub provider: Provider,
    pub repository: String,
    pub number: i64,
    pub merged: bool,
}

/// Where a pull request (merge request) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrState {
    Open,
    Closed,
}

/// Why GitHub or GitLab could not tell.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScmError {
    #[error("{provider} answered {status} to {what}")]
    Status {
        provider: Provider,
        status: u16,
        what: String,
    },
    #[error("{provider} could not be reached for {what}: {message}")]
    Unreachable {
        provider: Provider,
        what: String,
        message: String,
    },
    #[error("{provider} did not answer {what} within {}s", TIMEOUT.as_secs())]
    Timeout { provider: Provider, what: String },
    #[error("{provider}'s answer to {what} is not understood: {message}")]
    Malformed {
        provider: Provider,
        what: String,
        message: String,
    },
    #[error("the operator has no {provider} credentials")]
    NotConfigured { provider: Provider },
}

/// What a provider answered: any status, with its headers and (bounded) body.
pub struct Answer {
    pub provider: Provider,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body, or the status as an error when it is not a success.
    pub fn ok(self, what: &str) -> Result<Bytes, ScmError> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            Err(ScmError::Status {
                provider: self.provider,
                status: self.status.as_u16(),
                what: what.to_string(),
            })
        }
    }

    /// The body as JSON of type `T`.
    pub fn json<T: serde::de::DeserializeOwned>(self, what: &str) -> Result<T, ScmError> {
        let provider = self.provider;
        let body = self.ok(what)?;
        serde_json::from_slice(&body).map_err(|e| ScmError::Malformed {
            provider,
            what: what.to_string(),
            message: e.to_string(),
        })
    }
}

/// Largest answer read from a provider (a page of 100 pull requests or notes is well under it).
const MAX_ANSWER: usize = 8 * 1024 * 1024;

impl Answer {
    /// Reads `response` of `provider` to `endpoint`: counts it, records the rate limit left
    /// (header `rate_limit_header`) and reads the body, bounded. `Err` says why the body could
    /// not be read.
    pub async fn read<B>(
        provider: Provider,
        endpoint: &str,
        response: http::Response<B>,
        rate_limit_header: &str,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Answer, String>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use http_body_util::BodyExt;
        let status = response.status();
        metrics.scm_request(provider, endpoint, status.as_u16());
        if let Some(left) = response
            .headers()
            .get(rate_limit_header)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
        {
            metrics.scm_rate_limit_remaining(provider, left);
        }
        let (parts, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer {
            provider,
            status,
            headers: parts.headers,
            body,
        })
    }
}

/// Who the operator is on a provider: what its own comments are recognised by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Me {
    /// A user (a GitHub or GitLab token), by numeric id: a login can be renamed and taken
    /// over by someone else, an id cannot.
    User(u64),
    /// A GitHub App, by its id.
    App(u64),
}

/// Who wrote a comment (a note), as the provider lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Author {
    pub user_id: Option<u64>,
    /// A bot account (GitHub's `user.type` `Bot`: an App's own `<slug>[bot]`).
    pub bot: bool,
    /// The GitHub App it was posted through (`performed_via_github_app.id`).
    pub app_id: Option<u64>,
}

impl Me {
    /// Whether the operator wrote a comment by `author`. An App's comments are its bot's,
    /// posted through it: a person using the App (a user-to-server token) posts as a `User`
    /// and is not the operator.
    pub fn wrote(self, author: &Author) -> bool {
        match self {
            Me::User(id) => author.user_id == Some(id),
            Me::App(id) => author.bot && author.app_id == Some(id),
        }
    }
}

/// One comment (note) of a pull request, as listed.
#[derive(Clone, Debug)]
pub struct Posted {
    pub id: u64,
    pub body: String,
    pub author: Author,
}

/// Asks the provider a preview names about its pull requests.
#[derive(Default)]
pub struct Scm {
    forges: BTreeMap<Provider, Arc<dyn Forge>>,
}

impl Scm {
    pub fn new(forges: impl IntoIterator<Item = Arc<dyn Forge>>) -> Scm {
        Scm {
            forges: forges.into_iter().map(|f| (f.provider(), f)).collect(),
        }
    }

    /// Whether the operator may ask `provider` at all.
    pub fn knows(&self, provider: Provider) -> bool {
        self.forges.contains_key(&provider)
    }

    fn forge(&self, provider: Provider) -> Result<&dyn Forge, ScmError> {
        (self.forges.get(&provider).map(|f| f.as_ref())).ok_or(ScmError::NotConfigured { provider })
    }

    /// Whether pull request `number` of `repository` is open or closed (merged counts as
    /// closed).
    pub async fn state(
        &self,
        provider: Provider,
        repository: &str,
        number: i64,
    ) -> Result<PrState, ScmError> {
        self.forge(provider)?.state(repository, number).await
    }

    /// The numbers of the open pull requests of `repository`.
    pub async fn open(
        &self,
        provider: Provider,
        repository: &str,
    ) -> Result<BTreeSet<i64>, ScmError> {
        self.forge(provider)?.open(repository).await
    }
}

/// Where one provider's reports go: the poster (statuses, checks, deployments) and, when
/// enabled, the comment writer.
#[derive(Clone)]
pub struct Reporter {
    pub poster: poster::Poster,
    pub comments: Option<comment::CommentSender>,
}

/// The reporters of the configured providers.
#[derive(Clone, Default)]
pub struct Reporters(BTreeMap<Provider, Reporter>);

impl Reporters {
    pub fn insert(&mut self, provider: Provider, reporter: Reporter) {
        self.0.insert(provider, reporter);
    }

    /// Where the reports of a preview on `provider` go, when it is configured.
    pub fn of(&self, provider: Provider) -> Option<&Reporter> {
        self.0.get(&provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by(user_id: u64, bot: bool, app_id: Option<u64>) -> Author {
        Author {
            user_id: Some(user_id),
            bot,
            app_id,
        }
    }

    #[test]
    fn a_token_owns_only_its_own_users_comments() {
        let me = Me::User(42);
        assert!(me.wrote(&by(42, false, None)));
        assert!(!me.wrote(&by(666, false, None)), "someone else's");
        assert!(
            !me.wrote(&Author::default()),
            "an author the provider did not name"
        );
    }

    #[test]
    fn an_app_owns_only_what_its_bot_posted_through_it() {
        let me = Me::App(4242);
        assert!(me.wrote(&by(9001, true, Some(4242))), "its bot");
        assert!(
            !me.wrote(&by(9002, true, Some(15368))),
            "another App's bot (GitHub Actions)"
        );
        assert!(
            !me.wrote(&by(9003, true, None)),
            "a bot posting with a token"
        );
        assert!(
            !me.wrote(&by(666, false, Some(4242))),
            "a person acting through the App is not the App"
        );
    }
}
