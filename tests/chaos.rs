//! Chaos: an operator killed with SIGKILL at random (seeded) moments while previews are created,
//! moved to new shas and deleted. After the last restart everything must converge: every
//! remaining preview Ready at its latest sha, every deleted one gone with its namespace, no
//! leaked namespace, no stuck finalizer, no sha with two Jobs for one test.
//!
//! `CHAOS_SEED` picks the schedule (default 7); the seed is recorded in
//! target/measurements.log so a failure can be replayed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{
    Operator, TestClass, TestNamespace, client, install_crd, record, require_operator, wait_for,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use preview_operator::api::PreviewEnvironment;
use serde_json::json;

/// xorshift64*: a tiny deterministic generator, so a seed replays the same schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn sha(generation: u32, i: usize) -> String {
    format!("{:07x}{:05x}", generation, i)
}

fn preview(name: &str, shard: &str, sha: &str) -> PreviewEnvironment {
    common::spec("acme/chaos", 1, sha)
        .services(json!([{"name": "web", "image": "web:1", "port": 8080},
                         {"name": "worker", "image": "worker:1"}]))
        .tests(json!([{"name": "e2e", "image": "e2e:1"}]))
        .with("previewClassName", json!(format!("chaos-{shard}")))
        .labelled(name, json!({"preview.dev/shard": shard}))
}

fn start_operator(shard: &str) -> Operator {
    Operator::start(
        &[
            "--selector",
            &format!("preview.dev/shard={shard}"),
            "--orphan-sweep-interval",
            "3s",
        ],
        &[],
    )
}

