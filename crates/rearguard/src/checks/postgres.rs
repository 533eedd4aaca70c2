//! PostgreSQL check: the server takes a connection and, when one is given, runs a query.

use rearguard_judge::Span;
use serde::{Deserialize, Serialize};
use sqlx::Connection;

use super::{Check, Health, Subject, default_failures, default_timeout};
use crate::config::Flaw;
use crate::secret::Secret;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresCheck {
    pub name: String,
    /// `postgres://USER:PASSWORD@HOST:PORT/DB`; write it as `${NAME}` (never logged).
    pub dsn: Secret,
    /// Run after connecting (for example `SELECT 1 FROM orders LIMIT 1`); an error fails.
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    #[serde(default = "default_failures")]
    pub failures: u32,
}

impl PostgresCheck {
    async fn connect_and_query(&self) -> Result<String, sqlx::Error> {
        let mut connection = sqlx::PgConnection::connect(self.dsn.expose()).await?;
        let detail = match &self.query {
            Some(query) => {
                let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(query.clone()))
                    .execute(&mut connection)
                    .await?;
                format!("connected; the query ran ({} rows)", rows.rows_affected())
            }
            None => "connected".to_string(),
        };
        let _ = connection.close().await;
        Ok(detail)
    }
}

#[async_trait::async_trait]
impl Check for PostgresCheck {
    common_check_methods!();

    fn problems(&self, _listening: &[String]) -> Vec<Flaw> {
        let dsn = self.dsn.expose();
        if dsn.starts_with("postgres://")
            || dsn.starts_with("postgresql://")
            || dsn.starts_with("${")
        {
            Vec::new()
        } else {
            vec![Flaw::at(
                &["dsn"],
                format!("check {}: dsn must be a postgres:// URL", self.name),
            )]
        }
    }

    async fn look(&self, _subject: &Subject<'_>) -> (Health, String) {
        match self.connect_and_query().await {
            Ok(detail) => (Health::Pass, detail),
            // The DSN (and so its password) never reaches the detail.
            Err(e) => (
                Health::Fail,
                crate::telemetry::redact_secrets(&e.to_string(), &[self.dsn.expose()]),
            ),
        }
    }
}
