//! cutover's HTTP/2 server against the `h2` crate's, on the same bytes:
//! generated requests (methods, paths, fields odd and plain, bodies with
//! and without a right Content-Length, trailers), HPACK-encoded every way
//! RFC 7541 allows (indexed, literal with or without indexing, never
//! indexed, Huffman or not, the dynamic table reused across requests),
//! header blocks split over CONTINUATION frames, padding, priority, and the
//! byte stream written in arbitrary pieces. Whatever request cutover
//! forwards, `h2` reads with the same method, path, fields and body;
//! whatever one refuses, the other refuses too — but for the one
//! difference docs/conformance.md gives (a field value with leading or
//! trailing whitespace, malformed by RFC 9113 §8.2.1, which `h2` takes).

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::h2_raw::*;
use crate::support::*;
use cutover::proxy::wire::h2::huffman;

/// What a server made of one request: its method, path, fields (by name,
/// values in order) and body; `None` if it refused it.
type Seen = Option<Read>;
type Read = (String, String, BTreeMap<String, Vec<Vec<u8>>>, Vec<u8>);

#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    fields: Vec<(String, Vec<u8>)>,
    /// DATA frames (none: the HEADERS frame ends the stream).
    body: Vec<Vec<u8>>,
    /// Content-Length: none, the body's length, or one off.
    length: u8,
    trailers: bool,
}

impl Req {
    /// Whether cutover refuses what `h2` reads, as docs/conformance.md
    /// says it does: a field value with leading or trailing whitespace
    /// (malformed by RFC 9113 §8.2.1; `h2` takes it), and any malformed
    /// field — a pseudo-header out of place, a connection-specific field,
    /// `TE` other than `trailers` — in a HEADERS frame that ends inside a
    /// field, CONTINUATION bringing the rest (`h2`'s `load_hpack` returns
    /// on the incomplete field before it looks at its `malformed` flag, a
    /// local: the field is dropped and the request read).
    fn documented_difference(&self) -> bool {
        self.fields.iter().any(|(name, v)| {
            matches!(v.first(), Some(b' ' | b'\t'))
                || matches!(v.last(), Some(b' ' | b'\t'))
                || matches!(
                    name.as_str(),
                    "connection"
                        | "keep-alive"
                        | "proxy-connection"
                        | "transfer-encoding"
                        | "upgrade"
                )
                || (name == "te" && v != b"trailers")
                || name.starts_with(':')
        })
    }
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE"), Just("OPTIONS")]
            .prop_map(str::to_string),
        1 => "[A-Z]{1,8}",
        1 => Just("G T".to_string()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "/[a-z0-9/._~%=&?-]{0,20}",
        1 => Just(String::new()),
        1 => "/[ -~]{0,6}",
        1 => Just("*".to_string()),
    ]
}

fn field() -> impl Strategy<Value = (String, Vec<u8>)> {
    let name = prop_oneof![
        6 => prop_oneof![
            Just("accept"), Just("x-a"), Just("x-b"), Just("cookie"), Just("user-agent"),
            Just("content-type"), Just("accept-encoding"), Just("cache-control"),
        ].prop_map(str::to_string),
        1 => prop_oneof![
            Just("X-Upper"), Just("connection"), Just("te"), Just("upgrade"),
            Just(":path"), Just(":status"), Just(":other"), Just("bad name"),
            Just("keep-alive"), Just("transfer-encoding"),
        ].prop_map(str::to_string),
    ];
    let value = prop_oneof![
        8 => "[a-zA-Z0-9=;,/.*-]{0,12}".prop_map(String::into_bytes),
        1 => "[ -~]{0,10}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..6),
        1 => Just(b"trailers".to_vec()),
    ];
    (name, value)
}

fn request() -> impl Strategy<Value = Req> {
    (
        method(),
        path(),
        proptest::collection::vec(field(), 0..5),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..3),
        prop_oneof![3 => Just(0u8), 3 => Just(1u8), 1 => Just(2u8)],
        prop::bool::weighted(0.1),
    )
        .prop_map(|(method, path, fields, body, length, trailers)| Req {
            method,
            path,
            fields,
            body,
            length,
            trailers,
        })
}

