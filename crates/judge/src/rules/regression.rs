//! The sequential test: is the candidate materially worse than the baseline, persistently?
//!
//! For each test (error rate; the latency tests of [`LatencyTest`]) and each of a few sizes
//! of regression, a CUSUM of log-likelihood ratios runs over the steps since the deploy:
//! "the candidate is worse by this much" against "it is worse only by the tolerance", the
//! tolerance being measured from the baseline's bound (99 % for a fixed history) plus the
//! policy's tolerated increase or ratio. A CUSUM stays valid however often it is looked at and restarts by
//! itself after healthy stretches, so it also finds regressions that begin long after the
//! deploy.
//!
//! Robustness, each by construction rather than tuned to data:
//! - transients: over any `policy.transient`-long window a CUSUM rises by at most
//!   `TRANSIENT_SHARE` of what a rollback needs, so no single episode, nor two back to
//!   back, can trigger one on its own, while sparse evidence (one failed request among
//!   few) keeps its full weight;
//! - warm-up: evidence may build during the warm-up, but a rollback also needs evidence
//!   from after it;
//! - materiality: a rollback on the slow share, whose null is the reference's own share
//!   (see [`Chart::materially_slower`]), also needs the recent p95 to be materially worse;
//! - the environment: when the baseline's rate moves from block to block more than chance
//!   allows (dispersion, measured outside the history's own episodes, on what each test
//!   weighs: the shape tests' on a block's mean log-latency), the evidence is scaled down
//!   by that factor (quasi-likelihood), taken at the candidate's traffic: a shared
//!   factor's excess grows with a block's requests;
//! - the reference's own sampling error: the shape tests hold the candidate against the
//!   reference's shape, so a run's evidence is that of two samples (see [`Chart::observe`]);
//! - low traffic: a run needs `MIN_EVENTS` events, a thin baseline widens its bound, and
//!   the shape tests need `MIN_SHAPE_REQUESTS` of reference.

use std::collections::VecDeque;

use crate::counts::{BUCKET_BOUNDS_MS, BUCKETS, Counts, LatencyHistogram, LatencyShape};
use crate::policy::Policy;
use crate::series::{Sums, Totals};
use crate::stats::{binomial_llr, wilson_bound};
use crate::verdict::{Evidence, Finding, Metric, Rule, Tier};
use crate::{Setup, Step};

