//! The body sent to a client, and the timer that records the request when
//! it ends. Streams frame by frame; nothing is buffered whole. (The body
//! sent to an upstream is `request_body`'s.)

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::activity::ActiveRequest;
use super::h1_upstream::DirectBody;
use super::mirror::PrimaryTap;
use super::pools::PooledConnection;
use crate::traffic::TrafficStats;
use crate::upstream::InFlight;

/// The body sent to a client: the upstream's streamed body (from hyper's
/// client or a direct-path socket) or a short error
/// text. It holds the request's upstream in-flight count and its client
/// connection's activity count, both ended when the body is finished or
/// dropped.
///
/// Boxed: a `Response` carrying it moves through every async layer
/// between the upstream and the client's connection (a dozen times per
/// request); inline its 312 bytes were copied each time.
pub struct ResponseBody(Box<BodyState>);

struct BodyState {
    inner: ResponseInner,
    /// The upstream connection the body comes over, pooled again once the
    /// body has been read to its end.
    connection: Option<PooledConnection>,
    in_flight: Option<InFlight>,
    active: Option<ActiveRequest>,
    timer: Option<RequestTimer>,
    /// A mirrored request's answer, for the comparison with its shadow's.
    /// Boxed: most responses have none.
    tap: Option<Box<PrimaryTap>>,
    /// Made the first time the upstream keeps the body waiting: resolves
    /// when the upstream's drain passes its deadline, which cuts the body.
    drain: Option<DrainCut>,
}

/// See [`ResponseBody::drain`].
pub(super) type DrainCut = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A response body still streaming when its upstream's drain passed its
/// deadline: cut (the client sees it end early).
#[derive(Debug, thiserror::Error)]
#[error("cut at the upstream's drain deadline")]
pub struct CutByDrain;

/// Counts a response cut at `upstream`'s drain deadline.
pub fn count_cut_by_drain(upstream: &crate::upstream::UpstreamState) {
    metrics::counter!(
        crate::telemetry::names::RESPONSES_DRAINED_TOTAL,
        "upstream" => Arc::clone(upstream.label())
    )
    .increment(1);
}

/// Records the request's duration when the response ends (or is dropped).
pub struct RequestTimer {
    pub start: std::time::Instant,
    pub histogram: metrics::Histogram,
    /// Body bytes sent to the client so far.
    pub bytes: u64,
    /// With an access log: the line to complete and write at the end.
    pub log: Option<Box<(crate::access_log::AccessLog, crate::access_log::Entry)>>,
    /// The route's figures for the pool that answered, the answer's
    /// status (5xx failed, 4xx the client's), and how long the request
    /// waited in the pool's queue (not the upstream's time), for rollout
    /// analysis.
    pub traffic: Option<(Arc<TrafficStats>, u16, std::time::Duration)>,
    /// With tracing on: the server span, ended with the status the client
    /// got.
    pub trace: Option<(Box<crate::traces::RequestTrace>, u16)>,
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        self.histogram.record(elapsed.as_secs_f64());
        if let Some((stats, status, queued)) = &self.traffic {
            stats.record_status(elapsed.saturating_sub(*queued), *status);
        }
        if let Some(line) = self.log.take() {
            let (log, mut entry) = *line;
            entry.duration_ms = elapsed.as_secs_f64() * 1000.0;
            entry.bytes = self.bytes;
            log.log(entry);
        }
        if let Some((trace, status)) = self.trace.take() {
            trace.finish(status);
        }
    }
}

enum ResponseInner {
    Upstream(Incoming),
    /// Read from a raw socket (see `h1_upstream`).
    Direct(DirectBody),
    Full(Full<Bytes>),
}

