//! The judge watching the current release. A watch is always built from the ledger: the
//! baseline's recorded history and whatever the candidate already served are replayed into
//! a new judge. So a fresh watch and one resumed after a restart are the same code, and a
//! restarted guard judges from exactly the steps an uninterrupted one would have seen.

use std::collections::BTreeMap;

use rearguard_judge::{
    Counts, Finding, Judge, Judgement, Mode, OutOfOrder, Policy, Setup, Step, Verdict,
};

use crate::ledger::{self, Ledger, LedgerError, Release};

/// Seconds of the baseline's traffic before the deploy that the judge takes as its history.
pub const HISTORY_SECONDS: i64 = 600;

pub struct Watch {
    pub release: Release,
    setup: ledger::Watch,
    judge: Judge,
    /// The last second fed to the judge.
    last_t: i64,
    pub last: Option<Judgement>,
    /// Set when a rollback is impossible (no known-good release): do not retry each tick.
    pub halted: bool,
    /// A rollback the recorded steps already decided (the guard died before acting on it).
    pub decided: Option<Finding>,
}

impl Watch {
    /// Builds the judge of `release` at `now_ms` from the steps in the ledger, which are
    /// `step_seconds` long.
    pub async fn load(
        ledger: &Ledger,
        release: Release,
        policy: &Policy,
        step_seconds: u32,
        now_ms: i64,
    ) -> Result<Self, LedgerError> {
        // A release that never took traffic under a watch (an old ledger) is judged from now,
        // with nothing to compare with.
        let setup = release.watch.clone().unwrap_or(ledger::Watch {
            mode: Mode::BlueGreen,
            baseline_version: None,
            judged_from: now_ms,
        });
        let now = now_ms.div_euclid(1000);
        let deploy_at = setup.judged_from.div_euclid(1000);
        let mut watch = Self {
            judge: Judge::new(
                policy.clone(),
                Setup {
                    mode: setup.mode,
                    deploy_at,
                    step_seconds,
                },
            ),
            release,
            setup,
            last_t: deploy_at - HISTORY_SECONDS - 1,
            last: None,
            halted: false,
            decided: None,
        };
        // The judge looks back no further than its lookback; older evidence has long been
        // reset by healthy stretches.
        let since = deploy_at.max(now - policy.lookback.whole_seconds());
        let mut seconds: BTreeMap<i64, BTreeMap<String, Counts>> = BTreeMap::new();
        let mut versions = vec![(watch.release.version.clone(), since)];
        if let Some(baseline) = &watch.setup.baseline_version {
            versions.push((baseline.clone(), deploy_at - HISTORY_SECONDS));
        }
        for (version, from) in versions {
            for step in ledger
                .steps(&watch.release.app, &version, from, now)
                .await?
            {
                seconds
                    .entry(step.t)
                    .or_default()
                    .insert(step.version, step.counts);
            }
        }
        // Every recorded step is complete (one is written once its time is over), the one
        // ending this second included: the source will not hand it over again.
        for (t, counts) in seconds.range(..=now) {
            if *t < deploy_at || *t >= since {
                // Steps come in order from a map: never out of order.
                if let Ok(Some(judgement)) = watch.observe(*t, counts)
                    && let Verdict::Rollback(finding) = judgement.verdict
                {
                    // A guard killed between recording a step and acting on its verdict:
                    // the decision stands, to be acted on now.
                    watch.decided = Some(finding);
                    break;
                }
            }
        }
        watch.last = None;
        Ok(watch)
    }

    pub fn mode(&self) -> Mode {
        self.setup.mode
    }

    /// The version the candidate is compared with side by side (canary only).
    pub fn canary_baseline(&self) -> Option<&str> {
        match self.setup.mode {
            Mode::Canary => self.setup.baseline_version.as_deref(),
            Mode::BlueGreen => None,
        }
    }

    /// The versions taking traffic under this watch.
    pub fn serving_versions(&self) -> Vec<String> {
        std::iter::once(self.release.version.clone())
            .chain(self.canary_baseline().map(str::to_string))
            .collect()
    }

    /// Feeds the judge what each version served in the second ending at `t`; `None` when
    /// that second was already judged or the watch is halted.
    pub fn observe(
        &mut self,
        t: i64,
        counts: &BTreeMap<String, Counts>,
    ) -> Result<Option<Judgement>, OutOfOrder> {
        if self.halted || t <= self.last_t {
            return Ok(None);
        }
        let of = |version: Option<&str>| {
            version
                .and_then(|v| counts.get(v))
                .copied()
                .unwrap_or_default()
        };
        // The baseline's traffic before the deploy is its history; after it, only a canary's
        // baseline serves beside the candidate.
        let baseline = if t < self.judge_deploy_at() {
            of(self.setup.baseline_version.as_deref())
        } else {
            of(self.canary_baseline())
        };
        let judgement = self.judge.observe(Step {
            t,
            baseline,
            candidate: of(Some(&self.release.version)),
        })?;
        self.last_t = t;
        self.last = Some(judgement.clone());
        Ok(Some(judgement))
    }

    /// When the release began to be judged (epoch milliseconds).
    pub fn judged_from_ms(&self) -> i64 {
        self.setup.judged_from
    }

    fn judge_deploy_at(&self) -> i64 {
        self.setup.judged_from.div_euclid(1000)
    }

    /// Where the history this watch is judged against starts: (version, first second).
    pub fn history(&self) -> Option<(&str, i64)> {
        self.setup
            .baseline_version
            .as_deref()
            .map(|v| (v, self.judge_deploy_at() - HISTORY_SECONDS))
    }
}