/// Regression sizes tried, as multiples of `Chart::unit`: one CUSUM per size, so small and
/// large regressions are each caught at their own best speed.
pub(crate) const ALTERNATIVES: [f64; 7] = [1.5, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
/// A run needs at least this many events (errors, slow requests) to conclude anything.
pub(crate) const MIN_EVENTS: f64 = 3.0;
/// A p95 is only trusted from this many requests.
const MIN_REQUESTS_FOR_P95: u64 = 20;
/// Below this many requests since the deploy the judge says "wait", not "keep".
pub const MIN_REQUESTS_TO_KEEP: u64 = 20;
/// Share of requests above the p95, by definition.
const TAIL_SHARE: f64 = 0.05;
/// The quantile the policy's latency ratios are about.
const TAIL_QUANTILE: f64 = 1.0 - TAIL_SHARE;
/// The shape tests need a reference of at least this many requests: fewer hold no more
/// than two or three beyond the p95, and a tail guessed from them is no null hypothesis.
const MIN_SHAPE_REQUESTS: u64 = 50;
/// Most of the evidence a rollback needs that one transient-long window may add.
pub(crate) const TRANSIENT_SHARE: f64 = 0.45;
/// Evidence a rollback needs from after the warm-up, as a share of what a rollback needs.
const CONFIRM_SHARE: f64 = 0.3;
/// A latency rollback also needs the candidate's p95 over this many seconds to be
/// materially worse than the baseline's (see [`Chart::materially_slower`]).
pub(crate) const MATERIAL_SECONDS: i64 = 30;
/// z of the p95's lower bound in the materiality check: a point estimate of a p95 at
/// ×1.2 reads ×1.25 often enough, over a ramp's many seconds, to roll back early.
const MATERIAL_Z: f64 = crate::stats::Z_95;

/// Caps how far a statistic rises over any `transient`-long window: it may stand no
/// higher than its lowest in the window plus the budget. Steps against the regression
/// lower that floor again, so noise does not use the budget up.
#[derive(Clone, Default)]
pub(crate) struct TransientBudget {
    /// The statistic after each step of the last `transient` seconds and the one standing
    /// before them (seconds without traffic may have no step).
    recent: VecDeque<(i64, f64)>,
}

impl TransientBudget {
    /// The part of `rise` a statistic standing at `statistic` may take at `t`.
    pub(crate) fn allowed(
        &mut self,
        t: i64,
        transient: i64,
        statistic: f64,
        budget: f64,
        rise: f64,
    ) -> f64 {
        if self.recent.is_empty() {
            self.recent.push_back((t - 1, statistic));
        }
        while self
            .recent
            .get(1)
            .is_some_and(|&(at, _)| at <= t - transient)
        {
            self.recent.pop_front();
        }
        let floor = self
            .recent
            .iter()
            .map(|&(_, statistic)| statistic)
            .fold(statistic, f64::min);
        rise.min(floor + budget - statistic)
    }

    /// Records the statistic after the step at `t`.
    pub(crate) fn record(&mut self, t: i64, statistic: f64) {
        self.recent.push_back((t, statistic));
    }
}

/// Whether all of the step ending at `t` comes after the warm-up (steps may be 60 s long).
pub(crate) fn after_warmup(policy: &Policy, setup: &Setup, t: i64) -> bool {
    let first_second = t - i64::from(setup.step_seconds.max(1)) + 1;
    first_second >= setup.deploy_at + policy.warmup.whole_seconds()
}

#[derive(Clone, Default)]
struct Run {
    /// The CUSUM statistic in nats.
    statistic: f64,
    /// When the current run (since the statistic was last at zero) started.
    start: Option<i64>,
    events: f64,
    trials: f64,
    /// The baseline's requests during the run (a canary's reference moves on with them).
    baseline_trials: f64,
    /// Evidence of this run from steps after the warm-up (not limited by the transient
    /// budget: it only has to show the regression outlived the warm-up).
    after_warmup: f64,
    /// The transient budget's window.
    window: TransientBudget,
    /// The run's evidence before any discount for a fixed reference's sampling error.
    undiscounted: f64,
}

/// Log-likelihood ratio over latency buckets: `counts` observed, `alternative` and `null`
/// shares.
fn multinomial_llr(
    counts: &[u64; BUCKETS],
    alternative: &[f64; BUCKETS],
    null: &[f64; BUCKETS],
) -> f64 {
    (0..BUCKETS)
        .filter(|&i| counts[i] > 0)
        .map(|i| counts[i] as f64 * (alternative[i] / null[i]).ln())
        .sum()
}

/// The reference a step was tested against.
#[derive(Clone, Copy, Default)]
struct Reference {
    tolerated: f64,
    baseline_rate: f64,
    latency_threshold_ms: Option<f64>,
    /// The baseline's requests behind it.
    requests: f64,
}

impl Reference {
    /// The baseline's p95 the latency threshold was set from.
    fn baseline_p95_ms(&self, policy: &Policy) -> Option<f64> {
        self.latency_threshold_ms
            .map(|threshold| threshold / policy.p95_ratio_tolerated)
    }
}

/// What a chart tests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Error rate against the baseline's plus the tolerated increase.
    ErrorRate,
    Latency(LatencyTest),
}

/// The latency tests, each against the baseline's distribution within the tolerated ratio.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LatencyTest {
    /// Share of requests slower than the baseline's p95 times the tolerated ratio, against
    /// the baseline's own share there (at its upper bound, and at least 5 %); a rollback
    /// also needs a materially slower recent p95 (see [`Chart::materially_slower`]).
    SlowShare,
    /// The whole distribution against the baseline's scaled by the tolerated ratio
    /// (multinomial over buckets): uses every request, not just the slow ones.
    Shift,
    /// A slow path: some requests many times slower, the rest unchanged (multinomial over
    /// buckets against the same shape at the tolerated p95 ratio). A tail barely moves the
    /// share just above the p95, but fills buckets the baseline hardly reaches.
    Tail,
}

