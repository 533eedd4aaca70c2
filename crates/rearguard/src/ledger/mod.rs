//! The ledger: every release and its state, which release serves each app, rollbacks, the
//! audit trail and the guards' leases. Every state change is written here before it is
//! acted on, so a guard that is killed resumes where it stopped.
//!
//! One implementation over `sqlx::Any` with portable SQL (`$N` placeholders work on SQLite
//! and PostgreSQL alike), SQLite by default. No business decisions here: callers decide,
//! the ledger records.

/// A closed set of words kept as snake_case text in the ledger and in JSON: the enum, its
/// text and its parsing from one list, so a word is written once.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal; $($variant:ident => $text:literal: $doc:literal,)*) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $(#[doc = $doc] $variant,)*
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            pub(crate) fn parse(text: &str) -> std::result::Result<Self, $crate::ledger::LedgerError> {
                match text {
                    $($text => Ok($name::$variant),)*
                    other => Err($crate::ledger::LedgerError::Corrupt { what: $what, value: other.into() }),
                }
            }
        }
    };
}
pub(crate) use text_enum;

mod access;
mod deliveries;
mod evidence;
mod group_commit;
mod incidents;
mod lease;
mod steps;

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use rearguard_judge::Mode;

use crate::clock::SharedClock;
pub use access::{AuditAction, AuditEntry, AuditOutcome, Role, TokenRecord};
pub use deliveries::Delivery;
pub use evidence::Evidence;
pub use incidents::{Incident, IncidentStatus, NewIncident, Severity, TimelineEntry, TimelineKind};
pub use lease::{LeaseDecision, decide_lease};
pub use steps::VersionStep;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open the database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error(
        "the database {url} is read-only: rearguard needs to write to it (check the file's permissions)"
    )]
    ReadOnly { url: String },
    #[error("cannot prepare the database {url}: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error("the ledger holds an unknown {what} {value:?}: was it written by a newer rearguard?")]
    Corrupt { what: &'static str, value: String },
}

type Result<T> = std::result::Result<T, LedgerError>;

impl LedgerError {
    /// Errors that retrying will not cure.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            LedgerError::ReadOnly { .. }
                | LedgerError::Migrate { .. }
                | LedgerError::Corrupt { .. }
        )
    }
}

/// Where a release stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseState {
    /// Recorded; being started.
    Deploying,
    /// Taking traffic, watched through its bake time.
    Watching,
    /// Passed its bake time: known-good.
    Stable,
    /// Was bad; traffic went back to an earlier release.
    RolledBack,
    /// Could not be deployed (or superseded before it was).
    Failed,
}

impl ReleaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::Deploying => "deploying",
            ReleaseState::Watching => "watching",
            ReleaseState::Stable => "stable",
            ReleaseState::RolledBack => "rolled_back",
            ReleaseState::Failed => "failed",
        }
    }

    /// Settled: nothing more will happen to the release on its own.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            ReleaseState::Stable | ReleaseState::RolledBack | ReleaseState::Failed
        )
    }
}

