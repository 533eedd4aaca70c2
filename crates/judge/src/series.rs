//! Running sums over the recent steps, so any time window's totals cost a subtraction,
//! and the frozen picture of the replaced release's history taken at the deploy.

use std::collections::{BTreeMap, VecDeque};

use crate::counts::Counts;
use crate::stats::{Steady, dispersion, steady_blocks};

/// Length of the blocks used to measure how much the environment moves the rates.
pub const DISPERSION_BLOCK_SECONDS: i64 = 10;

#[derive(Clone, Copy)]
struct Entry {
    t: i64,
    /// Totals of every step up to and including this one (since the judge started).
    running: Totals,
}

/// Cumulative totals of the steps the judge's windows still reach.
#[derive(Default)]
pub struct Sums {
    entries: VecDeque<Entry>,
    /// Totals of the steps already dropped from the front.
    dropped: Totals,
    /// The totals before each of a few times whose windows outlive their steps (the
    /// deploy, each CUSUM run's start): a watch keeps only its recent steps, not all.
    marks: BTreeMap<i64, Totals>,
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

    /// How many steps are kept.
    #[cfg(test)]
    pub fn steps_kept(&self) -> usize {
        self.entries.len()
    }

    /// Keeps windows from each of `times` answerable after their steps are dropped (and
    /// forgets other marks).
    pub fn mark(&mut self, times: impl IntoIterator<Item = i64>) {
        self.marks = times.into_iter().map(|t| (t, self.before(t))).collect();
    }

    /// Totals of the steps before `t` (those dropped unmarked count as nothing).
    fn before(&self, t: i64) -> Totals {
        match self.entries.partition_point(|e| e.t < t) {
            0 => self.marks.get(&t).copied().unwrap_or(self.dropped),
            start => self.entries[start - 1].running,
        }
    }

    /// Totals over steps with `from <= t <= to`.
    pub fn between(&self, from: i64, to: i64) -> Totals {
        let start = self.entries.partition_point(|e| e.t < from);
        let end = self.entries.partition_point(|e| e.t <= to);
        if end <= start {
            return Totals::default();
        }
        let before = self.before(from);
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
/// least 1, at most 20: measured robustly (the median block), then on the blocks outside
/// transient episodes (see [`steady_blocks`]).
pub fn block_dispersion(blocks: &[(f64, f64)]) -> f64 {
    steady_rate(blocks).dispersion
}

/// The blocks' steady rate and dispersion, outside their transient episodes.
pub fn steady_rate(blocks: &[(f64, f64)]) -> Steady {
    steady_blocks(blocks, dispersion(blocks, 5.0).clamp(1.0, 20.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(requests: u64) -> Counts {
        Counts {
            requests,
            ..Counts::default()
        }
    }

    #[test]
    fn a_marked_window_is_answered_after_its_steps_are_dropped() {
        let mut sums = Sums::default();
        for t in 0..100 {
            sums.push(t, &step(1), &step(t as u64));
            sums.mark([10, 50]);
            sums.drop_before(t - 5);
        }
        assert_eq!(sums.entries.len(), 6, "only the last steps are kept");
        assert_eq!(sums.marks.len(), 2);
        let from_ten = sums.between(10, 99);
        assert_eq!(from_ten.baseline.requests, 90);
        assert_eq!(from_ten.candidate.requests, (10..100).sum::<u64>());
        assert_eq!(sums.between(50, 99).baseline.requests, 50);
        assert_eq!(sums.between(95, 99).baseline.requests, 5);
        assert_eq!(sums.between(96, 98).candidate.requests, 96 + 97 + 98);
        sums.mark([50]);
        assert_eq!(
            sums.marks.len(),
            1,
            "marks not asked for again are forgotten"
        );
    }
}
