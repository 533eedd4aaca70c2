//! `rearguard guard`: guard every configured app (or those named) until stopped.

use std::path::Path;

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
    crate::guard::run(workspace.guard_context(None)?, apps, stop).await?;
    eprintln!("rearguard: stopped");
    Ok(Outcome::Success)
}
