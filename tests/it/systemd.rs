//! systemd integration, with the test standing in for systemd: a unix
//! datagram socket as `NOTIFY_SOCKET`, `systemd-socket-activate` for
//! `LISTEN_FDS`, and `systemd-analyze verify` on the unit files.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::process::Process;
use crate::support::*;

/// Reads notify messages until one contains `want`, within the deadline.
fn expect_message(socket: &UnixDatagram, seen: &mut Vec<String>, want: &str) {
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m| m.contains(want)) {
        assert!(
            start.elapsed() < DEADLINE,
            "no {want:?} from cutover; got {seen:?}"
        );
        if let Ok(n) = socket.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_ready_reloading_stopping_and_watchdog() {
    let up = TestUpstream::start("up").await;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&sock_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let sock = sock_path.display().to_string();
    let mut process = Process::start_with(
        &split_config(&[("p", 1, &[up.addr])], ""),
        dir,
        &[],
        &[("NOTIFY_SOCKET", &sock), ("WATCHDOG_USEC", "300000")],
    );
    let mut seen = Vec::new();
    expect_message(&socket, &mut seen, "READY=1");
    assert!(
        seen.iter().any(|m| m.contains("STATUS=1 listener(s)")),
        "{seen:?}"
    );
    expect_message(&socket, &mut seen, "WATCHDOG=1");

    seen.clear();
    process.signal("HUP");
    expect_message(&socket, &mut seen, "RELOADING=1");
    assert!(
        seen.iter().any(|m| m.contains("MONOTONIC_USEC=")),
        "{seen:?}"
    );
    expect_message(&socket, &mut seen, "READY=1");

    process.signal("TERM");
    expect_message(&socket, &mut seen, "STOPPING=1");
    assert!(process.wait_exit().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_a_socket_passed_by_socket_activation() {
    if !tool_present("systemd-socket-activate", "systemd") {
        return;
    }
    let up = TestUpstream::start("activated").await;
    let addr = free_port();
    let config = format!(
        "[[listener]]\nbind = \"{addr}\"\n{}",
        split_config(&[("p", 1, &[up.addr])], "")
    );
    let listen = addr.to_string();
    // systemd-socket-activate starts cutover on the first connection.
    let knock = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while start.elapsed() < DEADLINE {
            if std::net::TcpStream::connect(addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let process = Process::start_with(
        &config,
        tempfile::tempdir().unwrap(),
        &["systemd-socket-activate", "--listen", &listen],
        &[],
    );
    knock.join().unwrap();
    assert_eq!(process.addr, addr);
    assert_eq!(
        get(&http1_client(), &format!("http://{addr}/")).await,
        (200, "activated\n".to_string())
    );
    assert!(
        process.logged("listener passed by systemd") > 0,
        "the socket was bound by cutover, not passed"
    );
}

#[test]
fn unit_files_pass_systemd_analyze_verify() {
    if !tool_present("systemd-analyze", "systemd") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    // verify checks that ExecStart's program exists: point it at this build.
    let service = std::fs::read_to_string(root.join("config/cutover.service"))
        .unwrap()
        .replace("/usr/bin/cutover", env!("CARGO_BIN_EXE_cutover"))
        .replace(
            "/etc/cutover/cutover.toml",
            &root.join("config/cutover.toml").display().to_string(),
        );
    std::fs::write(dir.path().join("cutover.service"), service).unwrap();
    std::fs::copy(
        root.join("config/cutover.socket"),
        dir.path().join("cutover.socket"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("cutover.service"))
        .arg(dir.path().join("cutover.socket"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}
