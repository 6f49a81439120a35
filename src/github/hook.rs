//! GitHub's webhook (`POST /webhooks/github`): deliveries signed with HMAC-SHA256 in
//! `X-Hub-Signature-256`; a `pull_request` closing and a merge queue group destroyed are
//! acted on, every other authentic event is ignored.

use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use serde::Deserialize;
use sha2::Sha256;

use crate::scm::hook::{Delivery, Hook, ParseError, commit, header};
use crate::scm::{ClosedPr, Provider};

/// GitHub's deliveries.
pub struct GitHubHook;

impl Hook for GitHubHook {
    const PROVIDER: Provider = Provider::Github;
    const AUTH_HEADER: &'static str = "X-Hub-Signature-256";

    fn authentic(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
        signature_valid(secret, body, header(headers, "x-hub-signature-256"))
    }

    fn delivery_id(headers: &HeaderMap) -> Option<String> {
        header(headers, "x-github-delivery").map(str::to_string)
    }

    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Delivery, ParseError> {
        parse(header(headers, "x-github-event").unwrap_or_default(), body)
    }
}

/// Checks `X-Hub-Signature-256` (`sha256=<hex>`) against the body, in constant time.
pub fn signature_valid(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&expected).is_ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[derive(Deserialize)]
struct PullRequestEvent {
    pull_request: PullRequest,
    repository: Repository,
}

#[derive(Deserialize)]
struct PullRequest {
    number: i64,
    #[serde(default)]
    merged: Option<bool>,
    #[serde(default)]
    head: Option<Head>,
}

#[derive(Deserialize)]
struct Head {
    sha: String,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

/// Interprets a verified delivery.
pub fn parse(event: &str, body: &[u8]) -> Result<Delivery, ParseError> {
    match event {
        "ping" => Ok(Delivery::Ping),
        "pull_request" => {
            let value: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| ParseError::Malformed(e.to_string()))?;
            // Only a close is read further: an action the operator does not act on is
            // ignored whatever else it carries, so no authentic delivery is refused for
            // fields the operator does not read.
            match value["action"].as_str() {
                Some("closed") => {}
                Some(_) => return Ok(Delivery::Ignored),
                None => {
                    return Err(ParseError::Malformed(
                        "a pull_request event without an action".into(),
                    ));
                }
            }
            let e: PullRequestEvent =
                serde_json::from_value(value).map_err(|e| ParseError::Malformed(e.to_string()))?;
            if e.pull_request.number < 1 || !e.repository.full_name.contains('/') {
                return Err(ParseError::Malformed(
                    "pull request number or repository name out of range".into(),
                ));
            }
            Ok(Delivery::Closed {
                head_sha: e.pull_request.head.and_then(|h| commit(&h.sha)),
                pr: ClosedPr {
                    provider: Provider::Github,
                    repository: e.repository.full_name,
                    number: e.pull_request.number,
                    merged: e.pull_request.merged.unwrap_or(false),
                },
            })
        }
        "merge_group" => merge_group(body),
        _ => Ok(Delivery::Ignored),
    }
}

