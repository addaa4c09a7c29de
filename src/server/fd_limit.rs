//! File descriptors: every client connection holds one, and one more to
//! its upstream while a request is in flight. The soft limit is raised to
//! the hard one at start (as nginx's `worker_rlimit_nofile` and Go do), a
//! `max_connections` the limit cannot hold is warned about, and running
//! out at accept says so clearly — once per interval, not once per try.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept aside for listeners, the state directory, logs,
/// health checks and the runtime's own.
const HEADROOM: u64 = 256;

/// At most one "out of file descriptors" line per this long.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Raises the soft limit on open files to the hard limit; returns the
/// limit now in force (`None` if it cannot be read).
pub fn raise() -> Option<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// Warns when `max_connections` proxied connections (a client socket and
/// an upstream socket each) would not fit under `limit`.
pub fn check(max_connections: usize, limit: u64) {
    let needed = (max_connections as u64).saturating_mul(2) + HEADROOM;
    if needed > limit {
        tracing::warn!(
            limit,
            max_connections,
            needed,
            "the open-files limit is below what max_connections may need: raise LimitNOFILE (or ulimit -n), or lower proxy.max_connections; at the limit, new connections wait in the kernel's accept queue"
        );
    }
}

/// Reports failed accepts: EMFILE/ENFILE as "out of file descriptors",
/// at most once per [`REPORT_EVERY`], with how many were not reported.
#[derive(Default)]
pub struct AcceptErrors {
    state: Mutex<Option<(Instant, u64)>>,
}

impl AcceptErrors {
    pub fn report(
        &self,
        listener: Option<std::net::SocketAddr>,
        error: &std::io::Error,
        open: usize,
    ) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        if let Some((last, suppressed)) = state.as_mut()
            && now.duration_since(*last) < REPORT_EVERY
        {
            *suppressed += 1;
            return;
        }
        let suppressed = state.map_or(0, |(_, n)| n);
        *state = Some((now, 0));
        let out_of_fds = error
            .raw_os_error()
            .is_some_and(|code| matches!(Errno::from_raw(code), Errno::EMFILE | Errno::ENFILE));
        if out_of_fds {
            tracing::warn!(
                ?listener,
                open_connections = open,
                limit = ?getrlimit(Resource::RLIMIT_NOFILE).ok().map(|(soft, _)| soft),
                suppressed,
                "out of file descriptors: new connections wait in the kernel's accept queue until some close; raise LimitNOFILE (or ulimit -n), or lower proxy.max_connections"
            );
        } else {
            tracing::warn!(?listener, error = %error, suppressed, "accept failed");
        }
    }
}
