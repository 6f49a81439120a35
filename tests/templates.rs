//! Previews from a team's PreviewTemplate on the rig, against the running operator: copied
//! Secrets and ConfigMaps, a dependency, a setup Job, substitution, and the errors a team
//! or CI can make.

mod common;

use std::time::Duration;

use common::{Tenant, await_condition, await_ready, shop_template, slim, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use preview_operator::api::{Phase, TestPhase};
use serde_json::json;

const READY: Duration = Duration::from_secs(90);

/// A tenant whose namespace holds the shop template and its sources, readable by the operator.
async fn team(prefix: &str) -> Tenant {
    let t = Tenant::new(prefix).await;
    t.create_shop_sources("first-password").await;
    t.grant_sources().await;
    t.create_template("shop", shop_template()).await;
    t
}

fn condition(pe: &preview_operator::api::PreviewEnvironment, kind: &str) -> (String, String) {
    pe.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == kind))
        .map(|c| (c.reason.to_string(), c.message.clone()))
        .unwrap_or_default()
}

async fn get<K>(client: &Client, ns: &str, name: &str) -> K
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get {name} in {ns}: {e}"))
}

/// The first (only) container of a pod template.
fn first_container(
    template: &k8s_openapi::api::core::v1::PodTemplateSpec,
) -> k8s_openapi::api::core::v1::Container {
    template
        .spec
        .as_ref()
        .and_then(|s| s.containers.first().cloned())
        .expect("a pod template with a container")
}

