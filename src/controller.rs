//! The PreviewEnvironment controller: watches, the reconcile driver and its error policy.
//!
//! `reconcile` is kube's `finalizer()` over two steps: `apply` (observe → build → apply →
//! status) and `cleanup` (teardown). Children live in the preview namespace, not next to
//! their PreviewEnvironment, so ownership is by label and the `preview.dev/owner` annotation,
//! and watches map child events back to their owner through it.

pub mod apply;
pub mod build;
pub mod events;
pub mod pods;
pub mod status;
pub mod teardown;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::try_join_all;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, Pod, ResourceQuota, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::api::{Phase, PreviewEnvironment, PreviewEnvironmentStatus, TestPhase};
use crate::config::Config;
use crate::github::{self, StatusSender};
use crate::metrics::Metrics;
use crate::naming::{self, OWNER_UID, Owner, SHA, preview_namespace};
use apply::{ApplyError, MANAGER};
use build::{OWNER_REF, Preview};
use status::{Gate, Observed};
use teardown::Gone;

/// Finalizer that holds a PreviewEnvironment until its namespace is gone.
pub const FINALIZER: &str = "preview.dev/teardown";

/// How often teardown checks whether the namespace is gone (watches usually come first).
const TEARDOWN_REQUEUE: Duration = Duration::from_secs(3);
/// Trailing debounce of reconcile requests per preview.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Shortest time between two status writes of one preview that only report progress.
const STATUS_COALESCE: Duration = Duration::from_secs(2);
/// Longest wait between two reconciles of a healthy preview (besides its expiry).
const IDLE_REQUEUE: Duration = Duration::from_secs(3600);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Apply(Box<ApplyError>),
    #[error("failed to create namespace {name}: {source}")]
    CreateNamespace {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to read {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to write the status of {name}: {source}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to delete expired preview {name}: {source}")]
    Expire {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to delete namespace {name}: {source}")]
    DeleteNamespace {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to add the finalizer to {name}: {source}")]
    AddFinalizer {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("waiting for namespace {0} to be deleted")]
    TeardownInProgress(String),
    #[error("{0} has no {1}")]
    Incomplete(String, &'static str),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl From<ApplyError> for Error {
    fn from(e: ApplyError) -> Self {
        Error::Apply(Box::new(e))
    }
}

impl Error {
    /// A fixed label per variant, for logs and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Apply(_) => "apply",
            Error::CreateNamespace { .. } => "create_namespace",
            Error::Read { .. } => "read",
            Error::Status { .. } => "status",
            Error::Expire { .. } => "expire",
            Error::DeleteNamespace { .. } => "delete_namespace",
            Error::AddFinalizer { .. } => "add_finalizer",
            Error::TeardownInProgress(_) => "teardown_in_progress",
            Error::Incomplete(..) => "incomplete",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => "finalizer",
            },
        }
    }

    fn is_waiting(&self) -> bool {
        self.category() == "teardown_in_progress"
    }
}

/// Caches of everything the operator manages, filled by the controller's watches.
#[derive(Clone)]
pub struct Stores {
    pub previews: Store<PreviewEnvironment>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub deployments: Store<Deployment>,
    pub jobs: Store<Job>,
    /// Pods with a stuck container (only those).
    pub stuck_pods: pods::StuckPods,
    pub services: Store<PartialObjectMeta<Service>>,
    pub ingresses: Store<PartialObjectMeta<Ingress>>,
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    pub quotas: Store<PartialObjectMeta<ResourceQuota>>,
    pub limit_ranges: Store<PartialObjectMeta<LimitRange>>,
}

impl Stores {
    /// Waits until every cache holds its initial list.
    async fn ready(&self) -> bool {
        store_ready(&self.previews).await
            && store_ready(&self.namespaces).await
            && store_ready(&self.deployments).await
            && store_ready(&self.jobs).await
            && self.stuck_pods.wait_until_ready().await
            && store_ready(&self.services).await
            && store_ready(&self.ingresses).await
            && store_ready(&self.network_policies).await
            && store_ready(&self.quotas).await
            && store_ready(&self.limit_ranges).await
    }
}

/// Waits for one cache to be filled. A store's readiness wakes only the task that polled it
/// last (the controller polls the preview store itself), so poll again now and then instead
/// of waiting for a wake-up that may go to someone else.
async fn store_ready<K>(store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
            Ok(result) => return result.is_ok(),
            Err(_elapsed) => continue,
        }
    }
}

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub config: Config,
    pub stores: Stores,
    events: events::Events,
    /// Previews admitted under the concurrency limit whose namespace may not be cached yet.
    admitted: Mutex<HashSet<String>>,
    /// Serialises concurrency decisions, so two reconciles cannot both take the last slot.
    admission: tokio::sync::Mutex<()>,
    /// This process's last write to each preview (by UID): when, and the resourceVersion it
    /// produced. Used to coalesce progress-only status changes and to wait for the cache to
    /// catch up with our own write instead of acting on (and writing over) an older copy.
    written: Mutex<HashMap<String, Written>>,
    /// Consecutive failures per preview, for capped exponential backoff.
    failures: Mutex<HashMap<ObjectRef<PreviewEnvironment>, u32>>,
    /// Wakes previews waiting for a concurrency slot.
    wake: mpsc::UnboundedSender<ObjectRef<PreviewEnvironment>>,
    /// True once every cache is filled; reconciles wait for it so that they never mistake an
    /// empty cache for missing children.
    pub synced: watch::Receiver<bool>,
    /// True while this process holds the leader lease; only the leader writes.
    pub leader: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    github: Option<StatusSender>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these small maps cannot leave them inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn owner_of(pe: &PreviewEnvironment) -> Result<Owner, Error> {
    let name = pe.name_any();
    Ok(Owner {
        namespace: pe
            .namespace()
            .ok_or_else(|| Error::Incomplete(name.clone(), "namespace"))?,
        uid: pe
            .uid()
            .ok_or_else(|| Error::Incomplete(name.clone(), "uid"))?,
        name,
        repository: pe.spec.repository.clone(),
        pull_request: pe.spec.pull_request,
    })
}

