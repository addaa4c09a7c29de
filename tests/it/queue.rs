//! `max_in_flight` and the pool's queue: an upstream never has more
//! requests at once than its limit, the ones beyond wait and are served,
//! and a full queue or a wait past `queue_timeout` is a 503 with
//! `Retry-After`, counted apart from upstream errors.

use crate::support::*;

/// Pool names differ per test: metrics are the test process's, shared.
fn limited_config(pool: &str, up: std::net::SocketAddr, limits: &str) -> String {
    format!(
        "[[route]]\nname = \"app\"\nsplit = {{ {pool} = 1 }}\n[pool.{pool}]\nupstreams = [{{ addr = \"{up}\" }}]\n{limits}\n"
    )
}

/// 40 requests at once to one upstream that takes 2 at a time, on both
/// fronts (HTTP/1.1: the direct path; HTTP/2: hyper's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_in_flight_wait_and_every_one_is_served() {
    for (pool, client) in [("queued_h1", http1_client()), ("queued_h2", http2_client())] {
        let up = TestUpstream::start("up").await;
        up.delay(50);
        let config = limited_config(pool, up.addr, "max_in_flight = 2\nqueue_timeout = \"60s\"");
        let proxy = start_proxy(&config).await;
        let url = format!("http://{}/", proxy.addrs()[0]);
        let requests: Vec<_> = (0..40)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move { get(&client, &url).await })
            })
            .collect();
        for r in requests {
            assert_eq!(r.await.unwrap(), (200, "up\n".to_string()));
        }
        assert_eq!(up.hits(), 40);
        assert!(
            up.peak_in_flight() <= 2,
            "the upstream had {} requests at once",
            up.peak_in_flight()
        );
        let admin = proxy.admin_url("");
        let admin = admin.trim_end_matches('/');
        let queued = format!("cutover_queued_total{{pool=\"{pool}\"}}");
        assert!(gauge(admin, &queued).await > 0.0, "{queued}");
        let waiting = format!("cutover_queue_waiting{{pool=\"{pool}\"}}");
        assert_eq!(gauge(admin, &waiting).await, 0.0);
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_and_a_wait_past_the_timeout_are_503_with_retry_after() {
    let up = TestUpstream::start("up").await;
    up.delay(6_000);
    let config = limited_config(
        "full",
        up.addr,
        "max_in_flight = 1\nmax_queue = 1\nqueue_timeout = \"2s\"",
    );
    let proxy = start_proxy(&config).await;
    let admin = proxy.admin_url("");
    let admin = admin.trim_end_matches('/').to_string();
    let url = format!("http://{}/", proxy.addrs()[0]);
    let client = http1_client();
    let send = |client: HttpClient, url: String| {
        tokio::spawn(async move {
            let response = client.get(url.parse().unwrap()).await.unwrap();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap().to_string());
            (response.status().as_u16(), retry_after)
        })
    };
    // The first takes the upstream's one place; the second queues; the
    // third finds the queue full.
    let first = send(client.clone(), url.clone());
    wait_until("the upstream has the first request", || async {
        up.in_flight() == 1
    })
    .await;
    let second = send(client.clone(), url.clone());
    wait_until("the second request waits in the queue", || async {
        gauge(&admin, "cutover_queue_waiting{pool=\"full\"}").await == 1.0
    })
    .await;
    // Status and the page show the wait.
    let (_, status) = admin_call("GET", &format!("{admin}/api/v1/status"), None, None).await;
    let pool = status["pools"]
        .as_array()
        .and_then(|pools| pools.iter().find(|p| p["name"] == "full"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(pool["queue"]["waiting"], 1, "{pool}");
    assert_eq!(pool["queue"]["max_in_flight"], 1, "{pool}");
    let (_, page) = admin_call("GET", &format!("{admin}/"), None, None).await;
    assert!(
        page.as_str()
            .unwrap_or("")
            .contains("full: 1 waiting in the queue"),
        "{page}"
    );
    let third = send(client.clone(), url.clone()).await.unwrap();
    assert_eq!(third, (503, Some("1".to_string())), "queue full");
    let second = second.await.unwrap();
    assert_eq!(second, (503, Some("1".to_string())), "queue timeout");
    assert_eq!(first.await.unwrap().0, 200);
    for reason in ["full", "timeout"] {
        let name = format!("cutover_queue_rejected_total{{pool=\"full\",reason=\"{reason}\"}}");
        assert_eq!(gauge(&admin, &name).await, 1.0, "{name}");
    }
    // Not the upstream's fault: nothing counted against it.
    assert_eq!(up.hits(), 1);
    proxy.stop().await;
}

/// Bad limits are config errors naming the key, with the file position.
#[test]
fn bad_limits_are_config_errors_naming_the_key() {
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (limits, expected) in [
        (
            "max_in_flight = 0",
            "pool.p.max_in_flight: must be an integer from 1",
        ),
        (
            "max_in_flight = 4\nmax_queue = -1",
            "pool.p.max_queue: must be an integer from 0",
        ),
        (
            "max_in_flight = 4\nqueue_timeout = \"0s\"",
            "pool.p.queue_timeout: must be longer than zero",
        ),
        (
            "max_queue = 10",
            "pool.p.max_in_flight: max_queue and queue_timeout need max_in_flight",
        ),
    ] {
        let out = check_config(&limited_config("p", up, limits), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{limits}: {stderr}");
        assert!(stderr.contains(expected), "{limits}: {stderr}");
        assert!(stderr.contains("cutover.toml:"), "FILE:LINE:COL: {stderr}");
    }
}

/// An upstream's own `max_in_flight` in the upstreams list overrides the
/// pool's; one without either (the pool has none) is not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstreams_own_max_in_flight_overrides_the_pools() {
    let (big, small) = (
        TestUpstream::start("big").await,
        TestUpstream::start("small").await,
    );
    let config = format!(
        "[[route]]\nname = \"app\"\nsplit = {{ own = 1 }}\n[pool.own]\nupstreams = [{{ addr = \"{}\", max_in_flight = 3 }}, {{ addr = \"{}\" }}]\nmax_in_flight = 1\nqueue_timeout = \"60s\"\n",
        big.addr, small.addr
    );
    let proxy = start_proxy(&config).await;
    for up in [&big, &small] {
        up.delay(100);
    }
    let url = format!("http://{}/", proxy.addrs()[0]);
    let client = http1_client();
    let requests: Vec<_> = (0..24)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { get(&client, &url).await.0 })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    assert_eq!(big.hits() + small.hits(), 24);
    assert!(
        small.peak_in_flight() <= 1,
        "small had {}",
        small.peak_in_flight()
    );
    assert!(
        (2..=3).contains(&big.peak_in_flight()),
        "big had {} at once (its own limit is 3, the pool's 1)",
        big.peak_in_flight()
    );
    let (_, status) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
    let pool = &status["pools"][0];
    assert_eq!(pool["upstreams"][0]["max_in_flight"], 3, "{pool}");
    assert_eq!(pool["upstreams"][1]["max_in_flight"], 1, "{pool}");
    proxy.stop().await;

    // Only an upstream's own limit: the pool queues for it alone.
    let config = format!(
        "[[route]]\nname = \"app\"\nsplit = {{ only = 1 }}\n[pool.only]\nupstreams = [{{ addr = \"{}\", max_in_flight = 1 }}]\nmax_queue = 50\n",
        small.addr
    );
    let proxy = start_proxy(&config).await;
    let (_, status) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
    let pool = &status["pools"][0];
    assert_eq!(
        pool["queue"]["max_in_flight"],
        serde_json::Value::Null,
        "{pool}"
    );
    assert_eq!(pool["queue"]["max_queue"], 50, "{pool}");
    assert_eq!(pool["upstreams"][0]["max_in_flight"], 1, "{pool}");
    proxy.stop().await;
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// `batch` clients that each send a request that queues, then leave;
/// their places are let go at once (`queue_timeout` is 10 minutes).
/// `queued`: the requests queued so far, this batch's included.
async fn queue_and_abandon(addr: std::net::SocketAddr, admin: &str, batch: usize, queued: usize) {
    use tokio::io::AsyncWriteExt;
    let mut clients = Vec::with_capacity(batch);
    for _ in 0..batch {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
            .await
            .unwrap();
        clients.push(c);
    }
    wait_until("every client queues", || async {
        gauge(admin, "cutover_queued_total{pool=\"p\"}").await == queued as f64
    })
    .await;
    drop(clients);
    wait_until("every abandoned place is let go", || async {
        gauge(admin, "cutover_queue_waiting{pool=\"p\"}").await == 0.0
    })
    .await;
}

/// A flood of requests that queue and are abandoned by their clients
/// costs places, never memory: 10,000 of them leave the proxy's resident
/// memory where a first 1,000 left it, and each place is let go as its
/// client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_queued_and_abandoned_requests_leave_memory_where_it_was() {
    let up = TestUpstream::start("up").await;
    up.delay(600_000);
    let config = limited_config(
        "p",
        up.addr,
        "max_in_flight = 1\nmax_queue = 20000\nqueue_timeout = \"10m\"",
    );
    // The holder below must not time out and give its place to a queued one.
    let config = format!("[proxy]\nresponse_header_timeout = \"10m\"\n{config}");
    let process = crate::process::Process::start(&config);
    let admin = format!("http://{}", crate::process::admin_addr_of(&process));
    // One request holds the upstream's only place for the whole test.
    let mut holder = tokio::net::TcpStream::connect(process.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut holder, b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    wait_until("the upstream holds one request", || async {
        up.in_flight() == 1
    })
    .await;
    queue_and_abandon(process.addr, &admin, 1000, 1000).await;
    let before = rss_kib(process.child.id());
    for batch in 2..=11 {
        queue_and_abandon(process.addr, &admin, 1000, batch * 1000).await;
    }
    let after = rss_kib(process.child.id());
    eprintln!("resident memory: {before} KiB after 1,000 abandoned, {after} KiB after 11,000");
    let queued = gauge(&admin, "cutover_queued_total{pool=\"p\"}").await;
    assert_eq!(queued, 11_000.0);
    let left = gauge(
        &admin,
        "cutover_queue_rejected_total{pool=\"p\",reason=\"left\"}",
    )
    .await;
    assert_eq!(left, 11_000.0);
    // A leak of 800 bytes per abandoned request would show as 8 MiB.
    assert!(
        after < before + 8 * 1024,
        "resident memory grew from {before} KiB to {after} KiB over 10,000 abandoned requests"
    );
    drop(holder);
}

/// The state a rollout onto a cold green pool — 2 requests at once, 503
/// beyond, as a fresh instance with a small worker pool — ends in, under
/// 10 clients, with `green_limits` on the green pool; and how many
/// answers the clients saw that were not 200.
async fn rollout_onto_a_cold_pool(pool: &str, green_limits: &str) -> (String, usize) {
    let (blue, green) = (
        TestUpstream::start("blue").await,
        TestUpstream::start("green").await,
    );
    for up in [&blue, &green] {
        up.delay(20);
    }
    green.capacity(2);
    let config = format!(
        "[[route]]\nname = \"app\"\nsplit = {{ blue_{pool} = 100, {pool} = 0 }}\n[pool.blue_{pool}]\nupstreams = [{{ addr = \"{}\" }}]\n[pool.{pool}]\nupstreams = [{{ addr = \"{}\" }}]\noutlier = {{ consecutive_failures = 0 }}\n{green_limits}\n",
        blue.addr, green.addr
    );
    let proxy = start_proxy(&config).await;
    let url = format!("http://{}/", proxy.addrs()[0]);
    let clients = load(url, 10);
    let (s, v) = admin_call(
        "POST",
        &proxy.admin_url("/api/v1/routes/app/rollout"),
        Some(
            serde_json::json!({"to": pool, "steps": [50, 100], "interval": "3s",
            "analysis": {"check_every": "300ms", "min_requests": 30, "failure_limit": 1,
                         "latency_quantile": "p50"}}),
        ),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let rollout = wait_state_of(&proxy, &["rolled_back", "promoted"]).await;
    let (_, not_ok) = clients.finish().await;
    proxy.stop().await;
    eprintln!("{pool}: {rollout:#}");
    (rollout["state"].as_str().unwrap_or("").to_string(), not_ok)
}

/// Without a limit the cold pool's 503s roll the rollout back; with
/// `max_in_flight` the requests beyond its capacity wait in the queue,
/// clients see no error, and the rollout is promoted: a queue wait is
/// neither an error nor the canary's latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_through_a_cold_start_is_promoted_with_a_queue_and_rolled_back_without() {
    let (state, not_ok) = rollout_onto_a_cold_pool("cold_open", "").await;
    assert_eq!(state, "rolled_back");
    assert!(not_ok > 0, "the cold pool's 503s reached the clients");
    let (state, not_ok) = rollout_onto_a_cold_pool("cold_queued", "max_in_flight = 2").await;
    assert_eq!(state, "promoted");
    assert_eq!(not_ok, 0, "clients saw {not_ok} failures through the queue");
}

/// An HTTP/1.1 client that sends its next request while the first waits
/// in the queue is not taken for one that left: both are answered, in
/// order, on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_pipelined_behind_a_queued_one_is_answered_after_it() {
    use tokio::io::AsyncWriteExt;
    let up = TestUpstream::start("up").await;
    up.delay(300);
    let config = limited_config(
        "piped",
        up.addr,
        "max_in_flight = 1\nqueue_timeout = \"60s\"",
    );
    let proxy = start_proxy(&config).await;
    let admin = proxy.admin_url("");
    let admin = admin.trim_end_matches('/').to_string();
    let addr = proxy.addrs()[0];
    let mut holder = tokio::net::TcpStream::connect(addr).await.unwrap();
    holder
        .write_all(b"GET /holder HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    wait_until("the holder is at the upstream", || async {
        up.in_flight() == 1
    })
    .await;
    let mut piped = tokio::net::TcpStream::connect(addr).await.unwrap();
    piped
        .write_all(b"GET /first HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    wait_until("the first request queues", || async {
        gauge(&admin, "cutover_queue_waiting{pool=\"piped\"}").await == 1.0
    })
    .await;
    piped
        .write_all(b"GET /second HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answers = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut piped, &mut answers)
        .await
        .unwrap();
    let answers = String::from_utf8_lossy(&answers);
    assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 2, "{answers}");
    assert_eq!(up.hits(), 3);
    let left = "cutover_queue_rejected_total{pool=\"piped\",reason=\"left\"}";
    assert_eq!(gauge(&admin, left).await, 0.0);
    drop(holder);
    proxy.stop().await;
}
