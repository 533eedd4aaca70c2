//! The guard: one reconciler per app. Each tick it reads the ledger and converges: finish or
//! perform rollbacks, deploy a pending release, make sure the current release serves, feed
//! the judge what the router counted, run the checks, promote after the bake time. Every
//! decision is written to the ledger before it is acted on, so a guard killed at any point
//! resumes where it stopped and never rolls back twice ("already done" is success).

mod deploy;
mod metrics;
mod observe;
mod progress;
mod restarts;
mod rollback;
mod serving;
mod snapshot;
mod watch;
mod work_board;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rearguard_judge::Counts;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use metrics::GuardMetrics;
pub use progress::Progress;
pub use snapshot::Snapshot;
pub use watch::HISTORY_SECONDS;
use watch::Watch;
pub use work_board::WorkBoard;

use crate::backends::{Backend, Workdirs};
use crate::clock::SharedClock;
use crate::config::{AppConfig, Config};
use crate::ledger::Ledger;
use crate::rollback_log::RollbackLog;
use crate::signals::SignalSource;
use crate::traffic::{Routes, Traffic};
use crate::{incidents, notify};

/// How long a lease lasts without renewal, at least: ten ticks of a second, or three of
/// longer ticks, so a busy guard keeps its apps.
const LEASE_TTL_MS: i64 = 10_000;
/// Checks run this often while a release is watched.
pub(crate) const CHECK_EVERY_MS: i64 = 5_000;
/// A release whose evidence against it is at this share of a rollback or more (or with a
/// failing check) is not promoted yet, bake time or not: the judge is still making up its
/// mind.
pub(crate) const PROMOTE_BELOW_EVIDENCE: f64 = 0.5;
/// Incidents this recent are followed up (escalated, announced resolved).
const INCIDENT_FOLLOW_UP_MS: i64 = 7 * 24 * 3600 * 1000;

/// Guardians taking their first tick at once. 10,000 first ticks begun together each
/// held their state (tens of KB) while they queued for the ledger's few connections: most
/// of a starting guard's memory (1.5 GiB where a steady one holds 0.9), and
/// tens of thousands of "slow acquire" warnings. More than the ledger's connections, so
/// the ledger is never idle while some wait.
pub const FIRST_TICKS_AT_ONCE: usize = 64;

/// What every guardian shares.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<Config>,
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
    /// The Prometheus servers the apps' signals come from, shared so one query serves all.
    pub prometheus: crate::signals::prometheus::Servers,
    /// Alerts Alertmanager sent, once its receiver listens.
    pub alerts_received: Option<Arc<crate::signals::alertmanager::Inbox>>,
    /// What the guard counts about itself.
    pub metrics: Arc<GuardMetrics>,
    /// Which apps have work waiting, read once for all guardians.
    pub work: Arc<WorkBoard>,
    /// Guardians taking their first tick (a fresh guard's history, the work a restart
    /// resumes) at most `FIRST_TICKS_AT_ONCE` at a time.
    pub first_ticks: Arc<tokio::sync::Semaphore>,
}

impl Context {
    /// Where backends work: beside the config file, and in the data directory.
    pub fn workdirs(&self) -> Workdirs {
        Workdirs::of(&self.config, &self.config_path)
    }

    fn tell(&self, progress: Progress) {
        if let Some(tx) = &self.progress {
            let _ = tx.send(progress);
        }
    }
}

/// How guarding ends.
#[derive(Clone, Default)]
pub struct Ending {
    /// For good: the apps' processes and routers stop too.
    pub stop: CancellationToken,
    /// To hand over to another guard process (a reload): everything keeps running, and the
    /// lease stays with this process.
    pub detach: CancellationToken,
}

