//! PURE: what one tenant may make the cluster and the operator hold: the storage its
//! preview's dependencies claim (per claim, in number and in total, against the preview
//! namespace's quota), and how many previews may exist in one tenant namespace.
//!
//! Both are checked before anything is created, so a preview over a limit is refused with a
//! message that says what to change, instead of waiting forever on a PersistentVolumeClaim the
//! quota refuses.

use kube::ResourceExt;

use super::costs::parse_quantity;
use crate::api::PreviewEnvironment;
use crate::config::Config;
use crate::template::Rendered;

/// Whether the PersistentVolumeClaims of `rendered`'s dependencies fit what PreviewClass
/// `class` (whose policy is `config`) allows: each at most `namespace.maxClaimSize`, and
/// together within the preview namespace's quota (`persistentvolumeclaims`,
/// `requests.storage`). The error is the message of a `PolicyViolation`.
pub fn check_storage(rendered: &Rendered, config: &Config, class: &str) -> Result<(), String> {
    let max_text = &config.max_claim_size;
    let max = parse_quantity(max_text).ok_or_else(|| {
        format!(
            "PreviewClass {class} is invalid: namespace.maxClaimSize {max_text:?} is not a \
             quantity such as 10Gi; the platform team must fix it"
        )
    })?;
    let mut claims = Vec::new();
    for dep in &rendered.dependencies {
        let Some(size) = dep.storage.as_ref().and_then(|s| s.size.as_deref()) else {
            continue;
        };
        let name = &dep.name;
        let bytes = parse_quantity(size).ok_or_else(|| {
            format!("dependency {name}: storage.size {size:?} is not a quantity such as 1Gi")
        })?;
        if bytes > max {
            return Err(format!(
                "dependency {name} asks for {size} of storage (storage.size), more than the \
                 {max_text} PreviewClass {class} allows per claim (namespace.maxClaimSize); ask \
                 for less, or ask the platform team to raise the maximum"
            ));
        }
        claims.push((name.as_str(), size, bytes));
    }
    if claims.is_empty() {
        return Ok(());
    }
    let listed = || {
        claims
            .iter()
            .map(|(name, size, _)| format!("{name} {size}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let quota = |key: &str| {
        let text = config.quota.get(key)?;
        Some((text.as_str(), parse_quantity(text)?))
    };
    if let Some((text, count)) = quota("persistentvolumeclaims")
        && claims.len() as f64 > count
    {
        return Err(format!(
            "the dependencies ask for {} PersistentVolumeClaims ({}), more than the {text} the \
             preview namespace's quota allows (PreviewClass {class}, namespace.quota \
             persistentvolumeclaims); give fewer dependencies a storage.size (without one the \
             data lives in an emptyDir)",
            claims.len(),
            listed()
        ));
    }
    let total: f64 = claims.iter().map(|(_, _, bytes)| bytes).sum();
    if let Some((text, allowed)) = quota("requests.storage")
        && total > allowed
    {
        return Err(format!(
            "the dependencies ask for {} of storage together ({}), more than the {text} the \
             preview namespace's quota allows (PreviewClass {class}, namespace.quota \
             requests.storage); ask for less, or ask the platform team to raise the quota",
            format_bytes(total),
            listed()
        ));
    }
    Ok(())
}

/// Why `pe` may not exist under PreviewClass `class`, which lets `limit` previews exist per
/// tenant namespace: `peers` (any previews; those of other namespaces, `pe` itself and those
/// being deleted are skipped) holds `limit` or more of its namespace that are older. The
/// oldest keep their place, so creating a preview never displaces a running one, and every
/// replica decides the same (creation time, then name). None: within the limit.
pub fn over_existing_limit<'a>(
    pe: &PreviewEnvironment,
    peers: impl IntoIterator<Item = &'a PreviewEnvironment>,
    limit: usize,
    class: &str,
) -> Option<String> {
    if pe.metadata.deletion_timestamp.is_some() {
        return None;
    }
    fn order(p: &PreviewEnvironment) -> (Option<jiff::Timestamp>, Option<&str>) {
        (
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
            p.metadata.name.as_deref(),
        )
    }
    let tenant = pe.metadata.namespace.as_deref();
    // Every reconcile of every preview counts its namespace's elders, so the cheap tests go
    // first (at 1000 previews in one namespace this scan was a tenth of the operator's CPU).
    // Strictly older is never `pe` itself.
    let mine = order(pe);
    let older = peers
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| order(p) < mine)
        .filter(|p| p.metadata.namespace.as_deref() == tenant)
        .count();
    (older >= limit).then(|| {
        let tenant = pe.namespace().unwrap_or_default();
        format!(
            "namespace {tenant} already has {older} older previews, and PreviewClass {class} \
             lets at most {limit} exist per namespace (limits.existingPerNamespace); delete \
             previews you no longer need (kubectl get previewenv -n {tenant}), and this one is \
             admitted once fewer than {limit} older ones are left"
        )
    })
}

