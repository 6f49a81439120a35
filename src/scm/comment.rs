//! One comment per preview on its pull request (`--github-pr-comments`): created once, then
//! edited in place (found again by a hidden marker, also after a restart), with the URLs, the
//! sha, the phase, the tests and the expiry; at teardown it says the preview is gone.
//!
//! Anyone can post a comment that starts with the marker: only one the operator wrote itself
//! is found again ([`crate::scm::Me`]). What the pull request's code controls (a failed test's
//! output, names) goes through [`crate::scm::markdown`].
//!
//! Like commit statuses, comments are written by one background task, newest content per
//! preview only, never waited for by a reconcile.

use std::collections::{BTreeMap, HashMap};

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Forge;
use crate::api::{PreviewEnvironmentStatus, TestPhase, condition};
use crate::scm::markdown::{block, inline};

/// Pages of 100 comments read when looking for a preview's comment.
const MAX_PAGES: u32 = 20;

/// The content one preview's comment should have now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    pub repository: String,
    pub pull_request: i64,
    /// `namespace/name` of the PreviewEnvironment: its marker.
    pub preview: String,
    pub body: String,
}

/// The hidden line a preview's comment starts with.
pub fn marker(preview: &str) -> String {
    format!("<!-- preview-operator:{preview} -->")
}

/// PURE: the comment a preview's status calls for; `None` before it has a phase.
pub fn render(
    repository: &str,
    pull_request: i64,
    preview: &str,
    status: &PreviewEnvironmentStatus,
) -> Option<Comment> {
    let phase = status.phase?;
    let sha = status.observed_sha.as_deref().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY);
    let mut body = format!("{}\n### Preview `{preview}`\n\n", marker(preview));
    let at = crate::naming::short_sha(sha);
    // The condition's message may end with what a failed test printed: the pull request's
    // code wrote that, so it is quoted, never rendered.
    match ready {
        Some(c) if c.status != "True" && c.message.contains('\n') => body.push_str(&format!(
            "**{}** ({}) at `{at}`:\n\n{}\n",
            phase.as_str(),
            inline(&c.reason),
            block(&c.message)
        )),
        Some(c) if c.status != "True" => body.push_str(&format!(
            "**{}** ({}: {}) at `{at}`\n\n",
            phase.as_str(),
            inline(&c.reason),
            inline(&c.message)
        )),
        _ => body.push_str(&format!("**{}** at `{at}`\n\n", phase.as_str())),
    }
    if let Some(url) = &status.url {
        body.push_str(&format!("URL: {url}\n\n"));
    }
    let exposed: Vec<_> = status
        .services
        .iter()
        .filter_map(|s| {
            s.url.as_ref().map(|u| {
                let name = inline(&s.name);
                format!("| {name} | {}/{} | {u} |", s.ready_replicas, s.replicas)
            })
        })
        .collect();
    if !exposed.is_empty() {
        body.push_str("| service | ready | URL |\n| --- | --- | --- |\n");
        body.push_str(&exposed.join("\n"));
        body.push_str("\n\n");
    }
    if !status.tests.is_empty() {
        body.push_str("| test | result | took |\n| --- | --- | --- |\n");
        for t in &status.tests {
            let (result, took) = result_and_time(t);
            body.push_str(&format!("| {} | {result} | {took} |\n", inline(&t.name)));
        }
        body.push('\n');
    }
    if let Some(expires) = &status.expires_at {
        body.push_str(&format!("Expires {}.\n", expires.0));
    }
    Some(Comment {
        repository: repository.to_string(),
        pull_request,
        preview: preview.to_string(),
        body,
    })
}

/// A test's result and how long it took, as the comment's and the check run's tables show
/// them.
pub fn result_and_time(t: &crate::api::TestStatus) -> (&'static str, String) {
    let result = match t.phase {
        TestPhase::Succeeded => "passed",
        TestPhase::Failed => "**failed**",
        TestPhase::Running => "running",
        TestPhase::Pending => "pending",
    };
    let took = match (&t.started_at, &t.finished_at) {
        (Some(a), Some(b)) => crate::api::format_duration(b.0.duration_since(a.0).unsigned_abs()),
        _ => String::new(),
    };
    (result, took)
}

/// The comment of a preview that was torn down.
pub fn torn_down(repository: &str, pull_request: i64, preview: &str) -> Comment {
    Comment {
        repository: repository.to_string(),
        pull_request,
        preview: preview.to_string(),
        body: format!(
            "{}\n### Preview `{preview}`\n\nTorn down: the environment is gone.\n",
            marker(preview)
        ),
    }
}

