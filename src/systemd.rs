//! systemd integration: `Type=notify` states (READY, RELOADING, STOPPING,
//! STATUS), watchdog pings when `WATCHDOG_USEC` is set, and sockets passed
//! by `LISTEN_FDS`. Every call is a no-op outside systemd (no
//! `NOTIFY_SOCKET`, no `LISTEN_FDS`). Imports nothing.

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

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

/// The sockets passed by `LISTEN_FDS` (socket activation, or a binary
/// upgrade, which passes them the same way), in order; `None` where one is
/// not a TCP listener. `upgrade::inherited_listeners` names them.
pub fn passed_sockets() -> Vec<Option<std::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    (0..fds.len())
        .map(|i| match fds.take_tcp_listener(i) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(fd = i + 3, error = %e, "passed socket is not a TCP listener");
                None
            }
        })
        .collect()
}
