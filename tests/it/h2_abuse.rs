//! cutover's HTTP/2 server against clients that abuse the protocol: each
//! abuse is bounded (the connection ends, the stream is refused, or the
//! server stops reading) and every other client is served meanwhile.
//! Also the HTTP/2-only listener. docs/architecture.md, "The HTTP/2
//! server", lists the limits.

use crate::support::h2_raw::*;
use crate::support::*;

/// A GET for `path` on `stream`, ending it.
fn get(stream: u32, path: &str) -> Vec<u8> {
    frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        stream,
        &request_block("GET", path, &[]),
    )
}

/// Another client on a fresh connection gets its answer.
async fn others_are_served(proxy: &TestProxy) {
    let url = format!("http://{}/", proxy.addrs()[0]);
    let resp = http2_client().get(url.parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// Rapid reset (CVE-2023-44487): streams opened and reset at once, far
/// past 256 a second, end the connection with ENHANCE_YOUR_CALM, and
/// almost none of them reach the upstream (a reset drops the stream's
/// future before it runs).
#[tokio::test]
async fn rapid_reset_ends_the_connection() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let mut h2 = RawH2::open(proxy.addrs()[0], &[]).await;
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        burst.extend(get(id, "/slow?ms=5000"));
        burst.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    // The server may close while this is still being written.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut h2.stream, &burst).await;
    let goaway = h2.until(|f| f.kind == GOAWAY).await.expect("a GOAWAY");
    assert_eq!(goaway.code(), Some(ENHANCE_YOUR_CALM));
    assert!(
        up.hits() < 300,
        "{} reset streams reached the upstream",
        up.hits()
    );
    let admin = proxy.admin_url("");
    let metric = "cutover_http2_errors_total{scope=\"connection\",reason=\"enhance_your_calm\"}";
    wait_until("the GOAWAY counted", || async {
        gauge(admin.trim_end_matches('/'), metric).await >= 1.0
    })
    .await;
    others_are_served(&proxy).await;
    proxy.stop().await;
}

/// A header block that never ends — CONTINUATION after CONTINUATION, empty
/// or not (the CVE-2024-27316 family) — ends the connection with
/// ENHANCE_YOUR_CALM once it passes 64 frames or twice
/// `max_header_bytes`; nothing reaches the upstream.
#[tokio::test]
async fn continuation_floods_end_the_connection() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let empty_frames = {
        let mut b = frame(HEADERS, 0, 1, &request_block("GET", "/", &[]));
        for _ in 0..100 {
            b.extend(frame(CONTINUATION, 0, 1, &[]));
        }
        b
    };
    let big_frames = {
        let mut b = frame(HEADERS, 0, 1, &request_block("GET", "/", &[]));
        let mut fill = Vec::new();
        literal(&mut fill, b"x-fill", &[b'f'; 16_000]);
        for _ in 0..20 {
            b.extend(frame(CONTINUATION, 0, 1, &fill));
        }
        b
    };
    for (what, bytes) in [("empty", empty_frames), ("16 KB", big_frames)] {
        let mut h2 = RawH2::open(proxy.addrs()[0], &[]).await;
        let _ = tokio::io::AsyncWriteExt::write_all(&mut h2.stream, &bytes).await;
        let goaway = h2.until(|f| f.kind == GOAWAY).await.expect("a GOAWAY");
        assert_eq!(goaway.code(), Some(ENHANCE_YOUR_CALM), "{what}");
    }
    assert_eq!(up.hits(), 0);
    others_are_served(&proxy).await;
    proxy.stop().await;
}

