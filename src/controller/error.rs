//! Why a reconcile failed: one variant per step, each with a fixed category for logs and
//! metrics (the category, a label, is `metrics::ErrorCategory`), and the policy that tells a
//! wait from a failure.

use super::apply::ApplyError;
use crate::metrics::ErrorCategory;

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
    #[error("failed to scale {name}, which Flux delivered, for sleep or wake: {source}")]
    Scale {
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
    /// What kind of step failed; a failure inside the finalizer counts as its step's.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Apply(_) => ErrorCategory::Apply,
            Error::CreateNamespace { .. } => ErrorCategory::CreateNamespace,
            Error::Read { .. } => ErrorCategory::Read,
            Error::Status { .. } => ErrorCategory::Status,
            Error::Expire { .. } => ErrorCategory::Expire,
            Error::DeleteNamespace { .. } => ErrorCategory::DeleteNamespace,
            Error::AddFinalizer { .. } => ErrorCategory::AddFinalizer,
            Error::Scale { .. } => ErrorCategory::Apply,
            Error::TeardownInProgress(_) => ErrorCategory::TeardownInProgress,
            Error::Incomplete(..) => ErrorCategory::Incomplete,
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => ErrorCategory::Finalizer,
            },
        }
    }

    /// A teardown waiting for its namespace to go: not a failure, retried at a fixed pace.
    pub fn is_waiting(&self) -> bool {
        self.category() == ErrorCategory::TeardownInProgress
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_teardown_waiting_inside_the_finalizer_is_still_a_wait() {
        let wait = Error::TeardownInProgress("pr-shop-1".into());
        let wrapped = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::CleanupFailed(
            wait,
        )));
        assert!(wrapped.is_waiting());
        assert!(!Error::Incomplete("pe".into(), "uid").is_waiting());
    }
}
