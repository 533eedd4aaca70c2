//! What a guardian tells whoever watches it in-process (the demo, `deploy --watch`).

use rearguard_judge::Judgement;

use crate::ledger::Rollback;

#[derive(Debug, Clone)]
pub enum Progress {
    Deploying {
        app: String,
        version: String,
    },
    Watching {
        app: String,
        version: String,
    },
    /// The judge's view after one tick.
    Tick {
        app: String,
        version: String,
        judgement: Judgement,
    },
    Stable {
        app: String,
        version: String,
    },
    RollingBack {
        app: String,
        from: String,
        to: String,
        reason: String,
    },
    RolledBack {
        app: String,
        rollback: Rollback,
        verification: serde_json::Value,
    },
    RollbackFailed {
        app: String,
        to: String,
        why: String,
    },
    /// The release could not be deployed, or is bad with nothing to roll back to.
    Failed {
        app: String,
        version: String,
        why: String,
    },
}