fn env_of(d: &Deployment, name: &str) -> Option<k8s_openapi::api::core::v1::EnvVar> {
    d.spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .cloned()
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_template_preview_goes_ready_in_order_with_its_sources_and_substituted_images() {
    let t = team("tp-ready").await;
    let sha = "a1b2c3d4e5f6";
    t.create(
        "shop",
        slim(sha)
            .template("shop")
            .images(json!({"web": "ghcr.io/acme/shop-web:pr-12-a1b2c3d"}))
            .parameters(json!({"seed": "large"}))
            .json(),
    )
    .await;
    let pe = await_ready(&t.api, "shop", READY).await;
    let status = pe.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(status.dependencies[0].name, "db");
    assert_eq!(status.dependencies[0].ready_replicas, 1);
    assert_eq!(status.setup[0].phase, TestPhase::Succeeded);
    assert_eq!(status.tests[0].phase, TestPhase::Succeeded);
    let ns = t.preview_ns("shop");
    let c = &t.client;

    // The sources are copied with their data.
    let secret: Secret = get(c, &ns, "shop-db").await;
    let password = secret.data.clone().unwrap_or_default()["password"]
        .0
        .clone();
    assert_eq!(password, b"first-password");
    let map: ConfigMap = get(c, &ns, "shop-config").await;
    assert_eq!(
        map.data.unwrap_or_default().get("mode").map(String::as_str),
        Some("preview")
    );

    // The Jobs and services carry the substituted images, parameters and CI's override.
    let job: Job = get(c, &ns, "setup-migrate-a1b2c3d").await;
    let container = first_container(&job.spec.clone().unwrap_or_default().template);
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/acme/shop-migrate:a1b2c3d")
    );
    assert_eq!(container.args, Some(vec!["--seed".into(), "large".into()]));
    let test_job: Job = get(c, &ns, "e2e-a1b2c3d").await;
    let test_image = first_container(&test_job.spec.unwrap_or_default().template).image;
    assert_eq!(test_image.as_deref(), Some("ghcr.io/acme/shop-e2e:a1b2c3d"));
    let web: Deployment = get(c, &ns, "web").await;
    let web_image = first_container(&web.spec.clone().unwrap_or_default().template).image;
    assert_eq!(
        web_image.as_deref(),
        Some("ghcr.io/acme/shop-web:pr-12-a1b2c3d")
    );
    assert_eq!(
        env_of(&web, "PR").and_then(|e| e.value).as_deref(),
        Some("pr-12")
    );
    let from_secret = env_of(&web, "DB_PASSWORD")
        .and_then(|e| e.value_from)
        .and_then(|v| v.secret_key_ref)
        .map(|r| r.name);
    assert_eq!(from_secret.as_deref(), Some("shop-db"));
    let sts: StatefulSet = get(c, &ns, "db").await;
    let db_pod = sts
        .spec
        .unwrap_or_default()
        .template
        .spec
        .unwrap_or_default();
    assert_eq!(db_pod.automount_service_account_token, Some(false));

    // The order: the dependency was ready before the setup Job was created, and the setup
    // Job had succeeded before the services were created.
    let db: Pod = get(c, &ns, "db-0").await;
    let db_ready = db
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .and_then(|c| c.last_transition_time)
        .expect("db-0 is ready");
    let job_created = job.metadata.creation_timestamp.clone().expect("created");
    let job_done = job
        .status
        .and_then(|s| s.completion_time)
        .expect("migrate completed");
    let web_created = web.metadata.creation_timestamp.clone().expect("created");
    assert!(
        db_ready.0 <= job_created.0,
        "setup Job created at {job_created:?} before the dependency was ready at {db_ready:?}"
    );
    assert!(
        job_done.0 <= web_created.0,
        "service created at {web_created:?} before setup completed at {job_done:?}"
    );

    // A rotated source Secret is copied again.
    Api::<Secret>::namespaced(c.clone(), &t.namespace.name)
        .patch(
            "shop-db",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"password": "rotated"}})),
        )
        .await
        .expect("rotate the secret");
    wait_for("the copy to follow the rotation", READY, || async {
        let copy: Secret = get(c, &ns, "shop-db").await;
        let data = copy.data.unwrap_or_default();
        match data.get("password").map(|b| b.0.as_slice()) {
            Some(b"rotated") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // A template edit rolls the preview's services.
    t.templates()
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "replace",
                    "path": "/spec/services/0/env/2/value", "value": "edited-<< pullRequest >>"}]))
                .expect("json patch"),
            ),
        )
        .await
        .expect("edit the template");
    wait_for(
        "the template edit to reach the Deployment",
        READY,
        || async {
            let web: Deployment = get(c, &ns, "web").await;
            match env_of(&web, "PR").and_then(|e| e.value) {
                Some(v) if v == "edited-12" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    await_ready(&t.api, "shop", READY).await;
    t.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_failing_setup_job_fails_the_preview_and_no_service_or_test_runs() {
    let t = team("tp-setup-fails").await;
    let mut template = shop_template();
    template["setup"][0]["podAnnotations"] = json!({"preview.dev/simulate": "fail"});
    t.set_template("shop", template).await;
    t.create("shop", slim("f00dbabe01").template("shop").json())
        .await;
    let pe = await_condition(&t.api, "shop", "Ready", "False", Some("SetupFailed"), READY).await;
    let (reason, message) = condition(&pe, "Available");
    assert_eq!(reason, "SetupFailed");
    assert!(message.contains("setup migrate failed"), "{message}");
    assert!(
        message.contains("kubectl logs"),
        "says where to look: {message}"
    );
    assert_eq!(
        pe.status.clone().unwrap_or_default().phase,
        Some(Phase::Failed)
    );
    let ns = t.preview_ns("shop");
    let jobs = Api::<Job>::namespaced(t.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("jobs");
    let names: Vec<String> = jobs.items.iter().map(|j| j.name_any()).collect();
    assert_eq!(names, vec!["setup-migrate-f00dbab"], "no test Job runs");
    let deployments = Api::<Deployment>::namespaced(t.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("deployments");
    assert!(deployments.items.is_empty(), "no service rolls out");
    t.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn without_the_role_binding_the_preview_says_secret_not_readable_with_the_fix() {
    let t = Tenant::new("tp-no-grant").await;
    t.create_shop_sources("pw").await;
    t.create_template("shop", shop_template()).await;
    t.create("shop", slim("0badc0de01").template("shop").json())
        .await;
    let pe = await_condition(
        &t.api,
        "shop",
        "Ready",
        "False",
        Some("SecretNotReadable"),
        READY,
    )
    .await;
    let (_, message) = condition(&pe, "Ready");
    assert!(
        message.contains("kubectl create rolebinding preview-operator-sources")
            && message.contains(&format!("--namespace {}", t.namespace.name)),
        "the message gives the command: {message}"
    );
    // The team runs it, and the preview goes on by itself.
    t.grant_sources().await;
    await_ready(&t.api, "shop", READY).await;
    t.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn unknown_parameters_keys_and_templates_are_refused_by_name() {
    let t = team("tp-errors").await;
    t.create(
        "params",
        slim("1234567")
            .template("shop")
            .parameters(json!({"sed": "x"}))
            .json(),
    )
    .await;
    let pe = await_condition(
        &t.api,
        "params",
        "Ready",
        "False",
        Some("TemplateError"),
        READY,
    )
    .await;
    let (_, message) = condition(&pe, "Ready");
    assert!(message.contains("unknown parameter sed"), "{message}");

    let mut broken = shop_template();
    broken["services"][0]["args"] = json!(["<< nope >>"]);
    t.create_template("broken", broken).await;
    t.create("key", slim("1234567").template("broken").json())
        .await;
    let pe = await_condition(
        &t.api,
        "key",
        "Ready",
        "False",
        Some("TemplateError"),
        READY,
    )
    .await;
    let (_, message) = condition(&pe, "Ready");
    assert!(
        message.contains("<< nope >>") && message.contains("services[web].args[0]"),
        "{message}"
    );
    assert_eq!(
        condition(&pe, "Admitted").0,
        "Admitted",
        "a template error is not a policy refusal"
    );

    t.create("missing", slim("1234567").template("missing").json())
        .await;
    let pe = await_condition(
        &t.api,
        "missing",
        "Ready",
        "False",
        Some("TemplateNotFound"),
        READY,
    )
    .await;
    assert!(
        condition(&pe, "Ready")
            .1
            .contains("PreviewTemplate missing")
    );
    for name in ["params", "key", "missing"] {
        t.delete_and_wait(name).await;
    }
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_dependency_the_scheduler_cannot_place_says_why_while_waiting() {
    // The rig has no StorageClass: a sized volume's claim stays unbound, as on a cluster
    // without a default StorageClass.
    let t = team("tp-unbound").await;
    let mut template = shop_template();
    template["dependencies"][0]["storage"] = json!({"size": "1Gi"});
    t.set_template("shop", template).await;
    t.create("shop", slim("5707a6e001").template("shop").json())
        .await;
    let pe = wait_for("the wait to say why", READY, || async {
        let pe = t.api.get("shop").await.map_err(|e| e.to_string())?;
        let (reason, message) = condition(&pe, "Available");
        if reason == "DependencyNotReady" && message.contains("cannot be scheduled") {
            Ok(pe)
        } else {
            Err(format!("{reason}: {message}"))
        }
    })
    .await;
    let (_, message) = condition(&pe, "Available");
    assert!(message.contains("PersistentVolumeClaim"), "{message}");
    let ns = pe
        .status
        .clone()
        .unwrap_or_default()
        .namespace
        .unwrap_or_default();
    assert!(
        message.contains(&format!("`kubectl get pvc -n {ns} data-db-0`"))
            && message.contains("StorageClass"),
        "names the claim, its StorageClass and the command: {message}"
    );
    assert_eq!(pe.status.unwrap_or_default().phase, Some(Phase::Deploying));
    t.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn previews_that_cannot_run_hold_no_place_in_the_queue() {
    // The test class lets two previews per namespace run. Two previews whose template does not
    // exist, created first, must not keep a preview that can run waiting behind them.
    let t = Tenant::new("tpl-queue").await;
    for name in ["typo-1", "typo-2"] {
        t.create(name, slim("e000001").template("shpo").json())
            .await;
        await_condition(
            &t.api,
            name,
            "Ready",
            "False",
            Some("TemplateNotFound"),
            READY,
        )
        .await;
    }
    let inline = common::spec("acme/shop", 14, "e000002")
        .services(json!([{"name": "web", "image": "ghcr.io/acme/web:1", "port": 8080}]))
        .json();
    t.create("runs", inline).await;
    await_ready(&t.api, "runs", READY).await;
    for name in ["typo-1", "typo-2", "runs"] {
        t.delete_and_wait(name).await;
    }
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_class_bounds_the_previews_that_exist_and_the_storage_they_claim() {
    let t = team("tpl-bounds").await;
    let class = common::TestClass::create(
        &t.client,
        &format!("bounded-{}", t.namespace.name),
        json!({
            "tenants": [{"namespaces": [t.namespace.name], "repositories": ["*/*"]}],
            "limits": {"existingPerNamespace": 1},
            "namespace": {"maxClaimSize": "1Gi"},
            "allowedPodAnnotations": ["preview.dev/simulate"],
        }),
    )
    .await;
    let in_class = |sha: &str| slim(sha).template("shop").class(&class.name).json();
    t.create("first", in_class("f000001")).await;
    await_ready(&t.api, "first", READY).await;
    // One preview may exist in this namespace: the second is refused and gets no namespace.
    t.create("second", in_class("f000002")).await;
    let pe = await_condition(
        &t.api,
        "second",
        "Admitted",
        "False",
        Some("PolicyViolation"),
        READY,
    )
    .await;
    let (_, message) = condition(&pe, "Admitted");
    assert!(message.contains("existingPerNamespace"), "{message}");
    // Deleting the first lets it in.
    t.delete_and_wait("first").await;
    await_ready(&t.api, "second", READY).await;
    // A dependency claiming more than the class's maximum per claim is refused.
    let mut template = shop_template();
    template["dependencies"][0]["storage"] = json!({"size": "5Gi"});
    t.set_template("shop", template).await;
    let pe = await_condition(
        &t.api,
        "second",
        "Admitted",
        "False",
        Some("PolicyViolation"),
        READY,
    )
    .await;
    let (_, message) = condition(&pe, "Admitted");
    assert!(
        message.contains("5Gi") && message.contains("1Gi"),
        "{message}"
    );
    t.delete_and_wait("second").await;
}
