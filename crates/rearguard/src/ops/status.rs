//! Where each app stands: its current release, known-good release, guard, live view.

use serde::Serialize;

use super::{Result, Workspace};
use crate::guard::Snapshot;
use crate::ledger::Release;

/// A guard snapshot older than this (or three of the guard's ticks, when longer) is not
/// live.
const LIVE_MS: i64 = 5_000;

/// One app as `status` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AppStatus {
    pub app: String,
    /// The release that serves (or must, after a restart).
    pub current: Option<Release>,
    /// The version a rollback goes to by default.
    pub known_good: Option<String>,
    /// Whether a live guard holds the app.
    pub guarded: bool,
    /// The guard's live view (judgement, routes, usage), when it is fresh.
    pub live: Option<Snapshot>,
}

pub async fn app_status(workspace: &Workspace, app: &str) -> Result<AppStatus> {
    workspace.check_app(app)?;
    let ledger = &workspace.ledger;
    let current = ledger.current(app).await?;
    let known_good = ledger.known_good(app, None).await?;
    let guarded = workspace.guard_running(app).await?;
    let live_ms = LIVE_MS.max(3 * workspace.config.guard.tick.as_millis() as i64);
    let live = ledger
        .snapshot(app)
        .await?
        .filter(|(at, _)| guarded && ledger.now() - at < live_ms)
        .map(|(_, body)| body);
    Ok(AppStatus {
        app: app.to_string(),
        current,
        known_good: known_good.map(|r| r.version),
        guarded,
        live,
    })
}

/// Every configured app's status, in the config's order.
pub async fn every_app_status(workspace: &Workspace) -> Result<Vec<AppStatus>> {
    let mut all = Vec::new();
    for app in workspace.config.apps.keys() {
        all.push(app_status(workspace, app).await?);
    }
    Ok(all)
}

impl AppStatus {
    /// The guard's evidence against the watched release as shares of what a rollback
    /// needs: (error rate, latency). None without a live judgement.
    pub fn evidence(&self) -> Option<(f64, f64)> {
        self.live.as_ref()?.evidence()
    }
}
