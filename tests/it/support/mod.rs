//! Test harness: real hyper upstreams on 127.0.0.1:0, the proxy started
//! in-process on port 0, HTTP clients, and waiting on conditions with a
//! deadline (never sleeping as synchronisation).

#![allow(dead_code)]

pub mod etcd;
pub mod h2_client;
pub mod h2_raw;
pub mod nginx;
pub mod otlp;
pub mod prometheus;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use cutover::config::Config;
use cutover::lifecycle::{self, Running};

pub use upstream::TestUpstream;

/// Generous: CI machines are small and shared.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Adds what a test config leaves out: a listener and the admin API on
/// ephemeral loopback ports, and `state_dir` as the state directory.
pub fn complete_config(toml: &str, state_dir: &std::path::Path) -> String {
    let mut text = String::new();
    if !toml.contains("[[listener]]") {
        text.push_str("[[listener]]\nbind = \"127.0.0.1:0\"\n");
    }
    if !toml.contains("[admin]") {
        text.push_str("[admin]\nbind = \"127.0.0.1:0\"\n");
    }
    if !toml.contains("[state]") {
        text.push_str(&format!("[state]\ndir = \"{}\"\n", state_dir.display()));
    }
    text.push_str(toml);
    text
}

/// The proxy running in-process, with its own state directory.
pub struct TestProxy {
    running: Option<Running>,
    pub state_dir: tempfile::TempDir,
}

impl std::ops::Deref for TestProxy {
    type Target = Running;
    fn deref(&self) -> &Running {
        self.running.as_ref().expect("proxy is running")
    }
}

impl TestProxy {
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr())
    }
}

/// Starts the proxy in-process from `toml` (see `complete_config`).
pub async fn start_proxy(toml: &str) -> TestProxy {
    start_proxy_with_resolver(toml, cutover::dns::system()).await
}

/// As `start_proxy`, with DNS names looked up by `resolver`.
pub async fn start_proxy_with_resolver(toml: &str, resolver: cutover::dns::Resolver) -> TestProxy {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let text = complete_config(toml, state_dir.path());
    let config =
        Config::parse("test.toml", &text).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let running = lifecycle::start_with(config, None, None, resolver)
        .await
        .expect("proxy starts");
    TestProxy {
        running: Some(running),
        state_dir,
    }
}

