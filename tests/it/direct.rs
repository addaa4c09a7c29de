//! The direct HTTP/1.1 path (`proxy::direct`): its parser against
//! hyper's on the same bytes, and what it does through real sockets that
//! hyper's path did for it before — chunked and close-delimited bodies,
//! interim responses, pipelining, stale pooled sockets, bad upstream
//! answers, and the hand-over to hyper at the first request it leaves.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cutover::proxy::wire::request::{Forwarding, Verdict, classify};
use http_body_util::Full;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What hyper's server made of a request: method, target, the headers
/// (lower-case names, raw values) and the body, or `None` if it refused it.
type Parsed = Option<(String, String, Vec<(String, Vec<u8>)>, Vec<u8>)>;

/// Feeds `bytes` to a hyper HTTP/1.1 server (as cutover's hyper path
/// configures it) over an in-memory pipe.
async fn hyper_parse(bytes: &[u8]) -> Parsed {
    let (mut client, server) = tokio::io::duplex(256 * 1024);
    let seen: Arc<Mutex<Parsed>> = Arc::new(Mutex::new(None));
    let record = Arc::clone(&seen);
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let record = Arc::clone(&record);
        async move {
            use http_body_util::BodyExt;
            let headers = req
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect();
            let (method, target) = (req.method().to_string(), req.uri().to_string());
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec());
            let mut seen = record.lock().unwrap();
            // The first request only: the bytes may hold more.
            if seen.is_none()
                && let Ok(body) = body
            {
                *seen = Some((method, target, headers, body));
            }
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .max_buf_size(64 * 1024)
        .max_header_size(64 * 1024)
        .serve_connection(hyper_util::rt::TokioIo::new(server), service);
    let serve = tokio::spawn(conn);
    client.write_all(bytes).await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer).await;
    let _ = serve.await;
    let parsed = seen.lock().unwrap().take();
    parsed
        .filter(|_| answer.starts_with(b"HTTP/1.1 200"))
        .map(|(m, t, h, b)| (m, t, by_name(h), b))
}

/// The same, as the direct path read it: `None` unless taken.
fn direct_parse(bytes: &[u8]) -> Parsed {
    let fwd = Forwarding {
        client_ip: b"127.0.0.1",
        proto: b"http",
        request_id: b"x-request-id",
        // The trace headers' branch taken too: it changes what goes up,
        // never which requests are taken.
        trace: true,
    };
    let Verdict::Take(head) = classify(bytes, &fwd, &mut Vec::new()) else {
        return None;
    };
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(bytes).ok()?;
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    let text = |r: std::ops::Range<usize>| String::from_utf8_lossy(&bytes[r]).into_owned();
    let body = bytes[head.len..head.len + head.body as usize].to_vec();
    Some((text(head.method), text(head.target), by_name(headers), body))
}

/// Headers grouped by name, each name's values in their order: a
/// `HeaderMap` iterates them so, whatever order they came in.
fn by_name(mut headers: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    headers
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => Just("GET".to_string()),
        2 => Just("HEAD".to_string()),
        2 => Just("POST".to_string()),
        1 => Just("DELETE".to_string()),
        1 => Just("CONNECT".to_string()),
        1 => Just("OPTIONS".to_string()),
        2 => "[A-Za-z!#$%&'*+.^_`|~-]{1,8}",
        1 => "[\\x21-\\x7e]{1,6}",
    ]
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just("/".to_string()),
        1 => Just("*".to_string()),
        1 => Just("http://a.test/x".to_string()),
        8 => "/[a-zA-Z0-9/._~%?=&;:@!$'()*+,-]{0,20}",
        2 => "/[\\x21-\\x7e]{0,12}",
        1 => "[\\x20-\\x7f]{1,10}",
    ]
}

fn version() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => Just("HTTP/1.1"),
        1 => Just("HTTP/1.0"),
        1 => Just("HTTP/2.0"),
        1 => Just("http/1.1"),
        1 => Just("HTTP/1.1 "),
    ]
}

