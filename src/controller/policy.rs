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
use crate::api::{PreviewEnvironment, Provider, Reason};
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
/// returns the policy it runs under. Only who asks for what is looked at here (the binding of
/// the namespace to the repository): a template is rendered, and what it runs checked by
/// [`check_content`], only for previews this admits.
pub fn admit(
    pe: &PreviewEnvironment,
    tenant: &str,
    tenant_labels: &BTreeMap<String, String>,
    class: &PreviewClass,
    defaults: &Config,
) -> Result<Config, Refusal> {
    let class_name = class.name_any();
    let spec = &pe.spec;
    let provider = spec.provider();
    let admitting = binding(class, tenant, tenant_labels, &spec.repository, provider);
    if admitting.is_empty()
        && !bound_paths(class, tenant, tenant_labels, &spec.repository).is_empty()
    {
        return Err(Refusal::new(
            Reason::RepositoryNotAllowed,
            format!(
                "PreviewClass {class_name} lets namespace {tenant} preview repository {} on \
                 another provider than {}; the platform team can add `{}` to that tenant's \
                 providers (spec.tenants[].providers)",
                spec.repository,
                provider.title(),
                provider.as_str()
            ),
        ));
    }
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
    Ok(config)
}

/// Whether the policy `config` of class `class_name` lets a preview run `content` (its own
/// services and tests, or its template's as rendered for it): images from allowed registries,
/// allowed pod annotation keys, storage within the class's limits, and no Secret reads from an
/// inline spec.
pub fn check_content(content: &Rendered, config: &Config, class_name: &str) -> Result<(), Refusal> {
    check_inline_secrets(content)?;
    check_delivery(content, config, class_name)?;
    super::limits::check_storage(content, config, class_name)
        .map_err(|message| Refusal::new(Reason::PolicyViolation, message))?;
    // Before the registry check, which would blame the registry for what is a typo.
    if let Some(image) = content.images().find(|i| has_capitals_in_name(i)) {
        return Err(Refusal::new(
            Reason::InvalidImageName,
            format!(
                "image {image} has capitals in its name; image names are lowercase (only the \
                 tag may have capitals): fix the reference, or the parameter or image override \
                 it is rendered from"
            ),
        ));
    }
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
    Ok(())
}

/// Whether the class lets a preview deliver what its template gives Flux: Flux delivery at
/// all, the pull request's repository (at a full commit sha, which Flux fetches), and each
/// chart's repository.
pub fn check_delivery(
    content: &Rendered,
    config: &Config,
    class_name: &str,
) -> Result<(), Refusal> {
    if !content.delivers_through_flux() {
        return Ok(());
    }
    if config.flux_applier_role.is_none() {
        return Err(Refusal::new(
            Reason::FluxNotInstalled,
            "the template delivers through Flux, but the operator runs without the role Flux \
             applies with (--flux-applier-role; the chart's flux.enabled): ask the platform \
             team to enable it"
                .to_string(),
        ));
    }
    let Some(flux) = &config.flux else {
        return Err(Refusal::new(
            Reason::PolicyViolation,
            format!(
                "the template delivers through Flux (helmReleases, kustomizations), which \
                 PreviewClass {class_name} does not allow (it has no spec.flux): use services, \
                 or ask the platform team to allow Flux"
            ),
        ));
    };
    if content.needs_repository() {
        if flux.git_url.is_none() {
            return Err(Refusal::new(
                Reason::PolicyViolation,
                format!(
                    "the template delivers from the pull request's repository (a chart path or \
                     a kustomization), but PreviewClass {class_name} says nowhere to fetch it \
                     from (spec.flux.gitURL): ask the platform team to set it"
                ),
            ));
        }
        let sha = &content.spec.head_sha;
        if sha.len() != 40 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Refusal::new(
                Reason::PolicyViolation,
                format!(
                    "spec.headSha {sha:?} is not a full commit sha: Flux fetches the pull \
                     request's repository at exactly that commit, which needs all 40 hex \
                     digits (${{{{ github.event.pull_request.head.sha }}}} in a workflow)"
                ),
            ));
        }
    }
    for release in &content.helm_releases {
        let Some(url) = &release.chart.repository else {
            continue;
        };
        if !flux
            .chart_repositories
            .iter()
            .any(|p| source_allows(p, url))
        {
            return Err(Refusal::new(
                Reason::SourceNotAllowed,
                format!(
                    "helmReleases[{}]: chart repository {url} is not one PreviewClass \
                     {class_name} allows ({}); publish the chart there or ask the platform \
                     team to allow it",
                    release.name,
                    list_or_none(&flux.chart_repositories)
                ),
            ));
        }
    }
    Ok(())
}

