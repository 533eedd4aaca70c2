//! Evidence pooled since the warm-up: for low traffic, where a minute holds a handful of
//! requests and the regression CUSUMs, held against the baseline's 99 % bound, stay silent
//! however long the evidence piles up (27 failures in 256 requests against none in 114).
//!
//! A Bayes factor "the candidate fails more by one of the bad sizes" against "by at most
//! the tolerated increase", the baseline's unknown rate integrated out rather than taken at
//! its worst: its posterior from its own requests (the history in blue-green, the same
//! seconds in a canary) weighs every rate it could have. A Bayes factor is a test
//! martingale under the null, so by Ville's inequality it crosses e^c with probability at
//! most e^-c however often it is looked at: no restart, no look penalty, evidence kept
//! over minutes. The integral is a sum over a grid (no crate offers
//! a shifted beta-binomial marginal; it is a few lines).
//!
//! Robustness, as for the CUSUMs: the statistic may rise by at most `TRANSIENT_SHARE` of
//! what its rollback needs over any `transient`-long window (an episode's burst of failures
//! is forgiven, a steady rate is not); steps count from the end of the warm-up; a rollback
//! needs `MIN_EVENTS` failures; the environment's dispersion tempers blue-green's history
//! and the candidate's steps, as quasi-likelihood does.

use crate::counts::Counts;
use crate::policy::Policy;
use crate::rules::regression::{
    ALTERNATIVES, MIN_EVENTS, TRANSIENT_SHARE, TransientBudget, show_rate,
};
use crate::stats::wilson_bound;
use crate::verdict::{Evidence, Finding, Metric, Rule, Tier};

/// Share of the policy's evidence a pooled rollback needs. A Bayes factor crosses e^c
/// with probability at most e^-c under "within tolerance" however often it is looked at
/// and however long it runs (and the capped statistic never exceeds it); a bank of
/// CUSUMs that restart gets no such bound and needs the whole bar. e^-5 is the bound at
/// the tolerance's edge; a good release fails at the baseline's rate, well inside it, and
/// crosses far less often (generated releases failing 2 to 15 % against a clean baseline
/// at 0.3 to 1 req/s: 41 of 66 caught at 70 %, 47 at 50 %; good releases: none of 961
/// rolled back either way). The transient budget is a share of this bar, so two episodes
/// back to back still add up to less than it.
const POOLED_BAR_SHARE: f64 = 0.5;
/// Points of the grid the baseline's rate is integrated over (in log-odds).
const GRID_POINTS: usize = 192;
/// The Bayes factor is computed at most this often: evidence pooled over minutes moves
/// little in a second, and a decision it makes comes at most this much later, for a tenth
/// of the cost of a grid per second.
const EVALUATE_EVERY_SECONDS: i64 = 10;
/// z of the bounds the grid spans around each side's rate: far beyond any mass.
const GRID_Z: f64 = 8.0;

/// The pooled error-rate test of one candidate.
pub struct PooledErrors {
    /// The baseline's requests the candidate is held against, tempered by the
    /// environment's dispersion, in blue-green (fixed); in a canary the baseline's own
    /// requests since the warm-up accumulate here.
    baseline: (f64, f64),
    candidate: (f64, f64),
    /// The environment's dispersion, which tempers the candidate's likelihood at its share
    /// of the traffic (quasi-likelihood, see the regression rule).
    candidate_dispersion: f64,
    fixed_baseline: bool,
    /// The log Bayes factor at the last step, untempered by the budget.
    raw: f64,
    /// The statistic: the log Bayes factor's rises, each within the transient budget.
    statistic: f64,
    /// The transient budget's window.
    window: TransientBudget,
    since: Option<i64>,
    /// When the Bayes factor was last computed.
    evaluated: Option<i64>,
}

