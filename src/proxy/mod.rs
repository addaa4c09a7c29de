//! The hot path: match a route, pick an upstream, forward the request and
//! stream the response back. Errors become responses in `error` only.
//!
//! Reads the routing table once per request through `Routing::load` and
//! upstream atomics; never imports `admin` or `health`, never takes a lock the
//! control plane can hold.

mod activity;
mod body;
pub mod direct;
mod error;
pub mod headers;
mod max_forwards;
mod mirror;
mod out_of_step;
mod pools;
mod request_body;
mod request_metrics;
mod retry;
mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

pub use activity::{ActiveRequest, ConnActivity};
pub use body::{RequestTimer, ResponseBody};
pub use error::{ProxyError, Side};
pub use pools::{SWEEP_INTERVAL as UPSTREAM_SWEEP_INTERVAL, SendError};
pub use request_body::RequestBody;

use crate::access_log::{self, AccessLog};
use crate::config::ProxySettings;
use crate::routing::{Pick, Route, RouteTable, Routing};
use crate::telemetry::{self, names};
use crate::traffic::TrafficStats;
use crate::upstream::InFlight;
use direct::UpstreamBody;
use pools::ConnectionPools;
use request_body::BodySlot;
use request_metrics::RequestMetricsCache;
use retry::Picks;

/// "request failed" lines: see `telemetry::LogLimit`.
static FAILED_REQUEST_LOG: crate::telemetry::LogLimit = crate::telemetry::LogLimit::new();

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    routing: Arc<Routing>,
    /// Shared with shadow copies' tasks.
    pools: Arc<ConnectionPools>,
    settings: ProxySettings,
    /// Upgraded (WebSocket) tunnels, so a graceful stop can wait for them.
    tunnels: TaskTracker,
    access_log: Option<AccessLog>,
    request_metrics: RequestMetricsCache,
}

/// What the proxy knows about the client connection a request came on.
#[derive(Debug, Clone)]
pub struct ClientConn {
    pub peer: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// The peer's IP address as an `X-Forwarded-For` element.
    pub forwarded_for: http::HeaderValue,
}

impl ClientConn {
    pub fn new(peer: SocketAddr, proto: &'static str) -> ClientConn {
        ClientConn {
            peer,
            proto,
            forwarded_for: headers::forwarded_for_value(peer.ip()),
        }
    }
}

impl Proxy {
    pub fn new(
        routing: Arc<Routing>,
        settings: ProxySettings,
        tunnels: TaskTracker,
        access_log: Option<AccessLog>,
    ) -> Proxy {
        Proxy {
            routing,
            pools: Arc::new(ConnectionPools::new(&settings)),
            settings,
            tunnels,
            access_log,
            request_metrics: RequestMetricsCache::default(),
        }
    }

    /// Keeps one upstream connection pool per upstream of `table`; a
    /// draining upstream's idle connections are closed. Called by the
    /// control plane after each table swap.
    pub fn sync_upstreams(&self, table: &RouteTable) {
        self.pools.sync(table);
    }

    /// Closes upstream connections idle past `upstream_idle_timeout`; the
    /// lifecycle runs it every [`UPSTREAM_SWEEP_INTERVAL`].
    pub fn sweep_idle_upstream_connections(&self) {
        self.pools.sweep();
    }

