//! `retry = { on, attempts, per_try_timeout, budget }` on a route: which
//! failed attempts are tried again on another upstream, how many times,
//! how long each may take, and the share of the route's requests retries
//! may add.

use std::time::Duration;

use super::Problems;
use super::reader::{Table, number, str_value};

/// A route's retry policy. Requests that may not be sent twice (not
/// idempotent, or a body already streamed to the failed attempt) are
/// retried only after a failed connect, which sent nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    pub on: RetryOn,
    /// Tries in all, the first included: 1–10.
    pub attempts: u32,
    /// How long one try may wait for the response head; without it, the
    /// proxy's `response_header_timeout`.
    pub per_try_timeout: Option<Duration>,
    /// Retries at most this share of the route's requests over the last
    /// 10 s (at least `MIN_RETRIES_PER_WINDOW`): 0 < budget ≤ 1.
    pub budget: f64,
}

/// What makes an attempt worth another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOn {
    /// `connect`: no connection (nothing was sent).
    pub connect: bool,
    /// `reset`: the upstream took the request and closed or reset
    /// without an answer, or the try ran past `per_try_timeout`.
    pub reset: bool,
    /// `503` only.
    pub unavailable: bool,
    /// `5xx`: any 5xx answer.
    pub server_error: bool,
}

impl RetryOn {
    /// Connect failures and resets: the default, and what the proxy's
    /// `retries` does on routes without `retry`.
    pub const CONNECT_AND_RESET: RetryOn = RetryOn {
        connect: true,
        reset: true,
        unavailable: false,
        server_error: false,
    };

    /// Does an answer with `status` get another try?
    pub fn status(&self, status: u16) -> bool {
        (self.server_error && status >= 500) || (self.unavailable && status == 503)
    }

    /// The file's list of words.
    pub fn words(&self) -> Vec<&'static str> {
        [
            (self.connect, "connect"),
            (self.reset, "reset"),
            (self.unavailable, "503"),
            (self.server_error, "5xx"),
        ]
        .into_iter()
        .filter_map(|(on, word)| on.then_some(word))
        .collect()
    }
}

/// Retries allowed per route and 10 s window whatever the budget, so a
/// route with little traffic can still retry.
pub const MIN_RETRIES_PER_WINDOW: u64 = 10;

impl RetryConfig {
    /// The proxy's `retries` on a route without `retry`: connect failures
    /// and resets, no budget, no backoff (what cutover always did).
    pub fn from_retries(retries: usize) -> RetryConfig {
        RetryConfig {
            on: RetryOn::CONNECT_AND_RESET,
            attempts: u32::try_from(retries).unwrap_or(10).saturating_add(1),
            per_try_timeout: None,
            budget: 1.0,
        }
    }
}

/// Reads `retry`; `response_header_timeout` bounds `per_try_timeout`.
pub fn read_retry(
    route: &mut Table<'_>,
    response_header_timeout: Duration,
    problems: &mut Problems,
) -> Option<RetryConfig> {
    let mut t = route.table("retry", problems)?;
    let mut retry = RetryConfig {
        on: RetryOn::CONNECT_AND_RESET,
        attempts: 2,
        per_try_timeout: None,
        budget: 0.2,
    };
    if let Some(words) = t.array("on", problems) {
        let path = t.child("on");
        retry.on = RetryOn::default();
        for (i, w) in words.iter().enumerate() {
            let item = format!("{path}[{i}]");
            match str_value(w, &item, problems) {
                Some("connect") => retry.on.connect = true,
                Some("reset") => retry.on.reset = true,
                Some("503") => retry.on.unavailable = true,
                Some("5xx") => retry.on.server_error = true,
                Some(other) => problems.push(
                    w.span(),
                    &item,
                    format!("unknown retry condition {other:?}: expected \"connect\", \"reset\", \"503\" or \"5xx\""),
                ),
                None => {}
            }
        }
        if retry.on.words().is_empty() {
            problems.push(
                t.span(),
                &path,
                "name at least one of \"connect\", \"reset\", \"503\", \"5xx\"",
            );
        }
    }
    if let Some(n) = t.bounded("attempts", 1, 10, problems) {
        retry.attempts = n as u32;
    }
    if let Some(d) = t.duration("per_try_timeout", problems) {
        let path = t.child("per_try_timeout");
        if d.get_ref().is_zero() {
            problems.push(d.span(), &path, "must be longer than zero");
        } else if *d.get_ref() > response_header_timeout {
            problems.push(
                d.span(),
                &path,
                format!(
                    "must not be longer than [proxy] response_header_timeout ({})",
                    humantime::format_duration(response_header_timeout)
                ),
            );
        } else {
            retry.per_try_timeout = Some(d.into_inner());
        }
    }
    if let Some(value) = t.get("budget") {
        match number(value.get_ref()) {
            Some(b) if b > 0.0 && b <= 1.0 => retry.budget = b,
            _ => problems.push(
                value.span(),
                &t.child("budget"),
                "must be a number above 0 and at most 1 (the share of the route's requests retries may add, e.g. 0.2)",
            ),
        }
    }
    t.finish(problems);
    Some(retry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_answers_are_retried() {
        let only_503 = RetryOn {
            unavailable: true,
            ..RetryOn::default()
        };
        assert!(only_503.status(503));
        assert!(!only_503.status(500) && !only_503.status(502) && !only_503.status(200));
        let any_5xx = RetryOn {
            server_error: true,
            ..RetryOn::default()
        };
        assert!(any_5xx.status(500) && any_5xx.status(503) && any_5xx.status(599));
        assert!(!any_5xx.status(499));
        // The proxy's `retries`: connects and resets, never an answer.
        let legacy = RetryConfig::from_retries(2);
        assert_eq!(legacy.attempts, 3);
        assert!(!legacy.on.status(503));
        assert_eq!(legacy.on.words(), ["connect", "reset"]);
    }
}
