//! What the operator does to what Flux delivered, beyond applying Flux's objects: a sleeping
//! preview's charts and kustomizations scaled to zero and back, and Flux's objects suspended
//! before their namespace goes.
//!
//! Sleep builds Flux's objects suspended (`build::flux`); only once the caches show them
//! suspended, so Flux puts nothing back, are the workloads Flux applied scaled to zero,
//! through the scale subresource, which leaves every other field as Flux left it. What they
//! ran is kept on the preview namespace (the operator's own object; Flux's workloads are not
//! ours to annotate) under a field manager of its own, and restored when the preview wakes.
//! Teardown suspends the releases first, so helm-controller and kustomize-controller let go
//! of them without an uninstall or a prune that could hold the namespace's deletion.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use serde_json::json;

use super::build::Preview;
use super::children::FluxStores;
use super::context::Context;
use super::error::Error;
use super::slim::Keeps;
use crate::client::gone_is_ok;
use crate::flux::{HelmRelease, Kustomization};
use crate::naming::{MANAGED_BY, MANAGER, REPLICAS_BEFORE_SLEEP};

/// The field manager of that record, so the namespace's own apply neither keeps nor drops it.
const SLEEP_MANAGER: &str = "preview-operator-sleep";

/// Asleep: Flux's workloads at zero once Flux is suspended. Awake after a sleep: their
/// replicas back, and the record gone.
pub async fn settle(ctx: &Context, preview: &Preview<'_>) -> Result<(), Error> {
    if !preview.delivers_through_flux() {
        return Ok(());
    }
    let ns = preview.namespace.as_str();
    let recorded = record(ctx, ns);
    if !preview.asleep {
        let Some(record) = recorded else {
            return Ok(());
        };
        for (workload, replicas) in &record {
            scale(&ctx.client, ns, workload, *replicas).await?;
        }
        return write_record(&ctx.client, ns, None).await;
    }
    if !suspended(&ctx.stores.flux, preview) {
        // The suspend is applied; its watch event brings the preview back here.
        return Ok(());
    }
    let running = running_workloads(&ctx.client, ns).await?;
    if running.is_empty() {
        return Ok(());
    }
    // The record first: a scale that succeeds without it could never be undone.
    let mut record = recorded.unwrap_or_default();
    for (workload, replicas) in &running {
        record.entry(workload.clone()).or_insert(*replicas);
    }
    write_record(&ctx.client, ns, Some(&record)).await?;
    for (workload, _) in &running {
        scale(&ctx.client, ns, workload, 0).await?;
    }
    Ok(())
}

/// The record on the cached preview namespace, if any (unreadable counts as none: nothing to
/// restore is safer than a guess).
fn record(ctx: &Context, ns: &str) -> Option<BTreeMap<String, i32>> {
    let namespace = ctx.stores.namespaces.get(&ObjectRef::new(ns))?;
    let text = namespace.kept(REPLICAS_BEFORE_SLEEP)?;
    serde_json::from_str(text).ok()
}

/// Whether the cache shows every HelmRelease and Kustomization of the preview suspended.
fn suspended(flux: &FluxStores, preview: &Preview<'_>) -> bool {
    let (ns, uid) = (preview.namespace.as_str(), preview.owner.uid.as_str());
    let releases = super::apply::owned(&flux.helm_releases, ns, uid);
    let kustomizations = super::apply::owned(&flux.kustomizations, ns, uid);
    releases.len() == preview.helm_releases.len()
        && kustomizations.len() == preview.kustomizations.len()
        && releases.iter().all(|r| r.spec.suspend == Some(true))
        && kustomizations.iter().all(|k| k.spec.suspend == Some(true))
}

