//! Sleeping previews on the rig, against the running operator (hack/test.sh starts it with
//! `--wake-addr` and `--wake-service`): idle and scheduled sleep, the four ways to wake, the
//! deletion of long sleepers, and what they cost.

mod common;

use std::time::Duration;

use common::{Tenant, TestClass, await_ready, scrape, shop_template, slim, wait_for};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use preview_operator::api::{Phase, PreviewEnvironment};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(90);
/// The class's idle time (20 s) plus the time to act on it.
const ASLEEP: Duration = Duration::from_secs(60);

/// A class of one tenant's own, with an ingress (so a visit can wake) and `sleep`.
async fn class_for(t: &Tenant, sleep: Value) -> TestClass {
    let name = format!("sleepy-{}", t.namespace.name);
    TestClass::create(
        &t.client,
        &name,
        json!({
            // Named literally, so metrics label its series acme/shop (a glob would be the label).
            "tenants": [{"namespaces": [t.namespace.name], "repositories": ["acme/shop", "*/*"]}],
            "ingress": {"baseDomain": "preview.test"},
            "allowedPodAnnotations": ["preview.dev/simulate"],
            "sleep": sleep,
        }),
    )
    .await
}

/// A team with the shop template (a dependency, setup, an exposed service, a test).
async fn team(prefix: &str) -> Tenant {
    let t = Tenant::new(prefix).await;
    t.create_shop_sources("pw").await;
    t.grant_sources().await;
    let mut template = shop_template();
    template["services"][0]["expose"] = json!(true);
    t.create_template("shop", template).await;
    t
}

async fn phase(api: &Api<PreviewEnvironment>, name: &str) -> Result<Option<Phase>, String> {
    let pe = api.get(name).await.map_err(|e| e.to_string())?;
    Ok(pe.status.and_then(|s| s.phase))
}

async fn await_phase(api: &Api<PreviewEnvironment>, name: &str, want: Phase, timeout: Duration) {
    wait_for(&format!("{name} to be {want:?}"), timeout, || async {
        match phase(api, name).await? {
            Some(p) if p == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// The replicas every Deployment and StatefulSet of `ns` asks for.
async fn replicas(client: &Client, ns: &str) -> Vec<(String, i32)> {
    let lp = ListParams::default();
    let mut out = Vec::new();
    for d in Api::<Deployment>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .expect("list")
        .items
    {
        out.push((d.name_any(), d.spec.and_then(|s| s.replicas).unwrap_or(1)));
    }
    for s in Api::<StatefulSet>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .expect("list")
        .items
    {
        out.push((s.name_any(), s.spec.and_then(|s| s.replicas).unwrap_or(1)));
    }
    out.sort();
    out
}

fn awake_reason(pe: &PreviewEnvironment) -> (String, String) {
    pe.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Awake"))
        .map(|c| (c.status.to_string(), c.reason.to_string()))
        .unwrap_or_default()
}

async fn job_names(client: &Client, ns: &str) -> Vec<(String, String)> {
    let jobs = Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("jobs");
    let mut out: Vec<_> = jobs
        .items
        .iter()
        .map(|j| (j.name_any(), j.uid().unwrap_or_default()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn an_idle_preview_sleeps_and_wakes_on_a_request_a_visit_and_a_new_sha() {
    let t = team("sl-wake").await;
    let class = class_for(&t, json!({"afterIdle": "20s"})).await;
    t.create(
        "shop",
        slim("5eed000001")
            .pull_request(21)
            .class(&class.name)
            .template("shop")
            .json(),
    )
    .await;
    await_ready(&t.api, "shop", READY).await;
    let ns = t.preview_ns("shop");
    let c = &t.client;
    let awake = replicas(c, &ns).await;
    assert_eq!(awake, vec![("db".to_string(), 1), ("web".to_string(), 1)]);
    let jobs = job_names(c, &ns).await;

    // Idle: everything at zero, the Ingress on the wake listener, Sleeping.
    await_phase(&t.api, "shop", Phase::Sleeping, ASLEEP).await;
    let pe = t.api.get("shop").await.expect("get");
    assert_eq!(awake_reason(&pe), ("False".into(), "Idle".into()));
    assert_eq!(
        pe.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_ref()),
        Some("True"),
        "a sleeping preview has not failed"
    );
    wait_for("every workload at zero", READY, || async {
        let now = replicas(c, &ns).await;
        if now.iter().all(|(_, r)| *r == 0) {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
    let ingress: Ingress = Api::namespaced(c.clone(), &ns)
        .get("web")
        .await
        .expect("ingress");
    let backend = ingress
        .spec
        .clone()
        .and_then(|s| s.rules)
        .and_then(|r| r[0].http.clone())
        .and_then(|h| h.paths[0].backend.service.clone())
        .map(|s| s.name);
    assert_eq!(backend.as_deref(), Some("preview-wake"));
    let host = ingress
        .spec
        .and_then(|s| s.rules)
        .and_then(|r| r[0].host.clone())
        .expect("host");

    // Asleep and idle, it is written to no more than awake and idle: poke it, and nothing
    // changes (the window over which nothing may be written).
    let before = t.api.get("shop").await.expect("get").status;
    let workloads = replicas(c, &ns).await;
    for i in 0..3 {
        t.api
            .patch(
                "shop",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"test/poke": i.to_string()}}})),
            )
            .await
            .expect("poke");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        before,
        t.api.get("shop").await.expect("get").status,
        "status rewritten while asleep"
    );
    assert_eq!(workloads, replicas(c, &ns).await);

    // 1. The annotation wakes it; the tests do not run again for the same sha.
    t.api
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"preview.dev/wake-request": "one"}}}),
            ),
        )
        .await
        .expect("annotate");
    await_phase(&t.api, "shop", Phase::Ready, READY).await;
    assert_eq!(replicas(c, &ns).await, awake, "replicas restored");
    assert_eq!(job_names(c, &ns).await, jobs, "no Job ran again");

    // 2. A visit to its host wakes it; another host gets a 404.
    await_phase(&t.api, "shop", Phase::Sleeping, ASLEEP).await;
    let wake_url = std::env::var("PREVIEW_OPERATOR_WAKE_URL").expect("hack/test.sh sets it");
    let http = http_get(&wake_url, "/", "nobody.preview.test").await;
    assert_eq!(http.0, 404, "an unknown host wakes nothing: {}", http.1);
    let (code, page) = http_get(&wake_url, "/any/path", &host).await;
    assert_eq!(code, 503, "{page}");
    assert!(
        page.contains("starting") && page.contains("http-equiv=\"refresh\""),
        "{page}"
    );
    await_phase(&t.api, "shop", Phase::Ready, READY).await;
    assert_eq!(replicas(c, &ns).await, awake);

    // 3. A new sha wakes it and runs the tests for that sha.
    await_phase(&t.api, "shop", Phase::Sleeping, ASLEEP).await;
    t.patch_spec("shop", json!({"headSha": "5eed000002"})).await;
    let pe = await_ready(&t.api, "shop", READY).await;
    let status = pe.status.unwrap_or_default();
    assert_eq!(status.tests[0].sha, "5eed000002");
    assert_eq!(status.phase, Some(Phase::Ready));
    t.delete_and_wait("shop").await;
}

