//! Check runs, written when the operator is a GitHub App: one per preview and sha, named
//! `preview/<namespace>/<name>`, `in_progress` while deploying or testing and `completed` with
//! a conclusion; its output has the URL, each service's state, a table of tests with their
//! durations and JUnit counts, the end of each failed test's log, and the failed JUnit cases
//! as annotations.
//!
//! The log, the test names and the JUnit cases are the pull request's code talking: they go
//! through [`crate::scm::markdown`] like the PR comment's.
//!
//! [`output`] is pure; [`Runs::write`] creates or edits the run (found again by name after a
//! restart, among the runs of the operator's own App) from the poster task, which gives it the
//! same ordering, coalescing and rate-limit handling as commit statuses.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::Method;
use serde::{Deserialize, Serialize};

use super::{CommitStatus, GitHub, Outcome, State, comment};
use crate::api::{PreviewEnvironmentStatus, TestPhase};
use crate::scm::markdown::{block, defuse, inline, plain_line};
use crate::testlog::TestLog;

/// Annotations GitHub takes per request.
const ANNOTATIONS_PER_REQUEST: usize = 50;
/// Characters GitHub takes in an output's summary and text.
const MAX_OUTPUT_CHARS: usize = 65_000;

/// What a check run shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub summary: String,
    pub text: String,
    pub annotations: Vec<Annotation>,
}

/// One failed JUnit case, on its file and line when the report names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Annotation {
    pub path: String,
    pub start_line: u64,
    pub end_line: u64,
    pub annotation_level: &'static str,
    pub title: String,
    pub message: String,
}

/// PURE: the output of a preview's check run, from its status and the logs of its finished
/// tests (by test name).
pub fn output(status: &PreviewEnvironmentStatus, logs: &BTreeMap<String, Arc<TestLog>>) -> Output {
    let mut summary = String::new();
    if let Some(url) = &status.url {
        summary.push_str(&format!("**URL:** {url}\n\n"));
    }
    if !status.services.is_empty() {
        summary.push_str("| service | ready | URL |\n| --- | --- | --- |\n");
        for s in &status.services {
            summary.push_str(&format!(
                "| {} | {}/{} | {} |\n",
                inline(&s.name),
                s.ready_replicas,
                s.replicas,
                s.url.as_deref().unwrap_or("")
            ));
        }
        summary.push('\n');
    }
    let mut text = String::new();
    let mut annotations = Vec::new();
    if !status.tests.is_empty() {
        summary.push_str("| test | result | took | cases |\n| --- | --- | --- | --- |\n");
        for t in &status.tests {
            let (result, took) = comment::result_and_time(t);
            let log = logs.get(&t.name);
            let cases = log
                .and_then(|l| l.junit.as_ref())
                .map(|j| j.counts())
                .unwrap_or_default();
            let name = inline(&t.name);
            summary.push_str(&format!("| {name} | {result} | {took} | {cases} |\n"));
            if t.phase != TestPhase::Failed {
                continue;
            }
            // What the test printed is the pull request's code talking: quoted, never rendered.
            if let Some(log) = log {
                text.push_str(&format!(
                    "### {name} failed\n\nThe end of its log:\n\n{}\n",
                    block(&log.excerpt)
                ));
                annotations.extend(
                    log.junit
                        .iter()
                        .flat_map(|j| &j.failed)
                        .map(|case| annotation(&t.name, case)),
                );
            } else if let Some(message) = &t.message {
                text.push_str(&format!("### {name} failed\n\n{}\n", block(message)));
            }
        }
    }
    Output {
        summary: bounded(summary),
        text: bounded(text),
        annotations,
    }
}

/// A failed JUnit case as an annotation. Its names and message come from the report the
/// pull request's code wrote; GitHub shows annotations as plain text, so only mentions are
/// defused, and the path is left as written (it names a file of the repository).
fn annotation(test: &str, case: &crate::testlog::FailedCase) -> Annotation {
    // GitHub needs a path; without a file in the report the class (or the test) stands in.
    let path = case
        .file
        .clone()
        .or_else(|| case.classname.clone())
        .unwrap_or_else(|| test.to_string());
    let line = case.line.unwrap_or(1).max(1);
    let title = match &case.classname {
        Some(class) => format!("{test}: {class} {}", case.name),
        None => format!("{test}: {}", case.name),
    };
    Annotation {
        path,
        start_line: line,
        end_line: line,
        annotation_level: "failure",
        title: plain_line(&title),
        message: if case.message.is_empty() {
            "failed".to_string()
        } else {
            defuse(&case.message)
        },
    }
}

fn bounded(text: String) -> String {
    if text.chars().count() <= MAX_OUTPUT_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_OUTPUT_CHARS - 20).collect();
    cut.push_str("\n\n… (cut)\n");
    cut
}

/// The check runs written so far: their ids by (repository, sha, name).
#[derive(Default)]
pub(crate) struct Runs {
    ids: HashMap<(String, String, String), u64>,
}

#[derive(Deserialize)]
struct Run {
    id: u64,
    /// The App that wrote it.
    #[serde(default)]
    app: Option<RunApp>,
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
        let key = (
            status.repository.clone(),
            status.sha.clone(),
            status.context.clone(),
        );
        let repo = status.repository.as_str();
        let id = match self.ids.get(&key) {
            Some(id) => Some(*id),
            None => match self.find(github, status).await {
                Ok(id) => id,
                Err(outcome) => return outcome,
            },
        };
        let output = status.check.as_deref().cloned().unwrap_or_default();
        let mut batches = output.annotations.chunks(ANNOTATIONS_PER_REQUEST);
        let mut body = serde_json::json!({
            "name": status.context,
            "external_id": status.context,
            "status": if status.state == State::Pending { "in_progress" } else { "completed" },
            "output": {
                "title": status.description,
                "summary": output.summary,
                "text": output.text,
                "annotations": batches.next().unwrap_or_default(),
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
        self.ids.insert(key, created);
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
                Outcome::Posted => {}
                other => return other,
            }
        }
        Outcome::Posted
    }

