//! Small statistics on proportions: confidence bounds, log-likelihood ratios, dispersion.
//! Written by hand where each is a few lines of closed-form arithmetic; the normal
//! distribution comes from statrs' error functions.

use std::f64::consts::SQRT_2;

use statrs::function::erf::{erfc, erfc_inv};
use statrs::function::gamma::gamma_lr;

use crate::counts::Counts;

/// z for a one-sided 99 % bound.
pub const Z_99: f64 = 2.326;
/// z for a one-sided 95 % bound.
pub const Z_95: f64 = 1.645;

/// Wilson score interval bound for `events` out of `trials` (fractional counts allowed).
/// `z > 0` gives the upper bound, `z < 0` the lower one. With no trials the bound is the
/// widest possible.
pub fn wilson_bound(events: f64, trials: f64, z: f64) -> f64 {
    if trials <= 0.0 {
        return if z >= 0.0 { 1.0 } else { 0.0 };
    }
    let p = (events / trials).clamp(0.0, 1.0);
    let z2 = z * z;
    let centre = p + z2 / (2.0 * trials);
    let spread = z.abs() * (p * (1.0 - p) / trials + z2 / (4.0 * trials * trials)).sqrt();
    let bound = if z >= 0.0 {
        centre + spread
    } else {
        centre - spread
    };
    (bound / (1.0 + z2 / trials)).clamp(0.0, 1.0)
}

/// Log-likelihood ratio of `events` in `trials` under rate `p1` against rate `p0`.
pub fn binomial_llr(events: f64, trials: f64, p1: f64, p0: f64) -> f64 {
    let (p1, p0) = (clamp_rate(p1), clamp_rate(p0));
    events * (p1 / p0).ln() + (trials - events) * ((1.0 - p1) / (1.0 - p0)).ln()
}

fn clamp_rate(p: f64) -> f64 {
    p.clamp(1e-9, 1.0 - 1e-9)
}

/// The standard normal distribution function.
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / SQRT_2)
}

/// The standard normal quantile (inverse of [`normal_cdf`]); `p` must lie strictly
/// between 0 and 1.
pub fn normal_quantile(p: f64) -> f64 {
    -SQRT_2 * erfc_inv(2.0 * p)
}

/// z beyond which two error rates are taken to differ (rates compared on every step, so
/// only a clear difference counts).
const DIFFERENT_Z: f64 = 3.5;

/// Whether two samples' error rates are the same as far as their counts can tell
/// (two-proportion z-test with the pooled rate).
pub fn same_rate(a: &Counts, b: &Counts) -> bool {
    let (na, nb) = (a.requests as f64, b.requests as f64);
    if na == 0.0 || nb == 0.0 {
        return true;
    }
    let pooled = (a.errors + b.errors) as f64 / (na + nb);
    let spread = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    if spread == 0.0 {
        return true;
    }
    ((a.errors as f64 / na - b.errors as f64 / nb) / spread).abs() < DIFFERENT_Z
}

/// Median of chi-square with one degree of freedom: what the median block contributes
/// when blocks differ only by binomial noise.
const CHI2_1_MEDIAN: f64 = 0.455;

/// How much more than binomial noise the per-block proportions vary (about 1 when the
/// blocks differ by chance alone, larger when something shared, the environment, moves the
/// rate from block to block). Robust: the median block's chi-square contribution around the
/// median block rate, so a few blocks hit by a transient episode do not pass for a noisy
/// environment (which would water down all later evidence). Blocks with fewer than
/// `min_trials` are skipped.
pub fn dispersion(blocks: &[(f64, f64)], min_trials: f64) -> f64 {
    let used: Vec<_> = blocks.iter().filter(|(_, n)| *n >= min_trials).collect();
    if used.len() < 3 {
        return 1.0;
    }
    let p = median(used.iter().map(|(e, n)| e / n).collect());
    dispersion_around(&used, p)
}

