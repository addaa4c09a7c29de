//! Property tests that throw arbitrary input at every parser a user, peer
//! or file can reach — the config reader, rollout request bodies, the
//! sticky-cookie opener, the Host check, header rewriting, the direct
//! HTTP/1.1 path's request and response heads, and the HTTP/2 server's
//! HPACK, Huffman and frame decoders — and assert they answer with an error, never a panic, and that what
//! they accept keeps their rules. Bounded for CI (`PROPTEST_CASES`, 256 by
//! default, ~10 s in all); a longer run: `PROPTEST_CASES=200000 cargo test
//! --lib fuzz::` (docs/conformance.md). A case a run finds goes in as a
//! regression test beside the code it broke.

// Test code only (its `mod` line is `#[cfg(test)]` too): its unwrap()s
// and expect()s never reach the proxy.
#![cfg(test)]

use proptest::prelude::*;

use crate::balance::sticky::StickyKey;
use crate::config::{Config, parse_spec};
use crate::proxy::wire::headers::{forwarded_for_value, prepare_request, valid_host};
use crate::proxy::wire::{request, response};

/// TOML-shaped text: real section and key names with arbitrary values,
/// and some noise, so the reader gets far past the syntax check.
fn toml_like() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        "bind",
        "name",
        "split",
        "upstreams",
        "addr",
        "weight",
        "health",
        "path",
        "interval",
        "timeout",
        "hosts",
        "path_prefix",
        "sticky",
        "mirror",
        "pool",
        "percent",
        "headers",
        "cookies",
        "query",
        "regex",
        "present",
        "tls",
        "protocol",
        "dns_refresh",
        "rollout",
        "steps",
        "max_body",
        "compare",
        "token_file",
        "dir",
        "workers",
        "retries",
    ];
    let value = prop_oneof![
        Just("\"127.0.0.1:1\"".to_string()),
        Just("\"app.internal:80\"".to_string()),
        Just("true".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("[1, 2, 100]".to_string()),
        Just("\"30s\"".to_string()),
        Just("{ regex = \"(\" }".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "\"[ -~]{0,12}\"",
        "[ -~]{0,8}",
    ];
    let line = (key, value).prop_map(|(k, v)| format!("{k} = {v}"));
    let section = prop_oneof![
        Just("[[listener]]"),
        Just("[[route]]"),
        Just("[pool.a]"),
        Just("[pool.b]"),
        Just("[admin]"),
        Just("[state]"),
        Just("[proxy]"),
    ];
    proptest::collection::vec((section, proptest::collection::vec(line, 0..5)), 0..6).prop_map(
        |sections| {
            sections
                .into_iter()
                .map(|(s, lines)| format!("{s}\n{}\n", lines.join("\n")))
                .collect()
        },
    )
}

proptest! {
    #[test]
    fn fuzz_config_reader_never_panics(text in prop_oneof![toml_like(), "\\PC{0,300}"]) {
        match Config::parse("f.toml", &text) {
            Ok(_) => {}
            Err(e) => {
                prop_assert!(!e.problems.is_empty());
                for p in &e.problems {
                    prop_assert!(p.starts_with("f.toml:"), "{p}");
                }
            }
        }
    }

    #[test]
    fn fuzz_rollout_bodies_never_panic(body in json_value()) {
        if let Err(e) = parse_spec(&body, None) {
            prop_assert!(!e.field.is_empty(), "{e:?}");
        }
    }

    #[test]
    fn fuzz_sticky_cookies_never_open_unless_sealed(value in "\\PC{0,120}", now in any::<u64>()) {
        let key = StickyKey::new([3; 32]);
        prop_assert!(key.open(&value, now).is_none());
    }

    #[test]
    fn fuzz_accepted_hosts_are_authorities_without_userinfo(value in "\\PC{0,40}") {
        if valid_host(&value) {
            prop_assert!(!value.contains('@'));
            prop_assert!(value.parse::<http::uri::Authority>().is_ok(), "{value}");
        }
    }

    #[test]
    fn fuzz_request_rewriting_leaves_no_hop_by_hop_header(
        headers in proptest::collection::vec(("[a-zA-Z-]{1,16}", "[ -~]{0,24}"), 0..12),
    ) {
        let mut map = http::HeaderMap::new();
        for (k, v) in &headers {
            if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(v)) {
                map.append(k, v);
            }
        }
        let uri: http::Uri = "/".parse().unwrap();
        let ip = forwarded_for_value("10.0.0.1".parse().unwrap());
        prepare_request(&mut map, &uri, http::Version::HTTP_11, &ip, "http", false);
        for name in ["connection", "keep-alive", "proxy-connection", "trailer", "transfer-encoding", "upgrade", "proxy-authorization", "http2-settings"] {
            prop_assert!(!map.contains_key(name), "{name} left in {map:?}");
        }
        prop_assert!(map.get("te").is_none_or(|v| v == "trailers"));
    }
}

