//! Reading each section of the file into typed config, and the checks that
//! span sections (a route naming a missing pool, duplicate names).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::features;
use super::matchers;
use super::mirror;
use super::rate_limit;
use super::reader::{Table, int_value, str_value};
use super::retry;
use super::split::{self, Split, SplitError};
use super::transport::{self, UpstreamProtocol};
use super::{
    AdminConfig, Config, ListenerConfig, NamedUpstream, PoolConfig, Problems, ProxySettings,
    RouteConfig, StateConfig, UpstreamConfig,
};

const DEFAULT_ADMIN_BIND: ([u8; 4], u16) = ([127, 0, 0, 1], 9090);
const DEFAULT_STATE_DIR: &str = "/var/lib/cutover";

pub fn read_root(root: &Spanned<DeTable<'_>>, problems: &mut Problems) -> Config {
    let mut top = Table::new(root.get_ref(), root.span(), String::new());

    let listeners = read_listeners(&mut top, problems);
    let admin = read_admin(&mut top, problems);
    let state = read_state(&mut top, problems);
    let proxy = read_proxy(&mut top, problems);
    let pools = read_pools(&mut top, problems);
    let routes = read_routes(&mut top, &pools, proxy.response_header_timeout, problems);
    let cluster = super::cluster::read_cluster(&mut top, problems);
    let tracing = super::tracing::read_tracing(&mut top, problems);
    top.finish(problems);

    let pools = pools.into_iter().map(|(p, _)| p).collect();
    Config {
        listeners,
        admin,
        state,
        proxy,
        routes,
        pools,
        cluster,
        tracing,
    }
}

fn parse_addr(s: Spanned<&str>, path: &str, problems: &mut Problems) -> Option<SocketAddr> {
    match s.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(
                s.span(),
                path,
                format!(
                    "invalid address {:?}: expected IP:PORT, e.g. \"127.0.0.1:8080\" or \"[::1]:8080\"",
                    s.get_ref()
                ),
            );
            None
        }
    }
}

/// Each item of an array of tables, as a `Table` with path `name[i]`.
fn table_items<'a>(
    items: &'a [Spanned<DeValue<'a>>],
    name: &str,
    problems: &mut Problems,
) -> Vec<Table<'a>> {
    items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| Table::from_value(v, format!("{name}[{i}]"), problems))
        .collect()
}

fn read_listeners(top: &mut Table<'_>, problems: &mut Problems) -> Vec<ListenerConfig> {
    let Some(items) = top.array("listener", problems) else {
        problems.push(
            0..0,
            "listener",
            "at least one [[listener]] with a bind address is required",
        );
        return Vec::new();
    };
    let mut listeners: Vec<ListenerConfig> = Vec::new();
    for mut t in table_items(items, "listener", problems) {
        let (tls, client_auth) = features::read_tls(&mut t, true, problems);
        let proxy_protocol = read_proxy_protocol(&mut t, problems);
        let http2_only = t.bool("http2_only", problems).unwrap_or(false);
        if let Some(bind) = t.required_str("bind", problems)
            && let Some(addr) = parse_addr(bind.clone(), &t.child("bind"), problems)
        {
            if listeners.iter().any(|l| l.bind == addr) {
                problems.push(
                    bind.span(),
                    &t.child("bind"),
                    format!("{addr} is bound by an earlier listener"),
                );
            } else {
                listeners.push(ListenerConfig {
                    bind: addr,
                    tls,
                    client_auth,
                    proxy_protocol,
                    http2_only,
                });
            }
        }
        t.finish(problems);
    }
    listeners
}

