//! HTTP/2 frame-level errors (RFC 9113 §4.2, §5.4.1, §6, HPACK RFC 7541):
//! raw frames in, and the GOAWAY error code out. cutover's own HTTP/2
//! server answers with the code the RFC names; with `direct_http2 =
//! false` the `h2` crate decides, and docs/conformance.md records where
//! it differs.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

use crate::support::h2_raw::{
    COMPRESSION_ERROR, END_HEADERS, END_STREAM, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, GOAWAY,
    HEADERS, PING, PREFACE, PROTOCOL_ERROR, RST_STREAM, SETTINGS, WINDOW_UPDATE, frame,
    take_frames,
};

/// HPACK for `GET http://a/`: indexed :method GET, :scheme http, :path /,
/// then :authority "a" as a literal with incremental indexing.
const GET_BLOCK: &[u8] = &[0x82, 0x86, 0x84, 0x41, 0x01, b'a'];

/// What the server did after `bytes`.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// A GOAWAY with this error code.
    GoAway(u32),
    /// Closed without a GOAWAY.
    ClosedSilently,
    /// Answered the PING sent after `bytes`: the connection lives on.
    KeptOpen,
    /// Answered something that is not HTTP/2.
    NotHttp2(String),
}

const SENTINEL: &[u8; 8] = b"sentinel";

async fn send(proxy: &TestProxy, bytes: &[u8]) -> Verdict {
    let s = TcpStream::connect(proxy.addrs()[0]).await.unwrap();
    send_on(s, bytes).await
}

async fn send_on<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, bytes: &[u8]) -> Verdict {
    s.write_all(bytes).await.unwrap();
    // Whether the connection survived: a live one answers this.
    let _ = s.write_all(&frame(PING, 0, 0, SENTINEL)).await;
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if buf.starts_with(b"HTTP/") {
                let _ = s.read_to_end(&mut buf).await;
                return Verdict::NotHttp2(String::from_utf8_lossy(&buf).into_owned());
            }
            // Frames so far: find a GOAWAY.
            for f in take_frames(&mut buf) {
                if let Some(code) = f.code().filter(|_| f.kind == GOAWAY) {
                    return Verdict::GoAway(code);
                }
                if f.kind == PING && f.payload == SENTINEL {
                    return Verdict::KeptOpen;
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return Verdict::ClosedSilently,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the server neither sent GOAWAY nor closed")
}

fn opened(mut rest: Vec<u8>) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.append(&mut rest);
    out
}

/// The two HTTP/2 servers: cutover's own (the default), and hyper's.
const SERVERS: [(&str, &str); 2] = [("own", ""), ("hyper", "[proxy]\ndirect_http2 = false\n")];

/// Frames whose length the RFC fixes (§6.3, §6.4, §6.5, §6.7, §6.9) sent
/// with another length: the RFC names FRAME_SIZE_ERROR, which cutover's
/// server sends; `h2` (0.4.21) sends PROTOCOL_ERROR. Either way the
/// connection ends with a GOAWAY and nothing reaches an upstream. If `h2`
/// starts sending 6, it was fixed: update docs/conformance.md.
#[tokio::test]
async fn frames_of_the_wrong_length_end_the_connection() {
    for (server, config) in SERVERS {
        frames_of_the_wrong_length(server, config).await;
    }
}

async fn frames_of_the_wrong_length(server: &str, config: &str) {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], config)).await;
    let open_stream = frame(HEADERS, END_HEADERS, 1, GET_BLOCK);
    let cases = [
        ("SETTINGS of 5 bytes", frame(SETTINGS, 0, 0, &[0; 5])),
        ("PING of 7 bytes", frame(PING, 0, 0, &[0; 7])),
        (
            "RST_STREAM of 3 bytes",
            [open_stream, frame(RST_STREAM, 0, 1, &[0; 3])].concat(),
        ),
        (
            "WINDOW_UPDATE of 3 bytes",
            frame(WINDOW_UPDATE, 0, 0, &[0; 3]),
        ),
    ];
    for (what, bytes) in cases {
        let verdict = send(&proxy, &opened(bytes)).await;
        let expected = match server {
            "own" => FRAME_SIZE_ERROR,
            _ => H2_SENDS,
        };
        assert_eq!(verdict, Verdict::GoAway(expected), "{server}: {what}");
    }
    assert_eq!(up.hits(), 0);
    proxy.stop().await;
}

