//! What the operator writes, on the rig against the running operator (hack/test.sh): children
//! created once and handed over to server-side apply when they change, the finalizer set at
//! admission by the chart's policy, and nothing at all while a preview is idle.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Tenant, await_ready, shop, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const READY: Duration = Duration::from_secs(60);

async fn setup(prefix: &str) -> Tenant {
    Tenant::new(prefix).await
}

/// The operator's entries in `meta`'s managed fields: (operation, subresource).
fn operator_entries(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<(String, String)> {
    (meta.managed_fields.iter().flatten())
        .filter(|e| e.manager.as_deref() == Some(preview_operator::naming::MANAGER))
        .map(|e| {
            (
                e.operation.clone().unwrap_or_default(),
                e.subresource.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_preview_has_its_finalizer_from_its_creation_and_the_operator_never_writes_the_preview_itself()
 {
    let s = setup("lc-admitted").await;
    // The chart's MutatingAdmissionPolicy sets it as the API server admits the preview.
    let created = s.create("shop", shop("abab123aaaa")).await;
    assert!(
        created
            .finalizers()
            .iter()
            .any(|f| f == "preview.dev/teardown"),
        "finalizers at creation: {:?}",
        created.finalizers()
    );
    await_ready(&s.api, "shop", READY).await;
    let pe = s.api.get("shop").await.expect("get");
    let written = operator_entries(&pe.metadata);
    assert!(
        written
            .iter()
            .all(|(_, subresource)| subresource == "status"),
        "the operator wrote only the status: {written:?}"
    );
    assert!(!written.is_empty(), "and it did write the status");
    s.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn children_are_created_and_a_field_the_spec_drops_is_removed_afterwards() {
    let s = setup("lc-handover").await;
    s.create("shop", shop("cdcd123aaaa")).await;
    await_ready(&s.api, "shop", READY).await;
    let ns = s.preview_ns("shop");
    let deployments = Api::<Deployment>::namespaced(s.client.clone(), &ns);
    let probe = |d: &Deployment| {
        (d.spec.as_ref())
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.readiness_probe.clone())
    };
    let web = deployments.get("web").await.expect("web");
    assert_eq!(
        operator_entries(&web.metadata),
        [("Update".to_string(), String::new())],
        "written once, by a create"
    );
    assert!(
        probe(&web).is_some(),
        "readinessPath makes a readiness probe"
    );
    let services = Api::<Service>::namespaced(s.client.clone(), &ns);
    let service = services.get("web").await.expect("Service web");
    assert_eq!(
        operator_entries(&service.metadata),
        [("Update".to_string(), String::new())]
    );

    // The spec drops the readiness path: the apply that follows the create removes the probe.
    let mut spec = shop("cdcd123aaaa");
    spec["services"][0]
        .as_object_mut()
        .expect("the web service")
        .remove("readinessPath");
    s.patch_spec("shop", spec).await;
    let web = wait_for("the readiness probe to be removed", READY, || async {
        let web = deployments.get("web").await.map_err(|e| e.to_string())?;
        match probe(&web) {
            None => Ok(web),
            Some(p) => Err(format!("still {p:?}")),
        }
    })
    .await;
    assert_eq!(
        operator_entries(&web.metadata),
        [("Apply".to_string(), String::new())],
        "the create's fields handed over to the operator's apply"
    );
    await_ready(&s.api, "shop", READY).await;
    s.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn previews_created_at_once_each_get_their_service_once_before_they_are_ready() {
    // More previews at once than there are turns to create Services (`cluster_ips`): some
    // create everything else first and their Services when a turn is free. Four tenants,
    // as the test class runs two previews per namespace at a time.
    let tenants = futures::future::join_all((0..4).map(|_| setup("lc-burst"))).await;
    let names = ["shop-a", "shop-b"];
    let previews: Vec<(&Tenant, &str)> = (tenants.iter())
        .flat_map(|t| names.iter().map(move |n| (t, *n)))
        .collect();
    futures::future::join_all(
        (previews.iter()).map(|(t, name)| t.create(name, shop("efef123aaaa"))),
    )
    .await;
    // Eight rollouts at once on a rig that the other tests share: a deadline of its own.
    let ready_within = READY * 2;
    for (t, name) in &previews {
        let ready = await_ready(&t.api, name, ready_within).await;
        let ns = t.preview_ns(name);
        let service = Api::<Service>::namespaced(t.client.clone(), &ns)
            .get("web")
            .await
            .unwrap_or_else(|e| panic!("{ns} is Ready, so its Service web exists: {e}"));
        assert_eq!(
            operator_entries(&service.metadata),
            [("Update".to_string(), String::new())],
            "{ns}: created once, never applied over"
        );
        let status = ready.status.expect("a Ready preview has a status");
        assert!(
            status.url.is_some_and(|u| u.contains(&ns)),
            "{ns}: its URL names its namespace"
        );
    }
    for (t, name) in &previews {
        t.delete_and_wait(name).await;
    }
}

/// resourceVersions of the preview's children, by kind/name.
async fn child_versions(client: &Client, ns: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let lp = ListParams::default();
    macro_rules! collect {
        ($kind:ty) => {
            for o in Api::<$kind>::namespaced(client.clone(), ns)
                .list(&lp)
                .await
                .expect("list")
                .items
            {
                out.insert(
                    format!("{}/{}", stringify!($kind), o.name_any()),
                    o.resource_version().unwrap_or_default(),
                );
            }
        };
    }
    collect!(Deployment);
    collect!(StatefulSet);
    collect!(ConfigMap);
    collect!(Secret);
    collect!(Service);
    collect!(Job);
    collect!(NetworkPolicy);
    collect!(ResourceQuota);
    collect!(LimitRange);
    let nsobj = Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .expect("ns");
    out.insert(
        "Namespace".into(),
        nsobj.resource_version().unwrap_or_default(),
    );
    out
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn an_idle_preview_gets_no_writes() {
    // One preview with inline services, one from a template with a dependency, a setup Job
    // and copied sources: neither may be written while nothing changes.
    let s = setup("lc-idle").await;
    s.create_shop_sources("idle").await;
    s.grant_sources().await;
    s.create_template("shop", common::shop_template()).await;
    s.create("shop", shop("d000001")).await;
    s.create(
        "tpl",
        json!({"repository": "acme/shop", "pullRequest": 8, "headSha": "d000002",
               "templateRef": {"name": "shop"}}),
    )
    .await;
    await_ready(&s.api, "shop", READY).await;
    await_ready(&s.api, "tpl", READY).await;
    let namespaces = [s.preview_ns("shop"), s.preview_ns("tpl")];
    let versions = || async {
        let mut all = BTreeMap::new();
        for ns in &namespaces {
            all.extend(child_versions(&s.client, ns).await);
        }
        all
    };
    // Let the last status write and the rollout's own updates settle: wait until two reads a
    // second apart agree.
    let stable = wait_for("the previews to settle", READY, || async {
        let a = versions().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let b = versions().await;
        if a == b {
            Ok(b)
        } else {
            Err(format!("{a:?} != {b:?}"))
        }
    })
    .await;
    let statuses = || async {
        let mut out = Vec::new();
        for name in ["shop", "tpl"] {
            out.push(s.api.get(name).await.expect("get").status);
        }
        out
    };
    let before = statuses().await;

    // Poke the operator: each annotation triggers a reconcile, which must change nothing.
    for i in 0..5 {
        for name in ["shop", "tpl"] {
            s.api
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"test/poke": i.to_string()}}}),
                    ),
                )
                .await
                .expect("poke");
        }
    }
    // The idle window over which nothing may be written.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(before, statuses().await, "status was rewritten while idle");
    assert_eq!(versions().await, stable, "children were written while idle");
    s.delete_and_wait("shop").await;
    s.delete_and_wait("tpl").await;
}
