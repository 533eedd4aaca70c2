//! Gross failure: most of the candidate's recent requests fail while the baseline's do not.
//! Caught within seconds, warm-up or not; never from a handful of requests.

use crate::counts::Counts;
use crate::policy::Policy;
use crate::rules::regression::{p95, show_rate};
use crate::stats::{Z_95, wilson_bound};
use crate::verdict::{Evidence, Finding, Metric, Rule, Tier};

pub fn check(
    policy: &Policy,
    candidate: &Counts,
    reference: &Counts,
    reference_z: f64,
    from: i64,
    now: i64,
) -> Option<Finding> {
    if candidate.errors < policy.gross_min_errors {
        return None;
    }
    let (errors, requests) = (candidate.errors as f64, candidate.requests as f64);
    // 95 %: `gross_min_errors` failures are required on top, so a handful of requests never
    // suffices, and an outage at low traffic is not kept waiting for a sixth failure.
    let candidate_low = wilson_bound(errors, requests, -Z_95);
    // With no baseline at all (a first release) a gross failure is still one.
    let baseline_high = match reference.requests {
        0 => 0.0,
        n => wilson_bound(reference.errors as f64, n as f64, reference_z),
    };
    let needed = baseline_high + policy.gross_error_rate_increase.0;
    if candidate_low < needed {
        return None;
    }
    let baseline_rate = reference.error_rate().unwrap_or(0.0);
    Some(Finding {
        rule: Rule::GrossFailure,
        metric: Metric::ErrorRate,
        tier: Tier::Immediate,
        reason: format!(
            "gross failure: {} of {} requests failed over the last {}s ({}), against the baseline's {}",
            candidate.errors,
            candidate.requests,
            now - from + 1,
            show_rate(errors / requests),
            show_rate(baseline_rate)
        ),
        evidence: Evidence {
            window_start: from,
            window_end: now,
            candidate_requests: requests,
            candidate_events: errors,
            candidate_rate: errors / requests,
            baseline_rate,
            tolerated_rate: needed,
            latency_threshold_ms: None,
            candidate_p95_ms: p95(candidate),
            baseline_p95_ms: p95(reference),
            statistic: "error_rate_lower_bound_95".into(),
            value: candidate_low,
            threshold: needed,
        },
    })
}
