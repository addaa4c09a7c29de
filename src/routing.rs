//! The routing table: an immutable snapshot of routes → weighted pools →
//! weighted upstreams, published through one `ArcSwap`.
//!
//! The hot path calls [`Routing::load`] once per request and reads only the
//! snapshot and upstream atomics; it never waits on the control plane. Only
//! [`Control`], the single writer owned by the control plane, stores a new
//! table. Imports only `config`, `balance` and `upstream`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderMap, Uri};
use tokio::sync::watch;

use crate::balance;
use crate::balance::sticky::{StickyId, StickyKey};
use crate::config::{
    Balance, Config, HealthConfig, Matchers, MirrorConfig, RateKey, RateLimitConfig, RetryConfig,
    StickyConfig, UpstreamProtocol, UpstreamTls,
};
use crate::queue::Queue;
use crate::rate_limit::RateLimiter;
use crate::retry_budget::RetryBudget;
use crate::shadow::ShadowStats;
use crate::traffic::{Snapshot, TrafficStats};
use crate::upstream::{OutlierRule, UpstreamState};

#[derive(Debug)]
pub struct RouteTable {
    /// In match priority order: longest `path_prefix` first; among equal
    /// prefixes, routes that name hosts before any-host routes; then routes
    /// with more matchers first.
    routes: Vec<Route>,
    pools: Vec<Pool>,
    sticky_key: Arc<StickyKey>,
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    hosts: Vec<HostPattern>,
    pub path_prefix: String,
    /// `None` for a route without matchers: nothing to check per request.
    matchers: Option<Matchers>,
    split: Vec<Share>,
    pub sticky: Option<StickyConfig>,
    /// Shadow traffic, when the route copies requests.
    pub mirror: Option<RouteMirror>,
    /// The route's shadow figures, kept across rebuilds.
    pub shadow: Arc<ShadowStats>,
    /// The route's own retry policy and its budget (kept across
    /// rebuilds); without it, the proxy's `retries`.
    pub retry: Option<RouteRetry>,
    /// The route's rate limit and its buckets (kept across rebuilds while
    /// its settings stay).
    pub rate_limit: Option<RouteRateLimit>,
    /// Index into `split` of the pool a rollout moves sticky clients to,
    /// and its percent.
    sticky_shift: Option<(usize, u32)>,
    /// The step (1-based) of the rollout whose split this is.
    pub rollout_step: Option<u32>,
}

/// A route's `retry` and the requests and retries it has counted.
#[derive(Debug)]
pub struct RouteRetry {
    pub policy: RetryConfig,
    pub budget: Arc<RetryBudget>,
}

/// A route's `rate_limit` and its buckets.
#[derive(Debug)]
pub struct RouteRateLimit {
    pub config: RateLimitConfig,
    pub limiter: Arc<RateLimiter>,
}

/// Where a route's copies go.
#[derive(Debug, Clone)]
pub struct RouteMirror {
    /// Index into `RouteTable::pools`.
    pub pool_index: usize,
    pub pool: Arc<str>,
    pub settings: Arc<MirrorConfig>,
}

#[derive(Debug)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Subdomain(String),
}

#[derive(Debug, Clone)]
struct Share {
    pool: usize,
    weight: u32,
    /// This route's traffic to this pool, kept across rebuilds.
    stats: Arc<TrafficStats>,
}

#[derive(Debug)]
pub struct Pool {
    pub name: Arc<str>,
    pub upstreams: Vec<Upstream>,
    pub health: Option<HealthConfig>,
    pub outlier: OutlierRule,
    pub max_ejected_percent: u32,
    pub slow_start: Option<std::time::Duration>,
    /// `max_in_flight` per upstream and the queue beyond it.
    pub concurrency: Option<crate::config::Concurrency>,
    /// Requests waiting for room (kept across rebuilds by pool name).
    pub queue: Arc<Queue>,
    pub balance: Balance,
    /// How to speak to the upstreams.
    pub tls: Option<UpstreamTls>,
    pub protocol: UpstreamProtocol,
    /// A PROXY protocol header first on each connection, which then
    /// serves one client only.
    pub send_proxy: Option<crate::config::SendProxy>,
}