async fn managed_namespaces_of(client: &Client, tenant: &str) -> Vec<Namespace> {
    let selector = format!(
        "app.kubernetes.io/managed-by=preview-operator,preview.dev/owner-namespace={tenant}"
    );
    Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs the rig: hack/test.sh"]
async fn previews_converge_after_the_operator_is_killed_at_random_moments() {
    require_operator();
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let client = client().await;
    install_crd(&client).await;
    let tenant = TestNamespace::create(&client, "chaos").await;
    let shard = tenant.name.clone();
    // Every preview of this test runs at once: a class of its own without the tests' queue.
    let _class = TestClass::create(
        &client,
        &format!("chaos-{shard}"),
        json!({"tenants": [{"namespaces": [shard], "repositories": ["acme/chaos"]}],
               "limits": {"activePerNamespace": 1000}}),
    )
    .await;
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &tenant.name);
    let pp = PostParams::default();
    let started = Instant::now();

    // name -> latest sha; names deleted along the way are tracked apart.
    let mut live: BTreeMap<String, String> = BTreeMap::new();
    let mut deleted: BTreeSet<String> = BTreeSet::new();
    let mut next_name = 0usize;
    let mut operator = start_operator(&shard);
    for _ in 0..22 {
        let name = format!("p{next_name}");
        next_name += 1;
        let s = sha(0, next_name);
        api.create(&pp, &preview(&name, &shard, &s))
            .await
            .expect("create");
        live.insert(name, s);
    }

    let kills = 10;
    for round in 1..=kills {
        // Work for a random while, then mutate at random, then kill at a random moment.
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1800))).await;
        let names: Vec<String> = live.keys().cloned().collect();
        for name in &names {
            match rng.below(10) {
                0 | 1 => {
                    let s = sha(round, rng.below(1 << 20) as usize);
                    api.patch(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"headSha": s}})),
                    )
                    .await
                    .expect("new sha");
                    live.insert(name.clone(), s);
                }
                2 => {
                    api.delete(name, &DeleteParams::default())
                        .await
                        .expect("delete");
                    live.remove(name);
                    deleted.insert(name.clone());
                }
                _ => {}
            }
        }
        if rng.below(2) == 0 {
            let name = format!("p{next_name}");
            next_name += 1;
            let s = sha(round, next_name);
            api.create(&pp, &preview(&name, &shard, &s))
                .await
                .expect("create");
            live.insert(name, s);
        }
        tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
        // SIGKILL: no graceful shutdown, no lease hand-over, reconciles cut mid-way.
        operator.child.kill().expect("SIGKILL");
        let _ = operator.child.wait();
        operator = start_operator(&shard);
    }

    // Converge after the last restart.
    wait_for(
        "every live preview to be Ready at its latest sha",
        Duration::from_secs(180),
        || async {
            let mut behind = Vec::new();
            for (name, want) in &live {
                let pe = api.get(name).await.map_err(|e| e.to_string())?;
                let status = pe.status.clone().unwrap_or_default();
                let ready = status.conditions.iter().any(|c| {
                    c.type_ == "Ready"
                        && c.status == "True"
                        && c.observed_generation == pe.metadata.generation
                });
                if !(ready && status.deployed_sha.as_deref() == Some(want.as_str())) {
                    behind.push(format!(
                        "{name}: {:?} {:?}",
                        status.phase, status.deployed_sha
                    ));
                }
            }
            if behind.is_empty() {
                Ok(())
            } else {
                Err(behind.join(", "))
            }
        },
    )
    .await;
    wait_for(
        "every deleted preview to be gone",
        Duration::from_secs(180),
        || async {
            let mut left = Vec::new();
            for name in &deleted {
                if let Some(pe) = api.get_opt(name).await.map_err(|e| e.to_string())? {
                    left.push(format!("{name} (finalizers {:?})", pe.finalizers()));
                }
            }
            if left.is_empty() {
                Ok(())
            } else {
                Err(left.join(", "))
            }
        },
    )
    .await;
    // No leaked namespace: every managed namespace of this tenant belongs to a live preview.
    wait_for("no leaked namespace", Duration::from_secs(180), || async {
        let mut owners = BTreeSet::new();
        for name in live.keys() {
            let pe = api.get(name).await.map_err(|e| e.to_string())?;
            owners.insert(pe.uid().unwrap_or_default());
        }
        let namespaces = managed_namespaces_of(&client, &tenant.name).await;
        let leaked: Vec<String> = namespaces
            .iter()
            .filter(|ns| {
                !owners.contains(
                    ns.labels()
                        .get("preview.dev/owner-uid")
                        .map(String::as_str)
                        .unwrap_or(""),
                )
            })
            .map(|ns| ns.name_any())
            .collect();
        if leaked.is_empty() && namespaces.len() == live.len() {
            Ok(())
        } else {
            Err(format!(
                "leaked {leaked:?}, {} namespaces for {} previews",
                namespaces.len(),
                live.len()
            ))
        }
    })
    .await;
    // Jobs: one per test per sha, and only the latest sha's.
    wait_for(
        "old shas' Jobs to be cleaned up",
        Duration::from_secs(120),
        || async {
            let mut problems = Vec::new();
            for (name, want) in &live {
                let pe = api.get(name).await.map_err(|e| e.to_string())?;
                let ns = pe.status.and_then(|s| s.namespace).unwrap_or_default();
                let jobs = Api::<Job>::namespaced(client.clone(), &ns)
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut per_test_sha: BTreeMap<(String, String), usize> = BTreeMap::new();
                for job in jobs
                    .items
                    .iter()
                    .filter(|j| j.metadata.deletion_timestamp.is_none())
                {
                    let labels = job.labels();
                    let key = (
                        labels.get("preview.dev/name").cloned().unwrap_or_default(),
                        labels.get("preview.dev/sha").cloned().unwrap_or_default(),
                    );
                    *per_test_sha.entry(key).or_default() += 1;
                }
                for ((test, sha), count) in &per_test_sha {
                    if *count > 1 {
                        problems.push(format!("{name}: {count} Jobs for {test}@{sha}"));
                    }
                    if sha != want {
                        problems.push(format!("{name}: a Job of old sha {sha}"));
                    }
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join(", "))
            }
        },
    )
    .await;

    record(&format!(
        "chaos (seed {seed}): {kills} SIGKILLs, {} previews live and {} deleted converged in {:?}",
        live.len(),
        deleted.len(),
        started.elapsed()
    ));
    for name in live.keys() {
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    wait_for(
        "the chaos previews to be torn down",
        Duration::from_secs(180),
        || async {
            let left = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            if left.items.is_empty() {
                Ok(())
            } else {
                Err(format!("{} left", left.items.len()))
            }
        },
    )
    .await;
    drop(operator);
}
