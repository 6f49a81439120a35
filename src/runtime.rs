//! `preview-operator run`: wires the parts together. The client (with API metrics), leader
//! election, the HTTP server (metrics, probes, webhooks), the commit-status poster, the Event
//! publisher, the watches, the background tasks (cache sync, orphan sweep, leadership
//! metric) and the controller, then shuts them down in order.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{debug, info, warn};
use tracing_subscriber::EnvFilter;

use crate::api::PreviewEnvironment;
use crate::api::class::{DEFAULT_CLASS, PreviewClass};
use crate::cli::{GitHubArgs, LogFormat, RunArgs};
use crate::client::inflight::{InFlightLayer, MAX_IN_FLIGHT};
use crate::config::{Config, LogReader};
use crate::controller::children::Stores;
use crate::controller::cluster_ips::{self, ClusterIps};
use crate::controller::rollouts::Rollouts;
use crate::controller::sources::{Identity, Sources};
use crate::controller::{self, Context, Streams, children, events, queue, teardown};
use crate::credential::{Credential, RECHECK};
use crate::github;
use crate::gitlab::{GitLab, GitLabConfig};
use crate::leader::{self, Election, LeaderConfig};
use crate::metrics::{ApiMetricsLayer, Metrics};
use crate::naming::MANAGER;
use crate::scm::status::CommitStatus;
use crate::scm::{Forge, Provider, Reporter, Reporters, Scm, comment, poster};
use crate::server::{self, AppState};
use crate::{wake, webhook};

/// Runs the operator until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.http.log_format);
    // Before connecting anywhere: a flag that cannot work stops the start-up with its reason.
    let gitlab_config = gitlab_config(&args.gitlab)?;
    let namespaces = Namespaces::new(&args);
    let config = config(&args, &namespaces.own)?;
    let metrics = Arc::new(Metrics::new());
    let client = client(&metrics).await?;
    let instance = instance_name();
    // The policy previews run under is their PreviewClass's (logged once the caches are
    // filled); the flags only hold the defaults a class overrides.
    info!(
        workers = args.controller.workers,
        max_concurrent_rollouts = args.controller.max_concurrent_rollouts,
        selector = args.controller.selector.as_deref().unwrap_or("(all)"),
        %instance,
        "starting preview-operator"
    );
    debug!(?config, "defaults a PreviewClass overrides");
    check_selector(&client, args.controller.selector.as_deref()).await?;
    let election = elect(&client, &args, &instance).await?;
    let (posted_tx, posted_rx) = mpsc::unbounded_channel();
    let (scm, reporters) = scm_reporters(&args, gitlab_config, &metrics, posted_tx)?;
    let selector = args.controller.selector.as_deref();
    // Without the applier role the chart grants no access to Flux's kinds either (its
    // `flux.enabled`): watching them would only be refused.
    let flux = args
        .policy
        .flux_applier_role
        .as_ref()
        .is_some_and(|r| !r.is_empty())
        && flux_served(&client).await;
    let watches = children::watch(&client, selector, &namespaces.platform, flux);
    let (synced_tx, synced) = watch::channel(false);
    let guard = webhook_guard(&scm, &watches.stores, &metrics);
    let http = Http::start(&args, &client, &metrics, synced.clone(), guard).await?;
    // Bound now, so a taken port fails the start-up loudly; served once the caches exist.
    let wake_listener = server::bind(args.http.wake_addr, "--wake-addr").await?;
    let (stores, leader) = (watches.stores.clone(), election.leader.clone());
    metrics.count_phases_in(stores.previews.clone(), stores.classes.clone());
    let (events, events_task) = start_events(&client, instance);
    let shared = Shared {
        client,
        metrics,
        synced,
        leader,
    };
    let (ctx, wake_rx) = context(&args, config, shared, stores, events, namespaces, reporters);
    let background = Background {
        synced_tx,
        caches_synced: watches.synced,
        posted: posted_rx,
        wake_listener,
        scm,
    }
    .spawn(&ctx, &args);
    let streams = Streams {
        previews: watches.previews,
        triggers: triggers(watches.triggers, wake_rx),
    };
    controller::run(ctx, streams, args.controller.workers.max(1)).await;
    shut_down(background, events_task, election, http).await
}

