//! Unit tests of `metrics`.

use super::*;
use crate::api::class::PreviewClassSpec;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher::Event;

/// Metrics over a class binding `team-shop` to `repositories`, and the writer of its cache
/// of previews.
fn metrics(repositories: &[&str]) -> (Metrics, Writer<PreviewEnvironment>) {
    let class = PreviewClass::new(
        "standard",
        PreviewClassSpec {
            tenants: serde_json::from_value(serde_json::json!([
                {"namespaces": ["team-shop"], "repositories": repositories}
            ]))
            .expect("tenants"),
            ..PreviewClassSpec::default()
        },
    );
    let (classes, mut class_writer) = reflector::store();
    class_writer.apply_watcher_event(&Event::Apply(class));
    let (previews, writer) = reflector::store();
    let m = Metrics::new();
    m.count_phases_in(previews, classes);
    (m, writer)
}

fn preview(name: &str, repository: &str) -> PreviewEnvironment {
    let mut pe = crate::fixtures::preview(name);
    pe.spec.repository = repository.to_string();
    pe
}

/// The lines of `metric` in the text exposition, sorted (a family's order is a hash map's).
fn lines(m: &Metrics, metric: &str) -> Vec<String> {
    let mut lines: Vec<String> = m
        .encode()
        .lines()
        .filter(|l| l.starts_with(&format!("preview_operator_{metric}{{")))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

fn account(m: &Metrics, repository: &str) {
    let requests = Requests {
        cpu_cores: 1.0,
        memory_bytes: 1.0,
    };
    m.account("team-shop", repository, true, 10.0, requests);
}

#[test]
fn variants_of_a_repositorys_case_are_one_series() {
    let (m, mut previews) = metrics(&["acme/shop"]);
    for (n, variant) in ["acme/shop", "Acme/Shop", "ACME/shop", "acme/SHOP"]
        .iter()
        .enumerate()
    {
        account(&m, variant);
        m.test_finished(true, None, "team-shop", variant);
        m.ready_after(Duration::from_secs(1), "team-shop", variant);
        previews.apply_watcher_event(&Event::Apply(preview(&format!("pr-{n}"), variant)));
    }
    assert_eq!(
        lines(&m, "requested_cpu_core_seconds_total"),
        [
            "preview_operator_requested_cpu_core_seconds_total{tenant=\"team-shop\",repository=\"acme/shop\"} 40.0"
        ]
    );
    assert_eq!(
        lines(&m, "test_runs_total"),
        [
            "preview_operator_test_runs_total{tenant=\"team-shop\",repository=\"acme/shop\",result=\"succeeded\"} 4"
        ]
    );
    assert_eq!(lines(&m, "time_to_ready_seconds_count").len(), 1);
    assert_eq!(
        lines(&m, "previews"),
        [
            "preview_operator_previews{tenant=\"team-shop\",repository=\"acme/shop\",phase=\"Pending\"} 4"
        ]
    );
}

#[test]
fn a_repository_a_glob_admits_is_labelled_with_the_glob() {
    let (m, mut previews) = metrics(&["acme/shop", "acme/*"]);
    for (n, invented) in ["acme/x1", "acme/whatever-a-tenant-invents", "Acme/Shop"]
        .iter()
        .enumerate()
    {
        account(&m, invented);
        previews.apply_watcher_event(&Event::Apply(preview(&format!("pr-{n}"), invented)));
    }
    // A repository no class binds (its preview is refused) is counted, but not by name.
    previews.apply_watcher_event(&Event::Apply(preview("refused", "evil/minted-1")));
    let text = m.encode();
    assert!(
        !text.contains("whatever") && !text.contains("x1") && !text.contains("minted"),
        "{text}"
    );
    assert_eq!(
        lines(&m, "environment_seconds_total"),
        [
            "preview_operator_environment_seconds_total{tenant=\"team-shop\",repository=\"acme/*\",state=\"awake\"} 20.0",
            "preview_operator_environment_seconds_total{tenant=\"team-shop\",repository=\"acme/shop\",state=\"awake\"} 10.0",
        ]
    );
    assert_eq!(
        lines(&m, "previews"),
        [
            "preview_operator_previews{tenant=\"team-shop\",repository=\"(unbound)\",phase=\"Pending\"} 1",
            "preview_operator_previews{tenant=\"team-shop\",repository=\"acme/*\",phase=\"Pending\"} 2",
            "preview_operator_previews{tenant=\"team-shop\",repository=\"acme/shop\",phase=\"Pending\"} 1",
        ]
    );
}

#[test]
fn the_series_of_a_gone_preview_are_dropped_after_a_while() {
    let (m, mut previews) = metrics(&["acme/shop", "acme/pay"]);
    let (shop, pay) = (preview("shop-1", "acme/shop"), preview("pay-1", "acme/pay"));
    for pe in [&shop, &pay] {
        previews.apply_watcher_event(&Event::Apply(pe.clone()));
        account(&m, &pe.spec.repository);
        m.test_finished(false, None, "team-shop", &pe.spec.repository);
        m.ready_after(Duration::from_secs(3), "team-shop", &pe.spec.repository);
    }
    previews.apply_watcher_event(&Event::Delete(shop));
    let now = Instant::now();
    m.prune(now);
    assert!(
        m.encode().contains("acme/shop"),
        "kept to be scraped once more"
    );
    m.prune(now + PRUNE_AFTER);
    let text = m.encode();
    assert!(!text.contains("acme/shop"), "{text}");
    for metric in [
        "requested_cpu_core_seconds_total",
        "requested_memory_byte_seconds_total",
        "environment_seconds_total",
        "test_runs_total",
        "time_to_ready_seconds_count",
    ] {
        assert_eq!(
            lines(&m, metric).len(),
            1,
            "{metric} of acme/pay stays:\n{text}"
        );
    }
}

#[test]
fn series_come_back_when_a_preview_returns_in_time() {
    let (m, mut previews) = metrics(&["acme/shop"]);
    let pe = preview("shop-1", "acme/shop");
    account(&m, "acme/shop");
    let now = Instant::now();
    m.prune(now);
    previews.apply_watcher_event(&Event::Apply(pe));
    m.prune(now + PRUNE_AFTER / 2);
    m.prune(now + PRUNE_AFTER);
    assert_eq!(lines(&m, "requested_cpu_core_seconds_total").len(), 1);
}

#[test]
fn encoding_names_carry_the_prefix() {
    let m = Metrics::new();
    m.reconciled(Duration::from_millis(5), Some(ErrorCategory::Apply));
    m.api_request("patch", "deployments", 200);
    let text = m.encode();
    assert!(
        text.contains("preview_operator_reconciles_total 1"),
        "{text}"
    );
    assert!(
        text.contains("preview_operator_reconcile_errors_total{category=\"apply\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "preview_operator_kubernetes_requests_total{verb=\"patch\",resource=\"deployments\",code=\"200\"} 1"
        ),
        "{text}"
    );
}

#[test]
fn every_failure_category_is_exported_from_the_start_with_its_label_text() {
    assert!(!ErrorCategory::FAILURES.contains(&ErrorCategory::TeardownInProgress));
    let mut exported = lines(&Metrics::new(), "reconcile_errors_total");
    exported.sort();
    let mut expected: Vec<String> = [
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
    .iter()
    .map(|c| format!("preview_operator_reconcile_errors_total{{category=\"{c}\"}} 0"))
    .collect();
    expected.sort();
    assert_eq!(exported, expected);
}

#[test]
fn typed_labels_keep_their_text() {
    let m = Metrics::new();
    m.scm_request(Provider::Gitlab, "user", 0);
    m.scm_rate_limit_remaining(Provider::Github, 42);
    m.webhook_delivery(WebhookResult::Unauthorized);
    m.commit_status(CommitStatusResult::Retried);
    let text = m.encode();
    for line in [
        "preview_operator_scm_requests_total{provider=\"gitlab\",endpoint=\"user\",status=\"0\"} 1",
        "preview_operator_scm_rate_limit_remaining{provider=\"github\"} 42",
        "preview_operator_webhook_deliveries_total{result=\"unauthorized\"} 1",
        "preview_operator_commit_statuses_total{result=\"retried\"} 1",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}