/// A config with one catch-all route `app` splitting across the given
/// pools, each pool listing its upstreams.
pub fn split_config(pools: &[(&str, u32, &[SocketAddr])], extra: &str) -> String {
    let split: Vec<String> = pools.iter().map(|(n, w, _)| format!("{n} = {w}")).collect();
    let mut text = format!(
        "{extra}\n[[route]]\nname = \"app\"\nsplit = {{ {} }}\n",
        split.join(", ")
    );
    for (name, _, addrs) in pools {
        let ups: Vec<String> = addrs
            .iter()
            .map(|a| format!("{{ addr = \"{a}\" }}"))
            .collect();
        text.push_str(&format!(
            "[pool.{name}]\nupstreams = [ {} ]\n",
            ups.join(", ")
        ));
    }
    text
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http1_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn http2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// GET `url`, returning status and body text; panics on transport errors.
pub async fn get(client: &HttpClient, url: &str) -> (u16, String) {
    let response = client
        .get(url.parse().expect("test URL is valid"))
        .await
        .unwrap_or_else(|e| panic!("GET {url} failed: {e:?}"));
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Waits until `check` returns true, polling, or panics after `DEADLINE`.
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback address free to listen on now, for a listener that needs
/// its port before it starts (nginx, a listener added by a reload).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr")
}

/// An address nothing listens on. Its port stays bound (never listening)
/// until the test process exits: a port merely closed could be handed to a
/// listener of another test running in parallel, which would then answer
/// the requests meant to be refused.
pub fn closed_port() -> SocketAddr {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("local addr");
    std::mem::forget(socket);
    addr
}

/// Starts the proxy in-process from a config file written to the state
/// directory as `cutover.toml`, so reloads re-read it.
pub async fn start_proxy_from_file(toml: &str) -> (TestProxy, std::path::PathBuf) {
    let state_dir = tempfile::tempdir().expect("temp dir");
    let path = state_dir.path().join("cutover.toml");
    std::fs::write(&path, complete_config(toml, state_dir.path())).expect("write config");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let running = lifecycle::start(config, Some(path.clone()))
        .await
        .expect("proxy starts");
    (
        TestProxy {
            running: Some(running),
            state_dir,
        },
        path,
    )
}

/// One admin API call: status and JSON body (or the text as a JSON string).
pub async fn admin_call(
    method: &str,
    url: &str,
    body: Option<serde_json::Value>,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let resp = http1_client()
        .request(req.body(Full::new(bytes)).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, value)
}

/// Clients under way, counting requests and failures.
pub struct Load {
    stop: std::sync::Arc<AtomicBool>,
    failures: std::sync::Arc<AtomicUsize>,
    sent: std::sync::Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A client that opens a new connection for every request.
pub fn fresh_connection_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

/// As `load`, with an HTTP/2 client that handles GOAWAY correctly
/// (`h2_client`), and every third client opening a new connection per
/// request, so a listener that refused one would show.
pub fn load_mixed(url: String, clients: usize) -> Load {
    load_with(
        url,
        clients,
        &[
            || LoadClient::Hyper(Box::new(http1_client())),
            || LoadClient::H2(None),
            || LoadClient::Hyper(Box::new(fresh_connection_client())),
        ],
    )
}

/// `clients` clients sending GETs to `url` until stopped, alternating
/// HTTP/1.1 and HTTP/2 keep-alive clients (bounded: 50,000 requests each
/// at most).
pub fn load(url: String, clients: usize) -> Load {
    load_with(
        url,
        clients,
        &[
            || LoadClient::Hyper(Box::new(http1_client())),
            || LoadClient::Hyper(Box::new(http2_client())),
        ],
    )
}

/// One load client: a hyper client, or an `h2_client` made on first use.
enum LoadClient {
    Hyper(Box<HttpClient>),
    H2(Option<h2_client::H2Client>),
}

impl LoadClient {
    async fn get(&mut self, url: &str) -> Result<(), String> {
        let status = match self {
            LoadClient::Hyper(client) => {
                let r = client
                    .get(url.parse().expect("load URL"))
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                let status = r.status().as_u16();
                http_body_util::BodyExt::collect(r.into_body())
                    .await
                    .map_err(|e| format!("body: {e:?}"))?;
                status
            }
            LoadClient::H2(client) => {
                client
                    .get_or_insert_with(|| h2_client::H2Client::new(url))
                    .get(url)
                    .await?
            }
        };
        if status == 200 {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    }
}

fn load_with(url: String, clients: usize, kinds: &[fn() -> LoadClient]) -> Load {
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let failures = std::sync::Arc::new(AtomicUsize::new(0));
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let tasks = (0..clients)
        .map(|i| {
            let (stop, failures, sent, url) =
                (stop.clone(), failures.clone(), sent.clone(), url.clone());
            let mut client = kinds[i % kinds.len()]();
            tokio::spawn(async move {
                for _ in 0..50_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    if let Err(why) = client.get(&url).await {
                        // Said, so a failing test shows what failed.
                        eprintln!("load client {i}: request failed: {why}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    Load {
        stop,
        failures,
        sent,
        tasks,
    }
}

impl Load {
    /// Requests sent so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Requests failed so far.
    pub fn failed(&self) -> usize {
        self.failures.load(Ordering::Relaxed)
    }

    /// Stops the clients; returns (requests sent, requests failed).
    pub async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

/// A gauge's value in the `/metrics` of the admin API at `admin`
/// (`http://host:port`); 0 when absent.
pub async fn gauge(admin: &str, name: &str) -> f64 {
    let (_, text) = admin_call("GET", &format!("{admin}/metrics"), None, None).await;
    text.as_str()
        .unwrap_or("")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Reads until a whole answer from a `TestUpstream` named "up" (its body
/// ends in "up\n") has arrived; fails if the connection closes first.
/// Sends `request` (which says `Connection: close`) to the proxy's first
/// listener on a new connection; everything that comes back.
pub async fn send_raw(proxy: &TestProxy, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy.addrs()[0])
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    use tokio::io::AsyncReadExt;
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

/// `cutover check -c FILE ARGS…` on `toml` completed by `complete_config`
/// (written to a temporary directory that is its state dir too).
pub fn check_config(toml: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cutover.toml");
    std::fs::write(&path, complete_config(toml, dir.path())).expect("write config");
    std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["check", "-c"])
        .arg(&path)
        .args(args)
        .output()
        .expect("run cutover check")
}

/// Whether `program` (from Debian's `package`) is installed. Under CI (`CI`
/// set) a missing one fails the test — .ci/run installs it; elsewhere the
/// test says SKIPPED and passes.
pub fn tool_present(program: &str, package: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "{program} must be installed in CI (.ci/run installs {package})"
        );
        eprintln!("SKIPPED: {program} not installed (apt-get install {package})");
    }
    found
}

/// Runs `cutover ctl --admin ADMIN ARGS…` with no admin settings from the
/// environment; (exit code, stdout, stderr).
pub async fn ctl(admin: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"));
    command
        .args(["ctl", "--admin", admin])
        .args(args)
        .env_remove("CUTOVER_TOKEN_FILE")
        .env_remove("CUTOVER_ADMIN")
        .env_remove("CUTOVER_CA");
    let out = tokio::task::spawn_blocking(move || command.output().expect("run cutover ctl"))
        .await
        .expect("ctl task");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Blue serving everything, green standing by, and a proxy in front.
pub async fn blue_green() -> (TestUpstream, TestUpstream, TestProxy) {
    let blue = TestUpstream::start("blue").await;
    let green = TestUpstream::start("green").await;
    let proxy = start_proxy(&split_config(
        &[("blue", 100, &[blue.addr]), ("green", 0, &[green.addr])],
        "",
    ))
    .await;
    (blue, green, proxy)
}

/// The first route's rollout in status.
pub async fn rollout_of(proxy: &TestProxy) -> serde_json::Value {
    let (_, status) = admin_call("GET", &proxy.admin_url("/api/v1/status"), None, None).await;
    status["routes"][0]["rollout"].clone()
}

/// Waits for the first route's rollout to reach one of `states`.
pub async fn wait_state_of(proxy: &TestProxy, states: &[&str]) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        last = rollout_of(proxy).await;
        if states.iter().any(|s| last["state"] == *s) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rollout never reached {states:?}: {last:#}");
}

/// A server answering every request with `answer` (status 200), counting
/// the requests.
pub async fn answering(
    answer: &'static str,
) -> (std::net::SocketAddr, std::sync::Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&calls);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counted = std::sync::Arc::clone(&counted);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(answer),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    (addr, calls)
}
