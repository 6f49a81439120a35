//! The command line: `run` the controller, print the `crd`, `render` a preview, read a
//! `test-report`. `run`'s flags come in groups by
//! concern; every flag also reads a `PREVIEW_OPERATOR_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{PolicyArgs, duration_arg};

#[derive(Parser, Debug)]
#[command(
    name = "preview-operator",
    version,
    about = "Short-lived, tested environments for pull requests"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller against the cluster of the current kubeconfig or service account.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML (or write one file each into --dir).
    Crd {
        /// Write `<plural>.yaml` files into this directory instead of printing.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print every object the operator would apply for a PreviewEnvironment, as YAML, without a
    /// cluster; or the error the preview would show (exit status 1).
    Render {
        /// The PreviewEnvironment manifest.
        #[arg(long)]
        preview: PathBuf,
        /// The PreviewTemplate it names, if it names one.
        #[arg(long)]
        template: Option<PathBuf>,
        /// The PreviewClass that admits it (the operator's defaults without one).
        #[arg(long)]
        class: Option<PathBuf>,
        /// `yaml`: a YAML stream with comments; `json`: one object per line.
        #[arg(long, short, value_enum, default_value_t)]
        output: crate::render::Format,
    },
    /// Print what the operator reports of a failed test's log (or of a JUnit file): read as
    /// the operator reads a finished test's log.
    TestReport {
        /// `json`: the counts, failed cases and annotations; `markdown`: the check run's text.
        #[arg(long, value_enum, default_value_t = ReportFormat::Json)]
        format: ReportFormat,
        /// The test's log, or a JUnit XML report.
        file: PathBuf,
    },
}

/// How `test-report` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Json,
    Markdown,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub leader: LeaderArgs,
    #[command(flatten)]
    pub github: GitHubArgs,
    #[command(flatten)]
    pub gitlab: GitLabArgs,
    #[command(flatten)]
    pub controller: ControllerArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// The HTTP server and logs.
#[derive(Args, Debug)]
pub struct HttpArgs {
    /// Address of the HTTP server: /metrics and the webhooks when enabled (and /healthz and
    /// /readyz, as on --health-addr).
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080",
        value_parser = listen_addr
    )]
    pub http_addr: SocketAddr,

    /// Address of the probes' own listener: /healthz and /readyz only, so that connections
    /// flooding --http-addr (reachable from the webhook Ingress) cannot fail the probes.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_HEALTH_ADDR",
        default_value = "0.0.0.0:8082",
        value_parser = listen_addr
    )]
    pub health_addr: SocketAddr,

    /// Address of the wake listener: a sleeping preview's Ingress sends visitors here, and a
    /// visit wakes it (any path; the Host names the preview).
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_WAKE_ADDR",
        default_value = "0.0.0.0:8081",
        value_parser = listen_addr
    )]
    pub wake_addr: SocketAddr,

    /// Log format.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// `host:port`, or `:port` for every interface, as Go programs and many charts write it.
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_string(),
    };
    full.parse()
        .map_err(|_| format!("{text:?} is not an address such as 0.0.0.0:8080, [::]:8080 or :8080"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Leader election.
#[derive(Args, Debug)]
pub struct LeaderArgs {
    /// Elect a leader on a Lease so several replicas can run; only the leader writes.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_LEADER_ELECTION",
        default_value_t = false
    )]
    pub leader_election: bool,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_LEASE_NAME",
        default_value = "preview-operator"
    )]
    pub lease_name: String,

    /// Namespace of the leader Lease (default: the pod's namespace).
    #[arg(long, env = "PREVIEW_OPERATOR_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a leader's lease lasts without renewal: the worst-case failover time.
    #[arg(long, env = "PREVIEW_OPERATOR_LEASE_DURATION", default_value = "15s", value_parser = duration_arg)]
    pub lease_duration: Duration,
}