/// Maps a child to its owning PreviewEnvironment through the owner annotation.
fn owner_ref<K: Resource>(child: &K) -> Option<ObjectRef<PreviewEnvironment>> {
    let (ns, name) = child
        .meta()
        .annotations
        .as_ref()?
        .get(OWNER_REF)?
        .split_once('/')?;
    Some(ObjectRef::new(name).within(ns))
}

/// Reconciles one PreviewEnvironment.
pub async fn reconcile(pe: Arc<PreviewEnvironment>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ctx.synced.clone().wait_for(|s| *s).await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let namespace = pe
        .namespace()
        .ok_or_else(|| Error::Incomplete(pe.name_any(), "namespace"))?;
    let api: Api<PreviewEnvironment> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = ObjectRef::from_obj(pe.as_ref());
    if cache_is_behind(&ctx, &pe) {
        // The event that shows our write is on its way; status-only changes wake nothing
        // (see run), so come back for it.
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let pe = with_finalizer(&ctx, &api, pe).await?;
    let result = finalizer(&api, FINALIZER, pe, |event| async {
        match event {
            Finalizer::Apply(pe) => apply_preview(&pe, &ctx).await,
            Finalizer::Cleanup(pe) => cleanup(&pe, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        lock(&ctx.failures).remove(&key);
    }
    result
}

/// Adds the finalizer to a new preview and goes on with the patched object. kube's
/// `finalizer()` would add it and stop, leaving the real work to the next reconcile that the
/// patch triggers: one more watch round trip, debounce and queue wait for every new preview.
async fn with_finalizer(
    ctx: &Context,
    api: &Api<PreviewEnvironment>,
    pe: Arc<PreviewEnvironment>,
) -> Result<Arc<PreviewEnvironment>, Error> {
    if pe.metadata.deletion_timestamp.is_some() || pe.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(pe);
    }
    let mut finalizers = pe.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    // The resourceVersion makes the merge patch conditional: if someone else changed the
    // finalizers meanwhile, it fails with a conflict instead of overwriting theirs.
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": pe.resource_version(),
            "finalizers": finalizers,
        }
    });
    let mut patched = api
        .patch(
            &pe.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| Error::AddFinalizer {
            name: pe.name_any(),
            source,
        })?;
    patched.managed_fields_mut().clear();
    record_write(ctx, &patched, false);
    Ok(Arc::new(patched))
}

