//! What the guard counts about itself: tick durations, the judge's decisions, ledger
//! errors. Exposed on `/metrics` when the server runs in the guard's process
//! (`rearguard guard --listen`); figures kept in the ledger are exposed by any server.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rearguard_judge::Verdict;

type Labels = Vec<(&'static str, String)>;

fn tick_histogram() -> Histogram {
    // 1 ms to 10 s: a tick is a few ledger writes, unless a backend or a check is slow.
    Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0])
}

pub struct GuardMetrics {
    ticks: Family<Labels, Histogram, fn() -> Histogram>,
    decisions: Family<Labels, Counter>,
    ledger_errors: Counter,
}

impl Default for GuardMetrics {
    fn default() -> Self {
        Self {
            ticks: Family::new_with_constructor(tick_histogram),
            decisions: Family::default(),
            ledger_errors: Counter::default(),
        }
    }
}

impl GuardMetrics {
    pub fn tick(&self, app: &str, seconds: f64) {
        self.ticks
            .get_or_create(&vec![("app", app.to_string())])
            .observe(seconds);
    }

    /// One judged step's verdict.
    pub fn decision(&self, app: &str, verdict: &Verdict) {
        let decision = match verdict {
            Verdict::Keep => "keep",
            Verdict::Wait { .. } => "wait",
            Verdict::Rollback(_) => "rollback",
        };
        self.decisions
            .get_or_create(&vec![
                ("app", app.to_string()),
                ("decision", decision.to_string()),
            ])
            .inc();
    }

    pub fn ledger_error(&self) {
        self.ledger_errors.inc();
    }

    /// Adds these to `registry` (they keep counting there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "guard_tick_seconds",
            "How long each guard tick took, by app",
            self.ticks.clone(),
        );
        registry.register(
            "judge_decisions",
            "The judge's verdict at each judged step, by app and decision",
            self.decisions.clone(),
        );
        registry.register(
            "ledger_errors",
            "Guard ticks that failed on the ledger",
            self.ledger_errors.clone(),
        );
    }
}