/// Whether the API server serves every Flux kind the operator writes. Checked once: where
/// Flux is installed later, the operator starts watching its kinds after a restart, and
/// previews that use it say so meanwhile (`FluxNotInstalled`).
async fn flux_served(client: &kube::Client) -> bool {
    let wanted = [
        ("helm.toolkit.fluxcd.io/v2", &["helmreleases"][..]),
        ("kustomize.toolkit.fluxcd.io/v1", &["kustomizations"][..]),
        (
            "source.toolkit.fluxcd.io/v1",
            &["gitrepositories", "helmrepositories", "ocirepositories"][..],
        ),
    ];
    for (group_version, kinds) in wanted {
        let served = match client.list_api_group_resources(group_version).await {
            Ok(list) => kinds
                .iter()
                .all(|k| list.resources.iter().any(|r| r.name == *k)),
            Err(_) => false,
        };
        if !served {
            info!(
                missing = group_version,
                "Flux is not installed: previews cannot deliver through Flux"
            );
            return false;
        }
    }
    info!("Flux is installed: previews may deliver through Flux");
    true
}

/// The operator's settings from the flags; the log reader, when a role is named, reads in
/// the operator's own namespace.
fn config(args: &RunArgs, own_namespace: &str) -> anyhow::Result<Config> {
    Ok(Config {
        log_reader: args
            .policy
            .log_reader_role
            .clone()
            .filter(|role| !role.is_empty())
            .map(|role| LogReader {
                role,
                service_account: args.controller.service_account.clone(),
                namespace: own_namespace.to_string(),
            }),
        flux_applier_role: (args.policy.flux_applier_role.clone()).filter(|role| !role.is_empty()),
        ..args.policy.clone().into_config().context("invalid flags")?
    })
}

/// The namespace the operator runs in, and the one it copies the platform's Secrets from.
struct Namespaces {
    own: String,
    platform: String,
}

impl Namespaces {
    fn new(args: &RunArgs) -> Namespaces {
        let own = own_namespace();
        let platform = args
            .controller
            .platform_secrets_namespace
            .clone()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| own.clone());
        Namespaces { own, platform }
    }
}

/// Sets up the providers that are configured, and starts posting to them: commit statuses
/// (their posts reported on `posted`), deployments, PR comments and MR notes when enabled.
/// The providers are also what webhooks' confirmations and the resync ask.
fn scm_reporters(
    args: &RunArgs,
    gitlab_config: Option<GitLabConfig>,
    metrics: &Arc<Metrics>,
    posted: mpsc::UnboundedSender<CommitStatus>,
) -> anyhow::Result<(Arc<Scm>, Reporters)> {
    let mut forges: Vec<(Arc<dyn Forge>, bool, bool)> = Vec::new();
    if let Some(config) = github_config(&args.github)? {
        info!(api = %config.api_url, credentials = ?config.credentials, "reporting on pull requests, webhook confirmation and resync enabled");
        let api =
            github::GitHub::new(&config, metrics.clone()).context("failed to set up GitHub")?;
        let (comments, deployments) = (
            args.github.github_pr_comments,
            args.github.github_deployments,
        );
        forges.push((api, comments, deployments));
    }
    if let Some(config) = gitlab_config {
        info!(url = %config.url, "GitLab commit statuses, webhook confirmation and resync enabled");
        let api = GitLab::new(&config, metrics.clone()).context("failed to set up GitLab")?;
        let (notes, environments) = (args.gitlab.gitlab_mr_notes, args.gitlab.gitlab_environments);
        forges.push((api, notes, environments));
    }
    let mut reporters = Reporters::default();
    for (forge, comments, deployments) in &forges {
        let provider = forge.provider();
        info!(%provider, comments, deployments, "pull request comments and deployments");
        let poster = poster::start(forge.clone(), *deployments, metrics.clone(), posted.clone());
        let comments = comments.then(|| comment::start(forge.clone()));
        reporters.insert(provider, Reporter { poster, comments });
    }
    let scm = Scm::new(forges.into_iter().map(|(forge, _, _)| forge));
    Ok((Arc::new(scm), reporters))
}