fn read_admin(top: &mut Table<'_>, problems: &mut Problems) -> AdminConfig {
    let mut admin = AdminConfig {
        bind: DEFAULT_ADMIN_BIND.into(),
        token_file: None,
        read_token_file: None,
        tls: Vec::new(),
        client_auth: None,
    };
    let Some(mut t) = top.table("admin", problems) else {
        return admin;
    };
    let bind = t
        .str("bind", problems)
        .and_then(|s| Some((s.span(), parse_addr(s, &t.child("bind"), problems)?)));
    admin.token_file = t
        .str("token_file", problems)
        .map(|s| PathBuf::from(*s.get_ref()));
    admin.read_token_file = t
        .str("read_token_file", problems)
        .map(|s| PathBuf::from(*s.get_ref()));
    (admin.tls, admin.client_auth) = features::read_tls(&mut t, true, problems);
    if let Some((span, addr)) = bind {
        admin.bind = addr;
        if !addr.ip().is_loopback() && admin.token_file.is_none() {
            problems.push(
                span,
                &t.child("bind"),
                format!(
                    "{addr} is not a loopback address: set admin.token_file so the admin API is not open to the network"
                ),
            );
        }
    }
    t.finish(problems);
    admin
}

fn read_state(top: &mut Table<'_>, problems: &mut Problems) -> StateConfig {
    let mut state = StateConfig {
        dir: PathBuf::from(DEFAULT_STATE_DIR),
    };
    if let Some(mut t) = top.table("state", problems) {
        if let Some(dir) = t.str("dir", problems) {
            if dir.get_ref().is_empty() {
                problems.push(dir.span(), &t.child("dir"), "must not be empty");
            } else {
                state.dir = PathBuf::from(*dir.get_ref());
            }
        }
        t.finish(problems);
    }
    state
}

fn read_proxy(top: &mut Table<'_>, problems: &mut Problems) -> ProxySettings {
    let mut s = ProxySettings::default();
    let Some(mut t) = top.table("proxy", problems) else {
        return s;
    };
    for (key, slot) in [
        ("connect_timeout", &mut s.connect_timeout),
        ("response_header_timeout", &mut s.response_header_timeout),
        ("request_header_timeout", &mut s.request_header_timeout),
        ("idle_timeout", &mut s.idle_timeout),
        ("shutdown_timeout", &mut s.shutdown_timeout),
        ("upgrade_timeout", &mut s.upgrade_timeout),
        ("upstream_idle_timeout", &mut s.upstream_idle_timeout),
    ] {
        if let Some(d) = t.duration(key, problems) {
            if d.get_ref().is_zero() {
                problems.push(d.span(), &t.child(key), "must be longer than zero");
            } else {
                *slot = d.into_inner();
            }
        }
    }
    // The older name of request_header_timeout, still read.
    if let Some(d) = t.duration("client_header_timeout", problems) {
        if t.has("request_header_timeout") {
            problems.push(
                d.span(),
                &t.child("client_header_timeout"),
                "set request_header_timeout only (client_header_timeout is its older name)",
            );
        } else if d.get_ref().is_zero() {
            problems.push(
                d.span(),
                &t.child("client_header_timeout"),
                "must be longer than zero",
            );
        } else {
            s.request_header_timeout = d.into_inner();
        }
    }
    for (key, min, max, slot) in [
        ("workers", 0, 1024, &mut s.workers),
        ("max_connections", 1, 1_000_000, &mut s.max_connections),
        ("max_header_bytes", 8192, 1 << 20, &mut s.max_header_bytes),
        ("retries", 0, 10, &mut s.retries),
        ("upstream_max_idle", 0, 100_000, &mut s.upstream_max_idle),
    ] {
        if let Some(n) = t.bounded(key, min, max, problems) {
            // The bounds above fit in usize on every supported target.
            *slot = n as usize;
        }
    }
    if let Some(direct) = t.bool("direct_http1", problems) {
        s.direct_http1 = direct;
    }
    if let Some(direct) = t.bool("direct_http2", problems) {
        s.direct_http2 = direct;
    }
    if let Some(name) = t.str("request_id_header", problems) {
        match http::HeaderName::from_bytes(name.get_ref().as_bytes()) {
            // Not one the proxy writes or drops itself.
            Ok(h) if !crate_owned_header(h.as_str()) => s.request_id_header = h,
            _ => problems.push(
                name.span(),
                &t.child("request_id_header"),
                format!(
                    "{:?} is not a header name cutover can use for request ids (a token like \"x-request-id\", not a hop-by-hop or forwarding header)",
                    name.get_ref()
                ),
            ),
        }
    }
    if let Some(format) = t.str("access_log_format", problems) {
        match *format.get_ref() {
            "json" => s.access_log_format = super::AccessLogFormat::Json,
            "logfmt" => s.access_log_format = super::AccessLogFormat::Logfmt,
            other => problems.push(
                format.span(),
                &t.child("access_log_format"),
                format!("expected \"json\" or \"logfmt\", got {other:?}"),
            ),
        }
    }
    let fields_path = t.child("access_log_fields");
    if let Some(items) = t.array("access_log_fields", problems) {
        let mut fields = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{fields_path}[{i}]");
            let Some(name) = super::reader::str_value(item, &path, problems) else {
                continue;
            };
            if !super::ACCESS_LOG_FIELDS.contains(&name) {
                problems.push(
                    item.span(),
                    &path,
                    format!(
                        "unknown field {name:?} (expected one of {})",
                        super::ACCESS_LOG_FIELDS.join(", ")
                    ),
                );
            } else if fields.iter().any(|f| f == name) {
                problems.push(item.span(), &path, format!("{name:?} is listed twice"));
            } else {
                fields.push(name.to_string());
            }
        }
        if items.is_empty() {
            problems.push(t.span(), &fields_path, "name at least one field");
        }
        s.access_log_fields = Some(fields);
    }
    if let Some(target) = t.str("access_log", problems) {
        s.access_log = match *target.get_ref() {
            "off" => None,
            "stdout" => Some(super::AccessLogTarget::Stdout),
            path if path.starts_with('/') => {
                Some(super::AccessLogTarget::File(PathBuf::from(path)))
            }
            _ => {
                problems.push(
                    target.span(),
                    &t.child("access_log"),
                    "expected \"off\", \"stdout\" or an absolute file path",
                );
                None
            }
        };
    }
    t.finish(problems);
    s
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

