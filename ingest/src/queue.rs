//! The bounded queue between a pipeline's streaming thread (the appsink callback) and whoever
//! publishes its frames.
//!
//! `std::sync::mpsc` cannot drop its *oldest* element, which is what live mode needs (the
//! freshest frames are the useful ones), so this is a small mutex + condvar queue. The lock is
//! held only to move a frame in or out, so in live mode the streaming thread never waits on
//! anything but that; in archive mode it waits for room, which is the backpressure.

use std::collections::VecDeque;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::FullPolicy;

/// What became of a pushed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued; nothing was dropped.
    Queued,
    /// Queued, and the oldest queued item was dropped to make room.
    QueuedDroppedOldest,
    /// Not queued: the queue is closed or its receiver is gone.
    Closed,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// No more items will be pushed: the stream ended or failed.
    closed: bool,
    /// The receiver was dropped: nobody will take items any more.
    abandoned: bool,
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    /// Signalled when an item arrives or the queue closes.
    not_empty: Condvar,
    /// Signalled when an item leaves or the queue closes (archive mode waits on it).
    not_full: Condvar,
    capacity: usize,
    policy: FullPolicy,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock cannot leave the deque half-updated in a way that
        // matters here (each operation is one push or pop), so keep going with the data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sending side; cloned into the appsink callback and the bus handler.
#[derive(Debug)]
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The receiving side of a stream's frame queue. Iterating it (`for frame in &receiver`)
/// yields frames until the stream has ended or failed and every queued frame was taken.
#[derive(Debug)]
pub struct FrameReceiver<T> {
    shared: Arc<Shared<T>>,
}

/// A queue holding at most `capacity` items, with `policy` deciding what a push into a full
/// queue does.
pub(crate) fn bounded<T>(capacity: usize, policy: FullPolicy) -> (Sender<T>, FrameReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::with_capacity(capacity),
            closed: false,
            abandoned: false,
        }),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
        capacity: capacity.max(1),
        policy,
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        FrameReceiver { shared },
    )
}

impl<T> Sender<T> {
    /// Queues `item` under the queue's policy. Live: never waits. Archive: waits for room.
    pub(crate) fn push(&self, item: T) -> Pushed {
        let shared = &self.shared;
        let mut state = shared.lock();
        let mut dropped = false;
        loop {
            if state.closed || state.abandoned {
                return Pushed::Closed;
            }
            if state.items.len() < shared.capacity {
                break;
            }
            match shared.policy {
                FullPolicy::DropOldest => {
                    state.items.pop_front();
                    dropped = true;
                    break;
                }
                FullPolicy::Block => {
                    state = shared
                        .not_full
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
        state.items.push_back(item);
        drop(state);
        shared.not_empty.notify_one();
        if dropped {
            Pushed::QueuedDroppedOldest
        } else {
            Pushed::Queued
        }
    }

    /// Ends the queue: the receiver gets what is queued, then sees the end. A push waiting for
    /// room returns [`Pushed::Closed`].
    pub(crate) fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.not_empty.notify_all();
        self.shared.not_full.notify_all();
    }
}

impl<T> FrameReceiver<T> {
    /// Waits up to `timeout` for the next item. `Disconnected` means the stream has ended (or
    /// failed) and every item was taken.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        let shared = &self.shared;
        let mut state = shared.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                drop(state);
                shared.not_full.notify_one();
                return Ok(item);
            }
            if state.closed {
                return Err(RecvTimeoutError::Disconnected);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvTimeoutError::Timeout);
            }
            state = shared
                .not_empty
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits for the next item; `None` once the stream has ended and every item was taken.
    pub fn recv(&self) -> Option<T> {
        loop {
            match self.recv_timeout(Duration::from_secs(3600)) {
                Ok(item) => return Some(item),
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Items queued right now.
    pub fn len(&self) -> usize {
        self.shared.lock().items.len()
    }

    /// Whether no item is queued right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Drop for FrameReceiver<T> {
    fn drop(&mut self) {
        self.shared.lock().abandoned = true;
        self.shared.not_full.notify_all();
    }
}

/// Iterator over a [`FrameReceiver`], ending with the stream.
#[derive(Debug)]
pub struct Iter<'a, T> {
    receiver: &'a FrameReceiver<T>,
}

impl<T> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.receiver.recv()
    }
}

impl<'a, T> IntoIterator for &'a FrameReceiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        Iter { receiver: self }
    }
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a failed expectation is the test failing"
)]
mod tests {
    use super::*;

    #[test]
    fn live_queue_drops_the_oldest_and_never_waits() {
        let (tx, rx) = bounded(3, FullPolicy::DropOldest);
        let outcomes: Vec<Pushed> = (0..5).map(|i| tx.push(i)).collect();
        assert_eq!(
            outcomes,
            [
                Pushed::Queued,
                Pushed::Queued,
                Pushed::Queued,
                Pushed::QueuedDroppedOldest,
                Pushed::QueuedDroppedOldest
            ]
        );
        tx.close();
        assert_eq!(rx.into_iter().collect::<Vec<_>>(), [2, 3, 4]);
    }

    #[test]
    fn archive_queue_waits_for_room_and_keeps_everything() {
        let (tx, rx) = bounded(1, FullPolicy::Block);
        let producer = std::thread::spawn(move || {
            for i in 0..50 {
                assert_eq!(tx.push(i), Pushed::Queued);
            }
            tx.close();
        });
        let got: Vec<i32> = rx.into_iter().collect();
        producer.join().unwrap();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn closing_wakes_a_blocked_push_and_the_receiver_drains_first() {
        let (tx, rx) = bounded(1, FullPolicy::Block);
        assert_eq!(tx.push(1), Pushed::Queued);
        let blocked = {
            let tx = tx.clone();
            std::thread::spawn(move || tx.push(2))
        };
        std::thread::sleep(Duration::from_millis(20));
        tx.close();
        assert_eq!(blocked.join().unwrap(), Pushed::Closed);
        assert_eq!(rx.recv_timeout(Duration::ZERO), Ok(1));
        assert_eq!(
            rx.recv_timeout(Duration::ZERO),
            Err(RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn a_dropped_receiver_refuses_pushes() {
        let (tx, rx) = bounded(2, FullPolicy::Block);
        drop(rx);
        assert_eq!(tx.push(1), Pushed::Closed);
    }

    #[test]
    fn recv_times_out_on_an_open_empty_queue() {
        let (_tx, rx) = bounded::<u8>(2, FullPolicy::DropOldest);
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(10)),
            Err(RecvTimeoutError::Timeout)
        );
    }
}
