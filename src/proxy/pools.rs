//! Keep-alive connection pools to upstreams, one per upstream address, so
//! that a drain can close an upstream's idle pooled connections at once.
//!
//! Built on hyper's connection API rather than hyper-util's pooled client:
//! a pool is a stack of idle HTTP/1.1 senders (or one shared HTTP/2
//! sender) behind a lock held for a
//! push or a pop, so a request costs no checkout futures, no connector
//! service and no extra channel hops (see docs/benchmarks.md). The most
//! recently used connection is reused first, which keeps few connections
//! warm. A connection goes back to its pool only once its response body
//! has been read to the end; any other connection is dropped, which
//! closes it.
//!
//! When an upstream starts draining, its pool is replaced by a fresh one:
//! the old pool's idle connections close when it is dropped, and
//! connections busy with in-flight requests finish them, then close instead
//! of returning to a pool that is gone.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use foldhash::HashMap;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use tokio::net::TcpStream;

use super::out_of_step::OutOfStep;
use super::request_body::RequestBody;
use crate::config::{ProxySettings, UpstreamProtocol};
use crate::connector::{Conn, ConnectError, Connector};
use crate::routing::{Pool, RouteTable};
use crate::telemetry::names;
use crate::upstream::now_ms;

type Sender = http1::SendRequest<RequestBody>;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made; nothing was sent.
    #[error("{0}")]
    Connect(#[source] ConnectError),
    /// The connection failed after (part of) the request may have been
    /// sent, or the upstream sent an invalid response.
    #[error("{0}")]
    Failed(#[source] hyper::Error),
    /// The direct path's exchange failed: the socket, or an answer it
    /// does not forward.
    #[error("{0}")]
    Direct(String),
}

impl SendError {
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, SendError::Connect(ConnectError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut)
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Idle {
    /// Still open, and idle for less than `limit`.
    fn usable(&self, limit: Duration) -> bool {
        !self.sender.is_closed() && self.since.elapsed() < limit
    }
}

/// A plain socket of the direct path, idle in its pool.
struct RawIdle {
    stream: TcpStream,
    since: Instant,
}

/// What an idle plain socket turned out to be.
#[derive(Debug, PartialEq)]
enum IdleState {
    Usable,
    /// Closed by the upstream, or idle too long.
    Gone,
    /// The upstream sent bytes no request asked for.
    Unsolicited,
}

impl RawIdle {
    /// Idle for less than `limit`, and nothing to read. tokio keeps the
    /// socket's readiness from its last epoll event, so the common case
    /// asks the kernel nothing; a readable socket is read once to tell an
    /// upstream's close from bytes nobody asked for.
    fn state(&self, limit: Duration) -> IdleState {
        if self.since.elapsed() >= limit {
            return IdleState::Gone;
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if self.stream.poll_read_ready(&mut cx).is_pending() {
            return IdleState::Usable;
        }
        let mut byte = [0u8; 1];
        match self.stream.try_read(&mut byte) {
            Ok(0) => IdleState::Gone,
            Ok(_) => IdleState::Unsolicited,
            // Readiness was stale: nothing arrived.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => IdleState::Usable,
            Err(_) => IdleState::Gone,
        }
    }
}

/// A plain socket to an upstream, lent to one direct-path request.
pub struct RawConn {
    pub stream: TcpStream,
    /// Taken from the pool (it may turn out closed): not a new connection.
    pub reused: bool,
}

/// Where a [`RawConn`] goes back after a complete exchange.
pub struct RawHome {
    pool: Weak<UpstreamPool>,
    max_idle: usize,
}

impl RawHome {
    /// The response was read to its end: the socket may carry another
    /// request. Dropping it instead closes it.
    pub fn release(&self, conn: RawConn) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if !pool.reuse_allowed() {
            return;
        }
        // Past `max_idle` too: see `SURPLUS_GRACE`.
        if let Ok(mut idle) = pool.raw_idle.lock()
            && self.max_idle > 0
        {
            idle.push(RawIdle {
                stream: conn.stream,
                since: Instant::now(),
            });
        }
    }

    /// The upstream sent bytes after a complete response: the socket
    /// (dropped by the caller) closes, and see [`OutOfStep`].
    pub fn out_of_step(&self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.out_of_step("after a response");
        }
    }
}

/// Streams cutover opens on one HTTP/2 connection before it opens another
/// to the same upstream: the smallest `SETTINGS_MAX_CONCURRENT_STREAMS` a
/// server should allow (RFC 9113 §6.5.2); hyper does not tell the peer's.
pub const H2_STREAMS_PER_CONNECTION: usize = 100;

/// One multiplexed HTTP/2 connection and the streams open on it.
struct H2Conn {
    sender: http2::SendRequest<RequestBody>,
    streams: Arc<AtomicUsize>,
}

/// A stream counted on its connection until its response ends.
struct OpenStream(Arc<AtomicUsize>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connections to one upstream of one pool: idle HTTP/1.1 ones, or
/// multiplexed HTTP/2 ones (one; another once each carries
/// [`H2_STREAMS_PER_CONNECTION`] streams).
struct UpstreamPool {
    addr: SocketAddr,
    pool: Arc<str>,
    connector: Connector,
    idle: Mutex<Vec<Idle>>,
    /// Idle plain sockets of the direct HTTP/1.1 path (see `direct`).
    raw_idle: Mutex<Vec<RawIdle>>,
    h2: Mutex<Vec<H2Conn>>,
    /// Held while an HTTP/2 (or ALPN-decided) connection is being made, so
    /// a burst of requests waits for it rather than each opening its own.
    connecting: tokio::sync::Mutex<()>,
    draining: bool,
    /// Whether connections may be reused, after unsolicited bytes.
    out_of_step: OutOfStep,
}

impl UpstreamPool {
    fn new(pool: &Pool, addr: SocketAddr, draining: bool) -> Arc<UpstreamPool> {
        // The upstream's counters exist, at 0, from the moment it does.
        for name in [
            names::UPSTREAM_CONNECT_ERRORS_TOTAL,
            names::UPSTREAM_EJECTIONS_TOTAL,
            names::UPSTREAM_UNSOLICITED_TOTAL,
        ] {
            metrics::counter!(name, "pool" => Arc::clone(&pool.name), "upstream" => addr.to_string())
                .increment(0);
        }
        Arc::new(UpstreamPool {
            addr,
            pool: Arc::clone(&pool.name),
            connector: Connector::new(
                &pool.name,
                pool.tls_for(addr),
                pool.protocol,
                pool.send_proxy,
            ),
            idle: Mutex::new(Vec::new()),
            raw_idle: Mutex::new(Vec::new()),
            h2: Mutex::new(Vec::new()),
            connecting: tokio::sync::Mutex::new(()),
            draining,
            out_of_step: OutOfStep::default(),
        })
    }

    /// The upstream sent bytes no request asked for (`seen`: while idle,
    /// or after a response): the connection that showed it is closed by
    /// whoever saw it; here its idle ones close too, and none is reused
    /// for a while. Counted and logged.
    fn out_of_step(&self, seen: &'static str) {
        let period = self.out_of_step.sign(now_ms());
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        if let Ok(mut idle) = self.raw_idle.lock() {
            idle.clear();
        }
        metrics::counter!(
            names::UPSTREAM_UNSOLICITED_TOTAL,
            "pool" => Arc::clone(&self.pool),
            "upstream" => self.addr.to_string()
        )
        .increment(1);
        tracing::warn!(
            pool = %self.pool,
            upstream = %self.addr,
            seen,
            no_reuse = ?Duration::from_millis(period),
            "upstream sent bytes no request asked for: that connection is closed and none is reused for a while"
        );
    }

    fn reuse_allowed(&self) -> bool {
        self.out_of_step.reuse_allowed(now_ms)
    }

    fn forget_h2(&self, stream: &OpenStream) {
        if let Ok(mut conns) = self.h2.lock() {
            conns.retain(|c| !Arc::ptr_eq(&c.streams, &stream.0));
        }
    }

    /// An open HTTP/2 connection with room for one more stream, the
    /// stream counted.
    fn shared_h2(&self) -> Option<(http2::SendRequest<RequestBody>, OpenStream)> {
        let mut conns = self.h2.lock().ok()?;
        conns.retain(|c| !c.sender.is_closed());
        let conn = conns
            .iter()
            .find(|c| c.streams.load(Ordering::Acquire) < H2_STREAMS_PER_CONNECTION)?;
        conn.streams.fetch_add(1, Ordering::AcqRel);
        Some((conn.sender.clone(), OpenStream(Arc::clone(&conn.streams))))
    }

    /// A new HTTP/2 connection, shared from now on; its first stream counted.
    fn add_h2(&self, sender: &http2::SendRequest<RequestBody>) -> OpenStream {
        let streams = Arc::new(AtomicUsize::new(1));
        if let Ok(mut conns) = self.h2.lock() {
            conns.push(H2Conn {
                sender: sender.clone(),
                streams: Arc::clone(&streams),
            });
        }
        OpenStream(streams)
    }
}

/// Did the upstream refuse the stream before processing it (RFC 9113
/// §8.7: REFUSED_STREAM, or a stream above a GOAWAY's last stream id)?
fn not_processed(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR));
        }
        source = s.source();
    }
    false
}

