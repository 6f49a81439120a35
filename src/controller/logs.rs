//! The logs of finished test and setup runs, read once per Job from its last pod (bounded:
//! the end of the log only; RBAC `pods/log` get) and kept small ([`TestLog`]): the end of a
//! failed run's log goes into its status message, and with a GitHub App the check run shows
//! the log and the JUnit report it holds.
//!
//! A report printed between marker lines ([`crate::testlog::marked`]) is read whole however
//! long the log: when the end of the log holds the end marker but not the begin marker (or
//! the byte limit cut that end short), the log is read again from its start, as a stream,
//! keeping only the marked report.
//!
//! Whole reads are what a tenant's log can make expensive (32 MiB streamed through the
//! operator), so at most [`WHOLE_READS`] run at once across all previews, and each stops after
//! [`WHOLE_READ_TIME`] (waiting for its turn included) with what it read: a report not read to its end marker is
//! shown as incomplete. One team's huge logs thus cost the others at most that wait, never a
//! stalled reconcile.
//!
//! Kept in memory per preview namespace and Job, and dropped with the Job; a restart reads
//! them again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cached::CachedJob;
use futures::{AsyncBufRead, AsyncBufReadExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use kube::{Client, ResourceExt};
use tokio::sync::Semaphore;
use tracing::{debug, info};

use crate::sync::lock;
use crate::testlog::{Marked, TestLog, marked};

/// Lines read from the end of a log: room for a JUnit report of a few hundred cases.
const TAIL_LINES: i64 = 5_000;
/// Bytes read at most.
const LIMIT_BYTES: i64 = 512 * 1024;
/// Bytes of a whole log streamed at most, for a marked report (the kubelet keeps 10 MiB of a
/// container's log by default). Only the report is kept of them, at most
/// [`crate::testlog::marked::MARKED_REPORT_BYTES`].
const WHOLE_LIMIT_BYTES: i64 = 32 << 20;

/// Whole-log reads running at once, across all previews.
const WHOLE_READS: usize = 2;
/// Longest a whole-log read takes, its wait for a turn included.
const WHOLE_READ_TIME: Duration = Duration::from_secs(20);
/// The turns for whole-log reads; shared by every reconcile of this process.
static WHOLE_READ_TURNS: Semaphore = Semaphore::const_new(WHOLE_READS);

/// The label the Job controller puts on the pods of a Job.
const JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// (preview namespace, Job name).
type Key = (String, String);

/// Logs by (preview namespace, Job name), with the Job's uid they were read for.
#[derive(Default)]
pub struct TestLogs {
    logs: Mutex<HashMap<Key, (String, Arc<TestLog>)>>,
}

impl TestLogs {
    /// Reads the logs of `jobs` (in `namespace`) that finished and have not been read yet:
    /// of failed ones always, of succeeded ones when `succeeded` (their JUnit counts are
    /// wanted). Forgets the logs of Jobs that are gone.
    pub async fn read(
        &self,
        client: &Client,
        namespace: &str,
        jobs: &[Arc<CachedJob>],
        succeeded: bool,
    ) {
        let due: Vec<(&CachedJob, bool)> = jobs
            .iter()
            .map(Arc::as_ref)
            .filter_map(|j| finished(j).map(|failed| (j, failed)))
            .filter(|(_, failed)| *failed || succeeded)
            .filter(|(j, _)| !self.has(namespace, j))
            .collect();
        for (job, failed) in due {
            let Some((log, marked)) = read_log(client, namespace, job).await else {
                continue;
            };
            lock(&self.logs).insert(
                (namespace.to_string(), job.name_any()),
                (
                    job.uid().unwrap_or_default(),
                    Arc::new(kept(&log, marked, failed)),
                ),
            );
        }
        let live: Vec<String> = jobs.iter().map(|j| j.name_any()).collect();
        lock(&self.logs).retain(|(ns, job), _| ns != namespace || live.contains(job));
    }

    /// The logs read in `namespace`, by Job name.
    pub fn of(&self, namespace: &str) -> BTreeMap<String, Arc<TestLog>> {
        lock(&self.logs)
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((_, job), (_, log))| (job.clone(), log.clone()))
            .collect()
    }

    /// Forgets everything of a preview namespace (at teardown).
    pub fn forget(&self, namespace: &str) {
        lock(&self.logs).retain(|(ns, _), _| ns != namespace);
    }

    fn has(&self, namespace: &str, job: &CachedJob) -> bool {
        lock(&self.logs)
            .get(&(namespace.to_string(), job.name_any()))
            .is_some_and(|(uid, _)| Some(uid.as_str()) == job.metadata.uid.as_deref())
    }
}

