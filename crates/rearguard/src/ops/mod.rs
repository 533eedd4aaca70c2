//! The use cases: record a release, request a rollback, work an incident, manage tokens.
//! The CLI and the HTTP server are two thin edges over these; each maps [`OpsError`] once
//! (exit codes, HTTP statuses) and supplies the [`Actor`]. Every write is audited here, so
//! no edge can forget to.

mod access;
mod incidents;
mod releases;
mod status;

use std::path::Path;

pub use access::{NewToken, TOKEN_PREFIX, authenticate, create_token, hash, revoke_token};
pub use incidents::{IncidentAction, act_on_incident};
pub use releases::{RollbackPlan, RollbackRequest, record_release, request_rollback};
pub use status::{AppStatus, app_status, every_app_status};

use crate::config::{self, Config};
use crate::ledger::{AuditAction, AuditOutcome, Ledger, LedgerError};
use anyhow::Context as _;

use crate::guard::{Context, Progress};
use crate::rollback_log::RollbackLog;
use crate::{clock, identity};

/// Who asks, for the record: the OS user at the CLI, the token's owner at the API.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `user@host`, or `token:<name>`.
    pub name: String,
    /// `cli`, or the client's address.
    pub source: String,
}

impl Actor {
    pub fn cli() -> Self {
        Self {
            name: identity::actor(),
            source: "cli".into(),
        }
    }
}

/// Why a use case did not happen. Edges map these once: `NotFound`, `Invalid` and
/// `Conflict` are the asker's to fix (exit 2; 404, 422, 409), `Internal` is not (exit 1;
/// 500, logged).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<LedgerError> for OpsError {
    fn from(e: LedgerError) -> Self {
        OpsError::Internal(e.into())
    }
}

impl From<crate::UsageError> for OpsError {
    fn from(e: crate::UsageError) -> Self {
        OpsError::Invalid(e.0)
    }
}

impl OpsError {
    /// How the audit log sees this outcome.
    fn outcome(&self) -> AuditOutcome {
        match self {
            OpsError::Internal(_) => AuditOutcome::Failed,
            _ => AuditOutcome::Refused,
        }
    }
}

pub type Result<T> = std::result::Result<T, OpsError>;

/// The config and its ledger: what every use case works on.
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
            config: std::sync::Arc::new(self.config.clone()),
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
            metrics: Default::default(),
            work: Default::default(),
            first_ticks: std::sync::Arc::new(tokio::sync::Semaphore::new(
                crate::guard::FIRST_TICKS_AT_ONCE,
            )),
        })
    }

    /// The backend of `app`, to ask it what the guard would (is a version available?).
    pub fn backend(&self, app: &str) -> Result<Box<dyn crate::backends::Backend>> {
        let config = self.app(app)?;
        let dirs = crate::backends::Workdirs::of(&self.config, &self.config_path);
        Ok(config.backend.build(app, dirs))
    }

    /// Whether a live guard (another process) holds `app`.
    pub async fn guard_running(&self, app: &str) -> Result<bool> {
        let lease = self.ledger.lease(app).await?;
        Ok(lease
            .is_some_and(|l| l.expires_at > self.ledger.now() && identity::holder_alive(&l.holder)))
    }

    /// Refuses when no guard holds `app`: a request would then wait for nobody.
    pub async fn require_guard(&self, app: &str) -> Result<()> {
        if self.guard_running(app).await? {
            return Ok(());
        }
        Err(OpsError::Conflict(format!(
            "no guard is running for app {app:?}: start `rearguard guard` first (it deploys and rolls back)"
        )))
    }

    pub fn app(&self, app: &str) -> Result<&crate::config::AppConfig> {
        self.config.app(app).map_err(|e| OpsError::NotFound(e.0))
    }

    pub fn check_app(&self, app: &str) -> Result<()> {
        self.app(app).map(|_| ())
    }

    /// Runs a write and keeps it in the audit log with its outcome, whatever it is.
    pub(crate) async fn audited<T>(
        &self,
        actor: &Actor,
        action: AuditAction,
        target: &str,
        detail: &str,
        write: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let result = write.await;
        let outcome = match &result {
            Ok(_) => AuditOutcome::Ok,
            Err(e) => e.outcome(),
        };
        let detail = match &result {
            Err(e @ (OpsError::NotFound(_) | OpsError::Invalid(_) | OpsError::Conflict(_))) => {
                format!("{detail}: {e}")
            }
            _ => detail.to_string(),
        };
        let detail = crate::telemetry::redact(&detail);
        self.ledger
            .audit(&actor.name, &actor.source, action, target, outcome, &detail)
            .await?;
        result
    }
}

/// Checks a version given by a person or a pipeline before it reaches a command or an API.
pub fn check_version(version: &str) -> Result<()> {
    crate::names::check_version(version)
        .map_err(|e| OpsError::Invalid(format!("invalid version: {e}")))
}
