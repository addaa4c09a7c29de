//! HTTP/2 client → HTTP/1.1 upstream, and 64 MiB bodies streamed both ways.
//! Each transfer pauses half-way until the far side has seen data, so a
//! proxy that buffered whole bodies would never finish.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::upstream::{checksum, pattern_byte};
use crate::support::*;

const MIB: usize = 1 << 20;
const TOTAL: usize = 64 * MIB;
const CHUNK: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_client_to_h1_upstream() {
    let up = TestUpstream::start("h1-upstream").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let base = proxy.addrs()[0];
    let resp = http2_client()
        .get(format!("http://{base}/headers").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["via"], "1.1 cutover");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = String::from_utf8_lossy(&body);
    // :authority became Host; the upstream saw an HTTP/2 hop in Via.
    assert!(seen.contains(&format!("host: {base}\n")), "{seen}");
    assert!(seen.contains("via: 2 cutover\n"), "{seen}");
    proxy.stop().await;
}

/// RFC 9113 §8.3.1: an HTTP/2 request whose Host names another server
/// than its :authority is malformed; the same name in another case is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_host_differing_from_authority_is_refused() {
    let up = TestUpstream::start("h1-upstream").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let base = proxy.addrs()[0];
    let client = http2_client();
    for (host, status) in [("elsewhere.test", 400), (base.to_string().as_str(), 200)] {
        let req = http::Request::get(format!("http://{base}/"))
            .header("host", host)
            .body(Default::default())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), status, "Host: {host}");
    }
    assert_eq!(up.hits(), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_64_mib_streams() {
    let up = TestUpstream::start("sink").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let base = proxy.addrs()[0];
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let chunks = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let body: BoxBody<Bytes, Infallible> = StreamBody::new(chunks).boxed();
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::post(format!("http://{base}/upload"))
        .body(body)
        .unwrap();
    let response = tokio::spawn(async move { client.request(req).await });

    let mut sum = 0u64;
    let data: Vec<u8> = (0..CHUNK as u64).map(pattern_byte).collect();
    let run = async {
        for i in 0..TOTAL / CHUNK {
            if i == TOTAL / CHUNK / 2 {
                // Half sent: the upstream must already be receiving.
                wait_until("upstream receives before the upload ends", || async {
                    up.received() >= 8 * MIB as u64
                })
                .await;
            }
            sum = checksum(sum, &data);
            tx.send(Bytes::from(data.clone()))
                .await
                .expect("body channel open");
        }
        drop(tx);
        let resp = response.await.unwrap().expect("upload response");
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap().to_bytes()
    };
    let answer = tokio::time::timeout(DEADLINE * 3, run)
        .await
        .expect("upload finished in time");
    assert_eq!(String::from_utf8_lossy(&answer), format!("{TOTAL} {sum}"));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_64_mib_streams() {
    let up = TestUpstream::start("source").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let base = proxy.addrs()[0];
    let run = async {
        let resp = http2_client()
            .get(format!("http://{base}/download?mib=64").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let (mut len, mut sum, mut released) = (0usize, 0u64, false);
        let mut want = 0u64;
        while let Some(frame) = body.frame().await {
            let data = frame.expect("body frame").into_data().unwrap_or_default();
            for (i, b) in data.iter().enumerate() {
                assert_eq!(
                    *b,
                    pattern_byte((len + i) as u64),
                    "byte {} differs",
                    len + i
                );
            }
            sum = checksum(sum, &data);
            len += data.len();
            if !released && len >= 8 * MIB {
                // The upstream holds back its second half until now.
                up.release();
                released = true;
            }
        }
        for start in (0..TOTAL).step_by(CHUNK) {
            let chunk: Vec<u8> = (start..start + CHUNK)
                .map(|i| pattern_byte(i as u64))
                .collect();
            want = checksum(want, &chunk);
        }
        (len, sum, want)
    };
    let (len, sum, want) = tokio::time::timeout(DEADLINE * 3, run)
        .await
        .expect("download finished in time");
    assert_eq!(len, TOTAL);
    assert_eq!(sum, want);
    proxy.stop().await;
}

/// A response still streaming from an upstream whose drain passes its
/// deadline is cut there — on the direct path (HTTP/1.1) and hyper's
/// (HTTP/2) — and the upstream is `drained` instead of waiting on the
/// stream. Before the deadline the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_deadline_cuts_a_response_still_streaming() {
    for (pool, client) in [("cut_h1", http1_client()), ("cut_h2", http2_client())] {
        // Sends 2 of 4 MiB, then waits for a `release` that never comes.
        let up = TestUpstream::start("streaming").await;
        let proxy = start_proxy(&split_config(&[(pool, 1, &[up.addr])], "")).await;
        let url = format!("http://{}/download?mib=4", proxy.addrs()[0]);
        let response = client.get(url.parse().unwrap()).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut received = 0usize;
        while received < 2 * MIB {
            let frame = body.frame().await.expect("a frame").expect("data");
            received += frame.data_ref().map_or(0, Bytes::len);
        }
        let (s, v) = admin_call(
            "POST",
            &proxy.admin_url(&format!("/api/v1/pools/{pool}/upstreams/{}/drain", up.addr)),
            Some(serde_json::json!({"timeout": "1s"})),
            None,
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let cut = tokio::time::timeout(DEADLINE, async {
            loop {
                match body.frame().await {
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return format!("error: {e}"),
                    None => return "ended".to_string(),
                }
            }
        })
        .await
        .expect("the stream is cut at the drain deadline");
        // Cut, not completed: the client sees the body end early.
        assert!(cut.starts_with("error"), "{pool}: {cut}");
        let (_, status) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
        assert_eq!(
            status["pools"][0]["upstreams"][0]["state"], "drained",
            "{pool}"
        );
        let admin = proxy.admin_url("");
        let cut = gauge(
            admin.trim_end_matches('/'),
            &format!(
                "cutover_responses_drained_total{{upstream=\"{}\"}}",
                up.addr
            ),
        )
        .await;
        assert_eq!(cut, 1.0, "{pool}");
        proxy.stop().await;
    }
}
