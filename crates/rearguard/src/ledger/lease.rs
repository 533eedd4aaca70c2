//! Who may act on an app: the lease decision, pure so it can be tested on its own.

use super::Lease;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Nobody holds a live lease: take it.
    Acquire,
    /// We hold it: extend it.
    Renew,
    /// Someone else holds a live lease: keep off.
    Yield,
}

/// Decides on the lease given the current one, who we are, the time, and whether its
/// holder (if another) is still running.
pub fn decide_lease(
    current: Option<&Lease>,
    me: &str,
    now: i64,
    holder_alive: bool,
) -> LeaseDecision {
    match current {
        None => LeaseDecision::Acquire,
        Some(lease) if lease.holder == me => LeaseDecision::Renew,
        Some(lease) if lease.expires_at <= now || !holder_alive => LeaseDecision::Acquire,
        Some(_) => LeaseDecision::Yield,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_live_lease_of_another_is_never_taken(expires in 0i64..1000, now in 0i64..1000) {
            let lease = Lease { holder: "other".into(), expires_at: expires, epoch: 1 };
            let decision = decide_lease(Some(&lease), "me", now, true);
            prop_assert_eq!(decision == LeaseDecision::Yield, now < expires);
        }

        #[test]
        fn our_own_lease_is_always_renewed(expires in 0i64..1000, now in 0i64..1000, alive: bool) {
            let lease = Lease { holder: "me".into(), expires_at: expires, epoch: 1 };
            prop_assert_eq!(decide_lease(Some(&lease), "me", now, alive), LeaseDecision::Renew);
        }
    }

    #[test]
    fn a_dead_holder_loses_its_lease_at_once() {
        let lease = Lease {
            holder: "other".into(),
            expires_at: 10_000,
            epoch: 1,
        };
        assert_eq!(
            decide_lease(Some(&lease), "me", 0, false),
            LeaseDecision::Acquire
        );
    }
}
