//! Live state of one upstream: in-flight count and the flags that decide
//! whether it may take new requests. All atomics, so the hot path reads them
//! without a lock. Imports no sibling module.
//!
//! A `UpstreamState` is shared by `Arc` between successive routing tables: a
//! rebuild (weight change, reload) hands the same state to the new table, so
//! counters and flags survive it.

use std::net::SocketAddr;

use http::uri::Authority;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Debug)]
pub struct UpstreamState {
    addr: SocketAddr,
    /// The address as a URI authority, built once for every request URI.
    authority: Authority,
    /// The address as text, for metric labels and logs.
    label: Arc<str>,
    in_flight: AtomicUsize,
    healthy: AtomicBool,
    disabled: AtomicBool,
    draining: AtomicBool,
}

impl UpstreamState {
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(UpstreamState {
            addr,
            // A SocketAddr always renders as a valid authority (IP:PORT or
            // [IPv6]:PORT); the fallback only keeps this free of a panic path.
            authority: Authority::try_from(addr.to_string())
                .unwrap_or_else(|_| Authority::from_static("invalid.invalid")),
            label: Arc::from(addr.to_string()),
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            disabled: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    /// May this upstream be picked for a new request?
    pub fn is_eligible(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
            && !self.disabled.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    pub fn set_disabled(&self, disabled: bool) {
        self.disabled.store(disabled, Ordering::Relaxed);
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub fn start_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            upstream: Arc::clone(self),
        }
    }
}

/// A request in flight to an upstream; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight {
    upstream: Arc<UpstreamState>,
}

impl InFlight {
    pub fn upstream(&self) -> &Arc<UpstreamState> {
        &self.upstream
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = self.upstream.in_flight.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(before > 0, "in-flight count went below zero");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_follows_guards() {
        let u = UpstreamState::new("127.0.0.1:1".parse().unwrap());
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
        let u = UpstreamState::new("127.0.0.1:1".parse().unwrap());
        assert!(u.is_eligible());
        u.set_disabled(true);
        assert!(!u.is_eligible());
        u.set_disabled(false);
        u.set_draining(true);
        assert!(!u.is_eligible());
        u.set_draining(false);
        u.set_healthy(false);
        assert!(!u.is_eligible());
    }
}