/// Guards `apps` until `ending` says so. `started` is called once every app's traffic
/// moves (its router listens).
pub async fn run(
    mut context: Context,
    apps: Vec<String>,
    ending: Ending,
    started: impl FnOnce(),
) -> anyhow::Result<()> {
    let stop = ending.stop.clone();
    if let Some(config) = &context.config.alertmanager {
        let (stop, detach) = (stop.clone(), ending.detach.clone());
        let ended = async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = detach.cancelled() => {}
            }
        };
        context.alerts_received = Some(crate::signals::alertmanager::serve(config, ended).await?);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for app in apps {
        let guardian = Guardian::start(&context, &app).await?;
        tasks.spawn(guardian.run(ending.clone()));
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
    backend: Box<dyn Backend>,
    traffic: Box<dyn Traffic>,
    signals: Option<Arc<dyn SignalSource>>,
    watch: Option<Watch>,
    /// Counts taken in a second already recorded, added to the next one.
    carry: BTreeMap<String, Counts>,
    /// The last second whose counts were recorded.
    last_step_t: i64,
    check_failures: BTreeMap<String, u32>,
    next_check_at: i64,
    /// Restarts of serving versions whose process died, by version.
    restarts: BTreeMap<String, restarts::Restarts>,
    /// A watch was resumed this tick: its unwatched gap is counted after the observe.
    resumed: bool,
    /// Versions kept warm after a switch, to stop at the given time.
    retiring: Vec<(String, i64)>,
    leased: bool,
    /// When the lease runs out at the earliest (epoch milliseconds).
    lease_until: i64,
    /// Finished rollbacks may be missing from the rollback log (since the lease was taken,
    /// or a rollback was performed).
    rollback_log_due: bool,
    /// Where traffic was last sent, for the status snapshot (`rearguard check` reads it).
    routes: Option<Routes>,
    /// CPU and memory of the versions taking traffic, last sampled.
    usage: BTreeMap<String, rearguard_judge::Usage>,
    /// The watched release's samples (its version, then `(t, usage)` oldest first).
    usage_samples: (String, Vec<(i64, rearguard_judge::Usage)>),
    next_usage_at: i64,
}

impl Guardian {
    /// Prepares the app's backend and traffic; the traffic starts (the router listens)
    /// here, so a port in use is a clear error at once.
    pub async fn start(context: &Context, app: &str) -> anyhow::Result<Self> {
        let config = context.config.app(app)?.clone();
        let backend = config.backend.build(app, context.workdirs());
        let traffic = config
            .traffic
            .build(app, context.workdirs(), context.clock.clone());
        traffic
            .start()
            .await
            .map_err(|e| crate::UsageError(e.to_string()))?;
        let signals = config.signals.build(traffic.as_ref(), &context.prometheus);
        Ok(Self {
            app: app.to_string(),
            config,
            context: context.clone(),
            backend,
            traffic,
            signals,
            watch: None,
            carry: BTreeMap::new(),
            last_step_t: 0,
            check_failures: BTreeMap::new(),
            next_check_at: 0,
            retiring: Vec::new(),
            restarts: BTreeMap::new(),
            resumed: false,
            leased: false,
            lease_until: 0,
            rollback_log_due: true,
            routes: None,
            usage: BTreeMap::new(),
            usage_samples: (String::new(), Vec::new()),
            next_usage_at: 0,
        })
    }

    fn ledger(&self) -> &Ledger {
        &self.context.ledger
    }

    fn now_ms(&self) -> i64 {
        self.context.clock.now_ms()
    }

    fn tick_every(&self) -> Duration {
        Duration::from_millis(self.context.config.guard.tick.as_millis())
    }

    fn lease_ttl_ms(&self) -> i64 {
        LEASE_TTL_MS.max(3 * self.tick_every().as_millis() as i64)
    }