/// The median block's chi-square contribution around the rate `p`, over that of chance.
fn dispersion_around(blocks: &[&(f64, f64)], p: f64) -> f64 {
    if blocks.len() < 3 || p <= 0.0 || p >= 1.0 {
        return 1.0;
    }
    let contributions = blocks
        .iter()
        .map(|(e, n)| (e - n * p).powi(2) / (n * p * (1.0 - p)))
        .collect();
    median(contributions) / CHI2_1_MEDIAN
}

/// How much more than chance per-block means vary: blocks of (sum, requests) of a score
/// whose variance over single requests is `variance` (for a rate, p (1 - p)); the blocks'
/// mean chi-square contribution around their pooled mean. Unbiased however few events a
/// block holds, where the median's (robust to episodes, so used to find them) reads a
/// count's discreteness as dispersion: at 3 req/s and 2 to 3 % errors, under a failed
/// request a 10 s block, it read 1.3 to 2.3 where there was none.
pub fn mean_dispersion(blocks: &[(f64, f64)], variance: f64) -> f64 {
    let used: Vec<_> = blocks.iter().filter(|(_, n)| *n > 0.0).collect();
    if used.len() < 3 || variance <= 0.0 {
        return 1.0;
    }
    let requests: f64 = used.iter().map(|(_, n)| n).sum();
    let mean = used.iter().map(|(sum, _)| sum).sum::<f64>() / requests;
    let chi_square: f64 = used
        .iter()
        .map(|(sum, n)| n * (sum / n - mean).powi(2) / variance)
        .sum();
    chi_square / (used.len() - 1) as f64
}

/// z of the bound beyond which a block's count is an episode, not the steady rate.
const EPISODE_Z: f64 = 3.29;
/// The one-sided tail beyond `EPISODE_Z`.
const EPISODE_TAIL: f64 = 0.0005;

/// The steady rate of per-block (events, trials): blocks whose count lies beyond what the
/// rate, the environment's `dispersion` and chance allow (at `EPISODE_Z`) are left out, the
/// rate re-estimated without them, a few times over. Transient episodes are forgiven in
/// the candidate; a reference that averaged them in would forgive a steady regression of
/// the same size as well.
pub fn steady_blocks(blocks: &[(f64, f64)], dispersion: f64) -> Steady {
    let within = |p: f64, d: f64| {
        blocks
            .iter()
            .filter(|block| !is_episode(block, p, d))
            .collect::<Vec<_>>()
    };
    let total = |kept: &[&(f64, f64)]| {
        kept.iter().fold((0.0, 0.0), |(e, n), (events, trials)| {
            (e + events, n + trials)
        })
    };
    // From the blocks at or below the median block's rate (robust to a minority of
    // episodes), then the rate and the environment's movement re-measured on the blocks
    // kept, until they settle: when episodes hit many blocks, each pass leaves out more of
    // them. Blocks without an event say only that the rate is below their bound, so that
    // bound is the start: at a request a second most blocks hold no error, and against
    // their 0 % every block with two errors passed for an episode (a 3 % baseline came out
    // at 0 %).
    let rates: Vec<f64> = blocks
        .iter()
        .filter(|(_, n)| *n > 0.0)
        .map(|(e, n)| e / n)
        .collect();
    if rates.is_empty() {
        return Steady {
            events: 0.0,
            trials: 0.0,
            dispersion,
        };
    }
    let median_rate = median(rates);
    let mut sums = total(
        &blocks
            .iter()
            .filter(|(e, n)| *n > 0.0 && e / n <= median_rate)
            .collect::<Vec<_>>(),
    );
    let mut d = dispersion;
    for _ in 0..8 {
        let rate = if sums.0 > 0.0 {
            sums.0 / sums.1
        } else {
            wilson_bound(0.0, sums.1, Z_95)
        };
        let kept = within(rate, d);
        let next = total(&kept);
        if next.1 <= 0.0 {
            break;
        }
        let next_d = dispersion_around(&kept, next.0 / next.1).clamp(1.0, dispersion.max(1.0));
        let settled = next == sums && next_d == d;
        (sums, d) = (next, next_d);
        if settled {
            break;
        }
    }
    // The episodes left out, the blocks' mean contribution measures the environment.
    let rate = sums.0 / sums.1.max(1.0);
    let kept: Vec<(f64, f64)> = within(rate, d).into_iter().copied().collect();
    Steady {
        events: sums.0,
        trials: sums.1,
        dispersion: mean_dispersion(&kept, rate * (1.0 - rate)).clamp(1.0, 20.0),
    }
}

