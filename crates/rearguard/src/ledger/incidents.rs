//! Incidents and their timelines in the ledger. Records only; what goes in them is decided
//! by `crate::incidents`.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Ledger, LedgerError, Result};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    utoipa::ToSchema,
    serde::Deserialize,
)]
pub enum Severity {
    P1,
    P2,
    P3,
    P4,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::P1 => "P1",
            Severity::P2 => "P2",
            Severity::P3 => "P3",
            Severity::P4 => "P4",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "P1" => Some(Severity::P1),
            "P2" => Some(Severity::P2),
            "P3" => Some(Severity::P3),
            "P4" => Some(Severity::P4),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Detected,
    Mitigating,
    Mitigated,
    Resolved,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Detected => "detected",
            IncidentStatus::Mitigating => "mitigating",
            IncidentStatus::Mitigated => "mitigated",
            IncidentStatus::Resolved => "resolved",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "detected" => IncidentStatus::Detected,
            "mitigating" => IncidentStatus::Mitigating,
            "mitigated" => IncidentStatus::Mitigated,
            "resolved" => IncidentStatus::Resolved,
            other => {
                return Err(LedgerError::Corrupt {
                    what: "incident status",
                    value: other.into(),
                });
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Incident {
    pub id: i64,
    pub app: String,
    pub rollback_id: Option<i64>,
    pub from_version: String,
    pub to_version: Option<String>,
    pub severity: Severity,
    pub status: IncidentStatus,
    pub title: String,
    #[serde(with = "crate::clock::json_time_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub onset_at: Option<i64>,
    #[serde(with = "crate::clock::json_time")]
    #[schema(value_type = String, format = DateTime)]
    pub detected_at: i64,
    #[serde(with = "crate::clock::json_time_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub mitigated_at: Option<i64>,
    #[serde(with = "crate::clock::json_time_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub acknowledged_at: Option<i64>,
    pub acknowledged_by: Option<String>,
    #[serde(with = "crate::clock::json_time_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    pub root_cause: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub evidence: Option<super::Evidence>,
}

super::text_enum! {
    /// What a timeline entry records.
    TimelineKind, "timeline kind";
    DeployStarted => "deploy_started": "The release took traffic.",
    FirstBadSignal => "first_bad_signal": "The first data counted against the release.",
    Decision => "decision": "The guard decided to roll back (or could not).",
    RollbackStarted => "rollback_started": "The rollback began.",
    RollbackFinished => "rollback_finished": "Traffic is back on the target.",
    RollbackFailed => "rollback_failed": "The rollback could not be done.",
    StateCaptured => "state_captured": "The platform's state and logs were kept.",
    Verification => "verification": "Whether service is back after the rollback.",
    Notified => "notified": "Someone was told.",
    NotificationFailed => "notification_failed": "Someone could not be told.",
    Note => "note": "A person's note.",
    Acknowledged => "acknowledged": "Someone is on it.",
    Severity => "severity": "The severity was changed.",
    RootCause => "root_cause": "The root cause was recorded.",
    Resolved => "resolved": "The incident was closed.",
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    #[serde(with = "crate::clock::json_time")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    pub kind: TimelineKind,
    pub actor: String,
    pub text: String,
}

/// What an incident is opened with.
pub struct NewIncident<'a> {
    pub app: &'a str,
    pub rollback_id: Option<i64>,
    pub from_version: &'a str,
    pub to_version: Option<&'a str>,
    pub severity: Severity,
    pub title: &'a str,
    pub onset_at: Option<i64>,
    pub detected_at: i64,
    pub evidence: Option<&'a super::Evidence>,
}

macro_rules! incident_select {
    () => {
        "SELECT id, app, rollback_id, from_version, to_version, severity, status, title, onset_at, detected_at, \
         mitigated_at, acknowledged_at, acknowledged_by, resolved_at, resolved_by, root_cause, evidence FROM incidents"
    };
}

impl Ledger {
    /// Opens an incident (once per rollback: a second call returns the first).
    pub async fn open_incident(&self, new: &NewIncident<'_>) -> Result<Incident> {
        if let Some(rollback_id) = new.rollback_id
            && let Some(existing) = self.incident_of_rollback(rollback_id).await?
        {
            return Ok(existing);
        }
        let row = sqlx::query(
            "INSERT INTO incidents (app, rollback_id, from_version, to_version, severity, status, title, onset_at, \
             detected_at, evidence) VALUES ($1, $2, $3, $4, $5, 'detected', $6, $7, $8, $9) RETURNING id",
        )
        .bind(new.app)
        .bind(new.rollback_id)
        .bind(new.from_version)
        .bind(new.to_version)
        .bind(new.severity.as_str())
        .bind(new.title)
        .bind(new.onset_at)
        .bind(new.detected_at)
        .bind(new.evidence.map(|e| serde_json::to_string(e).unwrap_or_default()))
        .fetch_one(&self.pool)
        .await?;
        let id: i64 = row.try_get("id")?;
        Ok(self.incident(id).await?.expect("just inserted"))
    }

