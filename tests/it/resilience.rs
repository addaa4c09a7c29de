//! Health checks, outlier ejection, drains and sticky sessions, each under
//! concurrent load with every response counted.

use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;

use crate::support::*;

async fn upstream_state(
    proxy: &TestProxy,
    pool: &str,
    addr: std::net::SocketAddr,
) -> serde_json::Value {
    let (_, status) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
    status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == pool)
        .and_then(|p| {
            p["upstreams"]
                .as_array()
                .unwrap()
                .iter()
                .find(|u| u["addr"] == addr.to_string())
                .cloned()
        })
        .unwrap_or(json!(null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_upstream_is_ejected_without_failed_gets_and_returns() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let outlier =
        "outlier = { consecutive_failures = 3, base_ejection = \"200ms\", max_ejection = \"1s\" }";
    let config = format!(
        "[[route]]\nname = \"app\"\nsplit = {{ p = 1 }}\n[pool.p]\n{outlier}\nupstreams = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n",
        a.addr, b.addr
    );
    let proxy = start_proxy(&config).await;
    let run = load(format!("http://{}/", proxy.addrs()[0]), 8);
    wait_until("both upstreams serve", || async {
        a.hits() > 100 && b.hits() > 100
    })
    .await;

    a.kill();
    let table = proxy.routing().load();
    let a_state = table.upstream("p", a.addr).unwrap().clone();
    wait_until("the dead upstream is ejected", || async {
        a_state.is_ejected()
    })
    .await;
    let b_before = b.hits();
    wait_until("traffic continues on b", || async {
        b.hits() > b_before + 500
    })
    .await;

    // Restarted on the same port, it takes traffic again after the ejection.
    let listener = TcpListener::bind(a.addr)
        .await
        .expect("rebind the same port");
    let a2 = TestUpstream::serve("a", listener);
    wait_until("the restarted upstream serves again", || async {
        a2.hits() > 50
    })
    .await;

    let (sent, failed) = run.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_canary_pool_sends_its_share_back_without_failed_gets() {
    let blue = TestUpstream::start("blue").await;
    let g1 = TestUpstream::start("green1").await;
    let g2 = TestUpstream::start("green2").await;
    let config = format!(
        "[[route]]\nname = \"app\"\nsplit = {{ blue = 50, green = 50 }}\n[pool.blue]\nupstreams = [{{ addr = \"{}\" }}]\n\
         [pool.green]\noutlier = {{ consecutive_failures = 2, base_ejection = \"5s\", max_ejected_percent = 100 }}\nupstreams = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n",
        blue.addr, g1.addr, g2.addr
    );
    let proxy = start_proxy(&config).await;
    let run = load(format!("http://{}/", proxy.addrs()[0]), 8);
    wait_until("green serves", || async { g1.hits() + g2.hits() > 200 }).await;
    g1.kill();
    g2.kill();
    let blue_before = blue.hits();
    wait_until("blue takes all the traffic", || async {
        blue.hits() > blue_before + 1000
    })
    .await;
    let (sent, failed) = run.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    assert_eq!(
        upstream_state(&proxy, "green", g1.addr).await["state"],
        "unhealthy"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_slow_requests_finish_and_takes_no_new_ones() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[a.addr, b.addr])], "")).await;
    let base = proxy.addrs()[0];
    // Slow requests until some are in flight on a; long enough that a
    // loaded machine still sees them in flight.
    let slow: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(async move {
                get(&http1_client(), &format!("http://{base}/slow?ms=3000")).await
            })
        })
        .collect();
    wait_until("slow requests in flight on a", || async {
        a.in_flight() >= 1
    })
    .await;

    let url = proxy.admin_url(&format!("/api/v1/pools/p/upstreams/{}/drain", a.addr));
    let (s, v) = admin_call("POST", &url, Some(json!({"timeout": "30s"})), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "draining");
    assert!(v["in_flight"].as_u64().unwrap() >= 1, "{v}");
    let hits_at_drain = a.hits();

    let run = load(format!("http://{base}/"), 8);
    for s in slow {
        assert_eq!(s.await.unwrap().0, 200);
    }
    wait_until("a is drained", || async {
        upstream_state(&proxy, "p", a.addr).await["state"] == "drained"
    })
    .await;
    let b_before = b.hits();
    wait_until("load runs on b", || async { b.hits() > b_before + 300 }).await;
    let (sent, failed) = run.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} failed");
    assert_eq!(
        a.hits(),
        hits_at_drain,
        "a new request reached the draining upstream"
    );
    assert_eq!(upstream_state(&proxy, "p", a.addr).await["in_flight"], 0);
    proxy.stop().await;
}

