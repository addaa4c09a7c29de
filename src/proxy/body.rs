//! Body types on both sides of the proxy. Both stream frame by frame; nothing
//! is buffered whole.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::activity::ActiveRequest;
use super::pools::PooledConnection;
use crate::upstream::InFlight;

/// The body sent to a client: the upstream's streamed body or a short error
/// text. It holds the request's upstream in-flight count and its client
/// connection's activity count, both ended when the body is finished or
/// dropped.
pub struct ResponseBody {
    inner: ResponseInner,
    /// The upstream connection the body comes over, pooled again once the
    /// body has been read to its end.
    connection: Option<PooledConnection>,
    in_flight: Option<InFlight>,
    active: Option<ActiveRequest>,
    timer: Option<RequestTimer>,
}

/// Records the request's duration when the response ends (or is dropped).
pub struct RequestTimer {
    pub start: std::time::Instant,
    pub histogram: metrics::Histogram,
    /// Body bytes sent to the client so far.
    pub bytes: u64,
    /// With an access log: the line to complete and write at the end.
    pub log: Option<Box<(crate::access_log::AccessLog, crate::access_log::Entry)>>,
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        self.histogram.record(elapsed.as_secs_f64());
        if let Some(line) = self.log.take() {
            let (log, mut entry) = *line;
            entry.duration_ms = elapsed.as_secs_f64() * 1000.0;
            entry.bytes = self.bytes;
            log.log(entry);
        }
    }
}

enum ResponseInner {
    Upstream(Incoming),
    Full(Full<Bytes>),
}

impl ResponseBody {
    pub fn upstream(body: Incoming, connection: PooledConnection) -> Self {
        ResponseBody {
            inner: ResponseInner::Upstream(body),
            connection: Some(connection),
            in_flight: None,
            active: None,
            timer: None,
        }
    }

    pub fn full(bytes: Bytes) -> Self {
        ResponseBody {
            inner: ResponseInner::Full(Full::new(bytes)),
            connection: None,
            in_flight: None,
            active: None,
            timer: None,
        }
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
        self.in_flight = in_flight;
        self.active = Some(active);
        self.timer = timer;
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body with nothing left (e.g. `Content-Length: 0`, a HEAD
        // response) may never be polled to its end: its connection is
        // still reusable. Any other unfinished body closes it.
        if let Some(c) = self.connection.take()
            && self.is_end_stream()
        {
            c.release();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            ResponseInner::Upstream(b) => Pin::new(b).poll_frame(cx),
            ResponseInner::Full(f) => Pin::new(f).poll_frame(cx).map_err(|never| match never {}),
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(timer)) = (&polled, &mut this.timer)
            && let Some(data) = frame.data_ref()
        {
            timer.bytes += data.len() as u64;
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
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            ResponseInner::Upstream(b) => b.is_end_stream(),
            ResponseInner::Full(f) => f.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            ResponseInner::Upstream(b) => b.size_hint(),
            ResponseInner::Full(f) => f.size_hint(),
        }
    }
}

/// The body sent to an upstream. A client body sits in a shared slot until
/// the upstream connection first asks for it, so when connecting fails the
/// same body can be handed to a request to another upstream.
pub enum RequestBody {
    Empty,
    Retryable(RetryableBody),
}

pub struct RetryableBody {
    // A std Mutex is fine here: it is locked once when the body is first
    // polled and once per retry, by this request alone, never by the control
    // plane.
    slot: Arc<Mutex<Option<Incoming>>>,
    taken: Option<Incoming>,
    hint: SizeHint,
}

/// Keeps the client body between attempts.
#[derive(Clone)]
pub struct BodySlot {
    slot: Arc<Mutex<Option<Incoming>>>,
    hint: SizeHint,
}

impl BodySlot {
    /// `None` for a body that is already complete (nothing to send).
    pub fn new(body: Incoming) -> Option<BodySlot> {
        if body.is_end_stream() {
            return None;
        }
        Some(BodySlot {
            hint: body.size_hint(),
            slot: Arc::new(Mutex::new(Some(body))),
        })
    }

    /// A body for one attempt, or `None` if an earlier attempt already
    /// started sending it (then it cannot be sent again).
    pub fn attempt(&self) -> Option<RequestBody> {
        let untouched = self.slot.lock().map(|s| s.is_some()).unwrap_or(false);
        untouched.then(|| {
            RequestBody::Retryable(RetryableBody {
                slot: Arc::clone(&self.slot),
                taken: None,
                hint: self.hint,
            })
        })
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let RequestBody::Retryable(r) = &mut *self else {
            return Poll::Ready(None);
        };
        if r.taken.is_none() {
            r.taken = r.slot.lock().ok().and_then(|mut s| s.take());
        }
        match &mut r.taken {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Retryable(r) => r.taken.as_ref().is_some_and(|b| b.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Retryable(r) => match &r.taken {
                Some(b) => b.size_hint(),
                None => r.hint,
            },
        }
    }
}
