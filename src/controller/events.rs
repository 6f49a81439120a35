//! Kubernetes Events on PreviewEnvironments, published from a background task.
//!
//! Events are for humans (`kubectl describe previewenv`): a reconcile should not wait one API
//! round trip per Event, and a failed or dropped one must not fail it. The operator emits an
//! Event per transition, never per reconcile, so repeats are rare; kube's `Recorder` would
//! keep every Event of the last six minutes in memory to fold repeats into a series, which
//! at 1000 previews costs megabytes and a patch per repeat. Each Event here is one create.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use futures::StreamExt;

use crate::api::{self, Phase};

/// Events waiting to be published; beyond that, new ones are dropped (and logged).
const QUEUE: usize = 4096;
/// Events published at the same time.
const CONCURRENCY: usize = 4;
/// Longest note the API accepts.
const MAX_NOTE: usize = 1024;

/// `Normal` or `Warning`, as the Events API knows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

/// Why an Event is published: every Event reason the operator writes. Cluster tests and
/// people filter Events by this text (`kubectl get events --field-selector reason=...`), so
/// each variant's text never changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A preview ended Ready or Failed: the Ready condition's own reason (`TestFailed`,
    /// `Ready` after a problem, `CrashLoopBackOff`...), so the Event and the condition agree.
    Condition(api::Reason),
    /// A preview stopped in a phase for another reason than progress (`Deploying` with a
    /// crash loop, `Pending` for a slot): the phase, as the status names it.
    Phase(Phase),
    /// Fell asleep after its class's idle time (Awake reason `Idle`).
    SleepingIdle,
    /// Fell asleep in a window of its class's schedule (Awake reason `Schedule`).
    SleepingSchedule,
    /// Woke from sleep.
    Woke,
    /// A test passed without the phase changing (a failed one is `Condition(TestFailed)`).
    TestSucceeded,
    /// The resync found the pull request closed; the preview is deleted.
    PullRequestClosed,
    /// Past its ttl or its class's maxLifetime; the preview is deleted.
    Expired,
    /// Slept as long as its class's deleteAfterSleeping allows; the preview is deleted.
    SleptTooLong,
}

impl Reason {
    /// The reason as the Event carries it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Condition(reason) => reason.as_str(),
            Reason::Phase(phase) => phase.as_str(),
            Reason::SleepingIdle => "SleepingIdle",
            Reason::SleepingSchedule => "SleepingSchedule",
            Reason::Woke => "Woke",
            Reason::TestSucceeded => "TestSucceeded",
            Reason::PullRequestClosed => "PullRequestClosed",
            Reason::Expired => "Expired",
            Reason::SleptTooLong => "SleptTooLong",
        }
    }

    /// The reason of a preview that ended with the Ready condition's reason `text`; `None`
    /// for a text this operator does not write (the status it just computed always has one).
    pub fn condition(text: &str) -> Option<Reason> {
        api::Reason::parse(text).map(Reason::Condition)
    }

    /// The reason of a preview that fell asleep with the Awake condition's reason `text`.
    pub fn asleep(text: &str) -> Option<Reason> {
        match api::Reason::parse(text)? {
            api::Reason::Idle => Some(Reason::SleepingIdle),
            api::Reason::Schedule => Some(Reason::SleepingSchedule),
            _ => None,
        }
    }
}

