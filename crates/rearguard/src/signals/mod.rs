//! Sources of traffic data for the judge: per version, what was served since the last look.
//! One trait, one file per kind; the built-in router is the first.

mod router;

use std::collections::BTreeMap;

use rearguard_judge::Counts;

/// Something that counts requests, errors and latency per version.
pub trait SignalSource {
    /// Counts per version since the previous call.
    fn take_counts(&self) -> BTreeMap<String, Counts>;
}
