//! A route's `rate_limit`: a token bucket per client address (or header
//! value, or the route); beyond it, 429 with `Retry-After`, on both
//! fronts, counted per route; other keys and routes unaffected.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::support::*;

/// Route `route` (distinct per test: metrics are the process's) with
/// `limit`, and a route `free` without one.
fn limited(route: &str, up: std::net::SocketAddr, limit: &str) -> String {
    format!(
        "[[route]]\nname = \"{route}\"\npath_prefix = \"/limited\"\nsplit = {{ p = 1 }}\nrate_limit = {limit}\n[[route]]\nname = \"free_{route}\"\nsplit = {{ p = 1 }}\n[pool.p]\nupstreams = [{{ addr = \"{up}\" }}]\n"
    )
}

/// Status and `Retry-After` of a GET with `headers`.
async fn send(client: &HttpClient, url: &str, headers: &[(&str, &str)]) -> (u16, Option<u64>) {
    let mut request = http::Request::get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    response.into_body().collect().await.unwrap();
    (status, retry_after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_with_retry_after_on_both_fronts() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&limited(
        "by_ip",
        up.addr,
        "{ requests = 5, per = \"1m\", by = \"client_ip\" }",
    ))
    .await;
    let base = format!("http://{}", proxy.addrs()[0]);
    let url = format!("{base}/limited");
    let h1 = http1_client();
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(send(&h1, &url, &[]).await);
    }
    // The burst (requests, by default) passes; then one token per 12 s.
    assert_eq!(&answers[..5], &[(200, None); 5], "{answers:?}");
    for (status, retry_after) in &answers[5..] {
        assert_eq!(*status, 429, "{answers:?}");
        assert!(matches!(retry_after, Some(1..=12)), "{answers:?}");
    }
    // The same client over HTTP/2 (hyper's front) shares the bucket.
    assert_eq!(send(&http2_client(), &url, &[]).await.0, 429);
    // Another route is not limited.
    for _ in 0..10 {
        assert_eq!(send(&h1, &format!("{base}/other"), &[]).await.0, 200);
    }
    assert_eq!(up.hits(), 15);
    let admin = proxy.admin_url("");
    let limited = gauge(
        admin.trim_end_matches('/'),
        "cutover_rate_limited_total{route=\"by_ip\"}",
    )
    .await;
    assert_eq!(limited, 4.0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_by_header_keeps_a_bucket_per_value() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&limited(
        "by_key",
        up.addr,
        "{ requests = 2, per = \"1m\", by = \"header:x-api-key\" }",
    ))
    .await;
    let url = format!("http://{}/limited", proxy.addrs()[0]);
    let client = http1_client();
    let statuses = |key: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut out = Vec::new();
            for _ in 0..3 {
                out.push(send(&client, &url, &[("x-api-key", key)]).await.0);
            }
            out
        }
    };
    assert_eq!(statuses("alice").await, [200, 200, 429]);
    assert_eq!(statuses("bob").await, [200, 200, 429]);
    // Without the header: one shared bucket, not a way around the limit.
    let mut anonymous = Vec::new();
    for _ in 0..3 {
        anonymous.push(send(&client, &url, &[]).await.0);
    }
    assert_eq!(anonymous, [200, 200, 429]);
    proxy.stop().await;
}

#[test]
fn bad_rate_limits_are_config_errors_naming_the_key() {
    let up: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (limit, expected) in [
        (
            "{ requests = 0 }",
            "route[0].rate_limit.requests: must be an integer from 1",
        ),
        (
            "{ per = \"1s\" }",
            "route[0].rate_limit.requests: missing required key",
        ),
        (
            "{ requests = 5, per = \"0s\" }",
            "route[0].rate_limit.per: must be longer than zero",
        ),
        (
            "{ requests = 5, burst = 0 }",
            "route[0].rate_limit.burst: must be an integer from 1",
        ),
        (
            "{ requests = 5, by = \"cookie\" }",
            "route[0].rate_limit.by: unknown key \"cookie\"",
        ),
        (
            "{ requests = 5, by = \"header:bad key\" }",
            "route[0].rate_limit.by: unknown key",
        ),
        (
            "{ requests = 5, rate = 1 }",
            "route[0].rate_limit.rate: unknown key",
        ),
    ] {
        let out = check_config(&limited("r", up, limit), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{limit}: {stderr}");
        assert!(stderr.contains(expected), "{limit}: {stderr}");
        assert!(stderr.contains("cutover.toml:"), "FILE:LINE:COL: {stderr}");
    }
}
