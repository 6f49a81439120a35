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

/// What kind of step failed: a fixed label per variant of [`Error`], for logs and the
/// `category` label of the reconcile error metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
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

impl Category {
    /// Every category of a failure, that is all but [`Category::TeardownInProgress`].
    pub const FAILURES: [Category; 9] = [
        Category::Apply,
        Category::CreateNamespace,
        Category::Read,
        Category::Status,
        Category::Expire,
        Category::DeleteNamespace,
        Category::AddFinalizer,
        Category::Incomplete,
        Category::Finalizer,
    ];

    /// The label text: dashboards and alerts select on it, so it never changes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Apply => "apply",
            Category::CreateNamespace => "create_namespace",
            Category::Read => "read",
            Category::Status => "status",
            Category::Expire => "expire",
            Category::DeleteNamespace => "delete_namespace",
            Category::AddFinalizer => "add_finalizer",
            Category::TeardownInProgress => "teardown_in_progress",
            Category::Incomplete => "incomplete",
            Category::Finalizer => "finalizer",
        }
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// Every category [`Error::category`] returns for a failure (the metric exports each from
    /// the start), as label text.
    pub const CATEGORIES: [&'static str; 9] = {
        let mut out = [""; 9];
        let mut i = 0;
        while i < out.len() {
            out[i] = Category::FAILURES[i].as_str();
            i += 1;
        }
        out
    };

    /// What kind of step failed; a failure inside the finalizer counts as its step's.
    pub fn category(&self) -> Category {
        match self {
            Error::Apply(_) => Category::Apply,
            Error::CreateNamespace { .. } => Category::CreateNamespace,
            Error::Read { .. } => Category::Read,
            Error::Status { .. } => Category::Status,
            Error::Expire { .. } => Category::Expire,
            Error::DeleteNamespace { .. } => Category::DeleteNamespace,
            Error::AddFinalizer { .. } => Category::AddFinalizer,
            Error::TeardownInProgress(_) => Category::TeardownInProgress,
            Error::Incomplete(..) => Category::Incomplete,
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => Category::Finalizer,
            },
        }
    }

    /// A teardown waiting for its namespace to go: not a failure, retried at a fixed pace.
    pub fn is_waiting(&self) -> bool {
        self.category() == Category::TeardownInProgress
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

    #[test]
    fn failure_categories_keep_their_label_text() {
        assert_eq!(
            Error::CATEGORIES,
            [
                "apply",
                "create_namespace",
                "read",
                "status",
                "expire",
                "delete_namespace",
                "add_finalizer",
                "incomplete",
                "finalizer",
            ]
        );
        assert!(!Category::FAILURES.contains(&Category::TeardownInProgress));
    }
}