/// A connection lent to one request; back to its pool on [`release`].
/// (An HTTP/2 stream lends nothing: its connection stays shared.)
///
/// [`release`]: PooledConnection::release
pub struct PooledConnection {
    sender: Option<Sender>,
    /// An HTTP/2 stream, counted on its connection until this is dropped.
    stream: Option<OpenStream>,
    pool: Weak<UpstreamPool>,
    max_idle: usize,
}

impl PooledConnection {
    /// This connection carries no other request (its response's framing
    /// cannot be trusted): it closes once the response ends.
    pub fn never_reuse(&mut self) {
        self.sender = None;
    }

    /// The response was read to its end: the connection may carry another
    /// request. Dropping it without this closes it.
    pub fn release(self) {
        let (Some(sender), Some(pool)) = (self.sender, self.pool.upgrade()) else {
            return;
        };
        if !pool.reuse_allowed() {
            return;
        }
        // Past `max_idle` too: see `SURPLUS_GRACE`.
        if let Ok(mut idle) = pool.idle.lock()
            && self.max_idle > 0
        {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// Upstream address → its pools (one per config pool listing it; nearly
/// always one).
type ByAddr = HashMap<SocketAddr, Vec<Arc<UpstreamPool>>>;

pub struct ConnectionPools {
    settings: ProxySettings,
    by_addr: ArcSwap<ByAddr>,
}

impl ConnectionPools {
    pub fn new(settings: &ProxySettings) -> Self {
        ConnectionPools {
            settings: settings.clone(),
            by_addr: ArcSwap::from_pointee(HashMap::default()),
        }
    }

    /// Sends `request` to `addr` of `pool`: over the shared HTTP/2
    /// connection, an idle pooled HTTP/1.1 one, or a new one. A pooled
    /// connection that turns out closed before the request went out is
    /// skipped, so a stale keep-alive costs the client nothing. A
    /// `send_proxy` pool's connection names `client` (source, destination)
    /// in its PROXY header, so it is this request's alone: never pooled.
    pub async fn send(
        &self,
        pool: &Pool,
        addr: SocketAddr,
        mut request: Request<RequestBody>,
        client: Option<(SocketAddr, SocketAddr)>,
    ) -> Result<(Response<Incoming>, PooledConnection), SendError> {
        let upstream = self.upstream_pool(pool, addr);
        if upstream.connector.send_proxy.is_some() {
            return Box::pin(self.send_private(&upstream, addr, request, client)).await;
        }
        // HTTP/1.1 pools (most) skip the HTTP/2 lock entirely.
        if upstream.connector.protocol != UpstreamProtocol::Http1
            && let Some((h2, stream)) = upstream.shared_h2()
        {
            return self.send_h2(&upstream, h2, stream, request).await;
        }
        loop {
            let Some(mut sender) = self.take_idle(&upstream) else {
                break;
            };
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lend(Some(sender), &upstream))),
                Err(mut e) => match e.take_message() {
                    // Not sent: the connection closed under us. Try another.
                    Some(back) => request = back,
                    None => return Err(SendError::Failed(e.into_error())),
                },
            }
        }
        // A multiplexed connection may be on its way: wait for it, then
        // use it if it has room.
        let gate = match upstream.connector.protocol {
            UpstreamProtocol::Http1 => None,
            _ => {
                let gate = upstream.connecting.lock().await;
                if let Some((h2, stream)) = upstream.shared_h2() {
                    drop(gate);
                    return self.send_h2(&upstream, h2, stream, request).await;
                }
                Some(gate)
            }
        };
        // Boxed: connecting is the rare path and its future is large.
        // hyper's connection task ends with an error when the upstream
        // sends what no request asked for (while idle, or after a
        // response): that upstream is then out of step.
        let watched = Arc::downgrade(&upstream);
        let on_unsolicited = Box::new(move || {
            if let Some(upstream) = watched.upgrade() {
                upstream.out_of_step("on a keep-alive connection");
            }
        });
        let conn = Box::pin(upstream.connector.connect(
            addr,
            self.settings.connect_timeout,
            Some(on_unsolicited),
            None,
        ))
        .await
        .map_err(SendError::Connect)?;
        match conn {
            Conn::H1(mut sender) => {
                drop(gate);
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(SendError::Failed)?;
                Ok((response, self.lend(Some(sender), &upstream)))
            }
            Conn::H2(sender) => {
                let stream = upstream.add_h2(&sender);
                drop(gate);
                self.send_h2(&upstream, sender, stream, request).await
            }
        }
    }

