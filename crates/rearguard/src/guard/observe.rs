//! Watching: each step's counts are written to the ledger, then fed to the judge, whose
//! verdict is acted on; checks run every few seconds against the watched release.

use std::collections::BTreeMap;

use crate::ledger::Evidence;
use rearguard_judge::{Counts, Verdict, WaitReason};

use super::watch::{HISTORY_SECONDS, Watch};
use super::{CHECK_EVERY_MS, Guardian, PROMOTE_BELOW_EVIDENCE, Progress};
use crate::backends::Instances;
use crate::checks::{self, CheckResult, Health, Subject};
use crate::ledger::{ReleaseState, VersionStep};
use crate::signals::{Ask, Reading};

/// Steps no watch needs any more are forgotten this often.
const FORGET_STEPS_EVERY_S: i64 = 60;

impl Guardian {
    /// Records the steps the signals completed since the last tick, feeds them to the
    /// judge and acts on its verdicts.
    pub(super) async fn observe(&mut self) -> anyhow::Result<()> {
        if let Some(finding) = self.watch.as_mut().and_then(|w| w.decided.take()) {
            let reason = finding.reason.clone();
            return self
                .auto_rollback(&reason, Some(Evidence::Judge(finding)))
                .await;
        }
        let now = self.now_ms().div_euclid(1000);
        let readings = match &self.signals {
            Some(source) => {
                // Asking a backend what runs may cost a platform call (Compose): only for a
                // source that reads the instances.
                let mut serving = Vec::new();
                if source.reads_instances() {
                    for version in self.traffic.routed() {
                        serving.extend(self.backend.running(&version).await);
                    }
                }
                let ask = Ask {
                    app: &self.app,
                    serving: &serving,
                    recorded_until: self.last_step_t,
                    now,
                };
                match source.take(&ask).await {
                    Ok(readings) => readings,
                    // No evidence, no decision (nor a promotion); the rest of the tick goes on.
                    Err(e) => {
                        tracing::warn!(app = %self.app, error = %e, "no signals this tick");
                        return Ok(());
                    }
                }
            }
            // Nothing counts requests: the judge still sees time pass (only checks and the
            // bake decide then).
            None => vec![Reading {
                t: now,
                counts: BTreeMap::new(),
            }],
        };
        let routed = self.traffic.routed();
        let (mut last_t, mut steps, mut new) = (self.last_step_t, Vec::new(), Vec::new());
        for reading in readings {
            let mut counts = reading.counts;
            for (version, carried) in std::mem::take(&mut self.carry) {
                counts.entry(version).or_default().add(&carried);
            }
            // A step already recorded (two takes in one step): its counts go to the next.
            if reading.t <= last_t {
                self.carry = counts;
                continue;
            }
            last_t = reading.t;
            steps.extend(version_steps(reading.t, &counts, &routed));
            new.push((reading.t, counts));
        }
        // Written before the judge sees them: a restarted guard replays exactly these. In
        // one write: a fresh guard's history is 60 steps, and 10,000 guardians each waiting
        // for 60 commits in turn held their ticks' state for minutes.
        self.ledger().record_steps(&self.app, &steps).await?;
        self.last_step_t = last_t;
        for (t, counts) in new {
            self.judge_step(t, counts).await?;
        }
        Ok(())
    }

