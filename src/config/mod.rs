//! Configuration: the TOML file → a validated, typed [`Config`].
//!
//! Every problem in a file is reported at once as `FILE:LINE:COL: key.path:
//! message`; a file with any problem yields no `Config` at all, so a bad file can
//! never half-apply. Imports no sibling module.

mod analysis_checks;
mod cluster;
mod features;
mod matchers;
mod mirror;
mod rate_limit;
mod reader;
mod retry;
mod rollout_spec;
mod sections;
mod spec_error;
mod split;
mod tracing;
mod transport;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeTable;

pub use analysis_checks::{CheckKind, ExternalCheck};
pub use cluster::ClusterConfig;
pub use matchers::{Matchers, ValueMatch, cookies};
pub use mirror::{Compare, MirrorConfig, MirrorTarget};
pub use rate_limit::{RateKey, RateLimitConfig};
pub use retry::{MIN_RETRIES_PER_WINDOW, RetryConfig, RetryOn};
pub use rollout_spec::{Analysis, OnInconclusive, RolloutSpec, SpecError, Webhooks, parse_spec};
pub use split::{MAX_WEIGHT, Split, SplitError, WeightError, weight};
pub use tracing::TracingConfig;
pub use transport::{SendProxy, UpstreamProtocol, UpstreamTls};

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub admin: AdminConfig,
    pub state: StateConfig,
    pub proxy: ProxySettings,
    pub routes: Vec<RouteConfig>,
    /// In file order.
    pub pools: Vec<PoolConfig>,
    /// A fleet sharing its runtime state through etcd.
    pub cluster: Option<ClusterConfig>,
    /// Spans exported over OTLP; `None`: tracing off.
    pub tracing: Option<TracingConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub bind: SocketAddr,
    /// Certificates for a TLS listener, chosen by SNI (the first is the
    /// default); empty for plain HTTP.
    pub tls: Vec<TlsFiles>,
    /// Client certificates asked for on a TLS listener.
    pub client_auth: Option<ClientAuth>,
    /// A PROXY protocol header expected from the trusted proxies.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// HTTP/2 only: prior knowledge on a plain listener, ALPN `h2` alone
    /// on a TLS one.
    pub http2_only: bool,
}

/// `proxy_protocol = "v1" | "v2" | "any"` with `trusted_proxies`: which
/// header versions are taken, and from whom.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyProtocol {
    pub v1: bool,
    pub v2: bool,
    pub trusted: Vec<ipnet::IpNet>,
}

impl ProxyProtocol {
    /// Whether `ip` is one of the proxies that must send a header.
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

/// `tls = { …, client_ca, client_auth }`: the CAs whose client
/// certificates are accepted, and whether one is required.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientAuth {
    pub ca: PathBuf,
    pub required: bool,
}

/// One certificate chain and its key, PEM files.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    /// The operate token: every call.
    pub token_file: Option<PathBuf>,
    /// A read-only token: `GET /api/v1/status` and `/api/v1/audit`.
    pub read_token_file: Option<PathBuf>,
    /// Serve the admin API over TLS with these certificates.
    pub tls: Vec<TlsFiles>,
    /// Client certificates the admin API asks for (mTLS).
    pub client_auth: Option<ClientAuth>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    pub dir: PathBuf,
}

