//! Binary upgrade through the real binary: the executable at the path the
//! process was started from is replaced, then started by the running one,
//! which hands over its sockets and retires. Under load, with a test
//! standing in for systemd's `NOTIFY_SOCKET`.

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::process::{Process, admin_addr_of};
use crate::support::*;

/// Puts a fresh copy of the built binary at `dir/cutover` the way a
/// package upgrade does: a new file written aside, renamed over the old
/// one. Alternates between two inodes (hard links, cheap) so each call
/// really replaces the file. Returns the path and the new inode.
fn install_binary(dir: &Path, generation: usize) -> (PathBuf, u64) {
    let built = Path::new(env!("CARGO_BIN_EXE_cutover"));
    let copy = dir.join("cutover.copy");
    if !copy.exists() {
        std::fs::copy(built, &copy).unwrap();
    }
    let source = if generation.is_multiple_of(2) {
        &copy
    } else {
        built
    };
    let aside = dir.join("cutover.new");
    let _ = std::fs::remove_file(&aside);
    if std::fs::hard_link(source, &aside).is_err() {
        std::fs::copy(source, &aside).unwrap();
    }
    let path = dir.join("cutover");
    std::fs::rename(&aside, &path).unwrap();
    let inode = std::fs::metadata(&path).unwrap().ino();
    (path, inode)
}

/// Starts `cutover run` from a copy of the binary in a directory of its
/// own, so the file at its start path can be replaced; returns the
/// process and that path.
fn start_from_copy(config: &str, env: &[(&str, &str)]) -> (Process, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (exe, _) = install_binary(dir.path(), 0);
    (Process::start_program(&exe, config, dir, &[], env), exe)
}

/// Replaces the file at `exe` with a shell script: a broken release.
fn install_script(exe: &Path, script: &str) {
    let aside = exe.with_extension("broken");
    std::fs::write(&aside, script).unwrap();
    let mut perms = std::fs::metadata(&aside).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&aside, perms).unwrap();
    std::fs::rename(&aside, exe).unwrap();
}

/// The inode of the file `pid` is running.
fn running_inode(pid: u32) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/exe")).unwrap().ino()
}

/// Exited: gone, or a zombie nobody has reaped yet.
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

