//! The admin status page: server-rendered HTML with routes, splits, pools,
//! upstream states, rates and drains; and, where Chromium is installed, a
//! real browser renders it to a screenshot kept under target/.

use std::process::Command;

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_routes_upstreams_rates_and_drains() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let proxy = start_proxy(&split_config(
        &[("blue", 70, &[blue.addr]), ("green", 30, &[green.addr])],
        "",
    ))
    .await;
    let page_url = proxy.admin_url("/");
    let (s, first) = admin_call("GET", &page_url, None, None).await;
    assert_eq!(s, 200);
    let client = http1_client();
    for _ in 0..200 {
        assert_eq!(
            get(&client, &format!("http://{}/", proxy.addrs()[0]))
                .await
                .0,
            200
        );
    }
    let drain = proxy.admin_url(&format!(
        "/api/v1/pools/green/upstreams/{}/drain",
        green.addr
    ));
    admin_call("POST", &drain, Some(json!({"timeout": "60s"})), None).await;
    let (_, page) = admin_call("GET", &page_url, None, None).await;
    let page = page.as_str().unwrap().to_string();
    let first = first.as_str().unwrap();
    assert!(first.starts_with("<!doctype html>"));
    // Before the first sample the charts table has a row per pool and
    // says when the first point comes.
    assert!(
        first.contains("id=\"chart-blue-rps\"")
            && first.contains("The first point comes 5 s after start"),
        "{first}"
    );
    assert!(
        page.contains("<meta http-equiv=\"refresh\" content=\"2\">"),
        "refreshes itself"
    );
    assert!(
        !page.contains("<script") && !page.contains("http://") && !page.contains("https://"),
        "no external assets"
    );
    assert!(page.contains("<b>app</b>"), "{page}");
    assert!(
        page.contains("blue 70%") && page.contains("green 30%"),
        "split bars: {page}"
    );
    assert!(page.contains(&blue.addr.to_string()) && page.contains(&green.addr.to_string()));
    assert!(
        page.contains("class=\"st healthy\">healthy")
            && page.contains("class=\"st drained\">drained"),
        "{page}"
    );
    // Rates are measured by the admin API itself (since start before its
    // first 5 s sample), not between two page loads: the second load is
    // the first after the traffic, and shows it.
    let rate_cell = page
        .split(&blue.addr.to_string())
        .nth(1)
        .and_then(|rest| rest.split("<td class=\"num\">").nth(3))
        .and_then(|cell| cell.split('<').next())
        .and_then(|n| n.parse::<f64>().ok())
        .expect("a req/s cell for blue");
    assert!(rate_cell > 0.0, "blue req/s: {rate_cell}");

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    if let Some(out) = chromium(&[format!("--screenshot={}", shot.display())], &page_url).await {
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "no screenshot ({size} bytes): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("status page screenshot: {}", shot.display());
    }
    proxy.stop().await;
}

/// Runs headless Chromium on `url` with `args`; `None` (and a note) where
/// it is not installed, which CI does not allow.
async fn chromium(args: &[String], url: &str) -> Option<std::process::Output> {
    let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        assert!(
            std::env::var("CI").is_err(),
            "chromium must be installed in CI (.ci/run does it)"
        );
        eprintln!("SKIPPED: chromium not installed");
        return None;
    };
    let profile = tempfile::tempdir().unwrap();
    let (args, url) = (args.to_vec(), url.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1200,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(&args)
            .arg(&url)
            .output()
            .expect("run chromium")
    })
    .await
    .unwrap();
    Some(out)
}

/// Blue and a green failing every `fail_every`th request, load through
/// the proxy, and the rollout `body` started (201).
async fn failing_green_rolled_out(
    fail_every: u64,
    body: serde_json::Value,
) -> (TestUpstream, TestUpstream, TestProxy, Load) {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    green.fail_every(fail_every);
    let proxy = start_proxy(&split_config(
        &[("blue", 100, &[blue.addr]), ("green", 0, &[green.addr])],
        "",
    ))
    .await;
    let load = load(format!("http://{}/", proxy.addrs()[0]), 4);
    let (s, v) = admin_call(
        "POST",
        &proxy.admin_url("/api/v1/routes/app/rollout"),
        Some(body),
        None,
    )
    .await;
    assert_eq!(s, 201, "{v}");
    (blue, green, proxy, load)
}

