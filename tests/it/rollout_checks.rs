//! A rollout judged on signals from outside the proxy: a real Prometheus
//! scraping the origins (`analysis.prometheus`), a URL answering a number
//! (`analysis.http`), a step webhook answering `fail`, and `dry_run` limits
//! that report without acting.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::support::prometheus::Prometheus;
use crate::support::*;

/// The rollout body the tests start from: quick steps, small windows.
fn body(analysis: Value) -> Value {
    let mut a = json!({"check_every": "200ms", "min_requests": 10, "failure_limit": 2});
    if let (Some(a), Some(extra)) = (a.as_object_mut(), analysis.as_object()) {
        a.extend(extra.clone());
    }
    json!({"to": "green", "steps": [50, 100], "interval": "1s", "analysis": a})
}

async fn start(proxy: &TestProxy, body: Value) {
    let (s, v) = admin_call(
        "POST",
        &proxy.admin_url("/api/v1/routes/app/rollout"),
        Some(body),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_breaching_its_prometheus_metric_is_rolled_back_and_in_dry_run_only_reported() {
    if !tool_present("prometheus", "prometheus") {
        return;
    }
    let (blue, green, proxy) = blue_green().await;
    // Green answers 200 to everything, but its own signal is bad.
    green.set_metric(1.0);
    let prometheus = Prometheus::start(&[blue.addr, green.addr]).await;
    let query = r#"max(test_app_metric{server="green"})"#;
    wait_until("prometheus scraped green", || async {
        prometheus.value(query).await == Some(1.0)
    })
    .await;
    let load = load(format!("http://{}/", proxy.addrs()[0]), 4);
    let check = |dry_run: bool| json!({"prometheus": [{"url": prometheus.url(), "query": query, "max": 0.5, "dry_run": dry_run}]});

    // In dry run: judged and shown, audited, never acted on — promoted.
    start(&proxy, body(check(true))).await;
    let done = wait_state_of(&proxy, &["promoted", "rolled_back", "paused"]).await;
    assert_eq!(done["state"], "promoted", "{done:#}");
    let last = &done["analysis"];
    assert_eq!(last["checks"][0]["name"], "prometheus[0]", "{last:#}");
    assert_eq!(last["checks"][0]["value"], 1.0, "{last:#}");
    assert_eq!(last["checks"][0]["state"], "fail", "{last:#}");
    assert_eq!(last["checks"][0]["dry_run"], true, "{last:#}");
    assert!(
        last["dry_run"][0]
            .as_str()
            .unwrap()
            .contains("prometheus[0] = 1 > max 0.5"),
        "{last:#}"
    );
    let audit = std::fs::read_to_string(proxy.state_dir.path().join("audit.log")).unwrap();
    let reports = audit.matches("rollout_dry_run_breach").count();
    assert_eq!(reports, 1, "reported once per rollout: {audit}");

    // Back to blue, then the same limit acting: rolled back on it.
    undo_app(&proxy).await;
    start(&proxy, body(check(false))).await;
    let done = wait_state_of(&proxy, &["promoted", "rolled_back", "paused"]).await;
    assert_eq!(done["state"], "rolled_back", "{done:#}");
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .contains("prometheus[0] = 1 > max 0.5"),
        "{done:#}"
    );

    // A query of two series is not one number: the step holds, says why,
    // and pauses at max_step_wait — it never promotes on it.
    green.set_metric(0.0);
    let two = json!({"max_step_wait": "2s", "prometheus": [{"url": prometheus.url(), "query": "test_app_metric", "max": 0.5}]});
    start(&proxy, body(two)).await;
    let held = wait_state_of(&proxy, &["paused", "promoted", "rolled_back"]).await;
    assert_eq!(held["state"], "paused", "{held:#}");
    let reason = held["reason"].as_str().unwrap();
    assert!(
        reason.contains("prometheus[0] cannot be read") && reason.contains("aggregate"),
        "{reason}"
    );
    let (sent, failed) = load.finish().await;
    assert!(sent > 0);
    assert_eq!(failed, 0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_pass_block_when_unreadable_and_a_failing_step_webhook_rolls_back() {
    let (_blue, _green, proxy) = blue_green().await;
    let load = load(format!("http://{}/", proxy.addrs()[0]), 4);
    let (three, asked) = answering(r#"{"value": 3}"#).await;

    // Within its limit: promoted, the value shown.
    start(
        &proxy,
        body(json!({"http": [{"url": format!("http://{three}/queue-depth"), "max": 5}]})),
    )
    .await;
    let done = wait_state_of(&proxy, &["promoted", "rolled_back", "paused"]).await;
    assert_eq!(done["state"], "promoted", "{done:#}");
    assert_eq!(done["analysis"]["checks"][0]["value"], 3.0, "{done:#}");
    assert!(asked.load(Ordering::SeqCst) >= 2);

    // Nobody answers: blocked, never promoted, paused at max_step_wait.
    undo_app(&proxy).await;
    let closed = closed_port();
    start(
        &proxy,
        body(json!({"max_step_wait": "2s", "http": [{"url": format!("http://{closed}/"), "max": 5}]})),
    )
    .await;
    let waiting = wait_state_of(&proxy, &["waiting"]).await;
    assert!(
        waiting["reason"]
            .as_str()
            .unwrap()
            .contains("http[0] cannot be read"),
        "{waiting:#}"
    );
    let held = wait_state_of(&proxy, &["paused", "promoted", "rolled_back"]).await;
    assert_eq!(held["state"], "paused", "{held:#}");
    assert_eq!(held["weight"], 50, "held at its first step: {held:#}");
    let (s, _) = admin_call(
        "POST",
        &proxy.admin_url("/api/v1/routes/app/rollout/abort"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);

    // A step webhook answering fail: a failing check each time, rolled
    // back at failure_limit (2).
    let (hook, hook_calls) = answering(r#"{"verdict": "fail", "reason": "carts are empty"}"#).await;
    let mut b = body(json!({}));
    b["webhooks"] = json!({"step": format!("http://{hook}/")});
    start(&proxy, b).await;
    let done = wait_state_of(&proxy, &["promoted", "rolled_back", "paused"]).await;
    assert_eq!(done["state"], "rolled_back", "{done:#}");
    let reason = done["reason"].as_str().unwrap();
    assert!(
        reason.contains("2 failing webhook answer(s)") && reason.contains("carts are empty"),
        "{reason}"
    );
    assert_eq!(hook_calls.load(Ordering::SeqCst), 2);
    let (sent, failed) = load.finish().await;
    assert!(sent > 0);
    assert_eq!(failed, 0);
    proxy.stop().await;
}

#[tokio::test]
async fn a_built_in_limit_in_dry_run_reports_and_bad_checks_are_refused() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    green.fail_every(2); // 50 % 500s
    let proxy = start_proxy(&split_config(
        &[("blue", 100, &[blue.addr]), ("green", 0, &[green.addr])],
        "",
    ))
    .await;
    for (analysis, field) in [
        (
            json!({"http": [{"url": "http://127.0.0.1:1/"}]}),
            "analysis.http[0]",
        ),
        (
            json!({"http": [{"url": "ftp://x/", "max": 1}]}),
            "analysis.http[0].url",
        ),
        (
            json!({"http": [{"url": "http://x/", "max": "1"}]}),
            "analysis.http[0].max",
        ),
        (
            json!({"http": [{"url": "http://x/", "max": 1, "min": 2}]}),
            "analysis.http[0].min",
        ),
        (json!({"http": {"url": "http://x/"}}), "analysis.http"),
        (
            json!({"prometheus": [{"url": "http://x:9090", "max": 1}]}),
            "analysis.prometheus[0].query",
        ),
        (
            json!({"prometheus": [{"url": "http://x:9090", "query": "up", "max": 1, "step": 1}]}),
            "analysis.prometheus[0].step",
        ),
        (
            json!({"max_error_rate": {"dry_run": true}}),
            "analysis.max_error_rate.value",
        ),
        (
            json!({"max_error_rate": {"value": 0.1, "dry_run": "yes"}}),
            "analysis.max_error_rate.dry_run",
        ),
    ] {
        let (s, v) = admin_call(
            "POST",
            &proxy.admin_url("/api/v1/routes/app/rollout"),
            Some(json!({"to": "green", "analysis": analysis})),
            None,
        )
        .await;
        assert_eq!(s, 400, "{analysis}: {v:#}");
        assert_eq!(v["detail"]["field"], field, "{analysis}: {v:#}");
    }
    // Every error limit in dry run: green's 500s are reported, and it is
    // promoted anyway — what a team trying new limits sees.
    let load = load(format!("http://{}/", proxy.addrs()[0]), 4);
    start(
        &proxy,
        body(json!({
            "max_error_rate": {"value": 0.01, "dry_run": true},
            "max_error_rate_increase": {"value": 0.001, "dry_run": true},
            "failure_limit": 1,
        })),
    )
    .await;
    let done = wait_state_of(&proxy, &["promoted", "rolled_back", "paused"]).await;
    assert_eq!(done["state"], "promoted", "{done:#}");
    let reports: Vec<&str> = done["analysis"]["dry_run"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        reports.iter().any(|r| r.starts_with("max_error_rate:")),
        "{done:#}"
    );
    assert_eq!(
        done["limits"]["dry_run"],
        json!(["max_error_rate", "max_error_rate_increase"])
    );
    let _ = load.finish().await;
    proxy.stop().await;
}

/// A release that lost a page answers 404, not 5xx: `max_4xx_rate` (off
/// unless set) rolls it back; the 404s are counted on the hot path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_4xx_rate_rolls_back_a_release_answering_404() {
    let (_blue, green, proxy) = blue_green().await;
    green.answer_under("/", 404);
    let url = format!("http://{}/", proxy.addrs()[0]);
    let client = http1_client();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut answers = std::collections::HashMap::<u16, usize>::new();
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (status, _) = get(&client, &url).await;
                *answers.entry(status).or_default() += 1;
            }
            answers
        })
    };
    start(
        &proxy,
        body(json!({"max_4xx_rate": 0.05, "failure_limit": 1})),
    )
    .await;
    let done = wait_state_of(&proxy, &["promoted", "rolled_back", "paused"]).await;
    assert_eq!(done["state"], "rolled_back", "{done:#}");
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .contains("max_4xx_rate 0.05"),
        "{done:#}"
    );
    assert!(
        done["analysis"]["target"]["rate_4xx"].as_f64().unwrap() > 0.5,
        "{done:#}"
    );
    stop.store(true, Ordering::Relaxed);
    let answers = traffic.await.unwrap();
    // Only blue's 200s and green's 404s: nothing failed in the moves.
    assert!(
        answers.keys().all(|s| *s == 200 || *s == 404),
        "{answers:?}"
    );
    proxy.stop().await;
}

