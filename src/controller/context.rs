//! What every reconcile shares: the client, the settings, the caches, and the bookkeeping of
//! this process (queue slots, own writes, failures), plus where Events and commit statuses go.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{mpsc, watch};

use super::children::Stores;
use super::cluster_ips::ClusterIps;
use super::copies::Copies;
use super::costs::Costs;
use super::events::Events;
use super::logs::TestLogs;
use super::queue::Queue;
use super::rollouts::Rollouts;
use super::sources::Sources;
use super::writes::Writes;
use crate::api::{PreviewEnvironment, Provider};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::scm::{Reporter, Reporters};
use crate::sync::lock;

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub stores: Stores,
    pub events: Events,
    pub queue: Queue,
    /// The slots of class and template changes rolling out.
    pub rollouts: Rollouts,
    /// The turns to create Services, whose ClusterIPs the API server allocates one at a time.
    pub cluster_ips: Arc<ClusterIps>,
    pub writes: Writes,
    /// The Secret and ConfigMap copies this process applied.
    pub copies: Copies,
    /// The ends of finished tests' logs.
    pub logs: TestLogs,
    /// The Secrets and ConfigMaps templates declare, read where teams opted in.
    pub sources: Sources,
    /// What each preview requests and whether it is awake, for the cost counters.
    pub costs: Costs,
    /// Whether GitHub could be asked about each repository at the last resync.
    pub resync: Reachability,
    /// Wakes a preview outside its watches (a resync finding, a freed slot...).
    pub triggers: mpsc::UnboundedSender<ObjectRef<PreviewEnvironment>>,
    /// The platform Secrets namespace: where the Secrets a class names are copied from.
    pub platform_namespace: String,
    /// Consecutive failures per preview, for capped exponential backoff.
    pub failures: Mutex<HashMap<ObjectRef<PreviewEnvironment>, u32>>,
    /// True once every cache is filled; reconciles wait for it so that they never mistake an
    /// empty cache for missing children.
    pub synced: watch::Receiver<bool>,
    /// True while this process holds the leader lease; only the leader writes.
    pub leader: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    /// Where the reports of previews go (statuses or checks, deployments, comments), per
    /// configured provider.
    pub reporters: Reporters,
}

impl Context {
    /// Where the reports of a preview on `provider` go, when that provider is configured.
    pub fn reporter(&self, provider: Provider) -> Option<&Reporter> {
        self.reporters.of(provider)
    }

    /// Forgets a preview that is gone (`uid`, its preview namespace `namespace`): the
    /// bookkeeping of each preview goes with it, so every map stays as large as the number of
    /// live previews.
    pub fn forget(&self, pe: &PreviewEnvironment, uid: &str, namespace: &str) {
        self.writes.forget(uid);
        self.costs.forget(uid);
        self.copies.forget(namespace);
        self.stores.applied.forget(namespace);
        self.logs.forget(namespace);
        self.rollouts.finish(uid);
        self.cluster_ips.leave(uid);
        crate::sync::lock(&self.failures).remove(&ObjectRef::from_obj(pe));
    }

    /// Reconciles `preview` soon.
    pub fn wake(&self, preview: ObjectRef<PreviewEnvironment>) {
        // Nobody listening means the controller is shutting down.
        let _ = self.triggers.send(preview);
    }
}

/// Whether the provider could be asked about each repository (lower case) at the last
/// resync: `Err` holds why not. Repositories never asked about are absent.
#[derive(Default)]
pub struct Reachability {
    repositories: Mutex<HashMap<(Provider, String), Result<(), String>>>,
}

impl Reachability {
    /// What the last resync found for `repository`.
    pub fn of(&self, provider: Provider, repository: &str) -> Option<Result<(), String>> {
        lock(&self.repositories)
            .get(&(provider, repository.to_ascii_lowercase()))
            .cloned()
    }

    /// Records what a resync found; true when it changed.
    pub(super) fn record(
        &self,
        provider: Provider,
        repository: &str,
        found: Result<(), String>,
    ) -> bool {
        let mut all = lock(&self.repositories);
        let key = (provider, repository.to_ascii_lowercase());
        let changed = all.get(&key) != Some(&found);
        all.insert(key, found);
        changed
    }
}
