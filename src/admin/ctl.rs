//! `cutover ctl`: the admin API from the command line. Prints a readable
//! table or line (or the API's JSON with `--json`); an API error is one clear
//! line on stderr and a non-zero exit.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::control::status::Status;

#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// Admin API base URL (`HOST:PORT` alone means `http://HOST:PORT`).
    #[arg(
        long,
        env = "CUTOVER_ADMIN",
        default_value = "http://127.0.0.1:9090",
        global = true
    )]
    admin: String,
    /// File holding the admin bearer token.
    #[arg(long, env = "CUTOVER_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify an `https://` admin API against;
    /// without it, the system's CAs.
    #[arg(long, env = "CUTOVER_CA", global = true)]
    ca: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(clap::Subcommand, Debug)]
enum Verb {
    /// Routes with their configured and effective split, mirrors, and
    /// every upstream's state and in-flight count.
    Status {
        /// Also every instance of the fleet (`[cluster]`): its revision,
        /// last heartbeat and requests in flight.
        #[arg(long)]
        fleet: bool,
    },
    /// Set a route's split: `cutover ctl split app blue=90 green=10`.
    Split {
        /// The route, as named in the config file.
        route: String,
        /// Relative weights; pools not named get 0.
        #[arg(required = true, value_name = "POOL=WEIGHT")]
        weights: Vec<String>,
        /// Send traffic even to a pool with no healthy upstream.
        #[arg(long)]
        force: bool,
    },
    /// Copy a share of a route's requests to a pool and compare its answers
    /// with the clients': `cutover ctl mirror app green=10` (0 stops it).
    Mirror {
        /// The route whose requests are copied.
        route: String,
        /// Where copies go and the percent of requests copied (0 to 100).
        #[arg(value_name = "POOL=PERCENT")]
        target: String,
    },
    /// Progressive shift to a pool, judged on live traffic, rolled back by
    /// itself on a breach. With --wait: one line per event; exit 0 promoted,
    /// 2 rolled back, 3 aborted, 1 error.
    Rollout(Box<RolloutArgs>),
    /// Approve a rollout waiting for approval, or skip the rest of its step.
    Promote {
        /// The route whose rollout to promote.
        route: String,
    },
    /// Hold a rollout at its step (analysis stops; the split stays).
    Pause {
        /// The route whose rollout to pause.
        route: String,
    },
    /// Go on with a paused rollout.
    Resume {
        /// The route whose rollout to resume.
        route: String,
    },
    /// Stop a rollout and return to the split it started from.
    Abort {
        /// The route whose rollout to abort.
        route: String,
    },
    /// No new requests to an upstream (or every upstream of a pool);
    /// in-flight ones finish.
    Drain {
        /// The pool.
        pool: String,
        /// One upstream, IP:PORT; without it the whole pool drains.
        addr: Option<String>,
        /// How long sticky clients may still reach it, e.g. 10m (default 30s).
        #[arg(long)]
        timeout: Option<String>,
        /// Wait, showing progress, until drained.
        #[arg(long)]
        wait: bool,
    },
    /// Back into rotation (clears disable and drain).
    Enable {
        /// The upstream's pool.
        pool: String,
        /// The upstream, IP:PORT.
        addr: String,
    },
    /// Out of rotation now.
    Disable {
        /// The upstream's pool.
        pool: String,
        /// The upstream, IP:PORT.
        addr: String,
    },
    /// Add an upstream to a pool.
    Add {
        /// The pool to add to.
        pool: String,
        /// The new upstream, IP:PORT.
        addr: String,
        /// Its weight within the pool.
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Remove an upstream from a pool: it drains first, then leaves.
    Remove {
        /// The upstream's pool.
        pool: String,
        /// The upstream, IP:PORT.
        addr: String,
        /// Wait, showing progress, until it is gone.
        #[arg(long)]
        wait: bool,
    },
    /// Whether every upstream of a pool is healthy (in rotation: not
    /// unhealthy, ejected, disabled or draining); exit 0 if so, 5 if not —
    /// a deploy script's guard before it moves traffic.
    Health {
        /// The pool, as named in the config file.
        pool: String,
    },
    /// The last entries of the audit log: who changed what, and how it ended.
    Audit {
        /// How many entries, newest last.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Re-read the config file.
    Reload,
    /// Binary upgrade: a new process takes the listening sockets.
    Upgrade,
}

#[derive(clap::Args, Debug)]
pub struct RolloutArgs {
    /// The route to roll out.
    route: String,
    /// The pool traffic moves to.
    #[arg(long)]
    to: String,
    /// The target's percent at each step, ending at 100 (default 5,25,50,100).
    #[arg(long, value_delimiter = ',', conflicts_with = "preset")]
    steps: Option<Vec<u32>>,
    /// all-at-once, canary-10-5m or linear-10-1m.
    #[arg(long)]
    preset: Option<String>,
    /// Time at each step, e.g. 30s (default 30s, or the preset's).
    #[arg(long)]
    interval: Option<String>,
    /// Roll back when the target's error rate passes this (0 to 1).
    #[arg(long)]
    max_error_rate: Option<f64>,
    /// Roll back when the target's error rate is this much above the
    /// baseline's (0 to 1; `off` turns the comparison off).
    #[arg(long)]
    max_error_rate_increase: Option<String>,
    /// Roll back when the target's p99 passes this, e.g. 500ms.
    #[arg(long)]
    max_p99: Option<String>,
    /// Roll back when the target's p99 is this many times the baseline's
    /// (judged with --confidence; default 1.5); `off` turns the latency
    /// test off.
    #[arg(long)]
    max_p99_ratio: Option<String>,
    /// A p99 at most this many ms above the baseline's is never a
    /// regression (default 5).
    #[arg(long)]
    min_p99_increase_ms: Option<u64>,
    /// The quantile the latency test compares: p50 to p99.9 (default p99).
    #[arg(long)]
    latency_quantile: Option<String>,
    /// Requests the target must serve before a step is judged.
    #[arg(long)]
    min_requests: Option<u64>,
    /// How often the step is judged, e.g. 5s.
    #[arg(long)]
    check_every: Option<String>,
    /// Failing checks in a row that roll back (1 to 100; default 2).
    #[arg(long)]
    failure_limit: Option<u32>,
    /// Roll back when the target's error rate is more than this many times
    /// the baseline's (and more than --max-error-rate-increase above it);
    /// `off` turns the ratio off.
    #[arg(long)]
    max_error_ratio: Option<String>,
    /// The error and latency tests' confidence, above 0.5 and at most
    /// 0.9999 (default 0.99).
    #[arg(long)]
    confidence: Option<f64>,
    /// The longest a step waits for enough requests, e.g. 5m (default three
    /// intervals).
    #[arg(long)]
    max_step_wait: Option<String>,
    /// What a step that waited --max-step-wait without data does: pause,
    /// rollback or promote (default pause).
    #[arg(long)]
    on_inconclusive: Option<String>,
    /// Move on as soon as the error and latency tests say the target is
    /// within their tolerances, not at the end of the interval.
    #[arg(long)]
    promote_on_pass: bool,
    /// When the route mirrors to the target: roll back once more than this
    /// share (0 to 1) of the compared shadow copies differ.
    #[arg(long)]
    max_shadow_diff_rate: Option<f64>,
    /// Hold before the step to 100 % until `cutover ctl promote ROUTE`.
    #[arg(long)]
    approve_before_100: bool,
    /// Start even if the target has no healthy upstream.
    #[arg(long)]
    force: bool,
    /// Follow the rollout to its end; the exit code says how it ended.
    #[arg(long)]
    wait: bool,
}

/// A flag's number, or `off` (null: that check turned off).
fn number_or_off(flag: &str, value: &str, example: &str) -> Result<Value, CtlError> {
    match value {
        "off" => Ok(Value::Null),
        n => n
            .parse::<f64>()
            .map(|n| json!(n))
            .map_err(|_| CtlError::Usage(format!("{flag} {n:?}: a number like {example}, or off"))),
    }
}

impl RolloutArgs {
    fn body(&self) -> Result<Value, CtlError> {
        let mut body = json!({"to": self.to});
        if let Some(steps) = &self.steps {
            body["steps"] = json!(steps);
        }
        if let Some(preset) = &self.preset {
            body["preset"] = json!(preset);
        }
        if let Some(interval) = &self.interval {
            body["interval"] = json!(interval);
        }
        let mut analysis = serde_json::Map::new();
        if let Some(r) = self.max_error_rate {
            analysis.insert("max_error_rate".into(), json!(r));
        }
        if let Some(r) = &self.max_error_rate_increase {
            let increase = number_or_off("--max-error-rate-increase", r, "0.001")?;
            analysis.insert("max_error_rate_increase".into(), increase);
        }
        if let Some(n) = self.failure_limit {
            analysis.insert("failure_limit".into(), json!(n));
        }
        if let Some(r) = &self.max_error_ratio {
            let ratio = number_or_off("--max-error-ratio", r, "1.5")?;
            analysis.insert("max_error_ratio".into(), ratio);
        }
        if let Some(c) = self.confidence {
            analysis.insert("confidence".into(), json!(c));
        }
        if let Some(w) = &self.max_step_wait {
            analysis.insert("max_step_wait".into(), json!(w));
        }
        if let Some(o) = &self.on_inconclusive {
            analysis.insert("on_inconclusive".into(), json!(o));
        }
        if self.promote_on_pass {
            analysis.insert("promote_on_pass".into(), json!(true));
        }
        if let Some(r) = self.max_shadow_diff_rate {
            analysis.insert("max_shadow_diff_rate".into(), json!(r));
        }
        if let Some(p99) = &self.max_p99 {
            let d = humantime::parse_duration(p99).map_err(|e| {
                CtlError::Usage(format!("--max-p99 {p99:?}: {e} (write e.g. 500ms)"))
            })?;
            analysis.insert("max_p99_ms".into(), json!(d.as_millis() as u64));
        }
        if let Some(r) = &self.max_p99_ratio {
            let ratio = number_or_off("--max-p99-ratio", r, "1.5")?;
            analysis.insert("max_p99_ratio".into(), ratio);
        }
        if let Some(ms) = self.min_p99_increase_ms {
            analysis.insert("min_p99_increase_ms".into(), json!(ms));
        }
        if let Some(q) = &self.latency_quantile {
            analysis.insert("latency_quantile".into(), json!(q));
        }
        if let Some(n) = self.min_requests {
            analysis.insert("min_requests".into(), json!(n));
        }
        if let Some(c) = &self.check_every {
            analysis.insert("check_every".into(), json!(c));
        }
        if !analysis.is_empty() {
            body["analysis"] = Value::Object(analysis);
        }
        if self.approve_before_100 {
            body["approval"] = json!("before-100");
        }
        Ok(body)
    }
}

/// How `cutover ctl rollout --wait` ended, as its exit code.
pub const EXIT_ROLLED_BACK: u8 = 2;
pub const EXIT_ABORTED: u8 = 3;

/// `cutover ctl health POOL`: some upstream of the pool is not healthy.
pub const EXIT_NOT_HEALTHY: u8 = 5;

/// The exit codes, as `cutover ctl --help` prints them.
pub const EXIT_CODES: &str = "Exit codes: 0 ok; 1 usage error or an answer that is not the admin API's; \
2 refused by the proxy (a 4xx answer: bad input, unknown name, conflict); \
3 the admin API cannot be reached; 4 not authorized (--token-file). \
rollout --wait: 0 promoted, 2 rolled back, 3 aborted. health: 5 not every upstream healthy. \
Errors go to stderr.";

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error(
        "cannot reach the admin API at {url}: {reason} (is the proxy running, and is --admin its [admin] bind?)"
    )]
    Unreachable { url: String, reason: String },
    /// The proxy refused the call (4xx).
    #[error("{status}: {message}")]
    Refused {
        status: http::StatusCode,
        message: String,
    },
    #[error(
        "{status}: {message} (give the admin token with --token-file FILE or CUTOVER_TOKEN_FILE)"
    )]
    Unauthorized {
        status: http::StatusCode,
        message: String,
    },
    /// An answer that is not what the admin API gives: a 5xx, or a body
    /// of another shape (e.g. --admin pointed at a proxy listener).
    #[error("unexpected answer from {url}: {what}")]
    Unexpected { url: String, what: String },
    #[error("{0}")]
    Usage(String),
    /// Any error of `rollout --wait`, whose 2 and 3 mean rolled back and
    /// aborted.
    #[error("{0}")]
    WhileWaiting(Box<CtlError>),
}