    /// Proxies one request; never fails: errors become 4xx/5xx responses.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        conn: ClientConn,
        active: ActiveRequest,
    ) -> Response<ResponseBody> {
        let start = std::time::Instant::now();
        let mut labels = Labels::default();
        // Only with an access log: what the line needs from the request.
        let line = self.access_log.as_ref().map(|log| {
            let host = req.uri().authority().map(|a| a.to_string()).or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            });
            let entry = access_log::Entry {
                time: crate::clock::now_rfc3339(),
                client: conn.peer.to_string(),
                method: req.method().to_string(),
                host,
                path: req
                    .uri()
                    .path_and_query()
                    .map_or_else(|| "/".to_string(), |p| p.to_string()),
                route: None,
                pool: None,
                upstream: None,
                status: 0,
                duration_ms: 0.0,
                bytes: 0,
            };
            // Boxed: the response carries it, and is moved several times.
            Box::new((log.clone(), entry))
        });
        let grpc = is_grpc(&req);
        // A failure's HTTP status, for metrics and rollout analysis even
        // when a gRPC client is answered 200 with a grpc-status.
        let mut failed = None;
        let (mut response, in_flight) = match self.forward(req, &conn, &mut labels).await {
            Ok(ok) => ok,
            Err(e) => {
                failed = Some(e.status().as_u16());
                direct::log_failure(&e, conn.peer);
                let response = if grpc {
                    e.into_grpc_response()
                } else {
                    e.into_response()
                };
                (response, None)
            }
        };
        let status = failed.unwrap_or(response.status().as_u16());
        let line = line.map(|mut line| {
            let entry = &mut line.1;
            entry.route = labels.route.as_ref().map(|r| r.to_string());
            entry.pool = labels.pool.as_ref().map(|p| p.to_string());
            entry.upstream = labels.upstream.as_ref().map(|u| u.to_string());
            entry.status = status;
            line
        });
        if let Some(tap) = labels.shadow.take() {
            response.body_mut().tap(tap, status);
        }
        let mut timer = labels.record(&self.request_metrics, status, start);
        timer.log = line;
        response.body_mut().hold(in_flight, active, Some(timer));
        response
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        conn: &ClientConn,
        labels: &mut Labels,
    ) -> Result<(Response<ResponseBody>, Option<InFlight>), ProxyError> {
        if let Some(answer) = answer_locally(&mut req)? {
            return Ok((answer, None));
        }
        let table = self.routing.load();
        let (mut parts, body) = req.into_parts();
        let host = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        let Some(route) = table.match_route(host, &parts.uri, &parts.headers) else {
            return Err(ProxyError::NoRoute {
                host: host.map(str::to_string),
                path: parts.uri.path().to_string(),
            });
        };

        labels.route = Some(Arc::clone(&route.name));
        let upgrade = headers::is_upgrade_request(parts.version, &parts.headers);
        let client_upgrade = if upgrade {
            parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
        } else {
            None
        };
        let client_version = parts.version;
        headers::prepare_request(
            &mut parts.headers,
            &parts.uri,
            client_version,
            &conn.forwarded_for,
            conn.proto,
            upgrade,
        );
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // The clock is read only for sticky routes.
        let now_unix = if route.sticky.is_some() {
            crate::clock::unix_seconds()
        } else {
            0
        };
        // Upgraded connections are never copied.
        let tee = match (&route.mirror, upgrade) {
            (Some(_), false) => {
                let original = mirror::Original {
                    method: &parts.method,
                    path: &path,
                    headers: &parts.headers,
                    body: &body,
                };
                mirror::sample(&table, route, &self.pools, original).and_then(|(tee, tap)| {
                    labels.shadow = Some(tap);
                    tee
                })
            }
            _ => None,
        };
        let out = Outbound {
            method: parts.method,
            path,
            headers: parts.headers,
            body: BodySlot::new(body, tee),
            client_version,
            client_upgrade,
            now_unix,
        };
        self.proxy_to_upstream(&table, route, out, conn, labels)
            .await
    }

    /// Picks an upstream and makes an attempt; after a failure the error
    /// says whether another upstream may be tried (see `retry`).
    async fn proxy_to_upstream(
        &self,
        table: &RouteTable,
        route: &Route,
        mut out: Outbound,
        conn: &ClientConn,
        labels: &mut Labels,
    ) -> Result<(Response<ResponseBody>, Option<InFlight>), ProxyError> {
        // A valid sticky cookie pins the first attempt; any other pick
        // (no cookie, a stale one, a retry, a rollout moving the client)
        // sets a fresh cookie.
        let pinned = route.sticky.as_ref().and_then(|sticky| {
            let value = cookie_value(&out.headers, &sticky.cookie)?;
            table.sticky_pick(route, value, out.now_unix)
        });
        let resendable = out.resendable();
        let mut picks = Picks::new(pinned, self.settings.retries);
        while let Some((pick, fresh)) = picks.next(table, route) {
            // None: the body already went to an upstream and cannot be resent.
            let Some(request) = out.request_for(&pick) else {
                break;
            };
            match self.attempt(table, &pick, request, labels).await {
                Ok(answer) => {
                    return Ok(self.respond(table, route, &pick, fresh, &mut out, conn, answer));
                }
                Err(e) => picks.failed(pick, e, resendable)?,
            }
        }
        Err(picks.exhausted(route))
    }

    /// One attempt at one upstream: send, wait for the response head, and
    /// record the outcome for outlier ejection.
    async fn attempt(
        &self,
        table: &RouteTable,
        pick: &Pick,
        request: Request<RequestBody>,
        labels: &mut Labels,
    ) -> Result<Answer, ProxyError> {
        let (pool, addr) = labels.picked(table, pick)?;
        let in_flight = pick.upstream.start_request();
        let timeout = self.settings.response_header_timeout;
        let sent = if direct::fits(self.settings.direct_http1, pool, &request) {
            // Boxed: the rare path of the two for most requests' futures.
            tokio::time::timeout(timeout, Box::pin(self.send_direct(pool, addr, &request))).await
        } else {
            let send = async {
                let (response, connection) = self.pools.send(pool, addr, request).await?;
                Ok(response.map(|body| UpstreamBody::Hyper(body, connection)))
            };
            tokio::time::timeout(timeout, send).await
        };
        // The client's own body failing (a malformed chunk) is no
        // upstream's fault: a 400, not counted against the upstream.
        if let Ok(Err(SendError::Failed(e))) = &sent
            && e.is_user()
        {
            return Err(ProxyError::ClientBody(e.to_string()));
        }
        let ok = matches!(&sent, Ok(Ok(r)) if !r.status().is_server_error());
        self.record_outcome(table, pick, ok);
        match sent {
            Err(_) => Err(ProxyError::UpstreamTimeout { addr, timeout }),
            Ok(Err(e)) => Err(send_failed(pick, addr, e)),
            Ok(Ok(response)) => Ok(Answer {
                response,
                in_flight,
            }),
        }
    }

    /// The client's response to an upstream's answer: a tunnel for a
    /// switched protocol, else the streamed body, with a fresh sticky
    /// cookie when the pick was not the cookie's.
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &self,
        table: &RouteTable,
        route: &Route,
        pick: &Pick,
        fresh: bool,
        out: &mut Outbound,
        conn: &ClientConn,
        answer: Answer,
    ) -> (Response<ResponseBody>, Option<InFlight>) {
        let Answer {
            mut response,
            in_flight,
        } = answer;
        let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (true, Some(client_side)) = (upgraded, out.client_upgrade.take()) {
            let upstream_side = hyper::upgrade::on(&mut response);
            self.tunnels
                .spawn(tunnel::run(client_side, upstream_side, in_flight));
            let (mut head, _) = response.into_parts();
            headers::prepare_response(&mut head.headers, head.version, true);
            head.version = out.client_version;
            return (Response::from_parts(head, ResponseBody::empty()), None);
        }
        let (mut head, body) = response.into_parts();
        let body = match body {
            UpstreamBody::Hyper(body, mut connection) => {
                // Both Transfer-Encoding and Content-Length: hyper read the
                // body by the former; the latter must not reach the client
                // (RFC 9112 §6.3), and the connection, whose framing is in
                // doubt, carries nothing more.
                if head.headers.contains_key(http::header::TRANSFER_ENCODING)
                    && head.headers.remove(http::header::CONTENT_LENGTH).is_some()
                {
                    connection.never_reuse();
                }
                headers::prepare_response(&mut head.headers, head.version, false);
                ResponseBody::upstream(body, connection)
            }
            // Its head was rewritten as it was read.
            UpstreamBody::Direct(body) => ResponseBody::direct(body),
        };
        head.version = out.client_version;
        if let (true, Some(sticky)) = (fresh, &route.sticky) {
            let expires = out.now_unix.saturating_add(sticky.max_age.as_secs());
            let value = table.seal_sticky(pick, expires);
            let secure = conn.proto == "https";
            if let Some(cookie) =
                headers::set_cookie(&sticky.cookie, &value, sticky.max_age, secure)
            {
                head.headers.append(http::header::SET_COOKIE, cookie);
            }
        }
        (Response::from_parts(head, body), Some(in_flight))
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

/// The requests cutover answers itself, or refuses, before any routing.
fn answer_locally(
    req: &mut Request<Incoming>,
) -> Result<Option<Response<ResponseBody>>, ProxyError> {
    if req.method() == http::Method::CONNECT {
        return Err(ProxyError::ConnectMethod);
    }
    check_host(req)?;
    if req.method() == http::Method::OPTIONS && req.uri().path() == "*" {
        // `OPTIONS *` asks about the server itself (RFC 9110 §9.3.7):
        // cutover answers for itself rather than pick an upstream.
        return Ok(Some(Response::new(ResponseBody::empty())));
    }
    Ok(max_forwards::apply(req))
}

/// Rejects HTTP/1.1 requests without exactly one valid Host (RFC 9112
/// §3.2). Content-Length beside Transfer-Encoding needs no check here:
/// hyper frames by Transfer-Encoding, drops Content-Length and closes the
/// connection after the response (§6.1; tested in failures.rs).
fn check_host(req: &Request<Incoming>) -> Result<(), ProxyError> {
    if req
        .uri()
        .authority()
        .is_some_and(|a| !headers::valid_host(a.as_str()))
    {
        return Err(ProxyError::BadRequest(
            "invalid authority (userinfo, or characters a host cannot have)",
        ));
    }
    let headers = req.headers();
    let mut hosts = headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(ProxyError::BadRequest("more than one Host header")),
        (Some(h), None) => {
            let Some(host) = h.to_str().ok().filter(|h| headers::valid_host(h)) else {
                return Err(ProxyError::BadRequest("invalid Host header"));
            };
            // HTTP/2: a Host naming another server than :authority makes
            // the request malformed (RFC 9113 §8.3.1). (HTTP/1.1 absolute
            // form: the target wins and Host is ignored, RFC 9112 §3.2.2.)
            let differs = req.version() == Version::HTTP_2
                && req
                    .uri()
                    .authority()
                    .is_some_and(|a| !a.as_str().eq_ignore_ascii_case(host));
            if differs {
                return Err(ProxyError::BadRequest(
                    "Host header differs from :authority",
                ));
            }
            Ok(())
        }
        (None, _) if req.version() == Version::HTTP_11 && req.uri().authority().is_none() => {
            Err(ProxyError::BadRequest("HTTP/1.1 request without Host"))
        }
        (None, _) => Ok(()),
    }
}

