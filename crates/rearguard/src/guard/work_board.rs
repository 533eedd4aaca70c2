//! Which apps have work waiting (a rollback to perform, a release to deploy), read for all
//! apps at once: each guardian asks every tick, and at thousands of apps a query each was
//! most of the database's load. A guardian takes an answer read after its tick began
//! (as fresh as its own query would have been), or reads it anew for everyone.

use std::collections::BTreeMap;

use tokio::sync::Mutex;

use crate::ledger::{Ledger, LedgerError, WorkWaiting};

#[derive(Default)]
pub struct WorkBoard {
    /// When the last answer was read (epoch milliseconds, taken before the query), and it.
    last: Mutex<(i64, BTreeMap<String, WorkWaiting>)>,
}

impl WorkBoard {
    /// What waits for `app`, read at `since` or later. One guardian reads at a time; those
    /// who waited for it take its answer.
    pub async fn of(
        &self,
        ledger: &Ledger,
        app: &str,
        since: i64,
    ) -> Result<WorkWaiting, LedgerError> {
        let mut last = self.last.lock().await;
        if last.0 < since {
            let read_at = ledger.now();
            *last = (read_at, ledger.work_waiting().await?);
        }
        Ok(last.1.get(app).copied().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    #[tokio::test]
    async fn an_answer_read_before_the_tick_began_is_read_again() {
        let clock = FakeClock::at(1_000);
        let (ledger, _dir) = Ledger::temporary(clock.clone()).await;
        let board = WorkBoard::default();
        assert_eq!(
            board.of(&ledger, "shop", 1_000).await.unwrap(),
            WorkWaiting::default()
        );
        ledger.record_release("shop", "v1", "test").await.unwrap();
        // Read at 1,000: fresh enough for a tick that began then, not for a later one.
        assert!(!board.of(&ledger, "shop", 1_000).await.unwrap().release);
        clock.advance(std::time::Duration::from_millis(10));
        assert!(board.of(&ledger, "shop", 1_010).await.unwrap().release);
        assert!(!board.of(&ledger, "cart", 1_010).await.unwrap().release);
    }
}
