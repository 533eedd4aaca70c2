//! `rearguard status [APP]`: the current release, its state, and what the guard sees live.

use std::path::Path;

use super::records::Records;
use crate::Outcome;
use crate::cli::StatusArgs;
use crate::clock::rfc3339;
use crate::guard::Snapshot;
use crate::ledger::Release;
use rearguard_judge::Verdict;

pub async fn run(
    config_path: &Path,
    server: Option<&str>,
    args: StatusArgs,
) -> anyhow::Result<Outcome> {
    let records = Records::open(config_path, server).await?;
    let report = records.status(args.app.as_deref()).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(Outcome::Success);
    }
    for status in &report {
        print_app(
            &status.app,
            status.current.as_ref(),
            status.known_good.as_deref().unwrap_or("none yet"),
            status.guarded,
            status.live.as_ref(),
        );
    }
    Ok(Outcome::Success)
}

fn print_app(
    app: &str,
    current: Option<&Release>,
    known_good: &str,
    guarded: bool,
    live: Option<&Snapshot>,
) {
    match current {
        Some(release) => println!(
            "{app}: {} ({}, since {})",
            release.version,
            release.state.as_str(),
            rfc3339(release.updated_at)
        ),
        None => println!("{app}: nothing deployed yet"),
    }
    println!("  known-good: {known_good}");
    if !guarded {
        println!("  guard: not running (start `rearguard guard`)");
        return;
    }
    let Some(live) = live else {
        println!("  guard: running, no live view yet");
        return;
    };
    let seen = live
        .judgement
        .as_ref()
        .map(|j| j.snapshot.clone())
        .unwrap_or_default();
    let rate = |v: Option<f64>| v.map_or("-".into(), |r| format!("{:.2}%", r * 100.0));
    let ms = |v: Option<f64>| v.map_or("-".into(), |m| format!("{m:.0} ms"));
    println!(
        "  live (last minute): {} requests, errors {} (baseline {}), p95 {} (baseline {})",
        seen.candidate_requests,
        rate(seen.candidate_error_rate),
        rate(seen.baseline_error_rate),
        ms(seen.candidate_p95_ms),
        ms(seen.baseline_p95_ms),
    );
    for (version, usage) in &live.usage {
        println!(
            "  {version}: CPU {:.2} cores, memory {:.0} MiB",
            usage.cpu_cores,
            usage.memory_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    let verdict = match live.judgement.as_ref().map(|j| &j.verdict) {
        Some(Verdict::Keep) => "keep",
        Some(Verdict::Wait { .. }) => "wait",
        Some(Verdict::Rollback(_)) => "rollback",
        None => "-",
    };
    println!(
        "  judge: {verdict}; evidence against it at {:.0}% (errors) and {:.0}% (latency) of a rollback",
        seen.error_evidence * 100.0,
        seen.latency_evidence * 100.0
    );
}
