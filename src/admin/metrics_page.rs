//! `GET /metrics`: gauges read from the live table at scrape time (so the hot
//! path pays nothing for them), then the Prometheus text of every metric.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::routing::RouteTable;
use crate::telemetry::{self, names};

pub fn render(table: &RouteTable) -> Response<Full<Bytes>> {
    let Some(handle) = telemetry::metrics() else {
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"metrics recorder unavailable\n",
        )));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return r;
    };
    for pool in table.pools() {
        for u in &pool.upstreams {
            let labels = [
                ("pool", pool.name.to_string()),
                ("upstream", u.state.label().to_string()),
            ];
            metrics::gauge!(names::UPSTREAM_IN_FLIGHT, &labels).set(u.state.in_flight() as f64);
            metrics::gauge!(names::UPSTREAM_HEALTHY, &labels).set(if u.state.is_healthy() {
                1.0
            } else {
                0.0
            });
        }
    }
    for route in table.routes() {
        for (pool, weight) in table.split(route) {
            metrics::gauge!(names::ROUTE_WEIGHT, "route" => route.name.to_string(), "pool" => pool.to_string())
                .set(f64::from(weight));
        }
    }
    handle.run_upkeep();
    let mut r = Response::new(Full::new(Bytes::from(handle.render())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