const NAME_RULE: &str = "names are 1-64 characters of A-Z, a-z, 0-9, '-' and '_'";

/// Pools with the span of their name, for checks against routes.
type SpannedPools = Vec<(PoolConfig, std::ops::Range<usize>)>;

fn read_pools(top: &mut Table<'_>, problems: &mut Problems) -> SpannedPools {
    let mut pools = Vec::new();
    let Some(mut all) = top.table("pool", problems) else {
        return pools;
    };
    for (name, value) in all.entries() {
        let path = all.child(name.get_ref());
        if !valid_name(name.get_ref()) {
            problems.push(
                name.span(),
                &path,
                format!("invalid pool name: {NAME_RULE}"),
            );
        }
        let Some(mut t) = Table::from_value(value, path, problems) else {
            continue;
        };
        let health = features::read_health(&mut t, problems);
        let outlier = features::read_outlier(&mut t, problems);
        let slow_start = features::read_slow_start(&mut t, problems);
        let (upstreams, named) = read_upstreams(&mut t, problems);
        let upstream_limits = upstreams.iter().any(|u| u.max_in_flight.is_some())
            || named.iter().any(|n| n.max_in_flight.is_some());
        let concurrency = features::read_concurrency(&mut t, upstream_limits, problems);
        let balance = features::read_balance(&mut t, problems);
        let dns_refresh = features::read_dns_refresh(&mut t, problems);
        let (tls, protocol) = transport::read_transport(&mut t, problems);
        let send_proxy = transport::read_send_proxy(&mut t, protocol, problems);
        if health.as_ref().is_some_and(|h| h.grpc) && protocol == UpstreamProtocol::Http1 {
            problems.push(
                t.span(),
                &t.child("health.grpc"),
                "a gRPC health check needs HTTP/2: set protocol = \"h2\" (or \"auto\" with tls)",
            );
        }
        t.finish(problems);
        pools.push((
            PoolConfig {
                name: name.get_ref().to_string(),
                upstreams,
                health,
                outlier,
                slow_start,
                concurrency,
                balance,
                tls,
                protocol,
                send_proxy,
                named,
                dns_refresh,
            },
            name.span(),
        ));
    }
    all.finish(problems);
    pools
}

