//! Configuration: the TOML file → a validated, typed [`Config`].
//!
//! Every problem in a file is reported at once as `FILE:LINE:COL: key.path:
//! message`; a file with any problem yields no `Config` at all, so a bad file can
//! never half-apply. Imports no sibling module.

mod reader;
mod sections;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeTable;

pub use sections::MAX_WEIGHT;

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
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub bind: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    pub token_file: Option<PathBuf>,
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
    pub client_header_timeout: Duration,
    /// A client connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// How long a graceful stop waits for in-flight requests.
    pub shutdown_timeout: Duration,
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
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            workers: 0,
            connect_timeout: Duration::from_secs(2),
            response_header_timeout: Duration::from_secs(30),
            client_header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_header_bytes: 64 * 1024,
            retries: 2,
            upstream_max_idle: 256,
            upstream_idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    /// Lower-cased; empty = any host. `*.example.com` matches subdomains.
    pub hosts: Vec<String>,
    pub path_prefix: String,
    /// Pool name → relative weight, in file order. At least one weight > 0.
    pub split: Vec<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub upstreams: Vec<UpstreamConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub addr: SocketAddr,
    pub weight: u32,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![format!("{display}: cannot read config file: {e}")],
        })?;
        Config::parse(&display, &text)
    }

    /// Validates `text`; `file` is the name used in problem reports.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let mut problems = Problems::default();
        let (root, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            // What the parser recovered after a syntax error is a guess;
            // checking it would add confusing follow-on problems.
            for e in syntax {
                problems.push(
                    e.span().unwrap_or(0..0),
                    "",
                    e.message().trim_end().to_string(),
                );
            }
            return Err(problems.into_error(file, text));
        }
        let config = sections::read_root(&root, &mut problems);
        if problems.list.is_empty() {
            Ok(config)
        } else {
            Err(problems.into_error(file, text))
        }
    }

    /// One line for `cutover check`.
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
mod tests;
