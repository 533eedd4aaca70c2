//! `rearguard check APP`: runs the app's checks once, now, against the release the guard
//! serves (the newest: a canary when one takes traffic), all at once, each bounded by its
//! timeout. `--json` prints the `application/health+json` form (draft-inadarei-api-health-
//! check). Exit code 0 when nothing fails (warnings included), 4 when a check fails.

use std::path::Path;

use super::Workspace;
use crate::Outcome;
use crate::checks::{self, CheckResult, Health, Subject};
use crate::cli::AppJsonArgs;
use crate::clock::rfc3339;
use crate::guard::Snapshot;
use crate::traffic::Routes;

pub async fn run(config_path: &Path, args: AppJsonArgs) -> anyhow::Result<Outcome> {
    // Checks may need secrets (a DSN, a password): every `${NAME}` must be set.
    let workspace = Workspace::open_to_guard(config_path).await?;
    workspace.check_app(&args.app)?;
    let app = workspace.config.app(&args.app)?;
    if !workspace.guard_running(&args.app).await? {
        return Err(crate::UsageError(format!(
            "no guard is running {}: the checks look at what it serves (start `rearguard guard`)",
            args.app
        ))
        .into());
    }
    let routes: Option<Routes> = workspace
        .ledger
        .snapshot::<Snapshot>(&args.app)
        .await?
        .and_then(|(_, snapshot)| snapshot.routes);
    let Some(routes) = routes else {
        return Err(crate::UsageError(format!(
            "{} serves nothing yet: deploy a release first",
            args.app
        ))
        .into());
    };
    let instances = routes.canary.as_ref().map_or(&routes.primary, |(c, _)| c);
    let config_dir = crate::backends::Workdirs::of(&workspace.config, config_path).config_dir;
    let subject = Subject {
        app: &args.app,
        instances,
        config_dir: &config_dir,
        now_ms: workspace.ledger.now(),
    };
    let results = checks::run_all(&app.checks, &subject).await;
    let health = checks::worst(&results);
    if args.json {
        let document = health_json(&args.app, &instances.version, health, &results, &workspace);
        println!("{document}");
    } else {
        println!("{} {}: {}", args.app, instances.version, health.as_str());
        for result in &results {
            println!(
                "  {:<5} {} ({}, {} ms): {}",
                result.health.as_str(),
                result.check,
                result.kind,
                result.took_ms,
                result.detail
            );
        }
        if results.is_empty() {
            println!("  no checks configured");
        }
    }
    Ok(match health {
        Health::Fail => Outcome::Failed,
        Health::Pass | Health::Warn => Outcome::Success,
    })
}

/// The health+json document: a status, the version, and each check under `NAME:kind`.
fn health_json(
    app: &str,
    version: &str,
    health: Health,
    results: &[CheckResult],
    workspace: &Workspace,
) -> serde_json::Value {
    let time = rfc3339(workspace.ledger.now());
    let checks: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|result| {
            (
                format!("{}:{}", result.check, result.kind),
                serde_json::json!([{
                    "componentId": app,
                    "componentType": result.kind,
                    "status": result.health.as_str(),
                    "output": result.detail,
                    "observedValue": result.took_ms,
                    "observedUnit": "ms",
                    "time": time,
                }]),
            )
        })
        .collect();
    serde_json::json!({
        "status": health.as_str(),
        "serviceId": app,
        "version": version,
        "checks": checks,
    })
}
