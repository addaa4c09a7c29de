//! The admin API on `admin.bind`, served apart from client traffic: health,
//! readiness, metrics, status, and the mutating `/api/v1/` calls, which go
//! one at a time through the [`ControlPlane`]. JSON errors name the problem:
//! 400 bad input, 401 no or wrong token, 404 unknown route/pool/upstream,
//! 409 refused by state.

// Early returns carry a ready reply; the admin API is far off the hot path,
// so the size of that `Err` costs nothing worth boxing for.
#![allow(clippy::result_large_err)]

mod api;
mod auth;
mod body;
mod history;
mod metrics_page;
mod page;

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

use crate::control::{Change, ControlError};
use crate::instance::Instance;
use crate::state::Caller;
use crate::upgrade::{UpgradeError, Upgrader};

/// How long a connection accepted right before the admin API stops may
/// take to send its request.
const FIRST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a client may take over its TLS handshake, and over each
/// request head.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest admin request body accepted.
const MAX_BODY: usize = 64 * 1024;

pub struct Admin {
    instance: Arc<Mutex<Instance>>,
    /// For scrapes, which need no lock.
    routing: Arc<crate::routing::Routing>,
    auth: auth::Auth,
    ready: AtomicBool,
    /// Each pool's last 15 minutes, for the status page's charts.
    history: history::History,
    /// For the status page's uptime.
    started: std::time::Instant,
    /// None when started in-process: no command to re-run.
    upgrader: Option<Arc<Upgrader>>,
}

type Reply = Response<Full<Bytes>>;

pub use auth::{Token, TokenError};

