//! Previews of a team's own Helm chart and kustomization, delivered by Flux on the rig
//! (hack/test.sh runs Flux's controllers and serves a loopback Helm repository and Git host):
//! a chart from a Helm repository and from the pull request's repository at its head sha, the
//! order of setup, upgrade and tests at a new sha, what a chart may not create, and sleep, wake
//! and teardown.

mod common;

use std::time::Duration;

use common::flux::{self, FluxRig, Kind};
use common::{Tenant, await_condition, await_ready, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use preview_operator::api::{Phase, PreviewEnvironment, TestPhase};
use serde_json::{Value, json};

/// Flux installs in seconds on the rig; the preview adds its namespace, setup and tests.
const DELIVERED: Duration = Duration::from_secs(150);
/// The class's idle time (20 s) plus the time to act on it.
const ASLEEP: Duration = Duration::from_secs(90);
const GONE: Duration = Duration::from_secs(120);

/// A tenant for one test, once hack/test.sh's Flux rig is known to be there.
async fn team(prefix: &str) -> (Tenant, FluxRig) {
    let rig = FluxRig::from_env();
    (Tenant::new(prefix).await, rig)
}

fn condition(pe: &PreviewEnvironment, kind: &str) -> (String, String, String) {
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

async fn flux_get(client: &Client, kind: Kind, ns: &str, name: &str) -> kube::api::DynamicObject {
    kind.api(client, ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("get {kind:?} {name} in {ns}: {e}"))
}

fn timestamp(text: &str, what: &str) -> Timestamp {
    text.parse()
        .unwrap_or_else(|e| panic!("{what}: {text:?} is not a timestamp: {e}"))
}

/// The replicas every Deployment and StatefulSet of `ns` asks for.
async fn replicas(client: &Client, ns: &str) -> Vec<(String, i32)> {
    let lp = ListParams::default();
    let mut out = Vec::new();
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .expect("list deployments");
    for d in deployments.items {
        out.push((d.name_any(), d.spec.and_then(|s| s.replicas).unwrap_or(1)));
    }
    let stateful_sets = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .expect("list stateful sets");
    for s in stateful_sets.items {
        out.push((s.name_any(), s.spec.and_then(|s| s.replicas).unwrap_or(1)));
    }
    out.sort();
    out
}

/// `spec.suspend` of every Flux object the operator made in `ns` (HelmChart is Flux's own).
async fn suspended(client: &Client, ns: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for kind in [
        Kind::HelmRelease,
        Kind::Kustomization,
        Kind::GitRepository,
        Kind::HelmRepository,
        Kind::OCIRepository,
    ] {
        let list = kind
            .api(client, ns)
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("list {kind:?}: {e}"));
        for o in list.items {
            let suspend = o.data["spec"]["suspend"].as_bool().unwrap_or(false);
            out.push((format!("{kind:?}/{}", o.name_any()), suspend));
        }
    }
    out.sort();
    out
}

async fn await_phase(t: &Tenant, name: &str, want: Phase, timeout: Duration) {
    wait_for(&format!("{name} to be {want:?}"), timeout, || async {
        let pe = t.api.get(name).await.map_err(|e| e.to_string())?;
        match pe.status.and_then(|s| s.phase) {
            Some(p) if p == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_chart_from_a_helm_repository_runs_with_its_sidecar_config_volume_service_and_ingress() {
    let (t, rig) = team("fx-helm").await;
    let class = rig.class(&t, json!({})).await;
    let template = flux::with_setup_and_tests(json!({
        "helmReleases": [rig.chart_release("web", json!({}))],
    }));
    flux::create_template(&t, "shop", template).await;
    let sha = flux::UNFETCHED_SHA;
    t.create(
        "shop",
        flux::preview_spec("acme/shop", 31, sha, "shop", &class.name),
    )
    .await;
    let pe = await_ready(&t.api, "shop", DELIVERED).await;
    let status = pe.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Some(Phase::Ready));
    assert_eq!(status.tests[0].phase, TestPhase::Succeeded);
    let ns = t.preview_ns("shop");
    let c = &t.client;

    let releases = flux::releases(&t, "shop").await;
    assert_eq!(releases.len(), 1, "{releases:?}");
    let release = &releases[0];
    assert_eq!(release["name"], "web", "{release}");
    assert_eq!(release["kind"], "HelmRelease", "{release}");
    assert_eq!(release["ready"], true, "{release}");
    assert!(
        release["revision"]
            .as_str()
            .is_some_and(|r| r.contains(&rig.chart_version)),
        "the revision names the chart's version {}: {release}",
        rig.chart_version
    );

    // What the chart renders: the Deployment with its sidecar, both mounting the ConfigMap,
    // the web image tagged with the substituted short sha; the Service; the Ingress on the
    // preview's host.
    let web: Deployment = get(c, &ns, "web-demo").await;
    let pod = web
        .spec
        .clone()
        .and_then(|s| s.template.spec)
        .expect("a pod template");
    let names: Vec<_> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["web", "log-shipper"]);
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some(format!("{}demo/web:{}", flux::REGISTRY, &sha[..7]).as_str())
    );
    let volume = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == "config")
        .expect("the config volume");
    assert_eq!(
        volume.config_map.map(|m| m.name).as_deref(),
        Some("web-demo")
    );
    for container in &pod.containers {
        let mounts = container.volume_mounts.clone().unwrap_or_default();
        assert!(
            mounts.iter().any(|m| m.name == "config"),
            "{} mounts the ConfigMap",
            container.name
        );
    }
    let _: ConfigMap = get(c, &ns, "web-demo").await;
    let service: Service = get(c, &ns, "web-demo").await;
    assert_eq!(
        service.spec.and_then(|s| s.type_).as_deref(),
        Some("ClusterIP")
    );
    let ingress: Ingress = get(c, &ns, "web-demo").await;
    let host = ingress
        .spec
        .and_then(|s| s.rules)
        .and_then(|r| r[0].host.clone());
    assert_eq!(host, Some(flux::host_of(&ns)));
    let available = web.status.and_then(|s| s.available_replicas).unwrap_or(0);
    assert_eq!(available, 1, "the Deployment is available");

    // How the operator had Flux deliver it: as the preview's own ServiceAccount, bound to the
    // applier role in this namespace only, from a HelmRepository of the template's URL.
    let _: ServiceAccount = get(c, &ns, flux::APPLIER).await;
    let binding: RoleBinding = get(c, &ns, flux::APPLIER).await;
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.name, rig.applier_role);
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("ServiceAccount", flux::APPLIER)
    );
    assert_eq!(subjects[0].namespace.as_deref(), Some(ns.as_str()));
    let helm_release = flux_get(c, Kind::HelmRelease, &ns, "web").await;
    assert_eq!(
        helm_release.data["spec"]["serviceAccountName"],
        flux::APPLIER
    );
    assert_eq!(
        helm_release
            .labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("preview-operator")
    );
    assert!(flux::flux_ready(&helm_release), "{:?}", helm_release.data);
    let repositories = Kind::HelmRepository
        .api(c, &ns)
        .list(&ListParams::default())
        .await
        .expect("list HelmRepositories");
    let urls: Vec<_> = repositories
        .items
        .iter()
        .map(|r| r.data["spec"]["url"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(urls, [rig.helm_repo.as_str()]);

    // The tests ran once the release was Ready.
    let (_, _, _, ready_since) =
        flux::flux_condition(&helm_release, "Ready").expect("the release's Ready condition");
    let test_job: Job = get(c, &ns, &format!("e2e-{}", &sha[..7])).await;
    let test_created = test_job.metadata.creation_timestamp.expect("created").0;
    assert!(
        timestamp(&ready_since, "Ready") <= test_created,
        "test Job created at {test_created} before the release was Ready at {ready_since}"
    );
    t.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_chart_from_the_pull_requests_repository_is_upgraded_at_a_new_sha_after_setup_and_before_tests()
 {
    let (t, rig) = team("fx-git").await;
    let class = rig.class(&t, json!({})).await;
    let repository = flux::repository_of(&t);
    let first = rig.create_repository(&repository);
    let mut template = flux::with_setup_and_tests(json!({
        "helmReleases": [flux::path_release("web", json!({"ingress": {"host": "web-<< host >>"}}))],
    }));
    template["setup"][0]["runOn"] = json!("EverySha");
    flux::create_template(&t, "shop", template).await;
    t.create(
        "shop",
        flux::preview_spec(&repository, 32, &first, "shop", &class.name),
    )
    .await;
    await_ready(&t.api, "shop", DELIVERED).await;
    let ns = t.preview_ns("shop");
    let c = &t.client;

    // The pull request's repository at its head sha, the chart versioned by that commit.
    let source = flux_get(c, Kind::GitRepository, &ns, &flux::source(&first)).await;
    assert_eq!(
        source.data["spec"]["url"].as_str(),
        Some(rig.clone_url(&repository).as_str())
    );
    assert_eq!(
        source.data["spec"]["ref"]["commit"].as_str(),
        Some(first.as_str())
    );
    let helm_release = flux_get(c, Kind::HelmRelease, &ns, "web").await;
    let newest = flux::newest_release(&helm_release);
    let chart_version = newest["chartVersion"].as_str().unwrap_or_default();
    assert!(
        chart_version.ends_with(&format!("+{}", &first[..12])),
        "the chart of {first}: {newest}"
    );
    let releases = flux::releases(&t, "shop").await;
    assert!(
        releases[0]["revision"]
            .as_str()
            .is_some_and(|r| r.contains(&first[..12])),
        "{releases:?}"
    );
    let ingress: Ingress = get(c, &ns, "web-demo").await;
    let host = ingress
        .spec
        .and_then(|s| s.rules)
        .and_then(|r| r[0].host.clone());
    assert_eq!(host, Some(format!("web-{}", flux::host_of(&ns))));

    // The pull request gets a new commit; CI sets the new head sha.
    let second = rig.push_file(&repository, "CHANGELOG.md", "a second commit\n");
    t.patch_spec("shop", json!({"headSha": second})).await;
    wait_for(
        "the tests at the new sha to pass and the preview to be Ready",
        DELIVERED,
        || async {
            let pe = t.api.get("shop").await.map_err(|e| e.to_string())?;
            let (ready, reason, _) = condition(&pe, "Ready");
            let status = pe.status.clone().unwrap_or_default();
            let ready_for_generation = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.observed_generation == pe.metadata.generation);
            match status.tests.first() {
                Some(test)
                    if test.sha == second
                        && test.phase == TestPhase::Succeeded
                        && ready == "True"
                        && ready_for_generation =>
                {
                    Ok(())
                }
                other => Err(format!("Ready={ready} {reason}, test {other:?}")),
            }
        },
    )
    .await;
    let short = &second[..7];
    let setup: Job = get(c, &ns, &format!("setup-migrate-{short}")).await;
    let setup_done = setup
        .status
        .and_then(|s| s.completion_time)
        .expect("the setup Job at the new sha completed")
        .0;
    let test_job: Job = get(c, &ns, &format!("e2e-{short}")).await;
    let test_created = test_job.metadata.creation_timestamp.expect("created").0;

    // The release was upgraded (not installed again) to the chart of the new commit, after
    // the setup Job at that commit succeeded...
    let helm_release = flux_get(c, Kind::HelmRelease, &ns, "web").await;
    let newest = flux::newest_release(&helm_release);
    assert!(
        newest["chartVersion"]
            .as_str()
            .is_some_and(|v| v.ends_with(&format!("+{}", &second[..12]))),
        "the chart of {second}: {newest}"
    );
    // One upgrade: the new values and the new commit's chart together.
    assert_eq!(
        newest["version"], 2,
        "upgraded in place, once: {}",
        helm_release.data["status"]["history"]
    );
    let deployed = timestamp(
        newest["lastDeployed"].as_str().unwrap_or_default(),
        "history[0].lastDeployed",
    );
    assert!(
        setup_done <= deployed,
        "release upgraded at {deployed} before the setup Job at {short} completed at {setup_done}"
    );
    let source = flux_get(c, Kind::GitRepository, &ns, &flux::source(&second)).await;
    assert_eq!(
        source.data["spec"]["ref"]["commit"].as_str(),
        Some(second.as_str())
    );
    // The first commit's source goes once the release moved on (Flux's finalizer first).
    let old = format!("GitRepository/{}", flux::source(&first));
    wait_for(
        "the first commit's GitRepository to be gone",
        GONE,
        || async {
            let objects = flux::flux_objects(c, &ns).await;
            if objects.contains(&old) {
                Err(format!("{objects:?}"))
            } else {
                Ok(())
            }
        },
    )
    .await;
    let fetched = timestamp(
        source.data["status"]["artifact"]["lastUpdateTime"]
            .as_str()
            .unwrap_or_default(),
        "the source's artifact time",
    );
    assert!(
        setup_done <= fetched,
        "the new sha was fetched at {fetched}, before the setup Job completed at {setup_done}"
    );
    // ...and the tests at the new sha started once the release was Ready at its revision.
    let (ready, _, message, ready_since) =
        flux::flux_condition(&helm_release, "Ready").expect("the release's Ready condition");
    assert_eq!(ready, "True", "{message}");
    assert!(message.contains(&second[..12]), "{message}");
    assert!(
        deployed <= test_created && timestamp(&ready_since, "Ready") <= test_created,
        "test Job at {short} created at {test_created}, before the release was upgraded \
         ({deployed}) and Ready ({ready_since})"
    );
    let releases = flux::releases(&t, "shop").await;
    assert_eq!(releases[0]["ready"], true, "{releases:?}");
    assert!(
        releases[0]["revision"]
            .as_str()
            .is_some_and(|r| r.contains(&second[..12])),
        "{releases:?}"
    );
    t.delete_and_wait("shop").await;
}

/// A preview of the demo chart with `values` from the Helm repository: waits until it is
/// Failed with DeliveryFailed and a message holding each of `expected`; no test ran. Returns
/// the tenant and the preview namespace.
async fn delivery_fails(prefix: &str, values: Value, expected: &[&str]) -> (Tenant, String) {
    let (t, rig) = team(prefix).await;
    let class = rig.class(&t, json!({})).await;
    let template = flux::with_setup_and_tests(json!({
        "helmReleases": [rig.chart_release("web", values)],
    }));
    flux::create_template(&t, "shop", template).await;
    let sha = flux::UNFETCHED_SHA;
    t.create(
        "shop",
        flux::preview_spec("acme/shop", 33, sha, "shop", &class.name),
    )
    .await;
    let pe = await_condition(
        &t.api,
        "shop",
        "Ready",
        "False",
        Some("DeliveryFailed"),
        DELIVERED,
    )
    .await;
    assert_eq!(pe.status.clone().and_then(|s| s.phase), Some(Phase::Failed));
    let (_, _, message) = condition(&pe, "Ready");
    for text in expected {
        assert!(message.contains(text), "{text:?} in {message}");
    }
    let releases = flux::releases(&t, "shop").await;
    assert_eq!(releases.len(), 1, "{releases:?}");
    assert_eq!(releases[0]["ready"], false, "{releases:?}");
    assert!(
        releases[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(expected[0])),
        "{releases:?}"
    );
    let ns = t.preview_ns("shop");
    let jobs = Api::<Job>::namespaced(t.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("list jobs");
    let names: Vec<_> = jobs.items.iter().map(|j| j.name_any()).collect();
    assert_eq!(
        names,
        [format!("setup-migrate-{}", &sha[..7])],
        "no test ran"
    );
    (t, ns)
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_chart_that_creates_a_network_policy_fails_with_fluxs_message() {
    let (t, ns) = delivery_fails(
        "fx-netpol",
        json!({"escape": {"networkPolicy": true}}),
        &["forbidden", "networkpolicies"],
    )
    .await;
    let policies = Api::<NetworkPolicy>::namespaced(t.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .expect("list network policies");
    assert!(
        policies
            .items
            .iter()
            .all(|p| p.name_any() != "web-demo-allow-all"),
        "the chart's NetworkPolicy was created"
    );
    t.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_chart_that_creates_a_cluster_role_fails_with_fluxs_message() {
    let (t, ns) = delivery_fails(
        "fx-crole",
        json!({"escape": {"clusterRole": true}}),
        &["forbidden", "clusterroles"],
    )
    .await;
    let role = Api::<ClusterRole>::all(t.client.clone())
        .get_opt(&format!("web-demo-{ns}"))
        .await
        .expect("get the cluster role");
    assert!(role.is_none(), "the chart's ClusterRole was created");
    t.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_chart_that_writes_to_another_namespace_fails_with_fluxs_message() {
    let (t, ns) = delivery_fails(
        "fx-otherns",
        json!({"escape": {"namespace": "default"}}),
        &["forbidden", "namespace \"default\""],
    )
    .await;
    let map = Api::<ConfigMap>::namespaced(t.client.clone(), "default")
        .get_opt(&format!("web-demo-{ns}"))
        .await
        .expect("get the config map");
    assert!(map.is_none(), "the chart wrote to namespace default");
    t.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_chart_image_outside_the_class_registries_fails_with_the_admission_policys_message() {
    let (t, ns) = delivery_fails(
        "fx-image",
        json!({"image": {"repository": "docker.io/evil/web"}}),
        &["docker.io/evil/web", "ValidatingAdmissionPolicy"],
    )
    .await;
    let web = Api::<Deployment>::namespaced(t.client.clone(), &ns)
        .get_opt("web-demo")
        .await
        .expect("get the deployment");
    assert!(
        web.is_none(),
        "the Deployment with the foreign image exists"
    );
    t.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_class_without_flux_or_with_other_chart_repositories_refuses_the_preview() {
    let (t, rig) = team("fx-refused").await;
    flux::create_template(
        &t,
        "shop",
        json!({"helmReleases": [rig.chart_release("web", json!({}))]}),
    )
    .await;
    let sha = flux::UNFETCHED_SHA;

    let without = rig
        .class_named(
            &t,
            &format!("noflux-{}", t.namespace.name),
            json!({"flux": null}),
        )
        .await;
    t.create(
        "without",
        flux::preview_spec("acme/shop", 34, sha, "shop", &without.name),
    )
    .await;
    let pe = await_condition(
        &t.api,
        "without",
        "Ready",
        "False",
        Some("PolicyViolation"),
        DELIVERED,
    )
    .await;
    let (_, _, message) = condition(&pe, "Ready");
    assert!(message.to_lowercase().contains("flux"), "{message}");
    assert_eq!(pe.status.and_then(|s| s.phase), Some(Phase::Failed));

    let elsewhere = rig
        .class_named(
            &t,
            &format!("otherrepo-{}", t.namespace.name),
            json!({"flux": {"gitURL": rig.git_url, "chartRepositories": ["https://charts.preview.invalid/"]}}),
        )
        .await;
    t.create(
        "elsewhere",
        flux::preview_spec("acme/shop", 35, sha, "shop", &elsewhere.name),
    )
    .await;
    let pe = await_condition(
        &t.api,
        "elsewhere",
        "Ready",
        "False",
        Some("SourceNotAllowed"),
        DELIVERED,
    )
    .await;
    let (_, _, message) = condition(&pe, "Ready");
    assert!(message.contains(&rig.helm_repo), "{message}");
    for name in ["without", "elsewhere"] {
        let ns = t.preview_ns(name);
        assert!(
            flux::flux_objects(&t.client, &ns).await.is_empty(),
            "a refused preview has no Flux objects"
        );
        t.delete_and_wait(name).await;
    }
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_flux_preview_sleeps_suspended_wakes_resumed_and_its_teardown_leaves_nothing() {
    let (t, rig) = team("fx-sleep").await;
    let class = rig.class(&t, json!({"sleep": {"afterIdle": "20s"}})).await;
    let repository = flux::repository_of(&t);
    // A short sha YAML reads as a number: the kustomization's `${quote}` keeps it a string.
    let sha = rig.create_repository_with_short_sha_of_digits(&repository);
    flux::create_template(
        &t,
        "shop",
        json!({
            "helmReleases": [rig.chart_release("web", json!({}))],
            "kustomizations": [flux::kustomization("backend")],
        }),
    )
    .await;
    t.create(
        "shop",
        flux::preview_spec(&repository, 36, &sha, "shop", &class.name),
    )
    .await;
    await_ready(&t.api, "shop", DELIVERED).await;
    let releases = flux::await_releases_ready(&t, "shop", 2, DELIVERED).await;
    let mut kinds: Vec<_> = releases
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default(),
                r["kind"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [("backend", "Kustomization"), ("web", "HelmRelease")]
    );
    assert!(
        releases.iter().all(|r| r["revision"]
            .as_str()
            .is_some_and(|v| v.contains(&rig.chart_version) || v.contains(&sha))),
        "each release names its revision: {releases:?}"
    );
    let ns = t.preview_ns("shop");
    let c = &t.client;
    let backend: Deployment = get(c, &ns, "demo-backend").await;
    let image = backend
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].image.clone().unwrap_or_default());
    assert_eq!(
        image,
        Some(format!("{}demo/backend:{}", flux::REGISTRY, &sha[..7])),
        "the kustomization's image override"
    );
    let settings: ConfigMap = get(c, &ns, "demo-settings").await;
    assert_eq!(
        settings.data.and_then(|d| d.get("COMMIT").cloned()),
        Some(sha[..7].to_string()),
        "the kustomization's post-build substitution of the short sha"
    );
    let awake = replicas(c, &ns).await;
    assert_eq!(
        awake,
        [("demo-backend".to_string(), 1), ("web-demo".to_string(), 1)]
    );
    let flux_objects = suspended(c, &ns).await;
    assert!(
        flux_objects.iter().all(|(_, s)| !s),
        "nothing suspended while awake: {flux_objects:?}"
    );

    // Idle: the Flux objects suspended (so Flux puts nothing back), the workloads at zero.
    await_phase(&t, "shop", Phase::Sleeping, ASLEEP).await;
    wait_for(
        "Flux suspended and every workload at zero",
        ASLEEP,
        || async {
            let flux = suspended(c, &ns).await;
            let workloads = replicas(c, &ns).await;
            if flux.iter().all(|(_, s)| *s) && workloads.iter().all(|(_, r)| *r == 0) {
                Ok(())
            } else {
                Err(format!("{flux:?} {workloads:?}"))
            }
        },
    )
    .await;
    let asleep = suspended(c, &ns).await;
    assert_eq!(
        asleep.len(),
        flux_objects.len(),
        "the same Flux objects, suspended: {asleep:?}"
    );

    // A wake request resumes Flux and restores the workloads.
    t.api
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"preview.dev/wake-request": "now"}}}),
            ),
        )
        .await
        .expect("annotate");
    await_phase(&t, "shop", Phase::Ready, DELIVERED).await;
    wait_for("Flux resumed and the workloads back", DELIVERED, || async {
        let flux = suspended(c, &ns).await;
        let workloads = replicas(c, &ns).await;
        if flux.iter().all(|(_, s)| !s) && workloads == awake {
            Ok(())
        } else {
            Err(format!("{flux:?} {workloads:?}"))
        }
    })
    .await;
    flux::await_releases_ready(&t, "shop", 2, DELIVERED).await;

    // Teardown: the namespace goes, and every Flux object with it (none left to hold it).
    t.delete_and_wait("shop").await;
    let namespaces = Api::<Namespace>::all(c.clone());
    wait_for(&format!("namespace {ns} to be gone"), GONE, || async {
        match namespaces.get_opt(&ns).await {
            Ok(None) => Ok(()),
            Ok(Some(n)) => Err(format!(
                "{:?}, Flux objects left: {:?}",
                n.status,
                flux::flux_objects(c, &ns).await
            )),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    for kind in Kind::ALL {
        let left = kind
            .api_all(c)
            .list(&ListParams::default().fields(&format!("metadata.namespace={ns}")))
            .await
            .unwrap_or_else(|e| panic!("list {kind:?}: {e}"));
        assert!(left.items.is_empty(), "{kind:?} of {ns} left behind");
    }
}
