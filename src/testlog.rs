//! PURE: what a finished test's log tells, kept small: the last lines for the status message,
//! a longer excerpt for the check run, and, when the log holds a JUnit XML report, its counts
//! and failed cases (parsed by junit-parser) for the summary and the annotations.

/// Lines of a failed test's log kept for its status message (the end, where the failure is).
const TAIL_LINES: usize = 10;
/// Characters of that tail.
const TAIL_CHARS: usize = 800;
/// Characters of the excerpt shown in a check run (GitHub allows 65535 for all of its text).
const EXCERPT_CHARS: usize = 8 * 1024;
/// Failed cases kept from a report (GitHub takes 50 annotations per request; a report with
/// thousands of failures says enough with its first few hundred).
const MAX_FAILED_CASES: usize = 200;
/// Characters of one failed case's message.
const CASE_MESSAGE_CHARS: usize = 1024;

/// What one test's log says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestLog {
    /// The last lines, for the status message.
    pub tail: String,
    /// A longer end of the log, for the check run.
    pub excerpt: String,
    /// The JUnit report found in the log, if any.
    pub junit: Option<JUnit>,
}

/// Counts and failed cases of a JUnit report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JUnit {
    pub tests: u64,
    pub failures: u64,
    pub errors: u64,
    pub skipped: u64,
    pub failed: Vec<FailedCase>,
}

impl JUnit {
    /// "12 cases: 10 passed, 1 failed, 1 skipped".
    pub fn counts(&self) -> String {
        let failed = self.failures + self.errors;
        let passed = self.tests.saturating_sub(failed + self.skipped);
        format!(
            "{} cases: {passed} passed, {failed} failed, {} skipped",
            self.tests, self.skipped
        )
    }
}

/// One failed (or errored) test case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailedCase {
    pub name: String,
    pub classname: Option<String>,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub message: String,
}

impl TestLog {
    /// Reads `log` (the end of a test container's output).
    pub fn parse(log: &str) -> TestLog {
        let trimmed = log.trim_end();
        TestLog {
            tail: last(trimmed, TAIL_LINES, TAIL_CHARS),
            excerpt: last(trimmed, usize::MAX, EXCERPT_CHARS),
            junit: junit(log),
        }
    }
}

/// The last `lines` lines of `text`, at most `chars` characters of them.
fn last(text: &str, lines: usize, chars: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    let skip = tail.chars().count().saturating_sub(chars);
    tail.chars().skip(skip).collect()
}

/// The last JUnit report in `log`: from the last `<testsuites` (or, without one, the last
/// `<testsuite`) to its closing tag. Output around it (the test runner's chatter) is ignored.
fn junit(log: &str) -> Option<JUnit> {
    let (open, close) = if let Some(at) = log.rfind("<testsuites") {
        (at, log[at..].find("</testsuites>")? + "</testsuites>".len())
    } else {
        let at = log.rfind("<testsuite")?;
        (at, log[at..].find("</testsuite>")? + "</testsuite>".len())
    };
    let xml = &log[open..open + close];
    let suites = junit_parser::from_reader(std::io::Cursor::new(xml.as_bytes())).ok()?;
    let mut report = JUnit::default();
    let mut stack: Vec<&junit_parser::TestSuite> = suites.suites.iter().rev().collect();
    while let Some(suite) = stack.pop() {
        stack.extend(suite.suites.iter().rev());
        for case in &suite.cases {
            report.tests += 1;
            let message = match &case.status {
                junit_parser::TestStatus::Success => continue,
                junit_parser::TestStatus::Skipped(_) => {
                    report.skipped += 1;
                    continue;
                }
                junit_parser::TestStatus::Failure(f) => {
                    report.failures += 1;
                    first_nonempty(&f.message, &f.text)
                }
                junit_parser::TestStatus::Error(e) => {
                    report.errors += 1;
                    first_nonempty(&e.message, &e.text)
                }
            };
            if report.failed.len() < MAX_FAILED_CASES {
                report.failed.push(FailedCase {
                    // `name` is prefixed with the class; the report's own name reads better.
                    name: case.original_name.clone(),
                    classname: case.classname.clone(),
                    file: case.file.clone(),
                    line: case.line,
                    message: message.chars().take(CASE_MESSAGE_CHARS).collect(),
                });
            }
        }
    }
    Some(report)
}

fn first_nonempty(message: &str, text: &str) -> String {
    if message.trim().is_empty() {
        text.trim().to_string()
    } else {
        message.trim().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = r#"running 3 suites
npm test finished
<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="4" failures="1">
  <testsuite name="checkout" tests="4" failures="1" errors="1" skipped="1">
    <testcase name="adds to cart" classname="cart" time="0.2"/>
    <testcase name="pays" classname="checkout" file="tests/pay.spec.ts" line="42" time="1.5">
      <failure message="expected 200, got 500">stack...</failure>
    </testcase>
    <testcase name="refunds" classname="checkout"><error>connection refused</error></testcase>
    <testcase name="later" classname="checkout"><skipped/></testcase>
  </testsuite>
</testsuites>
done, exit 1"#;

    #[test]
    fn a_junit_report_in_the_log_is_counted_and_its_failures_kept() {
        let log = TestLog::parse(LOG);
        let junit = log.junit.expect("a report");
        assert_eq!(
            (junit.tests, junit.failures, junit.errors, junit.skipped),
            (4, 1, 1, 1)
        );
        assert_eq!(junit.counts(), "4 cases: 1 passed, 2 failed, 1 skipped");
        assert_eq!(junit.failed.len(), 2);
        let pays = &junit.failed[0];
        assert_eq!(pays.name, "pays");
        assert_eq!(pays.file.as_deref(), Some("tests/pay.spec.ts"));
        assert_eq!(pays.line, Some(42));
        assert_eq!(pays.message, "expected 200, got 500");
        assert_eq!(junit.failed[1].message, "connection refused");
    }

    #[test]
    fn the_tail_is_the_end_of_the_log_and_bounded() {
        let log = TestLog::parse(LOG);
        assert!(log.tail.ends_with("done, exit 1"));
        assert_eq!(log.tail.lines().count(), TAIL_LINES);
        let long = "x".repeat(100_000);
        let log = TestLog::parse(&long);
        assert_eq!(log.tail.chars().count(), TAIL_CHARS);
        assert_eq!(log.excerpt.chars().count(), EXCERPT_CHARS);
        assert_eq!(log.junit, None);
    }

    #[test]
    fn broken_or_cut_reports_are_no_report() {
        assert_eq!(
            TestLog::parse("<testsuite name=\"x\"><testcase").junit,
            None
        );
        assert_eq!(TestLog::parse("no xml here").junit, None);
    }
}