impl Admin {
    pub fn new(
        instance: Arc<Mutex<Instance>>,
        routing: Arc<crate::routing::Routing>,
        (operate, read): (Option<Token>, Option<Token>),
        upgrader: Option<Arc<Upgrader>>,
    ) -> Arc<Admin> {
        Arc::new(Admin {
            instance,
            routing,
            auth: auth::Auth::new(operate, read),
            ready: AtomicBool::new(false),
            history: history::History::default(),
            started: std::time::Instant::now(),
            upgrader,
        })
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
        tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let sampler = Arc::clone(&self);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(history::SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => sampler.history.sample(&sampler.routing.load()),
                    _ = stop.cancelled() => break,
                }
            }
        });
        loop {
            let (stream, peer) = tokio::select! {
                // Stop first: after a handover, a connection waiting in the
                // shared socket's queue is the new process's to take (an
                // unbiased select took it here one time in two).
                biased;
                _ = shutdown.cancelled() => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let admin = Arc::clone(&self);
            let shutdown = shutdown.clone();
            let tls = tls.clone();
            tracker.spawn(async move {
                let Some(tls) = tls else {
                    return admin.serve_connection(stream, peer, shutdown).await;
                };
                // The handshake gets the same bound as a request head.
                match tokio::time::timeout(HEAD_TIMEOUT, tls.accept(stream)).await {
                    Ok(Ok(stream)) => admin.serve_connection(stream, peer, shutdown).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "admin TLS handshake timed out"),
                }
            });
        }
    }

    /// Serves one admin connection (HTTP/1.1 or HTTP/2, plain or TLS).
    async fn serve_connection<S>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // Woken (or left a permit) when the first request arrives.
        let first_request = Arc::new(tokio::sync::Notify::new());
        let arrived = Arc::clone(&first_request);
        let stopping = shutdown.clone();
        let admin = self;
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
            .header_read_timeout(HEAD_TIMEOUT);
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
                let status = self.instance.lock().await.plane.status();
                let charts = page::Charts {
                    series: self.history.series(),
                    upstream_rates: self.history.upstream_rates(),
                    uptime: self.started.elapsed(),
                };
                let html = page::render(&status, &charts);
                let mut reply = Response::new(Full::new(Bytes::from(html)));
                reply.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                reply
            }
            ["healthz"] => text(StatusCode::OK, "ok\n"),
            ["readyz"] if self.ready.load(Ordering::Acquire) => {
                // Serving either way; in a fleet, say whether changes can
                // be made.
                let detail = match &self.instance.lock().await.cluster {
                    Some(c) if !c.connected() => {
                        "ready (etcd unreachable: serving the last fleet state; changes refused)\n"
                    }
                    _ => "ready\n",
                };
                text(StatusCode::OK, detail)
            }
            ["readyz"] => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
            ["metrics"] => metrics_page::render(&self.routing.load()),
            ["api", "v1", rest @ ..] => {
                let role = match self.authorize(&req, peer).await {
                    Ok(role) => role,
                    Err(reply) => return reply,
                };
                // A read token sees state; changing it needs an operate one.
                if role.0 == auth::Role::Read && req.method() != Method::GET {
                    return error(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "this token may only read (GET /api/v1/status, /api/v1/audit, /api/v1/fleet); changes need the admin.token_file token",
                    );
                }
                let caller = Caller {
                    peer: peer.to_string(),
                    token: role.1,
                };
                let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
                self.api(req, &rest, &caller).await
            }
            _ => not_found(&path),
        }
    }

    /// The caller's role and token file, or the 401/429 answer. Each
    /// refusal is counted and audited (a peer over the limit is answered
    /// 429 without more audit lines).
    async fn authorize(
        &self,
        req: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<(auth::Role, Option<String>), Reply> {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let denied = match self.auth.check(peer.ip(), presented) {
            Ok((role, file)) => return Ok((role, file.map(str::to_string))),
            Err(denied) => denied,
        };
        metrics::counter!(crate::telemetry::names::ADMIN_AUTH_FAILURES_TOTAL).increment(1);
        let reply = match denied {
            auth::Denied::Limited(wait) => {
                let mut reply = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_failures",
                    format!(
                        "too many failed attempts from {}: try again in {wait} s",
                        peer.ip()
                    ),
                );
                if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                    reply.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return Err(reply);
            }
            auth::Denied::Missing => error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing \"Authorization: Bearer <token>\" header",
            ),
            auth::Denied::Wrong => error(StatusCode::UNAUTHORIZED, "unauthorized", "wrong token"),
        };
        let caller = Caller {
            peer: peer.to_string(),
            token: None,
        };
        let why = match denied {
            auth::Denied::Missing => "refused: no token",
            _ => "refused: wrong token",
        };
        self.instance
            .lock()
            .await
            .plane
            .audit_auth_failure(&caller, req.uri().path(), why);
        Err(reply)
    }

    /// An `/api/v1/` call, through the endpoint table (`api::rows`).
    async fn api(&self, req: Request<Incoming>, rest: &[String], caller: &Caller) -> Reply {
        let query = req.uri().query().unwrap_or("").to_string();
        let does = match api::route(req.method(), rest) {
            api::Routed::Found(does, params) => (does, params),
            api::Routed::WrongMethod(allow) => {
                let mut reply = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("use {allow} on this endpoint"),
                );
                if let Ok(allow) = HeaderValue::from_str(&allow) {
                    reply.headers_mut().insert(header::ALLOW, allow);
                }
                return reply;
            }
            api::Routed::NotFound => return not_found(&format!("/api/v1/{}", rest.join("/"))),
        };
        let body = match read_body(req).await {
            Ok(b) => b,
            Err(reply) => return reply,
        };
        match does {
            (api::Does::Status, _) => {
                let status = self.instance.lock().await.status().await;
                json_reply(StatusCode::OK, &json!(status))
            }
            (api::Does::Audit, _) => {
                let limit = query_number(&query, "limit").unwrap_or(50).clamp(1, 1000);
                self.audit(limit).await
            }
            (api::Does::Fleet, _) => self.fleet().await,
            (api::Does::Reload, _) => self.reload(caller).await,
            (api::Does::Upgrade, _) => self.upgrade(caller).await,
            (api::Does::Change { action, ok, make }, params) => {
                let force = query
                    .split('&')
                    .any(|kv| kv == "force=true" || kv == "force=1");
                let mut instance = self.instance.lock().await;
                let call = api::Call {
                    params,
                    body: &body,
                    force,
                    file: instance.plane.file(),
                };
                let change = make(&call);
                let target = call.params.target();
                match change {
                    Ok(change) => self.change(&mut instance, caller, &change, ok).await,
                    Err(e) => {
                        instance.plane.audit_refusal(caller, action, &target, &e);
                        control_error(&e)
                    }
                }
            }
        }
    }

    /// `GET /api/v1/audit`: in a fleet, every instance's changes (from
    /// etcd); this instance's own log if etcd cannot be read.
    async fn audit(&self, limit: usize) -> Reply {
        let cluster = self.instance.lock().await.cluster.clone();
        if let Some(cluster) = cluster {
            match cluster.audit_tail(limit).await {
                Ok(entries) => {
                    return json_reply(
                        StatusCode::OK,
                        &json!({"entries": entries, "source": "fleet"}),
                    );
                }
                Err(e) => tracing::debug!(error = %e, "fleet audit unreadable; local log"),
            }
        }
        match self.instance.lock().await.plane.audit_tail(limit) {
            Ok(entries) => json_reply(
                StatusCode::OK,
                &json!({"entries": entries, "source": "local"}),
            ),
            Err(e) => control_error(&e),
        }
    }

    /// `POST /api/v1/reload`, with systemd told it is reloading.
    async fn reload(&self, caller: &Caller) -> Reply {
        let mut instance = self.instance.lock().await;
        crate::systemd::reloading();
        let result = instance.reload(caller).await;
        let summary = instance.plane.file().summary();
        crate::systemd::ready(&summary);
        match result {
            Ok(dropped) => json_reply(
                StatusCode::OK,
                &json!({"reloaded": true, "summary": summary, "dropped_runtime_changes": dropped}),
            ),
            Err(e) => control_error(&e),
        }
    }

    /// A change that parsed, through the instance; the answer is the thing
    /// changed (route, pool or upstream) or the JSON error.
    async fn change(
        &self,
        instance: &mut Instance,
        caller: &Caller,
        change: &Change,
        ok: StatusCode,
    ) -> Reply {
        if let Err(e) = instance.change(caller, change).await {
            return control_error(&e);
        }
        let plane = &instance.plane;
        let status = plane.status();
        let view = match change {
            Change::SetSplit { route, .. }
            | Change::SetMirror { route, .. }
            | Change::StartRollout { route, .. }
            | Change::Rollout { route, .. } => {
                json!(status.routes.into_iter().find(|r| r.name == *route))
            }
            Change::DrainPool { pool, .. } => {
                json!(status.pools.into_iter().find(|p| p.name == *pool))
            }
            // The routes moved; a rollout's (the same on each) first.
            Change::StartRollouts { .. } | Change::Undo { .. } => {
                let moved = plane.routes_moved_by(change);
                let routes: Vec<_> = status
                    .routes
                    .into_iter()
                    .filter(|r| moved.contains(&r.name))
                    .collect();
                let rollout = routes
                    .first()
                    .map(|r| json!(r)["rollout"].clone())
                    .unwrap_or(Value::Null);
                json!({"routes": routes, "rollout": rollout})
            }
            _ => match change.upstream() {
                Some((pool, addr)) => plane.upstream_json(pool, addr),
                None => Value::Null,
            },
        };
        json_reply(ok, &view)
    }

    /// `GET /api/v1/fleet`: every instance that announced itself under its
    /// lease in etcd (a dead one drops out within the lease's 5 s), with
    /// its revision, last heartbeat and in-flight requests per upstream.
    async fn fleet(&self) -> Reply {
        let (cluster, me, revision) = {
            let instance = self.instance.lock().await;
            let Some(cluster) = instance.cluster.clone() else {
                return error(
                    StatusCode::NOT_FOUND,
                    "no_fleet",
                    "this instance is not in a fleet (no [cluster] in its config)",
                );
            };
            let me = cluster.view(instance.plane.shared_revision());
            (cluster, me, instance.plane.shared_revision())
        };
        match cluster.instances().await {
            Ok(list) => {
                let instances: Vec<Value> = list
                    .into_iter()
                    .map(|(name, mut record)| {
                        record["name"] = json!(name);
                        record["connected"] = json!(true);
                        record["behind"] = json!(record["revision"].as_i64().map(|r| r < revision));
                        record
                    })
                    .collect();
                // SPEC.md's fields at the top (this instance's link), the
                // detail under `this`.
                let body = json!({
                    "revision": revision,
                    "connected": me["connected"],
                    "this": me,
                    "instances": instances,
                });
                json_reply(StatusCode::OK, &body)
            }
            // The others cannot be listed: this instance's own view, which
            // says it is not connected, and why.
            Err(e) => json_reply(
                StatusCode::OK,
                &json!({
                    "revision": revision,
                    "connected": false,
                    "this": me,
                    "instances": [],
                    "error": format!("etcd unreachable: {e}"),
                }),
            ),
        }
    }

    /// `POST /api/v1/upgrade`: answers once the new process serves (200,
    /// both pids) or the upgrade failed and this process still serves.
    async fn upgrade(&self, caller: &Caller) -> Reply {
        let result = match &self.upgrader {
            Some(u) => u.upgrade(&self.instance).await,
            None => Err(UpgradeError::Unavailable),
        };
        let mut instance = self.instance.lock().await;
        match result {
            Ok(handover) => {
                instance.plane.audit_upgrade(caller, &json!(handover), "ok");
                json_reply(StatusCode::OK, &json!(handover))
            }
            Err(e) => {
                instance
                    .plane
                    .audit_upgrade(caller, &json!(null), &format!("refused: {e}"));
                let (status, code) = match e {
                    UpgradeError::Unavailable => (StatusCode::CONFLICT, "upgrade_unavailable"),
                    UpgradeError::InProgress => (StatusCode::CONFLICT, "upgrade_in_progress"),
                    UpgradeError::HandedOver(_) => (StatusCode::CONFLICT, "retired"),
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "upgrade_failed"),
                };
                error(status, code, e.to_string())
            }
        }
    }
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
                "body_too_large",
                format!("request body larger than {MAX_BODY} bytes"),
            ))
        }
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            format!("cannot read request body: {e}"),
        )),
    }
}

/// The number `key=N` in a query string, if there is one.
fn query_number(query: &str, key: &str) -> Option<usize> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

/// The one JSON shape of a refusal: `error` says what and why, `detail`
/// names the condition and its fields.
fn control_error(e: &ControlError) -> Reply {
    let mut body = json!({"error": e.to_string(), "detail": e.detail()});
    if let ControlError::InvalidConfig(problems) = e {
        body["problems"] = json!(problems);
    }
    if let ControlError::Listener(m) = e {
        body["problems"] = json!([m]);
    }
    json_reply(e.status(), &body)
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

/// A refusal that is not the control plane's (auth, routing, body size).
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    json_reply(
        status,
        &json!({"error": message.into(), "detail": {"code": code}}),
    )
}

fn not_found(path: &str) -> Reply {
    error(
        StatusCode::NOT_FOUND,
        "no_such_endpoint",
        format!("no such endpoint: {path}"),
    )
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
