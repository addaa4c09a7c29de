//! Upgraded connections (WebSocket and other HTTP/1.1 `Upgrade`s): once both
//! sides have switched protocols, bytes are copied both ways until either
//! side closes — or until a drain of the upstream passes its deadline.
//! Then a WebSocket tunnel is ended like a server going away: a close
//! frame (1001) to the client and one to the upstream, each put between
//! two of the peers' frames (`wire::ws_frames`); any other tunnel is
//! closed. Tunnels end within `PACE` of each other after the deadline, so
//! their clients do not all reconnect in the same instant.

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::wire::ws_frames::{FrameBoundaries, GOING_AWAY_TO_CLIENT, going_away_to_server};
use crate::telemetry::names;
use crate::upstream::{InFlight, UpstreamState};

/// Past the deadline, each tunnel ends after a random wait below this.
const PACE: Duration = Duration::from_secs(1);
/// How long a frame under way may take to end once the tunnel is ending;
/// after it the connection is closed without a close frame.
const FRAME_GRACE: Duration = Duration::from_secs(2);

/// Runs one tunnel. The upstream counts it as in flight while it is open,
/// so a drain waits for it (until its deadline), and as an open tunnel.
pub async fn run(client: OnUpgrade, upstream: OnUpgrade, in_flight: InFlight, websocket: bool) {
    let state = Arc::clone(in_flight.upstream());
    let addr = state.addr();
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(%addr, error = %e, "upgrade did not complete");
            return;
        }
    };
    let _open = state.tunnel_opened();
    let (client_read, client_write) = tokio::io::split(TokioIo::new(client));
    let (upstream_read, upstream_write) = tokio::io::split(TokioIo::new(upstream));
    let ending = CancellationToken::new();
    let to_upstream = pump(client_read, upstream_write, websocket, &ending);
    let to_client = pump(upstream_read, client_write, websocket, &ending);
    let (to_upstream, to_client) = tokio::select! {
        both = async { tokio::join!(to_upstream, to_client) } => both,
        () = end_at_drain_deadline(Arc::clone(&state), &ending) => unreachable!("never returns"),
    };
    if ending.is_cancelled() {
        tracing::debug!(%addr, websocket, "tunnel ended by the upstream's drain");
        metrics::counter!(names::TUNNELS_DRAINED_TOTAL, "upstream" => Arc::clone(state.label()))
            .increment(1);
        let mask = fastrand::u32(..).to_be_bytes();
        go_away(
            to_upstream,
            websocket.then_some(&going_away_to_server(mask)[..]),
        )
        .await;
        go_away(to_client, websocket.then_some(&GOING_AWAY_TO_CLIENT[..])).await;
    }
    drop(in_flight);
}

/// Cancels `ending` once `state` is draining past its deadline (after a
/// random part of `PACE`); never returns.
async fn end_at_drain_deadline(state: Arc<UpstreamState>, ending: &CancellationToken) {
    state.drain_deadline_reached().await;
    tokio::time::sleep(PACE.mul_f64(fastrand::f64())).await;
    ending.cancel();
    std::future::pending().await
}

/// How one direction of a tunnel stopped.
enum Pumped<W> {
    /// Its reader closed (or failed): the writer was shut down.
    Closed,
    /// The tunnel is ending: the writer, and whether the stream written
    /// is between two frames (a close frame of ours may follow).
    Stopped { to: W, at_boundary: bool },
}

/// Copies `from` to `to` until `from` ends, or, once `ending`, until the
/// frame under way is through (a WebSocket) or at once (anything else).
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    websocket: bool,
    ending: &CancellationToken,
) -> Pumped<W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = FrameBoundaries::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut grace_until = None;
    loop {
        let read = if ending.is_cancelled() {
            if !websocket || frames.at_boundary() {
                return Pumped::Stopped {
                    to,
                    at_boundary: websocket,
                };
            }
            // Only up to the end of the frame under way.
            let until =
                *grace_until.get_or_insert_with(|| tokio::time::Instant::now() + FRAME_GRACE);
            let want = frames.bytes_to_boundary().min(buf.len());
            match tokio::time::timeout_at(until, from.read(&mut buf[..want])).await {
                Ok(read) => read,
                Err(_) => {
                    return Pumped::Stopped {
                        to,
                        at_boundary: false,
                    };
                }
            }
        } else {
            tokio::select! {
                read = from.read(&mut buf) => read,
                () = ending.cancelled() => continue,
            }
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return Pumped::Closed;
            }
            Ok(n) => n,
        };
        if websocket {
            frames.feed(&buf[..n]);
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return Pumped::Closed;
        }
    }
}

/// Ends one side of a tunnel that is ending: `close` (a WebSocket close
/// frame) if the stream is between frames, then the write side shut.
async fn go_away<W: AsyncWrite + Unpin>(pumped: Pumped<W>, close: Option<&[u8]>) {
    let Pumped::Stopped {
        mut to,
        at_boundary,
    } = pumped
    else {
        return;
    };
    if let (Some(frame), true) = (close, at_boundary) {
        let _ = to.write_all(frame).await;
    }
    let _ = to.shutdown().await;
}
