//! The command line: every command, flag and its help text. Parsing only; no work here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rearguard_judge::Span;

/// Guarded releases: rearguard records every release of an app, watches each new one
/// against the release it replaced, and rolls a bad one back on its own.
///
/// Start with `rearguard demo`, then write a `rearguard.yaml` (see README.md) and run
/// `rearguard guard` beside your app.
#[derive(Debug, Parser)]
#[command(
    name = "rearguard",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file defining the apps.
    #[arg(
        long,
        short,
        global = true,
        env = "REARGUARD_CONFIG",
        default_value = "rearguard.yaml"
    )]
    pub config: PathBuf,
    /// A rearguard server (`rearguard serve`) to read from and act through instead of this
    /// host's ledger, with the token in REARGUARD_TOKEN. Works for status, versions, deploy
    /// (the server's guard deploys), rollback, incidents and incident.
    #[arg(long, global = true, env = "REARGUARD_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "REARGUARD_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `rearguard=debug` (RUST_LOG syntax; RUST_LOG is read too).
    /// Default: `warn` (`error` for the demo, which tells its own story).
    #[arg(long, global = true, env = "REARGUARD_LOG")]
    pub log: Option<String>,
    /// When to colour output: `auto` colours on a terminal unless NO_COLOR is set.
    #[arg(long, global = true, value_enum, default_value_t = ColorWhen::Auto, env = "REARGUARD_COLOR")]
    pub color: ColorWhen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

