//! Traffic counts for one version over one step: requests, errors and a latency histogram.
//! Plain data and arithmetic on it; no statistics decisions live here.

use serde::{Deserialize, Serialize};

use crate::stats::{normal_cdf, normal_quantile};

/// Upper bounds of the latency buckets in milliseconds: Prometheus' default bounds
/// (`le_5` .. `le_10000`); a last, implicit bucket holds everything slower (`+Inf`).
pub const BUCKET_BOUNDS_MS: [f64; 11] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];

/// Number of buckets including `+Inf`.
pub const BUCKETS: usize = BUCKET_BOUNDS_MS.len() + 1;

/// A cumulative latency histogram: `cumulative[i]` counts requests at or below
/// `BUCKET_BOUNDS_MS[i]`; the last entry (`+Inf`) counts every request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    pub cumulative: [u64; BUCKETS],
}

impl LatencyHistogram {
    /// Builds a histogram from cumulative counts, refusing counts that decrease.
    pub fn try_from_cumulative(cumulative: [u64; BUCKETS]) -> Result<Self, HistogramError> {
        if let Some(i) = (1..BUCKETS).find(|&i| cumulative[i] < cumulative[i - 1]) {
            return Err(HistogramError::NotMonotonic { bucket: i });
        }
        Ok(Self { cumulative })
    }

    /// Records one request that took `latency_ms`.
    pub fn record(&mut self, latency_ms: f64) {
        let first = BUCKET_BOUNDS_MS
            .iter()
            .position(|&bound| latency_ms <= bound)
            .unwrap_or(BUCKETS - 1);
        for count in &mut self.cumulative[first..] {
            *count += 1;
        }
    }

    pub fn total(&self) -> u64 {
        self.cumulative[BUCKETS - 1]
    }

    pub fn add(&mut self, other: &Self) {
        for (mine, theirs) in self.cumulative.iter_mut().zip(other.cumulative) {
            *mine += theirs;
        }
    }

    pub fn sub(&mut self, other: &Self) {
        for (mine, theirs) in self.cumulative.iter_mut().zip(other.cumulative) {
            *mine = mine.saturating_sub(theirs);
        }
    }

    /// Requests at or below `latency_ms`, taking a bucket's requests as spread evenly in
    /// log-latency: linear in the counts, so a count from a few requests is unbiased (what a
    /// test needs); [`Self::shape`] follows a large sample's shape closer.
    pub fn count_at_or_below(&self, latency_ms: f64) -> f64 {
        self.edges(Edge::plain).share_at_or_below(latency_ms) * self.total() as f64
    }

    /// The distribution prepared for [`LatencyShape::share_at_or_below`], interpolated
    /// inside a bucket as for a log-normal distribution (see [`within_bucket`]).
    pub fn shape(&self) -> LatencyShape {
        self.edges(Edge::new)
    }

    fn edges(&self, edge: fn(f64, f64, f64) -> Edge) -> LatencyShape {
        let total = self.total().max(1) as f64;
        let mut edges = [Edge::plain(0.0, 0.0, total); BUCKETS];
        for (i, &bound) in BUCKET_BOUNDS_MS.iter().enumerate() {
            edges[i + 1] = edge(bound, self.cumulative[i] as f64, total);
        }
        LatencyShape {
            edges,
            requests: self.total(),
        }
    }

