//! What a preview's check shows beside its state: the URL, each service's state, a table of
//! tests with their durations and JUnit counts, the end of each failed test's log, and the
//! failed JUnit cases as annotations on the repository's files (GitHub's check run output; the
//! same report `preview-operator test-report` prints).
//!
//! The log, the test names and the JUnit cases are the pull request's code talking: they go
//! through [`crate::scm::markdown`] like the PR comment's. Everything here is pure.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::comment;
use crate::api::{PreviewEnvironmentStatus, TestPhase};
use crate::scm::markdown::{block, defuse, inline, plain_line};
use crate::testlog::TestLog;

/// Annotations GitHub takes per request.
pub const ANNOTATIONS_PER_REQUEST: usize = 50;
/// Characters GitHub takes in an output's summary and text.
const MAX_OUTPUT_CHARS: usize = 65_000;
/// Characters GitHub takes in an annotation's title (a longer one is answered 422).
const MAX_TITLE_CHARS: usize = 255;
/// Bytes GitHub takes in an annotation's message ("64 KB").
const MAX_MESSAGE_BYTES: usize = 64 * 1000;
/// Characters of a message shown for a failed case that has no file in the repository.
const UNLOCATED_CHARS: usize = 300;

/// What a check run shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub summary: String,
    pub text: String,
    pub annotations: Vec<Annotation>,
}

/// One failed JUnit case, on its file and line when the report names them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
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
            let failed = t.phase == TestPhase::Failed;
            let cases = log
                .and_then(|l| l.junit.as_ref())
                .map(|j| j.summary(failed))
                .unwrap_or_default();
            let name = inline(&t.name);
            summary.push_str(&format!("| {name} | {result} | {took} | {cases} |\n"));
            if !failed {
                continue;
            }
            // What the test printed is the pull request's code talking: quoted, never rendered.
            if let Some(log) = log {
                text.push_str(&format!(
                    "### {name} failed\n\nThe end of its log:\n\n{}\n",
                    block(&log.excerpt)
                ));
                let cases = log.junit.iter().flat_map(|j| &j.failed);
                annotations.extend(cases.clone().filter_map(|case| annotation(&t.name, case)));
                text.push_str(&unlocated(cases.filter(|c| c.location.is_none())));
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

/// A failed JUnit case as an annotation, when it names a file of the repository (GitHub
/// refuses or loses annotations elsewhere). Its names and message come from the report the
/// pull request's code wrote; GitHub shows annotations as plain text, so only mentions are
/// defused, and both are cut to what GitHub takes.
pub fn annotation(test: &str, case: &crate::testlog::FailedCase) -> Option<Annotation> {
    let (path, line) = case.location.clone()?;
    let title = match &case.classname {
        Some(class) => format!("{test}: {class} {}", case.name),
        None => format!("{test}: {}", case.name),
    };
    let message = if case.message.is_empty() {
        "failed".to_string()
    } else {
        defuse(&case.message)
    };
    Some(Annotation {
        path,
        start_line: line,
        end_line: line,
        annotation_level: "failure",
        title: cut_chars(&plain_line(&title), MAX_TITLE_CHARS),
        message: cut_bytes(&message, MAX_MESSAGE_BYTES),
    })
}

/// The failed cases that name no file of the repository, for the check run's text.
fn unlocated<'c>(cases: impl Iterator<Item = &'c crate::testlog::FailedCase>) -> String {
    let lines: Vec<String> = cases
        .map(|c| {
            let name = match &c.classname {
                Some(class) => format!("{class} {}", c.name),
                None => c.name.clone(),
            };
            let message = c.message.lines().find(|l| !l.trim().is_empty());
            let line = format!("{name}: {}", message.unwrap_or("failed").trim());
            format!("- {}", cut_chars(&line, UNLOCATED_CHARS))
        })
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "Failed cases without a file in the repository:\n\n{}\n",
        block(&lines.join("\n"))
    )
}

