//! A raw HTTP/2 client: frames written byte by byte and read back one by
//! one, for tests that send what no well-behaved client library would.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::DEADLINE;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const PROTOCOL_ERROR: u32 = 0x1;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const FRAME_SIZE_ERROR: u32 = 0x6;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const COMPRESSION_ERROR: u32 = 0x9;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header block of literal fields (never indexed, no Huffman): the
/// request's pseudo-headers for `method` and `path` on authority `a`,
/// then `extra`.
pub fn request_block(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    let fields = [
        (":method", method),
        (":scheme", "http"),
        (":authority", "a"),
        (":path", path),
    ];
    for (name, value) in fields.iter().chain(extra) {
        literal(&mut block, name.as_bytes(), value.as_bytes());
    }
    block
}

/// Appends a literal field without indexing, its name literal too.
pub fn literal(block: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    block.push(0x00);
    length(block, name.len());
    block.extend_from_slice(name);
    length(block, value.len());
    block.extend_from_slice(value);
}

/// An HPACK string length (7-bit prefix, no Huffman flag).
pub fn length(block: &mut Vec<u8>, n: usize) {
    if n < 127 {
        block.push(n as u8);
        return;
    }
    block.push(127);
    let mut rest = n - 127;
    while rest >= 128 {
        block.push((rest as u8 & 0x7f) | 0x80);
        rest >>= 7;
    }
    block.push(rest as u8);
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's or RST_STREAM's error code.
    pub fn code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The whole frames at the start of `buf`, taken out of it.
pub fn take_frames(buf: &mut Vec<u8>) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut at = 0;
    while buf.len() >= at + 9 {
        let len = u32::from_be_bytes([0, buf[at], buf[at + 1], buf[at + 2]]) as usize;
        if buf.len() < at + 9 + len {
            break;
        }
        frames.push(Frame {
            kind: buf[at + 3],
            flags: buf[at + 4],
            stream: u32::from_be_bytes([buf[at + 5], buf[at + 6], buf[at + 7], buf[at + 8]])
                & 0x7fff_ffff,
            payload: buf[at + 9..at + 9 + len].to_vec(),
        });
        at += 9 + len;
    }
    buf.drain(..at);
    frames
}

pub struct RawH2 {
    pub stream: TcpStream,
    buf: Vec<u8>,
    ready: std::collections::VecDeque<Frame>,
}

impl RawH2 {
    /// Connects, sends the preface and a SETTINGS frame of `settings`.
    pub async fn open(addr: SocketAddr, settings: &[(u16, u32)]) -> RawH2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &payload));
        stream.write_all(&hello).await.unwrap();
        RawH2 {
            stream,
            buf: Vec::new(),
            ready: std::collections::VecDeque::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame, or `None` once the server closed.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Some(f);
            }
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout(DEADLINE, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("no frame from the server within {DEADLINE:?}"),
            }
            self.ready.extend(take_frames(&mut self.buf));
        }
    }

    /// Reads frames until one matches `wanted`, which is returned;
    /// `None` if the server closed first.
    pub async fn until(&mut self, wanted: impl Fn(&Frame) -> bool) -> Option<Frame> {
        loop {
            let f = self.next().await?;
            if wanted(&f) {
                return Some(f);
            }
        }
    }

    /// Sends a PING and reads until its ACK: the connection is alive and
    /// has acted on everything sent before.
    pub async fn alive(&mut self) -> bool {
        self.send(&frame(PING, 0, 0, b"alive?!!")).await;
        self.until(|f| f.kind == PING && f.flags & ACK != 0 && f.payload == b"alive?!!")
            .await
            .is_some()
    }
}
