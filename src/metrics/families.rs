//! The metric families, by what they are about, each group registered by one short function:
//! the exported names and help texts are all here.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::{
    CostLabels, ErrorCategory, ErrorLabels, ProviderLabels, RequestLabels, ResultLabels, ScmLabels,
    Seconds, StateLabels, TestLabels,
};

/// Reconciles run, failed (by category) and how long they took.
#[derive(Debug)]
pub(super) struct Reconciles {
    pub(super) total: Counter,
    pub(super) errors: Family<ErrorLabels, Counter>,
    pub(super) duration: Histogram,
}

impl Reconciles {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let total = Counter::default();
        registry.register("reconciles", "Reconciles run", total.clone());
        let errors = Family::<ErrorLabels, Counter>::default();
        // Every category from the start, at zero: dashboards and alerts need no absent().
        for category in ErrorCategory::FAILURES {
            drop(errors.get_or_create(&ErrorLabels {
                category: category.as_str().to_string(),
            }));
        }
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error category",
            errors.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "How long a reconcile takes",
            duration.clone(),
        );
        Reconciles {
            total,
            errors,
            duration,
        }
    }
}

fn time_to_ready_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.5, 2.0, 14))
}

/// How long previews take to come up and to go.
#[derive(Debug)]
pub(super) struct Lifecycle {
    pub(super) time_to_ready: Family<CostLabels, Histogram, fn() -> Histogram>,
    pub(super) teardown_duration: Histogram,
}

impl Lifecycle {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let time_to_ready =
            Family::<CostLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                time_to_ready_histogram,
            );
        registry.register(
            "time_to_ready_seconds",
            "From the first sight of a headSha to Ready, by tenant and repository",
            time_to_ready.clone(),
        );
        let teardown_duration = Histogram::new(exponential_buckets(0.5, 2.0, 12));
        registry.register(
            "teardown_duration_seconds",
            "From deletion of a PreviewEnvironment to its namespace being gone",
            teardown_duration.clone(),
        );
        Lifecycle {
            time_to_ready,
            teardown_duration,
        }
    }
}

/// Finished test runs and how long their Jobs ran.
#[derive(Debug)]
pub(super) struct Tests {
    pub(super) runs: Family<TestLabels, Counter>,
    pub(super) duration: Histogram,
}

impl Tests {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let runs = Family::<TestLabels, Counter>::default();
        registry.register(
            "test_runs",
            "Finished test runs by tenant, repository and result",
            runs.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.5, 2.0, 14));
        registry.register(
            "test_duration_seconds",
            "How long a test Job ran",
            duration.clone(),
        );
        Tests { runs, duration }
    }
}

/// What previews cost: time existed, and resources requested while awake.
#[derive(Debug)]
pub(super) struct Costs {
    pub(super) environment_seconds: Family<StateLabels, Seconds>,
    pub(super) requested_cpu: Family<CostLabels, Seconds>,
    pub(super) requested_memory: Family<CostLabels, Seconds>,
}

impl Costs {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let environment_seconds = Family::<StateLabels, Seconds>::default();
        registry.register(
            "environment_seconds",
            "Seconds previews existed, by tenant, repository and state (awake or sleeping)",
            environment_seconds.clone(),
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
        Costs {
            environment_seconds,
            requested_cpu,
            requested_memory,
        }
    }
}

/// The operator's requests to GitHub and GitLab, and what their answers made it do.
#[derive(Debug)]
pub(super) struct Scm {
    pub(super) requests: Family<ScmLabels, Counter>,
    pub(super) rate_limit_remaining: Family<ProviderLabels, Gauge>,
    pub(super) resync_deletions: Counter,
    pub(super) commit_statuses: Family<ResultLabels, Counter>,
}

impl Scm {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let requests = Family::<ScmLabels, Counter>::default();
        registry.register(
            "scm_requests",
            "Requests to GitHub or GitLab by provider, endpoint and HTTP status (0: no answer)",
            requests.clone(),
        );
        let rate_limit_remaining = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "scm_rate_limit_remaining",
            "Requests left in the provider's rate limit window, as it last said",
            rate_limit_remaining.clone(),
        );
        let resync_deletions = Counter::default();
        registry.register(
            "resync_deletions",
            "Previews deleted by the resync because the provider reports their PR closed",
            resync_deletions.clone(),
        );
        let commit_statuses = Family::<ResultLabels, Counter>::default();
        registry.register(
            "commit_statuses",
            "GitHub commit status posts by result (posted, retried, failed)",
            commit_statuses.clone(),
        );
        Scm {
            requests,
            rate_limit_remaining,
            resync_deletions,
            commit_statuses,
        }
    }
}

/// Webhook deliveries, and the closes not acted on.
#[derive(Debug)]
pub(super) struct Webhooks {
    pub(super) deliveries: Family<ResultLabels, Counter>,
    pub(super) confirmations_refused: Counter,
}

impl Webhooks {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let deliveries = Family::<ResultLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "GitHub webhook deliveries by result",
            deliveries.clone(),
        );
        let confirmations_refused = Counter::default();
        registry.register(
            "webhook_confirmations_refused",
            "Webhook \"closed\" deliveries not acted on because the provider reports the PR open",
            confirmations_refused.clone(),
        );
        Webhooks {
            deliveries,
            confirmations_refused,
        }
    }
}

/// Kubernetes API requests by verb, resource and status code (counted by `requests`).
pub(super) fn api_requests(registry: &mut Registry) -> Family<RequestLabels, Counter> {
    let api_requests = Family::<RequestLabels, Counter>::default();
    registry.register(
        "kubernetes_requests",
        "Kubernetes API requests by verb and status code",
        api_requests.clone(),
    );
    api_requests
}

/// Whether this process leads.
pub(super) fn leader(registry: &mut Registry) -> Gauge {
    let leader = Gauge::default();
    registry.register(
        "leader",
        "1 while this process holds the leader lease",
        leader.clone(),
    );
    leader
}