/// How each field, header block and frame is put into bytes.
#[derive(Debug, Clone)]
struct Wire {
    /// Per field: representation (0..3) and Huffman for name, value.
    choices: Vec<(u8, bool, bool)>,
    /// Where header blocks split into CONTINUATION (fractions of 256).
    splits: Vec<u8>,
    padding: Vec<u8>,
    priority: Vec<bool>,
    /// The sizes of the pieces the bytes are written in.
    pieces: Vec<usize>,
}

fn wire() -> impl Strategy<Value = Wire> {
    (
        proptest::collection::vec((0u8..4, any::<bool>(), any::<bool>()), 64),
        proptest::collection::vec(any::<u8>(), 8),
        proptest::collection::vec(prop_oneof![4 => Just(0u8), 1 => 1u8..12], 16),
        proptest::collection::vec(prop::bool::weighted(0.2), 8),
        proptest::collection::vec(1usize..400, 1..12),
    )
        .prop_map(|(choices, splits, padding, priority, pieces)| Wire {
            choices,
            splits,
            padding,
            priority,
            pieces,
        })
}

/// A test-side HPACK encoder: every representation, a model of the
/// dynamic table so that repeated fields go out as indexes.
struct Encoder {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
}

fn static_name_index(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b"accept" => 19,
        b"cookie" => 32,
        b"user-agent" => 58,
        _ => return None,
    })
}

impl Encoder {
    fn string(out: &mut Vec<u8>, bytes: &[u8], huff: bool) {
        if huff {
            let mut coded = Vec::new();
            huffman::encode(bytes, &mut coded);
            let at = out.len();
            length(out, coded.len());
            out[at] |= 0x80;
            out.extend(coded);
        } else {
            length(out, bytes.len());
            out.extend_from_slice(bytes);
        }
    }

    fn integer(out: &mut Vec<u8>, flags: u8, prefix: u8, value: usize) {
        let max = (1usize << prefix) - 1;
        if value < max {
            out.push(flags | value as u8);
            return;
        }
        out.push(flags | max as u8);
        let mut rest = value - max;
        while rest >= 128 {
            out.push((rest as u8 & 0x7f) | 0x80);
            rest >>= 7;
        }
        out.push(rest as u8);
    }

    fn field(&mut self, out: &mut Vec<u8>, name: &[u8], value: &[u8], how: (u8, bool, bool)) {
        if let Some(i) = self.table.iter().position(|(n, v)| n == name && v == value) {
            Self::integer(out, 0x80, 7, 62 + i);
            return;
        }
        let (flags, prefix) = match how.0 {
            0 => (0x00, 4),
            1 => (0x10, 4),
            _ => (0x40, 6),
        };
        match static_name_index(name) {
            Some(i) if how.1 => Self::integer(out, flags, prefix, i),
            _ => {
                out.push(flags);
                Self::string(out, name, how.1);
            }
        }
        Self::string(out, value, how.2);
        if flags == 0x40 {
            let size = name.len() + value.len() + 32;
            self.table.push_front((name.to_vec(), value.to_vec()));
            self.size += size;
            while self.size > 4096 {
                let (n, v) = self.table.pop_back().unwrap();
                self.size -= n.len() + v.len() + 32;
            }
        }
    }
}

