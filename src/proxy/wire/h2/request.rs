//! A request's decoded header fields as an `http::Request` head, with the
//! checks RFC 9113 §8 makes of them; and a response head as a header
//! block. Pure: fields in, a head or a refusal out.

use bytes::Bytes;
use http::header::{COOKIE, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Method, Request, Uri, Version};

use super::hpack::{self, Field};

/// Why a header block is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed (§8.1.1): a stream error of type PROTOCOL_ERROR.
    Malformed(&'static str),
    /// Over SETTINGS_MAX_HEADER_LIST_SIZE: answered 431.
    TooLarge,
}

/// What each field costs against the header list limit (RFC 9113
/// §6.5.2: its name, its value and 32 bytes).
const FIELD_OVERHEAD: usize = 32;

/// Fields that only make sense for one HTTP/1.1 connection (§8.2.2).
const CONNECTION_SPECIFIC: [&[u8]; 5] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"upgrade",
];

/// Collects one header block's fields, checking each as it comes.
pub struct HeadReader {
    max_list: usize,
    size: usize,
    /// A trailer block: no pseudo-header allowed.
    trailers: bool,
    method: Option<Method>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    headers: HeaderMap,
    /// Cookie fields, joined with "; " for HTTP/1.1 (§8.2.3).
    cookie: Option<Vec<u8>>,
    regular_seen: bool,
    refused: Option<Refusal>,
}

/// A request head the checks passed.
pub struct RequestHead {
    pub request: Request<()>,
    /// The client's `Content-Length`, which its DATA frames must match.
    pub content_length: Option<u64>,
}

impl HeadReader {
    pub fn new(max_list: usize, trailers: bool) -> HeadReader {
        HeadReader {
            max_list,
            size: 0,
            trailers,
            method: None,
            scheme: None,
            authority: None,
            path: None,
            headers: HeaderMap::new(),
            cookie: None,
            regular_seen: false,
            refused: None,
        }
    }

    fn refuse(&mut self, why: Refusal) {
        // The first reason stands; a malformed block is malformed even if
        // it is also too large.
        if self.refused.is_none() || matches!(why, Refusal::Malformed(_)) {
            self.refused.get_or_insert(why);
        }
    }

    /// Takes one field (the HPACK decoder's `emit`).
    pub fn field(&mut self, f: Field<'_>) {
        self.size += f.name.len() + f.value.len() + FIELD_OVERHEAD;
        if self.size > self.max_list {
            self.refuse(Refusal::TooLarge);
        }
        if self.refused.is_some() {
            // Keep decoding (the table must stay in step), keep nothing.
            return;
        }
        if let Err(why) = self.take(f) {
            self.refused = Some(Refusal::Malformed(why));
        }
    }