impl CtlError {
    /// The process exit code for this error (see [`EXIT_CODES`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) | CtlError::Unexpected { .. } | CtlError::WhileWaiting(_) => 1,
            CtlError::Refused { .. } => 2,
            CtlError::Unreachable { .. } => 3,
            CtlError::Unauthorized { .. } => 4,
        }
    }
}

/// An error and what caused it, down the chain: "client error (Connect)"
/// alone does not say that a certificate was refused.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The API's words for its query flags, in the CLI's.
fn in_cli_words(message: &str) -> String {
    message
        .replace("add ?force=true to insist", "add --force to insist")
        .replace("?force=true", "--force")
}

/// The admin API's base URL from `--admin`: `HOST:PORT` alone means
/// `http://HOST:PORT` (as curl reads it); anything but an http(s) URL of a
/// host is a usage error that shows the expected form.
fn admin_base(raw: &str) -> Result<String, CtlError> {
    let raw = raw.trim().trim_end_matches('/');
    let url = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let bad = |why: &str| {
        CtlError::Usage(format!(
            "--admin {raw:?}: {why}; expected the admin listener's URL, like http://127.0.0.1:9090"
        ))
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("only http:// and https:// are spoken"));
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(bad("no host"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("a base URL has no path"));
    }
    Ok(url)
}

