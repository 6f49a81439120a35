//! PURE: what a finished test's log tells, kept small: the last lines for the status message,
//! a longer excerpt for the check run, and, when the log holds a JUnit XML report, its counts,
//! whether it was read whole, and its failed cases for the summary and the annotations.
//!
//! The report is found in the log ([`report_in`]): between marker lines when the test printed
//! them ([`marked`], the way to hand over a report longer than the end of the log read), else
//! from its root element; it is read by [`junit`] and its cases located by [`paths`].
//!
//! The log is written by the tenant's test, so everything kept from it is capped: each field of
//! a failed case, the number of failed cases and the bytes they take together. The operator keeps
//! one [`TestLog`] per finished Job, and there can be thousands of Jobs; a report with huge names
//! or messages must cost no more than an ordinary one. The counts stay exact.

pub mod junit;
pub mod marked;
pub mod paths;
#[cfg(test)]
mod tests;

use std::mem::size_of;

pub use marked::Marked;

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
const FAILED_BYTES: usize = 40 * 1024;
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
    /// Whether the report was read whole. A report cut by the log read (its start or its end)
    /// is counted as far as it was read: the counts are of the cases read, not of the run.
    pub complete: bool,
}

impl JUnit {
    /// Cases that passed.
    pub fn passed(&self) -> u64 {
        (self.tests).saturating_sub(self.failures + self.errors + self.skipped)
    }

    /// "12 cases: 10 passed, 1 failed, 1 skipped"; a cut report says so.
    pub fn counts(&self) -> String {
        let counts = format!(
            "{} passed, {} failed, {} skipped",
            self.passed(),
            self.failures + self.errors,
            self.skipped
        );
        if self.complete {
            format!("{} cases: {counts}", self.tests)
        } else {
            format!("report cut: {} cases read ({counts})", self.tests)
        }
    }

    /// [`Self::counts`] of the report of a test that ended as it did: a failed test whose
    /// report holds no failed case (it crashed after the report, or the report was cut before
    /// its failures) is never shown as all passed.
    pub fn summary(&self, test_failed: bool) -> String {
        if !test_failed || self.failures + self.errors > 0 {
            return self.counts();
        }
        if self.complete {
            format!(
                "{} cases, no failed case in the report, but the test failed",
                self.tests
            )
        } else {
            format!(
                "report cut: {} cases read, no failed case among them, but the test failed",
                self.tests
            )
        }
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
    /// The file of the repository and the line it failed on, when the report names one
    /// ([`paths`]): where its annotation goes.
    pub location: Option<(String, u64)>,
}

impl FailedCase {
    /// Bytes it takes, in its place in a `Vec` and on the heap.
    fn size(&self) -> usize {
        size_of::<FailedCase>()
            + self.name.capacity()
            + self.classname.as_ref().map_or(0, String::capacity)
            + self.file.as_ref().map_or(0, String::capacity)
            + self.message.capacity()
            + self.location.as_ref().map_or(0, |(p, _)| p.capacity())
    }
}

impl TestLog {
    /// Reads `log` (the end of a test container's output).
    pub fn parse(log: &str) -> TestLog {
        TestLog::parse_with(log, None)
    }

    /// Reads `log` (the end of a test container's output), with the marked report read from
    /// the whole log when the end of it did not hold the report's start
    /// ([`marked::begins_before`]).
    pub fn parse_with(log: &str, marked: Option<Marked>) -> TestLog {
        let trimmed = log.trim_end();
        TestLog {
            tail: last(trimmed, TAIL_LINES, TAIL_BYTES),
            excerpt: last(trimmed, usize::MAX, EXCERPT_BYTES),
            junit: match marked {
                Some(marked) => report_of(&marked),
                None => report_in(log),
            },
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

/// The JUnit report in `log`: the last marked one, else the one whose root comes last.
pub fn report_in(log: &str) -> Option<JUnit> {
    if let Some(marked) = marked::scan(log) {
        return report_of(&marked);
    }
    // The end marker without its begin: the start of the report was cut off.
    if marked::begins_before(log) {
        let end = log.rfind(marked::END).unwrap_or(log.len());
        let xml = &log[..end];
        let from = first_element(xml).unwrap_or(xml.len());
        return junit::parse(&xml[from..], None).map(|j| JUnit {
            complete: false,
            ..j
        });
    }
    // Unmarked: from the last XML declaration or `<testsuites`, else from the first element of
    // a report (a cut log starts inside the report: the parser tells).
    let from = ["<?xml", "<testsuites"]
        .iter()
        .filter_map(|open| log.rfind(open))
        .max()
        .or_else(|| first_element(log))?;
    junit::parse(&log[from..], None)
}

/// The report between markers.
fn report_of(marked: &Marked) -> Option<JUnit> {
    let report = junit::parse(&marked.xml, marked.root.as_deref())?;
    let complete = report.complete && marked.ended;
    Some(JUnit { complete, ..report })
}

/// Where the first line that starts with an element of a JUnit report begins.
fn first_element(log: &str) -> Option<usize> {
    let mut at = 0;
    for line in log.split_inclusive('\n') {
        let start = line.trim_start();
        if ["<testsuite", "<testcase", "</testsuite", "</testcase"]
            .iter()
            .any(|p| start.starts_with(p))
        {
            return Some(at + (line.len() - start.len()));
        }
        at += line.len();
    }
    None
}
