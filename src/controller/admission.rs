//! Whether a preview may roll out now: its PreviewClass (which must bind the preview's
//! namespace to its repository), operator policy, then its namespace (free, ours, or someone
//! else's), then the concurrency queue; a preview let through gets its namespace created
//! here, so every later step works inside a namespace that is ours.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::build::{self, Preview};
use super::context::Context;
use super::error::Error;
use super::limits;
use super::namespace::{self, NamespaceState};
use super::policy::{self, Refusal};
use super::status::Gate;
use super::teardown::Lifetime;
use crate::api::{PreviewEnvironment, Reason};
use crate::config::Config;
use crate::template::{self, Rendered, Target};

/// The policy a preview runs under, or why it is refused one.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The class that serves it, when there is one.
    pub class: Option<String>,
    /// Its class over the operator's defaults (the defaults alone when refused).
    pub config: Config,
    pub refusal: Option<Refusal>,
}

/// What `pe` rolls out: its own services and tests, or its template rendered for it into
/// the preview namespace `namespace`, and the class's verdict on it. A template is rendered
/// only for a preview its class admitted (namespace and repository): a tenant the class does
/// not know costs the operator no rendering. A missing or unrenderable template closes the gate
/// (`Err`); content the class does not allow becomes the policy's refusal.
pub fn content(
    ctx: &Context,
    pe: &PreviewEnvironment,
    namespace: &str,
    policy: &mut Policy,
) -> Result<Rendered, Gate> {
    if policy.refusal.is_some() {
        return Ok(Rendered::inline(&pe.spec));
    }
    let rendered = render(ctx, pe, namespace)?;
    let class = policy.class.as_deref().unwrap_or_default();
    if let Err(refusal) = policy::check_content(&rendered, &policy.config, class) {
        policy.refusal = Some(refusal);
    }
    Ok(rendered)
}

/// `pe`'s own services and tests, or its template rendered for it.
fn render(ctx: &Context, pe: &PreviewEnvironment, namespace: &str) -> Result<Rendered, Gate> {
    let Some(template_ref) = &pe.spec.template_ref else {
        return Ok(Rendered::inline(&pe.spec));
    };
    let tenant = pe.namespace().unwrap_or_default();
    let name = &template_ref.name;
    let Some(template) = ctx
        .stores
        .templates
        .get(&ObjectRef::new(name).within(&tenant))
    else {
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
    };
    template::render(&pe.spec, target, &template.spec).map_err(|e| Gate::Blocked {
        reason: Reason::TemplateError,
        message: format!("PreviewTemplate {name}: {e}"),
    })
}

/// Finds the class of `pe` and asks it whether `pe`'s namespace may preview its repository.
pub fn policy(ctx: &Context, pe: &PreviewEnvironment) -> Policy {
    let refused = |class: Option<String>, refusal| Policy {
        class,
        config: ctx.config.clone(),
        refusal: Some(refusal),
    };
    let class = match policy::class_of(pe, &ctx.stores.classes.state()) {
        Ok(class) => class,
        Err(refusal) => return refused(None, refusal),
    };
    let tenant = pe.namespace().unwrap_or_default();
    let labels = if policy::needs_namespace_labels(&class) {
        tenant_labels(ctx, &tenant)
    } else {
        BTreeMap::new()
    };
    let config = match policy::admit(pe, &tenant, &labels, &class, &ctx.config) {
        Ok(config) => config,
        Err(refusal) => return refused(Some(class.name_any()), refusal),
    };
    // Previews that exist, running or not, are bounded per namespace: each is cached whole.
    let peers = ctx.stores.previews.state();
    let crowded = limits::over_existing_limit(
        pe,
        peers.iter().map(|p| p.as_ref()),
        config.limits.existing_per_namespace,
        &class.name_any(),
    );
    Policy {
        class: Some(class.name_any()),
        config,
        refusal: crowded.map(|message| Refusal {
            reason: Reason::PolicyViolation,
            message,
        }),
    }
}

/// The labels of a tenant namespace, for classes that select tenants by label (from the
/// cache of every namespace's labels: no read per reconcile).
fn tenant_labels(ctx: &Context, tenant: &str) -> BTreeMap<String, String> {
    ctx.stores
        .tenants
        .get(&ObjectRef::new(tenant))
        .map(|ns| ns.labels().clone())
        .unwrap_or_default()
}

/// The gate of `pe`, admitted by its class; when it is open, the preview namespace exists and
/// is ours.
pub async fn admit(
    ctx: &Context,
    pe: &PreviewEnvironment,
    preview: &Preview<'_>,
    lifetime: &Lifetime,
    config: &Config,
) -> Result<Gate, Error> {
    if let Some(message) = &lifetime.violation {
        return Ok(Gate::PolicyViolation(message.clone()));
    }
    let exists = match namespace::state(ctx, &preview.namespace, &preview.owner).await? {
        NamespaceState::Usable { exists } => exists,
        NamespaceState::Blocked(gate) => return Ok(gate),
    };
    let s = &ctx.stores;
    let gate = ctx
        .queue
        .admit(pe, exists, &config.limits, &s.previews, &s.namespaces)
        .await;
    if !gate.is_open() {
        return Ok(gate);
    }
    let ns = build::namespace(preview, config);
    match namespace::ensure(ctx, &preview.owner, exists, ns).await? {
        None => Ok(Gate::Open),
        Some(blocked) => {
            // Not running after all: give the concurrency slot back.
            ctx.queue.give_back(&preview.owner.uid);
            Ok(blocked)
        }
    }
}
