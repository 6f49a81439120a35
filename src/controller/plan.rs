//! PURE: what one reconcile of a preview works from, decided from a [`Snapshot`] of what it
//! reads (classes, its template, its tenant namespace's labels, its peers): who and where it
//! is, what it rolls out, the policy it runs under, its lifetime and sleep, and the one
//! [`Gate`] that keeps it from rolling out (class refusal, template error, TTL violation,
//! sleep policy). What is left for admission is what needs the cluster: the namespace and the
//! concurrency queue. `preview-operator render` plans with the same function.
//!
//! The order matters for tenant safety: the class admits the namespace and repository before
//! the template is rendered, so a tenant no class knows costs the operator no rendering.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::build::Preview;
use super::lifetime::Lifetime;
use super::limits;
use super::policy::{self, Refusal};
use super::sleep;
use super::status::Gate;
use crate::api::class::PreviewClass;
use crate::api::template::PreviewTemplate;
use crate::api::{PreviewEnvironment, Reason, Revision};
use crate::config::Config;
use crate::naming::{self, NEVER_SLEEP, Owner, RERUN_TESTS, WAKE_REQUEST};
use crate::template::{self, Rendered, Target};

/// Everything [`plan`] reads, taken from the caches (or, for `render`, from files).
pub struct Snapshot<'a> {
    /// The operator's defaults, which a class overrides.
    pub defaults: &'a Config,
    /// Where the classes come from.
    pub classes: Classes,
    /// The PreviewTemplate of the preview's namespace that `spec.templateRef` names, if it
    /// exists.
    pub template: Option<Arc<PreviewTemplate>>,
    /// The labels of the preview's tenant namespace (for classes that select by label).
    pub tenant_labels: BTreeMap<String, String>,
    /// The PreviewEnvironments there are (for the class's limit on previews that exist).
    pub peers: Vec<Arc<PreviewEnvironment>>,
    /// Whether the last resync could ask the provider about the repository.
    pub scm: Option<Result<(), String>>,
    /// Whether the cluster serves Flux's kinds.
    pub flux_installed: bool,
    pub now: Timestamp,
}

/// The classes a plan chooses from.
pub enum Classes {
    /// The cluster's: the one the preview names, else the default.
    Cluster(Vec<Arc<PreviewClass>>),
    /// None: the operator's defaults admit everything (`render` without `--class`).
    Defaults,
}

/// What one reconcile of a preview works from.
pub struct Plan<'a> {
    pub pe: &'a PreviewEnvironment,
    pub owner: Owner,
    /// The preview namespace.
    pub namespace: String,
    /// Its services, tests and the rest: its own, or its template's rendered for it.
    pub rendered: Rendered,
    pub policy: Policy,
    /// Why it may not roll out, whatever the namespace and the queue say.
    pub gate: Option<Gate>,
    pub lifetime: Lifetime,
    /// The last activity, and whether the preview sleeps now.
    pub last_active: Timestamp,
    pub sleep: sleep::Decision,
    pub scm: Option<Result<(), String>>,
    pub now: Timestamp,
    /// The generations of its class and template it should run.
    pub revision: Revision,
}

/// The policy a preview runs under, or why it is refused one.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The class that serves it, when there is one.
    pub class: Option<String>,
    /// That class's generation.
    pub class_generation: Option<i64>,
    /// Its class over the operator's defaults (the defaults alone when refused).
    pub config: Config,
    pub refusal: Option<Refusal>,
}

impl Plan<'_> {
    /// The preview as the builders see it.
    pub fn preview(&self) -> Preview<'_> {
        Preview::new(
            &self.rendered,
            self.owner.clone(),
            self.namespace.clone(),
            self.pe.annotations().get(RERUN_TESTS).map(String::as_str),
        )
    }

    /// Whether the preview could run now, as far as the plan knows: only such previews hold
    /// a place in the concurrency queue.
    pub fn could_run(&self) -> bool {
        self.gate.is_none()
    }
}

/// Why a preview cannot be planned at all: it lacks what every stored object has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the PreviewEnvironment has no namespace or uid")]
pub struct Incomplete;

