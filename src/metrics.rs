//! Prometheus metrics (prefix `preview_operator_`): the registry and what the operator records.
//! The tower layer that counts every Kubernetes API request by verb and status code is in
//! `requests`, the gauges counted from the cache at scrape time in `phases`, the families and
//! their registration in `families`, the label values callers pass, typed, in `labels`.
//!
//! Series about previews are labelled by tenant (the preview's namespace) and repository, the
//! repository as the platform team's classes name it ([`repository`]), and are dropped a while
//! after no preview has those labels any more: a tenant cannot grow the operator's series.

mod families;
mod labels;
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
use prometheus_client::registry::Registry;

use crate::api::class::PreviewClass;
use crate::api::{Phase, PreviewEnvironment, Provider};
use crate::sync::lock;
use families::{Costs, Lifecycle, Reconciles, Scm, Tests, Webhooks};
pub use labels::{CommitStatusResult, ErrorCategory, WebhookResult};
use phases::PhaseCollector;
use repository::RepositoryLabels;
pub use repository::UNBOUND;
pub use requests::{ApiMetricsLayer, ApiMetricsService, resource, verb};

/// How long the series of a tenant and repository stay after their last preview is gone: longer
/// than any scrape interval, so their last increments are scraped at least once.
pub const PRUNE_AFTER: Duration = Duration::from_secs(5 * 60);

/// The requests of one preview while it runs, as the controller's cost accounting sums them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Requests {
    pub cpu_cores: f64,
    pub memory_bytes: f64,
}

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

/// Every metric the operator exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Reconciles,
    lifecycle: Lifecycle,
    tests: Tests,
    costs: Costs,
    scm: Scm,
    webhooks: Webhooks,
    api_requests: Family<RequestLabels, Counter>,
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
        // Collectors are encoded after every registered family, wherever registered.
        let phases = PhaseCollector::default();
        registry.register_collector(Box::new(phases.clone()));
        Metrics {
            reconciles: Reconciles::register(&mut registry),
            lifecycle: Lifecycle::register(&mut registry),
            tests: Tests::register(&mut registry),
            costs: Costs::register(&mut registry),
            scm: Scm::register(&mut registry),
            webhooks: Webhooks::register(&mut registry),
            api_requests: families::api_requests(&mut registry),
            leader: families::leader(&mut registry),
            phases,
            registry,
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
        self.lifecycle.time_to_ready.remove(whose);
        self.costs.requested_cpu.remove(whose);
        self.costs.requested_memory.remove(whose);
        for state in ["awake", "sleeping"] {
            self.costs.environment_seconds.remove(&StateLabels {
                tenant: whose.tenant.clone(),
                repository: whose.repository.clone(),
                state: state.to_string(),
            });
        }
        for result in ["succeeded", "failed"] {
            self.tests.runs.remove(&TestLabels {
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

    pub fn reconciled(&self, took: Duration, error: Option<ErrorCategory>) {
        self.reconciles.total.inc();
        self.reconciles.duration.observe(took.as_secs_f64());
        if let Some(category) = error {
            self.reconciles
                .errors
                .get_or_create(&ErrorLabels {
                    category: category.as_str().to_string(),
                })
                .inc();
        }
    }

    pub fn ready_after(&self, took: Duration, tenant: &str, repository: &str) {
        self.lifecycle
            .time_to_ready
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
        self.tests
            .runs
            .get_or_create(&TestLabels {
                tenant,
                repository,
                result: result.to_string(),
            })
            .inc();
        if let Some(took) = took {
            self.tests.duration.observe(took.as_secs_f64());
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
        requests: Requests,
    ) {
        let whose = self.whose(tenant, repository);
        self.costs
            .environment_seconds
            .get_or_create(&StateLabels {
                tenant: whose.tenant.clone(),
                repository: whose.repository.clone(),
                state: if awake { "awake" } else { "sleeping" }.to_string(),
            })
            .inc_by(seconds);
        if !awake {
            return;
        }
        self.costs
            .requested_cpu
            .get_or_create(&whose)
            .inc_by(seconds * requests.cpu_cores);
        self.costs
            .requested_memory
            .get_or_create(&whose)
            .inc_by(seconds * requests.memory_bytes);
    }

    pub fn scm_request(&self, provider: Provider, endpoint: &str, status: u16) {
        self.scm
            .requests
            .get_or_create(&ScmLabels {
                provider: provider.as_str().to_string(),
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    pub fn scm_rate_limit_remaining(&self, provider: Provider, left: i64) {
        self.scm
            .rate_limit_remaining
            .get_or_create(&ProviderLabels {
                provider: provider.as_str().to_string(),
            })
            .set(left);
    }

    pub fn resync_deleted(&self) {
        self.scm.resync_deletions.inc();
    }

    pub fn confirmation_refused(&self) {
        self.webhooks.confirmations_refused.inc();
    }

    pub fn torn_down(&self, took: Duration) {
        self.lifecycle.teardown_duration.observe(took.as_secs_f64());
    }

    pub fn webhook_delivery(&self, result: WebhookResult) {
        self.webhooks
            .deliveries
            .get_or_create(&ResultLabels {
                result: result.as_str().to_string(),
            })
            .inc();
    }

    pub fn commit_status(&self, result: CommitStatusResult) {
        self.scm
            .commit_statuses
            .get_or_create(&ResultLabels {
                result: result.as_str().to_string(),
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
