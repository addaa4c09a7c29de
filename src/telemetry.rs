//! Logging setup. Logs go to stderr (journald under systemd); the filter
//! comes from `CUTOVER_LOG` (default `info`), JSON lines with
//! `CUTOVER_LOG_FORMAT=json`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;

/// The log filter without `CUTOVER_LOG`. rustls warns for things any
/// client can do on every connection (an IP address as SNI, as wrk, curl
/// to an IP and many health checkers send): only its errors are kept, so
/// clients cannot flood the log.
const DEFAULT_LOG: &str = "info,rustls=error";

pub fn init_logging() {
    let filter = std::env::var("CUTOVER_LOG")
        .ok()
        .and_then(|spec| EnvFilter::try_new(with_quiet_rustls(&spec)).ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let json = std::env::var("CUTOVER_LOG_FORMAT").is_ok_and(|f| f == "json");
    // try_init: a second call (tests starting several proxies) is harmless.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// `CUTOVER_LOG=info` must not let rustls's per-connection warnings back
/// in: unless the filter names rustls itself, it gets `rustls=error`.
fn with_quiet_rustls(spec: &str) -> String {
    if spec.contains("rustls") {
        spec.to_string()
    } else {
        format!("{spec},rustls=error")
    }
}

/// Lets through at most [`LINES_PER_SECOND`] of one kind of log line per
/// second — for lines a client can cause on every request — and counts
/// the rest, to be reported with the next line let through.
pub struct LogLimit {
    second: AtomicU64,
    this_second: AtomicU64,
    suppressed: AtomicU64,
}

pub const LINES_PER_SECOND: u64 = 10;

impl LogLimit {
    pub const fn new() -> LogLimit {
        LogLimit {
            second: AtomicU64::new(0),
            this_second: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one let through)` if this
    /// line may be logged.
    pub fn allow(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.this_second.store(0, Ordering::Relaxed);
        }
        if self.this_second.fetch_add(1, Ordering::Relaxed) < LINES_PER_SECOND {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// Metric names (SPEC.md). Labels are bounded by config: routes, pools,
/// upstreams and five status classes.
pub mod names {
    pub const REQUESTS_TOTAL: &str = "cutover_requests_total";
    pub const PROXY_PROTOCOL_REFUSED_TOTAL: &str = "cutover_proxy_protocol_refused_total";
    pub const TLS_CLIENT_CERTIFICATES_REFUSED_TOTAL: &str =
        "cutover_tls_client_certificates_refused_total";
    /// Spans sent to the OTLP collector (`result`: ok, error).
    pub const TRACE_SPANS_EXPORTED_TOTAL: &str = "cutover_trace_spans_exported_total";
    pub const REQUEST_DURATION_SECONDS: &str = "cutover_request_duration_seconds";
    pub const UPSTREAM_IN_FLIGHT: &str = "cutover_upstream_in_flight";
    pub const UPSTREAM_HEALTHY: &str = "cutover_upstream_healthy";
    /// The current step (1-based) of a route's latest rollout.
    pub const ROLLOUT_STEP: &str = "cutover_rollout_step";
    /// 1 for the state the route's latest rollout is in, 0 for the others.
    pub const ROLLOUT_STATE: &str = "cutover_rollout_state";
    /// The error rate and p99 the last rollout check used, per pool.
    pub const ROLLOUT_ERROR_RATE: &str = "cutover_rollout_error_rate";
    pub const ROLLOUT_P99_SECONDS: &str = "cutover_rollout_p99_seconds";
    /// Health verdict changes.
    pub const UPSTREAM_HEALTH_TRANSITIONS_TOTAL: &str = "cutover_upstream_health_transitions_total";
    pub const ROUTE_WEIGHT: &str = "cutover_route_weight";
    /// Admin API calls refused for a missing or wrong token (or over the
    /// failure limit).
    pub const ADMIN_AUTH_FAILURES_TOTAL: &str = "cutover_admin_auth_failures_total";
    /// Shadow copies by outcome: `same`, `differs`, `failed`, `skipped`.
    pub const MIRROR_TOTAL: &str = "cutover_mirror_total";
    /// Extra: client connections open now.
    pub const CLIENT_CONNECTIONS: &str = "cutover_client_connections";
    /// Extra: idle HTTP/1.1 client connections parked (holding no buffers).
    pub const CLIENT_CONNECTIONS_PARKED: &str = "cutover_client_connections_parked";
    /// Extra: upstream connect failures (each retried elsewhere if possible).
    pub const UPSTREAM_CONNECT_ERRORS_TOTAL: &str = "cutover_upstream_connect_errors_total";
    /// Extra: upstream connections closed because the upstream sent bytes
    /// no request asked for (its connections then go unreused a while).
    pub const UPSTREAM_UNSOLICITED_TOTAL: &str = "cutover_upstream_unsolicited_total";
    /// Extra: requests that waited in a pool's queue (`max_in_flight`).
    pub const QUEUED_TOTAL: &str = "cutover_queued_total";
    /// Extra: requests waiting in a pool's queue now.
    pub const QUEUE_WAITING: &str = "cutover_queue_waiting";
    /// Extra: requests a pool's queue turned away (`reason`: `full`,
    /// `timeout` — a 503 — or `left`: the client left while waiting).
    pub const QUEUE_REJECTED_TOTAL: &str = "cutover_queue_rejected_total";
    /// Extra: requests sent again to another upstream, by route and
    /// `reason` (`connect`, `reset`, `503`, `5xx`).
    pub const RETRIES_TOTAL: &str = "cutover_retries_total";
    /// Extra: retries a route's `retry.budget` refused.
    pub const RETRY_BUDGET_EXHAUSTED_TOTAL: &str = "cutover_retry_budget_exhausted_total";
    /// Extra: tunnels (WebSocket…) ended by their upstream's drain deadline.
    pub const TUNNELS_DRAINED_TOTAL: &str = "cutover_tunnels_drained_total";
    /// Extra: responses still streaming cut at their upstream's drain
    /// deadline.
    pub const RESPONSES_DRAINED_TOTAL: &str = "cutover_responses_drained_total";
    /// Extra: requests a route's `rate_limit` answered 429.
    pub const RATE_LIMITED_TOTAL: &str = "cutover_rate_limited_total";
    /// Extra: passive outlier ejections.
    pub const UPSTREAM_EJECTIONS_TOTAL: &str = "cutover_upstream_ejections_total";
    /// In a fleet: 1 while etcd is reachable (changes can be made).
    pub const CLUSTER_CONNECTED: &str = "cutover_cluster_connected";
    /// In a fleet: the revision of the shared state this instance serves.
    pub const CLUSTER_REVISION: &str = "cutover_cluster_revision";
    /// Extra: HTTP/1.1 request heads not complete within
    /// `request_header_timeout` (answered 408).
    pub const REQUEST_HEAD_TIMEOUTS_TOTAL: &str = "cutover_request_head_timeouts_total";
    /// Extra: plain HTTP/1.1 connections handed from the direct path to
    /// hyper's, at a request the direct path does not take.
    pub const DIRECT_FALLBACKS_TOTAL: &str = "cutover_direct_fallbacks_total";
    /// Extra: errors cutover's HTTP/2 server sent (`scope`: `connection`
    /// for a GOAWAY, `stream` for a RST_STREAM; `reason`: its code).
    pub const HTTP2_ERRORS_TOTAL: &str = "cutover_http2_errors_total";
}

static METRICS: std::sync::OnceLock<Option<metrics_exporter_prometheus::PrometheusHandle>> =
    std::sync::OnceLock::new();

/// Installs the Prometheus recorder once per process; `None` if another
/// recorder was installed first.
pub fn metrics() -> Option<&'static metrics_exporter_prometheus::PrometheusHandle> {
    METRICS
        .get_or_init(|| {
            use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(names::REQUEST_DURATION_SECONDS.into()),
                    &buckets,
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    start_at_zero();
                    spawn_upkeep(handle.clone());
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .as_ref()
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The recorder keeps every histogram sample until upkeep folds it into
/// buckets; a scrape runs upkeep, but a proxy nobody scrapes would grow by
/// ~24 bytes per request. A thread, not a task: the recorder is
/// process-wide and outlives any one runtime.
fn spawn_upkeep(handle: metrics_exporter_prometheus::PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics upkeep thread not started; histograms are folded at scrape time only");
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        names::REQUESTS_TOTAL,
        "Requests answered, by route, pool, upstream and status class"
    );
    describe_histogram!(
        names::REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from receiving a request to the end of its response, by route and pool"
    );
    describe_gauge!(
        names::UPSTREAM_IN_FLIGHT,
        "Requests in flight to an upstream"
    );
    describe_gauge!(
        names::UPSTREAM_HEALTHY,
        "1 if the upstream is healthy, else 0"
    );
    describe_gauge!(
        names::ROUTE_WEIGHT,
        "The route's current split weight for a pool"
    );
    describe_gauge!(names::CLIENT_CONNECTIONS, "Client connections open");
    describe_gauge!(
        names::ROLLOUT_STEP,
        "Step (1-based) of the route's latest rollout"
    );
    describe_gauge!(
        names::ROLLOUT_STATE,
        "1 for the state of the route's latest rollout"
    );
    describe_gauge!(
        names::ROLLOUT_ERROR_RATE,
        "Error rate per pool in the last rollout check"
    );
    describe_gauge!(
        names::ROLLOUT_P99_SECONDS,
        Unit::Seconds,
        "p99 per pool in the last rollout check"
    );
    describe_gauge!(
        names::CLIENT_CONNECTIONS_PARKED,
        "Idle HTTP/1.1 client connections parked without buffers"
    );
    describe_counter!(
        names::UPSTREAM_CONNECT_ERRORS_TOTAL,
        "Failed connects to an upstream"
    );
    describe_gauge!(
        names::CLUSTER_CONNECTED,
        "1 while the fleet's etcd is reachable"
    );
    describe_gauge!(
        names::CLUSTER_REVISION,
        "Revision of the fleet state this instance serves"
    );
    describe_counter!(
        names::REQUEST_HEAD_TIMEOUTS_TOTAL,
        "HTTP/1.1 request heads not complete in time (408)"
    );
    describe_counter!(
        names::TRACE_SPANS_EXPORTED_TOTAL,
        "Spans sent to the OTLP collector, by result"
    );
    describe_counter!(
        names::DIRECT_FALLBACKS_TOTAL,
        "HTTP/1.1 connections handed from the direct path to hyper's"
    );
    describe_counter!(
        names::HTTP2_ERRORS_TOTAL,
        "HTTP/2 errors sent to clients (scope: connection = GOAWAY, stream = RST_STREAM; reason: the code)"
    );
    describe_counter!(
        names::UPSTREAM_UNSOLICITED_TOTAL,
        "Upstream connections closed for bytes no request asked for"
    );
    describe_counter!(
        names::UPSTREAM_EJECTIONS_TOTAL,
        "Upstreams ejected by passive outlier detection"
    );
    describe_counter!(
        names::QUEUED_TOTAL,
        "Requests that waited in a pool's queue (every upstream at max_in_flight)"
    );
    describe_gauge!(
        names::QUEUE_WAITING,
        "Requests waiting in a pool's queue now"
    );
    describe_counter!(
        names::QUEUE_REJECTED_TOTAL,
        "Requests a pool's queue turned away (reason: full, timeout: 503; left: the client left)"
    );
    describe_counter!(
        names::TUNNELS_DRAINED_TOTAL,
        "Tunnels (WebSocket and other upgrades) ended at their upstream's drain deadline"
    );
    describe_counter!(
        names::RESPONSES_DRAINED_TOTAL,
        "Responses still streaming cut at their upstream's drain deadline"
    );
    describe_counter!(
        names::RATE_LIMITED_TOTAL,
        "Requests a route's rate limit answered 429"
    );
    describe_counter!(
        names::RETRIES_TOTAL,
        "Requests sent again to another upstream, by route and reason (connect, reset, 503, 5xx)"
    );
    describe_counter!(
        names::RETRY_BUDGET_EXHAUSTED_TOTAL,
        "Retries a route's retry budget refused"
    );
    describe_counter!(
        names::UPSTREAM_HEALTH_TRANSITIONS_TOTAL,
        "Health verdict changes from active checks"
    );
    describe_counter!(
        names::ADMIN_AUTH_FAILURES_TOTAL,
        "Admin API calls refused for a missing or wrong token"
    );
    describe_counter!(
        names::MIRROR_TOTAL,
        "Shadow copies of mirrored requests, by how their answer compared with the client's"
    );
}

/// The counters without labels, at 0 from the start: a dashboard or an
/// alert on them can be built before their first event. (Counters per
/// upstream start at 0 when the upstream appears, `proxy::pools`; the
/// access log's when it starts.)
fn start_at_zero() {
    for name in [
        names::REQUEST_HEAD_TIMEOUTS_TOTAL,
        names::DIRECT_FALLBACKS_TOTAL,
        names::ADMIN_AUTH_FAILURES_TOTAL,
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// `2xx` etc. for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
