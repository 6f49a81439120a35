//! Whether a preview may roll out now: operator policy, then its namespace (free, ours, or
//! someone else's), then the tenant's concurrency queue; a preview let through gets its
//! namespace created here, so every later step works inside a namespace that is ours.

use super::build::{self, Preview};
use super::context::Context;
use super::error::Error;
use super::namespace::{self, NamespaceState};
use super::status::Gate;
use super::teardown::Lifetime;
use crate::api::PreviewEnvironment;

/// The gate of `pe`; when it is open, the preview namespace exists and is ours.
pub async fn admit(
    ctx: &Context,
    pe: &PreviewEnvironment,
    preview: &Preview<'_>,
    lifetime: &Lifetime,
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
        .admit(pe, exists, &s.previews, &s.namespaces)
        .await;
    if !gate.is_open() {
        return Ok(gate);
    }
    let ns = build::namespace(preview, &ctx.config);
    match namespace::ensure(ctx, &preview.owner, exists, ns).await? {
        None => Ok(Gate::Open),
        Some(blocked) => {
            // Not running after all: give the concurrency slot back.
            ctx.queue.give_back(&preview.owner.uid);
            Ok(blocked)
        }
    }
}
