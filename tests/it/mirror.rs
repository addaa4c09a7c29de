//! Shadow traffic through the real listener: copies go to the mirror pool
//! at about the configured percent, marked as shadows; a dead, slow or
//! failing mirror changes nothing for clients; answers are compared and
//! counted; a large upload still streams; runtime control is persisted.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::support::*;

/// Blue serves the route; copies go to `mirror_addr` with `settings`.
fn mirror_config(blue: &TestUpstream, mirror_addr: std::net::SocketAddr, settings: &str) -> String {
    format!(
        r#"
[[route]]
name = "app"
split = {{ blue = 1 }}
mirror = {{ pool = "green", {settings} }}
[pool.blue]
upstreams = [{{ addr = "{}" }}]
[pool.green]
upstreams = [{{ addr = "{mirror_addr}" }}]
"#,
        blue.addr
    )
}

async fn mirror_of(proxy: &TestProxy) -> Value {
    let (_, v) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
    v["routes"][0]["mirror"].clone()
}

fn counted(m: &Value, outcome: &str) -> u64 {
    m["counts"][outcome].as_u64().unwrap_or(0)
}

fn all_counted(m: &Value) -> u64 {
    ["same", "differs", "failed", "skipped"]
        .iter()
        .map(|o| counted(m, o))
        .sum()
}

