//! Active health checks: one task per upstream of a pool with `health`,
//! probing `GET path` every `interval` (jittered ±10 % so checks do not
//! align), each probe bounded by `timeout`; 2xx and 3xx pass.
//!
//! Hysteresis: a healthy upstream becomes unhealthy after `fall` failures in
//! a row, an unhealthy one healthy after `rise` passes in a row. An upstream
//! with no verdict yet (`Unknown`) takes the first probe's result. Writes
//! `UpstreamState` only; never touches the routing table.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Method, Request, Uri, Version, header};
use http_body_util::{BodyExt, Full};
use tokio::task::JoinHandle;

use crate::config::{HealthConfig, UpstreamProtocol, UpstreamTls};
use crate::connector::{Conn, Connector};
use crate::routing::RouteTable;
use crate::telemetry::names;
use crate::upstream::{Health, UpstreamState};

/// Counts passes and failures in a row and says when the verdict flips.
#[derive(Debug, Default)]
pub struct Hysteresis {
    passes: u32,
    failures: u32,
}

impl Hysteresis {
    /// The new verdict if this probe result changes `current`.
    pub fn observe(
        &mut self,
        current: Health,
        passed: bool,
        rise: u32,
        fall: u32,
    ) -> Option<Health> {
        if passed {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
        }
        match current {
            Health::Unknown => Some(if passed {
                Health::Healthy
            } else {
                Health::Unhealthy
            }),
            Health::Healthy if !passed && self.failures >= fall => Some(Health::Unhealthy),
            Health::Unhealthy if passed && self.passes >= rise => Some(Health::Healthy),
            _ => None,
        }
    }
}

/// How a pool's upstreams are spoken to, with its TLS files' modification
/// times; a change restarts their checks.
type Transport = (
    Option<UpstreamTls>,
    UpstreamProtocol,
    Vec<Option<std::time::SystemTime>>,
    Option<crate::config::SendProxy>,
);

struct Task {
    state: Arc<UpstreamState>,
    config: HealthConfig,
    transport: Transport,
    handle: JoinHandle<()>,
}

/// The running checks, kept in step with the routing table.
#[derive(Default)]
pub struct HealthChecks {
    tasks: HashMap<(String, SocketAddr), Task>,
}

impl HealthChecks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts checks for new upstreams of checked pools and stops those of
    /// upstreams that are gone (or whose pool's check changed).
    pub fn sync(&mut self, table: &RouteTable) {
        let mut wanted = HashMap::new();
        for pool in table.pools() {
            let Some(config) = &pool.health else { continue };
            let stamp = pool
                .tls
                .as_ref()
                .map(crate::upstream_tls::files_stamp)
                .unwrap_or_default();
            for u in &pool.upstreams {
                let transport: Transport =
                    (u.tls.clone(), pool.protocol, stamp.clone(), pool.send_proxy);
                wanted.insert(
                    (pool.name.to_string(), u.state.addr()),
                    (Arc::clone(&u.state), config.clone(), transport.clone()),
                );
            }
        }
        self.tasks.retain(|key, task| {
            let keep = wanted.get(key).is_some_and(|(state, config, transport)| {
                Arc::ptr_eq(state, &task.state)
                    && *config == task.config
                    && *transport == task.transport
            });
            if !keep {
                task.handle.abort();
            }
            keep
        });
        for (key, (state, config, transport)) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let connector = Connector::new(&key.0, transport.0.as_ref(), transport.1, transport.3);
            let handle = tokio::spawn(run(
                connector,
                key.0.clone(),
                Arc::clone(&state),
                config.clone(),
            ));
            self.tasks.insert(
                key,
                Task {
                    state,
                    config,
                    transport,
                    handle,
                },
            );
        }
    }

    /// Waits until every checked upstream has a verdict, or `limit` passes.
    pub async fn first_verdicts(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self
            .tasks
            .values()
            .any(|t| t.state.health() == Health::Unknown)
        {
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.handle.abort();
        }
    }
}

async fn run(connector: Connector, pool: String, state: Arc<UpstreamState>, config: HealthConfig) {
    let mut hysteresis = Hysteresis::default();
    let addr = state.addr();
    let mut probe = Probe {
        connector,
        addr,
        config,
        conn: None,
    };
    loop {
        let passed = probe.once().await;
        let current = state.health();
        let (rise, fall) = (probe.config.rise, probe.config.fall);
        if let Some(next) = hysteresis.observe(current, passed.is_ok(), rise, fall) {
            state.set_health(next);
            let to = if next == Health::Healthy {
                "healthy"
            } else {
                "unhealthy"
            };
            match &passed {
                Ok(()) => tracing::info!(%pool, upstream = %addr, to, "health changed"),
                Err(reason) => {
                    tracing::warn!(%pool, upstream = %addr, to, %reason, "health changed")
                }
            }
            metrics::counter!(names::UPSTREAM_HEALTH_TRANSITIONS_TOTAL, "pool" => pool.clone(), "upstream" => addr.to_string(), "to" => to)
                .increment(1);
        } else if passed.is_ok() && current == Health::Healthy {
            // Keeps an ejected upstream's "probe passed" up to date.
            state.set_health(Health::Healthy);
        }
        let jitter = 0.9 + fastrand::f64() * 0.2;
        tokio::time::sleep(probe.config.interval.mul_f64(jitter)).await;
    }
}