/// Retries failures with capped exponential backoff; a teardown in progress is not a failure.
pub fn error_policy(pe: Arc<PreviewEnvironment>, error: &Error, ctx: Arc<Context>) -> Action {
    if error.is_waiting() {
        return Action::requeue(TEARDOWN_REQUEUE);
    }
    let key = ObjectRef::from_obj(pe.as_ref());
    let attempts = {
        let mut failures = lock(&ctx.failures);
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay =
        Duration::from_secs(2u64.saturating_pow(attempts.min(8))).min(Duration::from_secs(300));
    warn!(
        namespace = pe.namespace().as_deref().unwrap_or_default(),
        name = %pe.name_any(),
        category = error.category(),
        %error,
        attempts,
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// Decides whether a preview that is not running yet may start under the tenant's limit.
async fn concurrency_gate(pe: &PreviewEnvironment, ctx: &Context, running_ns: bool) -> Gate {
    let limit = ctx.config.max_previews_per_namespace;
    let uid = pe.uid().unwrap_or_default();
    if limit == 0 || running_ns || lock(&ctx.admitted).contains(&uid) {
        return Gate::Open;
    }
    let _serialised = ctx.admission.lock().await;
    let tenant = pe.namespace().unwrap_or_default();
    let peers: Vec<Arc<PreviewEnvironment>> = ctx
        .stores
        .previews
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(tenant.as_str()))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let admitted = lock(&ctx.admitted).clone();
    let is_running = |p: &PreviewEnvironment| {
        let uid = p.uid().unwrap_or_default();
        admitted.contains(&uid)
            || ctx
                .stores
                .namespaces
                .state()
                .iter()
                .any(|ns| ns.labels().get(OWNER_UID) == Some(&uid))
    };
    let running = peers.iter().filter(|p| is_running(p)).count();
    let mut waiting: Vec<&Arc<PreviewEnvironment>> =
        peers.iter().filter(|p| !is_running(p)).collect();
    // Oldest first; the name breaks ties so every replica agrees on the order.
    waiting.sort_by_key(|p| {
        (
            p.metadata.creation_timestamp.clone().map(|t| t.0),
            p.name_any(),
        )
    });
    let position = waiting
        .iter()
        .position(|p| p.uid().as_deref() == Some(uid.as_str()))
        .map_or(waiting.len() + 1, |i| i + 1);
    if running + position <= limit {
        lock(&ctx.admitted).insert(uid);
        Gate::Open
    } else {
        Gate::ConcurrencyLimit {
            limit,
            position: (running + position).saturating_sub(limit),
        }
    }
}

/// Where the preview namespace stands before anything is applied.
enum NamespaceState {
    /// Ours and alive (or not there yet and free to create).
    Usable { exists: bool },
    /// Blocks the rollout, with the reason.
    Blocked(Gate),
}

async fn namespace_state(
    name: &str,
    owner: &Owner,
    ctx: &Context,
) -> Result<NamespaceState, Error> {
    // Not in the cache of managed namespaces: free, or there without our labels. Creating it
    // tells which (see ensure_namespace) without a read before every new preview.
    match ctx.stores.namespaces.get(&ObjectRef::new(name)) {
        Some(ns) => classify_namespace(name, &ns.metadata, owner, ctx).await,
        None => Ok(NamespaceState::Usable { exists: false }),
    }
}

/// Creates the preview namespace, or applies it when it exists. `Some(gate)` when it turns
/// out to be there already and not usable (foreign, or an old one being deleted).
async fn ensure_namespace(
    ctx: &Context,
    owner: &Owner,
    exists: bool,
    ns: &Namespace,
) -> Result<Option<Gate>, Error> {
    if exists {
        apply_namespace(ctx, ns.clone()).await?;
        return Ok(None);
    }
    let name = ns.name_any();
    // Create, never apply, a namespace we have not seen: apply would adopt a foreign one;
    // create fails instead.
    let created = Api::<Namespace>::all(ctx.client.clone())
        .create(
            &PostParams {
                field_manager: Some(MANAGER.to_string()),
                ..PostParams::default()
            },
            &build::stamp(ns.clone()),
        )
        .await;
    match created {
        Ok(_) => {
            info!(namespace = %name, "created preview namespace");
            Ok(None)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let live = Api::<Namespace>::all(ctx.client.clone())
                .get_metadata_opt(&name)
                .await
                .map_err(|source| Error::Read {
                    what: format!("namespace {name}"),
                    source,
                })?;
            let Some(live) = live else {
                // Gone again in between: the next attempt creates it.
                return Err(Error::CreateNamespace {
                    name,
                    source: kube::Error::Api(status),
                });
            };
            match classify_namespace(&name, &live.metadata, owner, ctx).await? {
                // Ours; the cache had not caught up with an earlier create.
                NamespaceState::Usable { .. } => {
                    apply_namespace(ctx, ns.clone()).await?;
                    Ok(None)
                }
                NamespaceState::Blocked(gate) => Ok(Some(gate)),
            }
        }
        Err(source) => Err(Error::CreateNamespace { name, source }),
    }
}

/// Whether an existing namespace of the preview's name can be used.
async fn classify_namespace(
    name: &str,
    meta: &ObjectMeta,
    owner: &Owner,
    ctx: &Context,
) -> Result<NamespaceState, Error> {
    let labels = meta.labels.clone().unwrap_or_default();
    let owned_by = labels.get(OWNER_UID);
    let managed = labels.get(naming::MANAGED_BY).map(String::as_str) == Some(naming::MANAGER);
    if owned_by == Some(&owner.uid) {
        if meta.deletion_timestamp.is_some() {
            return Ok(NamespaceState::Blocked(Gate::NamespaceTerminating(
                format!(
                    "namespace {name} is being deleted; the preview is re-created once it is gone"
                ),
            )));
        }
        return Ok(NamespaceState::Usable { exists: true });
    }
    if managed && owned_by.is_some() {
        // A namespace of an earlier PreviewEnvironment with the same name: its owner is gone
        // (two live previews cannot share namespace/name), so it is an orphan to remove.
        if meta.deletion_timestamp.is_none()
            && let Some(old_uid) = owned_by
        {
            teardown::delete_owned_namespace(&ctx.client, name, old_uid)
                .await
                .map_err(|source| Error::DeleteNamespace {
                    name: name.to_string(),
                    source,
                })?;
        }
        return Ok(NamespaceState::Blocked(Gate::NamespaceTerminating(
            format!("namespace {name} of an earlier preview with this name is being deleted"),
        )));
    }
    Ok(NamespaceState::Blocked(Gate::NamespaceConflict(format!(
        "namespace {name} already exists and is not managed by this preview; the operator never \
         adopts or changes it. Delete that namespace or rename the PreviewEnvironment"
    ))))
}

fn publish(ctx: &Context, pe: &PreviewEnvironment, kind: events::Kind, reason: &str, note: String) {
    ctx.events.send(events::Note {
        kind,
        reason: reason.to_string(),
        note,
        regarding: pe.object_ref(&()),
    });
}

async fn apply_preview(pe: &PreviewEnvironment, ctx: &Context) -> Result<Action, Error> {
    let owner = owner_of(pe)?;
    let config = &ctx.config;
    let spec = &pe.spec;
    let now = now();
    let previous = pe.status.as_ref();
    let ns_name = preview_namespace(&config.namespace_prefix, &owner.namespace, &owner.name);

    // Time to live: counts from the first sight of the current headSha.
    let (ttl, violation) = teardown::effective_ttl(spec.ttl.as_deref(), config);
    let since = teardown::sha_observed_at(previous, &spec.head_sha, now);
    let expires = teardown::expires_at(since, ttl);
    if now >= expires.0 {
        publish(
            ctx,
            pe,
            events::Kind::Normal,
            "Expired",
            format!(
                "time to live {} ran out; deleting the preview",
                teardown::humanize(ttl)
            ),
        );
        Api::<PreviewEnvironment>::namespaced(ctx.client.clone(), &owner.namespace)
            .delete(&owner.name, &DeleteParams::default())
            .await
            .map_err(|source| Error::Expire {
                name: owner.name.clone(),
                source,
            })?;
        return Ok(Action::await_change());
    }

    let preview = Preview {
        spec,
        owner: owner.clone(),
        namespace: ns_name.clone(),
    };
    let mut gate = match violation {
        Some(message) => Gate::PolicyViolation(message),
        None => Gate::Open,
    };
    let mut ns_exists = false;
    if gate == Gate::Open {
        match namespace_state(&ns_name, &owner, ctx).await? {
            NamespaceState::Usable { exists } => {
                ns_exists = exists;
                gate = concurrency_gate(pe, ctx, exists).await;
            }
            NamespaceState::Blocked(g) => gate = g,
        }
    }

    let mut observed = Observed::default();
    let deployments: Vec<Arc<Deployment>>;
    let jobs: Vec<Arc<Job>>;
    let mut environment = None;
    if gate == Gate::Open {
        let env = build::environment(&preview, config);
        match ensure_namespace(ctx, &owner, ns_exists, &env.namespace).await? {
            None => environment = Some(env),
            Some(blocked) => {
                // Not running after all: give the concurrency slot back.
                lock(&ctx.admitted).remove(&owner.uid);
                gate = blocked;
            }
        }
    }
    if let Some(env) = environment {
        if let Err(error) = apply_environment(ctx, &owner, &ns_name, env).await {
            // Say so in the status, where the developer looks, then retry with backoff.
            let status_ctx = status::Context {
                spec,
                generation: pe.metadata.generation,
                previous,
                now: Time(now),
                gate: Gate::ApplyFailed(error.to_string()),
                namespace: ns_name.clone(),
                url: None,
                service_urls: BTreeMap::new(),
                sha_observed_at: Time(since),
                expires_at: expires.clone(),
            };
            let failed = status::compute(&status_ctx, &Observed::default());
            write_status(ctx, pe, previous, failed).await?;
            return Err(error);
        }

        deployments = apply::owned(&ctx.stores.deployments, &ns_name, &owner.uid);
        for d in &deployments {
            observed.deployments.insert(d.name_any(), d.as_ref());
        }
        // The pods of a rollout in progress tell why it is stuck (CrashLoopBackOff,
        // ImagePullBackOff...). Only pods at headSha count: an old, crashing ReplicaSet that
        // the new sha replaces is not this rollout's problem.
        let pods: Vec<Arc<Pod>> = ctx
            .stores
            .stuck_pods
            .in_namespace(&ns_name)
            .into_iter()
            .filter(|p| p.annotations().get(SHA) == Some(&spec.head_sha))
            .collect();
        for svc in &spec.services {
            let state = status::service_state(
                svc,
                observed.deployments.get(&svc.name).copied(),
                &spec.head_sha,
                None,
            );
            if !matches!(state, status::ServiceState::Progressing(_)) {
                continue;
            }
            let selector = build::service_selector(&svc.name);
            let of_service = pods
                .iter()
                .map(Arc::as_ref)
                .filter(|p| selector.iter().all(|(k, v)| p.labels().get(k) == Some(v)));
            if let Some(problem) = status::pod_problem(of_service) {
                observed.pod_problems.insert(svc.name.clone(), problem);
            }
        }

        let all_available = spec.services.iter().all(|s| {
            status::service_state(
                s,
                observed.deployments.get(&s.name).copied(),
                &spec.head_sha,
                observed.pod_problems.get(&s.name),
            ) == status::ServiceState::Available
        });
        jobs = apply::owned(&ctx.stores.jobs, &ns_name, &owner.uid);
        apply_tests(ctx, &preview, &jobs, all_available).await?;
        for j in &jobs {
            if j.labels().get(SHA) == Some(&spec.head_sha)
                && j.metadata.deletion_timestamp.is_none()
                && let Some(test) = j.labels().get(naming::PART_OF)
            {
                observed.jobs.insert(test.clone(), j.as_ref());
            }
        }
    }

    let service_urls: BTreeMap<String, String> = spec
        .services
        .iter()
        .filter_map(|s| build::service_url(&preview, config, s).map(|u| (s.name.clone(), u)))
        .collect();
    let status_ctx = status::Context {
        spec,
        generation: pe.metadata.generation,
        previous,
        now: Time(now),
        gate: gate.clone(),
        namespace: ns_name.clone(),
        url: build::preview_url(&preview, config),
        service_urls,
        sha_observed_at: Time(since),
        expires_at: expires.clone(),
    };
    let new_status = status::compute(&status_ctx, &observed);
    // Progress within a state (a replica ready, a test's Job started) is written at most once
    // per STATUS_COALESCE: a rollout's steps then cost one write, not one each.
    let hold = previous
        .filter(|p| status::progress_only(p, &new_status))
        .and_then(|_| since_last_status_write(ctx, &owner.uid))
        .and_then(|elapsed| STATUS_COALESCE.checked_sub(elapsed));
    if hold.is_none() {
        write_status(ctx, pe, previous, new_status.clone()).await?;
    }

    // Come back when something can change without an event: a queue slot or the expiry. A
    // rollout needs no timer: its Deployment's and stuck pods' events come to us.
    let until_expiry = expires.0.duration_since(now).unsigned_abs();
    let next = match (&gate, new_status.phase) {
        (_, Some(Phase::Pending)) => Duration::from_secs(30),
        // Removing a foreign namespace makes no event we watch: look again now and then.
        (Gate::NamespaceConflict(_), _) => Duration::from_secs(60),
        _ => IDLE_REQUEUE,
    };
    let next = hold.map_or(next, |h| next.min(h + Duration::from_millis(50)));
    Ok(Action::requeue(
        next.min(until_expiry + Duration::from_millis(500)),
    ))
}

fn since_last_status_write(ctx: &Context, uid: &str) -> Option<Duration> {
    lock(&ctx.written)
        .get(uid)
        .and_then(|w| w.status_at)
        .map(|at| at.elapsed())
}

/// See [`Context::written`].
#[derive(Clone, Debug, Default)]
struct Written {
    at: Option<std::time::Instant>,
    status_at: Option<std::time::Instant>,
    resource_version: Option<String>,
}

/// How long a reconcile waits for the cache to show this process's own last write before it
/// assumes someone else wrote after it and goes on with what the cache holds.
const OWN_WRITE_VISIBLE_WITHIN: Duration = Duration::from_secs(2);

/// Records a write to `pe` that produced `written` (the object the API server returned).
fn record_write(ctx: &Context, written: &PreviewEnvironment, status: bool) {
    let Some(uid) = written.uid() else {
        return;
    };
    let now = std::time::Instant::now();
    let mut map = lock(&ctx.written);
    let entry = map.entry(uid).or_default();
    entry.at = Some(now);
    entry.resource_version = written.resource_version();
    if status {
        entry.status_at = Some(now);
    }
}

/// Whether the cached `pe` is older than this process's own last write to it: then acting on
/// it would redo (and re-announce) what was just done, or fail on a stale resourceVersion.
fn cache_is_behind(ctx: &Context, pe: &PreviewEnvironment) -> bool {
    if pe.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let Some(uid) = pe.uid() else {
        return false;
    };
    lock(&ctx.written).get(&uid).is_some_and(|w| {
        w.resource_version.is_some()
            && w.resource_version != pe.resource_version()
            && w.at
                .is_some_and(|at| at.elapsed() < OWN_WRITE_VISIBLE_WITHIN)
    })
}

async fn apply_namespace(ctx: &Context, ns: Namespace) -> Result<(), Error> {
    let ns = build::stamp(ns);
    let name = ns.name_any();
    let want = ns.annotations().get(build::APPLIED_HASH).cloned();
    if want.is_some() && apply::cached_hash(&ctx.stores.namespaces, None, &name) == want {
        return Ok(());
    }
    Api::<Namespace>::all(ctx.client.clone())
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&ns),
        )
        .await
        .map_err(|source| {
            Error::from(ApplyError::Apply {
                kind: "Namespace".into(),
                namespace: String::new(),
                name: name.clone(),
                source,
            })
        })?;
    Ok(())
}

