//! API tokens and the audit log in the ledger. Records only: `ops` decides who may do
//! what and writes the audit entries.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Ledger, Result};

super::text_enum! {
    /// What a token may do; each role may do what the ones before it may.
    Role, "token role";
    Viewer => "viewer": "Reads everything but the audit log and the tokens.",
    Operator => "operator": "Also records releases, requests rollbacks and works incidents.",
    Admin => "admin": "Also reads the audit log and manages tokens.",
}

super::text_enum! {
    /// What was asked, for the audit log.
    AuditAction, "audit action";
    RecordRelease => "record_release": "A release recorded for the guard to deploy.",
    RequestRollback => "request_rollback": "A rollback asked for.",
    IncidentNote => "incident_note": "A note added to an incident.",
    IncidentAck => "incident_ack": "An incident acknowledged.",
    IncidentSeverity => "incident_severity": "An incident re-graded.",
    IncidentRootCause => "incident_root_cause": "An incident's root cause recorded.",
    IncidentResolve => "incident_resolve": "An incident resolved.",
    TokenCreate => "token_create": "An API token created.",
    TokenRevoke => "token_revoke": "An API token revoked.",
}

super::text_enum! {
    /// How an audited write ended.
    AuditOutcome, "audit outcome";
    Ok => "ok": "Done.",
    Refused => "refused": "Not done: the request was wrong or not allowed now.",
    Failed => "failed": "Not done: something failed while doing it.",
}

/// A token as stored: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TokenRecord {
    pub id: i64,
    pub name: String,
    pub role: Role,
    #[serde(with = "crate::clock::json_time")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    pub created_by: String,
    #[serde(with = "crate::clock::json_time_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<i64>,
}

/// One write, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(with = "crate::clock::json_time")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    pub actor: String,
    pub source: String,
    pub action: AuditAction,
    pub target: String,
    pub outcome: AuditOutcome,
    pub detail: String,
}

fn token_from_row(row: &AnyRow) -> Result<TokenRecord> {
    let role: String = row.try_get("role")?;
    Ok(TokenRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role)?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl Ledger {
    /// Stores a new token by its hash; `None` when the name is taken.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        by: &str,
    ) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(
            "INSERT INTO tokens (name, role, hash, created_at, created_by) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO NOTHING \
             RETURNING id, name, role, created_at, created_by, revoked_at",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(hash)
        .bind(self.now())
        .bind(by)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    /// The live (unrevoked) token with this hash.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(
            "SELECT id, name, role, created_at, created_by, revoked_at FROM tokens \
             WHERE hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(
            "SELECT id, name, role, created_at, created_by, revoked_at FROM tokens ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revokes the named token; false when there is no live token by that name.
    pub async fn revoke_token(&self, name: &str) -> Result<bool> {
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
                .bind(self.now())
                .bind(name)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn audit(
        &self,
        actor: &str,
        source: &str,
        action: AuditAction,
        target: &str,
        outcome: AuditOutcome,
        detail: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit (at, actor, source, action, target, outcome, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(self.now())
        .bind(actor)
        .bind(source)
        .bind(action.as_str())
        .bind(target)
        .bind(outcome.as_str())
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The audit log since `since`, oldest first.
    pub async fn audit_log(&self, since: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, source, action, target, outcome, detail FROM audit \
             WHERE at >= $1 ORDER BY id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.try_get("id")?,
                    at: row.try_get("at")?,
                    actor: row.try_get("actor")?,
                    source: row.try_get("source")?,
                    action: AuditAction::parse(&row.try_get::<String, _>("action")?)?,
                    target: row.try_get("target")?,
                    outcome: AuditOutcome::parse(&row.try_get::<String, _>("outcome")?)?,
                    detail: row.try_get("detail")?,
                })
            })
            .collect()
    }
}