/// What a webhook's teardown checks before it deletes anything.
fn webhook_guard(scm: &Arc<Scm>, stores: &Stores, metrics: &Arc<Metrics>) -> webhook::Guard {
    webhook::Guard {
        scm: scm.clone(),
        previews: stores.previews.clone(),
        classes: stores.classes.clone(),
        tenants: stores.tenants.clone(),
        metrics: metrics.clone(),
    }
}

/// The Event publisher, and its task (which shutdown lets finish what is queued).
fn start_events(client: &Client, instance: String) -> (events::Events, JoinHandle<()>) {
    let reporter = events::Reporter {
        controller: MANAGER.to_string(),
        instance,
    };
    events::Events::start(client.clone(), reporter)
}

/// What the controller and the background tasks share.
struct Shared {
    client: Client,
    metrics: Arc<Metrics>,
    /// True once the caches are synced.
    synced: watch::Receiver<bool>,
    /// True while this process holds the lease.
    leader: watch::Receiver<bool>,
}

/// The controller's context, and the receiving end of the wakes it and the sources send.
fn context(
    args: &RunArgs,
    config: Config,
    shared: Shared,
    stores: Stores,
    events: events::Events,
    namespaces: Namespaces,
    reporters: Reporters,
) -> (
    Arc<Context>,
    mpsc::UnboundedReceiver<ObjectRef<PreviewEnvironment>>,
) {
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    let sources = Sources::new(
        shared.client.clone(),
        Identity {
            namespace: namespaces.own,
            service_account: args.controller.service_account.clone(),
            reader_role: args.controller.source_reader_role.clone(),
        },
        stores.previews.clone(),
        stores.templates.clone(),
        wake_tx.clone(),
    );
    let ctx = Context {
        client: shared.client,
        queue: queue::Queue::new(wake_tx.clone()),
        rollouts: Rollouts::new(args.controller.max_concurrent_rollouts, wake_tx.clone()),
        cluster_ips: Arc::new(ClusterIps::new(cluster_ips::AT_ONCE, wake_tx.clone())),
        config,
        stores,
        events,
        writes: Default::default(),
        copies: Default::default(),
        logs: Default::default(),
        sources,
        costs: Default::default(),
        resync: Default::default(),
        triggers: wake_tx,
        platform_namespace: namespaces.platform,
        failures: Mutex::default(),
        synced: shared.synced,
        leader: shared.leader,
        metrics: shared.metrics,
        reporters,
    };
    (Arc::new(ctx), wake_rx)
}

/// What the background tasks need beside the context.
struct Background {
    /// Says the caches are synced, once the watches' promise of it resolves.
    synced_tx: watch::Sender<bool>,
    caches_synced: BoxFuture<'static, bool>,
    /// The commit statuses posted, to record on their previews.
    posted: mpsc::UnboundedReceiver<CommitStatus>,
    wake_listener: tokio::net::TcpListener,
    /// The providers the resync asks.
    scm: Arc<Scm>,
}

