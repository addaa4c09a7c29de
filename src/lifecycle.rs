//! Start order, signals and graceful stop. The only module that sees
//! everything.
//!
//! Start: validate config → open `state.dir` and re-apply runtime changes →
//! publish the routing table → bind every listener (all or none) → admin API
//! → ready. Stop (SIGTERM/SIGINT): close the listeners so new connections
//! are refused, ask every connection to finish (HTTP/1.1 closes after the
//! response in flight, HTTP/2 sends GOAWAY), wait for in-flight requests and
//! tunnels up to `proxy.shutdown_timeout`, then return.
//!
//! Binary upgrade (SIGUSR2 or the admin API; see `upgrade`): once the new
//! process has the sockets and is ready, this one retires — its listeners
//! are already closed, connections end without racing a client's request,
//! and systemd is not told STOPPING (the service lives on in the new
//! process).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::admin::Admin;
use crate::config::Config;
use crate::control::ControlPlane;
use crate::error::Error;
use crate::health::HealthChecks;
use crate::instance::AdminTls;
use crate::instance::Instance;
use crate::proxy::Proxy;
use crate::routing::Routing;
use crate::server::{BindError, Listeners, Server};
use crate::state::{Caller, Store};
use crate::upgrade::{self, Handover, Launch, UpgradeError, Upgrader};
use crate::{systemd, telemetry};