/// Timeouts and limits of the proxy (`[proxy]`, all optional).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    /// Runtime worker threads; 0 = one per core.
    pub workers: usize,
    /// TCP connect to an upstream.
    pub connect_timeout: Duration,
    /// From sending the request until the upstream's response head arrives.
    pub response_header_timeout: Duration,
    /// A client must send a whole request head within this time.
    pub request_header_timeout: Duration,
    /// A client connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// How long a graceful stop waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// How long a binary upgrade waits for the new process to be ready.
    pub upgrade_timeout: Duration,
    /// Client connections open at once; more wait in the accept queue.
    pub max_connections: usize,
    /// Largest request head (request line + headers) accepted; larger → 431.
    pub max_header_bytes: usize,
    /// Extra upstreams tried when connecting to one fails.
    pub retries: usize,
    /// Idle keep-alive connections kept per upstream.
    pub upstream_max_idle: usize,
    /// An idle pooled upstream connection is closed after this.
    pub upstream_idle_timeout: Duration,
    /// One JSON line per request, if set: `"stdout"` or a file path.
    pub access_log: Option<AccessLogTarget>,
    /// How each access-log line is written.
    pub access_log_format: AccessLogFormat,
    /// The fields each line carries, in this order; `None`: all, in
    /// [`ACCESS_LOG_FIELDS`]' order.
    pub access_log_fields: Option<Vec<String>>,
    /// Plain HTTP/1.1 requests take the direct path (`proxy::direct`).
    pub direct_http1: bool,
    /// HTTP/2 clients are served by cutover's own HTTP/2 server
    /// (`server::h2`) rather than hyper's.
    pub direct_http2: bool,
    /// The request id's header (`X-Request-Id`), lower case.
    pub request_id_header: http::HeaderName,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            workers: 0,
            connect_timeout: Duration::from_secs(2),
            response_header_timeout: Duration::from_secs(30),
            request_header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            upgrade_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
            retries: 2,
            upstream_max_idle: 256,
            upstream_idle_timeout: Duration::from_secs(60),
            access_log: None,
            access_log_format: AccessLogFormat::Json,
            access_log_fields: None,
            direct_http1: true,
            direct_http2: true,
            request_id_header: http::HeaderName::from_static("x-request-id"),
        }
    }
}

/// How access log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// `key=value` pairs, values quoted when they need it.
    Logfmt,
}

/// Headers that describe one connection, never forwarded (RFC 9110
/// §7.6.1); see `proxy::wire::headers`, which reads it for both fronts.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// Every field an access-log line can carry (`access_log_fields`), in the
/// order a line has them.
pub const ACCESS_LOG_FIELDS: [&str; 24] = [
    "time",
    "client",
    "method",
    "host",
    "path",
    "route",
    "pool",
    "upstream",
    "status",
    "duration_ms",
    "bytes",
    "attempts",
    "upstream_ms",
    "queued_ms",
    "request_id",
    "protocol",
    "scheme",
    "served_by",
    "tls_version",
    "sni",
    "client_subject",
    "trace_id",
    "rollout_step",
    "cohort",
];

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessLogTarget {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    /// Lower-cased; empty = any host. `*.example.com` matches subdomains.
    pub hosts: Vec<String>,
    pub path_prefix: String,
    /// `headers`, `cookies`, `query`: what else a request must carry.
    pub matchers: Matchers,
    /// Pool name → relative weight, in file order.
    pub split: Split,
    pub sticky: Option<StickyConfig>,
    /// `mirror = { … }`: shadow traffic (with a runtime change laid over it
    /// in the effective config).
    pub mirror: Option<MirrorConfig>,
    /// `retry = { … }`: the route's own retry policy (else the proxy's
    /// `retries`).
    pub retry: Option<RetryConfig>,
    /// `rate_limit = { … }`: requests per client (or header, or route).
    pub rate_limit: Option<RateLimitConfig>,
    /// `rollout = { … }`: defaults for rollouts of this route, in the shape
    /// of the API's request body (limits under `analysis`), already checked.
    pub rollout: Option<serde_json::Value>,
    /// Never from the file: set in the effective config while a rollout
    /// moves sticky clients (see [`StickyShift`]).
    pub sticky_shift: Option<StickyShift>,
}

/// How sticky clients follow a rollout: clients pinned to another pool of
/// the route move to `pool` once their cohort (a number 0–99 sealed in
/// their cookie) is below `percent`, so the share of sticky clients on
/// `pool` tracks its weight; at `percent` 0, pins to `pool` are ignored
/// (a rollback sends its clients back).
#[derive(Debug, Clone, PartialEq)]
pub struct StickyShift {
    pub pool: String,
    /// The rollout's step, 1-based (the access log's `rollout_step`).
    pub step: u32,
    pub percent: u32,
}

