//! Logs a client cannot flood: what any client can cause on every
//! connection or request is logged at debug, or a few lines a second.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::Process;
use crate::support::*;

/// A TLS 1.3 ClientHello whose SNI is the IP address 127.0.0.1 — what
/// wrk, and many health checkers, send (rustls's clients never do).
fn client_hello_with_ip_sni() -> Vec<u8> {
    fn with_len16(body: &[u8]) -> Vec<u8> {
        let mut out = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }
    fn extension(kind: u16, body: &[u8]) -> Vec<u8> {
        [&kind.to_be_bytes()[..], &with_len16(body)].concat()
    }
    let name = b"127.0.0.1";
    let sni = with_len16(&[&[0u8][..], &with_len16(name)].concat());
    let key_share = with_len16(&[&[0x00, 0x1d][..], &with_len16(&[7u8; 32])].concat());
    let extensions = [
        extension(0x0000, &sni),
        extension(0x002b, &[2, 0x03, 0x04]),           // TLS 1.3
        extension(0x000a, &with_len16(&[0x00, 0x1d])), // x25519
        extension(0x000d, &with_len16(&[0x04, 0x03, 0x08, 0x04])),
        extension(0x0033, &key_share),
    ]
    .concat();
    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[1u8; 32]); // random
    hello.push(0); // no session id
    hello.extend(with_len16(&[0x13, 0x01]));
    hello.extend_from_slice(&[1, 0]); // no compression
    hello.extend(with_len16(&extensions));
    let len = u32::try_from(hello.len()).unwrap().to_be_bytes();
    let handshake = [&[1u8][..], &len[1..], &hello].concat();
    [&[0x16, 0x03, 0x01][..], &with_len16(&handshake)].concat()
}

/// Sends the ClientHello, waits for the server's first answer, hangs up.
async fn hello(addr: std::net::SocketAddr, bytes: &[u8]) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut answer = [0u8; 5];
    let _ = tokio::time::timeout(DEADLINE, s.read(&mut answer)).await;
}

fn tls_process(env: &[(&str, &str)]) -> (Process, tempfile::TempDir) {
    let (_ca, certs, listener) = crate::tls::app_test_listener("127.0.0.1:0");
    let process = Process::start_with(
        &format!(
            "{listener}\n{}",
            split_config(&[("p", 1, &[free_port()])], "")
        ),
        tempfile::tempdir().unwrap(),
        &[],
        env,
    );
    (process, certs)
}

/// 10,000 connections with an IP address as SNI, under `CUTOVER_LOG=info`
/// (an operator's natural setting): the log does not grow with them. The
/// same hello does make rustls warn when rustls's warnings are asked for,
/// so the probe is real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_ip_sni_connections_leave_the_log_small() {
    let bytes = client_hello_with_ip_sni();
    let (loud, _certs) = tls_process(&[("CUTOVER_LOG", "info,rustls=warn")]);
    for _ in 0..10 {
        hello(loud.addr, &bytes).await;
    }
    wait_until("rustls warns about the IP address", || async {
        loud.logged("Illegal SNI") >= 10
    })
    .await;
    drop(loud);

    let (quiet, _certs) = tls_process(&[("CUTOVER_LOG", "info")]);
    let before = quiet.log.lock().unwrap().len();
    let addr = quiet.addr;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let bytes = bytes.clone();
            tokio::spawn(async move {
                for _ in 0..2_500 {
                    hello(addr, &bytes).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let lines = quiet.log.lock().unwrap().len() - before;
    assert!(lines < 20, "{lines} log lines for 10,000 connections");
}

/// Every request to a dead upstream fails (502) and would warn: at most
/// `LINES_PER_SECOND` lines a second are written, and the next one says
/// how many were left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_failures_are_logged_a_few_times_a_second() {
    let config = split_config(&[("p", 1, &[closed_port()])], "[proxy]\nretries = 0\n");
    let process = Process::start(&config);
    let url = format!("http://{}/", process.addr);
    let client = http1_client();
    let started = std::time::Instant::now();
    for _ in 0..2_000 {
        assert_eq!(get(&client, &url).await.0, 502);
    }
    // The failures spread over at most this many calendar seconds.
    let seconds = started.elapsed().as_secs() + 2;
    let limit = cutover::telemetry::LINES_PER_SECOND * seconds;
    // One more failure in a later second is let through, and says how
    // many were left out before it. (The wait is the rate window itself.)
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(get(&client, &url).await.0, 502);
    wait_until("the next failure reports the suppressed", || async {
        process
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("request failed") && !l.contains("suppressed=0"))
    })
    .await;
    let lines = process.logged("request failed") as u64;
    assert!(
        lines <= limit + 1,
        "{lines} lines for 2,001 failures in {seconds} s"
    );
}
