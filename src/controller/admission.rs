//! Whether a preview its plan lets through may roll out now: its namespace (free, ours, or
//! someone else's), then the concurrency queue; a preview let through gets its namespace
//! created here, so every later step works inside a namespace that is ours. Also the
//! snapshot of the caches that the plan (`plan.rs`, pure) decides from.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::build::{self, Preview};
use super::context::Context;
use super::error::Error;
use super::namespace::{self, NamespaceState};
use super::plan::{Classes, Snapshot};
use super::status::Gate;
use crate::api::PreviewEnvironment;
use crate::config::Config;

/// A snapshot of what planning `pe` reads, from the caches: no API call.
pub fn snapshot<'a>(ctx: &'a Context, pe: &PreviewEnvironment) -> Snapshot<'a> {
    let tenant = pe.namespace().unwrap_or_default();
    let template = (pe.spec.template_ref.as_ref()).and_then(|t| {
        ctx.stores
            .templates
            .get(&ObjectRef::new(&t.name).within(&tenant))
    });
    // The labels of the tenant namespace, for classes that select tenants by label (from the
    // cache of every namespace's labels).
    let tenant_labels = ctx
        .stores
        .tenants
        .get(&ObjectRef::new(&tenant))
        .map(|ns| ns.labels().clone())
        .unwrap_or_default();
    Snapshot {
        defaults: &ctx.config,
        classes: Classes::Cluster(ctx.stores.classes.state()),
        template,
        tenant_labels,
        peers: ctx.stores.previews.state(),
        scm: ctx.resync.of(pe.spec.provider(), &pe.spec.repository),
        flux_installed: ctx.stores.flux.installed,
        now: Timestamp::now(),
    }
}

/// The gate of `pe`, which its plan lets through: its namespace (free, ours, or someone
/// else's), then the concurrency queue; when it is open, the preview namespace exists and is
/// ours.
pub async fn admit(
    ctx: &Context,
    pe: &PreviewEnvironment,
    preview: &Preview<'_>,
    config: &Config,
) -> Result<Gate, Error> {
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
