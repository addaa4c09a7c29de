//! The body sent to an upstream: the client's, kept aside so that a failed
//! connect can hand it to another upstream, and teed for a shadow copy when
//! the request is mirrored. Streams frame by frame; only a mirrored body up
//! to `max_body` is kept (as the frames' shared `Bytes`, not copied).
//! Imports nothing of the proxy's.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::oneshot;

/// The body sent to an upstream. A client body sits in a shared slot until
/// the upstream connection first asks for it, so when connecting fails the
/// same body can be handed to a request to another upstream.
pub enum RequestBody {
    Empty,
    Retryable(RetryableBody),
    /// A shadow copy's body, sent once.
    Copy(Option<Bytes>),
}

/// The client's body and, for a mirrored request, its tee.
struct Client {
    body: Incoming,
    tee: Option<BodyTee>,
}

pub struct RetryableBody {
    // A std Mutex is fine here: it is locked once when the body is first
    // polled and once per retry, by this request alone, never by the control
    // plane.
    slot: Arc<Mutex<Option<Client>>>,
    taken: Option<Client>,
    hint: SizeHint,
}

/// Keeps the client body between attempts.
#[derive(Clone)]
pub struct BodySlot {
    slot: Arc<Mutex<Option<Client>>>,
    hint: SizeHint,
}

/// Keeps what passes of a client body, up to a limit, for its shadow copy;
/// the whole body goes to `done` at its end, `None` if it outgrew the limit.
/// Dropped before the end (client gone, upstream failed), it sends nothing.
pub struct BodyTee {
    kept: Vec<Bytes>,
    size: u64,
    limit: u64,
    done: Option<oneshot::Sender<Option<Bytes>>>,
}

impl BodyTee {
    pub fn new(limit: u64) -> (BodyTee, oneshot::Receiver<Option<Bytes>>) {
        let (done, rx) = oneshot::channel();
        let tee = BodyTee {
            kept: Vec::new(),
            size: 0,
            limit,
            done: Some(done),
        };
        (tee, rx)
    }

    fn keep(&mut self, data: &Bytes) {
        if self.done.is_none() {
            return;
        }
        self.size += data.len() as u64;
        if self.size > self.limit {
            self.kept = Vec::new();
            if let Some(done) = self.done.take() {
                let _ = done.send(None);
            }
            return;
        }
        self.kept.push(data.clone());
    }

    fn finish(&mut self) {
        let Some(done) = self.done.take() else {
            return;
        };
        let whole = match self.kept.len() {
            1 => self.kept.pop().unwrap_or_default(),
            _ => {
                let mut whole = BytesMut::with_capacity(self.size as usize);
                for b in self.kept.drain(..) {
                    whole.extend_from_slice(&b);
                }
                whole.freeze()
            }
        };
        let _ = done.send(Some(whole));
    }
}

impl BodySlot {
    /// `None` for a body that is already complete (nothing to send; a
    /// tee given is dropped, and a shadow copy goes without a body).
    pub fn new(body: Incoming, tee: Option<BodyTee>) -> Option<BodySlot> {
        if body.is_end_stream() {
            return None;
        }
        Some(BodySlot {
            hint: body.size_hint(),
            slot: Arc::new(Mutex::new(Some(Client { body, tee }))),
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
        let r = match &mut *self {
            RequestBody::Empty => return Poll::Ready(None),
            RequestBody::Copy(bytes) => {
                return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))));
            }
            RequestBody::Retryable(r) => r,
        };
        if r.taken.is_none() {
            r.taken = r.slot.lock().ok().and_then(|mut s| s.take());
        }
        let Some(client) = &mut r.taken else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut client.body).poll_frame(cx);
        if let Some(tee) = &mut client.tee {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        tee.keep(data);
                    }
                    if client.body.is_end_stream() {
                        tee.finish();
                    }
                }
                Poll::Ready(None) => tee.finish(),
                _ => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Copy(bytes) => bytes.is_none(),
            RequestBody::Retryable(r) => r.taken.as_ref().is_some_and(|c| c.body.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Copy(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Retryable(r) => match &r.taken {
                Some(c) => c.body.size_hint(),
                None => r.hint,
            },
        }
    }
}