    /// The `q` quantile in milliseconds, inverting [`LatencyShape::share_at_or_below`]; `None`
    /// without requests. A quantile in `+Inf` reports the highest finite bound, as
    /// Prometheus' `histogram_quantile` does.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.total() as f64;
        if total == 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower_bound = 0.0;
        let mut below = 0.0;
        for (i, &bound) in BUCKET_BOUNDS_MS.iter().enumerate() {
            let at_bound = self.cumulative[i] as f64;
            if at_bound >= rank && at_bound > below {
                return Some(within_bucket(
                    Edge::new(lower_bound, below, total),
                    Edge::new(bound, at_bound, total),
                    Interpolate::Latency(q),
                ));
            }
            lower_bound = bound;
            below = at_bound;
        }
        Some(BUCKET_BOUNDS_MS[BUCKET_BOUNDS_MS.len() - 1])
    }

    /// Requests in each bucket (not cumulative).
    pub fn per_bucket(&self) -> [u64; BUCKETS] {
        let mut counts = self.cumulative;
        for i in (1..BUCKETS).rev() {
            counts[i] -= counts[i - 1];
        }
        counts
    }

    /// The sum over requests of a bucket's log-latency (its bounds' geometric middle; half
    /// the first bound below it, twice the last above it): a block's mean of it moves with
    /// the whole distribution's scale, as the shift test does.
    pub fn log_latency_sum(&self) -> f64 {
        let counts = self.per_bucket();
        (0..BUCKETS)
            .map(|i| counts[i] as f64 * bucket_log_ms(i))
            .sum()
    }

    /// The variance over requests of the log-latency of [`Self::log_latency_sum`].
    pub fn log_latency_variance(&self) -> f64 {
        let n = self.total() as f64;
        if n == 0.0 {
            return 0.0;
        }
        let counts = self.per_bucket();
        let mean = self.log_latency_sum() / n;
        let squares: f64 = (0..BUCKETS)
            .map(|i| counts[i] as f64 * (bucket_log_ms(i) - mean).powi(2))
            .sum();
        squares / n
    }

    /// Requests slower than `latency_ms` (fractional, see [`Self::count_at_or_below`]).
    pub fn count_above(&self, latency_ms: f64) -> f64 {
        (self.total() as f64 - self.count_at_or_below(latency_ms)).max(0.0)
    }
}

/// A representative log-latency (ln ms) of bucket `i`, see
/// [`LatencyHistogram::log_latency_sum`].
fn bucket_log_ms(i: usize) -> f64 {
    let last = BUCKET_BOUNDS_MS.len() - 1;
    let (low, high) = match i {
        0 => (BUCKET_BOUNDS_MS[0] / 2.0, BUCKET_BOUNDS_MS[0]),
        _ if i > last => (BUCKET_BOUNDS_MS[last], 2.0 * BUCKET_BOUNDS_MS[last]),
        _ => (BUCKET_BOUNDS_MS[i - 1], BUCKET_BOUNDS_MS[i]),
    };
    0.5 * (low.ln() + high.ln())
}

/// A histogram's distribution prepared for many lookups inside its buckets: the share
/// at each bound and (from [`LatencyHistogram::shape`]) its normal quantile, computed once
/// (they cost most of the judge's time when every step asked for them afresh).
pub struct LatencyShape {
    /// The origin (0 ms, share 0), then one edge per finite bound.
    edges: [Edge; BUCKETS],
    requests: u64,
}

impl LatencyShape {
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Share of requests at or below `latency_ms`.
    pub fn share_at_or_below(&self, latency_ms: f64) -> f64 {
        let Some(i) = BUCKET_BOUNDS_MS
            .iter()
            .position(|&bound| latency_ms <= bound)
        else {
            return self.edges[BUCKETS - 1].share;
        };
        let (low, high) = (self.edges[i], self.edges[i + 1]);
        if high.share == low.share {
            return low.share;
        }
        within_bucket(low, high, Interpolate::Share(latency_ms))
    }
}

/// One end of a bucket: its bound, the share of requests at or below it, and the normal
/// quantile of that share as the interpolation models it (NaN where not needed).
#[derive(Clone, Copy)]
struct Edge {
    ms: f64,
    share: f64,
    /// The share kept half a request away from 0 and 1: none of n requests above a bound
    /// says the share beyond it is about 1/2n, not that it is nothing, so the sample's
    /// last occupied bucket is still read as a log-normal's tail (a straight line there put
    /// a p95 inside the (25, 50] bucket at 40 ms where 31 ms was right).
    modelled: f64,
    normal: f64,
}

impl Edge {
    fn new(ms: f64, at_or_below: f64, total: f64) -> Self {
        let half = 0.5 / total;
        let modelled = (at_or_below / total).clamp(half, 1.0 - half);
        Self {
            normal: normal_quantile(modelled),
            modelled,
            ..Self::plain(ms, at_or_below, total)
        }
    }

    fn plain(ms: f64, at_or_below: f64, total: f64) -> Self {
        let share = at_or_below / total;
        Self {
            ms,
            share,
            modelled: share,
            normal: f64::NAN,
        }
    }
}