/// The bytes of a connection carrying `reqs` (stream 1, 3, …), each tagged
/// `x-case: N`.
fn connection_bytes(reqs: &[Req], w: &Wire) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    let mut encoder = Encoder {
        table: VecDeque::new(),
        size: 0,
    };
    let mut choice = w.choices.iter().cycle();
    for (n, req) in reqs.iter().enumerate() {
        let stream = 2 * n as u32 + 1;
        let mut block = Vec::new();
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b":method".to_vec(), req.method.clone().into_bytes()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (b":authority".to_vec(), b"a".to_vec()),
            (b":path".to_vec(), req.path.clone().into_bytes()),
            (b"x-case".to_vec(), n.to_string().into_bytes()),
        ];
        let body_len: usize = req.body.iter().map(Vec::len).sum();
        match req.length {
            1 => fields.push((
                b"content-length".to_vec(),
                body_len.to_string().into_bytes(),
            )),
            2 => fields.push((
                b"content-length".to_vec(),
                (body_len + 1).to_string().into_bytes(),
            )),
            _ => {}
        }
        fields.extend(
            req.fields
                .iter()
                .map(|(k, v)| (k.clone().into_bytes(), v.clone())),
        );
        for (name, value) in &fields {
            encoder.field(&mut block, name, value, *choice.next().unwrap());
        }
        let ends = req.body.is_empty() && !req.trailers;
        headers_frames(&mut out, stream, &block, ends, w, n);
        for (i, chunk) in req.body.iter().enumerate() {
            let last = i + 1 == req.body.len() && !req.trailers;
            let pad = w.padding[(n + i) % w.padding.len()];
            let flags = if last { END_STREAM } else { 0 };
            if pad > 0 {
                let mut payload = vec![pad];
                payload.extend_from_slice(chunk);
                payload.extend(std::iter::repeat_n(0, pad as usize));
                out.extend(frame(DATA, flags | 0x8, stream, &payload));
            } else {
                out.extend(frame(DATA, flags, stream, chunk));
            }
        }
        if req.trailers {
            let mut block = Vec::new();
            encoder.field(&mut block, b"x-trailer", b"t", (0, false, false));
            headers_frames(&mut out, stream, &block, true, w, n + 1);
        }
    }
    out
}

/// A header block as HEADERS (padded, with priority, as `w` says) and
/// CONTINUATION frames.
fn headers_frames(out: &mut Vec<u8>, stream: u32, block: &[u8], ends: bool, w: &Wire, n: usize) {
    let split = block.len() * w.splits[n % w.splits.len()] as usize / 256;
    let (first, rest) = block.split_at(split.max(1).min(block.len()));
    let mut flags = if ends { END_STREAM } else { 0 };
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    let mut payload = Vec::new();
    let pad = w.padding[n % w.padding.len()];
    if pad > 0 {
        flags |= 0x8;
        payload.push(pad);
    }
    if w.priority[n % w.priority.len()] {
        flags |= 0x20;
        payload.extend_from_slice(&0u32.to_be_bytes());
        payload.push(15);
    }
    payload.extend_from_slice(first);
    payload.extend(std::iter::repeat_n(0, pad as usize));
    out.extend(frame(HEADERS, flags, stream, &payload));
    if !rest.is_empty() {
        let (a, b) = rest.split_at(rest.len() / 2);
        if !a.is_empty() {
            out.extend(frame(CONTINUATION, 0, stream, a));
        }
        out.extend(frame(CONTINUATION, END_HEADERS, stream, b));
    }
}

/// How the client saw a stream end.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// A response that ended the stream, with its status.
    Answered(u16),
    /// RST_STREAM.
    Refused,
    /// A GOAWAY or a close before an answer: the connection ended.
    Gone,
}

