//! What the operator reports on a PreviewEnvironment: the status, its phase, the condition
//! types and every condition reason.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types the operator maintains on every PreviewEnvironment.
pub mod condition {
    /// Every service is rolled out and available at `spec.headSha`.
    pub const AVAILABLE: &str = "Available";
    /// Every test ran for `spec.headSha` and succeeded (True when there are no tests).
    pub const TESTS_SUCCEEDED: &str = "TestsSucceeded";
    /// False while the preview sleeps (its workloads scaled to zero), with why.
    pub const AWAKE: &str = "Awake";
    /// Whether the fail-safe resync could ask the SCM about the repository (only with a token).
    pub const SCM_REACHABLE: &str = "ScmReachable";
    /// Available and TestsSucceeded: what CI waits for.
    pub const READY: &str = "Ready";
    /// A PreviewClass admits the preview (repository binding, registries, annotations,
    /// policy, concurrency); without it nothing is created and nothing is reported on the PR.
    pub const ADMITTED: &str = "Admitted";
}

/// Declares [`Reason`]: each variant is written into conditions as its own name.
macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $name:ident,)+) => {
        /// Why a condition has the status it has: every `reason` the operator writes.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason {
            $($(#[doc = $doc])* $name,)+
        }

        impl Reason {
            /// The reason as it appears in a condition.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Reason::$name => stringify!($name),)+
                }
            }

            /// The reason a condition's text names, if the operator writes it.
            pub fn parse(text: &str) -> Option<Reason> {
                match text {
                    $(stringify!($name) => Some(Reason::$name),)+
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    /// Every service is available at headSha.
    ServicesAvailable,
    /// Services are rolling out.
    Deploying,
    /// The spec has no tests.
    NoTests,
    /// Every test at headSha passed.
    TestsSucceeded,
    /// Tests are running.
    TestsRunning,
    /// Tests wait until every service is available.
    WaitingForServices,
    /// A test's Job failed.
    TestFailed,
    /// A test's Job ran past its timeout.
    TestTimedOut,
    /// Available and tests succeeded.
    Ready,
    /// A PreviewClass admits the preview.
    Admitted,
    /// No PreviewClass of the name, and no default class.
    NoPreviewClass,
    /// The class does not bind the preview's namespace to its repository.
    RepositoryNotAllowed,
    /// An image is outside the class's allowed registries.
    RegistryNotAllowed,
    /// A pod annotation key is outside the class's allowed keys.
    AnnotationNotAllowed,
    /// Another preview already serves an Ingress host this one would use.
    HostConflict,
    /// A Secret the preview needs cannot be read where the operator copies it from.
    SecretNotReadable,
    /// The PreviewTemplate the preview names does not exist in its namespace.
    TemplateNotFound,
    /// The template cannot be rendered for this preview (unknown parameter or key...).
    TemplateError,
    /// A dependency of the template is not ready yet, or is stuck.
    DependencyNotReady,
    /// A setup Job runs; the services roll out once it succeeded.
    SetupRunning,
    /// A setup Job failed: the services are not rolled out and no test runs.
    SetupFailed,
    /// Its workloads run.
    Awake,
    /// Asleep after its idle time.
    Idle,
    /// Asleep in a window of its class's sleep schedule.
    Schedule,
    /// The resync could ask the SCM about the repository.
    ScmReachable,
    /// The resync could not ask the SCM about the repository; nothing is deleted meanwhile.
    ScmUnreachable,
    /// Waiting for a slot of the tenant's concurrency limit.
    ConcurrencyLimit,
    /// The spec breaks operator policy.
    PolicyViolation,
    /// The preview namespace's name is taken by a namespace the operator does not own.
    NamespaceConflict,
    /// An earlier namespace of the same name is still being deleted.
    NamespaceTerminating,
    /// The API server refused a child object.
    ApplyFailed,
    /// The namespace's ResourceQuota refused a pod.
    QuotaExceeded,
    /// Pod Security admission refused a pod.
    PodSecurityViolation,
    /// The ReplicaSet could not create pods for another reason.
    ReplicaFailure,
    /// A rollout made no progress within its deadline.
    ProgressDeadlineExceeded,
    /// A container keeps crashing.
    CrashLoopBackOff,
    /// An image cannot be pulled.
    ImagePullBackOff,
    /// An image cannot be pulled (first attempt).
    ErrImagePull,
    /// An image reference is invalid.
    InvalidImageName,
    /// A container's configuration (for example a missing Secret key) is invalid.
    CreateContainerConfigError,
    /// The runtime could not create a container.
    CreateContainerError,
}

impl Reason {
    /// Container waiting reasons that will not fix themselves: a service stuck in one fails.
    pub const STUCK_CONTAINER: [Reason; 6] = [
        Reason::CrashLoopBackOff,
        Reason::ImagePullBackOff,
        Reason::ErrImagePull,
        Reason::InvalidImageName,
        Reason::CreateContainerConfigError,
        Reason::CreateContainerError,
    ];
}

/// Observed state, written only through the status subresource.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreviewEnvironmentStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the environment is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The preview namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The headSha whose services are rolled out and available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_sha: Option<String>,
    /// URL of the first exposed service, else of the first service with a port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The headSha the time to live counts for, and when the operator first saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_sha: Option<String>,
    /// When the operator first saw `observedSha`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha_observed_at: Option<Time>,
    /// When the operator deletes the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// The `preview.dev/rerun-tests` value whose test run the status shows: CI waits for it
    /// after asking for a rerun, as it waits for observedGeneration after a spec change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_rerun_tests: Option<String>,
    /// The last activity (a new headSha, a spec change, a wake): idle time counts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<Time>,
    /// Since when the preview sleeps, while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sleeping_since: Option<Time>,
    /// The `preview.dev/wake-request` value last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_wake_request: Option<String>,
    /// The commit status last posted and acknowledged by GitHub. While it differs from the one
    /// this status calls for, the operator posts again: a dropped post heals, also across
    /// restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_commit_status: Option<ReportedStatus>,
    /// "passed/total" of the tests at headSha, for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_summary: Option<String>,
    /// One entry per service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceStatus>,
    /// One entry per test at headSha.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestStatus>,
    /// One entry per dependency of the template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<ServiceStatus>,
    /// One entry per setup Job of the template, at headSha.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<TestStatus>,
    /// Available, TestsSucceeded and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A commit status as posted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportedStatus {
    /// The commit.
    pub sha: String,
    /// pending, success, failure or error.
    pub state: String,
    /// The description posted with it.
    pub description: String,
}

/// Where a PreviewEnvironment is in its life.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Accepted, waiting to start (for example for a concurrency slot).
    Pending,
    /// Services are rolling out.
    Deploying,
    /// Services are available; tests are running.
    Testing,
    /// Services available and every test passed.
    Ready,
    /// Something needs a developer's attention; the conditions say what.
    Failed,
    /// Idle: its workloads are scaled to zero until something wakes it.
    Sleeping,
    /// Being torn down.
    Terminating,
}

impl Phase {
    /// The phase as it appears in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Deploying => "Deploying",
            Phase::Testing => "Testing",
            Phase::Ready => "Ready",
            Phase::Failed => "Failed",
            Phase::Sleeping => "Sleeping",
            Phase::Terminating => "Terminating",
        }
    }
}

/// Observed state of one service.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    /// The service's name.
    pub name: String,
    /// Pods ready at headSha.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods wanted.
    #[serde(default)]
    pub replicas: i32,
    /// In-cluster URL, or the Ingress URL when exposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// Observed state of one test run.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TestStatus {
    /// The test's name.
    pub name: String,
    /// The commit the run tests.
    pub sha: String,
    /// Where the run is.
    pub phase: TestPhase,
    /// The Job running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// When the Job started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the Job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Why it failed, for a developer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a test run is.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestPhase {
    /// Waiting for the services, or for its Job to start.
    Pending,
    /// The Job is running.
    Running,
    /// The Job succeeded.
    Succeeded,
    /// The Job failed or timed out.
    Failed,
}
