//! Live state of one upstream: in-flight count, health, ejection, drain and
//! disable flags. All atomics, so the hot path reads them without a lock.
//! Imports no sibling module.
//!
//! A `UpstreamState` is shared by `Arc` between successive routing tables: a
//! rebuild (weight change, reload) hands the same state to the new table, so
//! counters and flags survive it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::HeaderValue;

use crate::queue::Queue;

/// Milliseconds on a monotonic clock private to this process, never 0.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// What active health checks last concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Checked pool, no verdict yet: takes no traffic.
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Health::Unknown => 0,
            Health::Healthy => 1,
            Health::Unhealthy => 2,
        }
    }
}

#[derive(Debug)]
pub struct UpstreamState {
    addr: SocketAddr,
    /// The address as a `Host` value, built once, for requests that
    /// arrive without one (HTTP/1.0).
    host_header: HeaderValue,
    /// The address as text, for metric labels and logs.
    label: Arc<str>,
    in_flight: AtomicUsize,
    /// Upgraded connections (WebSocket…) open to it now.
    tunnels: AtomicUsize,
    health: AtomicU8,
    /// When the upstream last became healthy (`now_ms`), for slow start.
    healthy_since_ms: AtomicU64,
    disabled: AtomicBool,
    draining: AtomicBool,
    /// Until when sticky clients may still use a draining upstream; 0 = none.
    drain_deadline_ms: AtomicU64,
    /// Passive outlier detection.
    consecutive_failures: AtomicU32,
    consecutive_successes: AtomicU32,
    ejections: AtomicU32,
    /// Ejected until this `now_ms`; 0 = not ejected.
    ejected_until_ms: AtomicU64,
    /// After an ejection in a checked pool, a passing probe is needed too.
    probe_pending: AtomicBool,
    /// Requests answered (any status) and failed (5xx, connect, timeout),
    /// for rates on the status page.
    requests: AtomicU64,
    errors: AtomicU64,
    /// Its pool's queue, which a request ending here makes room in.
    queue: Arc<Queue>,
}

impl UpstreamState {
    /// A new upstream. In a pool with health checks it starts `Unknown` and
    /// takes traffic only once a check passes; otherwise it is healthy.
    pub fn new(addr: SocketAddr, checked: bool) -> Arc<Self> {
        Self::in_pool(addr, checked, Arc::default())
    }