/// GitLab, for previews with `spec.provider: gitlab`: commit statuses, the merge request note
/// and the merge request webhook.
#[derive(Args, Debug)]
pub struct GitLabArgs {
    /// GitLab's URL (self-managed: https://gitlab.example.com).
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_GITLAB_URL",
        default_value = "https://gitlab.com"
    )]
    pub gitlab_url: String,

    /// File holding a GitLab token (scope api; e.g. a group access token with the Developer
    /// role): commit statuses, merge request state for the webhook and the resync. Re-read
    /// when it changes (within 10 s).
    #[arg(long, env = "PREVIEW_OPERATOR_GITLAB_TOKEN_FILE")]
    pub gitlab_token_file: Option<PathBuf>,

    /// The GitLab token itself (prefer the file).
    #[arg(long, env = "PREVIEW_OPERATOR_GITLAB_TOKEN", hide_env_values = true)]
    pub gitlab_token: Option<String>,

    /// File holding the secret token of GitLab's webhook; enables POST /webhooks/gitlab.
    /// Re-read when it changes (within 10 s), like every credential file.
    #[arg(long, env = "PREVIEW_OPERATOR_GITLAB_WEBHOOK_SECRET_FILE")]
    pub gitlab_webhook_secret_file: Option<PathBuf>,

    /// The GitLab webhook secret token itself (prefer the file).
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_GITLAB_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub gitlab_webhook_secret: Option<String>,

    /// One note per preview on its merge request, edited in place, like the PR comment.
    #[arg(long, env = "PREVIEW_OPERATOR_GITLAB_MR_NOTES")]
    pub gitlab_mr_notes: bool,

    /// An environment per preview (`preview/<namespace>/<name>`) linking its URL, stopped on
    /// teardown; needs a token that may write environments (Developer).
    #[arg(long, env = "PREVIEW_OPERATOR_GITLAB_ENVIRONMENTS")]
    pub gitlab_environments: bool,

    /// Accept an http:// --gitlab-url: the token and the merge request states then cross the
    /// network unencrypted. Only for a GitLab reached over a network you trust (or a test's
    /// stand-in on loopback).
    #[arg(long, env = "PREVIEW_OPERATOR_GITLAB_ALLOW_HTTP")]
    pub gitlab_allow_http: bool,
}

impl GitLabArgs {
    /// `--gitlab-url` once checked: an https URL, or http with `--gitlab-allow-http`.
    pub fn url(&self) -> Result<String, String> {
        let url = self.gitlab_url.trim();
        let uri: http::Uri = url.parse().map_err(|_| not_a_url(url))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(not_a_url(url));
        }
        match uri.scheme_str() {
            Some("https") => Ok(url.to_string()),
            Some("http") if self.gitlab_allow_http => Ok(url.to_string()),
            Some("http") => Err(format!(
                "--gitlab-url {url:?} is plain http: the GitLab token and the merge request states \
                 would cross the network unencrypted. Use https, or, for a GitLab reached only \
                 over a network you trust, pass --gitlab-allow-http \
                 (PREVIEW_OPERATOR_GITLAB_ALLOW_HTTP=true)"
            )),
            _ => Err(not_a_url(url)),
        }
    }
}

fn not_a_url(url: &str) -> String {
    format!("--gitlab-url {url:?} is not a URL such as https://gitlab.example.com")
}

/// GitHub: commit statuses or check runs, the PR comment and the pull-request webhook.
#[derive(Args, Debug)]
pub struct GitHubArgs {
    /// File holding the GitHub webhook secret; enables POST /webhooks/github. Re-read when
    /// it changes (within 10 s), like every credential file.
    #[arg(long, env = "PREVIEW_OPERATOR_GITHUB_WEBHOOK_SECRET_FILE")]
    pub github_webhook_secret_file: Option<PathBuf>,

    /// The GitHub webhook secret itself (prefer the file); enables POST /webhooks/github.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_GITHUB_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub github_webhook_secret: Option<String>,

    /// File holding a GitHub token (statuses: write) for commit statuses on pull requests.
    /// Re-read when it changes (within 10 s).
    #[arg(long, env = "PREVIEW_OPERATOR_GITHUB_TOKEN_FILE")]
    pub github_token_file: Option<PathBuf>,

