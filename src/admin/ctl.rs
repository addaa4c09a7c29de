//! `cutover ctl`: the admin API from the command line. Prints a readable
//! table or line (or the API's JSON with `--json`); an API error is one clear
//! line on stderr and a non-zero exit.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::control::status::Status;

#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// Admin API base URL.
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
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(clap::Subcommand, Debug)]
enum Verb {
    /// Routes with their split, and every upstream's state and in-flight count.
    Status,
    /// Set a route's split: `cutover ctl split app blue=90 green=10`.
    Split {
        route: String,
        #[arg(required = true, value_name = "POOL=WEIGHT")]
        weights: Vec<String>,
        /// Send traffic even to a pool with no healthy upstream.
        #[arg(long)]
        force: bool,
    },
    /// Progressive shift to a pool with automatic rollback.
    Rollout {
        route: String,
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "5,25,50,100", value_delimiter = ',')]
        steps: Vec<u32>,
        #[arg(long, default_value = "30s")]
        interval: String,
    },
    /// Stop a rollout and return to the split it started from.
    Abort { route: String },
    /// No new requests to an upstream; in-flight ones finish.
    Drain {
        pool: String,
        addr: String,
        #[arg(long)]
        timeout: Option<String>,
        /// Wait, showing progress, until the upstream is drained.
        #[arg(long)]
        wait: bool,
    },
    /// Back into rotation (clears disable and drain).
    Enable { pool: String, addr: String },
    /// Out of rotation now.
    Disable { pool: String, addr: String },
    /// Add an upstream to a pool.
    Add {
        pool: String,
        addr: String,
        #[arg(long, default_value_t = 1)]
        weight: u32,
    },
    /// Remove an upstream from a pool.
    Remove { pool: String, addr: String },
    /// Re-read the config file.
    Reload,
    /// Binary upgrade.
    Upgrade,
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{status}: {message}")]
    Api {
        status: http::StatusCode,
        message: String,
    },
    #[error("{0}")]
    Usage(String),
}

struct Api {
    base: String,
    token: Option<String>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
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
            .map_err(|e| unreachable(format!("{e}")))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        let value: Value =
            serde_json::from_slice(&body).unwrap_or_else(|_| json!(String::from_utf8_lossy(&body)));
        if status.is_success() {
            return Ok(value);
        }
        let mut message = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("request failed")
            .to_string();
        if let Some(problems) = value.get("problems").and_then(Value::as_array) {
            for p in problems.iter().filter_map(Value::as_str) {
                message.push_str("\n  ");
                message.push_str(p);
            }
        }
        Err(CtlError::Api { status, message })
    }
}

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Runs one `cutover ctl` command; the exit code is 0 on success, 1 on any error.
pub async fn run(args: CtlArgs) -> Result<(), CtlError> {
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
    let api = Api {
        base: args.admin.clone(),
        token,
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    let upstream_path = |pool: &str, addr: &str| {
        format!("/api/v1/pools/{}/upstreams/{}", encode(pool), encode(addr))
    };
    let (value, line) = match args.verb {
        Verb::Status => {
            let v = api.call(Method::GET, "/api/v1/status", None).await?;
            let table = serde_json::from_value::<Status>(v.clone())
                .map(|s| status_table(&s))
                .unwrap_or_else(|e| format!("unexpected status shape: {e}"));
            (v, table)
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
        Verb::Rollout {
            route,
            to,
            steps,
            interval,
        } => {
            let body = json!({"to": to, "steps": steps, "interval": interval});
            let v = api
                .call(
                    Method::POST,
                    &format!("/api/v1/routes/{}/rollout", encode(&route)),
                    Some(body),
                )
                .await?;
            (v, format!("{route}: rollout to {to} started"))
        }
        Verb::Abort { route } => {
            let v = api
                .call(
                    Method::POST,
                    &format!("/api/v1/routes/{}/rollout/abort", encode(&route)),
                    None,
                )
                .await?;
            (v, format!("{route}: rollout aborted"))
        }
        Verb::Drain {
            pool,
            addr,
            timeout,
            wait,
        } => {
            let body = timeout.map(|t| json!({"timeout": t}));
            let v = api
                .call(
                    Method::POST,
                    &format!("{}/drain", upstream_path(&pool, &addr)),
                    body,
                )
                .await?;
            let line = if wait {
                wait_drained(&api, &pool, &addr).await?;
                format!("{pool} {addr}: drained")
            } else {
                upstream_line(&pool, &v)
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
        Verb::Remove { pool, addr } => {
            let v = api
                .call(Method::DELETE, &upstream_path(&pool, &addr), None)
                .await?;
            (v, format!("{pool} {addr}: removed"))
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
    Ok(())
}

async fn wait_drained(api: &Api, pool: &str, addr: &str) -> Result<(), CtlError> {
    let mut last = None;
    loop {
        let status = api.call(Method::GET, "/api/v1/status", None).await?;
        let upstream = status["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["name"] == pool)
            .flat_map(|p| p["upstreams"].as_array().into_iter().flatten())
            .find(|u| u["addr"] == addr)
            .cloned();
        let Some(u) = upstream else {
            return Err(CtlError::Usage(format!(
                "{pool} {addr}: no longer in the pool"
            )));
        };
        let state = u["state"].as_str().unwrap_or("?").to_string();
        let in_flight = u["in_flight"].as_u64().unwrap_or(0);
        if last != Some((state.clone(), in_flight)) {
            eprintln!("{pool} {addr}: {state}, {in_flight} in flight");
            last = Some((state.clone(), in_flight));
        }
        if state != "draining" {
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
pub fn status_table(s: &Status) -> String {
    let mut out = format!("cutover {} (pid {})\n\n", s.version, s.pid);
    let rows: Vec<[String; 4]> = s
        .routes
        .iter()
        .map(|r| {
            let hosts = if r.hosts.is_empty() {
                "*".to_string()
            } else {
                r.hosts.join(",")
            };
            let split = r
                .split
                .iter()
                .map(|(p, w)| format!("{p}={w}"))
                .collect::<Vec<_>>()
                .join(" ");
            [
                r.name.clone(),
                format!("{hosts}{}", r.path_prefix),
                split,
                r.split_source.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["ROUTE", "MATCH", "SPLIT", "FROM"], &rows));
    out.push('\n');
    let rows: Vec<[String; 6]> = s
        .pools
        .iter()
        .flat_map(|p| {
            p.upstreams.iter().map(move |u| {
                [
                    p.name.clone(),
                    u.addr.to_string(),
                    u.weight.to_string(),
                    u.state.clone(),
                    u.in_flight.to_string(),
                    u.source.clone(),
                ]
            })
        })
        .collect();
    out.push_str(&table(
        &["POOL", "UPSTREAM", "WEIGHT", "STATE", "IN-FLIGHT", "FROM"],
        &rows,
    ));
    out.trim_end().to_string()
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
