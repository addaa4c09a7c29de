//! The front for requests hyper's server reads (HTTP/2, HTTP/1.1 the
//! direct path leaves, TLS either way): checks and answers what cutover
//! answers itself, matches a route, prepares the upstream request once,
//! and has the engine (`engine`) send it; then turns the upstream's answer
//! into the client's response — a tunnel for a protocol switch, else the
//! streamed body.

use std::future::{Future, ready};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::Either;

use super::request_body::ClientBody;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use opentelemetry::KeyValue;

use super::activity::ActiveRequest;
use super::body::ResponseBody;
use super::engine::{Described, Front, Labels, LogLine};
use super::h1_upstream::{self, RawRequest, UpstreamBody};
use super::pools::SendError;
use super::request_body::{BodySlot, RequestBody};
use super::request_id;
use super::wire::answer::OwnAnswer;
use super::wire::headers;
use super::{ClientConn, Proxy, ProxyError, max_forwards, mirror, tunnel};
use crate::routing::{Pick, Pool, RouteTable};
use crate::traces::{TRACEPARENT, TRACEPARENT_NAME, TraceParent};
use crate::upstream::InFlight;

impl Proxy {
    /// Proxies one request; never fails: errors become 4xx/5xx responses.
    ///
    /// Checks, routing and the upstream request's preparation happen
    /// here, synchronously: the future returned holds only what crosses
    /// the wait for the upstream (the prepared request, the labels, the
    /// engine's own future), and a request answered at once has no
    /// future of its own. Every HTTP/2 stream in flight holds one, so its
    /// size is memory in flight: 6.6 KB when checks and routing were
    /// part of it, and every layer kept a second copy of its arguments.
    pub fn handle(
        self: &Arc<Self>,
        mut req: Request<ClientBody>,
        conn: ClientConn,
        active: ActiveRequest,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static {
        let mut labels = Labels::arrived(Instant::now());
        let id_header = &self.settings.request_id_header;
        let (request_id, made) = request_id::settle(req.headers_mut(), id_header);
        let log = self.begin_log(&conn, || describe(&req, &request_id));
        let made_id = made.then(|| request_id.clone());
        let finish = Finish {
            request_id,
            log,
            active,
            grpc: is_grpc(&req),
        };
        match self.prepare(req, made_id, &conn, &mut labels) {
            Ok(Prepared::Forward(mut forwarding)) => {
                let proxy = Arc::clone(self);
                Either::Right(async move {
                    let served = proxy
                        .send_prepared(&mut forwarding, &conn, &mut labels)
                        .await;
                    proxy.finish(served, &conn, labels, finish)
                })
            }
            Ok(Prepared::Answered(answer)) => Either::Left(ready(self.finish(
                Ok((answer, None)),
                &conn,
                labels,
                finish,
            ))),
            Err(e) => Either::Left(ready(self.finish(Err(e), &conn, labels, finish))),
        }
    }

    /// The client's response to what serving the request came to, with
    /// its metrics and access-log line recorded.
    fn finish(
        &self,
        served: Result<(Response<ResponseBody>, Option<InFlight>), ProxyError>,
        conn: &ClientConn,
        mut labels: Labels,
        finish: Finish,
    ) -> Response<ResponseBody> {
        // A failure's HTTP status, for metrics and rollout analysis even
        // when a gRPC client is answered 200 with a grpc-status.
        let mut failed = None;
        let (mut response, in_flight) = match served {
            Ok(ok) => ok,
            Err(e) => {
                failed = Some(self.failed(&e, conn));
                (own_response(e.answer(finish.grpc)), None)
            }
        };
        let status = failed.unwrap_or(response.status().as_u16());
        if let Some(tap) = labels.shadow.take() {
            response.body_mut().tap(tap, status);
        }
        let timer = labels.record(&self.request_metrics, status, finish.log);
        response
            .body_mut()
            .hold(in_flight, finish.active, Some(timer));
        // Unique per response: HTTP/2 must not index it (HPACK), or each
        // one evicts the dynamic table's entries that do repeat (Date,
        // Via, the app's own) and they go out in full again — 60,920 →
        // 71,304 instructions per h2c request until this.
        let mut request_id = finish.request_id;
        request_id.set_sensitive(true);
        let id_header = &self.settings.request_id_header;
        response.headers_mut().insert(id_header, request_id);
        response
    }

    /// Checks the request and answers it, or matches its route and
    /// prepares it for upstreams (and a shadow copy).
    /// `made_id`: the request id made here, which goes up with each
    /// attempt.
    fn prepare(
        &self,
        mut req: Request<ClientBody>,
        mut made_id: Option<HeaderValue>,
        conn: &ClientConn,
        labels: &mut Labels,
    ) -> Result<Prepared, ProxyError> {
        if let Some(answer) = answer_locally(&mut req)? {
            return Ok(Prepared::Answered(answer));
        }
        let table = self.routing.load();
        let (mut parts, body) = req.into_parts();
        let host = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        let subject = conn.tls.as_ref().and_then(|t| t.client_subject.as_deref());
        let Some(route_index) = table.match_route_index(host, &parts.uri, &parts.headers, subject)
        else {
            return Err(ProxyError::NoRoute {
                host: host.map(str::to_string),
                path: parts.uri.path().to_string(),
            });
        };
        let route = &table.routes()[route_index];
        labels.set_route(route);
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
        // hyper's client sends no body with a GET, HEAD or CONNECT whose
        // length it does not know (an HTTP/2 client's body without
        // Content-Length): said chunked, the client's body goes up whole.
        if matches!(parts.method, Method::GET | Method::HEAD | Method::CONNECT)
            && !hyper::body::Body::is_end_stream(&body)
            && hyper::body::Body::size_hint(&body).exact().is_none()
        {
            parts.headers.insert(
                http::header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // Upgraded connections are never copied.
        let tee = match (&route.mirror, upgrade) {
            (Some(_), false) => {
                // A copy carries the same id: in the map, for all.
                if let Some(id) = made_id.take() {
                    parts.headers.insert(&self.settings.request_id_header, id);
                }
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
            cookie: None,
            client: conn.proxy_addrs(),
            made_id,
        };
        Ok(Prepared::Forward(Forwarding {
            table,
            route: route_index,
            out,
        }))
    }

    /// Has the engine send a prepared request; then the client's
    /// response to the upstream's answer.
    async fn send_prepared(
        &self,
        forwarding: &mut Forwarding,
        conn: &ClientConn,
        labels: &mut Labels,
    ) -> Result<(Response<ResponseBody>, Option<InFlight>), ProxyError> {
        let Forwarding { table, route, out } = forwarding;
        let route = &table.routes()[*route];
        let (answer, in_flight) = self.forward(table, route, out, conn, labels).await?;
        Ok(self.respond(out, answer, in_flight))
    }

    /// The client's response to an upstream's answer: a tunnel for a
    /// switched protocol, else the streamed body, with the fresh sticky
    /// cookie if the pick set one.
    fn respond(
        &self,
        out: &mut Outbound,
        mut response: Response<UpstreamBody>,
        in_flight: InFlight,
    ) -> (Response<ResponseBody>, Option<InFlight>) {
        let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let (true, Some(client_side)) = (upgraded, out.client_upgrade.take()) {
            let websocket = response
                .headers()
                .get(http::header::UPGRADE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
            let upstream_side = hyper::upgrade::on(&mut response);
            self.tunnels.spawn(tunnel::run(
                client_side,
                upstream_side,
                in_flight,
                websocket,
            ));
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
        if let Some(cookie) = out.cookie.take() {
            head.headers.append(http::header::SET_COOKIE, cookie);
        }
        (Response::from_parts(head, body), Some(in_flight))
    }
}

/// A request checked by `prepare`: answered already, or routed.
/// Returned once and taken apart at once: boxing the routed request
/// would cost an allocation per request to save a move.
#[allow(clippy::large_enum_variant)]
enum Prepared {
    Answered(Response<ResponseBody>),
    Forward(Forwarding),
}

/// A routed request, ready for the engine.
struct Forwarding {
    table: Arc<RouteTable>,
    /// Its route in `table`.
    route: usize,
    out: Outbound,
}

/// What `finish` needs besides the outcome, kept from the request's
/// arrival.
struct Finish {
    request_id: HeaderValue,
    log: Option<LogLine>,
    active: ActiveRequest,
    grpc: bool,
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
    /// The fresh sticky cookie of the last attempt's pick, if any.
    cookie: Option<HeaderValue>,
    /// The client's address and the one it reached (a `send_proxy`
    /// pool's PROXY header).
    client: Option<(SocketAddr, SocketAddr)>,
    /// A request id made here (not in `headers`; its header is
    /// `[proxy] request_id_header`).
    made_id: Option<HeaderValue>,
}

/// One attempt of an [`Outbound`] request: its body, and the headers the
/// attempt adds to the shared ones.
struct OutboundAttempt {
    body: RequestBody,
    /// Set when the client sent no `Host` (HTTP/1.0): the upstream's.
    host: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
}

impl Outbound {
    /// `attempt` as a request for hyper's client: the headers copied, the
    /// attempt's own added.
    fn hyper_request(
        &self,
        attempt: OutboundAttempt,
        id_header: &http::HeaderName,
    ) -> Request<RequestBody> {
        let mut request = Request::new(attempt.body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = Uri::from(self.path.clone());
        *request.version_mut() = Version::HTTP_11;
        let mut headers = self.headers.clone();
        if let Some(host) = attempt.host {
            headers.insert(http::header::HOST, host);
        }
        if let Some(id) = &self.made_id {
            headers.insert(id_header, id.clone());
        }
        if let Some(traceparent) = attempt.traceparent {
            headers.insert(TRACEPARENT, traceparent);
        }
        *request.headers_mut() = headers;
        request
    }
}

impl Front for Outbound {
    type Request = OutboundAttempt;
    type Answer = Response<UpstreamBody>;

    fn header(&self, name: &http::HeaderName) -> Option<&[u8]> {
        self.headers.get(name).map(HeaderValue::as_bytes)
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        crate::config::cookies(&self.headers)
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    fn resendable(&self) -> bool {
        self.body.is_none() && self.method.is_idempotent()
    }

    fn method(&self) -> &str {
        self.method.as_str()
    }

    fn trace_facts(&self) -> Vec<KeyValue> {
        let mut facts = vec![
            KeyValue::new("http.request.method", self.method.to_string()),
            KeyValue::new("url.path", self.path.path().to_string()),
            KeyValue::new(
                "network.protocol.version",
                protocol_version(self.client_version),
            ),
        ];
        if let Some(query) = self.path.query() {
            facts.push(KeyValue::new("url.query", query.to_string()));
        }
        facts
    }

    fn request_for(
        &mut self,
        pick: &Pick,
        cookie: Option<HeaderValue>,
        traceparent: Option<&TraceParent>,
    ) -> Option<Self::Request> {
        let body = match &self.body {
            None => RequestBody::Empty,
            Some(slot) => slot.attempt()?,
        };
        self.cookie = cookie;
        // An HTTP/1.0 client may send no Host; HTTP/1.1 upstreams need one.
        let host = (!self.headers.contains_key(http::header::HOST))
            .then(|| pick.upstream.host_header().clone());
        Some(OutboundAttempt {
            body,
            host,
            traceparent: traceparent.map(TraceParent::header_value),
        })
    }

    async fn send(
        &mut self,
        proxy: &Proxy,
        pool: &Pool,
        addr: SocketAddr,
        attempt: OutboundAttempt,
    ) -> Result<Self::Answer, SendError> {
        let direct = proxy.settings.direct_http1;
        if h1_upstream::fits(direct, pool, &self.headers, &attempt.body) {
            let host = attempt.host.as_ref().map(|h| (&http::header::HOST, h));
            let id_header = &proxy.settings.request_id_header;
            let id = self.made_id.as_ref().map(|v| (id_header, v));
            let traceparent_name = TRACEPARENT_NAME;
            let traceparent = attempt.traceparent.as_ref().map(|t| (&traceparent_name, t));
            let raw = RawRequest {
                method: &self.method,
                target: self.path.as_str(),
                headers: &self.headers,
                extra: [host, id, traceparent],
            };
            // Boxed, as hyper's client below: each of the two inline
            // would make every request's future as large as its own.
            // Written straight into the box (`Box::pin` copied 1.2 KB).
            let sending = Box::write(Box::new_uninit(), proxy.send_raw(pool, addr, raw));
            return Box::into_pin(sending).await;
        }
        let request = self.hyper_request(attempt, &proxy.settings.request_id_header);
        // Boxed too: hyper's client future (2.2 KB) inline would sit in
        // every request's future, HTTP/2 streams' included, which take
        // the raw path above (docs/benchmarks.md, "Per-stream memory").
        let sent = Box::pin(proxy.pools.send(pool, addr, request, self.client)).await;
        let (response, connection) = sent?;
        Ok(response.map(|body| UpstreamBody::Hyper(body, connection)))
    }

    fn status(answer: &Self::Answer) -> u16 {
        answer.status().as_u16()
    }
}

/// `network.protocol.version` of a client's request.
fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        _ => "1.1",
    }
}

/// What the access log says of `req`.
fn describe(req: &Request<ClientBody>, request_id: &HeaderValue) -> Described {
    let host = req.uri().authority().map(|a| a.to_string()).or_else(|| {
        req.headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
    });
    Described {
        method: req.method().to_string(),
        host,
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.to_string()),
        // Visible ASCII, checked or made.
        request_id: String::from_utf8_lossy(request_id.as_bytes()).into_owned(),
        protocol: match req.version() {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/1.1",
        },
        served_by: "hyper",
    }
}

/// cutover's own answer as hyper's server sends it.
fn own_response(answer: OwnAnswer) -> Response<ResponseBody> {
    answer.into_response().map(|body| {
        if body.is_empty() {
            ResponseBody::empty()
        } else {
            ResponseBody::full(body)
        }
    })
}

/// The requests cutover answers itself, or refuses, before any routing.
fn answer_locally(
    req: &mut Request<ClientBody>,
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
fn check_host(req: &Request<ClientBody>) -> Result<(), ProxyError> {
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
fn is_grpc(req: &Request<ClientBody>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
