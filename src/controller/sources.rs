//! The Secrets and ConfigMaps that teams' templates declare, read in the team's namespace and
//! only where the team opted in (a RoleBinding to the chart's source-reader ClusterRole): the
//! operator never reads or watches Secrets cluster-wide.
//!
//! Per team namespace that has a template declaring sources, a metadata-only watch of its
//! Secrets and of its ConfigMaps says which exist and when one changes (a rotation wakes the
//! previews whose template declares it); the data of a declared object is fetched once per
//! resourceVersion and shared by every preview that copies it. A denied watch is how a
//! missing RoleBinding shows: the previews say `SecretNotReadable` with the command to fix it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use crate::api::PreviewEnvironment;
use crate::api::template::PreviewTemplate;
use crate::sync::lock;

/// Who the operator is, for the command that lets it read a namespace.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The operator's namespace.
    pub namespace: String,
    /// Its ServiceAccount.
    pub service_account: String,
    /// The chart's ClusterRole that reads Secrets and ConfigMaps.
    pub reader_role: String,
}

impl Identity {
    /// The one command a team runs to let the operator read its namespace.
    pub fn grant_command(&self, namespace: &str) -> String {
        format!(
            "kubectl create rolebinding preview-operator-sources --namespace {namespace} \
             --clusterrole={} --serviceaccount={}:{}",
            self.reader_role, self.namespace, self.service_account
        )
    }
}

/// What a preview's template declares, as read for it.
#[derive(Debug)]
pub enum Read {
    /// Every declared object, with its data.
    Ready {
        secrets: Vec<Arc<Secret>>,
        config_maps: Vec<Arc<ConfigMap>>,
    },
    /// The namespace's watch has not listed yet; its first list wakes the preview.
    Waiting,
    /// The operator may not read the namespace, or an object is missing: the message says
    /// what to do.
    Unreadable(String),
}

/// Where one namespace's watch of one kind is.
#[derive(Clone, Debug, Default)]
enum Progress {
    #[default]
    Starting,
    Listed,
    Denied(String),
}

/// Where a kind's watch is, and what it listed so far.
type Listing<K> = (Progress, Store<PartialObjectMeta<K>>);

/// One kind's metadata watch in one namespace.
struct KindWatch<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<PartialObjectMeta<K>>,
    progress: Arc<Mutex<Progress>>,
    task: AbortHandle,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Drop for KindWatch<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct NamespaceWatch {
    secrets: KindWatch<Secret>,
    config_maps: KindWatch<ConfigMap>,
}

/// The objects whose data was fetched: (namespace, name) -> (resourceVersion, object).
type Fetched<K> = Mutex<HashMap<(String, String), (String, Arc<K>)>>;

/// The team namespaces' declared Secrets and ConfigMaps.
pub struct Sources {
    client: Client,
    identity: Identity,
    previews: Store<PreviewEnvironment>,
    templates: Store<PreviewTemplate>,
    triggers: mpsc::UnboundedSender<ObjectRef<PreviewEnvironment>>,
    watches: Mutex<HashMap<String, NamespaceWatch>>,
    secrets: Fetched<Secret>,
    config_maps: Fetched<ConfigMap>,
}

/// A kind a template may declare.
trait SourceKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The template's list of this kind.
    fn declared(template: &PreviewTemplate) -> Vec<&str>;
}

impl SourceKind for Secret {
    fn declared(template: &PreviewTemplate) -> Vec<&str> {
        template
            .spec
            .secrets
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }
}

impl SourceKind for ConfigMap {
    fn declared(template: &PreviewTemplate) -> Vec<&str> {
        template
            .spec
            .config_maps
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }
}

impl Sources {
    /// Reads nothing until a preview needs it; `triggers` wakes the previews a change
    /// concerns.
    pub fn new(
        client: Client,
        identity: Identity,
        previews: Store<PreviewEnvironment>,
        templates: Store<PreviewTemplate>,
        triggers: mpsc::UnboundedSender<ObjectRef<PreviewEnvironment>>,
    ) -> Self {
        Sources {
            client,
            identity,
            previews,
            templates,
            triggers,
            watches: Mutex::default(),
            secrets: Mutex::default(),
            config_maps: Mutex::default(),
        }
    }