fn names<K: Resource>(objects: &[K]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| o.meta().name.clone().unwrap_or_default())
        .collect()
}

async fn apply_environment(
    ctx: &Context,
    owner: &Owner,
    ns: &str,
    env: build::Environment,
) -> Result<(), Error> {
    let s = &ctx.stores;
    let c = &ctx.client;
    // Destructured without `..`: a new kind of child does not compile until it is applied.
    let build::Environment {
        namespace: _,
        network_policy,
        quota,
        limit_range,
        deployments,
        services,
        ingresses,
    } = env;
    let (keep_d, keep_s, keep_i) = (names(&deployments), names(&services), names(&ingresses));
    // The children are independent: apply them concurrently, so a new preview costs one round
    // trip to the API server instead of one per object.
    futures::try_join!(
        apply::apply(c, &s.network_policies, network_policy),
        apply::apply(c, &s.quotas, quota),
        apply::apply(c, &s.limit_ranges, limit_range),
        try_join_all(
            deployments
                .into_iter()
                .map(|d| apply::apply(c, &s.deployments, d))
        ),
        try_join_all(
            services
                .into_iter()
                .map(|svc| apply::apply(c, &s.services, svc))
        ),
        try_join_all(
            ingresses
                .into_iter()
                .map(|i| apply::apply(c, &s.ingresses, i))
        ),
    )?;
    apply::delete_extras::<Ingress, _>(c, &s.ingresses, ns, &owner.uid, &keep_i).await?;
    apply::delete_extras::<Service, _>(c, &s.services, ns, &owner.uid, &keep_s).await?;
    apply::delete_extras::<Deployment, _>(c, &s.deployments, ns, &owner.uid, &keep_d).await?;
    Ok(())
}

