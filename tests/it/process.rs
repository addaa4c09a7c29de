//! The real binary under signals: SIGTERM lets a slow in-flight request
//! finish, refuses new connections, and exits 0.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use std::sync::Arc;

use crate::support::*;

/// A running `cutover run` process and the address it listens on.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every line the process logged so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    dir: Option<tempfile::TempDir>,
}

impl Process {
    /// Starts `cutover run` on `config` (completed by `complete_config`, with
    /// a state directory of its own) and waits for its "listening" log line.
    pub fn start(config: &str) -> Process {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(config, dir)
    }

    /// Same, in a given directory (which keeps the state between runs).
    pub fn start_in(config: &str, dir: tempfile::TempDir) -> Process {
        Self::start_with(config, dir, &[], &[])
    }

    /// Same, run behind `wrapper` (e.g. systemd-socket-activate and its
    /// arguments) and with extra environment variables.
    pub fn start_with(
        config: &str,
        dir: tempfile::TempDir,
        wrapper: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        let program = std::path::Path::new(env!("CARGO_BIN_EXE_cutover"));
        Self::start_program(program, config, dir, wrapper, env)
    }

    /// Same, running the executable at `program`.
    pub fn start_program(
        program: &std::path::Path,
        config: &str,
        dir: tempfile::TempDir,
        wrapper: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        let path = dir.path().join("cutover.toml");
        std::fs::write(&path, complete_config(config, &dir.path().join("state"))).unwrap();
        let mut command = match wrapper.split_first() {
            Some((wrapper, args)) => {
                let mut c = Command::new(wrapper);
                c.args(args).arg(program);
                c
            }
            None => Command::new(program),
        };
        let mut child = command
            .args(["run", "-c"])
            .arg(&path)
            .env("CUTOVER_LOG", "info")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cutover");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = log.clone();
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(": listening ")
                    && let Some(addr) = line.split("addr=").nth(1)
                {
                    let _ = tx.send(addr.trim().to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(DEADLINE) {
            Ok(addr) => addr.parse().expect("address in the log line"),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cutover logged no listening address");
            }
        };
        Process {
            child,
            addr,
            log,
            dir: Some(dir),
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir
            .as_ref()
            .expect("dir is kept until into_dir")
            .path()
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir().join("cutover.toml")
    }

    /// Waits for the process to exit and returns its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "cutover did not exit");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Ends the process (SIGKILL if still running) and hands back its
    /// directory, for a restart on the same state.
    pub fn into_dir(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.take().expect("dir is kept until into_dir")
    }

    pub fn logged(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_and_refuses_new_connections() {
    let up = TestUpstream::start("slow").await;
    let mut process = Process::start(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n{}",
        split_config(&[("p", 1, &[up.addr])], "")
    ));
    let addr = process.addr;
    let client = http1_client();
    assert_eq!(get(&client, &format!("http://{addr}/")).await.0, 200);

    let slow =
        tokio::spawn(
            async move { get(&http1_client(), &format!("http://{addr}/slow?ms=1500")).await },
        );
    wait_until("slow request reaches the upstream", || async {
        up.in_flight() == 1
    })
    .await;
    process.signal("TERM");

    wait_until("new connections are refused", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    let (status, body) = tokio::time::timeout(DEADLINE, slow)
        .await
        .expect("slow request ends")
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "slow\n"));

    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "cutover did not exit after SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
}

/// Connections with nothing in flight do not hold up a stop: one that has
/// sent nothing yet, and one idle (parked) after a request. Either would
/// otherwise wait out `request_header_timeout` (30 s, past the deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_silent_or_idle_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = TestUpstream::start("up").await;
    let mut process = Process::start(&split_config(&[("p", 1, &[up.addr])], ""));
    let _silent = tokio::net::TcpStream::connect(process.addr).await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(process.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"up\n") {
        let n = idle.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early");
        answer.extend_from_slice(&buf[..n]);
    }
    process.signal("TERM");
    assert!(process.wait_exit().success());
}

/// Rewrites the config file and sends SIGHUP while clients keep sending
/// requests: the split moves, nothing fails, and a broken file changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reload_moves_traffic_without_failures() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let config = |blue_w: u32, green_w: u32| {
        format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n{}",
            split_config(
                &[
                    ("blue", blue_w, &[blue.addr]),
                    ("green", green_w, &[green.addr])
                ],
                ""
            )
        )
    };
    let process = Process::start(&config(100, 0));
    let addr = process.addr;
    let path = process.config_path();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, failures) = (stop.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let client = http1_client();
            let mut sent = 0;
            // Bounded: at most 20,000 requests per client.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 20_000 {
                sent += 1;
                match client.get(format!("http://{addr}/").parse().unwrap()).await {
                    Ok(r) if r.status() == 200 => {
                        let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                    }
                    _ => {
                        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    wait_until("load reaches blue", || async { blue.hits() > 200 }).await;

    // A broken file is refused; blue keeps all the traffic.
    std::fs::write(&path, "[[listener]]\nbind = \"nope\"\n").unwrap();
    process.signal("HUP");
    wait_until("the broken file is refused", || async {
        process.logged("reload refused") > 0
    })
    .await;
    assert_eq!(green.hits(), 0);
    let state = process.dir().join("state");
    std::fs::write(&path, complete_config(&config(0, 100), &state)).unwrap();
    process.signal("HUP");
    wait_until("traffic moves to green", || async { green.hits() > 200 }).await;
    let blue_after = blue.hits();
    wait_until("green keeps taking traffic", || async {
        green.hits() > 400
    })
    .await;
    // Requests already past the pick when the table swapped may land on blue;
    // a handful at most, never a steady stream.
    assert!(
        blue.hits() - blue_after < 50,
        "blue still gets traffic after the reload"
    );

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(failures.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// Runs `cutover run` on `config` (state in `state`, the file written to
/// `dir`) for a start that must fail; its output once it exits.
pub async fn run_expecting_exit(
    config: &str,
    state: &std::path::Path,
    dir: &std::path::Path,
) -> std::process::Output {
    let path = dir.join("cutover.toml");
    std::fs::write(&path, complete_config(config, state)).unwrap();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["run", "-c"])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

pub fn admin_addr_of(process: &Process) -> String {
    let start = std::time::Instant::now();
    loop {
        let found = process
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("admin API listening"))
            .cloned();
        if let Some(line) = found {
            return line.split("addr=").nth(1).unwrap().trim().to_string();
        }
        assert!(start.elapsed() < DEADLINE, "no admin address logged");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `cutover ctl` against the real binary: the cutover of the demo, kept
/// across a restart, with the audit log saying who did it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_split_survives_restart() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let config = split_config(
        &[("blue", 100, &[blue.addr]), ("green", 0, &[green.addr])],
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_path_buf();
    let process = Process::start_in(&config, dir);
    let admin = format!("http://{}", admin_addr_of(&process));
    let ctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["ctl", "--admin", &admin])
            .args(args)
            .output()
            .expect("run cutover ctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = ctl(&["split", "app", "blue=0", "green=100"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), "app: blue=0 green=100");
    let (code, out, _) = ctl(&["status"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("blue=0 green=100  green 100%  runtime"),
        "{out}"
    );
    assert!(
        out.contains(&format!("green  {}  1       healthy", green.addr)),
        "{out}"
    );
    let (code, _, err) = ctl(&["split", "nope", "blue=1"]);
    assert_eq!(code, Some(2), "refused by the proxy");
    assert_eq!(
        err.trim(),
        "cutover ctl: 404 Not Found: no route named \"nope\""
    );
    let (code, out, _) = ctl(&["--json", "status"]);
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["routes"][0]["split"]["green"], 100);

    // Upstream verbs: disable, enable, then drain with --wait (blue has no
    // traffic left, so it drains at once).
    let blue_addr = blue.addr.to_string();
    let (code, out, _) = ctl(&["disable", "blue", &blue_addr]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with(&format!("blue {blue_addr}: disabled")),
        "{out}"
    );
    let (code, out, _) = ctl(&["enable", "blue", &blue_addr]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with(&format!("blue {blue_addr}: healthy")),
        "{out}"
    );
    let (code, out, err) = ctl(&["drain", "blue", &blue_addr, "--timeout", "1s", "--wait"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), format!("blue {blue_addr}: drained"));
    assert!(err.contains("in flight"), "progress lines: {err}");

    // Stop and start again on the same state directory: still green.
    process.signal("TERM");
    let mut process = process;
    assert!(process.wait_exit().success());
    let process = Process::start_in(&config, process.into_dir());
    assert_eq!(
        get(&http1_client(), &format!("http://{}/", process.addr))
            .await
            .1,
        "green\n"
    );
    let audit = std::fs::read_to_string(dir_path.join("state/audit.log")).unwrap();
    let line = audit
        .lines()
        .find(|l| l.contains("\"action\":\"set_split\""))
        .unwrap();
    assert!(line.contains("\"peer\":\"127.0.0.1:"), "{line}");
    assert!(
        line.contains("\"after\":{\"blue\":0,\"green\":100}"),
        "{line}"
    );
}

/// SIGKILL while admin changes stream in: on restart the state file is valid
/// and holds a state the API acknowledged (or the one in flight at the kill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_changes_leaves_a_valid_acknowledged_state() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let config = split_config(
        &[("blue", 1000, &[blue.addr]), ("green", 0, &[green.addr])],
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state/runtime.json");
    let mut process = Process::start_in(&config, dir);
    let admin = format!("http://{}", admin_addr_of(&process));
    let url = format!("{admin}/api/v1/routes/app/split");

    let acked = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let sent = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let writer = {
        let (acked, sent) = (acked.clone(), sent.clone());
        tokio::spawn(async move {
            for g in 1..=2000u32 {
                sent.store(g, std::sync::atomic::Ordering::SeqCst);
                let body = serde_json::json!({"blue": 1000 - g / 2, "green": g});
                let mut req = http::Request::put(&url);
                req = req.header("content-type", "application/json");
                let Ok(resp) = http1_client()
                    .request(
                        req.body(http_body_util::Full::new(bytes::Bytes::from(
                            body.to_string(),
                        )))
                        .unwrap(),
                    )
                    .await
                else {
                    return;
                };
                if resp.status() != 200 {
                    return;
                }
                acked.lock().unwrap().push(g);
            }
        })
    };
    wait_until("some changes acknowledged", || async {
        acked.lock().unwrap().len() >= 20
    })
    .await;
    process.child.kill().unwrap(); // SIGKILL
    process.child.wait().unwrap();
    let _ = writer.await;

    let text = std::fs::read_to_string(&state).expect("state file exists");
    let saved: serde_json::Value = serde_json::from_str(&text).expect("state file is valid JSON");
    let green_w = saved["splits"]["app"]["split"]["green"].as_u64().unwrap() as u32;
    let acked = acked.lock().unwrap().clone();
    let in_flight = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        acked.contains(&green_w) || green_w == in_flight,
        "saved green={green_w}, last acknowledged {:?}, in flight {in_flight}",
        acked.last()
    );
    assert_eq!(
        saved["splits"]["app"]["split"]["blue"].as_u64().unwrap() as u32,
        1000 - green_w / 2
    );

    let restarted = Process::start_in(&config, process.into_dir());
    let admin = format!("http://{}", admin_addr_of(&restarted));
    let (_, status) = admin_call("GET", &format!("{admin}/api/v1/status"), None, None).await;
    assert_eq!(status["routes"][0]["split"]["green"], green_w);
}

/// A runtime state file that does not parse stops a start with the file
/// and the reason; `--discard-state` moves it aside and starts from the
/// config file alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_refuses_to_start_unless_discarded() {
    let up = TestUpstream::start("up").await;
    let config = split_config(&[("p", 1, &[up.addr])], "");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("runtime.json"), "{ not json").unwrap();
    let out = run_expecting_exit(&config, &state, dir.path()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("runtime.json is not a valid runtime state file")
            && stderr.contains("--discard-state"),
        "{stderr}"
    );

    let process = Process::start_with(
        &config,
        dir,
        &["sh", "-c", "exec \"$@\" --discard-state", "sh"],
        &[],
    );
    let (status, body) = get(&http1_client(), &format!("http://{}/", process.addr)).await;
    assert_eq!((status, body.as_str()), (200, "up\n"));
    let aside: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("runtime.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
}

/// `cutover check` reads every file the config names as `run` does: an
/// admin token file that is missing or empty fails both, and `run` stops
/// before it binds anything (with `ExecStartPre=cutover check` and
/// `Restart=on-failure`, the two disagreeing was a crash loop). A relative
/// `token_file` is read beside the config, as certificate paths are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_run_read_admin_token_files_alike() {
    let blue = TestUpstream::start("blue").await;
    let config = split_config(
        &[("blue", 100, &[blue.addr])],
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken_file = \"admin.token\"\n",
    );
    for (case, token) in [("missing", None), ("empty", Some("\n"))] {
        let dir = tempfile::tempdir().unwrap();
        if let Some(token) = token {
            std::fs::write(dir.path().join("admin.token"), token).unwrap();
        }
        let path = dir.path().join("cutover.toml");
        std::fs::write(&path, complete_config(&config, &dir.path().join("state"))).unwrap();
        let check = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert_eq!(check.status.code(), Some(1), "{case}: {stderr}");
        let named = format!(
            "admin token file {}",
            dir.path().join("admin.token").display()
        );
        assert!(stderr.contains(&named), "{case}: {stderr}");

        let run = run_expecting_exit(&config, &dir.path().join("state"), dir.path()).await;
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{case}: {stderr}");
        assert!(stderr.contains(&named), "{case}: {stderr}");
        assert!(
            !stderr.contains("listening"),
            "{case}: bound before failing: {stderr}"
        );
    }

    // Present beside the config; the process runs elsewhere (the tests'
    // working directory is the crate's).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), "s3cret\n").unwrap();
    let token_path = dir.path().join("admin.token");
    let process = Process::start_in(&config, dir);
    let admin = format!("http://{}", admin_addr_of(&process));
    let out = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["ctl", "--admin", &admin, "--token-file"])
        .arg(&token_path)
        .args(["split", "app", "blue=100"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
