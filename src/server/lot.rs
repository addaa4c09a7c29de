//! The lot where parked connections wait, outside the async runtime.
//!
//! A parked connection that waited in its own task stayed registered with
//! tokio and kept its task and timer: ~1.5 KiB each. In the lot it is an
//! entry of a slab — its socket, its deadline and a small value of the
//! caller's (for the server: its connection-limit permit and graceful-stop
//! token) — watched by one thread with an epoll of its own (mio). A socket
//! whose client sends again leaves through the lot's `leave` with the
//! socket, to be served in a new task; one whose client closed, whose
//! deadline passed, or that is still parked when the lot closes leaves
//! with `None`, its socket closed.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// A parked socket, until it leaves.
struct Parked<T> {
    stream: mio::net::TcpStream,
    deadline: Instant,
    value: T,
}

/// Deadlines are checked at most this often, so sockets that expire one
/// after another cost one sweep of the lot rather than one each.
const SWEEP_AT_MOST_EVERY: Duration = Duration::from_millis(50);

/// The lot's token for its waker (sockets get their slab keys).
const WAKER: Token = Token(usize::MAX);

/// Sockets on their way in, handed over by [`Lot::park`].
struct Arrivals<T> {
    parked: Vec<Parked<T>>,
    closed: bool,
}

struct Shared<T> {
    arrivals: Mutex<Arrivals<T>>,
    waker: mio::Waker,
}

impl<T> Shared<T> {
    fn arrivals(&self) -> std::sync::MutexGuard<'_, Arrivals<T>> {
        // The lock guards a plain Vec and flag: a panic elsewhere cannot
        // leave them half-changed.
        self.arrivals.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "cannot wake the parking lot");
        }
    }

    fn close(&self) {
        self.arrivals().closed = true;
        self.wake();
    }
}

/// The lot: a handle to its thread. Dropping it closes the lot.
pub struct Lot<T> {
    shared: Arc<Shared<T>>,
}

