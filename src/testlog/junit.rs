//! The JUnit report itself, read with quick-xml's streaming reader: one pass over the report's
//! events, keeping the counts, the failed cases within their caps, and whether the report was
//! read whole. Entities (`&lt;`, `&#10;`...) are decoded wherever they are, and the text of a
//! failure is kept as written.

use std::borrow::Cow;

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use super::{
    FAILED_BYTES, FILE_BYTES, FailedCase, JUnit, MAX_FAILED_CASES, MESSAGE_BYTES, NAME_BYTES, clip,
    paths,
};

/// Bytes of a failure's text read: its message, and room to find a `file:line` in it.
const TEXT_BYTES: usize = 4 * MESSAGE_BYTES;
/// Nested suites whose `file` is remembered; deeper ones take the nearest one remembered.
const SUITE_DEPTH: usize = 32;

/// How a case ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Passed,
    Skipped,
    Failed,
    Errored,
}

/// The case being read.
struct Case {
    name: String,
    classname: Option<String>,
    file: Option<String>,
    line: Option<u64>,
    status: Status,
    message: String,
    text: String,
    /// Whether the text of its `<failure>` or `<error>` is being read.
    in_failure: bool,
}

#[derive(Default)]
struct Parser<'r> {
    root: Option<&'r str>,
    report: JUnit,
    kept_bytes: usize,
    full: bool,
    /// Elements open, the root included.
    depth: usize,
    /// Whether the report's root element was read, whether it is `<testsuites>`, and whether
    /// it closed.
    opened: bool,
    suites_root: bool,
    root_done: bool,
    /// Whether the reading is over: `</testsuites>` was read.
    stop: bool,
    /// Whether the text starts inside the report (an element closed that was opened before
    /// it, or a case outside any suite): a report whose start was cut off.
    cut_before: bool,
    /// Whether suites followed a `<testsuite>` root: the rest of a report whose start was cut.
    extra: bool,
    /// Open suites, and the `file` of the first [`SUITE_DEPTH`] of them.
    suites: usize,
    suite_files: Vec<Option<String>>,
    case: Option<Case>,
    /// Whether any element of a JUnit report was seen.
    seen: bool,
}

/// The report in `xml` (from its root element, or from wherever a cut log starts); `None` when
/// it holds no JUnit element at all.
pub fn parse(xml: &str, root: Option<&str>) -> Option<JUnit> {
    let mut reader = Reader::from_str(xml);
    let config = reader.config_mut();
    // A cut report closes elements it never opened; the report is read on regardless.
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    let mut parser = Parser {
        root,
        ..Parser::default()
    };
    let mut broken = false;
    while !parser.stop {
        match reader.read_event() {
            Ok(Event::Start(e)) => parser.open(&e, false),
            Ok(Event::Empty(e)) => parser.open(&e, true),
            Ok(Event::End(e)) => parser.close(e.local_name().as_ref()),
            Ok(Event::Text(t)) => parser.text(&t.xml10_content()),
            Ok(Event::CData(t)) => parser.text(&t.xml10_content()),
            Ok(Event::GeneralRef(r)) => match r.resolve_char_ref() {
                Ok(Some(c)) => parser.text(c.encode_utf8(&mut [0; 4])),
                // An undefined entity is kept as written rather than dropped.
                _ => match resolve_predefined_entity(&r) {
                    Some(s) => parser.text(s),
                    None => parser.text(&format!("&{};", &*r)),
                },
            },
            Ok(Event::Eof) => break,
            // Cut inside a tag (the end of a log read short), or not XML: what was read stands.
            Err(_) => {
                broken = !parser.root_done;
                break;
            }
            Ok(_) => {}
        }
    }
    if !parser.seen {
        return None;
    }
    let mut report = parser.report;
    report.complete =
        parser.opened && parser.root_done && !parser.cut_before && !parser.extra && !broken;
    // The vector grew by doubling; what is kept should not carry its spare room.
    report.failed.shrink_to_fit();
    Some(report)
}

/// The value of attribute `key` of `e`, entities decoded.
fn attribute<'e>(e: &'e BytesStart<'_>, key: &str) -> Option<Cow<'e, str>> {
    e.attributes()
        .with_checks(false)
        .flatten()
        .find(|a| a.key.local_name().as_ref() == key)
        .and_then(|a| a.normalized_value(XmlVersion::Implicit1_0).ok())
        .map(|v| Cow::Owned(v.into_owned()))
}

/// `text` appended to `to` while `to` is under `cap` bytes (cut on a character).
fn push_bounded(to: &mut String, text: &str, cap: usize) {
    let room = cap.saturating_sub(to.len());
    if text.len() <= room {
        to.push_str(text);
        return;
    }
    let mut end = room;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    to.push_str(&text[..end]);
    // One byte over the cap marks the text as longer than kept.
    if to.len() == cap {
        to.push(' ');
    }
}