/// The cookie from a response, as `name=value`.
fn cookie_of(resp: &http::Response<hyper::body::Incoming>) -> Option<String> {
    resp.headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

async fn get_with_cookie(
    client: &HttpClient,
    url: &str,
    cookie: Option<&str>,
) -> (String, Option<String>) {
    let mut req = http::Request::get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("other=1; {c}"));
    }
    let resp = client
        .request(req.body(Default::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let set = cookie_of(&resp);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (String::from_utf8_lossy(&body).into_owned(), set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_clients_stay_until_the_drain_deadline() {
    let b1 = TestUpstream::start("blue1").await;
    let b2 = TestUpstream::start("blue2").await;
    let green = TestUpstream::start("green").await;
    let config = format!(
        "[[route]]\nname = \"app\"\nsplit = {{ blue = 100, green = 0 }}\nsticky = {{ cookie = \"cutover_app\", max_age = \"1h\" }}\n\
         [pool.blue]\nupstreams = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n[pool.green]\nupstreams = [{{ addr = \"{}\" }}]\n",
        b1.addr, b2.addr, green.addr
    );
    let proxy = start_proxy(&config).await;
    let url = format!("http://{}/", proxy.addrs()[0]);
    let client = http1_client();

    let (first, set) = get_with_cookie(&client, &url, None).await;
    let cookie = set.expect("a new client gets a sticky cookie");
    assert!(cookie.starts_with("cutover_app="), "{cookie}");
    for _ in 0..1000 {
        let (body, set) = get_with_cookie(&client, &url, Some(&cookie)).await;
        assert_eq!(body, first);
        assert!(set.is_none(), "a valid cookie is not replaced");
    }

    // Cut over: new sessions go to green, the sticky one stays on blue.
    let split = proxy.admin_url("/api/v1/routes/app/split");
    assert_eq!(
        admin_call("PUT", &split, Some(json!({"blue": 0, "green": 100})), None)
            .await
            .0,
        200
    );
    assert_eq!(get_with_cookie(&client, &url, None).await.0, "green\n");
    for _ in 0..100 {
        assert_eq!(get_with_cookie(&client, &url, Some(&cookie)).await.0, first);
    }

    // Drain the pinned upstream with a deadline: the client stays until it…
    let pinned = if first == "blue1\n" { b1.addr } else { b2.addr };
    let drain = proxy.admin_url(&format!("/api/v1/pools/blue/upstreams/{pinned}/drain"));
    assert_eq!(
        admin_call("POST", &drain, Some(json!({"timeout": "1500ms"})), None)
            .await
            .0,
        200
    );
    assert_eq!(get_with_cookie(&client, &url, Some(&cookie)).await.0, first);
    assert_eq!(
        upstream_state(&proxy, "blue", pinned).await["state"],
        "draining"
    );
    // …and moves at the deadline, with a fresh cookie, no error.
    let start = tokio::time::Instant::now();
    let moved = loop {
        let (body, set) = get_with_cookie(&client, &url, Some(&cookie)).await;
        if body == "green\n" {
            break set;
        }
        assert_eq!(body, first, "the sticky client left before the deadline");
        assert!(start.elapsed() < DEADLINE, "the sticky client never moved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(moved.is_some(), "re-pinned with a fresh cookie");
    wait_until("drained after the deadline", || async {
        upstream_state(&proxy, "blue", pinned).await["state"] == "drained"
    })
    .await;

    // Forged and garbage cookies are re-pinned without an error.
    for bad in [
        "cutover_app=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "cutover_app=%%%",
        "cutover_app=",
    ] {
        let (body, set) = get_with_cookie(&client, &url, Some(bad)).await;
        assert_eq!(body, "green\n");
        assert!(set.is_some(), "{bad}: re-pinned");
    }
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_health_checks_take_an_upstream_out_and_back() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let config = format!(
        "[[route]]\nname = \"app\"\nsplit = {{ p = 1 }}\n[pool.p]\nhealth = {{ path = \"/healthz\", interval = \"50ms\", timeout = \"40ms\", rise = 2, fall = 2 }}\n\
         upstreams = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\n",
        a.addr, b.addr
    );
    let proxy = start_proxy(&config).await;
    // Listeners open only after the first verdicts: both are healthy now.
    assert_eq!(
        upstream_state(&proxy, "p", a.addr).await["health"],
        "healthy"
    );
    let run = load(format!("http://{}/", proxy.addrs()[0]), 4);
    a.set_health_status(503);
    wait_until("a marked unhealthy", || async {
        upstream_state(&proxy, "p", a.addr).await["state"] == "unhealthy"
    })
    .await;
    let a_hits = a.hits();
    let b_before = b.hits();
    wait_until("traffic on b", || async { b.hits() > b_before + 300 }).await;
    // Only health probes reach a now (a few, at 50 ms intervals).
    assert!(
        a.hits() - a_hits < 100,
        "a still gets traffic: {}",
        a.hits() - a_hits
    );
    a.set_health_status(0);
    wait_until("a healthy again", || async {
        upstream_state(&proxy, "p", a.addr).await["state"] == "healthy"
    })
    .await;
    let a_back = a.hits();
    wait_until("a takes traffic again", || async {
        a.hits() > a_back + 200
    })
    .await;
    let (sent, failed) = run.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} failed");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_drains_then_removes() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[a.addr, b.addr])], "")).await;
    let base = proxy.addrs()[0];
    // 24, not 8: with 8, all of them went to b one run in 256.
    let slow: Vec<_> = (0..24)
        .map(|_| {
            tokio::spawn(async move {
                get(&http1_client(), &format!("http://{base}/slow?ms=2500")).await
            })
        })
        .collect();
    wait_until("slow requests on a", || async { a.in_flight() >= 1 }).await;
    let url = proxy.admin_url(&format!("/api/v1/pools/p/upstreams/{}", a.addr));
    let (s, v) = admin_call("DELETE", &url, None, None).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["removing"], true);
    for s in slow {
        assert_eq!(s.await.unwrap().0, 200, "an in-flight request was cut");
    }
    wait_until("a removed once drained", || async {
        upstream_state(&proxy, "p", a.addr).await.is_null()
    })
    .await;
    assert_eq!(
        get(&http1_client(), &format!("http://{base}/")).await.1,
        "b\n"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_idle_pooled_connections() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[a.addr, b.addr])], "")).await;
    let client = http1_client();
    while a.hits() < 3 {
        assert_eq!(
            get(&client, &format!("http://{}/", proxy.addrs()[0]))
                .await
                .0,
            200
        );
    }
    assert!(a.open_connections() >= 1);
    let url = proxy.admin_url(&format!("/api/v1/pools/p/upstreams/{}/drain", a.addr));
    assert_eq!(admin_call("POST", &url, None, None).await.0, 200);
    wait_until("idle connections to the drained upstream close", || async {
        a.open_connections() == 0
    })
    .await;
    proxy.stop().await;
}
