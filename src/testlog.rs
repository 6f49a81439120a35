//! PURE: what a finished test's log tells, kept small: the last lines for the status message,
//! a longer excerpt for the check run, and, when the log holds a JUnit XML report, its counts
//! and failed cases (parsed by junit-parser) for the summary and the annotations.
//!
//! The log is written by the tenant's test, so everything kept from it is capped: each field of
//! a failed case, the number of failed cases and the bytes they take together. The operator keeps
//! one [`TestLog`] per finished Job, and there can be thousands of Jobs; a report with huge names
//! or messages must cost no more than an ordinary one. The counts stay exact.

use std::mem::size_of;

/// Lines of a failed test's log kept for its status message (the end, where the failure is).
const TAIL_LINES: usize = 10;
/// Bytes of that tail.
const TAIL_BYTES: usize = 800;
/// Bytes of the excerpt shown in a check run (GitHub allows 65535 characters for all of its text).
const EXCERPT_BYTES: usize = 8 * 1024;
/// Failed cases kept from a report (GitHub takes 50 annotations per request; a report with
/// thousands of failures says enough with its first few hundred).
const MAX_FAILED_CASES: usize = 200;
/// Bytes of a failed case's name, and of its class name (an annotation's title shows 255
/// characters of both together).
const NAME_BYTES: usize = 256;
/// Bytes of a failed case's file path.
const FILE_BYTES: usize = 512;
/// Bytes of a failed case's message: the assertion and the top of its stack trace.
const MESSAGE_BYTES: usize = 2 * 1024;
/// Bytes all kept failed cases take together, their fixed size included: about 200 ordinary
/// cases, or 10 with every field at its cap.
const FAILED_BYTES: usize = 32 * 1024;
/// Bytes one [`TestLog`] keeps at most, whatever the log held.
pub const MAX_KEPT_BYTES: usize = size_of::<TestLog>() + TAIL_BYTES + EXCERPT_BYTES + FAILED_BYTES;
/// What a field cut at its cap ends with, so nobody takes it for the whole text.
const CUT: &str = "… (cut)";

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
    /// The first failed (or errored) cases, as many as the caps allow: fewer than `failures +
    /// errors` when the report has more.
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

/// One failed (or errored) test case, each text cut at its cap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailedCase {
    pub name: String,
    pub classname: Option<String>,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub message: String,
}

impl FailedCase {
    /// Bytes it takes, in its place in a `Vec` and on the heap.
    fn size(&self) -> usize {
        size_of::<FailedCase>()
            + self.name.capacity()
            + self.classname.as_ref().map_or(0, String::capacity)
            + self.file.as_ref().map_or(0, String::capacity)
            + self.message.capacity()
    }
}

impl TestLog {
    /// Reads `log` (the end of a test container's output).
    pub fn parse(log: &str) -> TestLog {
        let trimmed = log.trim_end();
        TestLog {
            tail: last(trimmed, TAIL_LINES, TAIL_BYTES),
            excerpt: last(trimmed, usize::MAX, EXCERPT_BYTES),
            junit: junit(log),
        }
    }

    /// Only what is shown of a test that succeeded: its JUnit counts.
    pub fn counts_only(self) -> TestLog {
        TestLog {
            junit: self.junit.map(|j| JUnit {
                failed: Vec::new(),
                ..j
            }),
            ..TestLog::default()
        }
    }

    /// Bytes it takes in memory (at most [`MAX_KEPT_BYTES`]).
    pub fn kept_bytes(&self) -> usize {
        size_of::<TestLog>()
            + self.tail.capacity()
            + self.excerpt.capacity()
            + self.junit.as_ref().map_or(0, |j| {
                (j.failed.capacity() - j.failed.len()) * size_of::<FailedCase>()
                    + j.failed.iter().map(FailedCase::size).sum::<usize>()
            })
    }
}

/// The last `lines` lines of `text`, at most `bytes` bytes of them (cut on a character).
fn last(text: &str, lines: usize, bytes: usize) -> String {
    let mut kept: Vec<&str> = text.lines().rev().take(lines).collect();
    kept.reverse();
    let tail = kept.join("\n");
    let mut start = tail.len().saturating_sub(bytes);
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    tail[start..].to_string()
}