/// `text`, cut to `max` characters with an ellipsis.
fn cut_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// `text`, cut to `max` bytes (on a character) with an ellipsis.
fn cut_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `preview-operator test-report`: what the check run of a preview whose one test, `test`,
/// failed with `log` would report: as JSON its counts, failed cases and annotations, and as
/// Markdown its summary and text.
pub fn test_report(test: &str, log: TestLog) -> (serde_json::Value, String) {
    let junit = log.junit.clone().unwrap_or_default();
    let failed: Vec<serde_json::Value> = (junit.failed.iter())
        .map(|c| {
            serde_json::json!({
                "name": c.name, "classname": c.classname, "file": c.file, "line": c.line,
                "message": c.message,
            })
        })
        .collect();
    let annotations: Vec<Annotation> = (junit.failed.iter())
        .filter_map(|c| annotation(test, c))
        .collect();
    let json = serde_json::json!({
        "complete": log.junit.is_some() && junit.complete,
        "tests": junit.tests,
        "passed": junit.passed(),
        "failures": junit.failures,
        "errors": junit.errors,
        "skipped": junit.skipped,
        "failed": failed,
        "annotations": annotations,
    });
    let status: PreviewEnvironmentStatus = serde_json::from_value(serde_json::json!({
        "tests": [{"name": test, "sha": "", "phase": "Failed"}],
    }))
    .unwrap_or_default();
    let out = output(
        &status,
        &BTreeMap::from([(test.to_string(), Arc::new(log))]),
    );
    (json, format!("{}\n{}", out.summary, out.text))
}

fn bounded(text: String) -> String {
    if text.chars().count() <= MAX_OUTPUT_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(MAX_OUTPUT_CHARS - 20).collect();
    cut.push_str("\n\n… (cut)\n");
    cut
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
                r#"<testcase name="case {n}" classname="shop" file="./tests/shop.spec.ts" line="{n}"><failure message="boom {n}"/></testcase>"#
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
        assert_eq!(out.annotations[0].path, "tests/shop.spec.ts");
        assert_eq!(out.annotations[0].start_line, 1, "line 0 is no line");
        assert_eq!(out.annotations[0].title, "e2e: shop case 0");
        assert_eq!(out.annotations[0].message, "boom 0");
        assert_eq!(
            out.annotations.chunks(ANNOTATIONS_PER_REQUEST).count(),
            3,
            "120 annotations go in three requests"
        );
    }

    #[test]
    fn only_cases_in_the_repository_are_annotated_and_titles_fit_github() {
        let status: PreviewEnvironmentStatus = serde_json::from_value(serde_json::json!({
            "phase": "Failed", "observedSha": "4f2c9e1d8b",
            "tests": [{"name": "unit", "sha": "4f2c9e1d8b", "phase": "Failed"}],
        }))
        .expect("status");
        let long = "n".repeat(400);
        let log = format!(
            r#"<testsuites><testsuite name="s" file="/ci/repo/spec/a.spec.js">
            <testcase name="Test 1 › Test 1.1" classname="Test 1 › Test 1.1"><failure>Error: at Object.&lt;anonymous&gt; (x)</failure></testcase>
            <testcase name="{long}" file="spec/b.spec.js" line="3"><failure message="m"/></testcase>
            </testsuite></testsuites>"#
        );
        let logs = BTreeMap::from([("unit".to_string(), Arc::new(TestLog::parse(&log)))]);
        let out = output(&status, &logs);
        assert_eq!(out.annotations.len(), 1, "{:?}", out.annotations);
        let a = &out.annotations[0];
        assert_eq!((a.path.as_str(), a.start_line), ("spec/b.spec.js", 3));
        assert_eq!(a.title.chars().count(), MAX_TITLE_CHARS);
        assert!(
            out.text
                .contains("Test 1 › Test 1.1 Test 1 › Test 1.1: Error: at Object.<anonymous> (x)"),
            "{}",
            out.text
        );
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
            r#"<testsuite name="s"><testcase name="pays @all |x|" classname="@org/team" file="@org/team.ts"><failure message="cc @someone [link](https://evil)"/></testcase></testsuite>"#,
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
        assert_eq!(a.path, "@org/team.ts", "a path is a path: left as written");
        assert_eq!(a.title, "e2e: @\u{200B}org/team pays @\u{200B}all |x|");
        assert_eq!(a.message, "cc @\u{200B}someone [link](https://evil)");
    }
}
