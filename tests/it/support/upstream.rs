//! A real hyper upstream on an ephemeral loopback port. It answers with its
//! name and counts requests; a few paths give tests what they need:
//!
//! - `/slow?ms=N`       answers after N ms
//! - `/ws`              a WebSocket answering each text message with `NAME MESSAGE`
//! - `/metrics`         Prometheus text: `test_app_metric{server="NAME"}` (see `set_metric`)
//! - `/headers`         the request headers, one `name: value` per line
//! - `/version`         the HTTP version the request came in (`HTTP/2.0`)
//! - `/upload`          reads the body; answers `LEN CHECKSUM`; counts bytes in `received`
//! - `/download?mib=N`  streams N MiB (half, then waits for `release`, then the rest)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub struct TestUpstream {
    pub addr: SocketAddr,
    pub name: &'static str,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    /// A second handle on the listening socket. `stop` and `kill` shut it
    /// down (new connections refused, queued ones reset) but keep its port
    /// bound: a closed port could be handed to a listener of another test
    /// running in parallel, and a proxy still sending to this address
    /// would get that server's answers.
    port: std::net::TcpListener,
}

#[derive(Default)]
struct State {
    /// Cancelled by `kill`: every connection drops at once.
    killed: tokio_util::sync::CancellationToken,
    /// Status `/healthz` answers; 0 = 200.
    health_status: std::sync::atomic::AtomicU16,
    hits: AtomicUsize,
    /// Requests marked `x-cutover-shadow: 1`.
    shadows: AtomicUsize,
    connections: AtomicUsize,
    open: AtomicUsize,
    in_flight: AtomicUsize,
    /// The most requests it ever had in flight at once.
    peak_in_flight: AtomicUsize,
    received: AtomicU64,
    release: Notify,
    /// Every Nth request to `/` answers 500; 0 = none.
    fail_every: AtomicU64,
    /// Requests to `/` wait this long first.
    delay_ms: AtomicU64,
    /// Requests to `/` beyond this many at once are answered 503 at once,
    /// as a cold instance with a small worker pool does; 0 = no limit.
    capacity: AtomicUsize,
    /// Requests whose path starts with this answer that status, as a
    /// release broken on one part of the app would.
    fail_under: std::sync::Mutex<Option<(String, u16)>>,
    /// What `/metrics` exports as `test_app_metric`, in thousandths.
    metric_milli: AtomicU64,
}

const MIB: usize = 1 << 20;

/// The bytes `/download` sends: a pattern the client can check.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(31) % 251) as u8
}

/// A cheap order-sensitive checksum, same on both sides of a transfer.
pub fn checksum(acc: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(acc, |a, b| {
        a.wrapping_mul(1_000_003).wrapping_add(u64::from(*b))
    })
}

impl TestUpstream {
    pub async fn start(name: &'static str) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Self::serve(name, listener)
    }