/// Whether a block's (events, trials) lie beyond what the rate `p`, the environment's
/// dispersion `d` and chance allow.
fn is_episode(&(events, trials): &(f64, f64), p: f64, d: f64) -> bool {
    let spread = (d * trials * p * (1.0 - p)).sqrt();
    let beyond_normal = events > trials * p + EPISODE_Z * spread + 1.0;
    // And beyond Poisson's tail: a block holds a handful of events at low traffic, where
    // the normal bound put 3 errors in 20 requests at a 1.4 % rate among the episodes.
    let mean = trials * p;
    beyond_normal && (mean <= 0.0 || gamma_lr(events, mean) < EPISODE_TAIL)
}

/// A baseline's rate outside its transient episodes.
#[derive(Clone, Copy, Debug)]
pub struct Steady {
    pub events: f64,
    pub trials: f64,
    /// How much the environment moves the rate beyond chance, on the steady blocks.
    pub dispersion: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_bounds_bracket_the_estimate() {
        let (lo, hi) = (
            wilson_bound(5.0, 100.0, -Z_99),
            wilson_bound(5.0, 100.0, Z_99),
        );
        assert!(lo < 0.05 && 0.05 < hi, "{lo} {hi}");
        assert!(lo > 0.01 && hi < 0.14, "{lo} {hi}");
        // A handful of failures proves little: 3 of 3 still allows a rate near 1/3.
        assert!(wilson_bound(3.0, 3.0, -Z_99) < 0.4);
        assert_eq!(wilson_bound(0.0, 0.0, Z_99), 1.0);
    }

