//! PURE: which PreviewClass serves a preview and whether it admits it: the class (named, or
//! the default), the binding of the preview's namespace to its repository, the registries of
//! its images and the keys of its pod annotations. The operator acts for a tenant only within
//! what the platform team's class grants that tenant.

use std::collections::BTreeMap;
use std::sync::Arc;

use globset::{Glob, GlobBuilder, GlobMatcher};
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::api::class::{DEFAULT_CLASS, PreviewClass, Tenant};
use crate::api::{PreviewEnvironment, Reason};
use crate::config::Config;
use crate::template::Rendered;

/// Why a preview is not admitted, for its `Admitted` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    fn new(reason: Reason, message: String) -> Self {
        Refusal { reason, message }
    }
}

/// The class of `pe`: the one it names, else the default (the oldest, if several claim it).
pub fn class_of(
    pe: &PreviewEnvironment,
    classes: &[Arc<PreviewClass>],
) -> Result<Arc<PreviewClass>, Refusal> {
    if let Some(name) = &pe.spec.preview_class_name {
        return classes
            .iter()
            .find(|c| c.name_any() == *name)
            .cloned()
            .ok_or_else(|| {
                Refusal::new(
                    Reason::NoPreviewClass,
                    format!(
                        "PreviewClass {name} does not exist; ask the platform team for it, or \
                         remove spec.previewClassName to use the default class"
                    ),
                )
            });
    }
    let mut defaults: Vec<&Arc<PreviewClass>> = classes.iter().filter(|c| is_default(c)).collect();
    defaults.sort_by_key(|c| {
        (
            c.metadata.creation_timestamp.clone().map(|t| t.0),
            c.name_any(),
        )
    });
    defaults.first().map(|c| Arc::clone(c)).ok_or_else(|| {
        Refusal::new(
            Reason::NoPreviewClass,
            "no PreviewClass is marked preview.dev/is-default-class=true; set \
             spec.previewClassName or ask the platform team for a default class"
                .to_string(),
        )
    })
}

/// Whether `class` is marked as the default.
pub fn is_default(class: &PreviewClass) -> bool {
    class.annotations().get(DEFAULT_CLASS).map(String::as_str) == Some("true")
}

/// Whether a class names previews of `pe`'s class: by name, or as the default when it names none.
pub fn serves(class: &PreviewClass, pe: &PreviewEnvironment) -> bool {
    match &pe.spec.preview_class_name {
        Some(name) => class.name_any() == *name,
        None => is_default(class),
    }
}

/// Whether any tenant of `class` selects namespaces by label (then their labels are needed).
pub fn needs_namespace_labels(class: &PreviewClass) -> bool {
    class
        .spec
        .tenants
        .iter()
        .any(|t| t.namespace_selector.is_some())
}

/// Admits `pe` (in namespace `tenant`, whose labels are `tenant_labels`) under `class`, and
/// returns the policy it runs under. `content` is what it runs: its own services and tests,
/// or its template's as rendered for it, whose images and pod annotations the class checks.
pub fn admit(
    pe: &PreviewEnvironment,
    content: &Rendered,
    tenant: &str,
    tenant_labels: &BTreeMap<String, String>,
    class: &PreviewClass,
    defaults: &Config,
) -> Result<Config, Refusal> {
    let class_name = class.name_any();
    let spec = &pe.spec;
    let admitting = binding(class, tenant, tenant_labels, &spec.repository);
    if admitting.is_empty() {
        return Err(Refusal::new(
            Reason::RepositoryNotAllowed,
            format!(
                "PreviewClass {class_name} does not let namespace {tenant} preview repository \
                 {}; the platform team can add it to a tenant of the class (spec.tenants)",
                spec.repository
            ),
        ));
    }
    let mut config = defaults.with_class(&class.spec).map_err(|e| {
        Refusal::new(
            Reason::PolicyViolation,
            format!("PreviewClass {class_name} is invalid: {e}; the platform team must fix it"),
        )
    })?;
    config.viewers = admitting.iter().flat_map(|t| t.viewers.clone()).collect();
    config.viewers.dedup();
    if let Some(image) = disallowed_image(content, &config.allowed_registries) {
        return Err(Refusal::new(
            Reason::RegistryNotAllowed,
            format!(
                "image {image} is not from a registry PreviewClass {class_name} allows ({}); \
                 push it there or ask the platform team to allow its registry",
                config.allowed_registries.join(", ")
            ),
        ));
    }
    if let Some(key) = disallowed_annotation(content, &config.allowed_pod_annotations) {
        return Err(Refusal::new(
            Reason::AnnotationNotAllowed,
            format!(
                "pod annotation {key} is not allowed by PreviewClass {class_name} (allowed: {}); \
                 remove it or ask the platform team to allow it",
                if config.allowed_pod_annotations.is_empty() {
                    "none".to_string()
                } else {
                    config.allowed_pod_annotations.join(", ")
                }
            ),
        ));
    }
    Ok(config)
}

