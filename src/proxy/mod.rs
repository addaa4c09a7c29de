//! The hot path: match a route, pick an upstream, forward the request and
//! stream the response back.
//!
//! Two fronts read requests — `front_hyper` (hyper's server) and
//! `front_direct` (the direct HTTP/1.1 path) — and neither knows the
//! other: both hand the request to the one request engine (`engine`)
//! through its `Front` seam, which holds every policy (sticky pin,
//! retries, attempts, outcomes, metrics, the access log). `wire` is HTTP
//! as bytes, pure; `h1_upstream` the raw-socket exchange with an HTTP/1.1
//! upstream both fronts use; `error` the one map from a failure to the
//! client's answer.
//!
//! Reads the routing table once per request through `Routing::load` and
//! upstream atomics; never imports `admin` or `health`, never takes a lock the
//! control plane can hold.

mod activity;
mod body;
mod engine;
mod error;
pub mod front_direct;
mod front_hyper;
mod h1_upstream;
mod max_forwards;
mod mirror;
mod out_of_step;
mod pools;
mod request_body;
pub mod request_id;
mod request_metrics;
mod retry;
mod tunnel;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::task::TaskTracker;

pub use activity::{ActiveRequest, ConnActivity};
pub use body::{RequestTimer, ResponseBody};
pub use error::{ProxyError, Side};
pub use pools::{SWEEP_INTERVAL as UPSTREAM_SWEEP_INTERVAL, SendError};
pub use request_body::{BodyFeed, ClientBody, FedBody, RequestBody};

use crate::access_log::AccessLog;
use crate::config::ProxySettings;
use crate::routing::{RouteTable, Routing};
use pools::ConnectionPools;
use request_metrics::RequestMetricsCache;
use wire::headers;

/// Everything a request needs, shared by all connections.
pub struct Proxy {
    routing: Arc<Routing>,
    /// Shared with shadow copies' tasks.
    pools: Arc<ConnectionPools>,
    settings: ProxySettings,
    /// Upgraded (WebSocket) tunnels, so a graceful stop can wait for them.
    tunnels: TaskTracker,
    access_log: Option<AccessLog>,
    /// Spans of requests, with `[tracing]`.
    tracing: crate::traces::SharedTracing,
    request_metrics: RequestMetricsCache,
}

/// What the proxy knows about the client connection a request came on.
#[derive(Debug, Clone)]
pub struct ClientConn {
    pub peer: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// The peer's IP address as an `X-Forwarded-For` element.
    pub forwarded_for: http::HeaderValue,
    /// What the TLS handshake settled, on a TLS listener.
    pub tls: Option<Arc<TlsInfo>>,
    /// The address the client reached cutover on (a `send_proxy`
    /// header's destination).
    pub local: Option<SocketAddr>,
}

/// A TLS connection's facts, read once after its handshake, for the
/// access log.
#[derive(Debug)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The server name the client asked for (SNI).
    pub sni: Option<String>,
    /// The verified client certificate's subject (mTLS listeners).
    pub client_subject: Option<String>,
}

impl TlsInfo {
    pub fn of(conn: &rustls::ServerConnection) -> TlsInfo {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        // The certificate was verified in the handshake; its subject is
        // only read here.
        let client_subject = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
            .map(|(_, cert)| cert.subject().to_string());
        TlsInfo {
            version,
            sni: conn.server_name().map(str::to_string),
            client_subject,
        }
    }
}

impl ClientConn {
    pub fn new(peer: SocketAddr, proto: &'static str) -> ClientConn {
        ClientConn {
            peer,
            proto,
            forwarded_for: headers::forwarded_for_value(peer.ip()),
            tls: None,
            local: None,
        }
    }

    /// The same client, having reached cutover at `local`.
    pub fn at(self, local: Option<SocketAddr>) -> ClientConn {
        ClientConn { local, ..self }
    }

    /// Source and destination for a PROXY protocol header toward an
    /// upstream; `None` when the destination is unknown.
    pub fn proxy_addrs(&self) -> Option<(SocketAddr, SocketAddr)> {
        Some((self.peer, self.local?))
    }

    /// A client on a TLS connection whose handshake is done.
    pub fn over_tls(peer: SocketAddr, conn: &rustls::ServerConnection) -> ClientConn {
        ClientConn {
            tls: Some(Arc::new(TlsInfo::of(conn))),
            ..ClientConn::new(peer, "https")
        }
    }
}

impl Proxy {
    pub fn new(
        routing: Arc<Routing>,
        settings: ProxySettings,
        tunnels: TaskTracker,
        access_log: Option<AccessLog>,
        tracing: crate::traces::SharedTracing,
    ) -> Proxy {
        Proxy {
            routing,
            pools: Arc::new(ConnectionPools::new(&settings)),
            settings,
            tunnels,
            access_log,
            tracing,
            request_metrics: RequestMetricsCache::default(),
        }
    }

    /// Keeps one upstream connection pool per upstream of `table`; a
    /// draining upstream's idle connections are closed. Called by the
    /// control plane after each table swap.
    pub fn sync_upstreams(&self, table: &RouteTable) {
        self.pools.sync(table);
    }

    /// Closes upstream connections idle past `upstream_idle_timeout` every
    /// [`UPSTREAM_SWEEP_INTERVAL`] until `shutdown`, even when no request
    /// comes to notice.
    pub fn sweep_idle_upstream_connections(
        self: &Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let proxy = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPSTREAM_SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => proxy.pools.sweep(),
                    _ = shutdown.cancelled() => break,
                }
            }
        });
    }
}
