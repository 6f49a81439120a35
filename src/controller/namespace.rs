//! The preview namespace: whether its name is free, ours, or someone else's, and creating it
//! without ever adopting a namespace the operator does not own.

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use tracing::info;

use super::apply::{ApplyError, cached_hash, hand_over};
use super::build;
use super::cached::CachedMeta;
use super::context::Context;
use super::error::Error;
use super::slim::{Keeps, created};
use super::status::Gate;
use super::teardown;
use crate::client::{create_params, exists_is_ok};
use crate::naming::{self, APPLIED_HASH, MANAGER, OWNER_UID, Owner};

/// Where the preview namespace stands before anything is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceState {
    /// Ours and alive (or not there yet and free to create).
    Usable { exists: bool },
    /// Blocks the rollout, with the reason.
    Blocked(Gate),
}

/// What the cache says about the preview namespace `name`.
pub async fn state(ctx: &Context, name: &str, owner: &Owner) -> Result<NamespaceState, Error> {
    // Not in the cache of managed namespaces: free, or there without our labels. Creating it
    // tells which (see ensure) without a read before every new preview.
    match ctx.stores.namespaces.get(&ObjectRef::new(name)) {
        Some(ns) => settle(ctx, name, ns.as_ref(), owner).await,
        None => Ok(NamespaceState::Usable { exists: false }),
    }
}

/// Creates the preview namespace, or applies it when it exists. `Some(gate)` when it turns
/// out to be there already and not usable (foreign, or an old one being deleted).
pub async fn ensure(
    ctx: &Context,
    owner: &Owner,
    exists: bool,
    ns: Namespace,
) -> Result<Option<Gate>, Error> {
    if exists {
        apply(ctx, ns).await?;
        return Ok(None);
    }
    let name = ns.name_any();
    let api = Api::<Namespace>::all(ctx.client.clone());
    // Create, never apply, a namespace we have not seen: apply would adopt a foreign one;
    // create fails instead.
    let created = exists_is_ok(
        api.create(&create_params(), &build::stamp(ns.clone()))
            .await,
    )
    .map_err(|source| Error::CreateNamespace {
        name: name.clone(),
        source,
    })?;
    if created.is_some() {
        info!(namespace = %name, "created preview namespace");
        return Ok(None);
    }
    let live = api
        .get_metadata_opt(&name)
        .await
        .map_err(|source| Error::Read {
            what: format!("namespace {name}"),
            source,
        })?;
    let Some(live) = live else {
        // Gone again in between: the next attempt creates it.
        return Err(Error::Incomplete(
            name,
            "namespace (it vanished after a conflict)",
        ));
    };
    // Read as the cache would hold it (its maps, as they are), so one reader serves both.
    let live = CachedMeta::<Namespace>::from(live.metadata);
    match settle(ctx, &name, &live, owner).await? {
        // Ours; the cache had not caught up with an earlier create.
        NamespaceState::Usable { .. } => {
            apply(ctx, ns).await?;
            Ok(None)
        }
        NamespaceState::Blocked(gate) => Ok(Some(gate)),
    }
}

/// PURE: whom an existing namespace of the preview's name belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// This preview; `terminating` while it is being deleted.
    This { terminating: bool },
    /// An earlier PreviewEnvironment of the same name (its UID), whose owner is gone.
    Earlier { uid: String, terminating: bool },
    /// Not the operator's.
    Foreign,
}

pub fn holder(ns: &CachedMeta<Namespace>, owner: &Owner) -> Holder {
    let terminating = ns.metadata.deletion_timestamp.is_some();
    let managed = ns.kept(naming::MANAGED_BY) == Some(MANAGER);
    match ns.kept(OWNER_UID) {
        Some(uid) if uid == owner.uid => Holder::This { terminating },
        // Two live previews cannot share namespace/name, so the owner of this one is gone.
        Some(uid) if managed => Holder::Earlier {
            uid: uid.to_string(),
            terminating,
        },
        _ => Holder::Foreign,
    }
}