/// The tenant entries of `class` that let namespace `tenant` (with `labels`) preview
/// `repository`; none means the class does not bind them.
pub fn binding<'a>(
    class: &'a PreviewClass,
    tenant: &str,
    labels: &BTreeMap<String, String>,
    repository: &str,
) -> Vec<&'a Tenant> {
    class
        .spec
        .tenants
        .iter()
        .filter(|t| selects(t, tenant, labels))
        .filter(|t| {
            t.repositories
                .iter()
                .any(|r| repository_matches(r, repository))
        })
        .collect()
}

/// Whether tenant entry `t` covers namespace `tenant`.
fn selects(t: &Tenant, tenant: &str, labels: &BTreeMap<String, String>) -> bool {
    if t.namespaces.iter().any(|n| n == tenant) {
        return true;
    }
    t.namespace_selector
        .clone()
        .and_then(|s| Selector::try_from(s).ok())
        // An empty selector would select every namespace: the platform team must name them.
        .filter(|s| !s.selects_all())
        .is_some_and(|s| s.matches(labels))
}

/// Whether `repository` matches a glob: `*` stays within one path segment; GitHub names are
/// case-insensitive.
fn repository_matches(pattern: &str, repository: &str) -> bool {
    match GlobBuilder::new(pattern)
        .literal_separator(true)
        .case_insensitive(true)
        .build()
    {
        Ok(glob) => glob.compile_matcher().is_match(repository),
        // A pattern that is not a valid glob matches only itself.
        Err(_) => pattern.eq_ignore_ascii_case(repository),
    }
}

/// The first image the preview runs outside `allowed` (prefixes); none when `allowed` is empty.
fn disallowed_image<'a>(content: &'a Rendered, allowed: &[String]) -> Option<&'a str> {
    if allowed.is_empty() {
        return None;
    }
    content
        .images()
        .find(|image| !allowed.iter().any(|p| image.starts_with(p.as_str())))
}