/// An HTTP client for the admin API: plain, or TLS verified against `ca`
/// (or the system's CAs) when `admin` is an `https://` URL.
fn admin_client(
    admin: &str,
    ca: Option<&std::path::Path>,
) -> Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>, CtlError> {
    let roots = if admin.starts_with("https://") {
        crate::upstream_tls::roots(ca).map_err(CtlError::Usage)?
    } else {
        rustls::RootCertStore::empty()
    };
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CtlError::Usage(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

struct Api {
    base: String,
    token: Option<String>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CtlError> {
        self.call_within(method, path, body, Duration::from_secs(30))
            .await
    }

    /// As `call`, waiting up to `limit` for the answer.
    async fn call_within(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        limit: Duration,
    ) -> Result<Value, CtlError> {
        let url = format!("{}{path}", self.base.trim_end_matches('/'));
        let unreachable = |reason: String| CtlError::Unreachable {
            url: self.base.clone(),
            reason,
        };
        let mut req = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))
            .map_err(|e| CtlError::Usage(format!("bad admin URL {url:?}: {e}")))?;
        let resp = tokio::time::timeout(limit, self.client.request(req))
            .await
            .map_err(|_| unreachable(format!("no answer within {limit:?}")))?
            .map_err(|e| unreachable(with_causes(&e)))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        let unexpected = |what: String| CtlError::Unexpected {
            url: url.clone(),
            what,
        };
        let value: Value = serde_json::from_slice(&body).map_err(|_| {
            let text = String::from_utf8_lossy(&body);
            let start: String = text.chars().take(80).collect();
            unexpected(format!(
                "{status} with a body that is not JSON ({start:?}); is --admin the admin listener, not a proxy listener?"
            ))
        })?;
        if status.is_success() {
            return Ok(value);
        }
        // The admin API's errors are `{"error": …, "detail": {"code": …}}`.
        let Some(error) = value.get("error").and_then(Value::as_str) else {
            return Err(unexpected(format!("{status}: {value}")));
        };
        let mut message = in_cli_words(error);
        let problems = value
            .get("problems")
            .or_else(|| value.pointer("/detail/problems"))
            .and_then(Value::as_array);
        for p in problems.into_iter().flatten().filter_map(Value::as_str) {
            message.push_str("\n  ");
            message.push_str(p);
        }
        Err(match status.as_u16() {
            401 | 403 => CtlError::Unauthorized { status, message },
            400..=499 => CtlError::Refused { status, message },
            _ => unexpected(format!("{status}: {message}")),
        })
    }

    /// The status JSON, checked for its shape.
    async fn status(&self) -> Result<(Value, Status), CtlError> {
        let v = self.call(Method::GET, "/api/v1/status", None).await?;
        let parsed =
            serde_json::from_value::<Status>(v.clone()).map_err(|e| CtlError::Unexpected {
                url: self.base.clone(),
                what: format!("not the admin API's status: {e}"),
            })?;
        Ok((v, parsed))
    }
}

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Runs one `cutover ctl` command: `Ok` with its exit code (0, or how a
/// waited rollout ended), or the error (exit 1).
pub async fn run(args: CtlArgs) -> Result<u8, CtlError> {
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| {
                    CtlError::Usage(format!("cannot read token file {}: {e}", path.display()))
                })?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let base = admin_base(&args.admin)?;
    let api = Api {
        client: admin_client(&base, args.ca.as_deref())?,
        base,
        token,
    };
    let upstream_path = |pool: &str, addr: &str| {
        format!("/api/v1/pools/{}/upstreams/{}", encode(pool), encode(addr))
    };
    let mut exit = 0;
    let (value, line) = match args.verb {
        Verb::Status { fleet: false } => {
            let (v, status) = api.status().await?;
            (v, status_table(&status))
        }
        Verb::Status { fleet: true } => {
            let (v, status) = api.status().await?;
            let fleet = api.call(Method::GET, "/api/v1/fleet", None).await?;
            let text = format!(
                "{}
{}",
                status_table(&status),
                fleet_table(&fleet)
            );
            (json!({"status": v, "fleet": fleet}), text)
        }
        Verb::Split {
            route,
            weights,
            force,
        } => {
            let mut split = serde_json::Map::new();
            for w in &weights {
                let (pool, weight) = w
                    .split_once('=')
                    .and_then(|(p, n)| Some((p, n.parse::<u32>().ok()?)))
                    .ok_or_else(|| {
                        CtlError::Usage(format!("{w:?}: write POOL=WEIGHT, e.g. green=10"))
                    })?;
                split.insert(pool.to_string(), json!(weight));
            }
            let query = if force { "?force=true" } else { "" };
            let v = api
                .call(
                    Method::PUT,
                    &format!("/api/v1/routes/{}/split{query}", encode(&route)),
                    Some(Value::Object(split)),
                )
                .await?;
            let line = format!("{route}: {}", split_text(v.get("split")));
            (v, line)
        }
        Verb::Mirror { route, target } => {
            let (pool, percent) = target
                .split_once('=')
                .and_then(|(p, n)| Some((p, n.parse::<u32>().ok()?)))
                .ok_or_else(|| {
                    CtlError::Usage(format!(
                        "{target:?}: write POOL=PERCENT, e.g. green=10 (green=0 stops the mirror)"
                    ))
                })?;
            let v = api
                .call(
                    Method::PUT,
                    &format!("/api/v1/routes/{}/mirror", encode(&route)),
                    Some(json!({"pool": pool, "percent": percent})),
                )
                .await?;
            let line = format!("{route}: {}", mirror_text(&v["mirror"]));
            (v, line)
        }
        Verb::Rollout(r) if r.wait => {
            // Its exit codes 2 and 3 say how the rollout ended: every
            // error is 1 here.
            let started = start_rollout(&api, &r).await;
            let v = started.map_err(|e| CtlError::WhileWaiting(Box::new(e)))?;
            println!("{}: {}", r.route, rollout_line(&v["rollout"]));
            return wait_rollout(&api, &r.route, &v["rollout"])
                .await
                .map_err(|e| CtlError::WhileWaiting(Box::new(e)));
        }
        Verb::Rollout(r) => {
            let v = start_rollout(&api, &r).await?;
            let line = format!("{}: {}", r.route, rollout_line(&v["rollout"]));
            (v, line)
        }
        Verb::Promote { route } => rollout_action(&api, &route, "promote").await?,
        Verb::Pause { route } => rollout_action(&api, &route, "pause").await?,
        Verb::Resume { route } => rollout_action(&api, &route, "resume").await?,
        Verb::Abort { route } => rollout_action(&api, &route, "abort").await?,
        Verb::Drain {
            pool,
            addr,
            timeout,
            wait,
        } => {
            let body = timeout.map(|t| json!({"timeout": t}));
            let path = match &addr {
                Some(addr) => format!("{}/drain", upstream_path(&pool, addr)),
                None => format!("/api/v1/pools/{}/drain", encode(&pool)),
            };
            let v = api.call(Method::POST, &path, body).await?;
            let what = addr
                .as_deref()
                .map_or_else(|| pool.clone(), |a| format!("{pool} {a}"));
            let line = if wait {
                follow(&api, &pool, addr.as_deref(), Until::Drained).await?;
                format!("{what}: drained")
            } else {
                match &addr {
                    Some(_) => upstream_line(&pool, &v),
                    None => format!(
                        "{what}: draining {} upstream(s)",
                        v["upstreams"].as_array().map_or(0, Vec::len)
                    ),
                }
            };
            (v, line)
        }
        Verb::Enable { pool, addr } => upstream_action(&api, &pool, &addr, "enable").await?,
        Verb::Disable { pool, addr } => upstream_action(&api, &pool, &addr, "disable").await?,
        Verb::Add { pool, addr, weight } => {
            let v = api
                .call(
                    Method::POST,
                    &format!("/api/v1/pools/{}/upstreams", encode(&pool)),
                    Some(json!({"addr": addr, "weight": weight})),
                )
                .await?;
            let line = upstream_line(&pool, &v);
            (v, line)
        }
        Verb::Remove { pool, addr, wait } => {
            let v = api
                .call(Method::DELETE, &upstream_path(&pool, &addr), None)
                .await?;
            let line = if wait {
                follow(&api, &pool, Some(&addr), Until::Gone).await?;
                format!("{pool} {addr}: removed")
            } else {
                format!("{pool} {addr}: draining, removed when done")
            };
            (v, line)
        }
        Verb::Health { pool } => {
            let (v, status) = api.status().await?;
            let Some(found) = status.pools.iter().find(|p| p.name == pool) else {
                return Err(CtlError::Refused {
                    status: http::StatusCode::NOT_FOUND,
                    message: format!("no pool named {pool:?}"),
                });
            };
            let healthy = found
                .upstreams
                .iter()
                .filter(|u| u.state == "healthy")
                .count();
            let total = found.upstreams.len();
            let mut lines: Vec<String> = found
                .upstreams
                .iter()
                .map(|u| format!("{pool} {}  {}", u.addr, u.state))
                .collect();
            let verdict = if total > 0 && healthy == total {
                "healthy"
            } else {
                exit = EXIT_NOT_HEALTHY;
                "NOT healthy"
            };
            lines.push(format!(
                "{pool}: {healthy} of {total} upstreams healthy: {verdict}"
            ));
            let pool_json = v["pools"]
                .as_array()
                .and_then(|pools| pools.iter().find(|p| p["name"] == pool.as_str()))
                .cloned()
                .unwrap_or_default();
            (pool_json, lines.join("\n"))
        }
        Verb::Audit { limit } => {
            let v = api
                .call(Method::GET, &format!("/api/v1/audit?limit={limit}"), None)
                .await?;
            let lines: Vec<String> = v["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    // In a fleet, which instance the change went through.
                    let via = e["instance"]
                        .as_str()
                        .map_or(String::new(), |i| format!("{i}  "));
                    format!(
                        "{}  {via}{}  {} {}  {}",
                        e["time"].as_str().unwrap_or("?"),
                        e["caller"]["peer"].as_str().unwrap_or("?"),
                        e["action"].as_str().unwrap_or("?"),
                        e["target"].as_str().unwrap_or("?"),
                        e["result"].as_str().unwrap_or("?"),
                    )
                })
                .collect();
            (v, lines.join("\n"))
        }
        Verb::Reload => {
            let v = api.call(Method::POST, "/api/v1/reload", None).await?;
            let mut line = format!(
                "reloaded: {}",
                v.get("summary").and_then(Value::as_str).unwrap_or("")
            );
            for d in v
                .get("dropped_runtime_changes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                line.push_str(&format!(
                    "\nruntime change dropped: {}",
                    d.as_str().unwrap_or("")
                ));
            }
            (v, line)
        }
        Verb::Upgrade => {
            // The call answers once the new process serves, which may take
            // up to the proxy's `upgrade_timeout`.
            let v = api
                .call_within(
                    Method::POST,
                    "/api/v1/upgrade",
                    None,
                    Duration::from_secs(300),
                )
                .await?;
            let pid = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
            let line = format!(
                "upgraded: pid {} handed over to pid {}",
                pid("old_pid"),
                pid("new_pid")
            );
            (v, line)
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        println!("{line}");
    }
    Ok(exit)
}

