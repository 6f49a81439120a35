//! The preview lifecycle on the rig, against the running operator (hack/test.sh starts it with
//! `--orphan-sweep-interval 3s` and the PreviewClass hack/classes/test.yaml: two previews per
//! namespace at a time).

mod common;

use std::time::Duration;

use common::{
    Tenant, TestClass, TestNamespace, await_condition, await_event, await_gone, await_ready,
    client, kubectl, require_operator, shop, wait_for,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, LimitRange, Namespace, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use preview_operator::api::{Phase, PreviewEnvironment, TestPhase};
use serde_json::json;

const READY: Duration = Duration::from_secs(60);
const TEARDOWN: Duration = Duration::from_secs(120);

async fn setup(prefix: &str) -> Tenant {
    Tenant::new(prefix).await
}

fn ready_condition(pe: &PreviewEnvironment, kind: &str) -> (String, String, String) {
    pe.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == kind))
        .map(|c| {
            (
                c.status.to_string(),
                c.reason.to_string(),
                c.message.clone(),
            )
        })
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_preview_goes_ready_with_tests_passed_and_every_hardening_object() {
    let s = setup("lc-ready").await;
    s.create("shop", shop("1111111aaaa")).await;
    let pe = await_ready(&s.api, "shop", READY).await;
    let status = pe.status.clone().unwrap_or_default();
    let ns = s.preview_ns("shop");
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(status.namespace.as_deref(), Some(ns.as_str()));
    assert_eq!(status.deployed_sha.as_deref(), Some("1111111aaaa"));
    assert_eq!(status.test_summary.as_deref(), Some("1/1 passed"));
    assert_eq!(status.tests[0].phase, TestPhase::Succeeded);
    assert_eq!(status.tests[0].job.as_deref(), Some("e2e-1111111"));
    assert!(status.expires_at.is_some());
    assert_eq!(
        status.url.as_deref(),
        Some(format!("http://web.{ns}.svc.cluster.local:8080").as_str())
    );
    assert_eq!(ready_condition(&pe, "Available").0, "True");
    assert_eq!(ready_condition(&pe, "TestsSucceeded").0, "True");

    let namespace = Api::<Namespace>::all(s.client.clone())
        .get(&ns)
        .await
        .expect("preview namespace exists");
    let labels = namespace.labels();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "preview-operator");
    assert_eq!(labels["preview.dev/owner-namespace"], s.namespace.name);
    assert_eq!(labels["preview.dev/owner-name"], "shop");
    assert_eq!(
        labels["preview.dev/owner-uid"],
        pe.uid().unwrap_or_default()
    );
    assert_eq!(labels["preview.dev/repository"], "acme.shop");
    assert_eq!(labels["preview.dev/pull-request"], "7");

    let c = &s.client;
    // KWOK enforces no NetworkPolicy, so the rendered rules are what is checked: egress is
    // denied but for the namespace itself and DNS (no metadata service, no API server).
    let np = Api::<NetworkPolicy>::namespaced(c.clone(), &ns)
        .get("preview-defaults")
        .await
        .expect("NetworkPolicy")
        .spec
        .expect("spec");
    assert_eq!(
        np.policy_types,
        Some(vec!["Ingress".to_string(), "Egress".to_string()])
    );
    let egress = np.egress.unwrap_or_default();
    assert_eq!(egress.len(), 2, "{egress:?}");
    let peers: Vec<_> = egress
        .iter()
        .flat_map(|r| r.to.clone().unwrap_or_default())
        .collect();
    assert!(
        peers.iter().all(|p| p.ip_block.is_none()),
        "no address range is open: {peers:?}"
    );
    let quota = Api::<ResourceQuota>::namespaced(c.clone(), &ns)
        .get("preview-defaults")
        .await
        .expect("ResourceQuota")
        .spec
        .and_then(|s| s.hard)
        .unwrap_or_default();
    assert!(
        quota.contains_key("requests.ephemeral-storage"),
        "{quota:?}"
    );
    assert_eq!(
        quota.get("requests.nvidia.com/gpu").map(|q| q.0.as_str()),
        Some("0")
    );
    let limits = Api::<LimitRange>::namespaced(c.clone(), &ns)
        .get("preview-defaults")
        .await
        .expect("LimitRange")
        .spec
        .expect("spec")
        .limits;
    assert!(
        limits[0]
            .max
            .as_ref()
            .is_some_and(|m| m.contains_key("memory"))
    );
    Api::<Service>::namespaced(c.clone(), &ns)
        .get("web")
        .await
        .expect("Service of web");
    assert!(
        Api::<Service>::namespaced(c.clone(), &ns)
            .get_opt("worker")
            .await
            .expect("get")
            .is_none(),
        "worker has no port, so no Service"
    );
    Api::<Job>::namespaced(c.clone(), &ns)
        .get("e2e-1111111")
        .await
        .expect("test Job");

    let (ok, out, err) = kubectl(&["get", "previewenv", "-n", &s.namespace.name]);
    assert!(ok, "{err}");
    assert!(out.contains("Ready") && out.contains("1/1 passed"), "{out}");

    s.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_new_head_sha_rolls_the_services_and_reruns_the_tests_in_the_same_namespace() {
    let s = setup("lc-sha").await;
    s.create("shop", shop("2222222aaaa")).await;
    await_ready(&s.api, "shop", READY).await;
    let ns = s.preview_ns("shop");
    let ns_uid = Api::<Namespace>::all(s.client.clone())
        .get(&ns)
        .await
        .expect("ns")
        .uid();

    s.patch_spec("shop", shop("3333333bbbb")).await;
    let pe = await_ready(&s.api, "shop", READY).await;
    let status = pe.status.unwrap_or_default();
    assert_eq!(status.deployed_sha.as_deref(), Some("3333333bbbb"));
    assert_eq!(status.tests[0].sha, "3333333bbbb");
    assert_eq!(status.tests[0].job.as_deref(), Some("e2e-3333333"));

    let now_uid = Api::<Namespace>::all(s.client.clone())
        .get(&ns)
        .await
        .expect("ns")
        .uid();
    assert_eq!(ns_uid, now_uid, "the same namespace is kept");
    let web = Api::<Deployment>::namespaced(s.client.clone(), &ns)
        .get("web")
        .await
        .expect("web");
    let image = web
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].image.clone());
    assert_eq!(
        image.flatten().as_deref(),
        Some("ghcr.io/acme/web:3333333bbbb")
    );
    let jobs = Api::<Job>::namespaced(s.client.clone(), &ns);
    await_gone("the old sha's Job", READY, || jobs.get_opt("e2e-2222222")).await;

    s.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_failing_test_fails_the_preview_with_a_message_saying_where_to_look() {
    let s = setup("lc-fail").await;
    let mut spec = shop("4444444aaaa");
    spec["tests"][0]["podAnnotations"] = json!({"preview.dev/simulate": "fail"});
    s.create("shop", spec).await;
    let pe = await_condition(
        &s.api,
        "shop",
        "TestsSucceeded",
        "False",
        Some("TestFailed"),
        READY,
    )
    .await;
    let (_, _, message) = ready_condition(&pe, "TestsSucceeded");
    // The command to paste names the preview namespace: it is not the developer's own.
    let logs = format!("kubectl logs -n {} job/e2e-4444444", s.preview_ns("shop"));
    assert!(
        message.contains("e2e") && message.contains(&logs),
        "{message}"
    );
    // The end of the test's output follows (the rig's failing pods print this message).
    wait_for("the failed test's output in its status", READY, || async {
        let pe = s.api.get("shop").await.map_err(|e| e.to_string())?;
        let (_, _, message) = ready_condition(&pe, "TestsSucceeded");
        message
            .contains("last output:\nsimulated failure")
            .then_some(())
            .ok_or(message)
    })
    .await;
    let pe = await_condition(&s.api, "shop", "Ready", "False", Some("TestFailed"), READY).await;
    let status = pe.status.unwrap_or_default();
    assert_eq!(status.phase, Some(Phase::Failed));
    assert_eq!(status.test_summary.as_deref(), Some("0/1 passed, 1 failed"));
    assert_eq!(
        ready_condition(&pe_after(&s, "shop").await, "Available").0,
        "True"
    );

    await_event(&s.client, &s.namespace.name, None, "TestFailed", READY).await;
    s.delete_and_wait("shop").await;
}

