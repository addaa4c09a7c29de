//! Reading an upstream's response head on the direct path, and writing the
//! head the client gets: hop-by-hop headers out (RFC 9110 §7.6.1), `Via`
//! in, `Date` if the upstream sent none (as hyper does), the framing the
//! body will really have (RFC 9112 §6.3).

use super::headers::hop_by_hop;

/// Headers of an upstream response head read (hyper's client default).
const MAX_HEADERS: usize = 100;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Framing {
    /// No body: a HEAD request's answer, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes (no length given): the client connection
    /// closes after it too.
    UntilClose,
}

#[derive(Debug, PartialEq)]
pub enum Parsed {
    Partial,
    /// An interim (1xx) response of this many bytes: skipped, as hyper's
    /// client does.
    Interim(usize),
    /// Not a response cutover forwards: a 502.
    Invalid(&'static str),
    Ready(ResponseHead),
}

#[derive(Debug, PartialEq)]
pub struct ResponseHead {
    /// Bytes of the head, blank line included.
    pub len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The upstream connection may carry another request after the body.
    pub reusable: bool,
}

/// What the client side adds to the head.
pub struct ClientSide<'a> {
    /// The request was HEAD: no body follows whatever the head says.
    pub head_request: bool,
    /// Send `Connection: close` (the client asked, or cutover is stopping).
    pub close: bool,
    /// A sticky cookie to set.
    pub set_cookie: Option<&'a [u8]>,
    /// The request id's header name and value, written in place of the
    /// upstream's (`None`: the upstream's, if any, goes through untouched).
    pub request_id: Option<(&'a [u8], &'a [u8])>,
    /// Now, as an HTTP date.
    pub date: &'a [u8],
}

/// Never forwarded: the hop-by-hop headers (`headers::HOP_BY_HOP`), and
/// the framing, written anew.
const DROPPED: [&[u8]; 9] = [
    hop_by_hop(0),
    hop_by_hop(1),
    hop_by_hop(2),
    hop_by_hop(3),
    hop_by_hop(4),
    hop_by_hop(5),
    hop_by_hop(6),
    hop_by_hop(7),
    b"content-length",
];

/// Where the client's response head goes: HTTP/1.1 bytes (the direct
/// path's `Vec<u8>`), or a header map for hyper's front (`HeadMap`).
pub trait ClientHead {
    /// Starts a head (what an earlier one left is dropped).
    fn begin(&mut self, status: u16, reason: &[u8]);
    fn field(&mut self, name: &[u8], value: &[u8]);
    fn end(&mut self);
}

impl ClientHead for Vec<u8> {
    fn begin(&mut self, status: u16, reason: &[u8]) {
        self.clear();
        self.extend_from_slice(b"HTTP/1.1 ");
        self.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
        self.push(b' ');
        self.extend_from_slice(reason);
        self.extend_from_slice(b"\r\n");
    }

    #[inline]
    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.extend_from_slice(name);
        self.extend_from_slice(b": ");
        self.extend_from_slice(value);
        self.extend_from_slice(b"\r\n");
    }

    fn end(&mut self) {
        self.extend_from_slice(b"\r\n");
    }
}

/// The client's head as a header map, for a server that frames the body
/// itself (hyper's, cutover's HTTP/2): `Connection` and
/// `Transfer-Encoding` stay out. `invalid` is set by a field no
/// `HeaderName`/`HeaderValue` takes.
#[derive(Default)]
pub struct HeadMap {
    pub map: http::HeaderMap,
    pub invalid: bool,
}

impl ClientHead for HeadMap {
    fn begin(&mut self, _status: u16, _reason: &[u8]) {
        self.map.clear();
        self.invalid = false;
    }

    fn field(&mut self, name: &[u8], value: &[u8]) {
        if name.eq_ignore_ascii_case(b"connection")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            return;
        }
        match (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) {
            (Ok(name), Ok(value)) => {
                self.map.append(name, value);
            }
            _ => self.invalid = true,
        }
    }

    fn end(&mut self) {}
}