/// `sticky = { cookie, max_age }` on a route.
#[derive(Debug, Clone, PartialEq)]
pub struct StickyConfig {
    pub cookie: String,
    pub max_age: Duration,
}

/// `health = { … }` on a pool: active HTTP checks.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Successes in a row that make an unhealthy upstream healthy.
    pub rise: u32,
    /// Failures in a row that make a healthy upstream unhealthy.
    pub fall: u32,
    /// A grpc.health.v1 check (`path` is its method) instead of a GET.
    pub grpc: bool,
}

/// `outlier = { … }` on a pool: passive ejection from live traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// Connect failures or 5xx in a row that eject an upstream; 0 = off.
    pub consecutive_failures: u32,
    /// First ejection time; doubles with each repeated ejection…
    pub base_ejection: Duration,
    /// …up to this.
    pub max_ejection: Duration,
    /// At most this share of a pool is ejected at once.
    pub max_ejected_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub upstreams: Vec<UpstreamConfig>,
    pub health: Option<HealthConfig>,
    pub outlier: OutlierConfig,
    /// Ramp a newly healthy upstream's share up over this long.
    pub slow_start: Option<Duration>,
    /// `max_in_flight` per upstream, and the queue beyond it.
    pub concurrency: Option<Concurrency>,
    /// How an upstream of the pool is chosen.
    pub balance: Balance,
    /// TLS to the upstreams, if they speak it.
    pub tls: Option<UpstreamTls>,
    pub protocol: UpstreamProtocol,
    /// A PROXY protocol header first on every connection to its upstreams.
    pub send_proxy: Option<SendProxy>,
    /// Upstreams given by DNS name; each address a name resolves to is an
    /// upstream of `upstreams` in the config the table is built from.
    pub named: Vec<NamedUpstream>,
    /// How often `named` are resolved again.
    pub dns_refresh: Duration,
}

/// `max_in_flight`, `max_queue`, `queue_timeout`: each upstream of the
/// pool takes at most `max_in_flight` requests at once (its own, else the
/// pool's); beyond, requests
/// wait in the pool's queue (at most `max_queue`, each at most
/// `queue_timeout`), then get a 503 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Concurrency {
    /// The pool's limit for upstreams without their own; `None`: only
    /// upstreams with their own `max_in_flight` are limited.
    pub max_in_flight: Option<u32>,
    pub max_queue: u32,
    pub queue_timeout: Duration,
}

/// `balance`: how a request's upstream is chosen within a pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    /// `"p2c"`: of two upstreams drawn by weight, the one with fewer
    /// requests in flight per unit of weight (idle, the same as random).
    #[default]
    LeastRequest,
    /// `"random"`: weighted random, blind to load.
    Random,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::LeastRequest => "p2c",
            Balance::Random => "random",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub addr: SocketAddr,
    pub weight: u32,
    /// This upstream's own `max_in_flight`, over the pool's.
    pub max_in_flight: Option<u32>,
    /// The DNS name this address was resolved from (`dns::expand`); over
    /// TLS, the name verified and sent as SNI unless `tls.sni` is set.
    pub host: Option<String>,
}

/// `addr = "app-3.internal:8000"`: every address the name resolves to is an
/// upstream with this weight.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedUpstream {
    /// Lower-case, without a trailing dot.
    pub host: String,
    pub port: u16,
    pub weight: u32,
    /// Each address's own `max_in_flight`, over the pool's.
    pub max_in_flight: Option<u32>,
}

