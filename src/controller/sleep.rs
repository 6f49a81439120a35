//! PURE: whether a preview sleeps now, since when and why, and when that can change.
//!
//! A preview is idle after `afterIdle` without activity (a new headSha, a spec change, a wake
//! request; the end of a schedule window counts as one), and sleeps in the windows of its
//! class's schedules unless woken inside one. Only a preview that is done (Ready or Failed)
//! falls asleep: a rollout or a test run in progress keeps it awake.

use std::time::Duration;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::api::class::{SleepPolicy, SleepSchedule};
use crate::api::{Phase, PreviewEnvironmentStatus, Reason, parse_duration};

/// The sleep policy a preview runs under: its class's, with the preview's or template's
/// shorter idle time.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub after_idle: Option<Duration>,
    pub schedules: Vec<Schedule>,
    pub delete_after_sleeping: Option<Duration>,
    pub allow_never_sleep: bool,
}

impl Policy {
    /// The class's policy; `asked` are the idle times the preview and its template ask for,
    /// of which the shortest applies when shorter than the class's.
    pub fn new(class: Option<&SleepPolicy>, asked: &[Option<&str>]) -> Result<Policy, String> {
        let class = class.cloned().unwrap_or_default();
        let shortest = asked
            .iter()
            .flatten()
            .filter_map(|d| parse_duration(d))
            .min();
        let after_idle = match (
            class.after_idle.as_deref().and_then(parse_duration),
            shortest,
        ) {
            (Some(c), Some(a)) => Some(c.min(a)),
            (c, a) => c.or(a),
        };
        Ok(Policy {
            after_idle,
            schedules: class
                .schedules
                .iter()
                .map(Schedule::parse)
                .collect::<Result<_, _>>()?,
            delete_after_sleeping: class
                .delete_after_sleeping
                .as_deref()
                .and_then(parse_duration),
            allow_never_sleep: class.allow_never_sleep,
        })
    }

    /// Whether the policy ever puts a preview to sleep.
    pub fn sleeps(&self) -> bool {
        self.after_idle.is_some() || !self.schedules.is_empty()
    }
}

/// A weekly window, parsed.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Monday first.
    days: [bool; 7],
    sleep_at: Time,
    wake_at: Time,
    zone: TimeZone,
}

const WEEKDAYS: [(&str, Weekday); 7] = [
    ("Mon", Weekday::Monday),
    ("Tue", Weekday::Tuesday),
    ("Wed", Weekday::Wednesday),
    ("Thu", Weekday::Thursday),
    ("Fri", Weekday::Friday),
    ("Sat", Weekday::Saturday),
    ("Sun", Weekday::Sunday),
];

fn weekday_index(name: &str) -> Option<usize> {
    WEEKDAYS.iter().position(|(n, _)| *n == name)
}

impl Schedule {
    /// Parses a class's window; the message says what is wrong with it.
    pub fn parse(spec: &SleepSchedule) -> Result<Schedule, String> {
        let mut days = [false; 7];
        for part in spec.days.split(',') {
            let (from, to) = part.split_once('-').unwrap_or((part, part));
            let (Some(a), Some(b)) = (weekday_index(from), weekday_index(to)) else {
                return Err(format!(
                    "sleep schedule days {:?} are not like Mon-Fri",
                    spec.days
                ));
            };
            // Mon-Fri, and also Fri-Mon across the weekend.
            let mut i = a;
            loop {
                days[i] = true;
                if i == b {
                    break;
                }
                i = (i + 1) % 7;
            }
        }
        let time = |t: &str| {
            Time::strptime("%H:%M", t).map_err(|e| format!("sleep schedule time {t:?}: {e}"))
        };
        let zone = match spec.time_zone.as_deref() {
            None | Some("UTC") => TimeZone::UTC,
            Some(name) => TimeZone::get(name)
                .map_err(|e| format!("sleep schedule time zone {name:?}: {e}"))?,
        };
        Ok(Schedule {
            days,
            sleep_at: time(&spec.sleep_at)?,
            wake_at: time(&spec.wake_at)?,
            zone,
        })
    }

