//! cutover's own HTTP/2 server (RFC 9113) for one client connection, in
//! place of hyper's and the `h2` crate's: frames are read and written
//! by `proxy::wire::h2`, each request goes to the same front
//! (`Proxy::handle`) hyper's server calls, and its response comes back
//! as HEADERS and DATA frames. The connection is one future polled by
//! its own task: no task, channel or lock per stream but the body's feed.
//!
//! - `frames`: what each frame the client sends does (and the error it
//!   is, with the code RFC 9113 names);
//! - `streams`: a stream's state, the futures that answer it (the
//!   request's, then its body's), and how its response is written under
//!   flow control.

mod frames;
mod streams;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use crate::proxy::wire::h2::{self as wire, ConnError, Reason, hpack};
use crate::proxy::{ClientConn, ConnActivity, Proxy};
use streams::{Stream, Task};

/// What one connection may hold and how long it waits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// SETTINGS_MAX_HEADER_LIST_SIZE, and the 431 line.
    pub max_header_list: usize,
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_streams: usize,
    /// Our SETTINGS_INITIAL_WINDOW_SIZE: how much of a request body may
    /// wait in memory per stream.
    pub stream_window: u32,
    /// How much of all request bodies may wait in memory.
    pub connection_window: u32,
    /// How long a response may wait for the client to open its window
    /// before its stream is reset.
    pub send_stall: Duration,
}

impl Limits {
    pub fn new(max_header_list: usize, send_stall: Duration) -> Limits {
        Limits {
            max_header_list,
            max_streams: 128,
            stream_window: 256 * 1024,
            connection_window: 1024 * 1024,
            send_stall,
        }
    }
}

/// Frames written before the socket takes them, past which the
/// connection stops reading (a client that sends but does not read —
/// PINGs, SETTINGS, requests — waits for its own answers).
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// Client resets of streams still being answered, per second, past
/// which the connection ends (rapid reset, CVE-2023-44487).
const RESETS_PER_SECOND: u32 = 256;
/// The opaque data of the PING that follows a graceful end's first
/// GOAWAY.
pub(super) const DRAIN_PING: &[u8; 8] = b"cutover!";
/// How long a graceful end waits for that PING's ACK.
const DRAIN_ROUND_TRIP: Duration = Duration::from_secs(1);
/// How long a connection ended over an error reads on, so its GOAWAY is
/// read before the socket closes.
const LINGER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's preface.
    Preface,
    /// The first frame must be SETTINGS.
    FirstSettings,
    Open,
    /// A graceful end begun: a GOAWAY naming the largest stream id and a
    /// PING are out, and streams still open as usual until the PING's
    /// ACK (or DRAIN_ROUND_TRIP) shows that the client saw it; then the
    /// final GOAWAY names the last stream taken (RFC 9113 §6.8), so no
    /// request the client sent meanwhile is refused.
    Announced,
    /// The final GOAWAY (NO_ERROR) sent: streams up to `last_stream`
    /// finish.
    Draining,
    /// Everything written, the socket shut: reading until EOF or LINGER.
    Closing,
}

/// A header block that CONTINUATION frames are still completing.
struct PendingBlock {
    stream: u32,
    /// A stream the server reset: decoded, then dropped.
    ignored: bool,
    end_stream: bool,
    /// A new stream whose HEADERS said it depends on itself.
    self_dependent: bool,
    block: Vec<u8>,
    frames: usize,
}

/// The service side: what each request is handed to.
pub struct Service {
    pub proxy: Arc<Proxy>,
    pub activity: Arc<ConnActivity>,
    pub client: ClientConn,
}

