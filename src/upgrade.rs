//! Binary upgrade (SIGUSR2, `POST /api/v1/upgrade`): start the executable
//! this process was started from, hand it every listening socket, wait
//! until it reports ready, then let the old process retire gracefully.
//!
//! The sockets are passed the way systemd passes them (`LISTEN_FDS`, from
//! fd 3), so the new process inherits them through the same path as socket
//! activation; `CUTOVER_UPGRADE_LISTENERS` names the configured address of
//! each (the admin socket first), because a port-0 bind cannot be matched
//! by its bound address. Both processes accept on the same sockets while
//! they overlap, so no connection is refused. The new process reports
//! ready on an abstract unix datagram socket whose random name only the
//! two processes know. Used by `lifecycle` and `admin`; imports neither.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::linux::net::SocketAddrExt;
use std::path::PathBuf;
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use tokio::net::UnixDatagram;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::instance::Instance;

/// Names the configured address of each passed socket, in fd order.
const LISTENERS_ENV: &str = "CUTOVER_UPGRADE_LISTENERS";
/// The abstract socket name on which the new process reports ready.
const READY_ENV: &str = "CUTOVER_UPGRADE_READY";
/// The entry of `LISTENERS_ENV` that marks the admin socket.
const ADMIN: &str = "admin";
/// The first passed descriptor, as in systemd's protocol.
const FIRST_FD: i32 = 3;

/// Why an upgrade did not happen. The old process keeps serving in every
/// case.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("binary upgrade needs `cutover run`; this proxy was started in-process")]
    Unavailable,
    #[error("an upgrade is already in progress")]
    InProgress,
    #[error("this process already handed over to pid {0}")]
    HandedOver(u32),
    #[error("cannot pass the listening sockets: {0}")]
    Sockets(#[source] std::io::Error),
    #[error("cannot start {exe}: {source}")]
    Spawn {
        exe: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the new process (pid {pid}) exited before it was ready ({status}); see its log")]
    ChildExited {
        pid: u32,
        status: std::process::ExitStatus,
    },
    #[error("the new process (pid {pid}) was not ready within {timeout:?}; it was stopped")]
    Timeout { pid: u32, timeout: Duration },
}

/// How this process was started: the executable path as given (not the
/// resolved symlink, so a re-pointed `/usr/local/bin/cutover` starts the
/// new version) and the arguments.
#[derive(Debug, Clone)]
pub struct Launch {
    exe: PathBuf,
    args: Vec<OsString>,
}

impl Launch {
    /// Read at start, before the file at that path can be replaced.
    pub fn of_this_process() -> std::io::Result<Launch> {
        let mut argv = std::env::args_os();
        let argv0 = argv.next().map(PathBuf::from);
        let exe = match argv0 {
            // A path as given: relative ones are taken from the start
            // directory, without resolving symlinks.
            // (Collecting the components drops `.` ones.)
            Some(p) if p.components().count() > 1 => {
                std::env::current_dir()?.join(p).components().collect()
            }
            // A bare name was found on PATH; ask the kernel which file.
            _ => std::env::current_exe()?,
        };
        Ok(Launch {
            exe,
            args: argv.collect(),
        })
    }
}

/// A finished handover.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Handover {
    pub old_pid: u32,
    pub new_pid: u32,
}

/// Runs upgrades for one `cutover run` process.
pub struct Upgrader {
    launch: Launch,
    timeout: Duration,
    /// A duplicate of the admin listening socket, to pass on.
    admin_socket: OwnedFd,
    /// Cancelled when a new process has taken over: stops the admin accept
    /// loop and starts this process's retirement.
    handed_over: CancellationToken,
    /// Cancelled at the same moment, before the upgrade call answers: from
    /// then on every HTTP/1 response here says `Connection: close`.
    retire: CancellationToken,
    busy: Mutex<()>,
}

impl Upgrader {
    pub fn new(
        launch: Launch,
        timeout: Duration,
        admin_socket: OwnedFd,
        handed_over: CancellationToken,
        retire: CancellationToken,
    ) -> Upgrader {
        Upgrader {
            launch,
            timeout,
            admin_socket,
            handed_over,
            retire,
            busy: Mutex::new(()),
        }
    }

    /// Cancelled once a new process has taken over.
    pub fn handed_over(&self) -> CancellationToken {
        self.handed_over.clone()
    }

    /// Starts the new process and hands over. Holds the control plane for
    /// the whole time, so no runtime change lands between the new process
    /// reading `state.dir` and this one retiring; afterwards this plane
    /// refuses changes and this process's listeners are closed (the
    /// sockets live on in the new process).
    pub async fn upgrade(&self, instance: &Mutex<Instance>) -> Result<Handover, UpgradeError> {
        let Ok(_busy) = self.busy.try_lock() else {
            return Err(UpgradeError::InProgress);
        };
        let mut instance = instance.lock().await;
        if let Some(pid) = instance.plane.retired_for() {
            return Err(UpgradeError::HandedOver(pid));
        }
        let mut names = vec![ADMIN.to_string()];
        let mut sockets = vec![
            self.admin_socket
                .try_clone()
                .map_err(UpgradeError::Sockets)?,
        ];
        for (bind, fd) in instance
            .listeners
            .duplicate_sockets()
            .map_err(UpgradeError::Sockets)?
        {
            names.push(bind.to_string());
            sockets.push(fd);
        }
        let (ready, ready_name) = ready_socket().map_err(UpgradeError::Sockets)?;
        let mut child = self.spawn(names, sockets, &ready_name)?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(pid, exe = %self.launch.exe.display(), "upgrade: new process started");
        crate::systemd::status(&format!("upgrading: waiting for pid {pid}"));
        tokio::select! {
            () = wait_ready(&ready, pid) => {}
            status = child.wait() => {
                crate::systemd::status("upgrade failed; this process serves on");
                let status = status.map_err(UpgradeError::Sockets)?;
                return Err(UpgradeError::ChildExited { pid, status });
            }
            () = tokio::time::sleep(self.timeout) => {
                crate::systemd::status("upgrade failed; this process serves on");
                stop_child(&mut child, pid).await;
                return Err(UpgradeError::Timeout { pid, timeout: self.timeout });
            }
        }
        // From here the new process serves: retire this one.
        instance.plane.retire(pid);
        instance.listeners.close_all().await;
        crate::systemd::main_pid(pid);
        self.retire.cancel();
        self.handed_over.cancel();
        let handover = Handover {
            old_pid: std::process::id(),
            new_pid: pid,
        };
        tracing::info!(?handover, "upgrade: handed over; this process retires");
        Ok(handover)
    }