    /// The declared `secrets` and `config_maps` of `namespace`, with their data.
    pub async fn read(
        &self,
        namespace: &str,
        secrets: &[String],
        config_maps: &[String],
    ) -> Result<Read, kube::Error> {
        if secrets.is_empty() && config_maps.is_empty() {
            return Ok(Read::Ready {
                secrets: Vec::new(),
                config_maps: Vec::new(),
            });
        }
        let (secret_state, map_state) = self.watch(namespace);
        let mut gathered = Gathered::default();
        for (kind, progress, names) in [
            ("Secrets", &secret_state.0, secrets),
            ("ConfigMaps", &map_state.0, config_maps),
        ] {
            if names.is_empty() {
                continue;
            }
            match progress {
                Progress::Starting => return Ok(Read::Waiting),
                Progress::Denied(error) => {
                    return Ok(Read::Unreadable(format!(
                        "the operator may not read {kind} in namespace {namespace} ({error}); \
                         let it read the ones your PreviewTemplate declares with: {}",
                        self.identity.grant_command(namespace)
                    )));
                }
                Progress::Listed => {}
            }
        }
        for name in secrets {
            match self
                .fetch::<Secret>(&self.secrets, &secret_state.1, namespace, name)
                .await?
            {
                Ok(secret) => gathered.secrets.push(secret),
                Err(message) => return Ok(Read::Unreadable(message)),
            }
        }
        for name in config_maps {
            match self
                .fetch::<ConfigMap>(&self.config_maps, &map_state.1, namespace, name)
                .await?
            {
                Ok(map) => gathered.config_maps.push(map),
                Err(message) => return Ok(Read::Unreadable(message)),
            }
        }
        Ok(Read::Ready {
            secrets: gathered.secrets,
            config_maps: gathered.config_maps,
        })
    }

