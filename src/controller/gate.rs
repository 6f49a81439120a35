//! Why a preview is not rolled out at all ([`Gate`]), and what one condition says
//! ([`Verdict`]): a closed gate is the verdict every condition carries until it opens.

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
            } => (
                Reason::ConcurrencyLimit,
                format!(
                    "waiting for a slot: at most {limit} previews may run {scope}; \
                     this one is number {position} in the queue"
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
}

/// What one condition says: True or False, why, and a message for a developer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub reason: Reason,
    pub message: String,
}

impl Verdict {
    pub(super) fn yes(reason: Reason, message: String) -> Self {
        Verdict {
            ok: true,
            reason,
            message,
        }
    }

    pub(super) fn no(reason: Reason, message: String) -> Self {
        Verdict {
            ok: false,
            reason,
            message,
        }
    }
}