/// `bytes` in the largest binary unit that keeps a whole number, else with two decimals:
/// "25Gi", "1.50Gi", "512Mi".
fn format_bytes(bytes: f64) -> String {
    const UNITS: [(&str, f64); 4] = [
        ("Ti", 1_099_511_627_776.0),
        ("Gi", 1_073_741_824.0),
        ("Mi", 1_048_576.0),
        ("Ki", 1024.0),
    ];
    for (unit, size) in UNITS {
        if bytes >= size {
            let n = bytes / size;
            return if n.fract() == 0.0 {
                format!("{n}{unit}")
            } else {
                format!("{n:.2}{unit}")
            };
        }
    }
    format!("{bytes}")
}

/// The most a PreviewEnvironment's spec may take serialized (JSON), whatever it holds within
/// its schema. Measured by `spec_size` from the generated schema: 132,955 bytes for 20 services
/// and 10 tests at their largest with the whole text budget (47,291 with a templateRef, images
/// and parameters instead); the spec took 1.3 MiB. Counted in ASCII: were every
/// character 4 bytes of UTF-8, 414,232.
pub const MAX_PREVIEW_SPEC_BYTES: usize = 136 * 1024;
/// The same for a PreviewTemplate's spec: 50 containers (dependencies, setup Jobs, services,
/// tests) at their largest, parameters, sources, 5 Helm releases and 5 kustomizations and the
/// whole text budget: 424,617 bytes (1,246,161 in 4-byte UTF-8). Helm `values` are free-form
/// and not counted: the API server keeps them under its request limit, and rendering refuses
/// more than `MAX_VALUES_BYTES` of them.
pub const MAX_TEMPLATE_SPEC_BYTES: usize = 416 * 1024;

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::api::template::DependencySpec;
    use crate::fixtures;

    /// What a template with dependencies of these storage sizes (None: an emptyDir) renders to.
    fn with_claims(sizes: &[(&str, Option<&str>)]) -> Rendered {
        let mut rendered = Rendered::inline(&fixtures::web_and_db(0));
        rendered.dependencies = sizes
            .iter()
            .map(|(name, size)| {
                let mut dep = json!({"name": name, "image": "postgres:17", "port": 5432});
                if let Some(size) = size {
                    dep["storage"] = json!({"size": size});
                }
                serde_json::from_value::<DependencySpec>(dep).expect("dependency fixture")
            })
            .collect();
        rendered
    }

    fn config(max_claim: &str, quota: &[(&str, &str)]) -> Config {
        Config {
            max_claim_size: max_claim.into(),
            quota: quota
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            ..Config::default()
        }
    }

    #[test]
    fn claims_within_the_class_maximum_and_the_quota_pass() {
        let rendered = with_claims(&[("db", Some("5Gi")), ("cache", None), ("s3", Some("10Gi"))]);
        assert_eq!(
            check_storage(&rendered, &Config::default(), "standard"),
            Ok(())
        );
        let none = with_claims(&[]);
        assert_eq!(
            check_storage(&none, &config("1Mi", &[]), "standard"),
            Ok(())
        );
    }

    #[test]
    fn a_claim_above_the_class_maximum_is_refused_naming_dependency_size_and_maximum() {
        let rendered = with_claims(&[("db", Some("1Gi")), ("search", Some("999999Gi"))]);
        let err = check_storage(&rendered, &Config::default(), "standard").expect_err("refused");
        assert_eq!(
            err,
            "dependency search asks for 999999Gi of storage (storage.size), more than the 10Gi \
             PreviewClass standard allows per claim (namespace.maxClaimSize); ask for less, or \
             ask the platform team to raise the maximum"
        );
        let decimal = with_claims(&[("db", Some("11G"))]);
        assert!(
            check_storage(&decimal, &Config::default(), "standard").is_err(),
            "11G is more than 10Gi"
        );
        let exact = with_claims(&[("db", Some("10Gi"))]);
        assert_eq!(
            check_storage(&exact, &Config::default(), "standard"),
            Ok(())
        );
    }

    #[test]
    fn a_class_raises_or_lowers_the_claim_maximum() {
        let rendered = with_claims(&[("db", Some("50Gi"))]);
        let roomy = config("100Gi", &[]);
        assert_eq!(check_storage(&rendered, &roomy, "big"), Ok(()));
        let tight = config("500Mi", &[]);
        let err = check_storage(&with_claims(&[("db", Some("1Gi"))]), &tight, "small")
            .expect_err("refused");
        assert!(err.contains("db asks for 1Gi") && err.contains("500Mi PreviewClass small"));
    }

    #[test]
    fn claims_that_fit_one_by_one_but_not_the_quota_together_are_refused() {
        let rendered = with_claims(&[
            ("db", Some("10Gi")),
            ("search", Some("10Gi")),
            ("cache", Some("512Mi")),
        ]);
        let err = check_storage(&rendered, &Config::default(), "standard").expect_err("refused");
        assert_eq!(
            err,
            "the dependencies ask for 20.50Gi of storage together (db 10Gi, search 10Gi, cache \
             512Mi), more than the 20Gi the preview namespace's quota allows (PreviewClass \
             standard, namespace.quota requests.storage); ask for less, or ask the platform team \
             to raise the quota"
        );
    }

    #[test]
    fn more_claims_than_the_quota_counts_are_refused() {
        let rendered = with_claims(&[("db", Some("1Gi")), ("search", Some("1Gi"))]);
        let one = config("10Gi", &[("persistentvolumeclaims", "1")]);
        let err = check_storage(&rendered, &one, "standard").expect_err("refused");
        assert!(
            err.starts_with(
                "the dependencies ask for 2 PersistentVolumeClaims (db 1Gi, search 1Gi)"
            ),
            "{err}"
        );
    }

    #[test]
    fn an_unparsable_maximum_is_the_class_s_fault() {
        let rendered = with_claims(&[("db", Some("1Gi"))]);
        let err = check_storage(&rendered, &config("lots", &[]), "standard").expect_err("refused");
        assert!(err.starts_with("PreviewClass standard is invalid"), "{err}");
    }

    fn created(name: &str, namespace: &str, secs: i64) -> PreviewEnvironment {
        let mut pe = fixtures::preview(name);
        pe.metadata.namespace = Some(namespace.into());
        pe.metadata.creation_timestamp = Some(fixtures::time(secs));
        pe
    }

    #[test]
    fn the_oldest_previews_keep_their_place_and_the_newest_over_the_limit_are_refused() {
        let all: Vec<PreviewEnvironment> = (0..5)
            .map(|i| created(&format!("pr-{i}"), "team-shop", 100 + i))
            .collect();
        let verdicts: Vec<bool> = all
            .iter()
            .map(|pe| over_existing_limit(pe, &all, 3, "standard").is_some())
            .collect();
        assert_eq!(verdicts, [false, false, false, true, true]);
        let message = over_existing_limit(&all[4], &all, 3, "standard").expect("refused");
        assert_eq!(
            message,
            "namespace team-shop already has 4 older previews, and PreviewClass standard lets at \
             most 3 exist per namespace (limits.existingPerNamespace); delete previews you no \
             longer need (kubectl get previewenv -n team-shop), and this one is admitted once \
             fewer than 3 older ones are left"
        );
    }

    #[test]
    fn previews_of_other_namespaces_and_previews_being_deleted_do_not_count() {
        let mut old = created("old", "team-shop", 1);
        let other = created("other", "team-cart", 2);
        let me = created("me", "team-shop", 3);
        assert!(over_existing_limit(&me, [&old, &other, &me], 1, "standard").is_some());
        old.metadata.deletion_timestamp = Some(fixtures::time(4));
        assert_eq!(
            over_existing_limit(&me, [&old, &other, &me], 1, "standard"),
            None
        );
    }

    #[test]
    fn previews_created_in_the_same_second_are_ordered_by_name() {
        let (a, b) = (created("a", "team-shop", 5), created("b", "team-shop", 5));
        assert_eq!(over_existing_limit(&a, [&a, &b], 1, "standard"), None);
        assert!(over_existing_limit(&b, [&a, &b], 1, "standard").is_some());
    }

    #[test]
    fn a_preview_being_deleted_is_never_refused() {
        let old = created("old", "team-shop", 1);
        let mut me = created("me", "team-shop", 2);
        me.metadata.deletion_timestamp = Some(fixtures::time(3));
        assert_eq!(over_existing_limit(&me, [&old], 1, "standard"), None);
    }
}