    /// The windows `[start, end)` starting within a week and a day of `now`.
    fn windows(&self, now: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let today = now.to_zoned(self.zone.clone()).date();
        let mut out = Vec::new();
        for offset in -8i64..=8 {
            let Ok(day) = today.checked_add(offset.days()) else {
                continue;
            };
            let index = WEEKDAYS
                .iter()
                .position(|(_, w)| *w == day.weekday())
                .unwrap_or(0);
            if !self.days[index] {
                continue;
            }
            let end_day = if self.wake_at > self.sleep_at {
                Ok(day)
            } else {
                day.checked_add(1.day())
            };
            let start = day.to_datetime(self.sleep_at).to_zoned(self.zone.clone());
            let end = end_day.and_then(|d| d.to_datetime(self.wake_at).to_zoned(self.zone.clone()));
            if let (Ok(start), Ok(end)) = (start, end) {
                out.push((start.timestamp(), end.timestamp()));
            }
        }
        out
    }
}

/// When the preview was last active: now, when this reconcile sees a spec change, a new
/// headSha or a new wake request; otherwise what its status says.
pub fn last_active(
    previous: Option<&PreviewEnvironmentStatus>,
    generation: Option<i64>,
    head_sha: &str,
    wake_request: Option<&str>,
    now: Timestamp,
) -> Timestamp {
    let Some(p) = previous else {
        return now;
    };
    let changed = p.observed_generation != generation
        || p.observed_sha.as_deref() != Some(head_sha)
        || (wake_request.is_some() && wake_request != p.observed_wake_request.as_deref());
    if changed {
        return now;
    }
    // A status from before sleeping existed: active when its sha was first seen.
    (p.last_active_at.as_ref())
        .or(p.sha_observed_at.as_ref())
        .map_or(now, |t| t.0)
}

/// Whether a preview may fall asleep: done with its rollout and tests at this sha and spec
/// (Ready or Failed, or already asleep), and not kept awake by an annotation its class honours.
pub fn may_sleep(
    policy: &Policy,
    previous: Option<&PreviewEnvironmentStatus>,
    generation: Option<i64>,
    head_sha: &str,
    never_sleep: bool,
) -> bool {
    let done = previous.is_some_and(|p| {
        matches!(
            p.phase,
            Some(Phase::Ready | Phase::Failed | Phase::Sleeping)
        ) && p.observed_sha.as_deref() == Some(head_sha)
            && p.observed_generation == generation
    });
    policy.sleeps() && done && !(never_sleep && policy.allow_never_sleep)
}

/// Whether the preview is awake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Awake,
    /// Asleep since `since`, for `reason` (Idle or Schedule).
    Asleep {
        reason: Reason,
        since: Timestamp,
    },
}

/// What [`decide`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub state: State,
    /// When the state can change without an event (an idle deadline, a window's edge, the
    /// deletion of a long sleeper): the reconcile comes back then.
    pub next: Option<Timestamp>,
    /// The preview slept longer than the class allows: delete it.
    pub delete: bool,
    /// It would sleep now but may not yet (it rolls out or tests): once its verdict is
    /// written it may, and no event says so.
    pub held: bool,
}

