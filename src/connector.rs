//! Making one connection to an upstream, as its pool says: TCP, then TLS
//! when the pool has `tls` (rustls; SNI and verification by its settings),
//! then HTTP/1.1 or HTTP/2 (prior knowledge in cleartext, ALPN over TLS).
//! Used by the proxy's connection pools and by health checks, so a probe
//! speaks to an upstream the way client requests do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use hyper::body::Body;

use crate::config::{SendProxy, UpstreamProtocol, UpstreamTls};

/// A connection's request side, sending bodies of type `B`.
pub enum Conn<B> {
    H1(http1::SendRequest<B>),
    /// Multiplexed: clones share the connection.
    H2(http2::SendRequest<B>),
}

/// What a request body must be for both protocols.
pub trait RequestBodyType:
    Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin + 'static
{
}

impl<B> RequestBodyType for B where
    B: Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}

/// How to connect to one pool's upstreams. Built when a table is
/// published; a TLS config that cannot be built makes every connect fail
/// (a 502 naming why), never a fall back to cleartext.
pub struct Connector {
    tls: Result<Option<Arc<rustls::ClientConfig>>, String>,
    settings: Option<UpstreamTls>,
    /// The TLS files' modification times when they were read.
    stamp: Vec<Option<std::time::SystemTime>>,
    pub protocol: UpstreamProtocol,
    /// Each connection starts with a PROXY protocol header.
    pub send_proxy: Option<SendProxy>,
}

impl Connector {
    pub fn new(
        pool: &str,
        tls: Option<&UpstreamTls>,
        protocol: UpstreamProtocol,
        send_proxy: Option<SendProxy>,
    ) -> Connector {
        let built = match tls {
            None => Ok(None),
            Some(t) => crate::upstream_tls::client_config(pool, t, protocol).map(Some),
        };
        if let Err(e) = &built {
            tracing::error!(%pool, error = %e, "upstream TLS cannot be set up: connections to this pool will fail");
        }
        Connector {
            tls: built,
            settings: tls.cloned(),
            stamp: tls
                .map(crate::upstream_tls::files_stamp)
                .unwrap_or_default(),
            protocol,
            send_proxy,
        }
    }

    /// Is this the connector for these settings, and are its files as they
    /// were read?
    pub fn is_for(
        &self,
        tls: Option<&UpstreamTls>,
        protocol: UpstreamProtocol,
        send_proxy: Option<SendProxy>,
    ) -> bool {
        self.settings.as_ref() == tls
            && self.protocol == protocol
            && self.send_proxy == send_proxy
            && tls
                .map(crate::upstream_tls::files_stamp)
                .unwrap_or_default()
                == self.stamp
    }

    pub fn is_tls(&self) -> bool {
        self.settings.is_some()
    }

    /// A new connection to `addr`, within `timeout` for TCP (and TLS).
    /// `on_unsolicited` runs if an HTTP/1.1 connection ends because the
    /// upstream sent bytes no request asked for. With `send_proxy`, the
    /// connection starts with a PROXY header naming `client` (source and
    /// destination), or saying it is cutover's own (a health check).
    pub async fn connect<B: RequestBodyType>(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        on_unsolicited: Option<OnUnsolicited>,
        client: Option<(SocketAddr, SocketAddr)>,
    ) -> Result<Conn<B>, ConnectError> {
        let mut stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Io(e)),
            Err(_) => return Err(ConnectError::Io(timed_out(timeout))),
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%addr, error = %e, "set_nodelay on an upstream connection failed");
        }
        if let Some(version) = self.send_proxy {
            use tokio::io::AsyncWriteExt;
            let header = proxy_header(version, client);
            match tokio::time::timeout(timeout, stream.write_all(&header)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(ConnectError::Io(e)),
                Err(_) => return Err(ConnectError::Io(timed_out(timeout))),
            }
        }
        let config = match &self.tls {
            Ok(None) => {
                let h2 = self.protocol == UpstreamProtocol::H2;
                return handshake(stream, h2, addr, on_unsolicited).await;
            }
            Ok(Some(config)) => Arc::clone(config),
            Err(e) => return Err(ConnectError::Tls(e.clone())),
        };
        let settings = self.settings.clone().unwrap_or_default();
        let name: ServerName<'static> =
            crate::upstream_tls::server_name(&settings, addr).map_err(ConnectError::Tls)?;
        let tls = tokio::time::timeout(timeout, TlsConnector::from(config).connect(name, stream))
            .await
            .map_err(|_| ConnectError::Io(timed_out(timeout)))?
            .map_err(|e| ConnectError::Tls(format!("TLS handshake with {addr}: {e}")))?;
        let alpn_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let h2 = match self.protocol {
            UpstreamProtocol::H2 if !alpn_h2 => {
                return Err(ConnectError::Tls(format!(
                    "{addr} did not agree to HTTP/2 by ALPN (protocol = \"h2\")"
                )));
            }
            UpstreamProtocol::H2 => true,
            UpstreamProtocol::Auto => alpn_h2,
            UpstreamProtocol::Http1 => false,
        };
        handshake(tls, h2, addr, on_unsolicited).await
    }
}