impl Background {
    /// Starts the tasks that run beside the controller until shutdown aborts them.
    fn spawn(self, ctx: &Arc<Context>, args: &RunArgs) -> JoinSet<()> {
        let Background {
            synced_tx,
            caches_synced,
            posted,
            wake_listener,
            scm,
        } = self;
        let mut tasks = JoinSet::new();
        let classes = ctx.stores.classes.clone();
        tasks.spawn(async move {
            if caches_synced.await {
                info!("caches synced");
                log_classes(&classes);
                let _ = synced_tx.send(true);
            }
        });
        tasks.spawn(report_leadership(ctx.leader.clone(), ctx.metrics.clone()));
        tasks.spawn(controller::report::record_posted(
            ctx.client.clone(),
            posted,
        ));
        tasks.spawn(prune_sources(ctx.clone()));
        tasks.spawn(serve_wake(wake_listener, ctx.clone()));
        tasks.spawn(account_costs(ctx.clone()));
        if !args.controller.no_class_status {
            tasks.spawn(controller::classes::run(ctx.clone()));
        }
        let interval = args.github.scm_resync_interval;
        tasks.spawn(controller::resync::run(ctx.clone(), scm, interval));
        tasks.spawn(teardown::run_sweeper(
            ctx.client.clone(),
            ctx.stores.previews.clone(),
            ctx.stores.namespaces.clone(),
            ctx.stores.flux.clone(),
            args.controller.orphan_sweep_interval,
            ctx.synced.clone(),
            ctx.leader.clone(),
        ));
        tasks
    }
}

/// Says which classes serve previews, the default first: what applies, unlike the flags'
/// defaults. No default class means previews naming none are refused.
fn log_classes(classes: &kube::runtime::reflector::Store<PreviewClass>) {
    let all = classes.state();
    let default = all.iter().find(|c| {
        c.annotations()
            .get(DEFAULT_CLASS)
            .is_some_and(|v| v == "true")
    });
    match default {
        Some(class) => {
            info!(class = %class.name_any(), ttl = ?class.spec.ttl, tenants = class.spec.tenants.len(), "default PreviewClass")
        }
        None => warn!(
            "no default PreviewClass: previews that name no class are refused (NoPreviewClass)"
        ),
    }
    let names: Vec<String> = all.iter().map(|c| c.name_any()).collect();
    info!(classes = ?names, "PreviewClasses");
}

/// A freed queue slot wakes the previews waiting for it, like a child's change; so does a
/// change of a Secret or ConfigMap their template declares.
fn triggers(
    children: BoxStream<'static, ObjectRef<PreviewEnvironment>>,
    wakes: mpsc::UnboundedReceiver<ObjectRef<PreviewEnvironment>>,
) -> BoxStream<'static, ObjectRef<PreviewEnvironment>> {
    futures::stream::select(children, UnboundedReceiverStream::new(wakes)).boxed()
}

/// Adds the time since the last tick to every accounted preview's cost counters.
async fn account_costs(ctx: Arc<Context>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(10));
    let mut last = tokio::time::Instant::now();
    loop {
        ticker.tick().await;
        let now = tokio::time::Instant::now();
        ctx.costs.tick(&ctx.metrics, now.duration_since(last));
        last = now;
    }
}

/// Serves the wake listener until shutdown aborts it.
async fn serve_wake(listener: tokio::net::TcpListener, ctx: Arc<Context>) {
    let state = wake::WakeState {
        client: ctx.client.clone(),
        ingresses: ctx.stores.ingresses.clone(),
        previews: ctx.stores.previews.clone(),
        asked: Arc::default(),
    };
    let router = wake::router(state);
    if let Err(error) = server::serve(
        listener,
        router,
        server::Limits::WEB,
        std::future::pending(),
    )
    .await
    {
        warn!(%error, "the wake listener stopped");
    }
}

/// Now and then stops the watches of team namespaces whose templates no longer declare
/// Secrets or ConfigMaps.
async fn prune_sources(ctx: Arc<Context>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(300));
    loop {
        ticker.tick().await;
        ctx.sources.prune();
    }
}

/// After the controller is done: stop the rest, publish what Events are queued (briefly),
/// hand the lease over and stop serving.
async fn shut_down(
    mut background: JoinSet<()>,
    events_task: JoinHandle<()>,
    election: Election,
    http: Http,
) -> anyhow::Result<()> {
    background.abort_all();
    if tokio::time::timeout(Duration::from_secs(5), events_task)
        .await
        .is_err()
    {
        warn!("shutdown: events still queued were not published");
    }
    election.resign(Duration::from_secs(3)).await;
    http.stop().await
}