fn header() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        1 => Just("Host".to_string()),
        1 => Just("host".to_string()),
        1 => Just("Content-Length".to_string()),
        1 => Just("Transfer-Encoding".to_string()),
        2 => Just("Connection".to_string()),
        1 => Just("X-Forwarded-For".to_string()),
        2 => Just("Cookie".to_string()),
        1 => Just("Upgrade".to_string()),
        1 => Just("Expect".to_string()),
        12 => "[A-Za-z0-9-]{1,12}",
        1 => "[\\x21-\\x7e]{1,8}",
        1 => Just("Host ".to_string()),
        1 => Just(" Host".to_string()),
    ];
    let value = prop_oneof![
        1 => Just("a.test".to_string()),
        1 => Just("a.test:8080".to_string()),
        1 => Just("[::1]:80".to_string()),
        1 => Just("u@a.test".to_string()),
        1 => Just("0".to_string()),
        1 => Just("5".to_string()),
        1 => Just("0, 0".to_string()),
        1 => Just("chunked".to_string()),
        2 => Just("close".to_string()),
        1 => Just("keep-alive, x-hop".to_string()),
        1 => Just("".to_string()),
        8 => "[\\x20-\\x7e\\t]{0,16}",
        2 => "[\\x00-\\xff]{0,6}",
    ];
    let eol = prop_oneof![20 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r\n ")];
    (name, value, eol).prop_map(|(n, v, e)| format!("{n}: {v}{e}"))
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    let host = prop_oneof![
        4 => Just("Host: a.test\r\n".to_string()),
        1 => Just(String::new()),
    ];
    let body = prop_oneof![
        3 => Just(String::new()),
        1 => Just("hello".to_string()),
        1 => "[\\x00-\\xff]{0,12}",
    ];
    (
        method(),
        target(),
        version(),
        host,
        proptest::collection::vec(header(), 0..4),
        body,
    )
        .prop_map(|(m, t, v, host, headers, body)| {
            format!("{m} {t} {v}\r\n{host}{}\r\n{body}", headers.concat()).into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    /// Whatever the direct path takes, hyper takes too, and reads the same
    /// method, target, headers and body; what hyper refuses never reaches the
    /// direct path. (What the direct path leaves, hyper gets: not checked
    /// here, nothing to compare.)
    #[test]
    fn the_direct_path_takes_only_what_hyper_reads_the_same_way(bytes in request()) {
        let direct = direct_parse(&bytes);
        if direct.is_some() {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let hyper = runtime.block_on(hyper_parse(&bytes));
            prop_assert_eq!(direct, hyper, "{:?}", String::from_utf8_lossy(&bytes));
        }
    }
}

/// The generator above is not vacuous: it reaches both verdicts often.
#[test]
fn the_request_generator_makes_heads_both_paths_take() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut taken, mut left) = (0, 0);
    for _ in 0..500 {
        let bytes = request().new_tree(&mut runner).unwrap().current();
        match direct_parse(&bytes) {
            Some(_) => taken += 1,
            None => left += 1,
        }
    }
    assert!(taken > 50 && left > 50, "taken {taken}, left {left}");
}

/// An upstream that answers each request head with the bytes its path
/// names (see `script`), over raw sockets: framings hyper's servers would
/// not produce on demand. Counts the connections it accepted.
struct ScriptedUpstream {
    addr: std::net::SocketAddr,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

/// The bytes answering `path`, and whether the upstream closes after them.
fn script(path: &str) -> (&'static [u8], bool) {
    match path {
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n",
            false,
        ),
        "/close" => (b"HTTP/1.1 200 OK\r\n\r\nuntil the upstream closes", true),
        "/early" => (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nafter hints",
            false,
        ),
        "/bad" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            true,
        ),
        // Closes after a complete answer without saying so, as upstreams
        // with a short keep-alive timeout do.
        "/stale" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale", true),
        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
    }
}

