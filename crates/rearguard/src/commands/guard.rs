//! `rearguard guard`: guard every configured app (or those named) until stopped. Under a
//! service manager (systemd's `Type=notify`), it says when it is ready and when it stops.

use std::path::Path;

use sd_notify::NotifyState;

use super::{Workspace, stop_on_signals};
use crate::Outcome;
use crate::cli::GuardArgs;

pub async fn run(config_path: &Path, args: GuardArgs) -> anyhow::Result<Outcome> {
    let workspace = Workspace::open_to_guard(config_path).await?;
    let apps: Vec<String> = if args.apps.is_empty() {
        workspace.config.apps.keys().cloned().collect()
    } else {
        args.apps
    };
    for app in &apps {
        workspace.check_app(app)?;
    }
    let stop = stop_on_signals();
    eprintln!("rearguard: guarding {} (Ctrl-C to stop)", apps.join(", "));
    let status = format!("guarding {}", apps.join(", "));
    let outcome = crate::guard::run(workspace.guard_context(None)?, apps, stop, || {
        tell_service_manager(&[NotifyState::Ready, NotifyState::Status(&status)]);
    })
    .await;
    tell_service_manager(&[NotifyState::Stopping]);
    outcome?;
    eprintln!("rearguard: stopped");
    Ok(Outcome::Success)
}

/// Tells systemd (or anything speaking its notify protocol on NOTIFY_SOCKET) how the guard
/// is; without NOTIFY_SOCKET nothing is sent.
fn tell_service_manager(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot tell the service manager");
    }
}
