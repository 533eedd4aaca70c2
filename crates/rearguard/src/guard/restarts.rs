//! When to restart a serving version whose process died: at once the first time, then
//! after a growing pause, and at most `LIMIT` times within `WINDOW_MS`; past that,
//! restarts do not help and people must be told. Pure bookkeeping over times, no IO.

use std::collections::VecDeque;

/// Restarts allowed within the window before restarts are deemed not to help.
pub const LIMIT: usize = 3;
/// The window the limit counts over.
pub const WINDOW_MS: i64 = 5 * 60 * 1000;
/// Pause before the n-th restart in the window (then the last one, repeated).
const BACKOFF_MS: [i64; 4] = [0, 1_000, 4_000, 15_000];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not yet: the backoff runs until the given time.
    Wait,
    /// Restart now; the attempt's number within the window (1-based).
    Restart(usize),
    /// The limit is reached: restarts do not help. Said once per streak; restarts go on at
    /// the longest pause in case the cause goes away.
    GiveUp,
}

/// The restarts of one version.
#[derive(Debug, Default)]
pub struct Restarts {
    /// When each restart in the window happened.
    recent: VecDeque<i64>,
    /// No restart before this time.
    not_before: i64,
    gave_up: bool,
}

impl Restarts {
    /// Whether no restart happened within the window before `now`: a release that died
    /// recently is not promoted.
    pub fn quiet(&self, now: i64) -> bool {
        self.recent.back().is_none_or(|&at| at <= now - WINDOW_MS)
    }

    /// What to do about a dead instance at `now`.
    pub fn decide(&mut self, now: i64) -> Decision {
        while self.recent.front().is_some_and(|&at| at <= now - WINDOW_MS) {
            self.recent.pop_front();
        }
        if self.recent.is_empty() {
            self.gave_up = false;
        }
        if now < self.not_before {
            return Decision::Wait;
        }
        if self.recent.len() >= LIMIT && !self.gave_up {
            self.gave_up = true;
            return Decision::GiveUp;
        }
        self.recent.push_back(now);
        let attempt = self.recent.len();
        self.not_before = now + BACKOFF_MS[attempt.min(BACKOFF_MS.len() - 1)];
        Decision::Restart(attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_then_give_up_once_and_recover_after_a_quiet_window() {
        let mut restarts = Restarts::default();
        assert_eq!(restarts.decide(0), Decision::Restart(1));
        assert_eq!(restarts.decide(500), Decision::Wait, "1 s backoff");
        assert_eq!(restarts.decide(1_000), Decision::Restart(2));
        assert_eq!(restarts.decide(4_000), Decision::Wait, "4 s backoff");
        assert_eq!(restarts.decide(5_000), Decision::Restart(3));
        assert_eq!(restarts.decide(20_000), Decision::GiveUp);
        // Said once; restarts go on at the longest pause.
        assert_eq!(restarts.decide(20_000), Decision::Restart(4));
        assert_eq!(restarts.decide(30_000), Decision::Wait);
        assert_eq!(restarts.decide(35_000), Decision::Restart(5));
        assert!(!restarts.quiet(35_000 + WINDOW_MS - 1));
        assert!(restarts.quiet(35_000 + WINDOW_MS));
        // Five quiet minutes later a death starts a new streak.
        assert_eq!(restarts.decide(35_000 + WINDOW_MS), Decision::Restart(1));
    }
}