/// Writes `bytes` in `pieces` and reads until each of the `streams`
/// (1, 3, …) has ended; their ends.
async fn converse(addr: SocketAddr, bytes: &[u8], pieces: &[usize], streams: usize) -> Vec<End> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.split();
    let write = async {
        let mut at = 0;
        for size in pieces.iter().cycle() {
            if at >= bytes.len() {
                break;
            }
            let end = (at + size).min(bytes.len());
            if w.write_all(&bytes[at..end]).await.is_err() {
                break;
            }
            let _ = w.flush().await;
            at = end;
        }
    };
    let mut ends: Vec<Option<End>> = vec![None; streams];
    let read = async {
        let mut decoder = cutover::proxy::wire::h2::hpack::Decoder::default();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        let mut status = vec![0u16; streams];
        loop {
            for f in take_frames(&mut buf) {
                let case = (f.stream as usize).wrapping_sub(1) / 2;
                if f.kind == GOAWAY {
                    for end in ends.iter_mut().filter(|e| e.is_none()) {
                        *end = Some(End::Gone);
                    }
                }
                if f.stream % 2 == 1 && case < streams && ends[case].is_none() {
                    if f.kind == HEADERS {
                        // Servers here send one-frame blocks.
                        let _ = decoder.decode(&f.payload, |field| {
                            if field.name == b":status" {
                                status[case] =
                                    std::str::from_utf8(field.value).unwrap().parse().unwrap();
                            }
                        });
                    }
                    if f.kind == RST_STREAM {
                        ends[case] = Some(End::Refused);
                    } else if (f.kind == HEADERS || f.kind == DATA) && f.flags & END_STREAM != 0 {
                        ends[case] = Some(End::Answered(status[case]));
                    }
                }
            }
            if ends.iter().all(Option::is_some) {
                return;
            }
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    if tokio::time::timeout(DEADLINE, async { tokio::join!(write, read) })
        .await
        .is_err()
    {
        eprintln!("converse timed out: {ends:?}");
    }
    ends.into_iter().map(|e| e.unwrap_or(End::Gone)).collect()
}

fn normalize(
    method: &str,
    path: &str,
    headers: &http::HeaderMap,
    body: Vec<u8>,
    case: &mut Option<usize>,
) -> Read {
    const ADDED_OR_FRAMING: [&str; 11] = [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "via",
        "x-request-id",
        "content-length",
        "transfer-encoding",
        "te",
        "x-case",
        "traceparent",
    ];
    let mut fields: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (name, value) in headers {
        if name == "x-case" {
            *case = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|v| v.parse().ok());
        }
        if ADDED_OR_FRAMING.contains(&name.as_str()) {
            continue;
        }
        fields
            .entry(name.as_str().to_string())
            .or_default()
            .push(value.as_bytes().to_vec());
    }
    // RFC 9113 §8.2.3: cookies joined for HTTP/1.1, as cutover does.
    // Empty crumbs carry no cookie-pair and are left out.
    if let Some(cookies) = fields.remove("cookie") {
        let crumbs: Vec<Vec<u8>> = cookies.into_iter().filter(|c| !c.is_empty()).collect();
        if !crumbs.is_empty() {
            fields.insert("cookie".to_string(), vec![crumbs.join(&b"; "[..])]);
        }
    }
    (method.to_string(), path.to_string(), fields, body)
}

/// What `h2`'s server made of the connection, and how the client saw
/// each stream end, by case.
async fn h2_reading(bytes: &[u8], pieces: &[usize], cases: usize) -> (Vec<Seen>, Vec<End>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(vec![None; cases]));
    let server = {
        let seen = Arc::clone(&seen);
        async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut builder = h2::server::Builder::new();
            builder
                .max_concurrent_streams(128)
                .max_header_list_size(64 * 1024);
            let Ok(mut conn) = builder.handshake::<_, Bytes>(tcp).await else {
                return;
            };
            let mut tasks = Vec::new();
            while let Some(accepted) = conn.accept().await {
                // A stream error (a malformed request) is reported here
                // too, and the connection goes on.
                let (req, mut respond) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) if e.is_reset() => continue,
                    Err(_) => break,
                };
                let seen = Arc::clone(&seen);
                tasks.push(tokio::spawn(async move {
                    let (parts, mut body) = req.into_parts();
                    let mut bytes = Vec::new();
                    while let Some(chunk) = body.data().await {
                        let Ok(chunk) = chunk else { return };
                        let _ = body.flow_control().release_capacity(chunk.len());
                        bytes.extend_from_slice(&chunk);
                    }
                    if !body.is_end_stream() && body.trailers().await.is_err() {
                        return;
                    }
                    let path = parts
                        .uri
                        .path_and_query()
                        .map_or(String::new(), |p| p.as_str().to_string());
                    let mut case = None;
                    let n = normalize(
                        parts.method.as_str(),
                        &path,
                        &parts.headers,
                        bytes,
                        &mut case,
                    );
                    if let Some(case) = case {
                        seen.lock().unwrap()[case] = Some(n);
                    }
                    let _ = respond.send_response(http::Response::new(()), true);
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    };
    let server = tokio::spawn(server);
    let ends = converse(addr, bytes, pieces, cases).await;
    let _ = tokio::time::timeout(DEADLINE, server).await;
    let seen = seen.lock().unwrap().clone();
    (seen, ends)
}

/// An upstream recording what reaches it through cutover, by case; and
/// how many requests it is still reading.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<BTreeMap<usize, Seen>>>,
    reading: Arc<std::sync::atomic::AtomicUsize>,
}

