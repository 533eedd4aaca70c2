//! Working an incident: notes, acknowledgement, severity, root cause, resolution. Each is
//! a change to the incident and a line in its timeline.

use super::{Actor, OpsError, Result, Workspace};
use crate::ledger::{AuditAction, Incident, IncidentStatus, Severity};

/// What a person does to an incident.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum IncidentAction {
    /// Adds a note to the timeline.
    Note {
        #[schema(min_length = 1, max_length = 10000)]
        text: String,
    },
    /// Says someone is on it (stops escalation).
    Ack,
    /// Re-grades it: P1 (worst) to P4.
    Severity {
        #[schema(pattern = "^[Pp][1-4]$")]
        severity: String,
    },
    /// Records what caused it.
    RootCause {
        #[schema(min_length = 1, max_length = 10000)]
        text: String,
    },
    /// Closes it, optionally recording the root cause first.
    Resolve {
        #[schema(min_length = 1, max_length = 10000)]
        root_cause: Option<String>,
    },
}

impl IncidentAction {
    fn audited_as(&self) -> AuditAction {
        match self {
            IncidentAction::Note { .. } => AuditAction::IncidentNote,
            IncidentAction::Ack => AuditAction::IncidentAck,
            IncidentAction::Severity { .. } => AuditAction::IncidentSeverity,
            IncidentAction::RootCause { .. } => AuditAction::IncidentRootCause,
            IncidentAction::Resolve { .. } => AuditAction::IncidentResolve,
        }
    }
}

/// Longest note or root cause kept, in characters.
const MAX_TEXT: usize = 10_000;

/// Does `action` to incident `id`; returns the incident as it is afterwards.
pub async fn act_on_incident(
    workspace: &Workspace,
    actor: &Actor,
    id: i64,
    action: &IncidentAction,
) -> Result<Incident> {
    let detail = match action {
        IncidentAction::Severity { severity } => severity.clone(),
        _ => String::new(),
    };
    let write = async {
        let ledger = &workspace.ledger;
        let incident = ledger.incident(id).await?.ok_or_else(|| {
            OpsError::NotFound(format!(
                "no incident {id}; `rearguard incidents` lists them"
            ))
        })?;
        let who = actor.name.as_str();
        match action {
            IncidentAction::Note { text } => {
                check_text(text)?;
                ledger
                    .add_timeline(id, None, crate::ledger::TimelineKind::Note, who, text)
                    .await?;
            }
            IncidentAction::Ack => {
                ledger.acknowledge_incident(id, who).await?;
                ledger
                    .add_timeline(
                        id,
                        None,
                        crate::ledger::TimelineKind::Acknowledged,
                        who,
                        "acknowledged",
                    )
                    .await?;
            }
            IncidentAction::Severity { severity } => {
                let severity = Severity::parse(severity).ok_or_else(|| {
                    OpsError::Invalid(format!(
                        "severity must be P1, P2, P3 or P4, got {severity:?}"
                    ))
                })?;
                ledger.set_incident_severity(id, severity).await?;
                let text = format!("severity set to {}", severity.as_str());
                ledger
                    .add_timeline(id, None, crate::ledger::TimelineKind::Severity, who, &text)
                    .await?;
            }
            IncidentAction::RootCause { text } => root_cause(workspace, actor, id, text).await?,
            IncidentAction::Resolve { root_cause: text } => {
                if incident.status != IncidentStatus::Resolved {
                    if let Some(text) = text {
                        root_cause(workspace, actor, id, text).await?;
                    }
                    ledger.resolve_incident(id, who).await?;
                    ledger
                        .add_timeline(
                            id,
                            None,
                            crate::ledger::TimelineKind::Resolved,
                            who,
                            "resolved",
                        )
                        .await?;
                }
            }
        }
        Ok(ledger.incident(id).await?.unwrap_or(incident))
    };
    workspace
        .audited(
            actor,
            action.audited_as(),
            &format!("incident {id}"),
            &detail,
            write,
        )
        .await
}

async fn root_cause(workspace: &Workspace, actor: &Actor, id: i64, text: &str) -> Result<()> {
    check_text(text)?;
    workspace.ledger.set_root_cause(id, text).await?;
    workspace
        .ledger
        .add_timeline(
            id,
            None,
            crate::ledger::TimelineKind::RootCause,
            &actor.name,
            &format!("root cause: {text}"),
        )
        .await?;
    Ok(())
}

fn check_text(text: &str) -> Result<()> {
    let length = text.chars().count();
    if length == 0 {
        return Err(OpsError::Invalid("the text is empty".into()));
    }
    if length > MAX_TEXT {
        return Err(OpsError::Invalid(format!(
            "the text is {length} characters long; at most {MAX_TEXT} are kept"
        )));
    }
    Ok(())
}
