//! The operator as a GitHub App, and on GitLab. GitHub and GitLab are stood in for by the
//! loopback servers of `common::scm`; an operator of this test's own (scoped by `--selector`)
//! talks to them.
//!
//! - As an App, the operator signs a JWT (RS256) with the App's key; the stand-in verifies it
//!   with the public key of a key pair this test generates, hands out an installation token,
//!   and accepts check runs only with that token. A failing test's check run is created in
//!   progress and completed with the summary, the end of the test's log (served by KWOK from a
//!   file, as `kubectl logs` would show it) and an annotation from the JUnit report in it.
//! - On GitLab, commit statuses arrive on the merge request's sha, one note is kept up to
//!   date, and a merge request webhook tears the preview down only when GitLab confirms the
//!   merge request is merged (a replayed or forged-then-replayed delivery deletes nothing).
//! - Without the rig: the comment writer, with a token, as an App and on GitLab, edits only
//!   the comment its own identity wrote, never one someone else posted with the preview's
//!   marker (a person, another App's bot, a person acting through the App).
//! - A GitLab reached over plain HTTP stops the operator at start-up unless allowed.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::scm::{
    APP_ID, GitHub as StandIn, GitLab, INSTALLATION, INSTALLATION_TOKEN, OUR_USER, Route, Seen,
    Thread,
};
use common::{
    Operator, TestNamespace, await_condition, await_ready, client, install_crd, require_operator,
};
use kube::api::{Api, PostParams};
use preview_operator::api::PreviewEnvironment;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use serde_json::{Value, json};

/// The end of a test's output: runner chatter around a JUnit report with one failed case.
const TEST_LOG: &[&str] = &[
    "> shop-e2e@1.0.0 test",
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
    "<testsuites tests=\"3\" failures=\"1\">",
    "<testsuite name=\"checkout\" tests=\"3\" failures=\"1\">",
    "<testcase name=\"adds to cart\" classname=\"cart\" time=\"0.4\"/>",
    "<testcase name=\"pays\" classname=\"checkout\" file=\"tests/pay.spec.ts\" line=\"42\" time=\"1.2\">",
    "<failure message=\"expected 200, got 500\">AssertionError at pay.spec.ts:42</failure>",
    "</testcase>",
    "<testcase name=\"shows the receipt\" classname=\"checkout\" time=\"0.3\"/>",
    "</testsuite>",
    "</testsuites>",
    "npm ERR! Test failed. See above for more details.",
];