#[derive(Debug)]
pub struct Upstream {
    pub state: Arc<UpstreamState>,
    pub weight: u32,
    /// Requests it takes at once: its own `max_in_flight`, else its
    /// pool's; `None`: no limit.
    pub max_in_flight: Option<u32>,
    sticky_id: StickyId,
    /// The pool's `tls` for this upstream: `sni` defaults to the DNS name
    /// the address came from, so the name the operator wrote is the one
    /// verified (the IP only for an upstream given by IP).
    pub tls: Option<UpstreamTls>,
}

/// The outcome of a pick: which pool and which upstream.
#[derive(Debug, Clone)]
pub struct Pick {
    pub pool: Arc<str>,
    /// Index into `RouteTable::pools` of the same table.
    pub pool_index: usize,
    pub upstream: Arc<UpstreamState>,
    pub sticky_id: StickyId,
    /// The upstream's limit on requests at once, if it has one.
    pub max_in_flight: Option<u32>,
    /// The route's traffic figures for this pool.
    pub stats: Arc<TrafficStats>,
}

impl Pick {
    fn of(pool: &Pool, pool_index: usize, upstream: &Upstream, stats: &Arc<TrafficStats>) -> Pick {
        Pick {
            pool: Arc::clone(&pool.name),
            pool_index,
            upstream: Arc::clone(&upstream.state),
            sticky_id: upstream.sticky_id,
            max_in_flight: upstream.max_in_flight,
            stats: Arc::clone(stats),
        }
    }
}

impl Pool {
    /// Speaks plain HTTP/1.1 (no TLS, no HTTP/2) on shared connections:
    /// raw-socket exchanges can reach it (see `proxy::h1_upstream`).
    pub fn is_plain_http1(&self) -> bool {
        self.tls.is_none()
            && self.protocol == crate::config::UpstreamProtocol::Http1
            && self.send_proxy.is_none()
    }

    /// How to speak TLS to the upstream at `addr` (see [`Upstream::tls`]).
    pub fn tls_for(&self, addr: SocketAddr) -> Option<&UpstreamTls> {
        match self.upstreams.iter().find(|u| u.state.addr() == addr) {
            Some(u) => u.tls.as_ref(),
            None => self.tls.as_ref(),
        }
    }

    /// Has the pool an upstream that can take new traffic now?
    pub fn in_rotation(&self) -> bool {
        self.is_eligible(&[])
    }

    fn is_eligible(&self, exclude: &[Arc<UpstreamState>]) -> bool {
        self.upstreams
            .iter()
            .any(|u| u.weight > 0 && usable(&u.state, exclude))
    }

    /// Can one more upstream be ejected without passing
    /// `max_ejected_percent` of the pool?
    pub fn may_eject(&self) -> bool {
        let ejected = self
            .upstreams
            .iter()
            .filter(|u| u.state.is_ejected())
            .count();
        (ejected + 1) * 100 <= self.upstreams.len() * self.max_ejected_percent as usize
    }
}

/// `then` over each upstream's `weight`, gathered on the stack for the
/// usual small pool.
fn with_weights<R>(
    upstreams: &[Upstream],
    weight: impl Fn(&Upstream) -> u32,
    then: impl FnOnce(&[u32]) -> R,
) -> R {
    const ON_STACK: usize = 16;
    if upstreams.len() <= ON_STACK {
        let mut weights = [0u32; ON_STACK];
        for (w, u) in weights.iter_mut().zip(upstreams) {
            *w = weight(u);
        }
        then(&weights[..upstreams.len()])
    } else {
        let weights: Vec<u32> = upstreams.iter().map(weight).collect();
        then(&weights)
    }
}

fn usable(state: &Arc<UpstreamState>, exclude: &[Arc<UpstreamState>]) -> bool {
    state.is_eligible() && !exclude.iter().any(|e| Arc::ptr_eq(e, state))
}