/// Sender side handed to the controller.
#[derive(Clone)]
pub struct CommentSender {
    tx: mpsc::Sender<Comment>,
}

impl CommentSender {
    /// Enqueues without waiting; a full queue drops it (the next change writes a fresh one).
    pub fn send(&self, comment: Comment) {
        if let Err(error) = self.tx.try_send(comment) {
            warn!(%error, "pull request comment queue full; dropping a comment");
        }
    }
}

/// Starts a comment writer on `forge` (GitHub PR comments, or GitLab MR notes).
pub fn start(forge: Arc<dyn Forge>) -> CommentSender {
    let (tx, rx) = mpsc::channel(4096);
    tokio::spawn(run(Writer { forge }, rx));
    CommentSender { tx }
}

async fn run(writer: Writer, mut rx: mpsc::Receiver<Comment>) {
    // Comment ids by preview, and the body last written.
    let mut ids: HashMap<String, u64> = HashMap::new();
    let mut written: HashMap<String, String> = HashMap::new();
    while let Some(first) = rx.recv().await {
        // Only the newest content of each preview is worth writing.
        let mut newest: BTreeMap<String, Comment> = BTreeMap::new();
        newest.insert(first.preview.clone(), first);
        while let Ok(more) = rx.try_recv() {
            newest.insert(more.preview.clone(), more);
        }
        for (preview, comment) in newest {
            if written.get(&preview) == Some(&comment.body) {
                continue;
            }
            match writer.write(&comment, ids.get(&preview).copied()).await {
                Ok(id) => {
                    ids.insert(preview.clone(), id);
                    written.insert(preview, comment.body);
                }
                Err(why) => {
                    warn!(repository = %comment.repository, pr = comment.pull_request, %why, "failed to write the pull request comment")
                }
            }
        }
        // Bounded memory: previews long gone are not needed.
        if ids.len() > 50_000 {
            ids.clear();
            written.clear();
        }
    }
}

struct Writer {
    forge: Arc<dyn Forge>,
}

impl Writer {
    /// Edits the preview's comment (by `known` id, else found by its marker), or creates it.
    async fn write(&self, comment: &Comment, known: Option<u64>) -> Result<u64, String> {
        let id = match known {
            Some(id) => Some(id),
            None => self.find(comment).await?,
        };
        let (repo, pr) = (&comment.repository, comment.pull_request);
        let written = self
            .forge
            .write_comment(repo, pr, id, &comment.body)
            .await
            .map_err(|e| e.to_string())?;
        info!(%repo, pr, id = written, "wrote the pull request comment");
        Ok(written)
    }

