//! Keep-alive connection pools to upstreams, one per upstream address, so
//! that a drain can close an upstream's idle pooled connections at once.
//!
//! When an upstream starts draining, its pool is replaced by a fresh one:
//! the old pool's idle connections close when it is dropped, and
//! connections busy with in-flight requests finish them, then close instead
//! of returning to a pool that is gone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::RequestBody;
use crate::config::ProxySettings;
use crate::routing::RouteTable;

type UpstreamClient = Client<HttpConnector, RequestBody>;

#[derive(Clone)]
struct Entry {
    client: UpstreamClient,
    draining: bool,
}

pub struct ConnectionPools {
    settings: ProxySettings,
    by_addr: ArcSwap<HashMap<SocketAddr, Entry>>,
    /// For an upstream not in the table yet (a race with a rebuild).
    fallback: UpstreamClient,
}

impl ConnectionPools {
    pub fn new(settings: &ProxySettings) -> Self {
        ConnectionPools {
            settings: settings.clone(),
            by_addr: ArcSwap::from_pointee(HashMap::new()),
            fallback: build_client(settings),
        }
    }

    /// Sends `request` to `addr` over its pool. The map guard is dropped
    /// before the returned future is awaited.
    pub fn request(&self, addr: SocketAddr, request: http::Request<RequestBody>) -> ResponseFuture {
        let map = self.by_addr.load();
        match map.get(&addr) {
            Some(entry) => entry.client.request(request),
            None => self.fallback.request(request),
        }
    }

    /// Makes the pools match `table`: one per upstream, a fresh one for an
    /// upstream that has just started draining. Called by the control
    /// plane only, after each table swap.
    pub fn sync(&self, table: &RouteTable) {
        let old = self.by_addr.load_full();
        let mut next = HashMap::new();
        for pool in table.pools() {
            for u in &pool.upstreams {
                let addr = u.state.addr();
                let draining = u.state.is_draining();
                let entry = match old.get(&addr) {
                    // Keep the pool unless this sync is the drain's start.
                    Some(e) if !draining || e.draining => Entry {
                        client: e.client.clone(),
                        draining,
                    },
                    _ => Entry {
                        client: build_client(&self.settings),
                        draining,
                    },
                };
                next.insert(addr, entry);
            }
        }
        self.by_addr.store(Arc::new(next));
    }
}

fn build_client(settings: &ProxySettings) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(settings.upstream_idle_timeout)
        .pool_max_idle_per_host(settings.upstream_max_idle)
        .build(connector)
}
