//! One route's shadow-traffic figures: copies in flight, copies by outcome,
//! and the last differences between a shadow's answer and the client's.
//! Shared by the hot path (which only counts skips), the copies' own tasks
//! (which compare) and status; kept across table rebuilds like
//! `TrafficStats`. Imports nothing of the crate.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Differences kept per route, newest last.
pub const RECENT: usize = 10;

/// How one copy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Both answers agree on everything compared.
    Same,
    Differs,
    /// The shadow gave no answer: no upstream, no connection, timeout.
    Failed,
    /// Not sent or not judged: over the in-flight bound, a body over
    /// `max_body`, or a client request that never completed.
    Skipped,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Same,
        Outcome::Differs,
        Outcome::Failed,
        Outcome::Skipped,
    ];

    /// The `outcome` label of `cutover_mirror_total`.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Same => "same",
            Outcome::Differs => "differs",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// What is kept of one answer: never its body or cookies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnswerSummary {
    pub status: u16,
    /// SHA-256 of the body, hex, when bodies are compared and the body
    /// fitted in `max_body`.
    pub body_sha256: Option<String>,
    /// Body bytes read (up to `max_body` and one chunk past it).
    pub body_bytes: u64,
}

/// A request whose shadow answered differently.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub at_ms: u64,
    pub method: String,
    /// Without the query string, which may carry secrets.
    pub path: String,
    pub primary: AnswerSummary,
    pub shadow: AnswerSummary,
}

#[derive(Debug, Default)]
pub struct ShadowStats {
    in_flight: AtomicU32,
    counts: [AtomicU64; 4],
    // Locked once per difference, by a copy's task or by status; never on
    // the client's path.
    recent: Mutex<VecDeque<Difference>>,
}

/// A copy in flight; ends when dropped.
#[derive(Debug)]
pub struct InFlightCopy(Arc<ShadowStats>);

impl Drop for InFlightCopy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ShadowStats {
    /// A place for one more copy, unless `max` are in flight already.
    pub fn try_start(self: &Arc<Self>, max: u32) -> Option<InFlightCopy> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlightCopy(Arc::clone(self)))
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn count(&self, outcome: Outcome) {
        self.counts[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Copies compared with the client's answer so far, and how many of
    /// them differed (a rollout's `max_shadow_diff_rate`).
    pub fn compared(&self) -> (u64, u64) {
        let of = |o: Outcome| self.counts[o as usize].load(Ordering::Relaxed);
        let differs = of(Outcome::Differs);
        (of(Outcome::Same) + differs, differs)
    }

    /// Copies so far by outcome.
    pub fn counts(&self) -> [(Outcome, u64); 4] {
        Outcome::ALL.map(|o| (o, self.counts[o as usize].load(Ordering::Relaxed)))
    }

    pub fn record_difference(&self, d: Difference) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(d);
        }
    }

    /// The last differences, newest last.
    pub fn recent(&self) -> Vec<Difference> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_holds_and_frees_on_drop() {
        let s = Arc::new(ShadowStats::default());
        let a = s.try_start(2).unwrap();
        let _b = s.try_start(2).unwrap();
        assert!(s.try_start(2).is_none());
        drop(a);
        assert_eq!(s.in_flight(), 1);
        assert!(s.try_start(2).is_some());
    }

    #[test]
    fn only_the_last_differences_are_kept() {
        let s = ShadowStats::default();
        let answer = |status| AnswerSummary {
            status,
            body_sha256: None,
            body_bytes: 0,
        };
        for i in 0..(RECENT as u64 + 3) {
            s.record_difference(Difference {
                at_ms: i,
                method: "GET".into(),
                path: "/".into(),
                primary: answer(200),
                shadow: answer(500),
            });
        }
        let recent = s.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].at_ms, 3);
    }
}
