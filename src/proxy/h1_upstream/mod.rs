//! HTTP/1.1 exchanges with an upstream on a raw socket, without hyper's
//! client: the request head (and body) written as bytes, the response
//! head read in place (`wire::response`). Used by both fronts: the direct
//! path for everything it takes, and hyper's server for bodiless requests
//! to plain HTTP/1.1 pools (see [`fits`]) — no upstream connection task,
//! no channel hop.

mod body;

pub use body::{DirectBody, UpstreamBody};

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Proxy;
use super::pools::{RawConn, RawHome, SendError};
use super::request_body::RequestBody;
use super::wire::response::{self, ClientHead, ClientSide, HeadMap, Parsed, ResponseHead};
use crate::routing::Pool;

/// Buffers a client connection keeps between its requests.
#[derive(Default)]
pub struct Scratch<H = Vec<u8>> {
    /// The head (and body) that goes to the upstream.
    pub upstream_head: Vec<u8>,
    /// The response head the client gets: HTTP/1.1 bytes on the direct
    /// path, a header map for hyper's front.
    pub client_head: H,
    /// What was read from the upstream past its response head.
    pub from_upstream: bytes::BytesMut,
    /// Bytes the client sent while its request waited in a queue (the
    /// next pipelined request): the connection reads them next.
    pub early: Vec<u8>,
}

/// Room for an upstream's response head: most fit in far less.
const HEAD_READ_SIZE: usize = 4 * 1024;

/// The first read of a response under hyper's front: a usual head and a
/// small body fit, and the buffer leaves with the body, so with hundreds
/// of HTTP/2 streams in flight its size is memory in flight too.
const FIRST_READ_SIZE: usize = 1024;

/// Reads of a body that did not come with its head: larger, for large
/// bodies (taken only by responses that need them, so that connections
/// serving small answers keep small buffers).
pub const BODY_READ_SIZE: usize = 16 * 1024;

/// Largest upstream response head read (hyper's client takes ~400 KiB).
const MAX_RESPONSE_HEAD: usize = 256 * 1024;

/// An upstream's answer: its socket, where that goes back, its head.
pub struct Exchanged {
    pub upstream: RawConn,
    pub home: RawHome,
    pub head: ResponseHead,
}

impl Proxy {
    /// Sends the request head (and body) in `scratch.upstream_head` on an
    /// idle socket to `addr` of `pool`, or a new one, and reads the
    /// response head (see [`exchange_head`]). A pooled socket the upstream
    /// closed as the request went out, unnoticed, is replaced by another
    /// for a request that may be sent twice (RFC 9112 §9.3.1).
    pub(super) async fn exchange<H: ClientHead>(
        &self,
        pool: &Pool,
        addr: SocketAddr,
        side: ClientSide<'_>,
        idempotent: bool,
        scratch: &mut Scratch<H>,
    ) -> Result<Exchanged, SendError> {
        let (mut idle, home) = self.pools.take_raw(pool, addr);
        loop {
            let mut upstream = match idle.take() {
                Some(conn) => conn,
                None => self
                    .pools
                    .connect_raw(addr)
                    .await
                    .map_err(SendError::Connect)?,
            };
            match exchange_head(&mut upstream, &side, scratch).await {
                Ok(head) => {
                    return Ok(Exchanged {
                        upstream,
                        home,
                        head,
                    });
                }
                Err(Failure::Closed(_)) if upstream.reused && idempotent => {
                    idle = self.pools.take_raw(pool, addr).0;
                }
                Err(Failure::Closed(why) | Failure::Invalid(why)) => {
                    return Err(SendError::Direct(why));
                }
            }
        }
    }

