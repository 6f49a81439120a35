//! Reading pull requests' state from GitHub, so that only a pull request GitHub itself reports
//! closed deletes a preview: a webhook's "closed" is confirmed before deleting (a replayed
//! delivery of a reopened PR deletes nothing), and the fail-safe resync finds PRs whose
//! webhook never arrived. Every answer but an explicit "closed" deletes nothing.

use std::collections::BTreeSet;

use http::Method;
use serde::Deserialize;

use super::GitHub;
use crate::scm::{PrState, Provider, ScmError};

/// Pages of open pull requests read per repository, 100 each.
const MAX_PAGES: u32 = 20;

#[derive(Deserialize)]
struct Pull {
    number: i64,
    state: String,
}

/// Reading pull requests, as the operator (token or App installation).
impl GitHub {
    /// Whether pull request `number` of `repository` is open or closed (merged counts as
    /// closed).
    pub async fn pull_state(&self, repository: &str, number: i64) -> Result<PrState, ScmError> {
        let what = format!("{repository}#{number}");
        let path = format!("/repos/{repository}/pulls/{number}");
        let pull: Pull = self
            .call(repository, Method::GET, &path, "pull", None)
            .await?
            .json(&what)?;
        match pull.state.as_str() {
            "open" => Ok(PrState::Open),
            "closed" => Ok(PrState::Closed),
            other => Err(ScmError::Malformed {
                provider: Provider::Github,
                what,
                message: format!("state {other:?}"),
            }),
        }
    }

    /// The numbers of the open pull requests of `repository`.
    pub async fn open_pulls(&self, repository: &str) -> Result<BTreeSet<i64>, ScmError> {
        let what = format!("the open pull requests of {repository}");
        let mut open = BTreeSet::new();
        for page in 1..=MAX_PAGES {
            let path = format!("/repos/{repository}/pulls?state=open&per_page=100&page={page}");
            let pulls: Vec<Pull> = self
                .call(repository, Method::GET, &path, "pulls", None)
                .await?
                .json(&what)?;
            let full = pulls.len() == 100;
            open.extend(
                pulls
                    .into_iter()
                    .filter(|p| p.state == "open")
                    .map(|p| p.number),
            );
            if !full {
                break;
            }
        }
        Ok(open)
    }
}
