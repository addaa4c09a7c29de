//! The body sent to an upstream: the client's, kept aside so that a failed
//! connect can hand it to another upstream. Streams frame by frame; nothing
//! is buffered whole. Imports nothing of the proxy's.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

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