impl ScriptedUpstream {
    async fn start() -> ScriptedUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                        let (answer, close) = script(&path);
                        if socket.write_all(answer).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        ScriptedUpstream { addr, connections }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_bodies_of_every_framing_reach_the_client() {
    use crate::support::*;
    let up = ScriptedUpstream::start().await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let base = format!("http://{}", proxy.addrs()[0]);
    // HTTP/1.1 takes the whole direct path; HTTP/2 (served by hyper) its
    // upstream half, whose body is decoded for hyper to frame again.
    for (protocol, client) in [("HTTP/1.1", http1_client()), ("HTTP/2", http2_client())] {
        for (path, status, body) in [
            ("/chunked", 200, "hello world"),
            ("/close", 200, "until the upstream closes"),
            ("/early", 200, "after hints"),
            ("/bad", 502, "502 Bad Gateway: "),
            ("/stale", 200, "stale"),
            ("/", 200, "ok"),
        ] {
            let (got_status, got_body) = get(&client, &format!("{base}{path}")).await;
            assert_eq!(got_status, status, "{protocol} {path}: {got_body}");
            assert!(
                got_body.starts_with(body),
                "{protocol} {path}: {got_body:?}"
            );
        }
    }
    // The chunks, extensions and trailers went through as they came.
    let mut stream = tokio::net::TcpStream::connect(proxy.addrs()[0])
        .await
        .unwrap();
    stream
        .write_all(b"GET /chunked HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"x-sum: 11\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(
        text.contains("5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n"),
        "{text}"
    );
    assert!(
        !text.to_ascii_lowercase().contains("trailer: x-sum"),
        "hop-by-hop `Trailer` removed: {text}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_upstream_connection() {
    use crate::support::*;
    let up = ScriptedUpstream::start().await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addrs()[0])
        .await
        .unwrap();
    let one = "GET /early HTTP/1.1\r\nHost: a.test\r\n\r\n";
    stream.write_all(one.repeat(3).as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while answer.windows(11).filter(|w| w == b"after hints").count() < 3 {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{text}");
    assert!(
        !text.contains("103"),
        "interim answers are not forwarded: {text}"
    );
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    proxy.stop().await;
}

/// Reads one answer with a `Content-Length` body from `stream`.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> String {
    let mut answer = Vec::new();
    loop {
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                return String::from_utf8_lossy(&answer).into_owned();
            }
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
}

/// A `Content-Length` body that came with its head goes the direct way
/// whole; a chunked one hands the connection to hyper, which serves it
/// and what follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_direct_path_leaves_goes_to_hyper_on_the_same_connection() {
    use crate::support::upstream::checksum;
    use crate::support::*;
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let admin = format!("http://{}", proxy.admin_addr());
    let fallbacks = || gauge(&admin, "cutover_direct_fallbacks_total");
    let before = fallbacks().await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addrs()[0])
        .await
        .unwrap();
    let body = "x".repeat(3000);
    let expected = format!("3000 {}", checksum(0, body.as_bytes()));
    stream
        .write_all(
            format!("POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3000\r\n\r\n{body}")
                .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(&expected), "{answer}");
    assert_eq!(
        fallbacks().await,
        before,
        "a whole body goes the direct way"
    );
    for request in [
        "GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n",
        "POST /two HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
        "GET /three HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ] {
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{request}: {answer}");
    }
    assert_eq!(
        fallbacks().await - before,
        1.0,
        "the chunked POST handed the connection to hyper"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_closing_idle_connections_fail_no_request() {
    use crate::support::*;
    let up = ScriptedUpstream::start().await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let url = format!("http://{}/stale", proxy.addrs()[0]);
    for client in [http1_client(), http2_client()] {
        for i in 0..200 {
            let (status, body) = get(&client, &url).await;
            assert_eq!((status, body.as_str()), (200, "stale"), "request {i}");
        }
    }
    proxy.stop().await;
}

/// A response's status and end-to-end headers (lower-case names).
type ResponseSeen = Option<(u16, Vec<(String, Vec<u8>)>)>;

/// What hyper's client made of an upstream response, or `None` if it
/// refused it.
async fn hyper_client_parse(bytes: &[u8]) -> ResponseSeen {
    let (client, mut server) = tokio::io::duplex(256 * 1024);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(
        hyper_util::rt::TokioIo::new(client),
    )
    .await
    .ok()?;
    tokio::spawn(conn);
    let answer = bytes.to_vec();
    tokio::spawn(async move {
        let mut head = [0u8; 1024];
        let _ = server.read(&mut head).await;
        let _ = server.write_all(&answer).await;
        let _ = server.shutdown().await;
        // Keep the pipe open until the client is done with it.
        let _ = server.read(&mut head).await;
    });
    let request = http::Request::get("/")
        .header("host", "a.test")
        .body(Full::default())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .filter(|(n, _)| !HOP.contains(&n.as_str()))
        .collect();
    Some((response.status().as_u16(), by_name(headers)))
}

/// Headers neither side forwards as they came.
const HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
    "content-length",
    "x-hop",
];

/// The same, as the direct path read it (from the client head it
/// writes, minus what it adds): `None` unless it forwards it.
fn direct_response_parse(bytes: &[u8]) -> ResponseSeen {
    use cutover::proxy::wire::response::{ClientSide, Parsed, parse};
    let side = ClientSide {
        head_request: false,
        close: false,
        set_cookie: None,
        request_id: None,
        date: b"Sat, 05 Dec 2026 12:00:00 GMT",
    };
    let mut out = Vec::new();
    let Parsed::Ready(head) = parse(bytes, &side, &mut out) else {
        return None;
    };
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut res = httparse::Response::new(&mut headers);
    res.parse(&out).ok()?;
    let mut original = [httparse::EMPTY_HEADER; 100];
    let mut upstream = httparse::Response::new(&mut original);
    upstream.parse(bytes).ok()?;
    let had_date = upstream
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("date"));
    let headers = res
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .filter(|(n, _)| !HOP.contains(&n.as_str()) && n != "via" && (had_date || n != "date"))
        .collect();
    Some((head.status, by_name(headers)))
}

fn response() -> impl Strategy<Value = Vec<u8>> {
    let status = prop_oneof![
        4 => Just("200 OK".to_string()),
        1 => Just("404 Not Found".to_string()),
        1 => Just("503 Busy".to_string()),
        1 => Just("299 Custom".to_string()),
        1 => "[0-9]{1,4} [A-Za-z ]{0,6}",
    ];
    let header = prop_oneof![
        2 => Just("Content-Length: 2\r\n".to_string()),
        1 => Just("Content-Length: 2\r\nContent-Length: 2\r\n".to_string()),
        1 => Just("Content-Length: 1\r\nContent-Length: 2\r\n".to_string()),
        1 => Just("Content-Length: +2\r\n".to_string()),
        1 => Just("Transfer-Encoding: chunked\r\n".to_string()),
        1 => Just("Transfer-Encoding: gzip\r\n".to_string()),
        1 => Just("Connection: close, x-hop\r\nx-hop: 1\r\n".to_string()),
        1 => Just("Date: Sat, 05 Dec 2026 11:00:00 GMT\r\n".to_string()),
        6 => "[A-Za-z0-9-]{1,10}: [\\x20-\\x7e]{0,12}\r\n",
        1 => "[\\x21-\\x7e]{1,6}:[\\x00-\\xff]{0,6}\r\n",
    ];
    let version = prop_oneof![6 => Just("HTTP/1.1"), 1 => Just("HTTP/1.0"), 1 => Just("HTTP/2")];
    (version, status, proptest::collection::vec(header, 0..4))
        .prop_map(|(v, s, h)| format!("{v} {s}\r\n{}\r\nok0\r\n\r\n", h.concat()).into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// Whatever upstream response head the direct path forwards, hyper's
    /// client accepts too, with the same status and end-to-end headers.
    #[test]
    fn the_direct_path_forwards_only_responses_hyper_reads_the_same_way(bytes in response()) {
        let direct = direct_response_parse(&bytes);
        if direct.is_some() {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let hyper = runtime.block_on(hyper_client_parse(&bytes));
            prop_assert_eq!(direct, hyper, "{:?}", String::from_utf8_lossy(&bytes));
        }
    }
}

/// A graceful stop while a request is in flight on the direct path: it
/// is answered, with `Connection: close` (as hyper's path does), and the
/// connection then closes rather than waiting for a next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_answers_the_request_in_flight_and_closes() {
    use crate::support::*;
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addrs()[0])
        .await
        .unwrap();
    stream
        .write_all(b"GET /slow?ms=500 HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    wait_until("the request reaches the upstream", || async {
        up.in_flight() == 1
    })
    .await;
    let stopping = tokio::spawn(proxy.stop());
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the connection closes after the answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("up\n"), "{answer}");
    stopping.await.unwrap();
}
