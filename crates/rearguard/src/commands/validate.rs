//! `rearguard validate`: read the config and report every problem, or say it is fine.

use std::path::Path;

use crate::{Outcome, config};

pub fn run(config_path: &Path) -> anyhow::Result<Outcome> {
    let mut config = config::load(config_path)?;
    if let Err(missing) =
        config::resolve_notification_secrets(&mut config.notifications, &|n| std::env::var(n).ok())
    {
        let shown: Vec<String> = missing
            .iter()
            .map(|m| format!("{}: notifications: {m}", config_path.display()))
            .collect();
        return Err(crate::UsageError(shown.join("\n")).into());
    }
    let components: usize = config.apps.values().map(|a| a.components.len()).sum();
    println!(
        "{}: ok ({} app(s), {components} component(s))",
        config_path.display(),
        config.apps.len()
    );
    Ok(Outcome::Success)
}
