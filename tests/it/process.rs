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
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts `cutover run` on `config` and waits for its "listening" log line.
    pub fn start(config: &str) -> Process {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cutover.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["run", "-c"])
            .arg(&path)
            .env("CUTOVER_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cutover");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Keep draining stderr so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("addr=").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
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
            _dir: dir,
        }
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