async fn start_rollout(api: &Api, r: &RolloutArgs) -> Result<Value, CtlError> {
    let query = if r.force { "?force=true" } else { "" };
    let path = format!("/api/v1/routes/{}/rollout{query}", encode(&r.route));
    api.call(Method::POST, &path, Some(r.body()?)).await
}

/// `POST …/rollout/{action}` and its one-line summary.
async fn rollout_action(api: &Api, route: &str, action: &str) -> Result<(Value, String), CtlError> {
    let path = format!("/api/v1/routes/{}/rollout/{action}", encode(route));
    let v = api.call(Method::POST, &path, None).await?;
    let line = format!("{route}: {}", rollout_line(&v["rollout"]));
    Ok((v, line))
}

/// A rollout in one line: state, step and weight, reason.
fn rollout_line(r: &Value) -> String {
    let steps = r["steps"].as_array().map_or(0, Vec::len);
    let state = r["state"].as_str().unwrap_or("?");
    let mut line = format!(
        "rollout to {} {} at step {}/{steps}",
        r["to"].as_str().unwrap_or("?"),
        state.replace('_', " "),
        r["step"],
    );
    // A finished rollout's weight is where it left the target, not a step's.
    if matches!(state, "running" | "waiting" | "paused") {
        line.push_str(&format!(" ({}%)", r["weight"]));
    }
    if let Some(reason) = r["reason"].as_str() {
        line.push_str(": ");
        line.push_str(reason);
    }
    line
}

