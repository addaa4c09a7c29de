//! `mirror = { pool, percent, max_body, compare, timeout, max_in_flight }` on
//! a route: shadow traffic, a copy of a share of the route's requests sent
//! to another pool, whose answers are compared with the client's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problems;
use super::reader::{Table, str_value};

/// Percent of requests copied, when the file does not say.
pub const DEFAULT_PERCENT: u32 = 100;

/// A route's shadow traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorConfig {
    pub pool: String,
    /// 0–100; 0 copies nothing.
    pub percent: u32,
    /// Larger request bodies are not copied; response bodies are compared
    /// up to this size.
    pub max_body: u64,
    pub compare: Compare,
    /// For the whole copy: request sent, answer read.
    pub timeout: Duration,
    /// Copies in flight at once on this route; over it a copy is skipped.
    pub max_in_flight: u32,
}

/// What "the same answer" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compare {
    /// `status_class`: 2xx against 2xx.
    pub status_class: bool,
    /// `status`: the exact code.
    pub status: bool,
    /// `body`: a SHA-256 of the body, up to `max_body`.
    pub body: bool,
}

impl Compare {
    /// The file's list of words.
    pub fn words(&self) -> Vec<&'static str> {
        [
            (self.status_class, "status_class"),
            (self.status, "status"),
            (self.body, "body"),
        ]
        .into_iter()
        .filter_map(|(on, word)| on.then_some(word))
        .collect()
    }
}

impl MirrorConfig {
    /// The settings the file leaves out, for a mirror set only at runtime.
    pub fn with_defaults(pool: String, percent: u32) -> MirrorConfig {
        MirrorConfig {
            pool,
            percent,
            max_body: 64 * 1024,
            compare: Compare {
                status_class: false,
                status: true,
                body: false,
            },
            timeout: Duration::from_secs(5),
            max_in_flight: 100,
        }
    }

    /// Pool and percent, the part a runtime change sets.
    pub fn target(&self) -> MirrorTarget {
        MirrorTarget {
            pool: self.pool.clone(),
            percent: self.percent,
        }
    }
}

/// Where a route's copies go and how many: what `PUT …/mirror` sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorTarget {
    pub pool: String,
    pub percent: u32,
}

/// Reads `mirror`; `pool_exists` says whether a pool name is defined.
pub fn read_mirror(
    route: &mut Table<'_>,
    pool_exists: &dyn Fn(&str) -> bool,
    problems: &mut Problems,
) -> Option<MirrorConfig> {
    let mut t = route.table("mirror", problems)?;
    let pool = t.required_str("pool", problems).and_then(|p| {
        if pool_exists(p.get_ref()) {
            Some(p.get_ref().to_string())
        } else {
            problems.push(
                p.span(),
                &t.child("pool"),
                format!(
                    "no pool named {:?} (define it as [pool.{}])",
                    p.get_ref(),
                    p.get_ref()
                ),
            );
            None
        }
    });
    let mut mirror = MirrorConfig::with_defaults(String::new(), DEFAULT_PERCENT);
    if let Some(p) = t.bounded("percent", 0, 100, problems) {
        mirror.percent = p as u32;
    }
    if let Some(size) = t.str("max_body", problems) {
        match size.get_ref().parse::<bytesize::ByteSize>() {
            Ok(b) if b.as_u64() <= 64 * 1024 * 1024 => mirror.max_body = b.as_u64(),
            Ok(_) => problems.push(size.span(), &t.child("max_body"), "must be at most 64MiB"),
            Err(_) => problems.push(
                size.span(),
                &t.child("max_body"),
                format!(
                    "invalid size {:?}: write a number and a unit, e.g. \"64KiB\", \"1MiB\"",
                    size.get_ref()
                ),
            ),
        }
    }
    if let Some(words) = t.array("compare", problems) {
        let path = t.child("compare");
        mirror.compare = Compare {
            status_class: false,
            status: false,
            body: false,
        };
        for (i, w) in words.iter().enumerate() {
            let item = format!("{path}[{i}]");
            match str_value(w, &item, problems) {
                Some("status_class") => mirror.compare.status_class = true,
                Some("status") => mirror.compare.status = true,
                Some("body") => mirror.compare.body = true,
                Some(other) => problems.push(
                    w.span(),
                    &item,
                    format!("unknown comparison {other:?}: expected \"status_class\", \"status\" or \"body\""),
                ),
                None => {}
            }
        }
        if mirror.compare.words().is_empty() {
            problems.push(
                t.span(),
                &path,
                "name at least one of \"status_class\", \"status\", \"body\"",
            );
        }
    }
    if let Some(d) = t.duration("timeout", problems) {
        if d.get_ref().is_zero() {
            problems.push(d.span(), &t.child("timeout"), "must be longer than zero");
        } else {
            mirror.timeout = d.into_inner();
        }
    }
    if let Some(n) = t.bounded("max_in_flight", 1, 100_000, problems) {
        mirror.max_in_flight = n as u32;
    }
    t.finish(problems);
    mirror.pool = pool?;
    Some(mirror)
}