    /// A new upstream of the pool whose queue is `queue`.
    pub fn in_pool(addr: SocketAddr, checked: bool, queue: Arc<Queue>) -> Arc<Self> {
        let health = if checked {
            Health::Unknown
        } else {
            Health::Healthy
        };
        Arc::new(UpstreamState {
            addr,
            // A SocketAddr always renders as a valid header value (IP:PORT
            // or [IPv6]:PORT); the fallback only keeps this free of a panic path.
            host_header: HeaderValue::try_from(addr.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("invalid.invalid")),
            label: Arc::from(addr.to_string()),
            in_flight: AtomicUsize::new(0),
            tunnels: AtomicUsize::new(0),
            health: AtomicU8::new(health.to_u8()),
            healthy_since_ms: AtomicU64::new(now_ms()),
            disabled: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            drain_deadline_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            consecutive_successes: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            probe_pending: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            queue,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    /// May this upstream be picked for a new (non-sticky) request?
    pub fn is_eligible(&self) -> bool {
        self.is_healthy()
            && !self.disabled.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && !self.is_ejected()
    }

    /// May a client pinned to this upstream (sticky cookie) keep using it?
    /// Yes while it is healthy, enabled, not ejected and, if draining, not
    /// past the drain deadline — even when its pool's weight is 0.
    pub fn accepts_sticky(&self) -> bool {
        self.is_healthy()
            && !self.disabled.load(Ordering::Relaxed)
            && !self.is_ejected()
            && (!self.draining.load(Ordering::Relaxed)
                || now_ms() < self.drain_deadline_ms.load(Ordering::Relaxed))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Upgraded connections open to it now.
    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Relaxed)
    }

    /// Counts an open tunnel until the guard drops.
    pub fn tunnel_opened(self: &Arc<Self>) -> TunnelOpen {
        self.tunnels.fetch_add(1, Ordering::Relaxed);
        TunnelOpen {
            upstream: Arc::clone(self),
        }
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    pub fn is_healthy(&self) -> bool {
        self.health() == Health::Healthy
    }

    /// Sets the health verdict; returns the previous one.
    pub fn set_health(&self, health: Health) -> Health {
        let before = Health::from_u8(self.health.swap(health.to_u8(), Ordering::Relaxed));
        if health == Health::Healthy && before != Health::Healthy {
            self.healthy_since_ms.store(now_ms(), Ordering::Relaxed);
        }
        if health == Health::Healthy {
            // A passing probe is what an ejected upstream of a checked pool waits for.
            self.probe_pending.store(false, Ordering::Relaxed);
        }
        before
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.set_health(if healthy {
            Health::Healthy
        } else {
            Health::Unhealthy
        });
    }

    pub fn set_disabled(&self, disabled: bool) {
        self.disabled.store(disabled, Ordering::Relaxed);
    }

    /// Starts (or ends, with `None`) a drain. Sticky clients may use the
    /// upstream until `deadline_ms` (`now_ms` clock).
    pub fn set_draining(&self, deadline_ms: Option<u64>) {
        self.drain_deadline_ms
            .store(deadline_ms.unwrap_or(0), Ordering::Relaxed);
        self.draining
            .store(deadline_ms.is_some(), Ordering::Relaxed);
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Resolves once the upstream is draining past its deadline, looked
    /// at every second: what ends its tunnels and its responses still
    /// streaming.
    pub async fn drain_deadline_reached(self: Arc<Self>) {
        let mut check = tokio::time::interval(Duration::from_secs(1));
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            check.tick().await;
            if self.is_draining() && self.drain_deadline_passed() {
                return;
            }
        }
    }

    /// Has the drain deadline passed (or was there none)?
    pub fn drain_deadline_passed(&self) -> bool {
        now_ms() >= self.drain_deadline_ms.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && (now_ms() < until || self.probe_pending.load(Ordering::Relaxed))
    }

    /// The weight to pick with: `weight`, ramped up over `slow_start` since
    /// the upstream last became healthy (from a tenth, so it gets some
    /// traffic at once).
    pub fn effective_weight(&self, weight: u32, slow_start: Option<Duration>) -> u32 {
        self.ramped(weight, slow_start)
    }

    /// `value` ramped up over `slow_start` since the upstream last became
    /// healthy: from a tenth (at least 1), whole once the ramp is over.
    fn ramped(&self, value: u32, slow_start: Option<Duration>) -> u32 {
        let Some(ramp) = slow_start else {
            return value;
        };
        let since = now_ms().saturating_sub(self.healthy_since_ms.load(Ordering::Relaxed));
        let ramp_ms = u64::try_from(ramp.as_millis()).unwrap_or(u64::MAX).max(1);
        if since >= ramp_ms || value == 0 {
            return value;
        }
        let share = (since as f64 / ramp_ms as f64).max(0.1);
        ((f64::from(value) * share).ceil() as u32).max(1)
    }

    /// Whether one more request fits under `max_in_flight` (none: always),
    /// ramped like the weight over `slow_start`.
    pub fn has_room(&self, max_in_flight: Option<u32>, slow_start: Option<Duration>) -> bool {
        max_in_flight.is_none_or(|max| self.in_flight() < self.ramped(max, slow_start) as usize)
    }

    /// Counts a request as in flight if it fits under `max_in_flight` (see
    /// [`has_room`](Self::has_room)); taken atomically, so two requests
    /// never both take the last place.
    pub fn try_start_request(
        self: &Arc<Self>,
        max_in_flight: Option<u32>,
        slow_start: Option<Duration>,
    ) -> Option<InFlight> {
        let Some(max) = max_in_flight else {
            return Some(self.start_request());
        };
        let limit = self.ramped(max, slow_start) as usize;
        self.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(InFlight {
            upstream: Arc::clone(self),
        })
    }

    /// (requests, failures) forwarded to this upstream so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            upstream: Arc::clone(self),
        }
    }

    /// Records a live request's outcome for outlier detection. Returns the
    /// ejection time when this failure ejects the upstream; `may_eject`
    /// says whether the pool can spare one more ejected upstream.
    pub fn record_outcome(
        &self,
        ok: bool,
        rule: &OutlierRule,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Duration> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if rule.consecutive_failures == 0 {
            return None;
        }
        if ok {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            let streak = self.consecutive_successes.fetch_add(1, Ordering::Relaxed) + 1;
            // A long clean run forgets earlier ejections.
            if streak >= rule.consecutive_failures.saturating_mul(20) {
                self.ejections.store(0, Ordering::Relaxed);
            }
            return None;
        }
        self.consecutive_successes.store(0, Ordering::Relaxed);
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < rule.consecutive_failures || self.is_ejected() || !may_eject() {
            return None;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let n = self.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let time = rule
            .base_ejection
            .saturating_mul(1 << n)
            .min(rule.max_ejection);
        let until = now_ms().saturating_add(u64::try_from(time.as_millis()).unwrap_or(u64::MAX));
        self.probe_pending.store(rule.checked, Ordering::Relaxed);
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        Some(time)
    }
}

/// The outlier settings of the upstream's pool, as the hot path needs them.
#[derive(Debug, Clone)]
pub struct OutlierRule {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    /// Does the pool run active checks (then a probe must pass after an ejection)?
    pub checked: bool,
}

/// A request in flight to an upstream; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight {
    upstream: Arc<UpstreamState>,
}

/// An open tunnel to an upstream, counted until dropped.
pub struct TunnelOpen {
    upstream: Arc<UpstreamState>,
}

impl Drop for TunnelOpen {
    fn drop(&mut self) {
        self.upstream.tunnels.fetch_sub(1, Ordering::Relaxed);
    }
}

impl InFlight {
    pub fn upstream(&self) -> &Arc<UpstreamState> {
        &self.upstream
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // SeqCst: see `Queue::join` (free on x86: an RMW is a full fence).
        let before = self.upstream.in_flight.fetch_sub(1, Ordering::SeqCst);
        debug_assert!(before > 0, "in-flight count went below zero");
        self.upstream.queue.room_made();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(checked: bool) -> Arc<UpstreamState> {
        UpstreamState::new("127.0.0.1:1".parse().unwrap(), checked)
    }

    #[test]
    fn in_flight_follows_guards() {
        let u = upstream(false);
        let a = u.start_request();
        let b = u.start_request();
        assert_eq!(u.in_flight(), 2);
        drop(a);
        assert_eq!(u.in_flight(), 1);
        drop(b);
        assert_eq!(u.in_flight(), 0);
    }

    #[test]
    fn any_flag_makes_ineligible() {
        let u = upstream(false);
        assert!(u.is_eligible());
        u.set_disabled(true);
        assert!(!u.is_eligible());
        u.set_disabled(false);
        u.set_draining(Some(now_ms() + 60_000));
        assert!(!u.is_eligible());
        assert!(u.accepts_sticky(), "sticky clients stay until the deadline");
        u.set_draining(Some(0));
        assert!(!u.accepts_sticky());
        u.set_draining(None);
        u.set_healthy(false);
        assert!(!u.is_eligible());
        assert!(
            !upstream(true).is_eligible(),
            "checked upstreams start unknown"
        );
    }

    #[test]
    fn consecutive_failures_eject_with_growing_time() {
        let u = upstream(false);
        let rule = OutlierRule {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            checked: false,
        };
        assert_eq!(u.record_outcome(false, &rule, || true), None);
        assert_eq!(u.record_outcome(true, &rule, || true), None);
        assert_eq!(u.record_outcome(false, &rule, || true), None);
        assert_eq!(u.record_outcome(false, &rule, || true), None);
        assert_eq!(
            u.record_outcome(false, &rule, || true),
            Some(Duration::from_secs(10))
        );
        assert!(u.is_ejected() && !u.is_eligible());
        // Re-eject after the window: doubled, then capped.
        u.ejected_until_ms.store(1, Ordering::Relaxed);
        for _ in 0..2 {
            u.record_outcome(false, &rule, || true);
        }
        assert_eq!(
            u.record_outcome(false, &rule, || true),
            Some(Duration::from_secs(20))
        );
        u.ejected_until_ms.store(1, Ordering::Relaxed);
        for _ in 0..2 {
            u.record_outcome(false, &rule, || true);
        }
        assert_eq!(
            u.record_outcome(false, &rule, || true),
            Some(Duration::from_secs(25))
        );
        // The pool guard can refuse.
        u.ejected_until_ms.store(1, Ordering::Relaxed);
        for _ in 0..3 {
            assert_eq!(u.record_outcome(false, &rule, || false), None);
        }
    }

    #[test]
    fn checked_pools_need_a_probe_after_ejection() {
        let u = upstream(true);
        u.set_healthy(true);
        let rule = OutlierRule {
            consecutive_failures: 1,
            base_ejection: Duration::from_millis(1),
            max_ejection: Duration::from_millis(1),
            checked: true,
        };
        assert!(u.record_outcome(false, &rule, || true).is_some());
        u.ejected_until_ms.store(1, Ordering::Relaxed); // the time has passed
        assert!(u.is_ejected(), "still waiting for a passing probe");
        u.set_health(Health::Healthy);
        assert!(!u.is_ejected());
    }

    #[test]
    fn max_in_flight_is_held_and_ramps_with_slow_start() {
        let u = upstream(false);
        // No limit: always room.
        let free: Vec<_> = (0..5).map(|_| u.try_start_request(None, None)).collect();
        assert!(free.iter().all(Option::is_some));
        drop(free);
        // Just healthy, a one-hour ramp: a tenth of 20 at first.
        let ramp = Some(Duration::from_secs(3600));
        let a = u.try_start_request(Some(20), ramp).expect("first place");
        let b = u.try_start_request(Some(20), ramp).expect("second place");
        assert!(u.try_start_request(Some(20), ramp).is_none());
        assert!(!u.has_room(Some(20), ramp));
        // Without the ramp all 20.
        assert!(u.has_room(Some(20), None));
        drop((a, b));
        assert_eq!(u.in_flight(), 0);
        assert!(u.try_start_request(Some(20), ramp).is_some());
    }

    #[test]
    fn slow_start_ramps_from_a_tenth() {
        let u = upstream(false);
        let ramp = Some(Duration::from_secs(3600));
        assert_eq!(u.effective_weight(100, ramp), 10);
        assert_eq!(u.effective_weight(100, None), 100);
        u.healthy_since_ms.store(0, Ordering::Relaxed);
        assert_eq!(u.effective_weight(100, Some(Duration::from_millis(1))), 100);
    }
}
