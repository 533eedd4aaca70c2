//! Group commit for the writes every guardian makes every step (its counts, its snapshot,
//! its lease's renewal):
//! the writes waiting when the database is free go in one transaction, and each writer is
//! answered once it is committed, so "written before judged" still holds. At thousands of
//! apps a commit per write was most of the guard's work (each commit cost 250-450 µs of
//! SQLite's one writer, and two hand-offs to its worker thread).

use std::collections::{BTreeMap, HashSet};

use rearguard_judge::Counts;
use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::steps::{VersionStep, steps_upsert};
use super::{LedgerError, Result};

/// Writes taken into one transaction at most.
const WRITES_PER_COMMIT: usize = 1000;
/// Rows in one statement at most (16 parameters a step row: under SQLite's 32,766 and
/// PostgreSQL's 65,535 parameters).
const ROWS_PER_STATEMENT: usize = 1000;

pub(super) enum Write {
    Steps {
        app: String,
        steps: Vec<VersionStep>,
    },
    Snapshot {
        app: String,
        at: i64,
        body: String,
    },
    /// Extends `holder`'s lease of `app` to `expires_at`, if it still holds it at `now`.
    RenewLease {
        app: String,
        holder: String,
        expires_at: i64,
        now: i64,
    },
}

/// Whether the write took effect (a lease may have been lost; other writes always do).
type Answer = oneshot::Sender<Result<bool>>;

/// The queue to the one task that commits.
#[derive(Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::UnboundedSender<(Write, Answer)>,
}

impl GroupCommit {
    /// Starts the committing task; it ends when the last clone of this queue is dropped.
    pub(super) fn start(pool: AnyPool) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(commit_loop(pool, waiting));
        Self { queue }
    }

    /// Returns once `write` is committed (or failed): whether it took effect.
    pub(super) async fn write(&self, write: Write) -> Result<bool> {
        let (answer, answered) = oneshot::channel();
        let gone = || LedgerError::Query(sqlx::Error::PoolClosed);
        self.queue.send((write, answer)).map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }
}

async fn commit_loop(pool: AnyPool, mut waiting: mpsc::UnboundedReceiver<(Write, Answer)>) {
    let mut batch = Vec::new();
    while waiting.recv_many(&mut batch, WRITES_PER_COMMIT).await > 0 {
        if let Ok(renewed) = commit(&pool, batch.iter().map(|(write, _)| write)).await {
            for (write, answer) in batch.drain(..) {
                let _ = answer.send(Ok(took_effect(&write, &renewed)));
            }
            continue;
        }
        // One at a time: each writer gets its own outcome, and one bad write does not fail
        // the others.
        for (write, answer) in batch.drain(..) {
            let outcome = commit(&pool, std::iter::once(&write)).await;
            let _ = answer.send(outcome.map(|renewed| took_effect(&write, &renewed)));
        }
    }
}

fn took_effect(write: &Write, renewed: &HashSet<String>) -> bool {
    match write {
        Write::RenewLease { app, .. } => renewed.contains(app),
        Write::Steps { .. } | Write::Snapshot { .. } => true,
    }
}

