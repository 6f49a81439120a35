//! What the operator reads from and writes to pull requests besides commit statuses. Only a
//! pull request GitHub reports closed deletes a preview: the fail-safe resync finds PRs whose
//! webhook never arrived, a GitHub error deletes nothing (and says so in `ScmReachable`), and
//! a replayed "closed" delivery of a reopened PR deletes nothing. Each preview keeps one
//! comment on its PR up to date. GitHub is stood in for by the loopback server of
//! `common::scm`; an operator of this test's own (scoped by `--selector`) talks to it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::scm::{GitHub, Route};
use common::{
    Operator, TestNamespace, await_condition, await_ready, client, install_crd, require_operator,
};
use hmac::{Hmac, KeyInit, Mac};
use kube::api::{Api, PostParams};
use preview_operator::api::PreviewEnvironment;
use serde_json::json;
use sha2::Sha256;

/// GitHub for these tests: pull requests, statuses and comments.
async fn start_stand_in() -> (GitHub, String) {
    let github = GitHub::default();
    let url = github
        .serve(&[Route::Pulls, Route::Statuses, Route::Comments])
        .await;
    (github, url)
}

fn preview(name: &str, shard: &str, pr: i64) -> PreviewEnvironment {
    common::spec("acme/shop", pr, "a1b2c3d4").labelled(name, json!({"preview.dev/shard": shard}))
}

const SECRET: &str = "resync-test-secret";

/// An operator of this test's own, resyncing every `resync`, with a webhook and comments.
fn operator(shard: &str, url: &str, resync: &str) -> Operator {
    Operator::start(
        &[
            "--github-pr-comments",
            "--selector",
            &format!("preview.dev/shard={shard}"),
            "--github-api-url",
            url,
            "--scm-resync-interval",
            resync,
        ],
        &[
            ("PREVIEW_OPERATOR_GITHUB_TOKEN", "test-token"),
            ("PREVIEW_OPERATOR_GITHUB_WEBHOOK_SECRET", SECRET),
        ],
    )
}