    /// The GitHub token itself (prefer the file); enables commit statuses.
    #[arg(long, env = "PREVIEW_OPERATOR_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,

    /// GitHub App id: act as the App (check runs, its own rate limit) instead of a token. The
    /// App's installation is found per repository; its tokens are cached and renewed.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_GITHUB_APP_ID",
        requires = "github_app_private_key_file"
    )]
    pub github_app_id: Option<u64>,

    /// File holding the GitHub App's private key (PEM), with --github-app-id. Re-read when
    /// it changes (within 10 s).
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_GITHUB_APP_PRIVATE_KEY_FILE",
        requires = "github_app_id"
    )]
    pub github_app_private_key_file: Option<PathBuf>,

    /// GitHub API base URL (GitHub Enterprise: https://<host>/api/v3).
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,

    /// Largest webhook body accepted, in bytes; larger ones get 413. A `pull_request`
    /// delivery is a few KiB; its largest part, the PR description, is at most 65536
    /// characters.
    #[arg(long, env = "PREVIEW_OPERATOR_WEBHOOK_MAX_BODY", default_value_t = 512 * 1024)]
    pub webhook_max_body: usize,

    /// One comment per preview on its pull request (URL, sha, phase, tests, expiry), edited
    /// in place; needs a token with pull-requests (issues) write.
    #[arg(long, env = "PREVIEW_OPERATOR_GITHUB_PR_COMMENTS")]
    pub github_pr_comments: bool,

    /// A transient deployment per preview and sha (environment `preview/<namespace>/<name>`),
    /// so the pull request shows "View deployment"; `inactive` on teardown. Needs an App or a
    /// token with deployments write.
    #[arg(long, env = "PREVIEW_OPERATOR_GITHUB_DEPLOYMENTS")]
    pub github_deployments: bool,

    /// How often the open pull requests of every repository with previews are listed, and
    /// previews whose PR GitHub reports closed are deleted (a webhook that never arrived).
    /// Needs a token; an error deletes nothing.
    #[arg(long, env = "PREVIEW_OPERATOR_SCM_RESYNC_INTERVAL", default_value = "10m", value_parser = duration_arg)]
    pub scm_resync_interval: Duration,
}