/// The tests' last comparisons, as `--wait` prints them: each pool's
/// error rate, then latency quantile, with its interval and what the test
/// says; and the decisions, to print again only when one changes.
fn test_lines(r: &Value) -> Option<(String, Vec<String>)> {
    let words = |decision: &str| match decision {
        "worse" => "worse than",
        "within" => "within",
        _ => "not yet known against",
    };
    let target = r["to"].as_str().unwrap_or("target");
    let limits = &r["limits"];
    let e = &r["analysis"]["errors"];
    let decision = e["decision"].as_str()?;
    let pct = |i: &Value| {
        format!(
            "{:.2} % [{:.2}, {:.2}]",
            i["estimate"].as_f64().unwrap_or(0.0) * 100.0,
            i["low"].as_f64().unwrap_or(0.0) * 100.0,
            i["high"].as_f64().unwrap_or(1.0) * 100.0
        )
    };
    let mut decisions = decision.to_string();
    let mut lines = vec![format!(
        "  errors: {target} {} vs baseline {}: {} +{:.2} pp and {}x with {} % confidence",
        pct(&e["target"]),
        pct(&e["baseline"]),
        words(decision),
        limits["max_error_rate_increase"].as_f64().unwrap_or(0.0) * 100.0,
        limits["max_error_ratio"],
        e["confidence"].as_f64().unwrap_or(0.0) * 100.0,
    )];
    let l = &r["analysis"]["latency"];
    if let Some(decision) = l["decision"].as_str() {
        // An upper bound not known yet is null.
        let ms = |i: &Value| {
            let high = i["high"]
                .as_f64()
                .map_or_else(|| "?".to_string(), |h| format!("{h:.1}"));
            format!(
                "{:.1} ms [{:.1}, {high}]",
                i["estimate"].as_f64().unwrap_or(0.0),
                i["low"].as_f64().unwrap_or(0.0)
            )
        };
        decisions.push('/');
        decisions.push_str(decision);
        lines.push(format!(
            "  latency: {target} {} {} vs baseline {}: {} {}x and +{} ms with {} % confidence",
            limits["latency_quantile"].as_str().unwrap_or("p99"),
            ms(&l["target"]),
            ms(&l["baseline"]),
            words(decision),
            limits["max_p99_ratio"],
            limits["min_p99_increase_ms"],
            l["confidence"].as_f64().unwrap_or(0.0) * 100.0,
        ));
    }
    Some((decisions, lines))
}

