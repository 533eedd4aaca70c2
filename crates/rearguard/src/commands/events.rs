//! `rearguard events APP`: what happened to an app, oldest first, from the ledger's trail.

use std::path::Path;

use super::Workspace;
use crate::Outcome;
use crate::cli::EventsArgs;
use crate::clock::rfc3339;

pub async fn run(config_path: &Path, args: EventsArgs) -> anyhow::Result<Outcome> {
    let workspace = Workspace::open(config_path).await?;
    workspace.check_app(&args.app)?;
    let since = super::incident::since_ms(&workspace, &args.since)?;
    let events = workspace.ledger.events(&args.app, since).await?;
    if args.json {
        println!("{}", serde_json::to_string(&events)?);
        return Ok(Outcome::Success);
    }
    if events.is_empty() {
        println!("{}: nothing happened in the last {}", args.app, args.since);
        return Ok(Outcome::Success);
    }
    let mut table = super::output::table(["time", "event", "detail"]);
    for event in &events {
        table.add_row([
            rfc3339(event.at),
            event.kind.replace('_', " "),
            event.detail.to_string(),
        ]);
    }
    println!("{table}");
    Ok(Outcome::Success)
}