/// Reads the response head at the start of `buf` and, once it is whole
/// and forwardable, writes the client's head into `client` (begun anew).
pub fn parse(buf: &[u8], side: &ClientSide<'_>, client: &mut impl ClientHead) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid("malformed response head"),
    };
    let (Some(version), Some(status)) = (res.version, res.code) else {
        return Parsed::Invalid("malformed response head");
    };
    match status {
        // Three digits, 100 to 999 (RFC 9110 §15): what hyper's client takes.
        0..=99 => return Parsed::Invalid("invalid status code"),
        101 => return Parsed::Invalid("101 Switching Protocols to a request without Upgrade"),
        100..=199 => return Parsed::Interim(len),
        _ => {}
    }
    let facts = match Facts::read(res.headers, version) {
        Ok(facts) => facts,
        Err(why) => return Parsed::Invalid(why),
    };
    let framing = if side.head_request || status == 204 || status == 304 {
        Framing::Empty
    } else if facts.chunked {
        Framing::Chunked
    } else if let Some(n) = facts.length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    write_client_head(client, &res, status, framing, &facts, side);
    Parsed::Ready(ResponseHead {
        len,
        status,
        framing,
        // Both Transfer-Encoding and Content-Length: read by the former,
        // but framing in doubt (RFC 9112 §6.3): the socket is not reused.
        reusable: !facts.close
            && framing != Framing::UntilClose
            && !(facts.chunked && facts.length.is_some()),
    })
}

/// What the response's headers say about its framing and connection.
struct Facts {
    /// 0: HTTP/1.0, 1: HTTP/1.1.
    version: u8,
    length: Option<u64>,
    chunked: bool,
    close: bool,
    has_date: bool,
}

impl Facts {
    /// The headers read once; an error says why the head cannot be
    /// forwarded. `version` 0 is HTTP/1.0.
    #[inline]
    fn read(headers: &[httparse::Header<'_>], version: u8) -> Result<Facts, &'static str> {
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut close = version == 0;
        let mut has_date = false;
        for h in headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                // Repeated, the values must agree (RFC 9110 §8.6).
                let Some(n) = parse_length(h.value) else {
                    return Err("invalid Content-Length");
                };
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length values");
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // Only plain `chunked` is followed; another coding would need
                // decoding to find the end. HTTP/1.0 has no transfer codings:
                // framing that cannot be trusted (RFC 9112 §6.1).
                if chunked || version == 0 || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked")
                {
                    return Err("unsupported Transfer-Encoding");
                }
                chunked = true;
            } else if name.eq_ignore_ascii_case(b"connection") {
                for option in h.value.split(|&b| b == b',') {
                    let option = option.trim_ascii();
                    if option.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if option.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                        close = false;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"date") {
                has_date = true;
            }
        }
        Ok(Facts {
            version,
            length,
            chunked,
            close,
            has_date,
        })
    }
}

/// The client's head: status line, the upstream's end-to-end headers, the
/// framing written anew, `Via`, `Date` if the upstream sent none, the
/// sticky cookie, and `Connection: close` when the connection ends.
#[inline]
fn write_client_head(
    client: &mut impl ClientHead,
    res: &httparse::Response<'_, '_>,
    status: u16,
    framing: Framing,
    facts: &Facts,
    side: &ClientSide<'_>,
) {
    let (version, length) = (facts.version, facts.length);
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(str::as_bytes)
        .or(res.reason.map(str::as_bytes))
        .unwrap_or_default();
    client.begin(status, reason);
    let named = connection_named(res.headers);
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        if DROPPED.iter().any(|n| name.eq_ignore_ascii_case(n))
            || named.iter().any(|n| name.eq_ignore_ascii_case(n))
            || side
                .request_id
                .is_some_and(|(id, _)| name.eq_ignore_ascii_case(id))
        {
            continue;
        }
        client.field(name, h.value);
    }
    match (framing, length) {
        (Framing::Chunked, _) => client.field(b"transfer-encoding", b"chunked"),
        // A HEAD or 304 answer says how long the body would be.
        (Framing::Length(n), _) | (Framing::Empty, Some(n)) if status != 204 => {
            client.field(b"content-length", itoa::Buffer::new().format(n).as_bytes());
        }
        _ => {}
    }
    client.field(
        b"via",
        if version == 0 {
            b"1.0 cutover"
        } else {
            b"1.1 cutover"
        },
    );
    if !facts.has_date {
        client.field(b"date", side.date);
    }
    if let Some(cookie) = side.set_cookie {
        client.field(b"set-cookie", cookie);
    }
    if let Some((name, id)) = side.request_id {
        client.field(name, id);
    }
    if side.close || framing == Framing::UntilClose {
        client.field(b"connection", b"close");
    }
    client.end();
}

