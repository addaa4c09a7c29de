//! Connection handling: upstream keep-alive reuse, the client connection
//! limit, and closing idle client connections.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn upstream_connections_are_reused() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let client = http1_client();
    for _ in 0..100 {
        assert_eq!(
            get(&client, &format!("http://{}/", proxy.addrs()[0]))
                .await
                .0,
            200
        );
    }
    assert_eq!(up.hits(), 100);
    assert_eq!(
        up.connections(),
        1,
        "sequential requests should share one pooled connection"
    );
    proxy.stop().await;
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";

/// Reads until a whole response to `REQUEST` (ending in "up\n") arrived.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.ends_with(b"up\n") {
        let n = s.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn connection_limit_queues_extra_clients() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(
        &[("p", 1, &[up.addr])],
        "[proxy]\nmax_connections = 1\n",
    ))
    .await;
    let addr = proxy.addrs()[0];

    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(REQUEST).await.unwrap();
    assert!(read_response(&mut first).await.starts_with("HTTP/1.1 200"));

    // The kernel accepts the second connection, but the proxy does not serve
    // it while the first holds the only slot.
    let mut second = TcpStream::connect(addr).await.unwrap();
    second.write_all(REQUEST).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), second.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "second connection was served past the limit"
    );

    drop(first);
    let answer = tokio::time::timeout(DEADLINE, read_response(&mut second))
        .await
        .expect("served once a slot frees");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    proxy.stop().await;
}

#[tokio::test]
async fn idle_client_connections_are_closed() {
    let up = TestUpstream::start("up").await;
    let config = "[proxy]\nidle_timeout = \"300ms\"\nclient_header_timeout = \"120s\"\n";
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], config)).await;
    let mut s = TcpStream::connect(proxy.addrs()[0]).await.unwrap();
    s.write_all(REQUEST).await.unwrap();
    read_response(&mut s).await;
    // Well before client_header_timeout, the idle timer closes the connection.
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(DEADLINE, s.read(&mut byte))
        .await
        .expect("idle connection closed");
    assert_eq!(n.unwrap_or(0), 0);
    proxy.stop().await;
}

/// A gauge's value in the process's `/metrics`.
async fn gauge(admin: &str, name: &str) -> f64 {
    let (_, text) = admin_call("GET", &format!("{admin}/metrics"), None, None).await;
    text.as_str()
        .unwrap_or("")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// An idle HTTP/1.1 keep-alive connection is parked (its buffers dropped)
/// and served again, on the same socket, when its client sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_parked_and_served_again() {
    let up = TestUpstream::start("up").await;
    let process = crate::process::Process::start(&split_config(&[("p", 1, &[up.addr])], ""));
    let admin = format!("http://{}", crate::process::admin_addr_of(&process));
    let mut stream = TcpStream::connect(process.addr).await.unwrap();
    for round in 0..2 {
        stream.write_all(REQUEST).await.unwrap();
        let response = read_response(&mut stream).await;
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "round {round}: {response}"
        );
        wait_until("the idle connection is parked", || async {
            gauge(&admin, "cutover_client_connections_parked").await == 1.0
        })
        .await;
    }
    // A request in two writes around the wake-up still arrives whole.
    stream.set_nodelay(true).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
    stream.write_all(b"st: app\r\n\r\n").await.unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(up.hits(), 3);
    assert_eq!(up.connections(), 1, "upstream connection reused throughout");
}
