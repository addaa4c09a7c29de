//! Max-Forwards (RFC 9110 §7.6.2): every intermediary must check it on a
//! TRACE or OPTIONS request. At zero the request goes no further and
//! cutover answers it as its final recipient; above zero it is forwarded
//! with the count one lower. A value that is not a number is left alone.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, header};

use super::body::ResponseBody;

/// Fields a TRACE answer leaves out: they may carry credentials (§9.3.8).
const NOT_REFLECTED: [HeaderName; 3] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
];

/// The answer when the request must go no further; otherwise lowers the
/// count for the next hop.
pub fn apply<B>(req: &mut Request<B>) -> Option<Response<ResponseBody>> {
    if !matches!(*req.method(), Method::TRACE | Method::OPTIONS) {
        return None;
    }
    let hops = hops(req.headers().get(header::MAX_FORWARDS)?)?;
    if hops > 0 {
        req.headers_mut()
            .insert(header::MAX_FORWARDS, HeaderValue::from(hops - 1));
        return None;
    }
    if req.method() == Method::OPTIONS {
        return Some(Response::new(ResponseBody::empty()));
    }
    Some(reflect(req))
}

/// `1*DIGIT`, or nothing.
fn hops(value: &HeaderValue) -> Option<u64> {
    let digits = value.as_bytes();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// TRACE's answer: the request as received, as `message/http`.
fn reflect<B>(req: &Request<B>) -> Response<ResponseBody> {
    let mut message =
        format!("{} {} {:?}\r\n", req.method(), req.uri(), req.version()).into_bytes();
    for (name, value) in req.headers() {
        if NOT_REFLECTED.contains(name) {
            continue;
        }
        message.extend_from_slice(name.as_str().as_bytes());
        message.extend_from_slice(b": ");
        message.extend_from_slice(value.as_bytes());
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(b"\r\n");
    let mut response = Response::new(ResponseBody::full(Bytes::from(message)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("message/http"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, max_forwards: Option<&str>) -> Request<()> {
        let mut builder = Request::builder()
            .method(method)
            .uri("/a?b")
            .header("host", "app.test")
            .header("cookie", "session=secret");
        if let Some(v) = max_forwards {
            builder = builder.header("max-forwards", v);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn other_methods_and_requests_without_a_count_pass_untouched() {
        for (method, value) in [
            (Method::GET, Some("0")),
            (Method::OPTIONS, None),
            (Method::TRACE, Some("x1")),
            (Method::TRACE, Some("")),
            (Method::TRACE, Some("-1")),
        ] {
            let mut req = request(method.clone(), value);
            assert!(apply(&mut req).is_none(), "{method} {value:?}");
            assert_eq!(
                req.headers()
                    .get("max-forwards")
                    .map(|v| v.to_str().unwrap()),
                value,
                "{method} {value:?}"
            );
        }
    }

    #[test]
    fn a_positive_count_goes_down_by_one() {
        let mut req = request(Method::OPTIONS, Some("3"));
        assert!(apply(&mut req).is_none());
        assert_eq!(req.headers()["max-forwards"], "2");
    }

    #[test]
    fn zero_is_answered_here() {
        let answer = apply(&mut request(Method::OPTIONS, Some("0"))).unwrap();
        assert_eq!(answer.status(), 200);
        let answer = apply(&mut request(Method::TRACE, Some("0"))).unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["content-type"], "message/http");
    }
}
