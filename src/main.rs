//! The `preview-operator` command line: `run` the controller, or print the `crd`.
#![forbid(unsafe_code)]

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use preview_operator::api::parse_duration;
use preview_operator::config::PolicyArgs;
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

/// A name for Events and (later) leases that is unique even for two processes on one host.
fn instance_name() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "preview-operator".into());
        format!("{host}-{}", std::process::id())
    })
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let config = args.policy.into_config().context("invalid policy flags")?;
    let client = kube::Client::try_default()
        .await
        .context("failed to build a Kubernetes client (kubeconfig or in-cluster config)")?;
    tracing::info!(?config, workers = args.workers, "starting preview-operator");
    preview_operator::controller::run(
        client,
        config,
        args.workers.max(1),
        args.orphan_sweep_interval,
        instance_name(),
    )
    .await;
    Ok(())
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
