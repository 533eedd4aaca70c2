//! Per-second traffic counts of each version, as the guard counted them. The judge's view of
//! a watch (the baseline's history, the candidate's evidence) is rebuilt from these rows, so
//! a restarted guard judges as an uninterrupted one would. Records only.

use rearguard_judge::{BUCKETS, Counts, LatencyHistogram};
use sqlx::Row;

use super::group_commit::Write;
use super::{Ledger, LedgerError, Result};

/// One version's counts over the second ending at `t` (epoch seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionStep {
    pub version: String,
    pub t: i64,
    pub counts: Counts,
}

/// Bucket columns, in bound order (`le_inf` is `requests`). Written out so queries stay
/// `&'static str`.
macro_rules! bucket_columns {
    () => {
        "le_5, le_10, le_25, le_50, le_100, le_250, le_500, le_1000, le_2500, le_5000, le_10000"
    };
}

const BUCKET_COLUMNS: [&str; BUCKETS - 1] = [
    "le_5", "le_10", "le_25", "le_50", "le_100", "le_250", "le_500", "le_1000", "le_2500",
    "le_5000", "le_10000",
];

/// One statement adding `rows` (keyed by app, version and second) to the steps.
pub(super) fn steps_upsert(rows: &[((&str, &str, i64), Counts)]) -> sqlx::QueryBuilder<sqlx::Any> {
    let mut query = sqlx::QueryBuilder::<sqlx::Any>::new(concat!(
        "INSERT INTO steps (app, version, t, requests, errors, ",
        bucket_columns!(),
        ") "
    ));
    query.push_values(rows, |mut row, ((app, version, t), counts)| {
        row.push_bind(app.to_string())
            .push_bind(version.to_string())
            .push_bind(*t)
            .push_bind(counts.requests as i64)
            .push_bind(counts.errors as i64);
        for count in &counts.latency.cumulative[..BUCKETS - 1] {
            row.push_bind(*count as i64);
        }
    });
    query.push(
        " ON CONFLICT (app, version, t) DO UPDATE SET requests = steps.requests + excluded.requests, \
         errors = steps.errors + excluded.errors, le_5 = steps.le_5 + excluded.le_5, \
         le_10 = steps.le_10 + excluded.le_10, le_25 = steps.le_25 + excluded.le_25, \
         le_50 = steps.le_50 + excluded.le_50, le_100 = steps.le_100 + excluded.le_100, \
         le_250 = steps.le_250 + excluded.le_250, le_500 = steps.le_500 + excluded.le_500, \
         le_1000 = steps.le_1000 + excluded.le_1000, le_2500 = steps.le_2500 + excluded.le_2500, \
         le_5000 = steps.le_5000 + excluded.le_5000, le_10000 = steps.le_10000 + excluded.le_10000",
    );
    query
}

impl Ledger {
    /// Adds the counts of several versions for one second (a second written twice holds
    /// the sum). Returns once committed; the writes of every app waiting at that moment are
    /// committed together (see `group_commit`).
    pub async fn record_steps(&self, app: &str, steps: &[VersionStep]) -> Result<()> {
        if steps.is_empty() {
            return Ok(());
        }
        self.group_commit
            .write(Write::Steps {
                app: app.to_string(),
                steps: steps.to_vec(),
            })
            .await?;
        Ok(())
    }

    /// The steps of `version` with `from <= t <= to`, oldest first.
    pub async fn steps(
        &self,
        app: &str,
        version: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<VersionStep>> {
        let rows = sqlx::query(concat!(
            "SELECT t, requests, errors, ",
            bucket_columns!(),
            " FROM steps WHERE app = $1 AND version = $2 AND t >= $3 AND t <= $4 ORDER BY t"
        ))
        .bind(app)
        .bind(version)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let requests = row.try_get::<i64, _>("requests")? as u64;
                let mut cumulative = [requests; BUCKETS];
                for (slot, column) in cumulative.iter_mut().zip(BUCKET_COLUMNS) {
                    *slot = row.try_get::<i64, _>(column)? as u64;
                }
                let latency = LatencyHistogram::try_from_cumulative(cumulative).map_err(|_| {
                    LedgerError::Corrupt {
                        what: "latency histogram",
                        value: format!("{cumulative:?}"),
                    }
                })?;
                Ok(VersionStep {
                    version: version.to_string(),
                    t: row.try_get("t")?,
                    counts: Counts {
                        requests,
                        errors: row.try_get::<i64, _>("errors")? as u64,
                        latency,
                    },
                })
            })
            .collect()
    }

    /// The last second of `version` recorded at or after `from`, if any.
    pub async fn last_step(&self, app: &str, version: &str, from: i64) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MAX(t) AS t FROM steps WHERE app = $1 AND version = $2 AND t >= $3",
        )
        .bind(app)
        .bind(version)
        .bind(from)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("t")?)
    }

    /// The end of the last step of any version of `app`, if any.
    pub async fn last_recorded_step(&self, app: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MAX(t) AS t FROM steps WHERE app = $1")
            .bind(app)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("t")?)
    }

    /// Forgets the steps of `app` before `before`, except those of `keep.0` from `keep.1`
    /// on (the history the current watch is judged against).
    pub async fn forget_steps(
        &self,
        app: &str,
        before: i64,
        keep: Option<(&str, i64)>,
    ) -> Result<u64> {
        let (keep_version, keep_from) = keep.unwrap_or(("", i64::MAX));
        let done = sqlx::query(
            "DELETE FROM steps WHERE app = $1 AND t < $2 AND NOT (version = $3 AND t >= $4)",
        )
        .bind(app)
        .bind(before)
        .bind(keep_version)
        .bind(keep_from)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    #[tokio::test]
    async fn steps_round_trip_and_old_ones_are_forgotten_but_the_kept_history() {
        let (ledger, _dir) = Ledger::temporary(FakeClock::at(0)).await;
        let mut counts = Counts::default();
        for ms in [3.0, 40.0, 40.0, 20_000.0] {
            counts.requests += 1;
            counts.latency.record(ms);
        }
        counts.errors = 1;
        let step = |version: &str, t| VersionStep {
            version: version.into(),
            t,
            counts,
        };
        let steps: Vec<_> = (1..=5)
            .map(|t| step("v1", t))
            .chain([step("v2", 5)])
            .collect();
        for chunk in steps.chunks(2) {
            ledger.record_steps("shop", chunk).await.unwrap();
        }
        assert_eq!(ledger.steps("shop", "v1", 2, 4).await.unwrap(), steps[1..4]);
        // A second written twice holds the sum.
        ledger.record_steps("shop", &steps[5..]).await.unwrap();
        let mut twice = counts;
        twice.add(&counts);
        assert_eq!(
            ledger.steps("shop", "v2", 5, 5).await.unwrap()[0].counts,
            twice
        );
        assert_eq!(ledger.last_step("shop", "v2", 0).await.unwrap(), Some(5));
        assert_eq!(ledger.last_step("shop", "v2", 6).await.unwrap(), None);
        // Everything before 5 goes, but v1's history from 2 on is kept.
        assert_eq!(
            ledger
                .forget_steps("shop", 5, Some(("v1", 2)))
                .await
                .unwrap(),
            1
        );
        assert_eq!(ledger.steps("shop", "v1", 0, 9).await.unwrap().len(), 4);
    }
}
