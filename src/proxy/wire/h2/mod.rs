//! HTTP/2 as bytes (RFC 9113): frame heads, the payloads a server reads
//! (each checked for the size and values §6 requires, with the error
//! code it names), and the frames a server writes. `hpack` and `huffman`
//! are its header compression (RFC 7541).

pub mod hpack;
pub mod huffman;
pub mod request;

/// What a client sends first (§3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A frame head's length.
pub const HEAD_LEN: usize = 9;

/// The protocol's default and smallest SETTINGS_MAX_FRAME_SIZE.
pub const MIN_FRAME_SIZE: u32 = 16_384;
const MAX_FRAME_SIZE_LIMIT: u32 = (1 << 24) - 1;
/// The largest flow-control window (§6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
/// Every window's size until SETTINGS say otherwise (§6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;

pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes (§7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Reason {
    NoError = 0x0,
    Protocol = 0x1,
    Internal = 0x2,
    FlowControl = 0x3,
    StreamClosed = 0x5,
    FrameSize = 0x6,
    RefusedStream = 0x7,
    Cancel = 0x8,
    Compression = 0x9,
    EnhanceYourCalm = 0xb,
}

impl Reason {
    /// The code's name in lower case, for metrics.
    pub fn name(self) -> &'static str {
        match self {
            Reason::NoError => "no_error",
            Reason::Protocol => "protocol_error",
            Reason::Internal => "internal_error",
            Reason::FlowControl => "flow_control_error",
            Reason::StreamClosed => "stream_closed",
            Reason::FrameSize => "frame_size_error",
            Reason::RefusedStream => "refused_stream",
            Reason::Cancel => "cancel",
            Reason::Compression => "compression_error",
            Reason::EnhanceYourCalm => "enhance_your_calm",
        }
    }
}

