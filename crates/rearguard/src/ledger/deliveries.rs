//! Notification deliveries, one per channel: queued with the notification they carry,
//! then delivered or failed. Records only; `notify` sends, `incidents::alerts` decides.

use sqlx::Row;

use super::{Ledger, Result};

/// One notification's delivery to one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub incident_id: i64,
    /// The notification's event name (`incident_started`, `escalated`, ...).
    pub event: String,
    /// Escalation level (0 is level 1).
    pub level: i64,
    pub channel: String,
}

impl Ledger {
    /// How many deliveries there have been, by channel and status (`queued`, `delivered`,
    /// `failed`), for rearguard's own metrics.
    pub async fn delivery_counts(&self) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(
            "SELECT channel, status, COUNT(*) AS n FROM deliveries GROUP BY channel, status ORDER BY channel, status",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("channel")?,
                    row.try_get("status")?,
                    row.try_get("n")?,
                ))
            })
            .collect()
    }

    /// Queues `event` (at escalation `level`) of an incident for each of `channels`, once:
    /// `None` when it was queued before (across restarts too). One transaction, so a
    /// notification is never marked sent without its deliveries.
    pub async fn queue_notification(
        &self,
        incident: i64,
        event: &str,
        level: i64,
        channels: &[&str],
    ) -> Result<Option<Vec<Delivery>>> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let first = sqlx::query(
            "INSERT INTO incident_notifications (incident_id, event, level, at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (incident_id, event, level) DO NOTHING",
        )
        .bind(incident)
        .bind(event)
        .bind(level)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !first {
            return Ok(None);
        }
        let mut deliveries = Vec::new();
        for channel in channels {
            let row = sqlx::query(
                "INSERT INTO deliveries (incident_id, event, level, channel, status, queued_at) \
                 VALUES ($1, $2, $3, $4, 'queued', $5) RETURNING id",
            )
            .bind(incident)
            .bind(event)
            .bind(level)
            .bind(*channel)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            deliveries.push(Delivery {
                id: row.try_get("id")?,
                incident_id: incident,
                event: event.to_string(),
                level,
                channel: channel.to_string(),
            });
        }
        tx.commit().await?;
        Ok(Some(deliveries))
    }

    /// Deliveries of an incident still queued (being sent, or left by a guard that died).
    pub async fn queued_deliveries(&self, incident: i64) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT id, incident_id, event, level, channel FROM deliveries \
             WHERE incident_id = $1 AND status = 'queued' ORDER BY id",
        )
        .bind(incident)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Delivery {
                    id: row.try_get("id")?,
                    incident_id: row.try_get("incident_id")?,
                    event: row.try_get("event")?,
                    level: row.try_get("level")?,
                    channel: row.try_get("channel")?,
                })
            })
            .collect()
    }

    /// Closes a delivery: delivered (`error` None) or failed, after `attempts` attempts.
    pub async fn finish_delivery(
        &self,
        delivery: i64,
        attempts: usize,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE deliveries SET status = $1, attempts = $2, finished_at = $3, error = $4 WHERE id = $5",
        )
        .bind(if error.is_none() { "delivered" } else { "failed" })
        .bind(attempts as i64)
        .bind(self.now())
        .bind(error)
        .bind(delivery)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
