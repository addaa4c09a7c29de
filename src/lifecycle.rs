//! Start order, signals and graceful stop. The only module that sees
//! everything.
//!
//! Start: validate config → build the routing table → bind every listener
//! (all or none) → serve. Stop (SIGTERM/SIGINT): close the listeners so new
//! connections are refused, ask every connection to finish (HTTP/1.1 closes
//! after the response in flight, HTTP/2 sends GOAWAY), wait for in-flight
//! requests and tunnels up to `proxy.shutdown_timeout`, then return.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::Error;
use crate::proxy::Proxy;
use crate::routing::{Control, Routing};
use crate::server::Server;

/// A started proxy.
pub struct Running {
    addrs: Vec<SocketAddr>,
    control: Control,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    accept_loops: Vec<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

/// How a graceful stop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection finished in time.
    Clean,
    /// The deadline passed with connections still open; they were dropped.
    DeadlinePassed,
}

/// Binds every listener of `config` and starts serving.
pub async fn start(config: &Config) -> Result<Running, Error> {
    let mut listeners = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        let listener = TcpListener::bind(l.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: l.bind,
                source,
            })?;
        listeners.push(listener);
    }
    let control = Control::new(config);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let proxy = Arc::new(Proxy::new(
        control.routing(),
        config.proxy.clone(),
        tracker.clone(),
    ));
    let server = Server::new(proxy, &config.proxy, shutdown.clone(), tracker.clone());
    let mut addrs = Vec::new();
    let mut accept_loops = Vec::new();
    for listener in listeners {
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        tracing::info!(%addr, "listening");
        addrs.push(addr);
        accept_loops.push(tokio::spawn(Arc::clone(&server).serve(listener)));
    }
    Ok(Running {
        addrs,
        control,
        shutdown,
        tracker,
        accept_loops,
        shutdown_timeout: config.proxy.shutdown_timeout,
    })
}

impl Running {
    /// Bound addresses, in `[[listener]]` order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn routing(&self) -> Arc<Routing> {
        self.control.routing()
    }

    /// Applies a new config's routes and pools, keeping upstream live state.
    /// Listener and `[proxy]` changes need a restart.
    pub fn apply_config(&mut self, config: &Config) {
        self.control.apply_config(config);
    }

    /// Graceful stop; returns once every connection has finished or the
    /// deadline has passed.
    pub async fn stop(self) -> Stopped {
        self.shutdown.cancel();
        for l in self.accept_loops {
            // The loop owns its listener; once it returns, the socket is
            // closed and new connections are refused.
            let _ = l.await;
        }
        self.tracker.close();
        match tokio::time::timeout(self.shutdown_timeout, self.tracker.wait()).await {
            Ok(()) => Stopped::Clean,
            Err(_) => {
                tracing::warn!(
                    open = self.tracker.len(),
                    timeout = ?self.shutdown_timeout,
                    "shutdown deadline passed; closing remaining connections"
                );
                Stopped::DeadlinePassed
            }
        }
    }
}

/// `cutover run`: serve `path` until SIGTERM/SIGINT; SIGHUP re-reads it.
pub async fn run(path: &Path) -> Result<(), Error> {
    let config = Config::load(path)?;
    let mut running = start(&config).await?;
    tracing::info!(config = %path.display(), summary = %config.summary(), "cutover ready");
    wait_for_stop(&mut running, path).await?;
    tracing::info!("stopping: refusing new connections, finishing in-flight requests");
    let stopped = running.stop().await;
    tracing::info!(?stopped, "stopped");
    Ok(())
}

async fn wait_for_stop(running: &mut Running, path: &Path) -> Result<(), Error> {
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(Error::Signal)?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => reload(running, path),
        }
    }
}

fn reload(running: &mut Running, path: &Path) {
    match Config::load(path) {
        Ok(config) => {
            running.apply_config(&config);
            tracing::info!(summary = %config.summary(), "config reloaded");
        }
        Err(e) => {
            for problem in &e.problems {
                tracing::error!(%problem, "reload refused; the running config is unchanged");
            }
        }
    }
}

/// `-c FILE` if given, else `./cutover.toml`, else `/etc/cutover/cutover.toml`.
pub fn default_config_path(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let local = PathBuf::from("cutover.toml");
        if local.exists() {
            local
        } else {
            PathBuf::from("/etc/cutover/cutover.toml")
        }
    })
}