impl PooledErrors {
    /// `history` is the baseline's steady errors before the deploy (blue-green), with the
    /// environment's `dispersion` measured on it, or `None` for a canary, whose baseline is
    /// taken from the same seconds as the candidate (and shares its environment: 1).
    pub fn new(history: Option<&Counts>, dispersion: f64) -> Self {
        let dispersion = dispersion.max(1.0);
        Self {
            baseline: history.map_or((0.0, 0.0), |h| {
                (h.errors as f64 / dispersion, h.requests as f64 / dispersion)
            }),
            candidate: (0.0, 0.0),
            candidate_dispersion: dispersion,
            fixed_baseline: history.is_some(),
            raw: 0.0,
            statistic: 0.0,
            window: TransientBudget::default(),
            since: None,
            evaluated: None,
        }
    }

    /// Takes a step wholly after the warm-up. `traffic_share` is the candidate's traffic
    /// as a share of the history's: the environment's excess variance scales with it.
    pub fn observe(
        &mut self,
        policy: &Policy,
        t: i64,
        baseline: &Counts,
        candidate: &Counts,
        traffic_share: f64,
    ) {
        self.since.get_or_insert(t);
        if !self.fixed_baseline {
            self.baseline.0 += baseline.errors as f64;
            self.baseline.1 += baseline.requests as f64;
        }
        self.candidate.0 += candidate.errors as f64;
        self.candidate.1 += candidate.requests as f64;
        let due = self
            .evaluated
            .is_none_or(|at| t - at >= EVALUATE_EVERY_SECONDS);
        if !due {
            return;
        }
        self.evaluated = Some(t);
        let dispersion = 1.0 + traffic_share.min(1.0) * (self.candidate_dispersion - 1.0);
        let raw = log_bayes_factor(policy, self.baseline, self.candidate, dispersion);
        self.statistic += self.window.allowed(
            t,
            policy.transient.whole_seconds(),
            self.statistic,
            TRANSIENT_SHARE * bar(policy),
            raw - self.raw,
        );
        self.raw = raw;
        self.window.record(t, self.statistic);
    }

    /// Evidence against the candidate as a share of what a rollback needs.
    pub fn evidence(&self, policy: &Policy) -> f64 {
        self.statistic.max(0.0) / bar(policy)
    }

    pub fn finding(&self, policy: &Policy, now: i64) -> Option<Finding> {
        let (errors, requests) = self.candidate;
        if self.statistic < bar(policy) || errors < MIN_EVENTS {
            return None;
        }
        let start = self.since.unwrap_or(now);
        let candidate_rate = errors / requests.max(1.0);
        let baseline_rate = self.baseline.0 / self.baseline.1.max(1.0);
        let excess = candidate_rate - baseline_rate;
        Some(Finding {
            rule: Rule::Regression,
            metric: Metric::ErrorRate,
            tier: Tier::Evaluate,
            reason: format!(
                "error rate {} ({errors:.0} of {requests:.0} requests) against the baseline's {} (+{:.2} points) since the warm-up ended {}s ago",
                show_rate(candidate_rate),
                show_rate(baseline_rate),
                100.0 * excess,
                now - start + 1
            ),
            evidence: Evidence {
                window_start: start,
                window_end: now,
                candidate_requests: requests,
                candidate_events: errors,
                candidate_rate,
                baseline_rate,
                tolerated_rate: baseline_rate + policy.error_rate_increase_tolerated.0,
                latency_threshold_ms: None,
                candidate_p95_ms: None,
                baseline_p95_ms: None,
                statistic: "error_rate_pooled_bayes_factor_nats".into(),
                value: self.statistic,
                threshold: bar(policy),
            },
        })
    }
}

/// The statistic a pooled rollback needs.
fn bar(policy: &Policy) -> f64 {
    POOLED_BAR_SHARE * policy.evidence_nats
}