    /// The object `namespace/name` with its data: fetched again only when its
    /// resourceVersion moved. `Err` says it does not exist.
    async fn fetch<K: SourceKind>(
        &self,
        fetched: &Fetched<K>,
        listed: &Store<PartialObjectMeta<K>>,
        namespace: &str,
        name: &str,
    ) -> Result<Result<Arc<K>, String>, kube::Error> {
        let kind = K::kind(&());
        let Some(meta) = listed.get(&ObjectRef::new(name).within(namespace)) else {
            return Ok(Err(format!(
                "{kind} {name} does not exist in namespace {namespace}, and the PreviewTemplate \
                 declares it; create it there"
            )));
        };
        let version = meta.resource_version().unwrap_or_default();
        let key = (namespace.to_string(), name.to_string());
        if let Some((v, object)) = lock(fetched).get(&key)
            && *v == version
        {
            return Ok(Ok(object.clone()));
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let object = match api.get_opt(name).await {
            Err(e) if crate::client::is_status(&e, 403) => {
                return Ok(Err(format!(
                    "the operator may not read {kind} {name} in namespace {namespace}; let it \
                     read the ones your PreviewTemplate declares with: {}",
                    self.identity.grant_command(namespace)
                )));
            }
            other => other?,
        };
        let Some(object) = object else {
            return Ok(Err(format!(
                "{kind} {name} was deleted from namespace {namespace}, and the PreviewTemplate \
                 declares it; create it there"
            )));
        };
        let object = Arc::new(object);
        let version = object.resource_version().unwrap_or_default();
        lock(fetched).insert(key, (version, object.clone()));
        Ok(Ok(object))
    }

    /// The progress and cache of `namespace`'s watches, started on first use.
    fn watch(&self, namespace: &str) -> (Listing<Secret>, Listing<ConfigMap>) {
        let mut watches = lock(&self.watches);
        let w = watches
            .entry(namespace.to_string())
            .or_insert_with(|| NamespaceWatch {
                secrets: self.start::<Secret>(namespace),
                config_maps: self.start::<ConfigMap>(namespace),
            });
        (
            (lock(&w.secrets.progress).clone(), w.secrets.store.clone()),
            (
                lock(&w.config_maps.progress).clone(),
                w.config_maps.store.clone(),
            ),
        )
    }

    /// Stops the watches of namespaces no template declares sources in any more.
    pub fn prune(&self) {
        let needed: BTreeSet<String> = self
            .templates
            .state()
            .iter()
            .filter(|t| !t.spec.secrets.is_empty() || !t.spec.config_maps.is_empty())
            .filter_map(|t| t.namespace())
            .collect();
        lock(&self.watches).retain(|ns, _| needed.contains(ns));
        lock(&self.secrets).retain(|(ns, _), _| needed.contains(ns));
        lock(&self.config_maps).retain(|(ns, _), _| needed.contains(ns));
    }

    /// A metadata watch of kind `K` in `namespace` that wakes the previews whose template
    /// declares a changed object, and all of the namespace's template previews when it lists
    /// or is denied.
    fn start<K: SourceKind>(&self, namespace: &str) -> KindWatch<K> {
        let (store, writer) = reflector::store();
        let progress = Arc::new(Mutex::new(Progress::Starting));
        let api: Api<PartialObjectMeta<K>> = Api::namespaced(self.client.clone(), namespace);
        let wake = Waker {
            namespace: namespace.to_string(),
            previews: self.previews.clone(),
            templates: self.templates.clone(),
            triggers: self.triggers.clone(),
        };
        let state = progress.clone();
        let kind = K::kind(&()).into_owned();
        let stream = reflector(
            writer,
            watcher(api, watcher::Config::default().any_semantic()).modify(|o| {
                o.meta_mut().managed_fields = None;
                o.annotations_mut().clear();
            }),
        )
        .default_backoff();
        let task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        *lock(&state) = Progress::Listed;
                        wake.all();
                    }
                    Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => {
                        wake.declaring::<K>(&o.name_any());
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let denied = is_forbidden(&error);
                        let mut current = lock(&state);
                        let was_denied = matches!(*current, Progress::Denied(_));
                        if denied {
                            *current = Progress::Denied(format!("{kind}: forbidden"));
                        }
                        drop(current);
                        if denied && !was_denied {
                            debug!(namespace = %wake.namespace, %kind, "source watch denied");
                            wake.all();
                        } else if !denied {
                            warn!(namespace = %wake.namespace, %kind, %error, "source watch failed; retrying");
                        }
                    }
                }
            }
        });
        KindWatch {
            store,
            progress,
            task: task.abort_handle(),
        }
    }
}

#[derive(Default)]
struct Gathered {
    secrets: Vec<Arc<Secret>>,
    config_maps: Vec<Arc<ConfigMap>>,
}

fn is_forbidden(error: &watcher::Error) -> bool {
    let source = match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        _ => return false,
    };
    crate::client::is_status(source, 403)
}

/// Wakes the previews of one namespace whose template declares a source.
struct Waker {
    namespace: String,
    previews: Store<PreviewEnvironment>,
    templates: Store<PreviewTemplate>,
    triggers: mpsc::UnboundedSender<ObjectRef<PreviewEnvironment>>,
}

impl Waker {
    /// The namespace's previews whose template declares `name` of kind `K`.
    fn declaring<K: SourceKind>(&self, name: &str) {
        self.wake(|template| K::declared(template).contains(&name));
    }

    /// The namespace's previews whose template declares anything.
    fn all(&self) {
        self.wake(|t| !t.spec.secrets.is_empty() || !t.spec.config_maps.is_empty());
    }

    fn wake(&self, concerns: impl Fn(&PreviewTemplate) -> bool) {
        let ns = self.namespace.as_str();
        let templates: BTreeSet<String> = self
            .templates
            .state()
            .iter()
            .filter(|t| t.namespace().as_deref() == Some(ns) && concerns(t))
            .map(|t| t.name_any())
            .collect();
        for pe in self.previews.state() {
            let uses = pe
                .spec
                .template_ref
                .as_ref()
                .is_some_and(|t| templates.contains(&t.name));
            if pe.namespace().as_deref() == Some(ns) && uses {
                let _ = self.triggers.send(ObjectRef::from_obj(pe.as_ref()));
            }
        }
    }
}
