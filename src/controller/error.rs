//! Why a reconcile failed: one variant per step, each with a fixed category for logs and
//! metrics, and the policy that tells a wait from a failure.

use super::apply::ApplyError;

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
    /// Every category [`Error::category`] returns (the metric exports each from the start).
    pub const CATEGORIES: [&'static str; 9] = [
        "apply",
        "create_namespace",
        "read",
        "status",
        "expire",
        "delete_namespace",
        "add_finalizer",
        "incomplete",
        "finalizer",
    ];

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

    /// A teardown waiting for its namespace to go: not a failure, retried at a fixed pace.
    pub fn is_waiting(&self) -> bool {
        self.category() == "teardown_in_progress"
    }
}
