//! The admin API: splits under load, persistence across reloads, errors,
//! auth, metrics.

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_change_under_load_fails_nothing_and_takes_effect() {
    let (blue, green, proxy) = blue_green().await;
    let run = load(format!("http://{}/", proxy.addrs()[0]), 8);
    wait_until("load reaches blue", || async { blue.hits() > 500 }).await;

    let (status, route) = admin_call(
        "PUT",
        &proxy.admin_url("/api/v1/routes/app/split"),
        Some(json!({"blue": 20, "green": 80})),
        None,
    )
    .await;
    assert_eq!(status, 200, "{route}");
    assert_eq!(route["split"], json!({"blue": 20, "green": 80}));
    assert_eq!(route["split_source"], "runtime");

    let (b0, g0) = (blue.hits(), green.hits());
    wait_until("2,000 requests after the change", || async {
        blue.hits() + green.hits() - b0 - g0 >= 2000
    })
    .await;
    let (db, dg) = (blue.hits() - b0, green.hits() - g0);
    let (sent, failed) = run.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} failed");
    let green_share = dg as f64 / (db + dg) as f64;
    // Binomial sd over 2,000 at 80 % is 0.9 points; 5 points is > 5 sd.
    assert!(
        (green_share - 0.8).abs() < 0.05,
        "green share after the change: {green_share:.3}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn bad_calls_get_json_errors() {
    let blue = TestUpstream::start("blue").await;
    let dead = closed_port();
    let proxy = start_proxy(&split_config(
        &[("blue", 1, &[blue.addr]), ("green", 0, &[dead])],
        "",
    ))
    .await;
    let url = |p: &str| proxy.admin_url(p);

    let (s, v) = admin_call(
        "PUT",
        &url("/api/v1/routes/app/split"),
        Some(json!({"blue": "lots"})),
        None,
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("blue: weight must be"),
        "{v}"
    );
    let (s, v) = admin_call(
        "PUT",
        &url("/api/v1/routes/app/split"),
        Some(json!({"blue": 0})),
        None,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = admin_call(
        "PUT",
        &url("/api/v1/routes/nope/split"),
        Some(json!({"blue": 1})),
        None,
    )
    .await;
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (404, "no route named \"nope\"")
    );
    assert_eq!(v["detail"]["code"], "unknown_route", "{v}");
    assert_eq!(v["detail"]["route"], "nope", "{v}");
    let (s, _) = admin_call(
        "PUT",
        &url("/api/v1/routes/app/split"),
        Some(json!({"red": 1})),
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = admin_call(
        "POST",
        &url(&format!("/api/v1/pools/blue/upstreams/{dead}/disable")),
        None,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, v) = admin_call(
        "POST",
        &url("/api/v1/pools/blue/upstreams"),
        Some(json!({"addr": "nowhere"})),
        None,
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("addr: invalid address"),
        "{v}"
    );
    let (s, v) = admin_call(
        "POST",
        &url("/api/v1/pools/blue/upstreams"),
        Some(json!({"addr": "127.0.0.1:1", "wieght": 2})),
        None,
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("wieght: unknown field"),
        "{v}"
    );
    let (s, v) = admin_call(
        "POST",
        &url(&format!("/api/v1/pools/blue/upstreams/{}/drain", blue.addr)),
        Some(json!({"timeout": "soon"})),
        None,
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = admin_call("GET", &url("/api/v1/routes/app/split"), None, None).await;
    assert_eq!(s, 405);
    let (s, _) = admin_call("GET", &url("/api/v1/nothing"), None, None).await;
    assert_eq!(s, 404);

    // Green's only upstream is disabled: sending it traffic is refused…
    let (s, _) = admin_call(
        "POST",
        &url(&format!("/api/v1/pools/green/upstreams/{dead}/disable")),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = admin_call(
        "PUT",
        &url("/api/v1/routes/app/split"),
        Some(json!({"blue": 0, "green": 1})),
        None,
    )
    .await;
    assert_eq!(s, 409, "{v}");
    // …unless forced.
    let (s, _) = admin_call(
        "PUT",
        &url("/api/v1/routes/app/split?force=true"),
        Some(json!({"blue": 0, "green": 1})),
        None,
    )
    .await;
    assert_eq!(s, 200);

    // Every call, refused or not, is in the audit log.
    let audit = std::fs::read_to_string(proxy.state_dir.path().join("audit.log")).unwrap();
    assert!(audit.lines().count() >= 9, "{audit}");
    assert!(
        audit.contains("\"result\":\"refused: pool \\\"green\\\" has no healthy upstream"),
        "{audit}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn token_is_required_when_configured() {
    let blue = TestUpstream::start("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "s3cret\n").unwrap();
    let admin = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n",
        token_path.display()
    );
    let proxy = start_proxy(&split_config(&[("blue", 1, &[blue.addr])], &admin)).await;
    let status = proxy.admin_url("/api/v1/status");
    assert_eq!(admin_call("GET", &status, None, None).await.0, 401);
    assert_eq!(admin_call("GET", &status, None, Some("s3cre")).await.0, 401);
    assert_eq!(
        admin_call("GET", &status, None, Some("s3cret")).await.0,
        200
    );
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(
        admin_call("GET", &proxy.admin_url("/healthz"), None, None)
            .await
            .0,
        200
    );
    assert_eq!(
        admin_call("GET", &proxy.admin_url("/readyz"), None, None)
            .await
            .0,
        200
    );
    let (s, _) = admin_call(
        "PUT",
        &proxy.admin_url("/api/v1/routes/app/split"),
        Some(json!({"blue": 2})),
        Some("s3cret"),
    )
    .await;
    assert_eq!(s, 200);
    let audit = std::fs::read_to_string(proxy.state_dir.path().join("audit.log")).unwrap();
    assert!(
        audit.contains(&format!("\"token\":\"{}\"", token_path.display())),
        "{audit}"
    );
    proxy.stop().await;
}

/// A read token sees status and changes nothing; failed attempts are
/// audited and, past a burst, answered 429 for that peer — even with the
/// right token — until the window ends.
#[tokio::test]
async fn read_tokens_and_the_failure_limit() {
    let blue = TestUpstream::start("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let (operate, read) = (dir.path().join("operate"), dir.path().join("read"));
    std::fs::write(&operate, "operate-secret\n").unwrap();
    std::fs::write(&read, "read-secret\n").unwrap();
    let admin = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"{}\"\nread_token_file = \"{}\"\n",
        operate.display(),
        read.display()
    );
    let proxy = start_proxy(&split_config(&[("blue", 1, &[blue.addr])], &admin)).await;
    let status = proxy.admin_url("/api/v1/status");
    let split = proxy.admin_url("/api/v1/routes/app/split");
    assert_eq!(
        admin_call("GET", &status, None, Some("read-secret"))
            .await
            .0,
        200
    );
    let (s, v) = admin_call("PUT", &split, Some(json!({"blue": 2})), Some("read-secret")).await;
    assert_eq!(s, 403, "{v}");
    let (s, _) = admin_call(
        "PUT",
        &split,
        Some(json!({"blue": 2})),
        Some("operate-secret"),
    )
    .await;
    assert_eq!(s, 200);

    for _ in 0..10 {
        assert_eq!(admin_call("GET", &status, None, Some("guess")).await.0, 401);
    }
    let (s, v) = admin_call("GET", &status, None, Some("operate-secret")).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["detail"]["code"], "too_many_failures", "{v}");
    let audit = std::fs::read_to_string(proxy.state_dir.path().join("audit.log")).unwrap();
    assert_eq!(
        audit.matches("\"action\":\"auth_failed\"").count(),
        10,
        "one line per refused attempt, none past the limit: {audit}"
    );
    assert!(!audit.contains("guess"), "tokens are never logged");
    proxy.stop().await;
}

#[tokio::test]
async fn reload_keeps_runtime_changes_unless_the_file_changed_them() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let file = |b: u32, g: u32| {
        split_config(
            &[("blue", b, &[blue.addr]), ("green", g, &[green.addr])],
            "",
        )
    };
    let (proxy, path) = start_proxy_from_file(&file(100, 0)).await;
    let rewrite = |text: String| {
        std::fs::write(&path, complete_config(&text, proxy.state_dir.path())).unwrap()
    };
    let reload_url = proxy.admin_url("/api/v1/reload");
    let reload = || admin_call("POST", &reload_url, None, None);
    let split = || async {
        let (_, s) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
        (
            s["routes"][0]["split"].clone(),
            s["routes"][0]["split_source"].clone(),
        )
    };
    let client = http1_client();
    let url = format!("http://{}/", proxy.addrs()[0]);

    admin_call(
        "PUT",
        &proxy.admin_url("/api/v1/routes/app/split"),
        Some(json!({"blue": 0, "green": 100})),
        None,
    )
    .await;
    // Same file: the runtime split survives.
    let (s, v) = reload().await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        split().await,
        (json!({"blue": 0, "green": 100}), json!("runtime"))
    );
    assert_eq!(get(&client, &url).await.1, "green\n");

    // A broken file: 400 with every problem, old config keeps serving.
    std::fs::write(&path, "[[listener]]\nbind = \"x\"\n[bogus]\n").unwrap();
    let (s, v) = reload().await;
    assert_eq!(s, 400);
    assert_eq!(v["problems"].as_array().unwrap().len(), 3, "{v}");
    let problems: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("cutover.toml:2:8: listener[0].bind")),
        "{v}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("cutover.toml:3:2: bogus: unknown key")),
        "{v}"
    );
    assert_eq!(get(&client, &url).await.1, "green\n");

    // The file changes this route's split: the file wins, and the drop is audited.
    rewrite(file(50, 50));
    let (s, v) = reload().await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["dropped_runtime_changes"].as_array().unwrap().len(),
        1,
        "{v}"
    );
    assert_eq!(
        split().await,
        (json!({"blue": 50, "green": 50}), json!("file"))
    );
    let audit = std::fs::read_to_string(proxy.state_dir.path().join("audit.log")).unwrap();
    assert!(
        audit.contains("\"action\":\"drop_runtime_change\""),
        "{audit}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn reload_adds_and_removes_listeners_without_touching_others() {
    let up = TestUpstream::start("up").await;
    let extra = free_port();
    let base = split_config(&[("p", 1, &[up.addr])], "");
    let (proxy, path) = start_proxy_from_file(&base).await;
    let first = proxy.addrs()[0];
    // Hold a keep-alive connection on the first listener across the reloads.
    let client = http1_client();
    assert_eq!(get(&client, &format!("http://{first}/")).await.0, 200);

    let two =
        format!("[[listener]]\nbind = \"127.0.0.1:0\"\n[[listener]]\nbind = \"{extra}\"\n{base}");
    std::fs::write(&path, complete_config(&two, proxy.state_dir.path())).unwrap();
    assert_eq!(
        admin_call("POST", &proxy.admin_url("/api/v1/reload"), None, None)
            .await
            .0,
        200
    );
    assert_eq!(
        get(&http1_client(), &format!("http://{extra}/")).await.0,
        200
    );
    assert_eq!(get(&client, &format!("http://{first}/")).await.0, 200);

    std::fs::write(&path, complete_config(&base, proxy.state_dir.path())).unwrap();
    assert_eq!(
        admin_call("POST", &proxy.admin_url("/api/v1/reload"), None, None)
            .await
            .0,
        200
    );
    wait_until("removed listener refuses", || async {
        tokio::net::TcpStream::connect(extra).await.is_err()
    })
    .await;
    assert_eq!(get(&client, &format!("http://{first}/")).await.0, 200);
    assert_eq!(up.connections(), 1, "upstream connection kept");
    proxy.stop().await;
}