/// ln of the Bayes factor "the candidate's rate is the baseline's plus one of the bad
/// sizes (equal weights)" against "plus the tolerated increase", the baseline's rate under
/// Jeffreys' prior and its own (events, trials); the candidate's log-likelihood divided by
/// `dispersion`.
fn log_bayes_factor(
    policy: &Policy,
    (base_events, base_trials): (f64, f64),
    (events, trials): (f64, f64),
    dispersion: f64,
) -> f64 {
    let tolerated = policy.error_rate_increase_tolerated.0;
    let unit = policy.error_rate_increase.0 - tolerated;
    let shifts = ALTERNATIVES.map(|size| tolerated + unit * size);
    let largest = shifts[shifts.len() - 1];
    // The grid spans every baseline rate with weight under either hypothesis: around the
    // baseline's own rate and below the candidate's by each shift.
    let lo = wilson_bound(base_events, base_trials, -GRID_Z)
        .min(wilson_bound(events, trials, -GRID_Z) - largest)
        .max(1e-9);
    let hi = wilson_bound(base_events, base_trials, GRID_Z)
        .max(wilson_bound(events, trials, GRID_Z) - tolerated)
        .clamp(lo * 1.001, 1.0 - tolerated - 1e-9);
    let (x_lo, x_hi) = (logit(lo), logit(hi));
    let step = (x_hi - x_lo) / GRID_POINTS as f64;
    let log_likelihood = |p: f64, e: f64, n: f64| {
        if p >= 1.0 {
            return f64::NEG_INFINITY;
        }
        e * p.ln() + (n - e) * (1.0 - p).ln()
    };
    let mut null = LogSum::default();
    let mut alternatives = [LogSum::default(); ALTERNATIVES.len()];
    for i in 0..GRID_POINTS {
        let p = logistic(x_lo + (i as f64 + 0.5) * step);
        // Jeffreys' density in log-odds (sqrt(p (1 - p)) up to a constant) times the
        // baseline's likelihood.
        let weight = 0.5 * (p * (1.0 - p)).ln() + log_likelihood(p, base_events, base_trials);
        null.add(weight + log_likelihood(p + tolerated, events, trials) / dispersion);
        for (sum, shift) in alternatives.iter_mut().zip(shifts) {
            sum.add(weight + log_likelihood(p + shift, events, trials) / dispersion);
        }
    }
    let mut mixture = LogSum::default();
    for sum in alternatives {
        mixture.add(sum.value());
    }
    mixture.value() - (ALTERNATIVES.len() as f64).ln() - null.value()
}

/// A sum of exponentials kept in log space (no overflow for likelihoods of many requests).
#[derive(Clone, Copy)]
struct LogSum {
    max: f64,
    scaled: f64,
}

impl Default for LogSum {
    fn default() -> Self {
        Self {
            max: f64::NEG_INFINITY,
            scaled: 0.0,
        }
    }
}

impl LogSum {
    fn add(&mut self, x: f64) {
        if x == f64::NEG_INFINITY || x.is_nan() {
            return;
        }
        if x > self.max {
            self.scaled = self.scaled * (self.max - x).exp() + 1.0;
            self.max = x;
        } else {
            self.scaled += (x - self.max).exp();
        }
    }

    fn value(&self) -> f64 {
        self.max + self.scaled.ln()
    }
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf(base: (f64, f64), candidate: (f64, f64)) -> f64 {
        log_bayes_factor(&Policy::default(), base, candidate, 1.0)
    }

    #[test]
    fn the_issues_example_is_strong_evidence_and_equal_rates_are_none() {
        // 27 failures in 256 requests against none in 114.
        let strong = bf((0.0, 114.0), (27.0, 256.0));
        assert!(strong > 5.0, "{strong}");
        // The same rate on both sides favours the null, at any traffic.
        for (e, n) in [(0.0, 100.0), (3.0, 300.0), (300.0, 30_000.0)] {
            let same = bf((e, n), (e, n));
            assert!(same < 0.0, "{e}/{n}: {same}");
        }
        // A handful of failures among a handful of requests is no proof.
        assert!(bf((0.0, 100.0), (2.0, 6.0)) < 5.0);
    }
}
