//! Faults through the real binary: the state directory filling up or
//! mounted read-only (small tmpfs mounts; the tests run as root, as CI
//! does), and upstreams that half-close.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::process::{Process, admin_addr_of};
use crate::support::*;

/// Whether this process may mount a tmpfs (root). Under CI it must.
fn may_mount() -> bool {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        assert!(
            std::env::var("CI").is_err(),
            "the fault tests mount a tmpfs: CI runs them as root"
        );
        eprintln!("SKIPPED: mounting a tmpfs needs root");
    }
    root
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN); these tests need it"
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes zeros to `path` until the file system is full; bounded.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    for _ in 0..10_000 {
        if file
            .write_all(&chunk)
            .and_then(|()| file.sync_all())
            .is_err()
        {
            return;
        }
    }
    panic!("{} never filled up", path.display());
}

fn saved_split(state: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(state.join("runtime.json")).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&text).expect("runtime.json stays valid");
    saved["splits"]["app"]["split"].clone()
}

/// A full state directory: the change is refused with a 5xx naming the
/// problem, is not applied, leaves no partial file, and the last state
/// still loads after a restart; traffic never notices. With room again,
/// changes work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_directory_refuses_the_change_and_keeps_the_last_state() {
    if !may_mount() {
        return;
    }
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let config = split_config(
        &[("blue", 100, &[blue.addr]), ("green", 0, &[green.addr])],
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mount = Tmpfs::mount(&state, "size=512k");
    let process = Process::start_in(&config, dir);
    let admin = format!("http://{}", admin_addr_of(&process));
    let split_url = format!("{admin}/api/v1/routes/app/split");
    let set_split = |split| admin_call("PUT", &split_url, Some(split), None);
    let run = load(format!("http://{}/", process.addr), 4);

    let (status, body) = set_split(json!({"blue": 50, "green": 50})).await;
    assert_eq!(status, 200, "{body}");
    fill(&state.join("filler"));
    let (status, body) = set_split(json!({"blue": 0, "green": 100})).await;
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("runtime.json") && error.contains("No space left on device"),
        "{body}"
    );
    assert_eq!(saved_split(&state), json!({"blue": 50, "green": 50}));
    assert!(
        !state.join("runtime.json.tmp").exists(),
        "a partial file was left"
    );
    let (_, status_now) = admin_call("GET", &format!("{admin}/api/v1/status"), None, None).await;
    assert_eq!(
        status_now["routes"][0]["split"],
        json!({"blue": 50, "green": 50})
    );

    std::fs::remove_file(state.join("filler")).unwrap();
    let (status, body) = set_split(json!({"blue": 0, "green": 100})).await;
    assert_eq!(status, 200, "{body}");
    let (sent, failed) = run.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    assert!(sent > 0);

    // The state the restart loads is the last acknowledged one.
    let dir = process.into_dir();
    let process = Process::start_in(&config, dir);
    let (status, body) = get(&http1_client(), &format!("http://{}/", process.addr)).await;
    assert_eq!((status, body.as_str()), (200, "green\n"));
    let dir = process.into_dir();
    drop(mount);
    drop(dir);
}

/// A state directory that cannot be written at start: a clear error
/// naming it, and a non-zero exit — never a proxy that would lose every
/// change it acknowledges.
#[tokio::test]
async fn a_read_only_state_directory_stops_the_start() {
    if !may_mount() {
        return;
    }
    let up = TestUpstream::start("up").await;
    let config = split_config(&[("p", 1, &[up.addr])], "");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mount = Tmpfs::mount(&state, "ro,size=64k");
    let out = crate::process::run_expecting_exit(&config, &state, dir.path()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("state directory {}", state.display()))
            && stderr.contains("Read-only file system"),
        "{stderr}"
    );
    drop(mount);
}