/// A started proxy.
pub struct Running {
    instance: Arc<Mutex<Instance>>,
    routing: Arc<Routing>,
    addrs: Vec<SocketAddr>,
    admin_addr: SocketAddr,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    admin_task: JoinHandle<()>,
    shutdown_timeout: Duration,
    /// Ends connections gently after a binary upgrade.
    retire: CancellationToken,
    upgrader: Option<Arc<Upgrader>>,
    /// Queued spans are sent before the process ends.
    tracing: crate::traces::SharedTracing,
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
/// reload (none for an embedded config). Binary upgrade is refused: see
/// [`start_upgradable`].
pub async fn start(config: Config, path: Option<PathBuf>) -> Result<Running, Error> {
    start_with(config, path, None, crate::dns::system()).await
}

/// As [`start`]; with `launch`, a binary upgrade re-runs that command.
pub async fn start_upgradable(
    config: Config,
    path: Option<PathBuf>,
    launch: Option<Launch>,
) -> Result<Running, Error> {
    start_with(config, path, launch, crate::dns::system()).await
}

/// As [`start_upgradable`], with DNS names looked up by `resolver` (tests
/// give one whose answers they change).
pub async fn start_with(
    config: Config,
    path: Option<PathBuf>,
    launch: Option<Launch>,
    resolver: crate::dns::Resolver,
) -> Result<Running, Error> {
    telemetry::metrics();
    // The files the config names, as `cutover check` reads them, before
    // anything is bound: a config check passes does not fail here on a
    // file, and one it fails never takes a port.
    check_files(&config).map_err(|problems| Error::Files(problems.join("\n")))?;
    if let Some(limit) = crate::server::fd_limit::raise() {
        crate::server::fd_limit::check(config.proxy.max_connections, limit);
    }
    let shutdown = CancellationToken::new();
    let retire = CancellationToken::new();
    let tracker = TaskTracker::new();
    let opened = Opened::open(&config)?;
    let listener_configs = config.listeners.clone();
    let cluster = match &config.cluster {
        Some(c) => Some(crate::cluster::Cluster::new(c).await?),
        None => None,
    };
    let admin_bind = config.admin.bind;
    let proxy_settings = config.proxy.clone();
    let shutdown_timeout = config.proxy.shutdown_timeout;
    let upgrade_timeout = config.proxy.upgrade_timeout;
    let first_check_limit = first_check_limit(&config);

    // DNS names resolved before the first table: an upstream whose name
    // does not resolve yet has no address (status says why).
    let names = resolve_all(&config, &resolver).await;
    // Runtime changes are applied before any listener accepts a request.
    let plane = ControlPlane::start(config, names, path, opened.store)?;
    let routing = plane.routing();
    let proxy = Arc::new(Proxy::new(
        Arc::clone(&routing),
        proxy_settings.clone(),
        tracker.clone(),
        opened.access_log,
        opened.tracing.clone(),
    ));
    start_health_checks(&routing, Arc::clone(&proxy), first_check_limit, &shutdown).await;
    let server = Server::new(
        Arc::clone(&proxy),
        &proxy_settings,
        shutdown.clone(),
        retire.clone(),
        tracker.clone(),
    );
    let mut listeners = Listeners::new(server);
    let inherited = upgrade::inherited_listeners();
    // The admin socket opens before any client listener accepts: a flood
    // of clients at start could otherwise take every file descriptor and
    // fail the start after the proxy was already serving.
    let admin_socket = AdminSocket::open(
        admin_bind,
        inherited.admin,
        launch.map(|l| (l, upgrade_timeout, retire.clone())),
        &shutdown,
    )
    .await?;
    listeners.inherit(inherited.listeners);
    listeners
        .reconcile(&listener_configs, &opened.certs)
        .await?;
    let addrs = listeners.addrs();
    let admin_tls = opened.admin_tls;
    let admin_acceptor = admin_tls.as_ref().map(|t| {
        tokio_rustls::TlsAcceptor::from(crate::tls::server_config(Arc::clone(&t.store), false))
    });
    let instance = Arc::new(Mutex::new(Instance {
        plane,
        listeners,
        admin_tls,
        cluster: cluster.clone(),
    }));
    run_background_tasks(&instance, &proxy, cluster, resolver, &shutdown);
    let (admin_addr, upgrader) = (admin_socket.addr, admin_socket.upgrader.clone());
    let admin = Admin::new(
        Arc::clone(&instance),
        Arc::clone(&routing),
        opened.tokens,
        upgrader.clone(),
    );
    let admin_task = admin_socket.serve(admin, admin_acceptor, tracker.clone());

    Ok(Running {
        instance,
        routing,
        addrs,
        admin_addr,
        shutdown,
        tracker,
        admin_task,
        shutdown_timeout,
        retire,
        upgrader,
        tracing: opened.tracing,
    })
}

/// Health checks for the first table, then for every table swap (with the
/// proxy's upstream pools). With `first_limit`, waits up to it for checked
/// pools' first verdicts: listeners open once they have one, so a start
/// does not answer 503 while the first checks run.
async fn start_health_checks(
    routing: &Routing,
    proxy: Arc<Proxy>,
    first_limit: Option<Duration>,
    shutdown: &CancellationToken,
) {
    let mut health = HealthChecks::new();
    health.sync(&routing.load());
    if let Some(limit) = first_limit {
        health.first_verdicts(limit).await;
    }
    follow_table_swaps(routing, proxy, health, shutdown.clone());
}

/// What the start opens from the files the config names.
struct Opened {
    store: Store,
    access_log: Option<AccessLog>,
    tracing: crate::traces::SharedTracing,
    /// Each listener's certificates, by its address.
    certs: std::collections::HashMap<SocketAddr, crate::tls::ListenerTls>,
    admin_tls: Option<AdminTls>,
    tokens: (Option<crate::admin::Token>, Option<crate::admin::Token>),
}

impl Opened {
    fn open(config: &Config) -> Result<Opened, Error> {
        let store = Store::open(&config.state.dir)?;
        let access_log = match &config.proxy.access_log {
            Some(target) => Some(
                AccessLog::start(
                    target,
                    config.proxy.access_log_format,
                    config.proxy.access_log_fields.clone(),
                )
                .map_err(Error::AccessLog)?,
            ),
            None => None,
        };
        let tracing = match &config.tracing {
            Some(c) => Some(Arc::new(
                crate::traces::Tracing::start(c).map_err(Error::Tracing)?,
            )),
            None => None,
        };
        Ok(Opened {
            store,
            access_log,
            tracing,
            certs: crate::tls::load_listeners(&config.listeners)
                .map_err(|p| Error::Tls(p.join("\n")))?,
            admin_tls: AdminTls::load(&config.admin).map_err(Error::Tls)?,
            tokens: crate::admin::Token::load_both(&config.admin)?,
        })
    }
}

/// The tasks that act on the instance in the background until `shutdown`:
/// the fleet's follower, the idle-connection sweep, rollouts, DNS, and the
/// removal of drained upstreams.
fn run_background_tasks(
    instance: &Arc<Mutex<Instance>>,
    proxy: &Arc<Proxy>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    resolver: crate::dns::Resolver,
    shutdown: &CancellationToken,
) {
    if let Some(cluster) = cluster {
        crate::cluster::follow::follow(cluster, Arc::clone(instance), shutdown.clone());
    }
    proxy.sweep_idle_upstream_connections(shutdown.clone());
    drive_rollouts(Arc::clone(instance), shutdown.clone());
    follow_dns(Arc::clone(instance), resolver, shutdown.clone());
    reap_drained(Arc::clone(instance), shutdown.clone());
}

/// How long the start waits for checked pools' first verdicts: the
/// longest health-check timeout and a second; none without checks.
fn first_check_limit(config: &Config) -> Option<Duration> {
    config
        .pools
        .iter()
        .filter_map(|p| p.health.as_ref())
        .map(|h| h.timeout)
        .max()
        .map(|t| t + Duration::from_secs(1))
}

/// The admin API's socket, and what a binary upgrade needs of it.
struct AdminSocket {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    /// Stops the admin accept loop: at shutdown, or at a handover, when
    /// the new process accepts on the same socket.
    stop: CancellationToken,
    upgrader: Option<Arc<Upgrader>>,
}

impl AdminSocket {
    /// Binds `bind`, or serves the socket an upgrade `passed` if the file
    /// still names its address (an upgrade may come with an edited
    /// config). With `upgrades` (how to launch a new binary, its timeout
    /// and the retire token), an upgrader holding a copy of the socket.
    async fn open(
        bind: SocketAddr,
        passed: Option<std::net::TcpListener>,
        upgrades: Option<(Launch, Duration, CancellationToken)>,
        shutdown: &CancellationToken,
    ) -> Result<AdminSocket, BindError> {
        let bind_error = |source| BindError { addr: bind, source };
        let passed = passed
            .filter(|socket| bind.port() == 0 || socket.local_addr().is_ok_and(|a| a == bind));
        let listener = crate::server::listen(bind, passed)
            .await
            .map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let stop = shutdown.child_token();
        let upgrader = match upgrades {
            Some((launch, timeout, retire)) => {
                let socket = listener.as_fd().try_clone_to_owned().map_err(bind_error)?;
                Some(Arc::new(Upgrader::new(
                    launch,
                    timeout,
                    socket,
                    stop.clone(),
                    retire,
                )))
            }
            None => None,
        };
        Ok(AdminSocket {
            listener,
            addr,
            stop,
            upgrader,
        })
    }

