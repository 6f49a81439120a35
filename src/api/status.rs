//! What the operator reports on a PreviewEnvironment: the status, its phase, the condition
//! types and every condition reason.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;

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
    /// Whether the preview runs what its PreviewClass and PreviewTemplate say now: False
    /// while a change of theirs waits for a rollout slot or rolls out, or while the class
    /// names a Secret that does not exist. Ready is not affected by it.
    pub const UP_TO_DATE: &str = "UpToDate";
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
            /// Every reason, in the order declared: the order of the table in the docs.
            pub const ALL: &'static [Reason] = &[$(Reason::$name,)+];

            /// The variant's doc comment, one line per `///` line: what the reason means,
            /// then `On:` the conditions that carry it and `To do:` what a developer does.
            /// The table of reasons in docs/using-a-preview.md is generated from it.
            pub fn doc(self) -> &'static str {
                match self {
                    $(Reason::$name => concat!($($doc, "\n",)*),)+
                }
            }

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
    /// Every service is rolled out and available at `spec.headSha`.
    ///
    /// On: `Available`.
    ///
    /// To do: nothing.
    ServicesAvailable,
    /// The services are rolling out to `spec.headSha`; the message names the ones not yet
    /// available.
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: nothing while it moves on. A rollout that stops moving ends in one of the
    /// failure reasons below.
    Deploying,
    /// The spec (or its template) has no tests, so there is nothing to wait for.
    ///
    /// On: `TestsSucceeded` (True).
    ///
    /// To do: nothing.
    NoTests,
    /// Every test ran at `spec.headSha` and passed.
    ///
    /// On: `TestsSucceeded`.
    ///
    /// To do: nothing.
    TestsSucceeded,
    /// The tests' Jobs are running at `spec.headSha`; the message counts the ones passed so far.
    ///
    /// On: `TestsSucceeded`, `Ready`.
    ///
    /// To do: nothing; `kubectl wait --for=condition=Ready` waits for them.
    TestsRunning,
    /// The tests start once every service is available at `spec.headSha`.
    ///
    /// On: `TestsSucceeded`.
    ///
    /// To do: nothing; if it lasts, `Available` says which service holds them up.
    WaitingForServices,
    /// A test's Job failed at `spec.headSha`; the message and `status.tests[]` name the test
    /// and its Job.
    ///
    /// On: `TestsSucceeded`, `Ready`.
    ///
    /// To do: read the Job's logs in the preview namespace (`kubectl logs job/<job> -n
    /// <status.namespace>`) and push a fix; a new sha reruns the tests, and so does the
    /// `preview.dev/rerun-tests` annotation.
    TestFailed,
    /// A test's Job ran past its `timeout` and was stopped.
    ///
    /// On: `TestsSucceeded`, `Ready`.
    ///
    /// To do: read the Job's logs for where it hung; raise the test's `timeout` if it needs
    /// more time, or fix what it waits for.
    TestTimedOut,
    /// Every service is available and every test passed: what CI waits for.
    ///
    /// On: `Ready`.
    ///
    /// To do: nothing; the message has the preview's URL.
    Ready,
    /// A PreviewClass admits the preview; the message names the class.
    ///
    /// On: `Admitted`.
    ///
    /// To do: nothing.
    Admitted,
    /// The PreviewClass the preview names (`spec.previewClassName`) does not exist, or it names
    /// none and no class is marked default.
    ///
    /// On: `Admitted`, `Available`, `TestsSucceeded`, `Ready`.
    ///
    /// To do: fix `spec.previewClassName` (`kubectl get previewclass` lists the classes), or
    /// ask the platform team for a default class.
    NoPreviewClass,
    /// No tenant of the class lists the preview's namespace with a pattern matching its
    /// `spec.repository`.
    ///
    /// On: `Admitted`, `Available`, `TestsSucceeded`, `Ready`.
    ///
    /// To do: check `spec.repository`; if it is right, ask the platform team to add the
    /// namespace and repository to the class's `tenants`.
    RepositoryNotAllowed,
    /// An image is not under one of the class's `allowedRegistries`; the message names it.
    ///
    /// On: `Admitted`, `Available`, `TestsSucceeded`, `Ready`.
    ///
    /// To do: pull the image from an allowed registry, or ask the platform team to allow
    /// its registry.
    RegistryNotAllowed,
    /// A chart comes from a repository the class's `flux.chartRepositories` does not list; the
    /// message names it.
    ///
    /// On: `Admitted`, `Available`, `TestsSucceeded`, `Ready`.
    ///
    /// To do: publish the chart to an allowed repository, or ask the platform team to allow
    /// this one.
    SourceNotAllowed,
    /// The template delivers through Flux, but the cluster does not serve Flux's kinds
    /// (`HelmRelease`, `Kustomization`, the sources), or the operator was installed without
    /// the role Flux applies with.
    ///
    /// On: `Admitted`, `Available`, `TestsSucceeded`, `Ready`.
    ///
    /// To do: ask the platform team to install Flux (and restart the operator), or to
    /// install the chart with `flux.enabled`.
    FluxNotInstalled,
    /// A pod annotation key matches none of the class's `allowedPodAnnotations`.
    ///
    /// On: `Admitted`, `Available`, `TestsSucceeded`, `Ready`.
    ///
    /// To do: drop the annotation from `podAnnotations`, or ask the platform team to allow
    /// its key.
    AnnotationNotAllowed,
    /// Another preview already serves an Ingress host this one would use.
    ///
    /// On: `Available`, `TestsSucceeded`, `Ready`.
    ///
    /// To do: the message names the other preview; rename the service or delete the other
    /// preview. This one rolls out once the host is free.
    HostConflict,
    /// A Secret or ConfigMap the preview's template declares cannot be read where the
    /// operator copies it from: it does not exist in the team's namespace, or the namespace has
    /// not opted in. A preview that was running when its template changed keeps running what
    /// it ran and says so on `UpToDate` instead. (A class's missing Secret is `ClassNotReady`.)
    ///
    /// On: `Available`, `TestsSucceeded`, `Ready`; `UpToDate` (False) of a running preview.
    ///
    /// To do: the message says which object and the RoleBinding to create; create them.
    SecretNotReadable,
    /// No PreviewTemplate named by `spec.templateRef.name` exists in the preview's namespace.
    ///
    /// On: `Available`, `TestsSucceeded`, `Ready`.
    ///
    /// To do: create the template, or fix the name.
    TemplateNotFound,
    /// The template cannot be rendered for this preview; the message names the cause (an
    /// unknown `<< key >>`, `<< branch >>` without `spec.branch`, an unknown or missing
    /// parameter, a value not matching its pattern, an `images` entry naming nothing, a
    /// `valueFrom` of an object the template does not list).
    ///
    /// On: `Available`, `TestsSucceeded`, `Ready`.
    ///
    /// To do: fix the template or the PreviewEnvironment; `preview-operator render` shows the
    /// error without a cluster.
    TemplateError,
    /// A dependency of the template is not ready yet, or is stuck (image, crash, readiness
    /// check failing, a pod the scheduler cannot place).
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: nothing while it starts; if it lasts, `status.dependencies` and the pods of its
    /// StatefulSet in the preview namespace say which and why.
    DependencyNotReady,
    /// A setup Job runs; the services roll out once it has succeeded.
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: nothing.
    SetupRunning,
    /// A setup Job failed: the services are not rolled out to this sha and no test runs.
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: `status.setup[]` names the Job; read its logs in the preview namespace and push
    /// a fix.
    SetupFailed,
    /// Flux could not deliver a chart or kustomization: a failed install or upgrade, a build
    /// or health check that failed, a source it could not fetch, or an object the preview may
    /// not create (a NetworkPolicy, RBAC, another namespace, an image from elsewhere). The
    /// message is Flux's; `status.releases[]` names the release.
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: read the message; `kubectl describe helmrelease <name> -n <status.namespace>`
    /// has the rest. Fix the chart or its values and push; a new sha tries again.
    DeliveryFailed,
    /// The preview's workloads run.
    ///
    /// On: `Awake`.
    ///
    /// To do: nothing.
    Awake,
    /// Asleep after its class's idle time without activity: its workloads are scaled to zero.
    ///
    /// On: `Awake` (False).
    ///
    /// To do: wake it with the `preview.dev/wake-request` annotation (any new value), or push
    /// a new sha.
    Idle,
    /// Asleep in a window of its class's sleep schedule.
    ///
    /// On: `Awake` (False).
    ///
    /// To do: it wakes when the window ends; the `preview.dev/wake-request` annotation wakes it
    /// now.
    Schedule,
    /// The fail-safe resync could ask the SCM about the repository.
    ///
    /// On: `ScmReachable`.
    ///
    /// To do: nothing.
    ScmReachable,
    /// The resync could not ask the SCM about the repository; nothing is deleted meanwhile.
    ///
    /// On: `ScmReachable` (False).
    ///
    /// To do: nothing for the preview; the message has the SCM's answer, for the platform
    /// team (token, rate limit, outage).
    ScmUnreachable,
    /// The preview runs what its PreviewClass and PreviewTemplate say now.
    ///
    /// On: `UpToDate`.
    ///
    /// To do: nothing.
    UpToDate,
    /// A change of the PreviewClass or PreviewTemplate waits for its turn: at most
    /// `--max-concurrent-rollouts` previews roll a class or template change out at once. The
    /// preview keeps running what it runs, and stays Ready.
    ///
    /// On: `UpToDate` (False).
    ///
    /// To do: nothing; it rolls out when a slot frees.
    RolloutQueued,
    /// A change of the PreviewClass or PreviewTemplate failed on two previews (their services
    /// or tests), so it rolls out no further: this preview keeps running what it ran. The
    /// message names the previews it failed on.
    ///
    /// On: `UpToDate` (False).
    ///
    /// To do: the owner of the change (platform team for a class, the team for a template)
    /// looks at the failed previews and fixes the change; its next generation rolls out again.
    RolloutHalted,
    /// The preview rolls out a change of its PreviewTemplate at the same sha; its tests run
    /// again for what changed (`status.tests[].reason`).
    ///
    /// On: `UpToDate` (False), `status.tests[].reason`.
    ///
    /// To do: nothing; a failure it brings shows as usual.
    TemplateChanged,
    /// The preview rolls out a change of its PreviewClass (pull secrets, limits, hardening);
    /// its tests run again for what changed. The pull request keeps the status it shows until
    /// the new run has a verdict.
    ///
    /// On: `UpToDate` (False), `status.tests[].reason`.
    ///
    /// To do: nothing.
    ClassChanged,
    /// The preview's spec changed at the same sha (images, parameters): its tests run again.
    ///
    /// On: `status.tests[].reason`.
    ///
    /// To do: nothing.
    SpecChanged,
    /// The PreviewClass names a Secret (image pull or ingress TLS) that does not exist in the
    /// operator's namespace. Previews keep running what they run without it and are not
    /// failed for it; the class's status says the same.
    ///
    /// On: `UpToDate` (False); the PreviewClass's `Ready` condition.
    ///
    /// To do: the platform team creates the Secret (or removes it from the class); the change
    /// then rolls out.
    ClassNotReady,
    /// Admitted, but waiting (`Pending`) for a slot under the class's concurrency limits; the
    /// message gives its place in the queue.
    ///
    /// On: `Admitted`, `Available`, `TestsSucceeded`, `Ready`.
    ///
    /// To do: nothing: it starts when a slot frees, oldest first. Deleting a preview of the
    /// team that is no longer needed frees one.
    ConcurrencyLimit,
    /// The spec asks for more than the class allows (a `ttl` above its maximum, too many
    /// previews in the namespace), or the class itself is invalid.
    ///
    /// On: `Admitted`, `Available`, `TestsSucceeded`, `Ready`.
    ///
    /// To do: the message says which limit; change the spec to fit, or ask the platform team.
    PolicyViolation,
    /// The preview namespace's name is taken by a namespace the operator does not own; the
    /// operator never adopts or deletes it.
    ///
    /// On: `Available`, `TestsSucceeded`, `Ready`.
    ///
    /// To do: ask whoever owns that namespace to delete it, or rename the PreviewEnvironment.
    NamespaceConflict,
    /// An earlier namespace of the same name is still being deleted.
    ///
    /// On: `Available`, `TestsSucceeded`, `Ready`.
    ///
    /// To do: nothing; the preview starts once it is gone.
    NamespaceTerminating,
    /// The API server refused a child object; the operator retries with backoff.
    ///
    /// On: `Available`, `TestsSucceeded`, `Ready`.
    ///
    /// To do: the message has the API server's answer; if it is about the spec (a value it
    /// refuses), fix the spec, else tell the platform team.
    ApplyFailed,
    /// The preview namespace's ResourceQuota refused a service's pod.
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: lower the services' `resources` or `replicas`, or ask the platform team for a
    /// larger quota in the class.
    QuotaExceeded,
    /// Pod Security admission refused a service's pod.
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: the message names the rule; the image must run as a non-root (numeric) user
    /// and need no privileges.
    PodSecurityViolation,
    /// The ReplicaSet could not create a service's pods for another reason.
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: the message has the cause; `kubectl describe deployment` in the preview
    /// namespace shows more.
    ReplicaFailure,
    /// A service's rollout made no progress within its deadline.
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: check its pods' events and logs in the preview namespace (not ready in time,
    /// failing readiness probe, unschedulable).
    ProgressDeadlineExceeded,
    /// A service's container keeps crashing.
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: read its logs (`kubectl logs deploy/<service> -n <status.namespace>
    /// --previous`) and push a fix.
    CrashLoopBackOff,
    /// A service's image cannot be pulled, after retries.
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: check that the image and tag exist and were pushed before the preview, and
    /// that the class's pull secrets can read them.
    ImagePullBackOff,
    /// A service's image cannot be pulled (first attempt).
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: as for `ImagePullBackOff`.
    ErrImagePull,
    /// A service's image reference is invalid.
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: fix the image reference in the spec or the template's `images`.
    InvalidImageName,
    /// A container's configuration is invalid, for example an env `valueFrom` naming a
    /// missing Secret key.
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: the message names what is missing; fix the reference or the copied object.
    CreateContainerConfigError,
    /// The runtime could not create a service's container.
    ///
    /// On: `Available`, `Ready`.
    ///
    /// To do: the message has the runtime's error (often the command); fix it in the spec.
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

/// The generations of the class and template a preview runs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// Of its PreviewClass (none: the operator's defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_generation: Option<i64>,
    /// Of its PreviewTemplate (none: inline services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_generation: Option<i64>,
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
    /// The generations of its PreviewClass and PreviewTemplate the preview has rolled out
    /// and tested at its sha; a change of either rolls out (bounded) and runs the tests again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<Revision>,
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
    /// One entry per Helm release and kustomization of the template, delivered by Flux.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub releases: Vec<ReleaseStatus>,
    /// Available, TestsSucceeded and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        with = "Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>",
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
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

/// Observed state of one Flux delivery.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    /// The helmRelease's or kustomization's name in the template.
    pub name: String,
    /// `HelmRelease` or `Kustomization`.
    pub kind: String,
    /// Flux reports it ready at headSha.
    #[serde(default)]
    pub ready: bool,
    /// What runs: the chart version (a chart from the repository carries the commit:
    /// `0.1.0+4f2c9e1d0a3b`), or the revision a kustomization applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Why it is not ready, in Flux's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
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
    /// Why it runs again at the same sha (`TemplateChanged`, `ClassChanged`, `SpecChanged`),
    /// when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