impl ColorWhen {
    /// Whether to colour what goes to a stream that is (or is not) a terminal.
    pub fn enabled(self, terminal: bool) -> bool {
        match self {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => {
                terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show rearguard at work, from nothing: deploy a good release, then a bad one, and
    /// watch it rolled back on its own. Needs nothing but this binary and two free ports.
    Demo(DemoArgs),
    /// Check the config file; every problem is reported with file:line:column.
    Validate,
    /// Record a release and deploy it; with --watch, guard it through its bake time.
    ///
    /// Exit codes: 0 deployed (with --watch: stable), 3 rolled back, 4 failed, 5 still
    /// not settled when --timeout ran out (the guard goes on).
    Deploy(DeployArgs),
    /// Roll an app back, by default to its last known-good release.
    ///
    /// Exit codes: 0 done, 4 the rollback failed, 5 not finished when --timeout ran out
    /// (the guard goes on).
    Rollback(RollbackArgs),
    /// Release history of an app: version, state, when, by whom, current and known-good.
    Versions(AppJsonArgs),
    /// Current release, state and live signals, of one app or all.
    Status(StatusArgs),
    /// Run an app's checks once, now, against the release the guard serves.
    ///
    /// All at once, each bounded by its timeout. --json prints application/health+json.
    /// Exit codes: 0 pass (warnings included), 4 a check fails.
    Check(AppJsonArgs),
    /// What happened to an app, oldest first: releases recorded and watched, promotions,
    /// rollbacks, restarts of instances that died, watches resumed after a guard restart.
    Events(EventsArgs),
    /// Guard every configured app continuously: host their router and processes, watch
    /// each release, roll back bad ones. Runs until stopped (Ctrl-C or SIGTERM).
    Guard(GuardArgs),
    /// Incidents, newest first (one is opened with every rollback).
    Incidents(IncidentsArgs),
    /// One incident: show it, or acknowledge, annotate, re-grade or resolve it.
    Incident(IncidentArgs),
    /// Draft the post-mortem of an incident, in Markdown, from its record.
    Postmortem(PostmortemArgs),
    /// Incidents by severity, MTTD, MTTR, change failure rate, availability and rollback
    /// durations over a period.
    Report(ReportArgs),
    /// Replay recorded traffic through the judge: check a policy against your own data.
    ///
    /// From a file (CSV and --meta), or a real release from the ledger (--app and
    /// --release, judged with the app's policy unless --policy), which --export writes in
    /// the file format. CSV columns: t, version (baseline|candidate), requests, errors, le_5 .. le_10000,
    /// le_inf (per-step counts, latency buckets cumulative in milliseconds). META is JSON:
    /// {"mode": "bluegreen"|"canary", "deploy_at": SECONDS, "step_seconds": 1}.
    ///
    /// Exit codes: 0 keep, 3 the judge would roll the release back (a pipeline gate). With
    /// --json the verdict is in the output and the exit code is 0 either way.
    Backtest(BacktestArgs),
    /// Serve the HTTP API (`/api/v1`, OpenAPI at `/api/v1/openapi.json`), rearguard's own
    /// `/metrics` and `/health/live`, `/health/ready`, over the config's ledger.
    ///
    /// Every API route needs `Authorization: Bearer TOKEN` (`rearguard token create`);
    /// writes need an operator's token. A running `rearguard guard` performs what the API
    /// records (releases, rollbacks), as it does for the CLI.
    Serve(ServeArgs),
    /// API tokens: create (shown once), list, revoke.
    Token(TokenArgs),
    /// The audit log: every write from the CLI or the API, with actor, source and outcome.
    Audit(AuditArgs),
    /// The bundled demo service (used by `rearguard demo`; handy for trying configs).
    #[command(disable_version_flag = true)]
    DemoApp(DemoAppArgs),
    /// Run the built-in router of one app. The guard starts it, and it outlives the guard:
    /// it keeps serving the last routes and counting while the guard restarts.
    #[command(hide = true)]
    Router(RouterArgs),
    /// Print a shell completion script: `rearguard completions bash > /etc/bash_completion.d/rearguard`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `rearguard man > /usr/local/share/man/man1/rearguard.1`.
    Man,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Port the demo's router listens on (the app's public port).
    #[arg(long, default_value_t = 18080)]
    pub port: u16,
    /// Share of requests v2 fails (the bad release).
    #[arg(long, default_value_t = 0.2)]
    pub bad_error_rate: f64,
    /// Print a JSON summary as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Directory for the demo's database and logs (default: a new temporary one, kept).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// A YAML file with a `notifications:` section, to see the demo's incident arrive in
    /// your channels (secrets from the environment, as for the guard).
    #[arg(long)]
    pub notifications: Option<PathBuf>,
    /// Also serve the API and the dashboard on this address (with an operator token made
    /// for the demo), and keep serving after the demo until Ctrl-C: the dashboard shows
    /// the rollback.
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// App name from the config.
    pub app: String,
    /// Version to deploy: an immutable tag such as the git SHA ([A-Za-z0-9._-], 1-128).
    #[arg(id = "release_version", value_name = "VERSION")]
    pub version: String,
    /// Stay and guard the release through its bake time, rolling back when the policy says so.
    #[arg(long)]
    pub watch: bool,
    /// Print the outcome as JSON on the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Stop waiting after this long ("30m", "2h"); the guard goes on.
    #[arg(long, default_value = "6h", value_parser = span)]
    pub timeout: Span,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// App name from the config.
    pub app: String,
    /// Version to go back to (default: the last known-good release).
    #[arg(id = "release_version", value_name = "VERSION")]
    pub version: Option<String>,
    /// Do not ask for confirmation (required without a terminal).
    #[arg(long, short)]
    pub yes: bool,
    /// Why, for the record.
    #[arg(long)]
    pub reason: Option<String>,
    /// Print the outcome as JSON on the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Stop waiting for the guard after this long ("90s", "10m"); it goes on.
    #[arg(long, default_value = "10m", value_parser = span)]
    pub timeout: Span,
}

/// A duration on the command line: "90s", "5m", "1h30m", or a number of seconds.
fn span(text: &str) -> Result<Span, String> {
    Span::parse(text)
}

#[derive(Debug, Args)]
pub struct AppJsonArgs {
    /// App name from the config.
    pub app: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// App name (default: every app in the config).
    pub app: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// App name from the config.
    pub app: String,
    /// Only events within this long ("1d", "12h", "30m").
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RouterArgs {
    /// The app it routes for.
    #[arg(long)]
    pub app: String,
    /// Its control socket (created with mode 0600).
    #[arg(long)]
    pub control: PathBuf,
    /// COMPONENT=ADDRESS:PORT, once per component it serves.
    #[arg(long = "listen", value_parser = component_address, required = true)]
    pub listen: Vec<(String, std::net::SocketAddr)>,
    /// Threads forwarding requests (1: a single-threaded runtime, the cheapest per request).
    #[arg(long, default_value = "1")]
    pub threads: std::num::NonZeroUsize,
}

fn component_address(text: &str) -> Result<(String, std::net::SocketAddr), String> {
    let (component, address) = text
        .split_once('=')
        .ok_or_else(|| format!("expected COMPONENT=ADDRESS:PORT, got {text:?}"))?;
    let address = address
        .parse()
        .map_err(|e| format!("{address:?} is not ADDRESS:PORT: {e}"))?;
    Ok((component.to_string(), address))
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback should sit behind TLS (a reverse proxy).
    #[arg(long, default_value = "127.0.0.1:7070", env = "REARGUARD_LISTEN")]
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub action: TokenAction,
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Create a token; it is printed once, and only its hash is kept.
    Create {
        /// A name to know it by (who or what uses it): [A-Za-z0-9._-].
        #[arg(long)]
        name: String,
        /// viewer reads; operator also records releases, rolls back and works incidents;
        /// admin also reads the audit log and manages tokens.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Print the token and its record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The tokens (never their secrets), revoked ones included.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: it stops working at once.
    Revoke { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Viewer,
    Operator,
    Admin,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries within this long ("7d", "12h").
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GuardArgs {
    /// Guard only these apps (default: all in the config).
    #[arg(long = "app")]
    pub apps: Vec<String>,
    /// Also serve the API, the dashboard and `/metrics` (with the guard's own tick and
    /// decision figures) on this address, as `rearguard serve` does.
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct IncidentsArgs {
    /// Only incidents detected within this long ("30d", "12h").
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct IncidentArgs {
    #[command(subcommand)]
    pub action: IncidentAction,
}

#[derive(Debug, Subcommand)]
pub enum IncidentAction {
    /// The incident and its timeline.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Add a note to the timeline (notes become the post-mortem's lessons).
    Note { id: i64, text: String },
    /// Acknowledge: someone is on it.
    Ack { id: i64 },
    /// Change the severity (P1 to P4).
    Severity { id: i64, severity: String },
    /// Record the root cause.
    RootCause { id: i64, text: String },
    /// Resolve the incident.
    Resolve {
        id: i64,
        /// The root cause, if known now.
        #[arg(long)]
        root_cause: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct PostmortemArgs {
    /// Incident id.
    pub id: i64,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A minijinja template to use instead of the built-in one.
    #[arg(long)]
    pub template: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The period, back from now ("30d", "7d", "12h").
    #[arg(long, default_value = "30d")]
    pub since: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// Recorded traffic, one row per step per version.
    #[arg(required_unless_present = "app", conflicts_with = "app")]
    pub csv: Option<PathBuf>,
    /// The scenario's metadata (mode, deploy time, step length).
    #[arg(long, required_unless_present = "app")]
    pub meta: Option<PathBuf>,
    /// Replay a release of this app from the ledger (with --release).
    #[arg(long, requires = "release")]
    pub app: Option<String>,
    /// The version to replay, as recorded (its latest watch).
    #[arg(long, requires = "app")]
    pub release: Option<String>,
    /// Write the replayed traffic to DIR/APP-VERSION.csv and .json (the scenario format).
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
    /// A YAML file with policy keys (as under an app's `policy:`); default policy otherwise.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Print the decision as JSON on the last line of stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoAppArgs {
    /// Version this instance reports.
    #[arg(long = "version", id = "app_version", value_name = "VERSION")]
    pub version: String,
    /// Port to listen on.
    #[arg(long)]
    pub port: u16,
    /// Address to listen on (0.0.0.0 in a container, for its published port to reach it).
    #[arg(long, default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
    /// Share of requests answered with 500.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Delay added to every response, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub latency_ms: u64,
    /// When this instance's version is this one, fail `--bad-error-rate` of requests
    /// instead (one command template can then serve good and bad versions).
    #[arg(long)]
    pub bad_version: Option<String>,
    /// Share of requests the bad version fails.
    #[arg(long, default_value_t = 0.2)]
    pub bad_error_rate: f64,
    /// Status code of GET /health (to try a release that serves but fails its checks).
    #[arg(long, default_value_t = 200)]
    pub health_status: u16,
    /// Keep one core busy (to try CPU limits: `max_cpu`).
    #[arg(long)]
    pub busy: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