    /// Serves `admin` here until `stop`; `/readyz` answers 200 from now on.
    fn serve(
        self,
        admin: Arc<Admin>,
        tls: Option<tokio_rustls::TlsAcceptor>,
        tracker: TaskTracker,
    ) -> tokio::task::JoinHandle<()> {
        tracing::info!(addr = %self.addr, "admin API listening");
        let task = tokio::spawn(Arc::clone(&admin).serve(self.listener, tls, self.stop, tracker));
        admin.set_ready();
        task
    }
}

/// Every file the config names: listener, admin and upstream
/// certificates, admin token files, the fleet's etcd files. `cutover
/// check` and the start both run exactly this, so the two never disagree
/// on a file.
pub fn check_files(config: &Config) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if let Err(p) = crate::tls::load_listeners(&config.listeners) {
        problems.extend(p);
    }
    if let Err(p) = crate::upstream_tls::check(&config.pools) {
        problems.extend(p);
    }
    if let Err(p) = AdminTls::load(&config.admin) {
        problems.push(p);
    }
    if let Err(e) = crate::admin::Token::load_both(&config.admin) {
        problems.push(e.to_string());
    }
    if let Some(Err(p)) = config.cluster.as_ref().map(crate::cluster::check) {
        problems.extend(p);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
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
        let mut instance = self.instance.lock().await;
        match instance.reload(&caller).await {
            Ok(_) => tracing::info!(summary = %instance.plane.file().summary(), "config reloaded"),
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

    /// Binary upgrade, as SIGUSR2 does. Refused for a proxy started
    /// in-process (tests, `cutover demo`): there is no command to re-run.
    pub async fn upgrade(&self) -> Result<Handover, UpgradeError> {
        match &self.upgrader {
            Some(u) => u.upgrade(&self.instance).await,
            None => Err(UpgradeError::Unavailable),
        }
    }

    /// Resolves once a binary upgrade has handed over to a new process.
    async fn handed_over(&self) {
        match &self.upgrader {
            Some(u) => u.handed_over().cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// Graceful stop; returns once every connection has finished or the
    /// deadline has passed.
    pub async fn stop(self) -> Stopped {
        // Listeners first: once closed, new connections are refused.
        self.instance.lock().await.listeners.close_all().await;
        self.shutdown.cancel();
        let _ = self.admin_task.await;
        self.tracker.close();
        let stopped = wait_connections(&self.tracker, self.shutdown_timeout).await;
        flush_spans(self.tracing).await;
        stopped
    }

    /// After a handover: the sockets live on in the new process, so
    /// connections here end gently (see `server`) rather than at once; any
    /// left at `shutdown_timeout` are shut down as on SIGTERM.
    pub async fn retire(self) -> Stopped {
        // Already cancelled by the handover; kept for a direct call.
        self.retire.cancel();
        let _ = self.admin_task.await;
        self.tracker.close();
        let gently = tokio::time::timeout(self.shutdown_timeout, self.tracker.wait()).await;
        self.shutdown.cancel();
        let stopped = match gently {
            Ok(()) => Stopped::Clean,
            Err(_) => wait_connections(&self.tracker, self.shutdown_timeout).await,
        };
        flush_spans(self.tracing).await;
        stopped
    }
}

/// Sends the spans still queued (the SDK's shutdown blocks, a few seconds
/// at most).
async fn flush_spans(tracing: crate::traces::SharedTracing) {
    if let Some(tracing) = tracing {
        let _ = tokio::task::spawn_blocking(move || tracing.shutdown()).await;
    }
}

/// Health checks and upstream connection pools follow every table the
/// control plane publishes: new upstreams get checks and a pool, removed
/// ones lose them, a draining upstream's idle connections close.
fn follow_table_swaps(
    routing: &Routing,
    proxy: Arc<Proxy>,
    mut health: HealthChecks,
    shutdown: CancellationToken,
) {
    let mut published = routing.subscribe();
    proxy.sync_upstreams(&routing.load());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = published.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let table = Arc::clone(&published.borrow_and_update());
                    health.sync(&table);
                    proxy.sync_upstreams(&table);
                }
                _ = shutdown.cancelled() => break,
            }
        }
    });
}

