//! Secrets of the operator's namespace that every preview namespace of a class gets a copy of:
//! its image pull secrets and the ingress TLS Secret.
//!
//! The operator reads Secrets only in its own namespace; it never lists or watches Secrets
//! anywhere else, so it cannot see its copies. It keeps what it applied in memory instead
//! (a copy is applied again only when its source changed), which after a restart costs one
//! apply per copy, and deletes copies the class no longer names by that record.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use super::apply::ApplyError;
use super::build::{self, Preview};
use crate::client::gone_is_ok;
use crate::config::Config;
use crate::naming::{APPLIED_HASH, MANAGER};
use crate::sync::lock;

/// The copies this process applied: (preview namespace, name) -> fingerprint.
#[derive(Default)]
pub struct Copies {
    applied: Mutex<HashMap<(String, String), String>>,
}

/// The copies `preview` needs, from the Secrets of `source_namespace`; the message names
/// the first one missing.
pub fn wanted(
    preview: &Preview<'_>,
    config: &Config,
    sources: &Store<Secret>,
    source_namespace: &str,
) -> Result<Vec<Secret>, String> {
    config
        .copied_secrets()
        .iter()
        .map(|name| {
            let source = sources
                .get(&ObjectRef::new(name).within(source_namespace))
                .ok_or_else(|| {
                    format!(
                        "Secret {name} that the PreviewClass names (image pull secret or ingress \
                         TLS) does not exist in namespace {source_namespace}, where the operator \
                         copies it from; the platform team must create it there"
                    )
                })?;
            Ok(build::stamp(build::secret_copy(preview, &source)))
        })
        .collect()
}

impl Copies {
    /// Applies the copies that changed and deletes the ones no longer wanted in `namespace`.
    pub async fn sync(
        &self,
        client: &Client,
        namespace: &str,
        wanted: Vec<Secret>,
    ) -> Result<(), ApplyError> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let keep: BTreeSet<String> = wanted.iter().map(|s| s.name_any()).collect();
        for secret in wanted {
            let name = secret.name_any();
            let hash = secret
                .annotations()
                .get(APPLIED_HASH)
                .cloned()
                .unwrap_or_default();
            let key = (namespace.to_string(), name.clone());
            if lock(&self.applied).get(&key) == Some(&hash) {
                continue;
            }
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
            .map_err(|source| ApplyError::Apply {
                kind: "Secret".into(),
                namespace: namespace.to_string(),
                name: name.clone(),
                source,
            })?;
            lock(&self.applied).insert(key, hash);
        }
        let stale: Vec<String> = lock(&self.applied)
            .keys()
            .filter(|(ns, name)| ns == namespace && !keep.contains(name))
            .map(|(_, name)| name.clone())
            .collect();
        for name in stale {
            gone_is_ok(api.delete(&name, &DeleteParams::default()).await).map_err(|source| {
                ApplyError::Delete {
                    kind: "Secret".into(),
                    namespace: namespace.to_string(),
                    name: name.clone(),
                    source,
                }
            })?;
            lock(&self.applied).remove(&(namespace.to_string(), name));
        }
        Ok(())
    }

    /// Forgets the copies of a namespace that is being deleted.
    pub fn forget(&self, namespace: &str) {
        lock(&self.applied).retain(|(ns, _), _| ns != namespace);
    }
}
