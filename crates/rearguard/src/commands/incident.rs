//! `rearguard incidents`, `incident ...`, `postmortem`, `report`: the incident record.

use std::path::Path;

use rearguard_judge::Span;

use super::Workspace;
use super::records::Records;
use crate::cli::{IncidentAction, IncidentsArgs, PostmortemArgs, ReportArgs};
use crate::clock::rfc3339;
use crate::incidents::{POSTMORTEM_TEMPLATE, Record, Report, render_postmortem};
use crate::ledger::IncidentStatus;
use crate::{Outcome, UsageError, ops};

pub fn since_ms(workspace: &Workspace, since: &str) -> Result<i64, UsageError> {
    let span = Span::parse(since).map_err(|e| UsageError(format!("--since: {e}")))?;
    Ok(workspace.ledger.now() - span.as_millis() as i64)
}

pub async fn list(
    config_path: &Path,
    server: Option<&str>,
    args: IncidentsArgs,
) -> anyhow::Result<Outcome> {
    let records = Records::open(config_path, server).await?;
    let incidents = records.incidents(&args.since).await?;
    if args.json {
        println!("{}", serde_json::to_string(&incidents)?);
        return Ok(Outcome::Success);
    }
    if incidents.is_empty() {
        println!("no incidents in the last {}", args.since);
        return Ok(Outcome::Success);
    }
    let mut table = super::output::table(["id", "severity", "status", "detected", "title"]);
    for i in &incidents {
        table.add_row([
            i.id.to_string(),
            i.severity.as_str().into(),
            i.status.as_str().into(),
            rfc3339(i.detected_at),
            i.title.clone(),
        ]);
    }
    println!("{table}");
    Ok(Outcome::Success)
}

pub async fn act(
    config_path: &Path,
    server: Option<&str>,
    action: IncidentAction,
) -> anyhow::Result<Outcome> {
    let records = Records::open(config_path, server).await?;
    match action {
        IncidentAction::Show { id, json } => {
            let (incident, timeline) = records.incident(id).await?;
            // The platform state kept with the incident is read on the guard's host.
            let capture = match &records {
                Records::Local(workspace) => workspace.ledger.capture(id).await?,
                Records::Remote(_) => None,
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"incident": incident, "timeline": timeline, "capture": capture})
                );
            } else {
                println!(
                    "#{} {} [{}, {}]",
                    incident.id,
                    incident.title,
                    incident.severity.as_str(),
                    incident.status.as_str()
                );
                for entry in &timeline {
                    println!(
                        "  {}  {:<18} {}  ({})",
                        rfc3339(entry.at),
                        entry.kind.as_str(),
                        entry.text,
                        entry.actor
                    );
                }
                if let Some(capture) = capture {
                    println!("\nplatform state when it was detected:");
                    println!("{}", serde_json::to_string_pretty(&capture.state)?);
                    for (component, lines) in &capture.logs {
                        println!("\nlast log lines of {component}:");
                        println!("{lines}");
                    }
                }
            }
        }
        IncidentAction::Note { id, text } => {
            records
                .act_on_incident(id, ops::IncidentAction::Note { text })
                .await?;
            println!("incident {id}: note added");
        }
        IncidentAction::Ack { id } => {
            let incident = records
                .act_on_incident(id, ops::IncidentAction::Ack)
                .await?;
            let by = incident.acknowledged_by.unwrap_or_default();
            println!("incident {id}: acknowledged by {by}");
        }
        IncidentAction::Severity { id, severity } => {
            let incident = records
                .act_on_incident(id, ops::IncidentAction::Severity { severity })
                .await?;
            println!("incident {id}: severity {}", incident.severity.as_str());
        }
        IncidentAction::RootCause { id, text } => {
            records
                .act_on_incident(id, ops::IncidentAction::RootCause { text })
                .await?;
            println!("incident {id}: root cause recorded");
        }
        IncidentAction::Resolve { id, root_cause } => {
            let (before, _) = records.incident(id).await?;
            records
                .act_on_incident(id, ops::IncidentAction::Resolve { root_cause })
                .await?;
            if before.status == IncidentStatus::Resolved {
                println!("incident {id}: already resolved");
            } else {
                println!("incident {id}: resolved");
            }
        }
    }
    Ok(Outcome::Success)
}

pub async fn postmortem(config_path: &Path, args: PostmortemArgs) -> anyhow::Result<Outcome> {
    let workspace = Workspace::open(config_path).await?;
    let record = Record::load(&workspace.ledger, args.id)
        .await?
        .ok_or_else(|| {
            UsageError(format!(
                "no incident {}; `rearguard incidents` lists them",
                args.id
            ))
        })?;
    let template = match &args.template {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("cannot read template {}: {e}", path.display())))?,
        None => POSTMORTEM_TEMPLATE.to_string(),
    };
    let text = render_postmortem(&record, &template)
        .map_err(|e| UsageError(format!("the post-mortem template failed: {e}")))?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, text)
                .map_err(|e| UsageError(format!("cannot write {}: {e}", path.display())))?;
            println!("{}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(Outcome::Success)
}

pub async fn report(config_path: &Path, args: ReportArgs) -> anyhow::Result<Outcome> {
    let workspace = Workspace::open(config_path).await?;
    let since = since_ms(&workspace, &args.since)?;
    let ledger = &workspace.ledger;
    let incidents = ledger.incidents(since).await?;
    let mut rollbacks = Vec::new();
    for app in workspace.config.apps.keys() {
        rollbacks.extend(
            ledger
                .rollbacks(app)
                .await?
                .into_iter()
                .filter(|r| r.requested_at >= since),
        );
    }
    let report = Report::compute(
        since,
        ledger.now(),
        &incidents,
        &rollbacks,
        ledger.release_counts(since).await?,
        workspace.config.apps.len(),
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(Outcome::Success);
    }
    let secs = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |s| format!("{s:.1}s"));
    println!("since {}", report.since);
    let by_severity: Vec<String> = report
        .by_severity
        .iter()
        .map(|(severity, count)| format!("{severity}: {count}"))
        .collect();
    println!(
        "incidents: {}{}",
        report.incidents,
        if by_severity.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_severity.join(", "))
        }
    );
    println!("MTTD (onset to detection): {}", secs(report.mttd_seconds));
    println!(
        "MTTR (detection to restored): {}",
        secs(report.mttr_seconds)
    );
    println!(
        "change failure rate: {} of {} releases rolled back ({})",
        report.rolled_back,
        report.releases,
        report
            .change_failure_rate
            .map_or("-".into(), |r| format!("{:.1}%", r * 100.0))
    );
    println!(
        "availability (time without a bad release serving): {:.3}%",
        report.availability * 100.0
    );
    println!(
        "rollback duration: p50 {}, p95 {}",
        secs(report.rollback_seconds_p50),
        secs(report.rollback_seconds_p95)
    );
    Ok(Outcome::Success)
}
