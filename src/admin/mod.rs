//! The admin API on `admin.bind`, served apart from client traffic: health,
//! readiness, metrics, status, and the mutating `/api/v1/` calls, which go
//! one at a time through the [`ControlPlane`]. JSON errors name the problem:
//! 400 bad input, 401 no or wrong token, 404 unknown route/pool/upstream,
//! 409 refused by state.

// Early returns carry a ready reply; the admin API is far off the hot path,
// so the size of that `Err` costs nothing worth boxing for.
#![allow(clippy::result_large_err)]

pub mod ctl;
mod metrics_page;
mod page;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::control::{ControlError, ControlPlane, status};
use crate::state::Caller;
use crate::upgrade::{UpgradeError, Upgrader};

/// How long a connection accepted right before the admin API stops may
/// take to send its request.
const FIRST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Largest admin request body accepted.
const MAX_BODY: usize = 64 * 1024;

pub struct Admin {
    plane: Arc<Mutex<ControlPlane>>,
    /// For scrapes, which need no lock.
    routing: Arc<crate::routing::Routing>,
    token: Option<Vec<u8>>,
    token_id: Option<String>,
    ready: AtomicBool,
    /// Last sample for the status page's rates.
    rates: Mutex<page::Rates>,
    /// None when started in-process: no command to re-run.
    upgrader: Option<Arc<Upgrader>>,
}

type Reply = Response<Full<Bytes>>;

#[derive(Debug, thiserror::Error)]
#[error("admin token file {path}: {reason}")]
pub struct TokenError {
    path: String,
    reason: String,
}

