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
//! `wire::request` for the list and `routing::RouteTable::direct_route` for the
//! routes); anything else — and the first request that is not plain ends
//! the direct path for that connection — is handed to hyper with the
//! bytes read so far, so hyper keeps every check and every feature.
//!
//! The request's policy is the engine's (`engine`): this front reads the
//! head (`wire::request`), hands the engine a [`Front`] whose attempts
//! are raw-socket exchanges (`h1_upstream`), and copies the answer's body
//! from one socket to the other.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Version};
use opentelemetry::KeyValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use super::h1_upstream::Scratch;

use super::activity::ConnActivity;
use super::engine::{Described, Front, Labels};
use super::h1_upstream::{BODY_READ_SIZE, Exchanged};
use super::pools::{RawConn, SendError};
use super::wire::chunked::ChunkedScan;
use super::wire::request::{self, Forwarding, RequestHead, Verdict};
use super::wire::response::{self, ClientSide, Framing, ResponseHead};
use super::{ClientConn, Proxy, ProxyError};
use crate::routing::{Pick, Pool, RouteTable};
use crate::traces::{TRACEPARENT, TRACEPARENT_LEN, TRACESTATE, TraceParent};

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
        self.head.len + self.head.body as usize
    }
}

/// How the client connection goes on after a request.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    KeepAlive,
    Close,
}

/// The client connection a direct request came on.
pub struct Client<'a, S> {
    pub stream: &'a mut S,
    pub conn: &'a ClientConn,
    pub activity: &'a Arc<ConnActivity>,
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
            request_id: self.settings.request_id_header.as_str().as_bytes(),
            trace: self.tracing.is_some(),
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
    /// the connection closing (a graceful stop), the answer says
    /// `Connection: close`, as hyper's does.
    pub async fn direct_serve<S>(
        &self,
        ticket: Ticket,
        buf: &[u8],
        client: &mut Client<'_, S>,
        scratch: &mut Scratch,
    ) -> Outcome
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let start = Instant::now();
        let Ticket { head, table, route } = ticket;
        let request_id = (
            self.settings.request_id_header.as_str().as_bytes(),
            head.request_id.bytes(buf),
        );
        let log = self.begin_log(client.conn, || describe(&head, buf, request_id.1));
        let _active = client.activity.start(Version::HTTP_11);
        let route = &table.routes()[route];
        let mut labels = Labels::routed(route, start);
        let close = head.close || client.activity.closing();
        let mut request = DirectRequest {
            buf,
            head: &head,
            head_request: head.is_head(buf),
            idempotent: head.idempotent(buf),
            close,
            set_cookie: None,
            request_id,
            date: [0; 29],
            scratch,
            client: &mut *client.stream,
        };
        let forwarded = self
            .forward(&table, route, &mut request, client.conn, &mut labels)
            .await;
        let scratch = request.scratch;
        let (answer, in_flight) = match forwarded {
            Ok(ok) => ok,
            Err(e) => {
                let status = self.failed(&e, client.conn);
                let _timer = labels.record(&self.request_metrics, status, log);
                return answer_failure(&e, close, request_id, client, scratch).await;
            }
        };
        let Exchanged {
            mut upstream,
            home,
            head: response,
        } = answer;
        // A stop (or a handover) that began while the upstream answered:
        // this response is the connection's last, and says so.
        let stopped_meanwhile = !close && client.activity.closing();
        if stopped_meanwhile && response.framing != Framing::UntilClose {
            response::add_connection_close(&mut scratch.client_head);
        }
        let close = close || stopped_meanwhile;
        let mut timer = labels.record(&self.request_metrics, response.status, log);
        let copied = copy_body(
            &mut upstream,
            in_flight.upstream(),
            client.stream,
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
                tracing::debug!(peer = %client.conn.peer, error = %e, "response cut short");
                return Outcome::Close;
            }
        }
        if close || response.framing == Framing::UntilClose {
            Outcome::Close
        } else {
            Outcome::KeepAlive
        }
    }
}

/// Writes cutover's answer to a failed request; whether the connection
/// goes on.
async fn answer_failure<S>(
    e: &ProxyError,
    close: bool,
    request_id: (&[u8], &[u8]),
    client: &mut Client<'_, S>,
    scratch: &mut Scratch,
) -> Outcome
where
    S: AsyncWrite + Unpin,
{
    let close = close || client.activity.closing();
    let date = crate::clock::http_date();
    let closes =
        e.answer(false)
            .write_http1(close, &date, Some(request_id), &mut scratch.client_head);
    let written = client.stream.write_all(&scratch.client_head).await.is_ok();
    if written && !closes {
        Outcome::KeepAlive
    } else {
        Outcome::Close
    }
}

/// A request the direct path serves, as the engine sees it: its head (and
/// body) are already in `scratch.upstream_head`, the same for every
/// attempt; what changes between attempts is the fresh sticky cookie.
struct DirectRequest<'a, 'c, S> {
    /// The client's buffer and where the request is in it.
    buf: &'a [u8],
    head: &'a RequestHead,
    head_request: bool,
    idempotent: bool,
    /// The client's connection closes after this response.
    close: bool,
    /// The attempt's fresh sticky cookie, and the date its answer gets.
    set_cookie: Option<HeaderValue>,
    /// The request id header's name and value its answer carries back.
    request_id: (&'a [u8], &'a [u8]),
    date: [u8; 29],
    scratch: &'a mut Scratch,
    /// The client's connection, read only while the request waits in a
    /// queue, to see it leave.
    client: &'c mut S,
}