/// Creates the test Jobs of the current headSha once every service is available, and removes
/// Jobs of older shas or of tests no longer in the spec.
async fn apply_tests(
    ctx: &Context,
    preview: &Preview<'_>,
    jobs: &[Arc<Job>],
    all_available: bool,
) -> Result<(), Error> {
    let spec = preview.spec;
    let ns = &preview.namespace;
    let wanted: BTreeMap<String, Job> = spec
        .tests
        .iter()
        .map(|t| {
            let job = build::stamp(build::test_job(preview, &ctx.config, t));
            (job.name_any(), job)
        })
        .collect();
    for job in jobs {
        if job.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = job.name_any();
        let stale = match wanted.get(&name) {
            None => true,
            // A Job's template is immutable: a test edited without a new sha runs again.
            Some(w) => {
                w.annotations().get(build::APPLIED_HASH)
                    != job.annotations().get(build::APPLIED_HASH)
            }
        };
        if stale {
            apply::delete::<Job>(&ctx.client, ns, &name, &DeleteParams::background()).await?;
        }
    }
    if !all_available {
        return Ok(());
    }
    let existing: BTreeSet<String> = jobs.iter().map(|j| j.name_any()).collect();
    for (name, job) in wanted {
        if existing.contains(&name) {
            continue;
        }
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
        match api
            .create(
                &PostParams {
                    field_manager: Some(MANAGER.to_string()),
                    ..PostParams::default()
                },
                &job,
            )
            .await
        {
            Ok(_) => {}
            // Already there: the cache has not caught up with an earlier create.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(source) => {
                return Err(Error::from(ApplyError::Apply {
                    kind: "Job".into(),
                    namespace: ns.clone(),
                    name,
                    source,
                }));
            }
        }
    }
    Ok(())
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct StatusPatch<'a> {
    api_version: &'static str,
    kind: &'static str,
    status: &'a PreviewEnvironmentStatus,
}