/// What the controller reconciles and how hard it works.
#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// Only reconcile PreviewEnvironments matching this label selector (e.g. to shard tenants
    /// between two operator releases, or to canary a new version on some of them).
    #[arg(long, env = "PREVIEW_OPERATOR_SELECTOR")]
    pub selector: Option<String>,

    /// Previews reconciled at the same time.
    #[arg(long, env = "PREVIEW_OPERATOR_WORKERS", default_value_t = 16)]
    pub workers: u16,

    /// Running previews that roll out a change of their PreviewClass or PreviewTemplate at
    /// once (0: no limit). The others keep running what they run until their turn; a
    /// preview's own change (a new sha) never waits for it.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_MAX_CONCURRENT_ROLLOUTS",
        default_value_t = 10
    )]
    pub max_concurrent_rollouts: usize,

    /// Do not write the status of PreviewClasses (their missing Secrets, tenants and the
    /// previews served). For a release sharded with `--selector` beside another that writes
    /// it: each counts only the previews it reconciles.
    #[arg(long, env = "PREVIEW_OPERATOR_NO_CLASS_STATUS")]
    pub no_class_status: bool,

    /// How often managed namespaces whose PreviewEnvironment is gone are deleted.
    #[arg(long, env = "PREVIEW_OPERATOR_ORPHAN_SWEEP_INTERVAL", default_value = "5m", value_parser = duration_arg)]
    pub orphan_sweep_interval: Duration,

    /// The operator's ServiceAccount (the chart sets it), named in the RoleBinding command a
    /// team runs to let the operator read its template's Secrets and ConfigMaps.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_SERVICE_ACCOUNT",
        default_value = "preview-operator"
    )]
    pub service_account: String,

    /// The chart's ClusterRole that reads Secrets and ConfigMaps, bound per team namespace.
    #[arg(
        long,
        env = "PREVIEW_OPERATOR_SOURCE_READER_ROLE",
        default_value = "preview-operator-source-reader"
    )]
    pub source_reader_role: String,

    /// The namespace holding the Secrets PreviewClasses name (image pull secrets, the ingress
    /// TLS Secret), the only namespace whose Secrets the operator reads without a team's
    /// opt-in. The chart sets a namespace of their own, so that the operator cannot read its
    /// own credentials; default: the operator's namespace.
    #[arg(long, env = "PREVIEW_OPERATOR_PLATFORM_SECRETS_NAMESPACE")]
    pub platform_secrets_namespace: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_listen_address_may_leave_out_the_host() {
        assert_eq!(
            listen_addr(":8080"),
            Ok("0.0.0.0:8080".parse().expect("addr"))
        );
        assert_eq!(
            listen_addr("127.0.0.1:1"),
            Ok("127.0.0.1:1".parse().expect("addr"))
        );
        let refused = listen_addr("8080").expect_err("no port separator");
        assert!(refused.contains(":8080"), "{refused}");
    }

    #[test]
    fn flags_of_every_group_parse() {
        let cli = Cli::try_parse_from([
            "preview-operator",
            "run",
            "--http-addr",
            "127.0.0.1:9000",
            "--leader-election",
            "--lease-duration",
            "6s",
            "--workers",
            "4",
            "--progress-deadline",
            "3m",
        ])
        .expect("valid flags");
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        assert_eq!(args.http.http_addr.port(), 9000);
        assert_eq!(args.http.health_addr, "0.0.0.0:8082".parse().expect("addr"));
        assert!(args.leader.leader_election);
        assert_eq!(args.leader.lease_duration, Duration::from_secs(6));
        assert_eq!(args.controller.workers, 4);
        assert_eq!(args.policy.progress_deadline, Duration::from_secs(180));
    }

    fn gitlab(args: &[&str]) -> GitLabArgs {
        let cli = Cli::try_parse_from(["preview-operator", "run"].iter().chain(args))
            .expect("valid flags");
        let Command::Run(run) = cli.command else {
            panic!("run expected");
        };
        run.gitlab
    }

    #[test]
    fn the_probes_listener_has_its_own_port_apart_from_the_wake_listener() {
        let cli = Cli::try_parse_from(["preview-operator", "run", "--health-addr", ":9090"])
            .expect("valid flags");
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        assert_eq!(args.http.health_addr.port(), 9090);
        let defaults = Cli::try_parse_from(["preview-operator", "run"]).expect("valid flags");
        let Command::Run(args) = defaults.command else {
            panic!("run expected");
        };
        let ports = [
            args.http.http_addr.port(),
            args.http.wake_addr.port(),
            args.http.health_addr.port(),
        ];
        assert_eq!(ports, [8080, 8081, 8082]);
    }

    #[test]
    fn a_plain_http_gitlab_needs_the_flag() {
        assert_eq!(
            gitlab(&[]).url().as_deref(),
            Ok("https://gitlab.com"),
            "the default"
        );
        let refused = gitlab(&["--gitlab-url", "http://gitlab.internal"])
            .url()
            .expect_err("plain http without the flag");
        assert!(
            refused.contains("http://gitlab.internal") && refused.contains("--gitlab-allow-http"),
            "{refused}"
        );
        assert_eq!(
            gitlab(&[
                "--gitlab-url",
                "http://127.0.0.1:3000",
                "--gitlab-allow-http"
            ])
            .url()
            .as_deref(),
            Ok("http://127.0.0.1:3000")
        );
        for bad in [
            "gitlab.example.com",
            "ftp://gitlab.example.com",
            "https://",
            "",
        ] {
            let refused = gitlab(&["--gitlab-url", bad, "--gitlab-allow-http"])
                .url()
                .expect_err(bad);
            assert!(refused.contains("https://gitlab.example.com"), "{refused}");
        }
    }
}