/// `watch`: after the move to 100 %, the target is judged against its own
/// figures from before it for the watch's time — a release that goes bad
/// only at full traffic is rolled back; a good one is promoted once the
/// watch is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_after_the_last_step_rolls_back_a_release_going_bad_at_full_traffic() {
    let (_blue, green, proxy) = blue_green().await;
    let load = load(format!("http://{}/", proxy.addrs()[0]), 4);
    let mut b = body(json!({}));
    b["watch"] = json!("1s");
    start(&proxy, b).await;
    let done = wait_state_of(&proxy, &["promoted", "rolled_back", "paused"]).await;
    assert_eq!(done["state"], "promoted", "{done:#}");
    assert_eq!(done["watch"], "1s");
    let (sent, failed) = load.finish().await;
    assert!(sent > 0);
    assert_eq!(failed, 0);

    undo_app(&proxy).await;
    // Until the verdict, not a fixed count: a fast build would finish a
    // count before the watch began, leaving the target without data.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = tokio::spawn({
        let url = format!("http://{}/", proxy.addrs()[0]);
        let stop = Arc::clone(&stop);
        async move {
            let client = http1_client();
            let mut answers = std::collections::HashMap::<u16, usize>::new();
            for _ in 0..2_000_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (status, _) = get(&client, &url).await;
                *answers.entry(status).or_default() += 1;
            }
            answers
        }
    });
    let mut b = body(json!({}));
    b["watch"] = json!("1m");
    start(&proxy, b).await;
    let watching = wait_until_watching(&proxy).await;
    assert_eq!(watching["weight"], 100, "{watching:#}");
    // Bad only now, at full traffic.
    green.fail_every(3);
    let done = wait_state_of(&proxy, &["promoted", "rolled_back", "paused"]).await;
    stop.store(true, Ordering::Relaxed);
    assert_eq!(done["state"], "rolled_back", "{done:#}");
    assert!(
        done["reason"].as_str().unwrap().contains("step 2 (100%)"),
        "{done:#}"
    );
    // Judged against green's own figures before the move, not blue's.
    let base = &done["analysis"]["baseline"];
    assert!(
        base["requests"].as_u64().unwrap() > 0 && base["errors"] == 0,
        "{done:#}"
    );
    traffic.await.unwrap();
    proxy.stop().await;
}

/// `POST …/routes/app/undo`, which must be accepted.
async fn undo_app(proxy: &TestProxy) {
    let (s, v) = admin_call(
        "POST",
        &proxy.admin_url("/api/v1/routes/app/undo"),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v:#}");
}

/// The first route's rollout once it watches at 100 % and has judged the
/// watch once (its figures start at the step: the driver marks them at
/// its next tick, up to 100 ms after the move).
async fn wait_until_watching(proxy: &TestProxy) -> Value {
    let mut last = Value::Null;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        last = rollout_of(proxy).await;
        let checked_since = last["analysis"]["at_ms"].as_u64() > last["step_started_ms"].as_u64();
        if last["watching"] == true && checked_since {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the rollout never watched: {last:#}");
}
