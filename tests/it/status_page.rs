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
    assert!(first.as_str().unwrap().starts_with("<!doctype html>"));
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
    // Rates come from the counters between the two loads.
    let rate_cell = page
        .split(&blue.addr.to_string())
        .nth(1)
        .and_then(|rest| rest.split("<td class=\"num\">").nth(3))
        .and_then(|cell| cell.split('<').next())
        .and_then(|n| n.parse::<f64>().ok())
        .expect("a req/s cell for blue");
    assert!(rate_cell > 0.0, "blue req/s: {rate_cell}");

    if let Some(chromium) = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    }) {
        let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
        let profile = tempfile::tempdir().unwrap();
        let out = tokio::task::spawn_blocking({
            let (shot, page_url) = (shot.clone(), page_url.clone());
            let profile = profile.path().to_path_buf();
            move || {
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
                        "--window-size=1200,700",
                    ])
                    .arg(format!("--user-data-dir={}", profile.display()))
                    .arg(format!("--screenshot={}", shot.display()))
                    .arg(&page_url)
                    .output()
                    .expect("run chromium")
            }
        })
        .await
        .unwrap();
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "no screenshot ({size} bytes): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("status page screenshot: {}", shot.display());
    } else {
        assert!(
            std::env::var("CI").is_err(),
            "chromium must be installed in CI (.ci/run does it)"
        );
        eprintln!("SKIPPED screenshot: chromium not installed");
    }
    proxy.stop().await;
}