/// One test's bank of CUSUMs.
pub struct Chart {
    kind: Kind,
    /// How much more than chance the environment moved the history's count from one
    /// 10 s block to the next (at the history's traffic).
    dispersion: f64,
    /// The same at the candidate's traffic, as of the last step (see [`Chart::observe`]).
    candidate_dispersion: f64,
    /// Latency in blue-green mode: the threshold fixed from the replaced release's history.
    fixed_latency_threshold: Option<f64>,
    /// z of the baseline's upper bound added to the tolerated rate.
    reference_z: f64,
    runs: [Run; ALTERNATIVES.len()],
    last_reference: Reference,
    /// A shape test's model and the reference histogram it was built from: kept while the
    /// reference stays the same (a blue-green history never changes), for building it is
    /// most of the judge's work.
    shape_model: Option<(LatencyHistogram, ShapeModel)>,
}

impl Chart {
    pub fn errors(reference_z: f64, dispersion: f64) -> Self {
        Self::new(Kind::ErrorRate, reference_z, dispersion, None)
    }

    /// A latency chart; `fixed_threshold` is the slow threshold in blue-green mode, where
    /// the reference never changes.
    pub fn latency(
        test: LatencyTest,
        reference_z: f64,
        dispersion: f64,
        fixed_threshold: Option<f64>,
    ) -> Self {
        Self::new(
            Kind::Latency(test),
            reference_z,
            dispersion,
            fixed_threshold,
        )
    }

    pub fn is_latency(&self) -> bool {
        matches!(self.kind, Kind::Latency(_))
    }

    pub fn metric(&self) -> Metric {
        match self.kind {
            Kind::ErrorRate => Metric::ErrorRate,
            Kind::Latency(_) => Metric::Latency,
        }
    }

    fn new(
        kind: Kind,
        reference_z: f64,
        dispersion: f64,
        fixed_latency_threshold: Option<f64>,
    ) -> Self {
        Self {
            kind,
            dispersion,
            candidate_dispersion: dispersion,
            fixed_latency_threshold,
            reference_z,
            runs: Default::default(),
            last_reference: Reference::default(),
            shape_model: None,
        }
    }

    /// The candidate's events in this step, the log-likelihood ratio of each alternative
    /// against the null, and the reference they were computed from.
    fn test(
        &mut self,
        policy: &Policy,
        candidate: &Counts,
        reference: &Counts,
    ) -> Option<(f64, [f64; ALTERNATIVES.len()], Reference)> {
        if reference.requests == 0 {
            return None;
        }
        let total = reference.requests as f64;
        let trials = candidate.requests as f64;
        // Binomial alternatives: the tolerated rate plus `unit` times each size.
        let binomial = |events: f64, tolerated: f64, unit: f64| {
            ALTERNATIVES.map(|size| {
                // At or beyond 100 % an alternative cannot be told from the tolerated rate:
                // when the baseline itself fails nearly everything there is nothing to test.
                let p1 = tolerated + unit * size;
                if p1 >= 1.0 || p1 <= tolerated {
                    0.0
                } else {
                    binomial_llr(events, trials, p1, tolerated)
                }
            })
        };
        match self.kind {
            Kind::ErrorRate => {
                let errors = reference.errors as f64;
                let tolerated = wilson_bound(errors, total, self.reference_z)
                    + policy.error_rate_increase_tolerated.0;
                let unit = policy.error_rate_increase.0 - policy.error_rate_increase_tolerated.0;
                let events = candidate.errors as f64;
                let reference = Reference {
                    tolerated,
                    baseline_rate: errors / total,
                    latency_threshold_ms: None,
                    requests: total,
                };
                Some((events, binomial(events, tolerated, unit), reference))
            }
            Kind::Latency(test) => {
                let threshold = self
                    .fixed_latency_threshold
                    .or_else(|| latency_threshold(policy, reference))?;
                let slow = reference.latency.count_above(threshold);
                let tolerated = wilson_bound(slow, total, self.reference_z).max(TAIL_SHARE);
                let events = candidate.latency.count_above(threshold);
                let summary = Reference {
                    tolerated,
                    baseline_rate: slow / total,
                    latency_threshold_ms: Some(threshold),
                    requests: total,
                };
                let llrs = match test {
                    // The share above the threshold is 5 % at the tolerated ratio and a few
                    // points more at the bad one: steps of 2 points.
                    LatencyTest::SlowShare => binomial(events, tolerated, 0.02),
                    _ if reference.requests < MIN_SHAPE_REQUESTS => [0.0; ALTERNATIVES.len()],
                    _ => {
                        let counts = candidate.latency.per_bucket();
                        self.shape_model(policy, test, &reference.latency)
                            .map(|shares| {
                                shares.map_or(0.0, |(alternative, null)| {
                                    multinomial_llr(&counts, &alternative, &null)
                                })
                            })
                    }
                };
                Some((events, llrs, summary))
            }
        }
    }

