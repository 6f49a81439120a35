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
    let older = peers
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == tenant)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.metadata.uid != pe.metadata.uid)
        .filter(|p| order(p) < order(pe))
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
