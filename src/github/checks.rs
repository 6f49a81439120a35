//! Check runs, written when the operator is a GitHub App: one per preview and sha, named
//! `preview/<namespace>/<name>`, `in_progress` while deploying or testing and `completed` with
//! a conclusion, showing the output [`crate::scm::check`] builds.
//!
//! [`Runs::write`] creates or edits the run (found again by name after a restart, among the
//! runs of the operator's own App) from the poster task, which gives it the same ordering,
//! coalescing and rate-limit handling as commit statuses.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use http::Method;
use serde::Deserialize;

use super::GitHub;
use crate::scm::check::{ANNOTATIONS_PER_REQUEST, Annotation};
use crate::scm::status::{CommitStatus, Outcome, State};

/// (repository, sha, name) of a check run.
type RunKey = (String, String, String);

/// The check runs written so far: their ids by (repository, sha, name), and the annotations
/// each was sent. GitHub appends the annotations of every edit to those the run has, so one
/// sent again would show twice: each is sent once per run.
#[derive(Default)]
pub(crate) struct Runs {
    ids: HashMap<RunKey, u64>,
    sent: HashMap<RunKey, HashSet<u64>>,
}

#[derive(Deserialize)]
struct Run {
    id: u64,
    /// The App that wrote it.
    #[serde(default)]
    app: Option<RunApp>,
    #[serde(default)]
    output: Option<RunOutput>,
}

#[derive(Deserialize)]
struct RunOutput {
    #[serde(default)]
    annotations_count: u64,
}

/// What tells an annotation from another.
fn fingerprint(annotation: &Annotation) -> u64 {
    let mut hasher = DefaultHasher::new();
    annotation.hash(&mut hasher);
    hasher.finish()
}

#[derive(Deserialize)]
struct RunApp {
    id: u64,
}

#[derive(Deserialize)]
struct Found {
    #[serde(default)]
    check_runs: Vec<Run>,
}

impl Runs {
    /// Creates or edits the check run `status` calls for; more annotations than one request
    /// takes follow in further edits.
    pub(crate) async fn write(&mut self, github: &GitHub, status: &CommitStatus) -> Outcome {
        if self.ids.len() > 50_000 {
            // Bounded memory: runs of long-gone shas are not needed; a lost id is found again.
            *self = Runs::default();
        }
        let key = (
            status.repository.clone(),
            status.sha.clone(),
            status.context.clone(),
        );
        let repo = status.repository.as_str();
        let id = match self.ids.get(&key) {
            Some(id) => Some(*id),
            None => match self.find(github, status).await {
                Ok(Some((id, annotated))) => {
                    // Written before a restart: what it was sent is unknown, and an annotation
                    // shown twice is worse than one missing, so a run with annotations gets
                    // no more of those it would be sent now.
                    if annotated {
                        let output = status.check.as_deref();
                        let all = output.iter().flat_map(|o| &o.annotations).map(fingerprint);
                        self.sent.entry(key.clone()).or_default().extend(all);
                    }
                    Some(id)
                }
                Ok(None) => None,
                Err(outcome) => return outcome,
            },
        };
        let output = status.check.as_deref().cloned().unwrap_or_default();
        let sent = self.sent.get(&key);
        let unsent: Vec<&Annotation> = (output.annotations.iter())
            .filter(|a| !sent.is_some_and(|s| s.contains(&fingerprint(a))))
            .collect();
        let mut batches = unsent.chunks(ANNOTATIONS_PER_REQUEST);
        let first = batches.next().unwrap_or_default();
        let mut body = serde_json::json!({
            "name": status.context,
            "external_id": status.context,
            "status": if status.state == State::Pending { "in_progress" } else { "completed" },
            "output": {
                "title": status.description,
                "summary": output.summary,
                "text": output.text,
                "annotations": first,
            },
        });
        if let Some(url) = &status.target_url {
            body["details_url"] = url.clone().into();
        }
        if let Some(conclusion) = conclusion(status.state) {
            body["conclusion"] = conclusion.into();
        }
        let answer = match id {
            Some(id) => {
                let path = format!("/repos/{repo}/check-runs/{id}");
                github
                    .call(repo, Method::PATCH, &path, "check_run_update", Some(&body))
                    .await
            }
            None => {
                body["head_sha"] = status.sha.clone().into();
                let path = format!("/repos/{repo}/check-runs");
                github
                    .call(repo, Method::POST, &path, "check_run_create", Some(&body))
                    .await
            }
        };
        let created = match answer {
            Ok(a) if a.status.is_success() => match a.json::<Run>("check run") {
                Ok(run) => run.id,
                Err(e) => return Outcome::GiveUp(e.to_string()),
            },
            other => return Outcome::of(other),
        };
        self.ids.insert(key.clone(), created);
        let sent = self.sent.entry(key).or_default();
        sent.extend(first.iter().map(|a| fingerprint(a)));
        for batch in batches {
            let more = serde_json::json!({"output": {
                "title": status.description,
                "summary": output.summary,
                "annotations": batch,
            }});
            let path = format!("/repos/{repo}/check-runs/{created}");
            let answer = github
                .call(repo, Method::PATCH, &path, "check_run_update", Some(&more))
                .await;
            match Outcome::of(answer) {
                Outcome::Posted => sent.extend(batch.iter().map(|a| fingerprint(a))),
                other => return other,
            }
        }
        Outcome::Posted
    }

