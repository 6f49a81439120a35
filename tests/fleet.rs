//! Class and template changes under a running fleet, on the rig: a class naming a Secret that
//! does not exist yet fails no preview and posts nothing to their pull requests; once the
//! Secret exists the change rolls out one preview at a time (`--max-concurrent-rollouts 1`)
//! without re-running setup Jobs whose step did not change, and the tests run again with the
//! cause in the status; a template edit that changes a service re-runs the tests and says
//! why. An operator of this test's own (scoped by `--selector`) posts to a loopback GitHub.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::scm::{GitHub, Route};
use common::{Operator, Tenant, TestClass, await_condition, await_ready, preview, wait_for};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use preview_operator::api::PreviewEnvironment;
use preview_operator::api::class::PreviewClass;
use serde_json::json;

const READY: Duration = Duration::from_secs(120);
const PREVIEWS: [&str; 3] = ["one", "two", "three"];

fn template() -> serde_json::Value {
    json!({
        "setup": [{"name": "migrate", "image": "migrate:1"}],
        "services": [{"name": "web", "image": "web:1", "port": 8080,
                      "env": [{"name": "MODE", "value": "a"}]}],
        "tests": [{"name": "e2e", "image": "e2e:1"}],
    })
}

/// The Jobs of preview namespace `ns` by name, with their uids.
async fn jobs(client: &Client, ns: &str) -> BTreeMap<String, Job> {
    Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items.into_iter().map(|j| (j.name_any(), j)).collect())
        .unwrap_or_default()
}

/// The names of the pull secrets `web`'s pods name in `ns`.
async fn pull_secrets(client: &Client, ns: &str) -> Vec<String> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get("web")
        .await
        .ok()
        .and_then(|d| d.spec?.template.spec?.image_pull_secrets)
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect()
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

