//! The answers cutover writes itself (an error's, mostly), rendered for
//! either front from one description: an `http::Response` for hyper's
//! server, HTTP/1.1 bytes for the direct path.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};

/// A response made by cutover, not by an upstream.
#[derive(Debug)]
pub struct OwnAnswer {
    pub status: StatusCode,
    /// Its headers besides the framing (`Content-Length`), `Date` and
    /// `Connection`, which the rendering adds.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl OwnAnswer {
    /// A plain-text answer.
    pub fn text(status: StatusCode, body: String) -> OwnAnswer {
        OwnAnswer {
            status,
            headers: vec![(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            body: Bytes::from(body),
        }
    }

    /// Whether the client connection closes after this answer: after a
    /// 400 the framing of whatever follows cannot be trusted.
    pub fn closes_connection(&self) -> bool {
        self.status == StatusCode::BAD_REQUEST
    }

    /// For hyper's server, which adds the framing and `Date` itself, and
    /// closes the connection after a `Connection: close`.
    pub fn into_response(self) -> Response<Bytes> {
        let closes = self.closes_connection();
        let mut response = Response::new(self.body);
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        if closes {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// As HTTP/1.1 bytes in `out`, with `date` (an IMF-fixdate); `close`
    /// (or an answer that always closes) adds `Connection: close`.
    /// Returns whether the connection closes after it.
    pub fn write_http1(
        &self,
        close: bool,
        date: &[u8],
        request_id: Option<(&[u8], &[u8])>,
        out: &mut Vec<u8>,
    ) -> bool {
        let closes = close || self.closes_connection();
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.status.canonical_reason().unwrap_or("").as_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(b"\r\ncontent-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(self.body.len()).as_bytes());
        out.extend_from_slice(b"\r\ndate: ");
        out.extend_from_slice(date);
        if let Some((name, id)) = request_id {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(id);
        }
        if closes {
            out.extend_from_slice(b"\r\nconnection: close");
        }
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&self.body);
        closes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &[u8] = b"Sun, 06 Dec 2026 12:00:00 GMT";

    #[test]
    fn both_renderings_say_the_same() {
        let answer = OwnAnswer::text(StatusCode::BAD_GATEWAY, "502 Bad Gateway: x\n".into());
        let mut bytes = Vec::new();
        assert!(!answer.write_http1(false, DATE, None, &mut bytes));
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: 19\r\ndate: Sun, 06 Dec 2026 12:00:00 GMT\r\n\r\n502 Bad Gateway: x\n"
        );
        let response = answer.into_response();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert!(!response.headers().contains_key(header::CONNECTION));
        assert_eq!(response.body().as_ref(), b"502 Bad Gateway: x\n");
    }

    #[test]
    fn a_400_closes_the_connection_on_both() {
        let answer = OwnAnswer::text(StatusCode::BAD_REQUEST, "400\n".into());
        let mut bytes = Vec::new();
        assert!(answer.write_http1(false, DATE, None, &mut bytes));
        assert!(String::from_utf8_lossy(&bytes).contains("\r\nconnection: close\r\n\r\n"));
        assert_eq!(
            answer.into_response().headers()[header::CONNECTION],
            "close"
        );
    }
}
