//! Sources of traffic data for the judge: per step and per version, what was served. One
//! trait, one file per kind, and the tagged enum below as the only list of kinds. The
//! default is the traffic mover's own counts (the built-in router's, HAProxy's log).

pub mod alertmanager;
pub mod prometheus;
pub mod scrape;

use std::collections::BTreeMap;
use std::sync::Arc;

use rearguard_judge::{BUCKET_BOUNDS_MS, BUCKETS, Counts, LatencyHistogram};
use serde::{Deserialize, Serialize};

use crate::backends::Instances;
use crate::config::Flaw;
use crate::traffic::Traffic;

/// What each version served in the step ending at `t` (epoch seconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub t: i64,
    pub counts: BTreeMap<String, Counts>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the signals from {source_name}: {why}")]
pub struct SignalError {
    pub source_name: String,
    pub why: String,
}

/// What the guard asks a source for on each tick.
pub struct Ask<'a> {
    pub app: &'a str,
    /// The instances of the versions taking traffic (empty unless the source
    /// [reads instances](SignalSource::reads_instances)).
    pub serving: &'a [Instances],
    /// The end of the last step the ledger holds for the app (0: none): a source that
    /// keeps history (Prometheus) answers from the next step on, so nothing is counted
    /// twice after a restart.
    pub recorded_until: i64,
    /// Now, in epoch seconds.
    pub now: i64,
}

/// Something that counts requests, errors and latency per version.
#[async_trait::async_trait]
pub trait SignalSource: Send + Sync {
    /// Length of its steps in seconds.
    fn step_seconds(&self) -> u32 {
        1
    }
    /// Whether it reads the serving instances themselves (then [`Ask::serving`] is filled).
    fn reads_instances(&self) -> bool {
        false
    }
    /// The steps completed since the previous call, oldest first.
    async fn take(&self, ask: &Ask<'_>) -> Result<Vec<Reading>, SignalError>;
}

/// The signal kinds, chosen in the config by `kind`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SignalsConfig {
    /// The traffic mover's own counts (the built-in router sees every request).
    #[default]
    Traffic,
    /// Each serving version's own `/metrics` page, read every step.
    Scrape(scrape::ScrapeConfig),
    /// A Prometheus server, by grouped PromQL queries.
    Prometheus(prometheus::PrometheusConfig),
}

impl SignalsConfig {
    /// The source; `None` when nothing counts requests (only checks can judge then).
    /// Sources of the same Prometheus share `servers`, so one query serves every app.
    pub fn build(
        &self,
        traffic: &dyn Traffic,
        servers: &prometheus::Servers,
    ) -> Option<Arc<dyn SignalSource>> {
        match self {
            SignalsConfig::Traffic => traffic.signals(),
            SignalsConfig::Scrape(config) => Some(Arc::new(scrape::Scrape::new(config.clone()))),
            SignalsConfig::Prometheus(config) => Some(Arc::new(servers.source(config))),
        }
    }

    /// Problems, with keys below the app; `listening` are the backend's components that
    /// can take traffic.
    pub fn problems(&self, listening: &[String]) -> Vec<Flaw> {
        match self {
            SignalsConfig::Traffic => Vec::new(),
            SignalsConfig::Scrape(config) => config.problems(listening),
            SignalsConfig::Prometheus(config) => config.problems(),
        }
    }
}

/// The metric names of the usual conventions (Prometheus' client libraries, the demo app):
/// a request counter with a status label, and a latency histogram in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricNames {
    #[serde(default = "default_requests")]
    pub requests: String,
    /// The requests' status label; a value from 500 to 599 is an error.
    #[serde(default = "default_status_label")]
    pub status_label: String,
    /// A histogram in seconds (its `_bucket` series are read).
    #[serde(default = "default_latency")]
    pub latency: String,
}

impl Default for MetricNames {
    fn default() -> Self {
        Self {
            requests: default_requests(),
            status_label: default_status_label(),
            latency: default_latency(),
        }
    }
}

fn default_requests() -> String {
    "http_requests_total".into()
}

fn default_status_label() -> String {
    "code".into()
}

fn default_latency() -> String {
    "http_request_duration_seconds".into()
}

/// A counter's increase between two readings: a counter that went down was reset (its
/// process restarted) and counted again from zero, as Prometheus' `increase` takes it.
pub fn increase(before: f64, after: f64) -> f64 {
    if after >= before {
        after - before
    } else {
        after
    }
}

/// Requests per latency bucket, by upper bound in seconds (`+Inf` included), cumulative:
/// what a Prometheus histogram's `_bucket` series hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(pub BTreeMap<OrderedBound, f64>);

/// A bucket bound in seconds that sorts (`+Inf` last); NaN bounds are never stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrderedBound(pub f64);

impl Eq for OrderedBound {}

impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Buckets {
    /// Adds `count` at the bound written as `le` (`"0.05"`, `"+Inf"`); a bound that is no
    /// number is skipped.
    pub fn add(&mut self, le: &str, count: f64) {
        if let Ok(bound) = le.parse::<f64>()
            && !bound.is_nan()
        {
            *self.0.entry(OrderedBound(bound)).or_default() += count;
        }
    }

    /// The increase since `before`, bound by bound (see [`increase`]).
    pub fn increase_since(&self, before: &Buckets) -> Buckets {
        let reset = self
            .0
            .iter()
            .any(|(bound, &after)| before.0.get(bound).is_some_and(|&b| after < b));
        Buckets(
            self.0
                .iter()
                .map(|(bound, &after)| {
                    let before = if reset {
                        0.0
                    } else {
                        before.0.get(bound).copied().unwrap_or(0.0)
                    };
                    (*bound, increase(before, after))
                })
                .collect(),
        )
    }

    /// The same distribution in the judge's buckets, over `requests` (the request counter,
    /// which the judge and the ledger take as the histogram's total: a histogram read a
    /// moment apart from the counter is scaled to it). A judge bound between two of these
    /// is interpolated linearly (as `histogram_quantile` does); above the highest finite
    /// bound, requests count as slower than every judge bound they might exceed. Without a
    /// histogram, latency is unknown and every request counts as fast: latency is then not
    /// held against any version.
    pub fn to_judge(&self, requests: u64) -> LatencyHistogram {
        let total = self.0.last_key_value().map_or(0.0, |(_, &count)| count);
        if total <= 0.0 {
            return LatencyHistogram {
                cumulative: [requests; BUCKETS],
            };
        }
        let scale = requests as f64 / total;
        let finite: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter(|(bound, _)| bound.0.is_finite())
            .map(|(bound, &count)| (bound.0, count))
            .collect();
        let at = |bound_s: f64| -> f64 {
            let mut lower = (0.0, 0.0);
            for &(upper_bound, upper_count) in &finite {
                if bound_s <= upper_bound {
                    let (lower_bound, lower_count) = lower;
                    if upper_bound <= lower_bound {
                        return upper_count;
                    }
                    let share = (bound_s - lower_bound) / (upper_bound - lower_bound);
                    return lower_count + (upper_count - lower_count) * share;
                }
                lower = (upper_bound, upper_count);
            }
            lower.1
        };
        let mut cumulative = [0u64; BUCKETS];
        let mut previous = 0;
        for (i, &bound_ms) in BUCKET_BOUNDS_MS.iter().enumerate() {
            let count =
                ((at(bound_ms / 1000.0) * scale).max(0.0).round() as u64).clamp(previous, requests);
            cumulative[i] = count;
            previous = count;
        }
        cumulative[BUCKETS - 1] = requests;
        LatencyHistogram { cumulative }
    }
}

/// Counts from readings of counters: requests, errors and latency as floats, rounded once.
pub fn counts(requests: f64, errors: f64, latency: &Buckets) -> Counts {
    let requests = requests.max(0.0).round() as u64;
    Counts {
        requests,
        errors: (errors.max(0.0).round() as u64).min(requests),
        latency: latency.to_judge(requests),
    }
}

/// Whether a status label's value is a server error (5xx).
pub fn is_server_error(status: &str) -> bool {
    status.len() == 3 && status.starts_with('5') && status.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(pairs: &[(&str, f64)]) -> Buckets {
        let mut b = Buckets::default();
        for (le, count) in pairs {
            b.add(le, *count);
        }
        b
    }

    #[test]
    fn the_judges_own_bounds_carry_over_exactly() {
        let bounds: Vec<String> = BUCKET_BOUNDS_MS
            .iter()
            .map(|ms| (ms / 1000.0).to_string())
            .collect();
        let mut pairs: Vec<(&str, f64)> = bounds
            .iter()
            .enumerate()
            .map(|(i, le)| (le.as_str(), (i * 10) as f64))
            .collect();
        pairs.push(("+Inf", 200.0));
        let judge = buckets(&pairs).to_judge(200);
        let expected: Vec<u64> = (0..11).map(|i| i * 10).chain([200]).collect();
        assert_eq!(judge.cumulative.to_vec(), expected);
    }

    #[test]
    fn other_bounds_are_interpolated_and_requests_beyond_them_are_slow() {
        // 100 requests: 40 at or below 20 ms, 80 at or below 200 ms, 20 slower.
        let judge = buckets(&[("0.02", 40.0), ("0.2", 80.0), ("+Inf", 100.0)]).to_judge(100);
        // 5 ms: a quarter of the way from 0 to 20 ms; 10 ms: half.
        assert_eq!(judge.cumulative[0], 10);
        assert_eq!(judge.cumulative[1], 20);
        // 100 ms: 40 + 40 * (80 / 180).
        assert_eq!(judge.cumulative[4], 58);
        // Past 200 ms nothing is known: the 20 slower ones stay above every bound.
        assert_eq!(judge.cumulative[5], 80);
        assert_eq!(judge.cumulative[10], 80);
        assert_eq!(judge.total(), 100);
    }

    #[test]
    fn the_histogram_is_scaled_to_the_request_counter_and_its_absence_is_no_slowness() {
        let histogram = buckets(&[("0.01", 50.0), ("+Inf", 100.0)]);
        // Read a moment after the counter: 100 in the histogram, 98 counted.
        let judge = histogram.to_judge(98);
        assert_eq!((judge.cumulative[1], judge.total()), (49, 98));
        assert!(LatencyHistogram::try_from_cumulative(judge.cumulative).is_ok());
        let unknown = Buckets::default().to_judge(7);
        assert_eq!(unknown.cumulative, [7; BUCKETS]);
    }

    #[test]
    fn a_reset_counter_counts_from_zero() {
        assert_eq!(increase(10.0, 15.0), 5.0);
        assert_eq!(increase(10.0, 3.0), 3.0);
        let before = buckets(&[("0.1", 50.0), ("+Inf", 60.0)]);
        let after = buckets(&[("0.1", 4.0), ("+Inf", 5.0)]);
        assert_eq!(after.increase_since(&before), after);
        let later = buckets(&[("0.1", 54.0), ("+Inf", 70.0)]);
        assert_eq!(
            later.increase_since(&before),
            buckets(&[("0.1", 4.0), ("+Inf", 10.0)])
        );
    }

    #[test]
    fn server_errors_are_5xx_codes_only() {
        assert!(is_server_error("500") && is_server_error("503"));
        assert!(!is_server_error("404") && !is_server_error("5") && !is_server_error("5xx"));
    }
}