/// Plans one reconcile of `pe` from `snapshot`.
pub fn plan<'a>(
    pe: &'a PreviewEnvironment,
    snapshot: &Snapshot<'_>,
) -> Result<Plan<'a>, Incomplete> {
    let owner = Owner::of(pe).ok_or(Incomplete)?;
    let namespace = naming::preview_namespace_of(pe, &owner, &snapshot.defaults.namespace_prefix);
    let mut policy = admit(pe, snapshot);
    let (rendered, blocked) = match content(pe, snapshot, &namespace, &mut policy) {
        Ok(rendered) => (rendered, None),
        Err(gate) => (Rendered::inline(&pe.spec), Some(gate)),
    };
    let lifetime = Lifetime::of(pe, &policy.config, policy.class.as_deref(), snapshot.now);
    let (last_active, sleep) = sleep_of(pe, &rendered, &mut policy, snapshot.now);
    let gate = match (&policy.refusal, blocked, &lifetime.violation) {
        (Some(refusal), _, _) => Some(Gate::NotAdmitted {
            reason: refusal.reason,
            message: refusal.message.clone(),
        }),
        (None, Some(blocked), _) => Some(blocked),
        (None, None, Some(violation)) => Some(Gate::PolicyViolation(violation.clone())),
        (None, None, None) => None,
    };
    let template_generation = (pe.spec.template_ref.as_ref())
        .and(snapshot.template.as_ref())
        .and_then(|t| t.metadata.generation);
    let revision = Revision {
        class_generation: policy.class_generation,
        template_generation,
    };
    Ok(Plan {
        pe,
        owner,
        namespace,
        rendered,
        policy,
        gate,
        lifetime,
        last_active,
        sleep,
        scm: snapshot.scm.clone(),
        now: snapshot.now,
        revision,
    })
}

/// Finds the class of `pe` and asks it whether `pe`'s namespace may preview its repository,
/// and whether the namespace has room for one more preview.
fn admit(pe: &PreviewEnvironment, snapshot: &Snapshot<'_>) -> Policy {
    let defaults = snapshot.defaults;
    let refused = |class: Option<String>, refusal| Policy {
        class,
        class_generation: None,
        config: defaults.clone(),
        refusal: Some(refusal),
    };
    let classes = match &snapshot.classes {
        Classes::Cluster(classes) => classes,
        Classes::Defaults => {
            return Policy {
                class: None,
                class_generation: None,
                config: defaults.clone(),
                refusal: None,
            };
        }
    };
    let class = match policy::class_of(pe, classes) {
        Ok(class) => class,
        Err(refusal) => return refused(None, refusal),
    };
    let tenant = pe.namespace().unwrap_or_default();
    let config = match policy::admit(pe, &tenant, &snapshot.tenant_labels, &class, defaults) {
        Ok(config) => config,
        Err(refusal) => return refused(Some(class.name_any()), refusal),
    };
    // Previews that exist, running or not, are bounded per namespace: each is cached whole.
    let crowded = limits::over_existing_limit(
        pe,
        snapshot.peers.iter().map(|p| p.as_ref()),
        config.limits.existing_per_namespace,
        &class.name_any(),
    );
    Policy {
        class: Some(class.name_any()),
        class_generation: class.metadata.generation,
        config,
        refusal: crowded.map(|message| Refusal {
            reason: Reason::PolicyViolation,
            message,
        }),
    }
}

/// What `pe` rolls out: its own services and tests, or its template rendered for it into
/// the preview namespace `namespace`, and the class's verdict on it. A template is rendered
/// only for a preview its class admitted. A missing or unrenderable template closes the gate
/// (`Err`); content the class does not allow becomes the policy's refusal.
fn content(
    pe: &PreviewEnvironment,
    snapshot: &Snapshot<'_>,
    namespace: &str,
    policy: &mut Policy,
) -> Result<Rendered, Gate> {
    if policy.refusal.is_some() {
        return Ok(Rendered::inline(&pe.spec));
    }
    let host = (policy.config.ingress.as_ref()).map(|i| format!("{namespace}.{}", i.base_domain));
    let rendered = render(pe, snapshot.template.as_deref(), namespace, host.as_deref())?;
    let checked = match &policy.class {
        Some(class) => policy::check_content(&rendered, &policy.config, class),
        None => policy::check_inline_secrets(&rendered),
    }
    .and_then(|()| flux_served(&rendered, snapshot.flux_installed));
    if let Err(refusal) = checked {
        policy.refusal = Some(refusal);
    }
    Ok(rendered)
}