    /// The run of this name on this sha, written before a restart.
    async fn find(&self, github: &GitHub, status: &CommitStatus) -> Result<Option<u64>, Outcome> {
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
                .map(|f| ours(&f.check_runs, github.app_id()))
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
    fn the_output_has_the_url_services_tests_log_and_annotations() {
        let status: PreviewEnvironmentStatus = serde_json::from_value(serde_json::json!({
            "phase": "Failed", "observedSha": "4f2c9e1d8b", "url": "https://web.example.com",
            "services": [{"name": "web", "readyReplicas": 1, "replicas": 1, "url": "https://web.example.com"}],
            "tests": [
                {"name": "e2e", "sha": "4f2c9e1d8b", "phase": "Failed",
                 "startedAt": "2026-11-30T10:00:00Z", "finishedAt": "2026-11-30T10:01:30Z"},
                {"name": "smoke", "sha": "4f2c9e1d8b", "phase": "Succeeded"}],
        }))
        .expect("status");
        let mut failed = Vec::new();
        for n in 0..120 {
            failed.push(format!(
                r#"<testcase name="case {n}" classname="shop"><failure message="boom {n}"/></testcase>"#
            ));
        }
        let log = format!(
            "starting\n<testsuite name=\"s\">{}</testsuite>\nFAILED",
            failed.join("")
        );
        let logs = BTreeMap::from([("e2e".to_string(), Arc::new(TestLog::parse(&log)))]);
        let out = output(&status, &logs);
        for part in [
            "https://web.example.com",
            "| web | 1/1 |",
            "| e2e | **failed** | 1m30s | 120 cases: 0 passed, 120 failed, 0 skipped |",
            "| smoke | passed |",
        ] {
            assert!(
                out.summary.contains(part),
                "{part} missing:\n{}",
                out.summary
            );
        }
        assert!(out.text.contains("### e2e failed") && out.text.contains("FAILED"));
        assert_eq!(out.annotations.len(), 120);
        assert_eq!(out.annotations[0].path, "shop");
        assert_eq!(out.annotations[0].title, "e2e: shop case 0");
        assert_eq!(out.annotations[0].message, "boom 0");
        assert_eq!(
            out.annotations.chunks(ANNOTATIONS_PER_REQUEST).count(),
            3,
            "120 annotations go in three requests"
        );
    }

    #[test]
    fn states_map_to_conclusions() {
        assert_eq!(conclusion(State::Pending), None);
        assert_eq!(conclusion(State::Success), Some("success"));
        assert_eq!(conclusion(State::Failure), Some("failure"));
        assert_eq!(conclusion(State::Error), Some("failure"));
    }

    #[test]
    fn a_hostile_log_and_junit_report_are_quoted_and_mention_nobody() {
        let status: PreviewEnvironmentStatus = serde_json::from_value(serde_json::json!({
            "phase": "Failed", "observedSha": "4f2c9e1d8b",
            "tests": [{"name": "e2e", "sha": "4f2c9e1d8b", "phase": "Failed"},
                      {"name": "smoke", "sha": "4f2c9e1d8b", "phase": "Failed",
                       "message": "smoke failed\nlast output:\n@all ![x](http://evil)"}],
        }))
        .expect("status");
        let log = concat!(
            "npm ERR! @org/team look at ![x](http://evil/x.png)\n",
            "```\n<img src=x>\n````\n",
            r#"<testsuite name="s"><testcase name="pays @all |x|" classname="@org/team"><failure message="cc @someone [link](https://evil)"/></testcase></testsuite>"#,
            "\nFAILED"
        );
        let logs = BTreeMap::from([("e2e".to_string(), Arc::new(TestLog::parse(log)))]);
        let out = output(&status, &logs);
        // The log is in one block, behind a fence longer than its own longest.
        assert!(
            out.text.contains("\n`````\nnpm ERR! @\u{200B}org/team"),
            "{}",
            out.text
        );
        assert!(
            out.text.contains("\n`````\n\n### smoke failed\n\n```\n"),
            "{}",
            out.text
        );
        for field in [&out.summary, &out.text] {
            assert!(
                !field.contains("@org") && !field.contains("@all"),
                "a mention survived:\n{field}"
            );
        }
        let a = &out.annotations[0];
        assert_eq!(a.path, "@org/team", "a path is a path: left as written");
        assert_eq!(a.title, "e2e: @\u{200B}org/team pays @\u{200B}all |x|");
        assert_eq!(a.message, "cc @\u{200B}someone [link](https://evil)");
    }

    #[test]
    fn only_a_run_of_the_operators_own_app_is_edited() {
        let run = |id, app: Option<u64>| Run {
            id,
            app: app.map(|id| RunApp { id }),
        };
        let runs = [run(1, Some(15368)), run(2, None), run(3, Some(4242))];
        assert_eq!(ours(&runs, Some(4242)), Some(3));
        assert_eq!(ours(&runs[..2], Some(4242)), None, "another App's run");
        assert_eq!(ours(&runs, None), None);
    }
}
