//! `GET /api/v1/status`: the whole runtime state as JSON (shape in SPEC.md),
//! each value saying whether it comes from the file or a runtime change.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::Config;
use crate::routing::{Pool, Route, RouteTable};
use crate::state::Overrides;
use crate::upstream::{Health, UpstreamState};

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    pub routes: Vec<RouteView>,
    pub pools: Vec<PoolView>,
    /// In a fleet: this instance's name, etcd, connected, revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RouteView {
    pub name: String,
    pub hosts: Vec<String>,
    pub path_prefix: String,
    pub split: BTreeMap<String, u32>,
    /// `file` or `runtime`.
    pub split_source: String,
    /// What new requests do now: each pool's percent once pools with no
    /// upstream in rotation (unhealthy, disabled, drained) are left out.
    /// Empty when no pool can take traffic (requests get 503).
    #[serde(default)]
    pub effective_split: BTreeMap<String, f64>,
    /// `headers`, `cookies`, `query`, `client_subject` matchers as the
    /// file writes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matchers: Option<serde_json::Value>,
    /// Shadow traffic: settings, copies by outcome, last differences.
    #[serde(default)]
    pub mirror: Option<serde_json::Value>,
    pub rollout: Option<serde_json::Value>,
}

impl RouteView {
    /// The effective split as `blue 90% green 10%`, only pools that get
    /// traffic; `none (503)` when no pool can take it.
    pub fn effective_text(&self) -> String {
        let parts: Vec<String> = self
            .effective_split
            .iter()
            .filter(|(_, p)| **p > 0.0)
            .map(|(pool, p)| format!("{pool} {p}%"))
            .collect();
        if parts.is_empty() {
            "none (503)".to_string()
        } else {
            parts.join(" ")
        }
    }

    /// What the route matches: `any host, /api [header x-canary="always"]`.
    pub fn match_text(&self) -> String {
        let hosts = if self.hosts.is_empty() {
            "any host".to_string()
        } else {
            self.hosts.join(" ")
        };
        format!("{hosts}, {}{}", self.path_prefix, self.matchers_text())
    }

