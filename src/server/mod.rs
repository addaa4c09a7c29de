//! Client-facing listeners: accept under a connection limit, serve HTTP/1.1
//! and HTTP/2 on the same socket (prior knowledge in clear text, ALPN over
//! TLS), close idle connections,
//! and shut connections down gracefully when asked.
//!
//! Two ways to end connections: `shutdown` (SIGTERM: idle connections close
//! at once, busy ones after their response) and `retire` (after a binary
//! upgrade, when the listening sockets live on in the new process: an
//! HTTP/1 connection closes only after a response that says
//! `Connection: close`, or once idle for `idle_timeout`, so no client's
//! request meets a closing socket; HTTP/2 gets GOAWAY).
//!
//! `connection` serves one connection; `park` takes idle HTTP/1.1
//! connections back from hyper, and `lot` keeps the plain ones, outside the
//! runtime, until their clients send again.

mod connection;
mod direct;
pub mod fd_limit;
mod h2;
mod lot;
mod park;
mod proxy_protocol;
mod side_wake;

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::collections::HashMap;

use crate::config::ProxyProtocol;
use crate::config::{ListenerConfig, ProxySettings};
use crate::proxy::Proxy;
use crate::tls::{self, CertStore};
use arc_swap::{ArcSwap, ArcSwapOption};

/// A listener on `bind`: the socket passed by systemd or the previous
/// process if there is one, else a fresh bind.
pub async fn listen(
    bind: SocketAddr,
    passed: Option<std::net::TcpListener>,
) -> std::io::Result<TcpListener> {
    match passed {
        Some(socket) => {
            socket.set_nonblocking(true)?;
            TcpListener::from_std(socket)
        }
        None => TcpListener::bind(bind).await,
    }
}

/// A listening socket that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// What every connection of every listener shares.
pub struct Server {
    proxy: Arc<Proxy>,
    /// HTTP/2 connections: h2c with prior knowledge, and TLS with ALPN h2.
    /// (hyper-util's auto builder: it would also serve HTTP/1.1.)
    http: auto::Builder<TokioExecutor>,
    /// HTTP/1.1 connections, plain and TLS, which are parked when idle.
    http1: hyper::server::conn::http1::Builder,
    /// cutover's own HTTP/2 server's limits (`h2`); `None`: HTTP/2 goes
    /// to hyper (`proxy.direct_http2 = false`).
    h2: Option<h2::Limits>,
    connections: Arc<Semaphore>,
    max_connections: usize,
    accept_errors: fd_limit::AcceptErrors,
    idle_timeout: Duration,
    header_timeout: Duration,
    max_header_bytes: usize,
    shutdown: CancellationToken,
    retire: CancellationToken,
    tracker: TaskTracker,
    /// Looked up once: the registry lookup hashes and locks.
    open_gauge: metrics::Gauge,
    parked_gauge: metrics::Gauge,
    /// Where idle plain HTTP/1.1 connections wait (see `lot`).
    lot: std::sync::OnceLock<Option<lot::Lot<connection::ParkedConn>>>,
}

