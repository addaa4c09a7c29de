//! One client connection: the hyper service around the proxy, and the loop
//! that ends it — idle timeout, SIGTERM, retirement after an upgrade — or,
//! for HTTP/1.1, parks it while idle (see `park`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper::server::conn::http1::Parts;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::Server;
use super::direct::DirectEnd;
use super::lot::Lot;
use super::park::{self, FirstBytes, PARK_AFTER, ParkableIo, REQUEST_TIMEOUT, answer_and_close};
use super::side_wake::SideWake;
use crate::proxy::{ClientConn, ConnActivity, ResponseBody};

/// A hyper connection the loop can ask to finish.
trait Graceful: Future<Output = Result<(), Self::Error>> {
    type Error: std::fmt::Display;
    fn shut_down(self: Pin<&mut Self>);
    /// Whether the connection ended because a request head took longer
    /// than `request_header_timeout`.
    fn head_timed_out(error: &Self::Error) -> bool;
}

impl<S> Graceful
    for hyper::server::conn::http1::UpgradeableConnection<TokioIo<ParkableIo<S>>, ProxyService>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Error = hyper::Error;
    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
    fn head_timed_out(error: &hyper::Error) -> bool {
        error.is_timeout()
    }
}

impl<S> Graceful
    for auto::UpgradeableConnection<'_, TokioIo<S>, ProxyService, hyper_util::rt::TokioExecutor>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Error = Box<dyn std::error::Error + Send + Sync>;
    fn shut_down(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
    fn head_timed_out(_: &Self::Error) -> bool {
        // Only HTTP/2 is served through this builder: no head timer.
        false
    }
}

impl<S> Graceful for super::h2::Connection<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    type Error = std::io::Error;
    fn shut_down(self: Pin<&mut Self>) {
        self.get_mut().shut_down();
    }
    fn head_timed_out(_: &Self::Error) -> bool {
        false
    }
}

/// What a parked connection keeps while in the lot (its socket and
/// deadline aside): its place under `max_connections` and in graceful stops.
pub(super) struct ParkedConn {
    permit: OwnedSemaphorePermit,
    tracked: tokio_util::task::task_tracker::TaskTrackerToken,
}

/// How a hyper connection ended.
enum Ended {
    Closed,
    /// Shut down to park: the socket is still open.
    Parked,
    /// hyper gave up waiting for a request head; the socket is still open.
    HeadTimeout,
}

/// What woke `drive`.
enum Event<E> {
    /// The connection ended.
    Done(Result<(), E>),
    Shutdown,
    Retire,
    /// A retiring connection turned out to speak HTTP/2.
    Http2WhileClosing,
    /// The idle timer ran out.
    Idle,
}

/// The service hyper calls for each request on one connection.
#[derive(Clone)]
struct ProxyService {
    proxy: Arc<crate::proxy::Proxy>,
    activity: Arc<ConnActivity>,
    client: ClientConn,
}

type ServiceFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<ResponseBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = http::Response<ResponseBody>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: Request<Incoming>) -> ServiceFuture {
        let conn = Arc::clone(&self.activity);
        let client = self.client.clone();
        let version = req.version();
        let active = conn.start(version);
        let req = req.map(crate::proxy::ClientBody::Hyper);
        let handling = self.proxy.handle(req, client, active);
        // Boxed: the request's future is KiBs, and hyper would otherwise
        // copy all of it into place for every request.
        Box::pin(async move {
            let mut response = handling.await;
            if conn.closing()
                && version < Version::HTTP_2
                && response.status() != StatusCode::SWITCHING_PROTOCOLS
            {
                // hyper closes the connection once this response is out.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(response)
        })
    }
}

impl Server {
    /// A new connection's activity record and the service hyper calls for
    /// its requests; `proto` is `http` or `https`.
    fn service(&self, client: ClientConn) -> (Arc<ConnActivity>, ProxyService) {
        let activity = ConnActivity::new(self.retire.clone(), self.shutdown.clone());
        let service = ProxyService {
            proxy: Arc::clone(&self.proxy),
            activity: Arc::clone(&activity),
            client,
        };
        (activity, service)
    }

