//! The request engine: the policy every proxied request follows, written
//! once for both fronts — the sticky pin, the `Picks` loop over upstreams,
//! one attempt (labels, in-flight count, timeout, outcome for outlier
//! ejection), the fresh sticky cookie, the request's metrics and its
//! access-log line, and a failure's log line and answer.
//!
//! A front (`front_hyper`: hyper's `Request<Incoming>`; `front_direct`:
//! byte ranges of a client's buffer) reads and prepares the request, then
//! hands it to [`Proxy::forward`] through the [`Front`] seam, which is all
//! the engine knows of it: how to read a cookie, whether the request may
//! be sent twice, and how to send it to one upstream. The pingora pattern
//! (phases shared by per-protocol drivers), without hooks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

use super::body::RequestTimer;
use super::mirror::PrimaryTap;
use super::pools::SendError;
use super::request_metrics::RequestMetricsCache;
use super::retry::Picks;
use super::wire::headers;
use super::{ClientConn, Proxy, ProxyError, Side};
use crate::access_log::{AccessLog, Entry};
use crate::config::RateKey;
use crate::routing::{Pick, Pool, Route, RouteRateLimit, RouteTable};
use crate::telemetry::{self, names};
use crate::traces::{AttemptSpan, RequestTrace, TRACEPARENT_NAME, TRACESTATE_NAME, TraceParent};
use crate::traffic::TrafficStats;
use crate::upstream::{InFlight, UpstreamState};

/// A place for the request at `pick`'s upstream, counted in flight: at
/// once without `max_in_flight`; with it, if the upstream has room and
/// nobody queues in its pool (first come, first served). `Err`: the
/// request must queue ([`Proxy::queue_for`]).
fn admit_now(table: &RouteTable, pick: Pick) -> Result<(Pick, bool, InFlight), Pick> {
    let Some(pool) = table.pools().get(pick.pool_index) else {
        let in_flight = pick.upstream.start_request();
        return Ok((pick, false, in_flight));
    };
    let Some(limit) = pick.max_in_flight else {
        let in_flight = pick.upstream.start_request();
        return Ok((pick, false, in_flight));
    };
    if pool.queue.waiting() == 0
        && let Some(in_flight) = pick
            .upstream
            .try_start_request(Some(limit), pool.slow_start)
    {
        return Ok((pick, false, in_flight));
    }
    Err(pick)
}

/// One attempt: where it goes, its request, its place at the upstream,
/// and how long it may wait for the response head.
struct Attempt<'p, R> {
    pick: &'p Pick,
    request: R,
    in_flight: InFlight,
    timeout: std::time::Duration,
    /// Its client span, with tracing on. Boxed: a span is large, and
    /// inline it would grow every attempt's future, traced or not.
    span: Option<Box<AttemptSpan>>,
}

/// A request turned away by a pool's queue (`reason`: full, timeout, left).
fn queue_rejected(pool: &Arc<str>, reason: &'static str) {
    metrics::counter!(names::QUEUE_REJECTED_TOTAL, "pool" => Arc::clone(pool), "reason" => reason)
        .increment(1);
}

/// "request failed" lines: see `telemetry::LogLimit`.
static FAILED_REQUEST_LOG: telemetry::LogLimit = telemetry::LogLimit::new();

/// What a front gives the engine: a request it can send to one upstream
/// after another.
pub(super) trait Front {
    /// One attempt's request, ready to go.
    type Request;
    /// An upstream's answer as this front forwards it.
    type Answer;

    /// The value of cookie `name` in the request.
    fn cookie(&self, name: &str) -> Option<&str>;

    /// The value of header `name` (for a rate limit by header; the direct
    /// path takes no such route).
    fn header(&self, name: &http::HeaderName) -> Option<&[u8]>;

    /// Can the request be sent again after an upstream took it and closed
    /// without answering? Only a bodiless idempotent one (RFC 9110 §9.2.2).
    fn resendable(&self) -> bool;

    /// The request for an attempt at `pick`, whose answer carries
    /// `cookie` (a fresh sticky cookie) if there is one, and which carries
    /// `traceparent` upstream (the attempt's span, with tracing on) in
    /// place of the client's; `None` when it cannot be sent again (its
    /// body went to an earlier attempt).
    fn request_for(
        &mut self,
        pick: &Pick,
        cookie: Option<HeaderValue>,
        traceparent: Option<&TraceParent>,
    ) -> Option<Self::Request>;