async fn write_status(
    ctx: &Context,
    pe: &PreviewEnvironment,
    previous: Option<&PreviewEnvironmentStatus>,
    status: PreviewEnvironmentStatus,
) -> Result<(), Error> {
    if previous == Some(&status) {
        return Ok(());
    }
    let name = pe.name_any();
    let api: Api<PreviewEnvironment> =
        Api::namespaced(ctx.client.clone(), &pe.namespace().unwrap_or_default());
    let patch = StatusPatch {
        api_version: "preview.dev/v1alpha1",
        kind: "PreviewEnvironment",
        status: &status,
    };
    let written = api
        .patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| Error::Status {
            name: name.clone(),
            source,
        })?;
    record_write(ctx, &written, true);
    let was_ready = previous.and_then(|p| p.phase) == Some(Phase::Ready);
    if status.phase == Some(Phase::Ready)
        && !was_ready
        && let Some(since) = &status.sha_observed_at
    {
        ctx.metrics
            .ready_after(now().duration_since(since.0).unsigned_abs());
    }
    // The pull request hears of real changes only: the commit status derived from the new
    // status, when it differs from the one derived from the old.
    if let Some(sender) = &ctx.github {
        let next = github::commit_status(&pe.spec.repository, &name, &status);
        let before = previous.and_then(|p| github::commit_status(&pe.spec.repository, &name, p));
        if let Some(next) = next.filter(|n| Some(n) != before.as_ref()) {
            sender.send(next);
        }
    }
    announce(ctx, pe, previous, &status);
    Ok(())
}

/// One Event per transition a developer cares about.
fn announce(
    ctx: &Context,
    pe: &PreviewEnvironment,
    previous: Option<&PreviewEnvironmentStatus>,
    status: &PreviewEnvironmentStatus,
) {
    let old_phase = previous.and_then(|p| p.phase);
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let old_reason = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.reason.clone());
    // A preview that reaches Ready or Failed says so with the reason (TestFailed...) and the
    // tests' summary; the results that ended it are in that one Event, not one more each.
    let mut results_told = false;
    if let (Some(phase), Some(ready)) = (status.phase, ready)
        && (old_phase != Some(phase) || old_reason.as_deref() != Some(ready.reason.as_str()))
    {
        let ends = phase == Phase::Ready || phase == Phase::Failed;
        let kind = if phase == Phase::Failed {
            events::Kind::Warning
        } else {
            events::Kind::Normal
        };
        let reason = if ends {
            ready.reason.clone()
        } else {
            phase.as_str().to_string()
        };
        publish(
            ctx,
            pe,
            kind,
            &reason,
            format!("{}: {}", phase.as_str(), ready.message),
        );
        results_told = ends;
    }
    for t in &status.tests {
        let before = previous
            .and_then(|p| p.tests.iter().find(|o| o.name == t.name && o.sha == t.sha))
            .map(|o| o.phase);
        if before == Some(t.phase) || !matches!(t.phase, TestPhase::Succeeded | TestPhase::Failed) {
            continue;
        }
        let took = match (&t.started_at, &t.finished_at) {
            (Some(start), Some(end)) => Some(end.0.duration_since(start.0).unsigned_abs()),
            _ => None,
        };
        ctx.metrics
            .test_finished(t.phase == TestPhase::Succeeded, took);
        if results_told {
            continue;
        }
        let (kind, reason) = if t.phase == TestPhase::Succeeded {
            (events::Kind::Normal, "TestSucceeded")
        } else {
            (events::Kind::Warning, "TestFailed")
        };
        let note = t
            .message
            .clone()
            .unwrap_or_else(|| format!("test {} passed at {}", t.name, t.sha));
        publish(ctx, pe, kind, reason, note);
    }
}

