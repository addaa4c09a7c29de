//! Reading a client's request head for the direct path: which requests it
//! takes, and the head it sends upstream.
//!
//! The direct path takes only the plainest requests — HTTP/1.1, an
//! origin-form target of ordinary characters, exactly one valid `Host`, no
//! body or one `Content-Length` body that is already in the buffer with
//! its head, no header asking for anything a hop must act on. Everything
//! else (a chunked or larger body, `Upgrade`, `Expect`, `TE`, a
//! `Connection` option naming a header, `Max-Forwards`, absolute form, a
//! malformed or oversized head…) is [`Verdict::Fallback`]: the bytes go to hyper
//! untouched, which answers exactly as it always did, 4xx included. So the
//! direct path never has to be as careful as hyper about anything it does
//! not take, and `tests/it/direct.rs` feeds the same bytes to both and
//! checks that what it takes, hyper would have taken the same way.

use std::ops::Range;

use super::headers::hop_by_hop;
use crate::proxy::request_id::{self, MadeId};
use crate::traces::{TRACEPARENT, TRACEPARENT_LEN, TRACESTATE};

/// Headers of a request head the direct path reads (hyper's default too).
pub const MAX_HEADERS: usize = 100;

/// What a buffer holding the start of a connection's next request is.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Not a whole head yet: read more (and check the size limit).
    Partial,
    /// For hyper: anything the direct path does not take, well-formed or not.
    Fallback,
    /// A request the direct path serves; its upstream head is written.
    Take(RequestHead),
}

/// Where the parts of a taken request are in the client's buffer.
#[derive(Debug, PartialEq)]
pub struct RequestHead {
    /// Bytes of the head, blank line included.
    pub len: usize,
    /// Bytes of the body after it (all in the buffer, and in the
    /// upstream head's buffer after the head). A `u32` beside `close`:
    /// the head stays within 128 bytes, which Rust moves without a
    /// `memcpy` call (callgrind: 2 calls per request more at 136).
    pub body: u32,
    pub method: Range<usize>,
    pub target: Range<usize>,
    pub host: Range<usize>,
    /// The client asked to close after this response.
    pub close: bool,
    /// `Cookie` header values, for sticky routes.
    pub cookies: Vec<Range<usize>>,
    /// The `X-Request-Id` sent upstream: the client's, or one made.
    pub request_id: RequestId,
    /// With tracing on: the client's trace context, and where the
    /// upstream head holds the attempt's `traceparent`. Boxed: the head is
    /// moved on every request, traced or not.
    pub trace: Option<Box<TraceHeaders>>,
}

/// A taken request's W3C trace context (tracing on).
#[derive(Debug, PartialEq)]
pub struct TraceHeaders {
    /// The client's one `traceparent` (several: none, a new trace).
    pub traceparent: Option<Range<usize>>,
    /// The client's first `tracestate`, passed upstream unchanged.
    pub tracestate: Option<Range<usize>>,
    /// Where, in the upstream head, the attempt's `traceparent` value
    /// goes ([`crate::traces::TRACEPARENT_LEN`] bytes, written per
    /// attempt).
    pub upstream_at: usize,
}

/// A taken request's `X-Request-Id`.
#[derive(Debug, PartialEq)]
pub enum RequestId {
    /// The client's one valid header, where it is in the buffer.
    Client(Range<usize>),
    /// None valid (or several): made here.
    Made(MadeId),
}

impl RequestId {
    pub fn bytes<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match self {
            RequestId::Client(at) => &buf[at.clone()],
            RequestId::Made(id) => id.as_bytes(),
        }
    }
}

impl RequestHead {
    /// Safe to send again after an upstream took it and closed without a
    /// word (RFC 9110 §9.2.2; a body is in memory, so it can go again).
    pub fn idempotent(&self, buf: &[u8]) -> bool {
        matches!(
            &buf[self.method.clone()],
            b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
        )
    }

    pub fn is_head(&self, buf: &[u8]) -> bool {
        &buf[self.method.clone()] == b"HEAD"
    }
}

/// What the client connection adds to every forwarded request.
pub struct Forwarding<'a> {
    /// The client's address as text, for `X-Forwarded-For`.
    pub client_ip: &'a [u8],
    /// `http` or `https`.
    pub proto: &'a [u8],
    /// The request id's header name, lower case (`x-request-id`).
    pub request_id: &'a [u8],
    /// Tracing is on: the client's `traceparent` is replaced by the
    /// attempt's.
    pub trace: bool,
}

