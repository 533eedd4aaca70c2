//! Absolute limits from the policy (off unless set): error rate, availability and p95 over
//! the last `limits_for`, whatever the baseline does; and the CPU and memory of the
//! release's instances, sampled by the guard.

use crate::counts::Counts;
use crate::policy::Policy;
use crate::rules::regression::{p95, show_rate};
use crate::series::Sums;
use serde::{Deserialize, Serialize};

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
                Metric::Cpu => "cpu_cores",
                Metric::Memory => "memory_bytes",
            }
            .into(),
            value,
            threshold,
        },
    }
}

/// CPU and memory of one version's instances, summed, at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_cores: f64,
    pub memory_bytes: u64,
}

/// The CPU or memory limit, when every sample of the last `limits_for` (at `t`, oldest
/// first) is above it and the samples cover that span: a spike is no breach.
pub fn saturation_limit(policy: &Policy, samples: &[(i64, Usage)], now: i64) -> Option<Finding> {
    let span = policy.limits_for.whole_seconds();
    let from = now - span + 1;
    let covered = samples.first().is_some_and(|(t, _)| *t <= from);
    if !covered {
        return None;
    }
    let recent: Vec<Usage> = samples
        .iter()
        .filter(|(t, _)| *t >= from && *t <= now)
        .map(|(_, usage)| *usage)
        .collect();
    let least = |value: fn(&Usage) -> f64| recent.iter().map(value).reduce(f64::min);
    let breach = |metric: Metric, least: f64, limit: f64, shown: String| {
        let mut found = finding(
            metric,
            shown,
            &Counts::default(),
            from,
            now,
            least,
            limit,
            None,
        );
        found.evidence.candidate_p95_ms = None;
        found
    };
    if let (Some(limit), Some(least)) = (policy.max_cpu, least(|u| u.cpu_cores))
        && least > limit
    {
        let reason = format!(
            "CPU at least {least:.2} cores over the last {span}s, above the limit of {limit} cores"
        );
        return Some(breach(Metric::Cpu, least, limit, reason));
    }
    let limit = policy.max_memory?;
    let least = least(|u| u.memory_bytes as f64).filter(|&m| m > limit.0 as f64)?;
    let reason = format!(
        "memory at least {} over the last {span}s, above the limit of {limit}",
        crate::Bytes(least as u64)
    );
    Some(breach(Metric::Memory, least, limit.0 as f64, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Bytes;

    fn samples(values: &[(i64, f64, u64)]) -> Vec<(i64, Usage)> {
        values
            .iter()
            .map(|&(t, cpu_cores, memory_bytes)| {
                (
                    t,
                    Usage {
                        cpu_cores,
                        memory_bytes,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_limit_breached_for_the_whole_span_is_a_finding_and_a_spike_is_not() {
        let policy = Policy {
            max_cpu: Some(1.0),
            max_memory: Some(Bytes::parse("100MiB").unwrap()),
            limits_for: crate::Span::from_secs(10),
            ..Policy::default()
        };
        let mib = 1024 * 1024;
        // Not yet covered: the last 10 s start at t=5, the samples at t=8.
        let short = samples(&[(8, 2.0, 0), (10, 2.0, 0), (14, 2.0, 0)]);
        assert!(saturation_limit(&policy, &short, 14).is_none());
        let busy = samples(&[(0, 1.5, mib), (5, 2.0, mib), (10, 1.2, mib)]);
        let finding = saturation_limit(&policy, &busy, 10).unwrap();
        assert_eq!(finding.metric, Metric::Cpu);
        assert_eq!(finding.evidence.value, 1.2);
        let spike = samples(&[(0, 0.1, mib), (5, 3.0, mib), (10, 0.2, mib)]);
        assert!(saturation_limit(&policy, &spike, 10).is_none());
        let heavy = samples(&[
            (0, 0.1, 200 * mib),
            (5, 0.1, 150 * mib),
            (10, 0.1, 120 * mib),
        ]);
        let finding = saturation_limit(&policy, &heavy, 10).unwrap();
        assert_eq!(finding.metric, Metric::Memory);
        assert!(finding.reason.contains("120 MiB"), "{}", finding.reason);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(Bytes::parse("512MiB").unwrap().0, 512 * 1024 * 1024);
        assert_eq!(Bytes::parse("2GB").unwrap().0, 2_000_000_000);
        assert_eq!(Bytes::parse("64").unwrap().0, 64);
        assert!(Bytes::parse("5 parsecs").is_err());
    }
}