/// Arbitrary JSON, nested a little, with the rollout body's field names.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,10}".prop_map(Value::from),
        Just(Value::from("green")),
        Just(Value::from("30s")),
        Just(Value::from("canary-10-5m")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let field = prop_oneof![
            "to",
            "steps",
            "preset",
            "interval",
            "analysis",
            "max_error_rate",
            "min_requests",
            "check_every",
            "approval",
            "webhooks",
            "pre",
            "timeout",
            "max_p99_ratio",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(field, inner, 0..6).prop_map(|m| {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

proptest! {
    /// Arbitrary bytes as a request: the direct path never panics, and
    /// what it takes it forwards with no hop-by-hop header and a head it
    /// can read back (`tests/it/direct.rs` compares it with hyper's).
    #[test]
    fn fuzz_direct_request_heads(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "GET /[ -~]{0,20} HTTP/1.1\r\nHost: [ -~]{0,12}\r\n([A-Za-z-]{1,12}: [ -~]{0,16}\r\n){0,4}\r\n".prop_map(String::into_bytes),
    ]) {
        let fwd = request::Forwarding { client_ip: b"10.0.0.1", proto: b"http", request_id: b"x-request-id", trace: true };
        let mut upstream = Vec::new();
        if let request::Verdict::Take(head) = request::classify(&bytes, &fwd, &mut upstream) {
            prop_assert!(head.len + head.body as usize <= bytes.len());
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut headers);
            prop_assert!(matches!(req.parse(&upstream), Ok(httparse::Status::Complete(_))));
            for h in req.headers.iter() {
                for name in ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "proxy-authorization"] {
                    prop_assert!(!h.name.eq_ignore_ascii_case(name), "{name} forwarded");
                }
            }
        }
    }

    /// Arbitrary bytes as an upstream's response: never a panic, and a
    /// forwarded head is one the client can read, framed once. (Found:
    /// `HTTP/1.0 000`, forwarded as an unreadable `HTTP/1.1 0`; now 502.)
    #[test]
    fn fuzz_direct_response_heads(bytes in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "HTTP/1.[01] [0-9]{3} [ -~]{0,8}\r\n([A-Za-z-]{1,18}: [ -~]{0,12}\r\n){0,5}\r\n".prop_map(String::into_bytes),
    ], head_request in any::<bool>()) {
        let side = response::ClientSide { head_request, close: false, set_cookie: None, request_id: None, date: b"Sat, 05 Dec 2026 12:00:00 GMT" };
        let mut client = Vec::new();
        if let response::Parsed::Ready(_) = response::parse(&bytes, &side, &mut client) {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut res = httparse::Response::new(&mut headers);
            prop_assert!(matches!(res.parse(&client), Ok(httparse::Status::Complete(_))));
            let framing = res.headers.iter().filter(|h| {
                h.name.eq_ignore_ascii_case("content-length") || h.name.eq_ignore_ascii_case("transfer-encoding")
            }).count();
            prop_assert!(framing <= 1, "{}", String::from_utf8_lossy(&client));
        }
    }
}

/// HTTP/2's decoders (cutover's own HTTP/2 server): arbitrary header
/// blocks, Huffman strings, SETTINGS payloads and frame heads.
mod http2 {
    use proptest::prelude::*;