    #[test]
    fn the_normal_quantile_inverts_the_distribution_function() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-2.326348) - 0.01).abs() < 1e-6);
        for p in [1e-9, 0.001, 0.02, 0.3, 0.5, 0.95, 0.999, 1.0 - 1e-9] {
            let back = normal_cdf(normal_quantile(p));
            assert!((back - p).abs() < 1e-6 * p.max(1e-3), "{p} -> {back}");
        }
    }

    #[test]
    fn llr_is_positive_when_data_fit_the_alternative() {
        assert!(binomial_llr(10.0, 100.0, 0.1, 0.01) > 0.0);
        assert!(binomial_llr(1.0, 100.0, 0.1, 0.01) < 0.0);
        assert_eq!(binomial_llr(7.0, 50.0, 0.2, 0.2), 0.0);
    }

    #[test]
    fn dispersion_sees_shared_movement() {
        let steady: Vec<_> = (0..30).map(|_| (10.0, 1000.0)).collect();
        assert!(dispersion(&steady, 1.0) < 0.1);
        let moving: Vec<_> = (0..30)
            .map(|i| (if i % 2 == 0 { 5.0 } else { 15.0 }, 1000.0))
            .collect();
        assert!(dispersion(&moving, 1.0) > 2.0);
    }

    #[test]
    fn the_steady_rate_leaves_episodes_out_and_keeps_a_moving_environment() {
        // 30 blocks of 300 requests at 0.1 % (spread like binomial noise), a third of them
        // hit by an episode of +10 points: the pooled rate is about 3.4 %.
        let quiet = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0];
        let mut blocks: Vec<_> = (0..20).map(|i| (quiet[i % 10], 300.0)).collect();
        blocks.extend([(30.0, 300.0); 10]);
        let steady = steady_blocks(&blocks, dispersion(&blocks, 5.0));
        let rate = steady.events / steady.trials;
        assert!(rate < 0.003, "{rate}");
        assert_eq!(steady.trials, 6000.0);
        // An environment that doubles or halves the rate from block to block is no episode:
        // every block stays.
        let moving: Vec<_> = (0..30)
            .map(|i| ([5.0, 10.0, 20.0][i % 3], 1000.0))
            .collect();
        let steady = steady_blocks(&moving, dispersion(&moving, 5.0));
        assert_eq!(steady.trials, 30_000.0);
        assert!(steady.dispersion > 2.0, "{}", steady.dispersion);
    }

    #[test]
    fn at_a_request_a_second_a_block_of_two_or_three_errors_is_no_episode() {
        // A 3 % baseline at about a request a second: 28 blocks without an error, one with 2
        // errors in 9 requests, one with 3 in 20. Held against the blocks' median rate (0),
        // both passed for episodes and the steady rate came out at 0 %.
        let mut blocks = vec![(0.0, 12.0); 28];
        blocks.extend([(2.0, 9.0), (3.0, 20.0)]);
        let steady = steady_blocks(&blocks, dispersion(&blocks, 5.0));
        assert_eq!((steady.events, steady.trials), (5.0, 365.0));
        // At 10 req/s, 0 errors in most blocks of a hundred requests make a block of 4 to 8
        // an episode.
        let mut blocks = vec![(0.0, 120.0); 22];
        blocks.extend([
            (1.0, 120.0),
            (4.0, 110.0),
            (5.0, 107.0),
            (6.0, 108.0),
            (8.0, 125.0),
        ]);
        let steady = steady_blocks(&blocks, dispersion(&blocks, 5.0));
        assert_eq!(steady.events, 1.0);
    }

    #[test]
    fn a_sparse_counts_discreteness_is_no_dispersion() {
        // 3 req/s at 3 % errors: 0.9 errors a 10 s block of 30 requests, 60 blocks holding
        // 0 to 4 errors as often as binomial noise makes them. The median block's
        // contribution (a block without an error, or with two) read 2.3; the steady blocks'
        // mean reads 1.
        let mut blocks = vec![(0.0, 30.0); 24];
        blocks.extend([(1.0, 30.0); 22]);
        blocks.extend([(2.0, 30.0); 10]);
        blocks.extend([(3.0, 30.0); 3]);
        blocks.push((4.0, 30.0));
        assert!(dispersion(&blocks, 5.0) > 2.0);
        let steady = steady_blocks(&blocks, dispersion(&blocks, 5.0));
        assert!(steady.dispersion < 1.1, "{}", steady.dispersion);
        // Two and eight errors in turn at the same traffic are the environment's doing.
        let moving: Vec<_> = (0..60).map(|i| ([2.0, 8.0][i % 2], 100.0)).collect();
        let steady = steady_blocks(&moving, dispersion(&moving, 5.0));
        assert!(steady.dispersion > 1.5, "{}", steady.dispersion);
    }

    #[test]
    fn dispersion_ignores_a_few_episode_blocks() {
        // Blocks around 1 % that differ by binomial noise (spread like normal quantiles) ...
        let normal_quantiles = [-1.6, -1.0, -0.6, -0.3, -0.1, 0.1, 0.3, 0.6, 1.0, 1.6];
        let mut blocks: Vec<_> = (0..30)
            .map(|i| (10.0 + 10f64.sqrt() * normal_quantiles[i % 10], 1000.0))
            .collect();
        let quiet = dispersion(&blocks, 1.0);
        // ... and three more hit by a transient episode at 20 %.
        blocks.extend([(200.0, 1000.0); 3]);
        let with_episodes = dispersion(&blocks, 1.0);
        assert!((0.5..2.0).contains(&quiet), "{quiet}");
        assert!(with_episodes < 1.5 * quiet, "{quiet} -> {with_episodes}");
    }
}
