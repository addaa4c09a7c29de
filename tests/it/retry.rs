//! A route's `retry`: failed answers and resets go to another upstream
//! within `attempts`, never the one that failed, only for requests that
//! may be sent twice; the budget caps retries at a share of the requests;
//! and a rollout judges the first attempt, so a retry cannot hide a bad
//! canary.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;

use crate::support::*;

/// One route `route` over pool `pool` (distinct names per test: metrics
/// are the test process's, shared) with `retry`. Outlier ejection is off:
/// a failing upstream keeps its share.
fn retry_config(route: &str, pool: &[std::net::SocketAddr], retry: &str) -> String {
    let ups: Vec<String> = pool
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "[[route]]\nname = \"{route}\"\nsplit = {{ p = 1 }}\nretry = {retry}\n[pool.p]\nupstreams = [{}]\noutlier = {{ consecutive_failures = 0 }}\n",
        ups.join(", ")
    )
}

async fn counter(proxy: &TestProxy, name: &str) -> f64 {
    let admin = proxy.admin_url("");
    gauge(admin.trim_end_matches('/'), name).await
}

async fn post(client: &HttpClient, url: &str) -> u16 {
    let request = http::Request::post(url)
        .body(Full::new(Bytes::from_static(b"order=1")))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

/// Half the pool answers 500: every GET is answered 200 by the other
/// upstream after one retry, on both fronts; a POST is never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_goes_to_another_upstream_and_a_post_is_never_sent_twice() {
    let (bad, good) = (
        TestUpstream::start("bad").await,
        TestUpstream::start("good").await,
    );
    bad.fail_every(1);
    let config = retry_config(
        "r5xx",
        &[bad.addr, good.addr],
        "{ on = [\"5xx\"], attempts = 2, budget = 1.0 }",
    );
    let proxy = start_proxy(&config).await;
    let url = format!("http://{}/", proxy.addrs()[0]);
    for client in [http1_client(), http2_client()] {
        for _ in 0..40 {
            assert_eq!(get(&client, &url).await, (200, "good\n".to_string()));
        }
    }
    let retried = counter(
        &proxy,
        "cutover_retries_total{route=\"r5xx\",reason=\"5xx\"}",
    )
    .await;
    assert!(
        retried > 0.0 && retried as usize == bad.hits(),
        "{retried} retries, bad had {}",
        bad.hits()
    );
    // A POST with a body goes out once: the bad upstream's 500 is the answer.
    let bad_before = bad.hits();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(post(&http1_client(), &url).await);
    }
    let failed = statuses.iter().filter(|s| **s == 500).count();
    assert_eq!(failed, bad.hits() - bad_before, "{statuses:?}");
    assert!(
        failed > 0,
        "20 POSTs all went to the good upstream: {statuses:?}"
    );
    proxy.stop().await;
}

/// Every upstream fails: retries stay within the budget's share of the
/// requests (plus the floor of 10 per window), so the pool does not get
/// `attempts` times its load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_retries_when_the_whole_pool_fails() {
    let ups = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    ];
    for u in &ups {
        u.fail_every(1);
    }
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let retry = "{ on = [\"5xx\"], attempts = 3, budget = 0.2 }";
    let proxy = start_proxy(&retry_config("rbudget", &addrs, retry)).await;
    let url = format!("http://{}/", proxy.addrs()[0]);
    let client = http1_client();
    for _ in 0..200 {
        assert_eq!(get(&client, &url).await.0, 500);
    }
    let sent: usize = ups.iter().map(|u| u.hits()).sum();
    // 200 requests in well under 10 s: at most 20 % of them + 10.
    assert!(sent <= 200 + 50, "the pool got {sent} requests for 200");
    let exhausted = counter(
        &proxy,
        "cutover_retry_budget_exhausted_total{route=\"rbudget\"}",
    )
    .await;
    assert!(exhausted > 0.0, "the budget never ran out ({sent} sent)");
    let retried = counter(
        &proxy,
        "cutover_retries_total{route=\"rbudget\",reason=\"5xx\"}",
    )
    .await;
    assert_eq!(retried as usize, sent - 200);
    proxy.stop().await;
}