/// Follows a rollout until it ends, a line per change; the exit code says
/// how it ended.
async fn wait_rollout(api: &Api, route: &str, first: &Value) -> Result<u8, CtlError> {
    let mut last = rollout_line(first);
    let mut last_decision = String::new();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let status = api.call(Method::GET, "/api/v1/status", None).await?;
        let Some(r) = status["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["name"] == route)
        else {
            return Err(CtlError::Usage(format!("route {route} is gone")));
        };
        let rollout = &r["rollout"];
        let line = rollout_line(rollout);
        let ended = matches!(
            rollout["state"].as_str(),
            Some("promoted" | "rolled_back" | "aborted")
        );
        // The tests' figures when what one says changes, and at the end.
        if let Some((decisions, lines)) = test_lines(rollout)
            && (decisions != last_decision || (ended && line != last))
        {
            for l in lines {
                println!("{l}");
            }
            last_decision = decisions;
        }
        if line != last {
            println!("{route}: {line}");
            last = line;
        }
        match rollout["state"].as_str() {
            Some("promoted") => return Ok(0),
            Some("rolled_back") => return Ok(EXIT_ROLLED_BACK),
            Some("aborted") => return Ok(EXIT_ABORTED),
            _ => {}
        }
    }
}

/// What `follow` waits for.
#[derive(Clone, Copy, PartialEq)]
enum Until {
    /// No longer `draining` (`drained`, or enabled again).
    Drained,
    /// Gone from the pool.
    Gone,
}

