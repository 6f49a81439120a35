//! What previews cost: each preview's requested CPU and memory (its services' and
//! dependencies' requests times replicas) and whether it is awake, recorded by the reconcile
//! in memory and added to the cost counters by a ticker. Nothing is written to the API for
//! accounting, so idle previews still cause no writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::build::Preview;
use crate::config::Config;
use crate::metrics::{Metrics, Requests};
use crate::sync::lock;

/// One preview as accounted.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    tenant: String,
    repository: String,
    requests: Requests,
    awake: bool,
}

/// Every preview this process reconciles, by UID.
#[derive(Default)]
pub struct Costs {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Costs {
    /// Records what `preview` requests and whether it is awake.
    pub fn record(&self, preview: &Preview<'_>, config: &Config, awake: bool) {
        let entry = Entry {
            tenant: preview.owner.namespace.clone(),
            repository: preview.spec.repository.clone(),
            requests: requests(preview, config),
            awake,
        };
        lock(&self.entries).insert(preview.owner.uid.clone(), entry);
    }

    /// Stops accounting for a preview being torn down.
    pub fn forget(&self, uid: &str) {
        lock(&self.entries).remove(uid);
    }

    /// Adds `elapsed` of every preview to the counters, and drops the series of previews
    /// gone for a while.
    pub fn tick(&self, metrics: &Metrics, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        {
            let mut entries = lock(&self.entries);
            // A preview can go without its teardown running here (its finalizer removed by
            // hand, another replica leading by then): it is accounted no longer than cached.
            if let Some(live) = metrics.live_uids() {
                entries.retain(|uid, _| live.contains(uid));
            }
            for e in entries.values() {
                metrics.account(&e.tenant, &e.repository, e.awake, seconds, e.requests);
            }
        }
        metrics.prune(Instant::now());
    }
}

/// Adds up what the preview's pods request while it runs: a container without requests gets
/// its limits, else the class's LimitRange defaults, as the API server would give it.
pub fn requests(preview: &Preview<'_>, config: &Config) -> Requests {
    let of = |resources: Option<&ResourceRequirements>, key: &str| -> f64 {
        let r = resources;
        quantity(r.and_then(|r| r.requests.as_ref()), key)
            .or_else(|| quantity(r.and_then(|r| r.limits.as_ref()), key))
            .or_else(|| {
                config
                    .default_requests
                    .get(key)
                    .and_then(|q| parse_quantity(q))
            })
            .unwrap_or(0.0)
    };
    let mut total = Requests::default();
    let mut add = |resources: Option<&ResourceRequirements>, replicas: i32| {
        let n = f64::from(replicas.max(0));
        total.cpu_cores += n * of(resources, "cpu");
        total.memory_bytes += n * of(resources, "memory");
    };
    for s in &preview.spec.services {
        add(s.resources.as_ref(), s.replicas);
    }
    for d in preview.dependencies {
        add(d.resources.as_ref(), 1);
    }
    total
}

fn quantity(map: Option<&BTreeMap<String, Quantity>>, key: &str) -> Option<f64> {
    parse_quantity(&map?.get(key)?.0)
}

/// A Kubernetes quantity ("250m", "1.5", "512Mi", "2G", "1e3") as a number.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => {
            let e: i32 = exponent.strip_prefix(['e', 'E'])?.parse().ok()?;
            10f64.powi(e)
        }
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_forgotten_or_gone_from_the_cache_is_no_longer_accounted() {
        use kube::runtime::reflector;
        use kube::runtime::watcher::Event;
        let (previews, mut writer) = reflector::store();
        let (classes, _) = reflector::store();
        let metrics = Metrics::new();
        metrics.count_phases_in(previews, classes);
        let costs = Costs::default();
        let entry = Entry {
            tenant: "team-shop".to_string(),
            repository: "acme/shop".to_string(),
            requests: Requests {
                cpu_cores: 1.0,
                memory_bytes: 1.0,
            },
            awake: true,
        };
        let pe = crate::fixtures::preview("shop-1");
        writer.apply_watcher_event(&Event::Apply(pe.clone()));
        let uid = pe.metadata.uid.clone().unwrap_or_default();
        lock(&costs.entries).insert(uid.clone(), entry.clone());
        // A preview that left the cache without a teardown here (another replica led then).
        lock(&costs.entries).insert("uid-elsewhere".to_string(), entry);
        costs.tick(&metrics, Duration::from_secs(10));
        assert_eq!(
            lock(&costs.entries).keys().collect::<Vec<_>>(),
            [&uid],
            "only cached previews are accounted"
        );
        let cpu = |m: &Metrics| {
            m.encode()
                .lines()
                .filter(|l| l.starts_with("preview_operator_requested_cpu_core_seconds_total{"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cpu(&metrics),
            [
                "preview_operator_requested_cpu_core_seconds_total{tenant=\"team-shop\",repository=\"(unbound)\"} 10.0"
            ]
        );
        // Torn down: forgotten here and gone from the cache.
        costs.forget(&uid);
        writer.apply_watcher_event(&Event::Delete(pe));
        costs.tick(&metrics, Duration::from_secs(10));
        metrics.prune(Instant::now() + crate::metrics::PRUNE_AFTER);
        assert!(cpu(&metrics).is_empty(), "{}", metrics.encode());
    }

    #[test]
    fn quantities_parse_in_every_notation() {
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1.5"), Some(1.5));
        assert_eq!(parse_quantity("512Mi"), Some(512.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1G"), Some(1e9));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("lots"), None);
    }

    #[test]
    fn requests_count_replicas_and_fall_back_to_limits_and_defaults() {
        let spec = crate::fixtures::spec(
            serde_json::json!([
                {"name": "web", "image": "w", "replicas": 2,
                 "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}}},
                {"name": "api", "image": "a", "resources": {"limits": {"cpu": "1"}}},
                {"name": "idle", "image": "i", "replicas": 0}
            ]),
            serde_json::json!([]),
        );
        let rendered = crate::template::Rendered::inline(&spec);
        let preview = crate::fixtures::built(&rendered);
        let config = Config {
            default_requests: [("memory".to_string(), "64Mi".to_string())].into(),
            ..Config::default()
        };
        let r = requests(&preview, &config);
        assert!((r.cpu_cores - 1.5).abs() < 1e-9, "{r:?}");
        let mi = 1024.0 * 1024.0;
        assert!(
            (r.memory_bytes - (2.0 * 128.0 + 64.0) * mi).abs() < 1.0,
            "{r:?}"
        );
    }
}
