//! Failures map to the right status, and a dead upstream costs nothing when
//! another can take the request.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn refused_connection_is_retried_on_another_upstream() {
    let live = TestUpstream::start("live").await;
    let dead = closed_port();
    let config = format!(
        "[[route]]\nname = \"app\"\nsplit = {{ p = 1 }}\n[pool.p]\nupstreams = [{{ addr = \"{dead}\" }}, {{ addr = \"{}\" }}]\n",
        live.addr
    );
    let proxy = start_proxy(&config).await;
    let base = proxy.addrs()[0];
    let client = http1_client();
    for _ in 0..60 {
        assert_eq!(
            get(&client, &format!("http://{base}/")).await,
            (200, "live\n".into())
        );
    }
    // A POST with a body is retried too: nothing was sent before connecting failed.
    for _ in 0..20 {
        let req = http::Request::post(format!("http://{base}/upload"))
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"payload",
            )))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(body.starts_with(b"7 "), "{body:?}");
    }
    assert_eq!(live.hits(), 80);
    proxy.stop().await;
}

#[tokio::test]
async fn every_upstream_refusing_is_502() {
    let config = split_config(&[("p", 1, &[closed_port(), closed_port()])], "");
    let proxy = start_proxy(&config).await;
    let (status, body) = get(&http1_client(), &format!("http://{}/", proxy.addrs()[0])).await;
    assert_eq!(status, 502);
    assert!(body.contains("could not be reached"), "{body}");
    proxy.stop().await;
}