pub struct Connection<S> {
    io: S,
    service: Service,
    limits: Limits,
    phase: Phase,
    read: BytesMut,
    read_closed: bool,
    write: Vec<u8>,
    written: usize,
    decoder: hpack::Decoder,
    /// Scratch for response header blocks.
    block: Vec<u8>,
    streams: foldhash::HashMap<u32, Stream>,
    tasks: FuturesUnordered<Task>,
    /// The highest stream id the client opened (every lower one is
    /// closed or was never used).
    last_stream: u32,
    pending: Option<PendingBlock>,
    /// SETTINGS_MAX_FRAME_SIZE and SETTINGS_INITIAL_WINDOW_SIZE the
    /// client set.
    peer_max_frame: usize,
    peer_window: i64,
    /// How much the connection may still send, and receive.
    send_window: i64,
    recv_window: i64,
    /// Request body bytes taken (or dropped), not yet credited back.
    recv_credit: usize,
    /// `shut_down` was asked for.
    shut_down: bool,
    /// The streams the server reset last (see `frames::rst`).
    reset_by_us: std::collections::VecDeque<u32>,
    resets: (Instant, u32),
    /// Armed while a response waits for the client's window.
    stall: Option<Pin<Box<Sleep>>>,
    linger: Option<Pin<Box<Sleep>>>,
    /// Armed while a graceful end waits for its PING's ACK.
    drain_timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub fn new(io: S, service: Service, limits: Limits) -> Connection<S> {
        let mut write = Vec::with_capacity(4096);
        // The server's preface: our SETTINGS, then the connection window
        // opened past the protocol's 64 KiB.
        wire::put_settings(
            &mut write,
            &[
                (0x2, 0),
                (0x3, limits.max_streams as u32),
                (0x4, limits.stream_window),
                (0x6, limits.max_header_list as u32),
            ],
        );
        let extra = limits
            .connection_window
            .saturating_sub(wire::DEFAULT_WINDOW);
        if extra > 0 {
            wire::put_window_update(&mut write, 0, extra);
        }
        Connection {
            io,
            service,
            limits,
            phase: Phase::Preface,
            read: BytesMut::with_capacity(16 * 1024),
            read_closed: false,
            write,
            written: 0,
            decoder: hpack::Decoder::default(),
            block: Vec::new(),
            streams: foldhash::HashMap::default(),
            tasks: FuturesUnordered::new(),
            last_stream: 0,
            pending: None,
            peer_max_frame: wire::MIN_FRAME_SIZE as usize,
            peer_window: i64::from(wire::DEFAULT_WINDOW),
            send_window: i64::from(wire::DEFAULT_WINDOW),
            recv_window: i64::from(limits.connection_window),
            recv_credit: 0,
            shut_down: false,
            reset_by_us: std::collections::VecDeque::new(),
            resets: (Instant::now(), 0),
            stall: None,
            linger: None,
            drain_timer: None,
        }
    }

    /// Begins a graceful end: GOAWAY now, the streams opened so far
    /// answered, then close.
    pub fn shut_down(&mut self) {
        self.shut_down = true;
    }

