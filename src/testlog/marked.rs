//! The hand-over of a whole report, however long the log: the test prints it between two
//! marker lines, and the operator reads from the begin marker onward instead of only the end of
//! the log. [`Scanner`] finds the last marked report in a stream of bytes, keeping at most
//! [`MARKED_REPORT_BYTES`] of it and a short line otherwise.

/// The line a test prints before its report; it may name the workspace the report's absolute
/// paths start with: `--- preview-operator junit begin root=/home/ci/work/repo ---`.
pub const BEGIN: &str = "--- preview-operator junit begin";
/// The line a test prints after its report.
pub const END: &str = "--- preview-operator junit end ---";
/// Bytes of a marked report kept at most (a report of tens of thousands of cases); a longer
/// one is read as cut.
pub const MARKED_REPORT_BYTES: usize = 4 << 20;
/// Bytes of a line outside the report looked at: enough for a marker with its root.
const OUTSIDE_LINE_BYTES: usize = 1024;

/// A marked report, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Marked {
    /// What was between the markers (the start of it when it was longer than its cap).
    pub xml: String,
    /// The workspace named on the begin marker.
    pub root: Option<String>,
    /// Whether the end marker was read after it, within the cap.
    pub ended: bool,
}

/// `Some(root)` when `line` is a begin marker.
pub fn begin(line: &str) -> Option<Option<String>> {
    let rest = line.trim().strip_prefix(BEGIN)?;
    let rest = rest.trim().strip_suffix("---")?.trim();
    if rest.is_empty() {
        return Some(None);
    }
    let root = rest.strip_prefix("root=")?.trim();
    Some((!root.is_empty()).then(|| root.to_string()))
}

/// Whether `line` is the end marker.
pub fn end(line: &str) -> bool {
    line.trim() == END
}

/// Reads a log in chunks of any size and keeps its last marked report; linear in the log,
/// bounded in memory whatever the log's lines.
#[derive(Default)]
pub struct Scanner {
    /// The line being read outside a report (its start only).
    line: Vec<u8>,
    /// The report being read (or the last one read) and where its current line starts.
    report: Option<(Marked, Vec<u8>, usize)>,
    /// Whether the report being read is finished (ended, or over its cap).
    finished: bool,
}

impl Scanner {
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (line, rest, newline) = match bytes.iter().position(|b| *b == b'\n') {
                Some(at) => (&bytes[..at], &bytes[at + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            match &mut self.report {
                Some((marked, xml, start)) if !self.finished => {
                    if xml.len() + line.len() + 1 > MARKED_REPORT_BYTES {
                        // Over its cap: what was read is the start of a report, read as cut.
                        self.finished = true;
                        xml.truncate(*start);
                        marked.ended = false;
                    } else {
                        xml.extend_from_slice(line);
                        if newline {
                            if end(&String::from_utf8_lossy(&xml[*start..])) {
                                xml.truncate(*start);
                                marked.ended = true;
                                self.finished = true;
                            } else {
                                xml.push(b'\n');
                                *start = xml.len();
                            }
                        }
                    }
                    if self.finished {
                        self.line.clear();
                    }
                }
                _ => {
                    let room = OUTSIDE_LINE_BYTES.saturating_sub(self.line.len());
                    self.line.extend_from_slice(&line[..line.len().min(room)]);
                    if newline {
                        if let Some(root) = begin(&String::from_utf8_lossy(&self.line)) {
                            // A later report replaces an earlier one: the last is the result.
                            self.report = Some((
                                Marked {
                                    root,
                                    ..Marked::default()
                                },
                                Vec::new(),
                                0,
                            ));
                            self.finished = false;
                        }
                        self.line.clear();
                    }
                }
            }
        }
    }

    /// The last marked report read, if any.
    pub fn finish(self) -> Option<Marked> {
        let (mut marked, xml, _) = self.report?;
        marked.xml = String::from_utf8_lossy(&xml).into_owned();
        Some(marked)
    }
}

/// The last marked report in `log`.
pub fn scan(log: &str) -> Option<Marked> {
    let mut scanner = Scanner::default();
    scanner.feed(log.as_bytes());
    // The last line needs no newline to count.
    scanner.feed(b"\n");
    scanner.finish()
}

/// Whether `log` (the end of a longer log) ends a marked report whose begin marker was cut
/// off: the whole log should be read for it.
pub fn begins_before(log: &str) -> bool {
    let mut open = false;
    let mut ended = false;
    for line in log.lines() {
        if begin(line).is_some() {
            open = true;
        } else if end(line) {
            ended |= !open;
            open = false;
        }
    }
    ended
}
