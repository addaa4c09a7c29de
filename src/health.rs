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
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::task::JoinHandle;

use crate::config::HealthConfig;
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

type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

struct Task {
    state: Arc<UpstreamState>,
    config: HealthConfig,
    handle: JoinHandle<()>,
}

/// The running checks, kept in step with the routing table.
pub struct HealthChecks {
    client: ProbeClient,
    tasks: HashMap<(String, SocketAddr), Task>,
}

impl Default for HealthChecks {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthChecks {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(connector);
        HealthChecks {
            client,
            tasks: HashMap::new(),
        }
    }

    /// Starts checks for new upstreams of checked pools and stops those of
    /// upstreams that are gone (or whose pool's check changed).
    pub fn sync(&mut self, table: &RouteTable) {
        let mut wanted = HashMap::new();
        for pool in table.pools() {
            let Some(config) = &pool.health else { continue };
            for u in &pool.upstreams {
                wanted.insert(
                    (pool.name.to_string(), u.state.addr()),
                    (Arc::clone(&u.state), config.clone()),
                );
            }
        }
        self.tasks.retain(|key, task| {
            let keep = wanted.get(key).is_some_and(|(state, config)| {
                Arc::ptr_eq(state, &task.state) && *config == task.config
            });
            if !keep {
                task.handle.abort();
            }
            keep
        });
        for (key, (state, config)) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let handle = tokio::spawn(run(
                self.client.clone(),
                key.0.clone(),
                Arc::clone(&state),
                config.clone(),
            ));
            self.tasks.insert(
                key,
                Task {
                    state,
                    config,
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

async fn run(client: ProbeClient, pool: String, state: Arc<UpstreamState>, config: HealthConfig) {
    let mut hysteresis = Hysteresis::default();
    let addr = state.addr();
    let uri = format!("http://{addr}{}", config.path);
    loop {
        let passed = probe(&client, &uri, &addr.to_string(), config.timeout).await;
        let current = state.health();
        if let Some(next) = hysteresis.observe(current, passed.is_ok(), config.rise, config.fall) {
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
        tokio::time::sleep(config.interval.mul_f64(jitter)).await;
    }
}

async fn probe(
    client: &ProbeClient,
    uri: &str,
    host: &str,
    timeout: Duration,
) -> Result<(), String> {
    let request = Request::get(uri)
        .header(header::HOST, host)
        .header(header::USER_AGENT, "cutover-health-check")
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, client.request(request)).await {
        Err(_) => Err(format!("no answer within {timeout:?}")),
        Ok(Err(e)) => Err(format!("request failed: {e}")),
        Ok(Ok(response))
            if response.status().is_success() || response.status().is_redirection() =>
        {
            Ok(())
        }
        Ok(Ok(response)) => Err(format!("status {}", response.status())),
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
