//! Incidents: what is opened when a release is rolled back, what goes in its timeline, the
//! post-mortem drafted from it, and the figures across incidents (`rearguard report`).
//! Who is told, and when, is `alerts`.

mod alerts;

use serde::Serialize;

pub use alerts::Alerts;

use crate::clock::rfc3339;
use rearguard_judge::Tier;

use crate::ledger::{
    Evidence, Incident, IncidentStatus, Ledger, LedgerError, NewIncident, Release, Rollback,
    RollbackStatus, Severity, TimelineEntry, Trigger,
};

/// The judge's tier as a severity: immediate P1, rapid P2, evaluate P3. A person may change
/// it afterwards.
pub fn severity_of(evidence: Option<&Evidence>, trigger: Trigger) -> Severity {
    match evidence.and_then(Evidence::tier) {
        Some(Tier::Immediate) => Severity::P1,
        Some(Tier::Rapid) => Severity::P2,
        Some(Tier::Evaluate) => Severity::P3,
        // A failed check or a person's decision: no tier.
        None if trigger == Trigger::Auto => Severity::P2,
        None => Severity::P3,
    }
}

/// Opens the incident for a rollback (once), with the timeline up to the decision.
pub async fn open_for_rollback(
    ledger: &Ledger,
    rollback: &Rollback,
    from: Option<&Release>,
) -> Result<Incident, LedgerError> {
    if let Some(existing) = ledger.incident_of_rollback(rollback.id).await? {
        return Ok(existing);
    }
    let evidence = rollback.evidence.as_ref();
    // The judge's evidence window starts when the release began to look bad (seconds).
    let onset_at = evidence.and_then(Evidence::onset_s).map(|s| s * 1000);
    let title = format!(
        "{} {} rolled back to {}",
        rollback.app, rollback.from_version, rollback.to_version
    );
    let incident = ledger
        .open_incident(&NewIncident {
            app: &rollback.app,
            rollback_id: Some(rollback.id),
            from_version: &rollback.from_version,
            to_version: Some(&rollback.to_version),
            severity: severity_of(evidence, rollback.trigger),
            title: &title,
            onset_at,
            detected_at: rollback.requested_at,
            evidence,
        })
        .await?;
    let id = incident.id;
    if let Some(from) = from {
        let at = from.watch_started_at.unwrap_or(from.created_at);
        ledger
            .add_timeline(
                id,
                Some(at),
                crate::ledger::TimelineKind::DeployStarted,
                &from.created_by,
                &format!("{} took traffic", from.version),
            )
            .await?;
    }
    if let Some(onset) = onset_at {
        ledger
            .add_timeline(
                id,
                Some(onset),
                crate::ledger::TimelineKind::FirstBadSignal,
                "judge",
                "first data counted against the release",
            )
            .await?;
    }
    let decided_by = match rollback.trigger {
        Trigger::Auto => "rearguard",
        Trigger::Manual => rollback.requested_by.as_str(),
    };
    ledger
        .add_timeline(
            id,
            Some(rollback.requested_at),
            crate::ledger::TimelineKind::Decision,
            decided_by,
            &format!("decided to roll back: {}", rollback.reason),
        )
        .await?;
    ledger
        .add_timeline(
            id,
            rollback.started_at,
            crate::ledger::TimelineKind::RollbackStarted,
            "rearguard",
            &format!("rollback to {} started", rollback.to_version),
        )
        .await?;
    ledger
        .set_incident_status(id, IncidentStatus::Mitigating)
        .await?;
    Ok(incident)
}

/// Opens an incident for a bad release that cannot be rolled back (nothing known-good to
/// go back to): people must step in.
pub async fn open_without_rollback(
    ledger: &Ledger,
    release: &Release,
    reason: &str,
    evidence: Option<&Evidence>,
) -> Result<Incident, LedgerError> {
    let title = format!(
        "{} {} is bad and cannot be rolled back",
        release.app, release.version
    );
    let incident = ledger
        .open_incident(&NewIncident {
            app: &release.app,
            rollback_id: None,
            from_version: &release.version,
            to_version: None,
            severity: severity_of(evidence, Trigger::Auto),
            title: &title,
            onset_at: evidence.and_then(Evidence::onset_s).map(|s| s * 1000),
            detected_at: ledger.now(),
            evidence,
        })
        .await?;
    ledger
        .add_timeline(
            incident.id,
            None,
            crate::ledger::TimelineKind::Decision,
            "rearguard",
            &format!("the release is bad: {reason}"),
        )
        .await?;
    ledger
        .add_timeline(
            incident.id,
            None,
            crate::ledger::TimelineKind::RollbackFailed,
            "rearguard",
            "no known-good release to roll back to: manual intervention required",
        )
        .await?;
    Ok(incident)
}