/// `host:port` with a DNS name: `None` if `s` is not one.
fn parse_named(s: &str) -> Option<NamedUpstream> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && !host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    valid.then_some(NamedUpstream {
        host,
        port,
        weight: 1,
        max_in_flight: None,
    })
}

/// An upstream's address: `IP:PORT`, or `name:PORT` resolved by DNS.
enum Addr {
    Ip(SocketAddr),
    Named(NamedUpstream),
}

fn read_addr(s: Spanned<&str>, path: &str, problems: &mut Problems) -> Option<Addr> {
    if let Ok(a) = s.get_ref().parse::<SocketAddr>() {
        return Some(Addr::Ip(a));
    }
    if let Some(n) = parse_named(s.get_ref()) {
        return Some(Addr::Named(n));
    }
    problems.push(
        s.span(),
        path,
        format!(
            "invalid address {:?}: expected IP:PORT or NAME:PORT, e.g. \"127.0.0.1:8080\", \"[::1]:8080\" or \"app-3.internal:8000\"",
            s.get_ref()
        ),
    );
    None
}

/// A pool's upstreams: those given by IP, and those given by DNS name.
fn read_upstreams(
    pool: &mut Table<'_>,
    problems: &mut Problems,
) -> (Vec<UpstreamConfig>, Vec<NamedUpstream>) {
    let path = pool.child("upstreams");
    let Some(items) = pool.array("upstreams", problems) else {
        if pool.get("upstreams").is_none() {
            problems.push(pool.span(), &path, "missing required key");
        }
        return (Vec::new(), Vec::new());
    };
    if items.is_empty() {
        problems.push(pool.span(), &path, "a pool needs at least one upstream");
        return (Vec::new(), Vec::new());
    }
    let mut upstreams: Vec<UpstreamConfig> = Vec::new();
    let mut named: Vec<NamedUpstream> = Vec::new();
    for mut t in table_items(items, &path, problems) {
        let addr = t.required_str("addr", problems).and_then(|s| {
            let span = s.span();
            let text = *s.get_ref();
            let addr = read_addr(s, &t.child("addr"), problems)?;
            let twice = match &addr {
                Addr::Ip(a) => upstreams.iter().any(|u| u.addr == *a),
                Addr::Named(n) => named.iter().any(|m| m.host == n.host && m.port == n.port),
            };
            if twice {
                problems.push(
                    span,
                    &t.child("addr"),
                    format!("{text} is listed twice in this pool"),
                );
                return None;
            }
            Some(addr)
        });
        let weight = match t.int("weight", problems) {
            Some(w) => checked_weight(w, &t.child("weight"), problems),
            None => Some(1),
        };
        let max_in_flight = t
            .bounded("max_in_flight", 1, 1_000_000, problems)
            .map(|n| n as u32);
        t.finish(problems);
        match (addr, weight) {
            (Some(Addr::Ip(addr)), Some(weight)) => upstreams.push(UpstreamConfig {
                addr,
                weight,
                max_in_flight,
                host: None,
            }),
            (Some(Addr::Named(n)), Some(weight)) => named.push(NamedUpstream {
                weight,
                max_in_flight,
                ..n
            }),
            _ => {}
        }
    }
    let weights = upstreams
        .iter()
        .map(|u| u.weight)
        .chain(named.iter().map(|n| n.weight));
    if (!upstreams.is_empty() || !named.is_empty()) && weights.clone().all(|w| w == 0) {
        problems.push(
            pool.span(),
            &path,
            "every upstream has weight 0: at least one must be above 0",
        );
    }
    (upstreams, named)
}

