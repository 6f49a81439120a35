//! PURE: a preview's time to live and lifetime cap: since when the clock counts, when it
//! expires, and whether the ttl it asks for breaks its class's maximum.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::{PreviewEnvironment, PreviewEnvironmentStatus, format_duration, parse_duration};
use crate::config::Config;

/// A preview's time to live: since when it counts, until when, and whether the spec asked
/// for more than policy allows.
#[derive(Clone, Debug, PartialEq)]
pub struct Lifetime {
    pub ttl: Duration,
    /// Why the asked ttl was refused (the preview then lives for the maximum).
    pub violation: Option<String>,
    /// First sight of the current headSha.
    pub since: Timestamp,
    pub expires: Time,
}

impl Lifetime {
    /// The lifetime of `pe` at `now`: ttl counted from the first sight of its headSha, and
    /// never past the class's lifetime cap counted from its creation.
    /// The lifetime of `pe` under `config`, the policy of PreviewClass `class` (or the
    /// operator's defaults without one), at `now`.
    pub fn of(
        pe: &PreviewEnvironment,
        config: &Config,
        class: Option<&str>,
        now: Timestamp,
    ) -> Self {
        let (ttl, violation) = effective_ttl(pe.spec.ttl.as_deref(), config, class);
        let created = pe.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let since = sha_observed_at(pe.status.as_ref(), created, &pe.spec.head_sha, now);
        let mut expires = expires_at(since, ttl);
        if let (Some(cap), Some(created)) = (config.max_lifetime, &pe.metadata.creation_timestamp) {
            let capped = expires_at(created.0, cap);
            if capped.0 < expires.0 {
                expires = capped;
            }
        }
        Lifetime {
            ttl,
            violation,
            since,
            expires,
        }
    }

    pub fn expired(&self, now: Timestamp) -> bool {
        now >= self.expires.0
    }

    /// Time left; zero once expired.
    pub fn left(&self, now: Timestamp) -> Duration {
        if self.expired(now) {
            return Duration::ZERO;
        }
        self.expires.0.duration_since(now).unsigned_abs()
    }
}

/// The ttl a spec asks for (or the default), and whether it breaks the maximum of `config`,
/// the policy of PreviewClass `class` (the operator's defaults without one).
pub fn effective_ttl(
    spec_ttl: Option<&str>,
    config: &Config,
    class: Option<&str>,
) -> (Duration, Option<String>) {
    let asked = spec_ttl
        .and_then(parse_duration)
        .unwrap_or(config.default_ttl);
    if asked > config.max_ttl {
        let whose = match class {
            Some(class) => format!("PreviewClass {class} allows (its ttl.max)"),
            None => "the operator allows without a PreviewClass".to_string(),
        };
        let message = format!(
            "spec.ttl {} is longer than the maximum of {} that {whose}; lower spec.ttl, or ask \
             the platform team for a longer ttl.max",
            spec_ttl.unwrap_or_default(),
            format_duration(config.max_ttl)
        );
        // A preview that breaks policy still expires, at the maximum.
        return (config.max_ttl, Some(message));
    }
    (asked, None)
}

/// When the current headSha was first seen: kept from the status while the sha is the same;
/// for a preview without a status yet, its creation (its first status may wait a few seconds
/// to be written with the verdict, and the clock must not restart on every reconcile till
/// then); else now. The time to live counts from there.
pub fn sha_observed_at(
    status: Option<&PreviewEnvironmentStatus>,
    created: Option<Timestamp>,
    head_sha: &str,
    now: Timestamp,
) -> Timestamp {
    match status {
        None => created.map_or(now, |c| c.min(now)),
        Some(s) => Some(s)
            .filter(|s| s.observed_sha.as_deref() == Some(head_sha))
            .and_then(|s| s.sha_observed_at.as_ref())
            .map_or(now, |t| t.0),
    }
}

