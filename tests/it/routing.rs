//! Host and path routing, and weighted splits across pools.

use crate::support::*;

#[tokio::test]
async fn host_and_path_pick_the_route() {
    let web = TestUpstream::start("web").await;
    let api = TestUpstream::start("api").await;
    let admin = TestUpstream::start("admin").await;
    let config = format!(
        r#"
[[route]]
name = "web"
split = {{ web = 1 }}
[[route]]
name = "api"
path_prefix = "/api"
split = {{ api = 1 }}
[[route]]
name = "admin"
hosts = ["admin.test"]
split = {{ admin = 1 }}
[pool.web]
upstreams = [{{ addr = "{}" }}]
[pool.api]
upstreams = [{{ addr = "{}" }}]
[pool.admin]
upstreams = [{{ addr = "{}" }}]
"#,
        web.addr, api.addr, admin.addr
    );
    let proxy = start_proxy(&config).await;
    let base = proxy.addrs()[0];
    let client = http1_client();
    assert_eq!(
        get(&client, &format!("http://{base}/")).await,
        (200, "web\n".into())
    );
    assert_eq!(
        get(&client, &format!("http://{base}/api/users")).await,
        (200, "api\n".into())
    );
    // Host header decides; the route with hosts wins over the catch-all.
    let req = http::Request::get(format!("http://{base}/page"))
        .header("host", "Admin.Test:8080")
        .body(Default::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(admin.hits(), 1);
    // Longer prefix wins even for a named host.
    let req = http::Request::get(format!("http://{base}/api/x"))
        .header("host", "admin.test")
        .body(Default::default())
        .unwrap();
    client.request(req).await.unwrap();
    assert_eq!(api.hits(), 2);
    proxy.stop().await;
}

/// Sends `n` requests and returns how many each upstream answered.
async fn spread(base: std::net::SocketAddr, n: usize, ups: &[&TestUpstream]) -> Vec<usize> {
    let client = http1_client();
    for _ in 0..n {
        let (status, _) = get(&client, &format!("http://{base}/")).await;
        assert_eq!(status, 200);
    }
    ups.iter().map(|u| u.hits()).collect()
}

#[tokio::test]
async fn splits_follow_weights() {
    for (blue_w, green_w) in [(100u32, 0u32), (0, 100), (70, 30)] {
        let blue = TestUpstream::start("blue").await;
        let green = TestUpstream::start("green").await;
        let config = split_config(
            &[
                ("blue", blue_w, &[blue.addr]),
                ("green", green_w, &[green.addr]),
            ],
            "",
        );
        let proxy = start_proxy(&config).await;
        let n = 2000;
        let hits = spread(proxy.addrs()[0], n, &[&blue, &green]).await;
        let blue_share = hits[0] as f64 / n as f64;
        let want = f64::from(blue_w) / 100.0;
        // Binomial sd at 70/30 over 2000 is 1 point; 5 points is 5 sd.
        assert!(
            (blue_share - want).abs() <= 0.05,
            "split {blue_w}/{green_w}: blue got {blue_share:.3}, want {want:.2}"
        );
        if blue_w == 0 || green_w == 0 {
            assert!(
                hits.contains(&0),
                "a zero-weight pool got traffic: {hits:?}"
            );
        }
        proxy.stop().await;
    }
}

#[tokio::test]
async fn upstream_weights_within_a_pool() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let config = format!(
        "[[route]]\nname = \"app\"\nsplit = {{ p = 1 }}\n[pool.p]\nupstreams = [{{ addr = \"{}\", weight = 3 }}, {{ addr = \"{}\", weight = 1 }}]\n",
        a.addr, b.addr
    );
    let proxy = start_proxy(&config).await;
    let hits = spread(proxy.addrs()[0], 2000, &[&a, &b]).await;
    let share = hits[0] as f64 / 2000.0;
    assert!((share - 0.75).abs() <= 0.05, "weight 3:1 gave {hits:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn request_headers_are_rewritten() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let base = proxy.addrs()[0];
    let client = http1_client();
    let req = http::Request::get(format!("http://{base}/headers"))
        .header("host", "app.test")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "192.0.2.7")
        .header("x-app", "kept")
        .body(Default::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.headers()["via"], "1.1 cutover");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let seen = String::from_utf8_lossy(&body);
    assert!(seen.contains("host: app.test\n"), "{seen}");
    assert!(seen.contains("x-app: kept\n"), "{seen}");
    assert!(
        seen.contains("x-forwarded-for: 192.0.2.7, 127.0.0.1\n"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("x-forwarded-host: app.test\n"), "{seen}");
    assert!(seen.contains("via: 1.1 cutover\n"), "{seen}");
    assert!(!seen.contains("x-hop"), "{seen}");
    assert!(!seen.contains("keep-alive: timeout"), "{seen}");
    proxy.stop().await;
}

/// Max-Forwards (RFC 9110 §7.6.2): a TRACE or OPTIONS request at zero is
/// answered by cutover itself; above zero it reaches the upstream with the
/// count lowered. Other methods pass untouched.
#[tokio::test]
async fn max_forwards_is_honoured_for_trace_and_options() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let base = proxy.addrs()[0];
    let client = http1_client();
    let send = |method: &str, max_forwards: &str| {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://{base}/headers"))
            .header("host", "app.test")
            .header("max-forwards", max_forwards)
            .header("cookie", "session=secret")
            .body(Default::default())
            .unwrap();
        let client = client.clone();
        async move {
            let resp = client.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            (
                status,
                content_type,
                String::from_utf8_lossy(&body).into_owned(),
            )
        }
    };

    let (status, content_type, body) = send("TRACE", "0").await;
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("message/http"));
    assert!(body.starts_with("TRACE /headers HTTP/1.1\r\n"), "{body}");
    assert!(body.contains("host: app.test\r\n"), "{body}");
    assert!(
        !body.contains("secret"),
        "credentials are not reflected: {body}"
    );
    let (status, _, body) = send("OPTIONS", "0").await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(up.hits(), 0, "neither went past cutover");

    let (status, _, seen) = send("OPTIONS", "5").await;
    assert_eq!(status, 200);
    assert!(seen.contains("max-forwards: 4\n"), "{seen}");
    let (_, _, seen) = send("GET", "0").await;
    assert!(seen.contains("max-forwards: 0\n"), "{seen}");
    assert_eq!(up.hits(), 2);
    proxy.stop().await;
}