fn kill(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

/// Processes the test started indirectly (the upgrades' new processes),
/// killed when the test ends however it ends.
pub(crate) struct Pids(pub(crate) Vec<u32>);

impl Drop for Pids {
    fn drop(&mut self) {
        for pid in &self.0 {
            if !exited(*pid) {
                kill("KILL", *pid);
            }
        }
    }
}

async fn status(admin: &str) -> serde_json::Value {
    admin_call("GET", &format!("{admin}/api/v1/status"), None, None)
        .await
        .1
}

async fn pid_of(admin: &str) -> u32 {
    let pid = status(admin).await["pid"]
        .as_u64()
        .expect("status has a pid");
    u32::try_from(pid).unwrap()
}

/// Collects `NOTIFY_SOCKET` messages on a thread.
struct Notifications {
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Notifications {
    fn listen() -> Notifications {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with the test process; recv blocks only this thread.
            while let Ok(n) = socket.recv(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        Notifications {
            seen,
            _dir: dir,
            path,
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.lines().any(|l| l == needle))
            .count()
    }
}

/// Which of the three documented triggers an upgrade round uses.
async fn trigger_upgrade(round: usize, admin: &str, old_pid: u32) -> u32 {
    match round % 3 {
        0 => {
            let (code, body) =
                admin_call("POST", &format!("{admin}/api/v1/upgrade"), None, None).await;
            assert_eq!(code, 200, "upgrade refused: {body}");
            assert_eq!(body["old_pid"], json!(old_pid));
            u32::try_from(body["new_pid"].as_u64().unwrap()).unwrap()
        }
        1 => {
            let admin = admin.to_string();
            let out = tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_cutover"))
                    .args(["ctl", "--admin", &admin, "upgrade"])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "ctl upgrade: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let new_pid = stdout
                .trim()
                .rsplit(' ')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("ctl upgrade printed {stdout:?}"));
            assert!(stdout.contains(&format!("pid {old_pid} handed over")));
            new_pid
        }
        _ => {
            kill("USR2", old_pid);
            // Until the handover, both processes accept on the shared admin
            // socket, so a status call may reach either; once the old one
            // has exited, only the new one answers.
            wait_until("the old process exits after SIGUSR2", || async {
                exited(old_pid)
            })
            .await;
            pid_of(admin).await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_upgrades_under_load_fail_nothing_and_keep_runtime_state() {
    let blue_kept = TestUpstream::start("blue").await;
    let blue_drained = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let notify = Notifications::listen();
    let notify_path = notify.path.display().to_string();
    let (process, _) = start_from_copy(
        &split_config(
            &[
                ("blue", 100, &[blue_kept.addr, blue_drained.addr]),
                ("green", 0, &[green.addr]),
            ],
            "",
        ),
        &[("NOTIFY_SOCKET", &notify_path)],
    );
    let admin = format!("http://{}", admin_addr_of(&process));
    let mut pids = Pids(Vec::new());

    // Runtime state set before the upgrades: a canary split and a drain.
    let (code, body) = admin_call(
        "PUT",
        &format!("{admin}/api/v1/routes/app/split"),
        Some(json!({"blue": 50, "green": 50})),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = admin_call(
        "POST",
        &format!(
            "{admin}/api/v1/pools/blue/upstreams/{}/drain",
            blue_drained.addr
        ),
        Some(json!({"timeout": "10m"})),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    wait_until("the drained upstream is idle", || async {
        blue_drained.in_flight() == 0
    })
    .await;
    let drained_hits = blue_drained.hits();

    let load = load_mixed(format!("http://{}/", process.addr), 6);
    wait_until("load is flowing", || async { load.sent() > 300 }).await;

    let mut old_pid = process.child.id();
    for round in 0..5 {
        let (_, inode) = install_binary(process.dir(), round + 1);
        let before = load.sent();
        let new_pid = trigger_upgrade(round, &admin, old_pid).await;
        pids.0.push(new_pid);
        assert_ne!(new_pid, old_pid);
        assert_eq!(
            running_inode(new_pid),
            inode,
            "round {round}: the new process does not run the replaced file"
        );
        assert_eq!(pid_of(&admin).await, new_pid, "round {round}");
        wait_until("the old process exits", || async { exited(old_pid) }).await;
        wait_until("traffic flows through the new process", || async {
            load.sent() > before + 500
        })
        .await;
        assert_eq!(load.failed(), 0, "round {round}: requests failed");
        old_pid = new_pid;
    }
    let (sent, failed) = load.finish().await;
    eprintln!("five upgrades: {sent} requests, {failed} failed");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");

    // The split and the drain set before are still in force.
    let state = status(&admin).await;
    assert_eq!(state["pid"], json!(old_pid));
    assert_eq!(
        state["routes"][0]["split"],
        json!({"blue": 50, "green": 50})
    );
    let drained = state["pools"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["upstreams"].as_array().unwrap())
        .find(|u| u["addr"] == json!(blue_drained.addr.to_string()))
        .expect("drained upstream in status")
        .clone();
    assert!(
        drained["state"] == "drained" || drained["state"] == "draining",
        "{drained}"
    );
    assert_eq!(
        blue_drained.hits(),
        drained_hits,
        "a drained upstream got requests"
    );
    assert!(green.hits() > 100 && blue_kept.hits() > 100);

    // systemd heard of each new main process and never of a stop.
    wait_until("MAINPID for the last process", || async {
        notify.count(&format!("MAINPID={old_pid}")) == 1
    })
    .await;
    assert_eq!(notify.count("READY=1"), 6, "{:?}", notify.seen);
    assert_eq!(notify.count("STOPPING=1"), 0, "{:?}", notify.seen);

    kill("TERM", old_pid);
    wait_until("the last process stops", || async { exited(old_pid) }).await;
    assert_eq!(notify.count("STOPPING=1"), 1);
}

/// After a handover the old process ends its connections only after a
/// response: a parked keep-alive connection is served once more (with
/// `Connection: close`), a slow request in flight finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_the_old_process_end_only_after_a_response() {
    let up = TestUpstream::start("up").await;
    let (process, _) = start_from_copy(&split_config(&[("p", 1, &[up.addr])], ""), &[]);
    let admin = format!("http://{}", admin_addr_of(&process));
    let mut pids = Pids(Vec::new());
    let addr = process.addr;

    // One keep-alive connection, used before the upgrade and again after.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut keep_alive, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let request = || {
        http::Request::get("/")
            .header("host", "app")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let first = keep_alive.send_request(request()).await.unwrap();
    assert_eq!(first.status(), 200);
    first.into_body().collect().await.unwrap();
    // Idle long enough to be parked: the handover meets it in the lot.
    wait_until("the keep-alive connection is parked", || async {
        gauge(&admin, "cutover_client_connections_parked").await == 1.0
    })
    .await;
    // A slow request in flight on the old process.
    let slow =
        tokio::spawn(
            async move { get(&http1_client(), &format!("http://{addr}/slow?ms=2500")).await },
        );
    wait_until("the slow request reaches the upstream", || async {
        up.in_flight() == 1
    })
    .await;

    let (code, body) = admin_call("POST", &format!("{admin}/api/v1/upgrade"), None, None).await;
    assert_eq!(code, 200, "{body}");
    pids.0
        .push(u32::try_from(body["new_pid"].as_u64().unwrap()).unwrap());

    // The idle keep-alive connection was not closed under the client: its
    // next request is answered, with `Connection: close`.
    let second = keep_alive.send_request(request()).await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["connection"], "close");
    second.into_body().collect().await.unwrap();
    tokio::time::timeout(DEADLINE, conn)
        .await
        .expect("the old process closes the connection after that response")
        .unwrap()
        .unwrap();
    let (status, body) = tokio::time::timeout(DEADLINE, slow)
        .await
        .expect("slow request ends")
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "up\n"));
    let old = process.child.id();
    wait_until("the old process exits", || async { exited(old) }).await;
    // New connections reach the new process.
    assert_eq!(
        get(&http1_client(), &format!("http://{addr}/")).await.0,
        200
    );
}

/// A process started from a replaceable copy, one pool on `upstream`,
/// with three load clients running.
struct UnderLoad {
    process: Process,
    exe: PathBuf,
    admin: String,
    pid: u32,
    load: Load,
}

async fn start_under_load(upstream: std::net::SocketAddr, upgrade_timeout: &str) -> UnderLoad {
    let (process, exe) = start_from_copy(
        &split_config(
            &[("p", 1, &[upstream])],
            &format!("[proxy]\nupgrade_timeout = \"{upgrade_timeout}\"\n"),
        ),
        &[],
    );
    let admin = format!("http://{}", admin_addr_of(&process));
    let pid = process.child.id();
    let load = load_mixed(format!("http://{}/", process.addr), 3);
    wait_until("load is flowing", || async { load.sent() > 100 }).await;
    UnderLoad {
        process,
        exe,
        admin,
        pid,
        load,
    }
}

/// After a failed upgrade: the same process answers and traffic flows.
async fn old_process_serves_on(admin: &str, pid: u32, load: &Load) {
    assert_eq!(pid_of(admin).await, pid, "the old process serves on");
    let before = load.sent();
    wait_until("traffic still flows", || async {
        load.sent() > before + 100
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_that_fails_to_start_changes_nothing() {
    let up = TestUpstream::start("up").await;
    let UnderLoad {
        process,
        exe,
        admin,
        pid,
        load,
    } = start_under_load(up.addr, "20s").await;

    // A broken release: the new file exits at once.
    install_script(&exe, "#!/bin/sh\nexit 3\n");

    let (code, body) = admin_call("POST", &format!("{admin}/api/v1/upgrade"), None, None).await;
    assert_eq!(code, 500, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("exited before it was ready"), "{message}");
    old_process_serves_on(&admin, pid, &load).await;

    // The admin API still takes changes, and a good binary then upgrades.
    let (code, _) = admin_call(
        "PUT",
        &format!("{admin}/api/v1/routes/app/split"),
        Some(json!({"p": 2})),
        None,
    )
    .await;
    assert_eq!(code, 200);
    install_binary(process.dir(), 1);
    let (code, body) = admin_call("POST", &format!("{admin}/api/v1/upgrade"), None, None).await;
    assert_eq!(code, 200, "{body}");
    let _pids = Pids(vec![
        u32::try_from(body["new_pid"].as_u64().unwrap()).unwrap(),
    ]);
    let (sent, failed) = load.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} failed");
    assert_eq!(status(&admin).await["routes"][0]["split"], json!({"p": 2}));
}

/// A new binary that starts but never reports ready is stopped once
/// `upgrade_timeout` passes; the old process serves on without a failed
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_binary_that_never_gets_ready_is_stopped() {
    let up = TestUpstream::start("up").await;
    let UnderLoad {
        process: _process,
        exe,
        admin,
        pid,
        load,
    } = start_under_load(up.addr, "1s").await;

    // Starts, holds the passed sockets, and never says READY.
    install_script(&exe, "#!/bin/sh\nexec sleep 60\n");
    let (code, body) = admin_call("POST", &format!("{admin}/api/v1/upgrade"), None, None).await;
    assert_eq!(code, 500, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("was not ready within 1s"), "{message}");
    let stuck: u32 = message
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {message:?}"));
    let _pids = Pids(vec![stuck]);
    wait_until("the stuck process is stopped", || async { exited(stuck) }).await;
    old_process_serves_on(&admin, pid, &load).await;
    let (sent, failed) = load.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} failed");
}

#[tokio::test]
async fn in_process_proxies_refuse_upgrade_with_a_reason() {
    let up = TestUpstream::start("up").await;
    let proxy = start_proxy(&split_config(&[("p", 1, &[up.addr])], "")).await;
    let (code, body) = admin_call("POST", &proxy.admin_url("/api/v1/upgrade"), None, None).await;
    assert_eq!(code, 409);
    assert!(
        body["error"].as_str().unwrap().contains("cutover run"),
        "{body}"
    );
    proxy.stop().await;
}

/// A rollout in progress survives a binary upgrade: the new process
/// resumes it at the same step, with the time already spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_resumes_at_its_step_after_an_upgrade() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let (process, _) = start_from_copy(
        &split_config(
            &[("blue", 100, &[blue.addr]), ("green", 0, &[green.addr])],
            "",
        ),
        &[],
    );
    let admin = format!("http://{}", admin_addr_of(&process));
    let mut pids = Pids(Vec::new());
    let (code, body) = admin_call(
        "POST",
        &format!("{admin}/api/v1/routes/app/rollout"),
        Some(
            json!({"to": "green", "steps": [10, 40, 100], "interval": "1h",
                    "analysis": {"min_requests": 1_000_000_000}}),
        ),
        None,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = admin_call(
        "POST",
        &format!("{admin}/api/v1/routes/app/rollout/promote"),
        None,
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let before = status(&admin).await["routes"][0].clone();
    assert_eq!(before["rollout"]["step"], 2, "{before:#}");
    let load = load_mixed(format!("http://{}/", process.addr), 4);
    wait_until("load is flowing", || async { load.sent() > 100 }).await;

    let old_pid = process.child.id();
    let new_pid = trigger_upgrade(0, &admin, old_pid).await;
    pids.0.push(new_pid);
    assert_eq!(pid_of(&admin).await, new_pid);
    let after = status(&admin).await["routes"][0].clone();
    assert_eq!(after["rollout"]["step"], 2, "{after:#}");
    assert_eq!(after["rollout"]["weight"], 40);
    assert_eq!(
        after["rollout"]["step_started_ms"],
        before["rollout"]["step_started_ms"]
    );
    assert_eq!(after["split"], before["split"]);
    let (sent, failed) = load.finish().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    kill("TERM", new_pid);
}
