//! One stream: the request's body as it arrives (fed to the front through
//! a `BodyFeed`), the future answering it — the front's `handle`, then one
//! poll of the response body at a time — and its response written as
//! HEADERS and DATA frames within the client's windows.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::task::AtomicWaker;
use http::{HeaderMap, Response, Version};
use hyper::body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Connection, Service};
use crate::proxy::wire::h2::request::{self, RequestHead};
use crate::proxy::wire::h2::{self as wire, MAX_WINDOW, Reason};
use crate::proxy::{BodyFeed, ClientBody, FedBody, ResponseBody};

/// The front's answer (its body is a box already: it moves at every
/// frame).
type Answering = Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>;
type BodyFrame = Option<Result<Frame<Bytes>, <ResponseBody as Body>::Error>>;

/// Lets the connection drop a stream's future at once (a reset): the
/// future sees the flag at its next poll, which the flag's wake brings.
#[derive(Default)]
pub(super) struct Cancel {
    flag: AtomicBool,
    waker: AtomicWaker,
}

impl Cancel {
    fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// What the client side of a stream still sends.
pub(super) enum Recv {
    /// DATA may come: fed to the request's body; `left`: what its
    /// Content-Length still promises; `window`: what the client may
    /// still send; `credit`: bytes taken, not yet given back.
    Open {
        feed: BodyFeed,
        left: Option<u64>,
        window: i64,
        credit: usize,
    },
    Closed,
}

/// Where the response stands.
enum Sending {
    /// The front is answering.
    Answering,
    /// A poll of the body is out (its task holds the body).
    Polling,
    /// Data that waits for window (or for room in the write buffer),
    /// and the body to poll after it, `None` once it ended.
    Blocked {
        data: Bytes,
        body: Option<ResponseBody>,
    },
}

pub(super) struct Stream {
    pub(super) recv: Recv,
    send: Sending,
    send_window: i64,
    answered: bool,
    cancel: Arc<Cancel>,
}

/// A stream's future as the connection polls it.
pub(super) struct Task {
    id: u32,
    cancel: Arc<Cancel>,
    work: Work,
}

enum Work {
    Answer(Answering),
    Body(Option<ResponseBody>),
}

pub(super) enum Event {
    Answered(u32, Response<ResponseBody>),
    Body(u32, ResponseBody, BodyFrame),
    Cancelled,
}

impl Future for Task {
    type Output = Event;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Event> {
        let task = self.get_mut();
        task.cancel.waker.register(cx.waker());
        if task.cancel.flag.load(Ordering::Acquire) {
            return Poll::Ready(Event::Cancelled);
        }
        match &mut task.work {
            Work::Answer(answering) => answering
                .as_mut()
                .poll(cx)
                .map(|response| Event::Answered(task.id, response)),
            Work::Body(slot) => {
                let Some(body) = slot else {
                    return Poll::Ready(Event::Cancelled);
                };
                let frame = std::task::ready!(Pin::new(body).poll_frame(cx));
                match slot.take() {
                    Some(body) => Poll::Ready(Event::Body(task.id, body, frame)),
                    None => Poll::Ready(Event::Cancelled),
                }
            }
        }
    }
}

impl Stream {
    /// A new stream for `head`, and the task that answers it through the
    /// front.
    pub(super) fn open(
        id: u32,
        head: RequestHead,
        end_stream: bool,
        service: &Service,
        recv_window: u32,
        send_window: i64,
    ) -> (Stream, Task) {
        let (body, recv) = if end_stream {
            (ClientBody::Empty, Recv::Closed)
        } else {
            let (body, feed) = FedBody::new(head.content_length);
            let recv = Recv::Open {
                feed,
                left: head.content_length,
                window: i64::from(recv_window),
                credit: 0,
            };
            (ClientBody::Fed(body), recv)
        };
        let request = head.request.map(|()| body);
        let client = service.client.clone();
        let active = service.activity.start(Version::HTTP_2);
        // The future is written straight into its box: made first and
        // then boxed, its 2.5 KB were copied for every stream.
        let answering = Box::write(
            Box::new_uninit(),
            service.proxy.handle(request, client, active),
        );
        let cancel = Arc::new(Cancel::default());
        let task = Task {
            id,
            cancel: Arc::clone(&cancel),
            work: Work::Answer(Box::into_pin(answering)),
        };
        let stream = Stream {
            recv,
            send: Sending::Answering,
            send_window,
            answered: false,
            cancel,
        };
        (stream, task)
    }

