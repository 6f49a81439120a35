//! Who may do what on the rig: the chart's ServiceAccount holds no more than the operator's
//! code paths need (no Secrets or ConfigMaps cluster-wide, no wildcard), and a class's viewers
//! may read their preview namespace and nothing more. hack/test.sh installs the chart and runs
//! the operator as its ServiceAccount.

mod common;

use std::time::Duration;

use common::{
    Tenant, TestClass, await_ready, client, kubectl, require_operator, rig_var, shop, wait_for,
};
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::Api;
use serde_json::json;

const READY: Duration = Duration::from_secs(60);

fn can_i(args: &[&str]) -> bool {
    let sa = rig_var("PREVIEW_OPERATOR_SA");
    let ns = sa.split(':').nth(2).unwrap_or_default().to_string();
    let mut full = vec!["auth", "can-i"];
    full.extend_from_slice(args);
    let groups = format!("system:serviceaccounts:{ns}");
    full.extend_from_slice(&[
        "--as",
        &sa,
        "--as-group",
        "system:serviceaccounts",
        "--as-group",
        &groups,
    ]);
    let (_, out, _) = kubectl(&full);
    out.trim() == "yes"
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn the_chart_service_account_cannot_do_what_the_operator_must_not() {
    require_operator();
    let forbidden: &[&[&str]] = &[
        &["get", "secrets", "-A"],
        &["list", "secrets", "-A"],
        &["get", "secrets", "-n", "team-x"],
        // Its own credentials (GitHub App key, tokens) are mounted files, never read.
        &["get", "secrets", "-n", "preview-system"],
        &["list", "secrets", "-n", "preview-system"],
        &["list", "secrets", "-n", "pr-anything"],
        &["get", "secrets", "-n", "pr-anything"],
        &["create", "pods", "-n", "default"],
        &["create", "pods/exec", "-n", "default"],
        &["delete", "pods", "-n", "default"],
        &["patch", "events.events.k8s.io", "-n", "default"],
        &["get", "pods/log", "-n", "default"],
        &["delete", "nodes"],
        &["escalate", "clusterroles"],
        &["bind", "clusterroles"],
        &["bind", "clusterroles/admin"],
        &["bind", "clusterroles/edit"],
        &["bind", "clusterroles/cluster-admin"],
        &["create", "clusterrolebindings"],
        &["impersonate", "users"],
        &["impersonate", "serviceaccounts"],
        &["update", "customresourcedefinitions"],
        &["delete", "customresourcedefinitions"],
        &["update", "deployments", "-n", "default"],
        &["*", "*"],
        &["patch", "leases", "-n", "default"],
    ];
    let allowed: &[&[&str]] = &[
        &[
            "patch",
            "previewenvironments.preview.dev/status",
            "-n",
            "team-x",
        ],
        &["create", "namespaces"],
        &["patch", "deployments", "-n", "pr-anything"],
        &["create", "jobs", "-n", "pr-anything"],
        &["watch", "pods", "-n", "pr-anything"],
        &["create", "events.events.k8s.io", "-n", "team-x"],
        &["patch", "leases", "-n", "preview-system"],
        // The class's viewers get `view` in preview namespaces: exactly that binding.
        &["bind", "clusterroles/view"],
        // The class's Secrets: read in the platform Secrets namespace only, copies written,
        // not read.
        &["list", "secrets", "-n", "preview-system-platform-secrets"],
        &["patch", "secrets", "-n", "pr-anything"],
        &["create", "rolebindings", "-n", "pr-anything"],
    ];
    let wrongly_allowed: Vec<String> = forbidden
        .iter()
        .filter(|a| can_i(a))
        .map(|a| a.join(" "))
        .collect();
    assert!(
        wrongly_allowed.is_empty(),
        "the operator may: {wrongly_allowed:?}"
    );
    let wrongly_denied: Vec<String> = allowed
        .iter()
        .filter(|a| !can_i(a))
        .map(|a| a.join(" "))
        .collect();
    assert!(
        wrongly_denied.is_empty(),
        "the operator may not: {wrongly_denied:?}"
    );

    // And no rule of the installed ClusterRole uses a wildcard.
    let client = client().await;
    let role = Api::<ClusterRole>::all(client)
        .get("preview-operator")
        .await
        .expect("chart ClusterRole");
    for rule in role.rules.unwrap_or_default() {
        let everything = rule
            .verbs
            .iter()
            .chain(rule.resources.iter().flatten())
            .chain(rule.api_groups.iter().flatten());
        assert!(everything.clone().all(|s| s != "*"), "wildcard in {rule:?}");
    }
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn the_operator_reads_no_secrets_or_config_maps_cluster_wide() {
    common::require_operator();
    let sa =
        std::env::var("PREVIEW_OPERATOR_SA").expect("hack/test.sh exports PREVIEW_OPERATOR_SA");
    for verb in ["get", "list", "watch"] {
        for resource in ["secrets", "configmaps"] {
            let (allowed, out, _) = kubectl(&[
                "auth",
                "can-i",
                verb,
                resource,
                "--all-namespaces",
                &format!("--as={sa}"),
            ]);
            assert!(
                !allowed && out.trim() == "no",
                "the operator may {verb} {resource} cluster-wide: {out}"
            );
        }
    }
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_class_viewer_may_read_the_preview_namespace_and_nothing_more() {
    let s = Tenant::new("lc-view").await;
    let user = format!("dev-{}", s.namespace.name);
    let class_name = format!("viewers-{}", s.namespace.name);
    let _class = TestClass::create(
        &s.client,
        &class_name,
        json!({"tenants": [{"namespaces": [s.namespace.name], "repositories": ["*/*"],
                            "viewers": [{"kind": "User", "name": user}]}]}),
    )
    .await;
    let mut spec = shop("7e7e7e7e111");
    spec["previewClassName"] = json!(class_name);
    s.create("shop", spec).await;
    await_ready(&s.api, "shop", READY).await;
    let ns = s.preview_ns("shop");
    let can = |verb: &str, resource: &str, namespace: &str| {
        kubectl(&[
            "auth", "can-i", verb, resource, "-n", namespace, "--as", &user,
        ])
        .0
    };
    // RBAC is eventually consistent only in the authorizer's cache: poll briefly.
    wait_for("the viewer's grant", READY, || async {
        can("get", "pods", &ns)
            .then_some(())
            .ok_or("not yet".to_string())
    })
    .await;
    assert!(can("get", "pods/log", &ns), "logs of their preview");
    assert!(can("list", "jobs.batch", &ns), "its test Jobs");
    assert!(!can("create", "deployments", &ns), "read only");
    assert!(!can("get", "secrets", &ns), "view excludes Secrets");
    assert!(
        !can("get", "pods", &s.namespace.name),
        "nothing outside the preview"
    );
    s.delete_and_wait("shop").await;
}
