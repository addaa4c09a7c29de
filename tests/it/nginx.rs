//! Interoperation with real software: curl (HTTP/1.1 and HTTP/2 prior
//! knowledge) through cutover in front of a real nginx.
//!
//! `.ci/run` installs nginx and curl. Without them the test says so and
//! passes, except under CI (CI=true), where it fails.

use std::net::SocketAddr;
use std::process::Command;

use crate::support::*;

fn tools_present() -> bool {
    // Both asked, so a missing one is reported even when the other is too.
    let nginx = tool_present("nginx", "nginx-light");
    let curl = tool_present("curl", "curl");
    nginx && curl
}

/// An nginx answering on `addr` (a port the kernel picked: nginx needs a
/// fixed one).
struct Nginx {
    _process: crate::support::nginx::Nginx,
    addr: SocketAddr,
}

/// An nginx answering `body` (nginx variables allowed) on a free loopback port.
fn start_nginx(body: &str) -> Nginx {
    let addr = free_port();
    let server = format!(
        r#"    server {{
        listen {addr};
        location / {{
            add_header X-Seen-Host $host;
            return 200 "{body}\n";
        }}
        location = /healthz {{
            return 200 "ok\n";
        }}
    }}"#
    );
    let process =
        crate::support::nginx::Nginx::start(|dir| crate::support::nginx::http_block(dir, &server));
    Nginx {
        _process: process,
        addr,
    }
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_cutover_to_nginx() {
    if !tools_present() {
        return;
    }
    let nginx = start_nginx("nginx $request_uri");
    let nginx_addr = nginx.addr;
    wait_until("nginx listens", || async {
        tokio::net::TcpStream::connect(nginx_addr).await.is_ok()
    })
    .await;
    let proxy = start_proxy(&split_config(&[("nginx", 1, &[nginx.addr])], "")).await;
    let url = format!("http://{}/hello?x=1", proxy.addrs()[0]);
    let (h1, h2) = tokio::task::spawn_blocking(move || {
        (
            curl(&["-i", "--http1.1", "-H", "Host: app.test", &url]),
            curl(&["-i", "--http2-prior-knowledge", &url]),
        )
    })
    .await
    .unwrap();
    assert!(h1.starts_with("HTTP/1.1 200"), "{h1}");
    assert!(h1.ends_with("nginx /hello?x=1\n"), "{h1}");
    assert!(
        h1.to_ascii_lowercase().contains("x-seen-host: app.test"),
        "{h1}"
    );
    assert!(h1.to_ascii_lowercase().contains("via: 1.1 cutover"), "{h1}");
    assert!(h2.starts_with("HTTP/2 200"), "{h2}");
    assert!(h2.ends_with("nginx /hello?x=1\n"), "{h2}");
    proxy.stop().await;
}

