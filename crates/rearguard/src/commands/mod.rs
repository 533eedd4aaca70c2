//! One file per command; `dispatch` is the only place that lists them.

pub mod access;
pub mod backtest;
pub mod check;
pub mod demo;
pub mod deploy;
pub mod events;
pub mod guard;
pub mod incident;
pub mod output;
pub mod records;
pub mod rollback;
pub mod router;
pub mod serve;
pub mod status;
pub mod validate;
pub mod versions;

use crate::Outcome;
use crate::cli::{Cli, Command};

pub async fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    let config_path = cli.global.config.as_path();
    let server = cli.global.server.as_deref();
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Validate => validate::run(config_path),
        Command::Deploy(args) => deploy::run(config_path, server, args).await,
        Command::Rollback(args) => rollback::run(config_path, server, args).await,
        Command::Versions(args) => versions::run(config_path, server, args).await,
        Command::Status(args) => status::run(config_path, server, args).await,
        Command::Check(args) => check::run(config_path, args).await,
        Command::Events(args) => events::run(config_path, args).await,
        Command::Guard(args) => guard::run(config_path, args).await,
        Command::Incidents(args) => incident::list(config_path, server, args).await,
        Command::Incident(args) => incident::act(config_path, server, args.action).await,
        Command::Postmortem(args) => incident::postmortem(config_path, args).await,
        Command::Report(args) => incident::report(config_path, args).await,
        Command::Backtest(args) => backtest::run(config_path, args).await,
        Command::Serve(args) => serve::run(config_path, args).await,
        Command::Token(args) => access::token(config_path, args.action).await,
        Command::Audit(args) => access::audit(config_path, args).await,
        Command::DemoApp(args) => crate::demo_app::run(args).await,
        Command::Router(args) => router::run(args).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "rearguard", &mut std::io::stdout());
            Ok(Outcome::Success)
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command).render(&mut std::io::stdout())?;
            Ok(Outcome::Success)
        }
    }
}

pub use crate::ops::Workspace;

pub use crate::ops::check_version;

/// Cancelled on Ctrl-C or SIGTERM.
pub fn stop_on_signals() -> tokio_util::sync::CancellationToken {
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        token.cancel();
    });
    stop
}