    pub async fn incident(&self, id: i64) -> Result<Option<Incident>> {
        let row = sqlx::query(concat!(incident_select!(), " WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(incident_from).transpose()
    }

    pub async fn incident_of_rollback(&self, rollback_id: i64) -> Result<Option<Incident>> {
        let row = sqlx::query(concat!(incident_select!(), " WHERE rollback_id = $1"))
            .bind(rollback_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(incident_from).transpose()
    }

    /// Incidents detected since `since` (epoch ms), newest first.
    pub async fn incidents(&self, since: i64) -> Result<Vec<Incident>> {
        let rows = sqlx::query(concat!(
            incident_select!(),
            " WHERE detected_at >= $1 ORDER BY id DESC"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(incident_from).collect()
    }

    /// Appends to the incident's timeline, at the ledger's now or at `at`.
    pub async fn add_timeline(
        &self,
        incident: i64,
        at: Option<i64>,
        kind: TimelineKind,
        actor: &str,
        text: &str,
    ) -> Result<()> {
        sqlx::query("INSERT INTO incident_events (incident_id, at, kind, actor, text) VALUES ($1, $2, $3, $4, $5)")
            .bind(incident)
            .bind(at.unwrap_or_else(|| self.now()))
            .bind(kind.as_str())
            .bind(actor)
            .bind(text)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The timeline, in time order.
    pub async fn timeline(&self, incident: i64) -> Result<Vec<TimelineEntry>> {
        let rows = sqlx::query("SELECT at, kind, actor, text FROM incident_events WHERE incident_id = $1 ORDER BY at, id")
            .bind(incident)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(TimelineEntry {
                    at: row.try_get("at")?,
                    kind: TimelineKind::parse(&row.try_get::<String, _>("kind")?)?,
                    actor: row.try_get("actor")?,
                    text: row.try_get("text")?,
                })
            })
            .collect()
    }

    pub async fn set_incident_status(&self, id: i64, status: IncidentStatus) -> Result<()> {
        let now = self.now();
        let mitigated = matches!(status, IncidentStatus::Mitigated).then_some(now);
        sqlx::query("UPDATE incidents SET status = $1, mitigated_at = COALESCE(mitigated_at, $2) WHERE id = $3")
            .bind(status.as_str())
            .bind(mitigated)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn acknowledge_incident(&self, id: i64, by: &str) -> Result<()> {
        sqlx::query("UPDATE incidents SET acknowledged_at = COALESCE(acknowledged_at, $1), acknowledged_by = COALESCE(acknowledged_by, $2) WHERE id = $3")
            .bind(self.now())
            .bind(by)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn resolve_incident(&self, id: i64, by: &str) -> Result<()> {
        let now = self.now();
        sqlx::query(
            "UPDATE incidents SET status = 'resolved', resolved_at = COALESCE(resolved_at, $1), resolved_by = COALESCE(resolved_by, $2), \
             mitigated_at = COALESCE(mitigated_at, $3) WHERE id = $4",
        )
        .bind(now)
        .bind(by)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_incident_severity(&self, id: i64, severity: Severity) -> Result<()> {
        sqlx::query("UPDATE incidents SET severity = $1 WHERE id = $2")
            .bind(severity.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_root_cause(&self, id: i64, text: &str) -> Result<()> {
        sqlx::query("UPDATE incidents SET root_cause = $1 WHERE id = $2")
            .bind(text)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Keeps what the platform looked like for an incident, once (a rollback resumed
    /// after a restart does not capture again). False when it had been kept already.
    pub async fn keep_capture(
        &self,
        incident: i64,
        version: &str,
        capture: &crate::backends::Capture,
    ) -> Result<bool> {
        let kept = sqlx::query(
            "INSERT INTO captures (incident_id, at, version, state, logs) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (incident_id) DO NOTHING",
        )
        .bind(incident)
        .bind(self.now())
        .bind(version)
        .bind(capture.state.to_string())
        .bind(serde_json::to_string(&capture.logs).unwrap_or_default())
        .execute(&self.pool)
        .await?;
        Ok(kept.rows_affected() == 1)
    }

    /// What the platform looked like for an incident, if it was captured.
    pub async fn capture(&self, incident: i64) -> Result<Option<crate::backends::Capture>> {
        let row = sqlx::query("SELECT state, logs FROM captures WHERE incident_id = $1")
            .bind(incident)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let state: String = row.try_get("state")?;
            let logs: String = row.try_get("logs")?;
            Ok(crate::backends::Capture {
                state: serde_json::from_str(&state).unwrap_or_default(),
                logs: serde_json::from_str(&logs).unwrap_or_default(),
            })
        })
        .transpose()
    }

    /// Escalation levels already told about the incident (0 is level 1).
    pub async fn notified_levels(&self, incident: i64) -> Result<Vec<usize>> {
        let rows = sqlx::query(
            "SELECT DISTINCT level FROM incident_notifications WHERE incident_id = $1 \
             AND event IN ('incident_started', 'escalated') ORDER BY level",
        )
        .bind(incident)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get::<i64, _>("level")? as usize))
            .collect()
    }

    /// Releases recorded since `since`, and how many of them were rolled back.
    pub async fn release_counts(&self, since: i64) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS releases, COALESCE(SUM(CASE WHEN state = 'rolled_back' THEN 1 ELSE 0 END), 0) AS rolled_back \
             FROM releases WHERE created_at >= $1",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("releases")?, row.try_get("rolled_back")?))
    }
}

fn incident_from(row: &AnyRow) -> Result<Incident> {
    let severity: String = row.try_get("severity")?;
    let status: String = row.try_get("status")?;
    let evidence: Option<String> = row.try_get("evidence")?;
    Ok(Incident {
        id: row.try_get("id")?,
        app: row.try_get("app")?,
        rollback_id: row.try_get("rollback_id")?,
        from_version: row.try_get("from_version")?,
        to_version: row.try_get("to_version")?,
        severity: Severity::parse(&severity).ok_or(LedgerError::Corrupt {
            what: "severity",
            value: severity,
        })?,
        status: IncidentStatus::parse(&status)?,
        title: row.try_get("title")?,
        onset_at: row.try_get("onset_at")?,
        detected_at: row.try_get("detected_at")?,
        mitigated_at: row.try_get("mitigated_at")?,
        acknowledged_at: row.try_get("acknowledged_at")?,
        acknowledged_by: row.try_get("acknowledged_by")?,
        resolved_at: row.try_get("resolved_at")?,
        resolved_by: row.try_get("resolved_by")?,
        root_cause: row.try_get("root_cause")?,
        evidence: evidence.and_then(|e| serde_json::from_str(&e).ok()),
    })
}