/// A frame's nine-byte head (§4.1); the reserved bit is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHead {
    pub fn parse(b: &[u8; HEAD_LEN]) -> FrameHead {
        FrameHead {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A frame the connection must end over: its code and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnError {
    pub reason: Reason,
    pub why: &'static str,
}

pub fn conn_error(reason: Reason, why: &'static str) -> ConnError {
    ConnError { reason, why }
}

/// A padded frame's content without its padding (§6.1, §6.2).
pub fn unpad(head: &FrameHead, payload: &[u8]) -> Result<std::ops::Range<usize>, ConnError> {
    if !head.has(flag::PADDED) {
        return Ok(0..payload.len());
    }
    let Some(&pad) = payload.first() else {
        return Err(conn_error(
            Reason::FrameSize,
            "padded frame without a pad length",
        ));
    };
    let end = payload.len().checked_sub(pad as usize);
    match end {
        Some(end) if end >= 1 => Ok(1..end),
        _ => Err(conn_error(
            Reason::Protocol,
            "padding as long as the frame or longer",
        )),
    }
}

/// A HEADERS frame's header block fragment: padding and the priority
/// fields (which RFC 9113 lets a server ignore) removed. Also the
/// stream it says it depends on, which must not be its own (§5.3.1).
pub fn headers_fragment(
    head: &FrameHead,
    payload: &[u8],
) -> Result<(std::ops::Range<usize>, Option<u32>), ConnError> {
    let mut range = unpad(head, payload)?;
    let mut depends = None;
    if head.has(flag::PRIORITY) {
        if range.len() < 5 {
            return Err(conn_error(
                Reason::FrameSize,
                "HEADERS too short for its priority",
            ));
        }
        let at = range.start;
        depends = Some(
            u32::from_be_bytes([
                payload[at],
                payload[at + 1],
                payload[at + 2],
                payload[at + 3],
            ]) & 0x7fff_ffff,
        );
        range.start += 5;
    }
    Ok((range, depends))
}

/// Settings a client may send (§6.5.2); unknown ones are ignored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PeerSettings {
    pub header_table_size: Option<u32>,
    pub enable_push: Option<u32>,
    pub max_concurrent_streams: Option<u32>,
    pub initial_window_size: Option<u32>,
    pub max_frame_size: Option<u32>,
    pub max_header_list_size: Option<u32>,
}

/// Reads a SETTINGS payload (not an ACK), checking each value.
pub fn parse_settings(payload: &[u8]) -> Result<PeerSettings, ConnError> {
    if !payload.len().is_multiple_of(6) {
        return Err(conn_error(
            Reason::FrameSize,
            "SETTINGS length not a multiple of 6",
        ));
    }
    let mut s = PeerSettings::default();
    for pair in payload.chunks_exact(6) {
        let id = u16::from_be_bytes([pair[0], pair[1]]);
        let value = u32::from_be_bytes([pair[2], pair[3], pair[4], pair[5]]);
        match id {
            0x1 => s.header_table_size = Some(value),
            0x2 if value > 1 => {
                return Err(conn_error(
                    Reason::Protocol,
                    "SETTINGS_ENABLE_PUSH not 0 or 1",
                ));
            }
            0x2 => s.enable_push = Some(value),
            0x3 => s.max_concurrent_streams = Some(value),
            0x4 if value > MAX_WINDOW => {
                return Err(conn_error(
                    Reason::FlowControl,
                    "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                ));
            }
            0x4 => s.initial_window_size = Some(value),
            0x5 if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE_LIMIT).contains(&value) => {
                return Err(conn_error(
                    Reason::Protocol,
                    "SETTINGS_MAX_FRAME_SIZE outside 2^14..2^24-1",
                ));
            }
            0x5 => s.max_frame_size = Some(value),
            0x6 => s.max_header_list_size = Some(value),
            _ => {}
        }
    }
    Ok(s)
}

/// A WINDOW_UPDATE's increment; 0 is the caller's to judge (a stream or
/// a connection error, by stream).
pub fn window_increment(head: &FrameHead, payload: &[u8]) -> Result<u32, ConnError> {
    match payload {
        [a, b, c, d] if head.len == 4 => Ok(u32::from_be_bytes([*a, *b, *c, *d]) & 0x7fff_ffff),
        _ => Err(conn_error(Reason::FrameSize, "WINDOW_UPDATE length not 4")),
    }
}

/// Appends a frame head.
pub fn put_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    let len = (len as u32).to_be_bytes();
    out.extend_from_slice(&[len[1], len[2], len[3], kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// Appends a SETTINGS frame of `(id, value)` pairs.
pub fn put_settings(out: &mut Vec<u8>, pairs: &[(u16, u32)]) {
    put_head(out, pairs.len() * 6, kind::SETTINGS, 0, 0);
    for (id, value) in pairs {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

pub fn put_settings_ack(out: &mut Vec<u8>) {
    put_head(out, 0, kind::SETTINGS, flag::ACK, 0);
}

pub fn put_ping(out: &mut Vec<u8>, data: &[u8; 8]) {
    put_head(out, 8, kind::PING, 0, 0);
    out.extend_from_slice(data);
}

pub fn put_ping_ack(out: &mut Vec<u8>, data: &[u8; 8]) {
    put_head(out, 8, kind::PING, flag::ACK, 0);
    out.extend_from_slice(data);
}

pub fn put_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    put_head(out, 4, kind::WINDOW_UPDATE, 0, stream);
    out.extend_from_slice(&increment.to_be_bytes());
}

pub fn put_rst_stream(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    put_head(out, 4, kind::RST_STREAM, 0, stream);
    out.extend_from_slice(&(reason as u32).to_be_bytes());
}

pub fn put_goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason, debug: &[u8]) {
    put_head(out, 8 + debug.len(), kind::GOAWAY, 0, 0);
    out.extend_from_slice(&last_stream.to_be_bytes());
    out.extend_from_slice(&(reason as u32).to_be_bytes());
    out.extend_from_slice(debug);
}

/// Appends a header block as HEADERS and, past `max_frame` bytes, as
/// CONTINUATION frames.
pub fn put_headers(
    out: &mut Vec<u8>,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let mut chunks = block.chunks(max_frame.max(1)).peekable();
    let mut kind = kind::HEADERS;
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if block.is_empty() {
        put_head(out, 0, kind, flags | flag::END_HEADERS, stream);
        return;
    }
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_none() {
            flags |= flag::END_HEADERS;
        }
        put_head(out, chunk.len(), kind, flags, stream);
        out.extend_from_slice(chunk);
        kind = kind::CONTINUATION;
        flags = 0;
    }
}

/// Appends one DATA frame head; its `len` bytes follow.
pub fn put_data_head(out: &mut Vec<u8>, stream: u32, len: usize, end_stream: bool) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    put_head(out, len, kind::DATA, flags, stream);
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Bytes written as hex digits, spaces ignored (the RFC's examples).
    pub fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn frame_heads_read_what_was_written() {
        let mut out = Vec::new();
        put_head(&mut out, 0x01_02_03, kind::HEADERS, flag::END_HEADERS, 7);
        let head = FrameHead::parse(out[..9].try_into().unwrap());
        assert_eq!(
            head,
            FrameHead {
                len: 0x01_02_03,
                kind: kind::HEADERS,
                flags: flag::END_HEADERS,
                stream: 7
            }
        );
        // The reserved bit is not part of the stream id.
        let mut raw = out.clone();
        raw[5] |= 0x80;
        assert_eq!(FrameHead::parse(raw[..9].try_into().unwrap()).stream, 7);
    }

    #[test]
    fn settings_values_get_the_codes_rfc_9113_names() {
        let pair = |id: u16, v: u32| {
            let mut b = id.to_be_bytes().to_vec();
            b.extend(v.to_be_bytes());
            b
        };
        assert_eq!(
            parse_settings(&[0; 5]).unwrap_err().reason,
            Reason::FrameSize
        );
        assert_eq!(
            parse_settings(&pair(4, 1 << 31)).unwrap_err().reason,
            Reason::FlowControl
        );
        assert_eq!(
            parse_settings(&pair(2, 2)).unwrap_err().reason,
            Reason::Protocol
        );
        assert_eq!(
            parse_settings(&pair(5, 16_383)).unwrap_err().reason,
            Reason::Protocol
        );
        assert_eq!(
            parse_settings(&pair(5, 1 << 24)).unwrap_err().reason,
            Reason::Protocol
        );
        let ok = parse_settings(&[pair(4, 1 << 20), pair(0x99, 1)].concat()).unwrap();
        assert_eq!(ok.initial_window_size, Some(1 << 20));
    }

    #[test]
    fn padding_and_priority_come_off_a_headers_payload() {
        let head = |flags| FrameHead {
            len: 0,
            kind: kind::HEADERS,
            flags,
            stream: 1,
        };
        // Pad length 2, priority (depends on 3), block "ab", 2 pad bytes.
        let payload = [2, 0, 0, 0, 3, 16, b'a', b'b', 0, 0];
        let (range, depends) =
            headers_fragment(&head(flag::PADDED | flag::PRIORITY), &payload).unwrap();
        assert_eq!(&payload[range], b"ab");
        assert_eq!(depends, Some(3));
        assert_eq!(
            unpad(&head(flag::PADDED), &[5, 0, 0]).unwrap_err().reason,
            Reason::Protocol
        );
        assert_eq!(
            unpad(&head(flag::PADDED), &[]).unwrap_err().reason,
            Reason::FrameSize
        );
    }

    #[test]
    fn long_header_blocks_continue() {
        let mut out = Vec::new();
        put_headers(&mut out, 3, &[7; 10], true, 4);
        let first = FrameHead::parse(out[..9].try_into().unwrap());
        assert_eq!(
            (first.len, first.kind, first.flags),
            (4, kind::HEADERS, flag::END_STREAM)
        );
        let last = FrameHead::parse(out[2 * 13..2 * 13 + 9].try_into().unwrap());
        assert_eq!(
            (last.len, last.kind, last.flags),
            (2, kind::CONTINUATION, flag::END_HEADERS)
        );
        assert_eq!(out.len(), 3 * 9 + 10);
    }
}
