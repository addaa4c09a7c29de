//! systemd integration: `Type=notify` states (READY, RELOADING, STOPPING,
//! STATUS), watchdog pings when `WATCHDOG_USEC` is set, and listeners passed
//! by socket activation (`LISTEN_FDS`). Every call is a no-op outside
//! systemd (no `NOTIFY_SOCKET`, no `LISTEN_FDS`).

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::upgrade::Inherited;

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Listeners are bound and the config is live.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins (`Type=notify-reload` wants the monotonic time too).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A graceful stop begins.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Pings the watchdog at half its interval until `shutdown`, if systemd
/// asked for one.
pub fn spawn_watchdog(shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    tracing::info!(?interval, "systemd watchdog enabled");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tokio::select! {
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
                _ = shutdown.cancelled() => break,
            }
        }
    });
}

/// A human-readable state line for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// After a binary upgrade: `pid` is now the service's main process
/// (accepted because the unit has `NotifyAccess=all`).
pub fn main_pid(pid: u32) {
    send(&[
        NotifyState::MainPid(pid),
        NotifyState::Status(&format!("upgraded: pid {pid} took over")),
    ]);
}

/// Listening sockets passed in, by socket activation or a binary upgrade.
/// Socket-activated ones are keyed by their bound address, to be matched
/// to `[[listener]]` entries; an upgrade names each one's configured
/// address and marks the admin socket.
pub fn inherited_listeners() -> Inherited {
    let mut fds = listenfd::ListenFd::from_env();
    let mut sockets = Vec::new();
    for i in 0..fds.len() {
        sockets.push(match fds.take_tcp_listener(i) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(fd = i + 3, error = %e, "passed socket is not a TCP listener");
                None
            }
        });
    }
    if let Some(names) = crate::upgrade::passed_names() {
        let found = crate::upgrade::inherited(&names, sockets);
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