fn read_routes(
    top: &mut Table<'_>,
    pools: &SpannedPools,
    response_header_timeout: Duration,
    problems: &mut Problems,
) -> Vec<RouteConfig> {
    let Some(items) = top.array("route", problems) else {
        problems.push(0..0, "route", "at least one [[route]] is required");
        return Vec::new();
    };
    let mut routes: Vec<RouteConfig> = Vec::new();
    // Every route name, valid split or not: a name is used once.
    let mut seen: Vec<String> = Vec::new();
    for mut t in table_items(items, "route", problems) {
        let name = t.required_str("name", problems).and_then(|n| {
            if !valid_name(n.get_ref()) {
                problems.push(
                    n.span(),
                    &t.child("name"),
                    format!("invalid route name: {NAME_RULE}"),
                );
                return None;
            }
            if seen.iter().any(|r| r == n.get_ref()) {
                problems.push(
                    n.span(),
                    &t.child("name"),
                    format!("route name {:?} is used twice", n.get_ref()),
                );
                return None;
            }
            Some(n.get_ref().to_string())
        });
        let hosts = read_hosts(&mut t, problems);
        let path_prefix = match t.str("path_prefix", problems) {
            Some(p) if p.get_ref().starts_with('/') => p.get_ref().to_string(),
            Some(p) => {
                problems.push(p.span(), &t.child("path_prefix"), "must start with '/'");
                "/".to_string()
            }
            None => "/".to_string(),
        };
        let matchers = matchers::read_matchers(&mut t, problems);
        let split = read_split(&mut t, pools, problems);
        let sticky = features::read_sticky(&mut t, problems);
        let pool_exists = |name: &str| pools.iter().any(|(p, _)| p.name == name);
        let mirror = mirror::read_mirror(&mut t, &pool_exists, problems);
        let rollout = features::read_rollout(&mut t, problems);
        let retry = retry::read_retry(&mut t, response_header_timeout, problems);
        let rate_limit = rate_limit::read_rate_limit(&mut t, problems);
        t.finish(problems);
        let Some(name) = name else { continue };
        seen.push(name.clone());
        let Some(split) = split else { continue };
        routes.push(RouteConfig {
            name,
            hosts,
            path_prefix,
            matchers,
            split,
            sticky,
            mirror,
            retry,
            rate_limit,
            rollout,
            sticky_shift: None,
        });
    }
    routes
}

/// Pairs of routes a request could match with neither more specific:
/// the same path prefix, overlapping hosts, as many header (and cookie)
/// matchers and as many query matchers, and no name both match exactly
/// with different values. Not an error — the one earlier in the file wins
/// (RouteTable's order) — but `cutover check` says so.
pub fn route_overlaps(routes: &[RouteConfig]) -> Vec<String> {
    let mut notes = Vec::new();
    for (i, later) in routes.iter().enumerate() {
        for earlier in &routes[..i] {
            if later.path_prefix == earlier.path_prefix
                && hosts_overlap(&later.hosts, &earlier.hosts)
                && later.matchers.precedence() == earlier.matchers.precedence()
                && !later.matchers.excludes(&earlier.matchers)
            {
                notes.push(format!(
                    "note: routes {:?} and {:?} can match the same request with equal precedence (path_prefix {:?}, hosts, matcher counts): {:?}, earlier in the file, serves it",
                    earlier.name, later.name, later.path_prefix, earlier.name
                ));
            }
        }
    }
    notes
}

fn hosts_overlap(a: &[String], b: &[String]) -> bool {
    (a.is_empty() && b.is_empty()) || a.iter().any(|h| b.contains(h))
}

fn read_hosts(route: &mut Table<'_>, problems: &mut Problems) -> Vec<String> {
    let Some(items) = route.array("hosts", problems) else {
        return Vec::new();
    };
    let mut hosts = Vec::new();
    for (i, v) in items.iter().enumerate() {
        let path = format!("{}[{i}]", route.child("hosts"));
        let Some(h) = str_value(v, &path, problems) else {
            continue;
        };
        let host = h.to_ascii_lowercase();
        let bare = host.strip_prefix("*.").unwrap_or(&host);
        let ok = !bare.is_empty()
            && bare.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if ok {
            hosts.push(host);
        } else {
            problems.push(
                v.span(),
                &path,
                format!("invalid host {h:?}: expected a name like \"app.example.com\" or \"*.example.com\", without port"),
            );
        }
    }
    hosts
}

