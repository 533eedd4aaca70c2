//! The evidence a rollback (and its incident) keeps: the judge's finding, the check that
//! kept failing, or the alert that fired. One type for the guard that writes it and the
//! incidents, notifications and API that read it.

use rearguard_judge::{Finding, Tier};
use serde::{Deserialize, Serialize};

use crate::checks::CheckResult;
use crate::signals::alertmanager::Alert;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Untagged: the stored JSON is the record itself, as earlier versions wrote it.
#[serde(untagged)]
pub enum Evidence {
    /// The judge's finding: a regression, a gross failure, a limit.
    Judge(Finding),
    /// A check that failed time after time.
    Check(CheckResult),
    /// An alert Alertmanager sent for the app.
    Alert { alert: Alert },
}

impl Evidence {
    /// The judge's urgency, when the judge decided.
    pub fn tier(&self) -> Option<Tier> {
        match self {
            Evidence::Judge(finding) => Some(finding.tier),
            _ => None,
        }
    }

    /// When the release began to look bad, in epoch seconds: the start of the judge's
    /// evidence window.
    pub fn onset_s(&self) -> Option<i64> {
        match self {
            Evidence::Judge(finding) => Some(finding.evidence.window_start),
            _ => None,
        }
    }

    /// One sentence for people.
    pub fn reason(&self) -> String {
        match self {
            Evidence::Judge(finding) => finding.reason.clone(),
            Evidence::Check(result) => format!("check {} failed: {}", result.check, result.detail),
            Evidence::Alert { alert } => alert.reason(),
        }
    }
}