/// The Deployments and StatefulSets of `ns` that the operator did not make, with the replicas
/// they ask for, where that is more than zero.
async fn running_workloads(client: &Client, ns: &str) -> Result<Vec<(String, i32)>, Error> {
    let delivered = ListParams::default().labels(&format!("{MANAGED_BY}!={MANAGER}"));
    let read = |what: &str| {
        let what = format!("{what} Flux delivered in {ns}");
        move |source| Error::Read { what, source }
    };
    let deployments = (Api::<Deployment>::namespaced(client.clone(), ns).list(&delivered))
        .await
        .map_err(read("the Deployments"))?;
    let stateful_sets = (Api::<StatefulSet>::namespaced(client.clone(), ns).list(&delivered))
        .await
        .map_err(read("the StatefulSets"))?;
    let deployments = (deployments.items.iter()).map(|d| {
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        (format!("Deployment/{}", d.name_any()), replicas)
    });
    let stateful_sets = (stateful_sets.items.iter()).map(|s| {
        let replicas = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        (format!("StatefulSet/{}", s.name_any()), replicas)
    });
    Ok(deployments
        .chain(stateful_sets)
        .filter(|(_, replicas)| *replicas > 0)
        .collect())
}

/// Sets the replicas of `Kind/name` through its scale subresource; one that is gone is fine.
async fn scale(client: &Client, ns: &str, workload: &str, replicas: i32) -> Result<(), Error> {
    let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    let params = PatchParams {
        field_manager: Some(MANAGER.to_string()),
        ..PatchParams::default()
    };
    let result = match workload.split_once('/') {
        Some(("Deployment", name)) => Api::<Deployment>::namespaced(client.clone(), ns)
            .patch_scale(name, &params, &patch)
            .await
            .map(drop),
        Some(("StatefulSet", name)) => Api::<StatefulSet>::namespaced(client.clone(), ns)
            .patch_scale(name, &params, &patch)
            .await
            .map(drop),
        // A record the operator did not write: nothing to scale.
        _ => Ok(()),
    };
    gone_is_ok(result).map(drop).map_err(|source| Error::Scale {
        name: format!("{ns}/{workload}"),
        source,
    })
}

/// Writes (or, with `None`, removes) the record on the preview namespace.
async fn write_record(
    client: &Client,
    ns: &str,
    record: Option<&BTreeMap<String, i32>>,
) -> Result<(), Error> {
    let annotations = match record {
        Some(record) => {
            json!({REPLICAS_BEFORE_SLEEP: serde_json::to_string(record).unwrap_or_default()})
        }
        None => json!({}),
    };
    let namespace = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns, "annotations": annotations},
    });
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::apply(SLEEP_MANAGER).force(),
            &Patch::Apply(namespace),
        )
        .await
        .map(drop)
        .map_err(|source| Error::Scale {
            name: format!("namespace {ns}"),
            source,
        })
}

/// Suspends every HelmRelease and Kustomization cached in `ns` that is not yet: Flux then
/// drops its finalizers without an uninstall or a prune when the namespace goes.
pub async fn suspend_all(client: &Client, flux: &FluxStores, ns: &str) -> Result<(), kube::Error> {
    if !flux.installed {
        return Ok(());
    }
    let patch = Patch::Merge(json!({"spec": {"suspend": true}}));
    let params = PatchParams {
        field_manager: Some(MANAGER.to_string()),
        ..PatchParams::default()
    };
    let releases = (flux.helm_releases.state().into_iter())
        .filter(|r| r.namespace().as_deref() == Some(ns) && r.spec.suspend != Some(true));
    for release in releases {
        let api = Api::<HelmRelease>::namespaced(client.clone(), ns);
        gone_is_ok(api.patch(&release.name_any(), &params, &patch).await)?;
    }
    let kustomizations = (flux.kustomizations.state().into_iter())
        .filter(|k| k.namespace().as_deref() == Some(ns) && k.spec.suspend != Some(true));
    for kustomization in kustomizations {
        let api = Api::<Kustomization>::namespaced(client.clone(), ns);
        gone_is_ok(api.patch(&kustomization.name_any(), &params, &patch).await)?;
    }
    Ok(())
}
