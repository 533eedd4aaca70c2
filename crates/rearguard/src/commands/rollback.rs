//! `rearguard rollback APP [VERSION]`: ask the guard to put an earlier release back, by
//! default the last known-good one, and wait until it has.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use super::records::Records;
use crate::cli::RollbackArgs;
use crate::ledger::RollbackStatus;
use crate::{Outcome, UsageError, ops};

pub async fn run(
    config_path: &Path,
    server: Option<&str>,
    args: RollbackArgs,
) -> anyhow::Result<Outcome> {
    let records = Records::open(config_path, server).await?;
    let request = records
        .request_rollback(
            &args.app,
            args.version.as_deref(),
            args.reason.as_deref(),
            |question| confirm(&args, question),
        )
        .await?;
    let rollback = match request {
        ops::RollbackRequest::AlreadyServing(release) => {
            println!("{}: already serving {}", args.app, release.version);
            return Ok(Outcome::Success);
        }
        ops::RollbackRequest::Requested(rollback) => rollback,
    };
    if !args.json {
        crate::say!(
            "{}: rolling back {} -> {} ...",
            args.app,
            rollback.from_version,
            rollback.to_version
        );
    }
    let deadline = tokio::time::Instant::now() + args.timeout.std();
    let finished = loop {
        let now = records
            .rollback(&args.app, rollback.id)
            .await?
            .unwrap_or_else(|| rollback.clone());
        if matches!(now.status, RollbackStatus::Done | RollbackStatus::Failed)
            || tokio::time::Instant::now() >= deadline
        {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let seconds = match (finished.started_at, finished.finished_at) {
        (Some(started), Some(done)) => (done - started) as f64 / 1000.0,
        _ => 0.0,
    };
    if args.json {
        println!("{}", serde_json::to_string(&finished)?);
    } else {
        match finished.status {
            RollbackStatus::Done => println!(
                "{}: rolled back to {} in {seconds:.1}s",
                args.app, finished.to_version
            ),
            RollbackStatus::Failed => println!(
                "{}: rollback to {} FAILED; see `rearguard versions {}`",
                args.app, finished.to_version, args.app
            ),
            _ => println!(
                "{}: the guard has not finished rollback {} within {}; it goes on (follow it with `rearguard versions {}`)",
                args.app, finished.id, args.timeout, args.app
            ),
        }
    }
    Ok(match finished.status {
        RollbackStatus::Done => Outcome::Success,
        RollbackStatus::Failed => Outcome::Failed,
        RollbackStatus::Requested | RollbackStatus::Started => Outcome::TimedOut,
    })
}

fn confirm(args: &RollbackArgs, question: &str) -> Result<(), UsageError> {
    if args.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "refusing to roll back without a terminal to confirm on: pass --yes".into(),
        ));
    }
    match dialoguer::Confirm::new()
        .with_prompt(question)
        .default(false)
        .interact()
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(UsageError("rollback cancelled".into())),
        Err(e) => Err(UsageError(format!(
            "cannot ask for confirmation: {e}; pass --yes"
        ))),
    }
}
