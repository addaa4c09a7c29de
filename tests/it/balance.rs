//! `balance`: the power of two choices (the default) keeps a slow
//! upstream's backlog short; weighted random gives it its weight's share
//! whatever its speed.

use crate::support::*;

/// The share of 200 requests (8 clients at once) that reach the slow one
/// of two equal-weight upstreams, under `balance`.
async fn slow_share(balance: &str) -> f64 {
    let (fast, slow) = (
        TestUpstream::start("fast").await,
        TestUpstream::start("slow").await,
    );
    slow.delay(100);
    let config = format!(
        "[[route]]\nname = \"app\"\nsplit = {{ app = 1 }}\n[pool.app]\nupstreams = [{{ addr = \"{}\" }}, {{ addr = \"{}\" }}]\nbalance = \"{balance}\"\n",
        fast.addr, slow.addr
    );
    let proxy = start_proxy(&config).await;
    let url = format!("http://{}/", proxy.addrs()[0]);
    let client = http1_client();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                for _ in 0..25 {
                    let (status, _) = get(&client, &url).await;
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(fast.hits() + slow.hits(), 200);
    proxy.stop().await;
    slow.hits() as f64 / 200.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_sends_a_slow_upstream_less_than_its_weight_random_does_not() {
    let p2c = slow_share("p2c").await;
    let random = slow_share("random").await;
    // Random: half, ±0.035 (one standard deviation over 200 draws).
    assert!(
        (0.3..=0.7).contains(&random),
        "random gave the slow upstream {random}"
    );
    // p2c: the slow upstream wins a draw only while it has nothing in
    // flight and the fast one does.
    assert!(
        p2c < 0.2,
        "p2c gave the slow upstream {p2c} (random: {random})"
    );
}

/// The default is p2c, and status says which a pool uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_each_pools_balance() {
    let up = TestUpstream::start("up").await;
    let config = format!(
        "[[route]]\nname = \"app\"\nsplit = {{ a = 1, b = 1 }}\n[pool.a]\nupstreams = [{{ addr = \"{0}\" }}]\n[pool.b]\nupstreams = [{{ addr = \"{0}\" }}]\nbalance = \"random\"\n",
        up.addr
    );
    let proxy = start_proxy(&config).await;
    let (status, body) = get(&http1_client(), &proxy.admin_url("/api/v1/status")).await;
    assert_eq!(status, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let balance = |pool: &str| {
        status["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == pool)
            .map(|p| p["balance"].clone())
    };
    assert_eq!(balance("a"), Some(serde_json::json!("p2c")));
    assert_eq!(balance("b"), Some(serde_json::json!("random")));
    proxy.stop().await;
}

#[test]
fn an_unknown_balance_is_a_config_error_naming_the_key() {
    let config = "[[route]]\nname = \"app\"\nsplit = { p = 1 }\n[pool.p]\nupstreams = [{ addr = \"127.0.0.1:9\" }]\nbalance = \"round-robin\"\n";
    let out = check_config(config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cutover.toml:12:11: pool.p.balance: unknown balance \"round-robin\""),
        "{stderr}"
    );
}