fn read_split(
    route: &mut Table<'_>,
    pools: &SpannedPools,
    problems: &mut Problems,
) -> Option<Split> {
    let path = route.child("split");
    let Some(mut t) = route.table("split", problems) else {
        if route.get("split").is_none() {
            problems.push(route.span(), &path, "missing required key");
        }
        return None;
    };
    let mut weights = Vec::new();
    let mut valid = true;
    for (pool, value) in t.entries() {
        let key_path = t.child(pool.get_ref());
        let weight = int_value(value, &key_path, problems)
            .and_then(|w| checked_weight(w, &key_path, problems));
        if !pools.iter().any(|(p, _)| p.name == *pool.get_ref()) {
            problems.push(
                pool.span(),
                &key_path,
                format!(
                    "no pool named {:?} (define it as [pool.{}])",
                    pool.get_ref(),
                    pool.get_ref()
                ),
            );
            valid = false;
            continue;
        }
        match weight {
            Some(w) => weights.push((pool.get_ref().to_string(), i64::from(w))),
            None => valid = false,
        }
    }
    let span = t.span();
    t.finish(problems);
    match Split::new(weights) {
        Ok(split) => valid.then_some(split),
        // Problems with single weights are reported above, by key.
        Err(SplitError::Weight { .. }) => None,
        Err(SplitError::AllZero) if !valid => None,
        Err(e) => {
            problems.push(span, &path, e.to_string());
            None
        }
    }
}

/// A weight through [`split::weight`], its problem reported at its key.
fn checked_weight(value: Spanned<i64>, path: &str, problems: &mut Problems) -> Option<u32> {
    split::weight(*value.get_ref())
        .map_err(|e| problems.push(value.span(), path, e.to_string()))
        .ok()
}

/// Headers cutover sets, drops or reads for framing: never a request id's.
fn crate_owned_header(name: &str) -> bool {
    super::HOP_BY_HOP.contains(&name)
        || [
            "host",
            "content-length",
            "content-type",
            "cookie",
            "set-cookie",
            "via",
            "date",
            "expect",
            "max-forwards",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "http2-settings",
        ]
        .contains(&name)
}

/// A listener's `proxy_protocol` and `trusted_proxies`: both or neither.
fn read_proxy_protocol(t: &mut Table<'_>, problems: &mut Problems) -> Option<super::ProxyProtocol> {
    let version = t.str("proxy_protocol", problems);
    let trusted_path = t.child("trusted_proxies");
    let items = t.array("trusted_proxies", problems);
    let mut trusted = Vec::new();
    for (i, item) in items.into_iter().flatten().enumerate() {
        let path = format!("{trusted_path}[{i}]");
        let Some(text) = super::reader::str_value(item, &path, problems) else {
            continue;
        };
        let net = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match net {
            Ok(net) => trusted.push(net.trunc()),
            Err(_) => problems.push(
                item.span(),
                &path,
                format!("{text:?} is not an address or CIDR block (e.g. \"10.0.0.0/8\")"),
            ),
        }
    }
    let Some(version) = version else {
        if items.is_some() {
            problems.push(
                t.span(),
                &trusted_path,
                "trusted_proxies without proxy_protocol: say which header to expect",
            );
        }
        return None;
    };
    let (v1, v2) = match *version.get_ref() {
        "v1" => (true, false),
        "v2" => (false, true),
        "any" => (true, true),
        other => {
            problems.push(
                version.span(),
                &t.child("proxy_protocol"),
                format!("expected \"v1\", \"v2\" or \"any\", got {other:?}"),
            );
            return None;
        }
    };
    if items.is_none_or(|i| i.is_empty()) {
        problems.push(
            version.span(),
            &t.child("proxy_protocol"),
            "needs trusted_proxies: the addresses of the load balancers that send the header",
        );
        return None;
    }
    Some(super::ProxyProtocol { v1, v2, trusted })
}
