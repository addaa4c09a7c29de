//! Per client connection: how many requests are in flight and when the last
//! one ended, so an idle connection can be told from a busy one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::time::Instant;

#[derive(Debug)]
pub struct ConnActivity {
    opened: Instant,
    active: AtomicUsize,
    /// Milliseconds after `opened` at which the last request ended.
    last_end_ms: AtomicU64,
}

/// One request on a connection, ended on drop.
#[derive(Debug)]
pub struct ActiveRequest {
    conn: Arc<ConnActivity>,
}

impl ConnActivity {
    pub fn new() -> Arc<Self> {
        Arc::new(ConnActivity {
            opened: Instant::now(),
            active: AtomicUsize::new(0),
            last_end_ms: AtomicU64::new(0),
        })
    }

    pub fn start(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::Relaxed);
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

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let ms = u64::try_from(self.conn.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.conn.last_end_ms.fetch_max(ms, Ordering::Relaxed);
        self.conn.active.fetch_sub(1, Ordering::Release);
    }
}