    /// The id of the operator's own comment carrying the preview's marker, if the PR has one.
    /// Anyone can post a comment starting with the marker; only one the operator wrote is
    /// edited (who the operator is is asked only once such a comment turns up).
    async fn find(&self, comment: &Comment) -> Result<Option<u64>, String> {
        let marker = marker(&comment.preview);
        for page in 1..=MAX_PAGES {
            let (repo, pr) = (&comment.repository, comment.pull_request);
            let posted = (self.forge.comments(repo, pr, page).await).map_err(|e| e.to_string())?;
            let mut marked = posted.iter().filter(|c| c.body.starts_with(&marker));
            if let Some(first) = marked.next() {
                let me = self.forge.me().await.map_err(|e| {
                    format!("cannot tell the operator's comments from others': {e}")
                })?;
                if let Some(ours) = std::iter::once(first)
                    .chain(marked)
                    .find(|c| me.wrote(&c.author))
                {
                    return Ok(Some(ours.id));
                }
            }
            if posted.len() < 100 {
                break;
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;

    #[test]
    fn a_comment_shows_the_phase_url_tests_and_expiry_behind_its_marker() {
        let status: PreviewEnvironmentStatus = serde_json::from_value(serde_json::json!({
            "phase": "Ready", "observedSha": "4f2c9e1d8b", "url": "https://web-pr.preview.example.com",
            "expiresAt": "2026-12-01T10:00:00Z",
            "services": [{"name": "web", "readyReplicas": 1, "replicas": 1, "url": "https://web-pr.preview.example.com"}],
            "tests": [{"name": "e2e", "sha": "4f2c9e1d8b", "phase": "Succeeded",
                       "startedAt": "2026-11-30T10:00:00Z", "finishedAt": "2026-11-30T10:01:30Z"}],
        }))
        .expect("status");
        assert_eq!(status.phase, Some(Phase::Ready));
        let c = render("acme/shop", 7, "team-shop/shop-pr-7", &status).expect("a comment");
        assert!(
            c.body
                .starts_with("<!-- preview-operator:team-shop/shop-pr-7 -->")
        );
        for part in [
            "**Ready**",
            "`4f2c9e1`",
            "https://web-pr.preview.example.com",
            "| e2e | passed | 1m30s |",
            "Expires 2026-12-01T10:00:00Z",
        ] {
            assert!(c.body.contains(part), "{part} missing from:\n{}", c.body);
        }
        let gone = torn_down("acme/shop", 7, "team-shop/shop-pr-7");
        assert!(
            gone.body.starts_with(&marker("team-shop/shop-pr-7"))
                && gone.body.contains("Torn down")
        );
    }

    /// What a hostile test printed: a fence of its own, mentions, an image, a link, HTML, a
    /// table row and a GitLab quick action on a line of its own.
    const HOSTILE: &str = "boom\n```\n@org/team @all please look ![x](http://evil/x.png)\n[link](https://evil) <img src=x onerror=alert(1)>\n| a | b |\n/merge\n````";

    /// `body` with every fenced block taken out: what renders as markdown.
    fn outside_fences(body: &str) -> String {
        let mut out = String::new();
        let mut fence: Option<usize> = None;
        for line in body.lines() {
            let run = line.chars().take_while(|c| *c == '`').count();
            match fence {
                None if run >= 3 => fence = Some(run),
                Some(open) if run >= open && line.trim_end().len() == run => fence = None,
                Some(_) => {}
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        assert_eq!(fence, None, "a fence is left open in:\n{body}");
        out
    }

    #[test]
    fn what_a_failed_test_printed_is_quoted_and_mentions_nobody() {
        let status: PreviewEnvironmentStatus = serde_json::from_value(serde_json::json!({
            "phase": "Failed", "observedSha": "4f2c9e1d8b",
            "conditions": [{"type": "Ready", "status": "False", "reason": "TestFailed",
                            "message": format!("test e2e failed at 4f2c9e1\nlast output:\n{HOSTILE}"),
                            "lastTransitionTime": "2026-11-30T10:00:00Z"}],
            "tests": [{"name": "e2e|![x](http://evil)", "sha": "4f2c9e1d8b", "phase": "Failed"}],
        }))
        .expect("status");
        let c = render("acme/shop", 7, "team-shop/shop-pr-7", &status).expect("a comment");
        let rendered = outside_fences(&c.body);
        for hostile in ["@org", "@all", "![", "](", "<img", "/merge", "| a | b |"] {
            assert!(
                !rendered.contains(hostile),
                "{hostile} outside a code block:\n{}",
                c.body
            );
        }
        assert!(
            c.body.contains("**Failed** (TestFailed) at `4f2c9e1`"),
            "{}",
            c.body
        );
        assert!(
            c.body
                .replace('\r', "")
                .lines()
                .all(|l| !l.starts_with('/')),
            "a line GitLab would run as a quick action, fence or not:\n{}",
            c.body
        );
        assert!(
            c.body.contains("please look"),
            "the output is still shown:\n{}",
            c.body
        );
        assert!(
            !c.body.contains("@org/team"),
            "a mention survived:\n{}",
            c.body
        );
        assert!(
            c.body
                .contains(r"| e2e\|\!\[x\]\(http\:\/\/evil\) | **failed** |"),
            "the test's name stays in its cell:\n{}",
            c.body
        );
    }

    #[test]
    fn a_one_line_message_stays_on_the_phase_line_escaped() {
        let status: PreviewEnvironmentStatus = serde_json::from_value(serde_json::json!({
            "phase": "Failed", "observedSha": "4f2c9e1d8b",
            "conditions": [{"type": "Ready", "status": "False", "reason": "CrashLoopBackOff",
                            "message": "service web: [x](http://evil) @all",
                            "lastTransitionTime": "2026-11-30T10:00:00Z"}],
        }))
        .expect("status");
        let c = render("acme/shop", 7, "team-shop/shop-pr-7", &status).expect("a comment");
        assert!(
            c.body.contains(
                "**Failed** (CrashLoopBackOff: service web\\: \\[x\\]\\(http\\:\\/\\/evil\\) \\@\u{200B}all) at `4f2c9e1`"
            ),
            "{}",
            c.body
        );
    }
}
