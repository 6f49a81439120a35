//! Applies the copies a preview namespace should hold (`Wanted`, decided by `secrets`).
//!
//! The operator never lists or watches Secrets in preview namespaces, so it cannot see its
//! copies. It keeps what it applied in memory instead (a copy is applied again only when its
//! source changed), which after a restart costs one apply per copy, and deletes copies no
//! longer wanted by that record.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use super::apply::{ApplyError, Child};
use crate::client::gone_is_ok;
use crate::naming::{APPLIED_HASH, MANAGER};
use crate::sync::lock;

/// Every copy one preview namespace should hold.
#[derive(Clone, Debug, Default)]
pub struct Wanted {
    pub secrets: Vec<Secret>,
    pub config_maps: Vec<ConfigMap>,
    /// Secrets the class names whose source does not exist (yet): a copy made earlier stays
    /// as it is, so what runs keeps running.
    pub missing: Vec<String>,
}

/// (preview namespace, kind, name) of a copy.
type Key = (String, String, String);

/// The copies this process applied, with their fingerprints.
#[derive(Default)]
pub struct Copies {
    applied: Mutex<HashMap<Key, String>>,
}

impl Copies {
    /// Applies the copies that changed and deletes the ones no longer wanted in `namespace`.
    pub async fn sync(
        &self,
        client: &Client,
        namespace: &str,
        wanted: Wanted,
    ) -> Result<(), ApplyError> {
        let Wanted {
            secrets,
            config_maps,
            missing,
        } = wanted;
        self.sync_kind(client, namespace, secrets, &missing).await?;
        self.sync_kind(client, namespace, config_maps, &[]).await
    }

    async fn sync_kind<K: Child>(
        &self,
        client: &Client,
        namespace: &str,
        wanted: Vec<K>,
        kept: &[String],
    ) -> Result<(), ApplyError> {
        let kind = K::kind(&()).into_owned();
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
        let mut keep: BTreeSet<String> = wanted.iter().map(|s| s.name_any()).collect();
        keep.extend(kept.iter().cloned());
        for object in wanted {
            let name = object.name_any();
            let hash = object
                .annotations()
                .get(APPLIED_HASH)
                .cloned()
                .unwrap_or_default();
            let key = (namespace.to_string(), kind.clone(), name.clone());
            if lock(&self.applied).get(&key) == Some(&hash) {
                continue;
            }
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
            .map_err(|source| ApplyError::Apply {
                kind: kind.clone(),
                namespace: namespace.to_string(),
                name: name.clone(),
                source,
            })?;
            lock(&self.applied).insert(key, hash);
        }
        let stale: Vec<String> = lock(&self.applied)
            .keys()
            .filter(|(ns, k, name)| ns == namespace && *k == kind && !keep.contains(name))
            .map(|(_, _, name)| name.clone())
            .collect();
        for name in stale {
            gone_is_ok(api.delete(&name, &DeleteParams::default()).await).map_err(|source| {
                ApplyError::Delete {
                    kind: kind.clone(),
                    namespace: namespace.to_string(),
                    name: name.clone(),
                    source,
                }
            })?;
            lock(&self.applied).remove(&(namespace.to_string(), kind.clone(), name));
        }
        Ok(())
    }

    /// Forgets the copies of a namespace that is being deleted.
    pub fn forget(&self, namespace: &str) {
        lock(&self.applied).retain(|(ns, _, _), _| ns != namespace);
    }
}
