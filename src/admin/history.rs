//! The last 15 minutes of each pool's traffic for the status page's charts:
//! requests per second, error rate and p99, sampled every
//! [`SAMPLE_EVERY`] from the routing table's traffic figures and kept in
//! memory (180 points of 12 bytes per pool); and each upstream's request
//! and error rates over the last sample interval, for the pools table —
//! measured here, not between two page loads, so a page's first load
//! shows them too.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::routing::RouteTable;
use crate::traffic::Snapshot;

pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// 15 minutes of samples.
pub const KEPT: usize = 180;

/// One pool over one sample interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub requests_per_second: f32,
    /// Errors (5xx) per request, 0 to 1.
    pub error_rate: f32,
    /// `NAN` with no requests in the interval.
    pub p99_ms: f32,
}

#[derive(Default)]
pub struct History {
    // Locked once per sample and once per page load, never by the hot path.
    inner: Mutex<Inner>,
}

/// (pool, upstream) → (requests, errors): counts, or rates per second.
pub type PerUpstream<T> = HashMap<(String, SocketAddr), (T, T)>;

#[derive(Default)]
struct Inner {
    last: Option<(Instant, HashMap<String, Snapshot>, PerUpstream<u64>)>,
    series: BTreeMap<String, VecDeque<Point>>,
    upstream_rates: PerUpstream<f64>,
}

impl History {
    /// Adds a point per pool: the traffic since the previous sample.
    pub fn sample(&self, table: &RouteTable) {
        let now = Instant::now();
        let snapshots: HashMap<String, Snapshot> = table
            .pools()
            .iter()
            .map(|p| (p.name.to_string(), table.pool_traffic(&p.name)))
            .collect();
        let counts: PerUpstream<u64> = table
            .pools()
            .iter()
            .flat_map(|p| {
                p.upstreams
                    .iter()
                    .map(|u| ((p.name.to_string(), u.state.addr()), u.state.counts()))
            })
            .collect();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some((at, previous, previous_counts)) = &inner.last {
            let secs = now.duration_since(*at).as_secs_f64().max(0.001);
            let rates: PerUpstream<f64> = counts
                .iter()
                .map(|(key, (req, err))| {
                    let (preq, perr) = previous_counts.get(key).copied().unwrap_or((*req, *err));
                    let per_second = |n: u64, before: u64| n.saturating_sub(before) as f64 / secs;
                    (
                        key.clone(),
                        (per_second(*req, preq), per_second(*err, perr)),
                    )
                })
                .collect();
            let points: Vec<(String, Point)> = snapshots
                .iter()
                .map(|(pool, snap)| {
                    let window = snap.since(previous.get(pool).unwrap_or(&Snapshot::default()));
                    let point = Point {
                        requests_per_second: (window.requests as f64 / secs) as f32,
                        error_rate: window.error_rate() as f32,
                        p99_ms: window
                            .p99
                            .map_or(f32::NAN, |d| d.as_secs_f64() as f32 * 1000.0),
                    };
                    (pool.clone(), point)
                })
                .collect();
            inner.upstream_rates = rates;
            // Pools no longer in the table go with their charts.
            inner.series.retain(|pool, _| snapshots.contains_key(pool));
            for (pool, point) in points {
                let series = inner.series.entry(pool).or_default();
                if series.len() == KEPT {
                    series.pop_front();
                }
                series.push_back(point);
            }
        }
        inner.last = Some((now, snapshots, counts));
    }

    /// Each upstream's (requests/s, errors/s) over the last sample
    /// interval; empty before the second sample.
    pub fn upstream_rates(&self) -> PerUpstream<f64> {
        self.inner
            .lock()
            .map(|i| i.upstream_rates.clone())
            .unwrap_or_default()
    }

    /// Each pool's points, oldest first.
    pub fn series(&self) -> BTreeMap<String, Vec<Point>> {
        self.inner
            .lock()
            .map(|i| {
                i.series
                    .iter()
                    .map(|(pool, s)| (pool.clone(), s.iter().copied().collect()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::sticky::StickyKey;
    use crate::config::Config;

    #[test]
    fn points_are_rates_of_the_interval_and_at_most_kept() {
        let text = "[[listener]]\nbind = \"127.0.0.1:1\"\n[[route]]\nname = \"r\"\nsplit = { a = 1 }\n[pool.a]\nupstreams = [{ addr = \"127.0.0.1:2\" }]\n";
        let config = Config::parse("t", text).unwrap();
        let table = RouteTable::build(&config, None, &std::sync::Arc::new(StickyKey::new([1; 32])));
        let history = History::default();
        history.sample(&table);
        assert!(history.series().is_empty(), "one sample is no interval");
        let stats = table.traffic(table.route("r").unwrap(), "a").unwrap();
        for i in 0..100 {
            stats.record(Duration::from_millis(3), i % 4 == 0);
        }
        history.sample(&table);
        let a = history.series()["a"][0];
        assert!(a.requests_per_second > 100.0, "{a:?}");
        assert!((a.error_rate - 0.25).abs() < 1e-6, "{a:?}");
        assert!(a.p99_ms >= 3.0 && a.p99_ms < 3.5, "{a:?}");
        for _ in 0..KEPT + 5 {
            history.sample(&table);
        }
        let a = &history.series()["a"];
        assert_eq!(a.len(), KEPT);
        assert!(a[KEPT - 1].p99_ms.is_nan(), "no requests, no p99");
        let rates = history.upstream_rates();
        assert_eq!(rates.len(), 1, "one upstream: {rates:?}");
    }
}
