//! `rearguard rollback APP [VERSION]`: ask the guard to put an earlier release back, by
//! default the last known-good one, and wait until it has.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use super::{Workspace, check_version};
use crate::backends::Backend;
use crate::cli::RollbackArgs;
use crate::ledger::{Release, RollbackStatus, Trigger};
use crate::{Outcome, UsageError, identity};

pub async fn run(config_path: &Path, args: RollbackArgs) -> anyhow::Result<Outcome> {
    if let Some(version) = &args.version {
        check_version(version)?;
    }
    let workspace = Workspace::open(config_path).await?;
    let ledger = &workspace.ledger;
    let current = ledger.current(&args.app).await?.ok_or_else(|| {
        UsageError(format!(
            "app {:?} has no current release: nothing to roll back",
            args.app
        ))
    })?;
    let target = match &args.version {
        Some(version) => ledger.release_of_version(&args.app, version).await?.ok_or_else(|| {
            UsageError(format!("version {version:?} was never recorded for app {:?}", args.app))
        })?,
        None => ledger.known_good(&args.app, Some(current.id)).await?.ok_or_else(|| {
            UsageError(format!(
                "app {:?} has no known-good release other than the current one ({}); name a version",
                args.app, current.version
            ))
        })?,
    };
    if target.version == current.version {
        println!("{}: already serving {}", args.app, target.version);
        return Ok(Outcome::Success);
    }
    let backend = workspace.backend(&args.app)?;
    if let Err(e) = backend.check_available(&target.version).await {
        let available = available_versions(&workspace, backend.as_ref(), &args.app).await?;
        return Err(UsageError(format!(
            "{e}; versions that can be rolled back to: {}",
            available.join(", ")
        ))
        .into());
    }
    if !workspace.guard_running(&args.app).await? {
        return Err(UsageError(format!(
            "no guard is running for app {:?}: start `rearguard guard` first (it performs rollbacks)",
            args.app
        ))
        .into());
    }
    confirm(&args, &current, &target)?;
    let reason = args
        .reason
        .clone()
        .unwrap_or_else(|| "manual rollback".to_string());
    let rollback = ledger
        .record_rollback(
            &current,
            &target,
            Trigger::Manual,
            &reason,
            None,
            &identity::actor(),
            RollbackStatus::Requested,
        )
        .await?;
    if !args.json {
        eprintln!(
            "{}: rolling back {} -> {} ...",
            args.app, current.version, target.version
        );
    }
    let deadline = tokio::time::Instant::now() + args.timeout.std();
    let finished = loop {
        let now = ledger
            .rollback(rollback.id)
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

fn confirm(args: &RollbackArgs, current: &Release, target: &Release) -> Result<(), UsageError> {
    if args.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "refusing to roll back without a terminal to confirm on: pass --yes".into(),
        ));
    }
    let question = format!(
        "Roll {} back from {} to {}?",
        args.app, current.version, target.version
    );
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

/// Recorded versions whose components are all available, newest first.
async fn available_versions(
    workspace: &Workspace,
    backend: &dyn Backend,
    app: &str,
) -> anyhow::Result<Vec<String>> {
    let mut versions: Vec<String> = Vec::new();
    for release in workspace.ledger.releases(app).await? {
        if !versions.contains(&release.version)
            && backend.check_available(&release.version).await.is_ok()
        {
            versions.push(release.version);
        }
    }
    Ok(versions)
}