#[tokio::test]
async fn nothing_eligible_is_503_and_other_pool_takes_the_share() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let config = split_config(
        &[("blue", 50, &[blue.addr]), ("green", 50, &[green.addr])],
        "",
    );
    let proxy = start_proxy(&config).await;
    let url = format!("http://{}/", proxy.addrs()[0]);
    let client = http1_client();
    let table = proxy.routing().load();
    // Green's only upstream is out: its 50 % goes to blue.
    table
        .upstream("green", green.addr)
        .unwrap()
        .set_disabled(true);
    for _ in 0..50 {
        assert_eq!(get(&client, &url).await, (200, "blue\n".into()));
    }
    table
        .upstream("blue", blue.addr)
        .unwrap()
        .set_draining(Some(0));
    let (status, body) = get(&client, &url).await;
    assert_eq!(status, 503);
    assert!(body.contains("no healthy upstream"), "{body}");
    assert_eq!(green.hits(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let up = TestUpstream::start("slow").await;
    let config = split_config(
        &[("p", 1, &[up.addr])],
        "[proxy]\nresponse_header_timeout = \"300ms\"\n",
    );
    let proxy = start_proxy(&config).await;
    let (status, body) = get(
        &http1_client(),
        &format!("http://{}/slow?ms=10000", proxy.addrs()[0]),
    )
    .await;
    assert_eq!(status, 504);
    assert!(body.contains("did not answer in time"), "{body}");
    proxy.stop().await;
}

#[tokio::test]
async fn unmatched_host_is_404() {
    let up = TestUpstream::start("up").await;
    let config = format!(
        "[[route]]\nname = \"app\"\nhosts = [\"app.test\"]\nsplit = {{ p = 1 }}\n[pool.p]\nupstreams = [{{ addr = \"{}\" }}]\n",
        up.addr
    );
    let proxy = start_proxy(&config).await;
    let (status, _) = get(&http1_client(), &format!("http://{}/", proxy.addrs()[0])).await;
    assert_eq!(status, 404);
    assert_eq!(up.hits(), 0);
    proxy.stop().await;
}

/// Sends raw bytes and returns the response head, and whether the proxy
/// closed the connection after it.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
            if out.windows(4).any(|w| w == b"\r\n\r\n") {
                // Head complete: closed right after, or kept open?
                return matches!(s.read(&mut buf).await, Ok(0) | Err(_));
            }
        }
    };
    let closed = tokio::time::timeout(DEADLINE, read).await.unwrap_or(false);
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test]
async fn hostile_requests_get_4xx_and_others_are_unaffected() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(
        &[("p", 1, &[up.addr])],
        "[proxy]\nmax_header_bytes = 8192\n",
    ))
    .await;
    let addr = proxy.addrs()[0];
    let client = http1_client();

    let huge = format!(
        "GET / HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (head, closed) = raw(addr, huge.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 431") && closed, "{head}");
    let (head, closed) = raw(addr, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 400") && closed, "{head}");
    let connect =
        b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\nconnection: close\r\n\r\n";
    let (head, _) = raw(addr, connect).await;
    assert!(head.starts_with("HTTP/1.1 501"), "{head}");

    let (head, _) = raw(
        addr,
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "OPTIONS *: {head}");
    // RFC 9112 §3.2: no Host, two Hosts or a bad Host → 400 and close.
    for bad in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    ] {
        let (head, closed) = raw(addr, bad).await;
        assert!(
            head.starts_with("HTTP/1.1 400") && closed,
            "{:?} → {head}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(up.hits(), 0, "nothing malformed reached the upstream");
    // §6.1: both Content-Length and Transfer-Encoding: hyper frames by
    // Transfer-Encoding, drops Content-Length (so nothing ambiguous reaches
    // the upstream) and the connection is closed after the response.
    let smuggle = b"POST /headers HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    let (head, closed) = raw(addr, smuggle).await;
    assert!(
        closed,
        "connection kept open after an ambiguous request: {head}"
    );
    assert!(
        up.hits() <= 1,
        "a smuggled second request reached the upstream"
    );

    assert_eq!(
        get(&client, &format!("http://{addr}/")).await,
        (200, "up\n".into())
    );
    // The POST above and this GET: no other request got through.
    assert_eq!(up.hits(), 2);
    proxy.stop().await;
}

/// A Host with userinfo is 400; an h2c upgrade is stripped (no tunnel
/// opens, the upstream sees a plain request); a malformed chunk from the
/// client is its 400, not the upstream's 502.
#[tokio::test]
async fn userinfo_hosts_h2c_upgrades_and_bad_chunks() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let addr = proxy.addrs()[0];
    for bad in [
        &b"GET / HTTP/1.1\r\nHost: user@app.test\r\n\r\n"[..],
        b"GET http://user@app.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n",
    ] {
        let (head, closed) = raw(addr, bad).await;
        assert!(
            head.starts_with("HTTP/1.1 400") && closed,
            "{:?} → {head}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(up.hits(), 0);

    let h2c = b"GET /headers HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(h2c).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains("x-forwarded-proto") {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(
        !answer.contains("upgrade: h2c") && !answer.contains("http2-settings"),
        "the upstream saw the upgrade: {answer}"
    );

    let bad_chunk = b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
    let (head, closed) = raw(addr, bad_chunk).await;
    assert!(head.starts_with("HTTP/1.1 400") && closed, "{head}");
    proxy.stop().await;
}

/// A raw upstream that answers every connection with `answer`, then
/// closes (or, with `None`, reads and never answers).
async fn raw_upstream(answer: Option<&'static [u8]>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                match answer {
                    Some(bytes) => {
                        let _ = s.write_all(bytes).await;
                        // Abrupt: a reset, not a clean FIN.
                        let _ =
                            socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO));
                    }
                    None => tokio::time::sleep(std::time::Duration::from_secs(30)).await,
                }
            });
        }
    });
    addr
}

/// Sends a GET and reads until the proxy closes the connection.
async fn read_to_close(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the proxy closes the connection");
    out
}

/// An upstream that dies mid-body: the client sees the body cut short and
/// the connection closed — never a response that looks complete.
#[tokio::test]
async fn an_upstream_dying_mid_body_is_never_a_clean_short_response() {
    let sized = raw_upstream(Some(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789",
    ))
    .await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[sized])], "")).await;
    let out = read_to_close(proxy.addrs()[0]).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("content-length: 1000"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(body.len() < 1000, "the body looks complete: {text}");
    proxy.stop().await;

    let chunked = raw_upstream(Some(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
    ))
    .await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[chunked])], "")).await;
    let out = read_to_close(proxy.addrs()[0]).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a last chunk was made up for a body that never ended: {text:?}"
    );
    proxy.stop().await;
}

/// An upstream that takes the request and never answers: 504 at
/// `response_header_timeout`.
#[tokio::test]
async fn an_upstream_that_never_answers_is_504_at_the_timeout() {
    let mute = raw_upstream(None).await;
    let proxy = start_proxy(&split_config(
        &[("p", 1, &[mute])],
        "[proxy]\nresponse_header_timeout = \"300ms\"\n",
    ))
    .await;
    let started = std::time::Instant::now();
    let (status, _) = get(&http1_client(), &format!("http://{}/", proxy.addrs()[0])).await;
    assert_eq!(status, 504);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    proxy.stop().await;
}