/// What the read of a log of `log`'s length returns of it, without a cluster: its last
/// [`TAIL_LINES`] lines, of which the first [`LIMIT_BYTES`] (the API server's `tailLines` and
/// `limitBytes`); and the marked report of the whole of it when that end holds only the
/// report's end or was cut short ([`wants_whole`]). `preview-operator test-report` reads a
/// file this way.
pub fn read_offline(log: &str) -> (String, Option<Marked>) {
    let lines: Vec<&str> = log.split_inclusive('\n').collect();
    let tail = lines[lines.len().saturating_sub(TAIL_LINES as usize)..].concat();
    let mut end = tail.len().min(LIMIT_BYTES as usize);
    while !tail.is_char_boundary(end) {
        end -= 1;
    }
    let tail = tail[..end].to_string();
    let marked = wants_whole(&tail)
        .then(|| {
            let mut scanner = marked::Scanner::default();
            scanner.feed(log.as_bytes());
            scanner.feed(b"\n");
            scanner.finish()
        })
        .flatten();
    (tail, marked)
}

/// Whether the whole log is read for a marked report: the end read holds the report's end
/// marker but not its begin marker, or the byte limit cut the end read short (its last lines,
/// where a report's end marker would be, were not read).
fn wants_whole(tail: &str) -> bool {
    marked::begins_before(tail) || tail.len() >= LIMIT_BYTES as usize
}

/// What is kept of a finished Job's log: of a failed one what its status and check run show,
/// of a succeeded one only its JUnit counts (nothing else of it is shown, and most Jobs succeed).
pub fn kept(log: &str, marked: Option<Marked>, failed: bool) -> TestLog {
    let log = TestLog::parse_with(log, marked);
    if failed { log } else { log.counts_only() }
}

/// `Some(failed)` once the Job finished.
fn finished(job: &CachedJob) -> Option<bool> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some(false),
            "Failed" => Some(true),
            _ => None,
        })
}

/// The end of the log of the Job's newest pod, and the marked report read from the whole log
/// when the end does not hold all of it ([`wants_whole`]); `None` when it cannot be read now (the next
/// reconcile tries again). A log the operator may not read says so instead.
async fn read_log(
    client: &Client,
    namespace: &str,
    job: &CachedJob,
) -> Option<(String, Option<Marked>)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{JOB_NAME}={}", job.name_any());
    let list = match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list,
        Err(error) => {
            debug!(%error, namespace, job = %job.name_any(), "cannot list the pods of a finished job");
            return None;
        }
    };
    let newest = list
        .items
        .into_iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))?;
    let params = LogParams {
        tail_lines: Some(TAIL_LINES),
        limit_bytes: Some(LIMIT_BYTES),
        ..LogParams::default()
    };
    let log = match pods.logs(&newest.name_any(), &params).await {
        Ok(log) => log,
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Some((
                format!("(the operator may not read this log: {})", status.message),
                None,
            ));
        }
        // The pod has no log to give (its node is gone, it never started): nothing to show,
        // and nothing to ask again.
        Err(kube::Error::Api(status)) if status.code < 500 => {
            debug!(?status, namespace, pod = %newest.name_any(), "a finished test has no log");
            return Some((String::new(), None));
        }
        Err(error) => {
            debug!(%error, namespace, pod = %newest.name_any(), "cannot read a test log");
            return None;
        }
    };
    if !wants_whole(&log) {
        return Some((log, None));
    }
    let mut scanner = marked::Scanner::default();
    let pod = newest.name_any();
    let read = read_whole(&pods, &pod, &mut scanner);
    if tokio::time::timeout(WHOLE_READ_TIME, read).await.is_err() {
        info!(
            namespace,
            pod, "reading a whole test log took too long; its report is shown as read so far"
        );
    }
    scanner.feed(b"\n");
    Some((log, scanner.finish()))
}