async fn recording_upstream() -> (SocketAddr, Recorder) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorder = Recorder::default();
    let r = recorder.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let r = r.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let r = r.clone();
                    async move {
                        use std::sync::atomic::Ordering;
                        r.reading.fetch_add(1, Ordering::SeqCst);
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes().to_vec());
                        let path = parts
                            .uri
                            .path_and_query()
                            .map_or(String::new(), |p| p.as_str().to_string());
                        let mut case = None;
                        if let Ok(body) = body {
                            let n = normalize(
                                parts.method.as_str(),
                                &path,
                                &parts.headers,
                                body,
                                &mut case,
                            );
                            if let Some(case) = case {
                                r.seen.lock().unwrap().insert(case, Some(n));
                            }
                        }
                        r.reading.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, recorder)
}

/// Whether cutover refused one of the connection's `cases` (so `h2`'s
/// connection error over it explains what `h2` did not read).
fn ours_refused_one(cases: usize, ours: &BTreeMap<usize, Seen>) -> bool {
    (0..cases).any(|case| ours.get(&case).cloned().flatten().is_none())
}

#[test]
fn cutover_reads_http2_requests_as_h2_does() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (up, recorder) = runtime.block_on(recording_upstream());
    let proxy = runtime.block_on(start_proxy(&split_config(&[("p", 1, &[up])], "")));
    let addr = proxy.addrs()[0];
    let cases: u32 = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    let strategy = (proptest::collection::vec(request(), 1..5), wire());
    let counts = std::cell::Cell::new((0u32, 0u32, 0u32));
    let result = runner.run(&strategy, |(reqs, w)| {
        let bytes = connection_bytes(&reqs, &w);
        let (reference, h2_ends) = runtime.block_on(h2_reading(&bytes, &w.pieces, reqs.len()));
        recorder.seen.lock().unwrap().clear();
        let ends = runtime.block_on(async {
            let ends = converse(addr, &bytes, &w.pieces, reqs.len()).await;
            wait_until("the upstream has read every request", || async {
                recorder.reading.load(std::sync::atomic::Ordering::SeqCst) == 0
            })
            .await;
            ends
        });
        let ours = recorder.seen.lock().unwrap().clone();
        for (case, req) in reqs.iter().enumerate() {
            let mine = ours.get(&case).cloned().flatten();
            let theirs = &reference[case];
            match (&mine, theirs) {
                (Some(m), Some(t)) => {
                    counts.set((counts.get().0 + 1, counts.get().1, counts.get().2));
                    prop_assert_eq!(m, t, "case {} of {:?}", case, reqs);
                }
                // `h2` ended the whole connection over another stream (an
                // invalid :method or field name is a connection error there,
                // a stream error in RFC 9113 §8.1.1 and here): this one was
                // never read to its end.
                (_, None) if h2_ends[case] == End::Gone && ours_refused_one(reqs.len(), &ours) => {
                    counts.set((counts.get().0, counts.get().1 + 1, counts.get().2));
                }
                (Some(m), None) => {
                    prop_assert!(
                        false,
                        "cutover forwarded what h2 refused: {:?} ({:?})",
                        m,
                        req
                    );
                }
                // Read alike, and answered by cutover itself (`OPTIONS *`,
                // no route for `*`…): no parser verdict to compare.
                (None, Some(_)) if matches!(ends[case], End::Answered(_)) => {
                    counts.set((counts.get().0, counts.get().1, counts.get().2 + 1));
                }
                (None, Some(t)) => {
                    prop_assert!(
                        req.documented_difference(),
                        "cutover refused what h2 read: {:?} ({:?}, {:?})",
                        t,
                        req,
                        ends[case]
                    );
                    counts.set((counts.get().0, counts.get().1 + 1, counts.get().2));
                }
                (None, None) => counts.set((counts.get().0, counts.get().1 + 1, counts.get().2)),
            }
        }
        Ok(())
    });
    runtime.block_on(proxy.stop());
    if let Err(e) = result {
        panic!("{e}");
    }
    // Not vacuous: both verdicts come up often.
    let (forwarded, refused, answered) = counts.get();
    eprintln!("forwarded {forwarded}, refused {refused}, answered by cutover {answered}");
    assert!(
        forwarded > 20 && refused > 20,
        "forwarded {forwarded}, refused {refused}, answered by cutover {answered}"
    );
}
