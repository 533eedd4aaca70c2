//! rearguard: guarded releases. This crate is the application around the pure judge
//! (`rearguard-judge`): ledger, guard loop, backends, router, checks and the CLI.

pub mod argv;
pub mod backends;
pub mod checks;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod demo_app;
pub mod guard;
pub mod identity;
pub mod incidents;
pub mod ledger;
pub mod names;
pub mod notify;
pub mod ops;
pub mod rollback_log;
pub mod router;
pub mod secret;
pub mod server;
pub mod signals;
pub mod telemetry;
pub mod traffic;

use std::process::ExitCode;

/// An HTTP client whose requests give up after `timeout`. The binary installs ring as the
/// process's TLS provider first thing; a library caller (a test) may not have, and reqwest
/// panics without one, so it is installed here too (a second install is a no-op).
pub fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, reqwest::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(timeout).build()
}

/// How a command ended, as the exit code tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done; for a watched deploy: the release is stable.
    Success,
    /// The release was rolled back.
    RolledBack,
    /// The release failed and could not be rolled back.
    Failed,
    /// Gave up waiting (`--timeout`); what was asked for may still happen.
    TimedOut,
}

impl Outcome {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::RolledBack => ExitCode::from(3),
            Outcome::Failed => ExitCode::from(4),
            Outcome::TimedOut => ExitCode::from(5),
        }
    }
}

/// A problem with what the user asked for (exit code 2), as opposed to one met doing it (1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs a parsed command line to its exit code; errors are printed on one line.
/// The router forwards on as many threads as it is told (one by default: a
/// single-threaded runtime is the cheapest per request); every other command uses all cores.
fn runtime_for(command: &cli::Command) -> tokio::runtime::Builder {
    match command {
        cli::Command::Router(args) if args.threads.get() == 1 => {
            tokio::runtime::Builder::new_current_thread()
        }
        cli::Command::Router(args) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(args.threads.get());
            builder
        }
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
}

pub fn run(cli: cli::Cli) -> ExitCode {
    let default_filter = match cli.command {
        cli::Command::Demo(_) => "error",
        _ => "warn",
    };
    let filter = cli
        .global
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|f| !f.is_empty()))
        .unwrap_or_else(|| default_filter.to_string());
    let ansi = cli
        .global
        .color
        .enabled(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    telemetry::init(cli.global.log_format, &filter, ansi);
    let runtime = match runtime_for(&cli.command).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            telemetry::stderr_line(
                "ERROR",
                &format!("error: cannot start the async runtime: {e}"),
            );
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => {
            telemetry::stderr_line(
                "ERROR",
                &format!("error: {}", telemetry::redact(&format!("{error:#}"))),
            );
            let asked_wrong = error.downcast_ref::<UsageError>().is_some()
                || error
                    .downcast_ref::<ops::OpsError>()
                    .is_some_and(|e| !matches!(e, ops::OpsError::Internal(_)));
            if asked_wrong {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
