//! Prometheus metrics (prefix `preview_operator_`): the registry and what the operator records.
//! The tower layer that counts every Kubernetes API request by verb and status code is in
//! `requests`, the gauges counted from the cache at scrape time in `phases`.
//!
//! Series about previews are labelled by tenant (the preview's namespace) and repository, the
//! repository as the platform team's classes name it ([`repository`]), and are dropped a while
//! after no preview has those labels any more: a tenant cannot grow the operator's series.

mod phases;
mod repository;
mod requests;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::api::class::PreviewClass;
use crate::api::{Phase, PreviewEnvironment};
use crate::sync::lock;
use phases::PhaseCollector;
use repository::RepositoryLabels;
pub use repository::UNBOUND;
pub use requests::{ApiMetricsLayer, ApiMetricsService, resource, verb};

/// How long the series of a tenant and repository stay after their last preview is gone: longer
/// than any scrape interval, so their last increments are scraped at least once.
pub const PRUNE_AFTER: Duration = Duration::from_secs(5 * 60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

/// Whose previews: the tenant (the PreviewEnvironment's namespace) and the repository label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    tenant: String,
    repository: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    tenant: String,
    repository: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TestLabels {
    tenant: String,
    repository: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PreviewLabels {
    tenant: String,
    repository: String,
    phase: String,
}

type Seconds = Counter<f64, std::sync::atomic::AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScmLabels {
    provider: String,
    endpoint: String,
    /// The HTTP status, or 0 when there was no answer.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

fn time_to_ready_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.5, 2.0, 14))
}

/// Every metric the operator exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Histogram,
    time_to_ready: Family<CostLabels, Histogram, fn() -> Histogram>,
    test_runs: Family<TestLabels, Counter>,
    environment_seconds: Family<StateLabels, Seconds>,
    scm_requests: Family<ScmLabels, Counter>,
    scm_rate_limit_remaining: Family<ProviderLabels, Gauge>,
    resync_deletions: Counter,
    confirmations_refused: Counter,
    requested_cpu: Family<CostLabels, Seconds>,
    requested_memory: Family<CostLabels, Seconds>,
    test_duration: Histogram,
    teardown_duration: Histogram,
    api_requests: Family<RequestLabels, Counter>,
    webhook_deliveries: Family<ResultLabels, Counter>,
    commit_statuses: Family<ResultLabels, Counter>,
    leader: Gauge,
    phases: PhaseCollector,
    /// The tenants and repositories that have series, with since when no preview has them.
    series: Mutex<HashMap<CostLabels, Option<Instant>>>,
}

/// Every phase, exported even when no preview is in it.
const PHASES: [Phase; 7] = [
    Phase::Pending,
    Phase::Deploying,
    Phase::Testing,
    Phase::Ready,
    Phase::Failed,
    Phase::Sleeping,
    Phase::Terminating,
];

/// The caches labels come from, handed over once the controller has built them.
#[derive(Debug, Default)]
struct Caches {
    previews: OnceLock<Store<PreviewEnvironment>>,
    classes: OnceLock<Store<PreviewClass>>,
    /// The repository labels of the classes as last seen, with their fingerprint.
    labels: Mutex<Option<(u64, Arc<RepositoryLabels>)>>,
}

impl Caches {
    /// The repository labels the current classes allow (built again only when they change).
    fn labels(&self) -> Arc<RepositoryLabels> {
        let classes = self.classes.get().map(Store::state).unwrap_or_default();
        let fingerprint = repository::fingerprint(&classes);
        let mut cached = lock(&self.labels);
        match &*cached {
            Some((f, labels)) if *f == fingerprint => labels.clone(),
            _ => {
                let labels = Arc::new(RepositoryLabels::new(&classes));
                *cached = Some((fingerprint, labels.clone()));
                labels
            }
        }
    }

    /// The tenant and repository labels of every cached preview; `None` before the cache is
    /// handed over.
    fn live(&self) -> Option<HashSet<CostLabels>> {
        let previews = self.previews.get()?.state();
        let labels = self.labels();
        Some(
            previews
                .iter()
                .map(|pe| {
                    whose(
                        &labels,
                        pe.metadata.namespace.as_deref(),
                        &pe.spec.repository,
                    )
                })
                .collect(),
        )
    }
}