fn init_logging(format: LogFormat) {
    // RUST_LOG-style filtering; info by default, quiet about the HTTP stack.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=warn,tower=warn,rustls=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// A client of the current kubeconfig or service account that counts its requests.
async fn client(metrics: &Arc<Metrics>) -> anyhow::Result<Client> {
    let kube_config = kube::Config::infer()
        .await
        .context("failed to load a Kubernetes config (kubeconfig or in-cluster)")?;
    Ok(crate::client::connection::builder(kube_config)
        .context("failed to build a Kubernetes client")?
        .with_layer(&ApiMetricsLayer::new(metrics.clone()))
        .with_layer(&InFlightLayer::new(MAX_IN_FLIGHT))
        .build())
}

/// Refuses to start with a label selector the API server would refuse on every watch: the
/// operator would otherwise run, reconcile nothing and stay unready without saying why.
async fn check_selector(client: &Client, selector: Option<&str>) -> anyhow::Result<()> {
    let Some(selector) = selector else {
        return Ok(());
    };
    let params = ListParams::default().labels(selector).limit(1);
    match Api::<PreviewEnvironment>::all(client.clone())
        .list_metadata(&params)
        .await
    {
        Err(kube::Error::Api(status)) if status.code == 400 => anyhow::bail!(
            "--selector {selector:?} is not a valid label selector: {}",
            status.message
        ),
        // Anything else (the CRD missing, RBAC) shows up in the watches' warnings.
        _ => Ok(()),
    }
}

async fn elect(client: &Client, args: &RunArgs, instance: &str) -> anyhow::Result<Election> {
    let l = &args.leader;
    let config = l.leader_election.then(|| LeaderConfig {
        lease_name: l.lease_name.clone(),
        lease_namespace: l.lease_namespace.clone().unwrap_or_else(own_namespace),
        identity: instance.to_string(),
        lease_duration: l.lease_duration,
    });
    leader::elect(client.clone(), config)
        .await
        .context("failed to start leader election")
}

/// GitHub's API and who the operator is there (an App, else a token), when configured.
fn github_config(args: &GitHubArgs) -> anyhow::Result<Option<github::GitHubConfig>> {
    let credentials = match (&args.github_app_id, &args.github_app_private_key_file) {
        (Some(id), Some(path)) => Some(github::Credentials::App {
            id: *id,
            private_key: Credential::from_file("--github-app-private-key-file", path, RECHECK)?,
        }),
        _ => Credential::load(
            "--github-token-file",
            args.github_token_file.as_deref(),
            args.github_token.as_deref(),
        )?
        .map(github::Credentials::Token),
    };
    Ok(credentials.map(|credentials| github::GitHubConfig {
        api_url: args.github_api_url.clone(),
        credentials,
    }))
}

/// GitLab's URL and the token, when one is configured. The URL is checked either way.
fn gitlab_config(args: &crate::cli::GitLabArgs) -> anyhow::Result<Option<GitLabConfig>> {
    let url = args.url().map_err(anyhow::Error::msg)?;
    let token = Credential::load(
        "--gitlab-token-file",
        args.gitlab_token_file.as_deref(),
        args.gitlab_token.as_deref(),
    )?;
    Ok(token.map(|token| GitLabConfig { url, token }))
}

/// Sets the leader metric and logs every change of leadership.
async fn report_leadership(mut leader: watch::Receiver<bool>, metrics: Arc<Metrics>) {
    loop {
        let leads = *leader.borrow_and_update();
        metrics.set_leader(leads);
        info!(leader = leads, "leadership");
        if leader.changed().await.is_err() {
            return;
        }
    }
}

/// The HTTP server, the probes' listener and, when a webhook secret is set, the webhook's
/// teardown task.
struct Http {
    addr: std::net::SocketAddr,
    health_addr: std::net::SocketAddr,
    stop: watch::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    health: JoinHandle<std::io::Result<()>>,
    teardowns: Option<JoinHandle<()>>,
}

impl Http {
    async fn start(
        args: &RunArgs,
        client: &Client,
        metrics: &Arc<Metrics>,
        synced: watch::Receiver<bool>,
        guard: webhook::Guard,
    ) -> anyhow::Result<Http> {
        let (addr, health_addr) = (args.http.http_addr, args.http.health_addr);
        // Bound before anything else starts, so a taken port fails the start-up loudly.
        let listener = server::bind(addr, "--http-addr").await?;
        let health_listener = server::bind(health_addr, "--health-addr").await?;
        let state = AppState {
            metrics: metrics.clone(),
            synced,
        };
        let health_router = server::health_router(state.clone());
        let mut router = server::router(state);
        let (gh, gl) = (&args.github, &args.gitlab);
        let github_secret = Credential::load(
            "--github-webhook-secret-file",
            gh.github_webhook_secret_file.as_deref(),
            gh.github_webhook_secret.as_deref(),
        )?;
        let gitlab_secret = Credential::load(
            "--gitlab-webhook-secret-file",
            gl.gitlab_webhook_secret_file.as_deref(),
            gl.gitlab_webhook_secret.as_deref(),
        )?;
        let mut teardowns = None;
        if github_secret.is_some() || gitlab_secret.is_some() {
            // One teardown queue and one memory of deliveries for both providers.
            let (closed_tx, closed_rx) = mpsc::channel(1024);
            let seen = Arc::new(Mutex::new(webhook::SeenDeliveries::new(10_000)));
            let state = |secret: Credential, provider| webhook::WebhookState {
                secret,
                seen: seen.clone(),
                closed: closed_tx.clone(),
                metrics: metrics.clone(),
                confirms: guard.scm.knows(provider),
            };
            for (provider, secret) in [("GitHub", &github_secret), ("GitLab", &gitlab_secret)] {
                if secret.is_some() {
                    let path = provider.to_ascii_lowercase();
                    info!("{provider} webhooks enabled at POST /webhooks/{path}");
                }
            }
            router = router.merge(webhook::router(
                github_secret.map(|s| state(s, Provider::Github)),
                gitlab_secret.map(|s| state(s, Provider::Gitlab)),
                gh.webhook_max_body,
            ));
            teardowns = Some(tokio::spawn(webhook::run_teardowns(
                client.clone(),
                closed_rx,
                seen,
                guard,
            )));
        }
        let (stop, stopped) = watch::channel(());
        let until_stopped = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.changed().await;
            }
        };
        let server = tokio::spawn(server::serve(
            listener,
            router,
            server::Limits::WEB,
            until_stopped(),
        ));
        let health = tokio::spawn(server::serve(
            health_listener,
            health_router,
            server::Limits::HEALTH,
            until_stopped(),
        ));
        Ok(Http {
            addr,
            health_addr,
            stop,
            server,
            health,
            teardowns,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        // Dropping the sender is the signal.
        drop(self.stop);
        if let Some(task) = self.teardowns {
            task.abort();
        }
        let served = |task: Result<std::io::Result<()>, tokio::task::JoinError>,
                      addr: std::net::SocketAddr| match task {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("failed to serve on {addr}"))),
            Err(e) => Err(anyhow::Error::new(e).context("an HTTP server task failed")),
        };
        let (server, health) = tokio::join!(self.server, self.health);
        served(server, self.addr).and(served(health, self.health_addr))
    }
}

/// A name for Events and the lease that is unique even for two processes on one host: the
/// pod name, else the host name plus the process id.
fn instance_name() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "preview-operator".into());
        format!("{host}-{}", std::process::id())
    })
}

/// The namespace the operator runs in: `POD_NAMESPACE`, else the service account's, else
/// `default` (when run outside a cluster).
fn own_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}