/// The rollout panel, as a browser renders it: steps, state, the last
/// check's figures beside their limits, and the rollback's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_a_rollback_with_its_figures_and_limits() {
    let (_blue, _green, proxy, load) = failing_green_rolled_out(
        4,
        json!({"to": "green", "steps": [25, 100], "interval": "1m",
               "analysis": {"check_every": "200ms", "min_requests": 20, "failure_limit": 1}}),
    )
    .await;
    wait_until("the rollback", || async {
        let (_, v) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
        v["routes"][0]["rollout"]["state"] == "rolled_back"
    })
    .await;
    load.finish().await;
    let page_url = proxy.admin_url("/");
    let (_, page) = admin_call("GET", &page_url, None, None).await;
    let page = page.as_str().unwrap().to_string();
    assert!(page.contains("id=\"rollout-app\""), "{page}");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page-rollout.png");
    let Some(out) = chromium(&["--dump-dom".to_string()], &page_url).await else {
        proxy.stop().await;
        return;
    };
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    // The last check's target figures, beside the limit they broke.
    let error_row = dom
        .split("<td>error rate</td>")
        .nth(1)
        .expect("an error-rate row");
    let target_rate: f64 = error_row
        .split("<td class=\"num\">")
        .nth(1)
        .and_then(|c| c.split('<').next())
        .and_then(|n| n.parse().ok())
        .expect("the target's error rate");
    assert!(target_rate > 0.1, "target error rate shown: {target_rate}");
    for needle in [
        "Rollout of app to green",
        "rolled back",
        "<span class=\"now\">25%</span>",
        "error rate",
        "max 0.0500",
        "failing check(s) in a row",
    ] {
        assert!(dom.contains(needle), "{needle:?} not rendered:\n{dom}");
    }
    assert!(
        !dom.contains("failing checks in a row:"),
        "a finished rollout counts no checks in a row:\n{dom}"
    );
    // The error test's intervals, drawn: two bars and the line past which
    // the target is worse.
    let drawn = dom
        .split("id=\"interval-app\"")
        .nth(1)
        .and_then(|rest| rest.split("</svg>").next())
        .expect("the intervals are drawn");
    assert_eq!(drawn.matches("<line").count(), 3, "{drawn}");
    assert_eq!(drawn.matches("<circle").count(), 2, "{drawn}");
    // The latency test's the same way (its dashed line once the
    // baseline's p99 is bounded).
    assert!(
        dom.contains("latency test since the start: p99 target"),
        "{dom}"
    );
    let drawn = dom
        .split("id=\"latency-interval-app\"")
        .nth(1)
        .and_then(|rest| rest.split("</svg>").next())
        .expect("the latency intervals are drawn");
    assert_eq!(drawn.matches("<circle").count(), 2, "{drawn}");
    chromium(&[format!("--screenshot={}", shot.display())], &page_url).await;
    eprintln!("rollout panel screenshot: {}", shot.display());
    proxy.stop().await;
}

/// A rollout whose checks fail (but not yet enough to roll back) shows a
/// red "check failing (N of L)" badge, not "waiting", and the time left
/// at its step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_says_a_check_is_failing_and_the_time_left() {
    let (_blue, _green, proxy, load) = failing_green_rolled_out(
        2,
        json!({"to": "green", "steps": [50, 100], "interval": "10m",
               "analysis": {"check_every": "200ms", "min_requests": 10, "failure_limit": 100}}),
    )
    .await;
    let page_url = proxy.admin_url("/");
    wait_until("a failing check on the page", || async {
        let (_, p) = admin_call("GET", &page_url, None, None).await;
        p.as_str()
            .is_some_and(|p| p.contains("class=\"st failing\">check failing ("))
    })
    .await;
    let (_, page) = admin_call("GET", &page_url, None, None).await;
    let page = page.as_str().unwrap_or("").to_string();
    assert!(page.contains(" of 100)"), "{page}");
    assert!(page.contains(" s left at this step"), "{page}");
    assert!(page.contains("failing checks in a row: "), "{page}");
    load.finish().await;
    proxy.stop().await;
}

