//! Metric handles for `cutover_requests_total` and
//! `cutover_request_duration_seconds`, looked up once per route, pool and
//! upstream instead of per request.
//!
//! Going through the `metrics` macros each time builds a label list,
//! hashes it and takes the registry's lock — about a tenth of a proxied
//! request's user-space cost. Here a request costs one map lookup by
//! upstream address and a short scan; a miss (the first request of a
//! route, pool and upstream) registers the handles.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use foldhash::HashMap;
use metrics::{Counter, Histogram};

use crate::telemetry::{self, names};

/// The handles of one route, pool and upstream.
pub struct RequestMetrics {
    route: Arc<str>,
    pool: Arc<str>,
    upstream: Arc<str>,
    /// By status class: 1xx … 5xx; each registered on first use, so the
    /// exposition lists only classes that occurred.
    requests: [OnceLock<Counter>; 5],
    duration: Histogram,
}

impl RequestMetrics {
    fn new(route: &Arc<str>, pool: &Arc<str>, upstream: &Arc<str>) -> RequestMetrics {
        RequestMetrics {
            route: Arc::clone(route),
            pool: Arc::clone(pool),
            upstream: Arc::clone(upstream),
            requests: Default::default(),
            duration: metrics::histogram!(
                names::REQUEST_DURATION_SECONDS,
                "route" => Arc::clone(route),
                "pool" => Arc::clone(pool)
            ),
        }
    }

    /// Counts one response with `status`.
    fn count(&self, status: u16) {
        let class = usize::from((status / 100).clamp(1, 5)) - 1;
        self.requests[class]
            .get_or_init(|| {
                metrics::counter!(
                    names::REQUESTS_TOTAL,
                    "route" => Arc::clone(&self.route),
                    "pool" => Arc::clone(&self.pool),
                    "upstream" => Arc::clone(&self.upstream),
                    "status" => telemetry::status_class(status)
                )
            })
            .increment(1);
    }

    /// The request-duration histogram.
    fn duration(&self) -> Histogram {
        self.duration.clone()
    }
}

/// Every route, pool and upstream seen so far, by upstream address.
#[derive(Default)]
pub struct RequestMetricsCache {
    by_upstream: ArcSwap<HashMap<SocketAddr, Vec<Arc<RequestMetrics>>>>,
}

impl RequestMetricsCache {
    /// Counts one response with `status` for this route, pool and upstream
    /// and returns the duration histogram to record it in.
    pub fn count(
        &self,
        route: &Arc<str>,
        pool: &Arc<str>,
        addr: SocketAddr,
        upstream: &Arc<str>,
        status: u16,
    ) -> Histogram {
        let matches = |m: &&Arc<RequestMetrics>| m.route == *route && m.pool == *pool;
        // The hit path borrows through the guard: no reference count moves.
        if let Some(m) = self
            .by_upstream
            .load()
            .get(&addr)
            .and_then(|v| v.iter().find(matches))
        {
            m.count(status);
            return m.duration();
        }
        let fresh = Arc::new(RequestMetrics::new(route, pool, upstream));
        // Copy on write: misses are rare (once per route, pool, upstream).
        self.by_upstream.rcu(|map| {
            let mut map = HashMap::clone(map);
            let entries = map.entry(addr).or_default();
            if !entries.iter().any(|m| matches(&m)) {
                entries.push(Arc::clone(&fresh));
            }
            map
        });
        fresh.count(status);
        fresh.duration()
    }
}
