//! Per client connection: how many requests are in flight and when the last
//! one ended, so an idle connection can be told from a busy one; whether it
//! speaks HTTP/2; and whether it should close after its next response.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use http::Version;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct ConnActivity {
    opened: Instant,
    active: AtomicUsize,
    /// Requests started on this connection, ever.
    started: AtomicU64,
    /// Milliseconds after `opened` at which the last request ended.
    last_end_ms: AtomicU64,
    http2: AtomicBool,
    /// Set when the process retires: HTTP/1 responses carry
    /// `Connection: close`, HTTP/2 connections get GOAWAY.
    closing: AtomicBool,
    /// The process's retirement, checked per response too: the connection
    /// task may not have set `closing` yet when a request arrives right
    /// after a handover.
    retire: CancellationToken,
    /// A graceful stop: hyper's connections close through its graceful
    /// shutdown, the direct path's by this.
    shutdown: CancellationToken,
    /// Wakes the connection task when an HTTP/2 request shows up on a
    /// closing connection whose protocol was not known yet.
    http2_while_closing: Notify,
}

/// One request on a connection, ended on drop.
#[derive(Debug)]
pub struct ActiveRequest {
    conn: Arc<ConnActivity>,
}

impl ConnActivity {
    pub fn new(retire: CancellationToken, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(ConnActivity {
            opened: Instant::now(),
            active: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(0),
            http2: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            retire,
            shutdown,
            http2_while_closing: Notify::new(),
        })
    }

    pub fn start(self: &Arc<Self>, version: Version) -> ActiveRequest {
        // The first HTTP/2 request marks the connection; only a closing one
        // needs its task woken.
        if version == Version::HTTP_2
            && !self.http2.load(Ordering::Relaxed)
            && !self.http2.swap(true, Ordering::SeqCst)
            && self.closing.load(Ordering::SeqCst)
        {
            self.http2_while_closing.notify_one();
        }
        self.active.fetch_add(1, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        ActiveRequest {
            conn: Arc::clone(self),
        }
    }

    /// `None` while a request is in flight, else when the connection became
    /// idle.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.last_end_ms.load(Ordering::Relaxed);
        Some(self.opened + std::time::Duration::from_millis(ms))
    }
}

impl ConnActivity {
    /// From now on, end the connection at the next opportunity that cannot
    /// race a client's request. Returns whether it speaks HTTP/2 (then the
    /// caller sends GOAWAY at once).
    pub fn set_closing(&self) -> bool {
        self.closing.store(true, Ordering::SeqCst);
        self.http2.load(Ordering::SeqCst)
    }

    /// How many requests this connection has started.
    pub fn requests_started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Whether an HTTP/1 response should carry `Connection: close` (the
    /// connection ends after it): a retirement or a stop began. The one
    /// rule both fronts follow.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
            || self.retire.is_cancelled()
            || self.shutdown.is_cancelled()
    }

    /// Resolves when a closing connection turns out to speak HTTP/2.
    pub async fn http2_while_closing(&self) {
        self.http2_while_closing.notified().await;
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let ms = u64::try_from(self.conn.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.conn.last_end_ms.fetch_max(ms, Ordering::Relaxed);
        self.conn.active.fetch_sub(1, Ordering::Release);
    }
}