/// An HPACK bomb: one 4,000-byte field put in the dynamic table, then a
/// block of 15,000 one-byte references to it (60 MB decoded). The
/// block's list is over `max_header_bytes`: that stream is answered 431,
/// the references are counted, not copied, and the connection serves on
/// with its table in step (a later request that uses the table works).
#[tokio::test]
async fn an_hpack_bomb_is_431_and_the_connection_lives() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let mut h2 = RawH2::open(proxy.addrs()[0], &[]).await;
    // Stream 1: a literal with incremental indexing (0x40), name literal.
    let mut first = request_block("GET", "/", &[]);
    first.push(0x40);
    length(&mut first, 6);
    first.extend_from_slice(b"x-bomb");
    length(&mut first, 4000);
    first.extend(std::iter::repeat_n(b'b', 4000));
    h2.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &first))
        .await;
    let answer = h2.until(|f| f.kind == HEADERS && f.stream == 1).await;
    assert!(answer.is_some());
    // Stream 3: the pseudo-headers, then index 62 (the entry) 15,000 times.
    let mut bomb = request_block("GET", "/", &[]);
    bomb.extend(std::iter::repeat_n(0x80 | 62, 15_000));
    h2.send(&frame(HEADERS, END_HEADERS | END_STREAM, 3, &bomb))
        .await;
    let answer = h2
        .until(|f| f.kind == HEADERS && f.stream == 3)
        .await
        .expect("stream 3 answered");
    // :status 431 as a literal with the indexed name :status (0x08).
    assert_eq!(answer.payload, b"\x08\x03431");
    // The table is still in step: index 62 is x-bomb for stream 5 too.
    let mut again = request_block("GET", "/headers", &[]);
    again.push(0x80 | 62);
    h2.send(&frame(HEADERS, END_HEADERS | END_STREAM, 5, &again))
        .await;
    let data = h2
        .until(|f| f.kind == DATA && f.stream == 5)
        .await
        .expect("stream 5 answered");
    let text = String::from_utf8_lossy(&data.payload).into_owned();
    assert!(text.contains("x-bomb: bbbb"), "{text}");
    assert!(h2.alive().await);
    proxy.stop().await;
}

/// A client that floods PINGs and never reads: the server stops reading
/// it once its answers back up (it holds at most ~256 KiB of them), other
/// clients are served meanwhile, and when the client reads again every
/// PING has its ACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_is_not_read_is_not_buffered() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let h2 = RawH2::open(proxy.addrs()[0], &[]).await;
    const PINGS: usize = 200_000;
    let (mut reader, mut writer) = h2.stream.into_split();
    let flood = tokio::spawn(async move {
        let ping = frame(PING, 0, 0, b"floodme!");
        let batch: Vec<u8> = ping
            .iter()
            .copied()
            .cycle()
            .take(ping.len() * 1000)
            .collect();
        for _ in 0..PINGS / 1000 {
            tokio::io::AsyncWriteExt::write_all(&mut writer, &batch)
                .await
                .unwrap();
        }
        writer
    });
    others_are_served(&proxy).await;
    // Now read: SETTINGS, SETTINGS ACK, WINDOW_UPDATE, then the ACKs.
    let mut acks = 0usize;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let read_all = async {
        while acks < PINGS {
            let n = tokio::io::AsyncReadExt::read(&mut reader, &mut chunk)
                .await
                .unwrap();
            assert!(n > 0, "closed after {acks} ACKs");
            buf.extend_from_slice(&chunk[..n]);
            for f in take_frames(&mut buf) {
                if f.kind == PING {
                    assert_eq!(f.payload, b"floodme!");
                    acks += 1;
                }
            }
        }
    };
    tokio::time::timeout(DEADLINE, read_all)
        .await
        .expect("every PING answered");
    flood.await.unwrap();
    proxy.stop().await;
}

