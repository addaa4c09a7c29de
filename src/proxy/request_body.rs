//! The body sent to an upstream: the client's, kept aside so that a failed
//! connect can hand it to another upstream, and teed for a shadow copy when
//! the request is mirrored. Streams frame by frame; only a mirrored body up
//! to `max_body` is kept (as the frames' shared `Bytes`, not copied).
//! Imports nothing of the proxy's.
//!
//! A client body comes from hyper's server (`Incoming`) or from
//! cutover's own HTTP/2 server, which feeds each stream's DATA frames to
//! a `FedBody` through its `BodyFeed` and learns from it how much the
//! upstream side took (its flow-control credit).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::oneshot;

/// Any error a client body can end with.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body, as a server read it.
pub enum ClientBody {
    /// None at all (an HTTP/2 HEADERS frame that ended its stream).
    Empty,
    Hyper(Incoming),
    Fed(FedBody),
}

impl ClientBody {
    fn exhausted(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::Fed(b) => b.is_end_stream(),
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ClientBody::Fed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.exhausted()
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::Fed(b) => b.size_hint(),
        }
    }
}

/// What a server and the body it feeds share.
#[derive(Default)]
struct Feed {
    chunks: VecDeque<Bytes>,
    trailers: Option<http::HeaderMap>,
    ended: bool,
    failed: Option<&'static str>,
    /// Bytes the reader took since the server last asked.
    taken: usize,
    /// The reader let the body go: what comes now is nobody's.
    dropped: bool,
    reader: Option<Waker>,
    server: Option<Waker>,
}

/// A request body a server feeds frame by frame (cutover's HTTP/2 server).
pub struct FedBody {
    feed: Arc<Mutex<Feed>>,
    /// The client's `Content-Length`, if it sent one.
    length: Option<u64>,
    done: bool,
}

/// The server's end of a [`FedBody`].
pub struct BodyFeed {
    feed: Arc<Mutex<Feed>>,
}

/// A body the client stopped sending (reset its stream).
#[derive(Debug, thiserror::Error)]
#[error("client body cut short: {0}")]
pub struct BodyCut(&'static str);

impl FedBody {
    /// A new body and its feed; `length` is the client's Content-Length.
    pub fn new(length: Option<u64>) -> (FedBody, BodyFeed) {
        let feed = Arc::new(Mutex::new(Feed::default()));
        let body = FedBody {
            feed: Arc::clone(&feed),
            length,
            done: false,
        };
        (body, BodyFeed { feed })
    }
}

impl Body for FedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let Ok(mut feed) = self.feed.lock() else {
            return Poll::Ready(Some(Err(BodyCut("feed poisoned").into())));
        };
        if let Some(chunk) = feed.chunks.pop_front() {
            feed.taken += chunk.len();
            if let Some(server) = &feed.server {
                server.wake_by_ref();
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(why) = feed.failed {
            drop(feed);
            self.done = true;
            return Poll::Ready(Some(Err(BodyCut(why).into())));
        }
        if let Some(trailers) = feed.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if feed.ended {
            drop(feed);
            self.done = true;
            return Poll::Ready(None);
        }
        feed.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done
            || self.feed.lock().is_ok_and(|f| {
                f.ended && f.chunks.is_empty() && f.trailers.is_none() && f.failed.is_none()
            })
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for FedBody {
    fn drop(&mut self) {
        if let Ok(mut feed) = self.feed.lock() {
            feed.dropped = true;
            // What was never read is credit the server gives back.
            feed.taken += feed.chunks.drain(..).map(|c| c.len()).sum::<usize>();
            if let Some(server) = feed.server.take() {
                server.wake();
            }
        }
    }
}

impl BodyFeed {
    fn with(&self, f: impl FnOnce(&mut Feed)) {
        if let Ok(mut feed) = self.feed.lock() {
            f(&mut feed);
            if let Some(reader) = feed.reader.take() {
                reader.wake();
            }
        }
    }

    /// Hands the body a DATA frame's content. Returns the bytes the
    /// server may credit back at once (all of them, when the reader let
    /// the body go).
    pub fn push(&self, data: Bytes) -> usize {
        let mut credit = 0;
        self.with(|feed| {
            if feed.dropped {
                credit = data.len();
            } else if !data.is_empty() {
                feed.chunks.push_back(data);
            }
        });
        credit
    }

    pub fn trailers(&self, trailers: http::HeaderMap) {
        self.with(|feed| feed.trailers = Some(trailers));
    }

    pub fn end(&self) {
        self.with(|feed| feed.ended = true);
    }

    /// The client stopped sending (a reset): the reader gets an error.
    pub fn fail(&self, why: &'static str) {
        self.with(|feed| feed.failed = Some(why));
    }

    /// Bytes the reader took since the last call (or left unread when it
    /// let the body go), and whether it let it go; `server` is woken when
    /// it takes more.
    pub fn taken(&self, server: &Waker) -> (usize, bool) {
        let Ok(mut feed) = self.feed.lock() else {
            return (0, true);
        };
        if !feed.dropped && !feed.server.as_ref().is_some_and(|w| w.will_wake(server)) {
            feed.server = Some(server.clone());
        }
        (std::mem::take(&mut feed.taken), feed.dropped)
    }
}

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
    body: ClientBody,
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
    pub fn new(body: ClientBody, tee: Option<BodyTee>) -> Option<BodySlot> {
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
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
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