    /// The shape test's model of `reference`, built afresh only when it changed.
    fn shape_model(
        &mut self,
        policy: &Policy,
        test: LatencyTest,
        reference: &LatencyHistogram,
    ) -> ShapeModel {
        match self.shape_model {
            Some((built_from, model)) if built_from == *reference => model,
            _ => {
                let model = match test {
                    LatencyTest::Shift => shift_model(policy, reference),
                    LatencyTest::Tail => tail_model(policy, reference),
                    LatencyTest::SlowShare => [None; ALTERNATIVES.len()],
                };
                self.shape_model = Some((*reference, model));
                model
            }
        }
    }

    /// Takes one step. `traffic_share` is the candidate's traffic as a share of the
    /// history's: a shared factor adds variance in proportion to the square of a block's
    /// requests, binomial noise in proportion to them, so the dispersion beyond 1 scales
    /// with traffic (a 5 % canary sees a twentieth of the history's excess).
    pub fn observe(
        &mut self,
        policy: &Policy,
        setup: &Setup,
        step: &Step,
        reference: &Counts,
        traffic_share: f64,
    ) {
        let Some((events, llrs, reference)) = self.test(policy, &step.candidate, reference) else {
            return;
        };
        self.last_reference = reference;
        self.candidate_dispersion = 1.0 + traffic_share * (self.dispersion - 1.0);
        let trials = step.candidate.requests as f64;
        let budget = TRANSIENT_SHARE * policy.evidence_nats;
        let transient = policy.transient.whole_seconds();
        let past_warmup = after_warmup(policy, setup, step.t);
        // A shape test takes the reference's shape as exact, but its sampling error does not
        // average out over a run: against blue-green's fixed history it is the same bias at
        // every step, and a canary's reference window (1000 requests or more) moves on only
        // as fast as the run does. The variance of a two-sample comparison is the
        // candidate's times (1 + candidate requests / reference requests), so a run's
        // evidence is its sum divided by that factor, the reference counting what the run
        // was held against: the window before it and the baseline's requests during it (none
        // in blue-green). A run as long as a 90-request history counts half (runs over 13
        // minutes at 0.3 req/s rolled good releases back); an even canary's long run, half.
        // The error rate and slow share already hold the candidate against the reference's
        // upper bound.
        let shape_test = matches!(
            self.kind,
            Kind::Latency(LatencyTest::Shift | LatencyTest::Tail)
        );
        let baseline_trials = step.baseline.requests as f64;
        let discount = |trials: f64, baseline_trials: f64| {
            if shape_test {
                1.0 + trials / (reference.requests + baseline_trials).max(1.0)
            } else {
                1.0
            }
        };
        for (run, llr) in self.runs.iter_mut().zip(llrs) {
            let llr = llr / self.candidate_dispersion;
            let undiscounted = run.undiscounted + llr;
            let llr = undiscounted
                / discount(run.trials + trials, run.baseline_trials + baseline_trials)
                - run.undiscounted / discount(run.trials, run.baseline_trials);
            run.statistic += run
                .window
                .allowed(step.t, transient, run.statistic, budget, llr);
            if run.statistic <= 0.0 {
                run.statistic = 0.0;
                run.start = None;
                run.events = 0.0;
                run.trials = 0.0;
                run.baseline_trials = 0.0;
                run.after_warmup = 0.0;
                run.undiscounted = 0.0;
            } else {
                run.undiscounted = undiscounted;
                if past_warmup {
                    run.after_warmup += llr;
                }
                run.start.get_or_insert(step.t);
                run.events += events;
                run.trials += trials;
                run.baseline_trials += baseline_trials;
            }
            run.window.record(step.t, run.statistic);
        }
    }

