//! The direct HTTP/1.1 path: plain requests forwarded between two sockets
//! by the client connection's own task, without hyper.
//!
//! Why it exists: on HTTP/1.1 keep-alive, cutover spent ~2x the user-space
//! CPU per request of nginx and HAProxy, nearly all of it in hyper's and
//! tokio's per-request machinery — a request parsed into a `HeaderMap`,
//! cloned and encoded again, a channel hop to the upstream connection's
//! own task, the response parsed into another `HeaderMap` (see
//! docs/benchmarks.md). Here a request head is parsed in place
//! (`httparse`, as hyper does), the upstream head is the client's bytes
//! with the proxy's edits, the response head likewise, and the body is
//! copied from one socket to the other.
//!
//! It takes only what it can do exactly as hyper's path would (see
//! `request` for the list and `routing::RouteTable::direct_route` for the
//! routes); anything else — and the first request that is not plain ends
//! the direct path for that connection — is handed to hyper with the
//! bytes read so far, so hyper keeps every check and every feature.
//!
//! Its upstream half (`Proxy::send_direct`) also serves bodiless requests
//! hyper's server handles, HTTP/2 above all: see [`fits`].

mod body;
mod chunked;
pub mod request;
pub mod response;

pub use body::{DirectBody, UpstreamBody};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::RequestBody;
use super::activity::ConnActivity;
use super::pools::{RawConn, RawHome, SendError};
use super::retry::Picks;
use super::{ClientConn, FAILED_REQUEST_LOG, Labels, Proxy, ProxyError, Side};
use crate::access_log;
use crate::config::UpstreamProtocol;
use crate::routing::Pool;
use crate::routing::{Pick, RouteTable};
use chunked::ChunkedScan;
use request::{Forwarding, RequestHead, Verdict};
use response::{ClientSide, Framing, Parsed, ResponseHead};

/// What to do with the bytes at the start of a client's buffer.
pub enum Plan {
    /// Not a whole request head yet.
    Partial,
    /// For hyper's path, from these bytes on.
    Fallback,
    Serve(Ticket),
}

/// A request the direct path serves: where its parts are, and its route.
pub struct Ticket {
    head: RequestHead,
    table: Arc<RouteTable>,
    route: usize,
}

impl Ticket {
    /// Bytes of the request's head (`max_header_bytes` applies to it).
    pub fn head_len(&self) -> usize {
        self.head.len
    }

    /// Bytes of the whole request: its head and its body.
    pub fn request_len(&self) -> usize {
        self.head.len + self.head.body
    }
}

/// How the client connection goes on after a request.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    KeepAlive,
    Close,
}

/// Buffers a client connection keeps between its requests.
#[derive(Default)]
pub struct Scratch {
    upstream_head: Vec<u8>,
    client_head: Vec<u8>,
    from_upstream: bytes::BytesMut,
}

/// Room for an upstream's response head: most fit in far less.
const HEAD_READ_SIZE: usize = 4 * 1024;

/// Reads of a body that did not come with its head: larger, for large
/// bodies (taken only by responses that need them, so that connections
/// serving small answers keep small buffers).
const BODY_READ_SIZE: usize = 16 * 1024;

/// Largest upstream response head read (hyper's client takes ~400 KiB).
const MAX_RESPONSE_HEAD: usize = 256 * 1024;

/// An upstream's answer: its socket, where that goes back, its head.
struct Answer {
    upstream: RawConn,
    home: RawHome,
    head: ResponseHead,
}

impl Proxy {
    /// Whether plain HTTP/1.1 requests take the direct path.
    pub fn direct_enabled(&self) -> bool {
        self.settings.direct_http1
    }

    /// Looks at the start of `buf`: a request the direct path serves, one
    /// for hyper, or not a whole head yet.
    pub fn direct_plan(&self, buf: &[u8], conn: &ClientConn, scratch: &mut Scratch) -> Plan {
        let fwd = Forwarding {
            client_ip: conn.forwarded_for.as_bytes(),
            proto: conn.proto.as_bytes(),
        };
        let head = match request::classify(buf, &fwd, &mut scratch.upstream_head) {
            Verdict::Partial => return Plan::Partial,
            Verdict::Fallback => return Plan::Fallback,
            Verdict::Take(head) => head,
        };
        // `classify` took only a valid Host and a target of ASCII.
        let host = std::str::from_utf8(&buf[head.host.clone()]).unwrap_or_default();
        let target = std::str::from_utf8(&buf[head.target.clone()]).unwrap_or_default();
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let table = self.routing.load();
        match table.direct_route(host, path) {
            Some(route) => Plan::Serve(Ticket { head, table, route }),
            None => Plan::Fallback,
        }
    }