/// Whether the chart repository `url` is under `prefix`, in whole path segments.
fn source_allows(prefix: &str, url: &str) -> bool {
    let (prefix, url) = (prefix.trim_end_matches('/'), url.trim_end_matches('/'));
    url.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// Refuses an inline preview (no template) whose containers read a Secret or ConfigMap.
pub fn check_inline_secrets(content: &Rendered) -> Result<(), Refusal> {
    match inline_secret_read(content) {
        Some((container, var)) => Err(Refusal::new(
            Reason::PolicyViolation,
            format!(
                "{container}: env {var} uses valueFrom, which only a PreviewTemplate may use, \
                 for the Secrets and ConfigMaps it declares (spec.secrets, spec.configMaps); \
                 move the services and tests into a template"
            ),
        )),
        None => Ok(()),
    }
}

/// The first container and env var of an inline preview (no template) that reads a Secret or
/// ConfigMap. Its namespace holds no Secrets of the team, only the platform's copies (image
/// pull and TLS secrets), so such a read could only print those into a log; admission refuses
/// it too (CRD rules), this holds for every container rendered from an inline spec.
fn inline_secret_read(content: &Rendered) -> Option<(String, &str)> {
    if content.spec.template_ref.is_some() {
        return None;
    }
    content.containers_env().find_map(|(container, env)| {
        env.iter()
            .find(|e| e.value_from.is_some())
            .map(|e| (container.clone(), e.name.as_str()))
    })
}

/// The tenant entries of `class` that let namespace `tenant` (with `labels`) preview
/// `repository`; none means the class does not bind them.
pub fn binding<'a>(
    class: &'a PreviewClass,
    tenant: &str,
    labels: &BTreeMap<String, String>,
    repository: &str,
    provider: Provider,
) -> Vec<&'a Tenant> {
    bound_paths(class, tenant, labels, repository)
        .into_iter()
        .filter(|t| t.hosted_on(provider))
        .collect()
}

/// The tenant entries of `class` that cover namespace `tenant` and repository path
/// `repository`, on whatever provider.
fn bound_paths<'a>(
    class: &'a PreviewClass,
    tenant: &str,
    labels: &BTreeMap<String, String>,
    repository: &str,
) -> Vec<&'a Tenant> {
    (class.spec.tenants.iter())
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
/// case-insensitive. A `.` or `..` segment matches nothing (`acme/..` is no repository of
/// `acme/*`; admission refuses such names too).
fn repository_matches(pattern: &str, repository: &str) -> bool {
    if repository.split('/').any(|s| s == "." || s == "..") {
        return false;
    }
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

/// The first image the preview runs outside `allowed`; none when `allowed` is empty.
fn disallowed_image<'a>(content: &'a Rendered, allowed: &[String]) -> Option<&'a str> {
    if allowed.is_empty() {
        return None;
    }
    content
        .images()
        .find(|image| !allowed.iter().any(|p| registry_allows(p, image)))
}

