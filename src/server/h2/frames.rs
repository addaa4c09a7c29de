//! What each frame a client sends does to the connection (RFC 9113 §6),
//! and which error it is when it breaks the rules: a connection error
//! (`Err`, GOAWAY) or a stream error (RST_STREAM, the connection lives).

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::streams::Stream;
use super::{Connection, PendingBlock, Phase};
use crate::proxy::wire::h2::request::{HeadReader, Refusal};
use crate::proxy::wire::h2::{
    self as wire, ConnError, FrameHead, HEAD_LEN, MAX_WINDOW, MIN_FRAME_SIZE, PREFACE, Reason,
    conn_error, flag, kind,
};

/// Streams reset by the server whose late frames are still ignored.
const RESETS_REMEMBERED: usize = 256;

/// CONTINUATION frames one header block may take (a flood of empty ones
/// costs a wakeup each and adds nothing).
const MAX_CONTINUATIONS: usize = 64;

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Acts on every whole frame in the read buffer.
    pub(super) fn read_frames(&mut self) -> Result<(), ConnError> {
        if self.phase == Phase::Preface {
            if self.read.len() < PREFACE.len() {
                return if PREFACE.starts_with(&self.read) {
                    Ok(())
                } else {
                    Err(conn_error(Reason::Protocol, "not the HTTP/2 preface"))
                };
            }
            if &self.read[..PREFACE.len()] != PREFACE {
                return Err(conn_error(Reason::Protocol, "not the HTTP/2 preface"));
            }
            self.read.advance(PREFACE.len());
            self.phase = Phase::FirstSettings;
        }
        while self.read.len() >= HEAD_LEN {
            let head = FrameHead::parse(self.read[..HEAD_LEN].try_into().unwrap_or(&[0; 9]));
            if head.len > MIN_FRAME_SIZE {
                return Err(conn_error(
                    Reason::FrameSize,
                    "frame larger than SETTINGS_MAX_FRAME_SIZE",
                ));
            }
            let whole = HEAD_LEN + head.len as usize;
            if self.read.len() < whole {
                self.read.reserve(whole - self.read.len());
                break;
            }
            self.read.advance(HEAD_LEN);
            let payload = self.read.split_to(head.len as usize);
            self.on_frame(head, payload)?;
            if self.phase == Phase::Closing {
                break;
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, head: FrameHead, payload: BytesMut) -> Result<(), ConnError> {
        if self.phase == Phase::FirstSettings {
            if head.kind != kind::SETTINGS || head.has(flag::ACK) {
                return Err(conn_error(Reason::Protocol, "first frame not SETTINGS"));
            }
            self.phase = Phase::Open;
        }
        if let Some(pending) = &self.pending
            && (head.kind != kind::CONTINUATION || head.stream != pending.stream)
        {
            return Err(conn_error(
                Reason::Protocol,
                "header block interrupted by another frame",
            ));
        }
        match head.kind {
            kind::DATA => self.on_data(head, payload.freeze()),
            kind::HEADERS => self.on_headers(head, &payload),
            kind::CONTINUATION => self.on_continuation(head, &payload),
            kind::PRIORITY => self.on_priority(head, &payload),
            kind::RST_STREAM => self.on_reset(head, &payload),
            kind::SETTINGS => self.on_settings(head, &payload),
            kind::PUSH_PROMISE => Err(conn_error(Reason::Protocol, "PUSH_PROMISE from a client")),
            kind::PING => self.on_ping(head, &payload),
            kind::GOAWAY => self.on_goaway(head, &payload),
            kind::WINDOW_UPDATE => self.on_window_update(head, &payload),
            // Unknown types are ignored (§5.5).
            _ => Ok(()),
        }
    }

    /// A stream id the client never opened (§5.1: idle) is a connection
    /// error for most frames.
    fn idle(&self, stream: u32) -> bool {
        stream > self.last_stream
    }

    fn on_data(&mut self, head: FrameHead, payload: Bytes) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::Protocol, "DATA on stream 0"));
        }
        let len = payload.len();
        // Flow control counts the whole payload, padding too (§6.9.1).
        if len as i64 > self.recv_window {
            return Err(conn_error(
                Reason::FlowControl,
                "DATA beyond the connection window",
            ));
        }
        self.recv_window -= len as i64;
        let range = wire::unpad(&head, &payload)?;
        if self.idle(head.stream) {
            return Err(conn_error(Reason::Protocol, "DATA on an idle stream"));
        }
        // What does not reach a body is credited back at once.
        let mut credit = len - range.len();
        let content = range.len();
        let end = head.has(flag::END_STREAM);
        let outcome = match self.streams.get_mut(&head.stream) {
            Some(stream) => stream.receive(payload.slice(range), end),
            None => Err(Reason::StreamClosed),
        };
        // Looked up only here: a stream in the map is the usual case.
        let outcome = match outcome {
            Err(Reason::StreamClosed) if self.reset_by_us(head.stream) => Ok(content),
            other => other,
        };
        match outcome {
            Ok(unread) => credit += unread,
            Err(reason) => {
                credit = len;
                self.reset_stream(head.stream, reason);
            }
        }
        self.recv_credit += credit;
        Ok(())
    }

    fn on_headers(&mut self, head: FrameHead, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::Protocol, "HEADERS on stream 0"));
        }
        let (range, depends) = wire::headers_fragment(&head, payload)?;
        let stream = head.stream;
        // A stream neither open nor new: closed, and unless the server
        // reset it (then the block is only decoded), an error.
        let known = self.streams.contains_key(&stream);
        if !known && stream.is_multiple_of(2) {
            return Err(conn_error(Reason::Protocol, "even stream id from a client"));
        }
        let late = !known && stream <= self.last_stream;
        if late && !self.reset_by_us(stream) {
            return Err(conn_error(
                Reason::StreamClosed,
                "HEADERS on a closed stream",
            ));
        }
        self.last_stream = self.last_stream.max(stream);
        let block = PendingBlock {
            stream,
            ignored: late,
            end_stream: head.has(flag::END_STREAM),
            self_dependent: depends == Some(stream),
            block: Vec::new(),
            frames: 1,
        };
        if head.has(flag::END_HEADERS) {
            self.on_block(block, &payload[range])
        } else {
            let mut block = block;
            block.block.extend_from_slice(&payload[range]);
            self.pending = Some(block);
            Ok(())
        }
    }

    fn on_continuation(&mut self, head: FrameHead, payload: &[u8]) -> Result<(), ConnError> {
        let Some(mut pending) = self.pending.take() else {
            return Err(conn_error(
                Reason::Protocol,
                "CONTINUATION without a header block",
            ));
        };
        pending.frames += 1;
        pending.block.extend_from_slice(payload);
        // A block that cannot be decoded cannot be skipped either (the
        // table would fall out of step): the connection ends.
        if pending.frames > MAX_CONTINUATIONS
            || pending.block.len() > 2 * self.limits.max_header_list + MIN_FRAME_SIZE as usize
        {
            return Err(conn_error(Reason::EnhanceYourCalm, "header block too long"));
        }
        if head.has(flag::END_HEADERS) {
            let block = std::mem::take(&mut pending.block);
            self.on_block(pending, &block)
        } else {
            self.pending = Some(pending);
            Ok(())
        }
    }

    /// A whole header block: a request, or a request's trailers.
    fn on_block(&mut self, block: PendingBlock, bytes: &[u8]) -> Result<(), ConnError> {
        let id = block.stream;
        let trailers = self.streams.get(&id).map(|s| s.recv_open());
        let mut reader = HeadReader::new(self.limits.max_header_list, trailers.is_some());
        self.decoder
            .decode(bytes, |f| reader.field(f))
            .map_err(|_| conn_error(Reason::Compression, "header block not valid HPACK"))?;
        if block.ignored {
            // Sent before the client saw our reset: decoded for the
            // table's sake, then dropped.
            return Ok(());
        }
        match trailers {
            Some(true) => {
                if !block.end_stream {
                    self.reset_stream(id, Reason::Protocol);
                    return Ok(());
                }
                match reader.trailers() {
                    Ok(fields) => {
                        if let Some(stream) = self.streams.get_mut(&id)
                            && let Err(reason) = stream.receive_trailers(fields)
                        {
                            self.reset_stream(id, reason);
                        }
                    }
                    Err(_) => self.reset_stream(id, Reason::Protocol),
                }
                Ok(())
            }
            // Half-closed (remote): the client already ended it (§5.1).
            Some(false) => {
                self.reset_stream(id, Reason::StreamClosed);
                Ok(())
            }
            None => {
                self.open_stream(block, reader);
                Ok(())
            }
        }
    }

    fn open_stream(&mut self, block: PendingBlock, reader: HeadReader) {
        let id = block.stream;
        if self.phase == Phase::Draining {
            // Past our GOAWAY: ignored (§6.8).
            return;
        }
        if block.self_dependent {
            self.rst(id, Reason::Protocol);
            return;
        }
        if self.streams.len() >= self.limits.max_streams {
            self.rst(id, Reason::RefusedStream);
            return;
        }
        match reader.request() {
            Err(Refusal::Malformed(why)) => {
                tracing::debug!(peer = %self.service.client.peer, stream = id, why, "malformed HTTP/2 request");
                self.rst(id, Reason::Protocol);
            }
            Err(Refusal::TooLarge) => {
                self.block.clear();
                wire::hpack::encode_status(&mut self.block, 431);
                wire::put_headers(&mut self.write, id, &self.block, true, self.peer_max_frame);
                if !block.end_stream {
                    // Answered: the client need not send its body.
                    self.rst(id, Reason::NoError);
                }
            }
            Ok(head) => {
                if block.end_stream && head.content_length.is_some_and(|n| n > 0) {
                    self.rst(id, Reason::Protocol);
                    return;
                }
                let (stream, task) = Stream::open(
                    id,
                    head,
                    block.end_stream,
                    &self.service,
                    self.limits.stream_window,
                    self.peer_window,
                );
                self.streams.insert(id, stream);
                self.tasks.push(task);
            }
        }
    }

    fn on_priority(&mut self, head: FrameHead, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::Protocol, "PRIORITY on stream 0"));
        }
        if payload.len() != 5 {
            self.reset_stream(head.stream, Reason::FrameSize);
            return Ok(());
        }
        let depends =
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
        if depends == head.stream {
            self.reset_stream(head.stream, Reason::Protocol);
        }
        // Priorities are otherwise ignored (RFC 9113 §5.3).
        Ok(())
    }

    fn on_reset(&mut self, head: FrameHead, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream == 0 {
            return Err(conn_error(Reason::Protocol, "RST_STREAM on stream 0"));
        }
        if payload.len() != 4 {
            return Err(conn_error(Reason::FrameSize, "RST_STREAM length not 4"));
        }
        if self.idle(head.stream) {
            return Err(conn_error(Reason::Protocol, "RST_STREAM on an idle stream"));
        }
        if let Some(stream) = self.streams.remove(&head.stream) {
            let unanswered = !stream.answered();
            stream.cancel();
            if unanswered {
                self.count_reset()?;
            }
        }
        Ok(())
    }

    fn on_settings(&mut self, head: FrameHead, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(conn_error(Reason::Protocol, "SETTINGS on a stream"));
        }
        if head.has(flag::ACK) {
            if !payload.is_empty() {
                return Err(conn_error(Reason::FrameSize, "SETTINGS ACK with a payload"));
            }
            return Ok(());
        }
        let settings = wire::parse_settings(payload)?;
        if let Some(size) = settings.max_frame_size {
            self.peer_max_frame = size as usize;
        }
        if let Some(window) = settings.initial_window_size {
            // Every open stream's window moves by the difference, and may
            // go below zero (§6.9.2).
            let delta = i64::from(window) - self.peer_window;
            self.peer_window = i64::from(window);
            for stream in self.streams.values_mut() {
                if !stream.grow_send_window(delta) {
                    return Err(conn_error(
                        Reason::FlowControl,
                        "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window",
                    ));
                }
            }
            if delta > 0 {
                self.window_opened();
            }
        }
        // The header table size only bounds an encoder's table; ours
        // keeps none.
        wire::put_settings_ack(&mut self.write);
        Ok(())
    }

    fn on_ping(&mut self, head: FrameHead, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(conn_error(Reason::Protocol, "PING on a stream"));
        }
        let Ok(data) = <&[u8; 8]>::try_from(payload) else {
            return Err(conn_error(Reason::FrameSize, "PING length not 8"));
        };
        if !head.has(flag::ACK) {
            wire::put_ping_ack(&mut self.write, data);
        } else if data == super::DRAIN_PING && self.phase == Phase::Announced {
            // The client has seen the first GOAWAY: what it sent before
            // is in, and the last stream is known.
            self.drain_final();
        }
        Ok(())
    }

    fn on_goaway(&mut self, head: FrameHead, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(conn_error(Reason::Protocol, "GOAWAY on a stream"));
        }
        if payload.len() < 8 {
            return Err(conn_error(Reason::FrameSize, "GOAWAY shorter than 8"));
        }
        // The client opens nothing more: answer what it asked, then close.
        if matches!(self.phase, Phase::Open | Phase::Announced) {
            self.drain_final();
        }
        Ok(())
    }

    fn on_window_update(&mut self, head: FrameHead, payload: &[u8]) -> Result<(), ConnError> {
        let increment = wire::window_increment(&head, payload)?;
        if head.stream == 0 {
            if increment == 0 {
                return Err(conn_error(Reason::Protocol, "WINDOW_UPDATE of 0"));
            }
            self.send_window += i64::from(increment);
            if self.send_window > i64::from(MAX_WINDOW) {
                return Err(conn_error(
                    Reason::FlowControl,
                    "connection window above 2^31-1",
                ));
            }
            self.window_opened();
            return Ok(());
        }
        if self.idle(head.stream) {
            return Err(conn_error(
                Reason::Protocol,
                "WINDOW_UPDATE on an idle stream",
            ));
        }
        let Some(stream) = self.streams.get_mut(&head.stream) else {
            // A closed stream: it may still be in flight (§6.9).
            return Ok(());
        };
        if increment == 0 {
            self.reset_stream(head.stream, Reason::Protocol);
            return Ok(());
        }
        if !stream.grow_send_window(i64::from(increment)) {
            self.reset_stream(head.stream, Reason::FlowControl);
            return Ok(());
        }
        self.window_opened();
        Ok(())
    }

    /// A stream error: RST_STREAM with `reason`, and the stream dropped
    /// (its request's future and its response with it).
    pub(super) fn reset_stream(&mut self, id: u32, reason: Reason) {
        self.rst(id, reason);
        if let Some(stream) = self.streams.remove(&id) {
            stream.cancel();
        }
    }

    /// Writes RST_STREAM for `id` and remembers it: frames the client
    /// sent before it saw the reset are ignored, not taken for a
    /// protocol error (RFC 9113 §5.1, "closed").
    pub(super) fn rst(&mut self, id: u32, reason: Reason) {
        wire::put_rst_stream(&mut self.write, id, reason);
        if reason != Reason::NoError {
            super::count_error("stream", reason);
        }
        if self.reset_by_us.len() == RESETS_REMEMBERED {
            self.reset_by_us.pop_front();
        }
        self.reset_by_us.push_back(id);
    }

    fn reset_by_us(&self, id: u32) -> bool {
        self.reset_by_us.contains(&id)
    }

    /// A window grew: responses waiting for it go on, and the stall
    /// timer starts over.
    fn window_opened(&mut self) {
        self.stall = None;
        self.flush_blocked();
    }
}