/// A gRPC call (`content-type: application/grpc…`): its errors are
/// answered as gRPC statuses.
fn is_grpc(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    crate::config::cookies(headers)
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The request as it goes to upstreams: prepared once, sent on each attempt.
struct Outbound {
    method: http::Method,
    /// Origin-form: hyper's connection API writes the target as given.
    path: PathAndQuery,
    headers: http::HeaderMap,
    /// `None` for a request without a body.
    body: Option<BodySlot>,
    client_version: Version,
    /// The client side of a protocol switch, if the client asked for one.
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// Unix seconds, read only for sticky routes.
    now_unix: u64,
}

impl Outbound {
    /// Can the request be sent again after an upstream took it and closed
    /// without answering? Only a bodiless idempotent one (RFC 9110 §9.2.2).
    fn resendable(&self) -> bool {
        self.body.is_none() && self.method.is_idempotent()
    }

    /// The request for an attempt at `pick`; `None` once the body went to an
    /// earlier attempt.
    fn request_for(&self, pick: &Pick) -> Option<Request<RequestBody>> {
        let body = match &self.body {
            None => RequestBody::Empty,
            Some(slot) => slot.attempt()?,
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = Uri::from(self.path.clone());
        *request.version_mut() = Version::HTTP_11;
        let mut headers = self.headers.clone();
        if !headers.contains_key(http::header::HOST) {
            // An HTTP/1.0 client may send none; HTTP/1.1 upstreams need one.
            headers.insert(http::header::HOST, pick.upstream.host_header().clone());
        }
        *request.headers_mut() = headers;
        Some(request)
    }
}

/// An upstream's answer: its response head and body (with the connection
/// it came on), and the in-flight count held until the body ends.
struct Answer {
    response: Response<UpstreamBody>,
    in_flight: InFlight,
}

/// Metric labels learned while forwarding; `none` where a request never
/// got that far (no route, nothing eligible).
#[derive(Default)]
struct Labels {
    route: Option<Arc<str>>,
    pool: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    addr: Option<SocketAddr>,
    traffic: Option<Arc<TrafficStats>>,
    /// A mirrored request's side of the comparison with its shadow.
    shadow: Option<mirror::PrimaryTap>,
}

impl Labels {
    /// Labels an attempt at `pick`; its pool in `table` and its address.
    fn picked<'t>(
        &mut self,
        table: &'t RouteTable,
        pick: &Pick,
    ) -> Result<(&'t crate::routing::Pool, SocketAddr), ProxyError> {
        let addr = pick.upstream.addr();
        self.pool = Some(Arc::clone(&pick.pool));
        self.upstream = Some(Arc::clone(pick.upstream.label()));
        self.addr = Some(addr);
        self.traffic = Some(Arc::clone(&pick.stats));
        match table.pools().get(pick.pool_index) {
            Some(pool) => Ok((pool, addr)),
            None => Err(ProxyError::NoEligibleUpstream {
                route: self.route.as_deref().unwrap_or("").to_string(),
            }),
        }
    }

    /// Counts the response and returns the timer that records its duration
    /// when the body ends.
    fn record(
        self,
        cache: &RequestMetricsCache,
        status: u16,
        start: std::time::Instant,
    ) -> RequestTimer {
        if let (Some(route), Some(pool), Some(upstream), Some(addr)) =
            (&self.route, &self.pool, &self.upstream, self.addr)
        {
            return RequestTimer {
                start,
                histogram: cache.count(route, pool, addr, upstream, status),
                bytes: 0,
                log: None,
                traffic: self.traffic.map(|t| (t, status >= 500)),
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
            log: None,
            traffic: None,
        }
    }
}