/// Follows the upstream at `addr` of `pool` (every upstream of the pool
/// without it), a line on stderr per change, until each is as `until` says.
async fn follow(api: &Api, pool: &str, addr: Option<&str>, until: Until) -> Result<(), CtlError> {
    let mut last: Vec<String> = Vec::new();
    loop {
        let (_, status) = api.status().await?;
        let Some(p) = status.pools.iter().find(|p| p.name == pool) else {
            return Err(CtlError::Usage(format!("pool {pool} is gone")));
        };
        let watched: Vec<_> = p
            .upstreams
            .iter()
            .filter(|u| addr.is_none_or(|a| u.addr.to_string() == a))
            .collect();
        if watched.is_empty() && until == Until::Drained {
            return Err(CtlError::Usage(format!(
                "{pool} {}: no longer in the pool",
                addr.unwrap_or("")
            )));
        }
        let lines: Vec<String> = watched
            .iter()
            .map(|u| format!("{pool} {}: {}, {} in flight", u.addr, u.state, u.in_flight))
            .collect();
        for line in lines.iter().filter(|l| !last.contains(l)) {
            eprintln!("{line}");
        }
        last = lines;
        let done = match until {
            Until::Drained => watched.iter().all(|u| u.state != "draining"),
            Until::Gone => watched.is_empty(),
        };
        if done {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `POST …/upstreams/{addr}/{action}` and its one-line summary.
async fn upstream_action(
    api: &Api,
    pool: &str,
    addr: &str,
    action: &str,
) -> Result<(Value, String), CtlError> {
    let path = format!(
        "/api/v1/pools/{}/upstreams/{}/{action}",
        encode(pool),
        encode(addr)
    );
    let v = api.call(Method::POST, &path, None).await?;
    let line = upstream_line(pool, &v);
    Ok((v, line))
}

fn split_text(split: Option<&Value>) -> String {
    split
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// A route's mirror in one line: where, how much, and how copies compared.
fn mirror_text(m: &Value) -> String {
    if m.is_null() {
        return "no mirror".to_string();
    }
    let counts = ["same", "differs", "failed", "skipped"]
        .iter()
        .map(|k| format!("{k} {}", m["counts"][k]))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "mirror {}% to {} ({counts})",
        m["percent"],
        m["pool"].as_str().unwrap_or("?")
    )
}

fn upstream_line(pool: &str, v: &Value) -> String {
    format!(
        "{pool} {}: {} (weight {}, {} in flight)",
        v["addr"].as_str().unwrap_or("?"),
        v["state"].as_str().unwrap_or("?"),
        v["weight"],
        v["in_flight"]
    )
}

/// The human table of `cutover ctl status`.
/// `status --fleet`: one line per instance of the fleet.
fn fleet_table(fleet: &Value) -> String {
    let this = &fleet["this"];
    let mut out = format!(
        "fleet {} (etcd {}), this instance {}: {}, revision {}\n\n",
        this["prefix"].as_str().unwrap_or("?"),
        this["etcd"]
            .as_array()
            .map(|e| e
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","))
            .unwrap_or_default(),
        this["instance"].as_str().unwrap_or("?"),
        if this["connected"] == true {
            "connected"
        } else {
            "NOT CONNECTED"
        },
        this["revision"],
    );
    if let Some(error) = fleet["error"].as_str() {
        out.push_str(&format!("{error}\n"));
        return out;
    }
    let now = crate::clock::unix_ms();
    let rows: Vec<[String; 5]> = fleet["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let in_flight: u64 = i["in_flight"]
                .as_object()
                .into_iter()
                .flat_map(|pools| pools.values())
                .filter_map(Value::as_object)
                .flat_map(|ups| ups.values())
                .filter_map(Value::as_u64)
                .sum();
            let ago = i["heartbeat_ms"].as_u64().map_or("?".to_string(), |t| {
                format!("{:.1}s ago", now.saturating_sub(t) as f64 / 1000.0)
            });
            [
                i["name"].as_str().unwrap_or("?").to_string(),
                i["revision"].to_string(),
                if i["behind"] == true {
                    "behind"
                } else {
                    "current"
                }
                .to_string(),
                ago,
                in_flight.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["INSTANCE", "REVISION", "STATE", "HEARTBEAT", "IN-FLIGHT"],
        &rows,
    ));
    out
}

pub fn status_table(s: &Status) -> String {
    let mut out = format!("cutover {} (pid {})\n\n", s.version, s.pid);
    let rows: Vec<[String; 6]> = s
        .routes
        .iter()
        .map(|r| {
            let split = r
                .split
                .iter()
                .map(|(p, w)| format!("{p}={w}"))
                .collect::<Vec<_>>()
                .join(" ");
            [
                r.name.clone(),
                r.match_text(),
                split,
                r.effective_text(),
                r.split_source.clone(),
                r.rollout.as_ref().map_or_else(
                    || "-".to_string(),
                    |ro| {
                        format!(
                            "{} {}% {}",
                            ro["to"].as_str().unwrap_or("?"),
                            ro["weight"],
                            ro["state"].as_str().unwrap_or("?").replace('_', " ")
                        )
                    },
                ),
            ]
        })
        .collect();
    out.push_str(&table(
        &["ROUTE", "MATCH", "SPLIT", "EFFECTIVE", "FROM", "ROLLOUT"],
        &rows,
    ));
    out.push('\n');
    for r in &s.routes {
        let Some(m) = r.mirror.as_ref().filter(|m| !m.is_null()) else {
            continue;
        };
        out.push_str(&format!("{}: {}\n", r.name, mirror_text(m)));
        for d in m["differences"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  differs: {} {}: {} {} vs shadow {} {}\n",
                d["method"].as_str().unwrap_or("?"),
                d["path"].as_str().unwrap_or("?"),
                d["primary"]["status"],
                short_digest(&d["primary"]),
                d["shadow"]["status"],
                short_digest(&d["shadow"]),
            ));
        }
        out.push('\n');
    }
    let rows: Vec<[String; 7]> = s
        .pools
        .iter()
        .flat_map(|p| {
            p.upstreams.iter().map(move |u| {
                [
                    p.name.clone(),
                    u.addr.to_string(),
                    u.weight.to_string(),
                    u.state.clone(),
                    u.health.clone(),
                    u.in_flight.to_string(),
                    u.source.clone(),
                ]
            })
        })
        .collect();
    out.push_str(&table(
        &[
            "POOL",
            "UPSTREAM",
            "WEIGHT",
            "STATE",
            "HEALTH",
            "IN-FLIGHT",
            "FROM",
        ],
        &rows,
    ));
    out.trim_end().to_string()
}

/// An answer's body as `(12 bytes sha256:ab12cd34)`, or nothing when
/// bodies were not compared.
fn short_digest(answer: &Value) -> String {
    match answer["body_sha256"].as_str() {
        Some(sha) => format!(
            "({} bytes sha256:{})",
            answer["body_bytes"],
            sha.get(..8).unwrap_or(sha)
        ),
        None => String::new(),
    }
}

fn table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            l.push_str(&format!("{cell:<w$}  "));
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(head.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
