//! `cutover ctl rollout --wait` against the real binary: a pipeline step
//! whose exit code says how the rollout ended (0 promoted, 2 rolled back,
//! 3 aborted).

use std::process::{Command, Stdio};

use crate::process::{Process, admin_addr_of};
use crate::support::*;

fn ctl(admin: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
    c.args(["ctl", "--admin", admin]);
    c
}

/// Runs `ctl` with `args` off the async threads; returns (code, stdout).
async fn run(admin: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut command = ctl(admin);
    command.args(args);
    let out = tokio::task::spawn_blocking(move || command.output().expect("run cutover ctl"))
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_wait_exit_codes_say_promoted_rolled_back_aborted() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let process = Process::start(&split_config(
        &[("blue", 100, &[blue.addr]), ("green", 0, &[green.addr])],
        "",
    ));
    let admin = format!("http://{}", admin_addr_of(&process));
    let load = load(format!("http://{}/", process.addr), 4);
    let quick = [
        "--interval",
        "400ms",
        "--check-every",
        "100ms",
        "--min-requests",
        "5",
        "--wait",
    ];

    let mut args = vec!["rollout", "app", "--to", "green", "--steps", "50,100"];
    args.extend(quick);
    args.extend(["--latency-quantile", "p95"]);
    let (code, out) = run(&admin, &args).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("promoted"), "{out}");
    // The latency test's figures, for the quantile asked for.
    assert!(
        out.contains("  latency: green p95 ")
            && out.contains("1.5x and +5 ms with 99 % confidence"),
        "{out}"
    );

    // Back to blue, which now fails half its requests: rolled back.
    blue.fail_every(2);
    let mut args = vec!["rollout", "app", "--to", "blue", "--steps", "50,100"];
    args.extend(quick);
    args.extend(["--max-error-rate", "0.1"]);
    let (code, out) = run(&admin, &args).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("rolled back") && out.contains("error rate"),
        "{out}"
    );
    // The error test's figures: each rate with its interval, and why.
    assert!(
        out.contains("  errors: blue ") && out.contains(" with 99 % confidence"),
        "{out}"
    );

    // A long rollout, aborted from another ctl while one waits on it.
    blue.fail_every(0);
    let mut waiting = ctl(&admin);
    waiting
        .args([
            "rollout",
            "app",
            "--to",
            "blue",
            "--interval",
            "1h",
            "--wait",
        ])
        // Nothing judged: only the abort ends it.
        .args(["--min-requests", "1000000000"])
        .stdout(Stdio::piped());
    let waiting = waiting.spawn().unwrap();
    wait_until("the long rollout to start", || async {
        let (_, v) = admin_call("GET", &format!("{admin}/api/v1/status"), None, None).await;
        v["routes"][0]["rollout"]["to"] == "blue"
            && v["routes"][0]["rollout"]["state"] != "rolled_back"
    })
    .await;
    let (code, out) = run(&admin, &["abort", "app"]).await;
    assert_eq!(code, Some(0), "{out}");
    let out = tokio::task::spawn_blocking(move || waiting.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    load.finish().await;

    // Refused by the proxy: an unknown pool; 2 like every refusal, but 1
    // with --wait, whose 2 means rolled back.
    let (code, out) = run(&admin, &["rollout", "app", "--to", "purple"]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no pool named \"purple\""), "{out}");
    let (code, out) = run(&admin, &["rollout", "app", "--to", "purple", "--wait"]).await;
    assert_eq!(code, Some(1), "{out}");
}

/// The tour's rollout to green, quick, waited on.
const DEMO_ROLLOUT: [&str; 13] = [
    "rollout",
    "app",
    "--to",
    "green",
    "--steps",
    "10,100",
    "--interval",
    "10s",
    "--check-every",
    "300ms",
    "--min-requests",
    "10",
    "--wait",
];

/// A `cutover demo` process, stopped (SIGTERM, then killed) however the
/// test ends.
struct Demo {
    child: std::process::Child,
    admin: String,
    proxy: String,
    /// The banner up to the line that says how runtime changes are kept.
    banner: String,
}

