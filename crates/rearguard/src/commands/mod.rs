//! One file per command; `dispatch` is the only place that lists them.

pub mod backtest;
pub mod check;
pub mod demo;
pub mod deploy;
pub mod events;
pub mod guard;
pub mod incident;
pub mod output;
pub mod rollback;
pub mod router;
pub mod status;
pub mod validate;
pub mod versions;

use std::path::Path;

use anyhow::Context as _;

use crate::cli::{Cli, Command};
use crate::config::{self, Config};
use crate::guard::{Context, Progress};
use crate::ledger::Ledger;
use crate::rollback_log::RollbackLog;
use crate::{Outcome, UsageError, clock, identity, names};

pub async fn dispatch(cli: Cli) -> anyhow::Result<Outcome> {
    let config_path = cli.global.config.as_path();
    match cli.command {
        Command::Demo(args) => demo::run(args).await,
        Command::Validate => validate::run(config_path),
        Command::Deploy(args) => deploy::run(config_path, args).await,
        Command::Rollback(args) => rollback::run(config_path, args).await,
        Command::Versions(args) => versions::run(config_path, args).await,
        Command::Status(args) => status::run(config_path, args).await,
        Command::Check(args) => check::run(config_path, args).await,
        Command::Events(args) => events::run(config_path, args).await,
        Command::Guard(args) => guard::run(config_path, args).await,
        Command::Incidents(args) => incident::list(config_path, args).await,
        Command::Incident(args) => incident::act(config_path, args.action).await,
        Command::Postmortem(args) => incident::postmortem(config_path, args).await,
        Command::Report(args) => incident::report(config_path, args).await,
        Command::Backtest(args) => backtest::run(config_path, args).await,
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

/// The config and its ledger, for commands that need both.
pub struct Workspace {
    pub config: Config,
    pub config_path: std::path::PathBuf,
    pub ledger: Ledger,
}

impl Workspace {
    /// For commands that read or record: `${NAME}`s outside where the records live may be
    /// unset.
    pub async fn open(config_path: &Path) -> anyhow::Result<Self> {
        let config = config::load(config_path, config::Needs::Records)?;
        Self::with_config(config, config_path).await
    }

    /// For commands that guard (run the app, tell people): every `${NAME}` must be set.
    pub async fn open_to_guard(config_path: &Path) -> anyhow::Result<Self> {
        let config = config::load(config_path, config::Needs::Everything)?;
        Self::with_config(config, config_path).await
    }

    pub async fn with_config(config: Config, config_path: &Path) -> anyhow::Result<Self> {
        let ledger = Ledger::open(&config.database_url(config_path), clock::system()).await?;
        Ok(Self {
            config,
            config_path: config_path.to_path_buf(),
            ledger,
        })
    }

    /// The guard context for guarding from this process (opened with `open_to_guard`).
    pub fn guard_context(
        &self,
        progress: Option<tokio::sync::mpsc::UnboundedSender<Progress>>,
    ) -> anyhow::Result<Context> {
        // `validate` checked the templates: a failure here is a bug, and a guard that
        // cannot tell anyone must not start as if it could.
        let alerts = crate::incidents::Alerts::start(
            &self.config.notifications,
            &self.ledger,
            crate::notify::RETRIES.to_vec(),
        )
        .context("the notification templates do not compile")?
        .map(std::sync::Arc::new);
        Ok(Context {
            config: self.config.clone(),
            config_path: self.config_path.clone(),
            ledger: self.ledger.clone(),
            clock: clock::system(),
            rollback_log: RollbackLog::new(self.config.rollback_log(&self.config_path)),
            actor: identity::actor(),
            holder: identity::lease_holder(),
            progress,
            alerts,
            prometheus: Default::default(),
            alerts_received: None,
        })
    }

    /// The backend of `app`, to ask it what the guard would (is a version available?).
    pub fn backend(&self, app: &str) -> anyhow::Result<Box<dyn crate::backends::Backend>> {
        let config = self.config.app(app)?;
        let dirs = crate::backends::Workdirs::of(&self.config, &self.config_path);
        Ok(config.backend.build(app, dirs))
    }

    /// Whether a live guard (another process) holds `app`.
    pub async fn guard_running(&self, app: &str) -> anyhow::Result<bool> {
        let lease = self.ledger.lease(app).await?;
        Ok(lease
            .is_some_and(|l| l.expires_at > self.ledger.now() && identity::holder_alive(&l.holder)))
    }

    pub fn check_app(&self, app: &str) -> Result<(), UsageError> {
        self.config.app(app).map(|_| ())
    }
}

/// Checks a version given on the command line.
pub fn check_version(version: &str) -> Result<(), UsageError> {
    names::check_version(version).map_err(|e| UsageError(format!("invalid version: {e}")))
}

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