/// One upstream's probes, over a connection kept between them (made as
/// the pool makes its connections: TLS, HTTP/2).
struct Probe {
    connector: Connector,
    addr: SocketAddr,
    config: HealthConfig,
    conn: Option<Conn<Full<Bytes>>>,
}

impl Probe {
    /// One probe within the check's timeout. A kept connection the
    /// upstream closed meanwhile costs one retry on a new one, not a
    /// failed probe.
    async fn once(&mut self) -> Result<(), String> {
        let timeout = self.config.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let reused = self.conn.is_some();
        let first = tokio::time::timeout_at(deadline, self.ask()).await;
        let outcome = match first {
            Ok(Err(_)) if reused => {
                self.conn = None;
                tokio::time::timeout_at(deadline, self.ask()).await
            }
            other => other,
        };
        match outcome {
            Err(_) => {
                self.conn = None;
                Err(format!("no answer within {timeout:?}"))
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn ask(&mut self) -> Result<(), String> {
        if self.conn.as_ref().is_none_or(|c| match c {
            Conn::H1(s) => s.is_closed(),
            Conn::H2(s) => s.is_closed(),
        }) {
            let conn = self
                .connector
                .connect(self.addr, self.config.timeout, None, None)
                .await
                .map_err(|e| format!("connect failed: {e}"))?;
            self.conn = Some(conn);
        }
        let request = self.request()?;
        let response = match self.conn.as_mut() {
            Some(Conn::H1(s)) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(request).await
            }
            Some(Conn::H2(s)) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(request).await
            }
            None => return Err("no connection".into()),
        }
        .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let grpc_in_head = response.headers().get("grpc-status").cloned();
        // Read to the end: the connection is reused, and gRPC's verdict
        // comes in the trailers.
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        if !self.config.grpc {
            return if status.is_success() || status.is_redirection() {
                Ok(())
            } else {
                Err(format!("status {status}"))
            };
        }
        let grpc_status = body
            .trailers()
            .and_then(|t| t.get("grpc-status").cloned())
            .or(grpc_in_head);
        match grpc_status.as_ref().map(|v| v.as_bytes()) {
            Some(b"0") => {}
            Some(code) => {
                return Err(format!("grpc-status {}", String::from_utf8_lossy(code)));
            }
            None => return Err(format!("status {status} without grpc-status")),
        }
        // HealthCheckResponse { status = 1 (SERVING) }, after the 5-byte
        // gRPC message prefix.
        match body.to_bytes().get(5..) {
            Some([0x08, 0x01]) => Ok(()),
            Some(other) => Err(format!("not SERVING (message {other:02x?})")),
            None => Err("no message".into()),
        }
    }

    fn request(&self) -> Result<Request<Full<Bytes>>, String> {
        let h2 = matches!(self.conn, Some(Conn::H2(_)));
        let authority: Authority = self.addr.to_string().parse().map_err(|e| format!("{e}"))?;
        let (method, body) = if self.config.grpc {
            // An empty HealthCheckRequest (service ""), framed.
            (Method::POST, Bytes::from_static(&[0, 0, 0, 0, 0]))
        } else {
            (Method::GET, Bytes::new())
        };
        let uri = if h2 {
            let scheme = if self.connector.is_tls() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            };
            Uri::builder()
                .scheme(scheme)
                .authority(authority.clone())
                .path_and_query(self.config.path.as_str())
                .build()
        } else {
            Uri::builder()
                .path_and_query(self.config.path.as_str())
                .build()
        }
        .map_err(|e| e.to_string())?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .version(if h2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            })
            .header(header::USER_AGENT, "cutover-health-check");
        if !h2 {
            request = request.header(header::HOST, authority.as_str());
        }
        if self.config.grpc {
            request = request
                .header(header::CONTENT_TYPE, "application/grpc")
                .header(header::TE, "trailers");
        }
        request.body(Full::new(body)).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_minus_one_failures_do_not_eject_and_rise_minus_one_passes_do_not_restore() {
        let (rise, fall) = (2, 3);
        let mut h = Hysteresis::default();
        assert_eq!(
            h.observe(Health::Unknown, true, rise, fall),
            Some(Health::Healthy)
        );
        assert_eq!(h.observe(Health::Healthy, false, rise, fall), None);
        assert_eq!(h.observe(Health::Healthy, false, rise, fall), None);
        // A pass resets the run of failures.
        assert_eq!(h.observe(Health::Healthy, true, rise, fall), None);
        assert_eq!(h.observe(Health::Healthy, false, rise, fall), None);
        assert_eq!(h.observe(Health::Healthy, false, rise, fall), None);
        assert_eq!(
            h.observe(Health::Healthy, false, rise, fall),
            Some(Health::Unhealthy)
        );
        assert_eq!(h.observe(Health::Unhealthy, true, rise, fall), None);
        assert_eq!(h.observe(Health::Unhealthy, false, rise, fall), None);
        assert_eq!(h.observe(Health::Unhealthy, true, rise, fall), None);
        assert_eq!(
            h.observe(Health::Unhealthy, true, rise, fall),
            Some(Health::Healthy)
        );
        let mut first = Hysteresis::default();
        assert_eq!(
            first.observe(Health::Unknown, false, rise, fall),
            Some(Health::Unhealthy)
        );
    }
}