/// A `merge_group` delivery: only `destroyed` is acted on.
fn merge_group(body: &[u8]) -> Result<Delivery, ParseError> {
    #[derive(Deserialize)]
    struct Event {
        merge_group: Group,
        repository: Repository,
    }
    #[derive(Deserialize)]
    struct Group {
        head_ref: String,
        head_sha: String,
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ParseError::Malformed(e.to_string()))?;
    match value["action"].as_str() {
        Some("destroyed") => {}
        Some(_) => return Ok(Delivery::Ignored),
        None => {
            return Err(ParseError::Malformed(
                "a merge_group event without an action".into(),
            ));
        }
    }
    let e: Event =
        serde_json::from_value(value).map_err(|e| ParseError::Malformed(e.to_string()))?;
    let group = crate::api::environment::short_ref(&e.merge_group.head_ref);
    if !group.starts_with("gh-readonly-queue/") || !e.repository.full_name.contains('/') {
        return Err(ParseError::Malformed(
            "a merge group ref outside gh-readonly-queue/, or no repository".into(),
        ));
    }
    Ok(Delivery::GroupDestroyed {
        repository: e.repository.full_name,
        group: group.to_string(),
        head_sha: commit(&e.merge_group.head_sha),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_documented_test_vector_verifies() {
        // From GitHub's "Validating webhook deliveries" documentation.
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_valid(secret, body, Some(signature)));
        assert!(!signature_valid(b"another secret", body, Some(signature)));
        assert!(!signature_valid(secret, b"Hello, World?", Some(signature)));
    }

    #[test]
    fn malformed_signature_headers_are_refused() {
        let secret = b"s";
        for header in [
            None,
            Some(""),
            Some("sha256="),
            Some("sha1=757107ea0eb2509fc211221cce984b8a37570b6d"),
            Some("sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
            Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1"),
            Some("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17ff"),
            Some("sha256=é57107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1"),
        ] {
            assert!(!signature_valid(secret, b"x", header), "{header:?}");
        }
    }

    fn event(action: &str, number: serde_json::Value, repo: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "action": action,
            "number": number,
            "pull_request": {"number": number, "merged": true, "head": {"sha": "abc"}},
            "repository": {"full_name": repo}
        }))
        .expect("json")
    }

    #[test]
    fn a_closed_pull_request_is_recognised() {
        let body = event(
            "closed",
            serde_json::json!(12),
            serde_json::json!("Acme/Shop"),
        );
        assert_eq!(
            parse("pull_request", &body),
            Ok(Delivery::Closed {
                pr: ClosedPr {
                    provider: Provider::Github,
                    repository: "Acme/Shop".into(),
                    number: 12,
                    merged: true
                },
                head_sha: None,
            }),
            "\"abc\" is too short to be a commit"
        );
        let opened = event("opened", serde_json::json!(12), serde_json::json!("a/b"));
        assert_eq!(parse("pull_request", &opened), Ok(Delivery::Ignored));
        assert_eq!(parse("push", b"{}"), Ok(Delivery::Ignored));
        assert_eq!(parse("ping", b"{\"zen\": \"x\"}"), Ok(Delivery::Ping));
    }

    #[test]
    fn hostile_payloads_are_malformed_not_panics() {
        let cases: Vec<Vec<u8>> = vec![
            b"{\"action\": \"closed\", \"pull_request\": {\"number\": 1".to_vec(),
            b"not json".to_vec(),
            b"[]".to_vec(),
            b"{}".to_vec(),
            event("closed", serde_json::json!("12"), serde_json::json!("a/b")),
            event("closed", serde_json::json!(1e300), serde_json::json!("a/b")),
            event(
                "closed",
                serde_json::json!(u64::MAX),
                serde_json::json!("a/b"),
            ),
            event("closed", serde_json::json!(-4), serde_json::json!("a/b")),
            event("closed", serde_json::json!(0), serde_json::json!("a/b")),
            event("closed", serde_json::json!(3), serde_json::json!(42)),
            event(
                "closed",
                serde_json::json!(3),
                serde_json::json!("no-slash"),
            ),
            serde_json::to_vec(
                &serde_json::json!({"action": "closed", "repository": {"full_name": "a/b"}}),
            )
            .expect("json"),
        ];
        for body in cases {
            assert!(
                matches!(parse("pull_request", &body), Err(ParseError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    const GITHUB_CLOSED: &[u8] =
        include_bytes!("../../tests/fixtures/webhooks/github-pull_request-closed.json");

    #[test]
    fn a_real_github_close_delivery_names_its_head_sha() {
        assert_eq!(
            parse("pull_request", GITHUB_CLOSED),
            Ok(Delivery::Closed {
                pr: ClosedPr {
                    provider: Provider::Github,
                    repository: "Codertocat/Hello-World".into(),
                    number: 2,
                    merged: false
                },
                head_sha: Some("ec26c3e57ca3a959ca5aad62de7213c562f8c821".into()),
            })
        );
    }
}
