//! A waker for a connection task's side futures — the stop and retire
//! signals, the idle timer — that remembers whether one of them woke the
//! task. A connection's task wakes two or more times per request for its
//! sockets; polling every side future on each of those wake-ups (what
//! `tokio::select!` does) cost ~4 % of an HTTP/2 request's instructions
//! at one stream per connection. With this, they are polled only when
//! they woke the task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};

use futures_util::task::AtomicWaker;

pub(super) struct SideWake {
    /// A side future woke the task since `take` last looked (true at
    /// first: nothing is registered yet).
    woken: AtomicBool,
    /// The task to wake.
    task: AtomicWaker,
}

impl SideWake {
    /// The shared record, and the waker to poll the side futures with.
    pub(super) fn new() -> (Arc<SideWake>, Waker) {
        let side = Arc::new(SideWake {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(Arc::clone(&side));
        (side, waker)
    }

    /// Registers the task polling now; true if the side futures need
    /// polling (one of them woke it, or `again` was called).
    pub(super) fn take(&self, cx: &Context<'_>) -> bool {
        // Registered before looking, so a wake-up between the two is not
        // lost: it finds the task's waker and sets the flag again.
        self.task.register(cx.waker());
        self.woken.swap(false, Ordering::AcqRel)
    }

    /// Makes the next `take` say the side futures need polling: after
    /// one of them fired (the others may be ready too), or after one was
    /// reset (a timer rearmed must be polled to register again).
    pub(super) fn again(&self) {
        self.woken.store(true, Ordering::Release);
    }
}

impl Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct CountingWake(AtomicUsize);
    impl Wake for CountingWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn side_futures_are_polled_first_then_only_when_they_woke_the_task() {
        let count = Arc::new(CountingWake(AtomicUsize::new(0)));
        let task = Waker::from(Arc::clone(&count));
        let cx = Context::from_waker(&task);
        let (side, waker) = SideWake::new();
        assert!(side.take(&cx), "the first poll registers the side futures");
        assert!(
            !side.take(&cx),
            "a wake-up from elsewhere leaves them alone"
        );
        waker.wake_by_ref();
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "the task is woken");
        assert!(side.take(&cx));
        assert!(!side.take(&cx));
        side.again();
        assert!(side.take(&cx));
    }
}