impl Server {
    pub fn new(
        proxy: Arc<Proxy>,
        settings: &ProxySettings,
        shutdown: CancellationToken,
        retire: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Server> {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            // hyper starts this timer whenever it waits for a request head,
            // so it also bounds how long an HTTP/1.1 keep-alive connection
            // may sit idle (see docs/configuration.md).
            .header_read_timeout(settings.request_header_timeout)
            // A request head that does not fit the read buffer is answered
            // with 431; bodies stream through it in pieces. Config keeps
            // this at or above hyper's minimum of 8 KiB.
            .max_buf_size(settings.max_header_bytes)
            // A client that shuts its write side after a request still
            // gets the answer, as on the direct path (hyper would drop it).
            .half_close(true);
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .half_close(true)
            .header_read_timeout(settings.request_header_timeout)
            .max_buf_size(settings.max_header_bytes)
            // The buffer limit alone let a head up to twice as large
            // through when it arrived in one read; this checks the head.
            .max_header_size(settings.max_header_bytes);
        http.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
        Arc::new(Server {
            proxy,
            http,
            http1,
            h2: settings
                .direct_http2
                .then(|| h2::Limits::new(settings.max_header_bytes, settings.idle_timeout)),
            connections: Arc::new(Semaphore::new(settings.max_connections)),
            max_connections: settings.max_connections,
            accept_errors: fd_limit::AcceptErrors::default(),
            idle_timeout: settings.idle_timeout,
            header_timeout: settings.request_header_timeout,
            max_header_bytes: settings.max_header_bytes,
            shutdown,
            retire,
            tracker,
            open_gauge: metrics::gauge!(crate::telemetry::names::CLIENT_CONNECTIONS),
            parked_gauge: metrics::gauge!(crate::telemetry::names::CLIENT_CONNECTIONS_PARKED),
            lot: std::sync::OnceLock::new(),
        })
    }

    /// Accepts on `listener` until `stop` (or shutdown), then closes it so
    /// new connections are refused. Connections already accepted carry on.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        stop: CancellationToken,
        settings: Arc<ListenerSettings>,
    ) {
        let local = listener.local_addr().ok();
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&self.connections).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break, // semaphore closed: shutting down
                },
                _ = stop.cancelled() => break,
            };
            let accepted = tokio::select! {
                // Stop first: once handed over, queued connections are
                // the new process's.
                biased;
                _ = stop.cancelled() => break,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "set_nodelay failed");
                    }
                    let server = Arc::clone(&self);
                    let how = settings.accept();
                    // Behind a TCP load balancer: the PROXY header first.
                    if let Some(header) = settings.proxy.load_full() {
                        self.tracker
                            .spawn(server.serve_proxied(stream, peer, permit, header, how, local));
                        continue;
                    }
                    match how {
                        Accept::Plain { http2_only } => {
                            self.tracker
                                .spawn(server.serve_plain(stream, peer, permit, true, http2_only));
                        }
                        Accept::Tls(acceptor) => {
                            self.tracker
                                .spawn(server.serve_tls(acceptor, stream, peer, permit, local));
                        }
                    }
                }
                Err(e) => {
                    // Usually EMFILE/ENFILE: back off briefly instead of
                    // spinning on a listener that cannot accept.
                    let open = self.max_connections - self.connections.available_permits();
                    self.accept_errors.report(local, &e, open);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        tracing::info!(listener = ?local, "listener closed");
    }
}

/// The client-facing listeners, keyed by their configured address, so a
/// reload can add and remove listeners without touching the others.
pub struct Listeners {
    server: Arc<Server>,
    active: Vec<Active>,
    /// Sockets passed by systemd, used instead of binding their address.
    inherited: std::collections::HashMap<SocketAddr, std::net::TcpListener>,
}

/// What a reload may change of a listener that stays bound, read per
/// connection.
pub struct ListenerSettings {
    proxy: ArcSwapOption<ProxyProtocol>,
    /// `http2_only`: HTTP/2 with prior knowledge (plain), ALPN `h2`
    /// alone (TLS).
    http2_only: AtomicBool,
    /// A TLS listener's rustls config (its ALPN list follows `http2_only`).
    tls: Option<(Arc<CertStore>, ArcSwap<rustls::ServerConfig>)>,
}

/// How one accepted connection is served.
enum Accept {
    Plain { http2_only: bool },
    Tls(TlsAcceptor),
}

impl ListenerSettings {
    fn new(config: Option<&ListenerConfig>, store: Option<Arc<CertStore>>) -> ListenerSettings {
        let http2_only = config.is_some_and(|l| l.http2_only);
        ListenerSettings {
            proxy: ArcSwapOption::from(config.and_then(|l| l.proxy_protocol.clone()).map(Arc::new)),
            http2_only: AtomicBool::new(http2_only),
            tls: store.map(|s| {
                let config = tls::server_config(Arc::clone(&s), http2_only);
                (s, ArcSwap::new(config))
            }),
        }
    }

