//! `cutover demo`: two embedded apps ("blue" and "green") on loopback and the
//! proxy in front of them, from an embedded config that goes through the
//! same validation as a file. The green app can be made to fail a share of
//! its requests (a bad release), and the demo sends light traffic of its
//! own, so an automatic rollback can be watched within a minute.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::Error;
use crate::lifecycle;
use crate::server::BindError;

const DEMO_CONFIG: &str = r#"
[[listener]]
bind = "{LISTEN}"

[admin]
bind = "{ADMIN}"

[state]
dir = "{STATE}"

[[route]]
name = "app"
path_prefix = "/"
split = { blue = 100, green = 0 }

[pool.blue]
upstreams = [ { addr = "{BLUE}" } ]

[pool.green]
upstreams = [ { addr = "{GREEN}" } ]
"#;

/// `cutover demo`'s options.
pub struct Options {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// Percent of the green app's requests answered 500.
    pub bad_green: u8,
    /// Requests per second the demo sends through the proxy.
    pub traffic: u32,
    /// A state directory to keep runtime changes in and resume from;
    /// `None`: a fresh one, removed at the end.
    pub state: Option<PathBuf>,
}

/// Where a demo run keeps its runtime changes.
struct StateDir {
    path: PathBuf,
    /// Made for this run: removed when it ends.
    fresh: bool,
}

impl StateDir {
    /// `given`, or a new directory for this process alone (a second demo
    /// must start from blue, not from what the first one left).
    fn new(given: Option<PathBuf>) -> StateDir {
        match given {
            Some(path) => StateDir { path, fresh: false },
            None => {
                let path =
                    std::env::temp_dir().join(format!("cutover-demo-{}", std::process::id()));
                // A directory of a dead process that had this pid.
                let _ = std::fs::remove_dir_all(&path);
                StateDir { path, fresh: true }
            }
        }
    }