impl Admin {
    pub fn new(
        plane: Arc<Mutex<ControlPlane>>,
        routing: Arc<crate::routing::Routing>,
        token_file: Option<&std::path::Path>,
        upgrader: Option<Arc<Upgrader>>,
    ) -> Result<Arc<Admin>, TokenError> {
        let (token, token_id) = match token_file {
            None => (None, None),
            Some(path) => {
                let err = |reason: String| TokenError {
                    path: path.display().to_string(),
                    reason,
                };
                let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(err("the file is empty".into()));
                }
                (
                    Some(token.as_bytes().to_vec()),
                    Some(path.display().to_string()),
                )
            }
        };
        Ok(Arc::new(Admin {
            plane,
            routing,
            token,
            token_id,
            ready: AtomicBool::new(false),
            rates: Mutex::new(page::Rates::default()),
            upgrader,
        }))
    }

    /// `/readyz` answers 200 from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Serves the admin API on `listener` until `stop` (shutdown, or a
    /// binary upgrade handing the socket over), then ends its connections
    /// after the response in flight.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        loop {
            let (stream, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let admin = Arc::clone(&self);
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                // Woken (or left a permit) when the first request arrives.
                let first_request = Arc::new(tokio::sync::Notify::new());
                let arrived = Arc::clone(&first_request);
                let stopping = shutdown.clone();
                let service = service_fn(move |req| {
                    arrived.notify_one();
                    let admin = Arc::clone(&admin);
                    let stopping = stopping.clone();
                    async move {
                        let mut reply = admin.handle(req, peer).await;
                        if stopping.is_cancelled() {
                            // The connection ends after this answer: say so.
                            reply
                                .headers_mut()
                                .insert(header::CONNECTION, HeaderValue::from_static("close"));
                        }
                        Ok::<_, Infallible>(reply)
                    }
                });
                let mut http = auto::Builder::new(TokioExecutor::new());
                http.http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10));
                let conn = http.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = shutdown.cancelled() => {
                        // A connection accepted just before the stop (at a
                        // handover the socket stays open for the new
                        // process) has its request on the way: shutting it
                        // down now would drop that request unanswered. It
                        // gets its answer, with `Connection: close`.
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            () = first_request.notified() => {}
                            () = tokio::time::sleep(FIRST_REQUEST_GRACE) => {}
                        }
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Reply {
        let path = req.uri().path().to_string();
        let segments: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        match segs.as_slice() {
            [""] if req.method() == Method::GET => {
                let status = {
                    let plane = self.plane.lock().await;
                    let table = plane.routing().load();
                    status::status(&table, plane.overrides(), plane.file())
                };
                let html = page::render(&status, &mut *self.rates.lock().await);
                let mut reply = Response::new(Full::new(Bytes::from(html)));
                reply.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                reply
            }
            ["healthz"] => text(StatusCode::OK, "ok\n"),
            ["readyz"] if self.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
            ["readyz"] => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
            ["metrics"] => metrics_page::render(&self.routing.load()),
            ["api", "v1", rest @ ..] => {
                if let Err(reply) = self.authorize(&req) {
                    return reply;
                }
                let caller = Caller {
                    peer: peer.to_string(),
                    token: self.token_id.clone(),
                };
                let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
                self.api(req, &rest, &caller).await
            }
            _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
        }
    }

    fn authorize(&self, req: &Request<Incoming>) -> Result<(), Reply> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                "missing \"Authorization: Bearer <token>\" header",
            )),
            // Constant time, so the token cannot be guessed byte by byte.
            Some(p)
                if bool::from(subtle::ConstantTimeEq::ct_eq(
                    p.as_bytes(),
                    token.as_slice(),
                )) =>
            {
                Ok(())
            }
            Some(_) => Err(error(StatusCode::UNAUTHORIZED, "wrong token")),
        }
    }

    async fn api(&self, req: Request<Incoming>, rest: &[String], caller: &Caller) -> Reply {
        let method = req.method().clone();
        let force = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "force=true" || kv == "force=1"));
        let parts: Vec<&str> = rest.iter().map(String::as_str).collect();
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(reply) => return reply,
        };
        use Method as M;
        match (parts.as_slice(), &method) {
            (["status"], &M::GET) => {
                let plane = self.plane.lock().await;
                let table = plane.routing().load();
                json_reply(
                    StatusCode::OK,
                    &json!(status::status(&table, plane.overrides(), plane.file())),
                )
            }
            (["routes", route, "split"], &M::PUT) => {
                let split = match parse_split(&body) {
                    Ok(s) => s,
                    Err(msg) => return self.refuse(caller, "set_split", route, msg).await,
                };
                let mut plane = self.plane.lock().await;
                match plane.set_split(caller, route, split, force) {
                    Ok(()) => {
                        let table = plane.routing().load();
                        let view = status::status(&table, plane.overrides(), plane.file());
                        let route = view.routes.into_iter().find(|r| r.name == *route);
                        json_reply(StatusCode::OK, &json!(route))
                    }
                    Err(e) => control_error(e),
                }
            }
            (["routes", _, "rollout"], &M::POST)
            | (["routes", _, "rollout", "abort"], &M::POST) => error(
                StatusCode::NOT_IMPLEMENTED,
                "progressive rollouts are not available in this version of cutover yet",
            ),
            (["pools", pool, "upstreams"], &M::POST) => {
                let (addr, weight) = match parse_new_upstream(&body) {
                    Ok(v) => v,
                    Err(msg) => return self.refuse(caller, "add_upstream", pool, msg).await,
                };
                let mut plane = self.plane.lock().await;
                let result = plane.add_upstream(caller, pool, addr, weight);
                self.upstream_reply(&plane, result, pool, addr, StatusCode::CREATED)
            }
            (["pools", pool, "upstreams", addr], &M::DELETE) => {
                let addr = match parse_addr(addr) {
                    Ok(a) => a,
                    Err(msg) => return self.refuse(caller, "remove_upstream", pool, msg).await,
                };
                let mut plane = self.plane.lock().await;
                let result = plane.remove_upstream(caller, pool, addr, None);
                // The upstream drains first; `removing: true` says it goes once drained.
                self.upstream_reply(&plane, result, pool, addr, StatusCode::ACCEPTED)
            }
            (
                [
                    "pools",
                    pool,
                    "upstreams",
                    addr,
                    action @ ("drain" | "disable" | "enable"),
                ],
                &M::POST,
            ) => {
                let action_name = format!("{action}_upstream");
                let addr = match parse_addr(addr) {
                    Ok(a) => a,
                    Err(msg) => return self.refuse(caller, &action_name, pool, msg).await,
                };
                let timeout = if *action == "drain" {
                    parse_drain(&body)
                } else {
                    Ok(None)
                };
                let timeout = match timeout {
                    Ok(t) => t,
                    Err(msg) => {
                        return self
                            .refuse(caller, &action_name, &format!("{pool}/{addr}"), msg)
                            .await;
                    }
                };
                let mut plane = self.plane.lock().await;
                let result = match *action {
                    "drain" => plane.drain_upstream(caller, pool, addr, timeout),
                    "disable" => plane.disable_upstream(caller, pool, addr),
                    _ => plane.enable_upstream(caller, pool, addr),
                };
                self.upstream_reply(&plane, result, pool, addr, StatusCode::OK)
            }
            (["pools", pool, "drain"], &M::POST) => {
                let timeout = match parse_drain(&body) {
                    Ok(t) => t,
                    Err(msg) => return self.refuse(caller, "drain_pool", pool, msg).await,
                };
                let mut plane = self.plane.lock().await;
                match plane.drain_pool(caller, pool, timeout) {
                    Ok(()) => {
                        let table = plane.routing().load();
                        let view = status::status(&table, plane.overrides(), plane.file());
                        json_reply(
                            StatusCode::OK,
                            &json!(view.pools.into_iter().find(|p| p.name == *pool)),
                        )
                    }
                    Err(e) => control_error(e),
                }
            }
            (["reload"], &M::POST) => {
                let mut plane = self.plane.lock().await;
                crate::systemd::reloading();
                let result = plane.reload(caller).await;
                crate::systemd::ready(&plane.file().summary());
                match result {
                    Ok(dropped) => json_reply(
                        StatusCode::OK,
                        &json!({"reloaded": true, "summary": plane.file().summary(), "dropped_runtime_changes": dropped}),
                    ),
                    Err(e) => control_error(e),
                }
            }
            (["upgrade"], &M::POST) => self.upgrade(caller).await,
            _ => match allowed_methods(&parts) {
                Some(allow) => {
                    let mut reply = error(
                        StatusCode::METHOD_NOT_ALLOWED,
                        format!("use {allow} on this endpoint"),
                    );
                    reply
                        .headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static(allow));
                    reply
                }
                None => error(
                    StatusCode::NOT_FOUND,
                    format!("no such endpoint: /api/v1/{}", rest.join("/")),
                ),
            },
        }
    }

    /// `POST /api/v1/upgrade`: answers once the new process serves (200,
    /// both pids) or the upgrade failed and this process still serves.
    async fn upgrade(&self, caller: &Caller) -> Reply {
        let result = match &self.upgrader {
            Some(u) => u.upgrade(&self.plane).await,
            None => Err(UpgradeError::Unavailable),
        };
        let plane = self.plane.lock().await;
        match result {
            Ok(handover) => {
                plane.audit_upgrade(caller, &json!(handover), "ok");
                json_reply(StatusCode::OK, &json!(handover))
            }
            Err(e) => {
                plane.audit_upgrade(caller, &json!(null), &format!("refused: {e}"));
                let status = match e {
                    UpgradeError::Unavailable
                    | UpgradeError::InProgress
                    | UpgradeError::HandedOver(_) => StatusCode::CONFLICT,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                error(status, e.to_string())
            }
        }
    }

    /// A mutating call refused for bad input: audited, then answered 400.
    async fn refuse(&self, caller: &Caller, action: &str, target: &str, message: String) -> Reply {
        self.plane
            .lock()
            .await
            .audit_refusal(caller, action, target, &message);
        error(StatusCode::BAD_REQUEST, message)
    }

    fn upstream_reply(
        &self,
        plane: &ControlPlane,
        result: Result<(), ControlError>,
        pool: &str,
        addr: SocketAddr,
        ok: StatusCode,
    ) -> Reply {
        match result {
            Ok(()) => {
                let table = plane.routing().load();
                json_reply(
                    ok,
                    &json!(status::upstream_view(
                        &table,
                        plane.overrides(),
                        plane.file(),
                        pool,
                        addr
                    )),
                )
            }
            Err(e) => control_error(e),
        }
    }
}

