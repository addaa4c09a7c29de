//! systemd integration: `Type=notify` states (READY, RELOADING, STOPPING,
//! STATUS), watchdog pings when `WATCHDOG_USEC` is set, and listeners passed
//! by socket activation (`LISTEN_FDS`). Every call is a no-op outside
//! systemd (no `NOTIFY_SOCKET`, no `LISTEN_FDS`).

use std::collections::HashMap;
use std::net::SocketAddr;

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

/// TCP listeners passed by socket activation, by their bound address, to
/// be matched to `[[listener]]` entries.
pub fn inherited_listeners() -> HashMap<SocketAddr, std::net::TcpListener> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut found = HashMap::new();
    for i in 0..fds.len() {
        match fds.take_tcp_listener(i) {
            Ok(Some(l)) => match l.local_addr() {
                Ok(addr) => {
                    tracing::info!(%addr, "listener passed by systemd");
                    found.insert(addr, l);
                }
                Err(e) => tracing::warn!(fd = i + 3, error = %e, "passed socket has no address"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(fd = i + 3, error = %e, "passed socket is not a TCP listener"),
        }
    }
    found
}