/// Writes `writes` in one transaction: the steps in multi-row statements (a second written
/// twice holds the sum, as when written one after the other), the last snapshot of each app,
/// the lease renewals. Returns the apps whose lease was renewed.
async fn commit<'a>(
    pool: &AnyPool,
    writes: impl Iterator<Item = &'a Write>,
) -> Result<HashSet<String>> {
    let mut steps: BTreeMap<(&str, &str, i64), Counts> = BTreeMap::new();
    let mut snapshots: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
    let mut renewals: BTreeMap<&str, (&str, i64, i64)> = BTreeMap::new();
    for write in writes {
        match write {
            Write::Steps { app, steps: rows } => {
                for step in rows {
                    steps
                        .entry((app, &step.version, step.t))
                        .or_default()
                        .add(&step.counts);
                }
            }
            Write::Snapshot { app, at, body } => {
                snapshots.insert(app, (*at, body));
            }
            Write::RenewLease {
                app,
                holder,
                expires_at,
                now,
            } => {
                renewals.insert(app, (holder, *expires_at, *now));
            }
        }
    }
    let steps: Vec<_> = steps.into_iter().collect();
    let snapshots: Vec<_> = snapshots.into_iter().collect();
    let renewals: Vec<_> = renewals.into_iter().collect();
    let mut transaction = pool.begin().await?;
    for rows in steps.chunks(ROWS_PER_STATEMENT) {
        steps_upsert(rows)
            .build()
            .execute(&mut *transaction)
            .await?;
    }
    for rows in snapshots.chunks(ROWS_PER_STATEMENT) {
        let mut query =
            sqlx::QueryBuilder::<sqlx::Any>::new("INSERT INTO snapshots (app, at, body) ");
        query.push_values(rows, |mut row, (app, (at, body))| {
            row.push_bind(app.to_string())
                .push_bind(*at)
                .push_bind(body.to_string());
        });
        query.push(" ON CONFLICT (app) DO UPDATE SET at = excluded.at, body = excluded.body");
        query.build().execute(&mut *transaction).await?;
    }
    let mut renewed = HashSet::new();
    for rows in renewals.chunks(ROWS_PER_STATEMENT) {
        // VALUES columns are column1.. on SQLite and PostgreSQL alike.
        let mut query =
            sqlx::QueryBuilder::<sqlx::Any>::new("UPDATE leases SET expires_at = v.column3 FROM (");
        query.push_values(rows, |mut row, (app, (holder, expires_at, now))| {
            row.push_bind(app.to_string())
                .push_bind(holder.to_string())
                .push_bind(*expires_at)
                .push_bind(*now);
        });
        query.push(
            ") AS v WHERE leases.app = v.column1 AND leases.holder = v.column2 \
             AND leases.expires_at > v.column4 RETURNING leases.app",
        );
        for row in query.build().fetch_all(&mut *transaction).await? {
            renewed.insert(row.try_get("app")?);
        }
    }
    transaction.commit().await?;
    Ok(renewed)
}

#[cfg(test)]
mod tests {
    use super::super::Ledger;
    use super::*;
    use crate::clock::FakeClock;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_of_many_apps_at_once_are_all_committed_and_a_second_written_twice_sums() {
        let (ledger, _dir) = Ledger::temporary(FakeClock::at(0)).await;
        let mut one = Counts {
            requests: 1,
            ..Default::default()
        };
        one.latency.record(7.0);
        let mut writers = tokio::task::JoinSet::new();
        // Two writers per app: both add to the same second of v1, one writes a snapshot.
        for n in 0..400 {
            let ledger = ledger.clone();
            writers.spawn(async move {
                let app = format!("app{}", n / 2);
                let step = VersionStep {
                    version: "v1".into(),
                    t: 7,
                    counts: one,
                };
                ledger.record_steps(&app, &[step]).await.unwrap();
                if n % 2 == 0 {
                    ledger.put_snapshot(&app, &n).await.unwrap();
                }
            });
        }
        while let Some(done) = writers.join_next().await {
            done.unwrap();
        }
        for n in (0..400).step_by(2) {
            let app = format!("app{}", n / 2);
            let steps = ledger.steps(&app, "v1", 0, 10).await.unwrap();
            assert_eq!(steps.len(), 1, "{app}");
            assert_eq!(steps[0].counts.requests, 2, "{app}");
            assert_eq!(steps[0].counts.latency.cumulative[1], 2, "{app}");
            let (_, snapshot) = ledger.snapshot::<i32>(&app).await.unwrap().unwrap();
            assert_eq!(snapshot, n);
        }
    }

    #[tokio::test]
    async fn a_lease_is_renewed_only_for_its_live_holder() {
        let (ledger, _dir) = Ledger::temporary(FakeClock::at(1_000)).await;
        assert!(
            ledger
                .acquire_lease("shop", "me", 500, |_| true)
                .await
                .unwrap()
        );
        let renew = |holder: &str, now| Write::RenewLease {
            app: "shop".into(),
            holder: holder.into(),
            expires_at: now + 500,
            now,
        };
        let group = &ledger.group_commit;
        assert!(!group.write(renew("other", 1_100)).await.unwrap());
        assert!(group.write(renew("me", 1_100)).await.unwrap());
        assert_eq!(
            ledger.lease("shop").await.unwrap().unwrap().expires_at,
            1_600
        );
        // Expired at 1,600: not renewed by this path (the lease is taken anew, or not).
        assert!(!group.write(renew("me", 1_600)).await.unwrap());
    }
}
