//! Parking idle HTTP/1.1 connections: the socket without hyper's buffers.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for as long
//! as it serves a connection, idle or not, which made an idle keep-alive
//! connection cost ~28 KiB. An HTTP/1.1 connection idle for [`PARK_AFTER`]
//! is therefore taken back from hyper — a graceful shutdown that, on an
//! idle connection, sends nothing, while this wrapper turns its socket
//! shutdown into a no-op — and waits for the client's next bytes: a plain
//! socket in the lot (see `lot`), a TLS stream (whose session must be
//! kept) in its own task. A fresh hyper connection then serves them; bytes
//! hyper had read but not parsed are replayed first. Nothing is sent to
//! the client either way, so parking is invisible to it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How long an HTTP/1.1 connection stays idle inside hyper before it is
/// parked. Long enough that a client sending request after request never
/// pays for it; short enough that idle connections cost little.
pub const PARK_AFTER: Duration = Duration::from_secs(2);

/// The client connection as hyper sees it — a plain socket or a TLS
/// stream: reads replay `unread` first, and shutdown is skipped while
/// `parking` is set.
pub struct ParkableIo<S> {
    io: S,
    unread: Bytes,
    parking: Arc<AtomicBool>,
}

impl<S> ParkableIo<S> {
    pub fn new(io: S) -> ParkableIo<S> {
        ParkableIo {
            io,
            unread: Bytes::new(),
            parking: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set it, then shut the hyper connection down gracefully, to park.
    pub fn parking_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.parking)
    }

    /// Back from hyper: `unread` holds what hyper read but did not parse.
    pub fn unpark(&mut self, unread: Bytes) {
        // Copied: even empty, hyper's leftover is a view that keeps its
        // whole read buffer alive.
        self.unread = if unread.is_empty() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(&unread)
        };
        self.parking.store(false, Ordering::Release);
    }

    /// Whether bytes are waiting to be served without reading the socket.
    pub fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }
}

impl<S> ParkableIo<S> {
    /// The stream, to park. Only ever called with nothing unread.
    pub fn into_inner(self) -> S {
        self.io
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ParkableIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ParkableIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.parking.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What a new connection's first bytes say.
pub enum FirstBytes {
    /// The HTTP/2 connection preface (h2c with prior knowledge).
    Http2,
    Http1,
    /// The start of the HTTP/2 preface, then something else: answered
    /// with [`GOAWAY_BAD_PREFACE`].
    BadPreface,
    /// Closed, failed or silent past the deadline before sending anything.
    Nothing,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Its first line and blank line: a client that sent these meant HTTP/2.
const PREFACE_START: &[u8] = b"PRI * HTTP/2.0\r\n\r\n";

/// GOAWAY, last stream 0, PROTOCOL_ERROR: the answer to a bad preface.
/// The RFC lets a server close without it; a client debugging its HTTP/2
/// learns more with it (the `h2` crate closes silently).
pub const GOAWAY_BAD_PREFACE: &[u8] = &[
    0, 0, 8, 0x7, 0, 0, 0, 0, 0, // length 8, GOAWAY, no flags, stream 0
    0, 0, 0, 0, // last stream id
    0, 0, 0, 0x1, // PROTOCOL_ERROR
];

/// Looks at a new connection's first bytes without consuming them.
pub async fn sniff(stream: &TcpStream, deadline: Duration) -> FirstBytes {
    let look = async {
        let mut buf = [0u8; PREFACE.len()];
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return FirstBytes::Nothing,
                Ok(n) => n,
            };
            if buf[..n] != PREFACE[..n] {
                if buf.starts_with(PREFACE_START) {
                    return FirstBytes::BadPreface;
                }
                return FirstBytes::Http1;
            }
            if n == PREFACE.len() {
                return FirstBytes::Http2;
            }
            // A preface split across segments: peek returns what is there
            // at once, so wait a little before looking again.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(deadline, look)
        .await
        .unwrap_or(FirstBytes::Nothing)
}

/// Reads the preface of an HTTP/2 connection negotiated by ALPN, where
/// peeking is not possible, and hands the stream back with the preface to
/// be read again; `None` after a wrong preface (answered with
/// [`GOAWAY_BAD_PREFACE`]), a close or the deadline.
pub async fn check_preface<S>(mut stream: S, deadline: Duration) -> Option<ParkableIo<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; PREFACE.len()];
    match tokio::time::timeout(deadline, stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) if buf == PREFACE => {
            let mut io = ParkableIo::new(stream);
            io.unpark(Bytes::from_static(PREFACE));
            Some(io)
        }
        Ok(Ok(_)) => {
            let answer = async {
                stream.write_all(GOAWAY_BAD_PREFACE).await?;
                stream.shutdown().await
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
            None
        }
        Ok(Err(_)) | Err(_) => None,
    }
}

/// Sent when a request head is begun but not finished in time. hyper
/// itself would close without a word.
pub const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// Writes `response` (a complete one) and closes, giving up after a
/// second: the client may not be reading.
pub async fn answer_and_close<S>(mut io: S, response: &[u8])
where
    S: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let write = async {
        io.write_all(response).await?;
        io.shutdown().await
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
}
