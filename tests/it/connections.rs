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
    let config = "[proxy]\nidle_timeout = \"300ms\"\nrequest_header_timeout = \"120s\"\n";
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], config)).await;
    let mut s = TcpStream::connect(proxy.addrs()[0]).await.unwrap();
    s.write_all(REQUEST).await.unwrap();
    read_response(&mut s).await;
    // Well before request_header_timeout, the idle timer closes the connection.
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(DEADLINE, s.read(&mut byte))
        .await
        .expect("idle connection closed");
    assert_eq!(n.unwrap_or(0), 0);
    proxy.stop().await;
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

/// A parked connection is closed (cleanly) once idle for `idle_timeout`,
/// not before, and leaves both connection gauges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_close_at_their_idle_timeout() {
    let up = TestUpstream::start("up").await;
    let idle_timeout = Duration::from_secs(3);
    let config = format!("[proxy]\nidle_timeout = \"{}s\"\n", idle_timeout.as_secs());
    let process = crate::process::Process::start(&split_config(&[("p", 1, &[up.addr])], &config));
    let admin = format!("http://{}", crate::process::admin_addr_of(&process));
    let mut stream = TcpStream::connect(process.addr).await.unwrap();
    stream.write_all(REQUEST).await.unwrap();
    read_response(&mut stream).await;
    let idle_from = std::time::Instant::now();
    wait_until("the idle connection is parked", || async {
        gauge(&admin, "cutover_client_connections_parked").await == 1.0
    })
    .await;
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(DEADLINE, stream.read(&mut byte))
        .await
        .expect("the parked connection is closed");
    assert_eq!(n.expect("closed, not reset"), 0);
    // The proxy's idle clock starts a moment before ours.
    let idle_for = idle_from.elapsed();
    assert!(
        idle_for >= idle_timeout - Duration::from_millis(500),
        "closed after {idle_for:?}, before idle_timeout"
    );
    wait_until("no connection is counted any more", || async {
        gauge(&admin, "cutover_client_connections").await == 0.0
            && gauge(&admin, "cutover_client_connections_parked").await == 0.0
    })
    .await;
}

/// Many parked connections whose clients all send at once are all served,
/// park again, leave the gauges as their clients hang up, and do not hold
/// up a SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_parked_connections_are_served_again_at_once() {
    const CLIENTS: usize = 100;
    let up = TestUpstream::start("up").await;
    // A stop that waited for parked connections would take a minute.
    let config = "[proxy]\nshutdown_timeout = \"60s\"\n";
    let mut process =
        crate::process::Process::start(&split_config(&[("p", 1, &[up.addr])], config));
    let admin = format!("http://{}", crate::process::admin_addr_of(&process));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut stream = TcpStream::connect(process.addr).await.unwrap();
        stream.write_all(REQUEST).await.unwrap();
        read_response(&mut stream).await;
        clients.push(stream);
    }
    for round in 0..2 {
        wait_until("every idle connection is parked", || async {
            gauge(&admin, "cutover_client_connections_parked").await == CLIENTS as f64
        })
        .await;
        let sent = clients.into_iter().map(|mut stream| {
            tokio::spawn(async move {
                stream.write_all(REQUEST).await.unwrap();
                let answer = tokio::time::timeout(DEADLINE, read_response(&mut stream))
                    .await
                    .expect("answered");
                (answer, stream)
            })
        });
        clients = Vec::new();
        for task in sent.collect::<Vec<_>>() {
            let (answer, stream) = task.await.unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 200"),
                "round {round}: {answer}"
            );
            clients.push(stream);
        }
    }
    assert_eq!(up.hits(), 3 * CLIENTS);
    wait_until("every idle connection is parked again", || async {
        gauge(&admin, "cutover_client_connections_parked").await == CLIENTS as f64
    })
    .await;
    clients.truncate(CLIENTS / 2);
    wait_until("hung-up clients leave the gauges", || async {
        gauge(&admin, "cutover_client_connections_parked").await == (CLIENTS / 2) as f64
            && gauge(&admin, "cutover_client_connections").await == (CLIENTS / 2) as f64
    })
    .await;
    process.signal("TERM");
    assert!(process.wait_exit().success());
    for mut stream in clients {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut byte))
            .await
            .expect("closed at the stop");
        assert_eq!(n.unwrap_or(0), 0);
    }
}

/// Pooled upstream connections idle past `upstream_idle_timeout` are
/// closed even when no further request comes along to notice.
#[tokio::test]
async fn idle_upstream_connections_close_after_upstream_idle_timeout() {
    let up = TestUpstream::start("up").await;
    let config = "[proxy]\nupstream_idle_timeout = \"1s\"\n";
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], config)).await;
    let url = format!("http://{}/", proxy.addrs()[0]);
    assert_eq!(get(&http1_client(), &url).await.0, 200);
    assert_eq!(up.connections(), 1);
    // The test upstream never closes an idle connection itself.
    wait_until("the idle upstream connection is closed", || async {
        up.open_connections() == 0
    })
    .await;
    // The next request opens a fresh one.
    assert_eq!(get(&http1_client(), &url).await.0, 200);
    assert_eq!(up.connections(), 2);
    proxy.stop().await;
}

