//! An HTTP/2 (prior knowledge) load client on the `h2` crate that handles
//! a graceful GOAWAY the way RFC 9113 §6.8 describes: requests the server
//! accepted complete on the old connection, new ones — and ones the
//! server's GOAWAY says it did not process — go on a new one.
//!
//! Why not hyper's client here: hyper 1.x can fail a request that was
//! already accepted when a graceful GOAWAY arrives at the same moment
//! (its client task re-checks readiness after opening the stream and
//! fails the request on the GOAWAY; see hyperium/hyper#2500). The binary
//! upgrade tests send GOAWAY under load on purpose, and must not blame
//! cutover for that client bug.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Uri;

pub struct H2Client {
    addr: SocketAddr,
    sender: Option<h2::client::SendRequest<Bytes>>,
}

impl H2Client {
    pub fn new(url: &str) -> H2Client {
        let uri: Uri = url.parse().expect("load URL");
        let authority = uri.authority().expect("load URL has an authority");
        H2Client {
            addr: authority.as_str().parse().expect("load URL is IP:PORT"),
            sender: None,
        }
    }

    async fn connect(&self) -> Result<h2::client::SendRequest<Bytes>, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (sender, connection) = h2::client::handshake(tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// GETs `url`; Ok with the status once the whole body arrived.
    pub async fn get(&mut self, url: &str) -> Result<u16, String> {
        // A new connection is needed only when the old one would not take
        // the request or the server refused it unprocessed: either way the
        // upstream never saw it, so sending it again hides no failure.
        for _ in 0..3 {
            let sender = match self.sender.take() {
                Some(s) => s,
                None => self.connect().await?,
            };
            let Ok(mut sender) = sender.ready().await else {
                continue;
            };
            let request = http::Request::get(url).body(()).expect("request");
            let Ok((response, _)) = sender.send_request(request, true) else {
                continue;
            };
            self.sender = Some(sender);
            let response = match response.await {
                Ok(response) => response,
                // The stream was opened above the last stream id of the
                // server's final GOAWAY: the server did not process it, and
                // a client may send it again on a new connection (RFC 9113
                // §6.8), as browsers do. This happens when the client's
                // PING ACK overtakes a HEADERS frame it had already queued.
                // A stream the server accepted and then dropped fails with
                // a reset or broken pipe instead, and counts.
                Err(e) if refused_by_go_away(&e) => {
                    self.sender = None;
                    continue;
                }
                Err(e) => return Err(format!("response: {e}")),
            };
            let status = response.status().as_u16();
            let mut body = response.into_body();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(|e| format!("body: {e}"))?;
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            return Ok(status);
        }
        Err("no connection would take the request".into())
    }
}

fn refused_by_go_away(e: &h2::Error) -> bool {
    e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR)
}