    /// Whether an earlier run left changes here.
    fn has_changes(&self) -> bool {
        std::fs::read_dir(&self.path).is_ok_and(|mut entries| entries.next().is_some())
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if self.fresh {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs the demo until Ctrl-C (or SIGTERM). Without `options.state` every
/// run starts from the embedded config; with it, runtime changes are kept
/// there and a restarted demo resumes them, as a real deployment does.
pub async fn run(options: Options) -> Result<(), Error> {
    let Options {
        listen,
        admin,
        bad_green,
        traffic,
        state,
    } = options;
    let state = StateDir::new(state);
    let resumed = state.has_changes();
    let blue = spawn_app("blue", Arc::new(AtomicU8::new(0))).await?;
    let green = spawn_app("green", Arc::new(AtomicU8::new(bad_green))).await?;
    let text = DEMO_CONFIG
        .replace("{LISTEN}", &listen.to_string())
        .replace("{ADMIN}", &admin.to_string())
        .replace("{STATE}", &state.path.display().to_string())
        .replace("{BLUE}", &blue.to_string())
        .replace("{GREEN}", &green.to_string());
    let config = Config::parse("<demo>", &text)?;
    let running = lifecycle::start(config, None).await?;
    let proxy = running.addrs()[0];
    let admin = running.admin_addr();
    if traffic > 0 {
        tokio::spawn(send_traffic(proxy, traffic));
    }
    // What traffic does now, after any runtime change a resumed state kept.
    let live = live_split(&running);
    let kept = kept_line(&state, resumed, &live);
    let guide = Guide {
        proxy,
        admin,
        blue,
        green,
        live,
        traffic,
        kept,
    };
    // Ignoring a closed stdout (`cutover demo | head`): the demo serves on.
    let _ = writeln!(std::io::stdout().lock(), "{}", guide.text());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::Signal)?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(Error::Signal)?,
        _ = term.recv() => {}
    }
    running.stop().await;
    Ok(())
}

/// The route "app"'s split in the running table, pool by pool.
fn live_split(running: &lifecycle::Running) -> Vec<(String, u32)> {
    let table = running.routing().load();
    table
        .route("app")
        .map(|r| {
            table
                .split(r)
                .iter()
                .map(|(p, w)| (p.to_string(), *w))
                .collect()
        })
        .unwrap_or_default()
}

/// `blue=90 green=10`.
fn split_words(live: &[(String, u32)]) -> String {
    let words: Vec<String> = live.iter().map(|(p, w)| format!("{p}={w}")).collect();
    words.join(" ")
}

/// What happens to runtime changes, in one sentence.
fn kept_line(state: &StateDir, resumed: bool, live: &[(String, u32)]) -> String {
    if resumed {
        format!(
            "Resumed the runtime changes kept in {} (route \"app\": {}); start without --state for a fresh demo.",
            state.path.display(),
            split_words(live)
        )
    } else if state.fresh {
        "Runtime changes last until the demo stops (--state DIR keeps them for the next run)."
            .to_string()
    } else {
        format!(
            "Runtime changes are kept in {} for the next run.",
            state.path.display()
        )
    }
}

/// The addresses and commands the demo prints at start.
struct Guide {
    proxy: SocketAddr,
    admin: SocketAddr,
    blue: SocketAddr,
    green: SocketAddr,
    live: Vec<(String, u32)>,
    traffic: u32,
    kept: String,
}

impl Guide {
    fn text(&self) -> String {
        let Guide {
            proxy,
            admin,
            blue,
            green,
            traffic,
            kept,
            ..
        } = self;
        // The pool most requests go to: what the first curl answers.
        let serving = self
            .live
            .iter()
            .max_by_key(|(_, w)| *w)
            .map_or("blue", |(p, _)| p.as_str());
        let ctl = if admin.to_string() == "127.0.0.1:9090" {
            "cutover ctl".to_string()
        } else {
            format!("cutover ctl --admin http://{admin}")
        };
        format!(
            "cutover demo is running.

  proxy  http://{proxy}   route \"app\": {split}
  admin  http://{admin}   status, metrics, runtime changes
  blue   http://{blue}   answers \"blue\"
  green  http://{green}   answers \"green\"

Try (in another terminal; with cargo, `cutover` is `cargo run --release --`):
  curl http://{proxy}/                          # {serving}
  {ctl} status
  {ctl} split app blue=90 green=10     # canary: 1 in 10 to green
  {ctl} split app blue=0 green=100     # cut over to green
  curl http://{proxy}/                          # green
  {ctl} split app blue=100 green=0     # and back
  curl http://{admin}/metrics | grep cutover_requests_total

A rollout that judges itself (the demo sends {traffic} requests/s through the proxy):
  {ctl} rollout app --to green --steps 10,50,100 --interval 15s --check-every 3s --min-requests 20 --wait
  {ctl} split app blue=100 green=0     # back to blue
  curl 'http://{green}/demo/fail?percent=30'    # green goes bad: 30 % of its answers are 500
  {ctl} rollout app --to green --steps 10,50,100 --interval 15s --check-every 3s --min-requests 20 --wait
                                       # rolled back by itself within seconds (exit code 2)
  curl 'http://{green}/demo/fail?percent=0'     # green is fixed
  open http://{admin}/                          # the status page, with the rollout panel

{kept}
Ctrl-C stops everything.",
            split = split_words(&self.live),
        )
    }
}

/// Sends `rps` GETs a second to the proxy, forever; failures are the
/// demo's point, so they are not reported.
async fn send_traffic(proxy: SocketAddr, rps: u32) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rps);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let Ok(uri) = format!("http://{proxy}/").parse::<http::Uri>() else {
        return;
    };
    loop {
        tick.tick().await;
        let (client, uri) = (client.clone(), uri.clone());
        tokio::spawn(async move {
            if let Ok(resp) = client.get(uri).await {
                let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
            }
        });
    }
}

/// Starts an app on an ephemeral loopback port that answers every request
/// with its name, and `fail_percent` of them with a 500;
/// `/demo/fail?percent=N` sets that percent.
pub async fn spawn_app(
    name: &'static str,
    fail_percent: Arc<AtomicU8>,
) -> Result<SocketAddr, Error> {
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let listener = TcpListener::bind(any)
        .await
        .map_err(|source| BindError { addr: any, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| BindError { addr: any, source })?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let fail_percent = Arc::clone(&fail_percent);
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let fail_percent = Arc::clone(&fail_percent);
                    async move { Ok::<_, Infallible>(answer(name, &fail_percent, &req)) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn answer(
    name: &str,
    fail_percent: &AtomicU8,
    req: &http::Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/demo/fail" {
        let percent = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("percent="))
            .and_then(|p| p.parse::<u8>().ok())
            .filter(|p| *p <= 100);
        return match percent {
            Some(p) => {
                fail_percent.store(p, Ordering::Relaxed);
                text(
                    http::StatusCode::OK,
                    format!("{name} now fails {p} % of requests\n"),
                )
            }
            None => text(
                http::StatusCode::BAD_REQUEST,
                "use /demo/fail?percent=N with N from 0 to 100\n".into(),
            ),
        };
    }
    if fastrand::u8(0..100) < fail_percent.load(Ordering::Relaxed) {
        return text(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("{name}: failing on purpose (cutover demo --bad-green)\n"),
        );
    }
    text(http::StatusCode::OK, format!("{name}\n"))
}

fn text(status: http::StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}
