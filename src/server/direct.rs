//! An HTTP/1.1 connection (plain or TLS) on the direct path (see
//! `proxy::front_direct`): reads request heads, has the proxy serve the plain
//! ones, and gives the connection up — to hyper at the first request it
//! does not take, to the lot once idle for [`PARK_AFTER`], or closed.
//!
//! The connection rules are hyper's path's: a head must be complete within
//! `request_header_timeout` of its first byte (else 408 and close), an
//! idle connection closes after `idle_timeout`, a graceful stop closes an
//! idle connection at once and a busy one after its response, and after a
//! binary upgrade responses say `Connection: close`.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::Server;
use super::park::{PARK_AFTER, ParkableIo, REQUEST_TIMEOUT, answer_and_close};
use crate::proxy::front_direct::{Client, Outcome, Plan, Scratch};
use crate::proxy::{ClientConn, ConnActivity};

/// How a connection left the direct path.
pub(super) enum DirectEnd<S> {
    Closed,
    /// Idle with nothing unread: to be parked.
    Idle(S),
    /// For hyper, with the bytes read but not served replayed first.
    Fallback(ParkableIo<S>),
}

/// What a client's read buffer grows by: most request heads fit in far
/// less; a larger one grows it up to `max_header_bytes`.
const READ_SIZE: usize = 4 * 1024;

impl Server {
    /// Serves `stream` (a plain socket or a TLS stream) on the direct path
    /// for as long as it can.
    pub(super) async fn serve_direct<S>(
        &self,
        mut stream: S,
        client: &ClientConn,
        activity: &Arc<ConnActivity>,
        can_park: bool,
    ) -> DirectEnd<S>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut buf = BytesMut::new();
        let mut scratch = Scratch::default();
        // When the first byte of the head being read came.
        let mut head_began: Option<Instant> = None;
        loop {
            if !buf.is_empty() {
                match self.proxy.direct_plan(&buf, client, &mut scratch) {
                    // Too large: hyper answers 431.
                    Plan::Serve(ticket) if ticket.head_len() > self.max_header_bytes => {
                        return fallback(stream, &buf);
                    }
                    Plan::Serve(ticket) => {
                        let len = ticket.request_len();
                        let mut to = Client {
                            stream: &mut stream,
                            conn: client,
                            activity,
                        };
                        let outcome = self
                            .proxy
                            .direct_serve(ticket, &buf, &mut to, &mut scratch)
                            .await;
                        buf.advance(len);
                        // What the client sent while its request queued.
                        if !scratch.early.is_empty() {
                            buf.extend_from_slice(&scratch.early);
                            scratch.early.clear();
                        }
                        head_began = (!buf.is_empty()).then(Instant::now);
                        if outcome == Outcome::Close {
                            shut(&mut stream).await;
                            return DirectEnd::Closed;
                        }
                        continue;
                    }
                    Plan::Fallback => return fallback(stream, &buf),
                    // Too large for the direct path: hyper answers 431.
                    Plan::Partial if buf.len() > self.max_header_bytes => {
                        return fallback(stream, &buf);
                    }
                    Plan::Partial => {}
                }
            }
            let deadline = match head_began {
                Some(began) => began + self.header_timeout,
                None => {
                    let since = activity.idle_since().unwrap_or_else(Instant::now);
                    let park_at = since + PARK_AFTER;
                    let close_at = since + self.idle_timeout;
                    if can_park {
                        park_at.min(close_at)
                    } else {
                        close_at
                    }
                }
            };
            if buf.capacity() - buf.len() < 512 {
                buf.reserve(READ_SIZE);
            }
            tokio::select! {
                biased;
                // Idle: a stop closes it now. (A head on its way still
                // gets its answer.)
                () = self.shutdown.cancelled(), if head_began.is_none() => return DirectEnd::Closed,
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return DirectEnd::Closed,
                    Ok(_) => {
                        head_began.get_or_insert_with(Instant::now);
                    }
                },
                () = tokio::time::sleep_until(deadline) => {
                    if head_began.is_some() {
                        metrics::counter!(crate::telemetry::names::REQUEST_HEAD_TIMEOUTS_TOTAL)
                            .increment(1);
                        tracing::debug!(peer = %client.peer, "request head not complete in time; 408");
                        answer_and_close(stream, REQUEST_TIMEOUT).await;
                        return DirectEnd::Closed;
                    }
                    let idle_for = activity.idle_since().map(|s| s.elapsed()).unwrap_or_default();
                    if idle_for >= self.idle_timeout {
                        tracing::debug!(peer = %client.peer, "closing idle client connection");
                        return DirectEnd::Closed;
                    }
                    if can_park && idle_for >= PARK_AFTER {
                        return DirectEnd::Idle(stream);
                    }
                }
            }
        }
    }
}

/// Closes the client's side after the connection's last response.
/// Bounded: a TLS close_notify waits on a client that may not be reading.
async fn shut<S: AsyncWrite + Unpin>(stream: &mut S) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.shutdown()).await;
}

/// Hands the connection to hyper with `unread` to be read first.
fn fallback<S>(stream: S, unread: &[u8]) -> DirectEnd<S> {
    metrics::counter!(crate::telemetry::names::DIRECT_FALLBACKS_TOTAL).increment(1);
    let mut io = ParkableIo::new(stream);
    io.unpark(bytes::Bytes::copy_from_slice(unread));
    DirectEnd::Fallback(io)
}