    /// A reload's settings for this (kept) listener.
    fn update(&self, config: Option<&ListenerConfig>) {
        self.proxy
            .store(config.and_then(|l| l.proxy_protocol.clone()).map(Arc::new));
        let http2_only = config.is_some_and(|l| l.http2_only);
        if self.http2_only.swap(http2_only, Ordering::AcqRel) != http2_only
            && let Some((store, current)) = &self.tls
        {
            current.store(tls::server_config(Arc::clone(store), http2_only));
        }
    }

    fn accept(&self) -> Accept {
        match &self.tls {
            Some((_, config)) => Accept::Tls(TlsAcceptor::from(config.load_full())),
            None => Accept::Plain {
                http2_only: self.http2_only.load(Ordering::Acquire),
            },
        }
    }
}

struct Active {
    bind: SocketAddr,
    local: SocketAddr,
    /// A duplicate of the listening socket, for a binary upgrade to pass on.
    socket: OwnedFd,
    tls: Option<Arc<CertStore>>,
    /// Its PROXY protocol and HTTP/2-only settings, changed by a reload.
    settings: Arc<ListenerSettings>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Listeners {
    pub fn new(server: Arc<Server>) -> Listeners {
        Listeners {
            server,
            active: Vec::new(),
            inherited: std::collections::HashMap::new(),
        }
    }

    /// Sockets (from socket activation) to use for their addresses.
    pub fn inherit(
        &mut self,
        sockets: std::collections::HashMap<SocketAddr, std::net::TcpListener>,
    ) {
        self.inherited = sockets;
    }

    /// Makes the set of listeners equal `binds`: binds every new address
    /// first (if one fails, nothing changes), then closes the removed ones.
    /// `certs` holds the already loaded certificates of each TLS listener;
    /// kept TLS listeners get them for new handshakes.
    pub async fn reconcile(
        &mut self,
        listeners: &[ListenerConfig],
        certs: &HashMap<SocketAddr, tls::ListenerTls>,
    ) -> Result<(), BindError> {
        let binds: Vec<SocketAddr> = listeners.iter().map(|l| l.bind).collect();
        let mut fresh = Vec::new();
        for bind in &binds {
            if let Some(a) = self.active.iter().find(|a| a.bind == *bind) {
                let config = listeners.iter().find(|l| l.bind == *bind);
                a.settings.update(config);
                if let (Some(store), Some(new)) = (&a.tls, certs.get(bind)) {
                    store.replace_all(new);
                    store.export_expiry(&a.local.to_string());
                }
                continue;
            }
            let bind_error = |source| BindError {
                addr: *bind,
                source,
            };
            let listener = listen(*bind, self.inherited.remove(bind))
                .await
                .map_err(bind_error)?;
            let local = listener.local_addr().map_err(bind_error)?;
            let socket = listener.as_fd().try_clone_to_owned().map_err(bind_error)?;
            fresh.push((*bind, local, socket, listener));
        }
        // Passed sockets the config no longer names must not linger: a
        // socket nobody accepts on would leave connections hanging.
        for (addr, _) in self.inherited.drain() {
            tracing::info!(%addr, "passed listener is not in the config; closed");
        }
        let mut kept = Vec::new();
        for a in self.active.drain(..) {
            if binds.contains(&a.bind) {
                kept.push(a);
            } else {
                a.stop.cancel();
                let _ = a.task.await;
                tracing::info!(addr = %a.local, "listener removed");
            }
        }
        self.active = kept;
        for (bind, local, socket, listener) in fresh {
            let stop = self.server.shutdown.child_token();
            let store = certs
                .get(&bind)
                .map(|c| CertStore::with_client_auth(c.clone()));
            if let Some(s) = &store {
                s.export_expiry(&local.to_string());
            }
            let config = listeners.iter().find(|l| l.bind == bind);
            let settings = Arc::new(ListenerSettings::new(config, store.clone()));
            let task = tokio::spawn(Arc::clone(&self.server).serve(
                listener,
                stop.clone(),
                Arc::clone(&settings),
            ));
            tracing::info!(addr = %local, "listening");
            self.active.push(Active {
                bind,
                local,
                socket,
                tls: store,
                settings,
                stop,
                task,
            });
        }
        // Keep the configured order for addrs().
        self.active
            .sort_by_key(|a| binds.iter().position(|b| *b == a.bind));
        Ok(())
    }

    /// A reload's listener step: loads the certificates of `listeners`,
    /// then [`reconcile`](Self::reconcile)s. Nothing changes on an error.
    pub async fn reload(&mut self, listeners: &[ListenerConfig]) -> Result<(), String> {
        let certs = tls::load_listeners(listeners).map_err(|p| p.join("; "))?;
        self.reconcile(listeners, &certs)
            .await
            .map_err(|e| e.to_string())
    }

    /// Bound addresses, in config order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.active.iter().map(|a| a.local).collect()
    }