    /// Serves the request `ticket` found at the start of `buf` to
    /// `client`: an upstream's response, or cutover's error answer. With
    /// `stopping` set (a graceful stop), the answer says
    /// `Connection: close`, as hyper's does.
    #[allow(clippy::too_many_arguments)]
    pub async fn direct_serve<S>(
        &self,
        ticket: Ticket,
        buf: &[u8],
        client: &mut S,
        conn: &ClientConn,
        activity: &Arc<ConnActivity>,
        stopping: &tokio_util::sync::CancellationToken,
        scratch: &mut Scratch,
    ) -> Outcome
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let start = Instant::now();
        // The access log's time is the request's arrival, as on hyper's path.
        let arrived = self.access_log.is_some().then(crate::clock::now_rfc3339);
        let _active = activity.start(Version::HTTP_11);
        let Ticket { head, table, route } = ticket;
        let route = &table.routes()[route];
        let mut labels = Labels {
            route: Some(Arc::clone(&route.name)),
            ..Labels::default()
        };
        let close = head.close || activity.closing() || stopping.is_cancelled();
        let secure = conn.proto == "https";
        let answer = self
            .direct_forward(
                &table,
                route,
                &head,
                buf,
                (close, secure),
                scratch,
                &mut labels,
            )
            .await;
        let log = self.access_log.as_ref().zip(arrived).map(|(log, time)| {
            let text = |r: std::ops::Range<usize>| String::from_utf8_lossy(&buf[r]).into_owned();
            Box::new((
                log.clone(),
                access_log::Entry {
                    time,
                    client: conn.peer.to_string(),
                    method: text(head.method.clone()),
                    host: Some(text(head.host.clone())),
                    path: text(head.target.clone()),
                    route: labels.route.as_ref().map(|r| r.to_string()),
                    pool: labels.pool.as_ref().map(|p| p.to_string()),
                    upstream: labels.upstream.as_ref().map(|u| u.to_string()),
                    status: 0,
                    duration_ms: 0.0,
                    bytes: 0,
                },
            ))
        });
        let (answer, in_flight) = match answer {
            Ok(ok) => ok,
            Err(e) => {
                let status = e.status().as_u16();
                log_failure(&e, conn.peer);
                let mut timer = labels.record(&self.request_metrics, status, start);
                let close = close || activity.closing() || stopping.is_cancelled();
                let (bytes, closes) = error_response(&e, close, &mut scratch.client_head);
                let written = client.write_all(bytes).await.is_ok();
                timer.log = log.map(|mut line| {
                    line.1.status = status;
                    line
                });
                return if written && !closes {
                    Outcome::KeepAlive
                } else {
                    Outcome::Close
                };
            }
        };
        let Answer {
            mut upstream,
            home,
            head: response,
        } = answer;
        // A stop (or a handover) that began while the upstream answered:
        // this response is the connection's last, and says so.
        let stopped_meanwhile = !close && (activity.closing() || stopping.is_cancelled());
        if stopped_meanwhile && response.framing != Framing::UntilClose {
            response::add_connection_close(&mut scratch.client_head);
        }
        let close = close || stopped_meanwhile;
        let mut timer = labels.record(&self.request_metrics, response.status, start);
        timer.log = log.map(|mut line| {
            line.1.status = response.status;
            line
        });
        let copied = copy_body(
            &mut upstream,
            client,
            &response,
            &mut scratch.client_head,
            &mut scratch.from_upstream,
            &mut timer.bytes,
        )
        .await;
        drop(in_flight);
        match copied {
            Ok(BodyEnd::Complete) if response.reusable => home.release(upstream),
            Ok(BodyEnd::ExtraBytes) => home.out_of_step(),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(peer = %conn.peer, error = %e, "response cut short");
                return Outcome::Close;
            }
        }
        if close || response.framing == Framing::UntilClose {
            Outcome::Close
        } else {
            Outcome::KeepAlive
        }
    }

    /// Picks an upstream and makes attempts, as `proxy_to_upstream` does:
    /// a failed connect (or a bodiless idempotent request whose upstream
    /// closed without answering) goes to another, up to `retries` more.
    #[allow(clippy::too_many_arguments)]
    async fn direct_forward(
        &self,
        table: &RouteTable,
        route: &crate::routing::Route,
        head: &RequestHead,
        buf: &[u8],
        (close, secure): (bool, bool),
        scratch: &mut Scratch,
        labels: &mut Labels,
    ) -> Result<(Answer, crate::upstream::InFlight), ProxyError> {
        let now_unix = if route.sticky.is_some() {
            crate::clock::unix_seconds()
        } else {
            0
        };
        let pinned = route.sticky.as_ref().and_then(|sticky| {
            let value = cookie_value(buf, &head.cookies, &sticky.cookie)?;
            table.sticky_pick(route, value, now_unix)
        });
        let idempotent = head.idempotent(buf);
        let mut picks = Picks::new(pinned, self.settings.retries);
        while let Some((pick, fresh)) = picks.next(table, route) {
            let cookie = match (fresh, &route.sticky) {
                (true, Some(sticky)) => {
                    let expires = now_unix.saturating_add(sticky.max_age.as_secs());
                    let value = table.seal_sticky(&pick, expires);
                    super::headers::set_cookie(&sticky.cookie, &value, sticky.max_age, secure)
                }
                _ => None,
            };
            let side = ClientSide {
                head_request: head.is_head(buf),
                close,
                set_cookie: cookie.as_ref().map(http::HeaderValue::as_bytes),
                date: &crate::clock::http_date(),
            };
            let in_flight = pick.upstream.start_request();
            let attempt = self.direct_attempt(table, &pick, &side, idempotent, scratch, labels);
            match attempt.await {
                Ok(answer) => return Ok((answer, in_flight)),
                Err(e) => picks.failed(pick, e, idempotent)?,
            }
        }
        Err(picks.exhausted(route))
    }

    /// One attempt at one upstream: the head sent, the response head read
    /// (interim ones skipped) and the client's head written into
    /// `scratch.client_head`; the outcome recorded for outlier ejection.
    async fn direct_attempt(
        &self,
        table: &RouteTable,
        pick: &Pick,
        side: &ClientSide<'_>,
        idempotent: bool,
        scratch: &mut Scratch,
        labels: &mut Labels,
    ) -> Result<Answer, ProxyError> {
        let (pool, addr) = labels.picked(table, pick)?;
        let exchange = self.direct_exchange(pool, addr, side, idempotent, scratch);
        let timeout = self.settings.response_header_timeout;
        let result = tokio::time::timeout(timeout, exchange).await;
        let ok = matches!(&result, Ok(Ok((_, _, head))) if head.status < 500);
        self.record_outcome(table, pick, ok);
        match result {
            Ok(Ok((upstream, home, head))) => Ok(Answer {
                upstream,
                home,
                head,
            }),
            Err(_) => Err(ProxyError::UpstreamTimeout { addr, timeout }),
            Ok(Err(e)) => Err(super::send_failed(pick, addr, e.into())),
        }
    }
}

