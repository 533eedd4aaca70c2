//! What the judge answers: keep, wait or roll back, with the evidence behind it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The judge's answer at one tick, with a snapshot of what it saw (for status displays).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub verdict: Verdict,
    pub snapshot: Snapshot,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Healthy so far: promotable once the bake time has passed.
    Keep,
    /// Not enough evidence either way yet.
    Wait { why: WaitReason },
    /// The release is bad.
    Rollback(Finding),
}

impl Verdict {
    pub fn is_rollback(&self) -> bool {
        matches!(self, Verdict::Rollback(_))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// The candidate has not been deployed yet at this time.
    NotDeployed,
    /// The candidate has served no request yet.
    NoTraffic,
    /// Inside the warm-up after the deploy: only a gross failure is acted on.
    WarmingUp,
    /// Too few requests to tell anything.
    LowTraffic,
}

impl WaitReason {
    pub fn describe(self) -> &'static str {
        match self {
            WaitReason::NotDeployed => "the candidate is not deployed yet",
            WaitReason::NoTraffic => "the candidate has served no request yet",
            WaitReason::WarmingUp => "warming up: only a gross failure is acted on",
            WaitReason::LowTraffic => "too few requests to tell",
        }
    }
}

/// How urgent a rollback is; maps to incident severity (immediate P1, rapid P2, evaluate P3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Immediate,
    Rapid,
    Evaluate,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Immediate => "immediate",
            Tier::Rapid => "rapid",
            Tier::Evaluate => "evaluate",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Most requests fail: caught within seconds, warm-up or not.
    GrossFailure,
    /// A sequential test against the baseline found a material, persistent regression.
    Regression,
    /// An absolute limit from the policy was exceeded.
    Limit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    ErrorRate,
    /// Share of requests slower than a threshold derived from the baseline's p95.
    Latency,
    /// CPU of the release's instances, in cores.
    Cpu,
    /// Memory of the release's instances, in bytes.
    Memory,
}

/// Why the judge rolled back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub rule: Rule,
    pub metric: Metric,
    pub tier: Tier,
    /// One sentence for people.
    pub reason: String,
    pub evidence: Evidence,
}

/// The numbers behind a finding, so the ledger can record why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The candidate's data the decision rests on, `[window_start, window_end]` in seconds.
    pub window_start: i64,
    pub window_end: i64,
    pub candidate_requests: f64,
    /// Failed requests (error rate) or requests slower than `latency_threshold_ms` (latency).
    pub candidate_events: f64,
    pub candidate_rate: f64,
    /// The same rate for the baseline over its reference data.
    pub baseline_rate: f64,
    /// The rate the candidate must exceed for the data to count against it.
    pub tolerated_rate: f64,
    /// Latency metric only: requests slower than this count as events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_threshold_ms: Option<f64>,
    pub candidate_p95_ms: Option<f64>,
    pub baseline_p95_ms: Option<f64>,
    /// Name of the statistic and its value against the threshold that was crossed.
    pub statistic: Cow<'static, str>,
    pub value: f64,
    pub threshold: f64,
}

/// What the judge saw at this tick, for people watching.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub candidate_requests: u64,
    pub candidate_error_rate: Option<f64>,
    pub candidate_p95_ms: Option<f64>,
    pub baseline_error_rate: Option<f64>,
    pub baseline_p95_ms: Option<f64>,
    /// Evidence against the candidate as a share of what a rollback needs (0..1+).
    pub error_evidence: f64,
    pub latency_evidence: f64,
}