/// Adds `Connection: close` to a client head [`parse`] wrote without it.
pub fn add_connection_close(client: &mut Vec<u8>) {
    // The head ends with its blank line: the header goes before it.
    let at = client.len().saturating_sub(2);
    client.splice(at..at, b"connection: close\r\n".iter().copied());
}

/// `Content-Length`: digits only (no sign, no list), at most 19 of them.
fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Headers the upstream's `Connection` names: hop-by-hop too.
fn connection_named<'h>(headers: &[httparse::Header<'h>]) -> Vec<&'h [u8]> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|o| !o.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIDE: ClientSide<'static> = ClientSide {
        head_request: false,
        close: false,
        set_cookie: None,
        request_id: None,
        date: b"Sat, 05 Dec 2026 12:00:00 GMT",
    };

    fn ready(bytes: &[u8], side: &ClientSide<'_>) -> (ResponseHead, String) {
        let mut out = Vec::new();
        match parse(bytes, side, &mut out) {
            Parsed::Ready(head) => (head, String::from_utf8(out).unwrap()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_plain_response_is_rewritten() {
        let (head, out) = ready(
            b"HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\nProxy-Authorization: x\r\nServer: up\r\n\r\nok",
            &SIDE,
        );
        assert_eq!(head.framing, Framing::Length(2));
        assert!(head.reusable);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nServer: up\r\ncontent-length: 2\r\nvia: 1.1 cutover\r\n\
             date: Sat, 05 Dec 2026 12:00:00 GMT\r\n\r\n"
        );
    }

    #[test]
    fn connection_close_can_be_added_after_the_fact() {
        let (_, out) = ready(b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n", &SIDE);
        let mut bytes = out.into_bytes();
        add_connection_close(&mut bytes);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 204 No Content\r\nDate: x\r\nvia: 1.1 cutover\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: x\r\n\r\n";
        let (head, out) = ready(chunked, &SIDE);
        assert_eq!(head.framing, Framing::Chunked);
        assert!(out.contains("transfer-encoding: chunked\r\n") && !out.contains("date: Sat"));
        let (head, out) = ready(b"HTTP/1.1 200 OK\r\n\r\n", &SIDE);
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.reusable && out.ends_with("connection: close\r\n\r\n"));
        let (head, out) = ready(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            &SIDE,
        );
        assert_eq!(head.framing, Framing::Empty);
        assert!(out.contains("content-length: 9\r\n"));
        let head_side = ClientSide {
            head_request: true,
            ..SIDE
        };
        let (head, _) = ready(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", &head_side);
        assert_eq!(head.framing, Framing::Empty);
        let (head, _) = ready(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", &SIDE);
        assert!(!head.reusable, "HTTP/1.0 closes unless it says keep-alive");
    }

    #[test]
    fn unforwardable_responses_are_refused() {
        for bytes in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.0 000 \r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bytes, &SIDE, &mut Vec::new()), Parsed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(
            parse(
                b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1",
                &SIDE,
                &mut Vec::new()
            ),
            Parsed::Interim(37)
        );
    }
}