    fn strongest(&self) -> &Run {
        self.runs
            .iter()
            .max_by(|a, b| a.statistic.total_cmp(&b.statistic))
            .expect("alternatives are not empty")
    }

    /// When each CUSUM run under way started: its window is asked for at a finding.
    pub fn run_starts(&self) -> impl Iterator<Item = i64> + '_ {
        self.runs.iter().filter_map(|run| run.start)
    }

    /// Evidence against the candidate as a share of what a rollback needs.
    pub fn evidence(&self, policy: &Policy) -> f64 {
        self.strongest().statistic / policy.evidence_nats
    }

    /// A finding when some CUSUM has crossed the threshold with evidence from after the
    /// warm-up and enough events behind it (and, for latency, a materially slower p95).
    pub fn finding(
        &self,
        policy: &Policy,
        setup: &Setup,
        sums: &Sums,
        now: i64,
    ) -> Option<Finding> {
        let confirm = CONFIRM_SHARE * policy.evidence_nats;
        let run = self
            .runs
            .iter()
            .filter(|r| {
                r.statistic >= policy.evidence_nats
                    && r.after_warmup >= confirm
                    && r.events >= MIN_EVENTS
            })
            .max_by(|a, b| a.statistic.total_cmp(&b.statistic))?;
        if self.kind == Kind::Latency(LatencyTest::SlowShare)
            && !self.materially_slower(policy, setup, sums, now)
        {
            return None;
        }
        let start = run.start.unwrap_or(now);
        let window = sums.between(start, now);
        Some(self.describe(policy, run, start, now, &window))
    }

    /// Whether the slow share's regression is material now: the candidate's p95 over the
    /// last `MATERIAL_SECONDS` after the warm-up, at its lower bound, is at least the
    /// policy's bad ratio times the baseline's. The slow share's null is the reference's
    /// own share above the threshold, not the tolerated ratio's (a count inside a coarse
    /// bucket is read by interpolation, which moves with a shift more than the true share
    /// does: x1.05 read as x1.15 when the p95 sat in the (25, 50] ms bucket), so its
    /// CUSUMs prove "slower than the baseline", and this check makes it "materially
    /// slower". The shape tests model the tolerated ratio through the buckets and need no
    /// such check. Unknown p95s (too few requests) leave the decision to the CUSUMs.
    fn materially_slower(&self, policy: &Policy, setup: &Setup, sums: &Sums, now: i64) -> bool {
        let Some(baseline_p95) = self.last_reference.baseline_p95_ms(policy) else {
            return true;
        };
        // Not reaching back into the warm-up, whose slowness is no fault.
        let from =
            (now - MATERIAL_SECONDS + 1).max(setup.deploy_at + policy.warmup.whole_seconds());
        let recent = sums.between(from, now).candidate;
        if recent.requests < MIN_REQUESTS_FOR_P95 {
            return true;
        }
        // The ratio's lower bound: the candidate's quantile `MATERIAL_Z` standard errors
        // below 95 %, the error counting the baseline p95's own (a canary's reference is
        // thin) and widened by the dispersion, for the environment moves a 30 s p95 too.
        let sample = 1.0 / recent.requests as f64 + 1.0 / self.last_reference.requests;
        let variance = self.candidate_dispersion * TAIL_QUANTILE * TAIL_SHARE * sample;
        let rank = TAIL_QUANTILE - MATERIAL_Z * variance.sqrt();
        recent
            .latency
            .quantile_ms(rank)
            .is_none_or(|lower| lower >= policy.p95_ratio * baseline_p95)
    }

    fn describe(
        &self,
        policy: &Policy,
        run: &Run,
        start: i64,
        now: i64,
        window: &Totals,
    ) -> Finding {
        let reference = self.last_reference;
        // A canary's baseline over the run's own seconds (its last step's reference may be a
        // second long); blue-green's baseline is the history the run was held against.
        let requests = window.baseline.requests as f64;
        let baseline_rate = match (self.kind, reference.latency_threshold_ms) {
            _ if requests == 0.0 => reference.baseline_rate,
            (Kind::ErrorRate, _) => window.baseline.errors as f64 / requests,
            (Kind::Latency(_), Some(ms)) => window.baseline.latency.count_above(ms) / requests,
            (Kind::Latency(_), None) => reference.baseline_rate,
        };
        let candidate_rate = run.events / run.trials.max(1.0);
        let excess = candidate_rate - baseline_rate;
        let candidate_p95 = p95(&window.candidate);
        let baseline_p95 = reference.baseline_p95_ms(policy);
        let (tier, reason) = match self.kind {
            Kind::ErrorRate => (
                if excess >= 5.0 * policy.error_rate_increase.0 {
                    Tier::Rapid
                } else {
                    Tier::Evaluate
                },
                format!(
                    "error rate {} against the baseline's {} (+{:.2} points) over the last {}s",
                    show_rate(candidate_rate),
                    show_rate(baseline_rate),
                    100.0 * excess,
                    now - start + 1
                ),
            ),
            Kind::Latency(_) => {
                let doubled =
                    matches!((candidate_p95, baseline_p95), (Some(c), Some(b)) if c >= 2.0 * b);
                (
                    if doubled { Tier::Rapid } else { Tier::Evaluate },
                    format!(
                        "{} of requests slower than {:.0} ms against the baseline's {} (p95 {} against {}) over the last {}s",
                        show_rate(candidate_rate),
                        reference.latency_threshold_ms.unwrap_or_default(),
                        show_rate(baseline_rate),
                        show_ms(candidate_p95),
                        show_ms(baseline_p95),
                        now - start + 1
                    ),
                )
            }
        };
        Finding {
            rule: Rule::Regression,
            metric: self.metric(),
            tier,
            reason,
            evidence: Evidence {
                window_start: start,
                window_end: now,
                candidate_requests: run.trials,
                candidate_events: run.events,
                candidate_rate,
                baseline_rate,
                tolerated_rate: reference.tolerated,
                latency_threshold_ms: reference.latency_threshold_ms,
                candidate_p95_ms: candidate_p95,
                baseline_p95_ms: baseline_p95,
                statistic: match self.kind {
                    Kind::ErrorRate => "error_rate_cusum_nats",
                    Kind::Latency(LatencyTest::SlowShare) => "slow_share_cusum_nats",
                    Kind::Latency(LatencyTest::Shift) => "latency_shift_cusum_nats",
                    Kind::Latency(LatencyTest::Tail) => "latency_tail_cusum_nats",
                }
                .into(),
                value: run.statistic,
                threshold: policy.evidence_nats,
            },
        }
    }
}