    fn spawn(
        &self,
        names: Vec<String>,
        sockets: Vec<OwnedFd>,
        ready_name: &str,
    ) -> Result<tokio::process::Child, UpgradeError> {
        let count = sockets.len();
        let mappings = sockets
            .into_iter()
            .zip(FIRST_FD..)
            .map(|(parent_fd, child_fd)| FdMapping {
                parent_fd,
                child_fd,
            })
            .collect();
        let mut command = std::process::Command::new(&self.launch.exe);
        command
            .args(&self.launch.args)
            // What systemd gave this process is not the new one's: it
            // gets the sockets listed here, and the watchdog follows it.
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("WATCHDOG_PID")
            .env("LISTEN_FDS", count.to_string())
            .env(LISTENERS_ENV, names.join(","))
            .env(READY_ENV, ready_name);
        let spawn_error = |source| UpgradeError::Spawn {
            exe: self.launch.exe.display().to_string(),
            source,
        };
        command.fd_mappings(mappings).map_err(|e| {
            spawn_error(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                e.to_string(),
            ))
        })?;
        tokio::process::Command::from(command)
            .spawn()
            .map_err(spawn_error)
    }
}

/// A datagram socket in the abstract namespace (nothing on disk to clean
/// up or to make writable under `ProtectSystem=strict`).
fn ready_socket() -> std::io::Result<(UnixDatagram, String)> {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).map_err(std::io::Error::other)?;
    let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("cutover-upgrade-{}-{hex}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let socket = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
    socket.set_nonblocking(true)?;
    Ok((UnixDatagram::from_std(socket)?, name))
}

/// Returns once `pid` reports `READY=1` (other senders are ignored).
async fn wait_ready(socket: &UnixDatagram, pid: u32) {
    let want = format!("MAINPID={pid}");
    let mut buf = [0u8; 256];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]);
                if message.lines().any(|l| l == "READY=1") && message.lines().any(|l| l == want) {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "upgrade: cannot read the ready socket");
                // Leave it to the timeout rather than spin.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// SIGTERM (a graceful stop: connections it accepted finish), then SIGKILL
/// if it is still there after a few seconds.
async fn stop_child(child: &mut tokio::process::Child, pid: u32) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// Sockets passed by a binary upgrade, by their configured address.
#[derive(Default)]
pub struct Inherited {
    pub admin: Option<std::net::TcpListener>,
    pub listeners: HashMap<SocketAddr, std::net::TcpListener>,
}

/// Listening sockets passed in, by socket activation or a binary upgrade.
/// Socket-activated ones are keyed by their bound address, to be matched
/// to `[[listener]]` entries; an upgrade names each one's configured
/// address and marks the admin socket.
pub fn inherited_listeners() -> Inherited {
    let sockets = crate::systemd::passed_sockets();
    if let Ok(names) = std::env::var(LISTENERS_ENV) {
        let found = named(&names, sockets);
        tracing::info!(
            listeners = found.listeners.len(),
            admin = found.admin.is_some(),
            "listening sockets passed by the previous process"
        );
        return found;
    }
    let mut found = Inherited::default();
    for l in sockets.into_iter().flatten() {
        match l.local_addr() {
            Ok(addr) => {
                tracing::info!(%addr, "listener passed by systemd");
                found.listeners.insert(addr, l);
            }
            Err(e) => tracing::warn!(error = %e, "passed socket has no address"),
        }
    }
    found
}

/// The sockets an upgrade passed, by the names in `LISTENERS_ENV`.
/// `sockets` holds every passed descriptor in order, `None` where one was
/// not a TCP listener.
fn named(names: &str, sockets: Vec<Option<std::net::TcpListener>>) -> Inherited {
    let mut found = Inherited::default();
    for (name, socket) in names.split(',').zip(sockets) {
        let Some(socket) = socket else { continue };
        if name == ADMIN {
            found.admin = Some(socket);
        } else if let Ok(bind) = name.parse() {
            found.listeners.insert(bind, socket);
        } else {
            tracing::warn!(name, "passed socket with an unreadable name; closed");
        }
    }
    found
}

/// In a process started by an upgrade: tells the old process this one is
/// ready. A no-op otherwise.
pub fn report_ready() {
    let Ok(name) = std::env::var(READY_ENV) else {
        return;
    };
    let message = format!("READY=1\nMAINPID={}\n", std::process::id());
    let sent =
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).and_then(|addr| {
            let socket = std::os::unix::net::UnixDatagram::unbound()?;
            socket.send_to_addr(message.as_bytes(), &addr)
        });
    if let Err(e) = sent {
        tracing::error!(error = %e, "cannot tell the old process this one is ready");
    }
}