/// Told when an upstream sent bytes no request asked for (see `connect`).
pub type OnUnsolicited = Box<dyn FnOnce() + Send>;

/// hyper's error for bytes read on an HTTP/1.1 client connection with no
/// request waiting for them (hyper keeps its error kinds private).
fn is_unsolicited(e: &hyper::Error) -> bool {
    e.to_string() == "received unexpected message from connection"
}

fn timed_out(timeout: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("no connection within {timeout:?}"),
    )
}

/// Why no connection was made; nothing was sent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Io(#[source] std::io::Error),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Handshake(#[source] hyper::Error),
    /// An HTTP/2 stream the upstream refused or never opened (GOAWAY):
    /// like a failed connect, nothing was processed.
    #[error("not processed by the upstream: {0}")]
    NotProcessed(String),
}

async fn handshake<I, B>(
    io: I,
    h2: bool,
    addr: SocketAddr,
    on_unsolicited: Option<OnUnsolicited>,
) -> Result<Conn<B>, ConnectError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: RequestBodyType,
{
    if h2 {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        return Ok(Conn::H2(sender));
    }
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        // Upgrades: a 101 hands the connection to a WebSocket tunnel.
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream connection ended with an error");
            if let (true, Some(tell)) = (is_unsolicited(&e), on_unsolicited) {
                tell();
            }
        }
    });
    Ok(Conn::H1(sender))
}

/// A PROXY protocol header (`send_proxy`): the client's source and the
/// address it reached cutover on; without a client (a health check), a
/// v2 LOCAL or a v1 UNKNOWN header — the connection is cutover's own.
pub fn proxy_header(version: SendProxy, client: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    match (version, client) {
        (SendProxy::V1, Some(addrs)) => ppp::v1::Addresses::from(addrs).to_string().into_bytes(),
        (SendProxy::V1, None) => ppp::v1::Addresses::Unknown.to_string().into_bytes(),
        (SendProxy::V2, client) => {
            let (command, protocol, addresses) = match client {
                Some(addrs) => (
                    Command::Proxy,
                    Protocol::Stream,
                    ppp::v2::Addresses::from(addrs),
                ),
                None => (
                    Command::Local,
                    Protocol::Unspecified,
                    ppp::v2::Addresses::Unspecified,
                ),
            };
            // Only an I/O error on a Vec, which cannot happen.
            Builder::with_addresses(Version::Two | command, protocol, addresses)
                .build()
                .unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_headers_name_the_client_or_say_local() {
        let addrs: (SocketAddr, SocketAddr) = (
            "10.0.0.7:51000".parse().unwrap(),
            "10.0.1.5:8080".parse().unwrap(),
        );
        let client = Some(addrs);
        assert_eq!(
            proxy_header(SendProxy::V1, client),
            b"PROXY TCP4 10.0.0.7 10.0.1.5 51000 8080\r\n"
        );
        assert_eq!(proxy_header(SendProxy::V1, None), b"PROXY UNKNOWN\r\n");
        let v2 = proxy_header(SendProxy::V2, client);
        let parsed = ppp::v2::Header::try_from(v2.as_slice()).unwrap();
        assert_eq!(parsed.command, ppp::v2::Command::Proxy);
        assert_eq!(parsed.addresses, ppp::v2::Addresses::from(addrs));
        let local = proxy_header(SendProxy::V2, None);
        let parsed = ppp::v2::Header::try_from(local.as_slice()).unwrap();
        assert_eq!(parsed.command, ppp::v2::Command::Local);
    }
}