    async fn judge_step(&mut self, t: i64, counts: BTreeMap<String, Counts>) -> anyhow::Result<()> {
        if t % FORGET_STEPS_EVERY_S == 0 {
            self.forget_old_steps(t).await?;
        }
        let Some(watch) = self.watch.as_mut() else {
            return Ok(());
        };
        let Some(judgement) = watch.observe(t, &counts)? else {
            return Ok(());
        };
        let version = watch.release.version.clone();
        self.context.metrics.decision(&self.app, &judgement.verdict);
        self.context.tell(Progress::Tick {
            app: self.app.clone(),
            version: version.clone(),
            judgement: judgement.clone(),
        });
        match judgement.verdict {
            Verdict::Rollback(finding) => {
                super::failpoint("after-rollback-judged").await;
                let reason = finding.reason.clone();
                self.auto_rollback(&reason, Some(Evidence::Judge(finding)))
                    .await?;
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
                    self.promote_if_baked(t).await?;
                }
            }
            Verdict::Wait { .. } => {}
        }
        Ok(())
    }

    /// Rolls the watched release back on an alert Alertmanager sent for the app; an alert
    /// with no release watched is left to people (Alertmanager told them already).
    pub(super) async fn act_on_alerts(&mut self) -> anyhow::Result<()> {
        let Some(inbox) = &self.context.alerts_received else {
            return Ok(());
        };
        let alerts = inbox.take(&self.app);
        let Some(since) = self
            .watch
            .as_ref()
            .filter(|w| !w.halted && w.release.state == ReleaseState::Watching)
            .map(Watch::judged_from_ms)
        else {
            if let Some(alert) = alerts.first() {
                tracing::info!(app = %self.app, alert = %alert.reason(), "an alert with no release watched; left to people");
            }
            return Ok(());
        };
        // An alert already firing before the release took traffic says nothing about it.
        let Some(alert) = alerts.into_iter().find(|alert| {
            alert
                .starts_at
                .parse::<jiff::Timestamp>()
                .is_ok_and(|t| t.as_millisecond() >= since)
        }) else {
            return Ok(());
        };
        let reason = alert.reason();
        self.auto_rollback(&reason, Some(Evidence::Alert { alert }))
            .await
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

    /// Runs every check of the app once against `instances`, at the same time.
    pub(super) async fn check(&self, instances: &Instances) -> Vec<CheckResult> {
        let config_dir = self.context.workdirs().config_dir;
        let subject = Subject {
            app: &self.app,
            instances,
            config_dir: &config_dir,
            now_ms: self.now_ms(),
        };
        checks::run_all(&self.config.checks, &subject).await
    }

    /// Runs the checks against the watched release, every `CHECK_EVERY_MS`; a check failing
    /// its number of times in a row rolls the release back.
    pub(super) async fn run_checks(&mut self) -> anyhow::Result<()> {
        let now = self.now_ms();
        if self.config.checks.is_empty() || now < self.next_check_at {
            return Ok(());
        }
        self.next_check_at = now + CHECK_EVERY_MS;
        let Some(watch) = self.watch.as_ref().filter(|w| !w.halted) else {
            return Ok(());
        };
        let Some(instances) = self.backend.running(&watch.release.version).await else {
            return Ok(());
        };
        let mut failing = None;
        let results = self.check(&instances).await;
        for (check, result) in self.config.checks.iter().zip(results) {
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
            self.auto_rollback(&reason, Some(Evidence::Check(result)))
                .await?;
        }
        Ok(())
    }

    /// Samples the CPU and memory of the versions taking traffic every `CHECK_EVERY_MS`;
    /// the watched release's samples are held against the policy's `max_cpu` and
    /// `max_memory` (the judge's limit rule, pure like the others).
    pub(super) async fn measure_usage(&mut self) -> anyhow::Result<()> {
        let now = self.now_ms();
        if now < self.next_usage_at {
            return Ok(());
        }
        self.next_usage_at = now + CHECK_EVERY_MS;
        let mut usage = BTreeMap::new();
        for version in self.traffic.routed() {
            if let Some(measured) = self.backend.usage(&version).await {
                usage.insert(version, measured);
            }
        }
        self.usage = usage;
        let Some(version) = self
            .watch
            .as_ref()
            .filter(|w| !w.halted && w.release.state == ReleaseState::Watching)
            .map(|w| w.release.version.clone())
        else {
            self.usage_samples = (String::new(), Vec::new());
            return Ok(());
        };
        if self.usage_samples.0 != version {
            self.usage_samples = (version.clone(), Vec::new());
        }
        let now_s = now.div_euclid(1000);
        let keep_from =
            now_s - self.config.policy.limits_for.whole_seconds() - CHECK_EVERY_MS / 1000;
        let samples = &mut self.usage_samples.1;
        samples.extend(self.usage.get(&version).map(|u| (now_s, *u)));
        samples.retain(|(t, _)| *t >= keep_from);
        let finding = rearguard_judge::saturation_limit(&self.config.policy, samples, now_s);
        if let Some(finding) = finding {
            let reason = finding.reason.clone();
            self.auto_rollback(&reason, Some(Evidence::Judge(finding)))
                .await?;
        }
        Ok(())
    }
}

/// What each version served at `t`, as recorded: every version with traffic, and every
/// version traffic is routed to, with or without (a quiet second is evidence too).
fn version_steps(t: i64, counts: &BTreeMap<String, Counts>, routed: &[String]) -> Vec<VersionStep> {
    counts
        .iter()
        .filter(|(version, c)| c.requests > 0 || routed.contains(version))
        .map(|(version, c)| VersionStep {
            version: version.clone(),
            t,
            counts: *c,
        })
        .chain(
            routed
                .iter()
                .filter(|version| !counts.contains_key(*version))
                .map(|version| VersionStep {
                    version: version.clone(),
                    t,
                    counts: Counts::default(),
                }),
        )
        .collect()
}