impl NamedUpstream {
    /// `host:port`, as written in the file.
    pub fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![format!("{display}: cannot read config file: {e}")],
        })?;
        let mut config = Config::parse(&display, &text)?;
        // File paths are relative to the config file's directory.
        let base = path.parent().unwrap_or(Path::new("."));
        for l in &mut config.listeners {
            for files in &mut l.tls {
                files.cert = base.join(&files.cert);
                files.key = base.join(&files.key);
            }
            if let Some(auth) = &mut l.client_auth {
                auth.ca = base.join(&auth.ca);
            }
        }
        if let Some(cluster) = &mut config.cluster {
            cluster.resolve_paths(base);
        }
        for files in &mut config.admin.tls {
            files.cert = base.join(&files.cert);
            files.key = base.join(&files.key);
        }
        if let Some(auth) = &mut config.admin.client_auth {
            auth.ca = base.join(&auth.ca);
        }
        for file in [
            &mut config.admin.token_file,
            &mut config.admin.read_token_file,
        ]
        .into_iter()
        .flatten()
        {
            *file = base.join(&*file);
        }
        for p in &mut config.pools {
            if let Some(tls) = &mut p.tls {
                tls.resolve_paths(base);
            }
        }
        Ok(config)
    }

    /// Validates `text`; `file` is the name used in problem reports.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let mut problems = Problems::default();
        let (root, syntax) = DeTable::parse_recoverable(text);
        if let Some(e) = syntax.first() {
            // Only the first: what the parser recovered after a syntax
            // error is a guess, and later errors are often its echoes.
            let span = e.span().unwrap_or(0..0);
            let (line, col) = line_col(text, span.start);
            let source = text.lines().nth(line - 1).unwrap_or("");
            let caret = format!("{}^", " ".repeat(col - 1));
            return Err(ConfigError {
                problems: vec![format!(
                    "{file}:{line}:{col}: {}\n    {source}\n    {caret}",
                    e.message().trim_end()
                )],
            });
        }
        let config = sections::read_root(&root, &mut problems);
        if problems.list.is_empty() {
            Ok(config)
        } else {
            Err(problems.into_error(file, text))
        }
    }

    /// One line for `cutover check`.
    /// What `cutover check` says beside problems: routes that can match a
    /// request with equal precedence (the earlier one wins; not an error).
    pub fn notes(&self) -> Vec<String> {
        sections::route_overlaps(&self.routes)
    }

    pub fn summary(&self) -> String {
        let upstreams: usize = self.pools.iter().map(|p| p.upstreams.len()).sum();
        format!(
            "{} listener(s), {} route(s), {} pool(s), {} upstream(s)",
            self.listeners.len(),
            self.routes.len(),
            self.pools.len(),
            upstreams
        )
    }

    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// Every problem found in a config file, each already rendered as
/// `FILE:LINE:COL: key.path: message`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

/// Problems collected while reading, with byte spans not yet turned into
/// line and column.
#[derive(Default)]
pub struct Problems {
    list: Vec<(Range<usize>, String, String)>,
}

impl Problems {
    pub fn push(&mut self, span: Range<usize>, path: &str, message: impl Into<String>) {
        self.list.push((span, path.to_string(), message.into()));
    }

    fn into_error(mut self, file: &str, text: &str) -> ConfigError {
        self.list.sort_by_key(|(span, _, _)| span.start);
        let problems = self
            .list
            .into_iter()
            .map(|(span, path, message)| {
                let (line, col) = line_col(text, span.start);
                if path.is_empty() {
                    format!("{file}:{line}:{col}: {message}")
                } else {
                    format!("{file}:{line}:{col}: {path}: {message}")
                }
            })
            .collect();
        ConfigError { problems }
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[listener]]
bind = "127.0.0.1:8080"

[admin]
bind = "127.0.0.1:9090"

[state]
dir = "/tmp/cutover"

[proxy]
connect_timeout = "250ms"
retries = 1

[[route]]
name = "app"
hosts = ["App.Example.com", "*.example.org"]
path_prefix = "/"
split = { blue = 70, green = 30 }

[pool.blue]
upstreams = [ { addr = "127.0.0.1:9001", weight = 2 }, { addr = "127.0.0.1:9003" } ]

[pool.green]
upstreams = [ { addr = "127.0.0.1:9002" } ]
"#;

