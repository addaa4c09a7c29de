//! DNS-named upstreams through a resolver the test controls: a name moving
//! from one upstream to another under load with zero failed requests, a
//! failed lookup keeping the last good addresses, and a name that does not
//! resolve at start shown in status without stopping the proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::support::*;

/// What `app.internal` resolves to: addresses, or an error.
type Answer = Arc<Mutex<Result<Vec<SocketAddr>, String>>>;

fn resolver(answer: &Answer) -> cutover::dns::Resolver {
    let answer = Arc::clone(answer);
    Arc::new(move |host: String, _port| {
        let answer = answer.lock().unwrap().clone();
        Box::pin(async move {
            match host.as_str() {
                "app.internal" => answer,
                other => Err(format!("{other}: NXDOMAIN")),
            }
        })
    })
}

fn config(extra_pool: &str) -> String {
    format!(
        "[[route]]\nname = \"app\"\nsplit = {{ p = 1 }}\n[pool.p]\nupstreams = [{{ addr = \"app.internal:8000\" }}]\ndns_refresh = \"100ms\"\n{extra_pool}"
    )
}

async fn names(proxy: &TestProxy) -> Value {
    let (_, v) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
    v["pools"][0]["names"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_moving_to_new_addresses_fails_no_request() {
    let a = TestUpstream::start("a").await;
    let b = TestUpstream::start("b").await;
    let answer: Answer = Arc::new(Mutex::new(Ok(vec![a.addr])));
    let proxy = start_proxy_with_resolver(&config(""), resolver(&answer)).await;
    let status = names(&proxy).await;
    assert_eq!(status["name"], "app.internal:8000");
    assert_eq!(status["state"]["addresses"], serde_json::json!([a.addr]));
    let run = load(format!("http://{}/", proxy.addrs()[0]), 6);
    wait_until("traffic on a", || async { a.hits() > 100 }).await;

    // The rolling replacement: the name now points at b.
    *answer.lock().unwrap() = Ok(vec![b.addr]);
    wait_until("traffic moves to b", || async { b.hits() > 100 }).await;
    let a_then = a.hits();
    wait_until("more traffic on b", || async { b.hits() > 300 }).await;
    assert!(a.hits() <= a_then + 6, "a still gets new requests");
    assert_eq!(
        names(&proxy).await["state"]["addresses"],
        serde_json::json!([b.addr])
    );

    // A failed lookup keeps b.
    *answer.lock().unwrap() = Err("SERVFAIL".into());
    wait_until("the failure recorded", || async {
        names(&proxy).await["state"]["error"] == "SERVFAIL"
    })
    .await;
    assert_eq!(
        names(&proxy).await["state"]["addresses"],
        serde_json::json!([b.addr])
    );
    let before = b.hits();
    wait_until("b still serving", || async { b.hits() > before + 100 }).await;
    let (sent, failed) = run.finish().await;
    assert!(sent > 500, "{sent}");
    assert_eq!(failed, 0, "failed requests during the move");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_at_start_has_no_address_until_it_does() {
    let b = TestUpstream::start("b").await;
    let answer: Answer = Arc::new(Mutex::new(Err("NXDOMAIN".into())));
    let proxy = start_proxy_with_resolver(&config(""), resolver(&answer)).await;
    let status = names(&proxy).await;
    assert_eq!(status["state"]["error"], "NXDOMAIN", "{status}");
    assert_eq!(status["state"]["addresses"], serde_json::json!([]));
    let client = http1_client();
    let url = format!("http://{}/", proxy.addrs()[0]);
    assert_eq!(get(&client, &url).await.0, 503);
    *answer.lock().unwrap() = Ok(vec![b.addr]);
    wait_until("the name resolves", || async {
        get(&client, &url).await == (200, "b\n".to_string())
    })
    .await;
    proxy.stop().await;
}

/// `cutover check` takes names as they are; `--resolve` looks them up.
#[test]
fn check_resolves_names_only_when_asked() {
    let config = config("").replace("app.internal", "no-such-host.invalid");
    let check = |extra: &[&str]| check_config(&config, extra);
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = check(&["--resolve"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pool.p: no-such-host.invalid:8000 does not resolve"),
        "{stderr}"
    );
}
