//! Keep-alive connection pools to upstreams, one per upstream address, so
//! that a drain can close an upstream's idle pooled connections at once.
//!
//! Built on hyper's connection API rather than hyper-util's pooled client:
//! a pool is a stack of idle HTTP/1.1 senders behind a lock held for a
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
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use foldhash::HashMap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::request_body::RequestBody;
use crate::config::ProxySettings;
use crate::routing::RouteTable;

type Sender = http1::SendRequest<RequestBody>;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made; nothing was sent.
    #[error("{0}")]
    Connect(#[source] std::io::Error),
    /// The connection failed after (part of) the request may have been
    /// sent, or the upstream sent an invalid response.
    #[error("{0}")]
    Failed(#[source] hyper::Error),
}

impl SendError {
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, SendError::Connect(e) if e.kind() == std::io::ErrorKind::TimedOut)
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

/// The idle connections to one upstream.
struct UpstreamPool {
    addr: SocketAddr,
    idle: Mutex<Vec<Idle>>,
    draining: bool,
}

impl UpstreamPool {
    fn new(addr: SocketAddr, draining: bool) -> Arc<UpstreamPool> {
        Arc::new(UpstreamPool {
            addr,
            idle: Mutex::new(Vec::new()),
            draining,
        })
    }
}

/// A connection lent to one request; back to its pool on [`release`].
///
/// [`release`]: PooledConnection::release
pub struct PooledConnection {
    sender: Sender,
    pool: Weak<UpstreamPool>,
    max_idle: usize,
}

impl PooledConnection {
    /// The response was read to its end: the connection may carry another
    /// request. Dropping it without this closes it.
    pub fn release(self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        if let Ok(mut idle) = pool.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(Idle {
                sender: self.sender,
                since: Instant::now(),
            });
        }
    }
}

pub struct ConnectionPools {
    settings: ProxySettings,
    by_addr: ArcSwap<HashMap<SocketAddr, Arc<UpstreamPool>>>,
}

impl ConnectionPools {
    pub fn new(settings: &ProxySettings) -> Self {
        ConnectionPools {
            settings: settings.clone(),
            by_addr: ArcSwap::from_pointee(HashMap::default()),
        }
    }

    /// Sends `request` to `addr` over an idle pooled connection, or a new
    /// one. A pooled connection that turns out closed before the request
    /// went out is skipped, so a stale keep-alive costs the client nothing.
    pub async fn send(
        &self,
        addr: SocketAddr,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, PooledConnection), SendError> {
        let pool = self.by_addr.load().get(&addr).cloned();
        // An upstream not in the table yet (a race with a rebuild): a pool
        // of its own that nothing keeps, so nothing is reused.
        let pool = pool.unwrap_or_else(|| UpstreamPool::new(addr, false));
        loop {
            let Some(mut sender) = self.take_idle(&pool) else {
                break;
            };
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lend(sender, &pool))),
                Err(mut e) => match e.take_message() {
                    // Not sent: the connection closed under us. Try another.
                    Some(back) => request = back,
                    None => return Err(SendError::Failed(e.into_error())),
                },
            }
        }
        // Boxed: connecting is the rare path and its future is large.
        let mut sender = Box::pin(self.connect(pool.addr)).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(SendError::Failed)?;
        Ok((response, self.lend(sender, &pool)))
    }

    fn take_idle(&self, pool: &UpstreamPool) -> Option<Sender> {
        let mut idle = pool.idle.lock().ok()?;
        while let Some(i) = idle.pop() {
            if i.usable(self.settings.upstream_idle_timeout) {
                return Some(i.sender);
            }
        }
        None
    }

    fn lend(&self, sender: Sender, pool: &Arc<UpstreamPool>) -> PooledConnection {
        PooledConnection {
            sender,
            pool: Arc::downgrade(pool),
            max_idle: self.settings.upstream_max_idle,
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Sender, SendError> {
        let timeout = self.settings.connect_timeout;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Err(_) => {
                return Err(SendError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                )));
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%addr, error = %e, "set_nodelay on an upstream connection failed");
        }
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Failed)?;
        tokio::spawn(async move {
            // Upgrades: a 101 hands the connection to a WebSocket tunnel.
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Makes the pools match `table`: one per upstream, a fresh one for an
    /// upstream that has just started draining. Called by the control
    /// plane only, after each table swap.
    pub fn sync(&self, table: &RouteTable) {
        let old = self.by_addr.load_full();
        let mut next = HashMap::default();
        for pool in table.pools() {
            for u in &pool.upstreams {
                let addr = u.state.addr();
                let draining = u.state.is_draining();
                let entry = match old.get(&addr) {
                    // Keep the pool unless this sync is the drain's start.
                    Some(p) if !draining || p.draining => Arc::clone(p),
                    _ => UpstreamPool::new(addr, draining),
                };
                next.insert(addr, entry);
            }
        }
        self.by_addr.store(Arc::new(next));
    }

    /// Closes idle connections older than `upstream_idle_timeout` and
    /// forgets those the upstream closed. Run every second or so.
    pub fn sweep(&self) {
        let limit = self.settings.upstream_idle_timeout;
        for pool in self.by_addr.load().values() {
            if let Ok(mut idle) = pool.idle.lock() {
                idle.retain(|i| i.usable(limit));
            }
        }
    }
}

/// How often [`ConnectionPools::sweep`] should run.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
