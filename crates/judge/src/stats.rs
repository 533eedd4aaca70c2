//! Small statistics on proportions: confidence bounds, log-likelihood ratios, dispersion.
//! Written by hand: each is a few lines of closed-form arithmetic, and the judge must stay
//! dependency-free and deterministic.

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

/// The standard normal distribution function, from the complementary error function's
/// Chebyshev fit in Numerical Recipes (fractional error under 1.2e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = -z / std::f64::consts::SQRT_2;
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = [
        -1.26551223,
        1.00002368,
        0.37409196,
        0.09678418,
        -0.18628806,
        0.27886807,
        -1.13520398,
        1.48851587,
        -0.82215223,
        0.17087277,
    ]
    .iter()
    .rev()
    .fold(0.0, |acc, c| c + t * acc);
    let erfc = t * (-a * a + poly).exp();
    0.5 * if x >= 0.0 { erfc } else { 2.0 - erfc }
}

/// The standard normal quantile (inverse of [`normal_cdf`]), by Acklam's rational
/// approximation (relative error under 1.2e-9). `p` must lie strictly between 0 and 1.
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let horner = |coefficients: &[f64], x: f64| coefficients.iter().fold(0.0, |acc, c| acc * x + c);
    let tail = |p: f64| {
        let q = (-2.0 * p.ln()).sqrt();
        horner(&C, q) / (horner(&D, q) * q + 1.0)
    };
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    if p < 0.02425 {
        tail(p)
    } else if p > 1.0 - 0.02425 {
        -tail(1.0 - p)
    } else {
        let q = p - 0.5;
        let r = q * q;
        horner(&A, r) * q / (horner(&B, r) * r + 1.0)
    }
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
    if p <= 0.0 || p >= 1.0 {
        return 1.0;
    }
    let contributions = used
        .iter()
        .map(|(e, n)| (e - n * p).powi(2) / (n * p * (1.0 - p)))
        .collect();
    median(contributions) / CHI2_1_MEDIAN
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
