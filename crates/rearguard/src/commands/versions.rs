//! `rearguard versions APP`: the release history, which release serves and which is
//! known-good.

use std::path::Path;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;

use super::Workspace;
use crate::Outcome;
use crate::cli::AppJsonArgs;
use crate::clock::rfc3339;
use crate::ledger::Release;

#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    release: &'a Release,
    current: bool,
    known_good: bool,
}

pub async fn run(config_path: &Path, args: AppJsonArgs) -> anyhow::Result<Outcome> {
    let workspace = Workspace::open(config_path).await?;
    workspace.check_app(&args.app)?;
    let ledger = &workspace.ledger;
    let releases = ledger.releases(&args.app).await?;
    let current = ledger.current(&args.app).await?.map(|r| r.id);
    let known_good = ledger.known_good(&args.app, None).await?.map(|r| r.id);
    let rows: Vec<Row> = releases
        .iter()
        .map(|release| Row {
            release,
            current: Some(release.id) == current,
            known_good: Some(release.id) == known_good,
        })
        .collect();
    if args.json {
        let rollbacks = ledger.rollbacks(&args.app).await?;
        println!(
            "{}",
            serde_json::json!({"app": args.app, "releases": rows, "rollbacks": rollbacks})
        );
        return Ok(Outcome::Success);
    }
    if rows.is_empty() {
        println!(
            "{}: no releases yet (deploy one with `rearguard deploy {} VERSION`)",
            args.app, args.app
        );
        return Ok(Outcome::Success);
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["version", "state", "deployed", "by", "", "note"]);
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
    println!("{table}");
    Ok(Outcome::Success)
}