/// `text`, or when longer than `max` bytes its start with [`CUT`] after it, `max` bytes in all.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(CUT.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut clipped = String::with_capacity(end + CUT.len());
    clipped.push_str(&text[..end]);
    clipped.push_str(CUT);
    clipped
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
    let mut kept_bytes = 0;
    let mut full = false;
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
            // Once the budget is spent the rest are only counted: the first failures are the
            // ones worth reading, and the counts say how many more there were.
            if full || report.failed.len() == MAX_FAILED_CASES {
                continue;
            }
            let failed = FailedCase {
                // `name` is prefixed with the class; the report's own name reads better.
                name: clip(&case.original_name, NAME_BYTES),
                classname: case.classname.as_deref().map(|c| clip(c, NAME_BYTES)),
                file: case.file.as_deref().map(|f| clip(f, FILE_BYTES)),
                line: case.line,
                message: clip(message, MESSAGE_BYTES),
            };
            if kept_bytes + failed.size() > FAILED_BYTES {
                full = true;
                continue;
            }
            kept_bytes += failed.size();
            report.failed.push(failed);
        }
    }
    // The vector grew by doubling; what is kept should not carry its spare room.
    report.failed.shrink_to_fit();
    Some(report)
}

fn first_nonempty<'a>(message: &'a str, text: &'a str) -> &'a str {
    if message.trim().is_empty() {
        text.trim()
    } else {
        message.trim()
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
        assert_eq!(log.tail.len(), TAIL_BYTES);
        assert_eq!(log.excerpt.len(), EXCERPT_BYTES);
        assert_eq!(log.junit, None);
        // Cut on a character: a three-byte one does not fit whole at the start.
        let wide = TestLog::parse(&"€".repeat(10_000));
        assert!(wide.tail.len() <= TAIL_BYTES && wide.tail.len() > TAIL_BYTES - 3);
        assert!(wide.tail.chars().all(|c| c == '€'));
    }

    /// The failed cases as junit-parser reads them, nothing cut.
    fn uncut(xml: &str) -> Vec<FailedCase> {
        let suites = junit_parser::from_reader(std::io::Cursor::new(xml.as_bytes())).expect("xml");
        let mut all = Vec::new();
        let mut stack: Vec<&junit_parser::TestSuite> = suites.suites.iter().rev().collect();
        while let Some(suite) = stack.pop() {
            stack.extend(suite.suites.iter().rev());
            for case in &suite.cases {
                let message = match &case.status {
                    junit_parser::TestStatus::Failure(f) => first_nonempty(&f.message, &f.text),
                    junit_parser::TestStatus::Error(e) => first_nonempty(&e.message, &e.text),
                    _ => continue,
                };
                all.push(FailedCase {
                    name: case.original_name.clone(),
                    classname: case.classname.clone(),
                    file: case.file.clone(),
                    line: case.line,
                    message: message.to_string(),
                });
            }
        }
        all
    }

    #[test]
    fn reports_of_real_test_runners_are_kept_whole() {
        // (file, tests, failures, errors, skipped): what each runner's report says.
        let reports = [
            (
                include_str!("../tests/fixtures/junit/jest-junit.xml"),
                (6, 4, 0, 1),
            ),
            (
                include_str!("../tests/fixtures/junit/pytest.xml"),
                (10, 2, 0, 2),
            ),
            (
                include_str!("../tests/fixtures/junit/phpunit-paths.xml"),
                (6, 6, 0, 0),
            ),
            (
                include_str!("../tests/fixtures/junit/surefire-kotlin.xml"),
                (2, 2, 0, 0),
            ),
            (
                include_str!("../tests/fixtures/junit/nextest.xml"),
                (3, 1, 0, 0),
            ),
        ];
        for (xml, counts) in reports {
            let log = format!("$ run the tests\n{xml}\nexit 1\n");
            let junit = TestLog::parse(&log).junit.expect("a report");
            assert_eq!(
                (junit.tests, junit.failures, junit.errors, junit.skipped),
                counts
            );
            let whole = uncut(xml);
            assert_eq!(whole.len() as u64, counts.1 + counts.2);
            assert_eq!(junit.failed, whole, "nothing of an ordinary report is cut");
        }
        let php = TestLog::parse(include_str!("../tests/fixtures/junit/phpunit-paths.xml"));
        let first = &php.junit.expect("a report").failed[0];
        assert_eq!(
            (first.file.as_deref(), first.line, first.message.as_str()),
            (
                Some("/home/runner/work/repo/src/Fake.php"),
                Some(42),
                "Boom"
            )
        );
    }

    #[test]
    fn a_hostile_report_stays_within_the_caps() {
        // Names of 100 KB (cut inside a two-byte character), a 10 MB message, 100k cases.
        let huge = "é".repeat(50_000);
        let mut xml = format!(
            "<testsuite name=\"s\"><testcase name=\"{huge}\" classname=\"{huge}\" \
             file=\"{huge}\" line=\"7\"><failure message=\"{}\"/></testcase>",
            "m".repeat(10 << 20)
        );
        for n in 0..100_000 {
            xml.push_str(&format!(
                "<testcase name=\"case {n}\"><failure message=\"boom {n}\"/></testcase>"
            ));
        }
        xml.push_str("</testsuite>");
        let log = TestLog::parse(&xml);
        assert!(
            log.kept_bytes() <= MAX_KEPT_BYTES,
            "{} bytes kept, at most {MAX_KEPT_BYTES}",
            log.kept_bytes()
        );
        assert!(log.tail.len() <= TAIL_BYTES && log.excerpt.len() <= EXCERPT_BYTES);
        let junit = log.junit.expect("a report");
        assert_eq!((junit.tests, junit.failures), (100_001, 100_001), "exact");
        assert_eq!(junit.failed.len(), MAX_FAILED_CASES);
        let first = &junit.failed[0];
        for (field, cap) in [
            (first.name.as_str(), NAME_BYTES),
            (first.classname.as_deref().unwrap_or_default(), NAME_BYTES),
            (first.file.as_deref().unwrap_or_default(), FILE_BYTES),
            (first.message.as_str(), MESSAGE_BYTES),
        ] {
            assert!(
                field.len() <= cap && field.len() > cap - 16,
                "{}",
                field.len()
            );
            let kept = field.strip_suffix(CUT).expect("marked as cut");
            assert!(kept.starts_with("é") || kept.starts_with('m'), "{kept}");
        }
        assert_eq!(first.line, Some(7));
        assert_eq!(junit.failed[1].name, "case 0", "later cases are kept whole");
    }

    #[test]
    fn long_failures_are_kept_until_the_budget_is_spent() {
        // 200 failures whose messages are just under their cap: only the first few are kept.
        let message = "x".repeat(MESSAGE_BYTES - 1);
        let cases: String = (0..200)
            .map(|n| format!("<testcase name=\"c{n}\"><failure message=\"{message}\"/></testcase>"))
            .collect();
        let log = TestLog::parse(&format!("<testsuite name=\"s\">{cases}</testsuite>"));
        assert!(log.kept_bytes() <= MAX_KEPT_BYTES, "{}", log.kept_bytes());
        let junit = log.junit.expect("a report");
        assert_eq!(junit.failures, 200);
        assert!(
            (10..20).contains(&junit.failed.len()),
            "{} kept",
            junit.failed.len()
        );
        assert!(junit.failed.iter().all(|c| c.message == message), "not cut");
        assert_eq!(
            junit.failed.last().map(|c| c.name.as_str()),
            Some(&*format!("c{}", junit.failed.len() - 1))
        );
    }

    #[test]
    fn clipping_cuts_on_a_character_and_says_so() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("exactly 10", 10), "exactly 10");
        let cut = clip(&"ü".repeat(20), 16);
        assert!(cut.len() <= 16, "{cut}");
        assert_eq!(cut, format!("{}{CUT}", "ü".repeat(3)));
    }

    #[test]
    fn a_succeeded_test_keeps_only_its_counts() {
        let log = TestLog::parse(LOG).counts_only();
        assert_eq!(log.tail, "");
        assert_eq!(log.excerpt, "");
        let junit = log.junit.expect("a report");
        assert_eq!(junit.counts(), "4 cases: 1 passed, 2 failed, 1 skipped");
        assert!(junit.failed.is_empty());
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
