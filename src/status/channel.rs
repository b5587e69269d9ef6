//! The one-shot, many-reader status channel: [`channel`], [`SyncPublisher`]
//! and [`SyncReceiver`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use super::slot::OutcomeSlot;
use super::{Outcome, SyncOutcome, SyncStatus, TimedOut};
use crate::WatchCell;
use crate::sync::Arc;
use crate::watch_cell::{Closed, WaitTimeoutError};
use crate::watch_cell::{IndexWait, WakeList, WatchIndex};

/// Creates a status channel: one [`SyncPublisher`] that publishes the outcome
/// exactly once, and a first [`SyncReceiver`] (clone it, or call
/// [`subscribe`](SyncPublisher::subscribe), for more).
///
/// # Examples
///
/// ```
/// use leasehold::status::{self, SyncOutcome, SyncStatus};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (publisher, receiver) = status::channel();
/// let waiters: Vec<_> = (0..3)
///     .map(|_| tokio::spawn({
///         let receiver = receiver.clone();
///         async move { receiver.done().await }
///     }))
///     .collect();
/// publisher.publish(SyncOutcome::Skipped);
/// for waiter in waiters {
///     assert_eq!(waiter.await.unwrap(), SyncOutcome::Skipped);
/// }
/// // Sticky: still readable, by old and new receivers alike.
/// assert_eq!(receiver.subscribe().status(), SyncStatus::Done(SyncOutcome::Skipped));
/// # }
/// ```
pub fn channel<O: Outcome>() -> (SyncPublisher<O>, SyncReceiver<O>) {
    // Waiters wait on an index over "is done": publication completes them
    // all at once (one key evaluation, the index's one list taken whole),
    // with no per-waiter predicate call and no outcome clone under the
    // lock. The outcome itself is stored in the slot before that
    // modification, and each receiver reads it from there, lock-free.
    let done = WatchCell::new(false).index(|done: &bool| *done);
    let channel = Arc::new(Channel {
        outcome: OutcomeSlot::new(),
        done,
    });
    let receiver = SyncReceiver {
        channel: Arc::clone(&channel),
    };
    (
        SyncPublisher {
            channel: Some(channel),
        },
        receiver,
    )
}

/// What the publisher and every receiver of one channel share.
///
/// **Invariant**: `outcome` is stored before the cell's value becomes `true`
/// (the only modification of the cell, made by the publisher after storing
/// it), so a wait completed by that modification, or a receiver that sees
/// the value `true`, finds the outcome stored.
struct Channel<O> {
    /// The published outcome, read without a lock.
    outcome: OutcomeSlot<O>,
    /// "Is done" over a cell that holds whether `outcome` is published.
    done: WatchIndex<bool, bool>,
}

/// The publishing half of a status channel: publishes the outcome of one
/// sync, exactly once.
///
/// [`publish`](Self::publish) consumes it, so a second publication does not
/// compile. Dropping it without publishing publishes
/// [`Outcome::abandoned`] ([`SyncOutcome::Cancelled`] by default): a job that
/// is dropped, aborted or shut down never leaves its receivers hanging. If
/// it is dropped by a panic unwinding its thread, it publishes
/// [`Outcome::panicked`] ([`SyncOutcome::Failed`]) instead.
pub struct SyncPublisher<O: Outcome = SyncOutcome> {
    /// `None` once published.
    channel: Option<Arc<Channel<O>>>,
}

impl<O: Outcome> SyncPublisher<O> {
    /// Publishes `outcome`: every current waiter is woken with it, and every
    /// receiver, now or later, reads it.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::status::{self, SyncOutcome};
    ///
    /// let (publisher, receiver) = status::channel();
    /// publisher.publish(SyncOutcome::Success);
    /// assert_eq!(receiver.blocking_done(), SyncOutcome::Success);
    /// ```
    pub fn publish(mut self, outcome: O) {
        drop(self.publish_once(outcome));
    }

    /// A new receiver of this channel.
    ///
    /// ```
    /// let (publisher, _) = leasehold::status::channel::<leasehold::status::SyncOutcome>();
    /// let receiver = publisher.subscribe();
    /// assert!(receiver.status().is_pending());
    /// ```
    pub fn subscribe(&self) -> SyncReceiver<O> {
        SyncReceiver {
            channel: Arc::clone(self.channel()),
        }
    }

    /// Whether `receiver` listens to this publisher.
    pub fn same_channel(&self, receiver: &SyncReceiver<O>) -> bool {
        Arc::ptr_eq(self.channel(), &receiver.channel)
    }

    fn channel(&self) -> &Arc<Channel<O>> {
        self.channel
            .as_ref()
            .expect("`channel` is `Some` until the publisher is consumed or dropped")
    }

