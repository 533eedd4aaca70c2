//! Running sums over the recent steps, so any time window's totals cost a subtraction,
//! and the frozen picture of the replaced release's history taken at the deploy.

use std::collections::VecDeque;

use crate::counts::Counts;
use crate::stats::dispersion;

/// Length of the blocks used to measure how much the environment moves the rates.
const DISPERSION_BLOCK_SECONDS: i64 = 10;

#[derive(Clone, Copy)]
struct Entry {
    t: i64,
    /// Totals of every step up to and including this one (since the judge started).
    baseline: Counts,
    candidate: Counts,
}

/// Cumulative totals of the steps seen within the lookback.
#[derive(Default)]
pub struct Sums {
    entries: VecDeque<Entry>,
    /// Totals of the steps already dropped from the front.
    dropped: Carried,
}

#[derive(Default, Clone, Copy)]
struct Carried {
    baseline: Counts,
    candidate: Counts,
}

/// Totals of both versions over a window.
#[derive(Clone, Copy, Default, Debug)]
pub struct Totals {
    pub baseline: Counts,
    pub candidate: Counts,
}

impl Sums {
    pub fn push(&mut self, t: i64, baseline: &Counts, candidate: &Counts) {
        let (mut b, mut c) = match self.entries.back() {
            Some(last) => (last.baseline, last.candidate),
            None => (self.dropped.baseline, self.dropped.candidate),
        };
        b.add(baseline);
        c.add(candidate);
        self.entries.push_back(Entry {
            t,
            baseline: b,
            candidate: c,
        });
    }

    /// Forgets steps before `t`.
    pub fn drop_before(&mut self, t: i64) {
        while self.entries.front().is_some_and(|e| e.t < t) {
            let e = self.entries.pop_front().expect("checked above");
            self.dropped = Carried {
                baseline: e.baseline,
                candidate: e.candidate,
            };
        }
    }

    /// Totals over steps with `from <= t <= to`.
    pub fn between(&self, from: i64, to: i64) -> Totals {
        let start = self.entries.partition_point(|e| e.t < from);
        let end = self.entries.partition_point(|e| e.t <= to);
        self.by_index(start, end)
    }

    fn by_index(&self, start: usize, end: usize) -> Totals {
        if end <= start {
            return Totals::default();
        }
        let last = self.entries[end - 1];
        let before = match start {
            0 => self.dropped,
            _ => Carried {
                baseline: self.entries[start - 1].baseline,
                candidate: self.entries[start - 1].candidate,
            },
        };
        let (mut baseline, mut candidate) = (last.baseline, last.candidate);
        baseline.sub(&before.baseline);
        candidate.sub(&before.candidate);
        Totals {
            baseline,
            candidate,
        }
    }

    /// Per-block (events, requests) of the baseline over steps before `until`, with
    /// `events` chosen by the caller (errors, slow requests).
    pub fn baseline_blocks(&self, until: i64, events: impl Fn(&Counts) -> f64) -> Vec<(f64, f64)> {
        let mut blocks: Vec<(f64, f64)> = Vec::new();
        let mut current = None;
        let mut previous = self.dropped.baseline;
        for entry in self.entries.iter().take_while(|e| e.t < until) {
            let mut step = entry.baseline;
            step.sub(&previous);
            previous = entry.baseline;
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
