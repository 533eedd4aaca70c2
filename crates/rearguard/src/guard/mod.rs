//! The guard: one reconciler per app. Each tick it reads the ledger and converges: finish or
//! perform rollbacks, deploy a pending release, make sure the current release serves, feed
//! the judge what the router counted, run the checks, promote after the bake time. Every
//! decision is written to the ledger before it is acted on, so a guard killed at any point
//! resumes where it stopped and never rolls back twice ("already done" is success).

mod progress;
mod restarts;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rearguard_judge::{Counts, Mode, Verdict, WaitReason};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use progress::Progress;
use watch::{HISTORY_SECONDS, Watch};

use crate::backends::{AnyBackend, Instances, process::InstanceDirs};
use crate::checks::Health;
use crate::clock::SharedClock;
use crate::config::{AppConfig, Config};
use crate::ledger::{
    Ledger, Release, ReleaseState, Rollback, RollbackStatus, Trigger, VersionStep,
};
use crate::rollback_log::RollbackLog;
use crate::router::{Router, Routes};
use crate::signals::SignalSource;
use crate::{incidents, notify};

/// How often the guard looks.
pub const TICK: Duration = Duration::from_secs(1);
/// How long a lease lasts without renewal.
const LEASE_TTL_MS: i64 = 10_000;
/// Checks run this often while a release is watched.
const CHECK_EVERY_MS: i64 = 5_000;
/// A release whose evidence against it is at this share of a rollback or more (or with a
/// failing check) is not promoted yet, bake time or not: the judge is still making up its
/// mind.
const PROMOTE_BELOW_EVIDENCE: f64 = 0.5;
/// Incidents this recent are followed up (escalated, announced resolved).
const INCIDENT_FOLLOW_UP_MS: i64 = 7 * 24 * 3600 * 1000;
/// Steps no watch needs any more are forgotten this often.
const FORGET_STEPS_EVERY_S: i64 = 60;

/// What every guardian shares.
#[derive(Clone)]
pub struct Context {
    pub config: Config,
    pub config_path: std::path::PathBuf,
    pub ledger: Ledger,
    pub clock: SharedClock,
    pub rollback_log: RollbackLog,
    /// Who acts, for the record (`user@host`).
    pub actor: String,
    /// The lease holder identity of this process.
    pub holder: String,
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
    /// Notifications, when channels are configured.
    pub alerts: Option<Arc<incidents::Alerts>>,
}

impl Context {
    fn tell(&self, progress: Progress) {
        if let Some(tx) = &self.progress {
            let _ = tx.send(progress);
        }
    }
}

/// Guards `apps` until `stop` is cancelled; then stops their processes and routers.
/// `started` is called once every app's router listens.
pub async fn run(
    context: Context,
    apps: Vec<String>,
    stop: CancellationToken,
    started: impl FnOnce(),
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for app in apps {
        let guardian = Guardian::start(&context, &app).await?;
        tasks.spawn(guardian.run(stop.clone()));
    }
    started();
    let mut first_error = None;
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Err(e)) if first_error.is_none() => {
                stop.cancel();
                first_error = Some(e);
            }
            Err(e) if first_error.is_none() => {
                stop.cancel();
                first_error = Some(anyhow::anyhow!("a guardian crashed: {e}"));
            }
            _ => {}
        }
    }
    first_error.map_or(Ok(()), Err)
}

pub struct Guardian {
    app: String,
    config: AppConfig,
    context: Context,
    backend: AnyBackend,
    router: Arc<Router>,
    watch: Option<Watch>,
    /// Counts taken in a second already recorded, added to the next one.
    carry: BTreeMap<String, Counts>,
    /// The last second whose counts were recorded.
    last_step_t: i64,
    check_failures: BTreeMap<String, u32>,
    next_check_at: i64,
    /// Restarts of serving versions whose process died, by version.
    restarts: BTreeMap<String, restarts::Restarts>,
    /// Versions kept warm after a switch, to stop at the given time.
    retiring: Vec<(String, i64)>,
    leased: bool,
}