/// A client that sets its window to 0 and never opens it: the response
/// waits `idle_timeout` (here 1 s), then its stream is reset (CANCEL) and
/// the upstream request let go.
#[tokio::test]
async fn a_zero_window_stall_is_reset() {
    let up = TestUpstream::start("up").await;
    let config = split_config(&[("p", 1, &[up.addr])], "[proxy]\nidle_timeout = \"1s\"\n");
    let proxy = start_proxy(&config).await;
    // SETTINGS_INITIAL_WINDOW_SIZE = 0.
    let mut h2 = RawH2::open(proxy.addrs()[0], &[(0x4, 0)]).await;
    h2.send(&get(1, "/download?mib=1")).await;
    let head = h2.until(|f| f.stream == 1).await.expect("an answer");
    assert_eq!(head.kind, HEADERS, "no DATA before the window opens");
    let reset = h2
        .until(|f| f.stream == 1 && f.kind != HEADERS)
        .await
        .expect("a reset");
    assert_eq!((reset.kind, reset.code()), (RST_STREAM, Some(CANCEL)));
    wait_until("the upstream request let go", || async {
        up.in_flight() == 0
    })
    .await;
    proxy.stop().await;
}

/// Past 128 open streams, a new one is refused (REFUSED_STREAM) and the
/// others go on; one ending makes room again.
#[tokio::test]
async fn streams_past_the_limit_are_refused() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let mut h2 = RawH2::open(proxy.addrs()[0], &[]).await;
    // 128 uploads whose bodies never end: their streams stay open.
    let mut opens = Vec::new();
    for i in 0..129u32 {
        opens.extend(frame(
            HEADERS,
            END_HEADERS,
            2 * i + 1,
            &request_block("POST", "/upload", &[]),
        ));
    }
    h2.send(&opens).await;
    let refused = h2
        .until(|f| f.kind == RST_STREAM)
        .await
        .expect("a stream refused");
    assert_eq!(
        (refused.stream, refused.code()),
        (257, Some(REFUSED_STREAM))
    );
    // Stream 1's body ends: its answer comes, and a new stream is taken.
    h2.send(&frame(DATA, END_STREAM, 1, b"abc")).await;
    let answer = h2.until(|f| f.kind == DATA && f.stream == 1).await;
    assert!(answer.is_some_and(|f| f.payload.starts_with(b"3 ")));
    h2.send(&get(259, "/")).await;
    let answer = h2.until(|f| f.kind == HEADERS && f.stream == 259).await;
    assert!(answer.is_some());
    proxy.stop().await;
}

/// `http2_only`: a plain listener takes HTTP/2 with prior knowledge and
/// answers anything else with GOAWAY PROTOCOL_ERROR; a TLS one offers ALPN
/// `h2` alone, so a client offering only `http/1.1` fails its handshake.
#[tokio::test]
async fn an_http2_only_listener_takes_nothing_else() {
    let up = TestUpstream::start("up").await;
    let (ca, _certs, tls_listener) = crate::tls::app_test_listener(&free_port().to_string());
    let listeners = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nhttp2_only = true\n{tls_listener}http2_only = true\n"
    );
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], &listeners)).await;
    let plain = proxy.addrs()[0];
    let mut http1 = tokio::net::TcpStream::connect(plain).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut http1, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        DEADLINE,
        tokio::io::AsyncReadExt::read_to_end(&mut http1, &mut answer),
    )
    .await
    .expect("closed")
    .unwrap();
    assert_eq!(answer.get(3), Some(&GOAWAY), "{answer:?}");
    assert_eq!(
        &answer[answer.len() - 4..],
        PROTOCOL_ERROR.to_be_bytes(),
        "{answer:?}"
    );
    let url = format!("http://{plain}/");
    let resp = http2_client().get(url.parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);

    let tls = proxy.addrs()[1];
    let refused = crate::tls::try_tls_connect_alpn(tls, &ca, "app.test", &[b"http/1.1"]).await;
    assert!(refused.is_err(), "an http/1.1-only client was taken");
    let h2 = crate::tls::tls_connect_alpn(tls, &ca, "app.test", &[b"h2", b"http/1.1"]).await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = h2::client::handshake(h2).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::get("https://app.test/").body(()).unwrap();
    let (response, _) = sender.send_request(request, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
    proxy.stop().await;
}