/// What a response body's frame may fail with: hyper's client or a
/// direct-path socket.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl ResponseBody {
    fn new(state: BodyState) -> Self {
        ResponseBody(Box::new(state))
    }

    pub fn upstream(body: Incoming, connection: PooledConnection) -> Self {
        ResponseBody::new(BodyState {
            inner: ResponseInner::Upstream(body),
            connection: Some(connection),
            in_flight: None,
            active: None,
            timer: None,
            tap: None,
            drain: None,
        })
    }

    pub fn direct(body: DirectBody) -> Self {
        ResponseBody::new(BodyState {
            inner: ResponseInner::Direct(body),
            connection: None,
            in_flight: None,
            active: None,
            timer: None,
            tap: None,
            drain: None,
        })
    }

    pub fn full(bytes: Bytes) -> Self {
        ResponseBody::new(BodyState {
            inner: ResponseInner::Full(Full::new(bytes)),
            connection: None,
            in_flight: None,
            active: None,
            timer: None,
            tap: None,
            drain: None,
        })
    }

    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    pub fn hold(
        &mut self,
        in_flight: Option<InFlight>,
        active: ActiveRequest,
        timer: Option<RequestTimer>,
    ) {
        let state = &mut *self.0;
        state.in_flight = in_flight;
        state.active = Some(active);
        state.timer = timer;
    }

    /// Gives the client's answer to a shadow comparison: now if only the
    /// status is compared, at the body's end otherwise.
    pub fn tap(&mut self, tap: PrimaryTap, status: u16) {
        self.0.tap = tap.head(status).map(Box::new);
    }
}

impl BodyState {
    fn is_end_stream(&self) -> bool {
        match &self.inner {
            ResponseInner::Upstream(b) => b.is_end_stream(),
            ResponseInner::Direct(b) => b.is_end_stream(),
            ResponseInner::Full(f) => f.is_end_stream(),
        }
    }
}

impl Drop for BodyState {
    fn drop(&mut self) {
        // A body with nothing left (e.g. `Content-Length: 0`, a HEAD
        // response) may never be polled to its end: its connection is
        // still reusable. Any other unfinished body closes it.
        let ended = self.is_end_stream();
        if let Some(c) = self.connection.take()
            && ended
        {
            c.release();
        }
        if let Some(tap) = self.tap.take()
            && ended
        {
            tap.finish();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self.0;
        let polled: Poll<Option<Result<Frame<Bytes>, BodyError>>> = match &mut this.inner {
            ResponseInner::Upstream(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ResponseInner::Direct(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ResponseInner::Full(f) => Pin::new(f).poll_frame(cx).map_err(|never| match never {}),
        };
        if polled.is_pending()
            && let Some(in_flight) = &this.in_flight
        {
            let upstream = in_flight.upstream();
            let drain = this
                .drain
                .get_or_insert_with(|| Box::pin(Arc::clone(upstream).drain_deadline_reached()));
            if drain.as_mut().poll(cx).is_ready() {
                count_cut_by_drain(upstream);
                return Poll::Ready(Some(Err(Box::new(CutByDrain))));
            }
        }
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            if let Some(timer) = &mut this.timer {
                timer.bytes += data.len() as u64;
            }
            if let Some(tap) = &mut this.tap {
                tap.data(data);
            }
        }
        // The upstream's last byte is in: its connection can take the next
        // request now, not only once the client side is done with this one.
        if let ResponseInner::Upstream(b) = &this.inner
            && matches!(polled, Poll::Ready(Some(Ok(_))) | Poll::Ready(None))
            && b.is_end_stream()
            && let Some(c) = this.connection.take()
        {
            c.release();
        }
        if let Poll::Ready(None) = polled {
            // Finished: end the guards now rather than when hyper drops the
            // body, so in-flight counts fall as soon as the last byte is out.
            this.in_flight = None;
            this.active = None;
            this.timer = None;
            if let Some(tap) = this.tap.take() {
                tap.finish();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0.inner {
            ResponseInner::Upstream(b) => b.size_hint(),
            ResponseInner::Direct(b) => b.size_hint(),
            ResponseInner::Full(f) => f.size_hint(),
        }
    }
}