/// Records how the rollback ended and whether verification passed.
pub async fn rollback_finished(
    ledger: &Ledger,
    rollback: &Rollback,
    verification: Option<&serde_json::Value>,
) -> Result<(), LedgerError> {
    let Some(incident) = ledger.incident_of_rollback(rollback.id).await? else {
        return Ok(());
    };
    if rollback.status == RollbackStatus::Done {
        let text = format!("traffic back on {}", rollback.to_version);
        ledger
            .add_timeline(
                incident.id,
                rollback.finished_at,
                crate::ledger::TimelineKind::RollbackFinished,
                "rearguard",
                &text,
            )
            .await?;
        ledger
            .set_incident_status(incident.id, IncidentStatus::Mitigated)
            .await?;
    } else {
        let text = format!(
            "rollback to {} failed: manual intervention required",
            rollback.to_version
        );
        ledger
            .add_timeline(
                incident.id,
                rollback.finished_at,
                crate::ledger::TimelineKind::RollbackFailed,
                "rearguard",
                &text,
            )
            .await?;
    }
    if let Some(verification) = verification {
        let passed = verification["passed"].as_bool().unwrap_or(false);
        let text = if passed {
            "verification passed: checks pass on the restored release"
        } else {
            "verification FAILED on the restored release"
        };
        ledger
            .add_timeline(
                incident.id,
                None,
                crate::ledger::TimelineKind::Verification,
                "rearguard",
                text,
            )
            .await?;
    }
    Ok(())
}

/// Everything a post-mortem is drafted from.
pub struct Record {
    pub incident: Incident,
    pub timeline: Vec<TimelineEntry>,
}

impl Record {
    pub async fn load(ledger: &Ledger, id: i64) -> Result<Option<Self>, LedgerError> {
        let Some(incident) = ledger.incident(id).await? else {
            return Ok(None);
        };
        let timeline = ledger.timeline(id).await?;
        Ok(Some(Self { incident, timeline }))
    }

    fn notes(&self) -> Vec<String> {
        self.timeline
            .iter()
            .filter(|e| e.kind == crate::ledger::TimelineKind::Note)
            .map(|e| format!("{} ({})", e.text, e.actor))
            .collect()
    }
}

/// The built-in post-mortem template (Markdown, minijinja).
pub const POSTMORTEM_TEMPLATE: &str = include_str!("postmortem.md.j2");

/// Renders the post-mortem draft. Secrets never reach it: it holds only what the ledger
/// recorded (versions, reasons, numbers, people's notes).
pub fn render_postmortem(record: &Record, template: &str) -> Result<String, minijinja::Error> {
    let incident = &record.incident;
    let timeline: Vec<serde_json::Value> = record
        .timeline
        .iter()
        .map(|e| serde_json::json!({"time": rfc3339(e.at), "text": e.text.replace('|', "\\|"), "actor": e.actor}))
        .collect();
    let end = incident.mitigated_at.or(incident.resolved_at);
    let start = incident.onset_at.unwrap_or(incident.detected_at);
    let evidence = incident
        .evidence
        .as_ref()
        .map(|e| serde_json::to_string_pretty(e).unwrap_or_default());
    let detection = match incident.onset_at {
        Some(onset) => format!(
            "Detected by rearguard's judge {} after the release started looking bad: {}.",
            seconds(incident.detected_at - onset),
            incident
                .evidence
                .as_ref()
                .map_or_else(|| "see the evidence below".to_string(), Evidence::reason)
        ),
        None => {
            "Rolled back on a person's decision or a failed check; see the timeline.".to_string()
        }
    };
    let resolution = match incident.mitigated_at {
        Some(mitigated) => format!(
            "Rolled back to {} {} after detection; service restored.",
            incident
                .to_version
                .as_deref()
                .unwrap_or("an earlier release"),
            seconds(mitigated - incident.detected_at)
        ),
        None => "Not mitigated yet: manual intervention required.".to_string(),
    };
    let mut environment = minijinja::Environment::new();
    environment.add_template("postmortem", template)?;
    environment.get_template("postmortem")?.render(minijinja::context! {
        incident => minijinja::Value::from(minijinja::value::Serde(incident)),
        detected => rfc3339(incident.detected_at),
        duration => end.map_or_else(|| "ongoing".to_string(), |end| seconds(end - start)),
        impact => format!("{} served by a bad release for {}", incident.app, end.map_or_else(|| "an unknown time".to_string(), |end| seconds(end - start))),
        timeline => minijinja::Value::from(minijinja::value::Serde(&timeline)),
        detection,
        resolution,
        evidence,
        notes => record.notes(),
    })
}

