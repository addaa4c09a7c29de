//! The retry loop's bookkeeping, shared by hyper's path and the direct
//! one: the sticky pin first if there is one, then weighted picks passing
//! over the upstreams already tried, up to `retries` more after the first
//! attempt; after a failure `ProxyError::retryable` decides whether to go
//! on.

use std::sync::Arc;

use super::ProxyError;
use crate::routing::{Pick, Route, RouteTable};
use crate::upstream::UpstreamState;

pub struct Picks {
    /// A valid sticky cookie's upstream: the first attempt's.
    pinned: Option<(Pick, bool)>,
    attempts_left: usize,
    tried: Vec<Arc<UpstreamState>>,
    last_error: Option<ProxyError>,
}

impl Picks {
    pub fn new(pinned: Option<(Pick, bool)>, retries: usize) -> Picks {
        Picks {
            pinned,
            attempts_left: retries + 1,
            tried: Vec::new(),
            last_error: None,
        }
    }

    /// The next upstream to try, and whether it is a fresh pick (not the
    /// cookie's: a new cookie is set); `None` when none is left.
    pub fn next(&mut self, table: &RouteTable, route: &Route) -> Option<(Pick, bool)> {
        self.attempts_left = self.attempts_left.checked_sub(1)?;
        match self.pinned.take() {
            Some(pinned) => Some(pinned),
            None => table.pick(route, &self.tried).map(|p| (p, true)),
        }
    }

    /// The upstreams tried so far (a retry passes over them).
    pub fn tried(&self) -> &[Arc<UpstreamState>] {
        &self.tried
    }

    /// An attempt at `pick` failed: `Ok` to try another (the request can
    /// go again, `resendable`, or was never sent), else the error.
    pub fn failed(
        &mut self,
        pick: Pick,
        e: ProxyError,
        resendable: bool,
    ) -> Result<(), ProxyError> {
        if !e.retryable(resendable) {
            return Err(e);
        }
        tracing::debug!(error = %e, "trying another upstream");
        self.tried.push(pick.upstream);
        self.last_error = Some(e);
        Ok(())
    }

    /// Nothing answered: the last failure, or no eligible upstream.
    pub fn exhausted(self, route: &Route) -> ProxyError {
        self.last_error
            .unwrap_or_else(|| ProxyError::NoEligibleUpstream {
                route: route.name.to_string(),
            })
    }
}