    fn problems(text: &str) -> Vec<String> {
        Config::parse("f.toml", text)
            .expect_err("config should be rejected")
            .problems
    }

    #[test]
    fn good_file_parses() {
        let c = Config::parse("f.toml", GOOD).expect("valid");
        assert_eq!(c.listeners[0].bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.routes[0].hosts, vec!["app.example.com", "*.example.org"]);
        assert_eq!(
            c.routes[0].split.iter().collect::<Vec<_>>(),
            vec![("blue", 70), ("green", 30)]
        );
        assert_eq!(c.pool("blue").unwrap().upstreams[0].weight, 2);
        assert_eq!(c.pool("blue").unwrap().upstreams[1].weight, 1);
        assert_eq!(c.proxy.connect_timeout, Duration::from_millis(250));
        assert_eq!(c.proxy.retries, 1);
        assert_eq!(c.proxy.idle_timeout, ProxySettings::default().idle_timeout);
        assert_eq!(
            c.summary(),
            "1 listener(s), 1 route(s), 2 pool(s), 3 upstream(s)"
        );
    }

    #[test]
    fn every_problem_is_reported_with_line_col_and_key() {
        let text = GOOD
            .replace("retries = 1", "retries = 1\nbogus = true")
            .replace("weight = 2", "weight = -2")
            .replace("green = 30", "green = 30, red = 1")
            .replace("\"250ms\"", "\"soon\"");
        let p = problems(&text);
        assert_eq!(p.len(), 4, "{p:#?}");
        assert!(
            p[0].starts_with("f.toml:12:19: proxy.connect_timeout: invalid duration"),
            "{p:#?}"
        );
        assert_eq!(p[1], "f.toml:14:1: proxy.bogus: unknown key");
        assert!(
            p[2].starts_with("f.toml:20:34: route[0].split.red: no pool named \"red\""),
            "{p:#?}"
        );
        assert!(
            p[3].starts_with(
                "f.toml:23:51: pool.blue.upstreams[0].weight: must be an integer from 0"
            ),
            "{p:#?}"
        );
    }

    #[test]
    fn the_direct_path_is_on_unless_turned_off() {
        assert!(
            Config::parse("f.toml", GOOD)
                .expect("valid")
                .proxy
                .direct_http1
        );
        let off = GOOD.replace("retries = 1", "retries = 1\ndirect_http1 = false");
        assert!(
            !Config::parse("f.toml", &off)
                .expect("valid")
                .proxy
                .direct_http1
        );
        let p = problems(&GOOD.replace("retries = 1", "retries = 1\ndirect_http1 = \"no\""));
        assert!(
            p.len() == 1 && p[0].contains("proxy.direct_http1"),
            "{p:#?}"
        );
    }

    #[test]
    fn client_header_timeout_is_read_as_request_header_timeout() {
        let old = GOOD.replace("retries = 1", "retries = 1\nclient_header_timeout = \"7s\"");
        let c = Config::parse("f.toml", &old).expect("valid");
        assert_eq!(c.proxy.request_header_timeout, Duration::from_secs(7));
        let both = old.replace(
            "retries = 1",
            "retries = 1\nrequest_header_timeout = \"5s\"",
        );
        let p = problems(&both);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(
            p[0].contains("proxy.client_header_timeout: set request_header_timeout only"),
            "{p:#?}"
        );
    }

