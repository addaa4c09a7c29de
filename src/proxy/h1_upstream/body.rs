//! Response bodies for hyper's server read from a direct-path socket (see
//! `Proxy::send_raw`), beside those hyper's client reads.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::BODY_READ_SIZE;
use crate::proxy::pools::{PooledConnection, RawConn, RawHome};
use crate::proxy::wire::chunked::ChunkedScan;
use crate::proxy::wire::response::Framing;

/// An upstream's response body, from hyper's client or a direct socket.
pub enum UpstreamBody {
    Hyper(Incoming, PooledConnection),
    Direct(DirectBody),
}

/// A response body read from a direct-path socket: decoded (a chunked
/// body's chunks become frames, its trailers are dropped), the socket
/// pooled again once the body ends with nothing after it.
pub struct DirectBody {
    upstream: Option<RawConn>,
    home: RawHome,
    buf: BytesMut,
    framing: Remaining,
    reusable: bool,
}

enum Remaining {
    Done,
    Length(u64),
    Chunked(ChunkedScan),
    UntilClose,
}

impl DirectBody {
    pub(super) fn new(
        upstream: RawConn,
        home: RawHome,
        buf: BytesMut,
        framing: Framing,
        reusable: bool,
    ) -> Self {
        let framing = match framing {
            Framing::Empty | Framing::Length(0) => Remaining::Done,
            Framing::Length(n) => Remaining::Length(n),
            Framing::Chunked => Remaining::Chunked(ChunkedScan::default()),
            Framing::UntilClose => Remaining::UntilClose,
        };
        let mut body = DirectBody {
            upstream: Some(upstream),
            home,
            buf,
            framing,
            reusable,
        };
        if matches!(body.framing, Remaining::Done) {
            body.finish();
        }
        body
    }

    /// The body ended: the socket goes back to its pool if the upstream
    /// may send another response on it and sent nothing more; bytes after
    /// the body mean the upstream is out of step.
    fn finish(&mut self) {
        self.framing = Remaining::Done;
        if let Some(conn) = self.upstream.take() {
            if !self.buf.is_empty() {
                self.home.out_of_step();
            } else if self.reusable {
                self.home.release(conn);
            }
        }
    }

    /// The next frame from what is buffered, if there is one.
    fn buffered_frame(&mut self) -> Option<Result<Option<Bytes>, std::io::Error>> {
        let invalid = |e: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string());
        match &mut self.framing {
            Remaining::Done => Some(Ok(None)),
            Remaining::Length(remaining) => {
                if self.buf.is_empty() {
                    return None;
                }
                let take = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                let data = self.buf.split_to(take).freeze();
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.finish();
                }
                Some(Ok(Some(data)))
            }
            Remaining::Chunked(scan) => match scan.next_data(&mut self.buf) {
                Err(e) => Some(Err(invalid(e))),
                Ok(Some(data)) => Some(Ok(Some(data))),
                Ok(None) if scan.done() => {
                    self.finish();
                    Some(Ok(None))
                }
                Ok(None) => None,
            },
            Remaining::UntilClose => {
                (!self.buf.is_empty()).then(|| Ok(Some(self.buf.split().freeze())))
            }
        }
    }
}

impl Body for DirectBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        loop {
            match this.buffered_frame() {
                Some(Ok(Some(data))) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Some(Ok(None)) => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {}
            }
            let Some(upstream) = this.upstream.as_mut() else {
                return Poll::Ready(None);
            };
            this.buf.reserve(BODY_READ_SIZE);
            match tokio_util::io::poll_read_buf(Pin::new(&mut upstream.stream), cx, &mut this.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Ok(0)) if matches!(this.framing, Remaining::UntilClose) => {
                    this.framing = Remaining::Done;
                    this.upstream = None;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "upstream closed inside the body",
                    ))));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Remaining::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Remaining::Done => SizeHint::with_exact(0),
            Remaining::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