/// What a rebuilt table keeps of the previous one, by name: each
/// upstream's state (health, ejection, in flight), each route share's
/// traffic counts, each route's shadow counts, retry budget and rate-limit
/// buckets (while its settings stay), each pool's queue.
#[derive(Default)]
struct Kept<'a> {
    upstreams: HashMap<(&'a str, SocketAddr), &'a Arc<UpstreamState>>,
    stats: HashMap<(&'a str, &'a str), &'a Arc<TrafficStats>>,
    shadow: HashMap<&'a str, &'a Arc<ShadowStats>>,
    budgets: HashMap<&'a str, &'a Arc<RetryBudget>>,
    limits: HashMap<&'a str, &'a RouteRateLimit>,
    queues: HashMap<&'a str, &'a Arc<Queue>>,
}

impl<'a> Kept<'a> {
    fn from(previous: Option<&'a RouteTable>) -> Kept<'a> {
        let mut kept = Kept::default();
        let Some(prev) = previous else {
            return kept;
        };
        for pool in &prev.pools {
            kept.queues.insert(&pool.name, &pool.queue);
            for u in &pool.upstreams {
                kept.upstreams
                    .insert((&pool.name, u.state.addr()), &u.state);
            }
        }
        for route in &prev.routes {
            kept.shadow.insert(&route.name, &route.shadow);
            if let Some(retry) = &route.retry {
                kept.budgets.insert(&route.name, &retry.budget);
            }
            if let Some(limit) = &route.rate_limit {
                kept.limits.insert(&route.name, limit);
            }
            for share in &route.split {
                kept.stats
                    .insert((&route.name, &prev.pools[share.pool].name), &share.stats);
            }
        }
        kept
    }

    /// The pool `p` of the file, its upstreams' state kept.
    fn pool(&self, p: &crate::config::PoolConfig, sticky_key: &StickyKey) -> Pool {
        let queue = self
            .queues
            .get(p.name.as_str())
            .map_or_else(Arc::default, |q| Arc::clone(q));
        Pool {
            name: Arc::from(p.name.as_str()),
            upstreams: p
                .upstreams
                .iter()
                .map(|u| Upstream {
                    state: self.upstreams.get(&(p.name.as_str(), u.addr)).map_or_else(
                        || UpstreamState::in_pool(u.addr, p.health.is_some(), Arc::clone(&queue)),
                        |s| Arc::clone(s),
                    ),
                    weight: u.weight,
                    max_in_flight: p
                        .concurrency
                        .and_then(|c| u.max_in_flight.or(c.max_in_flight)),
                    sticky_id: sticky_key.upstream_id(&p.name, &u.addr.to_string()),
                    tls: p.tls.clone().map(|mut tls| {
                        if tls.sni.is_none() {
                            tls.sni.clone_from(&u.host);
                        }
                        tls
                    }),
                })
                .collect(),
            health: p.health.clone(),
            outlier: OutlierRule {
                consecutive_failures: p.outlier.consecutive_failures,
                base_ejection: p.outlier.base_ejection,
                max_ejection: p.outlier.max_ejection,
                checked: p.health.is_some(),
            },
            max_ejected_percent: p.outlier.max_ejected_percent,
            slow_start: p.slow_start,
            concurrency: p.concurrency,
            queue,
            balance: p.balance,
            tls: p.tls.clone(),
            protocol: p.protocol,
            send_proxy: p.send_proxy,
        }
    }

    /// The route `r` of the file over `pools`, its counts kept.
    fn route(&self, r: &crate::config::RouteConfig, pools: &[Pool]) -> Route {
        let split: Vec<Share> = r
            .split
            .iter()
            .filter_map(|(name, weight)| {
                // Validated config names only existing pools.
                let pool = pools.iter().position(|p| *p.name == *name)?;
                let stats = self
                    .stats
                    .get(&(r.name.as_str(), name))
                    .map_or_else(Default::default, |s| Arc::clone(s));
                Some(Share {
                    pool,
                    weight,
                    stats,
                })
            })
            .collect();
        let sticky_shift = r.sticky_shift.as_ref().and_then(|shift| {
            let at = split
                .iter()
                .position(|s| *pools[s.pool].name == *shift.pool)?;
            Some((at, shift.percent))
        });
        let mirror = r.mirror.as_ref().filter(|m| m.percent > 0).and_then(|m| {
            let pool_index = pools.iter().position(|p| *p.name == *m.pool)?;
            Some(RouteMirror {
                pool_index,
                pool: Arc::clone(&pools[pool_index].name),
                settings: Arc::new(m.clone()),
            })
        });
        Route {
            name: Arc::from(r.name.as_str()),
            hosts: r.hosts.iter().map(|h| HostPattern::new(h)).collect(),
            path_prefix: r.path_prefix.clone(),
            matchers: (!r.matchers.is_empty()).then(|| r.matchers.clone()),
            split,
            sticky: r.sticky.clone(),
            mirror,
            shadow: self
                .shadow
                .get(r.name.as_str())
                .map_or_else(Default::default, |s| Arc::clone(s)),
            retry: r.retry.map(|policy| RouteRetry {
                policy,
                budget: self
                    .budgets
                    .get(r.name.as_str())
                    .map_or_else(Default::default, |b| Arc::clone(b)),
            }),
            rate_limit: r.rate_limit.as_ref().map(|config| RouteRateLimit {
                config: config.clone(),
                limiter: self
                    .limits
                    .get(r.name.as_str())
                    .filter(|kept| kept.config == *config)
                    .map_or_else(
                        || Arc::new(RateLimiter::new(config.requests, config.per, config.burst)),
                        |kept| Arc::clone(&kept.limiter),
                    ),
            }),
            sticky_shift,
            rollout_step: r.sticky_shift.as_ref().map(|shift| shift.step),
        }
    }
}

impl RouteTable {
    /// Builds a table from `config`, reusing the live state of every upstream
    /// (same pool, same address) that `previous` already had.
    pub fn build(
        config: &Config,
        previous: Option<&RouteTable>,
        sticky_key: &Arc<StickyKey>,
    ) -> RouteTable {
        let kept = Kept::from(previous);
        let pools: Vec<Pool> = config
            .pools
            .iter()
            .map(|p| kept.pool(p, sticky_key))
            .collect();
        let mut routes: Vec<Route> = config
            .routes
            .iter()
            .map(|r| kept.route(r, &pools))
            .collect();
        // Precedence, total and in docs/configuration.md: longest prefix,
        // then hosts named, then header, then query matchers; a stable sort
        // leaves the file's order last.
        routes.sort_by(|a, b| {
            b.path_prefix
                .len()
                .cmp(&a.path_prefix.len())
                .then_with(|| a.hosts.is_empty().cmp(&b.hosts.is_empty()))
                .then_with(|| b.precedence().cmp(&a.precedence()))
        });
        RouteTable {
            routes,
            pools,
            sticky_key: Arc::clone(sticky_key),
        }
    }