    /// The route's matchers, compact: ` [header x-canary="always"]`;
    /// empty for a route without any.
    fn matchers_text(&self) -> String {
        let Some(m) = self
            .matchers
            .as_ref()
            .and_then(serde_json::Value::as_object)
        else {
            return String::new();
        };
        let mut parts = Vec::new();
        for (kind, word) in [
            ("headers", "header"),
            ("cookies", "cookie"),
            ("query", "query"),
        ] {
            let items = m.get(kind).and_then(serde_json::Value::as_object);
            for (name, how) in items.into_iter().flatten() {
                parts.push(format!("{word} {name}={}", how.as_str().unwrap_or("?")));
            }
        }
        if let Some(how) = m.get("client_subject").and_then(serde_json::Value::as_str) {
            parts.push(format!("client_subject={how}"));
        }
        format!(" [{}]", parts.join(", "))
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PoolView {
    pub name: String,
    pub upstreams: Vec<UpstreamView>,
    /// `p2c` or `random`: how an upstream is chosen.
    #[serde(default)]
    pub balance: String,
    /// Upstreams given by DNS name: each name, its weight and what it
    /// resolves to now (`addresses`, `error`, `resolved_ms`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<serde_json::Value>,
    /// With `max_in_flight`: the limits and the requests waiting now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueView>,
}

/// A pool's `max_in_flight` and its queue, as status shows them.
#[derive(Debug, Serialize, Deserialize)]
pub struct QueueView {
    pub waiting: usize,
    /// The pool's limit (`null`: only upstreams with their own).
    pub max_in_flight: Option<u32>,
    pub max_queue: u32,
    pub queue_timeout_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UpstreamView {
    pub addr: SocketAddr,
    pub weight: u32,
    /// `healthy`, `unhealthy`, `draining`, `drained` or `disabled`.
    pub state: String,
    pub in_flight: usize,
    /// Its limit on requests at once (its own `max_in_flight` or its
    /// pool's), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Upgraded connections (WebSocket…) open to it now, counted in
    /// `in_flight` too.
    #[serde(default)]
    pub tunnels: usize,
    /// What health checks and outlier detection say: `unknown`, `healthy`,
    /// `unhealthy` or `ejected`.
    pub health: String,
    /// Unix ms until which sticky clients may stay, while draining.
    #[serde(default)]
    pub drain_deadline_ms: Option<u64>,
    /// Removed once drained (`DELETE`).
    #[serde(default)]
    pub removing: bool,
    /// Requests forwarded, and of those failed (5xx, connect, timeout).
    #[serde(default)]
    pub requests_total: u64,
    #[serde(default)]
    pub errors_total: u64,
    /// `file`, or `runtime` for an upstream added at runtime.
    pub source: String,
    /// `file`, or `runtime` when disabled or drained at runtime.
    pub state_source: String,
    /// In a fleet: requests in flight on every instance, this one's
    /// included (the others' as they last announced, up to 1 s old).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_in_flight: Option<usize>,
}

/// The state word of SPEC.md for one upstream. A draining upstream is
/// `drained` once nothing is in flight and, if a sticky route uses its pool,
/// its drain deadline has passed (sticky clients may return until then).
pub fn state_word(u: &UpstreamState, sticky_pool: bool) -> &'static str {
    if u.is_disabled() {
        "disabled"
    } else if u.is_draining() {
        if u.in_flight() == 0 && (!sticky_pool || u.drain_deadline_passed()) {
            "drained"
        } else {
            "draining"
        }
    } else if u.is_healthy() && !u.is_ejected() {
        "healthy"
    } else {
        "unhealthy"
    }
}

/// `unknown`, `healthy`, `unhealthy` (active checks) and `ejected` (passive).
fn health_word(u: &UpstreamState) -> &'static str {
    if u.is_ejected() {
        return "ejected";
    }
    match u.health() {
        Health::Unknown => "unknown",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    }
}

pub fn upstream_view(
    table: &RouteTable,
    o: &Overrides,
    file: &Config,
    pool: &str,
    addr: SocketAddr,
) -> Option<UpstreamView> {
    let p = table.pool(pool)?;
    let u = p.upstreams.iter().find(|u| u.state.addr() == addr)?;
    let runtime_added = o.added.get(pool).is_some_and(|a| a.contains_key(&addr))
        && !file
            .pool(pool)
            .is_some_and(|fp| fp.upstreams.iter().any(|f| f.addr == addr));
    let flagged = o.is_disabled(pool, addr) || o.is_drained(pool, addr);
    Some(UpstreamView {
        addr,
        weight: u.weight,
        state: state_word(&u.state, table.pool_is_sticky(pool)).to_string(),
        in_flight: u.state.in_flight(),
        health: health_word(&u.state).to_string(),
        drain_deadline_ms: o.drain_deadline(pool, addr),
        removing: o.removing.get(pool).is_some_and(|r| r.contains(&addr)),
        max_in_flight: u.max_in_flight,
        tunnels: u.state.tunnels(),
        requests_total: u.state.counts().0,
        errors_total: u.state.counts().1,
        source: if runtime_added { "runtime" } else { "file" }.into(),
        state_source: if flagged { "runtime" } else { "file" }.into(),
        fleet_in_flight: None,
    })
}

pub fn pool_view(table: &RouteTable, o: &Overrides, file: &Config, p: &Pool) -> PoolView {
    PoolView {
        names: Vec::new(),
        name: p.name.to_string(),
        balance: p.balance.as_str().to_string(),
        upstreams: p
            .upstreams
            .iter()
            .filter_map(|u| upstream_view(table, o, file, &p.name, u.state.addr()))
            .collect(),
        queue: p.concurrency.map(|c| QueueView {
            waiting: p.queue.waiting(),
            max_in_flight: c.max_in_flight,
            max_queue: c.max_queue,
            queue_timeout_ms: u64::try_from(c.queue_timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// Each pool's percent of the route's new requests given which pools
/// have an upstream in rotation now, to one decimal.
fn effective_split(table: &RouteTable, r: &Route) -> BTreeMap<String, f64> {
    let live: Vec<(String, u32)> = table
        .split(r)
        .into_iter()
        .map(|(pool, w)| {
            let on = table.pool(&pool).is_some_and(|p| p.in_rotation());
            (pool.to_string(), if on { w } else { 0 })
        })
        .collect();
    let total: u64 = live.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return BTreeMap::new();
    }
    live.into_iter()
        .map(|(pool, w)| {
            let percent = (u64::from(w) as f64 * 1000.0 / total as f64).round() / 10.0;
            (pool, percent)
        })
        .collect()
}

/// A route's mirror in status, `None` when it copies nothing.
fn mirror_view(r: &Route, runtime: bool) -> Option<serde_json::Value> {
    let m = r.mirror.as_ref()?;
    let s = &m.settings;
    let counts: serde_json::Map<String, serde_json::Value> = r
        .shadow
        .counts()
        .iter()
        .map(|(o, n)| (o.word().to_string(), (*n).into()))
        .collect();
    Some(json!({
        "pool": m.pool.as_ref(),
        "percent": s.percent,
        "max_body": s.max_body,
        "compare": s.compare.words(),
        "timeout": humantime::format_duration(s.timeout).to_string(),
        "max_in_flight": s.max_in_flight,
        "source": if runtime { "runtime" } else { "file" },
        "in_flight": r.shadow.in_flight(),
        "counts": counts,
        "differences": r.shadow.recent(),
    }))
}

pub fn status(table: &RouteTable, o: &Overrides, file: &Config) -> Status {
    // Routes in file order, not match order.
    let routes = file
        .routes
        .iter()
        .filter_map(|rc| {
            let r = table.route(&rc.name)?;
            Some(RouteView {
                name: rc.name.clone(),
                hosts: rc.hosts.clone(),
                path_prefix: rc.path_prefix.clone(),
                split: table
                    .split(r)
                    .into_iter()
                    .map(|(p, w)| (p.to_string(), w))
                    .collect(),
                split_source: if o.splits.contains_key(&rc.name) {
                    "runtime"
                } else {
                    "file"
                }
                .into(),
                effective_split: effective_split(table, r),
                matchers: r.matchers().map(|m| m.to_json()),
                mirror: mirror_view(r, o.mirrors.contains_key(&rc.name)),
                rollout: None,
            })
        })
        .collect();
    let pools = table
        .pools()
        .iter()
        .map(|p| pool_view(table, o, file, p))
        .collect();
    Status {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        routes,
        pools,
        cluster: None,
    }
}