/// How often running rollouts are ticked; each checks at its own
/// `check_every`, so this only bounds how late a check can be.
const ROLLOUT_TICK: Duration = Duration::from_millis(100);

/// Ticks running rollouts until shutdown, and calls the webhooks they ask
/// for outside the instance lock.
fn drive_rollouts(instance: Arc<Mutex<Instance>>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(ROLLOUT_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            let (calls, reads) = tick_rollouts(&instance).await;
            for call in calls {
                let instance = Arc::clone(&instance);
                tokio::spawn(async move {
                    let answer = crate::webhook::post(&call).await;
                    instance.lock().await.plane.webhook_answered(&call, answer);
                });
            }
            for read in reads {
                let instance = Arc::clone(&instance);
                tokio::spawn(async move {
                    let value = crate::check_query::read(&read).await;
                    instance.lock().await.plane.check_answered(&read, value);
                });
            }
        }
    });
}

/// Upstreams removed with DELETE go once drained: checked every 250 ms
/// until `shutdown`.
fn reap_drained(instance: Arc<Mutex<Instance>>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => remove_drained(&instance).await,
                _ = shutdown.cancelled() => break,
            }
        }
    });
}

/// Removes the upstreams `DELETE` marked that have drained.
async fn remove_drained(instance: &Mutex<Instance>) {
    let mut instance = instance.lock().await;
    let caller = Caller {
        peer: "drain".into(),
        token: None,
    };
    for change in instance.plane.drained_removals() {
        match instance.change(&caller, &change).await {
            Ok(()) => tracing::info!(target = %change.target(), "drained upstream removed"),
            Err(e) => {
                tracing::error!(target = %change.target(), error = %e, "cannot remove drained upstream")
            }
        }
    }
}