/// Streams the whole log of `pod` through `scanner`, in its turn ([`WHOLE_READ_TURNS`]).
/// Cancelling it keeps what was fed so far.
async fn read_whole(pods: &Api<Pod>, pod: &str, scanner: &mut marked::Scanner) {
    let Ok(_turn) = WHOLE_READ_TURNS.acquire().await else {
        return;
    };
    let params = LogParams {
        limit_bytes: Some(WHOLE_LIMIT_BYTES),
        ..LogParams::default()
    };
    match pods.log_stream(pod, &params).await {
        Ok(stream) => scan(stream, scanner).await,
        Err(error) => debug!(%error, pod, "cannot read a whole test log"),
    }
}

/// Feeds a log stream to `scanner` until it ends or breaks off.
async fn scan(stream: impl AsyncBufRead, scanner: &mut marked::Scanner) {
    let mut stream = std::pin::pin!(stream);
    loop {
        let n = match stream.as_mut().fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => {
                scanner.feed(chunk);
                chunk.len()
            }
        };
        stream.as_mut().consume(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_a_succeeded_job_only_the_junit_counts_are_kept() {
        let log = format!(
            "{}\n<testsuite name=\"s\"><testcase name=\"ok\"/>\
             <testcase name=\"flaky\"><failure message=\"{}\"/></testcase></testsuite>\nexit 0",
            "progress\n".repeat(2_000),
            "m".repeat(1_000)
        );
        let failed = kept(&log, None, true);
        assert!(!failed.excerpt.is_empty());
        assert_eq!(failed.junit.as_ref().map(|j| j.failed.len()), Some(1));
        let succeeded = kept(&log, None, false);
        assert_eq!(
            (succeeded.tail.as_str(), succeeded.excerpt.as_str()),
            ("", "")
        );
        let junit = succeeded.junit.as_ref().expect("counts");
        assert_eq!(junit.counts(), "2 cases: 1 passed, 1 failed, 0 skipped");
        assert!(junit.failed.is_empty());
        assert!(succeeded.kept_bytes() < failed.kept_bytes() / 4);
    }

    #[tokio::test]
    async fn a_whole_read_cut_off_in_time_keeps_the_report_read_so_far() {
        use futures::{StreamExt, TryStreamExt};
        // A log that prints the start of a report and then stalls, as a test pod may.
        let start = "noise\n--- preview-operator junit begin ---\n<testsuite tests=\"2\">\n";
        let stalling = futures::stream::iter([Ok::<_, std::io::Error>(start.as_bytes().to_vec())])
            .chain(futures::stream::pending())
            .into_async_read();
        let mut scanner = marked::Scanner::default();
        let read = scan(stalling, &mut scanner);
        let cut = tokio::time::timeout(Duration::from_millis(50), read).await;
        assert!(cut.is_err(), "the stalled stream never ends by itself");
        scanner.feed(b"\n");
        let marked = scanner.finish().expect("the report's start was read");
        assert!(!marked.ended);
        assert!(marked.xml.contains("<testsuite tests=\"2\">"));
        assert!(
            !TestLog::parse_with("", Some(marked))
                .junit
                .expect("a report")
                .complete
        );
    }
}