impl FromStr for ReleaseState {
    type Err = LedgerError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "deploying" => ReleaseState::Deploying,
            "watching" => ReleaseState::Watching,
            "stable" => ReleaseState::Stable,
            "rolled_back" => ReleaseState::RolledBack,
            "failed" => ReleaseState::Failed,
            other => {
                return Err(LedgerError::Corrupt {
                    what: "release state",
                    value: other.into(),
                });
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Release {
    pub id: i64,
    pub app: String,
    pub version: String,
    pub state: ReleaseState,
    #[serde(with = "crate::clock::json_time")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    pub created_by: String,
    #[serde(with = "crate::clock::json_time")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
    #[serde(with = "crate::clock::json_time_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub watch_started_at: Option<i64>,
    #[serde(with = "crate::clock::json_time_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub stable_at: Option<i64>,
    pub note: Option<String>,
    /// How it is judged, set when it takes traffic (see [`Watch`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<Watch>,
    /// Time its watch was interrupted (no guard ran): it does not count towards the bake.
    pub unwatched_ms: i64,
}

/// How a release is judged: in which mode, against which version's record, from when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Watch {
    #[schema(value_type = String)]
    pub mode: Mode,
    /// The version whose traffic is the baseline: its history before `judged_from`
    /// (blue-green), or its traffic beside the candidate's (canary). None: nothing to
    /// compare with (the app's first release, or one restored by a rollback).
    pub baseline_version: Option<String>,
    /// The judge's deploy time, in epoch milliseconds: when the release took traffic, or
    /// when a canary took all of it.
    #[serde(with = "crate::clock::json_time")]
    #[schema(value_type = String, format = DateTime)]
    pub judged_from: i64,
}

impl Release {
    /// How long it has been watched by a guard at `now` (the bake counts this).
    pub fn watched_ms(&self, now: i64) -> i64 {
        self.watch_started_at
            .map_or(0, |started| now - started - self.unwatched_ms)
            .max(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Auto,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Auto => "auto",
            Trigger::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RollbackStatus {
    /// Asked for (by a person); not started yet.
    Requested,
    /// Written before acting; in progress (or interrupted, to be finished).
    Started,
    Done,
    Failed,
}

impl RollbackStatus {
    fn as_str(self) -> &'static str {
        match self {
            RollbackStatus::Requested => "requested",
            RollbackStatus::Started => "started",
            RollbackStatus::Done => "done",
            RollbackStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Rollback {
    pub id: i64,
    pub app: String,
    pub from_release_id: i64,
    pub to_release_id: i64,
    pub from_version: String,
    pub to_version: String,
    pub trigger: Trigger,
    pub reason: String,
    #[schema(value_type = Option<Object>)]
    pub evidence: Option<Evidence>,
    pub requested_by: String,
    #[serde(with = "crate::clock::json_time")]
    #[schema(value_type = String, format = DateTime)]
    pub requested_at: i64,
    #[serde(with = "crate::clock::json_time_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<i64>,
    #[serde(with = "crate::clock::json_time_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<i64>,
    pub status: RollbackStatus,
    pub logged: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub holder: String,
    pub expires_at: i64,
    pub epoch: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Event {
    #[serde(with = "crate::clock::json_time")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    pub kind: String,
    pub release_id: Option<i64>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

#[derive(Clone)]
pub struct Ledger {
    pool: AnyPool,
    clock: SharedClock,
    group_commit: group_commit::GroupCommit,
}

// Column lists as macros so queries stay `&'static str` (sqlx refuses SQL built at run
// time unless audited; these are constants).
macro_rules! release_columns {
    () => {
        "id, app, version, state, created_at, created_by, updated_at, watch_started_at, stable_at, note, \
         watch_mode, baseline_version, judged_from, unwatched_ms"
    };
}

macro_rules! rollback_select {
    () => {
        "SELECT r.id, r.app, r.from_release_id, r.to_release_id, f.version AS from_version, \
         t.version AS to_version, r.trigger_kind, r.reason, r.evidence, r.requested_by, r.requested_at, r.started_at, \
         r.finished_at, r.status, r.logged FROM rollbacks r JOIN releases f ON f.id = r.from_release_id \
         JOIN releases t ON t.id = r.to_release_id"
    };
}

/// What waits for an app's guard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkWaiting {
    /// Rollbacks requested or started, not finished.
    pub rollbacks: bool,
    /// A release recorded, not deployed yet.
    pub release: bool,
}

impl Ledger {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    /// A ledger in a fresh temporary directory, removed with the directory (tests).
    #[cfg(test)]
    pub(crate) async fn temporary(clock: SharedClock) -> (Self, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("l.db").display());
        (Self::open(&url, clock).await.unwrap(), dir)
    }

    pub async fn open(url: &str, clock: SharedClock) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let shown = crate::telemetry::redact(url);
        let connect_url = sqlite_url_with_create(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            // A ping before each query doubles the round trips to SQLite's worker thread,
            // and a database file does not drop connections.
            .test_before_acquire(false)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        // Durable across a crash of the process (WAL); only a power cut
                        // may lose the last commits. FULL's fsync per commit cost most of
                        // a guard's CPU at a thousand apps.
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await
            .map_err(|source| classify_open_error(&shown, source))?;
        // SQLite has no migration lock of its own: two rearguard processes opening a new
        // database at once would both create the tables. A lock file serialises them.
        let _lock = match sqlite_file(url) {
            Some(file) => Some(MigrationLock::take(&file).map_err(|e| LedgerError::Open {
                url: shown.clone(),
                source: sqlx::Error::Io(e),
            })?),
            None => None,
        };
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|source| match &source {
                sqlx::migrate::MigrateError::Execute(e) if is_read_only(e) => {
                    LedgerError::ReadOnly { url: shown.clone() }
                }
                _ => LedgerError::Migrate {
                    url: shown.clone(),
                    source,
                },
            })?;
        let group_commit = group_commit::GroupCommit::start(pool.clone());
        let ledger = Self {
            pool,
            clock,
            group_commit,
        };
        ledger.check_writable(&shown).await?;
        Ok(ledger)
    }

    /// A database opened read-only answers reads; find out now, not mid-rollback.
    async fn check_writable(&self, url: &str) -> Result<()> {
        let result = sqlx::query("UPDATE leases SET expires_at = expires_at WHERE app = '' ")
            .execute(&self.pool)
            .await;
        match result {
            Err(e) if is_read_only(&e) => Err(LedgerError::ReadOnly {
                url: url.to_string(),
            }),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(()),
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Answers when the database does (readiness).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- releases ----

    /// Records a new release of `app` in state `deploying`.
    pub async fn record_release(&self, app: &str, version: &str, by: &str) -> Result<Release> {
        let now = self.now();
        let row = sqlx::query(concat!(
            "INSERT INTO releases (app, version, state, created_at, created_by, updated_at) \
             VALUES ($1, $2, 'deploying', $3, $4, $5) RETURNING ",
            release_columns!()
        ))
        .bind(app)
        .bind(version)
        .bind(now)
        .bind(by)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        let release = release_from(&row)?;
        self.event(
            app,
            Some(release.id),
            "release_recorded",
            serde_json::json!({"version": version, "by": by}),
        )
        .await?;
        Ok(release)
    }

    pub async fn release(&self, id: i64) -> Result<Option<Release>> {
        self.one_release(
            sqlx::query(concat!(
                "SELECT ",
                release_columns!(),
                " FROM releases WHERE id = $1"
            ))
            .bind(id),
        )
        .await
    }

    async fn one_release(
        &self,
        query: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<Option<Release>> {
        let row = query.fetch_optional(&self.pool).await?;
        row.as_ref().map(release_from).transpose()
    }

    /// Every release of `app`, newest first.
    pub async fn releases(&self, app: &str) -> Result<Vec<Release>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            release_columns!(),
            " FROM releases WHERE app = $1 ORDER BY id DESC"
        ))
        .bind(app)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(release_from).collect()
    }

    /// The newest recorded version `version` of `app`.
    pub async fn release_of_version(&self, app: &str, version: &str) -> Result<Option<Release>> {
        self.one_release(
            sqlx::query(concat!(
                "SELECT ",
                release_columns!(),
                " FROM releases WHERE app = $1 AND version = $2 ORDER BY id DESC LIMIT 1"
            ))
            .bind(app)
            .bind(version),
        )
        .await
    }

    /// The release serving `app` (or that must serve it).
    pub async fn current(&self, app: &str) -> Result<Option<Release>> {
        self.one_release(sqlx::query(concat!(
            "SELECT ",
            release_columns!(),
            " FROM releases WHERE id = (SELECT current_release_id FROM app_state WHERE app = $1)"
        )).bind(app)).await
    }

    /// The apps with a rollback to perform or a release to deploy (usually none), in one
    /// query for all apps: each guardian asks every tick.
    pub async fn work_waiting(&self) -> Result<BTreeMap<String, WorkWaiting>> {
        let rows = sqlx::query(
            "SELECT app, 1 AS rollbacks, 0 AS release FROM rollbacks WHERE status IN ('requested', 'started') \
             UNION ALL SELECT app, 0 AS rollbacks, 1 AS release FROM releases WHERE state = 'deploying'",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut waiting = BTreeMap::<String, WorkWaiting>::new();
        for row in rows {
            let work = waiting.entry(row.try_get("app")?).or_default();
            work.rollbacks |= row.try_get::<i64, _>("rollbacks")? != 0;
            work.release |= row.try_get::<i64, _>("release")? != 0;
        }
        Ok(waiting)
    }

    /// The newest release of `app` waiting to be deployed, if any.
    pub async fn pending_release(&self, app: &str) -> Result<Option<Release>> {
        self.one_release(
            sqlx::query(concat!(
                "SELECT ",
                release_columns!(),
                " FROM releases WHERE app = $1 AND state = 'deploying' ORDER BY id DESC LIMIT 1"
            ))
            .bind(app),
        )
        .await
    }

    /// Older releases of the same app still waiting to be deployed will never be: `release`
    /// supersedes them.
    pub async fn supersede_pending(&self, release: &Release) -> Result<()> {
        let note = format!("superseded by {}", release.version);
        sqlx::query(
            "UPDATE releases SET state = 'failed', updated_at = $1, note = $2 \
             WHERE app = $3 AND state = 'deploying' AND id < $4",
        )
        .bind(self.now())
        .bind(note)
        .bind(&release.app)
        .bind(release.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The last known-good release of `app`: the one that most recently passed its bake
    /// time and is still stable, other than `excluding`.
    pub async fn known_good(&self, app: &str, excluding: Option<i64>) -> Result<Option<Release>> {
        self.one_release(
            sqlx::query(concat!(
                "SELECT ",
                release_columns!(),
                " FROM releases WHERE app = $1 AND state = 'stable' AND id <> $2 \
             ORDER BY stable_at DESC, id DESC LIMIT 1"
            ))
            .bind(app)
            .bind(excluding.unwrap_or(-1)),
        )
        .await
    }

    pub async fn set_state(
        &self,
        release: &Release,
        state: ReleaseState,
        note: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE releases SET state = $1, updated_at = $2, note = COALESCE($3, note) WHERE id = $4")
            .bind(state.as_str())
            .bind(self.now())
            .bind(note)
            .bind(release.id)
            .execute(&self.pool)
            .await?;
        self.event(
            &release.app,
            Some(release.id),
            state.as_str(),
            serde_json::json!({"version": release.version, "note": note}),
        )
        .await
    }

    /// The release took traffic: it is now the app's current release, watched from now in
    /// `mode` against `baseline_version`.
    pub async fn start_watching(
        &self,
        release: &Release,
        mode: Mode,
        baseline_version: Option<&str>,
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE releases SET state = 'watching', watch_started_at = $1, updated_at = $2, \
             watch_mode = $3, baseline_version = $4, judged_from = $5 WHERE id = $6",
        )
        .bind(now)
        .bind(now)
        .bind(mode_text(mode))
        .bind(baseline_version)
        .bind(now)
        .bind(release.id)
        .execute(&mut *tx)
        .await?;
        set_current(&mut tx, &release.app, release.id, now).await?;
        tx.commit().await?;
        self.event(
            &release.app,
            Some(release.id),
            "watching",
            serde_json::json!({"version": release.version, "mode": mode, "baseline": baseline_version}),
        )
        .await
    }

    /// From now on `release` is judged afresh, in blue-green mode against
    /// `baseline_version`'s record (a canary that took all traffic; a release restored by a
    /// rollback, with nothing to compare with).
    pub async fn judge_afresh(
        &self,
        release: &Release,
        baseline_version: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE releases SET watch_mode = $1, baseline_version = $2, judged_from = $3 WHERE id = $4",
        )
        .bind(mode_text(Mode::BlueGreen))
        .bind(baseline_version)
        .bind(self.now())
        .bind(release.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds time during which nobody watched `release` (a guard was down).
    pub async fn add_unwatched(&self, release: &Release, ms: i64) -> Result<()> {
        sqlx::query("UPDATE releases SET unwatched_ms = unwatched_ms + $1 WHERE id = $2")
            .bind(ms.max(0))
            .bind(release.id)
            .execute(&self.pool)
            .await?;
        self.event(
            &release.app,
            Some(release.id),
            "watch_resumed",
            serde_json::json!({"version": release.version, "unwatched_seconds": ms as f64 / 1000.0}),
        )
        .await
    }

    /// Makes `release` the app's current one without a watch (the first release a guard
    /// adopts, or a manual roll-forward).
    pub async fn mark_stable(&self, release: &Release) -> Result<()> {
        let now = self.now();
        sqlx::query(
            "UPDATE releases SET state = 'stable', stable_at = $1, updated_at = $2 WHERE id = $3",
        )
        .bind(now)
        .bind(now)
        .bind(release.id)
        .execute(&self.pool)
        .await?;
        self.event(
            &release.app,
            Some(release.id),
            "stable",
            serde_json::json!({"version": release.version}),
        )
        .await
    }

    // ---- rollbacks ----

    /// Writes a rollback before anything is done about it: `Started` for the guard's own
    /// decisions, `Requested` for a person's (the guard starts it).
    #[allow(clippy::too_many_arguments)]
    pub async fn record_rollback(
        &self,
        from: &Release,
        to: &Release,
        trigger: Trigger,
        reason: &str,
        evidence: Option<&Evidence>,
        by: &str,
        status: RollbackStatus,
    ) -> Result<Rollback> {
        let now = self.now();
        let started_at = (status == RollbackStatus::Started).then_some(now);
        let row = sqlx::query(
            "INSERT INTO rollbacks (app, from_release_id, to_release_id, trigger_kind, reason, evidence, requested_by, \
             requested_at, started_at, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(&from.app)
        .bind(from.id)
        .bind(to.id)
        .bind(trigger.as_str())
        .bind(reason)
        .bind(evidence.map(|e| serde_json::to_string(e).unwrap_or_default()))
        .bind(by)
        .bind(now)
        .bind(started_at)
        .bind(status.as_str())
        .fetch_one(&self.pool)
        .await?;
        let id: i64 = row.try_get("id")?;
        self.event(
            &from.app,
            Some(from.id),
            "rollback_recorded",
            serde_json::json!({"rollback": id, "from": from.version, "to": to.version, "trigger": trigger, "reason": reason, "status": status}),
        )
        .await?;
        Ok(self.rollback(id).await?.expect("just inserted"))
    }

    pub async fn rollback(&self, id: i64) -> Result<Option<Rollback>> {
        let row = sqlx::query(concat!(rollback_select!(), " WHERE r.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rollback_from).transpose()
    }

    /// Rollbacks of `app`, newest first.
    pub async fn rollbacks(&self, app: &str) -> Result<Vec<Rollback>> {
        self.rollbacks_where(
            app,
            concat!(rollback_select!(), " WHERE r.app = $1 ORDER BY r.id DESC"),
        )
        .await
    }

    /// Rollbacks asked for or interrupted, oldest first: the guard's to-do list.
    pub async fn open_rollbacks(&self, app: &str) -> Result<Vec<Rollback>> {
        let sql = concat!(
            rollback_select!(),
            " WHERE r.app = $1 AND r.status IN ('requested', 'started') ORDER BY r.id"
        );
        self.rollbacks_where(app, sql).await
    }

    /// Finished rollbacks whose line is not in the rollback log yet.
    pub async fn unlogged_rollbacks(&self, app: &str) -> Result<Vec<Rollback>> {
        let sql = concat!(
            rollback_select!(),
            " WHERE r.app = $1 AND r.status IN ('done', 'failed') AND r.logged = 0 ORDER BY r.id"
        );
        self.rollbacks_where(app, sql).await
    }

    async fn rollbacks_where(&self, app: &str, sql: &'static str) -> Result<Vec<Rollback>> {
        let rows = sqlx::query(sql).bind(app).fetch_all(&self.pool).await?;
        rows.iter().map(rollback_from).collect()
    }

    pub async fn mark_rollback_started(&self, rollback: &Rollback) -> Result<()> {
        sqlx::query("UPDATE rollbacks SET status = 'started', started_at = COALESCE(started_at, $1) WHERE id = $2")
            .bind(self.now())
            .bind(rollback.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes a rollback. On success, in one transaction: the bad release is `rolled_back`
    /// (unless it already settled otherwise) and the target is the app's current release.
    pub async fn finish_rollback(
        &self,
        rollback: &Rollback,
        succeeded: bool,
        note: &str,
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE rollbacks SET status = $1, finished_at = $2 WHERE id = $3")
            .bind(if succeeded { "done" } else { "failed" })
            .bind(now)
            .bind(rollback.id)
            .execute(&mut *tx)
            .await?;
        if succeeded {
            sqlx::query(
                "UPDATE releases SET state = 'rolled_back', updated_at = $1 WHERE id = $2 AND state IN ('deploying', 'watching', 'stable')",
            )
            .bind(now)
            .bind(rollback.from_release_id)
            .execute(&mut *tx)
            .await?;
            set_current(&mut tx, &rollback.app, rollback.to_release_id, now).await?;
        }
        tx.commit().await?;
        self.event(
            &rollback.app,
            Some(rollback.from_release_id),
            if succeeded {
                "rollback_done"
            } else {
                "rollback_failed"
            },
            serde_json::json!({"rollback": rollback.id, "to": rollback.to_version, "note": note}),
        )
        .await
    }

    pub async fn mark_logged(&self, rollback: &Rollback) -> Result<()> {
        sqlx::query("UPDATE rollbacks SET logged = 1 WHERE id = $1")
            .bind(rollback.id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- audit trail ----

    pub async fn event(
        &self,
        app: &str,
        release_id: Option<i64>,
        kind: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO events (app, release_id, at, kind, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(app)
        .bind(release_id)
        .bind(self.now())
        .bind(kind)
        .bind(detail.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The audit trail of `app` since `since`, oldest first.
    pub async fn events(&self, app: &str, since: i64) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT at, kind, release_id, detail FROM events WHERE app = $1 AND at >= $2 ORDER BY id",
        )
        .bind(app)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let detail: String = row.try_get("detail")?;
                Ok(Event {
                    at: row.try_get("at")?,
                    kind: row.try_get("kind")?,
                    release_id: row.try_get("release_id")?,
                    detail: serde_json::from_str(&detail)
                        .unwrap_or(serde_json::Value::String(detail)),
                })
            })
            .collect()
    }

    // ---- snapshots ----

    /// Stores the guard's latest view of `app` (`guard::Snapshot`).
    pub async fn put_snapshot(&self, app: &str, body: &impl Serialize) -> Result<()> {
        let body = serde_json::to_string(body).map_err(|e| LedgerError::Corrupt {
            what: "snapshot",
            value: e.to_string(),
        })?;
        self.group_commit
            .write(group_commit::Write::Snapshot {
                app: app.to_string(),
                at: self.now(),
                body,
            })
            .await?;
        Ok(())
    }

    /// The guard's latest view of `app` and when it was taken; None when there is none, or
    /// it is in a shape this version cannot read (an older guard's: it is rewritten within
    /// a second by a current one).
    pub async fn snapshot<T: serde::de::DeserializeOwned>(
        &self,
        app: &str,
    ) -> Result<Option<(i64, T)>> {
        let row = sqlx::query("SELECT at, body FROM snapshots WHERE app = $1")
            .bind(app)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let body: String = row.try_get("body")?;
        serde_json::from_str(&body)
            .ok()
            .map(|snapshot| Ok((row.try_get("at")?, snapshot)))
            .transpose()
    }

    // ---- leases ----

    pub async fn lease(&self, app: &str) -> Result<Option<Lease>> {
        let row = sqlx::query("SELECT holder, expires_at, epoch FROM leases WHERE app = $1")
            .bind(app)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Lease {
                holder: row.try_get("holder")?,
                expires_at: row.try_get("expires_at")?,
                epoch: row.try_get("epoch")?,
            })
        })
        .transpose()
    }

    /// Takes or renews the lease on `app` for `me` until `now + ttl_ms`, unless someone else
    /// holds it. `holder_alive` tells whether another holder is still running (a holder on
    /// this host whose process is gone is not). Compare-and-swap on the epoch, so two
    /// contenders cannot both win.
    pub async fn acquire_lease(
        &self,
        app: &str,
        me: &str,
        ttl_ms: i64,
        holder_alive: impl Fn(&str) -> bool,
    ) -> Result<bool> {
        let now = self.now();
        // The usual case, a live lease of ours, in one statement instead of a read and a
        // write, committed with the other guardians' writes.
        let renewed = self
            .group_commit
            .write(group_commit::Write::RenewLease {
                app: app.to_string(),
                holder: me.to_string(),
                expires_at: now + ttl_ms,
                now,
            })
            .await?;
        if renewed {
            return Ok(true);
        }
        let current = self.lease(app).await?;
        let alive = current.as_ref().is_some_and(|l| holder_alive(&l.holder));
        let expires_at = now + ttl_ms;
        let changed = match decide_lease(current.as_ref(), me, now, alive) {
            LeaseDecision::Yield => return Ok(false),
            LeaseDecision::Acquire if current.is_none() => {
                sqlx::query(
                    "INSERT INTO leases (app, holder, expires_at, epoch) VALUES ($1, $2, $3, 1) ON CONFLICT (app) DO NOTHING",
                )
                .bind(app)
                .bind(me)
                .bind(expires_at)
                .execute(&self.pool)
                .await?
                .rows_affected()
            }
            LeaseDecision::Acquire | LeaseDecision::Renew => {
                let previous = current.expect("a lease to take over or renew");
                let epoch = if previous.holder == me { previous.epoch } else { previous.epoch + 1 };
                sqlx::query("UPDATE leases SET holder = $1, expires_at = $2, epoch = $3 WHERE app = $4 AND epoch = $5 AND holder = $6")
                    .bind(me)
                    .bind(expires_at)
                    .bind(epoch)
                    .bind(app)
                    .bind(previous.epoch)
                    .bind(&previous.holder)
                    .execute(&self.pool)
                    .await?
                    .rows_affected()
            }
        };
        Ok(changed == 1)
    }

    /// Gives the lease up (on a clean shutdown), so the next guard need not wait for it.
    pub async fn release_lease(&self, app: &str, me: &str) -> Result<()> {
        sqlx::query("UPDATE leases SET expires_at = 0 WHERE app = $1 AND holder = $2")
            .bind(app)
            .bind(me)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

async fn set_current(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    app: &str,
    release_id: i64,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO app_state (app, current_release_id, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (app) DO UPDATE SET current_release_id = excluded.current_release_id, updated_at = excluded.updated_at",
    )
    .bind(app)
    .bind(release_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn mode_text(mode: Mode) -> &'static str {
    match mode {
        Mode::BlueGreen => "bluegreen",
        Mode::Canary => "canary",
    }
}

fn release_from(row: &AnyRow) -> Result<Release> {
    let state: String = row.try_get("state")?;
    let mode: Option<String> = row.try_get("watch_mode")?;
    let judged_from: Option<i64> = row.try_get("judged_from")?;
    let watch = match (mode, judged_from) {
        (Some(mode), Some(judged_from)) => Some(Watch {
            mode: match mode.as_str() {
                "bluegreen" => Mode::BlueGreen,
                "canary" => Mode::Canary,
                _ => {
                    return Err(LedgerError::Corrupt {
                        what: "watch mode",
                        value: mode,
                    });
                }
            },
            baseline_version: row.try_get("baseline_version")?,
            judged_from,
        }),
        _ => None,
    };
    Ok(Release {
        id: row.try_get("id")?,
        app: row.try_get("app")?,
        version: row.try_get("version")?,
        state: state.parse()?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
        updated_at: row.try_get("updated_at")?,
        watch_started_at: row.try_get("watch_started_at")?,
        stable_at: row.try_get("stable_at")?,
        note: row.try_get("note")?,
        watch,
        unwatched_ms: row.try_get("unwatched_ms")?,
    })
}

fn rollback_from(row: &AnyRow) -> Result<Rollback> {
    let trigger: String = row.try_get("trigger_kind")?;
    let status: String = row.try_get("status")?;
    let evidence: Option<String> = row.try_get("evidence")?;
    let logged: i64 = row.try_get("logged")?;
    Ok(Rollback {
        id: row.try_get("id")?,
        app: row.try_get("app")?,
        from_release_id: row.try_get("from_release_id")?,
        to_release_id: row.try_get("to_release_id")?,
        from_version: row.try_get("from_version")?,
        to_version: row.try_get("to_version")?,
        trigger: match trigger.as_str() {
            "auto" => Trigger::Auto,
            "manual" => Trigger::Manual,
            other => {
                return Err(LedgerError::Corrupt {
                    what: "rollback trigger",
                    value: other.into(),
                });
            }
        },
        reason: row.try_get("reason")?,
        evidence: evidence.and_then(|e| serde_json::from_str(&e).ok()),
        requested_by: row.try_get("requested_by")?,
        requested_at: row.try_get("requested_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        status: match status.as_str() {
            "requested" => RollbackStatus::Requested,
            "started" => RollbackStatus::Started,
            "done" => RollbackStatus::Done,
            "failed" => RollbackStatus::Failed,
            other => {
                return Err(LedgerError::Corrupt {
                    what: "rollback status",
                    value: other.into(),
                });
            }
        },
        logged: logged != 0,
    })
}

/// The path part of a SQLite URL (with any `?options`).
fn sqlite_path(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
}

/// The database file of a SQLite URL.
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let path = sqlite_path(url)?;
    Some(std::path::PathBuf::from(
        path.split('?').next().unwrap_or(path),
    ))
}

/// An exclusive lock on `<database>.lock`, held while migrations run.
struct MigrationLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl MigrationLock {
    fn take(database: &std::path::Path) -> std::io::Result<Self> {
        if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut name = database.as_os_str().to_owned();
        name.push(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(name)?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map(Self)
            .map_err(|(_, errno)| std::io::Error::from(errno))
    }
}

/// SQLite URLs get `mode=rwc` (create the file if missing) and their directory created.
fn sqlite_url_with_create(url: &str) -> Result<String> {
    let (Some(path), Some(file)) = (sqlite_path(url), sqlite_file(url)) else {
        return Ok(url.to_string());
    };
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| LedgerError::Open {
            url: url.to_string(),
            source: sqlx::Error::Io(e),
        })?;
    }
    Ok(if path.contains("mode=") {
        url.to_string()
    } else if path.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

fn is_read_only(error: &sqlx::Error) -> bool {
    let text = error.to_string().to_lowercase();
    text.contains("readonly") || text.contains("read-only") || text.contains("read only")
}

fn classify_open_error(url: &str, source: sqlx::Error) -> LedgerError {
    if is_read_only(&source) {
        LedgerError::ReadOnly {
            url: url.to_string(),
        }
    } else {
        LedgerError::Open {
            url: url.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    async fn ledger() -> (Ledger, tempfile::TempDir, std::sync::Arc<FakeClock>) {
        let clock = FakeClock::at(1_700_000_000_000);
        let (ledger, dir) = Ledger::temporary(clock.clone()).await;
        (ledger, dir, clock)
    }

    #[tokio::test]
    async fn releases_move_through_their_states_and_known_good_follows() {
        let (ledger, _dir, clock) = ledger().await;
        let v1 = ledger.record_release("shop", "v1", "ann").await.unwrap();
        ledger
            .start_watching(&v1, Mode::BlueGreen, None)
            .await
            .unwrap();
        clock.advance(std::time::Duration::from_secs(1));
        ledger.mark_stable(&v1).await.unwrap();
        let v2 = ledger.record_release("shop", "v2", "ann").await.unwrap();
        assert_eq!(
            ledger.pending_release("shop").await.unwrap().unwrap().id,
            v2.id
        );
        ledger
            .start_watching(&v2, Mode::BlueGreen, Some("v1"))
            .await
            .unwrap();
        assert_eq!(ledger.current("shop").await.unwrap().unwrap().version, "v2");
        let good = ledger
            .known_good("shop", Some(v2.id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(good.version, "v1");
        let rollback = ledger
            .record_rollback(
                &v2,
                &good,
                Trigger::Auto,
                "errors",
                None,
                "guard",
                RollbackStatus::Started,
            )
            .await
            .unwrap();
        assert_eq!(ledger.open_rollbacks("shop").await.unwrap().len(), 1);
        ledger.finish_rollback(&rollback, true, "ok").await.unwrap();
        assert!(ledger.open_rollbacks("shop").await.unwrap().is_empty());
        assert_eq!(ledger.current("shop").await.unwrap().unwrap().version, "v1");
        assert_eq!(
            ledger.release(v2.id).await.unwrap().unwrap().state,
            ReleaseState::RolledBack
        );
        assert_eq!(ledger.unlogged_rollbacks("shop").await.unwrap().len(), 1);
        ledger.mark_logged(&rollback).await.unwrap();
        assert!(ledger.unlogged_rollbacks("shop").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn only_one_holder_gets_the_lease_until_it_expires() {
        let (ledger, _dir, clock) = ledger().await;
        assert!(
            ledger
                .acquire_lease("shop", "a", 10_000, |_| true)
                .await
                .unwrap()
        );
        assert!(
            !ledger
                .acquire_lease("shop", "b", 10_000, |_| true)
                .await
                .unwrap()
        );
        assert!(
            ledger
                .acquire_lease("shop", "a", 10_000, |_| true)
                .await
                .unwrap(),
            "renewal"
        );
        assert!(
            ledger
                .acquire_lease("shop", "b", 10_000, |_| false)
                .await
                .unwrap(),
            "a is gone"
        );
        clock.advance(std::time::Duration::from_secs(11));
        assert!(
            ledger
                .acquire_lease("shop", "a", 10_000, |_| true)
                .await
                .unwrap(),
            "b expired"
        );
        assert_eq!(ledger.lease("shop").await.unwrap().unwrap().epoch, 3);
    }
}