fn allowed_methods(parts: &[&str]) -> Option<&'static str> {
    Some(match parts {
        ["status"] => "GET",
        ["routes", _, "split"] => "PUT",
        ["routes", _, "rollout"] | ["routes", _, "rollout", "abort"] => "POST",
        ["pools", _, "upstreams"] => "POST",
        ["pools", _, "upstreams", _] => "DELETE",
        ["pools", _, "upstreams", _, "drain" | "disable" | "enable"] => "POST",
        ["pools", _, "drain"] | ["reload"] | ["upgrade"] => "POST",
        _ => return None,
    })
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Reply> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {MAX_BODY} bytes"),
            ))
        }
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("cannot read request body: {e}"),
        )),
    }
}

fn parse_json(body: &Bytes) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))
}

fn weight_of(key: &str, v: &Value) -> Result<u32, String> {
    v.as_u64()
        .and_then(|w| u32::try_from(w).ok())
        .filter(|w| *w <= crate::config::MAX_WEIGHT)
        .ok_or_else(|| {
            format!(
                "{key}: weight must be an integer from 0 to {}, got {v}",
                crate::config::MAX_WEIGHT
            )
        })
}

/// `{"blue": 90, "green": 10}`.
fn parse_split(body: &Bytes) -> Result<BTreeMap<String, u32>, String> {
    let Value::Object(map) = parse_json(body)? else {
        return Err(
            "body must be a JSON object of pool weights, e.g. {\"blue\": 90, \"green\": 10}".into(),
        );
    };
    map.iter()
        .map(|(k, v)| Ok((k.clone(), weight_of(k, v)?)))
        .collect()
}