/// Commit statuses the stand-in accepted so far, as (context, state).
fn posted(stand_in: &GitHub) -> Vec<(String, String)> {
    stand_in
        .received()
        .into_iter()
        .filter(|r| r.answered == 201)
        .map(|r| {
            (
                r.body["context"].as_str().unwrap_or_default().to_string(),
                r.body["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Creates previews `names` of template `app` in class `class` (shard = the tenant namespace,
/// pull requests from `first_pr`, shas from `sha_prefix`) and waits until each runs, Ready and
/// up to date.
async fn running_fleet(t: &Tenant, names: &[&str], class: &str, first_pr: usize, sha_prefix: &str) {
    let shard = &t.namespace.name;
    for (i, name) in names.iter().enumerate() {
        let spec = json!({"repository": "acme/app", "pullRequest": first_pr + i,
                          "headSha": format!("{sha_prefix}{i}aa"), "templateRef": {"name": "app"},
                          "previewClassName": class});
        t.api
            .create(
                &PostParams::default(),
                &preview(name, json!({"preview.dev/shard": shard}), spec),
            )
            .await
            .expect("create");
    }
    for name in names {
        await_ready(&t.api, name, READY).await;
        await_condition(&t.api, name, "UpToDate", "True", Some("UpToDate"), READY).await;
    }
}

/// Waits until class `name` has Ready=`status`; its (status, reason, message).
async fn class_ready(
    classes: &Api<PreviewClass>,
    name: &str,
    status: &str,
) -> (String, String, String) {
    wait_for(
        &format!("class {name} to have Ready={status}"),
        READY,
        || async {
            let class = classes.get(name).await.map_err(|e| e.to_string())?;
            let ready = (class.status.iter())
                .flat_map(|s| s.conditions.iter())
                .find(|c| c.type_ == "Ready")
                .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
            ready
                .filter(|r| r.0 == status)
                .ok_or(format!("{:?}", class.status))
        },
    )
    .await
}

/// Waits until `name`'s test ran again for `reason`, passed, and the preview is up to date.
async fn rerun_for(t: &Tenant, name: &str, reason: &str) {
    wait_for(
        &format!("{name}'s tests to run again ({reason})"),
        READY,
        || async {
            let pe = t.api.get(name).await.map_err(|e| e.to_string())?;
            let status = pe.status.clone().unwrap_or_default();
            let test = status.tests.first().cloned().ok_or("no tests yet")?;
            let up_to_date = condition(&pe, "UpToDate");
            (test.reason.as_deref() == Some(reason)
                && test.phase == preview_operator::api::TestPhase::Succeeded
                && up_to_date.0 == "True")
                .then_some(())
                .ok_or(format!("{test:?}, UpToDate {up_to_date:?}"))
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn class_and_template_changes_roll_out_a_few_at_a_time_and_fail_no_preview() {
    let t = Tenant::new("fleet").await;
    let shard = t.namespace.name.clone();
    let client = t.client.clone();
    let platform = std::env::var("PREVIEW_OPERATOR_PLATFORM_SECRETS_NAMESPACE")
        .expect("hack/test.sh sets PREVIEW_OPERATOR_PLATFORM_SECRETS_NAMESPACE");
    let class_name = format!("fleet-{shard}");
    let _class = TestClass::create(
        &client,
        &class_name,
        json!({"tenants": [{"namespaces": [shard], "repositories": ["acme/*"]}]}),
    )
    .await;
    // The operator may read the team's Secrets, so a missing one is named as missing.
    t.grant_sources().await;
    t.create_template("app", template()).await;
    let stand_in = GitHub::default();
    let url = stand_in.serve(&[Route::Statuses]).await;
    let _operator = Operator::start(
        &[
            "--selector",
            &format!("preview.dev/shard={shard}"),
            "--max-concurrent-rollouts",
            "1",
            // The class's status is the running operator's to write (it sees every class).
            "--no-class-status",
            "--github-api-url",
            &url,
        ],
        &[
            ("PREVIEW_OPERATOR_GITHUB_TOKEN", "test-token"),
            ("PREVIEW_OPERATOR_PLATFORM_SECRETS_NAMESPACE", &platform),
        ],
    );
    running_fleet(&t, &PREVIEWS, &class_name, 40, "f1ee7").await;
    // Every pull request shows success before the platform team touches the class.
    wait_for("a success status for each preview", READY, || async {
        let successes = posted(&stand_in)
            .iter()
            .filter(|(_, state)| state == "success")
            .count();
        (successes == PREVIEWS.len())
            .then_some(())
            .ok_or(format!("{:?}", posted(&stand_in)))
    })
    .await;
    let before: BTreeMap<&str, BTreeMap<String, Job>> = {
        let mut all = BTreeMap::new();
        for name in PREVIEWS {
            all.insert(name, jobs(&client, &t.preview_ns(name)).await);
        }
        all
    };
    let statuses_before = posted(&stand_in).len();

    // The class names a pull secret the platform team has not created yet.
    let secret_name = format!("registry-{shard}");
    let classes = Api::<PreviewClass>::all(client.clone());
    classes
        .patch(
            &class_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"imagePullSecrets": [{"name": secret_name}]}})),
        )
        .await
        .expect("patch the class");
    for name in PREVIEWS {
        let pe = await_condition(
            &t.api,
            name,
            "UpToDate",
            "False",
            Some("ClassNotReady"),
            READY,
        )
        .await;
        let (_, _, message) = condition(&pe, "UpToDate");
        assert!(message.contains(&secret_name), "{message}");
        assert_eq!(condition(&pe, "Ready").0, "True", "{name} stays Ready");
        let ns = t.preview_ns(name);
        assert!(
            pull_secrets(&client, &ns).await.is_empty(),
            "{name}'s pods are untouched"
        );
    }
    assert_eq!(
        posted(&stand_in).len(),
        statuses_before,
        "nothing is posted to the PRs"
    );
    // The class says it, for the platform team: in its status, its printer columns, an Event.
    let class = class_ready(&classes, &class_name, "False").await;
    assert_eq!(class.1, "ClassNotReady");
    assert!(
        class.2.contains(&secret_name) && class.2.contains(&platform),
        "{class:?}"
    );
    let (ok, out, err) = common::kubectl(&["get", "previewclass", &class_name]);
    assert!(ok, "{err}");
    assert!(
        out.contains("TENANTS") && out.contains("PREVIEWS") && out.contains("READY"),
        "{out}"
    );
    assert!(out.contains(&shard) && out.contains("False"), "{out}");
    wait_for("a ClassNotReady Event on the class", READY, || async {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(client.clone(), "default");
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("ClassNotReady")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                        == Some(class_name.as_str())
            })
            .map(|_| ())
            .ok_or("no Event yet".to_string())
    })
    .await;

    // The Secret appears: the change rolls out, one preview at a time.
    let source: Secret = serde_json::from_value(json!({
        "metadata": {"name": secret_name},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": "{\"auths\":{}}"}
    }))
    .expect("secret");
    let sources = Api::<Secret>::namespaced(client.clone(), &platform);
    sources
        .create(&PostParams::default(), &source)
        .await
        .expect("create the Secret");
    for name in PREVIEWS {
        rerun_for(&t, name, "ClassChanged").await;
        await_ready(&t.api, name, READY).await;
        let ns = t.preview_ns(name);
        assert_eq!(pull_secrets(&client, &ns).await, vec![secret_name.clone()]);
    }
    class_ready(&classes, &class_name, "True").await;
    // Each preview's tests ran again for the class change; its setup Job did not.
    let mut reruns = Vec::new();
    for name in PREVIEWS {
        let after = jobs(&client, &t.preview_ns(name)).await;
        for (job, old) in &before[name] {
            let new = after
                .get(job)
                .unwrap_or_else(|| panic!("{name}: {job} is gone"));
            if job.starts_with("setup-") {
                assert_eq!(new.uid(), old.uid(), "{name}: {job} did not run again");
            } else {
                assert_ne!(new.uid(), old.uid(), "{name}: {job} ran again");
                assert_eq!(
                    new.annotations()
                        .get("preview.dev/run-reason")
                        .map(String::as_str),
                    Some("ClassChanged")
                );
                reruns.push(new.clone());
            }
        }
        let pe = t.api.get(name).await.expect("get");
        let tests = pe.status.map(|s| s.tests).unwrap_or_default();
        assert_eq!(
            tests[0].reason.as_deref(),
            Some("ClassChanged"),
            "{tests:?}"
        );
    }
    // One at a time: each re-run test Job was created after the one before it finished (a
    // slot is held until the preview's tests have a verdict). Timestamps have seconds.
    reruns.sort_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0));
    for pair in reruns.windows(2) {
        let finished = pair[0]
            .status
            .as_ref()
            .and_then(|s| s.completion_time.clone())
            .expect("a finished test Job");
        let created = pair[1]
            .metadata
            .creation_timestamp
            .clone()
            .expect("created");
        assert!(
            created.0 >= finished.0,
            "{} was created at {:?}, before {} finished at {:?}",
            pair[1].name_any(),
            created.0,
            pair[0].name_any(),
            finished.0
        );
    }
    let during: Vec<_> = posted(&stand_in)[statuses_before..].to_vec();
    assert!(
        during.iter().all(|(_, state)| state != "pending"),
        "a class change posts no pending status: {during:?}"
    );

    // A template edit that changes the service re-runs the tests and says why.
    let mut edited = template();
    edited["services"][0]["env"][0]["value"] = json!("b");
    t.set_template("app", edited).await;
    for name in PREVIEWS {
        rerun_for(&t, name, "TemplateChanged").await;
        let setup = jobs(&client, &t.preview_ns(name)).await;
        let migrate = setup
            .values()
            .find(|j| j.name_any().starts_with("setup-migrate"))
            .expect("the setup Job");
        let old = before[name]
            .values()
            .find(|j| j.name_any().starts_with("setup-migrate"))
            .expect("the setup Job before");
        assert_eq!(migrate.uid(), old.uid(), "{name}: setup did not run again");
    }

    // A template edit naming a Secret the team has not created fails no running preview: it
    // keeps running what it ran and says why it was not updated.
    let mut broken = template();
    broken["services"][0]["env"][0]["value"] = json!("b");
    broken["secrets"] = json!([{"name": "not-created-yet"}]);
    t.set_template("app", broken).await;
    for name in PREVIEWS {
        let pe = await_condition(
            &t.api,
            name,
            "UpToDate",
            "False",
            Some("SecretNotReadable"),
            READY,
        )
        .await;
        assert_eq!(condition(&pe, "Ready").0, "True", "{name} stays Ready");
        let (_, _, message) = condition(&pe, "UpToDate");
        assert!(message.contains("not-created-yet"), "{message}");
    }

    for name in PREVIEWS {
        let _ = t.api.delete(name, &DeleteParams::default()).await;
    }
    for name in PREVIEWS {
        common::await_gone(&format!("{name} to be gone"), READY, || t.api.get_opt(name)).await;
    }
    let _ = sources.delete(&secret_name, &DeleteParams::default()).await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_change_that_breaks_two_previews_rolls_out_no_further() {
    let t = Tenant::new("halt").await;
    let shard = t.namespace.name.clone();
    let class_name = format!("halt-{shard}");
    let _class = TestClass::create(
        &t.client,
        &class_name,
        json!({"tenants": [{"namespaces": [shard], "repositories": ["acme/*"]}],
               "allowedPodAnnotations": ["preview.dev/simulate"]}),
    )
    .await;
    t.create_template("app", template()).await;
    let _operator = Operator::start(
        &[
            "--selector",
            &format!("preview.dev/shard={shard}"),
            "--max-concurrent-rollouts",
            "1",
            "--no-class-status",
        ],
        &[],
    );
    let previews = ["p1", "p2", "p3", "p4"];
    running_fleet(&t, &previews, &class_name, 50, "ba11ad").await;
    // The team ships a template whose service crashes.
    let mut crashing = template();
    crashing["services"][0]["podAnnotations"] = json!({"preview.dev/simulate": "fail"});
    t.set_template("app", crashing).await;
    // Two previews take it and fail; then it goes no further: the rest keep running Ready.
    let outcome = wait_for("the rollout to stop after two failures", READY, || async {
        let mut failed = Vec::new();
        let mut halted = Vec::new();
        for name in previews {
            let pe = t.api.get(name).await.map_err(|e| e.to_string())?;
            let phase = pe.status.as_ref().and_then(|s| s.phase);
            let (_, reason, message) = condition(&pe, "UpToDate");
            if phase == Some(preview_operator::api::Phase::Failed) {
                failed.push(name);
            } else if reason == "RolloutHalted" {
                assert_eq!(condition(&pe, "Ready").0, "True", "{name} stays Ready");
                halted.push((name, message));
            }
        }
        (failed.len() == 2 && halted.len() == 2)
            .then_some((failed.clone(), halted.clone()))
            .ok_or(format!("failed {failed:?}, halted {halted:?}"))
    })
    .await;
    let (failed, halted) = outcome;
    for (name, message) in &halted {
        for broken in &failed {
            assert!(
                message.contains(&format!("{shard}/{broken}")),
                "{name}: {message}"
            );
        }
        let web = Api::<Deployment>::namespaced(t.client.clone(), &t.preview_ns(name))
            .get("web")
            .await
            .expect("web");
        let annotations = web
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .unwrap_or_default();
        assert!(
            !annotations.contains_key("preview.dev/simulate"),
            "{name} runs the template it ran"
        );
    }
    for name in previews {
        let _ = t.api.delete(name, &DeleteParams::default()).await;
    }
    for name in previews {
        common::await_gone(&format!("{name} to be gone"), READY, || t.api.get_opt(name)).await;
    }
}