fn whose(labels: &RepositoryLabels, tenant: Option<&str>, repository: &str) -> CostLabels {
    CostLabels {
        tenant: tenant.unwrap_or_default().to_string(),
        repository: labels.label(repository),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("preview_operator");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        // Every category from the start, at zero: dashboards and alerts need no absent().
        for category in crate::controller::Error::CATEGORIES {
            drop(reconcile_errors.get_or_create(&ErrorLabels {
                category: category.to_string(),
            }));
        }
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error category",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "How long a reconcile takes",
            reconcile_duration.clone(),
        );
        let time_to_ready =
            Family::<CostLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                time_to_ready_histogram,
            );
        registry.register(
            "time_to_ready_seconds",
            "From the first sight of a headSha to Ready, by tenant and repository",
            time_to_ready.clone(),
        );
        let test_runs = Family::<TestLabels, Counter>::default();
        registry.register(
            "test_runs",
            "Finished test runs by tenant, repository and result",
            test_runs.clone(),
        );
        let environment_seconds = Family::<StateLabels, Seconds>::default();
        registry.register(
            "environment_seconds",
            "Seconds previews existed, by tenant, repository and state (awake or sleeping)",
            environment_seconds.clone(),
        );
        let scm_requests = Family::<ScmLabels, Counter>::default();
        registry.register(
            "scm_requests",
            "Requests to GitHub or GitLab by provider, endpoint and HTTP status (0: no answer)",
            scm_requests.clone(),
        );
        let scm_rate_limit_remaining = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "scm_rate_limit_remaining",
            "Requests left in the provider's rate limit window, as it last said",
            scm_rate_limit_remaining.clone(),
        );
        let resync_deletions = Counter::default();
        registry.register(
            "resync_deletions",
            "Previews deleted by the resync because the provider reports their PR closed",
            resync_deletions.clone(),
        );
        let confirmations_refused = Counter::default();
        registry.register(
            "webhook_confirmations_refused",
            "Webhook \"closed\" deliveries not acted on because the provider reports the PR open",
            confirmations_refused.clone(),
        );
        let requested_cpu = Family::<CostLabels, Seconds>::default();
        registry.register(
            "requested_cpu_core_seconds",
            "CPU cores requested by awake previews (services and dependencies) times seconds",
            requested_cpu.clone(),
        );
        let requested_memory = Family::<CostLabels, Seconds>::default();
        registry.register(
            "requested_memory_byte_seconds",
            "Memory bytes requested by awake previews (services and dependencies) times seconds",
            requested_memory.clone(),
        );
        let test_duration = Histogram::new(exponential_buckets(0.5, 2.0, 14));
        registry.register(
            "test_duration_seconds",
            "How long a test Job ran",
            test_duration.clone(),
        );
        let teardown_duration = Histogram::new(exponential_buckets(0.5, 2.0, 12));
        registry.register(
            "teardown_duration_seconds",
            "From deletion of a PreviewEnvironment to its namespace being gone",
            teardown_duration.clone(),
        );
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kubernetes_requests",
            "Kubernetes API requests by verb and status code",
            api_requests.clone(),
        );
        let webhook_deliveries = Family::<ResultLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "GitHub webhook deliveries by result",
            webhook_deliveries.clone(),
        );
        let commit_statuses = Family::<ResultLabels, Counter>::default();
        registry.register(
            "commit_statuses",
            "GitHub commit status posts by result (posted, retried, failed)",
            commit_statuses.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process holds the leader lease",
            leader.clone(),
        );
        let phases = PhaseCollector::default();
        registry.register_collector(Box::new(phases.clone()));
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            time_to_ready,
            test_runs,
            environment_seconds,
            scm_requests,
            scm_rate_limit_remaining,
            resync_deletions,
            confirmations_refused,
            requested_cpu,
            requested_memory,
            test_duration,
            teardown_duration,
            api_requests,
            webhook_deliveries,
            commit_statuses,
            leader,
            phases,
            series: Mutex::default(),
        }
    }

    /// Gives the gauges the previews to count, and the labels the classes to label
    /// repositories by.
    pub fn count_phases_in(
        &self,
        previews: Store<PreviewEnvironment>,
        classes: Store<PreviewClass>,
    ) {
        let _ = self.phases.caches.previews.set(previews);
        let _ = self.phases.caches.classes.set(classes);
    }

    /// The uids of the cached previews; `None` before the cache is handed over.
    pub fn live_uids(&self) -> Option<HashSet<String>> {
        let previews = self.phases.caches.previews.get()?.state();
        Some(
            previews
                .iter()
                .filter_map(|pe| pe.metadata.uid.clone())
                .collect(),
        )
    }

    /// The labels of `tenant`'s `repository`, noted as having series.
    fn whose(&self, tenant: &str, repository: &str) -> CostLabels {
        let whose = whose(&self.phases.caches.labels(), Some(tenant), repository);
        lock(&self.series).insert(whose.clone(), None);
        whose
    }

    /// Drops the series of tenants and repositories that no cached preview has had for
    /// [`PRUNE_AFTER`] (at `now`): the counters of gone previews would otherwise stay forever.
    pub fn prune(&self, now: Instant) {
        let Some(live) = self.phases.caches.live() else {
            return;
        };
        let mut series = lock(&self.series);
        series.retain(|whose, gone_since| {
            if live.contains(whose) {
                *gone_since = None;
                return true;
            }
            let since = *gone_since.get_or_insert(now);
            if now.saturating_duration_since(since) < PRUNE_AFTER {
                return true;
            }
            self.remove(whose);
            false
        });
    }

    /// Removes every series of `whose`.
    fn remove(&self, whose: &CostLabels) {
        self.time_to_ready.remove(whose);
        self.requested_cpu.remove(whose);
        self.requested_memory.remove(whose);
        for state in ["awake", "sleeping"] {
            self.environment_seconds.remove(&StateLabels {
                tenant: whose.tenant.clone(),
                repository: whose.repository.clone(),
                state: state.to_string(),
            });
        }
        for result in ["succeeded", "failed"] {
            self.test_runs.remove(&TestLabels {
                tenant: whose.tenant.clone(),
                repository: whose.repository.clone(),
                result: result.to_string(),
            });
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn reconciled(&self, took: Duration, error: Option<&str>) {
        self.reconciles.inc();
        self.reconcile_duration.observe(took.as_secs_f64());
        if let Some(category) = error {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    category: category.to_string(),
                })
                .inc();
        }
    }

    pub fn ready_after(&self, took: Duration, tenant: &str, repository: &str) {
        self.time_to_ready
            .get_or_create(&self.whose(tenant, repository))
            .observe(took.as_secs_f64());
    }

    pub fn test_finished(
        &self,
        succeeded: bool,
        took: Option<Duration>,
        tenant: &str,
        repository: &str,
    ) {
        let result = if succeeded { "succeeded" } else { "failed" };
        let CostLabels { tenant, repository } = self.whose(tenant, repository);
        self.test_runs
            .get_or_create(&TestLabels {
                tenant,
                repository,
                result: result.to_string(),
            })
            .inc();
        if let Some(took) = took {
            self.test_duration.observe(took.as_secs_f64());
        }
    }

    /// Adds `seconds` of one preview: to its time awake or asleep, and while awake its
    /// requests times the seconds.
    pub fn account(
        &self,
        tenant: &str,
        repository: &str,
        awake: bool,
        seconds: f64,
        requests: crate::controller::costs::Requests,
    ) {
        let whose = self.whose(tenant, repository);
        self.environment_seconds
            .get_or_create(&StateLabels {
                tenant: whose.tenant.clone(),
                repository: whose.repository.clone(),
                state: if awake { "awake" } else { "sleeping" }.to_string(),
            })
            .inc_by(seconds);
        if !awake {
            return;
        }
        self.requested_cpu
            .get_or_create(&whose)
            .inc_by(seconds * requests.cpu_cores);
        self.requested_memory
            .get_or_create(&whose)
            .inc_by(seconds * requests.memory_bytes);
    }

    pub fn scm_request(&self, provider: &str, endpoint: &str, status: u16) {
        self.scm_requests
            .get_or_create(&ScmLabels {
                provider: provider.to_string(),
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    pub fn scm_rate_limit_remaining(&self, provider: &str, left: i64) {
        self.scm_rate_limit_remaining
            .get_or_create(&ProviderLabels {
                provider: provider.to_string(),
            })
            .set(left);
    }

    pub fn resync_deleted(&self) {
        self.resync_deletions.inc();
    }

    pub fn confirmation_refused(&self) {
        self.confirmations_refused.inc();
    }

    pub fn torn_down(&self, took: Duration) {
        self.teardown_duration.observe(took.as_secs_f64());
    }

    pub fn webhook_delivery(&self, result: &str) {
        self.webhook_deliveries
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn commit_status(&self, result: &str) {
        self.commit_statuses
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    fn api_request(&self, verb: &str, resource: &str, code: u16) {
        self.api_requests
            .get_or_create(&RequestLabels {
                verb: verb.to_string(),
                resource: resource.to_string(),
                code: code.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests;
