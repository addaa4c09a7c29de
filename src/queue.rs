//! A pool's waiting room: requests that found every upstream of the pool
//! at its `max_in_flight` wait here, first come first served, until a
//! request to one of them ends (`room_made`, called as its in-flight guard
//! drops). Bounded: a full room turns requests away at once.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// One pool's queue; kept across table rebuilds by pool name, shared by
/// the pool's upstreams (whose requests ending make room).
#[derive(Debug, Default)]
pub struct Queue {
    waiting: AtomicUsize,
    room: Notify,
}

/// A request's place in the queue; leaving (served, timed out, or the
/// client gone) frees it.
#[derive(Debug)]
pub struct Place<'a> {
    queue: &'a Queue,
}

impl Queue {
    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A place, or `None` when `max` requests already wait.
    pub fn join(&self, max: usize) -> Option<Place<'_>> {
        self.waiting
            // SeqCst here, in `room_made` and on the in-flight count: a
            // waiter's "join, then look for room" and a request's "end,
            // then look for waiters" must not both miss each other (a
            // store-load reordering would leave the waiter asleep).
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Place { queue: self })
    }

    /// Wakes the longest waiter, if any: a request to one of the pool's
    /// upstreams ended. (tokio's `Notify` wakes waiters in order, and a
    /// woken waiter that leaves without using it passes it on.)
    pub fn room_made(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.room.notify_one();
        }
    }
}

impl Place<'_> {
    /// Resolves at the next `room_made`; enable it (`Notified::enable`)
    /// before looking for room, so none made meanwhile is missed.
    pub fn room(&self) -> tokio::sync::futures::Notified<'_> {
        self.queue.room.notified()
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.queue.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_turns_requests_away_and_a_place_left_is_free_again() {
        let q = Queue::default();
        let a = q.join(2).expect("room for one");
        let _b = q.join(2).expect("room for two");
        assert!(q.join(2).is_none());
        assert_eq!(q.waiting(), 2);
        drop(a);
        assert_eq!(q.waiting(), 1);
        assert!(q.join(2).is_some());
    }

    #[tokio::test]
    async fn room_made_wakes_a_waiter_that_enabled_before_looking() {
        let q = Queue::default();
        let place = q.join(1).expect("a place");
        let room = place.room();
        tokio::pin!(room);
        room.as_mut().enable();
        // Room made between the look and the wait is not lost.
        q.room_made();
        tokio::time::timeout(std::time::Duration::from_secs(5), room)
            .await
            .expect("woken");
    }
}
