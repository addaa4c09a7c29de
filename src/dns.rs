//! DNS-named upstreams: what each `host:port` resolves to now. A resolver
//! (the system's `getaddrinfo`, off the runtime's threads, or one a test
//! injects) is asked at start and every pool's `dns_refresh` after; a
//! failed lookup keeps the last good addresses. `expand` turns a config
//! with names into one with the addresses as upstreams — what the rest of
//! the control plane and the routing table see. Imports only `config`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, UpstreamConfig};

/// Resolves `host` and `port` to addresses, or says why it could not.
pub type Resolver = Arc<
    dyn Fn(String, u16) -> Pin<Box<dyn Future<Output = Result<Vec<SocketAddr>, String>> + Send>>
        + Send
        + Sync,
>;

/// How long one lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The system resolver.
pub fn system() -> Resolver {
    Arc::new(|host, port| {
        Box::pin(async move {
            tokio::net::lookup_host((host.as_str(), port))
                .await
                .map(|addrs| addrs.collect())
                .map_err(|e| e.to_string())
        })
    })
}

/// One name's current addresses.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NameState {
    /// Sorted; empty until a lookup succeeds.
    pub addresses: Vec<SocketAddr>,
    /// The last lookup's failure, if it failed.
    pub error: Option<String>,
    /// Unix ms of the last lookup.
    pub resolved_ms: u64,
}

/// `host:port` → its state.
pub type Names = BTreeMap<(String, u16), NameState>;

/// Every distinct name of `config` with the shortest `dns_refresh` of the
/// pools naming it.
pub fn names_of(config: &Config) -> BTreeMap<(String, u16), Duration> {
    let mut out: BTreeMap<(String, u16), Duration> = BTreeMap::new();
    for pool in &config.pools {
        for n in &pool.named {
            let every = out
                .entry((n.host.clone(), n.port))
                .or_insert(pool.dns_refresh);
            *every = (*every).min(pool.dns_refresh);
        }
    }
    out
}

/// Asks `resolver` once (bounded by [`LOOKUP_TIMEOUT`]); sorted addresses.
pub async fn lookup(resolver: &Resolver, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match tokio::time::timeout(LOOKUP_TIMEOUT, resolver(host.to_string(), port)).await {
        Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
        Ok(Err(e)) => Err(e),
        Ok(Ok(mut addrs)) => {
            addrs.sort();
            addrs.dedup();
            if addrs.is_empty() {
                Err("no addresses".into())
            } else {
                Ok(addrs)
            }
        }
    }
}

/// A lookup's outcome laid over what was known: a failure keeps the last
/// good addresses. `true` when the addresses changed.
pub fn record(
    state: &mut NameState,
    outcome: Result<Vec<SocketAddr>, String>,
    now_ms: u64,
) -> bool {
    state.resolved_ms = now_ms;
    match outcome {
        Ok(addrs) => {
            state.error = None;
            let changed = state.addresses != addrs;
            state.addresses = addrs;
            changed
        }
        Err(e) => {
            state.error = Some(e);
            false
        }
    }
}

/// `raw` with each named upstream replaced by its current addresses, each
/// with the name's weight (an address also listed by IP keeps that entry).
pub fn expand(raw: &Config, names: &Names) -> Config {
    let mut config = raw.clone();
    for pool in &mut config.pools {
        for n in &pool.named {
            let Some(state) = names.get(&(n.host.clone(), n.port)) else {
                continue;
            };
            for addr in &state.addresses {
                if !pool.upstreams.iter().any(|u| u.addr == *addr) {
                    pool.upstreams.push(UpstreamConfig {
                        addr: *addr,
                        weight: n.weight,
                        max_in_flight: n.max_in_flight,
                        host: Some(n.host.clone()),
                    });
                }
            }
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_lookup_keeps_the_last_good_addresses() {
        let mut s = NameState::default();
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert!(record(&mut s, Ok(vec![a]), 1));
        assert!(!record(&mut s, Ok(vec![a]), 2), "same addresses");
        assert!(!record(&mut s, Err("SERVFAIL".into()), 3));
        assert_eq!(s.addresses, vec![a]);
        assert_eq!(s.error.as_deref(), Some("SERVFAIL"));
    }

    #[test]
    fn names_become_upstreams_with_their_weight() {
        let text = "[[listener]]\nbind = \"127.0.0.1:1\"\n[[route]]\nname = \"r\"\nsplit = { p = 1 }\n\
                    [pool.p]\nupstreams = [{ addr = \"App.Internal:8000\", weight = 3 }, { addr = \"10.0.0.9:8000\" }]\n";
        let raw = Config::parse("t", text).unwrap();
        assert_eq!(raw.pools[0].upstreams.len(), 1);
        assert_eq!(raw.pools[0].named[0].name(), "app.internal:8000");
        let mut names = Names::new();
        names.insert(
            ("app.internal".into(), 8000),
            NameState {
                addresses: vec![
                    "10.0.0.1:8000".parse().unwrap(),
                    "10.0.0.9:8000".parse().unwrap(),
                ],
                ..Default::default()
            },
        );
        let eff = expand(&raw, &names);
        let ups: Vec<_> = eff.pools[0]
            .upstreams
            .iter()
            .map(|u| (u.addr.to_string(), u.weight))
            .collect();
        assert_eq!(
            ups,
            [("10.0.0.9:8000".into(), 1), ("10.0.0.1:8000".into(), 3)]
        );
    }
}