    /// The request's method, for span names.
    fn method(&self) -> &str;

    /// What a sampled request's server span says of it (OpenTelemetry's
    /// HTTP attribute names).
    fn trace_facts(&self) -> Vec<opentelemetry::KeyValue>;

    /// Sends `request` to `addr` of `pool` and waits for the response head.
    fn send(
        &mut self,
        proxy: &Proxy,
        pool: &Pool,
        addr: SocketAddr,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Answer, SendError>> + Send;

    /// The answer's status code.
    fn status(answer: &Self::Answer) -> u16;

    /// Resolves when the client is known to have left, watched while the
    /// request waits in a queue (so its place is let go at once); never
    /// where the front learns it otherwise (hyper drops the request's
    /// future for a cancelled HTTP/2 stream).
    fn left(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// The access-log line of a request, begun at its arrival and completed
/// when its body ends. Boxed: the response carries it, and is moved
/// several times.
pub(super) type LogLine = Box<(AccessLog, Entry)>;

/// What the access log says of a request, read by its front.
pub(super) struct Described {
    pub method: String,
    pub host: Option<String>,
    pub path: String,
    pub request_id: String,
    pub protocol: &'static str,
    pub served_by: &'static str,
}

impl Proxy {
    /// Sends the request `front` holds to an upstream of `route`: the
    /// sticky cookie's if valid, else a pick by the split and the pool's
    /// balance; after a failed attempt or an answer the route's retry
    /// policy retries (see `retry`), another upstream after a backoff.
    /// Returns the answer and the in-flight count held until its body ends.
    pub(super) async fn forward<F: Front>(
        &self,
        table: &RouteTable,
        route: &Route,
        front: &mut F,
        conn: &ClientConn,
        labels: &mut Labels,
    ) -> Result<(F::Answer, InFlight), ProxyError> {
        if let Some(limit) = &route.rate_limit {
            rate_limited(route, limit, front, conn)?;
        }
        if let Some(tracing) = &self.tracing {
            labels.trace = Some(Box::new(begin_trace(tracing, front, labels.start)));
        }
        let secure = conn.proto == "https";
        // The clock is read only for sticky routes.
        let now_unix = if route.sticky.is_some() {
            crate::clock::unix_seconds()
        } else {
            0
        };
        // A valid sticky cookie pins the first attempt; any other pick
        // (no cookie, a stale one, a retry, a rollout moving the client)
        // sets a fresh cookie.
        let pinned = route.sticky.as_ref().and_then(|sticky| {
            let value = front.cookie(&sticky.cookie)?;
            let (pick, moved, cohort) = table.sticky_pick(route, value, now_unix)?;
            labels.cohort = Some(cohort);
            Some((pick, moved))
        });
        let resendable = front.resendable();
        let mut picks = Picks::new(pinned, route, self.settings.retries);
        while let Some((pick, fresh)) = picks.next(table, route) {
            let (pick, moved, in_flight) = match admit_now(table, pick) {
                Ok(admitted) => admitted,
                // Boxed: the wait is rare, and inline it would grow every
                // request's future.
                Err(pick) => {
                    let (admitted, waited) =
                        Box::pin(self.queue_for(table, pick, picks.tried(), front)).await?;
                    labels.queued += waited;
                    admitted
                }
            };
            let cookie = fresh_cookie(table, route, &pick, fresh || moved, now_unix, secure).map(
                |(cookie, cohort)| {
                    labels.cohort = Some(cohort);
                    cookie
                },
            );
            let span = labels.trace.as_mut().map(|trace| {
                Box::new(trace.attempt(&pick.pool, pick.upstream.addr(), || front.method()))
            });
            let traceparent = span.as_deref().map(AttemptSpan::traceparent);
            let Some(request) = front.request_for(&pick, cookie, traceparent) else {
                break;
            };
            let attempt = Attempt {
                pick: &pick,
                request,
                in_flight,
                timeout: picks.per_try_timeout(self.settings.response_header_timeout),
                span,
            };
            let backoff = match self.attempt(table, attempt, front, labels).await {
                Ok(answer) => {
                    let status = F::status(&answer.0);
                    match picks.retry_answer(status, resendable, &pick, table, route) {
                        // The answer (and its connection) let go.
                        Some(backoff) => backoff,
                        None => return Ok(answer),
                    }
                }
                Err(e) => picks.failed(pick, e, resendable)?,
            };
            labels.retried();
            if let Some(backoff) = backoff {
                Box::pin(tokio::time::sleep(backoff)).await;
            }
        }
        Err(picks.exhausted(route))
    }

    /// One attempt at one upstream: send, wait for the response head (up
    /// to `timeout`), and record the outcome for outlier ejection.
    async fn attempt<F: Front>(
        &self,
        table: &RouteTable,
        attempt: Attempt<'_, F::Request>,
        front: &mut F,
        labels: &mut Labels,
    ) -> Result<(F::Answer, InFlight), ProxyError> {
        let Attempt {
            pick,
            request,
            in_flight,
            timeout,
            span,
        } = attempt;
        let (pool, addr) = labels.picked(table, pick)?;
        // The upstream's own time, for the access log only.
        let began = self.access_log.as_ref().map(|_| Instant::now());
        let sent = tokio::time::timeout(timeout, front.send(self, pool, addr, request)).await;
        labels.upstream_time = began.map(|b| b.elapsed());
        // The client's own body failing (a malformed chunk) is no
        // upstream's fault: a 400, not counted against the upstream.
        if let Ok(Err(SendError::Failed(e))) = &sent
            && e.is_user()
        {
            return Err(ProxyError::ClientBody(e.to_string()));
        }
        let ok = matches!(&sent, Ok(Ok(answer)) if F::status(answer) < 500);
        self.record_outcome(table, pick, ok);
        if let Some(span) = span {
            span.finish(match &sent {
                Ok(Ok(answer)) => Ok(F::status(answer)),
                Ok(Err(e)) if e.is_connect() => Err("connect"),
                Ok(Err(_)) => Err("upstream_failed"),
                Err(_) => Err("timeout"),
            });
        }
        match sent {
            Err(_) => Err(ProxyError::UpstreamTimeout { addr, timeout }),
            Ok(Err(e)) => Err(send_failed(pick, addr, e)),
            Ok(Ok(answer)) => Ok((answer, in_flight)),
        }
    }

    /// The request's wait in the queue of `pick`'s pool (see
    /// [`admit_now`]) for an upstream of the pool with room (`moved`:
    /// another than `pick`'s), and how long it waited; or `QueueFull` /
    /// `QueueTimeout` (503 with `Retry-After`), or `ClientLeft`.
    async fn queue_for<F: Front>(
        &self,
        table: &RouteTable,
        pick: Pick,
        tried: &[Arc<UpstreamState>],
        front: &mut F,
    ) -> Result<((Pick, bool, InFlight), std::time::Duration), ProxyError> {
        let pool = table.pools().get(pick.pool_index);
        let Some((pool, limits)) = pool.and_then(|p| Some((p, p.concurrency?))) else {
            return Err(ProxyError::NoEligibleUpstream {
                route: pick.pool.to_string(),
            });
        };
        let name = &pick.pool;
        let Some(place) = pool.queue.join(limits.max_queue as usize) else {
            queue_rejected(name, "full");
            return Err(ProxyError::QueueFull {
                pool: Arc::clone(name),
            });
        };
        metrics::counter!(names::QUEUED_TOTAL, "pool" => Arc::clone(name)).increment(1);
        let waiting = metrics::gauge!(names::QUEUE_WAITING, "pool" => Arc::clone(name));
        waiting.increment(1.0);
        let entered = tokio::time::Instant::now();
        let deadline = entered + limits.queue_timeout;
        let left = front.left();
        tokio::pin!(left);
        let admitted = loop {
            let room = place.room();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some(admitted) = table.admit_in(&pick, tried) {
                break Ok(admitted);
            }
            tokio::select! {
                waited = tokio::time::timeout_at(deadline, room) => {
                    if waited.is_err() {
                        break Err("timeout");
                    }
                }
                () = &mut left => break Err("left"),
            }
        };
        waiting.decrement(1.0);
        drop(place);
        let (upstream, in_flight) = match admitted {
            Ok(admitted) => admitted,
            Err(reason) => {
                queue_rejected(name, reason);
                return Err(match reason {
                    "left" => ProxyError::ClientLeft,
                    _ => ProxyError::QueueTimeout {
                        pool: Arc::clone(name),
                        timeout: limits.queue_timeout,
                    },
                });
            }
        };
        let moved = !Arc::ptr_eq(&upstream.upstream, &pick.upstream);
        Ok(((upstream, moved, in_flight), entered.elapsed()))
    }

    /// Passive outlier detection: counts failures in a row and ejects.
    fn record_outcome(&self, table: &RouteTable, pick: &Pick, ok: bool) {
        let Some(pool) = table.pools().get(pick.pool_index) else {
            return;
        };
        if let Some(time) = pick
            .upstream
            .record_outcome(ok, &pool.outlier, || pool.may_eject())
        {
            tracing::warn!(pool = %pick.pool, upstream = %pick.upstream.addr(), ?time, "upstream ejected after consecutive failures");
            metrics::counter!(
                names::UPSTREAM_EJECTIONS_TOTAL,
                "pool" => Arc::clone(&pick.pool),
                "upstream" => Arc::clone(pick.upstream.label())
            )
            .increment(1);
        }
    }

    /// With an access log, the line of a request arriving now; `describe`
    /// is asked only then.
    pub(super) fn begin_log(
        &self,
        conn: &ClientConn,
        describe: impl FnOnce() -> Described,
    ) -> Option<LogLine> {
        let log = self.access_log.as_ref()?;
        let Described {
            method,
            host,
            path,
            request_id,
            protocol,
            served_by,
        } = describe();
        Some(Box::new((
            log.clone(),
            Entry {
                time: crate::clock::now_rfc3339(),
                client: conn.peer.to_string(),
                method,
                host,
                path,
                route: None,
                pool: None,
                upstream: None,
                status: 0,
                duration_ms: 0.0,
                bytes: 0,
                attempts: 0,
                upstream_ms: None,
                queued_ms: 0.0,
                request_id,
                protocol,
                scheme: conn.proto,
                served_by,
                tls_version: conn.tls.as_ref().map(|t| t.version),
                sni: conn.tls.as_ref().and_then(|t| t.sni.clone()),
                client_subject: conn.tls.as_ref().and_then(|t| t.client_subject.clone()),
                trace_id: None,
                rollout_step: None,
                cohort: None,
            },
        )))
    }

    /// A request that failed: logged (see [`log_failure`]); its status.
    pub(super) fn failed(&self, e: &ProxyError, conn: &ClientConn) -> u16 {
        log_failure(e, conn.peer);
        e.status().as_u16()
    }
}

/// The server span of a request the engine forwards: a child of the
/// client's valid `traceparent`, else a new trace.
fn begin_trace<F: Front>(
    tracing: &crate::traces::Tracing,
    front: &F,
    start: Instant,
) -> RequestTrace {
    let traceparent = front.header(&TRACEPARENT_NAME);
    let tracestate = front.header(&TRACESTATE_NAME);
    let mut trace = tracing.request(start, traceparent, tracestate, || front.method());
    trace.describe(|| front.trace_facts());
    trace
}

/// A token from the route's rate limit for this request's key, or
/// `RateLimited` (429 with `Retry-After`).
fn rate_limited<F: Front>(
    route: &Route,
    limit: &RouteRateLimit,
    front: &F,
    conn: &ClientConn,
) -> Result<(), ProxyError> {
    let taken = match &limit.config.by {
        RateKey::ClientIp => limit.limiter.take(Some(conn.peer.ip())),
        RateKey::Header(name) => limit.limiter.take(front.header(name)),
        RateKey::Route => limit.limiter.take(None::<()>),
    };
    taken.map_err(|wait| {
        metrics::counter!(names::RATE_LIMITED_TOTAL, "route" => Arc::clone(&route.name))
            .increment(1);
        ProxyError::RateLimited {
            route: Arc::clone(&route.name),
            retry_after: wait,
        }
    })
}

/// The `Set-Cookie` value for a fresh pick on a sticky route, and the
/// cohort it puts the client in.
fn fresh_cookie(
    table: &RouteTable,
    route: &Route,
    pick: &Pick,
    fresh: bool,
    now_unix: u64,
    secure: bool,
) -> Option<(HeaderValue, u8)> {
    let sticky = route.sticky.as_ref().filter(|_| fresh)?;
    let expires = now_unix.saturating_add(sticky.max_age.as_secs());
    let (value, cohort) = table.seal_sticky(pick, expires);
    let cookie = headers::set_cookie(&sticky.cookie, &value, sticky.max_age, secure)?;
    Some((cookie, cohort))
}

/// What a send that got no response becomes: a failed connect (counted
/// per upstream) or an upstream that failed after taking the request.
fn send_failed(pick: &Pick, addr: SocketAddr, e: SendError) -> ProxyError {
    if !e.is_connect() {
        return ProxyError::UpstreamFailed { addr, source: e };
    }
    metrics::counter!(
        names::UPSTREAM_CONNECT_ERRORS_TOTAL,
        "pool" => Arc::clone(&pick.pool),
        "upstream" => Arc::clone(pick.upstream.label())
    )
    .increment(1);
    ProxyError::UpstreamConnect {
        addr,
        timed_out: e.is_timeout(),
        source: e,
    }
}

/// The "request failed" log line or a debug line for a client's own
/// fault. An upstream down, or a client that makes it slow, fails every
/// request: a few lines a second say so (`telemetry::LogLimit`).
fn log_failure(e: &ProxyError, peer: SocketAddr) {
    match e.side() {
        Side::Client => tracing::debug!(%peer, error = %e, "request refused"),
        _ => {
            if let Some(suppressed) = FAILED_REQUEST_LOG.allow() {
                tracing::warn!(%peer, error = %e, suppressed, "request failed");
            }
        }
    }
}

/// Metric labels learned while forwarding; `none` where a request never
/// got that far (no route, nothing eligible).
pub(super) struct Labels {
    /// When the request arrived.
    start: Instant,
    route: Option<Arc<str>>,
    pool: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    addr: Option<SocketAddr>,
    /// The first attempt's pool figures for rollout analysis, until its
    /// outcome is known.
    traffic: Option<Arc<TrafficStats>>,
    /// The first attempt was retried: its failure is counted, and later
    /// attempts are not (a retry must not hide a bad canary).
    retried: bool,
    /// Time spent in pools' queues: the proxy's wait for room, not the
    /// upstream's time, so rollout analysis leaves it out.
    queued: std::time::Duration,
    /// A mirrored request's side of the comparison with its shadow.
    pub shadow: Option<PrimaryTap>,
    /// Upstreams tried (the access log's `attempts`).
    attempts: u8,
    /// The last attempt's time from sending to the response head; taken
    /// only with an access log.
    upstream_time: Option<std::time::Duration>,
    /// The request's server span, with tracing on.
    trace: Option<Box<RequestTrace>>,
    /// The step of the rollout whose split routed it.
    rollout_step: Option<std::num::NonZeroU32>,
    /// A sticky client's cohort (its cookie's, or the fresh one's).
    cohort: Option<u8>,
}

impl Labels {
    /// The labels of a request that arrived at `start`.
    pub fn arrived(start: Instant) -> Labels {
        Labels {
            start,
            route: None,
            pool: None,
            upstream: None,
            addr: None,
            traffic: None,
            retried: false,
            attempts: 0,
            upstream_time: None,
            trace: None,
            rollout_step: None,
            cohort: None,
            queued: std::time::Duration::ZERO,
            shadow: None,
        }
    }

    /// The labels of a request for `route` that arrived at `start`.
    pub fn routed(route: &Route, start: Instant) -> Labels {
        Labels {
            route: Some(Arc::clone(&route.name)),
            rollout_step: route.rollout_step.and_then(std::num::NonZeroU32::new),
            ..Labels::arrived(start)
        }
    }

    /// The attempt just made failed (or its answer was let go) and
    /// another follows: if it was the first, its pool's rollout figures
    /// count a failure now.
    fn retried(&mut self) {
        if let Some(traffic) = self.traffic.take() {
            traffic.record(self.start.elapsed().saturating_sub(self.queued), true);
        }
        self.retried = true;
    }

    /// Labels an attempt at `pick`; its pool in `table` and its address.
    fn picked<'t>(
        &mut self,
        table: &'t RouteTable,
        pick: &Pick,
    ) -> Result<(&'t Pool, SocketAddr), ProxyError> {
        let addr = pick.upstream.addr();
        self.attempts = self.attempts.saturating_add(1);
        self.pool = Some(Arc::clone(&pick.pool));
        self.upstream = Some(Arc::clone(pick.upstream.label()));
        self.addr = Some(addr);
        if !self.retried {
            self.traffic = Some(Arc::clone(&pick.stats));
        }
        match table.pools().get(pick.pool_index) {
            Some(pool) => Ok((pool, addr)),
            None => Err(ProxyError::NoEligibleUpstream {
                route: self.route.as_deref().unwrap_or("").to_string(),
            }),
        }
    }

    /// Counts the response and returns the timer that records its
    /// duration (and writes its access-log line, `log`) when the body
    /// ends.
    // Always inlined: out of line, the labels (~200 bytes) are copied
    // into it on every request (callgrind: +200 instructions).
    #[inline(always)]
    pub fn record(
        mut self,
        cache: &RequestMetricsCache,
        status: u16,
        log: Option<LogLine>,
    ) -> RequestTimer {
        let start = self.start;
        let trace = self.trace.take().map(|trace| self.described(trace));
        let log = log.map(|mut line| {
            let entry = &mut line.1;
            entry.route = self.route.as_ref().map(|r| r.to_string());
            entry.pool = self.pool.as_ref().map(|p| p.to_string());
            entry.upstream = self.upstream.as_ref().map(|u| u.to_string());
            entry.status = status;
            entry.attempts = self.attempts;
            entry.upstream_ms = self.upstream_time.map(|t| t.as_secs_f64() * 1000.0);
            entry.queued_ms = self.queued.as_secs_f64() * 1000.0;
            entry.trace_id = trace.as_ref().map(|t| t.trace_id());
            entry.rollout_step = self.rollout_step.map(std::num::NonZeroU32::get);
            entry.cohort = self.cohort;
            line
        });
        if let (Some(route), Some(pool), Some(upstream), Some(addr)) =
            (&self.route, &self.pool, &self.upstream, self.addr)
        {
            return RequestTimer {
                start,
                histogram: cache.count(route, pool, addr, upstream, status),
                bytes: 0,
                log,
                traffic: self.traffic.map(|t| (t, status, self.queued)),
                trace: trace.map(|t| (t, status)),
            };
        }
        // A request that never reached an upstream: rare, no cache.
        let none = || Arc::<str>::from("none");
        let route = self.route.unwrap_or_else(none);
        let pool = self.pool.unwrap_or_else(none);
        metrics::counter!(
            names::REQUESTS_TOTAL,
            "route" => Arc::clone(&route),
            "pool" => Arc::clone(&pool),
            "upstream" => self.upstream.unwrap_or_else(none),
            "status" => telemetry::status_class(status)
        )
        .increment(1);
        RequestTimer {
            start,
            histogram: metrics::histogram!(names::REQUEST_DURATION_SECONDS, "route" => route, "pool" => pool),
            bytes: 0,
            log,
            traffic: None,
            trace: trace.map(|t| (t, status)),
        }
    }

    /// The server span with what it learned while forwarding. Out of
    /// line: most requests carry no span.
    #[cold]
    #[inline(never)]
    fn described(&self, mut trace: Box<RequestTrace>) -> Box<RequestTrace> {
        trace.describe(|| self.facts());
        trace
    }

    /// What the server span learned while forwarding.
    fn facts(&self) -> Vec<opentelemetry::KeyValue> {
        use opentelemetry::KeyValue;
        let mut facts = Vec::with_capacity(4);
        for (key, value) in [
            ("cutover.route", &self.route),
            ("cutover.pool", &self.pool),
            ("cutover.upstream", &self.upstream),
        ] {
            if let Some(value) = value {
                facts.push(KeyValue::new(key, value.to_string()));
            }
        }
        facts.push(KeyValue::new("cutover.attempts", i64::from(self.attempts)));
        facts
    }

    /// Sets the route of a request the front matched.
    pub fn set_route(&mut self, route: &Route) {
        self.route = Some(Arc::clone(&route.name));
        self.rollout_step = route.rollout_step.and_then(std::num::NonZeroU32::new);
    }
}
