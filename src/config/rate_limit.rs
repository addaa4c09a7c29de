//! `rate_limit = { requests, per, burst, by }` on a route: at most
//! `requests` per `per` (after a `burst`) for each client address, each
//! value of a header, or the whole route; beyond, 429 with `Retry-After`.

use std::time::Duration;

use http::HeaderName;

use super::Problems;
use super::reader::Table;

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub requests: u32,
    pub per: Duration,
    /// Requests a quiet key may send at once: the bucket's size.
    pub burst: u32,
    pub by: RateKey,
}

/// What the buckets are kept by.
#[derive(Debug, Clone, PartialEq)]
pub enum RateKey {
    /// `"client_ip"`: the client's address (the connection's peer).
    ClientIp,
    /// `"header:NAME"`: a header's value; requests without it share one
    /// bucket.
    Header(HeaderName),
    /// `"route"`: one bucket for the route.
    Route,
}

impl RateKey {
    /// As the file writes it.
    pub fn word(&self) -> String {
        match self {
            RateKey::ClientIp => "client_ip".into(),
            RateKey::Header(name) => format!("header:{name}"),
            RateKey::Route => "route".into(),
        }
    }
}

pub fn read_rate_limit(route: &mut Table<'_>, problems: &mut Problems) -> Option<RateLimitConfig> {
    let mut t = route.table("rate_limit", problems)?;
    let requests = t.bounded("requests", 1, 1_000_000_000, problems);
    if requests.is_none() && !t.has("requests") {
        problems.push(t.span(), &t.child("requests"), "missing required key");
    }
    let per = match t.duration("per", problems) {
        Some(d) if d.get_ref().is_zero() || *d.get_ref() > Duration::from_secs(86_400) => {
            problems.push(
                d.span(),
                &t.child("per"),
                "must be longer than zero and at most 24h",
            );
            None
        }
        Some(d) => Some(d.into_inner()),
        None => Some(Duration::from_secs(1)),
    };
    let burst = t.bounded("burst", 1, 1_000_000_000, problems);
    let by = match t.str("by", problems) {
        None => Some(RateKey::ClientIp),
        Some(by) => match *by.get_ref() {
            "client_ip" => Some(RateKey::ClientIp),
            "route" => Some(RateKey::Route),
            other => match other
                .strip_prefix("header:")
                .map(|n| HeaderName::from_bytes(n.as_bytes()))
            {
                Some(Ok(name)) => Some(RateKey::Header(name)),
                _ => {
                    problems.push(
                        by.span(),
                        &t.child("by"),
                        format!("unknown key {other:?}: expected \"client_ip\", \"route\" or \"header:NAME\" (a valid header name)"),
                    );
                    None
                }
            },
        },
    };
    t.finish(problems);
    let requests = requests? as u32;
    Some(RateLimitConfig {
        requests,
        per: per?,
        burst: burst.map_or(requests, |b| b as u32),
        by: by?,
    })
}
