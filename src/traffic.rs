//! Live traffic figures of one route's pool, for rollout analysis: request
//! and error counts and a latency histogram, all atomics the hot path bumps
//! once per request. Readers take snapshots and compare two of them to get
//! a window's request count, error rate and p99. Imports nothing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Below this many microseconds each microsecond has its own bucket.
const LINEAR: u64 = 16;
/// Sub-buckets per power of two above that: ~6 % resolution (what the
/// rollout's latency test can tell apart; `rollout::sequential`).
const SUB_BITS: u32 = 4;
/// Powers of two from 16 µs up to ~9.5 hours.
const OCTAVES: usize = 32;
const BUCKETS: usize = LINEAR as usize + OCTAVES * (1 << SUB_BITS);

/// Counts for one (route, pool).
pub struct TrafficStats {
    requests: AtomicU64,
    errors: AtomicU64,
    /// 4xx answers (`max_4xx_rate`): a release that breaks a form or a
    /// token answers them, not 5xx.
    client_errors: AtomicU64,
    /// Responses by duration bucket (see [`bucket_of`]).
    latency: Box<[AtomicU64]>,
}

impl std::fmt::Debug for TrafficStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrafficStats")
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .field("errors", &self.errors.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for TrafficStats {
    fn default() -> Self {
        TrafficStats {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            latency: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// The bucket of a duration of `micros` µs: linear below 16 µs, then 16
/// buckets per power of two.
fn bucket_of(micros: u64) -> usize {
    if micros < LINEAR {
        return micros as usize;
    }
    let octave = 63 - micros.leading_zeros(); // >= 4
    let sub = (micros >> (octave - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    let index = LINEAR as usize + (octave as usize - 4) * (1 << SUB_BITS) + sub as usize;
    index.min(BUCKETS - 1)
}

/// The largest duration (µs) a bucket holds.
fn bucket_upper(index: usize) -> u64 {
    if index < LINEAR as usize {
        return index as u64;
    }
    let i = index - LINEAR as usize;
    let octave = (i >> SUB_BITS) as u32 + 4;
    let sub = (i & ((1 << SUB_BITS) - 1)) as u64;
    let width = 1u64 << (octave - SUB_BITS);
    (1u64 << octave) + (sub + 1) * width - 1
}

impl TrafficStats {
    /// One finished response: how long it took and whether it failed (a 5xx
    /// from the upstream, or cutover's own 502/504 for it).
    pub fn record(&self, elapsed: Duration, failed: bool) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// One finished response by its status: a 5xx failed, a 4xx is the
    /// client's (counted apart), anything else passed.
    pub fn record_status(&self, elapsed: Duration, status: u16) {
        if (400..500).contains(&status) {
            self.client_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.record(elapsed, status >= 500);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            client_errors: self.client_errors.load(Ordering::Relaxed),
            latency: self
                .latency
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// The counters at one moment. In a fleet, each instance publishes those
/// of running rollouts, and the rollout driver adds them up.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub requests: u64,
    pub errors: u64,
    /// Absent from an older instance's published counters: none.
    #[serde(default)]
    pub client_errors: u64,
    latency: Vec<u64>,
}

/// What happened between two snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub requests: u64,
    pub errors: u64,
    /// 4xx answers.
    pub client_errors: u64,
    /// The median, 95th and 99th percentile durations; `None` without
    /// requests.
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
    pub p99: Option<Duration>,
}

impl Window {
    /// Errors per request; 0 without requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

impl Snapshot {
    /// Two pools' counters as one.
    pub fn plus(&self, other: &Snapshot) -> Snapshot {
        let len = self.latency.len().max(other.latency.len());
        let at = |v: &Vec<u64>, i: usize| v.get(i).copied().unwrap_or(0);
        Snapshot {
            requests: self.requests + other.requests,
            errors: self.errors + other.errors,
            client_errors: self.client_errors + other.client_errors,
            latency: (0..len)
                .map(|i| at(&self.latency, i) + at(&other.latency, i))
                .collect(),
        }
    }

    /// Adds `responses` that took `elapsed`, `errors` of them failed, as
    /// [`TrafficStats::record`] would one by one (simulations feed the
    /// rollout judge this way: benches/rollout_judge.rs).
    pub fn add(&mut self, elapsed: Duration, responses: u64, errors: u64) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.requests += responses;
        self.errors += errors.min(responses);
        if self.latency.len() < BUCKETS {
            self.latency.resize(BUCKETS, 0);
        }
        self.latency[bucket_of(micros)] += responses;
    }

    /// The latency histogram from `earlier` to this snapshot.
    pub fn latencies_since(&self, earlier: &Snapshot) -> Latencies {
        Latencies {
            counts: self
                .latency
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(earlier.latency.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// The window from `earlier` to this snapshot. Counters only grow; a
    /// smaller one (stats replaced) counts as zero.
    pub fn since(&self, earlier: &Snapshot) -> Window {
        let latencies = self.latencies_since(earlier);
        Window {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            client_errors: self.client_errors.saturating_sub(earlier.client_errors),
            p50: latencies.quantile(0.5),
            p95: latencies.quantile(0.95),
            p99: latencies.quantile(0.99),
        }
    }
}

/// Responses by duration over a window, in the buckets [`TrafficStats`]
/// keeps (each about 6 % wide).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latencies {
    counts: Vec<u64>,
}

impl Latencies {
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Each bucket, fastest first: the longest duration it holds, and how
    /// many responses took up to that long (and longer than the bucket
    /// before's).
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, n)| (Duration::from_micros(bucket_upper(i)), *n))
    }

    /// The `q` quantile: the smallest bucket bound with at least that share
    /// of responses at or below it; `None` without responses.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        // Ceil, in integers where the share is exact (0.99 of 100 is 99).
        let wanted = ((q * total as f64) - 1e-9).ceil().max(1.0) as u64;
        let mut seen = 0;
        let index = self
            .counts
            .iter()
            .position(|n| {
                seen += n;
                seen >= wanted
            })
            .unwrap_or(BUCKETS - 1);
        Some(Duration::from_micros(bucket_upper(index)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_hold_their_values() {
        let mut last = 0;
        for micros in (0..2_000_000u64).step_by(7).chain([u64::MAX / 2]) {
            let b = bucket_of(micros);
            assert!(b >= last, "{micros}");
            last = b;
            if b < BUCKETS - 1 {
                assert!(micros <= bucket_upper(b), "{micros} above bucket {b}");
                assert!(b == 0 || micros > bucket_upper(b - 1), "{micros} below {b}");
            }
        }
    }

    #[test]
    fn added_responses_count_like_recorded_ones() {
        let stats = TrafficStats::default();
        let mut added = Snapshot::default();
        for (ms, n, failed) in [(3u64, 40u64, 2u64), (250, 10, 0)] {
            for i in 0..n {
                stats.record(Duration::from_millis(ms), i < failed);
            }
            added.add(Duration::from_millis(ms), n, failed);
        }
        assert_eq!(added, stats.snapshot());
        let l = added.latencies_since(&Snapshot::default());
        assert_eq!(l.total(), 50);
        assert!(l.quantile(0.5).unwrap() < Duration::from_millis(4));
        assert!(l.quantile(0.9).unwrap() >= Duration::from_millis(250));
        let slow: u64 = l
            .buckets()
            .filter(|(upper, _)| *upper >= Duration::from_millis(250))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(slow, 10);
    }

    #[test]
    fn window_error_rate_and_p99() {
        let stats = TrafficStats::default();
        let start = stats.snapshot();
        for i in 0..1000u64 {
            // 1 % at 800 ms, the rest at 10 ms; one in ten fails.
            let ms = if i % 100 == 0 { 800 } else { 10 };
            stats.record(Duration::from_millis(ms), i % 10 == 0);
        }
        let w = stats.snapshot().since(&start);
        assert_eq!((w.requests, w.errors), (1000, 100));
        assert!((w.error_rate() - 0.1).abs() < 1e-9);
        let p99 = w.p99.unwrap();
        // 99 % are at 10 ms: the p99 is 10 ms within a bucket's width.
        assert!(
            p99 >= Duration::from_millis(10) && p99 < Duration::from_micros(11_300),
            "{p99:?}"
        );
        for _ in 0..20 {
            stats.record(Duration::from_millis(800), false);
        }
        let w = stats.snapshot().since(&start);
        assert!(w.p99.unwrap() >= Duration::from_millis(800), "{w:?}");
        assert_eq!(stats.snapshot().since(&stats.snapshot()).p99, None);
    }
}