/// Makes `kubectl logs` of every pod in `namespace` answer `lines`: KWOK serves the file a
/// ClusterLogs object names, written in the container runtime's log format.
fn serve_logs(namespace: &str, lines: &[&str]) -> String {
    let dir = std::env::temp_dir().join("preview-operator-test-logs");
    std::fs::create_dir_all(&dir).expect("a log directory");
    let file = dir.join(format!("{namespace}.log"));
    let cri: String = lines
        .iter()
        .map(|l| format!("2026-11-28T10:00:00.000000000Z stdout F {l}\n"))
        .collect();
    std::fs::write(&file, cri).expect("the log file");
    let name = format!("logs-{namespace}");
    let manifest = json!({
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterLogs",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchNamespaces": [namespace]},
            "logs": [{"logsFile": file.to_string_lossy()}],
        },
    });
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, manifest.to_string()).expect("the manifest");
    let (ok, _, err) = common::kubectl(&["apply", "-f", &path.to_string_lossy()]);
    assert!(ok, "ClusterLogs created: {err}");
    name
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_github_app_writes_a_check_run_with_the_failed_tests_log_and_junit_annotations() {
    require_operator();
    let client = client().await;
    install_crd(&client).await;
    let tenant = TestNamespace::create(&client, "gh-app").await;
    let shard = tenant.name.clone();

    // The App's key pair: the operator gets the private key, the stand-in the public one.
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("a key");
    let private_pem = key.to_pkcs1_pem(LineEnding::LF).expect("PEM");
    let public_pem = rsa::RsaPublicKey::from(&key)
        .to_public_key_pem(LineEnding::LF)
        .expect("PEM");
    let key_file = std::env::temp_dir().join(format!("{shard}-app.pem"));
    std::fs::write(&key_file, private_pem.as_bytes()).expect("the key file");

    let stand_in = StandIn::app(&public_pem);
    let url = stand_in.serve(&[Route::App, Route::CheckRuns]).await;
    let _operator = Operator::start(
        &[
            "--selector",
            &format!("preview.dev/shard={shard}"),
            "--github-api-url",
            &url,
            "--github-app-id",
            &APP_ID.to_string(),
            "--github-app-private-key-file",
            &key_file.to_string_lossy(),
        ],
        &[],
    );

    let name = "checked";
    let preview_ns = preview_operator::naming::preview_namespace("pr-", &tenant.name, name);
    let logs = serve_logs(&preview_ns, TEST_LOG);
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &tenant.name);
    let pe = common::spec("acme/shop", 21, "c0ffee12")
        .tests(json!([{"name": "e2e", "image": "e2e:1",
                        "podAnnotations": {"preview.dev/simulate": "fail"}}]))
        .labelled(name, json!({"preview.dev/shard": shard}));
    api.create(&PostParams::default(), &pe)
        .await
        .expect("create");
    await_condition(
        &api,
        name,
        "Ready",
        "False",
        Some("TestFailed"),
        Duration::from_secs(120),
    )
    .await;

    let context = format!("preview/{shard}/{name}");
    let completed = common::wait_for("a completed check run", Duration::from_secs(60), || async {
        stand_in
            .seen()
            .into_iter()
            .find(|s| s.body["status"] == "completed")
            .ok_or_else(|| format!("{:#?}", stand_in.seen()))
    })
    .await;
    let seen = stand_in.seen();
    let bad_jwts = stand_in.bad_jwts.lock().map(|b| b.len()).unwrap_or(1);
    assert_eq!(bad_jwts, 0, "every JWT verified with the App's public key");
    assert!(
        seen.iter()
            .any(|s| s.path == "/repos/acme/shop/installation"),
        "the installation was looked up: {seen:#?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.path == format!("/app/installations/{INSTALLATION}/access_tokens")),
        "an installation token was asked for"
    );
    let runs: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path.contains("check-runs"))
        .collect();
    assert!(
        runs.iter().all(|s| s.credential == INSTALLATION_TOKEN),
        "check runs are written with the installation token: {runs:#?}"
    );
    let created = runs
        .iter()
        .find(|s| s.method == "POST")
        .expect("a check run created");
    assert_eq!(created.body["name"], context.as_str());
    assert_eq!(created.body["head_sha"], "c0ffee12");
    assert_eq!(
        created.body["status"], "in_progress",
        "created while it runs"
    );
    assert_eq!(
        runs.iter().filter(|s| s.method == "POST").count(),
        1,
        "one check run per preview and sha, then edited: {runs:#?}"
    );

    assert_eq!(completed.body["conclusion"], "failure");
    let output = &completed.body["output"];
    let summary = output["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("| e2e | **failed** |")
            && summary.contains("3 cases: 2 passed, 1 failed, 0 skipped"),
        "the summary has the test table with the JUnit counts:\n{summary}"
    );
    let text = output["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("npm ERR! Test failed"),
        "the text has the end of the log:\n{text}"
    );
    let annotations = output["annotations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(annotations.len(), 1, "{annotations:#?}");
    assert_eq!(annotations[0]["path"], "tests/pay.spec.ts");
    assert_eq!(annotations[0]["start_line"], 42);
    assert_eq!(annotations[0]["annotation_level"], "failure");
    assert_eq!(annotations[0]["message"], "expected 200, got 500");

    common::kubectl(&[
        "delete",
        "clusterlogs.kwok.x-k8s.io",
        &logs,
        "--ignore-not-found",
    ]);
    let tenant = common::Tenant {
        client: client.clone(),
        api: api.clone(),
        namespace: tenant,
    };
    tenant.delete_and_wait(name).await;
}

/// Posts a merge request hook to the operator; the answer's status.
fn gitlab_hook(url: &str, token: Option<&str>, uuid: &str, action: &str, iid: i64) -> u16 {
    let body = json!({
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "project": {"path_with_namespace": "acme/platform/shop"},
        "object_attributes": {"iid": iid, "action": action, "state": "merged"},
    });
    let mut args = vec![
        "-s".to_string(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_code}".into(),
        "-X".into(),
        "POST".into(),
        "-H".into(),
        "X-Gitlab-Event: Merge Request Hook".into(),
        "-H".into(),
        format!("X-Gitlab-Event-UUID: {uuid}"),
        "-H".into(),
        "Content-Type: application/json".into(),
        "--data-binary".into(),
        body.to_string(),
    ];
    if let Some(token) = token {
        args.extend(["-H".into(), format!("X-Gitlab-Token: {token}")]);
    }
    args.push(url.to_string());
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn on_gitlab_statuses_and_a_note_arrive_and_only_a_confirmed_merge_tears_down() {
    require_operator();
    let client = client().await;
    install_crd(&client).await;
    let tenant = TestNamespace::create(&client, "gitlab").await;
    let shard = tenant.name.clone();
    let stand_in = GitLab::default();
    stand_in
        .states
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(5, "opened".into());
    let url = stand_in.serve().await;
    let operator = Operator::start(
        &[
            "--selector",
            &format!("preview.dev/shard={shard}"),
            "--gitlab-url",
            &url,
            // The stand-in serves plain http on loopback.
            "--gitlab-allow-http",
            "--gitlab-mr-notes",
        ],
        &[
            ("PREVIEW_OPERATOR_GITLAB_TOKEN", "glpat-test"),
            ("PREVIEW_OPERATOR_GITLAB_WEBHOOK_SECRET", "hook-secret"),
        ],
    );
    let hook_url = operator.metrics.replace("/metrics", "/webhooks/gitlab");

    let name = "mr-5";
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &tenant.name);
    let pe = common::spec("acme/platform/shop", 5, "fade0123")
        .with("provider", json!("gitlab"))
        .tests(json!([{"name": "e2e", "image": "e2e:1"}]))
        .labelled(name, json!({"preview.dev/shard": shard}));
    api.create(&PostParams::default(), &pe)
        .await
        .expect("create");
    await_ready(&api, name, Duration::from_secs(120)).await;

    let project_path = "/projects/acme/platform/shop";
    let states = common::wait_for("a success status", Duration::from_secs(60), || async {
        let states: Vec<String> = stand_in
            .seen()
            .iter()
            .filter(|s| s.path == format!("{project_path}/statuses/fade0123"))
            .map(|s| s.body["state"].as_str().unwrap_or_default().to_string())
            .collect();
        (states.last().map(String::as_str) == Some("success"))
            .then(|| states.clone())
            .ok_or_else(|| format!("{states:?}"))
    })
    .await;
    assert!(
        matches!(
            states.first().map(String::as_str),
            Some("pending" | "running")
        ),
        "a pending or running status first: {states:?}"
    );
    let statuses: Vec<Seen> = stand_in
        .seen()
        .into_iter()
        .filter(|s| s.path.contains("/statuses/"))
        .collect();
    assert!(
        statuses
            .iter()
            .all(|s| s.credential == "glpat-test"
                && s.body["name"] == format!("preview/{shard}/{name}")),
        "{statuses:#?}"
    );
    let note = common::wait_for("the note says Ready", Duration::from_secs(60), || async {
        let notes = stand_in.notes();
        match notes.values().next() {
            Some(body) if body.contains("**Ready**") => Ok(body.clone()),
            _ => Err(format!("{notes:?}")),
        }
    })
    .await;
    assert!(note.starts_with(&format!("<!-- preview-operator:{shard}/{name} -->")));
    assert_eq!(stand_in.notes().len(), 1, "one note, edited in place");

    // Wrong or missing secret: refused.
    assert_eq!(gitlab_hook(&hook_url, None, "u-0", "merge", 5), 401);
    assert_eq!(
        gitlab_hook(&hook_url, Some("guess"), "u-1", "merge", 5),
        401
    );
    // A merge event GitLab does not confirm (replayed, or the MR is open again): nothing.
    assert_eq!(
        gitlab_hook(&hook_url, Some("hook-secret"), "u-2", "merge", 5),
        202
    );
    common::wait_for(
        "the unconfirmed merge refused",
        Duration::from_secs(30),
        || async {
            let m = common::scrape(&operator.metrics).await;
            let refused =
                common::metric(&m, "preview_operator_webhook_confirmations_refused_total");
            (refused >= 1.0)
                .then_some(())
                .ok_or_else(|| format!("{refused} refused"))
        },
    )
    .await;
    assert!(
        api.get_opt(name)
            .await
            .expect("get")
            .is_some_and(|p| p.metadata.deletion_timestamp.is_none()),
        "an unconfirmed merge deletes nothing"
    );

    // Merged for real: the preview goes.
    stand_in
        .states
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(5, "merged".into());
    assert_eq!(
        gitlab_hook(&hook_url, Some("hook-secret"), "u-3", "merge", 5),
        202
    );
    common::await_gone("the merged preview", Duration::from_secs(120), || {
        api.get_opt(name)
    })
    .await;
    common::wait_for(
        "the note says torn down",
        Duration::from_secs(60),
        || async {
            let notes = stand_in.notes();
            match notes.values().next() {
                Some(body) if body.contains("Torn down") => Ok(()),
                _ => Err(format!("{notes:?}")),
            }
        },
    )
    .await;
    assert_eq!(stand_in.notes().len(), 1, "still one note");
}

// The operator's own comment, and only it. These run without the rig: the comment writer
// talks to a stand-in on 127.0.0.1 (`common::scm::Thread`) directly, as the operator would after a restart (no
// comment id remembered), on a pull request where someone else posted a comment that starts
// with the preview's marker.

const PREVIEW: &str = "team-shop/shop-pr-7";

fn comment(repository: &str, text: &str) -> preview_operator::scm::comment::Comment {
    let marker = preview_operator::scm::comment::marker(PREVIEW);
    preview_operator::scm::comment::Comment {
        repository: repository.to_string(),
        pull_request: 7,
        preview: PREVIEW.to_string(),
        body: format!("{marker}\n{text}"),
    }
}

/// On a pull request whose only marked comments are `forged`: the operator leaves them alone
/// and creates its own; started again (nothing remembered), it edits its own, never a forged
/// one. Returns what the operator did.
async fn only_our_comment_is_edited(
    forge: std::sync::Arc<dyn preview_operator::scm::Forge>,
    thread: &Thread,
    repository: &str,
) -> Vec<String> {
    use preview_operator::scm::comment;
    let forged = thread.lock_comments().clone();
    let wait = Duration::from_secs(20);

    let writer = comment::start(forge.clone());
    writer.send(comment(repository, "ours, first"));
    let created = common::wait_for("our own comment created", wait, || async {
        thread
            .log()
            .iter()
            .find_map(|l| l.strip_prefix("create ")?.parse::<u64>().ok())
            .ok_or_else(|| format!("{:?}", thread.log()))
    })
    .await;
    drop(writer);

    // A restart: a new writer remembers no comment and looks for the marker again.
    let writer = comment::start(forge);
    writer.send(comment(repository, "ours, second"));
    common::wait_for("our own comment edited", wait, || async {
        let log = thread.log();
        log.contains(&format!("edit {created}"))
            .then_some(())
            .ok_or_else(|| format!("{log:?}"))
    })
    .await;

    let log = thread.log();
    assert_eq!(
        log.iter().filter(|l| l.starts_with("create")).count(),
        1,
        "one comment of ours: {log:?}"
    );
    assert!(
        log.iter()
            .all(|l| !l.starts_with("edit") || *l == format!("edit {created}")),
        "only our comment was edited: {log:?}"
    );
    let now = thread.lock_comments().clone();
    for (id, c) in &forged {
        assert_eq!(now.get(id), Some(c), "forged comment {id} untouched");
    }
    assert!(now[&created].1.ends_with("ours, second"));
    log
}

fn metrics() -> Arc<preview_operator::metrics::Metrics> {
    Arc::new(preview_operator::metrics::Metrics::new())
}

#[tokio::test]
async fn with_a_token_only_the_tokens_own_comment_is_edited_never_a_forged_one() {
    use preview_operator::github::{Credentials, GitHub, GitHubConfig};
    let marker = preview_operator::scm::comment::marker(PREVIEW);
    let user = |id: u64, login: &str| json!({"user": {"id": id, "login": login, "type": "User"}});
    let thread = Thread::new(
        user(OUR_USER, "preview-bot"),
        &[user(666, "mallory"), json!({})],
        &marker,
    );
    let url = common::serve_locally(thread.github()).await;
    let config = GitHubConfig {
        api_url: url,
        credentials: Credentials::Token("test-token".into()),
    };
    let github = GitHub::new(&config, metrics()).expect("a client");
    let log = only_our_comment_is_edited(github, &thread, "acme/shop").await;
    assert_eq!(
        log.iter().filter(|l| *l == "user").count(),
        1,
        "GET /user once, then remembered: {log:?}"
    );
}

#[tokio::test]
async fn on_gitlab_only_the_tokens_own_note_is_edited_never_a_forged_one() {
    use preview_operator::gitlab::{GitLab, GitLabConfig};
    let marker = preview_operator::scm::comment::marker(PREVIEW);
    let author = |id: u64| json!({"author": {"id": id, "username": format!("user-{id}")}});
    let thread = Thread::new(author(OUR_USER), &[author(666), json!({})], &marker);
    let url = common::serve_locally(thread.gitlab()).await;
    let config = GitLabConfig {
        url,
        token: "glpat-test".into(),
    };
    let gitlab = GitLab::new(&config, metrics()).expect("a client");
    let log = only_our_comment_is_edited(gitlab, &thread, "acme/platform/shop").await;
    assert_eq!(
        log.iter().filter(|l| *l == "user").count(),
        1,
        "GET /user once, then remembered: {log:?}"
    );
}

#[tokio::test]
async fn as_an_app_only_the_apps_own_comment_is_edited_never_a_forged_one() {
    use preview_operator::github::{Credentials, GitHub, GitHubConfig};
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("a key");
    let private_pem = key.to_pkcs1_pem(LineEnding::LF).expect("PEM");
    let public_pem = rsa::RsaPublicKey::from(&key)
        .to_public_key_pem(LineEnding::LF)
        .expect("PEM");
    let app = StandIn::app(&public_pem);
    let marker = preview_operator::scm::comment::marker(PREVIEW);
    let by = |id: u64, login: &str, kind: &str, app: Value| json!({"user": {"id": id, "login": login, "type": kind}, "performed_via_github_app": app});
    let thread = Thread::new(
        by(9001, "preview-operator[bot]", "Bot", json!({"id": APP_ID})),
        &[
            // A person, another App's bot, a person acting through our App, a bot with a token.
            by(666, "mallory", "User", Value::Null),
            by(41898282, "github-actions[bot]", "Bot", json!({"id": 15368})),
            by(667, "eve", "User", json!({"id": APP_ID})),
            by(668, "some-bot[bot]", "Bot", Value::Null),
        ],
        &marker,
    );
    let routes = app.router(&[Route::App]);
    let url = common::serve_locally(routes.merge(thread.github())).await;
    let config = GitHubConfig {
        api_url: url,
        credentials: Credentials::App {
            id: APP_ID,
            private_key: private_pem.as_str().into(),
        },
    };
    let github = GitHub::new(&config, metrics()).expect("a client");
    let log = only_our_comment_is_edited(github, &thread, "acme/shop").await;
    assert!(
        !log.contains(&"user".to_string()),
        "an App knows who it is without asking: {log:?}"
    );
    assert!(
        app.seen()
            .iter()
            .any(|s| s.path.ends_with("/access_tokens")),
        "the comments were written with an installation token"
    );
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_plain_http_gitlab_stops_the_operator_at_once_unless_allowed() {
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(common::rig_var("PREVIEW_OPERATOR_BIN"))
            .args([
                "run",
                "--http-addr",
                "127.0.0.1:0",
                "--wake-addr",
                "127.0.0.1:0",
            ])
            .args(["--health-addr", "127.0.0.1:0"])
            .args(["--gitlab-url", "http://gitlab.internal"])
            // Stops the start-up right after the flags, should they pass.
            .args(["--selector", "=bad=="])
            .args(extra)
            .env("KUBECONFIG", common::rig_var("PREVIEW_OPERATOR_KUBECONFIG"))
            .output()
            .expect("the operator runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let started = Instant::now();
    let refused = run(&[]);
    assert!(
        refused.contains("http://gitlab.internal") && refused.contains("--gitlab-allow-http"),
        "{refused}"
    );
    let allowed = run(&["--gitlab-allow-http"]);
    assert!(
        !allowed.contains("--gitlab-allow-http") && allowed.contains("--selector"),
        "with the flag the URL passes: {allowed}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}
