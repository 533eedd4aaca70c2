//! The guard's latest view of an app, written to the ledger every tick: what `status`,
//! `check`, the API and the dashboard show live. One type for writer and readers, so a
//! renamed field fails to compile instead of showing nothing.

use std::collections::BTreeMap;

use rearguard_judge::{Judgement, Mode, Usage};
use serde::{Deserialize, Serialize};

use crate::ledger::Release;
use crate::traffic::Routes;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Snapshot {
    pub app: String,
    /// The guard process holding the app.
    pub guard: String,
    /// The version taking (most) traffic.
    pub serving: Option<String>,
    /// The release being watched, if any.
    pub release: Option<Release>,
    #[schema(value_type = Option<String>)]
    pub mode: Option<Mode>,
    /// The version a canary is compared with side by side.
    pub baseline_version: Option<String>,
    /// The judge's last answer on the watched release, with what it saw.
    #[schema(value_type = Option<Object>)]
    pub judgement: Option<Judgement>,
    pub bake_seconds: f64,
    /// Where traffic was last sent.
    #[schema(value_type = Option<Object>)]
    pub routes: Option<Routes>,
    /// CPU and memory of the versions taking traffic, by version.
    #[schema(value_type = Object)]
    pub usage: BTreeMap<String, Usage>,
}

impl Snapshot {
    /// Evidence against the watched release as shares of what a rollback needs: (error
    /// rate, latency).
    pub fn evidence(&self) -> Option<(f64, f64)> {
        self.judgement
            .as_ref()
            .map(|j| (j.snapshot.error_evidence, j.snapshot.latency_evidence))
    }
}
