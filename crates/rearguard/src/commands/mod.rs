//! One file per command; `dispatch` is the only place that lists them.

pub mod backtest;
pub mod validate;

use crate::Outcome;
use crate::cli::{Cli, Command};

pub async fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Backtest(args) => backtest::run(args).await,
        Command::Validate => validate::run(&cli.global.config),
        Command::DemoApp(args) => crate::demo_app::run(args).await,
        _ => anyhow::bail!("not yet"),
    }
}