impl Guardian {
    /// Binds the app's public ports and prepares its backend.
    pub async fn start(context: &Context, app: &str) -> anyhow::Result<Self> {
        let config = context.config.app(app)?.clone();
        let ports: BTreeMap<String, u16> = config
            .components
            .iter()
            .filter_map(|(name, c)| c.public_port.map(|p| (name.clone(), p)))
            .collect();
        let router = Router::start(app, &ports)
            .await
            .map_err(|e| crate::UsageError(e.to_string()))?;
        let dirs = InstanceDirs::of(&context.config, &context.config_path);
        let backend = AnyBackend::new(app, &config, dirs);
        Ok(Self {
            app: app.to_string(),
            config,
            context: context.clone(),
            backend,
            router,
            watch: None,
            carry: BTreeMap::new(),
            last_step_t: 0,
            check_failures: BTreeMap::new(),
            next_check_at: 0,
            retiring: Vec::new(),
            restarts: BTreeMap::new(),
            leased: false,
        })
    }

    fn ledger(&self) -> &Ledger {
        &self.context.ledger
    }

    fn now_ms(&self) -> i64 {
        self.context.clock.now_ms()
    }

    /// Ticks until `stop`; then stops everything this guardian started.
    pub async fn run(mut self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let outcome = loop {
            tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                _ = interval.tick() => {}
            }
            let span = tracing::info_span!("tick", app = %self.app);
            if let Err(e) = self.tick().instrument(span).await {
                // A ledger that cannot be written is fatal; anything else (a busy database,
                // a version that will not start) is retried next tick.
                if e.downcast_ref::<crate::ledger::LedgerError>()
                    .is_some_and(|e| e.is_permanent())
                {
                    break Err(e);
                }
                tracing::warn!(app = %self.app, error = %crate::telemetry::redact(&format!("{e:#}")), "tick failed; retrying");
            }
        };
        self.shutdown().await;
        outcome
    }

    async fn shutdown(&mut self) {
        self.router.shutdown();
        self.backend.stop_all().await;
        if self.leased {
            let _ = self
                .ledger()
                .release_lease(&self.app, &self.context.holder)
                .await;
        }
    }

    /// One pass of the reconciler.
    pub async fn tick(&mut self) -> anyhow::Result<()> {
        let holder_alive = crate::identity::holder_alive;
        let leased = self
            .ledger()
            .acquire_lease(&self.app, &self.context.holder, LEASE_TTL_MS, holder_alive)
            .await?;
        if !leased {
            if self.leased {
                tracing::warn!(app = %self.app, "another guard took over this app; standing by");
                self.backend.stop_all().await;
                self.watch = None;
            }
            self.leased = false;
            return Ok(());
        }
        if !self.leased {
            self.backend.recover();
            self.leased = true;
        }
        for rollback in self.ledger().open_rollbacks(&self.app).await? {
            self.perform_rollback(rollback).await?;
        }
        if let Some(release) = self.ledger().pending_release(&self.app).await? {
            self.deploy(release).await?;
        }
        self.ensure_serving().await?;
        self.observe().await?;
        self.run_checks().await?;
        self.retire_warm_versions().await;
        self.write_rollback_log().await?;
        self.follow_up_incidents().await?;
        self.write_snapshot().await?;
        Ok(())
    }

    /// Tells level 1 about a step of an incident (when notifications are configured).
    async fn alert(
        &self,
        incident: &crate::ledger::Incident,
        event: notify::Event,
    ) -> anyhow::Result<()> {
        if let Some(alerts) = &self.context.alerts {
            alerts.level_one(self.ledger(), incident, event).await?;
        }
        Ok(())
    }

    /// Escalates unacknowledged incidents on time and announces resolutions.
    async fn follow_up_incidents(&self) -> anyhow::Result<()> {
        let Some(alerts) = &self.context.alerts else {
            return Ok(());
        };
        let now = self.now_ms();
        let recent: Vec<_> = self
            .ledger()
            .incidents(now - INCIDENT_FOLLOW_UP_MS)
            .await?
            .into_iter()
            .filter(|i| i.app == self.app)
            .collect();
        alerts.follow_up(self.ledger(), &recent, now).await?;
        Ok(())
    }

    /// After a restart nothing serves: start the current release (and a canary's baseline)
    /// and route to it, resuming its watch from the ledger. The seconds nobody watched do
    /// not count towards its bake.
    async fn ensure_serving(&mut self) -> anyhow::Result<()> {
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
        let running = std::iter::once(&current.version)
            .chain(&canary_baseline)
            .all(|version| self.backend.running(version).is_some());
        if watching_current && running {
            return Ok(());
        }
        if watching_current && !self.restart_allowed(&current).await? {
            return Ok(());
        }
        let instances = self
            .backend
            .start(&current.version)
            .await
            .with_context(|| format!("cannot start {}", current.version))?;
        let routes = match &canary_baseline {
            Some(baseline) => Routes {
                primary: self
                    .backend
                    .start(baseline)
                    .await
                    .with_context(|| format!("cannot start {baseline}"))?,
                canary: Some((instances, self.config.canary_weight.0)),
            },
            None => Routes {
                primary: instances,
                canary: None,
            },
        };
        self.router.set_routes(&routes);
        tracing::info!(app = %self.app, version = %current.version, "serving the current release");
        if !watching_current {
            let current = self.resume(current).await?;
            self.watch = Some(self.load_watch(current).await?);
        }
        Ok(())
    }

    /// A serving version's process died: restart it (recorded) unless its backoff runs;
    /// when restarts do not help, a watched release is rolled back and a known-good one
    /// gets an incident.
    async fn restart_allowed(&mut self, current: &Release) -> anyhow::Result<bool> {
        let dead: Vec<String> = self
            .watch
            .iter()
            .flat_map(Watch::serving_versions)
            .flat_map(|version| self.backend.exited(&version))
            .collect();
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

    /// A release whose watch was interrupted: the time since its last recorded second is
    /// added to its unwatched time.
    async fn resume(&self, release: Release) -> anyhow::Result<Release> {
        let Some(judged_from) = release
            .watch
            .as_ref()
            .filter(|_| release.state == ReleaseState::Watching)
            .map(|w| w.judged_from)
        else {
            return Ok(release);
        };
        let last_seen_ms = self
            .ledger()
            .last_step(&self.app, &release.version, judged_from.div_euclid(1000))
            .await?
            .map_or(judged_from, |t| t * 1000);
        self.ledger()
            .add_unwatched(&release, self.now_ms() - last_seen_ms)
            .await?;
        self.ledger()
            .release(release.id)
            .await?
            .context("release vanished")
    }

    async fn load_watch(&self, release: Release) -> anyhow::Result<Watch> {
        Ok(Watch::load(self.ledger(), release, &self.config.policy, self.now_ms()).await?)
    }

    async fn deploy(&mut self, release: Release) -> anyhow::Result<()> {
        self.ledger().supersede_pending(&release).await?;
        let previous = self.ledger().current(&self.app).await?;
        self.context.tell(Progress::Deploying {
            app: self.app.clone(),
            version: release.version.clone(),
        });
        if let Err(e) = self.backend.check_available(&release.version) {
            self.fail_deploy(&release, previous.as_ref(), &e.to_string())
                .await?;
            return Ok(());
        }
        let instances = match self.backend.start(&release.version).await {
            Ok(instances) => instances,
            Err(e) => {
                self.fail_deploy(&release, previous.as_ref(), &e.to_string())
                    .await?;
                return Ok(());
            }
        };
        let previous_instances = previous
            .as_ref()
            .and_then(|p| self.backend.running(&p.version));
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
        self.router.set_routes(&routes);
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
        }
        self.backend.stop(&release.version).await;
        self.context.tell(Progress::Failed {
            app: self.app.clone(),
            version: release.version.clone(),
            why: why.to_string(),
        });
        Ok(())
    }

    fn retire_later(&mut self, version: &str) {
        let keep_warm = match &self.backend {
            AnyBackend::Process(p) => p.keep_previous_warm(),
        };
        self.retiring.retain(|(v, _)| v != version);
        self.retiring.push((
            version.to_string(),
            self.now_ms() + keep_warm.as_millis() as i64,
        ));
    }

    async fn retire_warm_versions(&mut self) {
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

    /// Records the last second's counts, feeds them to the judge and acts on its verdict.
    async fn observe(&mut self) -> anyhow::Result<()> {
        let mut counts = SignalSource::take_counts(&*self.router);
        for (version, carried) in std::mem::take(&mut self.carry) {
            counts.entry(version).or_default().add(&carried);
        }
        let now = self.now_ms().div_euclid(1000);
        if now <= self.last_step_t {
            self.carry = counts;
            return Ok(());
        }
        // Written before the judge sees them: a restarted guard replays exactly these.
        let routed = self.router.routed_versions();
        let steps: Vec<VersionStep> = counts
            .iter()
            .filter(|(version, c)| c.requests > 0 || routed.contains(version))
            .map(|(version, c)| VersionStep {
                version: version.clone(),
                t: now,
                counts: *c,
            })
            .collect();
        self.ledger().record_steps(&self.app, &steps).await?;
        self.last_step_t = now;
        if now % FORGET_STEPS_EVERY_S == 0 {
            self.forget_old_steps(now).await?;
        }
        let Some(watch) = self.watch.as_mut() else {
            return Ok(());
        };
        let Some(judgement) = watch.observe(now, &counts)? else {
            return Ok(());
        };
        let version = watch.release.version.clone();
        self.context.tell(Progress::Tick {
            app: self.app.clone(),
            version: watch.release.version.clone(),
            judgement: judgement.clone(),
        });
        match judgement.verdict {
            Verdict::Rollback(finding) => {
                let reason = finding.reason.clone();
                let evidence = serde_json::to_value(&finding)?;
                self.auto_rollback(&reason, Some(evidence)).await?;
            }
            // Promoted only past the warm-up, and with nothing held against it: no evidence
            // building up, no failing check, no instance that died recently (low traffic is
            // not held against a release: a quiet service must get known-good releases).
            Verdict::Keep
            | Verdict::Wait {
                why: WaitReason::LowTraffic | WaitReason::NoTraffic,
            } => {
                if judgement
                    .snapshot
                    .error_evidence
                    .max(judgement.snapshot.latency_evidence)
                    < PROMOTE_BELOW_EVIDENCE
                    && self.check_failures.values().all(|&failures| failures == 0)
                    && self
                        .restarts
                        .get(&version)
                        .is_none_or(|r| r.quiet(self.now_ms()))
                {
                    self.promote_if_baked().await?;
                }
            }
            Verdict::Wait { .. } => {}
        }
        Ok(())
    }

    /// Forgets recorded steps no watch will need: older than the judge's lookback and the
    /// history a deploy takes, except the history the current watch is judged against.
    async fn forget_old_steps(&self, now: i64) -> anyhow::Result<()> {
        let keep_seconds = self
            .config
            .policy
            .lookback
            .whole_seconds()
            .max(HISTORY_SECONDS);
        self.ledger()
            .forget_steps(
                &self.app,
                now - keep_seconds,
                self.watch.as_ref().and_then(Watch::history),
            )
            .await?;
        Ok(())
    }

    async fn promote_if_baked(&mut self) -> anyhow::Result<()> {
        let Some(watch) = self.watch.as_ref() else {
            return Ok(());
        };
        let release = &watch.release;
        if release.state != ReleaseState::Watching {
            return Ok(());
        }
        if release.watched_ms(self.now_ms()) < self.config.bake.as_millis() as i64 {
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
                .context("the canary is not running")?;
            self.router.set_routes(&Routes {
                primary: instances,
                canary: None,
            });
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

    async fn auto_rollback(
        &mut self,
        reason: &str,
        evidence: Option<serde_json::Value>,
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
    async fn perform_rollback(&mut self, rollback: Rollback) -> anyhow::Result<()> {
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
        let state = self.backend.capture_state();
        self.ledger()
            .add_timeline(
                incident.id,
                None,
                "state_captured",
                "rearguard",
                &format!("platform state: {state}"),
            )
            .await?;
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
        let instances = match self.backend.start(&to.version).await {
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
        self.router.set_routes(&Routes {
            primary: instances.clone(),
            canary: None,
        });
        self.ledger()
            .finish_rollback(&rollback, true, &format!("traffic back on {}", to.version))
            .await?;
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
        let mut results = Vec::new();
        for check in &self.config.checks {
            results.push(check.run(&instances.endpoints).await);
        }
        let passed = results.iter().all(|r| r.health != Health::Fail);
        serde_json::json!({"passed": passed, "checks": results})
    }

    async fn run_checks(&mut self) -> anyhow::Result<()> {
        let now = self.now_ms();
        if self.config.checks.is_empty() || now < self.next_check_at {
            return Ok(());
        }
        self.next_check_at = now + CHECK_EVERY_MS;
        let Some(watch) = self.watch.as_ref().filter(|w| !w.halted) else {
            return Ok(());
        };
        let Some(instances) = self.backend.running(&watch.release.version) else {
            return Ok(());
        };
        let mut failing = None;
        for check in &self.config.checks {
            let result = check.run(&instances.endpoints).await;
            let failures = self.check_failures.entry(result.check.clone()).or_default();
            if result.health == Health::Fail {
                *failures += 1;
                tracing::warn!(app = %self.app, check = %result.check, detail = %result.detail, failures = *failures, "check failed");
                if *failures >= check.failures_to_rollback() && failing.is_none() {
                    failing = Some(result);
                }
            } else {
                *failures = 0;
            }
        }
        if let Some(result) = failing {
            let reason = format!(
                "check {} failed {} times in a row: {}",
                result.check, self.check_failures[&result.check], result.detail
            );
            self.check_failures.clear();
            self.auto_rollback(&reason, Some(serde_json::to_value(&result)?))
                .await?;
        }
        Ok(())
    }

    /// Appends the lines of finished rollbacks to the rollback log, once each.
    async fn write_rollback_log(&self) -> anyhow::Result<()> {
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
        Ok(())
    }

    async fn write_snapshot(&self) -> anyhow::Result<()> {
        let watch = self.watch.as_ref();
        let body = serde_json::json!({
            "app": self.app,
            "guard": self.context.holder,
            "serving": self.router.primary_version(),
            "release": watch.map(|w| &w.release),
            "mode": watch.map(Watch::mode),
            "baseline_version": watch.and_then(|w| w.canary_baseline()),
            "judgement": watch.and_then(|w| w.last.clone()),
            "bake_seconds": self.config.bake.as_secs_f64(),
        });
        self.ledger().put_snapshot(&self.app, &body).await?;
        Ok(())
    }
}

/// Test hook, compiled only with the `failpoints` feature (test builds): with
/// `REARGUARD_FAILPOINT=<name>`, the guard stops at that point for an hour (until killed),
/// so tests can kill it mid-operation.
#[cfg(feature = "failpoints")]
async fn failpoint(name: &str) {
    if std::env::var("REARGUARD_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::warn!(failpoint = name, "paused at failpoint");
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

#[cfg(not(feature = "failpoints"))]
async fn failpoint(_name: &str) {}