    fn take(&mut self, f: Field<'_>) -> Result<(), &'static str> {
        let value = f.value;
        if value.first().is_some_and(|b| *b == b' ' || *b == b'\t')
            || value.last().is_some_and(|b| *b == b' ' || *b == b'\t')
        {
            return Err("field value with leading or trailing whitespace");
        }
        if let Some(pseudo) = f.name.strip_prefix(b":") {
            if self.trailers {
                return Err("pseudo-header in trailers");
            }
            if self.regular_seen {
                return Err("pseudo-header after a regular field");
            }
            return self.pseudo(pseudo, value);
        }
        self.regular_seen = true;
        if f.name.iter().any(u8::is_ascii_uppercase) {
            return Err("upper-case field name");
        }
        if CONNECTION_SPECIFIC.contains(&f.name) {
            return Err("connection-specific field");
        }
        if f.name == b"te" && value != b"trailers" {
            return Err("te other than trailers");
        }
        let name = HeaderName::from_bytes(f.name).map_err(|_| "invalid field name")?;
        if name == COOKIE {
            if value.is_empty() {
                // No cookie-pair: nothing to join (an empty crumb would
                // leave a dangling "; ").
                return Ok(());
            }
            match &mut self.cookie {
                Some(cookie) => {
                    cookie.extend_from_slice(b"; ");
                    cookie.extend_from_slice(value);
                }
                None => self.cookie = Some(value.to_vec()),
            }
            return Ok(());
        }
        let mut value = HeaderValue::from_bytes(value).map_err(|_| "invalid field value")?;
        if f.sensitive {
            value.set_sensitive(true);
        }
        self.headers.append(name, value);
        Ok(())
    }

    fn pseudo(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        let slot = match name {
            b"method" => {
                if self.method.is_some() {
                    return Err("two :method");
                }
                self.method = Some(Method::from_bytes(value).map_err(|_| "invalid :method")?);
                return Ok(());
            }
            b"scheme" => &mut self.scheme,
            b"authority" => &mut self.authority,
            b"path" => &mut self.path,
            _ => return Err("unknown pseudo-header"),
        };
        if slot.is_some() {
            return Err("repeated pseudo-header");
        }
        *slot = Some(Bytes::copy_from_slice(value));
        Ok(())
    }

    /// The request, once its block has ended.
    pub fn request(mut self) -> Result<RequestHead, Refusal> {
        if let Some(refused) = self.refused {
            return Err(refused);
        }
        let malformed = |why| Err(Refusal::Malformed(why));
        let Some(method) = self.method.take() else {
            return malformed("no :method");
        };
        let mut uri = Uri::builder();
        if method == Method::CONNECT {
            // §8.5: :authority only (extended CONNECT is not offered).
            if self.scheme.is_some() || self.path.is_some() {
                return malformed(":scheme or :path in CONNECT");
            }
            let Some(authority) = self.authority.take() else {
                return malformed("CONNECT without :authority");
            };
            let Ok(authority) = Authority::from_maybe_shared(authority) else {
                return malformed("invalid :authority");
            };
            uri = uri.authority(authority);
        } else {
            let (Some(scheme), Some(path)) = (self.scheme.take(), self.path.take()) else {
                return malformed("no :scheme or :path");
            };
            if path.is_empty() {
                return malformed("empty :path");
            }
            let Ok(path) = PathAndQuery::from_maybe_shared(path) else {
                return malformed("invalid :path");
            };
            if let Some(authority) = self.authority.take() {
                let Ok(authority) = Authority::from_maybe_shared(authority) else {
                    return malformed("invalid :authority");
                };
                uri = uri.scheme(&*scheme).authority(authority);
            }
            // Without :authority, origin form: the Host header (checked
            // by the front) names the origin.
            uri = uri.path_and_query(path);
        }
        let Ok(uri) = uri.build() else {
            return malformed("invalid :scheme, :authority or :path");
        };
        let content_length = self.content_length()?;
        if let Some(cookie) = self.cookie.take() {
            let Ok(cookie) = HeaderValue::from_bytes(&cookie) else {
                return malformed("invalid cookie");
            };
            self.headers.insert(COOKIE, cookie);
        }
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = self.headers;
        Ok(RequestHead {
            request,
            content_length,
        })
    }

    fn content_length(&self) -> Result<Option<u64>, Refusal> {
        let mut length = None;
        for value in self.headers.get_all(http::header::CONTENT_LENGTH) {
            let parsed = std::str::from_utf8(value.as_bytes())
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok());
            match (parsed, length) {
                (None, _) => return Err(Refusal::Malformed("invalid content-length")),
                (Some(n), Some(seen)) if n != seen => {
                    return Err(Refusal::Malformed("content-length values differ"));
                }
                (Some(n), _) => length = Some(n),
            }
        }
        Ok(length)
    }

    /// The fields of a trailer block.
    pub fn trailers(mut self) -> Result<HeaderMap, Refusal> {
        if let Some(refused) = self.refused {
            return Err(refused);
        }
        if let Some(cookie) = self.cookie.take()
            && let Ok(cookie) = HeaderValue::from_bytes(&cookie)
        {
            self.headers.insert(COOKIE, cookie);
        }
        Ok(self.headers)
    }
}