/// Headers the direct path drops on the way up: the hop-by-hop ones
/// (`headers::HOP_BY_HOP`) that [`FOR_HYPER`] lets through — the others
/// send the request to hyper first — and the `X-Forwarded-*` it writes
/// itself.
const DROPPED: [&[u8]; 6] = [
    hop_by_hop(0), // connection
    hop_by_hop(1), // keep-alive
    hop_by_hop(2), // proxy-connection
    hop_by_hop(7), // proxy-authorization
    b"x-forwarded-proto",
    b"x-forwarded-host",
];

/// Headers that send a request to hyper: each asks the proxy for
/// something the direct path does not do (or marks a chunked body).
const FOR_HYPER: [&[u8]; 8] = [
    b"transfer-encoding",
    b"upgrade",
    b"expect",
    b"te",
    b"trailer",
    b"max-forwards",
    b"http2-settings",
    b"content-type",
];

/// Classifies the request at the start of `buf` and, for one it takes,
/// writes the request to send upstream into `upstream` (cleared first).
pub fn classify(buf: &[u8], fwd: &Forwarding<'_>, upstream: &mut Vec<u8>) -> Verdict {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Verdict::Partial,
        Err(_) => return Verdict::Fallback,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Verdict::Fallback;
    };
    if method == "CONNECT" || !plain_target(target.as_bytes()) {
        return Verdict::Fallback;
    }
    upstream.clear();
    upstream.extend_from_slice(method.as_bytes());
    upstream.push(b' ');
    upstream.extend_from_slice(target.as_bytes());
    upstream.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host = None;
    let mut close = false;
    let mut cookies = Vec::new();
    let mut forwarded_for: Option<Range<usize>> = None;
    // `Some(None)`: one or more seen, none kept.
    let mut client_id: Option<Option<Range<usize>>> = None;
    let mut traceparent: Option<Option<Range<usize>>> = None;
    let mut tracestate = None;
    let mut body: Option<usize> = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if !plain_name(name) {
            return Verdict::Fallback;
        }
        let value = h.value;
        if FOR_HYPER.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            // `Content-Type` only matters for gRPC, whose errors are
            // answered as gRPC statuses (hyper's path does that).
            if !name.eq_ignore_ascii_case(b"content-type") || value.starts_with(b"application/grpc")
            {
                return Verdict::Fallback;
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // One, of digits only: any other form is hyper's to judge.
            match (body, content_length(value)) {
                (None, Some(n)) => body = Some(n),
                _ => return Verdict::Fallback,
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            let valid = std::str::from_utf8(value).is_ok_and(super::headers::valid_host);
            if host.is_some() || !valid {
                return Verdict::Fallback;
            }
            host = Some(offset(buf, value));
        } else if name.eq_ignore_ascii_case(b"connection") {
            match connection_options(value) {
                Some(c) => close |= c,
                None => return Verdict::Fallback,
            }
            continue;
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            // Several would be one list (RFC 9110 §5.3): rare, hyper's.
            if forwarded_for.is_some() {
                return Verdict::Fallback;
            }
            forwarded_for = Some(offset(buf, value));
            continue;
        } else if name.eq_ignore_ascii_case(b"cookie") {
            cookies.push(offset(buf, value));
        } else if name.eq_ignore_ascii_case(fwd.request_id) {
            // Written after the others: the one valid id, or a made one.
            client_id = match client_id {
                None if request_id::valid(value) => Some(Some(offset(buf, value))),
                _ => Some(None),
            };
            continue;
        } else if fwd.trace && name.eq_ignore_ascii_case(TRACEPARENT.as_bytes()) {
            // Replaced by the attempt's, written after the others.
            traceparent = match traceparent {
                None => Some(Some(offset(buf, value))),
                _ => Some(None),
            };
            continue;
        } else if fwd.trace && name.eq_ignore_ascii_case(TRACESTATE.as_bytes()) {
            tracestate.get_or_insert_with(|| offset(buf, value));
        }
        if DROPPED.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            continue;
        }
        upstream.extend_from_slice(name);
        upstream.extend_from_slice(b": ");
        upstream.extend_from_slice(value);
        upstream.extend_from_slice(b"\r\n");
    }
    let Some(host) = host else {
        return Verdict::Fallback;
    };
    // A body still on its way is hyper's: the direct path forwards what
    // it holds, and never waits for a body under the head's deadline.
    let body = body.unwrap_or(0);
    let Ok(body_len) = u32::try_from(body) else {
        return Verdict::Fallback;
    };
    if buf.len() - len < body {
        return Verdict::Fallback;
    }
    let request_id = match client_id {
        Some(Some(at)) => RequestId::Client(at),
        _ => RequestId::Made(request_id::make()),
    };
    upstream.extend_from_slice(fwd.request_id);
    upstream.extend_from_slice(b": ");
    upstream.extend_from_slice(request_id.bytes(buf));
    upstream.extend_from_slice(b"\r\n");
    let trace = fwd.trace.then(|| {
        upstream.extend_from_slice(b"traceparent: ");
        let upstream_at = upstream.len();
        upstream.extend_from_slice(&[b'0'; TRACEPARENT_LEN]);
        upstream.extend_from_slice(b"\r\n");
        Box::new(TraceHeaders {
            traceparent: traceparent.flatten(),
            tracestate,
            upstream_at,
        })
    });
    let prior = forwarded_for.map(|r| &buf[r]);
    write_forwarding(upstream, fwd, prior, &buf[host.clone()]);
    upstream.extend_from_slice(&buf[len..len + body]);
    Verdict::Take(RequestHead {
        len,
        body: body_len,
        method: offset(buf, method.as_bytes()),
        target: offset(buf, target.as_bytes()),
        host,
        close,
        cookies,
        request_id,
        trace,
    })
}