    /// A duplicate of each listening socket with its configured address,
    /// to pass to a new process.
    pub fn duplicate_sockets(&self) -> std::io::Result<Vec<(SocketAddr, OwnedFd)>> {
        self.active
            .iter()
            .map(|a| Ok((a.bind, a.socket.try_clone()?)))
            .collect()
    }

    /// Closes every listener and waits until their sockets are closed.
    pub async fn close_all(&mut self) {
        for a in self.active.drain(..) {
            a.stop.cancel();
            let _ = a.task.await;
        }
    }
}

/// A handshake that failed on the client's certificate: none given where
/// one is required, or one that does not chain to the listener's CA
/// (expired, another CA's, not for client use).
fn refused_client_certificate(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)
            )
        })
}

impl Server {
    /// A TLS connection: the handshake, bounded like a request head, then
    /// HTTP/2 or HTTP/1.1 as ALPN decides (RFC 9113 §3.2).
    async fn serve_tls(
        self: Arc<Self>,
        acceptor: TlsAcceptor,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
        local: Option<SocketAddr>,
    ) {
        // An HTTP/2-only listener offers ALPN h2 alone: a client that
        // negotiated nothing speaks HTTP/2 or is refused by its preface.
        let http2_only = acceptor.config().alpn_protocols == [b"h2".to_vec()];
        match tokio::time::timeout(self.header_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) if http2_only || tls.get_ref().1.alpn_protocol() == Some(b"h2") => {
                self.serve_tls_http2(tls, peer, permit).await
            }
            // HTTP/1.1, which can park when idle.
            Ok(Ok(tls)) => self.serve_tls_http1(tls, peer, permit).await,
            Ok(Err(e)) => {
                if refused_client_certificate(&e) {
                    let listener = local.map_or_else(String::new, |l| l.to_string());
                    metrics::counter!(crate::telemetry::names::TLS_CLIENT_CERTIFICATES_REFUSED_TOTAL, "listener" => listener)
                        .increment(1);
                }
                tracing::debug!(%peer, error = %e, "TLS handshake failed")
            }
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    }

    /// A connection on a listener behind a TCP load balancer: its PROXY
    /// header (required from a trusted proxy, refused from anyone else),
    /// then served as the client the header names.
    async fn serve_proxied(
        self: Arc<Self>,
        mut stream: tokio::net::TcpStream,
        peer: SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
        header: Arc<ProxyProtocol>,
        how: Accept,
        local: Option<SocketAddr>,
    ) {
        let client = match proxy_protocol::accept(&mut stream, peer, &header, self.header_timeout)
            .await
        {
            proxy_protocol::Outcome::Client(client) => client,
            proxy_protocol::Outcome::Refused(reason) => {
                let listener = local.map_or_else(String::new, |l| l.to_string());
                metrics::counter!(crate::telemetry::names::PROXY_PROTOCOL_REFUSED_TOTAL, "listener" => listener, "reason" => reason)
                        .increment(1);
                tracing::debug!(%peer, reason, "PROXY protocol header refused; closed");
                return;
            }
        };
        match how {
            // Never parked: a parked connection's peer is read again from
            // its socket, which is the balancer's.
            Accept::Plain { http2_only } => {
                Box::pin(self.serve_plain(stream, client, permit, false, http2_only)).await
            }
            Accept::Tls(acceptor) => {
                Box::pin(self.serve_tls(acceptor, stream, client, permit, local)).await
            }
        }
    }
}