    /// Ticks until `ending` says so; then stops everything this guardian started, unless
    /// it detaches (another guard process takes over what runs).
    pub async fn run(mut self, ending: Ending) -> anyhow::Result<()> {
        let mut interval = tokio::time::interval(self.tick_every());
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut started = false;
        let outcome = loop {
            tokio::select! {
                _ = ending.stop.cancelled() => break Ok(()),
                _ = ending.detach.cancelled() => return Ok(()),
                _ = interval.tick() => {}
            }
            let _first_tick = if started {
                None
            } else {
                let first_ticks = self.context.first_ticks.clone();
                tokio::select! {
                    _ = ending.stop.cancelled() => break Ok(()),
                    _ = ending.detach.cancelled() => return Ok(()),
                    permit = first_ticks.acquire_owned() => permit.ok(),
                }
            };
            let span = tracing::info_span!("tick", app = %self.app);
            let stopwatch = crate::clock::Stopwatch::start();
            // Boxed: a tick's state (every step it may take, deploys and rollbacks included)
            // is tens of KB; held inline, every guardian's task kept it for good (10,000
            // apps: ~380 MB), where boxed it lives only while the tick runs.
            let ticked = Box::pin(self.tick().instrument(span)).await;
            self.context
                .metrics
                .tick(&self.app, stopwatch.elapsed().as_secs_f64());
            started |= ticked.is_ok();
            if let Err(e) = ticked {
                if e.downcast_ref::<crate::ledger::LedgerError>().is_some() {
                    self.context.metrics.ledger_error();
                }
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
        self.traffic.stop().await;
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
        let (now, ttl) = (self.now_ms(), self.lease_ttl_ms());
        // Renewed once half of it is gone, not every tick: nobody else may take a lease
        // before it expires, and each renewal is a write.
        let leased = if self.leased && now < self.lease_until - ttl / 2 {
            true
        } else {
            let leased = self
                .ledger()
                .acquire_lease(&self.app, &self.context.holder, ttl, holder_alive)
                .await?;
            if leased {
                self.lease_until = now + ttl;
            }
            leased
        };
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
            self.backend.recover().await;
            // Steps another guard recorded are not counted again.
            if let Some(t) = self.ledger().last_recorded_step(&self.app).await? {
                self.last_step_t = self.last_step_t.max(t);
            }
            self.leased = true;
            self.rollback_log_due = true;
        }
        // Takes over a running router, or starts one again if it died.
        self.traffic.start().await?;
        let waiting = (self.context.work)
            .of(self.ledger(), &self.app, now)
            .await?;
        if waiting.rollbacks {
            for rollback in self.ledger().open_rollbacks(&self.app).await? {
                self.perform_rollback(rollback).await?;
            }
        }
        if waiting.release
            && let Some(release) = self.ledger().pending_release(&self.app).await?
        {
            self.deploy(release).await?;
        }
        self.ensure_serving().await?;
        self.observe().await?;
        self.act_on_alerts().await?;
        self.count_unwatched().await?;
        self.run_checks().await?;
        self.measure_usage().await?;
        self.retire_warm_versions().await;
        self.write_rollback_log().await?;
        self.follow_up_incidents().await?;
        self.write_snapshot().await?;
        Ok(())
    }

    /// Sends traffic to `routes`, and remembers them.
    async fn route(&mut self, routes: &Routes) -> anyhow::Result<()> {
        self.traffic.route(routes).await?;
        self.routes = Some(routes.clone());
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

    async fn write_snapshot(&self) -> anyhow::Result<()> {
        let watch = self.watch.as_ref();
        let snapshot = Snapshot {
            app: self.app.clone(),
            guard: self.context.holder.clone(),
            serving: self.traffic.routed().first().cloned(),
            release: watch.map(|w| w.release.clone()),
            mode: watch.map(Watch::mode),
            baseline_version: watch.and_then(|w| w.canary_baseline()).map(str::to_string),
            judgement: watch.and_then(|w| w.last.clone()),
            bake_seconds: self.config.bake.as_secs_f64(),
            routes: self.routes.clone(),
            usage: self.usage.clone(),
        };
        self.ledger().put_snapshot(&self.app, &snapshot).await?;
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