async fn exists(api: &Api<PreviewEnvironment>, name: &str) -> bool {
    api.get_opt(name).await.expect("get").is_some()
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn the_resync_deletes_only_previews_whose_pr_github_reports_closed() {
    require_operator();
    let client = client().await;
    install_crd(&client).await;
    let tenant = TestNamespace::create(&client, "scm-resync").await;
    let shard = tenant.name.clone();
    let (github, url) = start_stand_in().await;
    github.set(1, true);
    github.set(2, true);
    let _operator = operator(&shard, &url, "2s");
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &tenant.name);
    for (name, pr) in [("one", 1), ("two", 2)] {
        api.create(&PostParams::default(), &preview(name, &shard, pr))
            .await
            .expect("create");
    }
    let wait = Duration::from_secs(90);
    for name in ["one", "two"] {
        await_ready(&api, name, wait).await;
        await_condition(&api, name, "ScmReachable", "True", None, wait).await;
    }

    // GitHub fails while PR 2 closes: nothing is deleted, and the previews say why.
    github.fail(true);
    github.set(2, false);
    for name in ["one", "two"] {
        await_condition(
            &api,
            name,
            "ScmReachable",
            "False",
            Some("ScmUnreachable"),
            wait,
        )
        .await;
    }
    assert!(exists(&api, "two").await, "an error deleted a preview");

    // GitHub answers again: PR 2 is closed, its preview goes; PR 1's stays.
    github.fail(false);
    let api2 = api.clone();
    common::await_gone("the preview of the closed PR", wait, || api2.get_opt("two")).await;
    await_condition(&api, "one", "ScmReachable", "True", None, wait).await;
    assert!(
        exists(&api, "one").await,
        "the preview of an open PR was deleted"
    );
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Posts a signed "closed" delivery for `acme/shop#pr` with a fresh delivery id.
async fn closed_delivery(webhook: &str, pr: i64, id: &str) -> u16 {
    let body = json!({"action": "closed", "number": pr,
                      "pull_request": {"number": pr, "merged": false},
                      "repository": {"full_name": "acme/shop"}})
    .to_string();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let request = http::Request::post(webhook)
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", id)
        .header("x-hub-signature-256", sign(body.as_bytes()))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    client
        .request(request)
        .await
        .expect("delivery")
        .status()
        .as_u16()
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_closed_delivery_deletes_only_when_github_confirms_and_the_class_binds_the_repository() {
    require_operator();
    let client = client().await;
    install_crd(&client).await;
    let tenant = TestNamespace::create(&client, "scm-confirm").await;
    let shard = tenant.name.clone();
    let (github, url) = start_stand_in().await;
    github.set(3, true);
    // No resync during the test: only the deliveries may delete.
    let operator = operator(&shard, &url, "1h");
    let webhook = operator.metrics.replace("/metrics", "/webhooks/github");
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &tenant.name);
    api.create(&PostParams::default(), &preview("three", &shard, 3))
        .await
        .expect("create");
    await_ready(&api, "three", Duration::from_secs(90)).await;

    // A replayed "closed" (a fresh delivery id, the old signed body) of a PR that is open
    // again: accepted, and nothing deleted.
    let refused = |m: &BTreeMap<String, f64>| {
        common::metric(m, "preview_operator_webhook_confirmations_refused_total")
    };
    let before = refused(&common::scrape(&operator.metrics).await);
    assert_eq!(closed_delivery(&webhook, 3, "replay-1").await, 202);
    common::wait_for(
        "the confirmation to be refused",
        Duration::from_secs(30),
        || async {
            let now = refused(&common::scrape(&operator.metrics).await);
            if now > before {
                Ok(())
            } else {
                Err(format!("{now}"))
            }
        },
    )
    .await;
    assert!(
        exists(&api, "three").await,
        "a replayed delivery deleted the preview of an open PR"
    );

    // Closed for real: the next delivery deletes it.
    github.set(3, false);
    assert_eq!(closed_delivery(&webhook, 3, "closed-2").await, 202);
    let api2 = api.clone();
    common::await_gone(
        "the preview of the closed PR",
        Duration::from_secs(60),
        || api2.get_opt("three"),
    )
    .await;
}

/// The one comment of `marker` on a PR, once it contains every part of `want`.
fn one_comment(github: &GitHub, marker: &str, want: &[&str]) -> Result<String, String> {
    let all = github.comments().clone();
    let ours: Vec<&(i64, String)> = all
        .values()
        .filter(|(_, b)| b.starts_with(marker))
        .collect();
    match ours.as_slice() {
        [(4, body)] if want.iter().all(|w| body.contains(w)) => Ok(body.clone()),
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn each_preview_keeps_one_comment_on_its_pull_request_up_to_date() {
    require_operator();
    let client = client().await;
    install_crd(&client).await;
    let tenant = TestNamespace::create(&client, "scm-comment").await;
    let shard = tenant.name.clone();
    let (github, url) = start_stand_in().await;
    github.set(4, true);
    let _operator = operator(&shard, &url, "1h");
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &tenant.name);
    let pe = common::spec("acme/shop", 4, "c0ffee1001")
        .tests(json!([{"name": "e2e", "image": "e2e:1"}]))
        .labelled("four", json!({"preview.dev/shard": shard}));
    api.create(&PostParams::default(), &pe)
        .await
        .expect("create");
    await_ready(&api, "four", Duration::from_secs(90)).await;
    let marker = format!("<!-- preview-operator:{}/four -->", tenant.name);
    let wait = Duration::from_secs(60);
    let ready = common::wait_for("the comment to show Ready", wait, || async {
        one_comment(&github, &marker, &["**Ready**", "`c0ffee1`"])
    })
    .await;
    assert!(ready.contains("| e2e | passed |"), "{ready}");

    // A new sha edits the same comment: still one.
    let mut current = api.get("four").await.expect("get");
    current.spec.head_sha = "c0ffee2002".into();
    api.replace("four", &PostParams::default(), &current)
        .await
        .expect("new sha");
    common::wait_for("the comment to show the new sha", wait, || async {
        one_comment(&github, &marker, &["**Ready**", "`c0ffee2`"])
    })
    .await;

    // Deleted: the comment says so.
    api.delete("four", &Default::default())
        .await
        .expect("delete");
    common::wait_for("the comment to say torn down", wait, || async {
        one_comment(&github, &marker, &["Torn down"])
    })
    .await;
}
