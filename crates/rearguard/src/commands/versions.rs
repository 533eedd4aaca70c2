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
    if args.json {
        let releases = ledger.releases(&args.app).await?;
        let (current, known_good) = marks(ledger, &args.app).await?;
        let rows: Vec<Row> = releases
            .iter()
            .map(|release| Row {
                release,
                current: Some(release.id) == current,
                known_good: Some(release.id) == known_good,
            })
            .collect();
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

/// The ids of the current and the known-good release.
async fn marks(ledger: &Ledger, app: &str) -> anyhow::Result<(Option<i64>, Option<i64>)> {
    Ok((
        ledger.current(app).await?.map(|r| r.id),
        ledger.known_good(app, None).await?.map(|r| r.id),
    ))
}

/// The release history of `app` as a table for people.
pub async fn history(ledger: &Ledger, app: &str) -> anyhow::Result<String> {
    let releases = ledger.releases(app).await?;
    let (current, known_good) = marks(ledger, app).await?;
    let rows: Vec<Row> = releases
        .iter()
        .map(|release| Row {
            release,
            current: Some(release.id) == current,
            known_good: Some(release.id) == known_good,
        })
        .collect();
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
