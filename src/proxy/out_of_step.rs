//! An upstream that sends bytes no request asked for — on an idle
//! keep-alive connection, or after a complete response — is out of step:
//! whatever it sends next on a reused connection may be read as the
//! answer to another client's request. The connection showing it is
//! closed (the caller's job); this says for how long the upstream's
//! connections are then used for one request each (no reuse): 10 s at the
//! first sign, doubling with each sign while it lasts, up to 10 minutes,
//! forgotten after 10 quiet minutes. nginx and HAProxy close such a
//! connection too but go on reusing the others (docs/proxying.md).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// No reuse for this long after the first sign.
const FIRST_MS: u64 = 10_000;
/// The longest a no-reuse period gets.
const LONGEST_MS: u64 = 600_000;
/// A sign this long after the last one starts again from [`FIRST_MS`].
const FORGET_AFTER_MS: u64 = 600_000;

#[derive(Debug, Default)]
pub struct OutOfStep {
    /// Connections are not reused until this `now_ms`; 0: reuse.
    no_reuse_until_ms: AtomicU64,
    /// Signs in a row (each within FORGET_AFTER_MS of the last).
    signs: AtomicU32,
    last_sign_ms: AtomicU64,
}

impl OutOfStep {
    /// The upstream sent unsolicited bytes at `now_ms`: how long its
    /// connections now go unreused, in ms.
    pub fn sign(&self, now_ms: u64) -> u64 {
        let last = self.last_sign_ms.swap(now_ms, Ordering::AcqRel);
        let signs = if last != 0 && now_ms.saturating_sub(last) < FORGET_AFTER_MS {
            self.signs.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.signs.store(1, Ordering::Release);
            1
        };
        let period = FIRST_MS
            .saturating_mul(1 << (signs - 1).min(16))
            .min(LONGEST_MS);
        self.no_reuse_until_ms
            .fetch_max(now_ms.saturating_add(period), Ordering::AcqRel);
        period
    }

    /// May a connection to the upstream carry another request now? Asked
    /// on every request, so `now_ms` is read only for an upstream that was
    /// ever out of step.
    pub fn reuse_allowed(&self, now_ms: impl FnOnce() -> u64) -> bool {
        let until = self.no_reuse_until_ms.load(Ordering::Acquire);
        until == 0 || now_ms() >= until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_reuse_doubles_with_each_sign_and_is_forgotten_when_quiet() {
        let o = OutOfStep::default();
        assert!(o.reuse_allowed(|| unreachable!("never out of step: no clock")));
        assert_eq!(o.sign(1_000), 10_000);
        assert!(!o.reuse_allowed(|| 10_999));
        assert!(o.reuse_allowed(|| 11_000));
        assert_eq!(o.sign(20_000), 20_000);
        assert_eq!(o.sign(25_000), 40_000);
        assert!(!o.reuse_allowed(|| 64_999));
        for n in 0..20 {
            o.sign(30_000 + n);
        }
        assert_eq!(o.sign(31_000), LONGEST_MS);
        // Ten quiet minutes after the last sign: back to the first period.
        assert_eq!(o.sign(31_000 + FORGET_AFTER_MS), FIRST_MS);
    }
}