/// The shadow-traffic panel and a route's matchers, as a browser renders
/// them: copies by outcome and the last difference with both statuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_shows_shadow_traffic_and_matchers() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    green.fail_every(2);
    let config = format!(
        r#"
[[route]]
name = "app"
split = {{ blue = 1 }}
mirror = {{ pool = "green", percent = 100 }}
[[route]]
name = "testers"
headers = {{ "x-canary" = "always" }}
split = {{ green = 1 }}
[pool.blue]
upstreams = [{{ addr = "{}" }}]
[pool.green]
upstreams = [{{ addr = "{}" }}]
"#,
        blue.addr, green.addr
    );
    let proxy = start_proxy(&config).await;
    let client = http1_client();
    for _ in 0..20 {
        let (status, _) = get(&client, &format!("http://{}/cart", proxy.addrs()[0])).await;
        assert_eq!(status, 200);
    }
    wait_until("every copy judged", || async {
        let (_, v) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
        let c = &v["routes"][0]["mirror"]["counts"];
        c["same"].as_u64().unwrap_or(0) + c["differs"].as_u64().unwrap_or(0) == 20
    })
    .await;
    // The page shows the counts the API has (green fails about every
    // second request; which copies those are depends on what else it got).
    let (_, v) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
    let counts = &v["routes"][0]["mirror"]["counts"];
    let (same, differs) = (counts["same"].clone(), counts["differs"].clone());
    assert!(differs.as_u64().unwrap_or(0) > 0, "{counts}");
    let same = format!("<span class=\"st same\">same {same}</span>");
    let differs = format!("<span class=\"st differs\">differs {differs}</span>");
    let page_url = proxy.admin_url("/");
    let Some(out) = chromium(&["--dump-dom".to_string()], &page_url).await else {
        proxy.stop().await;
        return;
    };
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    for needle in [
        "id=\"mirror-app\"",
        "Shadow traffic of app",
        "100% copied to green",
        same.as_str(),
        differs.as_str(),
        "<td>GET /cart</td><td class=\"num\">200</td><td class=\"num\">500</td>",
        "any host, / [header x-canary=\"always\"]",
        // The effective split, next to the configured one.
        "<td>blue 100%</td>",
    ] {
        assert!(dom.contains(needle), "{needle:?} not rendered:\n{dom}");
    }
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page-mirror.png");
    chromium(&[format!("--screenshot={}", shot.display())], &page_url).await;
    eprintln!("shadow panel screenshot: {}", shot.display());
    proxy.stop().await;
}

/// The charts, as a browser renders them: after a few samples under load,
/// each pool's requests/s chart is a line with data, and the page says how
/// long the proxy has been up and how many requests it served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_charts_each_pool_s_last_minutes() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    green.fail_every(5);
    let proxy = start_proxy(&split_config(
        &[("blue", 50, &[blue.addr]), ("green", 50, &[green.addr])],
        "",
    ))
    .await;
    let load = load_any_status(format!("http://{}/", proxy.addrs()[0]));
    let page_url = proxy.admin_url("/");
    // Samples come every 5 s: three give two points.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let (_, page) = admin_call("GET", &page_url, None, None).await;
        let page = page.as_str().unwrap_or("").to_string();
        let drawn = page
            .split("id=\"chart-green-errors\"")
            .nth(1)
            .and_then(|rest| rest.split("points=\"").nth(1))
            .and_then(|points| points.split('"').next())
            .is_some_and(|points| points.split(' ').count() >= 2);
        if drawn {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no chart drawn:\n{page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    load.abort();
    let Some(out) = chromium(&["--dump-dom".to_string()], &page_url).await else {
        proxy.stop().await;
        return;
    };
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    for id in [
        "chart-blue-rps",
        "chart-green-rps",
        "chart-green-errors",
        "chart-blue-p99",
    ] {
        let points = dom
            .split(&format!("id=\"{id}\""))
            .nth(1)
            .and_then(|rest| rest.split("</svg>").next())
            .and_then(|svg| svg.split("points=\"").nth(1))
            .and_then(|p| p.split('"').next())
            .unwrap_or_else(|| panic!("{id} has no line:\n{dom}"));
        let ys: Vec<f32> = points
            .split(' ')
            .filter_map(|xy| xy.split(',').nth(1)?.parse().ok())
            .collect();
        assert!(ys.len() >= 2, "{id}: {points}");
        // Some point above the baseline (y = 38): data, not a flat zero.
        assert!(ys.iter().any(|y| *y < 37.0), "{id}: {points}");
    }
    assert!(dom.contains("requests served"), "{dom}");
    assert!(dom.contains(" · up "), "{dom}");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page-charts.png");
    chromium(&[format!("--screenshot={}", shot.display())], &page_url).await;
    eprintln!("charts screenshot: {}", shot.display());
    proxy.stop().await;
}

/// Clients sending GETs until aborted, whatever the status (green's 500s
/// are the point here).
fn load_any_status(url: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = http1_client();
        for _ in 0..1_000_000 {
            let _ = client
                .get(url.parse().unwrap())
                .await
                .map(|r| r.into_body());
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
}
