//! The retry loop's bookkeeping, shared by hyper's path and the direct
//! one: the sticky pin first if there is one, then weighted picks passing
//! over the upstreams already tried. After a failed attempt the route's
//! `retry` policy (else the proxy's `retries`: connect failures and
//! resets) decides whether another goes out: the condition, the attempts
//! left, the route's retry budget, and a jittered backoff between tries.

use std::sync::Arc;
use std::time::Duration;

use super::ProxyError;
use crate::config::{MIN_RETRIES_PER_WINDOW, RetryConfig};
use crate::retry_budget::RetryBudget;
use crate::routing::{Pick, Route, RouteTable};
use crate::telemetry::names;
use crate::upstream::UpstreamState;

/// The first backoff's bound; each retry doubles it, up to `MAX_BACKOFF`.
const BASE_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

pub struct Picks<'r> {
    /// The next attempt's pick, made already: a valid sticky cookie's
    /// upstream (the first attempt's), or the one a retry after an
    /// answer it let go found.
    next: Option<(Pick, bool)>,
    attempts_left: u32,
    tried: Vec<Arc<UpstreamState>>,
    last_error: Option<ProxyError>,
    policy: RetryConfig,
    /// The route's own policy's budget; `None` on the proxy's `retries`.
    budget: Option<&'r RetryBudget>,
    route: &'r Arc<str>,
}

impl<'r> Picks<'r> {
    /// The attempts of one request of `route`; `retries` is the proxy's,
    /// for a route without its own policy.
    pub fn new(pinned: Option<(Pick, bool)>, route: &'r Route, retries: usize) -> Picks<'r> {
        let (policy, budget) = match &route.retry {
            Some(retry) => {
                retry.budget.request();
                (retry.policy, Some(&*retry.budget))
            }
            None => (RetryConfig::from_retries(retries), None),
        };
        Picks {
            next: pinned,
            attempts_left: policy.attempts,
            tried: Vec::new(),
            last_error: None,
            policy,
            budget,
            route: &route.name,
        }
    }

    /// The next upstream to try, and whether it is a fresh pick (not the
    /// cookie's: a new cookie is set); `None` when none is left.
    pub fn next(&mut self, table: &RouteTable, route: &Route) -> Option<(Pick, bool)> {
        self.attempts_left = self.attempts_left.checked_sub(1)?;
        match self.next.take() {
            Some(next) => Some(next),
            None => table.pick(route, &self.tried).map(|p| (p, true)),
        }
    }

    /// The upstreams tried so far (a retry passes over them).
    pub fn tried(&self) -> &[Arc<UpstreamState>] {
        &self.tried
    }

    /// How long one attempt may wait for its response head.
    pub fn per_try_timeout(&self, response_header_timeout: Duration) -> Duration {
        self.policy
            .per_try_timeout
            .unwrap_or(response_header_timeout)
    }

    /// An attempt at `pick` failed with `e`: `Ok` with the backoff before
    /// the next when the policy retries it (`resendable`: the request may
    /// go out twice), else the error.
    pub fn failed(
        &mut self,
        pick: Pick,
        e: ProxyError,
        resendable: bool,
    ) -> Result<Option<Duration>, ProxyError> {
        let on = self.policy.on;
        let reason = match &e {
            ProxyError::UpstreamConnect { .. } if on.connect => "connect",
            ProxyError::UpstreamFailed { .. } if on.reset && resendable => "reset",
            // A try past its own timeout is abandoned like a reset one;
            // the proxy-wide response_header_timeout is final.
            ProxyError::UpstreamTimeout { .. }
                if on.reset && resendable && self.policy.per_try_timeout.is_some() =>
            {
                "reset"
            }
            _ => return Err(e),
        };
        if self.attempts_left == 0 || !self.spend(reason) {
            return Err(e);
        }
        tracing::debug!(error = %e, "trying another upstream");
        self.tried.push(pick.upstream);
        self.last_error = Some(e);
        Ok(self.backoff())
    }

    /// `pick` answered `status`: `Some` backoff when the policy retries
    /// the answer — the request may go out twice, an attempt and another
    /// upstream are left, and the budget allows — and the answer is to be
    /// let go; `None` to forward it.
    pub fn retry_answer(
        &mut self,
        status: u16,
        resendable: bool,
        pick: &Pick,
        table: &RouteTable,
        route: &Route,
    ) -> Option<Option<Duration>> {
        if !(resendable && self.attempts_left > 0 && self.policy.on.status(status)) {
            return None;
        }
        self.tried.push(Arc::clone(&pick.upstream));
        let Some(next) = table.pick(route, &self.tried) else {
            self.tried.pop();
            return None;
        };
        let reason = if status == 503 { "503" } else { "5xx" };
        if !self.spend(reason) {
            self.tried.pop();
            return None;
        }
        self.next = Some((next, true));
        Some(self.backoff())
    }

    /// Takes a retry from the route's budget (always there on the proxy's
    /// `retries`), counted by `reason`.
    fn spend(&self, reason: &'static str) -> bool {
        let route = Arc::clone(self.route);
        if let Some(budget) = self.budget
            && !budget.try_retry(self.policy.budget, MIN_RETRIES_PER_WINDOW)
        {
            metrics::counter!(names::RETRY_BUDGET_EXHAUSTED_TOTAL, "route" => route).increment(1);
            return false;
        }
        metrics::counter!(names::RETRIES_TOTAL, "route" => route, "reason" => reason).increment(1);
        true
    }

    /// A random wait below a bound that doubles with each retry ("full
    /// jitter"), so clients that failed together do not come back
    /// together; none on the proxy's `retries`.
    fn backoff(&self) -> Option<Duration> {
        self.budget?;
        let retries = self.tried.len().saturating_sub(1).min(8) as u32;
        let bound = BASE_BACKOFF.saturating_mul(1 << retries).min(MAX_BACKOFF);
        Some(bound.mul_f64(fastrand::f64()))
    }

    /// Nothing answered: the last failure, or no eligible upstream.
    pub fn exhausted(self, route: &Route) -> ProxyError {
        self.last_error
            .unwrap_or_else(|| ProxyError::NoEligibleUpstream {
                route: route.name.to_string(),
            })
    }
}
