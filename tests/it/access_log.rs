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

/// `attempts` counts the upstreams tried (a dead one first, then a live
/// one), `upstream_ms` is the upstream's own time, `queued_ms` the wait
/// for room (none here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_and_the_upstream_s_own_time_are_logged() {
    let up = TestUpstream::start("up").await;
    let dead = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    // The dead upstream first in the file, weight so it is tried first
    // often; a request is retried on the live one.
    let config = format!(
        "[proxy]\naccess_log = \"{}\"\n[[route]]\nname = \"app\"\nsplit = {{ p = 1 }}\n\
         [pool.p]\nbalance = \"random\"\nupstreams = [{{ addr = \"{dead}\", weight = 1000 }}, {{ addr = \"{}\", weight = 1 }}]\n",
        path.display(),
        up.addr
    );
    let proxy = start_proxy(&config).await;
    let client = http1_client();
    // Nearly every request meets the dead upstream first; a few requests
    // make a retried one certain.
    for _ in 0..5 {
        let (status, _) = get(&client, &format!("http://{}/slow?ms=60", proxy.addrs()[0])).await;
        assert_eq!(status, 200);
    }
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    wait_until("five lines", || async { lines().len() >= 5 }).await;
    let all = lines();
    assert!(
        all.iter().all(|l| l["attempts"] == 1 || l["attempts"] == 2),
        "{all:?}"
    );
    let line = all
        .iter()
        .find(|l| l["attempts"] == 2)
        .unwrap_or_else(|| panic!("no request was retried: {all:?}"));
    assert_eq!(line["upstream"], up.addr.to_string(), "{line}");
    let upstream_ms = line["upstream_ms"].as_f64().unwrap();
    assert!(
        (60.0..line["duration_ms"].as_f64().unwrap() + 1.0).contains(&upstream_ms),
        "{line}"
    );
    assert_eq!(line["queued_ms"], 0.0, "{line}");
    proxy.stop().await;
}

/// `access_log_format = "logfmt"` with `access_log_fields`: the fields
/// named, in their order, one `key=value` line per request; an unknown
/// field is a config error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logfmt_lines_with_the_fields_named() {
    let up = TestUpstream::start("blue").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let proxy_section = format!(
        "[proxy]\naccess_log = \"{}\"\naccess_log_format = \"logfmt\"\naccess_log_fields = [\"status\", \"path\", \"served_by\", \"request_id\"]\n",
        path.display()
    );
    let proxy = start_proxy(&split_config(&[("blue", 1, &[up.addr])], &proxy_section)).await;
    let client = http1_client();
    let req = http::Request::get(format!("http://{}/a%20b?x=1", proxy.addrs()[0]))
        .header("x-request-id", "req-7")
        .body(Default::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    wait_until("the line", || async {
        std::fs::read_to_string(&path).is_ok_and(|t| t.ends_with('\n'))
    })
    .await;
    let text = std::fs::read_to_string(&path).unwrap();
    // `=` in a value is quoted.
    assert_eq!(
        text,
        "status=200 path=\"/a%20b?x=1\" served_by=direct request_id=req-7\n"
    );
    proxy.stop().await;

    let bad = split_config(
        &[("blue", 1, &[up.addr])],
        "[proxy]\naccess_log = \"stdout\"\naccess_log_fields = [\"status\", \"colour\"]\n",
    );
    let out = check_config(&bad, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("proxy.access_log_fields[1]: unknown field \"colour\""),
        "{stderr}"
    );
}

/// During a rollout each line names the step whose split routed it, and
/// on a sticky route the client's cohort: the fresh cookie's on a first
/// visit, the same again when the client comes back with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_name_the_rollout_step_and_the_sticky_cohort() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let config = format!(
        "[proxy]\naccess_log = \"{}\"\n[[route]]\nname = \"app\"\nsticky = {{ cookie = \"pin\" }}\nsplit = {{ blue = 100, green = 0 }}\n\
         [pool.blue]\nupstreams = [{{ addr = \"{}\" }}]\n[pool.green]\nupstreams = [{{ addr = \"{}\" }}]\n",
        path.display(),
        blue.addr,
        green.addr
    );
    let proxy = start_proxy(&config).await;
    let url = format!("http://{}/", proxy.addrs()[0]);
    let client = http1_client();
    // Before any rollout: no step.
    let first = client
        .request(http::Request::get(&url).body(Default::default()).unwrap())
        .await
        .unwrap();
    let cookie = first.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (s, v) = admin_call(
        "POST",
        &proxy.admin_url("/api/v1/routes/app/rollout"),
        Some(serde_json::json!({"to": "green", "steps": [50, 100], "interval": "1h"})),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let again = client
        .request(
            http::Request::get(&url)
                .header("cookie", &cookie)
                .body(Default::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    wait_until("two access log lines", || async {
        read().lines().count() >= 2
    })
    .await;
    let lines: Vec<serde_json::Value> = read()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0].get("rollout_step"), None, "{lines:?}");
    assert_eq!(lines[1]["rollout_step"], 1, "{lines:?}");
    let cohort = lines[0]["cohort"].as_u64().expect("a cohort");
    assert!(cohort < 100, "{cohort}");
    // A pinned client at or above 50 stays on blue with its cohort; below,
    // the rollout moved it to green, whose fresh cookie draws a new one.
    if lines[1]["pool"] == "blue" {
        assert_eq!(lines[1]["cohort"].as_u64(), Some(cohort), "{lines:?}");
        assert!(cohort >= 50, "{lines:?}");
    } else {
        assert!(cohort < 50, "{lines:?}");
        assert!(lines[1]["cohort"].as_u64().is_some(), "{lines:?}");
    }
    proxy.stop().await;
}
