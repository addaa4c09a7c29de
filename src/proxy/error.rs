//! Why a request could not be proxied, which side caused it, and the one
//! place that maps each cause to the answer the client gets.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};

use super::wire::answer::OwnAnswer;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// nginx's status for a request its client closed before the answer.
const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => StatusCode::BAD_REQUEST,
};
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("CONNECT is not supported by a reverse proxy")]
    ConnectMethod,
    /// A request no server may accept (RFC 9112 §3.2, §6.3); answered 400
    /// and the connection closed.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The client's request body could not be read: a malformed chunk,
    /// a body cut short. Answered 400 and the connection closed.
    #[error("malformed request body: {0}")]
    ClientBody(String),
    #[error("no route matches host {host:?} and path {path:?}")]
    NoRoute { host: Option<String>, path: String },
    #[error("route {route}: no eligible upstream")]
    NoEligibleUpstream { route: String },
    /// Every upstream of the pool at `max_in_flight` and `max_queue`
    /// requests already waiting.
    #[error("pool {pool}: every upstream full and the queue too")]
    QueueFull { pool: Arc<str> },
    /// Waited `queue_timeout` in the pool's queue without room.
    #[error("pool {pool}: no room within the queue timeout ({timeout:?})")]
    QueueTimeout {
        pool: Arc<str>,
        timeout: std::time::Duration,
    },
    /// The client closed its connection while the request waited in a
    /// queue. Nobody reads the answer; 499 (nginx's word for it) in logs
    /// and metrics.
    #[error("the client left while its request waited in the queue")]
    ClientLeft,
    /// Over the route's `rate_limit` for this client (or header, or the
    /// route).
    #[error("route {route}: rate limited for {retry_after:?}")]
    RateLimited {
        route: Arc<str>,
        retry_after: std::time::Duration,
    },
    #[error("connecting to upstream {addr} failed: {source}")]
    UpstreamConnect {
        addr: SocketAddr,
        timed_out: bool,
        #[source]
        source: super::pools::SendError,
    },
    #[error("upstream {addr} sent no response head within {timeout:?}")]
    UpstreamTimeout {
        addr: SocketAddr,
        timeout: std::time::Duration,
    },
    #[error("upstream {addr} failed: {source}")]
    UpstreamFailed {
        addr: SocketAddr,
        #[source]
        source: super::pools::SendError,
    },
}

/// Which party a failure is attributed to, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Proxy,
}

impl ProxyError {
    pub fn side(&self) -> Side {
        match self {
            ProxyError::NoRoute { .. }
            | ProxyError::ConnectMethod
            | ProxyError::BadRequest(_)
            | ProxyError::ClientBody(_)
            | ProxyError::RateLimited { .. }
            | ProxyError::ClientLeft => Side::Client,
            ProxyError::NoEligibleUpstream { .. }
            | ProxyError::QueueFull { .. }
            | ProxyError::QueueTimeout { .. } => Side::Proxy,
            ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::UpstreamFailed { .. } => Side::Upstream,
        }
    }

    /// The HTTP status of this failure (what a client other than gRPC sees).
    pub fn status(&self) -> StatusCode {
        self.status_and_text().0
    }

    /// The status and body the client sees.
    fn status_and_text(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::NoRoute { .. } => {
                (StatusCode::NOT_FOUND, "no route for this host and path")
            }
            ProxyError::ConnectMethod => (
                StatusCode::NOT_IMPLEMENTED,
                "CONNECT is not supported: this is a reverse proxy",
            ),
            ProxyError::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
            ProxyError::ClientBody(_) => (
                StatusCode::BAD_REQUEST,
                "the request body is malformed (e.g. a bad chunk)",
            ),
            ProxyError::NoEligibleUpstream { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy upstream is available for this route",
            ),
            ProxyError::QueueFull { .. } | ProxyError::QueueTimeout { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "every upstream is busy: try again shortly",
            ),
            ProxyError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests: slow down",
            ),
            ProxyError::ClientLeft => (CLIENT_CLOSED_REQUEST, "the client closed the request"),
            ProxyError::UpstreamConnect {
                timed_out: true, ..
            } => (
                StatusCode::GATEWAY_TIMEOUT,
                "connecting to the upstream timed out",
            ),
            ProxyError::UpstreamConnect { .. } => {
                (StatusCode::BAD_GATEWAY, "the upstream could not be reached")
            }
            ProxyError::UpstreamTimeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "the upstream did not answer in time",
            ),
            ProxyError::UpstreamFailed { .. } => (
                StatusCode::BAD_GATEWAY,
                "the upstream closed the connection or sent an invalid response",
            ),
        }
    }

    /// The client's answer, for either front (see `wire::answer`). A
    /// gRPC client gets HTTP 200 with only headers (`grpc-status`,
    /// `grpc-message`), as gRPC clients expect (gRPC over HTTP/2,
    /// "Trailers-Only"): 504s are `DEADLINE_EXCEEDED` (4), other upstream
    /// and routing failures `UNAVAILABLE` (14); a request refused as
    /// malformed keeps its HTTP status.
    pub fn answer(&self, grpc: bool) -> OwnAnswer {
        let (status, text) = self.status_and_text();
        let code = match status {
            _ if !grpc => None,
            StatusCode::GATEWAY_TIMEOUT => Some("4"),
            StatusCode::BAD_REQUEST => None,
            StatusCode::NOT_IMPLEMENTED => Some("12"),
            StatusCode::TOO_MANY_REQUESTS => Some("8"),
            _ => Some("14"),
        };
        match code {
            Some(code) => OwnAnswer {
                status: StatusCode::OK,
                headers: vec![
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/grpc"),
                    ),
                    (GRPC_STATUS, HeaderValue::from_static(code)),
                    (GRPC_MESSAGE, HeaderValue::from_static(text)),
                ],
                body: Bytes::new(),
            },
            None => {
                let mut answer = OwnAnswer::text(
                    status,
                    format!(
                        "{} {}: {text}\n",
                        status.as_u16(),
                        status.canonical_reason().unwrap_or("")
                    ),
                );
                // A full queue is a moment's overload, a rate limit a wait
                // for the next token: say when to come back (whole
                // seconds, at least 1).
                let retry_after = match self {
                    ProxyError::QueueFull { .. } | ProxyError::QueueTimeout { .. } => Some(1),
                    ProxyError::RateLimited { retry_after, .. } => {
                        Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
                    }
                    _ => None,
                };
                if let Some(seconds) = retry_after {
                    answer
                        .headers
                        .push((header::RETRY_AFTER, HeaderValue::from(seconds)));
                }
                answer
            }
        }
    }
}