    /// Publishes like [`publish`](Self::publish), but returns the wake-ups
    /// instead of delivering them (they are delivered when dropped), so the
    /// registry can publish under its map lock and wake after releasing it.
    pub(crate) fn publish_deferred(mut self, outcome: O) -> WakeList {
        self.publish_once(outcome)
    }

    fn publish_once(&mut self, outcome: O) -> WakeList {
        match self.channel.take() {
            // The only writes, once, here: the outcome, then the cell
            // (`Channel`'s invariant).
            Some(channel) => {
                let stored = channel.outcome.set(outcome);
                debug_assert!(stored.is_ok(), "only the publisher stores the outcome");
                let ((), wakes) = channel.done.cell().modify_deferred(|done| {
                    *done = true;
                    (true, ())
                });
                wakes
            }
            None => WakeList::default(),
        }
    }
}

impl<O: Outcome> Drop for SyncPublisher<O> {
    fn drop(&mut self) {
        if self.channel.is_some() {
            drop(self.publish_once(unpublished()));
        }
    }
}

/// What a publisher dropped unpublished publishes: [`Outcome::panicked`] if
/// a panic is unwinding this thread (the code that held it panicked; the
/// payload is not reachable from here), else [`Outcome::abandoned`].
pub(super) fn unpublished<O: Outcome>() -> O {
    if std::thread::panicking() {
        O::panicked("the job panicked before publishing its outcome".to_owned())
    } else {
        O::abandoned()
    }
}

impl<O: Outcome + fmt::Debug> fmt::Debug for SyncPublisher<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SyncPublisher");
        if let Some(channel) = &self.channel {
            d.field("status", &channel.outcome);
        }
        d.finish_non_exhaustive()
    }
}

/// The receiving half of a status channel: reads or waits for the outcome.
///
/// Cheap to clone; every clone sees the same outcome. A receiver never
/// hangs for good: either the outcome is published, or the publisher is
/// dropped and [`Outcome::abandoned`] is published for it.
///
/// | you want… | async | blocking thread |
/// |---|---|---|
/// | the status now | [`status`](Self::status) | same |
/// | to wait for the outcome | [`done`](Self::done) | [`blocking_done`](Self::blocking_done), [`_deadline`](Self::blocking_done_deadline), [`_timeout`](Self::blocking_done_timeout) |
///
/// For an async wait with a time limit, wrap [`done`](Self::done) in
/// `tokio::time::timeout`; it is cancel safe.
///
/// Receivers read the published outcome without locking, by reference,
/// each cloning it for itself: a receiver is `Send` and `Sync` when the
/// outcome type is both (an outcome that is `Send` but not `Sync`, say one
/// holding a `Cell`, keeps its receivers on one thread).
pub struct SyncReceiver<O = SyncOutcome> {
    channel: Arc<Channel<O>>,
}

impl<O> SyncReceiver<O> {
    fn cell(&self) -> &WatchCell<bool> {
        self.channel.done.cell()
    }

    /// The outcome, once a wait saw it published (`Channel`'s invariant).
    fn published(&self) -> O
    where
        O: Clone,
    {
        self.channel
            .outcome
            .get(O::clone)
            .expect("the outcome is stored before waits complete")
    }

    /// The status now.
    ///
    /// ```
    /// use leasehold::status::{self, SyncOutcome, SyncStatus};
    ///
    /// let (publisher, receiver) = status::channel();
    /// assert_eq!(receiver.status(), SyncStatus::Pending);
    /// publisher.publish(SyncOutcome::Success);
    /// assert_eq!(receiver.status(), SyncStatus::Done(SyncOutcome::Success));
    /// ```
    pub fn status(&self) -> SyncStatus<O>
    where
        O: Clone,
    {
        self.channel.outcome.status()
    }

    /// Whether the outcome was published.
    pub fn is_done(&self) -> bool {
        self.channel.outcome.is_set()
    }

    /// A new receiver of the same channel (the same as `clone`).
    pub fn subscribe(&self) -> Self {
        self.clone()
    }

