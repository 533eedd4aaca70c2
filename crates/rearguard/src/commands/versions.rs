//! `rearguard versions APP`: the release history, which release serves and which is
//! known-good.

use std::path::Path;

use serde::Serialize;

use super::Workspace;
use crate::Outcome;
use crate::cli::AppJsonArgs;
use crate::clock::rfc3339;
use crate::ledger::{Ledger, Release};

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    release: Release,
    current: bool,
    known_good: bool,
}

pub async fn run(config_path: &Path, args: AppJsonArgs) -> anyhow::Result<Outcome> {
    let workspace = Workspace::open(config_path).await?;
    workspace.check_app(&args.app)?;
    let ledger = &workspace.ledger;
    if args.json {
        let rows = rows(ledger, &args.app).await?;
        let rollbacks = ledger.rollbacks(&args.app).await?;
        println!(
            "{}",
            serde_json::json!({"app": args.app, "releases": rows, "rollbacks": rollbacks})
        );
        return Ok(Outcome::Success);
    }
    println!("{}", history(ledger, &args.app).await?);
    Ok(Outcome::Success)
}

/// The releases of `app`, newest first, each marked current and known-good or not.
async fn rows(ledger: &Ledger, app: &str) -> anyhow::Result<Vec<Row>> {
    let current = ledger.current(app).await?.map(|r| r.id);
    let known_good = ledger.known_good(app, None).await?.map(|r| r.id);
    Ok(ledger
        .releases(app)
        .await?
        .into_iter()
        .map(|release| Row {
            current: Some(release.id) == current,
            known_good: Some(release.id) == known_good,
            release,
        })
        .collect())
}

/// The release history of `app` as a table for people.
pub async fn history(ledger: &Ledger, app: &str) -> anyhow::Result<String> {
    let rows = rows(ledger, app).await?;
    if rows.is_empty() {
        return Ok(format!(
            "{app}: no releases yet (deploy one with `rearguard deploy {app} VERSION`)"
        ));
    }
    let mut table = super::output::table(["version", "state", "deployed", "by", "", "note"]);
    for row in &rows {
        let marks = [
            row.current.then_some("current"),
            row.known_good.then_some("known-good"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        table.add_row([
            row.release.version.clone(),
            row.release.state.as_str().to_string(),
            rfc3339(row.release.created_at),
            row.release.created_by.clone(),
            marks,
            row.release.note.clone().unwrap_or_default(),
        ]);
    }
    Ok(table.to_string())
}