impl<T: Send + 'static> Lot<T> {
    /// Starts the lot's thread. `leave` is called, on that thread, once
    /// for every socket parked: with the socket when its client sent
    /// something to serve, with `None` once it has been closed.
    pub fn start<F>(leave: F) -> std::io::Result<Lot<T>>
    where
        F: FnMut(T, Option<TcpStream>) + Send + 'static,
    {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(Shared {
            arrivals: Mutex::new(Arrivals {
                parked: Vec::new(),
                closed: false,
            }),
            waker,
        });
        let watch = Watch {
            poll,
            shared: Arc::clone(&shared),
            parked: Slab::new(),
            next_sweep: None,
            leave,
        };
        std::thread::Builder::new()
            .name("parking-lot".into())
            .spawn(move || watch.run())?;
        Ok(Lot { shared })
    }

    /// Parks `stream` until its client sends, closes, or `deadline` passes.
    /// A closed lot hands both back.
    pub fn park(
        &self,
        stream: TcpStream,
        deadline: Instant,
        value: T,
    ) -> Result<(), (TcpStream, T)> {
        {
            let mut arrivals = self.shared.arrivals();
            if arrivals.closed {
                return Err((stream, value));
            }
            arrivals.parked.push(Parked {
                stream: mio::net::TcpStream::from_std(stream),
                deadline,
                value,
            });
        }
        self.shared.wake();
        Ok(())
    }

    /// A handle that closes the lot, for whoever learns it is time.
    pub fn closer(&self) -> Closer<T> {
        Closer {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Lot<T> {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// Closes a [`Lot`]: every parked socket is closed, later ones refused.
pub struct Closer<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Closer<T> {
    pub fn close(&self) {
        self.shared.close();
    }
}

/// Marks the lot closed when its thread ends, even by a panic; sockets
/// still on their way in are dropped, which closes them.
struct ClosedOnExit<T>(Arc<Shared<T>>);

impl<T> Drop for ClosedOnExit<T> {
    fn drop(&mut self) {
        let mut arrivals = self.0.arrivals();
        arrivals.closed = true;
        arrivals.parked.clear();
    }
}

/// The lot's thread: waits for parked sockets to become readable and for
/// the next deadline.
struct Watch<T, F> {
    poll: Poll,
    shared: Arc<Shared<T>>,
    parked: Slab<Parked<T>>,
    /// When to look at deadlines next; `None` with nothing parked.
    next_sweep: Option<Instant>,
    leave: F,
}

impl<T, F: FnMut(T, Option<TcpStream>)> Watch<T, F> {
    fn run(mut self) {
        // However the thread ends, later parks are refused (their callers
        // close those connections) rather than left waiting for nobody.
        let _closed_on_exit = ClosedOnExit(Arc::clone(&self.shared));
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self
                .next_sweep
                .map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != ErrorKind::Interrupted
            {
                // Nothing can be watched any more: close what is parked
                // rather than leave it hanging.
                tracing::error!(error = %e, "parking lot cannot wait for sockets; closing it");
                self.shared.arrivals().closed = true;
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    Token(key) => self.readable(key),
                }
            }
            if !self.admit() {
                break;
            }
            if self.next_sweep.is_some_and(|at| at <= Instant::now()) {
                self.sweep();
            }
        }
        for parked in self.parked.drain() {
            (self.leave)(parked.value, None);
        }
    }

    /// Takes in the sockets parked since the last look. False once the lot
    /// is closed (arrivals are then closed too).
    fn admit(&mut self) -> bool {
        let (arrived, closed) = {
            let mut arrivals = self.shared.arrivals();
            (std::mem::take(&mut arrivals.parked), arrivals.closed)
        };
        for mut parked in arrived {
            if closed {
                (self.leave)(parked.value, None);
                continue;
            }
            let entry = self.parked.vacant_entry();
            let token = Token(entry.key());
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut parked.stream, token, Interest::READABLE)
            {
                tracing::warn!(error = %e, "cannot watch a parked connection; closed");
                (self.leave)(parked.value, None);
                continue;
            }
            self.next_sweep = Some(match self.next_sweep {
                Some(at) => at.min(parked.deadline),
                None => parked.deadline,
            });
            entry.insert(parked);
        }
        !closed
    }

    /// The socket under `key` has something to say: its client's next
    /// request, or that it closed.
    fn readable(&mut self, key: usize) {
        let Some(parked) = self.parked.get(key) else {
            return;
        };
        let peeked = loop {
            match parked.stream.peek(&mut [0u8; 1]) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                peeked => break peeked,
            }
        };
        let serve = match peeked {
            Ok(0) => false,
            Ok(_) => true,
            // Woken for nothing: the next bytes will wake it again.
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(_) => false,
        };
        let mut parked = self.parked.remove(key);
        // Unregistered before it leaves: the lot must not watch a socket
        // the runtime now owns (or a closed one whose number is reused).
        let unwatched = self.poll.registry().deregister(&mut parked.stream);
        if serve && unwatched.is_ok() {
            (self.leave)(parked.value, Some(parked.stream.into()));
        } else {
            (self.leave)(parked.value, None);
        }
    }

    /// Closes every socket past its deadline and finds the next one.
    fn sweep(&mut self) {
        let now = Instant::now();
        let expired: Vec<usize> = self
            .parked
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(key, _)| key)
            .collect();
        for key in expired {
            let mut parked = self.parked.remove(key);
            let _ = self.poll.registry().deregister(&mut parked.stream);
            (self.leave)(parked.value, None);
        }
        // A lot that emptied out gives its memory back.
        if self.parked.is_empty() {
            self.parked.shrink_to_fit();
        }
        self.next_sweep = self
            .parked
            .iter()
            .map(|(_, p)| p.deadline)
            .min()
            .map(|at| at.max(now + SWEEP_AT_MOST_EVERY));
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::Lot;

    /// Longer than anything here should take on a busy machine.
    const DEADLINE: Duration = Duration::from_secs(20);

    /// A connected pair: (client end, server end, non-blocking as a parked
    /// socket is).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, server)
    }

    /// A lot whose values are ids, reporting which socket left and whether
    /// it came back.
    fn lot() -> (Lot<usize>, mpsc::Receiver<(usize, Option<TcpStream>)>) {
        let (tx, rx) = mpsc::channel();
        let lot = Lot::start(move |id, stream| {
            let _ = tx.send((id, stream));
        })
        .unwrap();
        (lot, rx)
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn a_socket_leaves_when_its_client_sends_with_the_bytes_unread() {
        let (lot, rx) = lot();
        let (mut quiet, quiet_server) = pair();
        let (mut talker, talker_server) = pair();
        assert!(lot.park(quiet_server, far(), 1).is_ok());
        assert!(lot.park(talker_server, far(), 2).is_ok());
        talker.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let (id, stream) = rx.recv_timeout(DEADLINE).unwrap();
        assert_eq!(id, 2);
        let mut stream = stream.expect("handed back to be served");
        stream.set_nonblocking(false).unwrap();
        let mut got = [0u8; 16];
        stream.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n");
        // The one that stayed quiet is still parked, and can still leave.
        assert!(rx.try_recv().is_err());
        quiet.write_all(b"x").unwrap();
        assert_eq!(rx.recv_timeout(DEADLINE).unwrap().0, 1);
    }

    #[test]
    fn a_socket_whose_client_closes_leaves_closed() {
        let (lot, rx) = lot();
        let (client, server) = pair();
        assert!(lot.park(server, far(), 1).is_ok());
        drop(client);
        let (id, stream) = rx.recv_timeout(DEADLINE).unwrap();
        assert_eq!(id, 1);
        assert!(stream.is_none());
    }

    #[test]
    fn a_socket_past_its_deadline_is_closed_and_others_stay() {
        let (lot, rx) = lot();
        let (mut soon, soon_server) = pair();
        let (mut later, later_server) = pair();
        let parked_at = Instant::now();
        let limit = Duration::from_millis(300);
        assert!(lot.park(soon_server, parked_at + limit, 1).is_ok());
        assert!(lot.park(later_server, far(), 2).is_ok());
        let (id, stream) = rx.recv_timeout(DEADLINE).unwrap();
        assert_eq!(id, 1);
        assert!(stream.is_none());
        assert!(parked_at.elapsed() >= limit, "closed before its deadline");
        // Its client sees the close: end of stream, not a reset.
        soon.set_read_timeout(Some(DEADLINE)).unwrap();
        assert_eq!(soon.read(&mut [0u8; 1]).unwrap(), 0);
        later.write_all(b"x").unwrap();
        let (id, stream) = rx.recv_timeout(DEADLINE).unwrap();
        assert_eq!((id, stream.is_some()), (2, true));
    }

    #[test]
    fn a_lot_whose_thread_died_refuses_parks() {
        let lot = Lot::start(|_: usize, _| panic!("leave failed")).unwrap();
        let (client, server) = pair();
        assert!(lot.park(server, far(), 1).is_ok());
        drop(client);
        let deadline = Instant::now() + DEADLINE;
        loop {
            let (_client, server) = pair();
            if lot.park(server, far(), 2).is_err() {
                break;
            }
            assert!(Instant::now() < deadline, "parks still accepted");
            std::thread::yield_now();
        }
    }

    #[test]
    fn closing_the_lot_closes_every_socket_and_refuses_more() {
        let (lot, rx) = lot();
        let clients: Vec<TcpStream> = (0..3)
            .map(|id| {
                let (client, server) = pair();
                assert!(lot.park(server, far(), id).is_ok());
                client
            })
            .collect();
        lot.closer().close();
        let mut left: Vec<usize> = (0..3)
            .map(|_| {
                let (id, stream) = rx.recv_timeout(DEADLINE).unwrap();
                assert!(stream.is_none());
                id
            })
            .collect();
        left.sort();
        assert_eq!(left, [0, 1, 2]);
        for mut client in clients {
            client.set_read_timeout(Some(DEADLINE)).unwrap();
            assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0);
        }
        let (_client, server) = pair();
        assert!(lot.park(server, far(), 9).is_err());
    }
}
