//! `rearguard versions APP`: the release history, which release serves and which is
//! known-good.

use std::path::Path;

use serde::Serialize;

use super::records::Records;
use crate::Outcome;
use crate::cli::AppJsonArgs;
use crate::clock::rfc3339;
use crate::ledger::{Ledger, Release, ReleaseState};

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    release: Release,
    current: bool,
    known_good: bool,
}

pub async fn run(
    config_path: &Path,
    server: Option<&str>,
    args: AppJsonArgs,
) -> anyhow::Result<Outcome> {
    let records = Records::open(config_path, server).await?;
    let rows = rows(&records, &args.app).await?;
    if args.json {
        let rollbacks = records.rollbacks(&args.app).await?;
        println!(
            "{}",
            serde_json::json!({"app": args.app, "releases": rows, "rollbacks": rollbacks})
        );
        return Ok(Outcome::Success);
    }
    println!("{}", table(&args.app, &rows));
    Ok(Outcome::Success)
}

async fn rows(records: &Records, app: &str) -> anyhow::Result<Vec<Row>> {
    let releases = records.releases(app).await?;
    let status = records.status(Some(app)).await?.pop();
    let current = status
        .as_ref()
        .and_then(|s| s.current.as_ref())
        .map(|r| r.id);
    Ok(mark(releases, current, status.and_then(|s| s.known_good)))
}

/// The releases, newest first, the serving one and the known-good one (the newest stable
/// release of the known-good version) marked.
fn mark(releases: Vec<Release>, current: Option<i64>, known_good: Option<String>) -> Vec<Row> {
    let known_good = releases
        .iter()
        .find(|r| Some(&r.version) == known_good.as_ref() && r.state == ReleaseState::Stable)
        .map(|r| r.id);
    releases
        .into_iter()
        .map(|release| Row {
            current: Some(release.id) == current,
            known_good: Some(release.id) == known_good,
            release,
        })
        .collect()
}

/// The release history of `app` as a table for people.
pub async fn history(ledger: &Ledger, app: &str) -> anyhow::Result<String> {
    let current = ledger.current(app).await?.map(|r| r.id);
    let known_good = ledger.known_good(app, None).await?.map(|r| r.version);
    Ok(table(
        app,
        &mark(ledger.releases(app).await?, current, known_good),
    ))
}

fn table(app: &str, rows: &[Row]) -> String {
    if rows.is_empty() {
        return format!(
            "{app}: no releases yet (deploy one with `rearguard deploy {app} VERSION`)"
        );
    }
    let mut table = super::output::table(["version", "state", "deployed", "by", "", "note"]);
    for row in rows {
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
    table.to_string()
}