/// Waves of requests above `upstream_max_idle` reuse the connections of
/// the wave before (closed when it ended, each wave opened them again: a
/// TCP handshake and a TIME_WAIT socket per request over the limit); the
/// surplus closes once the load has passed.
#[tokio::test]
async fn a_load_above_upstream_max_idle_reuses_its_connections() {
    const WAVE: usize = 8;
    let up = TestUpstream::start("up").await;
    let config = "[proxy]\nupstream_max_idle = 2\n";
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], config)).await;
    let url = format!("http://{}/slow?ms=100", proxy.addrs()[0]);
    let client = http1_client();
    for _ in 0..3 {
        let wave = (0..WAVE).map(|_| get(&client, &url));
        for (status, _) in futures_util::future::join_all(wave).await {
            assert_eq!(status, 200);
        }
    }
    assert_eq!(up.hits(), 3 * WAVE);
    // Every wave needs WAVE connections at once: the first opens them,
    // the others find them in the pool (a little slack for a response
    // that reached the client before its connection was back).
    assert!(
        up.connections() <= WAVE + 2,
        "{} upstream connections for 3 waves of {WAVE}",
        up.connections()
    );
    wait_until("the surplus over upstream_max_idle is closed", || async {
        up.open_connections() == 2
    })
    .await;
    proxy.stop().await;
}

/// A pooled connection the upstream closed (here: the upstream restarted)
/// is skipped, not used: the request goes out on a new connection.
#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_costs_the_client_nothing() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let url = format!("http://{}/", proxy.addrs()[0]);
    assert_eq!(get(&http1_client(), &url).await, (200, "up\n".to_string()));
    up.kill();
    // The killed upstream's listener closes once its task is dropped.
    let listener = std::sync::Mutex::new(None);
    wait_until("the port can be bound again", || async {
        let bound = tokio::net::TcpListener::bind(up.addr).await.ok();
        let done = bound.is_some();
        *listener.lock().unwrap() = bound;
        done
    })
    .await;
    let listener = listener.into_inner().unwrap().expect("bound");
    let restarted = TestUpstream::serve("again", listener);
    assert_eq!(
        get(&http1_client(), &url).await,
        (200, "again\n".to_string())
    );
    assert_eq!(restarted.connections(), 1);
    proxy.stop().await;
}

/// An HTTP/1.0 request without `Host` reaches the upstream with one (the
/// upstream's address) and an origin-form target.
#[tokio::test]
async fn http10_request_without_host_gets_one_upstream() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let mut s = TcpStream::connect(proxy.addrs()[0]).await.unwrap();
    s.write_all(b"GET /headers HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut answer))
        .await
        .expect("HTTP/1.0: the proxy closes after the response")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(
        answer.contains(&format!("\nhost: {}\n", up.addr)),
        "{answer}"
    );
    proxy.stop().await;
}

/// Sends a request head one byte at a time, never finishing it, until the
/// proxy answers or closes; returns the answer and how long after the
/// first byte it came.
async fn trickle_head(stream: TcpStream) -> (String, Duration) {
    let (mut read, mut write) = stream.into_split();
    let trickle = async move {
        let head = format!("GET / HTTP/1.1\r\nhost: a\r\nx-pad: {}", "a".repeat(400));
        for byte in head.bytes() {
            if write.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let started = std::time::Instant::now();
    let answer = async move {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(DEADLINE, read.read_to_end(&mut out)).await;
        (
            String::from_utf8_lossy(&out).into_owned(),
            started.elapsed(),
        )
    };
    tokio::select! {
        () = trickle => panic!("the whole trickled head was taken without an answer"),
        answered = answer => answered,
    }
}

/// A head trickled a byte at a time is cut off at `request_header_timeout`
/// counted from its first byte — each byte does not buy more time — with
/// a 408 before the close.
#[tokio::test]
async fn a_trickled_request_head_gets_408_at_the_deadline() {
    let up = TestUpstream::start("up").await;
    let config = "[proxy]\nrequest_header_timeout = \"2s\"\n";
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], config)).await;
    let stream = TcpStream::connect(proxy.addrs()[0]).await.unwrap();
    let (answer, after) = trickle_head(stream).await;
    assert!(
        answer.starts_with("HTTP/1.1 408 ") && answer.contains("connection: close"),
        "{answer:?}"
    );
    assert!(
        after >= Duration::from_millis(1900),
        "cut off early: {after:?}"
    );
    // 40 s of trickle if each byte refreshed the timer; generous for CI.
    assert!(
        after < Duration::from_secs(12),
        "not cut off in time: {after:?}"
    );
    assert_eq!(up.hits(), 0);
    // Other clients never noticed.
    let client = http1_client();
    assert_eq!(
        get(&client, &format!("http://{}/", proxy.addrs()[0]))
            .await
            .0,
        200
    );
    proxy.stop().await;
}

/// On a keep-alive connection the head deadline starts at the next
/// request's first byte: time spent idle before it (here longer than the
/// deadline itself) is the idle timeout's business, not the head's.
#[tokio::test]
async fn the_head_deadline_on_a_keep_alive_connection_starts_at_its_first_byte() {
    let up = TestUpstream::start("up").await;
    let config = "[proxy]\nrequest_header_timeout = \"3s\"\nidle_timeout = \"60s\"\n";
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], config)).await;
    let mut stream = TcpStream::connect(proxy.addrs()[0]).await.unwrap();
    stream.write_all(REQUEST).await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Idle for longer than the head deadline: the subject of the test, not
    // a synchronisation.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (answer, after) = trickle_head(stream).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert!(
        after >= Duration::from_millis(2900),
        "cut off early: {after:?}"
    );
    assert!(
        after < Duration::from_secs(15),
        "not cut off in time: {after:?}"
    );
    proxy.stop().await;
}
