use super::*;
use serde_json::json;

fn class(name: &str, spec: serde_json::Value, default: bool) -> Arc<PreviewClass> {
    let annotations = if default {
        json!({"preview.dev/is-default-class": "true"})
    } else {
        json!({})
    };
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "preview.dev/v1alpha1", "kind": "PreviewClass",
            "metadata": {"name": name, "generation": 2, "annotations": annotations,
                         "creationTimestamp": "2026-12-01T00:00:00Z"},
            "spec": spec,
        }))
        .expect("class"),
    )
}

fn preview(name: &str, class: Option<&str>) -> Arc<PreviewEnvironment> {
    let mut spec = json!({"repository": "acme/shop", "pullRequest": 1, "headSha": "abcdef12",
                          "services": [{"name": "web", "image": "web:1"}]});
    if let Some(class) = class {
        spec["previewClassName"] = json!(class);
    }
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "preview.dev/v1alpha1", "kind": "PreviewEnvironment",
            "metadata": {"name": name, "namespace": "team-shop"}, "spec": spec,
        }))
        .expect("preview"),
    )
}

fn now() -> Timestamp {
    "2026-12-05T10:00:00Z".parse().expect("time")
}

#[test]
fn a_class_counts_the_previews_it_serves_and_names_its_tenants() {
    let standard = class(
        "standard",
        json!({"tenants": [{"namespaces": ["team-a", "team-b", "team-c", "team-d"],
                            "repositories": ["acme/*"]},
                           {"namespaceSelector": {"matchLabels": {"x": "y"}},
                            "repositories": ["acme/*"]}]}),
        true,
    );
    let gpu = class("gpu", json!({}), false);
    let classes = vec![standard.clone(), gpu.clone()];
    let previews = vec![
        preview("a", None),
        preview("b", Some("standard")),
        preview("c", Some("gpu")),
        preview("d", Some("missing")),
    ];
    let status = status_of(&standard, &classes, &previews, |_| true, "ops", now());
    assert_eq!(
        status.previews, 2,
        "the default class serves previews naming none"
    );
    assert_eq!(status.tenants, "team-a,team-b,team-c +2");
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.conditions[0].status, "True");
    let gpu_status = status_of(&gpu, &classes, &previews, |_| true, "ops", now());
    assert_eq!(
        (gpu_status.previews, gpu_status.tenants.as_str()),
        (1, "(none)")
    );
}

#[test]
fn a_missing_secret_is_the_class_s_problem_named_with_where_it_belongs() {
    let spec = json!({"imagePullSecrets": [{"name": "registry"}, {"name": "there"}],
                      "ingress": {"baseDomain": "p.example", "tlsSecretName": "wildcard"}});
    let c = class("standard", spec, true);
    let status = status_of(
        &c,
        std::slice::from_ref(&c),
        &[],
        |s| s == "there",
        "ops",
        now(),
    );
    let ready = &status.conditions[0];
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "ClassNotReady")
    );
    assert!(
        ready.message.contains("registry, wildcard"),
        "{}",
        ready.message
    );
    assert!(ready.message.contains("namespace ops"), "{}", ready.message);
}

#[test]
fn only_a_change_is_written_and_the_transition_time_is_kept() {
    let c = class("standard", json!({}), true);
    let first = status_of(&c, std::slice::from_ref(&c), &[], |_| true, "ops", now());
    let mut shown = (*c).clone();
    shown.status = Some(first.clone());
    let shown = Arc::new(shown);
    let later: Timestamp = "2026-12-05T11:00:00Z".parse().expect("time");
    let again = status_of(
        &shown,
        std::slice::from_ref(&shown),
        &[],
        |_| true,
        "ops",
        later,
    );
    assert_eq!(again, first, "the condition keeps its transition time");
    assert!(same(&first, &again));
    let more = status_of(
        &shown,
        std::slice::from_ref(&shown),
        &[preview("a", None)],
        |_| true,
        "ops",
        later,
    );
    assert!(!same(&first, &more), "a preview more is a change");
}
