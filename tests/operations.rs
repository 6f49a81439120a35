//! Operating the operator: metrics that move, leader election with failover, start-up that
//! stops at once on a bad selector, and probes a flood cannot fail, on the rig. hack/test.sh
//! installs the chart and runs the operator as its ServiceAccount.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{
    Operator, TestNamespace, await_gone, await_ready, client, install_crd, metric,
    require_operator, rig_var, scrape, sum_prefix, wait_for,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use preview_operator::api::PreviewEnvironment;
use serde_json::json;

fn spec(sha: &str) -> serde_json::Value {
    common::spec("acme/metrics", 3, sha)
        .tests(json!([{"name": "smoke", "image": "smoke:1"}]))
        .json()
}

use common::preview;

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn metrics_move_through_a_lifecycle() {
    require_operator();
    let url = rig_var("PREVIEW_OPERATOR_METRICS_URL");
    let client = client().await;
    install_crd(&client).await;
    let tenant = TestNamespace::create(&client, "ops-metrics").await;
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &tenant.name);
    let before = scrape(&url).await;

    api.create(
        &PostParams::default(),
        &preview("m", json!({}), spec("e000001")),
    )
    .await
    .expect("create");
    await_ready(&api, "m", Duration::from_secs(60)).await;
    let ready = scrape(&url).await;
    assert!(metric(&ready, "preview_operator_environments{phase=\"Ready\"}") >= 1.0);
    api.delete("m", &DeleteParams::default())
        .await
        .expect("delete");
    await_gone("the preview", Duration::from_secs(120), || api.get_opt("m")).await;
    let after = scrape(&url).await;

    let moved = |name: &str| metric(&after, name) - metric(&before, name);
    assert!(
        moved("preview_operator_reconciles_total") >= 3.0,
        "reconciles"
    );
    // Per tenant and repository: this test's own series. The repository label is the class
    // pattern that admits it (the test class's `*/*`), never the name a tenant chose.
    let ours = |name: &str| {
        format!(
            "preview_operator_{name}{{tenant=\"{}\",repository=\"*/*\"",
            tenant.name
        )
    };
    let moved_ours =
        |name: &str| sum_prefix(&after, &ours(name)) - sum_prefix(&before, &ours(name));
    assert!(
        moved_ours("time_to_ready_seconds_count") >= 1.0,
        "time to ready"
    );
    assert!(moved_ours("test_runs_total") >= 1.0, "test runs");

    assert!(
        moved("preview_operator_test_duration_seconds_count") >= 1.0,
        "test duration"
    );
    assert!(
        moved("preview_operator_teardown_duration_seconds_count") >= 1.0,
        "teardown"
    );
    let writes = |m: &BTreeMap<String, f64>| {
        sum_prefix(
            m,
            "preview_operator_kubernetes_requests_total{verb=\"patch\"",
        )
    };
    assert!(writes(&after) > writes(&before), "API patches are counted");
    assert_eq!(metric(&after, "preview_operator_leader"), 1.0);
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn only_the_leader_writes_and_a_follower_takes_over_within_the_lease_duration() {
    require_operator();
    let client = client().await;
    install_crd(&client).await;
    let tenant = TestNamespace::create(&client, "ops-leader").await;
    let shard = tenant.name.clone();
    let lease = format!("leader-test-{}", std::process::id());
    let a = Operator::start(
        &[
            "--leader-election",
            "--lease-namespace",
            "preview-system",
            "--lease-name",
            &lease,
            "--lease-duration",
            "6s",
            "--selector",
            &format!("preview.dev/shard={shard}"),
        ],
        &[],
    );
    let b = Operator::start(
        &[
            "--leader-election",
            "--lease-namespace",
            "preview-system",
            "--lease-name",
            &lease,
            "--lease-duration",
            "6s",
            "--selector",
            &format!("preview.dev/shard={shard}"),
        ],
        &[],
    );

    let (leader, follower) = wait_for("exactly one leader", Duration::from_secs(60), || async {
        match (a.leads().await, b.leads().await) {
            (Some(true), Some(false)) => Ok((&a, &b)),
            (Some(false), Some(true)) => Ok((&b, &a)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let follower_writes_before = follower.writes().await;
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &tenant.name);
    let labels = json!({"preview.dev/shard": shard});
    api.create(
        &PostParams::default(),
        &preview("ha", labels, spec("f000001")),
    )
    .await
    .expect("create");
    await_ready(&api, "ha", Duration::from_secs(60)).await;
    assert!(leader.reconciles().await >= 1.0, "the leader reconciles");
    assert_eq!(
        follower.reconciles().await,
        0.0,
        "a follower never reconciles"
    );
    assert_eq!(
        follower.writes().await,
        follower_writes_before,
        "a follower makes no write request while the leader works"
    );

    // Kill the leader without a chance to hand over the lease.
    let (mut dead, survivor) = if std::ptr::eq(leader, &a) {
        (a, b)
    } else {
        (b, a)
    };
    dead.child.kill().expect("SIGKILL the leader");
    let _ = dead.child.wait();
    let killed = Instant::now();
    wait_for(
        "the follower to take over",
        Duration::from_secs(30),
        || async {
            match survivor.leads().await {
                Some(true) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let failover = killed.elapsed();
    common::record(&format!(
        "leader failover after SIGKILL: {failover:?} (lease 6s)"
    ));
    assert!(
        failover <= Duration::from_secs(6 + 2),
        "failover took {failover:?}, lease is 6s"
    );

    // The new leader does the work: a new sha rolls out.
    api.patch(
        "ha",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"headSha": "f000002"}})),
    )
    .await
    .expect("new sha");
    let pe = await_ready(&api, "ha", Duration::from_secs(60)).await;
    assert_eq!(
        pe.status.and_then(|s| s.deployed_sha).as_deref(),
        Some("f000002")
    );
    api.delete("ha", &DeleteParams::default())
        .await
        .expect("delete");
    await_gone("the preview", Duration::from_secs(120), || {
        api.get_opt("ha")
    })
    .await;
    drop(survivor);
    drop(dead);
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_bad_selector_stops_the_operator_at_once_with_a_message() {
    let bin = rig_var("PREVIEW_OPERATOR_BIN");
    let started = std::time::Instant::now();
    let out = std::process::Command::new(bin)
        .args(["run", "--http-addr", "127.0.0.1:0", "--selector", "=bad=="])
        .env("KUBECONFIG", rig_var("PREVIEW_OPERATOR_KUBECONFIG"))
        .output()
        .expect("the operator runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it must not run with a bad selector");
    assert!(
        stderr.contains("--selector") && stderr.contains("=bad=="),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it stopped only after {:?}",
        started.elapsed()
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The status code of `GET path` on a fresh connection, None without an answer.
fn probe(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut std::net::TcpStream, within: Duration) -> bool {
    use std::io::Read;
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_flooded_webhook_port_cannot_fail_the_probes_or_hold_connections() {
    use preview_operator::server::Limits;
    let http = format!("127.0.0.1:{}", free_port());
    let health = format!("127.0.0.1:{}", free_port());
    // Its own operator, on a selector nothing carries: it reconciles nothing.
    let child = std::process::Command::new(rig_var("PREVIEW_OPERATOR_BIN"))
        .args(["run", "--http-addr", &http, "--health-addr", &health])
        .args(["--wake-addr", "127.0.0.1:0"])
        .args([
            "--selector",
            &format!("preview.dev/shard=listeners-{}", std::process::id()),
        ])
        .env("KUBECONFIG", rig_var("PREVIEW_OPERATOR_KUBECONFIG"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the operator starts");
    let _operator = Operator {
        child,
        metrics: format!("http://{http}/metrics"),
    };
    wait_for("the probes' listener", Duration::from_secs(60), || async {
        match probe(&health, "/readyz") {
            Some(200) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(probe(&health, "/metrics"), Some(404), "probes only");

    // Idle connections that send nothing hold every slot of the webhook port, and a few more.
    let cap = Limits::WEB.connections;
    let mut held: Vec<_> = (0..cap)
        .map(|_| std::net::TcpStream::connect(&http).expect("connect"))
        .collect();
    let started = Instant::now();
    for _ in 0..8 {
        let mut over = std::net::TcpStream::connect(&http).expect("connect");
        assert!(
            closed_within(&mut over, Limits::WEB.header_read / 2),
            "a connection over the cap is closed at once"
        );
    }
    assert_eq!(probe(&health, "/healthz"), Some(200));
    assert_eq!(probe(&health, "/readyz"), Some(200));
    assert!(
        started.elapsed() < Limits::WEB.header_read,
        "all while the flood holds"
    );

    // The flood's connections are closed once they have sent no headers for header_read.
    let within = Limits::WEB.header_read + Duration::from_secs(10);
    for stream in &mut held {
        assert!(
            closed_within(stream, within),
            "an idle connection stays open"
        );
    }
    drop(held);
    wait_for(
        "the webhook port serving again",
        Duration::from_secs(30),
        || async {
            match probe(&http, "/metrics") {
                Some(200) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn sigterm_stops_an_operator_whose_caches_never_fill_in_time() {
    require_operator();
    // The chart's kubeconfig, impersonating a ServiceAccount that may do nothing: every
    // watch is refused, so the caches never fill.
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(rig_var("PREVIEW_OPERATOR_KUBECONFIG")).expect("kubeconfig"),
    )
    .expect("the rig's kubeconfig is JSON");
    for user in config["users"].as_array_mut().expect("users") {
        user["user"]["as"] = json!("system:serviceaccount:default:may-do-nothing");
        user["user"]["as-groups"] = json!(["system:authenticated"]);
    }
    let path = std::env::temp_dir().join(format!("no-rights-{}.kubeconfig", std::process::id()));
    std::fs::write(&path, config.to_string()).expect("write the kubeconfig");
    let mut operator = Operator::start(
        &["--selector", "preview.dev/shard=nobody"],
        &[("KUBECONFIG", &path.to_string_lossy())],
    );
    // Up: its metrics answer (the controller starts right after).
    wait_for(
        "the operator to serve metrics",
        Duration::from_secs(60),
        || async {
            operator
                .leads()
                .await
                .map(|_| ())
                .ok_or("not up".to_string())
        },
    )
    .await;
    let pid = operator.child.id().to_string();
    let sent = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exited = wait_for(
        "the operator to exit after SIGTERM",
        Duration::from_secs(20),
        || {
            let done = operator.child.try_wait().ok().flatten();
            async move { done.ok_or("still running".to_string()) }
        },
    )
    .await;
    let took = sent.elapsed();
    common::record(&format!("shutdown with unsynced caches took {took:?}"));
    assert!(
        took < Duration::from_secs(10),
        "SIGTERM took {took:?} to stop an operator with unsynced caches"
    );
    assert!(exited.code().is_some(), "it exited by itself: {exited:?}");
}

/// The operator's client multiplexes its requests over HTTP/2 (one connection, as client-go
/// does), not a TLS connection per request in flight: asked of the API server the rig runs,
/// through the same builder the operator starts with.
#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn the_operators_client_speaks_http2_to_the_api_server() {
    let _rig = client().await;
    let operator = operators_client().await;
    let request = http::Request::get("/version")
        .body(kube::client::Body::empty())
        .expect("a request");
    let answer = operator
        .send(request)
        .await
        .expect("an answer from the API server");
    assert_eq!(answer.status(), http::StatusCode::OK);
    assert_eq!(answer.version(), http::Version::HTTP_2);
}

/// kube-apiserver serves at most 100 streams on one HTTP/2 connection and a watch holds its
/// stream for minutes: an operator watching many team namespaces (two watches for each whose
/// templates copy Secrets or ConfigMaps) must still be answered, and its watches served. 200
/// watches run through the operator's client (three connections' worth), then a request: it is
/// answered at once, over HTTP/2; one more watch is served over HTTP/2 too, and the first
/// watch and the last (on different connections) both see a namespace created for them.
#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn requests_and_watches_are_served_while_more_watches_run_than_one_connection_carries() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::WatchParams;
    use kube::core::WatchEvent;
    const WATCHES: usize = 200;
    let rig = client().await;
    let operator = operators_client().await;
    let namespaces: Api<Namespace> = Api::all(operator.clone());
    let mut watches = Vec::new();
    for i in 0..WATCHES {
        let params = WatchParams::default()
            .labels(&format!("preview.dev/test-watch-{i}"))
            .timeout(290);
        let watch = tokio::time::timeout(Duration::from_secs(10), namespaces.watch(&params, "0"))
            .await
            .unwrap_or_else(|_| panic!("watch {i} not started within 10 s"))
            .unwrap_or_else(|e| panic!("watch {i}: {e}"));
        watches.push(Box::pin(watch));
    }
    let request = http::Request::get("/version")
        .body(kube::client::Body::empty())
        .expect("a request");
    let answer = tokio::time::timeout(Duration::from_secs(10), operator.send(request))
        .await
        .expect("a request answered within 10 s while 200 watches run")
        .expect("an answer from the API server");
    assert_eq!(answer.status(), http::StatusCode::OK);
    assert_eq!(answer.version(), http::Version::HTTP_2);
    let one_more = http::Request::get(
        "/api/v1/namespaces?watch=true&labelSelector=preview.dev%2Ftest-watch-more&timeoutSeconds=30",
    )
    .body(kube::client::Body::empty())
    .expect("a watch request");
    let answer = tokio::time::timeout(Duration::from_secs(10), operator.send(one_more))
        .await
        .expect("one more watch started within 10 s")
        .expect("an answer from the API server");
    assert_eq!(answer.status(), http::StatusCode::OK);
    assert_eq!(answer.version(), http::Version::HTTP_2);

    let name = format!("test-watch-{}", std::process::id());
    let labelled = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([
                ("preview.dev/test-watch-0".to_string(), "yes".to_string()),
                (
                    format!("preview.dev/test-watch-{}", WATCHES - 1),
                    "yes".to_string(),
                ),
            ])),
            ..Default::default()
        },
        ..Default::default()
    };
    let all: Api<Namespace> = Api::all(rig);
    all.create(&PostParams::default(), &labelled)
        .await
        .expect("create the watched namespace");
    for i in [0, WATCHES - 1] {
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(event) = watches[i].next().await {
                match event {
                    Ok(WatchEvent::Added(ns)) => return ns.metadata.name,
                    Ok(WatchEvent::Bookmark(_)) => continue,
                    other => panic!("watch {i}: {other:?}"),
                }
            }
            None
        })
        .await
        .unwrap_or_else(|_| panic!("watch {i} saw nothing within 10 s"));
        assert_eq!(seen.as_deref(), Some(name.as_str()), "watch {i}");
    }
    drop(watches);
    all.delete(&name, &DeleteParams::default())
        .await
        .expect("delete the watched namespace");
}

/// A client built as the operator builds its own, on the rig's kubeconfig.
async fn operators_client() -> kube::Client {
    let config = kube::Config::infer().await.expect("the rig's kubeconfig");
    preview_operator::client::connection::builder(config)
        .expect("the operator's client builder")
        .build()
}
