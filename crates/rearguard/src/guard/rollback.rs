//! Rolling back: the decision is written first, the incident opened and the platform's
//! state kept, then the known-good release is made to run and traffic moves back to it,
//! and service is verified. A rollback interrupted by a crash is finished once.

use anyhow::Context as _;

use super::{Guardian, Progress, failpoint};
use crate::backends::Instances;
use crate::checks::Health;
use crate::incidents;
use crate::ledger::{Evidence, ReleaseState, Rollback, RollbackStatus, Trigger};
use crate::notify;
use crate::traffic::Routes;

impl Guardian {
    /// The watched release is bad: roll it back to the last known-good release (written to
    /// the ledger first), or, with none to go back to, mark it failed and call people.
    pub(super) async fn auto_rollback(
        &mut self,
        reason: &str,
        evidence: Option<Evidence>,
    ) -> anyhow::Result<()> {
        let Some(watch) = self.watch.as_mut() else {
            return Ok(());
        };
        let from = watch.release.clone();
        let Some(to) = self
            .context
            .ledger
            .known_good(&self.app, Some(from.id))
            .await?
        else {
            watch.halted = true;
            tracing::error!(app = %self.app, version = %from.version, reason, "release is bad but there is no known-good release to roll back to");
            // Settled: it keeps serving (there is nothing else), but it is not good, and
            // whoever waits on it must hear so now.
            self.context
                .ledger
                .set_state(
                    &from,
                    ReleaseState::Failed,
                    Some(&format!(
                        "bad ({reason}); no known-good release to roll back to"
                    )),
                )
                .await?;
            self.context
                .ledger
                .event(
                    &self.app,
                    Some(from.id),
                    "rollback_impossible",
                    serde_json::json!({"reason": reason, "why": "no known-good release"}),
                )
                .await?;
            let incident = incidents::open_without_rollback(
                &self.context.ledger,
                &from,
                reason,
                evidence.as_ref(),
            )
            .await?;
            self.alert(&incident, notify::Event::RollbackFailed).await?;
            self.context.tell(Progress::Failed {
                app: self.app.clone(),
                version: from.version.clone(),
                why: format!("{reason}; no known-good release to roll back to"),
            });
            return Ok(());
        };
        tracing::warn!(app = %self.app, from = %from.version, to = %to.version, reason, "rolling back");
        let rollback = self
            .ledger()
            .record_rollback(
                &from,
                &to,
                Trigger::Auto,
                reason,
                evidence.as_ref(),
                &self.context.actor,
                RollbackStatus::Started,
            )
            .await?;
        self.perform_rollback(rollback).await
    }

    /// Moves traffic to the rollback's target. Safe to run again on a rollback that was
    /// interrupted: each step checks what is already done.
    pub(super) async fn perform_rollback(&mut self, rollback: Rollback) -> anyhow::Result<()> {
        self.rollback_log_due = true;
        if rollback.status == RollbackStatus::Requested {
            self.ledger().mark_rollback_started(&rollback).await?;
        }
        let rollback = self
            .ledger()
            .rollback(rollback.id)
            .await?
            .unwrap_or(rollback);
        let from = self.ledger().release(rollback.from_release_id).await?;
        let incident =
            incidents::open_for_rollback(self.ledger(), &rollback, from.as_ref()).await?;
        self.alert(&incident, notify::Event::IncidentStarted)
            .await?;
        let capture = self.backend.capture(&rollback.from_version).await;
        if self
            .ledger()
            .keep_capture(incident.id, &rollback.from_version, &capture)
            .await?
        {
            let logs: Vec<String> = capture
                .logs
                .iter()
                .map(|(component, text)| format!("{component} {} lines", text.lines().count()))
                .collect();
            self.ledger()
                .add_timeline(
                    incident.id,
                    None,
                    crate::ledger::TimelineKind::StateCaptured,
                    "rearguard",
                    &format!(
                        "platform state and the last log lines of {} kept ({}): `rearguard incident show {}`",
                        rollback.from_version,
                        logs.join(", "),
                        incident.id
                    ),
                )
                .await?;
        }
        failpoint("after-rollback-recorded").await;
        let to = self
            .ledger()
            .release(rollback.to_release_id)
            .await?
            .context("rollback target vanished")?;
        self.context.tell(Progress::RollingBack {
            app: self.app.clone(),
            from: rollback.from_version.clone(),
            to: to.version.clone(),
            reason: rollback.reason.clone(),
        });
        let instances = match self.backend.rollback(&to.version).await {
            Ok(instances) => instances,
            Err(e) => {
                let note = format!("manual intervention required: {e}");
                tracing::error!(app = %self.app, to = %to.version, error = %e, "rollback failed");
                self.ledger()
                    .finish_rollback(&rollback, false, &note)
                    .await?;
                let failed = self
                    .ledger()
                    .rollback(rollback.id)
                    .await?
                    .unwrap_or(rollback);
                incidents::rollback_finished(self.ledger(), &failed, None).await?;
                self.alert(&incident, notify::Event::RollbackFailed).await?;
                self.write_rollback_log().await?;
                self.context.tell(Progress::RollbackFailed {
                    app: self.app.clone(),
                    to: to.version.clone(),
                    why: note,
                });
                return Ok(());
            }
        };
        self.route(&Routes {
            primary: instances.clone(),
            canary: None,
        })
        .await?;
        self.ledger()
            .finish_rollback(&rollback, true, &format!("traffic back on {}", to.version))
            .await?;
        // Its line goes out now, not after the slow steps below (verifying, stopping).
        self.write_rollback_log().await?;
        let verification = self.verify(&instances).await;
        self.ledger()
            .event(&self.app, Some(to.id), "verification", verification.clone())
            .await?;
        if rollback.from_version != to.version {
            self.backend.stop(&rollback.from_version).await;
        }
        // The restored release is judged afresh, with nothing to compare it with but limits
        // and gross failures.
        self.ledger().judge_afresh(&to, None).await?;
        let to = self.ledger().release(to.id).await?.unwrap_or(to);
        self.watch = Some(self.load_watch(to.clone()).await?);
        self.write_rollback_log().await?;
        let finished = self
            .ledger()
            .rollback(rollback.id)
            .await?
            .unwrap_or(rollback);
        incidents::rollback_finished(self.ledger(), &finished, Some(&verification)).await?;
        self.alert(&incident, notify::Event::RollbackDone).await?;
        self.context.tell(Progress::RolledBack {
            app: self.app.clone(),
            rollback: finished,
            verification,
        });
        Ok(())
    }

    /// Runs the checks once against the restored release: is service back?
    async fn verify(&self, instances: &Instances) -> serde_json::Value {
        let results = self.check(instances).await;
        let passed = results.iter().all(|r| r.health != Health::Fail);
        serde_json::json!({"passed": passed, "checks": results})
    }

    /// Appends the rollbacks finished since the lease was taken (or before it, by a guard
    /// that died before logging them) to the rollback log, once each.
    pub(super) async fn write_rollback_log(&mut self) -> anyhow::Result<()> {
        if !self.rollback_log_due {
            return Ok(());
        }
        for rollback in self.ledger().unlogged_rollbacks(&self.app).await? {
            self.context
                .rollback_log
                .append_once(&rollback)
                .with_context(|| {
                    format!(
                        "cannot write the rollback log {}",
                        self.context.rollback_log.path.display()
                    )
                })?;
            self.ledger().mark_logged(&rollback).await?;
        }
        self.rollback_log_due = false;
        Ok(())
    }
}