/// `value`'s position between the ends of `from`, carried to the same position between
/// the ends of `to`: shares to and from the modelled scale, so edges stay exact.
fn carry(value: f64, from: (f64, f64), to: (f64, f64)) -> f64 {
    to.0 + (to.1 - to.0) * (value - from.0) / (from.1 - from.0)
}

/// What [`within_bucket`] finds: the share at or below a latency, or the latency at a share.
enum Interpolate {
    Share(f64),
    Latency(f64),
}

/// Interpolation inside one bucket, between its two edges.
///
/// The share's normal quantile is taken as linear in log-latency: exact for a log-normal
/// distribution, which latencies roughly follow, where a straight line across a bucket as
/// wide as 100..250 ms misjudges a p95 ratio by -14 % to +20 % (linear in latency) or
/// -10 % to +14 % (linear in log-latency; 10th to 90th percentile over log-normals with
/// median 15..400 ms and sigma 0.4..1). Edges without a normal quantile ([`Edge::plain`])
/// fall back to linear in log-latency, and the first bucket (from 0) to linear in latency.
fn within_bucket(low: Edge, high: Edge, find: Interpolate) -> f64 {
    if low.ms <= 0.0 {
        let spread = high.share - low.share;
        return match find {
            Interpolate::Share(ms) => low.share + spread * (ms / high.ms).clamp(0.0, 1.0),
            Interpolate::Latency(q) => high.ms * ((q - low.share) / spread).clamp(0.0, 1.0),
        };
    }
    let (low_log, high_log) = (low.ms.ln(), high.ms.ln());
    // The scale on which the share is linear in log-latency.
    // One request leaves both ends modelled at 1/2: nothing to model between them.
    let normal = low.normal.is_finite() && high.normal.is_finite() && high.modelled > low.modelled;
    let (shares, modelled) = ((low.share, high.share), (low.modelled, high.modelled));
    let (low_value, high_value) = if normal {
        (low.normal, high.normal)
    } else {
        (low.share, high.share)
    };
    match find {
        Interpolate::Share(ms) => {
            let fraction = ((ms.ln() - low_log) / (high_log - low_log)).clamp(0.0, 1.0);
            let value = low_value + (high_value - low_value) * fraction;
            if normal {
                carry(normal_cdf(value), modelled, shares)
            } else {
                value
            }
        }
        Interpolate::Latency(q) => {
            let q = q.clamp(low.share, high.share);
            let value = if normal {
                normal_quantile(carry(q, shares, modelled))
            } else {
                q
            };
            let fraction = ((value - low_value) / (high_value - low_value)).clamp(0.0, 1.0);
            (low_log + (high_log - low_log) * fraction).exp()
        }
    }
}

/// Hand-written `Display`/`Error` (not thiserror) so the judge depends on serde alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistogramError {
    NotMonotonic { bucket: usize },
}

impl std::fmt::Display for HistogramError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HistogramError::NotMonotonic { bucket } => write!(
                f,
                "latency buckets must not decrease: bucket {} holds fewer requests than the one before",
                bucket_name(*bucket)
            ),
        }
    }
}

impl std::error::Error for HistogramError {}

/// The column name of bucket `i`, as in the scenario CSV format (`le_5` .. `le_inf`).
pub fn bucket_name(i: usize) -> String {
    BUCKET_BOUNDS_MS
        .get(i)
        .map_or_else(|| "le_inf".to_string(), |bound| format!("le_{bound}"))
}

/// What one version served during one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub requests: u64,
    /// Requests that failed (5xx-like, or the upstream could not be reached).
    pub errors: u64,
    pub latency: LatencyHistogram,
}

