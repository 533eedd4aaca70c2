//! rearguard's judge: decides, step by step, whether a new release (the candidate) is good,
//! bad or not known yet, compared with the release it replaces (the baseline).
//!
//! Pure: no IO, no clock, no randomness. Time is the `t` of the steps it is fed, so the same
//! code runs live in the guard and over recorded traffic in `rearguard backtest`, and a
//! decision at `t` depends only on steps up to `t`.
//!
//! ```
//! use rearguard_judge::{Judge, Mode, Policy, Setup, Step, Counts};
//! let mut judge = Judge::new(Policy::default(), Setup { mode: Mode::BlueGreen, deploy_at: 300, step_seconds: 1 });
//! let judgement = judge.observe(Step { t: 0, baseline: Counts::default(), candidate: Counts::default() }).unwrap();
//! assert!(!judgement.verdict.is_rollback());
//! ```

mod counts;
mod policy;
mod rules;
mod series;
mod stats;
mod verdict;

pub use counts::{
    BUCKET_BOUNDS_MS, BUCKETS, Counts, HistogramError, LatencyHistogram, bucket_name,
};
pub use policy::{Bytes, Fraction, Policy, Span};
pub use rules::limits::{Usage, saturation_limit};
pub use verdict::{
    Evidence, Finding, Judgement, Metric, Rule, Snapshot, Tier, Verdict, WaitReason,
};

use rules::pooled::PooledErrors;
use rules::regression::{Chart, LatencyTest, p95};
use serde::{Deserialize, Serialize};
use series::{Sums, block_dispersion};

/// How traffic is shared between the releases after the deploy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// All traffic moves to the candidate; the baseline is the replaced release's history.
    #[serde(alias = "blue-green", alias = "blue_green")]
    BlueGreen,
    /// The candidate takes a share; the baseline keeps serving the rest, side by side.
    Canary,
}

/// Where the judge stands: how traffic is split and when the candidate was deployed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setup {
    pub mode: Mode,
    /// Time of the deploy, in the same seconds as the steps' `t`.
    pub deploy_at: i64,
    /// Length of one step in seconds.
    pub step_seconds: u32,
}

/// What each release served during the step ending at `t` (not running totals).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub t: i64,
    pub baseline: Counts,
    pub candidate: Counts,
}

/// Steps must come in time order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfOrder {
    pub t: i64,
    pub previous: i64,
}

impl std::fmt::Display for OutOfOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "time goes backwards: step at t={} after t={}",
            self.t, self.previous
        )
    }
}

impl std::error::Error for OutOfOrder {}

/// Window for the gross-failure rule and the snapshot shown to people.
const RECENT_SECONDS: i64 = 60;
/// A canary's error-rate reference spans at most this many seconds: long enough that its
/// own bound does not sit a point above a clean baseline at a few requests a second (20 s
/// missed 1 % of generated faults that 40 s catches), short enough that the first seconds
/// of a shared outage are not held against a window mostly from before it (80 s added
/// false rollbacks on generated canary outages).
const STEADY_SECONDS: i64 = 40;
/// A canary's latency reference spans at least this many seconds.
const LATENCY_REFERENCE_SECONDS: i64 = 20;

/// A canary's latency reference widens until it holds this many baseline requests: the
/// shape tests count the reference's sampling error against the evidence (a run's
/// reference is this window plus the baseline's requests during the run), so a thin
/// window makes them slow (300 requests missed a x1.4 tail in an even canary at 3 req/s
/// that 1000 catch), and the environment's swings average out of a wide one.
const LATENCY_REFERENCE_REQUESTS: u64 = 1000;

/// The replaced release as it was just before the deploy.
struct History {
    baseline: Counts,
    /// The baseline's requests and errors outside its transient error episodes (see
    /// [`stats::steady_blocks`]): what the candidate's error rate is held against.
    steady_errors: Counts,
    /// The baseline's requests per second before the deploy.
    requests_per_second: f64,
}

/// The judge for one candidate. Feed it every step in time order with [`Judge::observe`].
pub struct Judge {
    policy: Policy,
    setup: Setup,
    sums: Sums,
    last_t: Option<i64>,
    history: Option<History>,
    charts: Option<[Chart; 4]>,
    /// The error rate's evidence pooled since the warm-up (low traffic's test).
    pooled: Option<PooledErrors>,
}