/// `{"addr": "127.0.0.1:9003", "weight": 1}`.
fn parse_new_upstream(body: &Bytes) -> Result<(SocketAddr, u32), String> {
    let Value::Object(map) = parse_json(body)? else {
        return Err(
            "body must be a JSON object, e.g. {\"addr\": \"127.0.0.1:9003\", \"weight\": 1}".into(),
        );
    };
    if let Some(k) = map
        .keys()
        .find(|k| !["addr", "weight"].contains(&k.as_str()))
    {
        return Err(format!("{k}: unknown field (expected addr, weight)"));
    }
    let addr = match map.get("addr") {
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| format!("addr: invalid address {s:?}: expected IP:PORT"))?,
        Some(v) => {
            return Err(format!(
                "addr: expected a string like \"127.0.0.1:9003\", got {v}"
            ));
        }
        None => return Err("addr: missing".into()),
    };
    let weight = map
        .get("weight")
        .map_or(Ok(1), |v| weight_of("weight", v))?;
    Ok((addr, weight))
}

/// `{"timeout": "30s"}` or empty.
fn parse_drain(body: &Bytes) -> Result<Option<std::time::Duration>, String> {
    match parse_json(body)? {
        Value::Null => Ok(None),
        Value::Object(map) => {
            if let Some(k) = map.keys().find(|k| k.as_str() != "timeout") {
                return Err(format!("{k}: unknown field (expected timeout)"));
            }
            match map.get("timeout") {
                None => Ok(None),
                Some(Value::String(s)) => humantime::parse_duration(s)
                    .map(Some)
                    .map_err(|e| format!("timeout: invalid duration {s:?}: {e}")),
                Some(v) => Err(format!(
                    "timeout: expected a duration string like \"30s\", got {v}"
                )),
            }
        }
        _ => Err("body must be a JSON object, e.g. {\"timeout\": \"30s\"}".into()),
    }
}

fn parse_addr(segment: &str) -> Result<SocketAddr, String> {
    segment
        .parse()
        .map_err(|_| format!("invalid upstream address {segment:?}: expected IP:PORT"))
}

fn control_error(e: ControlError) -> Reply {
    match e {
        ControlError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        ControlError::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
        ControlError::Conflict(m) => error(StatusCode::CONFLICT, m),
        ControlError::InvalidConfig(problems) => json_reply(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("the config file has {} problem(s); the running config is unchanged", problems.len()), "problems": problems}),
        ),
        ControlError::Listener(m) => json_reply(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("{m}; the running config is unchanged"), "problems": [m]}),
        ),
        e @ ControlError::State(_) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn json_reply(status: StatusCode, value: &Value) -> Reply {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    reply
}

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json_reply(status, &json!({"error": message.into()}))
}

fn text(status: StatusCode, body: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}