/// The headers a proxy adds, and the blank line: `X-Forwarded-For` (after
/// the client's `prior` list), `-Proto`, `-Host` and `Via`.
#[inline]
fn write_forwarding(
    upstream: &mut Vec<u8>,
    fwd: &Forwarding<'_>,
    prior: Option<&[u8]>,
    host: &[u8],
) {
    upstream.extend_from_slice(b"x-forwarded-for: ");
    if let Some(prior) = prior {
        upstream.extend_from_slice(prior);
        upstream.extend_from_slice(b", ");
    }
    upstream.extend_from_slice(fwd.client_ip);
    upstream.extend_from_slice(b"\r\nx-forwarded-proto: ");
    upstream.extend_from_slice(fwd.proto);
    upstream.extend_from_slice(b"\r\nx-forwarded-host: ");
    upstream.extend_from_slice(host);
    upstream.extend_from_slice(b"\r\nvia: 1.1 cutover\r\n\r\n");
}

/// A `Content-Length` value: 1 to 19 digits (`httparse` has trimmed it).
fn content_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Where `part` (a slice of `buf`) lies in `buf`.
fn offset(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// An origin-form target (RFC 9112 §3.2.1) of characters every parser
/// agrees on: unreserved, sub-delims, `:@/?%`. Anything else (absolute
/// form, `*`, a raw `"` or `{`) is left to hyper and the `http` crate.
fn plain_target(target: &[u8]) -> bool {
    target.first() == Some(&b'/')
        && target
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b))
}

/// A header name of letters, digits, `-` and `_`: the `http` crate takes
/// every token, but names with other characters are rare enough to leave.
fn plain_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads a `Connection` value: `Some(close)` when it holds only `close`
/// and `keep-alive` options, `None` if it names anything else (a header
/// to remove: hyper's path does that).
fn connection_options(value: &[u8]) -> Option<bool> {
    let mut close = false;
    for option in value.split(|&b| b == b',') {
        let option = option.trim_ascii();
        if option.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if !option.eq_ignore_ascii_case(b"keep-alive") && !option.is_empty() {
            return None;
        }
    }
    Some(close)
}

#[cfg(test)]
mod tests {
    use super::super::headers::HOP_BY_HOP;
    use super::*;

    /// Every hop-by-hop header either sends the request to hyper or is
    /// dropped: none reaches an upstream from the direct path.
    #[test]
    fn every_hop_by_hop_header_is_dropped_or_handed_over() {
        for name in HOP_BY_HOP {
            let n = name.as_bytes();
            assert!(
                FOR_HYPER.contains(&n) || DROPPED.contains(&n),
                "{name} would be forwarded"
            );
        }
    }