    /// The run of this name on this sha, written before a restart, and whether it has
    /// annotations.
    async fn find(
        &self,
        github: &GitHub,
        status: &CommitStatus,
    ) -> Result<Option<(u64, bool)>, Outcome> {
        let path = format!(
            "/repos/{}/commits/{}/check-runs?check_name={}&filter=latest",
            status.repository, status.sha, status.context
        );
        let answer = github
            .call(&status.repository, Method::GET, &path, "check_runs", None)
            .await;
        match answer {
            Ok(a) if a.status.is_success() => a
                .json::<Found>("check runs")
                .map(|f| {
                    let id = ours(&f.check_runs, github.app_id())?;
                    let run = f.check_runs.iter().find(|r| r.id == id);
                    let count = run
                        .and_then(|r| r.output.as_ref())
                        .map(|o| o.annotations_count);
                    Some((id, count.unwrap_or_default() > 0))
                })
                .map_err(|e| Outcome::GiveUp(e.to_string())),
            other => Err(Outcome::of(other)),
        }
    }
}

/// The first of `runs` written by the App `app`. Any App (or workflow) can create a check run
/// of the same name on the same sha; GitHub would refuse the operator an edit of another App's
/// run, so the status would never be posted.
fn ours(runs: &[Run], app: Option<u64>) -> Option<u64> {
    runs.iter()
        .find(|r| app.is_some() && r.app.as_ref().map(|a| a.id) == app)
        .map(|r| r.id)
}

/// The conclusion of a finished run; `None` while it runs.
fn conclusion(state: State) -> Option<&'static str> {
    match state {
        State::Pending => None,
        State::Success => Some("success"),
        State::Failure | State::Error => Some("failure"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_conclusions() {
        assert_eq!(conclusion(State::Pending), None);
        assert_eq!(conclusion(State::Success), Some("success"));
        assert_eq!(conclusion(State::Failure), Some("failure"));
        assert_eq!(conclusion(State::Error), Some("failure"));
    }

    #[test]
    fn only_a_run_of_the_operators_own_app_is_edited() {
        let run = |id, app: Option<u64>| Run {
            id,
            app: app.map(|id| RunApp { id }),
            output: None,
        };
        let runs = [run(1, Some(15368)), run(2, None), run(3, Some(4242))];
        assert_eq!(ours(&runs, Some(4242)), Some(3));
        assert_eq!(ours(&runs[..2], Some(4242)), None, "another App's run");
        assert_eq!(ours(&runs, None), None);
    }
}