/// Whether a preview with its last activity at `activity` sleeps at `now`; `may_sleep` is
/// false while it rolls out or tests (or is kept awake).
pub fn decide(policy: &Policy, activity: Timestamp, may_sleep: bool, now: Timestamp) -> Decision {
    let windows: Vec<(Timestamp, Timestamp)> = policy
        .schedules
        .iter()
        .flat_map(|s| s.windows(now))
        .collect();
    // A window's end wakes every preview: it counts as activity.
    let activity = windows
        .iter()
        .map(|(_, end)| *end)
        .filter(|end| *end <= now)
        .fold(activity, Timestamp::max);
    let in_window = windows
        .iter()
        .filter(|(start, end)| *start <= now && now < *end && *start > activity)
        .map(|(start, _)| *start)
        .min();
    let idle_at = policy
        .after_idle
        .and_then(|d| jiff::SignedDuration::try_from(d).ok())
        .and_then(|d| activity.checked_add(d).ok());
    let due = in_window.is_some() || idle_at.is_some_and(|at| at <= now);
    let state = match (in_window, idle_at) {
        _ if !may_sleep => State::Awake,
        (Some(start), _) => State::Asleep {
            reason: Reason::Schedule,
            since: start,
        },
        (None, Some(at)) if at <= now => State::Asleep {
            reason: Reason::Idle,
            since: at,
        },
        _ => State::Awake,
    };
    let delete_at = match (state, policy.delete_after_sleeping) {
        (State::Asleep { since, .. }, Some(d)) => jiff::SignedDuration::try_from(d)
            .ok()
            .and_then(|d| since.checked_add(d).ok()),
        _ => None,
    };
    let next = windows
        .iter()
        .flat_map(|(start, end)| [*start, *end])
        .chain(idle_at)
        .chain(delete_at)
        .filter(|t| *t > now)
        .min();
    Decision {
        state,
        next,
        delete: delete_at.is_some_and(|at| at <= now),
        held: due && !may_sleep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn schedule(days: &str, sleep_at: &str, wake_at: &str, zone: Option<&str>) -> Schedule {
        Schedule::parse(&SleepSchedule {
            days: days.into(),
            sleep_at: sleep_at.into(),
            wake_at: wake_at.into(),
            time_zone: zone.map(str::to_string),
        })
        .expect("schedule parses")
    }

    fn idle(minutes: u64) -> Policy {
        Policy {
            after_idle: Some(Duration::from_secs(minutes * 60)),
            ..Policy::default()
        }
    }

    #[test]
    fn a_done_preview_sleeps_after_its_idle_time_and_not_while_busy() {
        let active = at("2026-11-30T10:00:00Z");
        let d = decide(&idle(30), active, true, at("2026-11-30T10:29:00Z"));
        assert_eq!(d.state, State::Awake);
        assert_eq!(d.next, Some(at("2026-11-30T10:30:00Z")));
        let d = decide(&idle(30), active, true, at("2026-11-30T10:31:00Z"));
        assert_eq!(
            d.state,
            State::Asleep {
                reason: Reason::Idle,
                since: at("2026-11-30T10:30:00Z")
            }
        );
        let busy = decide(&idle(30), active, false, at("2026-11-30T11:00:00Z"));
        assert_eq!(
            busy.state,
            State::Awake,
            "testing or deploying keeps it awake"
        );
    }

    #[test]
    fn a_night_window_sleeps_in_its_zone_and_wakes_at_its_end() {
        let policy = Policy {
            schedules: vec![schedule("Mon-Fri", "20:00", "08:00", Some("Europe/Berlin"))],
            ..Policy::default()
        };
        let active = at("2026-11-30T12:00:00Z"); // a Monday
        // 20:00 in Berlin is 19:00 UTC in winter.
        let d = decide(&policy, active, true, at("2026-11-30T18:59:00Z"));
        assert_eq!(d.state, State::Awake);
        assert_eq!(d.next, Some(at("2026-11-30T19:00:00Z")));
        let d = decide(&policy, active, true, at("2026-11-30T23:00:00Z"));
        assert_eq!(
            d.state,
            State::Asleep {
                reason: Reason::Schedule,
                since: at("2026-11-30T19:00:00Z")
            }
        );
        assert_eq!(
            d.next,
            Some(at("2026-12-01T07:00:00Z")),
            "wakes at 08:00 Berlin"
        );
        // Woken inside the window: awake until the next one.
        let woken = at("2026-11-30T23:30:00Z");
        assert_eq!(
            decide(&policy, woken, true, at("2026-12-01T01:00:00Z")).state,
            State::Awake
        );
        // The window's end wakes it.
        assert_eq!(
            decide(&policy, active, true, at("2026-12-01T07:01:00Z")).state,
            State::Awake
        );
        // No window starts on Saturday.
        let saturday = at("2026-12-05T21:00:00Z");
        assert_eq!(
            decide(&policy, saturday, true, saturday).state,
            State::Awake
        );
    }

    #[test]
    fn a_preview_busy_when_its_window_starts_is_held_not_forgotten() {
        let policy = Policy {
            schedules: vec![schedule("Mon-Sun", "20:00", "08:00", Some("UTC"))],
            ..Policy::default()
        };
        let active = at("2026-11-30T12:00:00Z");
        let busy = decide(&policy, active, false, at("2026-11-30T20:05:00Z"));
        assert_eq!(busy.state, State::Awake, "testing: stays awake");
        assert!(busy.held, "but would sleep once done");
        let done = decide(&policy, active, true, at("2026-11-30T20:05:01Z"));
        assert!(matches!(done.state, State::Asleep { .. }));
        assert!(!done.held);
        let day = decide(&policy, active, false, at("2026-11-30T13:00:00Z"));
        assert!(!day.held, "nothing due outside the window");
    }

    #[test]
    fn the_end_of_a_window_counts_as_activity_for_the_idle_time() {
        let policy = Policy {
            after_idle: Some(Duration::from_secs(3600)),
            schedules: vec![schedule("Mon-Sun", "20:00", "08:00", None)],
            ..Policy::default()
        };
        let long_ago = at("2026-11-20T00:00:00Z");
        assert_eq!(
            decide(&policy, long_ago, true, at("2026-11-30T08:30:00Z")).state,
            State::Awake
        );
        assert!(matches!(
            decide(&policy, long_ago, true, at("2026-11-30T09:30:00Z")).state,
            State::Asleep {
                reason: Reason::Idle,
                ..
            }
        ));
    }

    #[test]
    fn a_long_sleeper_is_deleted() {
        let policy = Policy {
            delete_after_sleeping: Some(Duration::from_secs(3600)),
            ..idle(10)
        };
        let active = at("2026-11-30T10:00:00Z");
        let d = decide(&policy, active, true, at("2026-11-30T11:00:00Z"));
        assert!(!d.delete);
        assert_eq!(d.next, Some(at("2026-11-30T11:10:00Z")));
        assert!(decide(&policy, active, true, at("2026-11-30T11:10:00Z")).delete);
    }

    #[test]
    fn a_preview_may_only_shorten_its_idle_time() {
        let class = SleepPolicy {
            after_idle: Some("2h".into()),
            ..SleepPolicy::default()
        };
        let p = Policy::new(Some(&class), &[Some("30m"), None]).expect("policy");
        assert_eq!(p.after_idle, Some(Duration::from_secs(1800)));
        let p = Policy::new(Some(&class), &[Some("5h")]).expect("policy");
        assert_eq!(p.after_idle, Some(Duration::from_secs(7200)));
        assert!(!Policy::new(None, &[]).expect("policy").sleeps());
    }

    #[test]
    fn days_and_zones_are_checked() {
        let s = schedule("Fri-Mon", "20:00", "08:00", None);
        assert_eq!(s.days, [true, false, false, false, true, true, true]);
        let bad = Schedule::parse(&SleepSchedule {
            days: "Mon".into(),
            sleep_at: "20:00".into(),
            wake_at: "08:00".into(),
            time_zone: Some("Mars/Olympus".into()),
        });
        assert!(bad.expect_err("unknown zone").contains("Mars/Olympus"));
    }

    #[test]
    fn only_a_done_preview_may_sleep_and_never_sleep_needs_the_class() {
        let status = |phase: Phase| PreviewEnvironmentStatus {
            phase: Some(phase),
            observed_sha: Some("abc1234".into()),
            observed_generation: Some(2),
            ..PreviewEnvironmentStatus::default()
        };
        let policy = idle(10);
        let ready = status(Phase::Ready);
        assert!(may_sleep(&policy, Some(&ready), Some(2), "abc1234", false));
        assert!(!may_sleep(
            &policy,
            Some(&status(Phase::Testing)),
            Some(2),
            "abc1234",
            false
        ));
        assert!(
            !may_sleep(&policy, Some(&ready), Some(3), "abc1234", false),
            "spec changed"
        );
        assert!(
            !may_sleep(&policy, Some(&ready), Some(2), "def5678", false),
            "new sha"
        );
        assert!(
            may_sleep(&policy, Some(&ready), Some(2), "abc1234", true),
            "the class does not honour never-sleep"
        );
        let lenient = Policy {
            allow_never_sleep: true,
            ..idle(10)
        };
        assert!(!may_sleep(&lenient, Some(&ready), Some(2), "abc1234", true));
    }

    #[test]
    fn activity_is_a_new_sha_a_spec_change_or_a_wake_request() {
        let before = at("2026-11-30T10:00:00Z");
        let now = at("2026-11-30T12:00:00Z");
        let status = PreviewEnvironmentStatus {
            observed_sha: Some("abc1234".into()),
            observed_generation: Some(2),
            observed_wake_request: Some("one".into()),
            last_active_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(before)),
            ..PreviewEnvironmentStatus::default()
        };
        let s = Some(&status);
        assert_eq!(last_active(s, Some(2), "abc1234", Some("one"), now), before);
        assert_eq!(last_active(s, Some(3), "abc1234", Some("one"), now), now);
        assert_eq!(last_active(s, Some(2), "def5678", Some("one"), now), now);
        assert_eq!(last_active(s, Some(2), "abc1234", Some("two"), now), now);
        assert_eq!(last_active(None, Some(1), "abc1234", None, now), now);
    }
}
