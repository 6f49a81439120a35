use super::*;
use crate::api::{ServiceStatus, TestStatus};
use crate::controller::observe::{ObservedService, ServiceState, TestRun};
use kube::runtime::reflector::ObjectRef;

fn key(name: &str) -> ObjectRef<PreviewEnvironment> {
    ObjectRef::new(name).within("team")
}

#[test]
fn at_most_the_limit_roll_out_and_a_freed_slot_wakes_the_first_in_line() {
    let (wake, mut woken) = mpsc::unbounded_channel();
    let slots = Rollouts::new(2, wake);
    assert_eq!(slots.start("a", key("a")), Ok(()));
    assert_eq!(slots.start("b", key("b")), Ok(()));
    assert_eq!(slots.start("c", key("c")), Err(0));
    assert_eq!(slots.start("d", key("d")), Err(1));
    assert_eq!(
        slots.start("a", key("a")),
        Ok(()),
        "a holder keeps its slot"
    );
    assert_eq!(
        slots.start("d", key("d")),
        Err(1),
        "d keeps its place in line"
    );
    slots.finish("a");
    assert_eq!(woken.try_recv().ok(), Some(key("c")));
    assert!(
        woken.try_recv().is_err(),
        "one slot freed, one preview woken"
    );
    assert_eq!(
        slots.start("d", key("d")),
        Err(1),
        "d may not jump the line"
    );
    assert_eq!(slots.start("c", key("c")), Ok(()));
    assert_eq!(slots.running(), 2);
    slots.finish("d");
    slots.finish("b");
    assert_eq!(
        slots.start("e", key("e")),
        Ok(()),
        "d left the line when it was forgotten"
    );
}

#[test]
fn no_limit_means_every_preview_rolls_out() {
    let (wake, _woken) = mpsc::unbounded_channel();
    let slots = Rollouts::new(0, wake);
    for uid in ["a", "b", "c"] {
        assert_eq!(slots.start(uid, key(uid)), Ok(()));
    }
}

fn settled(class: i64, template: Option<i64>) -> PreviewEnvironmentStatus {
    PreviewEnvironmentStatus {
        observed_generation: Some(1),
        deployed_sha: Some("abc1234".into()),
        revision: Some(Revision {
            class_generation: Some(class),
            template_generation: template,
        }),
        ..PreviewEnvironmentStatus::default()
    }
}

fn now(class: i64, template: Option<i64>) -> Revision {
    Revision {
        class_generation: Some(class),
        template_generation: template,
    }
}

#[test]
fn a_change_of_class_or_template_is_a_fleet_change_only_for_a_settled_preview() {
    let status = settled(1, Some(4));
    let cause = |s: Option<&PreviewEnvironmentStatus>, generation, sha, rev| {
        super::cause(s, Some(generation), sha, rev)
    };
    assert_eq!(cause(Some(&status), 1, "abc1234", now(1, Some(4))), None);
    assert_eq!(
        cause(Some(&status), 1, "abc1234", now(2, Some(4))),
        Some(Reason::ClassChanged)
    );
    assert_eq!(
        cause(Some(&status), 1, "abc1234", now(2, Some(5))),
        Some(Reason::TemplateChanged),
        "the template's change names it when both changed"
    );
    assert_eq!(
        cause(Some(&status), 2, "abc1234", now(2, Some(4))),
        None,
        "its own spec changed: its own rollout"
    );
    assert_eq!(
        cause(Some(&status), 1, "def5678", now(2, Some(4))),
        None,
        "a new sha: its own rollout"
    );
    assert_eq!(
        cause(None, 1, "abc1234", now(2, None)),
        None,
        "a new preview"
    );
    let before = PreviewEnvironmentStatus {
        revision: None,
        ..status
    };
    assert_eq!(
        cause(Some(&before), 1, "abc1234", now(2, Some(4))),
        None,
        "a status from before revisions were recorded adopts the current ones"
    );
}

fn observed(available: bool, test: TestPhase) -> Observed {
    Observed {
        services: vec![ObservedService {
            name: "web".into(),
            state: if available {
                ServiceState::Available
            } else {
                ServiceState::Progressing("rolling".into())
            },
            ready_replicas: 1,
            replicas: 1,
        }],
        tests: vec![TestRun {
            status: TestStatus {
                name: "e2e".into(),
                sha: "abc1234".into(),
                phase: test,
                job: None,
                started_at: None,
                finished_at: None,
                message: None,
                reason: None,
            },
            timed_out: false,
        }],
        ..Observed::default()
    }
}