    pub(super) fn answered(&self) -> bool {
        self.answered
    }

    /// Whether the client may still send DATA (or trailers).
    pub(super) fn recv_open(&self) -> bool {
        matches!(self.recv, Recv::Open { .. })
    }

    /// Drops the stream's future (and so its request upstream and its
    /// response body); the request body, if it still waits for DATA,
    /// ends with an error.
    pub(super) fn cancel(self) {
        self.cancel.cancel();
        if let Recv::Open { feed, .. } = &self.recv {
            feed.fail("stream reset");
        }
    }

    /// A DATA frame's content; returns the bytes to credit back at once,
    /// or the stream error it is.
    pub(super) fn receive(&mut self, data: Bytes, end: bool) -> Result<usize, Reason> {
        let Recv::Open {
            feed, left, window, ..
        } = &mut self.recv
        else {
            return Err(Reason::StreamClosed);
        };
        let len = data.len();
        if len as i64 > *window {
            return Err(Reason::FlowControl);
        }
        *window -= len as i64;
        if let Some(left) = left {
            // §8.1.1: the DATA must add up to the Content-Length.
            match left.checked_sub(len as u64) {
                Some(rest) if !end || rest == 0 => *left = rest,
                _ => return Err(Reason::Protocol),
            }
        }
        let unread = feed.push(data);
        if end {
            feed.end();
            self.recv = Recv::Closed;
        }
        Ok(unread)
    }

    /// The request's trailers, which end it.
    pub(super) fn receive_trailers(&mut self, trailers: HeaderMap) -> Result<(), Reason> {
        let Recv::Open { feed, left, .. } = &self.recv else {
            return Err(Reason::StreamClosed);
        };
        if left.is_some_and(|n| n > 0) {
            return Err(Reason::Protocol);
        }
        feed.trailers(trailers);
        feed.end();
        self.recv = Recv::Closed;
        Ok(())
    }

    /// Grows (or, by SETTINGS, shrinks) the send window; false if it
    /// would pass 2^31-1.
    pub(super) fn grow_send_window(&mut self, delta: i64) -> bool {
        self.send_window += delta;
        self.send_window <= i64::from(MAX_WINDOW)
    }

    fn done(&self) -> bool {
        self.answered && matches!(self.recv, Recv::Closed) && self.finished_sending()
    }

    fn finished_sending(&self) -> bool {
        matches!(self.send, Sending::Blocked { ref data, body: None } if data.is_empty())
    }
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Polls the streams' futures; true if any finished.
    pub(super) fn poll_tasks(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Poll::Ready(Some(event)) = self.tasks.poll_next_unpin(cx) {
            progress = true;
            match event {
                Event::Answered(id, response) => self.answer(id, response, cx),
                Event::Body(id, body, frame) => self.body_frame(id, body, frame),
                Event::Cancelled => {}
            }
        }
        progress
    }

    fn answer(&mut self, id: u32, response: Response<ResponseBody>, cx: &mut Context<'_>) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let (head, mut body) = response.into_parts();
        self.block.clear();
        request::encode_response(&mut self.block, head.status.as_u16(), &head.headers);
        let end = body.is_end_stream();
        wire::put_headers(&mut self.write, id, &self.block, end, self.peer_max_frame);
        stream.answered = true;
        if end {
            stream.send = Sending::Blocked {
                data: Bytes::new(),
                body: None,
            };
            self.sent_all(id);
        } else {
            stream.send = Sending::Polling;
            // A small body usually came with the head: taken here, it
            // needs no task of its own (one node of `tasks` allocated,
            // queued and polled less per request). A body still to come
            // gets its task, which polls it again with its own waker.
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(frame) => self.body_frame(id, body, frame),
                Poll::Pending => {
                    let cancel = Arc::clone(&stream.cancel);
                    self.tasks.push(Task {
                        id,
                        cancel,
                        work: Work::Body(Some(body)),
                    });
                }
            }
        }
    }