    const FWD: Forwarding<'static> = Forwarding {
        client_ip: b"10.0.0.7",
        proto: b"http",
        request_id: b"x-request-id",
        trace: false,
    };

    fn take(bytes: &[u8]) -> (RequestHead, String) {
        let mut up = Vec::new();
        match classify(bytes, &FWD, &mut up) {
            Verdict::Take(head) => (head, String::from_utf8(up).unwrap()),
            other => panic!("not taken: {other:?}"),
        }
    }

    fn verdict(bytes: &[u8]) -> Verdict {
        classify(bytes, &FWD, &mut Vec::new())
    }

    #[test]
    fn a_plain_get_is_taken_and_rewritten() {
        let req = b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\nGET";
        let (head, up) = take(req);
        assert_eq!(head.len, req.len() - 3);
        assert_eq!(&req[head.target.clone()], b"/a?b=1");
        assert_eq!(&req[head.host.clone()], b"example.com");
        assert!(!head.close);
        let RequestId::Made(id) = &head.request_id else {
            panic!("no id made: {head:?}");
        };
        let id = String::from_utf8_lossy(id.as_bytes());
        assert_eq!(
            up,
            format!(
                "GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\
                 x-request-id: {id}\r\n\
                 x-forwarded-for: 1.2.3.4, 10.0.0.7\r\nx-forwarded-proto: http\r\n\
                 x-forwarded-host: example.com\r\nvia: 1.1 cutover\r\n\r\n"
            )
        );
    }

    #[test]
    fn a_valid_request_id_goes_up_once_and_anything_else_is_replaced() {
        let req = b"GET / HTTP/1.1\r\nX-Request-Id: abc-1\r\nHost: a\r\n\r\n";
        let (head, up) = take(req);
        assert_eq!(head.request_id.bytes(req), b"abc-1");
        assert_eq!(up.matches("x-request-id: abc-1\r\n").count(), 1, "{up}");
        assert!(!up.contains("X-Request-Id"), "{up}");
        for bad in [
            &b"GET / HTTP/1.1\r\nX-Request-Id: a b\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nX-Request-Id: a\r\nX-Request-Id: b\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Request-Id: \r\nHost: a\r\n\r\n",
        ] {
            let (head, up) = take(bad);
            assert!(matches!(head.request_id, RequestId::Made(_)), "{up}");
            assert_eq!(
                up.to_ascii_lowercase().matches("x-request-id").count(),
                1,
                "{up}"
            );
        }
    }

    #[test]
    fn with_tracing_the_clients_traceparent_is_replaced_and_tracestate_kept() {
        let fwd = Forwarding { trace: true, ..FWD };
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let req =
            format!("GET / HTTP/1.1\r\nHost: a\r\nTraceparent: {tp}\r\ntracestate: v=1\r\n\r\n");
        let mut up = Vec::new();
        let Verdict::Take(head) = classify(req.as_bytes(), &fwd, &mut up) else {
            panic!("not taken");
        };
        let trace = head.trace.expect("trace headers");
        assert_eq!(&req.as_bytes()[trace.traceparent.unwrap()], tp.as_bytes());
        assert_eq!(&req.as_bytes()[trace.tracestate.unwrap()], b"v=1");
        let at = trace.upstream_at;
        assert_eq!(&up[at - 13..at], b"traceparent: ");
        assert_eq!(&up[at..at + TRACEPARENT_LEN], &[b'0'; TRACEPARENT_LEN]);
        let text = String::from_utf8(up).unwrap();
        assert_eq!(text.to_ascii_lowercase().matches("traceparent").count(), 1);
        assert!(text.contains("tracestate: v=1\r\n"), "{text}");
        // Two: neither is the parent.
        let two =
            format!("GET / HTTP/1.1\r\nHost: a\r\ntraceparent: {tp}\r\ntraceparent: {tp}\r\n\r\n");
        let Verdict::Take(head) = classify(two.as_bytes(), &fwd, &mut Vec::new()) else {
            panic!("not taken");
        };
        assert_eq!(head.trace.unwrap().traceparent, None);
        // Off: passed through as any header.
        let (head, up) = take(req.as_bytes());
        assert!(head.trace.is_none() && up.contains(tp), "{up}");
    }

    #[test]
    fn a_body_in_the_buffer_goes_up_after_the_head() {
        let req = b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET";
        let (head, up) = take(req);
        assert_eq!(
            (head.len + head.body as usize, head.body),
            (req.len() - 3, 3)
        );
        assert!(up.starts_with("POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"));
        assert!(up.ends_with("via: 1.1 cutover\r\n\r\nabc"), "{up}");
    }

    #[test]
    fn connection_close_is_seen() {
        let (head, _) = take(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n");
        assert!(head.close);
    }

    #[test]
    fn anything_unusual_goes_to_hyper() {
        for req in [
            &b"GET / HTTP/1.0\r\nHost: a\r\n\r\n"[..],
            b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nab",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"TRACE / HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: application/grpc\r\n\r\n",
            b"GET /{x} HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-F-F: 1\r\nX-Forwarded-For: 1\r\nX-Forwarded-For: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"\x16\x03\x01\x00",
        ] {
            assert!(
                matches!(verdict(req), Verdict::Fallback | Verdict::Partial),
                "{:?} taken",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[test]
    fn an_unfinished_head_is_partial() {
        assert_eq!(verdict(b"GET / HTTP/1.1\r\nHost: a\r\n"), Verdict::Partial);
        assert_eq!(verdict(b"GE"), Verdict::Partial);
    }
}