impl Counts {
    pub fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.add(&other.latency);
    }

    pub fn sub(&mut self, other: &Self) {
        self.requests = self.requests.saturating_sub(other.requests);
        self.errors = self.errors.saturating_sub(other.errors);
        self.latency.sub(&other.latency);
    }

    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram_of(latencies: &[f64]) -> LatencyHistogram {
        let mut h = LatencyHistogram::default();
        latencies.iter().for_each(|&l| h.record(l));
        h
    }

    /// A log-normal sample without sampling noise: latencies at evenly spaced quantiles.
    fn log_normal(median_ms: f64, sigma: f64, requests: usize) -> LatencyHistogram {
        let latencies: Vec<f64> = (0..requests)
            .map(|i| {
                let z = normal_quantile((i as f64 + 0.5) / requests as f64);
                median_ms * (sigma * z).exp()
            })
            .collect();
        histogram_of(&latencies)
    }

    #[test]
    fn a_p95_ratio_inside_one_wide_bucket_is_read_right() {
        // p95 of 182 ms against 240 ms (x1.32): both inside the (100, 250] bucket, where a
        // straight line (Prometheus' histogram_quantile) reads x1.07, and a rollback on
        // "p95 at least x1.25" would never come.
        let baseline = log_normal(80.0, 0.5, 100_000);
        let candidate = log_normal(80.0 * 1.32, 0.5, 100_000);
        let ratio = candidate.quantile_ms(0.95).unwrap() / baseline.quantile_ms(0.95).unwrap();
        assert!((ratio - 1.32).abs() < 0.01, "{ratio}");
        let p95 = baseline.quantile_ms(0.95).unwrap();
        let true_p95 = 80.0 * (0.5 * normal_quantile(0.95)).exp();
        assert!(
            (p95 / true_p95 - 1.0).abs() < 0.005,
            "{p95} against {true_p95}"
        );
    }

    #[test]
    fn a_p95_in_the_last_occupied_bucket_is_read_as_a_tail() {
        // 500 requests around 15 ms (sigma 0.35), the slowest at 43 ms: the p95 (26.7 ms)
        // lies in the (25, 50] bucket, and nothing is above it. A straight line to 50 ms
        // read 30.8 ms (+15 %), enough to pass a x1.16 slowdown for the x1.25 of a fault.
        let histogram = log_normal(15.0, 0.35, 500);
        assert_eq!(histogram.cumulative[3], 500, "all at or below 50 ms");
        let true_p95 = 15.0 * (0.35 * normal_quantile(0.95)).exp();
        let p95 = histogram.quantile_ms(0.95).unwrap();
        assert!(
            (p95 / true_p95 - 1.0).abs() < 0.03,
            "{p95} against {true_p95}"
        );
        let share = histogram.shape().share_at_or_below(50.0);
        assert!((share - 1.0).abs() < 1e-9, "edges stay exact: {share}");
    }

    #[test]
    fn one_request_is_read_inside_its_bucket() {
        let histogram = histogram_of(&[70.0]);
        let p95 = histogram.quantile_ms(0.95).unwrap();
        assert!((50.0..=100.0).contains(&p95), "{p95}");
        let share = histogram.shape().share_at_or_below(70.0);
        assert!((0.0..=1.0).contains(&share), "{share}");
    }

    #[test]
    fn quantile_inverts_count() {
        let histogram = histogram_of(&[3.0, 30.0, 70.0, 120.0, 400.0, 900.0, 2000.0]);
        for q in [0.1, 0.5, 0.8, 0.95] {
            let ms = histogram.quantile_ms(q).unwrap();
            let share = histogram.shape().share_at_or_below(ms);
            assert!((share - q).abs() < 1e-6, "{q}: {ms} ms holds {share}");
        }
    }

    #[test]
    fn quantile_of_empty_histogram_is_none() {
        assert_eq!(LatencyHistogram::default().quantile_ms(0.95), None);
    }

    #[test]
    fn count_above_is_consistent_with_quantile() {
        let h = histogram_of(&[
            3.0, 7.0, 20.0, 40.0, 80.0, 200.0, 400.0, 900.0, 2000.0, 20000.0,
        ]);
        let p90 = h.quantile_ms(0.9).unwrap();
        assert!((h.shape().share_at_or_below(p90) - 0.9).abs() < 1e-6);
        assert!(h.count_above(p90) > 0.5 && h.count_above(p90) < 1.5);
        assert_eq!(
            h.count_above(1e9),
            1.0,
            "+Inf requests are slower than any bound"
        );
    }

    #[test]
    fn decreasing_buckets_are_refused() {
        let mut c = [5; BUCKETS];
        c[3] = 4;
        let err = LatencyHistogram::try_from_cumulative(c).unwrap_err();
        assert!(err.to_string().contains("le_50"), "{err}");
    }
}