    fn body_frame(&mut self, id: u32, body: ResponseBody, frame: BodyFrame) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        match frame {
            None => {
                wire::put_data_head(&mut self.write, id, 0, true);
                stream.send = Sending::Blocked {
                    data: Bytes::new(),
                    body: None,
                };
                self.sent_all(id);
            }
            Some(Err(e)) => {
                tracing::debug!(stream = id, error = %e, "HTTP/2 response body failed");
                self.reset_stream(id, Reason::Internal);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let body = (!body.is_end_stream()).then_some(body);
                    stream.send = Sending::Blocked { data, body };
                    self.flush_stream(id);
                }
                Err(frame) => {
                    let trailers = frame.into_trailers().unwrap_or_default();
                    self.block.clear();
                    request::encode_fields(&mut self.block, &trailers);
                    wire::put_headers(&mut self.write, id, &self.block, true, self.peer_max_frame);
                    stream.send = Sending::Blocked {
                        data: Bytes::new(),
                        body: None,
                    };
                    self.sent_all(id);
                }
            },
        }
    }

    /// Writes what a blocked stream's windows allow; then polls its body
    /// again, or ends the stream.
    fn flush_stream(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let Sending::Blocked { data, body } = &mut stream.send else {
            return;
        };
        let ends = body.is_none();
        while !data.is_empty() {
            let room = stream.send_window.min(self.send_window);
            if room <= 0 || self.write.len() > super::WRITE_HIGH_WATER {
                if room <= 0 && self.stall.is_none() {
                    self.stall = Some(Box::pin(tokio::time::sleep(self.limits.send_stall)));
                }
                return;
            }
            let n = data.len().min(room as usize).min(self.peer_max_frame);
            let chunk = data.split_to(n);
            wire::put_data_head(&mut self.write, id, n, ends && data.is_empty());
            self.write.extend_from_slice(&chunk);
            stream.send_window -= n as i64;
            self.send_window -= n as i64;
        }
        match body.take() {
            Some(body) => {
                stream.send = Sending::Polling;
                self.tasks.push(Task {
                    id,
                    cancel: Arc::clone(&stream.cancel),
                    work: Work::Body(Some(body)),
                });
            }
            None => self.sent_all(id),
        }
    }

    /// The response is out: the stream ends, and if the client is still
    /// sending a body nobody will read, it is told to stop.
    fn sent_all(&mut self, id: u32) {
        let Some(stream) = self.streams.get(&id) else {
            return;
        };
        if stream.done() {
            self.streams.remove(&id);
        } else if stream.finished_sending() {
            self.rst(id, Reason::NoError);
            if let Some(stream) = self.streams.remove(&id) {
                stream.cancel();
            }
        }
    }

    /// Writes what blocked streams may now send.
    pub(super) fn flush_blocked(&mut self) {
        let blocked: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| matches!(&s.send, Sending::Blocked { data, .. } if !data.is_empty()))
            .map(|(id, _)| *id)
            .collect();
        for id in blocked {
            self.flush_stream(id);
        }
    }

    /// Gives the client back the window its bodies' readers freed.
    pub(super) fn credit(&mut self, cx: &mut Context<'_>) {
        let half_stream = (self.limits.stream_window / 2) as usize;
        for (id, stream) in &mut self.streams {
            let Recv::Open {
                feed,
                window,
                credit,
                ..
            } = &mut stream.recv
            else {
                continue;
            };
            let (taken, _) = feed.taken(cx.waker());
            *credit += taken;
            self.recv_credit += taken;
            if *credit >= half_stream {
                wire::put_window_update(&mut self.write, *id, *credit as u32);
                *window += *credit as i64;
                *credit = 0;
            }
        }
        if self.recv_credit >= (self.limits.connection_window / 4) as usize {
            wire::put_window_update(&mut self.write, 0, self.recv_credit as u32);
            self.recv_window += self.recv_credit as i64;
            self.recv_credit = 0;
        }
    }

    /// A response that waited `send_stall` for the client's window: its
    /// stream is reset (the upstream let go).
    pub(super) fn poll_stall(&mut self, cx: &mut Context<'_>) {
        let Some(stall) = &mut self.stall else {
            return;
        };
        if stall.as_mut().poll(cx).is_pending() {
            return;
        }
        self.stall = None;
        let stalled: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| {
                matches!(&s.send, Sending::Blocked { data, .. } if !data.is_empty())
                    && (s.send_window <= 0 || self.send_window <= 0)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stalled {
            tracing::debug!(
                stream = id,
                "HTTP/2 response stalled on the client's window; reset"
            );
            self.reset_stream(id, Reason::Cancel);
        }
    }
}