async fn cleanup(pe: &PreviewEnvironment, ctx: &Context) -> Result<Action, Error> {
    let owner = owner_of(pe)?;
    let ns_name = preview_namespace(&ctx.config.namespace_prefix, &owner.namespace, &owner.name);
    lock(&ctx.admitted).remove(&owner.uid);
    // The slot this preview held is free: wake the queue of its tenant.
    for waiting in teardown::waiting_in(&ctx.stores.previews, &owner.namespace) {
        let _ = ctx.wake.send(waiting);
    }
    if pe.status.as_ref().and_then(|s| s.phase) != Some(Phase::Terminating) {
        let mut status = pe.status.clone().unwrap_or_default();
        status.phase = Some(Phase::Terminating);
        write_status(ctx, pe, pe.status.as_ref(), status).await?;
    }
    match teardown::delete_owned_namespace(&ctx.client, &ns_name, &owner.uid)
        .await
        .map_err(|source| Error::DeleteNamespace {
            name: ns_name.clone(),
            source,
        })? {
        Gone::Yes | Gone::NotOurs => {
            lock(&ctx.written).remove(&owner.uid);
            if let Some(deleted) = &pe.metadata.deletion_timestamp {
                ctx.metrics
                    .torn_down(now().duration_since(deleted.0).unsigned_abs());
            }
            info!(namespace = %owner.namespace, name = %owner.name, preview_namespace = %ns_name, "torn down");
            Ok(Action::await_change())
        }
        Gone::Deleting => Err(Error::TeardownInProgress(ns_name)),
    }
}

/// Watch configuration for everything the operator manages.
fn managed() -> watcher::Config {
    watcher::Config::default()
        .labels(&naming::managed_selector())
        .any_semantic()
}

/// The labels of cached children that the operator reads; the others (repository, pull
/// request, Pod Security...) are dropped as objects arrive, at 1000 previews a few MiB.
const CACHED_LABELS: [&str; 5] = [
    naming::MANAGED_BY,
    naming::OWNER_UID,
    naming::OWNER_NAMESPACE,
    naming::PART_OF,
    SHA,
];
/// The annotations of cached children that the operator reads.
const CACHED_ANNOTATIONS: [&str; 2] = [OWNER_REF, build::APPLIED_HASH];

/// A cached watch of one child kind that also triggers the owner. For `PartialObjectMeta<K>`
/// it asks for metadata only (kube picks metadata requests for that type), which is all most
/// kinds need; Deployments and Jobs are cached whole because their status is read.
fn cached_stream<K>(
    client: &Client,
    prune: fn(&mut K),
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), managed()).modify(move |o| {
            // Managed fields are most of an object's metadata and never read here.
            o.managed_fields_mut().clear();
            o.labels_mut()
                .retain(|k, _| CACHED_LABELS.contains(&k.as_str()));
            o.annotations_mut()
                .retain(|k, _| CACHED_ANNOTATIONS.contains(&k.as_str()));
            prune(o);
        }),
    )
    .default_backoff()
    .touched_objects();
    (reader, stream)
}

use kube::runtime::reflector::reflector;

/// Keeps nothing extra.
fn keep_all<K>(_: &mut K) {}

/// The cache needs a Deployment's metadata, status and pod-template annotations (the sha), not
/// the pod spec, which is most of its size: at 1000 previews this is most of the memory.
fn prune_deployment(d: &mut Deployment) {
    if let Some(spec) = d.spec.as_mut() {
        spec.template.spec = None;
    }
}

/// A Job is read for its labels, annotations and status only.
fn prune_job(j: &mut Job) {
    j.spec = None;
}

