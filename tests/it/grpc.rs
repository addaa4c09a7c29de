//! gRPC end to end: a tonic client → cutover (h2c) → a tonic server
//! (grpc.health.v1) over an `h2` pool. Unary and server-streaming calls,
//! trailers (`grpc-status`) passed through, and cutover's own failures
//! answered as gRPC statuses: UNAVAILABLE with no upstream, and
//! DEADLINE_EXCEEDED when the upstream does not answer in time.

use std::net::SocketAddr;

use tonic::Code;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_client::HealthClient;

use crate::support::*;

/// A tonic health server on an ephemeral port; the reporter sets what it
/// answers.
async fn health_server() -> (
    SocketAddr,
    tonic_health::server::HealthReporter,
    tokio::task::JoinHandle<()>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("app", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    (addr, reporter, task)
}

fn h2_pool(addr: SocketAddr, proxy_settings: &str) -> String {
    format!(
        "{proxy_settings}\n[[route]]\nname = \"grpc\"\nsplit = {{ g = 1 }}\n[pool.g]\nprotocol = \"h2\"\nupstreams = [{{ addr = \"{addr}\" }}]\n"
    )
}

async fn client(proxy: &TestProxy) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.addrs()[0]))
        .unwrap()
        .connect()
        .await
        .expect("connect to the proxy");
    HealthClient::new(channel)
}

fn ask(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_pass_through_with_their_trailers() {
    let (server, reporter, _task) = health_server().await;
    let proxy = start_proxy(&h2_pool(server, "")).await;
    let mut client = client(&proxy).await;

    let answer = client.check(ask("app")).await.expect("unary call");
    assert_eq!(answer.get_ref().status, Wire::Serving as i32);
    // A status only the server's trailers carry: NOT_FOUND for an unknown
    // service.
    let err = client.check(ask("nope")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Server streaming: the first status, then a change pushed live.
    let mut stream = client.watch(ask("app")).await.expect("watch").into_inner();
    let first = stream.message().await.unwrap().expect("a first message");
    assert_eq!(first.status, Wire::Serving as i32);
    reporter
        .set_service_status("app", ServingStatus::NotServing)
        .await;
    let next = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("the change arrives")
        .unwrap()
        .expect("a second message");
    assert_eq!(next.status, Wire::NotServing as i32);
    // The open stream would hold the graceful stop for its deadline.
    drop((stream, client));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_s_own_failures_are_grpc_statuses() {
    // Nothing listens: UNAVAILABLE.
    let proxy = start_proxy(&h2_pool(closed_port(), "")).await;
    let err = client(&proxy).await.check(ask("app")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(!err.message().is_empty(), "{err:?}");
    proxy.stop().await;

    // An upstream that takes longer than response_header_timeout:
    // DEADLINE_EXCEEDED.
    let slow = TestUpstream::start("slow").await;
    slow.delay(3_000);
    let proxy = start_proxy(&h2_pool(
        slow.addr,
        "[proxy]\nresponse_header_timeout = \"300ms\"",
    ))
    .await;
    let err = client(&proxy).await.check(ask("app")).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    proxy.stop().await;
}

/// `health = { grpc = true }` asks grpc.health.v1 over the pool's HTTP/2:
/// SERVING is healthy, NOT_SERVING takes the upstream out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_checks_follow_the_serving_status() {
    let (server, reporter, _task) = health_server().await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let config = h2_pool(server, "").replace(
        "protocol = \"h2\"",
        "protocol = \"h2\"\nhealth = { grpc = true, interval = \"500ms\", timeout = \"500ms\", rise = 1, fall = 1 }",
    );
    let proxy = start_proxy(&config).await;
    let state = || async {
        let (_, v) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
        v["pools"][0]["upstreams"][0]["health"].clone()
    };
    wait_until("healthy by gRPC", || async { state().await == "healthy" }).await;
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    wait_until("unhealthy once NOT_SERVING", || async {
        state().await == "unhealthy"
    })
    .await;
    proxy.stop().await;
}
