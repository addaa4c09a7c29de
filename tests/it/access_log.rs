//! The access log: one JSON line per request, with route, pool, upstream,
//! status, duration and bytes.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_line_per_request() {
    let up = TestUpstream::start("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let extra = format!("[proxy]\naccess_log = \"{}\"\n", path.display());
    let config = format!(
        "{extra}[[route]]\nname = \"app\"\nhosts = [\"app.test\"]\nsplit = {{ blue = 1 }}\n[pool.blue]\nupstreams = [{{ addr = \"{}\" }}]\n",
        up.addr
    );
    let proxy = start_proxy(&config).await;
    let client = http1_client();
    let base = proxy.addrs()[0];
    for path in ["/a?x=1", "/b"] {
        let req = http::Request::get(format!("http://{base}{path}"))
            .header("host", "app.test")
            .body(Default::default())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
    }
    assert_eq!(get(&client, &format!("http://{base}/nowhere")).await.0, 404);

    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    wait_until("three access log lines", || async {
        read().lines().count() >= 3
    })
    .await;
    let lines: Vec<serde_json::Value> = read()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["path"], "/a?x=1");
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(lines[0]["host"], "app.test");
    assert_eq!(lines[0]["route"], "app");
    assert_eq!(lines[0]["pool"], "blue");
    assert_eq!(lines[0]["upstream"], up.addr.to_string());
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["bytes"], 5, "\"blue\\n\"");
    assert!(lines[0]["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(lines[2]["status"], 404);
    assert!(lines[2]["route"].is_null());
    proxy.stop().await;
}

#[test]
fn access_log_setting_is_validated() {
    let text = "[[listener]]\nbind = \"127.0.0.1:1\"\n[proxy]\naccess_log = \"relative.log\"\n[[route]]\nname = \"a\"\nsplit = { p = 1 }\n[pool.p]\nupstreams = [{ addr = \"127.0.0.1:2\" }]\n";
    let err = cutover::config::Config::parse("t.toml", text).unwrap_err();
    assert!(
        err.problems[0].starts_with("t.toml:4:14: proxy.access_log: expected"),
        "{err}"
    );
}
