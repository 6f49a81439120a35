//! Why a preview is not rolled out at all ([`Gate`]), and what one condition says
//! ([`Verdict`]): a closed gate is the verdict every condition carries until it opens, `False`
//! where it decides (`Admitted`, `Ready`) and `Unknown` where nothing was looked at
//! (`Available`, `TestsSucceeded`, `Awake`).

use crate::api::Reason;

/// Why a preview is not rolled out at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Go ahead.
    Open,
    /// The PreviewClass does not admit the preview; nothing is created or reported.
    NotAdmitted { reason: Reason, message: String },
    /// Waiting for a slot: at most `limit` previews may run `scope` ("in this namespace"...).
    ConcurrencyLimit {
        limit: usize,
        position: usize,
        scope: String,
        /// The previews that hold the slots (`namespace/name`, the oldest few).
        held_by: String,
    },
    /// Another preview already serves an Ingress host this one would use.
    HostConflict(String),
    /// The spec breaks operator policy (for example a ttl above the maximum).
    PolicyViolation(String),
    /// The preview namespace's name is taken by a namespace the operator does not own.
    NamespaceConflict(String),
    /// A previous namespace of the same name is still being deleted.
    NamespaceTerminating(String),
    /// The API server refused a child object (retried with backoff); the message says why.
    ApplyFailed(String),
    /// Admitted, but the preview cannot be rolled out as it is: its template is missing or
    /// cannot be rendered, or what the template declares cannot be read.
    Blocked { reason: Reason, message: String },
}

impl Gate {
    pub fn is_open(&self) -> bool {
        *self == Gate::Open
    }

    /// Whether the gate closed after the preview namespace was made: the objects inside it
    /// could not be applied.
    pub fn closed_inside_namespace(&self) -> bool {
        matches!(self, Gate::ApplyFailed(_) | Gate::HostConflict(_))
    }

    /// `Admitted`: whether the class lets the preview start (a conflict found later on the
    /// way, like a foreign namespace, is not an admission question).
    pub fn admitted(&self, class: Option<&str>) -> Verdict {
        let refused = matches!(
            self,
            Gate::NotAdmitted { .. } | Gate::ConcurrencyLimit { .. } | Gate::PolicyViolation(_)
        );
        match self.verdict().filter(|_| refused) {
            Some(refusal) => refusal,
            None => Verdict::yes(
                Reason::Admitted,
                match class {
                    Some(class) => format!("admitted by PreviewClass {class}"),
                    None => "admitted".to_string(),
                },
            ),
        }
    }

    /// The reason and message every condition carries while the gate is closed.
    pub(super) fn verdict(&self) -> Option<Verdict> {
        let (reason, message) = match self {
            Gate::Open => return None,
            Gate::NotAdmitted { reason, message } => (*reason, message.clone()),
            Gate::ConcurrencyLimit {
                limit,
                position,
                scope,
                held_by,
            } => (
                Reason::ConcurrencyLimit,
                format!(
                    "waiting for a slot: at most {limit} previews may run {scope} (held by \
                     {held_by}); this one is number {position} in the queue"
                ),
            ),
            Gate::HostConflict(m) => (Reason::HostConflict, m.clone()),
            Gate::PolicyViolation(m) => (Reason::PolicyViolation, m.clone()),
            Gate::NamespaceConflict(m) => (Reason::NamespaceConflict, m.clone()),
            Gate::NamespaceTerminating(m) => (Reason::NamespaceTerminating, m.clone()),
            Gate::ApplyFailed(m) => (Reason::ApplyFailed, m.clone()),
            Gate::Blocked { reason, message } => (*reason, message.clone()),
        };
        Some(Verdict::no(reason, message))
    }

    /// What a condition the closed gate kept the operator from observing says: `Unknown`, for
    /// the gate's reason.
    pub(super) fn unobserved(&self) -> Option<Verdict> {
        self.verdict().map(|v| Verdict {
            truth: Truth::Unknown,
            ..v
        })
    }
}

/// A condition's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    /// Not observed: something (the gate) kept the operator from looking.
    Unknown,
}

impl Truth {
    pub fn as_str(self) -> &'static str {
        match self {
            Truth::True => "True",
            Truth::False => "False",
            Truth::Unknown => "Unknown",
        }
    }
}

/// What one condition says: True or False, why, and a message for a developer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub truth: Truth,
    pub reason: Reason,
    pub message: String,
}

impl Verdict {
    /// Whether the condition holds.
    pub fn ok(&self) -> bool {
        self.truth == Truth::True
    }

    pub(super) fn yes(reason: Reason, message: String) -> Self {
        Verdict {
            truth: Truth::True,
            reason,
            message,
        }
    }

    pub(super) fn no(reason: Reason, message: String) -> Self {
        Verdict {
            truth: Truth::False,
            reason,
            message,
        }
    }
}