impl Parser<'_> {
    fn open(&mut self, e: &BytesStart<'_>, empty: bool) {
        let name = e.local_name();
        let name = name.as_ref();
        if self.depth == 0 && matches!(name, "testsuites" | "testsuite" | "testcase") {
            if self.root_done {
                self.extra = true;
            } else if !self.opened && !self.cut_before {
                self.opened = name != "testcase";
                self.cut_before = name == "testcase";
                self.suites_root = name == "testsuites";
            }
        }
        if !empty {
            self.depth += 1;
        }
        match name {
            "testsuites" => self.seen = true,
            "testsuite" => {
                self.seen = true;
                if !empty {
                    self.suites += 1;
                    if self.suites <= SUITE_DEPTH {
                        let file = attribute(e, "file").map(|f| clip(&f, FILE_BYTES));
                        self.suite_files.push(file);
                    }
                }
            }
            "testcase" => {
                self.seen = true;
                let case = Case {
                    name: attribute(e, "name").map_or_else(String::new, |n| clip(&n, NAME_BYTES)),
                    classname: attribute(e, "classname").map(|c| clip(&c, NAME_BYTES)),
                    file: attribute(e, "file").map(|f| clip(&f, FILE_BYTES)),
                    line: attribute(e, "line").and_then(|l| l.trim().parse().ok()),
                    status: Status::Passed,
                    message: String::new(),
                    text: String::new(),
                    in_failure: false,
                };
                if empty {
                    self.finish(case);
                } else {
                    self.case = Some(case);
                }
            }
            "failure" | "error" | "skipped" => {
                let Some(case) = &mut self.case else { return };
                let status = match name {
                    "failure" => Status::Failed,
                    "error" => Status::Errored,
                    _ => Status::Skipped,
                };
                // A failure outweighs a skip; the first failure is the one reported.
                if matches!(case.status, Status::Failed | Status::Errored) {
                    return;
                }
                case.status = status;
                if status != Status::Skipped {
                    if let Some(message) = attribute(e, "message") {
                        push_bounded(&mut case.message, &message, TEXT_BYTES);
                    }
                    case.in_failure = !empty;
                }
            }
            _ => {}
        }
    }

    fn close(&mut self, name: &str) {
        if self.depth == 0 {
            // Closing what was opened before the text read: its start was cut off.
            if matches!(name, "testsuites" | "testsuite" | "testcase") {
                self.cut_before = true;
                self.stop = name == "testsuites";
            }
        } else {
            self.depth -= 1;
            if self.depth == 0 && self.opened && !self.root_done {
                self.root_done = true;
                // Output after a whole `<testsuites>` is the runner's chatter; after a
                // `<testsuite>`, more suites would say the report's start was cut off.
                self.stop = self.suites_root;
            }
        }
        match name {
            "testsuite" if self.suites > 0 => {
                if self.suites <= SUITE_DEPTH {
                    self.suite_files.pop();
                }
                self.suites -= 1;
            }
            "testcase" => {
                if let Some(case) = self.case.take() {
                    self.finish(case);
                }
            }
            "failure" | "error" => {
                if let Some(case) = &mut self.case {
                    case.in_failure = false;
                }
            }
            _ => {}
        }
    }

    fn text(&mut self, text: &str) {
        if let Some(case) = &mut self.case
            && case.in_failure
        {
            push_bounded(&mut case.text, text, TEXT_BYTES);
        }
    }

    /// Counts a case read whole, and keeps it if it failed and there is room.
    fn finish(&mut self, case: Case) {
        let report = &mut self.report;
        report.tests += 1;
        match case.status {
            Status::Passed => return,
            Status::Skipped => {
                report.skipped += 1;
                return;
            }
            Status::Failed => report.failures += 1,
            Status::Errored => report.errors += 1,
        }
        // Once the budget is spent the rest are only counted: the first failures are the
        // ones worth reading, and the counts say how many more there were.
        if self.full || report.failed.len() == MAX_FAILED_CASES {
            return;
        }
        let suite_file = self.suite_files.iter().rev().find_map(Option::as_deref);
        let location = (case.file.as_deref())
            .and_then(|f| paths::repository_path(f, self.root))
            .map(|path| (path, case.line))
            .or_else(|| {
                suite_file
                    .and_then(|f| paths::repository_path(f, self.root))
                    .map(|path| (path, case.line))
            })
            .or_else(|| {
                paths::in_text(&case.text, self.root)
                    .or_else(|| paths::in_text(&case.message, self.root))
                    .map(|(path, line)| (path, Some(line)))
            })
            .map(|(path, line)| (path, line.unwrap_or(1).max(1)));
        let message = if case.message.trim().is_empty() {
            case.text.trim()
        } else {
            case.message.trim()
        };
        let failed = FailedCase {
            name: case.name,
            classname: case.classname,
            file: case.file.or_else(|| suite_file.map(str::to_string)),
            line: case.line,
            message: clip(message, MESSAGE_BYTES),
            location,
        };
        if self.kept_bytes + failed.size() > FAILED_BYTES {
            self.full = true;
            return;
        }
        self.kept_bytes += failed.size();
        report.failed.push(failed);
    }
}