/// One tick of the rollout driver: the moves it decides, made like any
/// other change; returns the webhooks to call. In a fleet only the
/// instance holding the driver's lease ticks.
async fn tick_rollouts(
    instance: &Mutex<Instance>,
) -> (
    Vec<crate::control::WebhookCall>,
    Vec<crate::control::CheckCall>,
) {
    let mut instance = instance.lock().await;
    let mut elsewhere = crate::control::FleetTraffic::new();
    if let Some(cluster) = instance.cluster.clone()
        && instance.plane.has_running_rollouts()
        // A process that handed over in an upgrade leaves the driver's key
        // to its successor.
        && instance.plane.retired_for().is_none()
    {
        if !cluster.drives_rollouts().await {
            return (Vec::new(), Vec::new());
        }
        // The fleet's traffic, as the other instances last published it.
        match cluster.others().await {
            Ok(records) => elsewhere = crate::control::fleet_traffic(records.iter()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the fleet's traffic: rollouts wait");
                return (Vec::new(), Vec::new());
            }
        }
    }
    let (moves, mut calls) = instance.plane.tick_rollouts(&elsewhere);
    let caller = Caller {
        peer: "rollout".into(),
        token: None,
    };
    for change in moves {
        if let Err(e) = instance.change(&caller, &change).await {
            tracing::error!(target = %change.target(), error = %e, "rollout move failed");
        }
    }
    calls.append(&mut instance.plane.after_rollout_moves());
    (calls, instance.plane.take_check_calls())
}

/// Every DNS name of `config`, looked up at once (each bounded by
/// `dns::LOOKUP_TIMEOUT`).
async fn resolve_all(config: &Config, resolver: &crate::dns::Resolver) -> crate::dns::Names {
    let mut lookups = tokio::task::JoinSet::new();
    for (host, port) in crate::dns::names_of(config).into_keys() {
        let resolver = Arc::clone(resolver);
        lookups.spawn(async move {
            let outcome = crate::dns::lookup(&resolver, &host, port).await;
            (host, port, outcome)
        });
    }
    let mut names = crate::dns::Names::new();
    while let Some(Ok((host, port, outcome))) = lookups.join_next().await {
        if let Err(e) = &outcome {
            tracing::warn!(name = %format!("{host}:{port}"), error = %e, "DNS name does not resolve at start: no address for now");
        }
        crate::dns::record(
            names.entry((host, port)).or_default(),
            outcome,
            crate::clock::unix_ms(),
        );
    }
    names
}

/// How often due DNS names are looked for; each is looked up at its
/// pool's `dns_refresh`.
const DNS_TICK: Duration = Duration::from_secs(1);