    /// Ends the connection over `e`: GOAWAY with its code, every stream
    /// dropped (its request's future with it), the socket closed once
    /// the GOAWAY is out.
    fn fail(&mut self, e: ConnError) {
        tracing::debug!(peer = %self.service.client.peer, reason = ?e.reason, why = e.why, "HTTP/2 connection error");
        count_error("connection", e.reason);
        self.drop_streams();
        self.pending = None;
        wire::put_goaway(
            &mut self.write,
            self.last_stream,
            e.reason,
            e.why.as_bytes(),
        );
        self.phase = Phase::Closing;
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A bounded number of rounds, then a yield: one busy connection
        // must not hold its worker thread.
        for _ in 0..32 {
            let mut progress = false;
            if self.shut_down
                && matches!(
                    self.phase,
                    Phase::Preface | Phase::FirstSettings | Phase::Open
                )
            {
                self.drain();
            }
            // Reading waits while too much is unwritten: once the write
            // makes room, it must be tried again in this poll.
            let read_held = self.write.len() > WRITE_HIGH_WATER;
            if self.phase != Phase::Closing {
                progress |= self.poll_read(cx)?;
                progress |= self.poll_tasks(cx);
                self.credit(cx);
                self.poll_stall(cx);
                self.poll_drain_timer(cx);
            }
            let flushed = self.poll_flush(cx)?;
            progress |= read_held && self.write.len() <= WRITE_HIGH_WATER;
            if self.phase == Phase::Draining && self.streams.is_empty() && flushed {
                self.phase = Phase::Closing;
            }
            if self.phase == Phase::Closing {
                if !flushed {
                    return Poll::Pending;
                }
                return self.poll_linger(cx);
            }
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Every stream dropped with its future; request bodies still
    /// arriving end with an error for whoever reads them.
    fn drop_streams(&mut self) {
        for (_, stream) in self.streams.drain() {
            stream.cancel();
        }
        self.tasks = FuturesUnordered::new();
    }

    /// Begins a graceful end (see [`Phase::Announced`]); before the
    /// client's preface, the connection closes at once.
    fn drain(&mut self) {
        if self.phase == Phase::Preface {
            wire::put_goaway(&mut self.write, 0, Reason::NoError, b"");
            self.phase = Phase::Closing;
            return;
        }
        wire::put_goaway(&mut self.write, wire::MAX_WINDOW, Reason::NoError, b"");
        wire::put_ping(&mut self.write, DRAIN_PING);
        self.drain_timer = Some(Box::pin(tokio::time::sleep(DRAIN_ROUND_TRIP)));
        self.phase = Phase::Announced;
    }

    /// The final GOAWAY: no stream past the last one opened.
    fn drain_final(&mut self) {
        wire::put_goaway(&mut self.write, self.last_stream, Reason::NoError, b"");
        self.drain_timer = None;
        self.phase = Phase::Draining;
    }

    /// A client that does not answer the drain's PING gets the final
    /// GOAWAY after DRAIN_ROUND_TRIP anyway.
    fn poll_drain_timer(&mut self, cx: &mut Context<'_>) {
        if let Some(timer) = &mut self.drain_timer
            && timer.as_mut().poll(cx).is_ready()
        {
            self.drain_final();
        }
    }

    /// Reads what the socket has and acts on every whole frame; true if
    /// anything was read.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        if self.read_closed || self.write.len() > WRITE_HIGH_WATER {
            return Ok(false);
        }
        if self.read.capacity() - self.read.len() < 4096 {
            self.read.reserve(16 * 1024);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read) {
            Poll::Pending => Ok(false),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Ready(Ok(0)) => {
                // The client is gone: nothing it asked for can reach it.
                self.read_closed = true;
                self.drop_streams();
                self.phase = Phase::Closing;
                Ok(true)
            }
            Poll::Ready(Ok(_)) => {
                if let Err(e) = self.read_frames() {
                    self.fail(e);
                }
                Ok(true)
            }
        }
    }

    /// Writes what is buffered; true once all of it is out and flushed.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        loop {
            while self.written < self.write.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.write[self.written..]) {
                    Poll::Pending => return Ok(false),
                    Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => self.written += n,
                    Poll::Ready(Err(e)) => return Err(e),
                }
            }
            let was_full = self.write.len() > WRITE_HIGH_WATER;
            self.write.clear();
            self.written = 0;
            if !was_full {
                break;
            }
            // Room again: responses held back for it go on.
            self.flush_blocked();
        }
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Pending => Ok(false),
            Poll::Ready(r) => r.map(|()| true),
        }
    }

    /// The end of a closing connection: its write side shut, then reads
    /// discarded until the client closes or LINGER passes.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.linger.is_none() {
            ready!(Pin::new(&mut self.io).poll_shutdown(cx)).ok();
            self.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        if self.read_closed {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some(linger) = &mut self.linger
                && linger.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Ok(()));
            }
            self.read.clear();
            if self.read.capacity() < 4096 {
                self.read.reserve(4096);
            }
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut self.io),
                cx,
                &mut self.read
            )) {
                Ok(0) | Err(_) => return Poll::Ready(Ok(())),
                Ok(_) => {}
            }
        }
    }

    /// A client reset a stream it had not been answered on: counted, and
    /// past RESETS_PER_SECOND the connection ends.
    fn count_reset(&mut self) -> Result<(), ConnError> {
        let now = Instant::now();
        if now.duration_since(self.resets.0) >= Duration::from_secs(1) {
            self.resets = (now, 0);
        }
        self.resets.1 += 1;
        if self.resets.1 > RESETS_PER_SECOND {
            return Err(wire::conn_error(
                Reason::EnhanceYourCalm,
                "too many streams reset",
            ));
        }
        Ok(())
    }
}

/// Counts an error sent to a client (`cutover_http2_errors_total`).
fn count_error(scope: &'static str, reason: Reason) {
    metrics::counter!(crate::telemetry::names::HTTP2_ERRORS_TOTAL, "scope" => scope, "reason" => reason.name())
        .increment(1);
}

impl<S> Future for Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drive(cx)
    }
}
