//! The PreviewClass's own status, for the platform team: whether every Secret it names exists
//! (`Ready`, with an Event on the class when that turns false), the tenants it binds and how
//! many previews it serves, so `kubectl get pclass` answers "is my class healthy, and who uses
//! it" without reading every preview.
//!
//! A background task of the leader computes it from the caches every [`INTERVAL`] and writes a
//! class's status only when it changed: a fleet of previews coming and going costs a class one
//! write per interval at most, not one per preview.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::debug;

use super::context::Context;
use super::events::{self, Kind};
use super::policy;
use crate::api::class::{PreviewClass, PreviewClassStatus};
use crate::api::{PreviewEnvironment, Reason};
use crate::naming::MANAGER;

/// How often class statuses are brought up to date.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Tenant namespaces a class's status names before it says how many more.
const TENANTS_SHOWN: usize = 3;

/// Keeps the status of every class up to date while this process leads; runs until aborted.
pub async fn run(ctx: Arc<Context>) {
    // The first statuses go out as soon as the caches are filled, not an interval later.
    let mut synced = ctx.synced.clone();
    if synced.wait_for(|s| *s).await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !*ctx.leader.borrow() {
            continue;
        }
        let classes = ctx.stores.classes.state();
        let previews = ctx.stores.previews.state();
        for class in &classes {
            let wanted = status_of(
                class,
                &classes,
                &previews,
                |name| exists(&ctx.stores.platform_secrets, &ctx.platform_namespace, name),
                &ctx.platform_namespace,
                Timestamp::now(),
            );
            write(&ctx, class, wanted).await;
        }
    }
}

fn exists(secrets: &Store<Secret>, namespace: &str, name: &str) -> bool {
    secrets
        .get(&ObjectRef::new(name).within(namespace))
        .is_some()
}

/// Writes `wanted` when it says something else than the class shows; announces a class that
/// stopped being ready.
async fn write(ctx: &Context, class: &PreviewClass, wanted: PreviewClassStatus) {
    let current = class.status.as_ref();
    if current.is_some_and(|c| same(c, &wanted)) {
        return;
    }
    let was_ready = current.is_none_or(|c| ready(c) != Some(false));
    if was_ready && ready(&wanted) == Some(false) {
        announce(ctx, class, &wanted);
    }
    let api: Api<PreviewClass> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({ "status": wanted });
    let params = PatchParams::apply(MANAGER).force();
    let patch = serde_json::json!({
        "apiVersion": "preview.dev/v1alpha1",
        "kind": "PreviewClass",
        "status": patch["status"],
    });
    if let Err(error) = api
        .patch_status(&class.name_any(), &params, &Patch::Apply(&patch))
        .await
    {
        // The next interval tries again.
        debug!(%error, class = %class.name_any(), "failed to write a class status");
    }
}

/// Whether two statuses say the same, apart from when their conditions last changed.
fn same(a: &PreviewClassStatus, b: &PreviewClassStatus) -> bool {
    let strip = |s: &PreviewClassStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

fn ready(status: &PreviewClassStatus) -> Option<bool> {
    (status.conditions.iter())
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status == "True")
}

/// An Event on the class: the platform team's `kubectl describe pclass` shows it.
fn announce(ctx: &Context, class: &PreviewClass, status: &PreviewClassStatus) {
    let message = (status.conditions.iter())
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    ctx.events.send(events::Note {
        kind: Kind::Warning,
        reason: Reason::ClassNotReady.into(),
        note: message,
        regarding: ObjectReference {
            api_version: Some(PreviewClass::api_version(&()).into_owned()),
            kind: Some(PreviewClass::kind(&()).into_owned()),
            name: class.metadata.name.clone(),
            uid: class.metadata.uid.clone(),
            // Events of cluster-scoped objects live in `default`, where kubectl looks.
            namespace: None,
            ..ObjectReference::default()
        },
    });
}

/// PURE: the status `class` should show, among `classes`, for `previews`; `exists` says
/// whether a Secret of the platform Secrets namespace `platform` exists.
pub fn status_of(
    class: &PreviewClass,
    classes: &[Arc<PreviewClass>],
    previews: &[Arc<PreviewEnvironment>],
    exists: impl Fn(&str) -> bool,
    platform: &str,
    now: Timestamp,
) -> PreviewClassStatus {
    let name = class.name_any();
    let served = (previews.iter())
        .filter(|pe| pe.metadata.deletion_timestamp.is_none())
        .filter(|pe| policy::class_of(pe, classes).is_ok_and(|c| c.name_any() == name))
        .count();
    let spec = &class.spec;
    let named = (spec.image_pull_secrets.iter().map(|s| s.name.clone())).chain(
        spec.ingress
            .as_ref()
            .and_then(|i| i.tls_secret_name.clone()),
    );
    let missing: Vec<String> = named.filter(|s| !exists(s)).collect();
    let (status, reason, message) = if missing.is_empty() {
        (
            "True",
            Reason::Ready,
            "every Secret the class names exists".to_string(),
        )
    } else {
        (
            "False",
            Reason::ClassNotReady,
            format!(
                "Secret {} that the class names does not exist in namespace {platform}; its \
                 previews keep running without it (UpToDate=False ClassNotReady) until it is \
                 created there",
                missing.join(", ")
            ),
        )
    };
    let since = (class.status.as_ref())
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == status)
        .map_or_else(|| Time(now), |c| c.last_transition_time.clone());
    PreviewClassStatus {
        observed_generation: class.metadata.generation,
        previews: i64::try_from(served).unwrap_or(i64::MAX),
        tenants: tenants(class),
        conditions: vec![Condition {
            type_: "Ready".to_string(),
            status: status.to_string(),
            reason: reason.as_str().to_string(),
            message,
            observed_generation: class.metadata.generation,
            last_transition_time: since,
        }],
    }
}

/// The tenants a class binds, for its printer column: the first few namespaces (and
/// selectors), then how many more.
fn tenants(class: &PreviewClass) -> String {
    let mut names: Vec<String> = Vec::new();
    for tenant in &class.spec.tenants {
        names.extend(tenant.namespaces.iter().cloned());
        if tenant.namespace_selector.is_some() {
            names.push("(selector)".to_string());
        }
    }
    if names.is_empty() {
        return "(none)".to_string();
    }
    let more = names.len().saturating_sub(TENANTS_SHOWN);
    names.truncate(TENANTS_SHOWN);
    let shown = names.join(",");
    if more > 0 {
        format!("{shown} +{more}")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests;
