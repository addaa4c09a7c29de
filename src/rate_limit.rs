//! A route's rate limit: token buckets by key (a client's address, a
//! header's value, or one for the whole route), refilled at the route's
//! rate up to its burst. Buckets live in a few locked shards so clients
//! rarely meet on a lock, and their number is bounded: idle (full)
//! buckets are forgotten when a shard fills. Imports nothing.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Keys one shard remembers; beyond, new keys share one bucket until idle
/// ones are forgotten (a flood of new addresses cannot grow memory).
const KEYS_PER_SHARD: usize = 8_192;

#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens per second.
    rate: f64,
    burst: f64,
    born: Instant,
    /// Keyed SipHash: a client cannot choose keys that collide.
    hasher: RandomState,
    shards: [Mutex<Shard>; SHARDS],
}

#[derive(Debug, Default)]
struct Shard {
    buckets: HashMap<u64, Bucket>,
    /// When idle buckets were last forgotten: a full shard is swept at
    /// most once a second, not at every new key.
    swept_at: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// Seconds since `born` when `tokens` was right.
    at: f64,
}

/// The key every request shares when there is nothing to tell them by,
/// or when a shard is full.
const SHARED: u64 = 0;

impl RateLimiter {
    /// `requests` per `per`, at most `burst` at once.
    pub fn new(requests: u32, per: Duration, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(requests) / per.as_secs_f64().max(1e-3),
            burst: f64::from(burst),
            born: Instant::now(),
            hasher: RandomState::new(),
            shards: Default::default(),
        }
    }

    /// Takes a token from `key`'s bucket (`None`: the shared one): `Ok`,
    /// or `Err` with how long until one is there.
    pub fn take(&self, key: Option<impl Hash>) -> Result<(), Duration> {
        let hash = key.map_or(SHARED, |k| self.hasher.hash_one(k) | 1);
        let now = self.born.elapsed().as_secs_f64();
        let shard = &self.shards[(hash >> 56) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let full = shard.buckets.len() >= KEYS_PER_SHARD;
        if full && now - shard.swept_at >= 1.0 && !shard.buckets.contains_key(&hash) {
            self.forget_idle(&mut shard.buckets, now);
            shard.swept_at = now;
        }
        let hash = if shard.buckets.len() >= KEYS_PER_SHARD && !shard.buckets.contains_key(&hash) {
            SHARED
        } else {
            hash
        };
        let bucket = shard.buckets.entry(hash).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = (bucket.tokens + (now - bucket.at) * self.rate).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
    }

    /// Drops buckets that have refilled: remembering them changes nothing.
    fn forget_idle(&self, buckets: &mut HashMap<u64, Bucket>, now: f64) {
        buckets.retain(|_, b| b.tokens + (now - b.at) * self.rate < self.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_for_the_rate() {
        let limiter = RateLimiter::new(10, Duration::from_secs(1), 3);
        for _ in 0..3 {
            assert!(limiter.take(Some("a")).is_ok());
        }
        let wait = limiter.take(Some("a")).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // Another key has its own bucket; `None` shares one.
        assert!(limiter.take(Some("b")).is_ok());
        assert!(limiter.take(None::<&str>).is_ok());
    }

    #[test]
    fn many_keys_stay_bounded() {
        let limiter = RateLimiter::new(1, Duration::from_secs(3600), 1);
        for i in 0..(SHARDS * KEYS_PER_SHARD * 2) as u64 {
            let _ = limiter.take(Some(i));
        }
        let kept: usize = limiter
            .shards
            .iter()
            .map(|s| s.lock().unwrap().buckets.len())
            .sum();
        assert!(kept <= SHARDS * (KEYS_PER_SHARD + 1), "{kept}");
    }
}
