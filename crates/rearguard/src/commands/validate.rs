//! `rearguard validate`: read the config and report every problem, or say it is fine.
//! It checks what the guard will need: every `${NAME}` set, notifications that reach
//! someone.

use std::path::Path;

use crate::{Outcome, config};

pub fn run(config_path: &Path) -> anyhow::Result<Outcome> {
    let config = config::load(config_path, config::Needs::Everything)?;
    let components: usize = config
        .apps
        .values()
        .map(|a| a.backend.components().len())
        .sum();
    println!(
        "{}: ok ({} app(s), {components} component(s))",
        config_path.display(),
        config.apps.len()
    );
    Ok(Outcome::Success)
}
