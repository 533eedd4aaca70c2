//! Deploying a release and promoting it: the backend makes the version run, traffic moves
//! to it, its watch starts; after its bake it becomes the known-good release.

use anyhow::Context as _;
use rearguard_judge::Mode;

use super::{Guardian, Progress};
use crate::incidents;
use crate::ledger::{Release, ReleaseState, RollbackStatus, Trigger};
use crate::traffic::Routes;

impl Guardian {
    /// Deploys a pending release: the backend makes it run, then traffic moves to it (all
    /// of it, or a canary's share) and its watch starts.
    pub(super) async fn deploy(&mut self, release: Release) -> anyhow::Result<()> {
        self.ledger().supersede_pending(&release).await?;
        let previous = self.ledger().current(&self.app).await?;
        self.context.tell(Progress::Deploying {
            app: self.app.clone(),
            version: release.version.clone(),
        });
        if let Err(e) = self.backend.check_available(&release.version).await {
            self.fail_deploy(&release, previous.as_ref(), &e.to_string())
                .await?;
            return Ok(());
        }
        let instances = match self.backend.deploy(&release.version).await {
            Ok(instances) => instances,
            Err(e) => {
                self.fail_deploy(&release, previous.as_ref(), &e.to_string())
                    .await?;
                return Ok(());
            }
        };
        let previous_instances = match &previous {
            Some(previous) => self.backend.running(&previous.version).await,
            None => None,
        };
        let canary = self.config.mode == Mode::Canary && previous_instances.is_some();
        let mode = if canary {
            Mode::Canary
        } else {
            Mode::BlueGreen
        };
        // Written before traffic moves: a restarted guard finds the new release current and
        // judges it against the same record.
        self.ledger()
            .start_watching(
                &release,
                mode,
                previous.as_ref().map(|p| p.version.as_str()),
            )
            .await?;
        let routes = match previous_instances.filter(|_| canary) {
            Some(primary) => Routes {
                primary,
                canary: Some((instances, self.config.canary_weight.0)),
            },
            None => Routes {
                primary: instances,
                canary: None,
            },
        };
        self.route(&routes).await?;
        if let (Mode::BlueGreen, Some(previous)) = (mode, &previous)
            && previous.version != release.version
        {
            self.retire_later(&previous.version);
        }
        let watched = self.ledger().release(release.id).await?.unwrap_or(release);
        self.watch = Some(self.load_watch(watched.clone()).await?);
        self.next_check_at = self.now_ms();
        self.check_failures.clear();
        self.context.tell(Progress::Watching {
            app: self.app.clone(),
            version: watched.version,
        });
        Ok(())
    }

    /// A release that cannot start never took traffic; the current one keeps serving. The
    /// failure is still a rollback in the record, so people and the log learn of it.
    async fn fail_deploy(
        &mut self,
        release: &Release,
        previous: Option<&Release>,
        why: &str,
    ) -> anyhow::Result<()> {
        tracing::warn!(app = %self.app, version = %release.version, why, "deploy failed");
        self.ledger()
            .set_state(release, ReleaseState::Failed, Some(why))
            .await?;
        if let Some(previous) = previous {
            let reason = format!("deploy failed: {why}");
            let rollback = self
                .ledger()
                .record_rollback(
                    release,
                    previous,
                    Trigger::Auto,
                    &reason,
                    None,
                    &self.context.actor,
                    RollbackStatus::Started,
                )
                .await?;
            incidents::open_for_rollback(self.ledger(), &rollback, Some(release)).await?;
            self.ledger()
                .finish_rollback(&rollback, true, "traffic never left the current release")
                .await?;
            let finished = self
                .ledger()
                .rollback(rollback.id)
                .await?
                .unwrap_or(rollback);
            incidents::rollback_finished(self.ledger(), &finished, None).await?;
            self.rollback_log_due = true;
        }
        self.backend.stop(&release.version).await;
        // An in-place platform (a rolling Deployment, a hook) may be left on the failed
        // version: put the serving one back.
        if let Some(previous) = previous
            && self.backend.running(&previous.version).await.is_none()
            && let Err(e) = self.backend.rollback(&previous.version).await
        {
            tracing::error!(app = %self.app, version = %previous.version, error = %e, "cannot put the serving release back after a failed deploy");
        }
        self.context.tell(Progress::Failed {
            app: self.app.clone(),
            version: release.version.clone(),
            why: why.to_string(),
        });
        Ok(())
    }

    /// A release healthy for its whole bake becomes the known-good one; a canary then takes
    /// all the traffic.
    /// `judged_until` is the end of the last step judged (epoch seconds): the bake counts
    /// the time the evidence covers, not the clock, so signals that arrive late (a
    /// Prometheus step or two) cannot promote a release before its evidence is in.
    pub(super) async fn promote_if_baked(&mut self, judged_until: i64) -> anyhow::Result<()> {
        let Some(watch) = self.watch.as_ref() else {
            return Ok(());
        };
        let release = &watch.release;
        if release.state != ReleaseState::Watching {
            return Ok(());
        }
        if release.watched_ms(judged_until * 1000) < self.config.bake.as_millis() as i64 {
            return Ok(());
        }
        self.ledger().mark_stable(release).await?;
        let promoted = self
            .ledger()
            .release(release.id)
            .await?
            .context("release vanished")?;
        if let Some(baseline) = watch.canary_baseline().map(str::to_string) {
            // Canary passed: all traffic to it; keep guarding it against the old version's
            // record (written first, so a restarted guard does the same).
            self.ledger()
                .judge_afresh(&promoted, Some(&baseline))
                .await?;
            let instances = self
                .backend
                .running(&promoted.version)
                .await
                .context("the canary is not running")?;
            self.route(&Routes {
                primary: instances,
                canary: None,
            })
            .await?;
            self.retire_later(&baseline);
            let promoted = self
                .ledger()
                .release(promoted.id)
                .await?
                .context("release vanished")?;
            self.watch = Some(self.load_watch(promoted.clone()).await?);
        } else if let Some(watch) = self.watch.as_mut() {
            watch.release = promoted.clone();
        }
        tracing::info!(app = %self.app, version = %promoted.version, "release is stable (known-good)");
        self.context.tell(Progress::Stable {
            app: self.app.clone(),
            version: promoted.version,
        });
        Ok(())
    }
}
