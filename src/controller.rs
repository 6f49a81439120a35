//! The PreviewEnvironment controller: the reconcile driver, its error policy, and the loop
//! that runs it.
//!
//! `reconcile` is kube's `finalizer()` over two steps: [`apply`] and `teardown::cleanup`.
//! `apply` reads as a table of contents: plan (template, class) → expiry → admission (policy,
//! namespace, queue) → roll out (copies, observe, the fleet's turn for a class or template
//! change, children up to the stage the dependencies and setup allow, setup and test Jobs) →
//! status (with `UpToDate`) → commit (pacing, write, Events, pull request) → requeue; each
//! step lives in the
//! module named after it. Children live in the preview namespace, not next to their
//! PreviewEnvironment, so ownership is by label and the `preview.dev/owner` annotation
//! (`children` maps child events back to their owner through it).

pub mod admission;
pub mod applied;
pub mod apply;
pub mod build;
pub mod cached;
pub mod children;
pub mod classes;
pub mod cluster_ips;
pub mod commit;
pub mod context;
pub mod copies;
pub mod costs;
pub mod delivered;
pub mod error;
pub mod events;
pub mod fleet;
pub mod gate;
pub mod jobs;
pub mod lifetime;
pub mod limits;
pub mod logs;
pub mod namespace;
pub mod observe;
pub mod plan;
pub mod pods;
pub mod policy;
pub mod queue;
pub mod report;
pub mod resync;
pub mod rollouts;
pub mod secrets;
pub mod sleep;
pub mod slim;
pub mod sources;
pub mod status;
pub mod store;
pub mod teardown;
pub mod writes;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::api::{Phase, PreviewEnvironment, Reason};
use crate::naming::WAKE_REQUEST;
use crate::sync::lock;
use build::{Preview, Stage};
pub use context::Context;
pub use error::Error;
use plan::Plan;
use rollouts::Fleet;
use secrets::Copied;
use status::{Gate, Observed};
pub use writes::FINALIZER;

/// How often teardown checks whether the namespace is gone. The namespace watch says so
/// first (its deletion wakes the preview); this only covers a missed event. Short requeues
/// cost a thousand previews being torn down thousands of reconciles while the namespace
/// controller works through their namespaces.
const TEARDOWN_REQUEUE: Duration = Duration::from_secs(15);
/// Trailing debounce of reconcile requests per preview.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// How soon a preview is looked at again while its pull request lags behind its status.
const PR_BEHIND_REQUEUE: Duration = Duration::from_secs(10);
/// Longest a reconcile waits for the caches to be filled before it comes back later.
const SYNC_WAIT: Duration = Duration::from_secs(5);
/// Longest wait between two reconciles of a healthy preview (besides its expiry).
const IDLE_REQUEUE: Duration = Duration::from_secs(3600);