    /// Whether `self` and `other` listen to the same publisher.
    pub fn same_channel(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.channel, &other.channel)
    }

    /// How many waits on this channel are parked right now (async and
    /// blocking), for observability and tests.
    pub fn waiting(&self) -> usize {
        self.cell().stats().waiters
    }

    /// Waits for the outcome and returns it. Resolves at once if it is
    /// already published.
    ///
    /// The task is woken once, when the outcome is published (or the
    /// publisher dropped).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future unregisters it, and a later call
    /// returns the same outcome.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::status::{self, SyncOutcome};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let (publisher, receiver) = status::channel::<SyncOutcome>();
    /// let waiter = tokio::spawn(async move { receiver.done().await });
    /// drop(publisher); // never published: the waiter still finishes
    /// assert_eq!(waiter.await.unwrap(), SyncOutcome::Cancelled);
    /// # }
    /// ```
    pub fn done(&self) -> impl Future<Output = O> + '_
    where
        O: Clone + Send + 'static,
    {
        Done {
            wait: self.channel.done.wait(true),
            receiver: self,
        }
    }

    /// Blocks the current thread until the outcome is published, and
    /// returns it. Do not call it from an async task.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::status::{self, SyncOutcome};
    ///
    /// let (publisher, receiver) = status::channel();
    /// std::thread::scope(|s| {
    ///     s.spawn(move || publisher.publish(SyncOutcome::Success));
    ///     assert_eq!(receiver.blocking_done(), SyncOutcome::Success);
    /// });
    /// ```
    pub fn blocking_done(&self) -> O
    where
        O: Clone + Send,
    {
        self.channel
            .done
            .blocking_wait_at_least(true)
            .unwrap_or_else(never_closed);
        self.published()
    }

    /// Like [`blocking_done`](Self::blocking_done), giving up at `deadline`.
    ///
    /// # Errors
    ///
    /// [`TimedOut`] if the deadline passes with the sync still pending. An
    /// outcome published while the wait is timing out wins.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::status::{self, SyncOutcome, TimedOut};
    /// use std::time::Instant;
    ///
    /// let (_publisher, receiver) = status::channel::<SyncOutcome>();
    /// assert_eq!(receiver.blocking_done_deadline(Instant::now()), Err(TimedOut));
    /// ```
    pub fn blocking_done_deadline(&self, deadline: Instant) -> Result<O, TimedOut>
    where
        O: Clone + Send,
    {
        self.channel
            .done
            .blocking_wait_at_least_deadline(true, deadline)
            .map_err(timed_out)?;
        Ok(self.published())
    }

    /// Like [`blocking_done`](Self::blocking_done), giving up after
    /// `timeout` (a deadline computed once, at the call).
    ///
    /// # Errors
    ///
    /// [`TimedOut`], as [`blocking_done_deadline`](Self::blocking_done_deadline).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::status::{self, SyncOutcome};
    /// use std::time::Duration;
    ///
    /// let (publisher, receiver) = status::channel();
    /// publisher.publish(SyncOutcome::Skipped);
    /// // Published already: returns at once.
    /// assert_eq!(receiver.blocking_done_timeout(Duration::from_secs(60)), Ok(SyncOutcome::Skipped));
    /// ```
    pub fn blocking_done_timeout(&self, timeout: Duration) -> Result<O, TimedOut>
    where
        O: Clone + Send,
    {
        self.channel
            .done
            .blocking_wait_at_least_timeout(true, timeout)
            .map_err(timed_out)?;
        Ok(self.published())
    }
}

/// The future of [`SyncReceiver::done`]: the index wait, then a read of the
/// slot. Written out rather than an `async fn` or a combinator so the task
/// that holds it stays small (72 bytes: the wait and one reference) and
/// its poll inlines into the task's.
struct Done<'a, O> {
    wait: IndexWait<'a, bool, bool>,
    receiver: &'a SyncReceiver<O>,
}

impl<O: Clone> Future for Done<'_, O> {
    type Output = O;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O> {
        // SAFETY: `wait` is pinned structurally: it is never moved out of
        // `self`, `Done` has no `Drop` and is `!Unpin` through it; the
        // reference is `Unpin` and only copied.
        let (wait, receiver) = unsafe {
            let this = self.get_unchecked_mut();
            (Pin::new_unchecked(&mut this.wait), this.receiver)
        };
        ready!(wait.poll(cx)).unwrap_or_else(never_closed);
        Poll::Ready(receiver.published())
    }
}

/// Status cells are private to their channel and never closed.
fn never_closed<T>(_: Closed) -> T {
    unreachable!("status cells are never closed")
}

fn timed_out(error: WaitTimeoutError) -> TimedOut {
    match error {
        WaitTimeoutError::TimedOut => TimedOut,
        WaitTimeoutError::Closed => never_closed(Closed),
    }
}

impl<O> Clone for SyncReceiver<O> {
    fn clone(&self) -> Self {
        Self {
            channel: Arc::clone(&self.channel),
        }
    }
}

impl<O: fmt::Debug> fmt::Debug for SyncReceiver<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncReceiver")
            .field("status", &self.channel.outcome)
            .finish()
    }
}