impl From<api::Reason> for Reason {
    fn from(reason: api::Reason) -> Self {
        Reason::Condition(reason)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tests (here and in the cluster) assert the text the cluster sees, not the variant.
impl PartialEq<&str> for Reason {
    fn eq(&self, text: &&str) -> bool {
        self.as_str() == *text
    }
}

/// One Event to publish about `regarding`.
#[derive(Clone, Debug)]
pub struct Note {
    pub kind: Kind,
    pub reason: Reason,
    pub note: String,
    pub regarding: ObjectReference,
}

/// Who publishes: the controller's name and this process's instance.
#[derive(Clone, Debug)]
pub struct Reporter {
    pub controller: String,
    pub instance: String,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::Sender<Note>,
}

impl Events {
    /// Starts the publishing task. It ends once every `Events` is dropped and the queue is
    /// drained.
    pub fn start(client: Client, reporter: Reporter) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Note>(QUEUE);
        let task = tokio::spawn(async move {
            tokio_stream::wrappers::ReceiverStream::new(rx)
                .for_each_concurrent(CONCURRENCY, |note| {
                    let client = client.clone();
                    let reporter = reporter.clone();
                    async move {
                        let namespace = event_namespace(&note.regarding).to_string();
                        let event = render(&note, &reporter, Timestamp::now());
                        let api: Api<Event> = Api::namespaced(client, &namespace);
                        if let Err(error) = api.create(&PostParams::default(), &event).await {
                            debug!(%error, reason = %note.reason, "failed to publish event");
                        }
                    }
                })
                .await;
        });
        (Self { tx }, task)
    }

    /// Queues an Event; never waits.
    pub fn send(&self, note: Note) {
        if let Err(error) = self.tx.try_send(note) {
            warn!(%error, "event queue full or closed; event dropped");
        }
    }
}

/// Where an Event about `regarding` lives: its namespace, and `default` for a cluster-scoped
/// object (a PreviewClass), where `kubectl describe` looks for it.
fn event_namespace(regarding: &ObjectReference) -> &str {
    regarding.namespace.as_deref().unwrap_or("default")
}

/// The Event object for `note` at `now`. Its name is the object's name and the time in
/// nanoseconds, as client-go names Events, so two Events never collide.
pub fn render(note: &Note, reporter: &Reporter, now: Timestamp) -> Event {
    let name = note.regarding.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(event_namespace(&note.regarding).to_string()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some("Reconcile".to_string()),
        reason: Some(note.reason.as_str().to_string()),
        note: Some(note.note.chars().take(MAX_NOTE).collect()),
        type_: Some(
            match note.kind {
                Kind::Normal => "Normal",
                Kind::Warning => "Warning",
            }
            .to_string(),
        ),
        regarding: Some(note.regarding.clone()),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(reporter.instance.clone()),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_object_reporter_and_reason() {
        let note = Note {
            kind: Kind::Warning,
            reason: api::Reason::TestFailed.into(),
            note: "x".repeat(2000),
            regarding: ObjectReference {
                api_version: Some("preview.dev/v1alpha1".into()),
                kind: Some("PreviewEnvironment".into()),
                name: Some("shop-pr-1".into()),
                namespace: Some("team-shop".into()),
                uid: Some("u-1".into()),
                ..ObjectReference::default()
            },
        };
        let reporter = Reporter {
            controller: "preview-operator".into(),
            instance: "pod-a".into(),
        };
        let now: Timestamp = "2026-11-26T10:00:00.000000123Z".parse().expect("time");
        let e = render(&note, &reporter, now);
        assert_eq!(e.metadata.namespace.as_deref(), Some("team-shop"));
        let name = e.metadata.name.clone().expect("name");
        assert!(name.starts_with("shop-pr-1."), "{name}");
        let later = render(&note, &reporter, now + std::time::Duration::from_nanos(1));
        assert_ne!(later.metadata.name, e.metadata.name);
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("TestFailed"));
        assert_eq!(e.note.as_ref().map(String::len), Some(MAX_NOTE));
        assert_eq!(e.reporting_instance.as_deref(), Some("pod-a"));
        assert_eq!(e.regarding.and_then(|r| r.uid).as_deref(), Some("u-1"));
        assert!(e.event_time.is_some());
    }

    #[test]
    fn every_event_reason_keeps_the_text_the_cluster_sees() {
        let reasons = [
            (Reason::Condition(api::Reason::TestFailed), "TestFailed"),
            (Reason::Condition(api::Reason::Ready), "Ready"),
            (Reason::Phase(Phase::Deploying), "Deploying"),
            (Reason::Phase(Phase::Pending), "Pending"),
            (Reason::SleepingIdle, "SleepingIdle"),
            (Reason::SleepingSchedule, "SleepingSchedule"),
            (Reason::Woke, "Woke"),
            (Reason::TestSucceeded, "TestSucceeded"),
            (Reason::PullRequestClosed, "PullRequestClosed"),
            (Reason::Expired, "Expired"),
            (Reason::SleptTooLong, "SleptTooLong"),
        ];
        for (reason, text) in reasons {
            assert_eq!(reason.as_str(), text);
            assert_eq!(reason.to_string(), text);
        }
    }

    #[test]
    fn reasons_read_from_conditions_are_the_ones_the_operator_writes() {
        assert_eq!(
            Reason::condition("CrashLoopBackOff"),
            Some(Reason::Condition(api::Reason::CrashLoopBackOff))
        );
        assert_eq!(Reason::condition("SomethingElse"), None);
        assert_eq!(Reason::asleep("Idle"), Some(Reason::SleepingIdle));
        assert_eq!(Reason::asleep("Schedule"), Some(Reason::SleepingSchedule));
        assert_eq!(Reason::asleep("Awake"), None, "not a reason to sleep");
        assert_eq!(Reason::asleep("Nap"), None);
    }
}
