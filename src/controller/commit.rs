//! The last step of every reconcile path (apply, failure, cleanup): pacing → status write →
//! what the change calls for (Events, comment, metrics) → the pull request brought up to date.
//! One function, so every path paces, announces and reports the same way, and the commit
//! status is derived once per reconcile.

use std::time::Duration;

use super::context::Context;
use super::error::Error;
use super::{report, writes};
use crate::api::{PreviewEnvironment, PreviewEnvironmentStatus};

/// What the commit step did that decides when to look again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// The status write waits this long for more to write with it (pacing).
    pub held: Option<Duration>,
    /// The pull request does not show the status's verdict yet.
    pub pr_behind: bool,
}

/// Writes `status` of `pe` (whose UID is `uid`) unless pacing holds it, sends what its change
/// calls for, and posts the commit status it calls for unless the pull request shows it.
pub async fn commit(
    ctx: &Context,
    pe: &PreviewEnvironment,
    uid: &str,
    status: PreviewEnvironmentStatus,
) -> Result<Committed, Error> {
    let held = ctx.writes.hold(uid, pe.status.as_ref(), &status);
    let mut transition = None;
    if held.is_none() {
        transition = writes::write_status(&ctx.client, &ctx.writes, pe, status.clone()).await?;
    }
    if let Some(transition) = &transition {
        report::publish(ctx, pe, transition);
    }
    // From the status computed now, written or held: a held write is progress within a
    // phase, which the commit status does not show anyway (a verdict is never held).
    let pr_behind = report::sync_pull_request(ctx, pe, &status);
    Ok(Committed { held, pr_behind })
}