/// Whether the name of `image` (registry and repository, before a `:tag` or `@digest`) has
/// capitals, which no registry accepts.
fn has_capitals_in_name(image: &str) -> bool {
    let name = image.split('@').next().unwrap_or(image);
    // A `:` after the last `/` starts the tag; one before it is a registry's port.
    let name = match name.rsplit_once(':') {
        Some((before, tag)) if !tag.contains('/') => before,
        _ => name,
    };
    name.chars().any(|c| c.is_ascii_uppercase())
}

/// Whether `image` comes from the registry path `prefix`, compared in whole path segments:
/// `ghcr.io/acme` (or `ghcr.io/acme/`) admits `ghcr.io/acme/web:1` and `ghcr.io/acme:1`, never
/// `ghcr.io/acme-evil/web`; `ghcr.io` never admits `ghcr.io.evil.example/web`.
fn registry_allows(prefix: &str, image: &str) -> bool {
    if prefix.ends_with('/') {
        return image.starts_with(prefix);
    }
    image
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', ':', '@']))
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

    /// The class's whole verdict on an inline preview: binding, then content.
    fn admit_all(
        pe: &PreviewEnvironment,
        tenant: &str,
        labels: &BTreeMap<String, String>,
        class: &PreviewClass,
        defaults: &Config,
    ) -> Result<Config, Refusal> {
        let config = admit(pe, tenant, labels, class, defaults)?;
        check_content(&Rendered::inline(&pe.spec), &config, &class.name_any())?;
        Ok(config)
    }

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
        assert!(admit(&pe, "team-shop", &none, &c, &defaults).is_ok());
        pe.spec.repository = "Acme/Shop-API".into();
        assert!(
            admit(&pe, "team-shop", &none, &c, &defaults).is_ok(),
            "glob, any case"
        );
        pe.spec.repository = "acme/payments".into();
        let refusal = admit(&pe, "team-shop", &none, &c, &defaults).expect_err("not bound");
        assert_eq!(refusal.reason, Reason::RepositoryNotAllowed);
        assert!(refusal.message.contains("acme/payments") && refusal.message.contains("team-shop"));
        pe.spec.repository = "acme/shop".into();
        let other = admit(&pe, "team-pay", &none, &c, &defaults).expect_err("other tenant");
        assert_eq!(other.reason, Reason::RepositoryNotAllowed);
    }

    #[test]
    fn a_path_bound_on_github_is_not_bound_on_gitlab() {
        let defaults = Config::default();
        let none = BTreeMap::new();
        let github_only = class("standard", true, shop_tenant());
        let mut pe = fixtures::preview("shop-pr-1");
        pe.spec.provider = Some(Provider::Gitlab);
        let refusal = admit(&pe, "team-shop", &none, &github_only, &defaults)
            .expect_err("a GitLab project of the same path is someone else's");
        assert_eq!(refusal.reason, Reason::RepositoryNotAllowed);
        assert!(refusal.message.contains("providers"), "{}", refusal.message);
        assert!(
            binding(
                &github_only,
                "team-shop",
                &none,
                "acme/shop",
                Provider::Gitlab
            )
            .is_empty()
        );
        let both = class(
            "standard",
            true,
            serde_json::json!([{"namespaces": ["team-shop"], "repositories": ["acme/shop"],
                                "providers": ["github", "gitlab"]}]),
        );
        assert!(admit(&pe, "team-shop", &none, &both, &defaults).is_ok());
        let gitlab_only = class(
            "standard",
            true,
            serde_json::json!([{"namespaces": ["team-shop"], "repositories": ["acme/shop"],
                                "providers": ["gitlab"]}]),
        );
        pe.spec.provider = None;
        assert!(
            admit(&pe, "team-shop", &none, &gitlab_only, &defaults).is_err(),
            "and a GitLab binding does not cover GitHub"
        );
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
        assert!(admit(&pe, "any", &labels, &c, &Config::default()).is_ok());
        assert!(admit(&pe, "any", &BTreeMap::new(), &c, &Config::default()).is_err());
        let everyone = class(
            "open",
            true,
            serde_json::json!([{"namespaceSelector": {}, "repositories": ["acme/shop"]}]),
        );
        assert!(admit(&pe, "any", &labels, &everyone, &Config::default()).is_err());
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
        let refusal = admit_all(&pe, "team-shop", &BTreeMap::new(), &c, &Config::default())
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
        assert!(admit_all(&pe, "team-shop", &BTreeMap::new(), &c, &Config::default()).is_ok());
        let allowed = pe.spec.services[0].image.clone();
        pe.spec.services[0].image = "ghcr.io/Acme/web:V1".into();
        let refusal = admit_all(&pe, "team-shop", &BTreeMap::new(), &c, &Config::default())
            .expect_err("capitals in the name");
        assert_eq!(
            refusal.reason,
            Reason::InvalidImageName,
            "the fault is the capitals, not the registry: {}",
            refusal.message
        );
        pe.spec.services[0].image = allowed;
        pe.spec.services[0]
            .pod_annotations
            .insert("sidecar.istio.io/inject".into(), "false".into());
        let refusal = admit_all(&pe, "team-shop", &BTreeMap::new(), &c, &Config::default())
            .expect_err("not allowed");
        assert_eq!(refusal.reason, Reason::AnnotationNotAllowed);
        assert!(refusal.message.contains("sidecar.istio.io/inject"));
        spec.allowed_pod_annotations.clear();
        let strict = PreviewClass::new("strict", spec);
        let refusal = admit_all(
            &pe,
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

    #[test]
    fn registries_are_compared_in_whole_path_segments() {
        for (prefix, image, allowed) in [
            ("ghcr.io/acme", "ghcr.io/acme/web:1", true),
            ("ghcr.io/acme/", "ghcr.io/acme/web:1", true),
            ("ghcr.io/acme", "ghcr.io/acme:1", true),
            ("ghcr.io/acme", "ghcr.io/acme@sha256:ab", true),
            ("ghcr.io/acme", "ghcr.io/acme-evil/web:1", false),
            ("ghcr.io/acme/", "ghcr.io/acme-evil/web:1", false),
            ("ghcr.io", "ghcr.io.evil.example/web:1", false),
            ("ghcr.io", "ghcr.io/anyone/web:1", true),
        ] {
            assert_eq!(registry_allows(prefix, image), allowed, "{prefix} {image}");
        }
    }

    #[test]
    fn dot_segments_match_no_repository_pattern() {
        assert!(!repository_matches("acme/*", "acme/.."));
        assert!(!repository_matches("acme/*", "acme/."));
        assert!(!repository_matches("*/*", "../shop"));
        assert!(repository_matches("acme/*", "acme/.github"));
    }

    #[test]
    fn an_inline_preview_may_not_read_secrets_in_any_container() {
        let c = class("standard", true, shop_tenant());
        let read = |name: &str| -> crate::api::EnvVar {
            serde_json::from_value(serde_json::json!({"name": name,
                "valueFrom": {"secretKeyRef": {"name": "preview-wildcard-tls", "key": "tls.key"}}}))
            .expect("env var")
        };
        let mut pe = fixtures::preview("shop-pr-1");
        pe.spec.tests[0].env.push(read("KEY"));
        let refusal = admit_all(&pe, "team-shop", &BTreeMap::new(), &c, &Config::default())
            .expect_err("a test reads a Secret");
        assert_eq!(refusal.reason, Reason::PolicyViolation);
        assert!(
            refusal.message.contains("tests[t0]") && refusal.message.contains("env KEY"),
            "{}",
            refusal.message
        );
        let mut pe = fixtures::preview("shop-pr-1");
        pe.spec.services[0].env.push(read("KEY"));
        let refusal = admit_all(&pe, "team-shop", &BTreeMap::new(), &c, &Config::default())
            .expect_err("a service reads a Secret");
        assert!(refusal.message.contains("services["), "{}", refusal.message);
    }
}