impl Judge {
    pub fn new(policy: Policy, setup: Setup) -> Self {
        Self {
            policy,
            setup,
            sums: Sums::default(),
            last_t: None,
            history: None,
            charts: None,
            pooled: None,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Takes one step and answers for the time `step.t`.
    pub fn observe(&mut self, step: Step) -> Result<Judgement, OutOfOrder> {
        if let Some(previous) = self.last_t.filter(|&p| step.t <= p) {
            return Err(OutOfOrder {
                t: step.t,
                previous,
            });
        }
        self.last_t = Some(step.t);
        self.sums.push(step.t, &step.baseline, &step.candidate);
        let now = step.t;
        let deploy_at = self.setup.deploy_at;
        if now < deploy_at {
            self.sums
                .drop_before(now - self.policy.lookback.whole_seconds());
            return Ok(self.judgement(
                now,
                Verdict::Wait {
                    why: WaitReason::NotDeployed,
                },
            ));
        }
        if self.history.is_none() {
            self.freeze_history();
        }
        let errors_reference = self.errors_reference(now);
        let latency_reference = self.latency_reference(now);
        let traffic_share = self.traffic_share(now);
        let charts = self.charts.as_mut().expect("made with the history");
        for chart in charts.iter_mut() {
            let reference = if chart.is_latency() {
                &latency_reference
            } else {
                &errors_reference
            };
            chart.observe(&self.policy, &self.setup, &step, reference, traffic_share);
        }
        if rules::regression::after_warmup(&self.policy, &self.setup, now) {
            let pooled = self.pooled.as_mut().expect("made with the history");
            pooled.observe(
                &self.policy,
                now,
                &step.baseline,
                &step.candidate,
                traffic_share,
            );
        }
        let charts = self.charts.as_ref().expect("made with the history");
        let run_starts = charts.iter().flat_map(Chart::run_starts);
        self.sums.mark(std::iter::once(deploy_at).chain(run_starts));
        self.sums.drop_before(now - self.reach_back());
        let verdict = self.decide(now);
        Ok(self.judgement(now, verdict))
    }

    /// How far back from now a window is still asked for, once deployed (windows from the
    /// deploy and from each CUSUM run's start are marked): blue-green holds the candidate
    /// against its frozen history, so only its recent windows; a canary's references reach
    /// back over the lookback.
    fn reach_back(&self) -> i64 {
        let recent = match self.setup.mode {
            Mode::BlueGreen => RECENT_SECONDS.max(rules::regression::MATERIAL_SECONDS),
            Mode::Canary => self.policy.lookback.whole_seconds().max(RECENT_SECONDS),
        };
        recent.max(self.policy.limits_for.whole_seconds())
    }

    fn freeze_history(&mut self) {
        let deploy_at = self.setup.deploy_at;
        let history = self.sums.between(i64::MIN, deploy_at - 1).baseline;
        let error_blocks = self.sums.baseline_blocks(deploy_at, |c| c.errors as f64);
        let steady = series::steady_rate(&error_blocks);
        let error_chart = Chart::errors(self.reference_z(), steady.dispersion);
        let dispersion_above = |ms: Option<f64>| {
            ms.map_or(1.0, |ms| {
                block_dispersion(
                    &self
                        .sums
                        .baseline_blocks(deploy_at, |c| c.latency.count_above(ms)),
                )
            })
        };
        let threshold = rules::regression::latency_threshold(&self.policy, &history);
        let dispersion = dispersion_above(threshold);
        // The shape tests weigh every request's latency, which the environment moves as a
        // whole: a 10 % swing from block to block that barely moves a threshold's count is
        // 6 times the noise of a block's mean log-latency at 30 req/s (and, taken as
        // evidence, rolled good releases back). The tail test also listens to the far
        // tail, which the environment moves the most.
        let log_latency = self
            .sums
            .baseline_blocks(deploy_at, |c| c.latency.log_latency_sum());
        let shape_dispersion =
            stats::mean_dispersion(&log_latency, history.latency.log_latency_variance())
                .clamp(1.0, 100.0)
                .max(dispersion);
        let tail_dispersion = dispersion_above(history.latency.quantile_ms(0.99));
        let fixed = threshold.filter(|_| self.setup.mode == Mode::BlueGreen);
        let z = self.reference_z();
        self.charts = Some([
            error_chart,
            Chart::latency(LatencyTest::SlowShare, z, dispersion, fixed),
            Chart::latency(LatencyTest::Shift, z, shape_dispersion, fixed),
            Chart::latency(
                LatencyTest::Tail,
                z,
                tail_dispersion.max(shape_dispersion),
                fixed,
            ),
        ]);
        let seconds = error_blocks.len() as f64 * series::DISPERSION_BLOCK_SECONDS as f64;
        let steady_errors = Counts {
            requests: steady.trials.round() as u64,
            errors: steady.events.round() as u64,
            ..Counts::default()
        };
        self.pooled = Some(match self.setup.mode {
            Mode::BlueGreen => PooledErrors::new(Some(&steady_errors), steady.dispersion),
            Mode::Canary => PooledErrors::new(None, 1.0),
        });
        self.history = Some(History {
            baseline: history,
            steady_errors,
            requests_per_second: history.requests as f64 / seconds.max(1.0),
        });
    }

    /// The baseline data the candidate's data since `from` is held against: the replaced
    /// release's history (blue-green) or the baseline over the same moments (canary).
    fn reference(&self, from: i64, now: i64) -> Counts {
        match self.setup.mode {
            Mode::BlueGreen => self
                .history
                .as_ref()
                .map(|h| h.baseline)
                .unwrap_or_default(),
            // Only the same moments: older data may come from another regime (before a
            // shared outage began, or after it ended). A thin but concurrent reference is
            // honest about its uncertainty where a stale one is confidently wrong.
            Mode::Canary => self.sums.between(from, now).baseline,
        }
    }

    /// The reference for the error rate: blue-green's is the history without its transient
    /// episodes; a canary's is the baseline over the longest recent stretch, up to
    /// `STEADY_SECONDS`, whose error rate held steady. Each doubling
    /// (1, 2, 4 .. s) is kept only if its older half agrees with its newer half, so when a
    /// shared outage starts (or ends) the candidate's seconds are held against the
    /// baseline's same regime at once, instead of a window still mostly from before.
    fn errors_reference(&self, now: i64) -> Counts {
        if let (Mode::BlueGreen, Some(history)) = (self.setup.mode, &self.history) {
            return history.steady_errors;
        }
        let (mut reference, mut seconds) = (self.reference(now, now), 1);
        while self.setup.mode == Mode::Canary && seconds < STEADY_SECONDS {
            let longer = (2 * seconds).min(STEADY_SECONDS);
            let older = self.reference(now - longer + 1, now - seconds);
            if !stats::same_rate(&older, &reference) {
                break;
            }
            reference.add(&older);
            seconds = longer;
        }
        reference
    }

    /// The reference for latency: like [`Self::reference`], but a canary's window widens
    /// (doubling, up to `lookback`) until it holds `LATENCY_REFERENCE_REQUESTS`: a
    /// distribution's shape needs far more requests than a rate, and the environment's
    /// shared slowdowns average out of a wide window just as they do in blue-green history.
    fn latency_reference(&self, now: i64) -> Counts {
        let mut seconds = LATENCY_REFERENCE_SECONDS;
        let mut reference = self.reference(now - seconds + 1, now);
        // Blue-green's reference is the fixed history: there is no window to widen.
        while self.setup.mode == Mode::Canary
            && reference.requests < LATENCY_REFERENCE_REQUESTS
            && seconds < self.policy.lookback.whole_seconds()
        {
            seconds = (seconds * 2).min(self.policy.lookback.whole_seconds());
            reference = self.reference(now - seconds + 1, now);
        }
        reference
    }

    /// The candidate's requests per second since the deploy, as a share of the history's.
    fn traffic_share(&self, now: i64) -> f64 {
        let history_rate = self.history.as_ref().map_or(0.0, |h| h.requests_per_second);
        if history_rate <= 0.0 {
            return 1.0;
        }
        let candidate = self.sums.between(self.setup.deploy_at, now).candidate;
        let seconds = (now - self.setup.deploy_at + 1) as f64;
        candidate.requests as f64 / seconds / history_rate
    }

    /// z of the baseline's upper bound: blue-green holds the candidate against one fixed
    /// reference for the whole watch, so its sampling error is a persistent bias (full 99 %
    /// bound); a canary's reference moves with time and its errors average out.
    fn reference_z(&self) -> f64 {
        match self.setup.mode {
            Mode::BlueGreen => stats::Z_99,
            Mode::Canary => 1.0,
        }
    }

    fn decide(&self, now: i64) -> Verdict {
        let policy = &self.policy;
        let since_deploy = self.sums.between(self.setup.deploy_at, now).candidate;
        if since_deploy.requests == 0 {
            return Verdict::Wait {
                why: WaitReason::NoTraffic,
            };
        }
        let from = (now - RECENT_SECONDS + 1).max(self.setup.deploy_at);
        let recent = self.sums.between(from, now).candidate;
        if let Some(finding) = rules::gross::check(
            policy,
            &recent,
            &self.reference(from, now),
            self.reference_z(),
            from,
            now,
        ) {
            return Verdict::Rollback(finding);
        }
        if let Some(finding) = rules::limits::check(policy, &self.sums, self.setup.deploy_at, now) {
            return Verdict::Rollback(finding);
        }
        if now < self.setup.deploy_at + policy.warmup.whole_seconds() {
            return Verdict::Wait {
                why: WaitReason::WarmingUp,
            };
        }
        for chart in self.charts.as_ref().expect("made with the history") {
            if let Some(finding) = chart.finding(policy, &self.setup, &self.sums, now) {
                return Verdict::Rollback(finding);
            }
        }
        let pooled = self.pooled.as_ref().expect("made with the history");
        if let Some(finding) = pooled.finding(policy, now) {
            return Verdict::Rollback(finding);
        }
        if since_deploy.requests < rules::regression::MIN_REQUESTS_TO_KEEP {
            return Verdict::Wait {
                why: WaitReason::LowTraffic,
            };
        }
        Verdict::Keep
    }

    fn judgement(&self, now: i64, verdict: Verdict) -> Judgement {
        let recent = self
            .sums
            .between((now - RECENT_SECONDS + 1).max(self.setup.deploy_at), now);
        let baseline = match self.setup.mode {
            Mode::BlueGreen if now >= self.setup.deploy_at => self
                .history
                .as_ref()
                .map(|h| h.baseline)
                .unwrap_or_default(),
            _ => self.sums.between(now - RECENT_SECONDS + 1, now).baseline,
        };
        let evidence = |metric: Metric| {
            let pooled = match (metric, &self.pooled) {
                (Metric::ErrorRate, Some(pooled)) => pooled.evidence(&self.policy),
                _ => 0.0,
            };
            self.charts.as_ref().map_or(0.0, |charts| {
                charts
                    .iter()
                    .filter(|c| c.metric() == metric)
                    .map(|c| c.evidence(&self.policy))
                    .fold(pooled, f64::max)
            })
        };
        let candidate = if now >= self.setup.deploy_at {
            recent.candidate
        } else {
            Counts::default()
        };
        Judgement {
            verdict,
            snapshot: Snapshot {
                candidate_requests: candidate.requests,
                candidate_error_rate: candidate.error_rate(),
                candidate_p95_ms: p95(&candidate),
                baseline_error_rate: baseline.error_rate(),
                baseline_p95_ms: p95(&baseline),
                error_evidence: evidence(Metric::ErrorRate),
                latency_evidence: evidence(Metric::Latency),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watch of hours at a step a second keeps what its windows reach, not every step.
    #[test]
    fn a_long_watch_keeps_only_the_steps_its_windows_reach() {
        for mode in [Mode::BlueGreen, Mode::Canary] {
            let policy = Policy::default();
            let lookback = policy.lookback.whole_seconds();
            let deploy_at = lookback;
            let mut judge = Judge::new(
                policy,
                Setup {
                    mode,
                    deploy_at,
                    step_seconds: 1,
                },
            );
            let counts = Counts {
                requests: 20,
                errors: 0,
                ..Counts::default()
            };
            for t in 0..deploy_at + 3 * lookback {
                let judgement = judge
                    .observe(Step {
                        t,
                        baseline: counts,
                        candidate: counts,
                    })
                    .unwrap();
                assert!(!judgement.verdict.is_rollback(), "{mode:?} at {t}");
            }
            let reach = judge.reach_back() as usize;
            assert!(
                judge.sums.steps_kept() <= reach + 1,
                "{mode:?} keeps {} steps",
                judge.sums.steps_kept()
            );
            let since_deploy = judge.sums.between(deploy_at, deploy_at + 3 * lookback);
            assert_eq!(since_deploy.candidate.requests, 20 * 3 * lookback as u64);
        }
    }
}