    /// Serves on a given listener (to restart on the same port).
    pub fn serve(name: &'static str, listener: TcpListener) -> TestUpstream {
        let addr = listener.local_addr().expect("local addr");
        let port = std::os::fd::AsFd::as_fd(&listener)
            .try_clone_to_owned()
            .map(std::net::TcpListener::from)
            .expect("a second handle on the listener");
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                shared.open.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&shared);
                let killed = shared.killed.clone();
                let counts = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(handle(name, state, req).await) }
                    });
                    let http = auto::Builder::new(TokioExecutor::new());
                    let conn = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = killed.cancelled() => {}
                    }
                    counts.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        TestUpstream {
            addr,
            name,
            state,
            task,
            port,
        }
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Requests that came marked as shadow copies.
    pub fn shadows(&self) -> usize {
        self.state.shadows.load(Ordering::SeqCst)
    }

    /// TCP connections open now.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests it had in flight at once so far.
    pub fn peak_in_flight(&self) -> usize {
        self.state.peak_in_flight.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> u64 {
        self.state.received.load(Ordering::SeqCst)
    }

    /// Lets a waiting `/download` send its second half.
    pub fn release(&self) {
        self.state.release.notify_one();
    }

    /// Stops accepting (already open connections finish their work).
    pub fn stop(&self) {
        self.task.abort();
        self.stop_listening();
    }

    /// Dies like a killed process: stops accepting and drops every
    /// connection, in-flight requests included.
    pub fn kill(&self) {
        self.task.abort();
        self.state.killed.cancel();
        self.stop_listening();
    }

    /// Connections to the port are refused from now on; the port stays
    /// bound (see `port`) until this is dropped. Binding it again with
    /// `SO_REUSEADDR` (as tokio does) restarts the upstream.
    fn stop_listening(&self) {
        let _ = socket2::SockRef::from(&self.port).shutdown(std::net::Shutdown::Both);
    }

    /// Makes every `n`th request to `/` answer 500 (0: none), as a bad
    /// release would.
    pub fn fail_every(&self, n: u64) {
        self.state.fail_every.store(n, Ordering::SeqCst);
    }

    /// Makes requests to `/` take `ms` longer, as a slow release would.
    pub fn delay(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Makes requests to `/` beyond `n` at once answer 503 (0: none).
    pub fn capacity(&self, n: usize) {
        self.state.capacity.store(n, Ordering::SeqCst);
    }

    /// Makes every request whose path starts with `prefix` answer 500.
    pub fn fail_under(&self, prefix: &str) {
        self.answer_under(prefix, 500);
    }

    /// Makes every request whose path starts with `prefix` answer `status`
    /// (a 404 from a release that lost a page).
    pub fn answer_under(&self, prefix: &str, status: u16) {
        *self.state.fail_under.lock().unwrap() = Some((prefix.to_string(), status));
    }

    /// Sets the value `/metrics` exports as `test_app_metric{server=NAME}`
    /// (what a release's own signal — empty carts, a queue's depth — is to
    /// a rollout's Prometheus check).
    pub fn set_metric(&self, value: f64) {
        self.state
            .metric_milli
            .store((value * 1000.0) as u64, Ordering::SeqCst);
    }

    /// Makes `/healthz` answer `status`.
    pub fn set_health_status(&self, status: u16) {
        self.state.health_status.store(status, Ordering::SeqCst);
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn text(s: impl Into<String>) -> Response<Body> {
    Response::new(Full::new(Bytes::from(s.into())).boxed())
}

fn query_num(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// A WebSocket at `/ws` that answers each text message with the
/// server's name and the message, so a client knows which pool it is on.
fn websocket(name: &'static str, mut req: Request<Incoming>) -> Response<Body> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key, protocol::Role};
    let Some(key) = req.headers().get("sec-websocket-key") else {
        let mut r = text("expected a WebSocket upgrade\n");
        *r.status_mut() = http::StatusCode::BAD_REQUEST;
        return r;
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg
                && ws.send(Message::text(format!("{name} {t}"))).await.is_err()
            {
                break;
            }
        }
    });
    Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", accept)
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}

struct InFlight(Arc<State>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(name: &'static str, state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    if req
        .headers()
        .get("x-cutover-shadow")
        .is_some_and(|v| v == "1")
    {
        state.shadows.fetch_add(1, Ordering::SeqCst);
    }
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    let _in_flight = InFlight(Arc::clone(&state));
    let failing = state
        .fail_under
        .lock()
        .unwrap()
        .as_ref()
        .filter(|(p, _)| req.uri().path().starts_with(p.as_str()))
        .map(|(_, status)| *status);
    if let Some(status) = failing {
        let mut r = text(format!("{name}\n"));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        return r;
    }
    match req.uri().path() {
        "/ws" => websocket(name, req),
        "/metrics" => text(format!(
            "# TYPE test_app_metric gauge\ntest_app_metric{{server=\"{name}\"}} {}\n",
            state.metric_milli.load(Ordering::SeqCst) as f64 / 1000.0
        )),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query_num(&req, "ms"))).await;
            text(format!("{name}\n"))
        }
        "/healthz" => {
            let status = state.health_status.load(Ordering::SeqCst);
            let mut r = text("ok\n");
            if status != 0 {
                *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
            }
            r
        }
        "/version" => text(format!("{:?}\n", req.version())),
        "/headers" => {
            let mut out = String::new();
            for (k, v) in req.headers() {
                out.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            text(out)
        }
        "/upload" => {
            let mut body = req.into_body();
            let (mut len, mut sum) = (0u64, 0u64);
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    return text("body error");
                };
                if let Ok(data) = frame.into_data() {
                    len += data.len() as u64;
                    sum = checksum(sum, &data);
                    state.received.store(len, Ordering::SeqCst);
                }
            }
            text(format!("{len} {sum}"))
        }
        "/download" => {
            let total = query_num(&req, "mib") as usize * MIB;
            let chunk = 64 * 1024;
            let state = Arc::clone(&state);
            let chunks = stream::unfold(0usize, move |sent| {
                let state = Arc::clone(&state);
                async move {
                    if sent >= total {
                        return None;
                    }
                    if sent == total / 2 {
                        state.release.notified().await;
                    }
                    let data: Vec<u8> = (sent..sent + chunk)
                        .map(|i| pattern_byte(i as u64))
                        .collect();
                    Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from(data))),
                        sent + chunk,
                    ))
                }
            });
            Response::new(StreamBody::new(chunks).boxed())
        }
        _ => {
            let capacity = state.capacity.load(Ordering::SeqCst);
            if capacity > 0 && now > capacity {
                let mut r = text("busy\n");
                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                return r;
            }
            let delay = state.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let every = state.fail_every.load(Ordering::SeqCst);
            let n = state.hits.load(Ordering::SeqCst) as u64;
            let mut r = text(format!("{name}\n"));
            if every > 0 && n.is_multiple_of(every) {
                *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            }
            r
        }
    }
}
