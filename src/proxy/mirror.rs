//! Shadow traffic: a sampled request is copied to the route's mirror pool
//! by a task of its own, and the shadow's answer is compared with the
//! client's. The client's request never waits for its copy, never fails
//! with it, and is never changed by it: the hot path only samples, takes a
//! place under `max_in_flight`, and hands the copy its parts.

use std::sync::Arc;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Body;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::pools::ConnectionPools;
use super::request_body::{BodyTee, ClientBody, RequestBody};
use crate::config::Compare;
use crate::routing::{Route, RouteMirror, RouteTable};
use crate::shadow::{AnswerSummary, Difference, InFlightCopy, Outcome, ShadowStats};
use crate::telemetry::names;

/// The header that tells an app a request is a shadow copy.
pub static SHADOW_HEADER: HeaderName = HeaderName::from_static("x-cutover-shadow");

/// The client's side of a comparison: its answer goes to the copy's task.
pub struct PrimaryTap {
    answer: oneshot::Sender<AnswerSummary>,
    /// Set when bodies are compared.
    digest: Option<BodyDigest>,
    status: u16,
}

impl PrimaryTap {
    /// The client's response head is known: with no body to compare, the
    /// answer goes now; otherwise the tap waits for the body (`None`).
    pub fn head(mut self, status: u16) -> Option<PrimaryTap> {
        self.status = status;
        if self.digest.is_some() {
            return Some(self);
        }
        self.finish();
        None
    }

    /// A chunk of the client's response body.
    pub fn data(&mut self, data: &[u8]) {
        if let Some(d) = &mut self.digest {
            d.update(data);
        }
    }

    /// The client's response ended.
    pub fn finish(self) {
        let (body_sha256, body_bytes) = self.digest.map_or((None, 0), BodyDigest::finish);
        let _ = self.answer.send(AnswerSummary {
            status: self.status,
            body_sha256,
            body_bytes,
        });
    }
}

/// SHA-256 of a body up to a limit.
struct BodyDigest {
    hasher: Sha256,
    bytes: u64,
    limit: u64,
}

impl BodyDigest {
    fn new(limit: u64) -> Self {
        BodyDigest {
            hasher: Sha256::new(),
            bytes: 0,
            limit,
        }
    }

    fn update(&mut self, data: &[u8]) {
        if self.bytes <= self.limit {
            self.bytes += data.len() as u64;
            self.hasher.update(data);
        }
    }

    /// The hex digest, `None` past the limit, and the bytes seen.
    fn finish(self) -> (Option<String>, u64) {
        if self.bytes > self.limit {
            return (None, self.bytes);
        }
        let digest = self.hasher.finalize();
        let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
        (Some(hex), self.bytes)
    }
}

/// What the hot path knows of a request when it decides on a copy.
pub struct Original<'a> {
    pub method: &'a Method,
    pub path: &'a PathAndQuery,
    pub headers: &'a HeaderMap,
    pub body: &'a ClientBody,
}

/// Decides whether this request of `route` gets a shadow copy and, if so,
/// starts the copy's task. Returns the tee for the client's body (when it
/// has one) and the tap for the client's answer.
pub fn sample(
    table: &Arc<RouteTable>,
    route: &Route,
    pools: &Arc<ConnectionPools>,
    request: Original<'_>,
) -> Option<(Option<BodyTee>, PrimaryTap)> {
    let mirror = route.mirror.as_ref()?;
    let settings = &mirror.settings;
    if fastrand::u32(..100) >= settings.percent {
        return None;
    }
    let skip = || {
        count(&route.shadow, &route.name, &mirror.pool, Outcome::Skipped);
        None
    };
    let too_large = request
        .body
        .size_hint()
        .exact()
        .is_some_and(|n| n > settings.max_body);
    if too_large {
        return skip();
    }
    let Some(place) = route.shadow.try_start(settings.max_in_flight) else {
        return skip();
    };
    let (tee, body) = if request.body.is_end_stream() {
        (None, None)
    } else {
        let (tee, rx) = BodyTee::new(settings.max_body);
        (Some(tee), Some(rx))
    };
    let (answer, primary) = oneshot::channel();
    let mut headers = request.headers.clone();
    headers.insert(SHADOW_HEADER.clone(), HeaderValue::from_static("1"));
    let copy = ShadowCopy {
        table: Arc::clone(table),
        route: Arc::clone(&route.name),
        mirror: mirror.clone(),
        stats: Arc::clone(&route.shadow),
        pools: Arc::clone(pools),
        method: request.method.clone(),
        path: request.path.clone(),
        headers,
        body,
        primary,
        _place: place,
    };
    tokio::spawn(copy.run());
    let tap = PrimaryTap {
        answer,
        digest: settings
            .compare
            .body
            .then(|| BodyDigest::new(settings.max_body)),
        status: 0,
    };
    Some((tee, tap))
}

fn count(stats: &ShadowStats, route: &Arc<str>, pool: &Arc<str>, outcome: Outcome) {
    stats.count(outcome);
    metrics::counter!(
        names::MIRROR_TOTAL,
        "route" => Arc::clone(route),
        "pool" => Arc::clone(pool),
        "outcome" => outcome.word()
    )
    .increment(1);
}

