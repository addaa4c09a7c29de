//! Concurrent load through the proxy: every request must succeed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_two_thousand_requests_each() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let proxy = start_proxy(&split_config(
        &[("blue", 1, &[blue.addr]), ("green", 1, &[green.addr])],
        "",
    ))
    .await;
    let base = proxy.addrs()[0];
    let failures = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..16 {
        let failures = Arc::clone(&failures);
        // Half the clients speak HTTP/2, half HTTP/1.1 keep-alive.
        let client = if c % 2 == 0 {
            http1_client()
        } else {
            http2_client()
        };
        clients.push(tokio::spawn(async move {
            for _ in 0..2000 {
                let ok = match client.get(format!("http://{base}/").parse().unwrap()).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let body = http_body_util::BodyExt::collect(resp.into_body()).await;
                        status == 200 && body.is_ok()
                    }
                    Err(_) => false,
                };
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    assert_eq!(blue.hits() + green.hits(), 32_000);
    proxy.stop().await;
}
