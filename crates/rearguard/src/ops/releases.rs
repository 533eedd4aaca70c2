//! Releases and rollbacks asked for by a person or a pipeline. The guard does the work;
//! these record what was asked, after checking it can be done.

use super::{Actor, OpsError, Result, Workspace, check_version};
use crate::backends::Backend;
use crate::ledger::AuditAction;
use crate::ledger::{Release, Rollback, RollbackStatus, Trigger};

/// Records a release of `app` at `version` for the guard to deploy, once its artifacts are
/// all there (and, with `needs_guard`, a guard runs to deploy it).
pub async fn record_release(
    workspace: &Workspace,
    actor: &Actor,
    app: &str,
    version: &str,
    needs_guard: bool,
) -> Result<Release> {
    let write = async {
        workspace.check_app(app)?;
        check_version(version)?;
        if needs_guard {
            workspace.require_guard(app).await?;
        }
        workspace
            .backend(app)?
            .check_available(version)
            .await
            .map_err(|e| OpsError::Invalid(e.to_string()))?;
        Ok(workspace
            .ledger
            .record_release(app, version, &actor.name)
            .await?)
    };
    workspace
        .audited(
            actor,
            AuditAction::RecordRelease,
            app,
            &format!("version {version}"),
            write,
        )
        .await
}

/// A rollback as it would be requested: from what serves to what.
#[derive(Debug, Clone)]
pub struct RollbackPlan {
    pub app: String,
    pub current: Release,
    pub target: Release,
}

impl RollbackPlan {
    /// Nothing to do: the target serves already.
    pub fn is_noop(&self) -> bool {
        self.current.version == self.target.version
    }
}

/// What a rollback request came to.
#[derive(Debug, Clone)]
pub enum RollbackRequest {
    /// The target was serving already.
    AlreadyServing(Release),
    /// Recorded; the guard performs it.
    Requested(Rollback),
}

/// Rolls `app` back to `version`, by default to the last known-good release: checks it can
/// be done (the target's artifacts are there, a guard runs), lets `confirm` see the plan,
/// and records the request for the guard to perform.
pub async fn request_rollback(
    workspace: &Workspace,
    actor: &Actor,
    app: &str,
    version: Option<&str>,
    reason: Option<&str>,
    confirm: impl FnOnce(&RollbackPlan) -> Result<()>,
) -> Result<RollbackRequest> {
    let reason = reason.unwrap_or("manual rollback");
    let write = async {
        let plan = plan_rollback(workspace, app, version).await?;
        if plan.is_noop() {
            return Ok(RollbackRequest::AlreadyServing(plan.target));
        }
        confirm(&plan)?;
        let rollback = workspace
            .ledger
            .record_rollback(
                &plan.current,
                &plan.target,
                Trigger::Manual,
                reason,
                None,
                &actor.name,
                RollbackStatus::Requested,
            )
            .await?;
        Ok(RollbackRequest::Requested(rollback))
    };
    let detail = format!("to {}: {reason}", version.unwrap_or("known-good"));
    workspace
        .audited(actor, AuditAction::RequestRollback, app, &detail, write)
        .await
}

async fn plan_rollback(
    workspace: &Workspace,
    app: &str,
    version: Option<&str>,
) -> Result<RollbackPlan> {
    workspace.check_app(app)?;
    if let Some(version) = version {
        check_version(version)?;
    }
    let ledger = &workspace.ledger;
    let current = ledger.current(app).await?.ok_or_else(|| {
        OpsError::Conflict(format!(
            "app {app:?} has no current release: nothing to roll back"
        ))
    })?;
    let target = match version {
        Some(version) => ledger
            .release_of_version(app, version)
            .await?
            .ok_or_else(|| {
                OpsError::NotFound(format!(
                    "version {version:?} was never recorded for app {app:?}"
                ))
            })?,
        None => ledger.known_good(app, Some(current.id)).await?.ok_or_else(|| {
            OpsError::Conflict(format!(
                "app {app:?} has no known-good release other than the current one ({}); name a version",
                current.version
            ))
        })?,
    };
    let plan = RollbackPlan {
        app: app.to_string(),
        current,
        target,
    };
    if plan.is_noop() {
        return Ok(plan);
    }
    let backend = workspace.backend(app)?;
    if let Err(e) = backend.check_available(&plan.target.version).await {
        let available = available_versions(workspace, backend.as_ref(), app).await?;
        return Err(OpsError::Conflict(format!(
            "{e}; versions that can be rolled back to: {}",
            available.join(", ")
        )));
    }
    workspace.require_guard(app).await?;
    Ok(plan)
}

/// Recorded versions whose components are all available, newest first.
async fn available_versions(
    workspace: &Workspace,
    backend: &dyn Backend,
    app: &str,
) -> Result<Vec<String>> {
    let mut versions: Vec<String> = Vec::new();
    for release in workspace.ledger.releases(app).await? {
        if !versions.contains(&release.version)
            && backend.check_available(&release.version).await.is_ok()
        {
            versions.push(release.version);
        }
    }
    Ok(versions)
}