/// One shadow copy, in its own task.
struct ShadowCopy {
    table: Arc<RouteTable>,
    route: Arc<str>,
    mirror: RouteMirror,
    stats: Arc<ShadowStats>,
    pools: Arc<ConnectionPools>,
    method: Method,
    path: PathAndQuery,
    headers: HeaderMap,
    /// The client's whole body once it has arrived; `None` inside when it
    /// outgrew `max_body`.
    body: Option<oneshot::Receiver<Option<Bytes>>>,
    primary: oneshot::Receiver<AnswerSummary>,
    /// Held until the copy is judged.
    _place: InFlightCopy,
}

impl ShadowCopy {
    async fn run(mut self) {
        let outcome = self.judge().await;
        count(&self.stats, &self.route, &self.mirror.pool, outcome);
    }

    async fn judge(&mut self) -> Outcome {
        let timeout = self.mirror.settings.timeout;
        let body = match self.body.take() {
            None => None,
            // The client's body may still be arriving.
            Some(rx) => match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(Some(body))) => Some(body),
                _ => return Outcome::Skipped,
            },
        };
        let shadow = match tokio::time::timeout(timeout, self.send(body)).await {
            Ok(Some(answer)) => answer,
            _ => return Outcome::Failed,
        };
        let primary = match tokio::time::timeout(timeout, &mut self.primary).await {
            Ok(Ok(answer)) => answer,
            _ => return Outcome::Skipped,
        };
        let outcome = compare(&self.mirror.settings.compare, &primary, &shadow);
        if outcome == Outcome::Differs {
            self.stats.record_difference(Difference {
                at_ms: crate::clock::unix_ms(),
                method: self.method.to_string(),
                path: self.path.path().to_string(),
                primary,
                shadow,
            });
        }
        outcome
    }

    /// Sends the copy to an upstream of the mirror pool and reads its
    /// answer; `None` when it could not.
    async fn send(&self, body: Option<Bytes>) -> Option<AnswerSummary> {
        let upstream = self.table.pick_upstream(self.mirror.pool_index, &[])?;
        let _in_flight = upstream.state.start_request();
        let mut request = Request::new(RequestBody::Copy(body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = Uri::from(self.path.clone());
        *request.version_mut() = Version::HTTP_11;
        let mut headers = self.headers.clone();
        if !headers.contains_key(http::header::HOST) {
            headers.insert(http::header::HOST, upstream.state.host_header().clone());
        }
        *request.headers_mut() = headers;
        let pool = self.table.pools().get(self.mirror.pool_index)?;
        let (response, connection) = self
            .pools
            // A copy's connection is cutover's own (a LOCAL PROXY header
            // on a `send_proxy` pool).
            .send(pool, upstream.state.addr(), request, None)
            .await
            .ok()?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let settings = &self.mirror.settings;
        let mut digest = BodyDigest::new(settings.max_body);
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.ok()?.data_ref() {
                digest.update(data);
            }
            if digest.bytes > settings.max_body {
                // Not worth reading on; the connection closes with it.
                break;
            }
        }
        if body.is_end_stream() {
            connection.release();
        }
        let (sha, body_bytes) = digest.finish();
        Some(AnswerSummary {
            status,
            body_sha256: settings.compare.body.then_some(sha).flatten(),
            body_bytes,
        })
    }
}

/// Compares the answers on what the route's `compare` names. Bodies are
/// judged when both fitted in `max_body`; one fitting and one not differs.
fn compare(on: &Compare, primary: &AnswerSummary, shadow: &AnswerSummary) -> Outcome {
    let class = |s: u16| s / 100;
    let status_differs = (on.status && primary.status != shadow.status)
        || (on.status_class && class(primary.status) != class(shadow.status));
    let body_differs = on.body
        && match (&primary.body_sha256, &shadow.body_sha256) {
            (Some(a), Some(b)) => a != b,
            (None, None) => false,
            _ => true,
        };
    if status_differs || body_differs {
        Outcome::Differs
    } else {
        Outcome::Same
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, sha: Option<&str>) -> AnswerSummary {
        AnswerSummary {
            status,
            body_sha256: sha.map(str::to_string),
            body_bytes: 0,
        }
    }

    #[test]
    fn comparison_judges_only_what_it_names() {
        let class = Compare {
            status_class: true,
            status: false,
            body: false,
        };
        let exact = Compare {
            status_class: false,
            status: true,
            body: false,
        };
        let body = Compare {
            status_class: false,
            status: false,
            body: true,
        };
        let (ok, created) = (answer(200, Some("a")), answer(201, Some("b")));
        assert_eq!(compare(&class, &ok, &created), Outcome::Same);
        assert_eq!(compare(&exact, &ok, &created), Outcome::Differs);
        assert_eq!(compare(&body, &ok, &created), Outcome::Differs);
        assert_eq!(compare(&body, &ok, &answer(500, Some("a"))), Outcome::Same);
        assert_eq!(
            compare(&body, &answer(200, None), &answer(200, None)),
            Outcome::Same
        );
        assert_eq!(compare(&body, &answer(200, None), &ok), Outcome::Differs);
    }

    #[test]
    fn digest_stops_at_the_limit() {
        let mut d = BodyDigest::new(4);
        d.update(b"ab");
        d.update(b"cd");
        let (sha, n) = d.finish();
        assert_eq!(n, 4);
        assert_eq!(
            sha.as_deref(),
            Some("88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589")
        );
        let mut over = BodyDigest::new(4);
        over.update(b"abcde");
        assert_eq!(over.finish().0, None);
    }
}