    /// The route for a request: the most specific one whose host, path
    /// prefix and matchers all match. `host` is the Host header or
    /// `:authority`, with or without port, any case.
    /// `client_subject`: the verified client certificate's subject, on an
    /// mTLS listener.
    pub fn match_route(
        &self,
        host: Option<&str>,
        uri: &Uri,
        headers: &HeaderMap,
        client_subject: Option<&str>,
    ) -> Option<&Route> {
        let at = self.match_route_index(host, uri, headers, client_subject)?;
        Some(&self.routes[at])
    }

    /// [`match_route`](Self::match_route)'s route as its index in
    /// [`routes`](Self::routes).
    pub fn match_route_index(
        &self,
        host: Option<&str>,
        uri: &Uri,
        headers: &HeaderMap,
        client_subject: Option<&str>,
    ) -> Option<usize> {
        let host = host.map(bare_host);
        let path = uri.path();
        self.routes.iter().position(|r| {
            r.takes(host, path)
                && r.matchers
                    .as_ref()
                    .is_none_or(|m| m.matches(headers, uri.query(), client_subject))
        })
    }

    /// For the direct HTTP/1.1 path (see `proxy::direct`): the index of
    /// the route for `host` and `path` when it takes plain requests — its
    /// choice needs no header (the first route whose host and path match
    /// has no matchers), it copies nothing, and each of its pools speaks
    /// plain HTTP/1.1. `None` sends the request to hyper's path.
    pub fn direct_route(&self, host: &str, path: &str) -> Option<usize> {
        let host = Some(bare_host(host));
        let at = self.routes.iter().position(|r| r.takes(host, path))?;
        let route = &self.routes[at];
        let plain_pools = route
            .split
            .iter()
            .all(|s| self.pools[s.pool].is_plain_http1());
        // A rate limit by header needs the headers the direct path does
        // not index.
        let by_header = route
            .rate_limit
            .as_ref()
            .is_some_and(|l| matches!(l.config.by, RateKey::Header(_)));
        (route.matchers.is_none() && route.mirror.is_none() && plain_pools && !by_header)
            .then_some(at)
    }