    use crate::proxy::wire::h2::hpack::{self, Decoder};
    use crate::proxy::wire::h2::request::HeadReader;
    use crate::proxy::wire::h2::{self as wire, FrameHead, huffman};

    /// Header-block-shaped bytes: representations with their prefixes,
    /// small indexes (static and dynamic), short strings, some Huffman.
    fn block_like() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            (1u8..70).prop_map(|i| vec![0x80 | i]),
            (
                0u8..3,
                0u8..16,
                proptest::collection::vec(any::<u8>(), 0..12)
            )
                .prop_map(|(kind, index, value)| {
                    let mut p = vec![[0x00, 0x10, 0x40][kind as usize] | index];
                    if index == 0 {
                        p.extend([3, b'x', b'-', b'a']);
                    }
                    p.push(value.len() as u8);
                    p.extend(value);
                    p
                }),
            proptest::collection::vec(any::<u8>(), 1..6),
            Just(vec![0x3f, 0xe1, 0x1f]),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|p| p.concat())
    }

    proptest! {
        /// Arbitrary blocks, decoded one after another on one table, each
        /// read as a request: never a panic, never a table past its size.
        #[test]
        fn fuzz_hpack_blocks(blocks in proptest::collection::vec(
            prop_oneof![block_like(), proptest::collection::vec(any::<u8>(), 0..64)], 1..6)
        ) {
            let mut decoder = Decoder::default();
            for block in blocks {
                let mut reader = HeadReader::new(1024, false);
                let decoded = decoder.decode(&block, |f| reader.field(f));
                prop_assert!(decoder.table_size() <= hpack::TABLE_SIZE);
                if decoded.is_err() {
                    // A connection error: nothing more is read.
                    break;
                }
                let _ = reader.request();
            }
        }

        /// What the response encoder writes, the decoder reads back.
        #[test]
        fn fuzz_hpack_round_trip(
            status in 100u16..1000,
            fields in proptest::collection::vec(("[a-z-]{1,12}", proptest::collection::vec(any::<u8>(), 0..300), any::<bool>()), 0..8),
        ) {
            let mut block = Vec::new();
            hpack::encode_status(&mut block, status);
            for (name, value, sensitive) in &fields {
                hpack::encode_field(&mut block, name.as_bytes(), value, *sensitive);
            }
            let mut got = Vec::new();
            Decoder::default().decode(&block, |f| got.push((f.name.to_vec(), f.value.to_vec(), f.sensitive))).unwrap();
            prop_assert_eq!(got[0].1.clone(), status.to_string().into_bytes());
            for ((name, value, sensitive), (n, v, s)) in fields.iter().zip(&got[1..]) {
                prop_assert_eq!(name.as_bytes(), &n[..]);
                prop_assert_eq!(value, v);
                prop_assert_eq!(*sensitive, *s);
            }
        }

        /// Huffman: any bytes round-trip; arbitrary codes never panic.
        #[test]
        fn fuzz_huffman(plain in proptest::collection::vec(any::<u8>(), 0..100), noise in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut coded = Vec::new();
            huffman::encode(&plain, &mut coded);
            prop_assert_eq!(coded.len(), huffman::encoded_len(&plain));
            let mut back = Vec::new();
            prop_assert!(huffman::decode(&coded, &mut back).is_ok());
            prop_assert_eq!(back, plain);
            let _ = huffman::decode(&noise, &mut Vec::new());
        }

        /// Frame payload readers: never a panic on any payload.
        #[test]
        fn fuzz_frame_payloads(head in proptest::array::uniform9(any::<u8>()), payload in proptest::collection::vec(any::<u8>(), 0..40)) {
            let head = FrameHead::parse(&head);
            let _ = wire::parse_settings(&payload);
            let _ = wire::window_increment(&head, &payload);
            if let Ok(range) = wire::unpad(&head, &payload) {
                prop_assert!(range.end <= payload.len());
            }
            if let Ok((range, _)) = wire::headers_fragment(&head, &payload) {
                prop_assert!(range.start <= range.end && range.end <= payload.len());
            }
        }
    }
}