/// Appends a response head's header block: `:status`, then every field
/// but the connection-specific ones (§8.2.2), sensitive ones never
/// indexed.
pub fn encode_response(out: &mut Vec<u8>, status: u16, headers: &HeaderMap) {
    hpack::encode_status(out, status);
    encode_fields(out, headers);
}

/// Appends `headers` (a trailer block, or a head's fields).
pub fn encode_fields(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        let bytes = name.as_str().as_bytes();
        if CONNECTION_SPECIFIC.contains(&bytes) || (bytes == b"te" && value != "trailers") {
            continue;
        }
        hpack::encode_field(out, bytes, value.as_bytes(), value.is_sensitive());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(fields: &[(&str, &str)]) -> Result<RequestHead, Refusal> {
        let mut reader = HeadReader::new(8192, false);
        for (name, value) in fields {
            reader.field(Field {
                name: name.as_bytes(),
                value: value.as_bytes(),
                sensitive: false,
            });
        }
        reader.request()
    }

    const GET: [(&str, &str); 4] = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "example.com"),
        (":path", "/a?b=c"),
    ];

    #[test]
    fn a_plain_request_reads_whole() {
        let mut fields = GET.to_vec();
        fields.extend([
            ("cookie", "a=1"),
            ("accept", "*/*"),
            ("cookie", "b=2"),
            ("content-length", "0"),
        ]);
        let head = read(&fields).unwrap();
        let r = head.request;
        assert_eq!(r.method(), Method::GET);
        assert_eq!(r.uri(), "https://example.com/a?b=c");
        assert_eq!(r.headers()["cookie"], "a=1; b=2");
        assert_eq!(r.headers()["accept"], "*/*");
        assert_eq!(head.content_length, Some(0));
    }

    #[test]
    fn malformed_requests_are_refused() {
        let malformed = |fields: Vec<(&str, &str)>| {
            assert!(
                matches!(read(&fields), Err(Refusal::Malformed(_))),
                "{fields:?}"
            );
        };
        malformed(GET[1..].to_vec());
        malformed([GET.as_slice(), &[(":method", "GET")]].concat());
        malformed([GET.as_slice(), &[(":status", "200")]].concat());
        malformed([&[("accept", "*/*")], GET.as_slice()].concat());
        malformed([GET.as_slice(), &[("Accept", "*/*")]].concat());
        malformed([GET.as_slice(), &[("connection", "close")]].concat());
        malformed([GET.as_slice(), &[("te", "gzip")]].concat());
        malformed([GET.as_slice(), &[("x", " padded")]].concat());
        malformed(
            [
                GET.as_slice(),
                &[("content-length", "1"), ("content-length", "2")],
            ]
            .concat(),
        );
        malformed([GET.as_slice(), &[("content-length", "-1")]].concat());
        malformed(vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":path", ""),
        ]);
        malformed(vec![
            (":method", "CONNECT"),
            (":authority", "a:443"),
            (":path", "/"),
        ]);
        assert!(read(&[GET.as_slice(), &[("te", "trailers")]].concat()).is_ok());
    }

    #[test]
    fn a_large_list_is_too_large_and_still_read_to_its_end() {
        let mut reader = HeadReader::new(100, false);
        for _ in 0..10 {
            reader.field(Field {
                name: b"x-big",
                value: &[b'v'; 40],
                sensitive: false,
            });
        }
        assert_eq!(reader.request().err(), Some(Refusal::TooLarge));
    }

    #[test]
    fn response_heads_leave_connection_fields_out() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.insert("connection", HeaderValue::from_static("close"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let mut block = Vec::new();
        encode_response(&mut block, 200, &headers);
        let mut decoder = hpack::Decoder::default();
        let mut names = Vec::new();
        decoder
            .decode(&block, |f| {
                names.push(String::from_utf8_lossy(f.name).into_owned())
            })
            .unwrap();
        assert_eq!(names, [":status", "content-type"]);
    }
}