/// The first pod annotation key outside the `allowed` globs (`/` is an ordinary character).
fn disallowed_annotation<'a>(content: &'a Rendered, allowed: &[String]) -> Option<&'a str> {
    let matchers: Vec<GlobMatcher> = allowed
        .iter()
        .filter_map(|p| Glob::new(p).ok().map(|g| g.compile_matcher()))
        .collect();
    content
        .pod_annotation_keys()
        .find(|k| !matchers.iter().any(|m| m.is_match(k.as_str())))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::class::PreviewClassSpec;
    use crate::fixtures;

    fn class(name: &str, default: bool, tenants: serde_json::Value) -> Arc<PreviewClass> {
        let mut c = PreviewClass::new(
            name,
            PreviewClassSpec {
                tenants: serde_json::from_value(tenants).expect("tenants"),
                ..PreviewClassSpec::default()
            },
        );
        if default {
            c.metadata.annotations = Some(BTreeMap::from([(
                DEFAULT_CLASS.to_string(),
                "true".to_string(),
            )]));
        }
        Arc::new(c)
    }

    fn shop_tenant() -> serde_json::Value {
        serde_json::json!([{"namespaces": ["team-shop"], "repositories": ["acme/shop", "acme/shop-*"]}])
    }

    #[test]
    fn the_named_class_or_else_the_default_serves_a_preview() {
        let classes = vec![
            class("standard", true, shop_tenant()),
            class("gpu", false, shop_tenant()),
        ];
        let mut pe = fixtures::preview("shop-pr-1");
        assert_eq!(
            class_of(&pe, &classes).expect("default").name_any(),
            "standard"
        );
        pe.spec.preview_class_name = Some("gpu".into());
        assert_eq!(class_of(&pe, &classes).expect("named").name_any(), "gpu");
        pe.spec.preview_class_name = Some("missing".into());
        let refusal = class_of(&pe, &classes).expect_err("no such class");
        assert_eq!(refusal.reason, Reason::NoPreviewClass);
        assert!(refusal.message.contains("missing"), "{}", refusal.message);
        let none = class_of(
            &fixtures::preview("x"),
            &[class("gpu", false, shop_tenant())],
        );
        assert_eq!(none.expect_err("no default").reason, Reason::NoPreviewClass);
    }

    #[test]
    fn only_a_bound_namespace_may_preview_a_repository() {
        let c = class("standard", true, shop_tenant());
        let defaults = Config::default();
        let none = BTreeMap::new();
        let mut pe = fixtures::preview("shop-pr-1");
        assert!(
            admit(
                &pe,
                &Rendered::inline(&pe.spec),
                "team-shop",
                &none,
                &c,
                &defaults
            )
            .is_ok()
        );
        pe.spec.repository = "Acme/Shop-API".into();
        assert!(
            admit(
                &pe,
                &Rendered::inline(&pe.spec),
                "team-shop",
                &none,
                &c,
                &defaults
            )
            .is_ok(),
            "glob, any case"
        );
        pe.spec.repository = "acme/payments".into();
        let refusal = admit(
            &pe,
            &Rendered::inline(&pe.spec),
            "team-shop",
            &none,
            &c,
            &defaults,
        )
        .expect_err("not bound");
        assert_eq!(refusal.reason, Reason::RepositoryNotAllowed);
        assert!(refusal.message.contains("acme/payments") && refusal.message.contains("team-shop"));
        pe.spec.repository = "acme/shop".into();
        let other = admit(
            &pe,
            &Rendered::inline(&pe.spec),
            "team-pay",
            &none,
            &c,
            &defaults,
        )
        .expect_err("other tenant");
        assert_eq!(other.reason, Reason::RepositoryNotAllowed);
    }

    #[test]
    fn a_star_stays_within_one_path_segment() {
        assert!(repository_matches("acme/*", "acme/shop"));
        assert!(!repository_matches("acme*", "acme/shop"));
        assert!(!repository_matches("*", "acme/shop"));
        assert!(repository_matches("*/*", "other/shop"));
    }

    #[test]
    fn namespaces_can_be_selected_by_label_but_not_by_an_empty_selector() {
        let c = class(
            "standard",
            true,
            serde_json::json!([{"namespaceSelector": {"matchLabels": {"team": "shop"}}, "repositories": ["acme/shop"]}]),
        );
        let pe = fixtures::preview("shop-pr-1");
        let labels = BTreeMap::from([("team".to_string(), "shop".to_string())]);
        assert!(
            admit(
                &pe,
                &Rendered::inline(&pe.spec),
                "any",
                &labels,
                &c,
                &Config::default()
            )
            .is_ok()
        );
        assert!(
            admit(
                &pe,
                &Rendered::inline(&pe.spec),
                "any",
                &BTreeMap::new(),
                &c,
                &Config::default()
            )
            .is_err()
        );
        let everyone = class(
            "open",
            true,
            serde_json::json!([{"namespaceSelector": {}, "repositories": ["acme/shop"]}]),
        );
        assert!(
            admit(
                &pe,
                &Rendered::inline(&pe.spec),
                "any",
                &labels,
                &everyone,
                &Config::default()
            )
            .is_err()
        );
    }

    #[test]
    fn registries_and_pod_annotations_are_checked_against_the_class() {
        let mut spec = PreviewClassSpec {
            tenants: serde_json::from_value(shop_tenant()).expect("tenants"),
            allowed_registries: vec!["ghcr.io/acme/".into()],
            allowed_pod_annotations: vec!["prometheus.io/*".into()],
            ..PreviewClassSpec::default()
        };
        let c = PreviewClass::new("standard", spec.clone());
        let mut pe = fixtures::preview("shop-pr-1");
        let refusal = admit(
            &pe,
            &Rendered::inline(&pe.spec),
            "team-shop",
            &BTreeMap::new(),
            &c,
            &Config::default(),
        )
        .expect_err("w:1 is not from ghcr.io/acme/");
        assert_eq!(refusal.reason, Reason::RegistryNotAllowed);
        for s in &mut pe.spec.services {
            s.image = format!("ghcr.io/acme/{}:1", s.name);
        }
        for t in &mut pe.spec.tests {
            t.image = "ghcr.io/acme/e2e:1".into();
        }
        pe.spec.services[0]
            .pod_annotations
            .insert("prometheus.io/scrape".into(), "true".into());
        assert!(
            admit(
                &pe,
                &Rendered::inline(&pe.spec),
                "team-shop",
                &BTreeMap::new(),
                &c,
                &Config::default()
            )
            .is_ok()
        );
        pe.spec.services[0]
            .pod_annotations
            .insert("sidecar.istio.io/inject".into(), "false".into());
        let refusal = admit(
            &pe,
            &Rendered::inline(&pe.spec),
            "team-shop",
            &BTreeMap::new(),
            &c,
            &Config::default(),
        )
        .expect_err("not allowed");
        assert_eq!(refusal.reason, Reason::AnnotationNotAllowed);
        assert!(refusal.message.contains("sidecar.istio.io/inject"));
        spec.allowed_pod_annotations.clear();
        let strict = PreviewClass::new("strict", spec);
        let refusal = admit(
            &pe,
            &Rendered::inline(&pe.spec),
            "team-shop",
            &BTreeMap::new(),
            &strict,
            &Config::default(),
        )
        .expect_err("none allowed");
        assert!(
            refusal.message.contains("allowed: none"),
            "{}",
            refusal.message
        );
    }
}