/// The runbook of docs/runbook-blue-green.md against two real nginx
/// upstreams, under load: zero failed requests, and no sticky session moves
/// before its drain deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_runbook_against_nginx() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    if !tools_present() {
        return;
    }
    let (blue, green) = (start_nginx("blue"), start_nginx("green"));
    for n in [&blue, &green] {
        let addr = n.addr;
        wait_until("nginx listens", || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
    }
    let health = "health = { path = \"/healthz\", interval = \"100ms\", timeout = \"100ms\", rise = 1, fall = 2 }";
    let config = format!(
        "[[route]]\nname = \"app\"\nsplit = {{ blue = 100, green = 0 }}\nsticky = {{ cookie = \"cutover_app\", max_age = \"1h\" }}\n\
         [pool.blue]\n{health}\nupstreams = [{{ addr = \"{}\" }}]\n[pool.green]\n{health}\nupstreams = [{{ addr = \"{}\" }}]\n",
        blue.addr, green.addr
    );
    let proxy = start_proxy(&config).await;
    let url = format!("http://{}/", proxy.addrs()[0]);

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    // Before this time (ms after `start`), no sticky client may leave blue;
    // set a little before the drain deadline the proxy enforces.
    let start = std::time::Instant::now();
    let earliest_move_ms = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let broken = Arc::new(AtomicUsize::new(0));
    let moved = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (stop, failures, requests, earliest_move_ms, broken, moved, url) = (
            stop.clone(),
            failures.clone(),
            requests.clone(),
            earliest_move_ms.clone(),
            broken.clone(),
            moved.clone(),
            url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let client = http1_client();
            // Even clients keep their cookie (a session); odd ones never do.
            let sticky = i % 2 == 0;
            let mut cookie: Option<String> = None;
            let mut pinned: Option<String> = None;
            for _ in 0..50_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                requests.fetch_add(1, Ordering::Relaxed);
                let mut req = http::Request::get(&url);
                if let Some(c) = &cookie {
                    req = req.header("cookie", c.clone());
                }
                let Ok(resp) = client.request(req.body(Default::default()).unwrap()).await else {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let status = resp.status();
                let set = resp
                    .headers()
                    .get("set-cookie")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(';').next())
                    .map(str::to_string);
                let Ok(body) = http_body_util::BodyExt::collect(resp.into_body()).await else {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                if status != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let colour = String::from_utf8_lossy(&body.to_bytes()).trim().to_string();
                if sticky {
                    if let Some(p) = &pinned
                        && *p != colour
                    {
                        let now = start.elapsed().as_millis() as u64;
                        if now >= earliest_move_ms.load(Ordering::Relaxed) {
                            moved.fetch_add(1, Ordering::Relaxed);
                        } else {
                            broken.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if set.is_some() {
                        cookie = set;
                        pinned = Some(colour);
                    }
                }
            }
        }));
    }
    let green_seen = || async {
        let (_, s) = admin_call("GET", &proxy.admin_url("/metrics"), None, None).await;
        s.as_str()
            .unwrap_or("")
            .lines()
            .filter(|l| l.starts_with("cutover_requests_total{route=\"app\",pool=\"green\""))
            .count()
    };
    wait_until("load on blue", || async {
        requests.load(Ordering::Relaxed) > 500
    })
    .await;

    // 2. Cut over new sessions.
    let split = proxy.admin_url("/api/v1/routes/app/split");
    let (s, v) = admin_call(
        "PUT",
        &split,
        Some(serde_json::json!({"blue": 0, "green": 100})),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let before = requests.load(Ordering::Relaxed);
    wait_until("traffic after the cutover", || async {
        requests.load(Ordering::Relaxed) > before + 500
    })
    .await;
    assert!(green_seen().await > 0, "new sessions reach green");

    // 3. Drain blue with a deadline; sticky clients stay until it passes.
    let drain = proxy.admin_url("/api/v1/pools/blue/drain");
    let drained_at = std::time::Instant::now();
    earliest_move_ms.store(start.elapsed().as_millis() as u64 + 1400, Ordering::Relaxed);
    let (s, v) = admin_call(
        "POST",
        &drain,
        Some(serde_json::json!({"timeout": "1500ms"})),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let state = || async {
        let (_, st) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
        st["pools"][0]["upstreams"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(state().await, "draining");
    wait_until("the drain deadline passes", || async {
        drained_at.elapsed() >= std::time::Duration::from_millis(1500)
    })
    .await;
    wait_until("blue is drained", || async { state().await == "drained" }).await;

    // 4. Remove blue.
    let remove = proxy.admin_url(&format!("/api/v1/pools/blue/upstreams/{}", blue.addr));
    assert_eq!(admin_call("DELETE", &remove, None, None).await.0, 202);
    wait_until("blue removed", || async {
        let (_, st) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
        st["pools"][0]["upstreams"]
            .as_array()
            .is_some_and(|u| u.is_empty())
    })
    .await;
    let before = requests.load(Ordering::Relaxed);
    wait_until("traffic after the removal", || async {
        requests.load(Ordering::Relaxed) > before + 300
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let total = requests.load(Ordering::Relaxed);
    eprintln!(
        "runbook: {total} requests, {} failed, {} sticky sessions broken early, {} moved at the deadline",
        failures.load(Ordering::Relaxed),
        broken.load(Ordering::Relaxed),
        moved.load(Ordering::Relaxed)
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed requests out of {total}"
    );
    assert_eq!(
        broken.load(Ordering::Relaxed),
        0,
        "sticky sessions moved before the deadline"
    );
    // The four sticky clients were pinned to blue and moved only at the deadline.
    assert_eq!(
        moved.load(Ordering::Relaxed),
        4,
        "each sticky session moves once, at the deadline"
    );
    proxy.stop().await;
}