/// Reconciles one PreviewEnvironment.
pub async fn reconcile(pe: Arc<PreviewEnvironment>, ctx: Arc<Context>) -> Result<Action, Error> {
    // Never act on half-filled caches; but do not wait forever either, so a shutdown is not
    // held up by reconciles waiting for caches that cannot fill (the watches say why).
    let mut synced = ctx.synced.clone();
    let synced = tokio::time::timeout(SYNC_WAIT, synced.wait_for(|s| *s))
        .await
        .is_ok_and(|r| r.is_ok());
    if !synced {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let namespace = pe
        .namespace()
        .ok_or_else(|| Error::Incomplete(pe.name_any(), "namespace"))?;
    if ctx.writes.cache_is_behind(&pe) {
        // The event that shows our write is on its way; status-only changes wake nothing
        // (see children::watch), so come back for it.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let api: Api<PreviewEnvironment> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = ObjectRef::from_obj(pe.as_ref());
    let pe = writes::add_finalizer(&ctx.writes, &api, pe).await?;
    let result = finalizer(&api, FINALIZER, pe, |event| async {
        match event {
            Finalizer::Apply(pe) => apply(&pe, &ctx).await,
            Finalizer::Cleanup(pe) => teardown::cleanup(&pe, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        lock(&ctx.failures).remove(&key);
    }
    result
}

/// Brings a live preview towards its spec, one named step at a time.
async fn apply(pe: &PreviewEnvironment, ctx: &Context) -> Result<Action, Error> {
    let snapshot = admission::snapshot(ctx, pe);
    let plan = plan::plan(pe, &snapshot)
        .map_err(|_| Error::Incomplete(pe.name_any(), "namespace or uid"))?;
    // Only a preview that could run holds a place in the concurrency queue.
    (ctx.queue).note(&plan.owner.uid, plan.could_run(), &ctx.stores.previews);
    if plan.lifetime.expired(plan.now) {
        return teardown::expire(ctx, pe, &plan.owner, &plan.lifetime).await;
    }
    let mut gate = match &plan.gate {
        Some(closed) => closed.clone(),
        None => {
            let preview = plan.preview();
            admission::admit(ctx, pe, &preview, &plan.policy.config).await?
        }
    };
    // Only a preview that runs can sleep.
    let sleep = if gate.is_open() {
        plan.sleep.state
    } else {
        sleep::State::Awake
    };
    if let (sleep::State::Asleep { since, .. }, true) = (sleep, plan.sleep.delete) {
        let slept = plan.now.duration_since(since).unsigned_abs();
        return teardown::slept_too_long(ctx, pe, &plan.owner, slept).await;
    }
    let mut preview = plan.preview();
    preview.asleep = sleep != sleep::State::Awake;
    let mut observed = Observed::nothing(&pe.spec);
    let mut fleet = None;
    let mut services_wait = false;
    if gate.is_open() {
        match roll_out(ctx, &plan, &preview).await {
            Ok(Rollout::Done(children, rolling, held)) => {
                observed = children;
                fleet = Some(rolling);
                services_wait = held;
            }
            Ok(Rollout::Closed(closed)) => gate = closed,
            // The team namespace's first list wakes the preview: nothing to say yet.
            Ok(Rollout::Waiting) => return Ok(Action::requeue(Duration::from_secs(2))),
            Err(error) => return fail(ctx, &plan, error).await,
        }
    }
    if gate.is_open() {
        ctx.costs
            .record(&preview, &plan.policy.config, sleep == sleep::State::Awake);
    }
    let mut status_ctx = status_context(&plan, &preview, gate.clone(), sleep);
    if let Some(fleet) = fleet.filter(|_| sleep == sleep::State::Awake) {
        status_ctx.fleet = fleet::status(ctx, &plan, &fleet, &observed);
    }
    let status = status::compute(&status_ctx, &observed);
    let phase = status.phase;
    let committed = commit::commit(ctx, pe, &plan.owner.uid, status).await?;
    let mut next = requeue_after(&gate, phase, committed.held, plan.lifetime.left(plan.now));
    // Falling asleep, a window's edge, deleting a long sleeper: no event says when.
    if let Some(at) = plan.sleep.next.filter(|_| gate.is_open()) {
        let until = at.duration_since(plan.now).unsigned_abs();
        next = next.min(until + Duration::from_millis(500));
    }
    // Due to sleep but busy until this verdict: the status just written lets it sleep, and a
    // status change wakes no reconcile, so look again at once (not at the window's end).
    if plan.sleep.held && gate.is_open() && matches!(phase, Some(Phase::Ready | Phase::Failed)) {
        next = next.min(Duration::from_secs(1));
    }
    // Woken when a turn ends; this only bounds how long a lost wake-up could leave it waiting.
    if services_wait {
        next = next.min(cluster_ips::RETRY);
    }
    // A pull request that does not show the preview's state yet is looked at again soon.
    Ok(Action::requeue(if committed.pr_behind {
        next.min(PR_BEHIND_REQUEUE)
    } else {
        next
    }))
}

/// How far one pass of the rollout got.
enum Rollout {
    /// Applied what the stage allows; what the caches showed before, where the preview
    /// stands with the changes of its class and template, and whether new Services wait
    /// for a turn (`cluster_ips`).
    Done(Observed, Box<Fleet>, bool),
    /// Something the developer or the platform team must fix first.
    Closed(Gate),
    /// A team namespace's Secrets are not listed yet.
    Waiting,
}

/// Copies, then children up to the stage the observed ones allow (dependencies → setup →
/// services), then the setup and test Jobs that are due.
async fn roll_out(ctx: &Context, plan: &Plan<'_>, preview: &Preview<'_>) -> Result<Rollout, Error> {
    let copies = match secrets::wanted(ctx, preview, &plan.rendered, &plan.policy.config).await? {
        Copied::Ready(copies) => copies,
        Copied::Closed(gate) => return Ok(keep_running(ctx, plan, preview, gate).await),
        Copied::Waiting => return Ok(Rollout::Waiting),
    };
    let config = secrets::without_missing(&plan.policy.config, &copies.missing);
    let logs = read_logs(ctx, preview).await;
    let children = observe::children(&ctx.stores, preview, &logs);
    // Asleep, every workload is kept at zero replicas, whatever stage it had reached.
    let stage = if preview.asleep {
        Stage::Services
    } else {
        children.observed.stage()
    };
    let mut env = build::environment(preview, &config, stage);
    // Flux impersonates the applier: a release applied before its ServiceAccount and
    // RoleBinding are in place fails for good (it is not retried), so it waits for them.
    if !env.delivery.is_empty() && !apply::applier_in_place(&ctx.stores, preview) {
        env.delivery.hold();
    }
    if let Some(conflict) = apply::host_conflict(&ctx.stores.ingresses, &env) {
        return Ok(Rollout::Closed(Gate::HostConflict(conflict)));
    }
    let missing = (copies.missing.iter())
        .map(|name| format!("{}/{name}", ctx.platform_namespace))
        .collect();
    let mut fleet = fleet::of(ctx, plan, missing);
    fleet::take_turn(ctx, plan, preview, &mut env, &mut fleet);
    let (turn, held) = cluster_ips::take_turn(ctx, plan.pe, &preview.owner.uid, &mut env);
    ctx.copies
        .sync(&ctx.client, &preview.namespace, copies)
        .await?;
    apply::environment(&ctx.client, &ctx.stores, preview, env).await?;
    // The turn ends with the creates, not with the rest of the reconcile.
    drop(turn);
    delivered::settle(ctx, preview).await?;
    if preview.asleep {
        return Ok(Rollout::Done(children.observed, Box::new(fleet), held));
    }
    let dependencies_ready = stage >= Stage::Setup;
    jobs::setup(
        ctx,
        preview,
        &config,
        &children.setup_jobs,
        dependencies_ready,
    )
    .await?;
    let available = stage == Stage::Services && children.observed.all_available();
    let tested = jobs::Tested {
        workloads: &children.tested,
        reason: fleet.cause.or_else(|| fleet::spec_changed(plan)),
    };
    jobs::tests(ctx, preview, &config, &children.jobs, available, tested).await?;
    Ok(Rollout::Done(children.observed, Box::new(fleet), held))
}

/// A template edit whose sources cannot be copied (a Secret it names is missing or not
/// readable) leaves a running preview as it runs, saying why it was not updated
/// (`UpToDate=False`); only a preview that has not settled on its own spec yet is failed for it.
async fn keep_running(
    ctx: &Context,
    plan: &Plan<'_>,
    preview: &Preview<'_>,
    gate: Gate,
) -> Rollout {
    let mut fleet = fleet::of(ctx, plan, Vec::new());
    let Gate::Blocked { reason, message } = &gate else {
        return Rollout::Closed(gate);
    };
    if fleet.cause != Some(Reason::TemplateChanged) || preview.asleep {
        return Rollout::Closed(gate);
    }
    fleet.blocked = Some((*reason, message.clone()));
    let logs = read_logs(ctx, preview).await;
    Rollout::Done(
        observe::children(&ctx.stores, preview, &logs).observed,
        Box::new(fleet),
        false,
    )
}

/// The ends of the logs of the preview's finished test and setup Jobs, by Job name: of failed
/// ones for their status message, of all with check runs to write.
async fn read_logs(
    ctx: &Context,
    preview: &Preview<'_>,
) -> BTreeMap<String, Arc<crate::testlog::TestLog>> {
    let ns = preview.namespace.as_str();
    let jobs = apply::owned(&ctx.stores.jobs, ns, &preview.owner.uid);
    let all = ctx
        .reporter(preview.spec.provider())
        .is_some_and(|g| g.poster.checks());
    ctx.logs.read(&ctx.client, ns, &jobs, all).await;
    ctx.logs.of(ns)
}

/// Says in the status why the children could not be applied, where the developer looks,
/// then fails the reconcile so it is retried with backoff.
async fn fail(ctx: &Context, plan: &Plan<'_>, error: Error) -> Result<Action, Error> {
    let preview = plan.preview();
    let status_ctx = status_context(
        plan,
        &preview,
        Gate::ApplyFailed(error.to_string()),
        sleep::State::Awake,
    );
    let status = status::compute(&status_ctx, &Observed::nothing(preview.spec));
    commit::commit(ctx, plan.pe, &plan.owner.uid, status).await?;
    Err(error)
}

/// The inputs of `status::compute` that are not observations.
fn status_context<'a>(
    plan: &'a Plan<'a>,
    preview: &Preview<'a>,
    gate: Gate,
    sleep: sleep::State,
) -> status::Context<'a> {
    let (pe, config) = (plan.pe, &plan.policy.config);
    let service_urls: BTreeMap<String, String> = preview
        .spec
        .services
        .iter()
        .filter_map(|s| build::service_url(preview, config, s).map(|u| (s.name.clone(), u)))
        .collect();
    status::Context {
        spec: preview.spec,
        generation: pe.metadata.generation,
        previous: pe.status.as_ref(),
        now: Time(plan.now),
        gate,
        namespace: preview.namespace.clone(),
        url: build::preview_url(preview, config),
        service_urls,
        sha_observed_at: Time(plan.lifetime.since),
        expires_at: plan.lifetime.expires.clone(),
        rerun_tests: preview.rerun_tests.map(str::to_string),
        class: plan.policy.class.clone(),
        fleet: None,
        scm: plan.scm.clone(),
        sleep: status::SleepStatus {
            state: sleep,
            last_active: Time(plan.last_active),
            wake_request: pe.annotations().get(WAKE_REQUEST).cloned(),
        },
    }
}

/// PURE: when to look again without an event: a queue slot, a held status write, or the
/// expiry. A rollout needs no timer: its Deployment's and stuck pods' events come to us.
pub fn requeue_after(
    gate: &Gate,
    phase: Option<Phase>,
    hold: Option<Duration>,
    until_expiry: Duration,
) -> Duration {
    let next = match (gate, phase) {
        (_, Some(Phase::Pending)) => Duration::from_secs(30),
        // Removing a foreign namespace makes no event we watch: look again now and then.
        (Gate::NamespaceConflict(_), _) => Duration::from_secs(60),
        _ => IDLE_REQUEUE,
    };
    let next = hold.map_or(next, |h| next.min(h + Duration::from_millis(50)));
    next.min(until_expiry + Duration::from_millis(500))
}

/// Retries failures with capped exponential backoff; a teardown in progress is not a failure.
pub fn error_policy(pe: Arc<PreviewEnvironment>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_waiting() {
        return Action::requeue(TEARDOWN_REQUEUE);
    }
    let attempts = {
        let mut failures = lock(&ctx.failures);
        let n = failures
            .entry(ObjectRef::from_obj(pe.as_ref()))
            .or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(attempts);
    warn!(
        namespace = pe.namespace().as_deref().unwrap_or_default(),
        name = %pe.name_any(),
        category = error.category().as_str(),
        %error,
        attempts,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// PURE: 2, 4, 8... seconds after consecutive failures, at most 256 s.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempts.min(8))).min(Duration::from_secs(300))
}

/// What the controller loop runs on.
pub struct Streams {
    /// Changed PreviewEnvironments.
    pub previews: BoxStream<'static, Result<PreviewEnvironment, watcher::Error>>,
    /// Previews whose children changed, or whose queue slot came free.
    pub triggers: BoxStream<'static, ObjectRef<PreviewEnvironment>>,
}

/// Runs the controller until shutdown (SIGTERM/SIGINT), finishing in-flight reconciles for
/// at most [`SHUTDOWN_GRACE`]. Only the leader reconciles; followers keep their caches warm.
pub async fn run(ctx: Arc<Context>, streams: Streams, workers: u16) {
    info!("controller started");
    let signal = futures::FutureExt::shared(Box::pin(shutdown_signal()));
    let synced = ctx.synced.clone();
    let controller = Controller::for_stream(streams.previews, ctx.stores.previews.clone())
        // A short trailing debounce folds the burst of child events of a rollout (each
        // replica, each status update) into one reconcile, and so one status write.
        .with_config(
            ControllerConfig::default()
                .concurrency(workers)
                .debounce(DEBOUNCE),
        )
        .reconcile_on(streams.triggers)
        .reconcile_all_on(on_leadership(ctx.leader.clone()))
        .graceful_shutdown_on(signal.clone())
        .run(reconcile_as_leader, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                debug!(%error, "controller event");
            }
        });
    // kube's controller waits for its caches before it ends, however long that takes; with
    // caches that never fill (missing permissions) a SIGTERM would be ignored until the
    // kubelet kills the pod. Nothing runs before they fill, so nothing is cut short.
    let deadline = async {
        signal.await;
        let grace = if *synced.borrow() {
            SHUTDOWN_GRACE
        } else {
            Duration::ZERO
        };
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = controller => info!("controller stopped"),
        () = deadline => warn!("controller stopped before its reconciles finished (caches not synced, or still busy after the grace period)"),
    }
}

/// Longest a shutdown waits for reconciles in flight: well within the pod's default
/// termination grace period (30 s), leaving time for Events and the lease.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the operator");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
    info!("shutdown requested");
}

/// The leader gate: followers never write; winning the lease reconciles everything
/// (`reconcile_all_on` above).
async fn reconcile_as_leader(
    pe: Arc<PreviewEnvironment>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if !*ctx.leader.borrow() {
        return Ok(Action::await_change());
    }
    let span = info_span!(
        "reconcile",
        namespace = pe.namespace().as_deref().unwrap_or_default(),
        name = %pe.name_any()
    );
    let start = std::time::Instant::now();
    let result = reconcile(pe, ctx.clone()).instrument(span).await;
    // Waiting for a namespace to go is not a failure.
    let category = result
        .as_ref()
        .err()
        .filter(|e| !e.is_waiting())
        .map(|e| e.category());
    ctx.metrics.reconciled(start.elapsed(), category);
    result
}

/// Yields once every time `leader` turns true.
fn on_leadership(leader: watch::Receiver<bool>) -> impl Stream<Item = ()> + Send {
    futures::stream::unfold(leader, |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            if *rx.borrow_and_update() {
                return Some(((), rx));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_preview_is_looked_at_again_and_a_healthy_one_at_its_expiry() {
        let hour = Duration::from_secs(3600);
        let queued = Gate::ConcurrencyLimit {
            limit: 1,
            position: 1,
            scope: "in this namespace".into(),
            held_by: "team-shop/pr-1".into(),
        };
        assert_eq!(
            requeue_after(&queued, Some(Phase::Pending), None, hour),
            Duration::from_secs(30)
        );
        let conflict = Gate::NamespaceConflict("taken".into());
        assert_eq!(
            requeue_after(&conflict, Some(Phase::Failed), None, hour),
            Duration::from_secs(60)
        );
        assert_eq!(
            requeue_after(
                &Gate::Open,
                Some(Phase::Ready),
                None,
                Duration::from_secs(10)
            ),
            Duration::from_millis(10_500),
            "just after the expiry"
        );
        assert_eq!(
            requeue_after(
                &Gate::Open,
                Some(Phase::Deploying),
                Some(Duration::from_secs(1)),
                hour
            ),
            Duration::from_millis(1_050),
            "a held status write comes back when it may be written"
        );
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(8), Duration::from_secs(256));
        assert_eq!(backoff(40), Duration::from_secs(256));
    }

    /// The size of the future `F` makes.
    fn future_size<F, Fut>(_: &F) -> usize
    where
        F: Fn(Arc<PreviewEnvironment>, Arc<Context>) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every reconcile in flight (16 by default) is a task of this size, whatever step it
    /// waits in: a rare step awaited in place makes them all as large (deleting extra
    /// children once made it 42 KB; see `apply::sync`).
    #[test]
    fn a_reconcile_in_flight_stays_small() {
        let size = future_size(&reconcile);
        assert!(size < 20 * 1024, "a reconcile's future is {size} bytes");
    }
}