    /// Picks a pool by the route's split, then an upstream of it by weight,
    /// passing over ineligible upstreams and those in `exclude` (already
    /// tried). A pool with nothing eligible gets no share. `None` when no pool
    /// of the route has an eligible upstream.
    pub fn pick(&self, route: &Route, exclude: &[Arc<UpstreamState>]) -> Option<Pick> {
        // One pool: no draw (its upstream pick finds whether any is eligible).
        if let [only] = route.split.as_slice() {
            return (only.weight > 0)
                .then(|| self.pick_in(only, exclude))
                .flatten();
        }
        let share = balance::pick(
            &route.split,
            |s| {
                if self.pools[s.pool].is_eligible(exclude) {
                    s.weight
                } else {
                    0
                }
            },
            fastrand::u64(..),
        )?;
        self.pick_in(&route.split[share], exclude)
    }

    /// An upstream of one share's pool, by weight.
    fn pick_in(&self, share: &Share, exclude: &[Arc<UpstreamState>]) -> Option<Pick> {
        let pool_index = share.pool;
        let stats = &share.stats;
        let pool = &self.pools[pool_index];
        let upstream = self.pick_upstream(pool_index, exclude)?;
        Some(Pick::of(pool, pool_index, upstream, stats))
    }

    /// An upstream of pool `pool_index` that can take traffic, by the
    /// pool's `balance`: weighted random, or the less loaded of two
    /// weighted draws.
    pub fn pick_upstream(
        &self,
        pool_index: usize,
        exclude: &[Arc<UpstreamState>],
    ) -> Option<&Upstream> {
        let pool = self.pools.get(pool_index)?;
        let weight = |u: &Upstream, room: bool| {
            let fits = !room || u.state.has_room(u.max_in_flight, pool.slow_start);
            if fits && usable(&u.state, exclude) {
                u.state.effective_weight(u.weight, pool.slow_start)
            } else {
                0
            }
        };
        // With `max_in_flight`, upstreams with room first; when all are
        // full, one by weight anyway (the request then queues).
        let rolls = (fastrand::u64(..), fastrand::u64(..));
        let choose = |room: bool| {
            // Each weight read once (its atomics), whichever draws follow.
            with_weights(
                &pool.upstreams,
                |u| weight(u, room),
                |weights| match pool.balance {
                    Balance::Random => balance::pick(weights, |w| *w, rolls.0),
                    Balance::LeastRequest => balance::pick_least_loaded(
                        weights,
                        |i| pool.upstreams[i].state.in_flight(),
                        rolls,
                    ),
                },
            )
        };
        let limited = pool.concurrency.is_some();
        let index = choose(limited).or_else(|| limited.then(|| choose(false))?)?;
        pool.upstreams.get(index)
    }

    /// For a request queued at `queued`'s pool: an upstream of it with
    /// room (not in `exclude`), picked by weight and counted in flight at
    /// once; `None` while every one is full.
    pub fn admit_in(
        &self,
        queued: &Pick,
        exclude: &[Arc<UpstreamState>],
    ) -> Option<(Pick, crate::upstream::InFlight)> {
        let pool_index = queued.pool_index;
        let pool = self.pools.get(pool_index)?;
        let upstream = self.pick_upstream(pool_index, exclude)?;
        let in_flight = upstream
            .state
            .try_start_request(upstream.max_in_flight, pool.slow_start)?;
        let pick = Pick::of(pool, pool_index, upstream, &queued.stats);
        Some((pick, in_flight))
    }

