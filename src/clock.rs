//! The wall clock, for what outlives the process (drain deadlines in the
//! state file, sticky cookie expiry) and for log lines. Imports nothing.
//! (Intervals use the monotonic clock: `upstream::now_ms`, `Instant`.)

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Now, in Unix seconds.
pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Now, as RFC 3339 UTC with milliseconds, for audit and access-log lines.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Now as an HTTP date (RFC 9110 §5.6.7), for `Date` headers: formatted
/// at most once a second per thread, as hyper does.
pub fn http_date() -> [u8; 29] {
    use std::cell::Cell;
    thread_local! {
        static CACHED: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [b' '; 29])) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let (at, date) = cached.get();
        if at == second {
            return date;
        }
        let mut date = [b' '; 29];
        let text = httpdate::fmt_http_date(now);
        let n = text.len().min(date.len());
        date[..n].copy_from_slice(&text.as_bytes()[..n]);
        cached.set((second, date));
        date
    })
}
