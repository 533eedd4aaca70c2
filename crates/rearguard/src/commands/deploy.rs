//! `rearguard deploy APP VERSION [--watch]`: record a release and have it deployed. With a
//! guard running, the guard deploys it and this command follows along; with `--watch` and
//! no guard, this process guards the release itself until it settles.

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;

use super::output::Status;
use super::records::Records;
use super::{Workspace, check_version, stop_on_signals};
use crate::cli::DeployArgs;
use crate::guard::{Guardian, Progress, Snapshot};
use crate::ledger::{Release, ReleaseState};
use crate::{Outcome, UsageError};

pub async fn run(
    config_path: &Path,
    server: Option<&str>,
    args: DeployArgs,
) -> anyhow::Result<Outcome> {
    check_version(&args.version)?;
    if server.is_some() {
        // Through a server: its guard deploys; this terminal follows along.
        let records = Records::open(config_path, server).await?;
        let release = records.record_release(&args.app, &args.version).await?;
        return settle(&records, release, true, &args).await;
    }
    let workspace = Workspace::open(config_path).await?;
    workspace
        .backend(&args.app)?
        .check_available(&args.version)
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    let guarded = workspace.guard_running(&args.app).await?;
    // Guarding from this terminal needs everything the guard needs, before anything is
    // recorded.
    let workspace = if !guarded && args.watch {
        Workspace::open_to_guard(config_path).await?
    } else {
        workspace
    };
    if !guarded && !args.watch {
        return Err(UsageError(format!(
            "no guard is running for app {:?}: start `rearguard guard` (it hosts the router and the app's processes), \
             or pass --watch to guard this release from this terminal",
            args.app
        ))
        .into());
    }
    let records = Records::Local(Box::new(workspace));
    let release = records.record_release(&args.app, &args.version).await?;
    settle(&records, release, guarded, &args).await
}

/// Waits for `release` to settle (with `--watch`) or to be deployed, guarding it from
/// here when no guard does, and reports how it ended.
async fn settle(
    records: &Records,
    release: Release,
    guarded: bool,
    args: &DeployArgs,
) -> anyhow::Result<Outcome> {
    let bar = Status::new(true);
    bar.show(&format!(
        "{} {}: recorded, waiting for the guard",
        args.app, args.version
    ));
    let deadline = tokio::time::Instant::now() + args.timeout.std();
    let settled = match records.local() {
        Some(workspace) if !guarded => guard_here(workspace, &release, &bar, deadline).await?,
        _ => follow(records, &release, args.watch, &bar, deadline).await?,
    };
    bar.finish();
    // Unsettled: the wait ran out (or was interrupted) before the outcome was known.
    let done = if args.watch {
        settled.state.is_settled()
    } else {
        settled.state != ReleaseState::Deploying
    };
    if !done {
        crate::say!(
            "{} {}: still {} after {}; the guard goes on (follow it with `rearguard status {}`)",
            settled.app,
            settled.version,
            settled.state.as_str(),
            args.timeout,
            settled.app
        );
    }
    let outcome = report(records, &settled, args.json).await?;
    Ok(if done { outcome } else { Outcome::TimedOut })
}