fn seconds(ms: i64) -> String {
    let s = ms.max(0) as f64 / 1000.0;
    if s < 120.0 {
        format!("{s:.0}s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

/// Figures across incidents and releases over a period.
#[derive(Debug, Serialize)]
pub struct Report {
    pub since: String,
    pub incidents: usize,
    pub by_severity: std::collections::BTreeMap<String, usize>,
    /// Mean time to detect: onset to detection, seconds (incidents with a known onset).
    pub mttd_seconds: Option<f64>,
    /// Mean time to restore: detection to mitigation, seconds.
    pub mttr_seconds: Option<f64>,
    pub releases: i64,
    pub rolled_back: i64,
    /// Rolled-back releases over releases.
    pub change_failure_rate: Option<f64>,
    /// Share of the period without a bad release serving (onset, or detection, to
    /// mitigation), per app and over all apps.
    pub availability: f64,
    pub rollback_seconds_p50: Option<f64>,
    pub rollback_seconds_p95: Option<f64>,
}

impl Report {
    pub fn compute(
        since: i64,
        now: i64,
        incidents: &[Incident],
        rollbacks: &[Rollback],
        releases: (i64, i64),
        apps: usize,
    ) -> Self {
        let mean = |values: Vec<f64>| {
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        let mttd = mean(
            incidents
                .iter()
                .filter_map(|i| i.onset_at.map(|o| (i.detected_at - o) as f64 / 1000.0))
                .collect(),
        );
        let mttr = mean(
            incidents
                .iter()
                .filter_map(|i| i.mitigated_at.map(|m| (m - i.detected_at) as f64 / 1000.0))
                .collect(),
        );
        let mut by_severity = std::collections::BTreeMap::new();
        for incident in incidents {
            *by_severity
                .entry(incident.severity.as_str().to_string())
                .or_insert(0) += 1;
        }
        let bad_ms: i64 = incidents
            .iter()
            .map(|i| i.mitigated_at.unwrap_or(now) - i.onset_at.unwrap_or(i.detected_at).max(since))
            .map(|d| d.max(0))
            .sum();
        let period = ((now - since) * apps.max(1) as i64).max(1);
        let mut durations: Vec<f64> = rollbacks
            .iter()
            .filter_map(|r| Some((r.finished_at? - r.started_at?) as f64 / 1000.0))
            .collect();
        durations.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            (!durations.is_empty())
                .then(|| durations[((durations.len() - 1) as f64 * q).round() as usize])
        };
        Self {
            since: rfc3339(since),
            incidents: incidents.len(),
            by_severity,
            mttd_seconds: mttd,
            mttr_seconds: mttr,
            releases: releases.0,
            rolled_back: releases.1,
            change_failure_rate: (releases.0 > 0).then(|| releases.1 as f64 / releases.0 as f64),
            availability: 1.0 - bad_ms as f64 / period as f64,
            rollback_seconds_p50: quantile(0.5),
            rollback_seconds_p95: quantile(0.95),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::FakeClock;
    use crate::ledger::RollbackStatus;

    /// A recorded incident: v2 deployed, judged bad, rolled back, annotated, resolved.
    async fn recorded() -> (Ledger, i64, tempfile::TempDir) {
        let clock = FakeClock::at(1_790_000_000_000);
        let (ledger, dir) = Ledger::temporary(clock.clone()).await;
        let v1 = ledger.record_release("shop", "v1", "ann@ci").await.unwrap();
        ledger
            .start_watching(&v1, rearguard_judge::Mode::BlueGreen, None)
            .await
            .unwrap();
        ledger.mark_stable(&v1).await.unwrap();
        clock.advance(Duration::from_secs(3600));
        let v2 = ledger.record_release("shop", "v2", "bob@ci").await.unwrap();
        ledger
            .start_watching(&v2, rearguard_judge::Mode::BlueGreen, Some("v1"))
            .await
            .unwrap();
        let v2 = ledger.release(v2.id).await.unwrap().unwrap();
        clock.advance(Duration::from_secs(45));
        let onset = ledger.now() / 1000 - 30;
        let evidence = Evidence::Judge(rearguard_judge::Finding {
            rule: rearguard_judge::Rule::Regression,
            metric: rearguard_judge::Metric::ErrorRate,
            tier: Tier::Rapid,
            reason: "error rate 6.00% against the baseline's 0.50%".into(),
            evidence: rearguard_judge::Evidence {
                window_start: onset,
                window_end: onset + 30,
                candidate_requests: 1000.0,
                candidate_events: 60.0,
                candidate_rate: 0.06,
                baseline_rate: 0.005,
                tolerated_rate: 0.015,
                latency_threshold_ms: None,
                candidate_p95_ms: Some(40.0),
                baseline_p95_ms: Some(38.0),
                statistic: "error_rate_cusum_nats".into(),
                value: 12.5,
                threshold: 10.0,
            },
        });
        let rollback = ledger
            .record_rollback(
                &v2,
                &v1,
                Trigger::Auto,
                "error rate 6.00% against the baseline's 0.50%",
                Some(&evidence),
                "rearguard@host",
                RollbackStatus::Started,
            )
            .await
            .unwrap();
        // The finding reads back as it was written (the ledger keeps it as JSON).
        let stored = ledger.rollback(rollback.id).await.unwrap().unwrap();
        assert_eq!(stored.evidence.as_ref(), Some(&evidence));
        let incident = open_for_rollback(&ledger, &rollback, Some(&v2))
            .await
            .unwrap();
        assert_eq!(incident.severity, Severity::P2, "rapid tier");
        assert_eq!(incident.evidence.as_ref(), Some(&evidence));
        clock.advance(Duration::from_millis(800));
        ledger.finish_rollback(&rollback, true, "ok").await.unwrap();
        let rollback = ledger.rollback(rollback.id).await.unwrap().unwrap();
        rollback_finished(
            &ledger,
            &rollback,
            Some(&serde_json::json!({"passed": true})),
        )
        .await
        .unwrap();
        clock.advance(Duration::from_secs(600));
        ledger
            .add_timeline(
                incident.id,
                None,
                crate::ledger::TimelineKind::Note,
                "ann@ci",
                "the cache warm-up was skipped in v2",
            )
            .await
            .unwrap();
        ledger
            .set_root_cause(incident.id, "a missing index on orders")
            .await
            .unwrap();
        ledger
            .resolve_incident(incident.id, "ann@ci")
            .await
            .unwrap();
        (ledger, incident.id, dir)
    }

    #[tokio::test]
    async fn the_postmortem_draft_is_written_from_the_record() {
        let (ledger, id, _dir) = recorded().await;
        let record = Record::load(&ledger, id).await.unwrap().unwrap();
        assert_eq!(record.incident.status, IncidentStatus::Resolved);
        let text = render_postmortem(&record, POSTMORTEM_TEMPLATE).unwrap();
        insta::assert_snapshot!(text);
    }

    #[tokio::test]
    async fn the_report_counts_incidents_and_times() {
        let (ledger, _, _dir) = recorded().await;
        let since = ledger.now() - 86_400_000;
        let incidents = ledger.incidents(since).await.unwrap();
        let rollbacks = ledger.rollbacks("shop").await.unwrap();
        let report = Report::compute(
            since,
            ledger.now(),
            &incidents,
            &rollbacks,
            ledger.release_counts(since).await.unwrap(),
            1,
        );
        assert_eq!(report.incidents, 1);
        assert_eq!(report.by_severity.get("P2"), Some(&1));
        assert_eq!(
            report.mttd_seconds,
            Some(30.0),
            "onset 30 s before the decision"
        );
        assert_eq!(report.mttr_seconds, Some(0.8));
        assert_eq!((report.releases, report.rolled_back), (2, 1));
        assert_eq!(report.change_failure_rate, Some(0.5));
        assert_eq!(report.rollback_seconds_p50, Some(0.8));
        let bad_seconds = 30.8;
        assert!(
            (report.availability - (1.0 - bad_seconds / 86_400.0)).abs() < 1e-9,
            "{}",
            report.availability
        );
    }
}
