//! Start order, signals and graceful stop. The only module that sees
//! everything.
//!
//! Start: validate config → open `state.dir` and re-apply runtime changes →
//! publish the routing table → bind every listener (all or none) → admin API
//! → ready. Stop (SIGTERM/SIGINT): close the listeners so new connections
//! are refused, ask every connection to finish (HTTP/1.1 closes after the
//! response in flight, HTTP/2 sends GOAWAY), wait for in-flight requests and
//! tunnels up to `proxy.shutdown_timeout`, then return.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::admin::Admin;
use crate::balance::sticky::StickyKey;
use crate::config::Config;
use crate::control::ControlPlane;
use crate::error::Error;
use crate::proxy::Proxy;
use crate::routing::{Control, Routing};
use crate::server::{Listeners, Server};
use crate::state::{Caller, Store};
use crate::{systemd, telemetry};

/// A started proxy.
pub struct Running {
    plane: Arc<Mutex<ControlPlane>>,
    routing: Arc<Routing>,
    addrs: Vec<SocketAddr>,
    admin_addr: SocketAddr,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    admin_task: JoinHandle<()>,
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

/// Starts everything `config` describes. `path` is the file to re-read on
/// reload (none for an embedded config).
pub async fn start(config: Config, path: Option<PathBuf>) -> Result<Running, Error> {
    telemetry::metrics();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let store = Store::open(&config.state.dir)?;
    let control = Control::new(&config, StickyKey::new(store.sticky_key()?));
    let routing = control.routing();
    let access_log = match &config.proxy.access_log {
        Some(target) => Some(AccessLog::start(target).map_err(Error::AccessLog)?),
        None => None,
    };
    let proxy = Arc::new(Proxy::new(
        Arc::clone(&routing),
        config.proxy.clone(),
        tracker.clone(),
        access_log,
    ));
    let server = Server::new(proxy, &config.proxy, shutdown.clone(), tracker.clone());
    let listener_configs = config.listeners.clone();
    let certs =
        crate::tls::load_listeners(&listener_configs).map_err(|p| Error::Tls(p.join("\n")))?;
    let admin_bind = config.admin.bind;
    let token_file = config.admin.token_file.clone();
    let shutdown_timeout = config.proxy.shutdown_timeout;

    // Runtime changes are applied before any listener accepts a request.
    let first_check_limit = config
        .pools
        .iter()
        .filter_map(|p| p.health.as_ref())
        .map(|h| h.timeout)
        .max()
        .map(|t| t + Duration::from_secs(1));
    let mut listeners = Listeners::new(server);
    listeners.inherit(systemd::inherited_listeners());
    let mut plane = ControlPlane::new(config, path, store, control, listeners)?;
    if let Some(limit) = first_check_limit {
        // Listeners open once checked pools have a verdict, so a start does
        // not answer 503 while the first checks run.
        plane.first_health_verdicts(limit).await;
    }
    plane
        .listeners()
        .reconcile(&listener_configs, &certs)
        .await?;
    let addrs = plane.listeners().addrs();
    let plane = Arc::new(Mutex::new(plane));
    // Upstreams removed with DELETE go once drained.
    tokio::spawn({
        let plane = Arc::clone(&plane);
        let shutdown = shutdown.clone();
        async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => plane.lock().await.reap(),
                    _ = shutdown.cancelled() => break,
                }
            }
        }
    });

    let admin = Admin::new(
        Arc::clone(&plane),
        Arc::clone(&routing),
        token_file.as_deref(),
    )?;
    let admin_listener = TcpListener::bind(admin_bind)
        .await
        .map_err(|source| Error::Bind {
            addr: admin_bind,
            source,
        })?;
    let admin_addr = admin_listener.local_addr().map_err(|source| Error::Bind {
        addr: admin_bind,
        source,
    })?;
    tracing::info!(addr = %admin_addr, "admin API listening");
    let admin_task =
        tokio::spawn(Arc::clone(&admin).serve(admin_listener, shutdown.clone(), tracker.clone()));
    admin.set_ready();

    Ok(Running {
        plane,
        routing,
        addrs,
        admin_addr,
        shutdown,
        tracker,
        admin_task,
        shutdown_timeout,
    })
}

impl Running {
    /// Bound client-facing addresses, in `[[listener]]` order, as at start.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn routing(&self) -> Arc<Routing> {
        Arc::clone(&self.routing)
    }

    /// Re-reads the config file, as SIGHUP does.
    pub async fn reload(&self, who: &str) {
        let caller = Caller {
            peer: who.to_string(),
            token: None,
        };
        let mut plane = self.plane.lock().await;
        match plane.reload(&caller).await {
            Ok(_) => tracing::info!(summary = %plane.file().summary(), "config reloaded"),
            Err(crate::control::ControlError::InvalidConfig(problems)) => {
                for problem in &problems {
                    tracing::error!(%problem, "reload refused; the running config is unchanged");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the running config is unchanged")
            }
        }
    }

    /// Graceful stop; returns once every connection has finished or the
    /// deadline has passed.
    pub async fn stop(self) -> Stopped {
        // Listeners first: once closed, new connections are refused.
        self.plane.lock().await.listeners().close_all().await;
        self.shutdown.cancel();
        let _ = self.admin_task.await;
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
    let summary = config.summary();
    let running = start(config, Some(path.to_path_buf())).await?;
    tracing::info!(config = %path.display(), %summary, "cutover ready");
    systemd::ready(&summary);
    systemd::spawn_watchdog(running.shutdown.clone());
    wait_for_stop(&running).await?;
    tracing::info!("stopping: refusing new connections, finishing in-flight requests");
    systemd::stopping("stopping: finishing in-flight requests");
    let stopped = running.stop().await;
    tracing::info!(?stopped, "stopped");
    Ok(())
}

async fn wait_for_stop(running: &Running) -> Result<(), Error> {
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(Error::Signal)?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                systemd::reloading();
                running.reload("SIGHUP").await;
                let summary = running.plane.lock().await.file().summary();
                systemd::ready(&summary);
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
