//! The `preview-operator` command line: `run` the controller, or print the `crd`.
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use preview_operator::api::parse_duration;
use preview_operator::config::PolicyArgs;
use preview_operator::controller::Options;
use preview_operator::leader::{self, LeaderConfig};
use preview_operator::metrics::{ApiMetricsLayer, Metrics};
use preview_operator::server::{self, AppState};
use preview_operator::{github, webhook};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "preview-operator",
    version,
    about = "Short-lived, tested environments for pull requests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller against the cluster of the current kubeconfig or service account.
    Run(Box<RunArgs>),
    /// Print the PreviewEnvironment CustomResourceDefinition as YAML.
    Crd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("{text:?} is not a duration such as 30s or 5m"))
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Address of the HTTP server: /metrics, /healthz, /readyz.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: SocketAddr,

    /// Elect a leader on a Lease so several replicas can run; only the leader writes.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_LEADER_ELECTION",
        default_value_t = false
    )]
    leader_election: bool,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_LEASE_NAME",
        default_value = "preview-operator"
    )]
    lease_name: String,

    /// Namespace of the leader Lease (default: the pod's namespace).
    #[arg(long, env = "PREVIEW_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,

    /// How long a leader's lease lasts without renewal: the worst-case failover time.
    #[arg(long, env = "PREVIEW_OPERATOR_LEASE_DURATION", default_value = "15s", value_parser = duration_arg)]
    lease_duration: Duration,

    /// File holding the GitHub webhook secret; enables POST /webhooks/github.
    #[arg(long, env = "PREVIEW_OPERATOR_GITHUB_WEBHOOK_SECRET_FILE")]
    github_webhook_secret_file: Option<std::path::PathBuf>,

    /// The GitHub webhook secret itself (prefer the file); enables POST /webhooks/github.
    #[arg(long, env = "GITHUB_WEBHOOK_SECRET", hide_env_values = true)]
    github_webhook_secret: Option<String>,

    /// File holding a GitHub token (statuses: write) for commit statuses on pull requests.
    #[arg(long, env = "PREVIEW_OPERATOR_GITHUB_TOKEN_FILE")]
    github_token_file: Option<std::path::PathBuf>,

    /// The GitHub token itself (prefer the file); enables commit statuses.
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true)]
    github_token: Option<String>,

    /// GitHub API base URL (GitHub Enterprise: https://<host>/api/v3).
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    github_api_url: String,

    /// Largest webhook body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "PREVIEW_OPERATOR_WEBHOOK_MAX_BODY", default_value_t = 1024 * 1024)]
    webhook_max_body: usize,

    /// Only reconcile PreviewEnvironments matching this label selector (e.g. to shard tenants
    /// between two operator releases, or to canary a new version on some of them).
    #[arg(long, env = "PREVIEW_OPERATOR_SELECTOR")]
    selector: Option<String>,

    /// Previews reconciled at the same time.
    #[arg(long, env = "PREVIEW_OPERATOR_WORKERS", default_value_t = 16)]
    workers: u16,

    /// How often managed namespaces whose PreviewEnvironment is gone are deleted.
    #[arg(long, env = "PREVIEW_OPERATOR_ORPHAN_SWEEP_INTERVAL", default_value = "5m", value_parser = duration_arg)]
    orphan_sweep_interval: Duration,

    /// Log format.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,

    #[command(flatten)]
    policy: PolicyArgs,
}

fn init_logging(format: LogFormat) {
    // RUST_LOG-style filtering; info by default, quiet about the HTTP stack.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=warn,tower=warn,rustls=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
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

/// A secret from a file (preferred: it stays out of the process environment) or a value;
/// trailing newlines are ignored, empty means unset.
fn read_secret(
    file: Option<&std::path::Path>,
    value: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let secret = match (file, value) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("failed to read {}", path.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        (None, Some(value)) => value.to_string(),
        (None, None) => return Ok(None),
    };
    Ok(Some(secret).filter(|s| !s.is_empty()))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let config = args.policy.into_config().context("invalid policy flags")?;
    let metrics = Arc::new(Metrics::new());
    let kube_config = kube::Config::infer()
        .await
        .context("failed to load a Kubernetes config (kubeconfig or in-cluster)")?;
    let client = kube::client::ClientBuilder::try_from(kube_config)
        .context("failed to build a Kubernetes client")?
        .with_layer(&ApiMetricsLayer::new(metrics.clone()))
        .build();
    let instance = instance_name();
    tracing::info!(?config, workers = args.workers, %instance, "starting preview-operator");

    let leader_config = args.leader_election.then(|| LeaderConfig {
        lease_name: args.lease_name.clone(),
        lease_namespace: args.lease_namespace.clone().unwrap_or_else(own_namespace),
        identity: instance.clone(),
        lease_duration: args.lease_duration,
    });
    let election = leader::elect(client.clone(), leader_config)
        .await
        .context("failed to start leader election")?;

    let webhook_secret = read_secret(
        args.github_webhook_secret_file.as_deref(),
        args.github_webhook_secret.as_deref(),
    )?;

    let github_token = read_secret(
        args.github_token_file.as_deref(),
        args.github_token.as_deref(),
    )?;
    let github = match github_token {
        Some(token) => {
            tracing::info!(api = %args.github_api_url, "commit statuses enabled");
            Some(
                github::start(
                    github::GitHubConfig {
                        api_url: args.github_api_url.clone(),
                        token,
                    },
                    metrics.clone(),
                )
                .context("failed to set up the GitHub client")?,
            )
        }
        None => None,
    };

    let (synced_tx, synced) = watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let state = AppState {
        metrics: metrics.clone(),
        synced,
    };
    // Bound before anything else starts, so a taken port fails the start-up loudly.
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("failed to listen on {}", args.http_addr))?;
    let mut router = server::router(state);
    let mut teardowns = None;
    if let Some(secret) = webhook_secret {
        let (closed_tx, closed_rx) = tokio::sync::mpsc::channel(1024);
        let webhook_state = webhook::WebhookState {
            secret: Arc::new(secret.into_bytes()),
            seen: Arc::new(std::sync::Mutex::new(webhook::SeenDeliveries::new(10_000))),
            closed: closed_tx,
            metrics: metrics.clone(),
        };
        router = router.merge(webhook::router(webhook_state, args.webhook_max_body));
        teardowns = Some(tokio::spawn(webhook::run_teardowns(
            client.clone(),
            closed_rx,
        )));
        tracing::info!("GitHub webhooks enabled at POST /webhooks/github");
    }
    let server = tokio::spawn(server::serve(listener, router, async {
        let _ = stop_rx.await;
    }));

    preview_operator::controller::run(
        client,
        config,
        Options {
            workers: args.workers.max(1),
            sweep_interval: args.orphan_sweep_interval,
            instance,
            selector: args.selector.clone(),
            github,
        },
        metrics,
        election.leader.clone(),
        synced_tx,
    )
    .await;

    // Shutting down: hand the lease over and stop serving.
    election.resign(Duration::from_secs(3)).await;
    let _ = stop_tx.send(());
    if let Some(task) = teardowns {
        task.abort();
    }
    match server.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e).context(format!("failed to serve on {}", args.http_addr)),
        Err(e) => Err(e).context("the HTTP server task failed"),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            let yaml = preview_operator::crd::render().context("failed to render the CRD")?;
            std::io::stdout()
                .write_all(yaml.as_bytes())
                .context("failed to write the CRD")?;
            Ok(())
        }
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?
            .block_on(run(*args)),
    }
}
