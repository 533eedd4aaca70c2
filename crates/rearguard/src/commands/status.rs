//! `rearguard status [APP]`: the current release, its state, and what the guard sees live.

use std::path::Path;

use super::Workspace;
use crate::Outcome;
use crate::cli::StatusArgs;
use crate::clock::rfc3339;
use crate::ledger::Release;

/// A guard snapshot older than this is not live.
const LIVE_MS: i64 = 5_000;

pub async fn run(config_path: &Path, args: StatusArgs) -> anyhow::Result<Outcome> {
    let workspace = Workspace::open(config_path).await?;
    let apps: Vec<String> = match args.app {
        Some(app) => {
            workspace.check_app(&app)?;
            vec![app]
        }
        None => workspace.config.apps.keys().cloned().collect(),
    };
    let ledger = &workspace.ledger;
    let mut report = Vec::new();
    for app in &apps {
        let current = ledger.current(app).await?;
        let known_good = ledger.known_good(app, None).await?;
        let guarded = workspace.guard_running(app).await?;
        let snapshot = ledger
            .snapshot(app)
            .await?
            .filter(|(at, _)| guarded && ledger.now() - at < LIVE_MS);
        if !args.json {
            print_app(
                app,
                current.as_ref(),
                &report_known_good(&known_good),
                guarded,
                snapshot.as_ref().map(|(_, body)| body),
            );
        }
        report.push(serde_json::json!({
            "app": app,
            "current": current,
            "known_good": known_good.map(|r| r.version),
            "guarded": guarded,
            "live": snapshot.as_ref().map(|(_, body)| body),
        }));
    }
    if args.json {
        println!("{}", serde_json::Value::Array(report));
    }
    Ok(Outcome::Success)
}

fn report_known_good(known_good: &Option<Release>) -> String {
    known_good
        .as_ref()
        .map_or_else(|| "none yet".into(), |r| r.version.clone())
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
