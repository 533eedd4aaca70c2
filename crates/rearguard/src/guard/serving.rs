//! Keeping the current release serving: deployed and routed after a restart (its watch
//! resumed from the ledger), dead instances restarted while that helps, replaced versions
//! retired once their warm time is over.

use anyhow::Context as _;
use rearguard_judge::Mode;

use super::watch::Watch;
use super::{Guardian, restarts};
use crate::incidents;
use crate::ledger::{Release, ReleaseState};
use crate::notify;
use crate::traffic::Routes;

impl Guardian {
    /// After a restart nothing may serve: deploy the current release (and a canary's
    /// baseline) and route to it, resuming its watch from the ledger. The seconds nobody
    /// watched do not count towards its bake.
    pub(super) async fn ensure_serving(&mut self) -> anyhow::Result<()> {
        let Some(current) = self.ledger().current(&self.app).await? else {
            return Ok(());
        };
        let watching_current = self
            .watch
            .as_ref()
            .is_some_and(|w| w.release.id == current.id);
        let canary_baseline = current
            .watch
            .as_ref()
            .filter(|w| w.mode == Mode::Canary && current.state == ReleaseState::Watching)
            .and_then(|w| w.baseline_version.clone());
        let mut running = true;
        for version in std::iter::once(&current.version).chain(&canary_baseline) {
            running &= self.backend.running(version).await.is_some();
        }
        let routed = self.traffic.routed().contains(&current.version);
        if watching_current && running && routed {
            return Ok(());
        }
        if watching_current && !self.restart_allowed(&current).await? {
            return Ok(());
        }
        let instances = self
            .backend
            .deploy(&current.version)
            .await
            .with_context(|| format!("cannot start {}", current.version))?;
        let routes = match &canary_baseline {
            Some(baseline) => Routes {
                primary: self
                    .backend
                    .deploy(baseline)
                    .await
                    .with_context(|| format!("cannot start {baseline}"))?,
                canary: Some((instances, self.config.canary_weight.0)),
            },
            None => Routes {
                primary: instances,
                canary: None,
            },
        };
        self.route(&routes).await?;
        tracing::info!(app = %self.app, version = %current.version, "serving the current release");
        if !watching_current {
            self.watch = Some(self.load_watch(current).await?);
            // Once the seconds the signals kept meanwhile are in, the gap left is known.
            self.resumed = true;
        }
        Ok(())
    }

    /// A serving version's process died: restart it (recorded) unless its backoff runs;
    /// when restarts do not help, a watched release is rolled back and a known-good one
    /// gets an incident.
    async fn restart_allowed(&mut self, current: &Release) -> anyhow::Result<bool> {
        let mut dead = Vec::new();
        for version in self.watch.iter().flat_map(Watch::serving_versions) {
            dead.extend(self.backend.exited(&version).await);
        }
        let now = self.now_ms();
        let decision = self
            .restarts
            .entry(current.version.clone())
            .or_default()
            .decide(now);
        match decision {
            restarts::Decision::Wait => Ok(false),
            restarts::Decision::Restart(attempt) => {
                tracing::warn!(app = %self.app, version = %current.version, attempt, dead = %dead.join("; "), "restarting a dead instance");
                self.ledger()
                    .event(
                        &self.app,
                        Some(current.id),
                        "instance_restarted",
                        serde_json::json!({"version": current.version, "attempt": attempt, "exited": dead}),
                    )
                    .await?;
                Ok(true)
            }
            restarts::Decision::GiveUp => {
                let reason = format!(
                    "{} restarts in {} minutes did not keep {} running: {}",
                    restarts::LIMIT,
                    restarts::WINDOW_MS / 60_000,
                    current.version,
                    dead.join("; ")
                );
                let has_known_good = self
                    .ledger()
                    .known_good(&self.app, Some(current.id))
                    .await?
                    .is_some();
                if current.state == ReleaseState::Watching && has_known_good {
                    self.auto_rollback(&reason, None).await?;
                } else {
                    tracing::error!(app = %self.app, version = %current.version, reason, "restarts do not help");
                    let incident =
                        incidents::open_without_rollback(self.ledger(), current, &reason, None)
                            .await?;
                    self.alert(&incident, notify::Event::RollbackFailed).await?;
                }
                Ok(false)
            }
        }
    }

    /// A watch resumed after a restart: the time between its last recorded second and now
    /// was watched by nobody (no guard, and no router counting either) and does not count
    /// towards the bake. Called once the signals' kept seconds are recorded.
    pub(super) async fn count_unwatched(&mut self) -> anyhow::Result<()> {
        if !std::mem::take(&mut self.resumed) {
            return Ok(());
        }
        let Some(release) = self
            .watch
            .as_ref()
            .map(|w| w.release.clone())
            .filter(|r| r.state == ReleaseState::Watching)
        else {
            return Ok(());
        };
        let Some(judged_from) = release.watch.as_ref().map(|w| w.judged_from) else {
            return Ok(());
        };
        let last_seen_ms = self
            .ledger()
            .last_step(&self.app, &release.version, judged_from.div_euclid(1000))
            .await?
            // A recorded second covers the second before it.
            .map_or(judged_from, |t| t * 1000);
        // The second in progress is not missing: it is taken at the next tick.
        let gap = self.now_ms() - last_seen_ms - 1000;
        if gap > 0 {
            self.ledger().add_unwatched(&release, gap).await?;
            let release = self
                .ledger()
                .release(release.id)
                .await?
                .context("release vanished")?;
            if let Some(watch) = self.watch.as_mut() {
                watch.release = release;
            }
        }
        Ok(())
    }

    pub(super) async fn load_watch(&self, release: Release) -> anyhow::Result<Watch> {
        let step_seconds = self.signals.as_ref().map_or(1, |s| s.step_seconds());
        Ok(Watch::load(
            self.ledger(),
            release,
            &self.config.policy,
            step_seconds,
            self.now_ms(),
        )
        .await?)
    }

    /// The replaced version keeps running for an instant switch-back, then stops.
    pub(super) fn retire_later(&mut self, version: &str) {
        let keep_warm = self.backend.keep_previous_warm();
        self.retiring.retain(|(v, _)| v != version);
        self.retiring.push((
            version.to_string(),
            self.now_ms() + keep_warm.as_millis() as i64,
        ));
    }

    pub(super) async fn retire_warm_versions(&mut self) {
        let now = self.now_ms();
        let serving: Vec<String> = self
            .watch
            .iter()
            .flat_map(Watch::serving_versions)
            .collect();
        let (due, later): (Vec<_>, Vec<_>) =
            self.retiring.drain(..).partition(|(_, at)| *at <= now);
        self.retiring = later;
        for (version, _) in due {
            if !serving.contains(&version) {
                self.backend.stop(&version).await;
            }
        }
    }
}