/// How to run the controller.
pub struct Options {
    pub workers: u16,
    pub sweep_interval: Duration,
    /// Unique name of this process, for Events.
    pub instance: String,
    /// Label selector limiting which PreviewEnvironments this process reconciles.
    pub selector: Option<String>,
    /// Where commit statuses go, when a GitHub token is configured.
    pub github: Option<StatusSender>,
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

/// Runs the controller until shutdown (SIGTERM/SIGINT), finishing in-flight reconciles.
/// `synced` turns true once the caches are filled.
pub async fn run(
    client: Client,
    config: Config,
    options: Options,
    metrics: Arc<Metrics>,
    leader: watch::Receiver<bool>,
    synced_tx: watch::Sender<bool>,
) {
    let previews: Api<PreviewEnvironment> = Api::all(client.clone());
    let (namespaces, ns_stream) = cached_stream::<PartialObjectMeta<Namespace>>(&client, keep_all);
    let (deployments, d_stream) = cached_stream::<Deployment>(&client, prune_deployment);
    let (jobs, j_stream) = cached_stream::<Job>(&client, prune_job);
    // A stuck pod wakes its preview. Pods carry no owner annotation; their namespace does.
    let stuck_pods = pods::StuckPods::default();
    let p_stream = stuck_pods.stream(&client, managed());
    let pod_owners = namespaces.clone();
    let (services, s_stream) = cached_stream::<PartialObjectMeta<Service>>(&client, keep_all);
    let (ingresses, i_stream) = cached_stream::<PartialObjectMeta<Ingress>>(&client, keep_all);
    let (network_policies, np_stream) =
        cached_stream::<PartialObjectMeta<NetworkPolicy>>(&client, keep_all);
    let (quotas, q_stream) = cached_stream::<PartialObjectMeta<ResourceQuota>>(&client, keep_all);
    let (limit_ranges, lr_stream) =
        cached_stream::<PartialObjectMeta<LimitRange>>(&client, keep_all);
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();

    let mut preview_watch = watcher::Config::default().any_semantic();
    if let Some(selector) = &options.selector {
        preview_watch = preview_watch.labels(selector);
    }
    // The previews' own cache, without managed fields (a third of a stored object).
    let (preview_reader, preview_writer) = reflector::store();
    let preview_stream = reflector(
        preview_writer,
        watcher(previews, preview_watch).modify(|pe| pe.managed_fields_mut().clear()),
    )
    .default_backoff()
    .applied_objects()
    // Status-only changes (most of them this operator's own writes) trigger nothing: the
    // spec (generation, which deletion also bumps) and the finalizers are what it acts on.
    // The cache above still sees every change.
    .predicate_filter(
        predicates::generation.combine(predicates::finalizers),
        PredicateConfig::default(),
    );
    let controller = Controller::for_stream(preview_stream, preview_reader)
        // A short trailing debounce folds the burst of child events of a rollout (each
        // replica, each status update) into one reconcile, and so one status write.
        .with_config(
            ControllerConfig::default()
                .concurrency(options.workers)
                .debounce(DEBOUNCE),
        )
        .watches_stream(ns_stream, |o| owner_ref(&o))
        .watches_stream(d_stream, |o| owner_ref(&o))
        .watches_stream(j_stream, |o| owner_ref(&o))
        .watches_stream(p_stream, move |pod| {
            let ns = pod_owners.get(&ObjectRef::new(&pod.namespace()?))?;
            owner_ref(ns.as_ref())
        })
        .watches_stream(s_stream, |o| owner_ref(&o))
        .watches_stream(i_stream, |o| owner_ref(&o))
        .watches_stream(np_stream, |o| owner_ref(&o))
        .watches_stream(q_stream, |o| owner_ref(&o))
        .watches_stream(lr_stream, |o| owner_ref(&o))
        .reconcile_on(tokio_stream_from(wake_rx))
        .reconcile_all_on(on_leadership(leader.clone()))
        .shutdown_on_signal();

    let stores = Stores {
        previews: controller.store(),
        namespaces,
        deployments,
        jobs,
        stuck_pods,
        services,
        ingresses,
        network_policies,
        quotas,
        limit_ranges,
    };
    metrics.count_phases_in(stores.previews.clone());
    let (events, event_task) = events::Events::start(
        client.clone(),
        events::Reporter {
            controller: MANAGER.to_string(),
            instance: options.instance,
        },
    );
    let synced = synced_tx.subscribe();
    let sync_stores = stores.clone();
    let syncer = tokio::spawn(async move {
        if sync_stores.ready().await {
            info!("caches synced");
            let _ = synced_tx.send(true);
        }
    });
    let leadership_metrics = metrics.clone();
    let mut leadership = leader.clone();
    let leadership_watch = tokio::spawn(async move {
        loop {
            let leads = *leadership.borrow_and_update();
            leadership_metrics.set_leader(leads);
            info!(leader = leads, "leadership");
            if leadership.changed().await.is_err() {
                return;
            }
        }
    });
    let sweeper = tokio::spawn(teardown::run_sweeper(
        client.clone(),
        stores.previews.clone(),
        stores.namespaces.clone(),
        options.sweep_interval,
        synced.clone(),
        leader.clone(),
    ));
    let ctx = Arc::new(Context {
        client,
        config,
        stores,
        events,
        admitted: Mutex::new(HashSet::new()),
        admission: tokio::sync::Mutex::new(()),
        failures: Mutex::new(HashMap::new()),
        written: Mutex::new(HashMap::new()),
        wake: wake_tx,
        synced,
        leader,
        metrics,
        github: options.github,
    });
    info!("controller started");
    controller
        .run(
            |pe, ctx| {
                let span = info_span!(
                    "reconcile",
                    namespace = pe.namespace().as_deref().unwrap_or_default(),
                    name = %pe.name_any()
                );
                async move {
                    if !*ctx.leader.borrow() {
                        // Followers keep their caches warm and never write; winning the lease
                        // reconciles everything (reconcile_all_on above).
                        return Ok(Action::await_change());
                    }
                    let start = std::time::Instant::now();
                    let result = reconcile(pe, ctx.clone()).await;
                    let category = result.as_ref().err().map(Error::category);
                    // Waiting for a namespace to go is not a failure.
                    let category = category.filter(|c| *c != "teardown_in_progress");
                    ctx.metrics.reconciled(start.elapsed(), category);
                    result
                }
                .instrument(span)
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(error) = result {
                debug!(%error, "controller event");
            }
        })
        .await;
    sweeper.abort();
    syncer.abort();
    leadership_watch.abort();
    // The context, and with it the event sender, is gone: publish what is queued, briefly.
    if tokio::time::timeout(Duration::from_secs(5), event_task)
        .await
        .is_err()
    {
        warn!("shutdown: events still queued were not published");
    }
    info!("controller stopped");
}

/// Adapts an mpsc receiver into a stream without another dependency.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
