//! The built-in router as a signal source: it sees every request, so its counts are exact.

use std::collections::BTreeMap;

use rearguard_judge::Counts;

use super::SignalSource;
use crate::router::Router;

impl SignalSource for Router {
    fn take_counts(&self) -> BTreeMap<String, Counts> {
        Router::take_counts(self)
    }
}