/// Sends `n` GETs of `path` from `clients` keep-alive clients; returns the
/// latency of each and panics on any answer but 200.
async fn send(base: &str, path: &str, n: usize, clients: usize) -> Vec<Duration> {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let url = format!("{base}{path}");
            let client = if c % 2 == 0 {
                http1_client()
            } else {
                http2_client()
            };
            let share = n / clients + usize::from(c < n % clients);
            tokio::spawn(async move {
                let mut times = Vec::with_capacity(share);
                for _ in 0..share {
                    let start = Instant::now();
                    let (status, _) = get(&client, &url).await;
                    times.push(start.elapsed());
                    assert_eq!(status, 200, "GET {url}");
                }
                times
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn p99(times: &mut [Duration]) -> Duration {
    times.sort();
    times[(times.len() * 99).div_ceil(100) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_receives_about_its_percent_as_marked_shadows() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let proxy = start_proxy(&mirror_config(&blue, green.addr, "percent = 30")).await;
    let base = format!("http://{}", proxy.addrs()[0]);
    send(&base, "/", 1_000, 8).await;
    wait_until("every copy judged", || async {
        all_counted(&mirror_of(&proxy).await) == green.hits() as u64 && green.hits() > 0
    })
    .await;
    let share = green.hits() as f64 / 1_000.0;
    // Binomial: one standard deviation is 1.45 points at n = 1,000.
    assert!((0.24..=0.36).contains(&share), "{share}");
    assert_eq!(blue.hits(), 1_000, "every client request went to blue");
    assert_eq!(green.shadows(), green.hits(), "every copy is marked");
    assert_eq!(blue.shadows(), 0, "no client request is marked");
    let m = mirror_of(&proxy).await;
    assert_eq!(counted(&m, "same"), green.hits() as u64, "{m:#}");
    assert_eq!(m["pool"], "green");
    assert_eq!(m["source"], "file");
    let (_, metrics) = admin_call("GET", &proxy.admin_url("/metrics"), None, None).await;
    // The recorder is shared by every in-process test: at least ours.
    let same: u64 = metrics
        .as_str()
        .unwrap_or("")
        .lines()
        .find_map(|l| {
            l.strip_prefix("cutover_mirror_total{route=\"app\",pool=\"green\",outcome=\"same\"} ")?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(same >= green.hits() as u64, "{metrics}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_failing_mirror_changes_nothing_for_clients() {
    let blue = TestUpstream::start("blue").await;
    let dead = closed_port();
    let proxy = start_proxy(&mirror_config(&blue, dead, "percent = 100")).await;
    let base = format!("http://{}", proxy.addrs()[0]);
    send(&base, "/", 200, 4).await;
    wait_until("copies to a dead mirror counted as failed", || async {
        counted(&mirror_of(&proxy).await, "failed") + counted(&mirror_of(&proxy).await, "skipped")
            == 200
    })
    .await;
    assert!(counted(&mirror_of(&proxy).await, "failed") > 0);
    proxy.stop().await;

    let green = TestUpstream::start("green").await;
    green.fail_every(1);
    let proxy = start_proxy(&mirror_config(&blue, green.addr, "percent = 100")).await;
    let base = format!("http://{}", proxy.addrs()[0]);
    send(&base, "/", 200, 4).await;
    wait_until("every copy judged", || async {
        all_counted(&mirror_of(&proxy).await) == 200
    })
    .await;
    let m = mirror_of(&proxy).await;
    assert_eq!(counted(&m, "differs"), green.hits() as u64, "{m:#}");
    let d = &m["differences"][0];
    assert_eq!(
        (
            d["primary"]["status"].as_u64(),
            d["shadow"]["status"].as_u64()
        ),
        (Some(200), Some(500)),
        "{m:#}"
    );
    assert_eq!(d["path"], "/");
    proxy.stop().await;
}

/// A mirror that takes 5 s per answer: clients see the latency they see
/// without a mirror. Each client alternates between a proxy without the
/// mirror and one with it, request by request, so the noise of a shared
/// machine falls on both alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_mirror_does_not_delay_clients() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    green.delay(5_000);
    let plain = start_proxy(&split_config(&[("blue", 1, &[blue.addr])], "")).await;
    let mirrored = start_proxy(&mirror_config(
        &blue,
        green.addr,
        "percent = 100, timeout = \"10s\"",
    ))
    .await;
    let urls = [
        format!("http://{}/", plain.addrs()[0]),
        format!("http://{}/", mirrored.addrs()[0]),
    ];
    // Warm up both: connections made, and the mirror's first 100 copies
    // (its max_in_flight) sent and waiting on the slow upstream.
    for url in &urls {
        send(url.trim_end_matches('/'), "/", 120, 4).await;
    }
    let tasks: Vec<_> = (0..2)
        .map(|c| {
            let urls = urls.clone();
            let client = if c == 0 {
                http1_client()
            } else {
                http2_client()
            };
            tokio::spawn(async move {
                let mut times = [Vec::new(), Vec::new()];
                for i in 0..300 {
                    let which = i % 2;
                    let start = Instant::now();
                    let (status, _) = get(&client, &urls[which]).await;
                    times[which].push(start.elapsed());
                    assert_eq!(status, 200);
                }
                times
            })
        })
        .collect();
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for t in tasks {
        let [a, b] = t.await.unwrap();
        without.extend(a);
        with.extend(b);
    }
    let slowest = with.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(1),
        "a client waited {slowest:?}"
    );
    let (p99_without, p99_with) = (p99(&mut without), p99(&mut with));
    // 10 %, plus 10 ms for the scheduling noise of a small shared machine
    // running the other tests (a package build among them); waiting on a
    // copy would add 5 s.
    assert!(
        p99_with <= p99_without.mul_f64(1.10) + Duration::from_millis(10),
        "p99 with a slow mirror {p99_with:?}, without {p99_without:?}"
    );
    let m = mirror_of(&mirrored).await;
    assert!(
        counted(&m, "skipped") > 0,
        "over max_in_flight copies are skipped: {m:#}"
    );
    assert!(m["in_flight"].as_u64().is_some_and(|n| n <= 100), "{m:#}");
    plain.stop().await;
    mirrored.stop().await;
}

/// Two copies of one app, the shadow differing on `/healthz` (status) and on
/// `/headers` (body: it echoes the shadow header): `same` and `differs` are
/// counted exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_answers_are_compared_on_status_and_body() {
    let primary = TestUpstream::start("app").await;
    let shadow = TestUpstream::start("app").await;
    shadow.set_health_status(503);
    let proxy = start_proxy(&mirror_config(
        &primary,
        shadow.addr,
        "percent = 100, compare = [\"status\", \"body\"]",
    ))
    .await;
    let base = format!("http://{}", proxy.addrs()[0]);
    send(&base, "/", 20, 2).await;
    send(&base, "/healthz", 5, 1).await;
    send(&base, "/headers", 5, 1).await;
    wait_until("every copy judged", || async {
        all_counted(&mirror_of(&proxy).await) == 30
    })
    .await;
    let m = mirror_of(&proxy).await;
    assert_eq!(
        (counted(&m, "same"), counted(&m, "differs")),
        (20, 10),
        "{m:#}"
    );
    let diffs = m["differences"].as_array().unwrap();
    let by_status = diffs.iter().find(|d| d["path"] == "/healthz").unwrap();
    assert_eq!(by_status["shadow"]["status"], 503);
    let by_body = diffs.iter().find(|d| d["path"] == "/headers").unwrap();
    assert_eq!(by_body["primary"]["status"], by_body["shadow"]["status"]);
    assert_ne!(
        by_body["primary"]["body_sha256"],
        by_body["shadow"]["body_sha256"]
    );
    assert!(
        by_body["primary"]["body_sha256"]
            .as_str()
            .is_some_and(|s| s.len() == 64)
    );
    proxy.stop().await;
}

/// A 10 MiB chunked upload is streamed to the primary while it arrives
/// (not held for the mirror) and its copy is skipped; a small upload is
/// copied whole and answered the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_streams_to_the_primary_and_is_not_copied() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let proxy = start_proxy(&mirror_config(
        &blue,
        green.addr,
        "percent = 100, max_body = \"64KiB\", compare = [\"status\", \"body\"]",
    ))
    .await;
    let url = format!("http://{}/upload", proxy.addrs()[0]);
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(4);
    let body = http_body_util::StreamBody::new(tokio_stream_from(rx));
    let req = http::Request::post(&url).body(body).unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = tokio::spawn(async move { client.request(req).await });
    let chunk = Bytes::from(vec![7u8; 1 << 20]);
    tx.send(Ok(hyper::body::Frame::data(chunk.clone())))
        .await
        .unwrap();
    // The first MiB reaches blue before the client sends the rest.
    wait_until("the first MiB at the primary", || async {
        blue.received() >= 1 << 20
    })
    .await;
    for _ in 1..10 {
        tx.send(Ok(hyper::body::Frame::data(chunk.clone())))
            .await
            .unwrap();
    }
    drop(tx);
    let response = response.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert!(text.starts_with(b"10485760 "), "{text:?}");
    wait_until("the copy skipped", || async {
        counted(&mirror_of(&proxy).await, "skipped") == 1
    })
    .await;
    assert_eq!(green.received(), 0);

    // A small body is copied whole: both apps answer the same.
    let client = http1_client();
    let req = http::Request::post(&url)
        .body(http_body_util::Full::new(Bytes::from(vec![3u8; 1024])))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    wait_until("the small upload's copy judged same", || async {
        counted(&mirror_of(&proxy).await, "same") == 1
    })
    .await;
    assert_eq!(green.received(), 1024);
    proxy.stop().await;
}

/// Frames from a channel, as a body stream.
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn put_mirror(proxy: &TestProxy, body: Value) -> (u16, Value) {
    let url = proxy.admin_url("/api/v1/routes/app/mirror");
    admin_call("PUT", &url, Some(body), None).await
}

/// `PUT …/mirror` and `ctl mirror`: set, persisted and audited, stopped
/// with 0, survives a restart; bad calls name their field and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_mirror_is_persisted_audited_and_checked() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let state = tempfile::tempdir().unwrap();
    let config = split_config(
        &[("blue", 1, &[blue.addr]), ("green", 0, &[green.addr])],
        &format!("[state]\ndir = \"{}\"\n", state.path().display()),
    );
    let proxy = start_proxy(&config).await;
    for (body, status, field) in [
        (json!({"pool": "red", "percent": 10}), 404, None),
        (
            json!({"pool": "green", "percent": 101}),
            400,
            Some("percent"),
        ),
        (
            json!({"pool": "green", "percent": 10, "rate": 1}),
            400,
            Some("rate"),
        ),
        (json!({"percent": 10}), 400, Some("pool")),
    ] {
        let (s, v) = put_mirror(&proxy, body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        if let Some(field) = field {
            assert_eq!(v["detail"]["field"], field, "{v}");
        }
    }
    assert!(mirror_of(&proxy).await.is_null(), "nothing changed");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "ctl",
            "--admin",
            &proxy.admin_url(""),
            "mirror",
            "app",
            "green=100",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("app: mirror 100% to green"), "{text}");
    let m = mirror_of(&proxy).await;
    assert_eq!(
        (m["percent"].as_u64(), m["source"].as_str()),
        (Some(100), Some("runtime"))
    );
    send(&format!("http://{}", proxy.addrs()[0]), "/", 10, 1).await;
    wait_until("ten copies", || async { green.shadows() == 10 }).await;
    let audit = std::fs::read_to_string(state.path().join("audit.log")).unwrap();
    assert!(audit.contains("\"set_mirror\""), "{audit}");
    proxy.stop().await;

    // A restart keeps it; percent 0 stops it.
    let proxy = start_proxy(&config).await;
    assert_eq!(mirror_of(&proxy).await["percent"], 100);
    let (s, v) = put_mirror(&proxy, json!({"percent": 0})).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["mirror"].is_null(), "{v}");
    send(&format!("http://{}", proxy.addrs()[0]), "/", 10, 1).await;
    assert_eq!(green.shadows(), 10, "no copies once stopped");
    proxy.stop().await;
}
