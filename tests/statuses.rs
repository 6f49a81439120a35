//! Commit statuses reach GitHub in order (pending, then success or failure), survive server
//! errors and rate limits, and carry the token. GitHub is stood in for by the loopback server
//! of `common::scm`; an operator of this test's own (scoped by `--selector`) posts to it.

mod common;

use std::time::Duration;

use common::scm::{GitHub, Route};
use common::{
    Operator, TestClass, TestNamespace, await_condition, await_ready, client, install_crd,
    require_operator, wait_for,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use preview_operator::api::PreviewEnvironment;
use serde_json::json;

/// GitHub for these tests: commit statuses only, answered with `script` first.
async fn start_stand_in(script: Vec<u16>) -> (GitHub, String) {
    let github = GitHub::with_script(script);
    let url = github.serve(&[Route::Statuses]).await;
    (github, url)
}

fn preview(name: &str, shard: &str, sha: &str, failing: bool) -> PreviewEnvironment {
    let annotations = if failing {
        json!({"preview.dev/simulate": "fail"})
    } else {
        json!({})
    };
    common::spec("acme/shop", 9, sha)
        .tests(json!([{"name": "e2e", "image": "e2e:1", "podAnnotations": annotations}]))
        .labelled(name, json!({"preview.dev/shard": shard}))
}

/// The states posted for `sha` under context `preview/<name>`, in arrival order, counting only
/// the attempts the stand-in accepted.
fn accepted_states(stand_in: &GitHub, sha: &str, preview: &str) -> Vec<String> {
    stand_in
        .received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|r| r.answered == 201 && r.path.ends_with(sha))
        .filter(|r| r.body["context"] == format!("preview/{preview}"))
        .map(|r| r.body["state"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn commit_statuses_arrive_in_order_through_errors_and_rate_limits() {
    require_operator();
    let client = client().await;
    install_crd(&client).await;
    let tenant = TestNamespace::create(&client, "gh-status").await;
    let shard = tenant.name.clone();
    // The first answer is a server error, the second a rate limit: both must be retried.
    let (stand_in, url) = start_stand_in(vec![500, 403]).await;
    let _operator = Operator::start(
        &[
            "--selector",
            &format!("preview.dev/shard={shard}"),
            "--github-api-url",
            &url,
        ],
        &[("PREVIEW_OPERATOR_GITHUB_TOKEN", "test-token")],
    );
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &tenant.name);
    let pp = PostParams::default();
    api.create(&pp, &preview("good", &shard, "a1b2c3d4", false))
        .await
        .expect("create");
    api.create(&pp, &preview("bad", &shard, "d4c3b2a1", true))
        .await
        .expect("create");
    await_ready(&api, "good", Duration::from_secs(90)).await;
    await_condition(
        &api,
        "bad",
        "Ready",
        "False",
        Some("TestFailed"),
        Duration::from_secs(90),
    )
    .await;

    let good = wait_for(
        "a success status for good",
        Duration::from_secs(60),
        || async {
            let states = accepted_states(&stand_in, "a1b2c3d4", &format!("{shard}/good"));
            (states.last().map(String::as_str) == Some("success"))
                .then(|| states.clone())
                .ok_or_else(|| format!("{states:?}"))
        },
    )
    .await;
    let bad = wait_for(
        "a failure status for bad",
        Duration::from_secs(60),
        || async {
            let states = accepted_states(&stand_in, "d4c3b2a1", &format!("{shard}/bad"));
            (states.last().map(String::as_str) == Some("failure"))
                .then(|| states.clone())
                .ok_or_else(|| format!("{states:?}"))
        },
    )
    .await;
    for states in [&good, &bad] {
        assert_eq!(
            states.first().map(String::as_str),
            Some("pending"),
            "{states:?}"
        );
        let last_pending = states.iter().rposition(|s| s == "pending").unwrap_or(0);
        assert_eq!(
            last_pending,
            states.len() - 2,
            "pending only before the verdict: {states:?}"
        );
        // One status per real change: consecutive duplicates would mean per-reconcile posts.
        assert!(
            states.windows(2).all(|w| w[0] != w[1] || w[0] == "pending"),
            "{states:?}"
        );
    }

    let received = stand_in.received();
    assert!(
        received.iter().any(|r| r.answered == 500),
        "the stand-in answered 500 once"
    );
    assert!(
        received.iter().any(|r| r.answered == 403),
        "and rate-limited once"
    );
    assert!(
        received
            .iter()
            .all(|r| r.authorization == "Bearer test-token")
    );
    assert!(
        received
            .iter()
            .all(|r| r.path.starts_with("/repos/acme/shop/statuses/"))
    );
    let success = received
        .iter()
        .find(|r| r.body["state"] == "success")
        .expect("a success");
    assert!(
        success.body["description"]
            .as_str()
            .unwrap_or_default()
            .contains("1/1 passed")
    );
    assert!(
        success.body["target_url"]
            .as_str()
            .unwrap_or_default()
            .starts_with("http://web.")
    );

    for name in ["good", "bad"] {
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    common::await_gone("the previews", Duration::from_secs(120), || {
        api.get_opt("good")
    })
    .await;
    common::await_gone("the previews", Duration::from_secs(120), || {
        api.get_opt("bad")
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_repository_its_class_does_not_bind_to_the_namespace_gets_no_namespace_and_no_status() {
    require_operator();
    let client = client().await;
    install_crd(&client).await;
    let tenant = TestNamespace::create(&client, "gh-refused").await;
    let shard = tenant.name.clone();
    // This tenant may preview acme/allowed under the class, and nothing else.
    let class_name = format!("narrow-{shard}");
    let _class = TestClass::create(
        &client,
        &class_name,
        json!({"tenants": [{"namespaces": [shard], "repositories": ["acme/allowed"]}]}),
    )
    .await;
    let (stand_in, url) = start_stand_in(vec![]).await;
    let _operator = Operator::start(
        &[
            "--selector",
            &format!("preview.dev/shard={shard}"),
            "--github-api-url",
            &url,
        ],
        &[("PREVIEW_OPERATOR_GITHUB_TOKEN", "test-token")],
    );
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &tenant.name);
    let labels = json!({"preview.dev/shard": shard});
    let under_class = |repo: &str, sha: &str| {
        common::spec(repo, 5, sha).with("previewClassName", json!(class_name))
    };
    let pp = PostParams::default();
    api.create(
        &pp,
        &under_class("acme/payments", "e1e2e3e4").labelled("other", labels.clone()),
    )
    .await
    .expect("create");
    api.create(
        &pp,
        &under_class("acme/allowed", "f1f2f3f4").labelled("allowed", labels),
    )
    .await
    .expect("create");

    let refused = await_condition(
        &api,
        "other",
        "Admitted",
        "False",
        Some("RepositoryNotAllowed"),
        Duration::from_secs(60),
    )
    .await;
    let conditions = refused.status.unwrap_or_default().conditions;
    let message = (conditions.iter().find(|c| c.type_ == "Admitted"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("acme/payments") && message.contains(&class_name),
        "{message}"
    );
    // Nothing ran, so nothing is known: no condition claims it is fine.
    for kind in ["Available", "TestsSucceeded", "Awake"] {
        let c = conditions.iter().find(|c| c.type_ == kind);
        assert_eq!(
            c.map(|c| (c.status.as_ref(), c.reason.as_ref())),
            Some(("Unknown", "RepositoryNotAllowed")),
            "{kind}"
        );
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let owned = namespaces
        .list(&ListParams::default().labels(&format!(
            "preview.dev/owner-namespace={},preview.dev/owner-name=other",
            tenant.name
        )))
        .await
        .expect("list namespaces");
    assert!(
        owned.items.is_empty(),
        "a refused preview gets no namespace"
    );
    // The admitted one proves statuses flow; the refused one must have posted nothing.
    await_ready(&api, "allowed", Duration::from_secs(90)).await;
    wait_for(
        "a success status for the admitted preview",
        Duration::from_secs(60),
        || async {
            let states = accepted_states(&stand_in, "f1f2f3f4", &format!("{shard}/allowed"));
            (states.last().map(String::as_str) == Some("success"))
                .then_some(())
                .ok_or_else(|| format!("{states:?}"))
        },
    )
    .await;
    let received = stand_in.received();
    assert!(
        received
            .iter()
            .all(|r| !r.path.contains("e1e2e3e4") && !r.path.contains("acme/payments")),
        "a refused preview posted a status: {received:?}"
    );
    let ns = preview_operator::naming::preview_namespace("pr-", &shard, "other");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    assert!(
        namespaces.get_opt(&ns).await.expect("get").is_none(),
        "no namespace for it"
    );

    for name in ["other", "allowed"] {
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
        common::await_gone("the preview", Duration::from_secs(120), || {
            api.get_opt(name)
        })
        .await;
    }
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_dropped_commit_status_is_posted_again_until_github_has_it() {
    require_operator();
    let client = client().await;
    install_crd(&client).await;
    let tenant = TestNamespace::create(&client, "gh-heal").await;
    let shard = tenant.name.clone();
    let (stand_in, url) = start_stand_in(vec![]).await;
    // Every attempt of the first `success` post fails (the poster gives up after 6): before
    // the status kept what GitHub acknowledged, that success was lost for good.
    *stand_in.refuse.lock().unwrap_or_else(|p| p.into_inner()) = Some(("success".into(), 6));
    let _operator = Operator::start(
        &[
            "--selector",
            &format!("preview.dev/shard={shard}"),
            "--github-api-url",
            &url,
        ],
        &[("PREVIEW_OPERATOR_GITHUB_TOKEN", "test-token")],
    );
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &tenant.name);
    api.create(
        &PostParams::default(),
        &preview("heal", &shard, "c0ffee12", false),
    )
    .await
    .expect("create");
    await_ready(&api, "heal", Duration::from_secs(90)).await;
    wait_for(
        "the success status to arrive after all",
        Duration::from_secs(120),
        || async {
            let states = accepted_states(&stand_in, "c0ffee12", &format!("{shard}/heal"));
            (states.last().map(String::as_str) == Some("success"))
                .then_some(())
                .ok_or_else(|| format!("{states:?}"))
        },
    )
    .await;
    let refused = stand_in
        .received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|r| r.body["state"] == "success" && r.answered == 500)
        .count();
    assert_eq!(refused, 6, "the first post was dropped after every attempt");
    let reported = wait_for(
        "the status to record it",
        Duration::from_secs(30),
        || async {
            let pe = api.get("heal").await.map_err(|e| e.to_string())?;
            let reported = pe.status.and_then(|s| s.reported_commit_status);
            match reported {
                Some(r) if r.state == "success" => Ok(r),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert_eq!(reported.sha, "c0ffee12");
    api.delete("heal", &DeleteParams::default())
        .await
        .expect("delete");
    common::await_gone("the preview", Duration::from_secs(120), || {
        api.get_opt("heal")
    })
    .await;
}
