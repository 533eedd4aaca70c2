//! The rollback log: one JSON line per finished rollback, appended exactly once (a line is
//! looked for before it is written, so a guard killed between writing it and noting that in
//! the ledger does not write it twice).

use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;

use crate::clock::rfc3339;
use crate::ledger::{Rollback, RollbackStatus, Trigger};

#[derive(Debug, Serialize)]
pub struct Line<'a> {
    pub timestamp: String,
    pub rollback_id: i64,
    pub app: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    /// `auto` or `manual`.
    pub trigger: Trigger,
    pub reason: &'a str,
    pub duration_seconds: f64,
    /// `success` or `failed`.
    pub status: &'static str,
    pub hostname: String,
    pub user: String,
}

#[derive(Clone, Debug)]
pub struct RollbackLog {
    pub path: PathBuf,
}

impl RollbackLog {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Appends the line for `rollback` unless it is already there.
    pub fn append_once(&self, rollback: &Rollback) -> std::io::Result<()> {
        let marker = format!(
            "\"rollback_id\":{},\"app\":{}",
            rollback.id,
            serde_json::to_string(&rollback.app)?
        );
        if std::fs::read_to_string(&self.path)
            .is_ok_and(|text| text.lines().any(|l| l.contains(&marker)))
        {
            return Ok(());
        }
        let finished = rollback.finished_at.unwrap_or(rollback.requested_at);
        let started = rollback.started_at.unwrap_or(rollback.requested_at);
        let line = Line {
            timestamp: rfc3339(finished),
            rollback_id: rollback.id,
            app: &rollback.app,
            from: &rollback.from_version,
            to: &rollback.to_version,
            trigger: rollback.trigger,
            reason: &rollback.reason,
            duration_seconds: (finished - started).max(0) as f64 / 1000.0,
            status: if rollback.status == RollbackStatus::Done {
                "success"
            } else {
                "failed"
            },
            hostname: crate::identity::hostname(),
            user: crate::identity::user(),
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(file, "{}", serde_json::to_string(&line)?)?;
        file.sync_data()
    }
}
