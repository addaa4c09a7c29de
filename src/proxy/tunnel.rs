//! Upgraded connections (WebSocket and other HTTP/1.1 `Upgrade`s): once both
//! sides have switched protocols, bytes are copied both ways until either
//! side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::upstream::InFlight;

/// Runs one tunnel. The upstream counts it as in flight while it is open,
/// so a drain waits for it.
pub async fn run(client: OnUpgrade, upstream: OnUpgrade, in_flight: InFlight) {
    let addr = in_flight.upstream().addr();
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(%addr, error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((to_upstream, to_client)) => {
            tracing::debug!(%addr, to_upstream, to_client, "tunnel closed");
        }
        Err(e) => tracing::debug!(%addr, error = %e, "tunnel ended with an error"),
    }
    drop(in_flight);
}