/// Requests slower than this count against the candidate: the baseline's p95 times the
/// tolerated ratio. "The candidate's p95 is within tolerance" is exactly "at most 5 % of its
/// requests are slower than this", so that is the null hypothesis the CUSUMs test; a worse
/// p95 pushes the share above 5 %. (A threshold nearer the bad ratio was tried: with coarse
/// buckets the share there barely moves, and regressions went unseen.)
pub fn latency_threshold(policy: &Policy, baseline: &Counts) -> Option<f64> {
    p95(baseline).map(|p95| p95 * policy.p95_ratio_tolerated)
}

pub fn p95(counts: &Counts) -> Option<f64> {
    if counts.requests < MIN_REQUESTS_FOR_P95 {
        return None;
    }
    counts.latency.quantile_ms(0.95)
}

pub fn show_ms(ms: Option<f64>) -> String {
    ms.map_or_else(|| "unknown".to_string(), |ms| format!("{ms:.0} ms"))
}

pub fn show_rate(rate: f64) -> String {
    format!("{:.2}%", 100.0 * rate)
}

/// Ratios of the alternatives in the shift test, as multiples of the policy's bad ratio.
const SHIFT_SIZES: [f64; ALTERNATIVES.len()] = [1.0, 1.2, 1.6, 2.4, 4.0, 8.0, 16.0];