/// A graceful end (here: `idle_timeout`) is two GOAWAYs apart by a PING
/// (RFC 9113 §6.8): the first names the largest stream id, so a request
/// the client sends before it sees that GOAWAY is still served; once the
/// PING's ACK is back, the final one names the last stream taken.
#[tokio::test]
async fn a_graceful_end_serves_what_the_client_sent_before_it_knew() {
    let up = TestUpstream::start("up").await;
    let config = split_config(&[("p", 1, &[up.addr])], "[proxy]\nidle_timeout = \"1s\"\n");
    let proxy = start_proxy(&config).await;
    let mut h2 = RawH2::open(proxy.addrs()[0], &[]).await;
    let first = h2.until(|f| f.kind == GOAWAY).await.expect("a GOAWAY");
    assert_eq!(first.payload[..4], 0x7fff_ffffu32.to_be_bytes());
    assert_eq!(first.code(), Some(0));
    let ping = h2
        .until(|f| f.kind == PING && f.flags & ACK == 0)
        .await
        .expect("a PING after it");
    // A request sent before the client acts on the GOAWAY.
    h2.send(&get(1, "/")).await;
    h2.send(&frame(PING, ACK, 0, &ping.payload)).await;
    let mut answered = false;
    let mut last = None;
    while let Some(f) = h2.next().await {
        if f.kind == DATA && f.stream == 1 && f.payload == b"up\n" {
            answered = true;
        }
        if f.kind == GOAWAY {
            last = Some(u32::from_be_bytes([
                f.payload[0],
                f.payload[1],
                f.payload[2],
                f.payload[3],
            ]));
        }
    }
    assert!(answered, "the request sent before the GOAWAY was served");
    assert_eq!(last, Some(1), "the final GOAWAY names stream 1");
    proxy.stop().await;
}

/// What a plain HTTP/1.1 request to `addr` gets: the first bytes back.
async fn http1_answer(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        DEADLINE,
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut answer),
    )
    .await
    .expect("closed")
    .unwrap();
    answer
}

/// A reload turns `http2_only` on and off for a kept listener, plain and
/// TLS, for new connections: on, HTTP/1.1 gets GOAWAY and a TLS client
/// offering only `http/1.1` fails its handshake; off, both are served;
/// HTTP/2 is served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_http2_only_on_and_off() {
    let up = TestUpstream::start("up").await;
    let plain = free_port();
    let (ca, _certs, tls_listener) = crate::tls::app_test_listener(&free_port().to_string());
    let config = |only: bool| {
        let line = if only { "http2_only = true\n" } else { "" };
        split_config(
            &[("p", 1, &[up.addr])],
            &format!("[[listener]]\nbind = \"{plain}\"\n{line}{tls_listener}{line}"),
        )
    };
    let (proxy, path) = start_proxy_from_file(&config(true)).await;
    let (plain, tls) = (proxy.addrs()[0], proxy.addrs()[1]);
    let reload = |text: String| {
        let (path, url) = (path.clone(), proxy.admin_url("/api/v1/reload"));
        let state = proxy.state_dir.path().to_path_buf();
        async move {
            std::fs::write(&path, complete_config(&text, &state)).unwrap();
            let (s, v) = admin_call("POST", &url, None, None).await;
            assert_eq!(s, 200, "{v}");
        }
    };
    let http1_only = [&b"http/1.1"[..]];
    for (round, only) in [true, false, true].into_iter().enumerate() {
        if round > 0 {
            reload(config(only)).await;
        }
        let answer = http1_answer(plain).await;
        let handshake = crate::tls::try_tls_connect_alpn(tls, &ca, "app.test", &http1_only).await;
        if only {
            assert_eq!(answer.get(3), Some(&GOAWAY), "{answer:?}");
            assert!(handshake.is_err(), "an http/1.1-only client was taken");
        } else {
            assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
            assert!(handshake.is_ok(), "an http/1.1 client was refused");
        }
        let url = format!("http://{plain}/");
        let resp = http2_client().get(url.parse().unwrap()).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    proxy.stop().await;
}
