//! `rearguard status [APP]`: the current release, its state, and what the guard sees live.

use std::path::Path;

use super::records::Records;
use crate::Outcome;
use crate::cli::StatusArgs;
use crate::clock::rfc3339;
use crate::ledger::Release;

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
    live: Option<&serde_json::Value>,
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
    let snapshot = &live["judgement"]["snapshot"];
    let rate = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("-".into(), |r| format!("{:.2}%", r * 100.0))
    };
    let ms = |v: &serde_json::Value| v.as_f64().map_or("-".into(), |m| format!("{m:.0} ms"));
    println!(
        "  live (last minute): {} requests, errors {} (baseline {}), p95 {} (baseline {})",
        snapshot["candidate_requests"].as_u64().unwrap_or(0),
        rate(&snapshot["candidate_error_rate"]),
        rate(&snapshot["baseline_error_rate"]),
        ms(&snapshot["candidate_p95_ms"]),
        ms(&snapshot["baseline_p95_ms"]),
    );
    if let Some(usage) = live["usage"].as_object() {
        for (version, usage) in usage {
            println!(
                "  {version}: CPU {:.2} cores, memory {:.0} MiB",
                usage["cpu_cores"].as_f64().unwrap_or(0.0),
                usage["memory_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
            );
        }
    }
    let verdict = live["judgement"]["verdict"]["verdict"]
        .as_str()
        .unwrap_or("-");
    println!(
        "  judge: {verdict}; evidence against it at {:.0}% (errors) and {:.0}% (latency) of a rollback",
        snapshot["error_evidence"].as_f64().unwrap_or(0.0) * 100.0,
        snapshot["latency_evidence"].as_f64().unwrap_or(0.0) * 100.0
    );
}
