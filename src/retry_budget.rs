//! A route's retry budget: its requests and retries over the last ten
//! seconds, in one-second slots of atomics, so retries stay under a share
//! of the requests and a failing pool never gets several times its load.
//! Imports nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Seconds the window spans, one slot each.
const WINDOW_SECONDS: u64 = 10;

#[derive(Debug)]
pub struct RetryBudget {
    born: Instant,
    slots: [Slot; WINDOW_SECONDS as usize],
}

#[derive(Debug, Default)]
struct Slot {
    /// The second (since `born`) the counts are of, plus one: 0 = unused.
    second: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            born: Instant::now(),
            slots: Default::default(),
        }
    }
}

impl RetryBudget {
    /// Counts a request of the route (a first attempt).
    pub fn request(&self) {
        self.current().requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a retry if retries over the window stay within `share` of the
    /// requests (and in any case up to `floor`); `false` when spent.
    pub fn try_retry(&self, share: f64, floor: u64) -> bool {
        let now = self.second();
        let (mut requests, mut retries) = (0u64, 0u64);
        for slot in &self.slots {
            let second = slot.second.load(Ordering::Relaxed);
            if second != 0 && second + WINDOW_SECONDS > now {
                requests += slot.requests.load(Ordering::Relaxed);
                retries += slot.retries.load(Ordering::Relaxed);
            }
        }
        let allowed = ((requests as f64 * share) as u64).max(floor);
        if retries >= allowed {
            return false;
        }
        self.current().retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn second(&self) -> u64 {
        self.born.elapsed().as_secs() + 1
    }

    /// This second's slot, emptied first if it held an older second.
    /// Two threads crossing into a new second may lose a count to the
    /// reset: the budget is a bound, not a ledger.
    fn current(&self) -> &Slot {
        let now = self.second();
        let slot = &self.slots[(now % WINDOW_SECONDS) as usize];
        if slot.second.load(Ordering::Relaxed) != now
            && slot.second.swap(now, Ordering::Relaxed) != now
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_share_of_requests_above_the_floor() {
        let budget = RetryBudget::default();
        // No requests yet: the floor alone.
        assert!((0..3).all(|_| budget.try_retry(0.2, 3)));
        assert!(!budget.try_retry(0.2, 3));
        for _ in 0..100 {
            budget.request();
        }
        // 20 % of 100 = 20 retries in the window, 3 already taken.
        let more = (0..100).filter(|_| budget.try_retry(0.2, 3)).count();
        assert_eq!(more, 17);
    }
}