/// Refuses content Flux delivers where the cluster does not serve Flux's kinds.
fn flux_served(rendered: &Rendered, installed: bool) -> Result<(), Refusal> {
    if installed || !rendered.delivers_through_flux() {
        return Ok(());
    }
    Err(Refusal {
        reason: Reason::FluxNotInstalled,
        message: "the template delivers through Flux (helmReleases, kustomizations), but this \
                  cluster does not serve Flux's HelmRelease, Kustomization and source kinds: \
                  ask the platform team to install Flux and restart the operator"
            .to_string(),
    })
}

/// `pe`'s own services and tests, or `template` (the one it names) rendered for it.
fn render(
    pe: &PreviewEnvironment,
    template: Option<&PreviewTemplate>,
    namespace: &str,
    host: Option<&str>,
) -> Result<Rendered, Gate> {
    let Some(template_ref) = &pe.spec.template_ref else {
        return Ok(Rendered::inline(&pe.spec));
    };
    let tenant = pe.namespace().unwrap_or_default();
    let name = &template_ref.name;
    let Some(template) = template.filter(|t| t.name_any() == *name) else {
        return Err(Gate::Blocked {
            reason: Reason::TemplateNotFound,
            message: format!(
                "PreviewTemplate {name} does not exist in namespace {tenant}; create it there \
                 or fix spec.templateRef.name"
            ),
        });
    };
    let target = Target {
        name: &pe.name_any(),
        namespace,
        template: name,
        host,
    };
    template::render(&pe.spec, target, &template.spec).map_err(|e| Gate::Blocked {
        reason: Reason::TemplateError,
        message: format!("PreviewTemplate {name}: {e}"),
    })
}