    #[test]
    fn tracing_section_is_checked() {
        let good = format!(
            "{GOOD}\n[tracing]\notlp_endpoint = \"http://127.0.0.1:4317\"\nsample_ratio = 0.01\n"
        );
        let t = Config::parse("f.toml", &good)
            .expect("valid")
            .tracing
            .expect("tracing");
        assert_eq!(
            (
                t.otlp_endpoint.as_str(),
                t.sample_ratio,
                t.service_name.as_str()
            ),
            ("http://127.0.0.1:4317", 0.01, "cutover")
        );
        assert_eq!(Config::parse("f.toml", GOOD).expect("valid").tracing, None);
        let bad = format!(
            "{GOOD}\n[tracing]\notlp_endpoint = \"collector:4317\"\nsample_ratio = 2\nservice_name = \"\"\nexport_interval = \"0s\"\nbogus = 1\n"
        );
        let p = problems(&bad);
        for expected in [
            "tracing.otlp_endpoint: expected an OTLP/gRPC URL",
            "tracing.sample_ratio: must be a number from 0 to 1",
            "tracing.service_name: must not be empty",
            "tracing.export_interval: must be longer than 0s",
            "tracing.bogus: unknown key",
        ] {
            assert!(p.iter().any(|l| l.contains(expected)), "{expected}: {p:#?}");
        }
        // Each names its place in the file.
        assert!(p.iter().all(|l| l.starts_with("f.toml:")), "{p:#?}");
        let missing = format!("{GOOD}\n[tracing]\nsample_ratio = 0.5\n");
        assert!(
            problems(&missing)
                .iter()
                .any(|l| l.contains("tracing.otlp_endpoint: missing required key")),
            "{:#?}",
            problems(&missing)
        );
    }

    #[test]
    fn cluster_section_is_checked() {
        let good = format!(
            "{GOOD}\n[cluster]\netcd = [\"http://10.0.0.5:2379\"]\nprefix = \"/cutover/prod\"\ninstance = \"lb-1\"\n"
        );
        let c = Config::parse("f.toml", &good).expect("valid");
        let cluster = c.cluster.expect("cluster");
        assert_eq!(cluster.etcd, ["http://10.0.0.5:2379"]);
        assert_eq!(
            (cluster.prefix.as_str(), cluster.instance.as_str()),
            ("/cutover/prod", "lb-1")
        );
        let bad = format!(
            "{GOOD}\n[cluster]\netcd = [\"10.0.0.5:2379\"]\nprefix = \"cutover/\"\netcd_cert = \"c.pem\"\nbogus = 1\n"
        );
        let p = problems(&bad);
        for expected in [
            "cluster.etcd[0]: expected an etcd URL",
            "cluster.prefix: expected a key prefix",
            "cluster.etcd_cert: etcd_cert and etcd_key go together",
            "cluster.bogus: unknown key",
        ] {
            assert!(p.iter().any(|l| l.contains(expected)), "{expected}: {p:#?}");
        }
        let missing = format!("{GOOD}\n[cluster]\nprefix = \"/x\"\n");
        assert!(
            problems(&missing)
                .iter()
                .any(|l| l.contains("cluster.etcd: missing required key")),
            "{:#?}",
            problems(&missing)
        );
    }