/// A raw upstream: reads each connection's request head, then does what
/// `answer` says, then half-closes (FIN) and keeps reading until the proxy
/// closes its side.
async fn half_closing_upstream(answer: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(answer).await;
                let _ = s.shutdown().await;
                // Half-closed: still reading, until the proxy hangs up.
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// An upstream that answers with a close-delimited body and half-closes:
/// the client gets the whole body, framed, and the next request works (on
/// a new upstream connection). One that half-closes without answering is
/// a 502 at once — not a wait for `response_header_timeout` (504).
#[tokio::test]
async fn upstreams_that_half_close() {
    let answers = half_closing_upstream(b"HTTP/1.1 200 OK\r\n\r\nall of the body\n").await;
    let silent = half_closing_upstream(b"").await;
    let config = format!(
        "[proxy]\nresponse_header_timeout = \"60s\"\nretries = 0\n{}",
        split_config(&[("p", 1, &[answers])], "")
    );
    let proxy = start_proxy(&config).await;
    let client = http1_client();
    let url = format!("http://{}/", proxy.addrs()[0]);
    for _ in 0..3 {
        assert_eq!(
            get(&client, &url).await,
            (200, "all of the body\n".to_string())
        );
    }
    proxy.stop().await;

    let config = format!(
        "[proxy]\nresponse_header_timeout = \"60s\"\nretries = 0\n{}",
        split_config(&[("p", 1, &[silent])], "")
    );
    let proxy = start_proxy(&config).await;
    let url = format!("http://{}/", proxy.addrs()[0]);
    let started = std::time::Instant::now();
    let (status, _) = get(&http1_client(), &url).await;
    assert_eq!(status, 502);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    proxy.stop().await;
}

/// 10,000 idle keep-alive client connections, then load: every load
/// request is served, and the idle connections are all still usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_and_load() {
    use tokio::io::AsyncWriteExt;
    const IDLE: usize = 10_000;
    let up = TestUpstream::start("up").await;
    let config = split_config(
        &[("p", 1, &[up.addr])],
        "[proxy]\nmax_connections = 11000\n",
    );
    let process = Process::start(&config);
    let admin = format!("http://{}", admin_addr_of(&process));
    let addr = process.addr;

    // 100 tasks open 100 keep-alive connections each, one request apiece.
    let openers: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn(async move {
                let mut conns = Vec::new();
                for _ in 0..IDLE / 100 {
                    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
                    s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
                        .await
                        .unwrap();
                    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
                    conns.push(s);
                }
                conns
            })
        })
        .collect();
    let mut idle = Vec::with_capacity(IDLE);
    for opener in openers {
        idle.extend(opener.await.unwrap());
    }
    assert!(gauge(&admin, "cutover_client_connections").await >= IDLE as f64);

    let run = load(format!("http://{addr}/"), 8);
    wait_until("the load sends 3,000 requests", || async {
        run.sent() > 3_000
    })
    .await;
    let (sent, failed) = run.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed beside {IDLE} idle connections"
    );

    // Every 100th idle connection still answers.
    for s in idle.iter_mut().step_by(100) {
        s.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(s).await.starts_with("HTTP/1.1 200"));
    }
    assert_eq!(process.logged("out of file descriptors"), 0);
}

/// At the open-files limit new connections wait in the kernel's accept
/// queue (none is refused), the log says why once per 10 s rather than
/// once per try, and they are served once connections close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_is_logged_once_and_recovers() {
    let up = TestUpstream::start("up").await;
    let config = split_config(&[("p", 1, &[up.addr])], "");
    let dir = tempfile::tempdir().unwrap();
    let process = Process::start_with(
        &config,
        dir,
        &["sh", "-c", "ulimit -n 128 && exec \"$@\"", "sh"],
        &[],
    );
    assert!(process.logged("open-files limit is below what max_connections may need") >= 1);
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(
            tokio::net::TcpStream::connect(process.addr)
                .await
                .expect("the kernel queues it"),
        );
    }
    wait_until("the limit is logged", || async {
        process.logged("out of file descriptors") >= 1
    })
    .await;
    // A request made now waits in the queue, and is served once the held
    // connections close.
    let url = format!("http://{}/", process.addr);
    let waiting = tokio::spawn(async move { get(&fresh_connection_client(), &url).await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    drop(held);
    let (status, body) = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("served after the held connections closed")
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "up\n"));
    assert!(
        process.logged("out of file descriptors") <= 2,
        "{} lines",
        process.logged("out of file descriptors")
    );
}