    /// The upstream a sticky cookie pins the client to, if the cookie is
    /// authentic and unexpired and that upstream (in any pool of the route,
    /// whatever its weight) still accepts sticky clients.
    /// During a rollout, a pin follows the route's sticky shift: a client
    /// pinned to another pool moves to the rollout's pool once its cohort
    /// is below the shift's percent (the second value is then `true`: a new
    /// pin), and pins to that pool are ignored at 0.
    /// The third value is the client's cohort.
    pub fn sticky_pick(
        &self,
        route: &Route,
        cookie: &str,
        now_unix: u64,
    ) -> Option<(Pick, bool, u8)> {
        let (id, cohort) = self.sticky_key.open_with_cohort(cookie, now_unix)?;
        // 0–99.
        let as_u8 = u8::try_from(cohort).unwrap_or(u8::MAX);
        let pick = route.split.iter().enumerate().find_map(|(at, share)| {
            let pool = &self.pools[share.pool];
            let u = pool.upstreams.iter().find(|u| u.sticky_id == id)?;
            if let Some((shifted, percent)) = route.sticky_shift {
                if at == shifted && percent == 0 {
                    return None;
                }
                if at != shifted && cohort < percent {
                    return self.pick_in(&route.split[shifted], &[]).map(|p| (p, true));
                }
            }
            u.state
                .accepts_sticky()
                .then(|| (Pick::of(pool, share.pool, u, &share.stats), false))
        })?;
        Some((pick.0, pick.1, as_u8))
    }

    /// The route's traffic figures for `pool`, if the route sends it any.
    pub fn traffic<'a>(&self, route: &'a Route, pool: &str) -> Option<&'a Arc<TrafficStats>> {
        route
            .split
            .iter()
            .find(|s| &*self.pools[s.pool].name == pool)
            .map(|s| &s.stats)
    }

    /// Every route's traffic to `pool`, as one snapshot.
    pub fn pool_traffic(&self, pool: &str) -> Snapshot {
        self.routes
            .iter()
            .flat_map(|r| r.split.iter())
            .filter(|s| &*self.pools[s.pool].name == pool)
            .fold(Snapshot::default(), |acc, s| acc.plus(&s.stats.snapshot()))
    }

    /// A sealed cookie value pinning a client to `pick` until
    /// `expires_unix`, and the cohort it holds.
    pub fn seal_sticky(&self, pick: &Pick, expires_unix: u64) -> (String, u8) {
        self.sticky_key.seal(&pick.sticky_id, expires_unix)
    }

    /// Does a route with sticky sessions send traffic to this pool? Then a
    /// drain waits for its deadline before the upstream counts as drained.
    pub fn pool_is_sticky(&self, pool: &str) -> bool {
        self.routes.iter().any(|r| {
            r.sticky.is_some() && r.split.iter().any(|s| &*self.pools[s.pool].name == pool)
        })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| &*p.name == name)
    }

    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| &*r.name == name)
    }

    /// The route's split as (pool name, weight), in config order.
    pub fn split(&self, route: &Route) -> Vec<(Arc<str>, u32)> {
        route
            .split
            .iter()
            .map(|s| (Arc::clone(&self.pools[s.pool].name), s.weight))
            .collect()
    }

    /// The live state of an upstream, if the table has it.
    pub fn upstream(&self, pool: &str, addr: SocketAddr) -> Option<&Arc<UpstreamState>> {
        self.pool(pool)?
            .upstreams
            .iter()
            .map(|u| &u.state)
            .find(|s| s.addr() == addr)
    }
}

impl Route {
    /// Whether the route takes requests for `host` (bare, without port)
    /// and `path`, matchers aside.
    fn takes(&self, host: Option<&str>, path: &str) -> bool {
        path.starts_with(self.path_prefix.as_str())
            && (self.hosts.is_empty()
                || host.is_some_and(|h| self.hosts.iter().any(|p| p.matches(h))))
    }

    fn precedence(&self) -> (usize, usize) {
        self.matchers.as_ref().map_or((0, 0), Matchers::precedence)
    }

    /// The route's `headers`, `cookies` and `query` matchers, for status.
    pub fn matchers(&self) -> Option<&Matchers> {
        self.matchers.as_ref()
    }
}

impl HostPattern {
    fn new(host: &str) -> Self {
        match host.strip_prefix('*') {
            Some(suffix) => HostPattern::Subdomain(suffix.to_string()),
            None => HostPattern::Exact(host.to_string()),
        }
    }

