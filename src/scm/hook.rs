//! Webhook deliveries, whichever provider sends them: what a delivery asks for
//! ([`Delivery`]) and [`Hook`], how one provider's deliveries are authenticated, told apart
//! and read. `crate::webhook::deliver` answers every provider's deliveries the same way.

use http::HeaderMap;

use super::{ClosedPr, Provider};

/// What a delivery asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Ping,
    /// A closed PR and its head sha (lower-case hex), when the delivery names a valid one.
    Closed {
        pr: ClosedPr,
        head_sha: Option<String>,
    },
    /// A merge queue group was destroyed (merged, invalidated or dequeued): its previews go.
    GroupDestroyed {
        repository: String,
        /// Its ref without `refs/heads/`.
        group: String,
        head_sha: Option<String>,
    },
    /// An authentic event the operator does not act on: answered 2xx all the same, since a
    /// provider disables a hook that keeps answering 4xx.
    Ignored,
}

/// Why an authentic delivery cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed delivery: {0}")]
    Malformed(String),
}

/// One provider's webhook.
pub trait Hook: Send + Sync + 'static {
    const PROVIDER: Provider;
    /// The header that authenticates a delivery, named in the refusal.
    const AUTH_HEADER: &'static str;

    /// Whether the delivery was sent by someone who knows `secret`, checked in constant time.
    fn authentic(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool;

    /// The delivery's id, to recognise a redelivery.
    fn delivery_id(headers: &HeaderMap) -> Option<String>;

    /// What an authentic delivery asks for.
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Delivery, ParseError>;
}

/// A commit id from a delivery, lower-cased: SHA-1 or SHA-256 hex, else nothing.
pub fn commit(text: &str) -> Option<String> {
    let valid = (7..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| text.to_ascii_lowercase())
}

/// The value of header `name`, when it is text.
pub fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_hex_of_a_sha_length_lower_cased() {
        assert_eq!(commit("EC26C3E").as_deref(), Some("ec26c3e"));
        assert_eq!(commit("ec26c3e57ca3a959ca5aad62de7213c562f8c821zz"), None);
        assert_eq!(commit(&"a".repeat(65)), None);
        assert_eq!(commit("abc"), None);
    }
}
