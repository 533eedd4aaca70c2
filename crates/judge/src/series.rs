//! Running sums over the recent steps, so any time window's totals cost a subtraction,
//! and the frozen picture of the replaced release's history taken at the deploy.

use std::collections::VecDeque;

use crate::counts::Counts;
use crate::stats::dispersion;

/// Length of the blocks used to measure how much the environment moves the rates.
pub const DISPERSION_BLOCK_SECONDS: i64 = 10;

#[derive(Clone, Copy)]
struct Entry {
    t: i64,
    /// Totals of every step up to and including this one (since the judge started).
    running: Totals,
}

/// Cumulative totals of the steps seen within the lookback.
#[derive(Default)]
pub struct Sums {
    entries: VecDeque<Entry>,
    /// Totals of the steps already dropped from the front.
    dropped: Totals,
}

/// Totals of both versions over a window.
#[derive(Clone, Copy, Default, Debug)]
pub struct Totals {
    pub baseline: Counts,
    pub candidate: Counts,
}

impl Sums {
    pub fn push(&mut self, t: i64, baseline: &Counts, candidate: &Counts) {
        let mut running = self
            .entries
            .back()
            .map_or(self.dropped, |last| last.running);
        running.baseline.add(baseline);
        running.candidate.add(candidate);
        self.entries.push_back(Entry { t, running });
    }

    /// Forgets steps before `t`.
    pub fn drop_before(&mut self, t: i64) {
        while let Some(entry) = self.entries.front().filter(|e| e.t < t).copied() {
            self.entries.pop_front();
            self.dropped = entry.running;
        }
    }

    /// Totals over steps with `from <= t <= to`.
    pub fn between(&self, from: i64, to: i64) -> Totals {
        let start = self.entries.partition_point(|e| e.t < from);
        let end = self.entries.partition_point(|e| e.t <= to);
        if end <= start {
            return Totals::default();
        }
        let before = match start {
            0 => self.dropped,
            _ => self.entries[start - 1].running,
        };
        let mut totals = self.entries[end - 1].running;
        totals.baseline.sub(&before.baseline);
        totals.candidate.sub(&before.candidate);
        totals
    }

    /// Per-block (events, requests) of the baseline over steps before `until`, with
    /// `events` chosen by the caller (errors, slow requests).
    pub fn baseline_blocks(&self, until: i64, events: impl Fn(&Counts) -> f64) -> Vec<(f64, f64)> {
        let mut blocks: Vec<(f64, f64)> = Vec::new();
        let mut current = None;
        let mut previous = self.dropped.baseline;
        for entry in self.entries.iter().take_while(|e| e.t < until) {
            let mut step = entry.running.baseline;
            step.sub(&previous);
            previous = entry.running.baseline;
            let block = entry.t.div_euclid(DISPERSION_BLOCK_SECONDS);
            if current != Some(block) {
                blocks.push((0.0, 0.0));
                current = Some(block);
            }
            let last = blocks.last_mut().expect("pushed above");
            last.0 += events(&step);
            last.1 += step.requests as f64;
        }
        blocks
    }
}

/// How much the environment moves a rate from block to block beyond binomial noise; at
/// least 1, at most 20.
pub fn block_dispersion(blocks: &[(f64, f64)]) -> f64 {
    dispersion(blocks, 5.0).clamp(1.0, 20.0)
}