/// GET `path` of `base` (`http://host:port`) with `Host: host`: the status code and the whole
/// response.
async fn http_get(base: &str, path: &str, host: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    // A short request to a local listener: blocking I/O off the runtime's threads.
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
    })
    .await
    .expect("the request ran");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, response)
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_preview_that_is_testing_does_not_sleep() {
    let t = team("sl-testing").await;
    let class = class_for(&t, json!({"afterIdle": "20s"})).await;
    let mut template = shop_template();
    template["tests"][0]["podAnnotations"] = json!({"preview.dev/simulate": "hang"});
    t.set_template("shop", template).await;
    t.create(
        "shop",
        slim("7e57000001")
            .pull_request(21)
            .class(&class.name)
            .template("shop")
            .json(),
    )
    .await;
    await_phase(&t.api, "shop", Phase::Testing, READY).await;
    // Longer than the idle time and the time to act on it: it must stay Testing all along.
    let window = std::time::Instant::now() + Duration::from_secs(35);
    while std::time::Instant::now() < window {
        let now = phase(&t.api, "shop").await.expect("phase");
        assert_eq!(now, Some(Phase::Testing), "a testing preview fell asleep");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    t.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_sleep_window_puts_previews_to_sleep_and_its_end_wakes_them() {
    let t = team("sl-window").await;
    // A window from the next minute to two minutes after it, every day, in UTC. It must start
    // after the preview is created: a preview created inside a window is active there and stays
    // awake until the next one. So when the next minute is near, the window starts a minute later.
    let now = k8s_openapi::jiff::Timestamp::now();
    let start = if now.as_second().rem_euclid(60) >= 30 {
        2
    } else {
        1
    };
    let at = |minutes: i64| {
        let t = now
            .checked_add(k8s_openapi::jiff::SignedDuration::from_mins(minutes))
            .expect("time");
        t.strftime("%H:%M").to_string()
    };
    let class = class_for(
        &t,
        json!({"schedules": [{"days": "Mon-Sun", "sleepAt": at(start), "wakeAt": at(start + 2), "timeZone": "UTC"}]}),
    )
    .await;
    t.create(
        "shop",
        slim("5c4ed00001")
            .pull_request(21)
            .class(&class.name)
            .template("shop")
            .json(),
    )
    .await;
    await_ready(&t.api, "shop", READY).await;
    await_phase(&t.api, "shop", Phase::Sleeping, Duration::from_secs(180)).await;
    let pe = t.api.get("shop").await.expect("get");
    assert_eq!(awake_reason(&pe), ("False".into(), "Schedule".into()));
    // The window's end wakes it.
    await_phase(&t.api, "shop", Phase::Ready, Duration::from_secs(240)).await;
    t.delete_and_wait("shop").await;
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn a_preview_that_slept_long_enough_is_deleted_and_costs_stop_while_asleep() {
    let t = team("sl-cost").await;
    let class = class_for(
        &t,
        json!({"afterIdle": "20s", "deleteAfterSleeping": "30s"}),
    )
    .await;
    let mut template = shop_template();
    template["services"][0]["resources"] = json!({"requests": {"cpu": "500m", "memory": "256Mi"}});
    t.set_template("shop", template).await;
    t.create(
        "shop",
        slim("c057000001")
            .pull_request(21)
            .class(&class.name)
            .template("shop")
            .json(),
    )
    .await;
    await_ready(&t.api, "shop", READY).await;
    let url = std::env::var("PREVIEW_OPERATOR_METRICS_URL").expect("hack/test.sh sets it");
    let tenant = t.namespace.name.clone();
    let series = |name: &str, extra: &str| {
        format!("preview_operator_{name}{{tenant=\"{tenant}\",repository=\"acme/shop\"{extra}}}")
    };
    let cpu = series("requested_cpu_core_seconds_total", "");
    let asleep_secs = series("environment_seconds_total", ",state=\"sleeping\"");
    // The counters grow while it is awake.
    let first = common::metric(&scrape(&url).await, &cpu);
    wait_for(
        "the CPU counter to grow while awake",
        Duration::from_secs(30),
        || async {
            let now = common::metric(&scrape(&url).await, &cpu);
            if now > first {
                Ok(())
            } else {
                Err(format!("{now} <= {first}"))
            }
        },
    )
    .await;
    await_phase(&t.api, "shop", Phase::Sleeping, ASLEEP).await;
    // Asleep, the sleeping time grows and the CPU counter does not.
    let cpu_asleep = common::metric(&scrape(&url).await, &cpu);
    let slept = common::metric(&scrape(&url).await, &asleep_secs);
    wait_for(
        "the sleeping time to grow",
        Duration::from_secs(30),
        || async {
            let now = common::metric(&scrape(&url).await, &asleep_secs);
            if now > slept {
                Ok(())
            } else {
                Err(format!("{now} <= {slept}"))
            }
        },
    )
    .await;
    let cpu_later = common::metric(&scrape(&url).await, &cpu);
    // One tick may have counted the last seconds awake.
    assert!(
        cpu_later - cpu_asleep <= 0.5 * 10.0 + 1e-6,
        "{cpu_asleep} -> {cpu_later}"
    );
    let after_one_more_tick = wait_for("another tick", Duration::from_secs(30), || async {
        let now = common::metric(&scrape(&url).await, &asleep_secs);
        if now > slept + 10.0 {
            Ok(common::metric(&scrape(&url).await, &cpu))
        } else {
            Err(format!("{now}"))
        }
    })
    .await;
    assert_eq!(
        after_one_more_tick, cpu_later,
        "no CPU is counted while asleep"
    );

    // Every metric the dashboard queries is exported.
    let (_, text) = http_get(&url, "/metrics", "localhost").await;
    for name in dashboard_metrics() {
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        assert!(
            text.contains(&format!("# TYPE {base} ")),
            "the dashboard queries {name}, which /metrics does not export"
        );
    }

    // Slept 30 s: deleted.
    let api = t.api.clone();
    common::await_gone("the long sleeper", Duration::from_secs(120), || {
        api.get_opt("shop")
    })
    .await;
}

/// Every `preview_operator_*` name in the expressions of the chart's Grafana dashboard.
fn dashboard_metrics() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/preview-operator/dashboards/preview-operator.json"
    );
    let text = std::fs::read_to_string(path).expect("the chart ships the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(!exprs.is_empty(), "the dashboard has queries");
    let mut names: Vec<String> = exprs
        .iter()
        .flat_map(|e| {
            e.match_indices("preview_operator_")
                .map(|(i, _)| {
                    e[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