/// At most this many bytes a client may send while its request waits in
/// a queue (the next pipelined request); beyond, it is no longer read.
const EARLY_MAX: usize = 64 * 1024;

impl<S: AsyncRead + Unpin + Send> Front for DirectRequest<'_, '_, S> {
    type Request = ();
    type Answer = Exchanged;

    fn cookie(&self, name: &str) -> Option<&str> {
        let cookies = Cookies {
            buf: self.buf,
            at: &self.head.cookies,
        };
        cookies.find(name)
    }

    /// Only the trace context (a rate limit by header sends its route to
    /// hyper).
    fn header(&self, name: &http::HeaderName) -> Option<&[u8]> {
        let trace = self.head.trace.as_ref()?;
        let at = match name.as_str() {
            TRACEPARENT => trace.traceparent.as_ref(),
            TRACESTATE => trace.tracestate.as_ref(),
            _ => None,
        }?;
        Some(&self.buf[at.clone()])
    }

    fn method(&self) -> &str {
        // `classify` took a token of ASCII.
        std::str::from_utf8(&self.buf[self.head.method.clone()]).unwrap_or("GET")
    }

    fn trace_facts(&self) -> Vec<KeyValue> {
        let target = String::from_utf8_lossy(&self.buf[self.head.target.clone()]);
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (&*target, None),
        };
        let mut facts = vec![
            KeyValue::new("http.request.method", self.method().to_string()),
            KeyValue::new("url.path", path.to_string()),
            KeyValue::new("network.protocol.version", "1.1"),
        ];
        if let Some(query) = query {
            facts.push(KeyValue::new("url.query", query.to_string()));
        }
        facts
    }

    fn resendable(&self) -> bool {
        self.idempotent
    }

    fn request_for(
        &mut self,
        _: &Pick,
        cookie: Option<HeaderValue>,
        traceparent: Option<&TraceParent>,
    ) -> Option<()> {
        if let (Some(value), Some(trace)) = (traceparent, &self.head.trace) {
            let at = trace.upstream_at;
            if let Some(slot) = self.scratch.upstream_head.get_mut(at..at + TRACEPARENT_LEN) {
                slot.copy_from_slice(value.as_bytes());
            }
        }
        self.set_cookie = cookie;
        self.date = crate::clock::http_date();
        Some(())
    }

    // Not `async`: the exchange's own future is the attempt's, one level
    // of future fewer to move on every request.
    fn send(
        &mut self,
        proxy: &Proxy,
        pool: &Pool,
        addr: std::net::SocketAddr,
        (): (),
    ) -> impl Future<Output = Result<Exchanged, SendError>> + Send {
        let side = ClientSide {
            head_request: self.head_request,
            close: self.close,
            set_cookie: self.set_cookie.as_ref().map(HeaderValue::as_bytes),
            request_id: Some(self.request_id),
            date: &self.date,
        };
        proxy.exchange(pool, addr, side, self.idempotent, self.scratch)
    }

    fn status(answer: &Exchanged) -> u16 {
        answer.head.status
    }

    /// An end of the client's stream (or an error) is a client gone;
    /// bytes it sends meanwhile are kept for the connection to read next.
    async fn left(&mut self) {
        let mut byte = [0u8; 1];
        while self.scratch.early.len() < EARLY_MAX {
            match self.client.read(&mut byte).await {
                Ok(0) | Err(_) => return,
                Ok(_) => self.scratch.early.push(byte[0]),
            }
        }
        std::future::pending().await
    }
}

/// What the access log says of the request `head` in `buf`.
fn describe(head: &RequestHead, buf: &[u8], request_id: &[u8]) -> Described {
    let text = |r: &std::ops::Range<usize>| String::from_utf8_lossy(&buf[r.clone()]).into_owned();
    Described {
        method: text(&head.method),
        host: Some(text(&head.host)),
        path: text(&head.target),
        request_id: String::from_utf8_lossy(request_id).into_owned(),
        protocol: "HTTP/1.1",
        served_by: "direct",
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
    state: &Arc<crate::upstream::UpstreamState>,
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
    // Made at the first wait for the upstream: its drain's deadline cuts
    // the body.
    let mut drain: Option<super::body::DrainCut> = None;
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
        let drain =
            drain.get_or_insert_with(|| Box::pin(Arc::clone(state).drain_deadline_reached()));
        let read = tokio::select! {
            biased;
            read = upstream.stream.read_buf(buf) => read?,
            () = drain.as_mut() => {
                super::body::count_cut_by_drain(state);
                return Err(std::io::Error::other(super::body::CutByDrain));
            }
        };
        if read == 0 {
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

/// A request's `Cookie` values, where they are in its buffer.
struct Cookies<'a> {
    buf: &'a [u8],
    at: &'a [std::ops::Range<usize>],
}

impl<'a> Cookies<'a> {
    /// The value of cookie `name`.
    fn find(&self, name: &str) -> Option<&'a str> {
        self.at
            .iter()
            .filter_map(|r| std::str::from_utf8(&self.buf[r.clone()]).ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim_matches('"'))
    }
}