/// A try that outlives `per_try_timeout` is abandoned for another
/// upstream (`reset`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_try_past_per_try_timeout_goes_to_another_upstream() {
    let (stuck, good) = (
        TestUpstream::start("stuck").await,
        TestUpstream::start("good").await,
    );
    stuck.delay(20_000);
    let retry = "{ on = [\"reset\"], attempts = 2, per_try_timeout = \"300ms\" }";
    let proxy = start_proxy(&retry_config("rtimeout", &[stuck.addr, good.addr], retry)).await;
    let url = format!("http://{}/", proxy.addrs()[0]);
    let client = http1_client();
    let mut n = 0;
    // Until one first try landed on the stuck upstream (p2c: when idle,
    // either).
    while stuck.hits() == 0 {
        assert_eq!(get(&client, &url).await, (200, "good\n".to_string()));
        n += 1;
        assert!(n < 200, "200 requests never tried the stuck upstream");
    }
    let retried = counter(
        &proxy,
        "cutover_retries_total{route=\"rtimeout\",reason=\"reset\"}",
    )
    .await;
    assert_eq!(retried, 1.0);
    proxy.stop().await;
}

/// Bad policies are config errors naming the key, with the file position.
#[test]
fn bad_retry_policies_are_config_errors_naming_the_key() {
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (retry, expected) in [
        (
            "{ on = [\"timeout\"] }",
            "route[0].retry.on[0]: unknown retry condition \"timeout\"",
        ),
        ("{ on = [] }", "route[0].retry.on: name at least one of"),
        (
            "{ attempts = 0 }",
            "route[0].retry.attempts: must be an integer from 1",
        ),
        (
            "{ budget = 0 }",
            "route[0].retry.budget: must be a number above 0 and at most 1",
        ),
        (
            "{ budget = -0.5 }",
            "route[0].retry.budget: must be a number above 0",
        ),
        (
            "{ per_try_timeout = \"0s\" }",
            "route[0].retry.per_try_timeout: must be longer than zero",
        ),
        (
            "{ per_try_timeout = \"40s\" }",
            "route[0].retry.per_try_timeout: must not be longer than [proxy] response_header_timeout (30s)",
        ),
        ("{ tries = 2 }", "route[0].retry.tries: unknown key"),
    ] {
        let out = check_config(&retry_config("r", &[up], retry), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{retry}: {stderr}");
        assert!(stderr.contains(expected), "{retry}: {stderr}");
        assert!(stderr.contains("cutover.toml:"), "FILE:LINE:COL: {stderr}");
    }
}

/// A canary answering 500 to half its requests, on a route that retries
/// 5xx: clients see no 500 — every failed try goes to blue — and the
/// rollout, judging first attempts, rolls back all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_does_not_hide_a_bad_canary_from_the_rollout() {
    let (blue, green) = (
        TestUpstream::start("blue").await,
        TestUpstream::start("green").await,
    );
    green.fail_every(2);
    let config = format!(
        "[[route]]\nname = \"app\"\nsplit = {{ blue = 100, green = 0 }}\nretry = {{ on = [\"5xx\"], attempts = 2, budget = 1.0 }}\n[pool.blue]\nupstreams = [{{ addr = \"{}\" }}]\n[pool.green]\nupstreams = [{{ addr = \"{}\" }}]\n",
        blue.addr, green.addr
    );
    let proxy = start_proxy(&config).await;
    let url = format!("http://{}/", proxy.addrs()[0]);
    let clients = load(url, 4);
    let (s, v) = admin_call(
        "POST",
        &proxy.admin_url("/api/v1/routes/app/rollout"),
        Some(json!({"to": "green", "steps": [30, 100], "interval": "30s",
                    "analysis": {"check_every": "300ms", "min_requests": 30, "failure_limit": 1}})),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let rollout = wait_state_of(&proxy, &["rolled_back", "promoted"]).await;
    let (sent, not_ok) = clients.finish().await;
    assert_eq!(rollout["state"], "rolled_back", "{rollout:#}");
    assert!(
        rollout["reason"]
            .as_str()
            .unwrap_or("")
            .contains("error rate"),
        "{rollout:#}"
    );
    assert_eq!(not_ok, 0, "clients saw {not_ok} failures of {sent}");
    assert!(green.hits() > 0);
    proxy.stop().await;
}
