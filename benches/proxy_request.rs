//! A whole request through the proxy, in process: a hyper client on a
//! keep-alive connection → cutover (routing, pick, header rewriting,
//! upstream pool, metrics) → a hyper upstream answering 96 bytes, all on
//! loopback in one current-thread runtime. Measures the proxy's own cost
//! per request plus two loopback round trips; compare runs of this bench,
//! not its absolute figure. See docs/benchmarks.md.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

// The allocator the binary uses (src/main.rs), so figures match it.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BODY: &[u8; 96] = &[b'x'; 96];

async fn upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(BODY))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn whole_request(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let state = tempfile::tempdir().expect("state dir");
    let (running, mut sender) = runtime.block_on(async {
        let up = upstream().await;
        let config = format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"\n\
             [state]\ndir = \"{}\"\n[[route]]\nname = \"app\"\nsplit = {{ p = 1 }}\n\
             [pool.p]\nupstreams = [ {{ addr = \"{up}\" }} ]\n",
            state.path().display()
        );
        let config = cutover::config::Config::parse("bench.toml", &config).expect("config");
        let running = cutover::lifecycle::start(config, None)
            .await
            .expect("proxy starts");
        let stream = tokio::net::TcpStream::connect(running.addrs()[0])
            .await
            .expect("connect to the proxy");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        (running, sender)
    });
    c.bench_function("proxy/whole_request_h1", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request = hyper::Request::get("/")
                    .header("host", "app.example.com")
                    .header("user-agent", "bench/1.0")
                    .header("accept", "*/*")
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let response = sender.send_request(request).await.expect("response");
                assert_eq!(response.status(), 200);
                let body = response.into_body().collect().await.expect("body");
                assert_eq!(body.to_bytes().len(), BODY.len());
            })
        })
    });
    runtime.block_on(async {
        drop(sender);
        tokio::time::timeout(Duration::from_secs(5), running.stop())
            .await
            .ok();
    });
}

criterion_group!(benches, whole_request);
criterion_main!(benches);