    #[test]
    fn zero_weights_and_duplicates_are_errors() {
        let text = GOOD
            .replace("blue = 70, green = 30", "blue = 0, green = 0")
            .replace("127.0.0.1:9003", "127.0.0.1:9001");
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|l| l.contains("route[0].split: every pool has weight 0")),
            "{p:#?}"
        );
        assert!(p.iter().any(|l| l.contains("listed twice")), "{p:#?}");
    }

    #[test]
    fn duplicate_route_names_are_errors_and_same_match_is_a_note() {
        let text = format!(
            "{GOOD}\n[[route]]\nname = \"app\"\nsplit = {{ blue = 1 }}\n[[route]]\nname = \"other\"\nhosts = [\"app.example.com\"]\nsplit = {{ blue = 1 }}\n"
        );
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|l| l.contains("route[1].name: route name \"app\" is used twice")),
            "{p:#?}"
        );
        assert_eq!(p.len(), 1, "{p:#?}");
        let text = format!(
            "{GOOD}\n[[route]]\nname = \"other\"\nhosts = [\"app.example.com\"]\nsplit = {{ blue = 1 }}\n"
        );
        let notes = Config::parse("t.toml", &text).unwrap().notes();
        assert_eq!(
            notes,
            [
                "note: routes \"app\" and \"other\" can match the same request with equal precedence (path_prefix \"/\", hosts, matcher counts): \"app\", earlier in the file, serves it"
            ]
        );
    }

    /// A route with matchers: the catch-all and `canary` header route for
    /// the same prefix do not tie; `beta` ties with `canary` unless their
    /// exact values differ.
    fn with_matchers(extra: &str) -> String {
        format!(
            "{GOOD}\n[[route]]\nname = \"canary\"\nhosts = [\"app.example.com\"]\nheaders = {{ \"X-Canary\" = \"always\" }}\nsplit = {{ green = 1 }}\n{extra}"
        )
    }

    #[test]
    fn matchers_are_read_and_more_matchers_do_not_tie() {
        let c = Config::parse("t.toml", &with_matchers(
            "[[route]]\nname = \"beta\"\nhosts = [\"app.example.com\"]\ncookies = { beta = { present = true } }\nquery = { preview = { regex = \"^(1|yes)$\" } }\nsplit = { green = 1 }\n",
        ))
        .unwrap();
        let canary = c.routes.iter().find(|r| r.name == "canary").unwrap();
        assert_eq!(canary.matchers.headers[0].0, "x-canary");
        assert_eq!(
            canary.matchers.headers[0].1,
            ValueMatch::Exact("always".into())
        );
        let beta = c.routes.iter().find(|r| r.name == "beta").unwrap();
        assert_eq!(beta.matchers.count(), 2);
        assert_eq!(beta.matchers.cookies[0].1, ValueMatch::Present);
    }

    #[test]
    fn routes_of_equal_precedence_are_a_note_unless_an_exact_value_tells_them_apart() {
        let tie = Config::parse("t.toml", &with_matchers(
            "[[route]]\nname = \"beta\"\nhosts = [\"app.example.com\"]\ncookies = { beta = \"1\" }\nsplit = { green = 1 }\n",
        ))
        .unwrap();
        let notes = tie.notes();
        assert!(
            notes.len() == 1 && notes[0].contains("routes \"canary\" and \"beta\""),
            "{notes:#?}"
        );
        // A query matcher ranks below a header one: no equal precedence.
        let ranked = Config::parse("t.toml", &with_matchers(
            "[[route]]\nname = \"preview\"\nhosts = [\"app.example.com\"]\nquery = { preview = \"1\" }\nsplit = { green = 1 }\n",
        ))
        .unwrap();
        assert!(ranked.notes().is_empty());
        let apart = with_matchers(
            "[[route]]\nname = \"never\"\nhosts = [\"app.example.com\"]\nheaders = { \"x-canary\" = \"never\" }\nsplit = { green = 1 }\n",
        );
        assert!(Config::parse("t.toml", &apart).unwrap().notes().is_empty());
    }

    #[test]
    fn bad_matchers_are_named_with_their_position() {
        let p = problems(&with_matchers(
            "[[route]]\nname = \"bad\"\npath_prefix = \"/bad\"\nheaders = { \"bad header\" = \"1\", x-a = { regex = \"(\" }, x-b = { present = false }, x-c = 3 }\ncookies = { x = { present = true, regex = \"a\" } }\nsplit = { green = 1 }\n",
        ));
        for want in [
            "route[2].headers.bad header: invalid header name",
            "route[2].headers.x-a.regex: invalid regex \"(\"",
            "route[2].headers.x-b.present: must be true",
            "route[2].headers.x-c: expected a string, { present = true } or { regex",
            "route[2].cookies.x: write exactly one of",
        ] {
            assert!(p.iter().any(|l| l.contains(want)), "{want}: {p:#?}");
        }
        assert!(p.iter().all(|l| l.starts_with("f.toml:")), "{p:#?}");
    }

    #[test]
    fn mirror_is_read_with_defaults_and_checked() {
        let c = Config::parse(
            "f.toml",
            &GOOD.replace(
                "split = { blue = 70, green = 30 }",
                "split = { blue = 70, green = 30 }\nmirror = { pool = \"green\", percent = 10, compare = [\"status_class\", \"body\"] }",
            ),
        )
        .unwrap();
        let m = c.routes[0].mirror.clone().unwrap();
        assert_eq!(
            (m.pool.as_str(), m.percent, m.max_body),
            ("green", 10, 65536)
        );
        assert_eq!(m.compare.words(), ["status_class", "body"]);
        let p = problems(&GOOD.replace(
            "split = { blue = 70, green = 30 }",
            "split = { blue = 70, green = 30 }\nmirror = { pool = \"red\", percent = 101, max_body = \"lots\", compare = [], timeout = \"0s\" }",
        ));
        for want in [
            "route[0].mirror.pool: no pool named \"red\"",
            "route[0].mirror.percent: must be an integer from 0 to 100, got 101",
            "route[0].mirror.max_body: invalid size \"lots\"",
            "route[0].mirror.compare: name at least one of",
            "route[0].mirror.timeout: must be longer than zero",
        ] {
            assert!(p.iter().any(|l| l.contains(want)), "{want}: {p:#?}");
        }
    }

    #[test]
    fn upstream_transport_problems_are_named() {
        let p = problems(&GOOD.replace(
            "upstreams = [ { addr = \"127.0.0.1:9002\" } ]",
            "upstreams = [ { addr = \"127.0.0.1:9002\" } ]\ntls = { client_cert = \"c.pem\" }\nhealth = { grpc = true }",
        ));
        for want in [
            "pool.green.tls: client_cert and client_key go together",
            "pool.green.health.grpc: a gRPC health check needs HTTP/2",
        ] {
            assert!(p.iter().any(|l| l.contains(want)), "{want}: {p:#?}");
        }
        let p = problems(&GOOD.replace(
            "upstreams = [ { addr = \"127.0.0.1:9002\" } ]",
            "upstreams = [ { addr = \"127.0.0.1:9002\" } ]\nprotocol = \"auto\"\ntls = 1",
        ));
        for want in [
            "pool.green.protocol: \"auto\" chooses by ALPN, which needs tls",
            "pool.green.tls: expected true or {",
        ] {
            assert!(p.iter().any(|l| l.contains(want)), "{want}: {p:#?}");
        }
        let p = problems(&GOOD.replace("127.0.0.1:9002", "not a host:80"));
        assert!(
            p.iter()
                .any(|l| l.contains("expected IP:PORT or NAME:PORT")),
            "{p:#?}"
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let p = problems("[[listener]]\nbind = \n");
        assert!(p[0].starts_with("f.toml:2:"), "{p:#?}");
    }

    #[test]
    fn non_loopback_admin_needs_token() {
        let p = problems(&GOOD.replace("bind = \"127.0.0.1:9090\"", "bind = \"0.0.0.0:9090\""));
        assert!(
            p[0].contains("admin.bind: 0.0.0.0:9090 is not a loopback address"),
            "{p:#?}"
        );
        let ok = GOOD.replace(
            "bind = \"127.0.0.1:9090\"",
            "bind = \"0.0.0.0:9090\"\ntoken_file = \"/etc/cutover/admin.token\"",
        );
        assert!(Config::parse("f.toml", &ok).is_ok());
    }

    #[test]
    fn missing_sections_are_named() {
        let p = problems("[pool.a]\nupstreams = []\n");
        assert!(
            p.iter()
                .any(|l| l.contains("listener: at least one [[listener]]")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|l| l.contains("route: at least one [[route]]")),
            "{p:#?}"
        );
        assert!(
            p.iter()
                .any(|l| l.contains("pool.a.upstreams: a pool needs at least one upstream")),
            "{p:#?}"
        );
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 3), (2, 1));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
