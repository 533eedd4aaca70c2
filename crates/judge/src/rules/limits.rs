//! Absolute limits from the policy (off unless set): error rate, availability and p95 over
//! the last `limits_for`, whatever the baseline does.

use crate::counts::Counts;
use crate::policy::Policy;
use crate::rules::regression::{p95, show_rate};
use crate::series::Sums;
use crate::verdict::{Evidence, Finding, Metric, Rule, Tier};

pub fn check(policy: &Policy, sums: &Sums, deploy_at: i64, now: i64) -> Option<Finding> {
    let span = policy.limits_for.whole_seconds();
    if now - deploy_at + 1 < span {
        return None;
    }
    let from = now - span + 1;
    let candidate = sums.between(from, now).candidate;
    if candidate.requests < policy.min_requests.max(1) {
        return None;
    }
    let error_rate = candidate.errors as f64 / candidate.requests as f64;
    let limit_error_rate = [
        policy.max_error_rate.map(|f| f.0),
        policy.min_availability.map(|a| 1.0 - a.0),
    ]
    .into_iter()
    .flatten()
    .reduce(f64::min);
    if let Some(limit) = limit_error_rate.filter(|&limit| error_rate > limit) {
        let reason = format!(
            "error rate {} over the last {span}s is above the limit of {}",
            show_rate(error_rate),
            show_rate(limit)
        );
        return Some(finding(
            Metric::ErrorRate,
            reason,
            &candidate,
            from,
            now,
            error_rate,
            limit,
            None,
        ));
    }
    let observed_p95 = p95(&candidate)?;
    let limit = policy
        .max_p95
        .map(|m| m.as_millis() as f64)
        .filter(|&limit| observed_p95 > limit)?;
    let reason = format!(
        "p95 latency {observed_p95:.0} ms over the last {span}s is above the limit of {limit:.0} ms"
    );
    Some(finding(
        Metric::Latency,
        reason,
        &candidate,
        from,
        now,
        observed_p95,
        limit,
        Some(observed_p95),
    ))
}

#[allow(clippy::too_many_arguments)]
fn finding(
    metric: Metric,
    reason: String,
    candidate: &Counts,
    from: i64,
    now: i64,
    value: f64,
    threshold: f64,
    candidate_p95: Option<f64>,
) -> Finding {
    Finding {
        rule: Rule::Limit,
        metric,
        tier: Tier::Rapid,
        reason,
        evidence: Evidence {
            window_start: from,
            window_end: now,
            candidate_requests: candidate.requests as f64,
            candidate_events: candidate.errors as f64,
            candidate_rate: candidate.error_rate().unwrap_or(0.0),
            baseline_rate: 0.0,
            tolerated_rate: threshold,
            latency_threshold_ms: None,
            candidate_p95_ms: candidate_p95.or_else(|| p95(candidate)),
            baseline_p95_ms: None,
            statistic: match metric {
                Metric::ErrorRate => "error_rate",
                Metric::Latency => "p95_ms",
            },
            value,
            threshold,
        },
    }
}
