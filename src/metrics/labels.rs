//! The label values callers record, typed, so a caller cannot invent a series: each
//! `as_str()` is the exported text, which dashboards and alerts select on and so never changes.
//! They live here, below the controller and the providers, so metrics imports neither.

/// What kind of reconcile step failed: the `category` label of the reconcile error metric
/// (and of the reconcile's logs), one per variant of `controller::Error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCategory {
    Apply,
    CreateNamespace,
    Read,
    Status,
    Expire,
    DeleteNamespace,
    AddFinalizer,
    /// Not a failure: a teardown waits for its namespace to go.
    TeardownInProgress,
    Incomplete,
    Finalizer,
}

impl ErrorCategory {
    /// Every category of a failure, that is all but [`ErrorCategory::TeardownInProgress`]:
    /// the metric exports each from the start.
    pub const FAILURES: [ErrorCategory; 9] = [
        ErrorCategory::Apply,
        ErrorCategory::CreateNamespace,
        ErrorCategory::Read,
        ErrorCategory::Status,
        ErrorCategory::Expire,
        ErrorCategory::DeleteNamespace,
        ErrorCategory::AddFinalizer,
        ErrorCategory::Incomplete,
        ErrorCategory::Finalizer,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Apply => "apply",
            ErrorCategory::CreateNamespace => "create_namespace",
            ErrorCategory::Read => "read",
            ErrorCategory::Status => "status",
            ErrorCategory::Expire => "expire",
            ErrorCategory::DeleteNamespace => "delete_namespace",
            ErrorCategory::AddFinalizer => "add_finalizer",
            ErrorCategory::TeardownInProgress => "teardown_in_progress",
            ErrorCategory::Incomplete => "incomplete",
            ErrorCategory::Finalizer => "finalizer",
        }
    }
}

impl std::fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a webhook delivery was answered: the `result` label of the deliveries metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WebhookResult {
    Unauthorized,
    Duplicate,
    Ping,
    Ignored,
    Malformed,
    /// A close queued for teardown.
    Accepted,
    /// The teardown queue was full; the sender retries.
    Busy,
}

impl WebhookResult {
    pub const fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Unauthorized => "unauthorized",
            WebhookResult::Duplicate => "duplicate",
            WebhookResult::Ping => "ping",
            WebhookResult::Ignored => "ignored",
            WebhookResult::Malformed => "malformed",
            WebhookResult::Accepted => "accepted",
            WebhookResult::Busy => "busy",
        }
    }
}

/// What became of a commit status post: the `result` label of the commit statuses metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommitStatusResult {
    Posted,
    /// One attempt more after a failure or a rate limit; the post ends posted or failed.
    Retried,
    Failed,
}

impl CommitStatusResult {
    pub const fn as_str(self) -> &'static str {
        match self {
            CommitStatusResult::Posted => "posted",
            CommitStatusResult::Retried => "retried",
            CommitStatusResult::Failed => "failed",
        }
    }
}
