//! The real binary under signals: SIGTERM lets a slow in-flight request
//! finish, refuses new connections, and exits 0.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use crate::support::*;

/// A running `cutover run` process and the address it listens on.
pub struct Process {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every line the process logged so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
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
        let path = dir.path().join("cutover.toml");
        std::fs::write(&path, complete_config(config, &dir.path().join("state"))).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["run", "-c"])
            .arg(&path)
            .env("CUTOVER_LOG", "info")
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
        let addr = rx
            .recv_timeout(DEADLINE)
            .expect("cutover logs its listening address")
            .parse()
            .expect("address in the log line");
        Process {
            child,
            addr,
            log,
            dir,
        }
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("cutover.toml")
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
    let state = process.dir.path().join("state");
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