    /// `host` in any case; patterns are stored lower-case. Compares bytes,
    /// so no per-request lower-cased copy is needed.
    fn matches(&self, host: &str) -> bool {
        let host = host.as_bytes();
        match self {
            HostPattern::Exact(h) => h.as_bytes().eq_ignore_ascii_case(host),
            HostPattern::Subdomain(suffix) => {
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

/// The host without its port (IPv6 brackets kept) or a trailing dot.
fn bare_host(host: &str) -> &str {
    let bare = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    bare.trim_end_matches('.')
}

/// The published table, read by the hot path.
#[derive(Debug)]
pub struct Routing {
    table: ArcSwap<RouteTable>,
    /// Each published table, for the parts that follow swaps (health
    /// checks, upstream connection pools).
    published: watch::Sender<Arc<RouteTable>>,
}

impl Routing {
    /// The current table. One call per request; the `Arc` is held for the
    /// request, never a guard across an `.await`.
    pub fn load(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Wakes on every table published after this call.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RouteTable>> {
        self.published.subscribe()
    }
}

/// The single writer of the routing table.
#[derive(Debug)]
pub struct Control {
    routing: Arc<Routing>,
    sticky_key: Arc<StickyKey>,
}

impl Control {
    /// Publishes `first`, built with `sticky_key`.
    pub fn new(first: RouteTable, sticky_key: Arc<StickyKey>) -> Control {
        let first = Arc::new(first);
        Control {
            routing: Arc::new(Routing {
                table: ArcSwap::new(Arc::clone(&first)),
                published: watch::Sender::new(first),
            }),
            sticky_key,
        }
    }

    pub fn routing(&self) -> Arc<Routing> {
        Arc::clone(&self.routing)
    }

    /// A table for `config` that keeps the live state of upstreams that
    /// stay; not yet published.
    pub fn build(&self, config: &Config) -> RouteTable {
        RouteTable::build(config, Some(&self.routing.load()), &self.sticky_key)
    }

    /// Publishes `table` in one step.
    pub fn store(&mut self, table: RouteTable) {
        let table = Arc::new(table);
        self.routing.table.store(Arc::clone(&table));
        self.routing.published.send_replace(table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra_routes: &str) -> Config {
        let text = format!(
            r#"
[[listener]]
bind = "127.0.0.1:8080"
[[route]]
name = "any"
split = {{ a = 1 }}
[[route]]
name = "api"
path_prefix = "/api"
split = {{ b = 1 }}
[[route]]
name = "host"
hosts = ["app.example.com", "*.example.org"]
split = {{ a = 3, b = 1 }}
{extra_routes}
[pool.a]
upstreams = [{{ addr = "127.0.0.1:9001" }}, {{ addr = "127.0.0.1:9002", weight = 0 }}]
[pool.b]
upstreams = [{{ addr = "127.0.0.1:9003" }}]
"#
        );
        Config::parse("t.toml", &text).expect("test config is valid")
    }

    fn key() -> Arc<StickyKey> {
        Arc::new(StickyKey::new([9; 32]))
    }

    fn name<'a>(t: &'a RouteTable, host: Option<&str>, path: &str) -> Option<&'a str> {
        let uri: Uri = path.parse().unwrap();
        t.match_route(host, &uri, &HeaderMap::new(), None)
            .map(|r| &*r.name)
    }

    #[test]
    fn longest_prefix_then_host_specific_wins() {
        let t = RouteTable::build(&config(""), None, &key());
        assert_eq!(name(&t, None, "/"), Some("any"));
        assert_eq!(name(&t, Some("app.example.com"), "/x"), Some("host"));
        assert_eq!(name(&t, Some("APP.example.com:8080"), "/x"), Some("host"));
        assert_eq!(name(&t, Some("a.b.example.org"), "/"), Some("host"));
        assert_eq!(name(&t, Some("example.org"), "/"), Some("any"));
        assert_eq!(name(&t, Some("A.B.EXAMPLE.ORG."), "/"), Some("host"));
        // Non-ASCII bytes never panic the byte-wise compare.
        assert_eq!(name(&t, Some("é.example.org"), "/"), Some("host"));
        assert_eq!(name(&t, Some("éxample.org"), "/"), Some("any"));
        assert_eq!(name(&t, Some("app.example.com"), "/api/v1"), Some("api"));
        assert_eq!(name(&t, Some("other"), "/api"), Some("api"));
    }

    #[test]
    fn no_match_without_catch_all() {
        let text = r#"
[[listener]]
bind = "127.0.0.1:8080"
[[route]]
name = "only"
hosts = ["x.test"]
split = { a = 1 }
[pool.a]
upstreams = [{ addr = "127.0.0.1:9001" }]
"#;
        let t = RouteTable::build(&Config::parse("t", text).unwrap(), None, &key());
        assert_eq!(name(&t, Some("y.test"), "/"), None);
        assert_eq!(name(&t, None, "/"), None);
        assert_eq!(name(&t, Some("[::1]:80"), "/"), None);
    }

    #[test]
    fn pick_skips_ineligible_and_excluded() {
        let t = RouteTable::build(&config(""), None, &key());
        let route = t.route("host").unwrap();
        let a = t
            .upstream("a", "127.0.0.1:9001".parse().unwrap())
            .unwrap()
            .clone();
        let b = t
            .upstream("b", "127.0.0.1:9003".parse().unwrap())
            .unwrap()
            .clone();
        // Zero-weight 9002 is never chosen; with b excluded, only a.
        for _ in 0..200 {
            let p = t.pick(route, std::slice::from_ref(&b)).unwrap();
            assert!(Arc::ptr_eq(&p.upstream, &a));
        }
        // a disabled: its pool gets no share, b takes all.
        a.set_disabled(true);
        for _ in 0..200 {
            assert_eq!(&*t.pick(route, &[]).unwrap().pool, "b");
        }
        b.set_draining(Some(0));
        assert!(t.pick(route, &[]).is_none());
    }

    #[test]
    fn rebuild_keeps_live_state_by_identity() {
        let first = RouteTable::build(&config(""), None, &key());
        let mut control = Control::new(first, key());
        let routing = control.routing();
        let before = routing
            .load()
            .upstream("a", "127.0.0.1:9001".parse().unwrap())
            .unwrap()
            .clone();
        before.set_disabled(true);
        let _guard = before.start_request();
        let next = control.build(&config(""));
        control.store(next);
        let table = routing.load();
        let after = table
            .upstream("a", "127.0.0.1:9001".parse().unwrap())
            .unwrap();
        assert!(Arc::ptr_eq(&before, after));
        assert_eq!(after.in_flight(), 1);
        assert!(after.is_disabled());
    }

    proptest::proptest! {
        /// A sticky client stays on its upstream whatever weights change,
        /// as long as its pool is still in the route's split.
        #[test]
        fn sticky_mapping_is_stable_under_weight_edits(a_w in 0u32..5, b_w in 1u32..5, u1 in 0u32..4, u2 in 1u32..4) {
            let text = |a: u32, b: u32, w1: u32, w2: u32| format!(
                "[[listener]]\nbind = \"127.0.0.1:8080\"\n[[route]]\nname = \"r\"\nsticky = {{ cookie = \"c\" }}\nsplit = {{ a = {a}, b = {b} }}\n\
                 [pool.a]\nupstreams = [{{ addr = \"127.0.0.1:1\", weight = {w1} }}, {{ addr = \"127.0.0.1:2\", weight = {w2} }}]\n\
                 [pool.b]\nupstreams = [{{ addr = \"127.0.0.1:3\" }}]\n"
            );
            let before = RouteTable::build(&Config::parse("t", &text(1, 1, 1, 1)).unwrap(), None, &key());
            let pinned = before.upstream("a", "127.0.0.1:1".parse().unwrap()).unwrap().clone();
            let pick = Pick { pool: Arc::from("a"), pool_index: 0, upstream: pinned.clone(), sticky_id: before.pools()[0].upstreams[0].sticky_id, max_in_flight: None, stats: Default::default() };
            let (cookie, _) = before.seal_sticky(&pick, u64::MAX);
            let after = RouteTable::build(&Config::parse("t", &text(a_w, b_w, u1, u2)).unwrap(), Some(&before), &key());
            let route = after.route("r").unwrap();
            let again = after.sticky_pick(route, &cookie, 0).expect("still pinned");
            proptest::prop_assert!(Arc::ptr_eq(&again.0.upstream, &pinned));
        }
    }
}
