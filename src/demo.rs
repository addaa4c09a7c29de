//! `cutover demo`: two embedded apps ("blue" and "green") on loopback and the
//! proxy in front of them, from an embedded config that goes through the
//! same validation as a file.

use std::convert::Infallible;
use std::net::SocketAddr;

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

/// Runs the demo until Ctrl-C (or SIGTERM). Runtime changes go to
/// `cutover-demo` under the system temp dir, so a restarted demo keeps
/// them, as a real deployment does.
pub async fn run(listen: SocketAddr, admin: SocketAddr) -> Result<(), Error> {
    let blue = spawn_app("blue").await?;
    let green = spawn_app("green").await?;
    let state = std::env::temp_dir().join("cutover-demo");
    let text = DEMO_CONFIG
        .replace("{LISTEN}", &listen.to_string())
        .replace("{ADMIN}", &admin.to_string())
        .replace("{STATE}", &state.display().to_string())
        .replace("{BLUE}", &blue.to_string())
        .replace("{GREEN}", &green.to_string());
    let config = Config::parse("<demo>", &text)?;
    let running = lifecycle::start(config, None).await?;
    let proxy = running.addrs()[0];
    let admin = running.admin_addr();
    let ctl = if admin.to_string() == "127.0.0.1:9090" {
        "cutover ctl".to_string()
    } else {
        format!("cutover ctl --admin http://{admin}")
    };
    println!(
        "cutover demo is running.

  proxy  http://{proxy}   route \"app\": blue=100 green=0
  admin  http://{admin}   status, metrics, runtime changes
  blue   http://{blue}   answers \"blue\"
  green  http://{green}   answers \"green\"

Try (in another terminal; with cargo, `cutover` is `cargo run --release --`):
  curl http://{proxy}/                          # blue
  {ctl} status
  {ctl} split app blue=90 green=10     # canary: 1 in 10 to green
  {ctl} split app blue=0 green=100     # cut over to green
  curl http://{proxy}/                          # green
  {ctl} split app blue=100 green=0     # and back
  curl http://{admin}/metrics | grep cutover_requests_total

Runtime changes are kept in {state} (delete it to start from blue again).
Ctrl-C stops everything.",
        state = state.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::Signal)?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(Error::Signal)?,
        _ = term.recv() => {}
    }
    running.stop().await;
    Ok(())
}

/// Starts an app on an ephemeral loopback port that answers every request
/// with its name.
pub async fn spawn_app(name: &'static str) -> Result<SocketAddr, Error> {
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
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    let mut response = Response::new(Full::new(Bytes::from(format!("{name}\n"))));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("text/plain"),
                    );
                    Ok::<_, Infallible>(response)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