    /// Serves a plain-TCP connection: HTTP/2 with prior knowledge as is,
    /// HTTP/1.1 parked whenever it idles.
    pub(super) async fn serve_plain(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        park: bool,
        http2_only: bool,
    ) {
        // Boxed: this runs once, and inline it would add its ~0.5 KiB to
        // the task for the connection's whole life.
        let first = Box::pin(async {
            tokio::select! {
                first = park::sniff(&stream, self.header_timeout) => first,
                // Not `retire`: after an upgrade a new connection may still be
                // about to send its first request, and gets its answer.
                () = self.shutdown.cancelled() => FirstBytes::Nothing,
            }
        })
        .await;
        match first {
            FirstBytes::Nothing => return,
            // Boxed, like the HTTP/1.1 connection below, so a parked
            // connection's task stays small.
            FirstBytes::Http2 => {
                let client = ClientConn::new(peer, "http").at(stream.local_addr().ok());
                return Box::pin(self.serve_http2(stream, peer, permit, client)).await;
            }
            FirstBytes::BadPreface => {
                return answer_and_close(stream, park::GOAWAY_BAD_PREFACE).await;
            }
            // An HTTP/2-only listener: anything else is a wrong preface.
            FirstBytes::Http1 if http2_only => {
                return answer_and_close(stream, park::GOAWAY_BAD_PREFACE).await;
            }
            FirstBytes::Http1 => {}
        }
        self.open_gauge.increment(1.0);
        self.serve_http1(stream, peer, permit, park).await;
    }

