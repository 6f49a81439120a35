//! What copies every preview namespace should hold: the Secrets of the platform Secrets
//! namespace that its class names (image pull secrets, the ingress TLS Secret), and the Secrets
//! and ConfigMaps of the team's namespace that its template declares (read through `sources`).
//! `copies` applies them.

use std::borrow::Cow;
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::build::{self, Preview};
use super::context::Context;
pub use super::copies::Wanted;
use super::error::Error;
use super::sources::Read;
use super::status::Gate;
use crate::api::Reason;
use crate::config::Config;
use crate::template::Rendered;

/// What a preview namespace should hold of copies, or why it cannot have them yet.
pub enum Copied {
    Ready(Wanted),
    /// A source cannot be read (the message says what to do).
    Closed(Gate),
    /// The team namespace's watches have not listed yet; their first list wakes the preview.
    Waiting,
}

/// The copies `preview` needs: the class's Secrets from the platform Secrets namespace, and the
/// Secrets and ConfigMaps its template declares from the preview's own namespace.
pub async fn wanted(
    ctx: &Context,
    preview: &Preview<'_>,
    rendered: &Rendered,
    config: &Config,
) -> Result<Copied, Error> {
    // A Secret the class names but the platform team has not created yet is left out (and
    // said on the class and as `UpToDate=False`), never a failure of every preview.
    let (platform, missing) = platform(
        preview,
        config,
        &ctx.stores.platform_secrets,
        &ctx.platform_namespace,
    );
    let read = ctx
        .sources
        .read(
            &preview.owner.namespace,
            &rendered.secrets,
            &rendered.config_maps,
        )
        .await
        .map_err(|source| Error::Read {
            what: format!(
                "the Secrets and ConfigMaps of namespace {}",
                preview.owner.namespace
            ),
            source,
        })?;
    let blocked = |reason, message| Copied::Closed(Gate::Blocked { reason, message });
    Ok(match read {
        Read::Waiting => Copied::Waiting,
        Read::Unreadable(message) => blocked(Reason::SecretNotReadable, message),
        Read::Ready {
            secrets,
            config_maps,
        } => {
            let platform = Wanted {
                secrets: platform,
                config_maps: Vec::new(),
                missing,
            };
            match with_template_copies(preview, platform, &secrets, &config_maps) {
                Ok(wanted) => Copied::Ready(wanted),
                Err(message) => blocked(Reason::TemplateError, message),
            }
        }
    })
}

/// Adds the copies of the template's sources to `platform`'s; a template Secret may not take
/// the name of one the class copies (the class's would be overwritten by the team's).
pub fn with_template_copies(
    preview: &Preview<'_>,
    mut wanted: Wanted,
    secrets: &[std::sync::Arc<Secret>],
    config_maps: &[std::sync::Arc<ConfigMap>],
) -> Result<Wanted, String> {
    let taken: BTreeSet<String> = wanted.secrets.iter().map(|s| s.name_any()).collect();
    for secret in secrets {
        let name = secret.name_any();
        if taken.contains(&name) {
            return Err(format!(
                "the PreviewTemplate declares Secret {name}, which has the name of a Secret the \
                 PreviewClass copies into every preview (image pull or TLS secret); rename yours"
            ));
        }
        wanted
            .secrets
            .push(build::stamp(build::secret_copy(preview, secret)));
    }
    wanted.config_maps.extend(
        config_maps
            .iter()
            .map(|m| build::stamp(build::config_map_copy(preview, m))),
    );
    Ok(wanted)
}

/// The copies `preview` needs, from the Secrets of `source_namespace`, and the names of the
/// ones that do not exist there.
pub fn platform(
    preview: &Preview<'_>,
    config: &Config,
    sources: &Store<Secret>,
    source_namespace: &str,
) -> (Vec<Secret>, Vec<String>) {
    let mut missing = Vec::new();
    let copies = config
        .copied_secrets()
        .into_iter()
        .filter_map(|name| {
            let Some(source) = sources.get(&ObjectRef::new(&name).within(source_namespace)) else {
                missing.push(name);
                return None;
            };
            Some(build::stamp(build::secret_copy(preview, &source)))
        })
        .collect();
    (copies, missing)
}

/// `config` without the image pull secrets that are `missing`: pods keep what they run
/// instead of rolling to name a Secret that is not there.
pub fn without_missing<'c>(config: &'c Config, missing: &[String]) -> Cow<'c, Config> {
    if !config
        .image_pull_secrets
        .iter()
        .any(|s| missing.contains(s))
    {
        return Cow::Borrowed(config);
    }
    let mut config = config.clone();
    config.image_pull_secrets.retain(|s| !missing.contains(s));
    Cow::Owned(config)
}