/// The last activity of `pe` and whether it sleeps now; a class whose sleep schedule cannot
/// be read refuses its previews, as any invalid class does.
fn sleep_of(
    pe: &PreviewEnvironment,
    rendered: &Rendered,
    policy: &mut Policy,
    now: Timestamp,
) -> (Timestamp, sleep::Decision) {
    let spec = &pe.spec;
    let previous = pe.status.as_ref();
    let wake = pe.annotations().get(WAKE_REQUEST).map(String::as_str);
    let last_active =
        sleep::last_active(previous, pe.metadata.generation, &spec.head_sha, wake, now);
    let asked = [
        spec.sleep.as_ref().map(|s| s.after_idle.as_str()),
        rendered.after_idle.as_deref(),
    ];
    let sleep_policy = match sleep::Policy::new(policy.config.sleep.as_ref(), &asked) {
        Ok(p) => p,
        Err(message) => {
            policy.refusal.get_or_insert(Refusal {
                reason: Reason::PolicyViolation,
                message: format!(
                    "PreviewClass {} is invalid: {message}; the platform team must fix it",
                    policy.class.as_deref().unwrap_or_default()
                ),
            });
            sleep::Policy::default()
        }
    };
    let never = pe.annotations().get(NEVER_SLEEP).map(String::as_str) == Some("true");
    let may_sleep = sleep::may_sleep(
        &sleep_policy,
        previous,
        pe.metadata.generation,
        &spec.head_sha,
        never,
    );
    let decision = sleep::decide(&sleep_policy, last_active, may_sleep, now);
    (last_active, decision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use serde_json::json;

    fn class(spec: serde_json::Value) -> Arc<PreviewClass> {
        let mut c: PreviewClass = serde_json::from_value(json!({
            "apiVersion": "preview.dev/v1alpha1", "kind": "PreviewClass",
            "metadata": {"name": "standard",
                         "annotations": {"preview.dev/is-default-class": "true"}},
            "spec": spec,
        }))
        .expect("class fixture");
        c.metadata.creation_timestamp = Some(fixtures::time(0));
        Arc::new(c)
    }

    fn shop_class() -> Arc<PreviewClass> {
        class(json!({"tenants": [{"namespaces": ["team-shop"], "repositories": ["acme/*"]}]}))
    }

    fn snapshot<'a>(defaults: &'a Config, classes: Vec<Arc<PreviewClass>>) -> Snapshot<'a> {
        Snapshot {
            defaults,
            classes: Classes::Cluster(classes),
            template: None,
            tenant_labels: BTreeMap::new(),
            peers: Vec::new(),
            scm: None,
            flux_installed: true,
            now: fixtures::time(100).0,
        }
    }

    fn with_template(pe: &mut PreviewEnvironment, name: &str) {
        pe.spec.services.clear();
        pe.spec.tests.clear();
        pe.spec.template_ref = serde_json::from_value(json!({"name": name})).ok();
    }

    #[test]
    fn an_admitted_inline_preview_has_an_open_plan() {
        let defaults = Config::default();
        let pe = fixtures::preview("shop-pr-1");
        let plan = plan(&pe, &snapshot(&defaults, vec![shop_class()])).expect("plan");
        assert_eq!(plan.gate, None);
        assert!(plan.could_run());
        assert_eq!(plan.policy.class.as_deref(), Some("standard"));
        assert!(
            plan.namespace.starts_with("pr-shop-pr-1-"),
            "{}",
            plan.namespace
        );
    }

    #[test]
    fn the_class_refuses_before_the_template_is_looked_at() {
        let defaults = Config::default();
        let mut pe = fixtures::preview("shop-pr-1");
        pe.spec.repository = "other/repo".into();
        with_template(&mut pe, "missing");
        let plan = plan(&pe, &snapshot(&defaults, vec![shop_class()])).expect("plan");
        assert!(
            matches!(
                &plan.gate,
                Some(Gate::NotAdmitted {
                    reason: Reason::RepositoryNotAllowed,
                    ..
                })
            ),
            "{:?}",
            plan.gate
        );
        assert!(!plan.could_run());
    }

    #[test]
    fn a_missing_template_blocks_an_admitted_preview() {
        let defaults = Config::default();
        let mut pe = fixtures::preview("shop-pr-1");
        with_template(&mut pe, "shop");
        let plan = plan(&pe, &snapshot(&defaults, vec![shop_class()])).expect("plan");
        assert!(
            matches!(
                &plan.gate,
                Some(Gate::Blocked {
                    reason: Reason::TemplateNotFound,
                    ..
                })
            ),
            "{:?}",
            plan.gate
        );
    }

    #[test]
    fn no_class_is_a_refusal_and_defaults_admit_for_render() {
        let defaults = Config::default();
        let pe = fixtures::preview("shop-pr-1");
        let plan_without = plan(&pe, &snapshot(&defaults, Vec::new())).expect("plan");
        assert!(
            matches!(
                &plan_without.gate,
                Some(Gate::NotAdmitted {
                    reason: Reason::NoPreviewClass,
                    ..
                })
            ),
            "{:?}",
            plan_without.gate
        );
        let mut s = snapshot(&defaults, Vec::new());
        s.classes = Classes::Defaults;
        assert_eq!(plan(&pe, &s).expect("plan").gate, None);
    }

    #[test]
    fn a_ttl_above_the_class_maximum_closes_the_gate() {
        let defaults = Config::default();
        let mut pe = fixtures::preview("shop-pr-1");
        pe.spec.ttl = Some("30d".into());
        let plan = plan(&pe, &snapshot(&defaults, vec![shop_class()])).expect("plan");
        assert!(
            matches!(&plan.gate, Some(Gate::PolicyViolation(m)) if m.contains("30d")),
            "{:?}",
            plan.gate
        );
    }

    #[test]
    fn a_namespace_over_its_limit_of_previews_that_exist_refuses_the_newest() {
        let defaults = Config::default();
        let c = class(json!({
            "tenants": [{"namespaces": ["team-shop"], "repositories": ["acme/*"]}],
            "limits": {"existingPerNamespace": 1},
        }));
        let mut older = fixtures::preview("older");
        older.metadata.creation_timestamp = Some(fixtures::time(1));
        let mut newer = fixtures::preview("newer");
        newer.metadata.creation_timestamp = Some(fixtures::time(2));
        let mut s = snapshot(&defaults, vec![c]);
        s.peers = vec![Arc::new(older.clone()), Arc::new(newer.clone())];
        assert_eq!(plan(&older, &s).expect("plan").gate, None);
        let refused = plan(&newer, &s).expect("plan");
        assert!(
            matches!(&refused.gate, Some(Gate::NotAdmitted { reason: Reason::PolicyViolation, message }) if message.contains("existingPerNamespace")),
            "{:?}",
            refused.gate
        );
    }
}