    /// Serves plain HTTP/1.1 until the connection closes, or parks it in
    /// the lot when it idles; the connection's permit and its place in
    /// the open-connections gauge go with it.
    async fn serve_http1(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
        park: bool,
    ) {
        let client = ClientConn::new(peer, "http").at(stream.local_addr().ok());
        let (activity, service) = self.service(client);
        let mut can_park = park && self.lot().is_some();
        let mut permit = permit;
        let mut stream = stream;
        loop {
            let Some(idle) = self
                .serve_http1_until_idle(stream, &service, &activity, peer, can_park)
                .await
            else {
                break;
            };
            let idle = match idle.into_std() {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot park connection; closed");
                    break;
                }
            };
            let deadline = self.parked_deadline(&activity).into_std();
            let Err((parked, kept)) = self.park(idle, deadline, permit) else {
                return;
            };
            // The lot is closed (the server is stopping, or its thread
            // died): the connection stays with hyper, unparked.
            permit = kept;
            can_park = false;
            match TcpStream::from_std(parked) {
                Ok(taken_back) => stream = taken_back,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "cannot take back connection; closed");
                    break;
                }
            }
        }
        self.open_gauge.decrement(1.0);
    }

    /// Serves HTTP/1.1 over TLS. An idle connection is parked in its own
    /// task: hyper's buffers are dropped, the TLS session is kept.
    pub(super) async fn serve_tls_http1(
        self: Arc<Self>,
        stream: tokio_rustls::server::TlsStream<TcpStream>,
        peer: SocketAddr,
        _permit: OwnedSemaphorePermit,
    ) {
        self.open_gauge.increment(1.0);
        let client =
            ClientConn::over_tls(peer, stream.get_ref().1).at(stream.get_ref().0.local_addr().ok());
        let (activity, service) = self.service(client);
        let mut stream = stream;
        loop {
            let Some(idle) = self
                .serve_http1_until_idle(stream, &service, &activity, peer, true)
                .await
            else {
                break;
            };
            // Everything the TLS session had decrypted was read (what was
            // not served was replayed), so only the socket can wake it.
            let socket = idle.get_ref().0;
            self.parked_gauge.increment(1.0);
            let resume = tokio::select! {
                readable = socket.readable() => readable.is_ok(),
                () = tokio::time::sleep_until(self.parked_deadline(&activity)) => false,
                () = self.shutdown.cancelled() => false,
            };
            self.parked_gauge.decrement(1.0);
            if !resume {
                break;
            }
            stream = idle;
        }
        self.open_gauge.decrement(1.0);
    }

    /// Serves HTTP/1.1 on `stream` — the direct path first, hyper from the
    /// first request the direct path leaves — until it closes (`None`) or,
    /// with `can_park`, idles for [`PARK_AFTER`] with nothing unread.
    async fn serve_http1_until_idle<S>(
        &self,
        stream: S,
        service: &ProxyService,
        activity: &Arc<ConnActivity>,
        peer: SocketAddr,
        can_park: bool,
    ) -> Option<S>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = if self.proxy.direct_enabled() {
            // Boxed: the direct path's future is several KiB, and inline
            // it would stay in the task while the connection idles.
            let direct = Box::pin(self.serve_direct(stream, &service.client, activity, can_park));
            match direct.await {
                DirectEnd::Closed => return None,
                DirectEnd::Idle(stream) => return Some(stream),
                DirectEnd::Fallback(io) => io,
            }
        } else {
            ParkableIo::new(stream)
        };
        self.serve_until_idle(io, service, activity, peer, can_park)
            .await
            .map(ParkableIo::into_inner)
    }

    /// Serves HTTP/1.1 on `io` until the connection closes (`None`) or,
    /// with `can_park`, idles for [`PARK_AFTER`]: then hyper lets go of it
    /// and it comes back with nothing unread (`Some`).
    async fn serve_until_idle<S>(
        &self,
        mut io: ParkableIo<S>,
        service: &ProxyService,
        activity: &ConnActivity,
        peer: SocketAddr,
        can_park: bool,
    ) -> Option<ParkableIo<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        loop {
            let parking = io.parking_flag();
            let park_flag = Some(&*parking).filter(|_| can_park);
            // A block of its own: the hyper connection's allocation must be
            // freed before the socket parks, not when the loop body ends.
            let (ended, parts) = {
                let mut conn = Box::new(
                    self.http1
                        .serve_connection(TokioIo::new(io), service.clone())
                        .with_upgrades(),
                );
                let ended =
                    Box::pin(self.drive(Pin::new(&mut *conn), activity, peer, park_flag)).await;
                (ended, conn.into_parts())
            };
            // Destructured from a temporary, so the service clone in `Parts`
            // is dropped now.
            let Parts {
                io: returned,
                read_buf,
                ..
            } = parts?;
            match ended {
                Ended::Parked => {}
                // Bytes of a head came but not all of them: tell the
                // client why it is cut off. (Nothing came: an idle
                // keep-alive connection, closed silently.)
                Ended::HeadTimeout if !read_buf.is_empty() => {
                    metrics::counter!(crate::telemetry::names::REQUEST_HEAD_TIMEOUTS_TOTAL)
                        .increment(1);
                    tracing::debug!(%peer, "request head not complete in time; 408");
                    answer_and_close(returned.into_inner(), REQUEST_TIMEOUT).await;
                    return None;
                }
                Ended::HeadTimeout | Ended::Closed => return None,
            }
            io = returned.into_inner();
            io.unpark(read_buf);
            if !io.has_unread() {
                return Some(io);
            }
        }
    }

    /// When a parked connection is closed. The head timer does not run
    /// while parked: a resumed connection's starts at its first new byte.
    fn parked_deadline(&self, activity: &ConnActivity) -> Instant {
        activity.idle_since().unwrap_or_else(Instant::now) + self.idle_timeout
    }

    /// The lot, started with the first plain HTTP/1.1 connection; `None`
    /// if its thread cannot start (connections then idle in hyper).
    fn lot(self: &Arc<Self>) -> Option<&Lot<ParkedConn>> {
        self.lot
            .get_or_init(|| {
                // Weak: a parked connection must not keep a stopped server
                // alive.
                let server = Arc::downgrade(self);
                let runtime = tokio::runtime::Handle::current();
                let started = Lot::start(move |conn: ParkedConn, stream| {
                    if let Some(server) = server.upgrade() {
                        server.leave_lot(&runtime, conn, stream);
                    }
                });
                match started {
                    Ok(lot) => {
                        let closer = lot.closer();
                        let shutdown = self.shutdown.clone();
                        tokio::spawn(async move {
                            shutdown.cancelled().await;
                            closer.close();
                        });
                        Some(lot)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start the parking lot; idle connections keep their buffers");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Hands an idle connection to the lot until its client sends again
    /// (then a new task serves it), closes, or `deadline` passes. A closed
    /// lot gives the socket and permit back.
    fn park(
        self: &Arc<Self>,
        stream: std::net::TcpStream,
        deadline: std::time::Instant,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), (std::net::TcpStream, OwnedSemaphorePermit)> {
        let Some(lot) = self.lot() else {
            return Err((stream, permit));
        };
        // Counted before the lot can let it go again.
        self.parked_gauge.increment(1.0);
        let conn = ParkedConn {
            permit,
            // Graceful stops wait for parked connections as for any other.
            tracked: self.tracker.token(),
        };
        lot.park(stream, deadline, conn).map_err(|(stream, conn)| {
            self.parked_gauge.decrement(1.0);
            (stream, conn.permit)
        })
    }

    /// A connection leaves the lot: to be served again in a new task, or
    /// closed.
    fn leave_lot(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        conn: ParkedConn,
        stream: Option<std::net::TcpStream>,
    ) {
        self.parked_gauge.decrement(1.0);
        let ParkedConn { permit, tracked } = conn;
        // The peer is asked again rather than kept by every parked entry.
        match stream.map(|s| (s.peer_addr(), s)) {
            Some((Ok(peer), stream)) => {
                let resumed = Arc::clone(self).resume(stream, peer, permit);
                drop(runtime.spawn(self.tracker.track_future(resumed)));
            }
            _ => self.open_gauge.decrement(1.0),
        }
        drop(tracked);
    }

    /// A parked connection whose client sent again, back in the runtime.
    async fn resume(
        self: Arc<Self>,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        match TcpStream::from_std(stream) {
            Ok(stream) => self.serve_http1(stream, peer, permit, true).await,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot resume parked connection; closed");
                self.open_gauge.decrement(1.0);
            }
        }
    }

    /// Serves HTTP/2 negotiated by ALPN, once its preface is right.
    pub(super) async fn serve_tls_http2(
        self: Arc<Self>,
        stream: tokio_rustls::server::TlsStream<TcpStream>,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let client =
            ClientConn::over_tls(peer, stream.get_ref().1).at(stream.get_ref().0.local_addr().ok());
        match park::check_preface(stream, self.header_timeout).await {
            Some(io) => self.serve_http2(io, peer, permit, client).await,
            None => tracing::debug!(%peer, "no HTTP/2 preface; closed"),
        }
    }

    /// Serves one HTTP/2 client connection: h2c (`proto` `http`) or past
    /// its TLS handshake (`https`).
    pub(super) async fn serve_http2<S>(
        self: Arc<Self>,
        stream: S,
        peer: SocketAddr,
        _permit: OwnedSemaphorePermit,
        client: ClientConn,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        self.open_gauge.increment(1.0);
        let (activity, service) = self.service(client);
        if let Some(limits) = self.h2 {
            let service = super::h2::Service {
                proxy: service.proxy,
                activity: Arc::clone(&activity),
                client: service.client,
            };
            let conn = super::h2::Connection::new(stream, service, limits);
            tokio::pin!(conn);
            self.drive(conn, &activity, peer, None).await;
        } else {
            let conn = self
                .http
                .serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            self.drive(conn, &activity, peer, None).await;
        }
        self.open_gauge.decrement(1.0);
    }

    /// Polls `conn` to its end, shutting it down gracefully on an idle
    /// timeout, SIGTERM or retirement — or, with a `park` flag, once it
    /// has been idle for [`PARK_AFTER`].
    async fn drive<C: Graceful>(
        &self,
        mut conn: Pin<&mut C>,
        activity: &ConnActivity,
        peer: SocketAddr,
        park: Option<&std::sync::atomic::AtomicBool>,
    ) -> Ended {
        // How long after the last request to look again: time to park, or
        // time to close.
        let check_after = match park {
            Some(_) => PARK_AFTER.min(self.idle_timeout),
            None => self.idle_timeout,
        };
        // The side futures, polled only when they wake the task (see
        // `side_wake`), each until it fires.
        let (side, side_waker) = SideWake::new();
        let shutdown = self.shutdown.cancelled();
        let retire = self.retire.cancelled();
        let http2_while_closing = activity.http2_while_closing();
        let idle = tokio::time::sleep(check_after);
        tokio::pin!(shutdown, retire, http2_while_closing, idle);
        let mut closing = false;
        let mut retiring = false;
        // Requests started when parking began: if one sneaks in before
        // hyper stops, hyper answers it with `Connection: close`, and the
        // connection must then really close rather than park.
        let mut parked_at = None;
        loop {
            let event = std::future::poll_fn(|cx| {
                if let Poll::Ready(done) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Event::Done(done));
                }
                if !side.take(cx) {
                    return Poll::Pending;
                }
                let mut cx = Context::from_waker(&side_waker);
                if !closing && shutdown.as_mut().poll(&mut cx).is_ready() {
                    return Poll::Ready(Event::Shutdown);
                }
                if !retiring && !closing && retire.as_mut().poll(&mut cx).is_ready() {
                    return Poll::Ready(Event::Retire);
                }
                if retiring && !closing && http2_while_closing.as_mut().poll(&mut cx).is_ready() {
                    return Poll::Ready(Event::Http2WhileClosing);
                }
                if !closing && idle.as_mut().poll(&mut cx).is_ready() {
                    return Poll::Ready(Event::Idle);
                }
                Poll::Pending
            })
            .await;
            // Whatever fired, the next round looks at every side future.
            side.again();
            match event {
                Event::Done(done) => {
                    if let Err(e) = done {
                        if C::head_timed_out(&e) {
                            return Ended::HeadTimeout;
                        }
                        tracing::debug!(%peer, error = %e, "client connection ended with an error");
                    }
                    let parked = park.is_some_and(|p| p.load(Ordering::Acquire))
                        && parked_at == Some(activity.requests_started());
                    return if parked { Ended::Parked } else { Ended::Closed };
                }
                Event::Shutdown => {
                    closing = true;
                    conn.as_mut().shut_down();
                }
                Event::Retire => {
                    retiring = true;
                    if activity.set_closing() {
                        closing = true;
                        conn.as_mut().shut_down();
                    }
                }
                Event::Http2WhileClosing => {
                    closing = true;
                    conn.as_mut().shut_down();
                }
                Event::Idle => {
                    let Some(since) = activity.idle_since() else {
                        idle.as_mut().reset(Instant::now() + check_after);
                        continue;
                    };
                    let idle_for = since.elapsed();
                    if idle_for >= self.idle_timeout {
                        tracing::debug!(%peer, "closing idle client connection");
                        closing = true;
                        conn.as_mut().shut_down();
                    } else if let Some(flag) = park.filter(|_| idle_for >= PARK_AFTER) {
                        // Idle: hyper sends nothing and returns the socket.
                        tracing::trace!(%peer, "parking idle connection");
                        parked_at = Some(activity.requests_started());
                        flag.store(true, Ordering::Release);
                        closing = true;
                        conn.as_mut().shut_down();
                    } else {
                        idle.as_mut().reset(since + check_after);
                    }
                }
            }
        }
    }
}