/// Follows a release deployed by the running guard, through the records.
async fn follow(
    records: &Records,
    release: &Release,
    watch: bool,
    bar: &Status,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Release> {
    loop {
        let now = records
            .release(&release.app, release.id)
            .await?
            .unwrap_or_else(|| release.clone());
        let done = if watch {
            now.state.is_settled()
        } else {
            now.state != ReleaseState::Deploying
        };
        if done || tokio::time::Instant::now() >= deadline {
            return Ok(now);
        }
        let live = records
            .live(&release.app)
            .await?
            .map(|live| describe_live(&live))
            .unwrap_or_default();
        bar.show(&format!(
            "{} {}: {} {live}",
            release.app,
            release.version,
            now.state.as_str()
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Guards the release from this process until it settles (Ctrl-C stops, leaving it
/// unsettled), then stops what it started.
async fn guard_here(
    workspace: &Workspace,
    release: &Release,
    bar: &Status,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Release> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let context = workspace.guard_context(Some(tx))?;
    let stop = stop_on_signals();
    let guardian = Guardian::start(&context, &release.app).await?;
    let task = tokio::spawn(guardian.run(crate::guard::Ending {
        stop: stop.clone(),
        ..Default::default()
    }));
    let ledger = &workspace.ledger;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => break,
            message = rx.recv() => {
                let Some(message) = message else { break };
                if let Some(line) = describe(&message) {
                    bar.show(&line);
                }
            }
            // A guard that started meanwhile may hold the app and settle the release: this
            // one then hears nothing, so the ledger is looked at anyway.
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let state = ledger.release(release.id).await?.map(|r| r.state);
        if state.is_some_and(ReleaseState::is_settled) {
            break;
        }
    }
    stop.cancel();
    task.await??;
    Ok(ledger
        .release(release.id)
        .await?
        .unwrap_or_else(|| release.clone()))
}

pub fn describe(progress: &Progress) -> Option<String> {
    Some(match progress {
        Progress::Deploying { app, version } => format!("{app} {version}: starting"),
        Progress::Watching { app, version } => format!("{app} {version}: taking traffic, watching"),
        Progress::Tick {
            app,
            version,
            judgement,
        } => {
            let s = &judgement.snapshot;
            format!(
                "{app} {version}: {} req/min, errors {} (baseline {}), p95 {} (baseline {}), evidence {:.0}%",
                s.candidate_requests,
                percent(s.candidate_error_rate),
                percent(s.baseline_error_rate),
                millis(s.candidate_p95_ms),
                millis(s.baseline_p95_ms),
                100.0 * s.error_evidence.max(s.latency_evidence)
            )
        }
        Progress::Stable { app, version } => format!("{app} {version}: stable"),
        Progress::RollingBack {
            app,
            from,
            to,
            reason,
        } => format!("{app}: rolling back {from} -> {to}: {reason}"),
        Progress::RolledBack { app, rollback, .. } => {
            format!("{app}: rolled back to {}", rollback.to_version)
        }
        Progress::RollbackFailed { app, to, why } => {
            format!("{app}: rollback to {to} FAILED: {why}")
        }
        Progress::Failed { app, version, why } => format!("{app} {version}: failed: {why}"),
    })
}

fn describe_live(live: &Snapshot) -> String {
    let Some(judgement) = &live.judgement else {
        return String::new();
    };
    let s = &judgement.snapshot;
    format!(
        "- errors {} (baseline {}), p95 {} (baseline {})",
        percent(s.candidate_error_rate),
        percent(s.baseline_error_rate),
        millis(s.candidate_p95_ms),
        millis(s.baseline_p95_ms),
    )
}

pub fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".into(), |r| format!("{:.1}%", 100.0 * r))
}

pub fn millis(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".into(), |m| format!("{m:.0}ms"))
}

async fn report(records: &Records, release: &Release, json: bool) -> anyhow::Result<Outcome> {
    let rollback = records
        .rollbacks(&release.app)
        .await?
        .into_iter()
        .find(|r| r.from_release_id == release.id);
    let outcome = match release.state {
        ReleaseState::Stable | ReleaseState::Watching => Outcome::Success,
        ReleaseState::RolledBack => Outcome::RolledBack,
        ReleaseState::Failed | ReleaseState::Deploying => Outcome::Failed,
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "app": release.app, "version": release.version, "state": release.state, "note": release.note,
                "rolled_back_to": rollback.as_ref().map(|r| &r.to_version),
                "reason": rollback.as_ref().map(|r| &r.reason),
            })
        );
        return Ok(outcome);
    }
    match (&release.state, &rollback) {
        (ReleaseState::RolledBack, Some(r)) => {
            println!(
                "{} {}: ROLLED BACK to {} ({})",
                release.app, release.version, r.to_version, r.reason
            )
        }
        (ReleaseState::Failed, _) => println!(
            "{} {}: FAILED: {}",
            release.app,
            release.version,
            release
                .note
                .as_deref()
                .unwrap_or("see `rearguard versions`")
        ),
        (state, _) => println!("{} {}: {}", release.app, release.version, state.as_str()),
    }
    Ok(outcome)
}