/// What a shape test holds the candidate's latency buckets against: for each alternative,
/// the bucket shares under it and under the null, or nothing where it says nothing (its
/// log-likelihood ratio is 0).
type ShapeModel = [Option<([f64; BUCKETS], [f64; BUCKETS])>; ALTERNATIVES.len()];

/// The shift test: "the baseline's distribution scaled by each alternative ratio" against
/// "scaled by the tolerated ratio".
fn shift_model(policy: &Policy, reference: &LatencyHistogram) -> ShapeModel {
    let shape = reference.shape();
    let null = scaled_bucket_shares(&shape, policy.p95_ratio_tolerated);
    SHIFT_SIZES.map(|size| Some((scaled_bucket_shares(&shape, policy.p95_ratio * size), null)))
}

/// Shares of requests per bucket if every latency of `histogram` were `ratio` times
/// longer, smoothed with half a request per bucket so an empty bucket is unlikely, not
/// impossible.
fn scaled_bucket_shares(shape: &LatencyShape, ratio: f64) -> [f64; BUCKETS] {
    let total = shape.requests() as f64;
    let mut shares = [0.0; BUCKETS];
    let mut below = 0.0;
    for (i, share) in shares.iter_mut().enumerate() {
        let at_or_below = BUCKET_BOUNDS_MS.get(i).map_or(total, |&bound| {
            shape.share_at_or_below(bound / ratio) * total
        });
        *share = (at_or_below - below + 0.5) / (total + 0.5 * BUCKETS as f64);
        below = at_or_below;
    }
    shares
}

/// Slow paths tried by the tail test: (how many times slower the slow requests are, the
/// p95 ratio the slow share gives, as a multiple of the policy's bad ratio).
const TAIL_ALTERNATIVES: [(f64, f64); ALTERNATIVES.len()] = [
    (4.0, 1.0),
    (4.0, 1.5),
    (8.0, 1.0),
    (8.0, 2.0),
    (16.0, 1.0),
    (16.0, 2.0),
    (16.0, 4.0),
];

/// The tail test: "a share of requests `factor` times slower, enough for the
/// alternative's p95 ratio" against "the same slow path, only enough for the tolerated
/// ratio". Both keep the baseline's shape for the rest, so only the tail speaks.
fn tail_model(policy: &Policy, reference: &LatencyHistogram) -> ShapeModel {
    let Some(p95) = reference.quantile_ms(TAIL_QUANTILE) else {
        return [None; ALTERNATIVES.len()];
    };
    let shape = reference.shape();
    let unchanged = scaled_bucket_shares(&shape, 1.0);
    let at = |ms: f64| shape.share_at_or_below(ms);
    TAIL_ALTERNATIVES.map(|(factor, size)| {
        let slowed = scaled_bucket_shares(&shape, factor);
        let slow_share = |ratio: f64| {
            let (target, unslowed) = (at(p95 * ratio), at(p95 * ratio / factor));
            if target <= unslowed {
                return 1.0;
            }
            ((target - TAIL_QUANTILE) / (target - unslowed)).clamp(0.0, 1.0)
        };
        let (null, alternative) = (
            slow_share(policy.p95_ratio_tolerated),
            slow_share(policy.p95_ratio * size),
        );
        if alternative <= null {
            return None;
        }
        let mix = |share: f64| -> [f64; BUCKETS] {
            std::array::from_fn(|i| (1.0 - share) * unchanged[i] + share * slowed[i])
        };
        Some((mix(alternative), mix(null)))
    })
}