impl Proxy {
    /// Sends the request head (and body) in `scratch.upstream_head` on an
    /// idle socket to `addr` of `pool`, or a new one, and reads the
    /// response head (see [`exchange_head`]). A pooled socket the upstream
    /// closed as the request went out, unnoticed, is replaced by another
    /// for a request that may be sent twice (RFC 9112 §9.3.1).
    async fn direct_exchange(
        &self,
        pool: &crate::routing::Pool,
        addr: SocketAddr,
        side: &ClientSide<'_>,
        idempotent: bool,
        scratch: &mut Scratch,
    ) -> Result<(RawConn, RawHome, ResponseHead), Failure> {
        let (mut idle, home) = self.pools.take_raw(pool, addr);
        loop {
            let mut upstream = match idle.take() {
                Some(conn) => conn,
                None => match self.pools.connect_raw(addr).await {
                    Ok(conn) => conn,
                    Err(e) => return Err(Failure::Connect(e)),
                },
            };
            match exchange_head(&mut upstream, side, scratch).await {
                Ok(head) => return Ok((upstream, home, head)),
                Err(Failure::Closed(_)) if upstream.reused && idempotent => {
                    idle = self.pools.take_raw(pool, addr).0;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Why an exchange with an upstream failed.
enum Failure {
    Connect(crate::connector::ConnectError),
    /// The socket failed or closed before a whole response head came.
    Closed(String),
    /// A response cutover does not forward.
    Invalid(String),
}

impl From<Failure> for SendError {
    fn from(failure: Failure) -> SendError {
        match failure {
            Failure::Connect(e) => SendError::Connect(e),
            Failure::Closed(why) | Failure::Invalid(why) => SendError::Direct(why),
        }
    }
}

/// Sends the request head in `scratch.upstream_head`, reads the response
/// head into `scratch.from_upstream` and writes the client's head.
async fn exchange_head(
    upstream: &mut RawConn,
    side: &ClientSide<'_>,
    scratch: &mut Scratch,
) -> Result<ResponseHead, Failure> {
    let closed = |e: std::io::Error| Failure::Closed(e.to_string());
    upstream
        .stream
        .write_all(&scratch.upstream_head)
        .await
        .map_err(closed)?;
    let buf = &mut scratch.from_upstream;
    buf.clear();
    loop {
        if !buf.is_empty() {
            match response::parse(buf, side, &mut scratch.client_head) {
                Parsed::Ready(head) => {
                    bytes::Buf::advance(buf, head.len);
                    return Ok(head);
                }
                Parsed::Interim(len) => {
                    bytes::Buf::advance(buf, len);
                    continue;
                }
                Parsed::Invalid(why) => return Err(Failure::Invalid(why.to_string())),
                Parsed::Partial if buf.len() >= MAX_RESPONSE_HEAD => {
                    return Err(Failure::Invalid("response head too large".to_string()));
                }
                Parsed::Partial => {}
            }
        }
        buf.reserve(HEAD_READ_SIZE);
        match upstream.stream.read_buf(buf).await {
            Ok(0) => {
                return Err(Failure::Closed(
                    "connection closed before a response head".to_string(),
                ));
            }
            Ok(_) => upstream.reused = false,
            Err(e) => return Err(closed(e)),
        }
    }
}

/// How a response body read from the upstream ended.
#[derive(Debug, PartialEq)]
enum BodyEnd {
    /// At its end, with nothing after it: the socket may be reused.
    Complete,
    /// At its end, with bytes after it no request asked for.
    ExtraBytes,
    /// With the upstream's close.
    Closed,
}

/// Writes the client's head and the body after it; how the body ended.
async fn copy_body<S>(
    upstream: &mut RawConn,
    client: &mut S,
    response: &ResponseHead,
    client_head: &mut Vec<u8>,
    buf: &mut bytes::BytesMut,
    sent: &mut u64,
) -> std::io::Result<BodyEnd>
where
    S: AsyncWrite + Unpin,
{
    let mut remaining = match response.framing {
        Framing::Empty => 0,
        Framing::Length(n) => n,
        Framing::Chunked | Framing::UntilClose => u64::MAX,
    };
    let mut chunked = (response.framing == Framing::Chunked).then(ChunkedScan::default);
    // The head and the first bytes of the body go out in one write.
    let mut head_sent = false;
    loop {
        let take = match &mut chunked {
            Some(scan) => scan.scan(buf).map_err(std::io::Error::other)?,
            None => usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(buf.len()),
        };
        if !head_sent {
            client_head.extend_from_slice(&buf[..take]);
            client.write_all(client_head).await?;
            head_sent = true;
        } else if take > 0 {
            client.write_all(&buf[..take]).await?;
        }
        *sent += take as u64;
        bytes::Buf::advance(buf, take);
        if chunked.is_none() && remaining != u64::MAX {
            remaining -= take as u64;
        }
        let done = match &chunked {
            Some(scan) => scan.done(),
            None => remaining == 0,
        };
        if done {
            // Bytes after the body: the upstream is out of step.
            return Ok(if buf.is_empty() {
                BodyEnd::Complete
            } else {
                BodyEnd::ExtraBytes
            });
        }
        buf.clear();
        buf.reserve(BODY_READ_SIZE);
        if upstream.stream.read_buf(buf).await? == 0 {
            return if response.framing == Framing::UntilClose {
                Ok(BodyEnd::Closed)
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "upstream closed inside the body",
                ))
            };
        }
    }
}

/// cutover's own answer to a failed request, in `out`; and whether the
/// connection closes after it.
fn error_response<'a>(e: &ProxyError, close: bool, out: &'a mut Vec<u8>) -> (&'a [u8], bool) {
    let status = e.status();
    let body = e.body_text();
    // A 400's framing cannot be trusted for what follows.
    let closes = close || status == http::StatusCode::BAD_REQUEST;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(b"\r\ndate: ");
    out.extend_from_slice(&crate::clock::http_date());
    if closes {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    (out, closes)
}

/// The "request failed" log line or a debug line for a client's own
/// fault. An upstream down, or a client that makes it slow, fails every
/// request: a few lines a second say so (`telemetry::LogLimit`).
pub(super) fn log_failure(e: &ProxyError, peer: SocketAddr) {
    match e.side() {
        Side::Client => tracing::debug!(%peer, error = %e, "request refused"),
        _ => {
            if let Some(suppressed) = FAILED_REQUEST_LOG.allow() {
                tracing::warn!(%peer, error = %e, suppressed, "request failed");
            }
        }
    }
}

/// The value of cookie `name` among the request's `Cookie` values.
fn cookie_value<'a>(
    buf: &'a [u8],
    cookies: &[std::ops::Range<usize>],
    name: &str,
) -> Option<&'a str> {
    cookies
        .iter()
        .filter_map(|r| std::str::from_utf8(&buf[r.clone()]).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Whether `request` to `pool` goes out on a direct-path socket: not with
/// a body (streamed, perhaps retried), an upgrade, or `TE: trailers`
/// (gRPC: trailers must reach the client, and `DirectBody` drops a
/// chunked body's trailers).
pub fn fits(direct: bool, pool: &Pool, request: &Request<RequestBody>) -> bool {
    let headers = request.headers();
    direct
        && pool.tls.is_none()
        && pool.protocol == UpstreamProtocol::Http1
        && matches!(request.body(), RequestBody::Empty)
        && !headers.contains_key(http::header::TE)
        && !headers.contains_key(http::header::UPGRADE)
}

impl Proxy {
    /// The direct path's upstream half under hyper's server: sends a
    /// bodiless `request` that hyper serves (HTTP/2, and HTTP/1.1 the
    /// direct path left) on a direct-path socket to `addr` of `pool`
    /// rather than through hyper's client — no upstream connection task,
    /// no channel hop — and returns the response with its body still to
    /// be read. What needs more of hyper's client keeps it (see [`fits`]). to `addr` of `pool`, and
    /// returns the response with its body still to be read.
    pub(super) async fn send_direct(
        &self,
        pool: &Pool,
        addr: SocketAddr,
        request: &Request<RequestBody>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        // Sized for a usual head up front: grown from empty, the buffers
        // were reallocated ~7 times each per request (callgrind).
        let mut scratch = Scratch {
            upstream_head: Vec::with_capacity(1024),
            client_head: Vec::with_capacity(1024),
            from_upstream: bytes::BytesMut::with_capacity(HEAD_READ_SIZE),
        };
        write_request_head(request, &mut scratch.upstream_head);
        let side = ClientSide {
            head_request: request.method() == http::Method::HEAD,
            close: false,
            set_cookie: None,
            date: &crate::clock::http_date(),
        };
        let idempotent = request.method().is_idempotent();
        let (upstream, home, head) = self
            .direct_exchange(pool, addr, &side, idempotent, &mut scratch)
            .await
            .map_err(SendError::from)?;
        let status = StatusCode::from_u16(head.status)
            .map_err(|_| SendError::Direct("invalid status code".to_string()))?;
        let body = DirectBody::new(
            upstream,
            home,
            scratch.from_upstream,
            head.framing,
            head.reusable,
        );
        let mut response = Response::new(UpstreamBody::Direct(body));
        *response.status_mut() = status;
        // The head the direct path wrote for a client, read back into a
        // map: hop-by-hop headers are out and `Via` is in; hyper frames
        // the body for its own client.
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut parsed = httparse::Response::new(&mut headers);
        if parsed.parse(&scratch.client_head).is_err() {
            return Err(SendError::Direct("response head not readable".to_string()));
        }
        let map = response.headers_mut();
        map.reserve(parsed.headers.len());
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection")
                || h.name.eq_ignore_ascii_case("transfer-encoding")
            {
                continue;
            }
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_bytes(h.value),
            ) else {
                return Err(SendError::Direct(format!("invalid header {:?}", h.name)));
            };
            map.append(name, value);
        }
        Ok(response)
    }
}

/// The HTTP/1.1 head of `request` (origin form, its headers as they are).
fn write_request_head(request: &Request<RequestBody>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