impl Demo {
    /// Starts the demo on ephemeral ports with `args`; returns once its
    /// banner is printed.
    async fn start(args: &[&str]) -> Demo {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cutover demo");
        let stdout = child.stdout.take().unwrap();
        let banner = tokio::task::spawn_blocking(move || {
            let mut lines = std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok);
            let mut banner = String::new();
            for line in lines.by_ref() {
                banner.push_str(&line);
                banner.push('\n');
                if line.starts_with("Ctrl-C") {
                    break;
                }
            }
            // Reads the rest so the demo never writes to a closed pipe.
            std::thread::spawn(move || lines.for_each(drop));
            banner
        })
        .await
        .unwrap();
        let address = |label: &str| {
            banner
                .lines()
                .find_map(|l| l.trim_start().strip_prefix(label))
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("no {label:?} line in the banner:\n{banner}"))
                .to_string()
        };
        Demo {
            admin: address("admin  "),
            proxy: address("proxy  "),
            banner,
            child,
        }
    }

    /// SIGTERM, and its exit.
    fn stop(mut self) -> std::process::ExitStatus {
        let pid = i32::try_from(self.child.id()).unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Demo {
    /// SIGTERM first, so the demo removes its state directory; killed if
    /// it has not gone within 10 s.
    fn drop(&mut self) {
        // Already reaped (`stop`): its pid may belong to another process.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cutover demo --bad-green`: a newcomer's rollout to the bad green app is
/// rolled back by itself, with the demo's own traffic to judge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_s_bad_green_is_rolled_back() {
    let demo = Demo::start(&["--bad-green", "40", "--traffic", "100"]).await;
    let admin = demo.admin.clone();
    let (code, out) = run(&admin, &DEMO_ROLLOUT).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("rolled back"), "{out}");
    drop(demo);
}

/// What a newcomer does twice: a tour that promoted green, then `cutover
/// demo --bad-green 30` (docs/rollouts.md's next step). The second run
/// starts on blue, and its rollout to the bad green is judged and rolled
/// back, not refused; with `--state` a run resumes and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_demo_run_starts_from_blue() {
    let client = http1_client();
    let first = Demo::start(&["--traffic", "0"]).await;
    let (code, out) = run(&first.admin, &["split", "app", "blue=0", "green=100"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        get(&client, &format!("{}/", first.proxy)).await.1.trim(),
        "green"
    );
    assert!(first.stop().success());

    let second = Demo::start(&["--bad-green", "40", "--traffic", "100"]).await;
    assert!(
        second.banner.contains("route \"app\": blue=100 green=0"),
        "{}",
        second.banner
    );
    assert!(
        second.banner.contains("/                          # blue"),
        "{}",
        second.banner
    );
    assert_eq!(
        get(&client, &format!("{}/", second.proxy)).await.1.trim(),
        "blue"
    );
    let (code, out) = run(&second.admin, &DEMO_ROLLOUT).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("rolled back"), "{out}");
    drop(second);

    // Kept on purpose: --state resumes, and the banner says so.
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    let kept = Demo::start(&["--traffic", "0", "--state", dir]).await;
    let (code, out) = run(&kept.admin, &["split", "app", "blue=0", "green=100"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(kept.stop().success());
    let resumed = Demo::start(&["--traffic", "0", "--state", dir]).await;
    assert!(
        resumed
            .banner
            .contains("Resumed the runtime changes kept in"),
        "{}",
        resumed.banner
    );
    assert!(
        resumed
            .banner
            .contains("/                          # green"),
        "{}",
        resumed.banner
    );
    assert_eq!(
        get(&client, &format!("{}/", resumed.proxy)).await.1.trim(),
        "green"
    );
}

/// `ctl rollout --pool` moves every route splitting between the two
/// pools; `--wait` follows it to its end; `ctl undo --pool` puts them all
/// back; undoing the undo redoes; a refusal exits 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_by_pool_then_undo_through_ctl() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let config = format!(
        "[[route]]\nname = \"web\"\npath_prefix = \"/\"\nsplit = {{ blue = 100, green = 0 }}\n\
         [[route]]\nname = \"api\"\npath_prefix = \"/api\"\nsplit = {{ blue = 100, green = 0 }}\n\
         [pool.blue]\nupstreams = [ {{ addr = \"{}\" }} ]\n[pool.green]\nupstreams = [ {{ addr = \"{}\" }} ]\n",
        blue.addr, green.addr
    );
    let process = Process::start(&config);
    let admin = format!("http://{}", admin_addr_of(&process));
    let web = load(format!("http://{}/", process.addr), 2);
    let api = load(format!("http://{}/api/x", process.addr), 2);
    let (code, out) = run(
        &admin,
        &[
            "rollout",
            "--pool",
            "green",
            "--steps",
            "50,100",
            "--interval",
            "400ms",
            "--check-every",
            "100ms",
            "--min-requests",
            "5",
            "--wait",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("web,api: rollout to green promoted"), "{out}");
    let (code, out) = run(&admin, &["undo", "--pool", "green"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("web: split blue=100 green=0 (undone)"),
        "{out}"
    );
    assert!(
        out.contains("api: split blue=100 green=0 (undone)"),
        "{out}"
    );
    // Undo again: back to green, as the rollout left it.
    let (code, out) = run(&admin, &["undo", "web"]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("web: split blue=0 green=100"), "{out}");
    let (code, out) = run(&admin, &["undo", "nope"]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no route named \"nope\""), "{out}");
    let (sent_web, failed_web) = web.finish().await;
    let (sent_api, failed_api) = api.finish().await;
    assert!(sent_web > 0 && sent_api > 0);
    assert_eq!((failed_web, failed_api), (0, 0));
}

/// `--analysis` adds outside checks, `--dry-run` runs a limit dry: `--wait`
/// prints each check's value and what a dry-run limit would have done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_wait_prints_outside_checks_and_dry_run_breaches() {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    green.fail_every(3);
    // A URL answering a JSON number, as a queue's depth would.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let number = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n42",
                    )
                    .await;
            });
        }
    });
    let process = Process::start(&split_config(
        &[("blue", 100, &[blue.addr]), ("green", 0, &[green.addr])],
        "",
    ));
    let admin = format!("http://{}", admin_addr_of(&process));
    let load = load(format!("http://{}/", process.addr), 4);
    let checks = format!(r#"{{"http": [{{"url": "http://{number}/depth", "max": 100}}]}}"#);
    let (code, out) = run(
        &admin,
        &[
            "rollout",
            "app",
            "--to",
            "green",
            "--steps",
            "50,100",
            "--interval",
            "600ms",
            "--check-every",
            "100ms",
            "--min-requests",
            "5",
            "--max-error-rate",
            "0.01",
            "--dry-run",
            "max_error_rate",
            "--max-error-rate-increase",
            "off",
            "--max-error-ratio",
            "off",
            "--analysis",
            &checks,
            "--wait",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("  check http[0]: 42 (max 100) pass"), "{out}");
    assert!(
        out.contains("  dry run, not acted on: max_error_rate: "),
        "{out}"
    );
    let (code, out) = run(
        &admin,
        &["rollout", "app", "--to", "green", "--dry-run", "max_p99_ms"],
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("--dry-run max_p99_ms: give the limit too"),
        "{out}"
    );
    let _ = load.finish().await;
}
