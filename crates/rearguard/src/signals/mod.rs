//! Sources of traffic data for the judge: per second and per version, what was served. One
//! trait, one file per kind, and the tagged enum below as the only list of kinds. The
//! default is the traffic mover's own counts (the built-in router's).

use std::collections::BTreeMap;
use std::sync::Arc;

use rearguard_judge::Counts;
use serde::{Deserialize, Serialize};

use crate::traffic::Traffic;

/// What each version served in the second ending at `t` (epoch seconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    pub t: i64,
    pub counts: BTreeMap<String, Counts>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the signals from {source_name}: {why}")]
pub struct SignalError {
    pub source_name: String,
    pub why: String,
}

/// Something that counts requests, errors and latency per version.
#[async_trait::async_trait]
pub trait SignalSource: Send + Sync {
    /// The seconds completed since the previous call, oldest first.
    async fn take(&self) -> Result<Vec<Second>, SignalError>;
}

/// The signal kinds, chosen in the config by `kind`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SignalsConfig {
    /// The traffic mover's own counts (the built-in router sees every request).
    #[default]
    Traffic,
}

impl SignalsConfig {
    /// The source; `None` when nothing counts requests (only checks can judge then).
    pub fn build(&self, traffic: &dyn Traffic) -> Option<Arc<dyn SignalSource>> {
        match self {
            SignalsConfig::Traffic => traffic.signals(),
        }
    }
}