/// The worst case a spec's schema allows, computed from the generated CRD: every list at its
/// most items, every string at its most characters, every map at its most keys, and the
/// free text the spec's text budget rule counts (command, args, env, annotations...) filled
/// up to that budget. A field without a bound fails the test, so a new unbounded field cannot
/// slip in.
#[cfg(test)]
mod spec_size {
    use kube::CustomResourceExt;
    use serde_json::{Map, Value, json};

    use super::{MAX_PREVIEW_SPEC_BYTES, MAX_TEMPLATE_SPEC_BYTES};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

    use crate::api::template::{PreviewTemplate, PreviewTemplateSpec};
    use crate::api::{
        PREVIEW_TEXT_BUDGET, PreviewEnvironment, PreviewEnvironmentSpec, TEMPLATE_TEXT_BUDGET,
    };

    /// Fields (by the end of their path) the text budget counts.
    const BUDGETED: [&str; 10] = [
        ".command[]",
        ".args[]",
        ".env[].name",
        ".env[].value",
        ".secretKeyRef.name",
        ".secretKeyRef.key",
        ".configMapKeyRef.name",
        ".configMapKeyRef.key",
        ".podAnnotations",
        ".exec[]",
    ];

    struct Walk {
        /// Characters of budgeted text still to place.
        budget: usize,
        /// The character strings are made of: 'a', or one that takes 4 bytes in UTF-8.
        fill: char,
        /// Whether env may use valueFrom (templates only: a CEL rule refuses it inline).
        value_from: bool,
        /// Paths without a bound.
        unbounded: Vec<String>,
    }