async fn pe_after(s: &Tenant, name: &str) -> PreviewEnvironment {
    s.api.get(name).await.expect("get preview")
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_crash_looping_service_is_reported_with_its_reason() {
    let s = setup("lc-crash").await;
    let mut spec = shop("5555555aaaa");
    spec["services"][1]["podAnnotations"] = json!({"preview.dev/simulate": "fail"});
    s.create("shop", spec).await;
    let pe = await_condition(
        &s.api,
        "shop",
        "Available",
        "False",
        Some("CrashLoopBackOff"),
        READY,
    )
    .await;
    let (_, _, message) = ready_condition(&pe, "Available");
    assert!(
        message.contains("service worker") && message.contains("CrashLoopBackOff"),
        "{message}"
    );
    let ns = pe
        .status
        .clone()
        .unwrap_or_default()
        .namespace
        .unwrap_or_default();
    assert!(
        message.contains(&format!("in namespace {ns}"))
            && message.contains(&format!("`kubectl logs -n {ns} worker-"))
            && message.contains("--previous`"),
        "names the namespace and the command that shows the crash: {message}"
    );
    assert_eq!(pe.status.and_then(|s| s.phase), Some(Phase::Failed));
    s.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_service_dropped_from_the_spec_is_deleted() {
    let s = setup("lc-drop").await;
    s.create("shop", shop("6666666aaaa")).await;
    await_ready(&s.api, "shop", READY).await;
    let ns = s.preview_ns("shop");
    let mut spec = shop("6666666aaaa");
    spec["services"] = json!([spec["services"][1].clone()]);
    // Merge patch would merge lists element-wise in nothing; it replaces them, as wanted.
    s.patch_spec("shop", spec).await;
    let deployments = Api::<Deployment>::namespaced(s.client.clone(), &ns);
    let services = Api::<Service>::namespaced(s.client.clone(), &ns);
    await_gone("Deployment web", READY, || deployments.get_opt("web")).await;
    await_gone("Service web", READY, || services.get_opt("web")).await;
    assert!(
        deployments.get_opt("worker").await.expect("get").is_some(),
        "worker stays"
    );
    await_ready(&s.api, "shop", READY).await;
    s.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn an_expired_preview_is_deleted_with_its_namespace() {
    let s = setup("lc-ttl").await;
    let mut spec = shop("7777777aaaa");
    spec["ttl"] = json!("10s");
    s.create("shop", spec).await;
    let pe = await_ready(&s.api, "shop", READY).await;
    assert!(pe.status.and_then(|st| st.expires_at).is_some());
    let ns = s.preview_ns("shop");
    let api = s.api.clone();
    await_gone("the expired preview", TEARDOWN, || api.get_opt("shop")).await;
    let namespaces = Api::<Namespace>::all(s.client.clone());
    assert!(
        namespaces.get_opt(&ns).await.expect("get ns").is_none(),
        "the finalizer is only released once the namespace is gone"
    );
    let events = Api::<Event>::namespaced(s.client.clone(), &s.namespace.name);
    let list = events.list(&ListParams::default()).await.expect("events");
    assert!(
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Expired")),
        "an Expired event is published"
    );
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn kubectl_delete_returns_only_after_the_namespace_is_gone() {
    let s = setup("lc-delete").await;
    s.create("shop", shop("8888888aaaa")).await;
    await_ready(&s.api, "shop", READY).await;
    let ns = s.preview_ns("shop");
    let (ok, _, err) = kubectl(&[
        "delete",
        "previewenv",
        "shop",
        "-n",
        &s.namespace.name,
        "--timeout=120s",
    ]);
    assert!(ok, "kubectl delete failed: {err}");
    let namespaces = Api::<Namespace>::all(s.client.clone());
    assert!(
        namespaces.get_opt(&ns).await.expect("get ns").is_none(),
        "namespace {ns} still exists"
    );
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_stripped_finalizer_comes_back() {
    let s = setup("lc-finalizer").await;
    s.create("shop", shop("9999999aaaa")).await;
    await_ready(&s.api, "shop", READY).await;
    s.api
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .expect("strip finalizer");
    wait_for("the finalizer to be re-added", READY, || async {
        let pe = s.api.get("shop").await.map_err(|e| e.to_string())?;
        pe.finalizers()
            .iter()
            .any(|f| f == "preview.dev/teardown")
            .then_some(())
            .ok_or_else(|| format!("{:?}", pe.finalizers()))
    })
    .await;
    s.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn an_orphaned_managed_namespace_is_swept() {
    require_operator();
    let client = client().await;
    let name = format!("pr-orphan-{}", std::process::id());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {
        "name": name,
        "labels": {
            "app.kubernetes.io/managed-by": "preview-operator",
            "preview.dev/owner-namespace": "nowhere",
            "preview.dev/owner-name": "gone",
            "preview.dev/owner-uid": "00000000-0000-0000-0000-000000000000"
        },
        "annotations": {"preview.dev/owner": "nowhere/gone"}
    }}))
    .expect("namespace fixture");
    let api = Api::<Namespace>::all(client.clone());
    api.create(&PostParams::default(), &ns)
        .await
        .expect("create orphan");
    await_gone("the orphaned namespace", TEARDOWN, || api.get_opt(&name)).await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_foreign_namespace_with_the_colliding_name_is_left_untouched() {
    let s = setup("lc-foreign").await;
    let name = s.preview_ns("shop");
    let foreign: Namespace = serde_json::from_value(json!({"metadata": {
        "name": name, "labels": {"team": "someone-else"}
    }}))
    .expect("fixture");
    let namespaces = Api::<Namespace>::all(s.client.clone());
    let created = namespaces
        .create(&PostParams::default(), &foreign)
        .await
        .expect("create foreign");
    let _cleanup = TestNamespace { name: name.clone() };

    s.create("shop", shop("aaaaaaa1111")).await;
    let pe = await_condition(
        &s.api,
        "shop",
        "Ready",
        "False",
        Some("NamespaceConflict"),
        READY,
    )
    .await;
    let (_, _, message) = ready_condition(&pe, "Ready");
    assert!(
        message.contains(&name) && message.contains("never"),
        "{message}"
    );
    assert_eq!(pe.status.and_then(|st| st.phase), Some(Phase::Failed));

    s.delete_and_wait("shop").await;
    let after = namespaces
        .get(&name)
        .await
        .expect("the foreign namespace still exists");
    assert_eq!(after.uid(), created.uid());
    assert_eq!(
        after.resource_version(),
        created.resource_version(),
        "not modified"
    );
    assert!(
        after.metadata.deletion_timestamp.is_none(),
        "not being deleted"
    );
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn previews_over_the_concurrency_limit_wait_and_start_when_a_slot_frees() {
    let s = setup("lc-queue").await;
    let small = |sha: &str| {
        let mut spec = shop(sha);
        spec["tests"] = json!([]);
        spec
    };
    s.create("one", small("b000001")).await;
    s.create("two", small("b000002")).await;
    await_ready(&s.api, "one", READY).await;
    await_ready(&s.api, "two", READY).await;
    s.create("three", small("b000003")).await;
    let waiting = await_condition(
        &s.api,
        "three",
        "Ready",
        "False",
        Some("ConcurrencyLimit"),
        READY,
    )
    .await;
    assert_eq!(
        waiting.status.as_ref().and_then(|st| st.phase),
        Some(Phase::Pending)
    );
    let (_, _, message) = ready_condition(&waiting, "Ready");
    assert!(
        message.contains(&format!("held by {0}/one, {0}/two", s.namespace.name)),
        "names the previews that hold the slots: {message}"
    );
    let namespaces = Api::<Namespace>::all(s.client.clone());
    assert!(
        namespaces
            .get_opt(&s.preview_ns("three"))
            .await
            .expect("get")
            .is_none(),
        "a waiting preview gets no namespace"
    );
    s.delete_and_wait("one").await;
    await_ready(&s.api, "three", READY).await;
    s.delete_and_wait("two").await;
    s.delete_and_wait("three").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_ttl_above_the_maximum_is_a_policy_violation() {
    let s = setup("lc-policy").await;
    let mut spec = shop("c000001");
    spec["ttl"] = json!("30d");
    s.create("shop", spec).await;
    let pe = await_condition(
        &s.api,
        "shop",
        "Ready",
        "False",
        Some("PolicyViolation"),
        READY,
    )
    .await;
    let (_, _, message) = ready_condition(&pe, "Ready");
    assert!(
        message.contains("30d") && message.contains("7d"),
        "{message}"
    );
    assert_eq!(pe.status.and_then(|st| st.phase), Some(Phase::Failed));
    let namespaces = Api::<Namespace>::all(s.client.clone());
    assert!(
        namespaces
            .get_opt(&s.preview_ns("shop"))
            .await
            .expect("get")
            .is_none()
    );

    // Fixing the spec lets it start.
    s.patch_spec("shop", json!({"ttl": "2d"})).await;
    await_ready(&s.api, "shop", READY).await;
    s.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_rerun_request_runs_every_test_again_at_the_same_sha() {
    let s = setup("lc-rerun").await;
    s.create("shop", shop("e000001aaaa")).await;
    let pe = await_ready(&s.api, "shop", READY).await;
    let first = pe.status.unwrap_or_default().tests[0].clone();
    let first_job = first.job.clone().expect("the first run's job");

    s.api
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"preview.dev/rerun-tests": "run-2"}}}),
            ),
        )
        .await
        .expect("annotate");
    // CI waits for the status to show the request, then for Ready: never a stale Ready.
    let rerun = wait_for("the rerun to pass", READY, || async {
        let pe = s.api.get("shop").await.map_err(|e| e.to_string())?;
        let status = pe.status.clone().unwrap_or_default();
        let ready = ready_condition(&pe, "Ready").0 == "True";
        match (status.observed_rerun_tests.as_deref(), ready) {
            (Some("run-2"), true) => Ok(status),
            other => Err(format!("{other:?}: {:?}", status.tests)),
        }
    })
    .await;
    let second = &rerun.tests[0];
    let second_job = second.job.clone().expect("the rerun's job");
    assert_eq!(second.sha, first.sha, "same sha");
    assert_ne!(second_job, first_job, "a new Job");
    assert_eq!(second.phase, TestPhase::Succeeded);
    let jobs = Api::<Job>::namespaced(s.client.clone(), &s.preview_ns("shop"));
    await_gone(&format!("the first run's job {first_job}"), READY, || {
        jobs.get_opt(&first_job)
    })
    .await;
    s.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_namespace_of_another_live_preview_is_never_deleted_even_when_the_names_meet() {
    // Two tenants' previews whose namespace names meet (a hash collision, or a crafted name,
    // simulated here): the namespace at that name belongs to B, which is alive. A must get a
    // conflict, and B's namespace must stay untouched.
    let a = setup("lc-meet-a").await;
    let b = setup("lc-meet-b").await;
    let owner_b = b.create("shop", shop("b0b0b0b1111")).await;
    let name = a.preview_ns("shop");
    let taken: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": {
        "app.kubernetes.io/managed-by": "preview-operator",
        "preview.dev/owner-uid": owner_b.uid().unwrap_or_default(),
        "preview.dev/owner-namespace": b.namespace.name,
    }}}))
    .expect("fixture");
    let namespaces = Api::<Namespace>::all(a.client.clone());
    let created = namespaces
        .create(&PostParams::default(), &taken)
        .await
        .expect("create B's namespace at A's name");
    let _cleanup = TestNamespace { name: name.clone() };

    a.create("shop", shop("a0a0a0a1111")).await;
    await_condition(
        &a.api,
        "shop",
        "Ready",
        "False",
        Some("NamespaceConflict"),
        READY,
    )
    .await;
    let after = namespaces
        .get(&name)
        .await
        .expect("B's namespace still exists");
    assert_eq!(after.uid(), created.uid());
    assert!(
        after.metadata.deletion_timestamp.is_none(),
        "not being deleted"
    );
    a.delete_and_wait("shop").await;
    b.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_host_another_preview_serves_is_not_claimed_twice() {
    let s = setup("lc-host").await;
    // A class that publishes exposed services, for this tenant only.
    let class_name = format!("hosts-{}", s.namespace.name);
    let _class = TestClass::create(
        &s.client,
        &class_name,
        json!({"tenants": [{"namespaces": [s.namespace.name], "repositories": ["*/*"]}],
               "ingress": {"baseDomain": "preview.test"}}),
    )
    .await;
    let with_class = |sha: &str| {
        let mut spec = shop(sha);
        spec["previewClassName"] = json!(class_name);
        spec
    };
    s.create("first", with_class("f1f1f1f1111")).await;
    let first = await_ready(&s.api, "first", READY).await;
    let url = first.status.and_then(|st| st.url).expect("an exposed URL");
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    assert!(host.ends_with(".preview.test"), "{host}");

    // Someone else's Ingress claiming the host the next preview would get (as a crafted
    // service name could on older releases): the operator must refuse, not duplicate it.
    let second_host = preview_operator::controller::build::ingress_host(
        "web",
        &s.preview_ns("second"),
        "preview.test",
    );
    let squatter_ns = s.preview_ns("first");
    let squatter: Ingress = serde_json::from_value(json!({"metadata": {
        "name": "squatter",
        "labels": {"app.kubernetes.io/managed-by": "preview-operator"},
        "annotations": {"preview.dev/host": second_host}
    }, "spec": {"rules": [{"host": second_host}]}}))
    .expect("ingress");
    Api::<Ingress>::namespaced(s.client.clone(), &squatter_ns)
        .create(&PostParams::default(), &squatter)
        .await
        .expect("create the squatter");
    s.create("second", with_class("5e5e5e5e111")).await;
    let pe = await_condition(
        &s.api,
        "second",
        "Ready",
        "False",
        Some("HostConflict"),
        READY,
    )
    .await;
    let (_, _, message) = ready_condition(&pe, "Ready");
    assert!(
        message.contains(&second_host) && message.contains("squatter"),
        "{message}"
    );
    let ingresses = Api::<Ingress>::namespaced(s.client.clone(), &s.preview_ns("second"));
    assert!(
        ingresses
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "no second Ingress for the host"
    );
    s.delete_and_wait("second").await;
    s.delete_and_wait("first").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_class_pull_secret_is_copied_kept_in_sync_and_named_by_the_pods() {
    let s = setup("lc-pull").await;
    let platform = std::env::var("PREVIEW_OPERATOR_PLATFORM_SECRETS_NAMESPACE")
        .expect("hack/test.sh sets PREVIEW_OPERATOR_PLATFORM_SECRETS_NAMESPACE");
    let secret_name = format!("registry-{}", s.namespace.name);
    let sources = Api::<Secret>::namespaced(s.client.clone(), &platform);
    let source: Secret = serde_json::from_value(json!({
        "metadata": {"name": secret_name},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": "{\"auths\":{\"r.example\":{\"auth\":\"djE=\"}}}"}
    }))
    .expect("secret");
    sources
        .create(&PostParams::default(), &source)
        .await
        .expect("create the source");
    let _class = TestClass::create(
        &s.client,
        &format!("pull-{}", s.namespace.name),
        json!({"tenants": [{"namespaces": [s.namespace.name], "repositories": ["*/*"]}],
               "imagePullSecrets": [{"name": secret_name}]}),
    )
    .await;
    let mut spec = shop("9a9a9a9a111");
    spec["previewClassName"] = json!(format!("pull-{}", s.namespace.name));
    s.create("shop", spec).await;
    await_ready(&s.api, "shop", READY).await;
    let ns = s.preview_ns("shop");
    let copies = Api::<Secret>::namespaced(s.client.clone(), &ns);
    let data = |secret: Secret| secret.data.unwrap_or_default();
    let copy = copies.get(&secret_name).await.expect("the copy");
    assert_eq!(
        copy.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    let original = data(sources.get(&secret_name).await.expect("source"));
    assert_eq!(data(copy), original);
    let web = Api::<Deployment>::namespaced(s.client.clone(), &ns)
        .get("web")
        .await
        .expect("web");
    let pulls = web
        .spec
        .and_then(|d| d.template.spec)
        .and_then(|p| p.image_pull_secrets)
        .unwrap_or_default();
    assert_eq!(
        pulls.first().map(|r| r.name.as_str()),
        Some(secret_name.as_str())
    );

    // Rotation: the copy follows its source.
    sources
        .patch(
            &secret_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {".dockerconfigjson": "{\"auths\":{}}"}})),
        )
        .await
        .expect("rotate");
    let rotated = data(sources.get(&secret_name).await.expect("source"));
    wait_for("the copy to follow the rotated source", READY, || async {
        let copy = data(copies.get(&secret_name).await.map_err(|e| e.to_string())?);
        (copy == rotated)
            .then_some(())
            .ok_or("still the old content".to_string())
    })
    .await;

    // A class naming a Secret that does not exist fails nothing: the preview runs without
    // it and says so.
    s.delete_and_wait("shop").await;
    sources
        .delete(&secret_name, &DeleteParams::default())
        .await
        .expect("delete the source");
    let mut spec = shop("9b9b9b9b111");
    spec["previewClassName"] = json!(format!("pull-{}", s.namespace.name));
    s.create("again", spec).await;
    await_ready(&s.api, "again", READY).await;
    let pe = await_condition(
        &s.api,
        "again",
        "UpToDate",
        "False",
        Some("ClassNotReady"),
        READY,
    )
    .await;
    let (_, _, message) = ready_condition(&pe, "UpToDate");
    assert!(
        message.contains(&secret_name) && message.contains(&platform),
        "{message}"
    );
    // The class counts the preview it serves and names its problem.
    let classes = Api::<preview_operator::api::class::PreviewClass>::all(s.client.clone());
    let class_name = format!("pull-{}", s.namespace.name);
    wait_for("the class status to count its preview", READY, || async {
        let class = classes.get(&class_name).await.map_err(|e| e.to_string())?;
        let status = class.status.clone().unwrap_or_default();
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
        (status.previews == 1 && ready.is_some_and(|c| c.reason == "ClassNotReady"))
            .then_some(())
            .ok_or(format!("{status:?}"))
    })
    .await;
    s.delete_and_wait("again").await;
}