/// Looks DNS names up again when due, outside the instance lock, and hands
/// each outcome to the control plane.
fn follow_dns(
    instance: Arc<Mutex<Instance>>,
    resolver: crate::dns::Resolver,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(DNS_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            let due = instance
                .lock()
                .await
                .plane
                .names_due(crate::clock::unix_ms());
            for (host, port) in due {
                let outcome = crate::dns::lookup(&resolver, &host, port).await;
                instance
                    .lock()
                    .await
                    .plane
                    .name_resolved(&host, port, outcome);
            }
        }
    });
}

/// Waits for every tracked connection and tunnel, up to `timeout`.
async fn wait_connections(tracker: &TaskTracker, timeout: Duration) -> Stopped {
    match tokio::time::timeout(timeout, tracker.wait()).await {
        Ok(()) => Stopped::Clean,
        Err(_) => {
            tracing::warn!(
                open = tracker.len(),
                ?timeout,
                "shutdown deadline passed; closing remaining connections"
            );
            Stopped::DeadlinePassed
        }
    }
}

/// `cutover run`: serve `path` until SIGTERM/SIGINT; SIGHUP re-reads it,
/// SIGUSR2 upgrades the binary. `launch` is how this process was started.
pub async fn run(path: &Path, launch: Launch) -> Result<(), Error> {
    // Handlers go in before READY: a SIGHUP that systemd (or an operator)
    // sends right after READY would otherwise kill the process by default.
    let mut signals = Signals::install()?;
    let config = Config::load(path)?;
    let summary = config.summary();
    let running = start_upgradable(config, Some(path.to_path_buf()), Some(launch)).await?;
    tracing::info!(config = %path.display(), %summary, "cutover ready");
    systemd::ready(&summary);
    upgrade::report_ready();
    systemd::spawn_watchdog(running.shutdown.clone());
    match wait_for_stop(&running, &mut signals).await {
        Stop::Signal => {
            tracing::info!("stopping: refusing new connections, finishing in-flight requests");
            systemd::stopping("stopping: finishing in-flight requests");
            let stopped = running.stop().await;
            tracing::info!(?stopped, "stopped");
        }
        Stop::HandedOver => {
            // No STOPPING: systemd would take it for the service's.
            tracing::info!("retiring: the new process serves; finishing connections here");
            let stopped = running.retire().await;
            tracing::info!(?stopped, "retired");
        }
    }
    Ok(())
}

enum Stop {
    Signal,
    HandedOver,
}

/// The signals `cutover run` acts on, registered once.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

impl Signals {
    fn install() -> Result<Self, Error> {
        let install = |kind| signal(kind).map_err(Error::Signal);
        Ok(Self {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            hup: install(SignalKind::hangup())?,
            usr2: install(SignalKind::user_defined2())?,
        })
    }
}

async fn wait_for_stop(running: &Running, signals: &mut Signals) -> Stop {
    loop {
        tokio::select! {
            _ = signals.term.recv() => return Stop::Signal,
            _ = signals.int.recv() => return Stop::Signal,
            () = running.handed_over() => return Stop::HandedOver,
            _ = signals.hup.recv() => {
                systemd::reloading();
                running.reload("SIGHUP").await;
                let summary = running.instance.lock().await.plane.file().summary();
                systemd::ready(&summary);
            }
            _ = signals.usr2.recv() => match running.upgrade().await {
                Ok(handover) => tracing::info!(?handover, "SIGUSR2: upgraded"),
                Err(e) => tracing::error!(error = %e, "SIGUSR2: upgrade failed; this process keeps serving"),
            },
        }
    }
}

/// Where `run` and `check` look for the config file when none is named.
pub const DEFAULT_CONFIG_PATHS: [&str; 2] = ["cutover.toml", "/etc/cutover/cutover.toml"];

/// The config file: the one named, else the first of
/// [`DEFAULT_CONFIG_PATHS`] that exists; `Err` says what was tried.
pub fn find_config(given: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return Ok(path);
    }
    DEFAULT_CONFIG_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            format!(
                "no config file: tried ./{} and {} (name one with --config FILE)",
                DEFAULT_CONFIG_PATHS[0], DEFAULT_CONFIG_PATHS[1]
            )
        })
}