    /// Under hyper's server: sends a bodiless `request` (HTTP/2, and
    /// HTTP/1.1 the direct path left) on a raw socket to `addr` of `pool`
    /// rather than through hyper's client, and returns the response with
    /// its body still to be read. What needs more of hyper's client keeps
    /// it (see [`fits`]).
    pub(super) async fn send_raw(
        &self,
        pool: &Pool,
        addr: SocketAddr,
        request: RawRequest<'_>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let upstream_head = HEAD_BUFFERS.with_borrow_mut(|free| {
            // Sized for a usual head up front: grown from empty, the
            // buffer was reallocated ~7 times per request.
            free.pop().unwrap_or_else(|| Vec::with_capacity(1024))
        });
        let mut scratch = Scratch {
            upstream_head,
            client_head: HeadMap::default(),
            from_upstream: bytes::BytesMut::with_capacity(FIRST_READ_SIZE),
            early: Vec::new(),
        };
        write_request_head(&request, &mut scratch.upstream_head);
        let side = ClientSide {
            head_request: request.method == http::Method::HEAD,
            close: false,
            set_cookie: None,
            // The hyper front sets the request's own on the response.
            request_id: None,
            date: &crate::clock::http_date(),
        };
        let idempotent = request.method.is_idempotent();
        let exchanged = self
            .exchange(pool, addr, side, idempotent, &mut scratch)
            .await;
        give_back(scratch.upstream_head);
        let Exchanged {
            upstream,
            home,
            head,
        } = exchanged?;
        let status = StatusCode::from_u16(head.status)
            .map_err(|_| SendError::Direct("invalid status code".to_string()))?;
        if scratch.client_head.invalid {
            return Err(SendError::Direct("invalid response header".to_string()));
        }
        let body = DirectBody::new(
            upstream,
            home,
            scratch.from_upstream,
            head.framing,
            head.reusable,
        );
        let mut response = Response::new(UpstreamBody::Direct(body));
        *response.status_mut() = status;
        *response.headers_mut() = scratch.client_head.map;
        Ok(response)
    }
}

/// Request head buffers of finished raw exchanges for hyper's front, kept
/// per thread: with hundreds of HTTP/2 streams in flight, a fresh one per
/// request churned the allocator's slabs (jemalloc ~6,000 instructions
/// per request, callgrind).
const KEPT_HEAD_BUFFERS: usize = 256;

thread_local! {
    static HEAD_BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Keeps a head buffer for the next exchange (not one that grew past a
/// usual head: a huge head's buffer is let go).
fn give_back(mut upstream_head: Vec<u8>) {
    if upstream_head.capacity() > 16 * 1024 {
        return;
    }
    upstream_head.clear();
    HEAD_BUFFERS.with_borrow_mut(|free| {
        if free.len() < KEPT_HEAD_BUFFERS {
            free.push(upstream_head);
        }
    });
}

/// Why an exchange that reached the upstream failed.
enum Failure {
    /// The socket failed or closed before a whole response head came.
    Closed(String),
    /// A response cutover does not forward.
    Invalid(String),
}

/// Sends the request head in `scratch.upstream_head`, reads the response
/// head into `scratch.from_upstream` and writes the client's head.
async fn exchange_head<H: ClientHead>(
    upstream: &mut RawConn,
    side: &ClientSide<'_>,
    scratch: &mut Scratch<H>,
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
        // Grown only when short of room: a response's first read keeps
        // the buffer it was given (hyper's front gives a small one).
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(HEAD_READ_SIZE);
        }
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

/// Whether a request with these headers and body goes out to `pool` on
/// a raw socket: not with a body (streamed, perhaps retried), an upgrade,
/// or `TE: trailers` (gRPC: trailers must reach the client, and
/// `DirectBody` drops a chunked body's trailers).
pub fn fits(direct: bool, pool: &Pool, headers: &HeaderMap, body: &RequestBody) -> bool {
    direct
        && pool.is_plain_http1()
        && matches!(body, RequestBody::Empty)
        && !headers.contains_key(http::header::TE)
        && !headers.contains_key(http::header::UPGRADE)
}

/// A bodiless request as the hyper front holds it, for a raw socket:
/// its headers borrowed (no copy per attempt) and the attempt's own
/// (`Host` when the client sent none, a made request id, `traceparent`)
/// written after them.
pub struct RawRequest<'a> {
    pub method: &'a http::Method,
    /// Origin form.
    pub target: &'a str,
    pub headers: &'a HeaderMap,
    pub extra: [Option<(&'a HeaderName, &'a HeaderValue)>; 3],
}

/// The HTTP/1.1 head of `request`: its headers as they are, then its
/// extra ones.
fn write_request_head(request: &RawRequest<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(request.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let extra = request.extra.iter().flatten().map(|(n, v)| (*n, *v));
    for (name, value) in request.headers.iter().chain(extra) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
