//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager), so several replicas
//! can run and only one writes. Without election the process is always the leader.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError, LeaseParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub lease_name: String,
    pub lease_namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
}

/// Competes for the lease in the background.
pub struct Election {
    /// Whether this process leads, kept up to date.
    pub leader: watch::Receiver<bool>,
    /// Without election, the sender that keeps `leader` true; with it, the lease task.
    _always: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<Result<LeaseManager, LeaseManagerError>>>,
}

impl Election {
    /// Gives the lease up (once every clone of `leader` is dropped) so a follower takes over at
    /// once instead of after the lease duration.
    pub async fn resign(self, timeout: Duration) {
        let Election { leader, task, .. } = self;
        drop(leader);
        if let Some(task) = task
            && tokio::time::timeout(timeout, task).await.is_err()
        {
            info!("lease not released in time; it expires on its own");
        }
    }
}

/// Starts competing for the lease, or, without `config`, leads unconditionally.
pub async fn elect(client: Client, config: Option<LeaderConfig>) -> anyhow::Result<Election> {
    let Some(config) = config else {
        let (tx, rx) = watch::channel(true);
        return Ok(Election {
            leader: rx,
            _always: Some(tx),
            task: None,
        });
    };
    let duration = config.lease_duration.as_secs().max(2);
    // Renew a third of the duration before it runs out: tolerant of a slow API server.
    let grace = (duration / 3).max(1);
    let params = LeaseParams::new(&config.identity, duration, grace)
        .with_field_manager(format!("preview-operator-{}", config.identity));
    let manager = LeaseManagerBuilder::new(client, &config.lease_name)
        .with_namespace(&config.lease_namespace)
        .with_parameters(params)
        .build()
        .await?;
    let (rx, task) = manager.watch().await;
    info!(
        lease = %config.lease_name,
        namespace = %config.lease_namespace,
        identity = %config.identity,
        "competing for leadership"
    );
    Ok(Election {
        leader: rx,
        _always: None,
        task: Some(task),
    })
}