#[tokio::test]
async fn metrics_match_the_requests_sent() {
    let blue = TestUpstream::start("blue").await;
    let proxy = start_proxy(&split_config(&[("blue", 1, &[blue.addr])], "")).await;
    let client = http1_client();
    for _ in 0..7 {
        assert_eq!(
            get(&client, &format!("http://{}/", proxy.addrs()[0]))
                .await
                .0,
            200
        );
    }
    let (s, text) = admin_call("GET", &proxy.admin_url("/metrics"), None, None).await;
    assert_eq!(s, 200);
    let text = text.as_str().unwrap().to_string();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let up = blue.addr;
    assert_eq!(
        value(&format!(
            "cutover_requests_total{{route=\"app\",pool=\"blue\",upstream=\"{up}\",status=\"2xx\"}}"
        )),
        7.0
    );
    assert_eq!(
        value(&format!(
            "cutover_upstream_in_flight{{pool=\"blue\",upstream=\"{up}\"}}"
        )),
        0.0
    );
    assert_eq!(
        value(&format!(
            "cutover_upstream_healthy{{pool=\"blue\",upstream=\"{up}\"}}"
        )),
        1.0
    );
    assert_eq!(
        value("cutover_route_weight{route=\"app\",pool=\"blue\"}"),
        1.0
    );
    assert!(
        text.contains("# TYPE cutover_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("cutover_request_duration_seconds_count{route=\"app\",pool=\"blue\"}"),
        "{text}"
    );
    proxy.stop().await;
}

/// At a stop (or a binary upgrade, which keeps the admin socket open for
/// the new process) a connection the admin API had just accepted still gets
/// its request answered, then closed — not dropped unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_before_a_stop_gets_its_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let admin = proxy.admin_addr();
    let mut silent = tokio::net::TcpStream::connect(admin).await.unwrap();
    // Accepts are in order: once a later connection is answered, the
    // silent one has been accepted too.
    let (code, _) = admin_call("GET", &proxy.admin_url("/healthz"), None, None).await;
    assert_eq!(code, 200);

    let stop = tokio::spawn(proxy.stop());
    wait_until("the admin listener is closed", || async {
        tokio::net::TcpStream::connect(admin).await.is_err()
    })
    .await;
    silent
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, silent.read_to_end(&mut answer))
        .await
        .expect("the connection ends")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer:?}");
    assert!(answer.contains("connection: close"), "{answer:?}");
    stop.await.unwrap();
}

/// Counters are in /metrics at 0 before their first event — a dashboard
/// or alert on them can be built on a fresh proxy: those without labels
/// from the start, those of an upstream from when it appears (here one
/// that has served nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_in_metrics_before_their_first_event() {
    let idle = free_port();
    let proxy = start_proxy(&split_config(&[("quiet", 1, &[idle])], "")).await;
    let (s, text) = admin_call("GET", &proxy.admin_url("/metrics"), None, None).await;
    assert_eq!(s, 200);
    let text = text.as_str().unwrap().to_string();
    for name in [
        "cutover_request_head_timeouts_total ".to_string(),
        "cutover_direct_fallbacks_total ".to_string(),
        "cutover_admin_auth_failures_total ".to_string(),
        format!("cutover_upstream_connect_errors_total{{pool=\"quiet\",upstream=\"{idle}\"}} 0"),
        format!("cutover_upstream_ejections_total{{pool=\"quiet\",upstream=\"{idle}\"}} 0"),
        format!("cutover_upstream_unsolicited_total{{pool=\"quiet\",upstream=\"{idle}\"}} 0"),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&name)),
            "no {name:?} in\n{text}"
        );
    }
    proxy.stop().await;
}