/// Whether an existing namespace of the preview's name can be used; an earlier preview's
/// orphan is deleted on the way, but never a namespace whose owner lives (whatever made the
/// names meet, the other preview keeps its namespace).
async fn settle(
    ctx: &Context,
    name: &str,
    ns: &CachedMeta<Namespace>,
    owner: &Owner,
) -> Result<NamespaceState, Error> {
    let client = &ctx.client;
    let blocked = |gate| Ok(NamespaceState::Blocked(gate));
    let foreign = || {
        Gate::NamespaceConflict(format!(
            "namespace {name} already exists and is not managed by this preview; the operator \
             never adopts or changes it. Delete that namespace or rename the PreviewEnvironment"
        ))
    };
    match holder(ns, owner) {
        Holder::This { terminating: false } => Ok(NamespaceState::Usable { exists: true }),
        Holder::This { terminating: true } => blocked(Gate::NamespaceTerminating(format!(
            "namespace {name} is being deleted; the preview is re-created once it is gone"
        ))),
        Holder::Earlier { uid, terminating } => {
            let alive = teardown::owner_exists(client, &ctx.stores.previews, ns)
                .await
                .map_err(|source| Error::Read {
                    what: format!("the owner of namespace {name}"),
                    source,
                })?;
            if alive {
                return blocked(foreign());
            }
            if !terminating {
                teardown::delete_owned_namespace(client, name, &uid)
                    .await
                    .map_err(|source| Error::DeleteNamespace {
                        name: name.to_string(),
                        source,
                    })?;
            }
            blocked(Gate::NamespaceTerminating(format!(
                "namespace {name} of an earlier preview with this name is being deleted"
            )))
        }
        Holder::Foreign => blocked(foreign()),
    }
}

/// Applies our own namespace, unless the cache shows it is in place.
async fn apply(ctx: &Context, ns: Namespace) -> Result<(), Error> {
    let ns = build::stamp(ns);
    let name = ns.name_any();
    let want = ns.annotations().get(APPLIED_HASH).cloned();
    let cached = ctx.stores.namespaces.get(&ObjectRef::new(&name));
    if want.is_some() && cached_hash(cached.as_deref()) == want {
        return Ok(());
    }
    let api = Api::<Namespace>::all(ctx.client.clone());
    // Created, never applied yet: the apply takes over the create's fields first.
    let needs_hand_over = cached.is_some_and(|c| created(c.as_ref()));
    let write = async {
        if needs_hand_over {
            hand_over(&api, &name).await?;
        }
        let params = PatchParams::apply(MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(&ns)).await
    };
    write.await.map_err(|source| {
        Error::from(ApplyError::Apply {
            kind: "Namespace".into(),
            namespace: String::new(),
            name: name.clone(),
            source,
        })
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn owner() -> Owner {
        Owner {
            namespace: "team-shop".into(),
            name: "shop-pr-1".into(),
            uid: "uid-1".into(),
            repository: "acme/shop".into(),
            pull_request: 1,
        }
    }

    fn meta(labels: &[(&str, &str)], deleting: bool) -> CachedMeta<Namespace> {
        CachedMeta::from(ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            deletion_timestamp: deleting.then(|| crate::fixtures::time(1)),
            ..ObjectMeta::default()
        })
    }

    #[test]
    fn only_the_owner_uid_makes_a_namespace_ours() {
        let managed = (naming::MANAGED_BY, MANAGER);
        assert_eq!(
            holder(&meta(&[managed, (OWNER_UID, "uid-1")], false), &owner()),
            Holder::This { terminating: false }
        );
        assert_eq!(
            holder(&meta(&[managed, (OWNER_UID, "uid-1")], true), &owner()),
            Holder::This { terminating: true }
        );
        assert_eq!(
            holder(&meta(&[managed, (OWNER_UID, "uid-0")], false), &owner()),
            Holder::Earlier {
                uid: "uid-0".into(),
                terminating: false
            }
        );
        assert_eq!(
            holder(&meta(&[(OWNER_UID, "uid-0")], false), &owner()),
            Holder::Foreign,
            "an owner label without our managed-by label is not ours"
        );
        assert_eq!(holder(&meta(&[], false), &owner()), Holder::Foreign);
    }
}
