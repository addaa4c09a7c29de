//! One rollout over several routes (`POST /api/v1/rollouts`): an app on
//! `/`, `/api` and `/ws` (WebSocket) moved together under load, rolled
//! back whole when green fails on one route, and undone after a promotion.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// The app: three routes, each split between blue and green.
fn app_config(blue: &TestUpstream, green: &TestUpstream) -> String {
    let route = |name: &str, prefix: &str| {
        format!(
            "[[route]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nsplit = {{ blue = 100, green = 0 }}\n"
        )
    };
    format!(
        "{}{}{}[pool.blue]\nupstreams = [ {{ addr = \"{}\" }} ]\n[pool.green]\nupstreams = [ {{ addr = \"{}\" }} ]\n",
        route("web", "/"),
        route("api", "/api"),
        route("ws", "/ws"),
        blue.addr,
        green.addr
    )
}

/// HTTP clients on `/` and `/api/items` and WebSocket clients on `/ws`,
/// each counting what only the proxy could have failed: anything but a
/// 200, or green's own 500 on `/api`; a WebSocket that does not open or
/// does not echo.
struct AppTraffic {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
    served: Arc<AtomicUsize>,
    websockets_on_green: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl AppTraffic {
    fn start(proxy: &TestProxy) -> AppTraffic {
        let base = proxy.addrs()[0];
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let websockets_on_green = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for (i, path) in ["/", "/api/items", "/", "/api/items"]
            .into_iter()
            .enumerate()
        {
            let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
            let client = if i % 2 == 0 {
                http1_client()
            } else {
                http2_client()
            };
            let url = format!("http://{base}{path}");
            tasks.push(tokio::spawn(async move {
                for _ in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (status, body) = get(&client, &url).await;
                    let ok = status == 200 || (status == 500 && body.trim() == "green");
                    if !ok {
                        eprintln!("proxy failure on {url}: {status} {body}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    served.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for _ in 0..2 {
            let (stop, failures, on_green) =
                (stop.clone(), failures.clone(), websockets_on_green.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match websocket_round(base, n).await {
                        Ok(server) => {
                            if server == "green" {
                                on_green.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(e) => {
                            eprintln!("websocket failure: {e}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        AppTraffic {
            stop,
            failures,
            served,
            websockets_on_green,
            tasks,
        }
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }

    /// Stops; returns (failures, WebSockets green answered).
    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.failures.load(Ordering::Relaxed),
            self.websockets_on_green.load(Ordering::Relaxed),
        )
    }
}

/// Opens a WebSocket through the proxy, sends two messages, checks the
/// echoes, closes; returns the server that answered.
async fn websocket_round(base: std::net::SocketAddr, n: u64) -> Result<String, String> {
    let stream = TcpStream::connect(base).await.map_err(|e| e.to_string())?;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{base}/ws"), stream)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut server = String::new();
    for i in 0..2 {
        let text = format!("hello {n}.{i}");
        ws.send(Message::text(text.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let echo = match ws.next().await {
            Some(Ok(Message::Text(t))) => t.to_string(),
            other => return Err(format!("no echo: {other:?}")),
        };
        let Some((name, back)) = echo.split_once(' ') else {
            return Err(format!("bad echo {echo:?}"));
        };
        if back != text {
            return Err(format!("echo {back:?} for {text:?}"));
        }
        server = name.to_string();
    }
    let _ = ws.close(None).await;
    Ok(server)
}

async fn status(proxy: &TestProxy) -> Value {
    admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None)
        .await
        .1
}

/// Each route's split, by name.
fn splits(status: &Value) -> Vec<(String, Value)> {
    status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["split"].clone()))
        .collect()
}

/// Follows the group until its rollout ends, checking in every status
/// that the three routes share one split and one step; returns the last
/// status and the distinct splits seen.
async fn follow_together(proxy: &TestProxy) -> (Value, Vec<Value>) {
    let mut seen: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let s = status(proxy).await;
        let routes = s["routes"].as_array().unwrap();
        let first = &routes[0];
        for r in routes {
            assert_eq!(r["split"], first["split"], "routes apart: {s:#}");
            assert_eq!(r["rollout"]["step"], first["rollout"]["step"], "{s:#}");
            assert_eq!(r["rollout"]["state"], first["rollout"]["state"], "{s:#}");
        }
        if !seen.contains(&first["split"]) {
            seen.push(first["split"].clone());
        }
        let state = first["rollout"]["state"].as_str().unwrap_or("").to_string();
        if ["promoted", "rolled_back", "aborted"].contains(&state.as_str()) {
            return (s, seen);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rollout never ended: {s:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn rollout_body(extra: Value) -> Value {
    let mut body = json!({"from": "blue", "to": "green", "steps": [25, 50, 100], "interval": "1s",
        "analysis": {"check_every": "200ms", "min_requests": 20, "failure_limit": 1}});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_routes_move_together_promote_undo_then_roll_back_whole_on_one_route_failing() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let proxy = start_proxy(&app_config(&blue, &green)).await;
    let traffic = AppTraffic::start(&proxy);
    wait_until("traffic on every route", || async {
        traffic.served() > 200
    })
    .await;

    // A healthy green: one rollout moves all three routes step by step.
    let (s, v) = admin_call(
        "POST",
        &proxy.admin_url("/api/v1/rollouts"),
        Some(rollout_body(json!({}))),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v:#}");
    let mut named: Vec<&str> = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    named.sort_unstable();
    assert_eq!(named, ["api", "web", "ws"], "{v:#}");
    assert_eq!(v["rollout"]["group"]["routes"].as_array().unwrap().len(), 3);
    let (end, seen) = follow_together(&proxy).await;
    assert_eq!(end["routes"][0]["rollout"]["state"], "promoted", "{end:#}");
    assert!(seen.len() >= 3, "steps seen: {seen:?}");
    for (route, split) in splits(&end) {
        assert_eq!(split, json!({"blue": 0, "green": 100}), "{route}");
    }
    // The group's summed analysis is shown beside each route's own.
    let group = &end["routes"][0]["rollout"]["group"];
    assert!(
        group["analysis"]["target"]["requests"].as_u64().unwrap() > 0,
        "{group:#}"
    );

    // Undo by pool: every route back to blue, in one change.
    let (s, v) = admin_call(
        "POST",
        &proxy.admin_url("/api/v1/pools/green/undo"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v:#}");
    for (route, split) in splits(&status(&proxy).await) {
        assert_eq!(split, json!({"blue": 100, "green": 0}), "{route}");
    }

    // A second rollout, of a green broken on /api only: all three routes
    // go back, on the first failing check — with an outside check of the
    // whole app passing meanwhile (the group reads it; routes still veto).
    green.fail_under("/api");
    let (depth, asked) = answering("3").await;
    let mut body = rollout_body(json!({"interval": "30s"}));
    body["analysis"]["http"] = json!([{"url": format!("http://{depth}/"), "max": 10}]);
    let (s, v) = admin_call(
        "POST",
        &proxy.admin_url("/api/v1/rollouts"),
        Some(body),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v:#}");
    let (end, _) = follow_together(&proxy).await;
    let rollout = &end["routes"][0]["rollout"];
    assert_eq!(rollout["state"], "rolled_back", "{end:#}");
    // Whichever judged first — api's own checks (a veto) or the summed
    // ones — the reason names the route the errors came from.
    let reason = rollout["reason"].as_str().unwrap();
    let by_route = reason
        .split("(by route: ")
        .nth(1)
        .is_some_and(|r| !r.starts_with("api 0 ") && r.contains("web 0 errors"));
    assert!(reason.starts_with("route api:") || by_route, "{reason}");
    for (route, split) in splits(&end) {
        assert_eq!(split, json!({"blue": 100, "green": 0}), "{route}");
    }
    assert!(
        asked.load(Ordering::SeqCst) > 0,
        "the group never read its check"
    );
    let (failures, on_green) = traffic.finish().await;
    assert_eq!(failures, 0, "requests the moves failed");
    assert!(on_green > 0, "no WebSocket ever reached green");
    let audit = std::fs::read_to_string(proxy.state_dir.path().join("audit.log")).unwrap();
    assert!(audit.contains("\"undo\""), "{audit}");
    proxy.stop().await;
}

#[tokio::test]
async fn bad_group_rollouts_and_undos_are_refused_naming_the_problem() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let proxy = start_proxy(&app_config(&blue, &green)).await;
    let post = |path: &'static str, body: Option<Value>| {
        let url = proxy.admin_url(path);
        async move { admin_call("POST", &url, body, None).await }
    };
    for (body, code, field) in [
        (json!({"from": "blue", "to": "nope"}), 404, None),
        (json!({"from": "green", "to": "blue"}), 400, Some("from")),
        (json!({"to": "green", "routes": []}), 400, Some("routes")),
        (
            json!({"to": "green", "routes": ["web", "web"]}),
            400,
            Some("routes[1]"),
        ),
        (
            json!({"to": "green", "routes": ["web", 3]}),
            400,
            Some("routes[1]"),
        ),
        (json!({"to": "green", "routes": ["nope"]}), 404, None),
        (
            json!({"from": "blue", "routes": ["web"], "to": "green"}),
            400,
            Some("routes"),
        ),
        (
            json!({"from": "blue", "to": "green", "steps": [50]}),
            400,
            Some("steps"),
        ),
    ] {
        let (s, v) = post("/api/v1/rollouts", Some(body.clone())).await;
        assert_eq!(s, code, "{body}: {v:#}");
        if let Some(field) = field {
            assert_eq!(v["detail"]["field"], field, "{body}: {v:#}");
        }
        assert!(v["error"].is_string(), "{v:#}");
    }
    // Nothing to undo yet; unknown names are 404.
    let (s, v) = post("/api/v1/routes/web/undo", None).await;
    assert_eq!(
        (s, v["detail"]["code"].as_str()),
        (409, Some("nothing_to_undo")),
        "{v:#}"
    );
    let (s, _) = post("/api/v1/routes/nope/undo", None).await;
    assert_eq!(s, 404);
    let (s, _) = post("/api/v1/pools/nope/undo", None).await;
    assert_eq!(s, 404);
    // A split set by hand, undone, then redone by undoing the undo.
    set_split(&proxy, "web", json!({"blue": 50, "green": 50})).await;
    let (s, v) = post("/api/v1/routes/web/undo", None).await;
    assert_eq!(s, 200, "{v:#}");
    assert_eq!(v["routes"][0]["split"], json!({"blue": 100, "green": 0}));
    let (s, v) = post("/api/v1/routes/web/undo", None).await;
    assert_eq!(s, 200, "{v:#}");
    assert_eq!(v["routes"][0]["split"], json!({"blue": 50, "green": 50}));
    // A running rollout owns the split: undo waits for it.
    set_split(&proxy, "api", json!({"blue": 90, "green": 10})).await;
    let (s, v) = post(
        "/api/v1/rollouts",
        Some(json!({"to": "green", "routes": ["api"], "interval": "1m"})),
    )
    .await;
    assert_eq!(s, 201, "{v:#}");
    let (s, v) = post("/api/v1/routes/api/undo", None).await;
    assert_eq!(
        (s, v["detail"]["code"].as_str()),
        (409, Some("rollout_running")),
        "{v:#}"
    );
    proxy.stop().await;
}

/// An undo is refused once the split moved by other means since the
/// change it would undo — here a reload whose file changed the split.
#[tokio::test]
async fn undo_is_refused_when_the_split_changed_since() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let (proxy, path) = start_proxy_from_file(&app_config(&blue, &green)).await;
    set_split(&proxy, "web", json!({"blue": 50, "green": 50})).await;
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "name = \"web\"\npath_prefix = \"/\"\nsplit = { blue = 100, green = 0 }",
        "name = \"web\"\npath_prefix = \"/\"\nsplit = { blue = 80, green = 20 }",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let (s, v) = admin_call("POST", &proxy.admin_url("/api/v1/reload"), None, None).await;
    assert_eq!(s, 200, "{v:#}");
    let (s, v) = admin_call(
        "POST",
        &proxy.admin_url("/api/v1/routes/web/undo"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 409, "{v:#}");
    assert_eq!(v["detail"]["code"], "changed_since", "{v:#}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("blue=80 green=20 now, not blue=50 green=50"),
        "{error}"
    );
    // The split stays as the file has it.
    let s = status(&proxy).await;
    assert_eq!(splits(&s)[0].1, json!({"blue": 80, "green": 20}));
    proxy.stop().await;
}

/// A group rollout survives a restart as one: every route at the same
/// step; a promote on one route moves them all; a file that changes one
/// route's split aborts the whole group, every route back at its start.
#[tokio::test]
async fn a_group_resumes_after_a_restart_and_a_changed_file_aborts_all_of_it() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let state = tempfile::tempdir().unwrap();
    let config = |web_split: &str| {
        format!(
            "[state]\ndir = \"{}\"\n{}",
            state.path().display(),
            app_config(&blue, &green).replacen(
                "split = { blue = 100, green = 0 }",
                &format!("split = {{ {web_split} }}"),
                1
            )
        )
    };
    let proxy = start_proxy(&config("blue = 100, green = 0")).await;
    let (s, v) = admin_call(
        "POST",
        &proxy.admin_url("/api/v1/rollouts"),
        Some(
            json!({"from": "blue", "to": "green", "steps": [10, 40, 100], "interval": "1h",
                    "analysis": {"min_requests": 1000000000}}),
        ),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v:#}");
    proxy.stop().await;

    let proxy = start_proxy(&config("blue = 100, green = 0")).await;
    let (s, v) = admin_call(
        "POST",
        &proxy.admin_url("/api/v1/routes/ws/rollout/promote"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v:#}");
    let s = status(&proxy).await;
    for (route, split) in splits(&s) {
        assert_eq!(split, json!({"blue": 60, "green": 40}), "{route}: {s:#}");
    }
    proxy.stop().await;

    // The file changes web's split: web's part aborts, and so do the rest.
    let proxy = start_proxy(&config("blue = 90, green = 10")).await;
    let s = status(&proxy).await;
    for r in s["routes"].as_array().unwrap() {
        assert_eq!(r["rollout"]["state"], "aborted", "{s:#}");
    }
    let splits: Vec<(String, Value)> = splits(&s);
    for (route, split) in splits {
        let want = if route == "web" {
            json!({"blue": 90, "green": 10})
        } else {
            json!({"blue": 100, "green": 0})
        };
        assert_eq!(split, want, "{route}");
    }
    proxy.stop().await;
}

/// `PUT …/routes/{route}/split`, which must be accepted.
async fn set_split(proxy: &TestProxy, route: &str, split: Value) {
    let url = proxy.admin_url(&format!("/api/v1/routes/{route}/split"));
    let (s, v) = admin_call("PUT", &url, Some(split), None).await;
    assert_eq!(s, 200, "{v:#}");
}