/// `since + ttl`, saturating instead of overflowing on absurd values.
pub fn expires_at(since: Timestamp, ttl: Duration) -> Time {
    let ttl = SignedDuration::try_from(ttl).unwrap_or(SignedDuration::MAX);
    Time(since.checked_add(ttl).unwrap_or(Timestamp::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_above_the_maximum_is_a_violation_that_still_expires_at_the_maximum() {
        let config = Config::default();
        let (ttl, violation) = effective_ttl(Some("30d"), &config, Some("standard"));
        assert_eq!(ttl, config.max_ttl);
        let message = violation.expect("a violation");
        assert!(
            message.contains("30d") && message.contains("7d"),
            "{message}"
        );
        assert!(
            message.contains("PreviewClass standard"),
            "names the class whose limit it is: {message}"
        );
        assert_eq!(
            effective_ttl(Some("1h"), &config, None),
            (Duration::from_secs(3600), None)
        );
        assert_eq!(
            effective_ttl(None, &config, None),
            (config.default_ttl, None)
        );
    }

    #[test]
    fn the_clock_restarts_only_for_a_new_sha() {
        let t0 = Timestamp::from_second(1_000).expect("time");
        let now = Timestamp::from_second(5_000).expect("time");
        let status = PreviewEnvironmentStatus {
            observed_sha: Some("aaaaaaa".into()),
            sha_observed_at: Some(Time(t0)),
            ..PreviewEnvironmentStatus::default()
        };
        let created = Some(Timestamp::from_second(900).expect("time"));
        assert_eq!(sha_observed_at(Some(&status), created, "aaaaaaa", now), t0);
        assert_eq!(sha_observed_at(Some(&status), created, "bbbbbbb", now), now);
        assert_eq!(
            sha_observed_at(None, created, "aaaaaaa", now),
            Timestamp::from_second(900).expect("time"),
            "no status yet: counted from creation, not from each reconcile"
        );
        assert_eq!(sha_observed_at(None, None, "aaaaaaa", now), now);
        assert_eq!(
            expires_at(t0, Duration::from_secs(60)).0,
            Timestamp::from_second(1_060).expect("time")
        );
    }

    #[test]
    fn a_preview_expires_ttl_after_its_sha_was_first_seen() {
        let config = Config::default();
        let mut pe = crate::fixtures::preview("shop-pr-1");
        pe.spec.ttl = Some("1h".into());
        pe.status = Some(PreviewEnvironmentStatus {
            observed_sha: Some(pe.spec.head_sha.clone()),
            sha_observed_at: Some(Time(Timestamp::from_second(1_000).expect("time"))),
            ..PreviewEnvironmentStatus::default()
        });
        let at = |s| Timestamp::from_second(s).expect("time");
        let lifetime = Lifetime::of(&pe, &config, None, at(2_000));
        assert!(!lifetime.expired(at(4_599)));
        assert_eq!(lifetime.left(at(4_599)), Duration::from_secs(1));
        assert!(lifetime.expired(at(4_600)));
        assert_eq!(lifetime.left(at(9_999)), Duration::ZERO);
        pe.spec.head_sha = "1234567".into();
        let renewed = Lifetime::of(&pe, &config, None, at(5_000));
        assert!(!renewed.expired(at(5_000)), "a new sha restarts the clock");
    }

    #[test]
    fn the_lifetime_cap_counts_from_creation_whatever_the_sha_does() {
        let config = Config {
            max_lifetime: Some(Duration::from_secs(3600)),
            ..Config::default()
        };
        let mut pe = crate::fixtures::preview("shop-pr-1");
        pe.metadata.creation_timestamp = Some(Time(Timestamp::from_second(1_000).expect("time")));
        let at = |s| Timestamp::from_second(s).expect("time");
        let lifetime = Lifetime::of(&pe, &config, None, at(4_000));
        assert_eq!(
            lifetime.expires.0,
            at(4_600),
            "a new sha at 4000 does not extend it"
        );
    }
}