    impl Walk {
        fn text(&mut self, max: usize, budgeted: bool) -> String {
            let n = if budgeted {
                let n = max.min(self.budget);
                self.budget -= n;
                n
            } else {
                max
            };
            std::iter::repeat_n(self.fill, n).collect()
        }

        fn bound(&mut self, schema: &Value, key: &str, path: &str) -> usize {
            match schema.get(key).and_then(Value::as_u64) {
                Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
                None => {
                    self.unbounded.push(format!("{path} has no {key}"));
                    0
                }
            }
        }

        /// A bound a CEL rule of a map states, e.g. `size(k) <= 30`.
        fn rule_bound(schema: &Value, subject: &str) -> Option<usize> {
            let rules = schema.get("x-kubernetes-validations")?.as_array()?;
            rules.iter().find_map(|r| {
                let rule = r.get("rule")?.as_str()?;
                let at = rule.find(&format!("size({subject}) <= "))?;
                let digits: String = rule[at + subject.len() + 10..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().ok()
            })
        }

        fn instance(&mut self, schema: &Value, path: &str) -> Value {
            let budgeted = BUDGETED.iter().any(|b| path.ends_with(b));
            if schema.get("x-kubernetes-int-or-string").is_some() {
                let max = self.bound(schema, "maxLength", path);
                return Value::String(self.text(max, false));
            }
            if let Some(values) = schema.get("enum").and_then(Value::as_array) {
                return values
                    .iter()
                    .max_by_key(|v| v.as_str().map_or(0, str::len))
                    .cloned()
                    .unwrap_or(Value::Null);
            }
            match schema.get("type").and_then(Value::as_str) {
                Some("string") => {
                    let max = self.bound(schema, "maxLength", path);
                    Value::String(self.text(max, budgeted))
                }
                Some("integer") => json!(
                    schema
                        .get("maximum")
                        .and_then(Value::as_f64)
                        .map_or(i64::MAX, |m| m as i64)
                ),
                Some("boolean") => json!(false),
                Some("array") => {
                    let max = self.bound(schema, "maxItems", path);
                    let item = &schema["items"];
                    let path = format!("{path}[]");
                    Value::Array((0..max).map(|_| self.instance(item, &path)).collect())
                }
                Some("object") => self.object(schema, path, budgeted),
                other => {
                    self.unbounded.push(format!("{path} has type {other:?}"));
                    Value::Null
                }
            }
        }

        fn object(&mut self, schema: &Value, path: &str, budgeted: bool) -> Value {
            let mut out = Map::new();
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    // Exactly one of the two (a CEL rule), and valueFrom only where allowed.
                    let skipped = (name == "configMapKeyRef"
                        && properties.contains_key("secretKeyRef"))
                        || (name == "valueFrom" && !self.value_from);
                    if !skipped {
                        let value = self.instance(property, &format!("{path}.{name}"));
                        out.insert(name.clone(), value);
                    }
                }
                return Value::Object(out);
            }
            let Some(values) = schema.get("additionalProperties") else {
                return Value::Object(out);
            };
            let max = self.bound(schema, "maxProperties", path);
            let mut values = values.clone();
            if let Some(n) = Self::rule_bound(schema, "self[k]") {
                values["maxLength"] = json!(n);
            }
            let key_length = if budgeted {
                None
            } else {
                Self::rule_bound(schema, "k").or_else(|| {
                    self.unbounded
                        .push(format!("{path} has no bound on its keys"));
                    Some(0)
                })
            };
            let values_path = format!("{path}{{}}");
            for i in 0..max {
                // Keys must differ: a number, then filled up to the bound (budgeted keys
                // count against the budget instead).
                let mut key = i.to_string();
                match key_length {
                    Some(n) => {
                        key.extend(std::iter::repeat_n(self.fill, n.saturating_sub(key.len())))
                    }
                    None => self.budget = self.budget.saturating_sub(key.len()),
                }
                let value = if budgeted {
                    let max = values.get("maxLength").and_then(Value::as_u64).unwrap_or(0);
                    Value::String(self.text(usize::try_from(max).unwrap_or(0), true))
                } else {
                    self.instance(&values, &values_path)
                };
                out.insert(key, value);
            }
            Value::Object(out)
        }
    }

    /// The largest spec of `crd`'s schema without the top-level fields `without`, with its
    /// strings made of `fill`; the paths without a bound; the text budget left unplaced.
    fn largest(
        crd: &CustomResourceDefinition,
        without: &[&str],
        budget: usize,
        fill: char,
        value_from: bool,
    ) -> (Value, Vec<String>, usize) {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        let mut spec = schema["openAPIV3Schema"]["properties"]["spec"].clone();
        for field in without {
            spec["properties"].as_object_mut().map(|o| o.remove(*field));
        }
        let mut walk = Walk {
            budget,
            fill,
            value_from,
            unbounded: Vec::new(),
        };
        let instance = walk.instance(&spec, "spec");
        (instance, walk.unbounded, walk.budget)
    }

    fn bytes<T: serde::Serialize>(value: &T) -> usize {
        serde_json::to_vec(value).expect("serializes").len()
    }

    #[test]
    fn every_field_of_the_specs_is_bounded() {
        for (crd, value_from) in [
            (PreviewEnvironment::crd(), false),
            (PreviewTemplate::crd(), true),
        ] {
            let (_, unbounded, _) = largest(&crd, &[], usize::MAX, 'a', value_from);
            assert!(
                unbounded.is_empty(),
                "unbounded in {}: {unbounded:#?}",
                crd.spec.names.kind
            );
        }
    }

    /// Measures the largest specs; `cargo test --lib spec_size -- --nocapture` prints them.
    #[test]
    fn the_largest_preview_spec_serializes_under_the_stated_bound() {
        let crd = PreviewEnvironment::crd();
        for (shape, without) in [
            ("inline", &["templateRef", "images", "parameters"][..]),
            ("templated", &["services", "tests"][..]),
        ] {
            let (ascii, _, left) = largest(&crd, without, PREVIEW_TEXT_BUDGET, 'a', false);
            if shape == "inline" {
                assert_eq!(left, 0, "the whole text budget is in the spec");
            }
            let spec: PreviewEnvironmentSpec = serde_json::from_value(ascii).expect("a spec");
            let size = bytes(&spec);
            let (utf8, _, _) = largest(&crd, without, PREVIEW_TEXT_BUDGET, '\u{10348}', false);
            println!(
                "largest {shape} PreviewEnvironment spec: {size} bytes, {} in 4-byte UTF-8",
                bytes(&utf8)
            );
            assert!(size <= MAX_PREVIEW_SPEC_BYTES, "{shape}: {size} bytes");
        }
    }

    #[test]
    fn the_largest_template_spec_serializes_under_the_stated_bound() {
        let crd = PreviewTemplate::crd();
        let (ascii, _, left) = largest(&crd, &[], TEMPLATE_TEXT_BUDGET, 'a', true);
        assert_eq!(left, 0, "the whole text budget is in the spec");
        let spec: PreviewTemplateSpec = serde_json::from_value(ascii).expect("a template spec");
        let size = bytes(&spec);
        let (utf8, _, _) = largest(&crd, &[], TEMPLATE_TEXT_BUDGET, '\u{10348}', true);
        println!(
            "largest PreviewTemplate spec: {size} bytes, {} in 4-byte UTF-8",
            bytes(&utf8)
        );
        assert!(size <= MAX_TEMPLATE_SPEC_BYTES, "{size} bytes");
    }
}