fn fleet(cause: Option<Reason>, queued: Option<usize>) -> Fleet {
    Fleet {
        now: now(2, Some(5)),
        cause,
        queued,
        missing_secrets: Vec::new(),
        changing: false,
        blocked: None,
        change: Some("PreviewTemplate team/shop@5".into()),
        halted: None,
        class: Some("standard".into()),
        template: Some("shop".into()),
        limit: 10,
    }
}

#[test]
fn a_change_is_rolled_out_once_the_services_are_available_and_the_tests_finished() {
    let f = fleet(Some(Reason::ClassChanged), None);
    assert!(f.rolled_out(&observed(true, TestPhase::Succeeded)));
    assert!(f.rolled_out(&observed(true, TestPhase::Failed)));
    assert!(!f.rolled_out(&observed(false, TestPhase::Succeeded)));
    assert!(!f.rolled_out(&observed(true, TestPhase::Running)));
    assert!(!f.rolled_out(&observed(true, TestPhase::Pending)));
    let waiting = fleet(Some(Reason::ClassChanged), Some(3));
    assert!(!waiting.rolled_out(&observed(true, TestPhase::Succeeded)));
    let applying = Fleet {
        changing: true,
        ..fleet(Some(Reason::ClassChanged), None)
    };
    assert!(
        !applying.rolled_out(&observed(true, TestPhase::Succeeded)),
        "what a pass that changes workloads observed is from before the change"
    );
    let missing = Fleet {
        missing_secrets: vec!["ops/registry".into()],
        ..fleet(None, None)
    };
    assert!(!missing.rolled_out(&observed(true, TestPhase::Succeeded)));
}

#[test]
fn up_to_date_says_what_waits_and_why() {
    let queued = fleet(Some(Reason::TemplateChanged), Some(3)).up_to_date(false);
    assert_eq!(queued.reason, Reason::RolloutQueued);
    assert!(
        queued.message.contains("PreviewTemplate shop"),
        "{}",
        queued.message
    );
    assert!(
        queued.message.contains("3 wait before"),
        "{}",
        queued.message
    );
    let rolling = fleet(Some(Reason::ClassChanged), None).up_to_date(false);
    assert_eq!(rolling.reason, Reason::ClassChanged);
    assert!(rolling.message.contains("PreviewClass standard"));
    let done = fleet(Some(Reason::ClassChanged), None).up_to_date(true);
    assert_eq!(done.reason, Reason::UpToDate);
    let blocked = Fleet {
        blocked: Some((
            Reason::SecretNotReadable,
            "Secret shop-db is missing".into(),
        )),
        ..fleet(Some(Reason::TemplateChanged), None)
    };
    let verdict = blocked.up_to_date(false);
    assert_eq!(verdict.reason, Reason::SecretNotReadable);
    assert!(
        verdict.message.contains("keeps running"),
        "{}",
        verdict.message
    );
    assert!(!blocked.rolled_out(&observed(true, TestPhase::Succeeded)));
    let mut missing = fleet(None, None);
    missing.missing_secrets = vec!["registry-auth".into()];
    let verdict = missing.up_to_date(true);
    assert_eq!(verdict.reason, Reason::ClassNotReady);
    assert!(verdict.message.contains("registry-auth"));
    let _ = ServiceStatus::default();
}

#[test]
fn a_change_that_failed_on_two_previews_rolls_out_no_further() {
    let (wake, _woken) = mpsc::unbounded_channel();
    let slots = Rollouts::new(1, wake);
    let change = "PreviewClass standard@4";
    slots.failed(change, "team/a");
    assert_eq!(slots.halted(change), None, "one failure may be a flake");
    slots.failed(change, "team/a");
    assert_eq!(
        slots.halted(change),
        None,
        "the same preview twice is one failure"
    );
    slots.failed(change, "team/b");
    assert_eq!(
        slots.halted(change),
        Some(vec!["team/a".to_string(), "team/b".to_string()])
    );
    assert_eq!(
        slots.halted("PreviewClass standard@5"),
        None,
        "a new generation goes again"
    );
    let halted = Fleet {
        halted: slots.halted(change),
        ..fleet(Some(Reason::ClassChanged), None)
    };
    let verdict = halted.up_to_date(false);
    assert_eq!(verdict.reason, Reason::RolloutHalted);
    assert!(
        verdict.message.contains("team/a, team/b"),
        "{}",
        verdict.message
    );
    assert!(!halted.rolled_out(&observed(true, TestPhase::Succeeded)));
}