    /// `request` on a connection of its own, closed after its response.
    async fn send_private(
        &self,
        upstream: &Arc<UpstreamPool>,
        addr: SocketAddr,
        request: Request<RequestBody>,
        client: Option<(SocketAddr, SocketAddr)>,
    ) -> Result<(Response<Incoming>, PooledConnection), SendError> {
        let timeout = self.settings.connect_timeout;
        let conn = upstream
            .connector
            .connect(addr, timeout, None, client)
            .await
            .map_err(SendError::Connect)?;
        // `send_proxy` needs HTTP/1.1 (config): one request, one connection.
        let Conn::H1(mut sender) = conn else {
            return Err(SendError::Connect(ConnectError::NotProcessed(
                "send_proxy needs HTTP/1.1".to_string(),
            )));
        };
        let response = sender
            .send_request(request)
            .await
            .map_err(SendError::Failed)?;
        // No sender lent: dropped, so the connection closes once the
        // response body has been read.
        Ok((response, self.lend(None, upstream)))
    }

    /// One stream on the shared HTTP/2 connection. The request goes in
    /// absolute form (`:scheme`, `:authority` from its Host).
    async fn send_h2(
        &self,
        upstream: &Arc<UpstreamPool>,
        mut sender: http2::SendRequest<RequestBody>,
        stream: OpenStream,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, PooledConnection), SendError> {
        let scheme = if upstream.connector.is_tls() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let authority = request
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<Authority>().ok())
            .or_else(|| upstream.addr.to_string().parse().ok());
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(scheme);
        parts.authority = authority;
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
        *request.version_mut() = Version::HTTP_2;
        // HTTP/2 carries the host in :authority (RFC 9113 §8.3.1).
        request.headers_mut().remove(http::header::HOST);
        // A connection that closed (a GOAWAY, the upstream going away)
        // before this stream opened sent nothing: the request may go
        // elsewhere, and the next one opens a new connection.
        if let Err(e) = sender.ready().await {
            upstream.forget_h2(&stream);
            return Err(SendError::Connect(ConnectError::NotProcessed(
                e.to_string(),
            )));
        }
        match sender.send_request(request).await {
            Ok(response) => {
                let mut lent = self.lend(None, upstream);
                lent.stream = Some(stream);
                Ok((response, lent))
            }
            Err(e) if not_processed(&e) => {
                upstream.forget_h2(&stream);
                Err(SendError::Connect(ConnectError::NotProcessed(
                    e.to_string(),
                )))
            }
            Err(e) => Err(SendError::Failed(e)),
        }
    }

    /// The connections to `addr` of `pool`.
    fn upstream_pool(&self, pool: &Pool, addr: SocketAddr) -> Arc<UpstreamPool> {
        let found = self.by_addr.load().get(&addr).and_then(|pools| {
            pools
                .iter()
                .find(|p| Arc::ptr_eq(&p.pool, &pool.name) || p.pool == pool.name)
                .cloned()
        });
        // An upstream not in the synced pools yet (a race with a rebuild):
        // a pool of its own that nothing keeps, so nothing is reused.
        found.unwrap_or_else(|| UpstreamPool::new(pool, addr, false))
    }

    /// An idle plain socket to `addr` of `pool` for the direct path, the
    /// most recently used first; `None` when there is none (then
    /// [`connect_raw`](Self::connect_raw)).
    pub fn take_raw(&self, pool: &Pool, addr: SocketAddr) -> (Option<RawConn>, RawHome) {
        let upstream = self.upstream_pool(pool, addr);
        let limit = self.settings.upstream_idle_timeout;
        let mut found = None;
        let mut unsolicited = false;
        if upstream.reuse_allowed()
            && let Ok(mut idle) = upstream.raw_idle.lock()
        {
            while let Some(i) = idle.pop() {
                match i.state(limit) {
                    IdleState::Usable => {
                        found = Some(RawConn {
                            stream: i.stream,
                            reused: true,
                        });
                        break;
                    }
                    IdleState::Unsolicited => unsolicited = true,
                    IdleState::Gone => {}
                }
            }
        }
        if unsolicited {
            upstream.out_of_step("while idle");
        }
        let home = RawHome {
            pool: Arc::downgrade(&upstream),
            max_idle: self.settings.upstream_max_idle,
        };
        (found, home)
    }

    /// A new plain socket to `addr` for the direct path.
    pub async fn connect_raw(&self, addr: SocketAddr) -> Result<RawConn, ConnectError> {
        let stream =
            match tokio::time::timeout(self.settings.connect_timeout, TcpStream::connect(addr))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(ConnectError::Io(e)),
                Err(_) => {
                    return Err(ConnectError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within {:?}", self.settings.connect_timeout),
                    )));
                }
            };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%addr, error = %e, "set_nodelay on an upstream connection failed");
        }
        Ok(RawConn {
            stream,
            reused: false,
        })
    }

    fn take_idle(&self, pool: &UpstreamPool) -> Option<Sender> {
        if !pool.reuse_allowed() {
            return None;
        }
        let mut idle = pool.idle.lock().ok()?;
        while let Some(i) = idle.pop() {
            if i.usable(self.settings.upstream_idle_timeout) {
                return Some(i.sender);
            }
        }
        None
    }

    fn lend(&self, sender: Option<Sender>, pool: &Arc<UpstreamPool>) -> PooledConnection {
        PooledConnection {
            sender,
            stream: None,
            pool: Arc::downgrade(pool),
            max_idle: self.settings.upstream_max_idle,
        }
    }

    /// Makes the pools match `table`: one per upstream of each pool, a
    /// fresh one for an upstream that has just started draining or whose
    /// pool's `tls` or `protocol` changed. Called after each table swap.
    pub fn sync(&self, table: &RouteTable) {
        let old = self.by_addr.load_full();
        let mut next = ByAddr::default();
        for pool in table.pools() {
            for u in &pool.upstreams {
                let addr = u.state.addr();
                let draining = u.state.is_draining();
                let kept = old.get(&addr).and_then(|pools| {
                    pools.iter().find(|p| {
                        p.pool == pool.name
                            && (!draining || p.draining)
                            && p.connector
                                .is_for(u.tls.as_ref(), pool.protocol, pool.send_proxy)
                    })
                });
                let entry = match kept {
                    Some(p) => Arc::clone(p),
                    None => UpstreamPool::new(pool, addr, draining),
                };
                next.entry(addr).or_default().push(entry);
            }
        }
        self.by_addr.store(Arc::new(next));
    }

    /// Closes idle connections older than `upstream_idle_timeout`, those
    /// past `upstream_max_idle` left unused for `SURPLUS_GRACE`, and
    /// forgets those the upstream closed. Run every second or so.
    pub fn sweep(&self) {
        let limit = self.settings.upstream_idle_timeout;
        let max_idle = self.settings.upstream_max_idle;
        for pool in self.by_addr.load().values().flatten() {
            if let Ok(mut idle) = pool.idle.lock() {
                idle.retain(|i| i.usable(limit));
                drop_surplus(&mut idle, max_idle, |i| i.since);
            }
            let mut unsolicited = false;
            if let Ok(mut idle) = pool.raw_idle.lock() {
                idle.retain(|i| match i.state(limit) {
                    IdleState::Usable => true,
                    IdleState::Unsolicited => {
                        unsolicited = true;
                        false
                    }
                    IdleState::Gone => false,
                });
                drop_surplus(&mut idle, max_idle, |i| i.since);
            }
            if unsolicited {
                pool.out_of_step("while idle");
            }
        }
    }
}

/// How often [`ConnectionPools::sweep`] should run.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How long idle connections past `upstream_max_idle` may wait for a
/// request before a sweep closes them. A finished request's connection
/// goes back to its pool even past the limit: closed at once, it was
/// missed a moment later — under a steady load whose number of requests
/// in flight swings by more than the limit (HTTP/2 clients with many
/// streams each), a new connection for one request in eight, a TCP
/// handshake and a TIME_WAIT socket each (16,092 connects in 6 s at
/// h2load -c200 -m10, 2 upstreams, the default 256; docs/benchmarks.md).
/// A connection still unused after this was not needed by the load.
const SURPLUS_GRACE: Duration = Duration::from_secs(2);

/// Closes the oldest of `idle`'s connections past `max_idle` that have
/// waited `SURPLUS_GRACE`. A pool's stack is ordered by the time each
/// went back (requests take the newest), so those are at its bottom.
fn drop_surplus<T>(idle: &mut Vec<T>, max_idle: usize, since: impl Fn(&T) -> Instant) {
    let surplus = idle.len().saturating_sub(max_idle);
    let stale = idle[..surplus]
        .iter()
        .take_while(|i| since(i).elapsed() >= SURPLUS_GRACE)
        .count();
    idle.drain(..stale);
}