/// What `h2` 0.4.21 sends for every malformed frame it decodes.
const H2_SENDS: u32 = PROTOCOL_ERROR;

/// SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1 (RFC 9113 §6.5.2:
/// FLOW_CONTROL_ERROR), and HPACK errors — an index past both tables, a
/// table-size update above the advertised 4096 (RFC 7541 §4.2, §6.3; RFC
/// 9113 §4.3: COMPRESSION_ERROR): cutover's server sends those codes,
/// `h2` answers PROTOCOL_ERROR to all three.
#[tokio::test]
async fn bad_settings_and_header_blocks_end_the_connection() {
    for (server, config) in SERVERS {
        bad_settings_and_header_blocks(server, config).await;
    }
}

async fn bad_settings_and_header_blocks(server: &str, config: &str) {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], config)).await;
    let cases = [
        (
            "INITIAL_WINDOW_SIZE 2^31",
            frame(SETTINGS, 0, 0, &[0, 4, 0x80, 0, 0, 0]),
            FLOW_CONTROL_ERROR,
        ),
        (
            "HPACK index 62 with an empty dynamic table",
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0xbe]),
            COMPRESSION_ERROR,
        ),
        (
            "HPACK table size update to 8192",
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &[&[0x3f, 0xe1, 0x3f][..], GET_BLOCK].concat(),
            ),
            COMPRESSION_ERROR,
        ),
    ];
    for (what, bytes, rfc) in cases {
        let verdict = send(&proxy, &opened(bytes)).await;
        let expected = match server {
            "own" => rfc,
            _ => H2_SENDS,
        };
        assert_eq!(verdict, Verdict::GoAway(expected), "{server}: {what}");
    }
    assert_eq!(up.hits(), 0);
    proxy.stop().await;
}

/// A preface that starts like HTTP/2's and then differs gets a GOAWAY
/// (PROTOCOL_ERROR) from cutover itself, over h2c and over TLS with ALPN
/// h2 — `h2` would close without one. A preface followed by something
/// other than SETTINGS is PROTOCOL_ERROR (RFC 9113 §3.4) on cutover's
/// server; `h2` accepts it (recorded here so a change is noticed).
#[tokio::test]
async fn a_bad_preface_gets_a_goaway() {
    for (server, config) in SERVERS {
        a_bad_preface(server, config).await;
    }
}

async fn a_bad_preface(server: &str, config: &str) {
    let up = TestUpstream::start("up").await;
    let (ca, _certs, tls_listener) = crate::tls::app_test_listener(&free_port().to_string());
    let config = format!("{config}[[listener]]\nbind = \"127.0.0.1:0\"\n{tls_listener}");
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], &config)).await;
    let bad = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n";
    assert_eq!(send(&proxy, bad).await, Verdict::GoAway(PROTOCOL_ERROR));
    let tls = crate::tls::tls_connect_alpn(proxy.addrs()[1], &ca, "app.test", &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(send_on(tls, bad).await, Verdict::GoAway(PROTOCOL_ERROR));
    // A good preface over TLS still serves.
    let tls = crate::tls::tls_connect_alpn(proxy.addrs()[1], &ca, "app.test", &[b"h2"]).await;
    assert_eq!(send_on(tls, &opened(Vec::new())).await, Verdict::KeptOpen);
    // Not HTTP/2 at all: an HTTP/1.1 request line with version 2.0.
    let http1 = b"PRI * HTTP/2.0\r\nhost: a\r\n\r\n";
    assert!(
        matches!(send(&proxy, http1).await, Verdict::NotHttp2(ref a) if a.starts_with("HTTP/1.1 400") || a.starts_with("HTTP/1.1 505")),
    );
    let no_settings = [PREFACE.to_vec(), frame(PING, 0, 0, &[0; 8])].concat();
    let expected = match server {
        "own" => Verdict::GoAway(PROTOCOL_ERROR),
        _ => Verdict::KeptOpen,
    };
    assert_eq!(send(&proxy, &no_settings).await, expected, "{server}");
    assert_eq!(up.hits(), 0);
    proxy.stop().await;
}
