//! Threshold-indexed waits: [`WatchIndex`], a key extracted from a cell's
//! value, and waits for "the key has reached `k`" that a modification settles
//! in O(log N + woken), whatever the number N of waiters.
//!
//! # How it works
//!
//! Each index keeps its waiters in a `BTreeMap` from threshold to a FIFO
//! list of the waiters of that threshold, linked through the nodes
//! themselves (`queue.rs`). A notifying modification evaluates the index's
//! key function once, on the new value, and completes every list whose
//! threshold the key has reached, lowest first: a look at the first entry
//! when nobody is satisfied, a walk down each reached list otherwise. Registration and cancellation find the threshold's list in
//! O(log T), for T distinct thresholds, and link or unlink the node in
//! O(1). The nodes are pinned in their owner's frame, exactly like the
//! predicate waiters of `waiter.rs`, and obey the same invariants (numbered
//! as there):
//!
//! 1. A node is in its threshold's list (and that list in the map) iff its
//!    `state` is `WAITING`; both change only under the cell's lock. Its
//!    links (`prev`, `next`), and the lists' head and tail, are read and
//!    written only under the lock.
//! 2. A list holds a node only while the node is registered: the owner
//!    unlinks it (under the lock) before the node is dropped, unless a
//!    modifier or `close` completed it first. A list is never empty: the
//!    owner that unlinks the last node removes the list from the map.
//! 3. A modifier completes a list from its head, keeping it well formed:
//!    for each node it reads its `next` link, writes its output, takes its
//!    unparker, makes `next` the head, and only then stores the new state
//!    with `Release`: its last access. An owner that loads a non-`WAITING`
//!    state with `Acquire` reads the output and frees the node without
//!    locking; nothing leads to the node any more. The emptied list leaves
//!    the map. A panic in `K`'s `Clone` (the output) or `Ord` stops the walk
//!    between two nodes, with the rest still registered.
//! 4. Registration evaluates the key and links the node in one critical
//!    section; every notifying modification evaluates the key of every index
//!    that has waiters in its own: no wake-up is lost, and every registered
//!    threshold is above the key of the current value.
//! 5. No waker is cloned, woken or dropped under the lock.
//!
//! A leaked future leaves its node linked for good: the node's memory
//! stays valid (it is pinned and never freed), and it is reached only
//! through its list, under the lock: by an owner unlinking a neighbour
//! (which rewrites the leaked node's links and nothing else), by a
//! registration appending after it (the same), or by a modifier that
//! completes its list or by `close` (writing its output and taking its
//! waker). Nothing it holds borrows: the threshold and the output are owned
//! `K: 'static`, and the key function belongs to the index, not to the
//! node. When the index itself is dropped, its map is dropped with the
//! lists in it: they hold only pointers, so no node is touched.

mod queue;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use super::waiter::{IDLE, Unparker, WAITING, WakeList};
use super::{Closed, State, WaitTimeoutError, WatchCell, deadline_after};
use crate::sync;
use queue::{Core, ErasedCore, IndexWaiter, core_of};

/// A key extracted from a [`WatchCell`]'s value, with waits for "the key has
/// reached `k`" that cost O(log N) per modification, however many wait.
///
/// Create one with [`WatchCell::index`]; clone it freely (clones share the
/// index). Each notifying modification of the cell evaluates the key once,
/// on the new value, and wakes exactly the waits whose threshold it has
/// reached.
///
/// # When to pick it over `wait_for`
///
/// [`WatchCell::wait_for`] tests every registered predicate on every
/// notifying modification: with N waiters, a modification costs N predicate
/// calls, under the cell's lock, and every read and modify queues behind
/// them. That is fine for tens of waiters. When many tasks wait for a
/// threshold on the same number — durable sequence number ≥ mine (one wait
/// per in-flight write), upper frontier past `t` (one per reader), applied
/// index ≥ `i` (one per request) — use an index: a modification that
/// satisfies nobody costs one key evaluation and one `BTreeMap` lookup, and
/// one that satisfies `k` waiters costs O(log N + k).
///
/// | | `wait_for(move \|s\| s.seqno >= k)` | `index.wait_at_least(k)` |
/// |---|---|---|
/// | modification, nobody satisfied | N predicate calls | 1 key call + O(log N) |
/// | modification, k satisfied | N predicate calls | 1 key call + O(log N + k) |
/// | registration, cancellation | O(1) | O(log N), O(1) among equal thresholds |
/// | condition | anything | `key(value) >= k` |
///
/// # Keys that go down
///
/// The key need not be monotone. A wait completes when a notifying
/// modification (or the wait's own first check) finds `key(value) >= k`; a
/// key that later goes down does not undo that, and a key that goes down
/// while a wait is registered simply leaves it waiting. As for predicates,
/// a state that exists only inside one modification (set and reset by the
/// same closure) is never seen. The key is evaluated on the value a
/// modification leaves, and again after the takes it triggers
/// ([`WatchCell::wait_take`]), on what they left; when one modification
/// satisfies several takes, the states between two of them are not
/// evaluated separately. Frontiers, sequence numbers and applied
/// indexes only grow, so for them "has reached `k`" is the whole story.
///
/// # What runs under the lock
///
/// The key function, and `K`'s `Ord`, `Clone` and `Drop`, run under the
/// cell's lock (on a waiter's or a modifier's thread), like predicates: keep
/// them cheap, and do not touch the cell from them. If the key function
/// panics on a modifier's thread, the other waiters of that modification are
/// still notified, the index's waiters keep waiting, and the panic resumes in
/// the modifier once the lock is released; if it panics while a wait checks
/// it, the panic resumes in that wait. `K`'s `Ord` must not panic while a
/// wait is cancelled: the wait could not be unlinked, so the process aborts.
///
/// # Examples
///
/// ```
/// use leasehold::WatchCell;
///
/// #[derive(Default)]
/// struct Log { durable_seqno: u64, written_seqno: u64 }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let log = WatchCell::new(Log::default());
/// let durable = log.index(|log: &Log| log.durable_seqno);
/// let writers: Vec<_> = (1..=1000_u64)
///     .map(|seqno| {
///         let durable = durable.clone();
///         tokio::spawn(async move { durable.wait_at_least(seqno).await })
///     })
///     .collect();
/// while durable.waiting() < 1000 {
///     tokio::task::yield_now().await;
/// }
/// // Each fsync wakes exactly the writes it made durable.
/// log.modify(|log| log.durable_seqno = 10);
/// assert_eq!(log.stats().wakeups, 10);
/// log.modify(|log| log.durable_seqno = 1000);
/// for writer in writers {
///     assert!(writer.await.unwrap().unwrap() >= 10);
/// }
/// # }
/// ```
pub struct WatchIndex<T, K> {
    owner: sync::Arc<Owner<T>>,
    _key: PhantomData<fn() -> K>,
}

/// Keeps an index registered in its cell while any handle exists.
struct Owner<T> {
    cell: WatchCell<T>,
    id: usize,
}

impl<T> Drop for Owner<T> {
    fn drop(&mut self) {
        let mut state = self.cell.shared.state.lock();
        let slot = state.indexes.slots[self.id].take();
        drop(state);
        // The key function is user code: dropped after unlocking. No wait can
        // be registered (a wait borrows a handle); only the nodes of leaked
        // futures may remain, and dropping the map touches none of them.
        drop(slot);
    }
}

impl<T> WatchCell<T> {
    /// Creates an index over `key(&value)`: a handle whose
    /// [`wait_at_least(k)`](WatchIndex::wait_at_least) waits until the key of
    /// the value has reached `k`, at O(log N) per modification for N waiters.
    ///
    /// Create an index once per key (at setup) and clone the handle: each
    /// index costs one key evaluation per notifying modification while it
    /// has waiters. It is dropped with its last handle.
    ///
    /// `key` runs under the cell's lock, like a predicate; it is `'static`
    /// because the cell keeps it and calls it on every later modification.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = leasehold::WatchCell::new((0_u64, "applied index, payload"));
    /// let applied = cell.index(|(applied, _): &(u64, &str)| *applied);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| cell.modify(|(applied, _)| *applied = 7));
    ///     assert!(applied.blocking_wait_at_least(5).unwrap() >= 5);
    /// });
    /// ```
    pub fn index<K, F>(&self, key: F) -> WatchIndex<T, K>
    where
        F: FnMut(&T) -> K + Send + 'static,
        K: Ord + Clone + Send + 'static,
    {
        let mut key = key;
        let slot = Slot {
            core: Box::new(Core::<K>::new()),
            // Stores the key into the core: only this closure knows `T` and
            // `K` together, and it needs no `T: 'static`.
            evaluate: Box::new(move |value: &T, core: &mut dyn Any| {
                let current = key(value);
                core.downcast_mut::<Core<K>>()
                    .expect("an index's core has its key type")
                    .current = Some(current);
            }),
        };
        let mut state = self.shared.state.lock();
        let id = state.indexes.insert(slot);
        drop(state);
        WatchIndex {
            owner: sync::Arc::new(Owner {
                cell: self.clone(),
                id,
            }),
            _key: PhantomData,
        }
    }
}

impl<T, K> WatchIndex<T, K>
where
    K: Ord + Clone + Send + 'static,
{
    /// The cell this index reads.
    pub fn cell(&self) -> &WatchCell<T> {
        &self.owner.cell
    }

    /// The key of the current value.
    ///
    /// # Panics
    ///
    /// If the key function panics.
    ///
    /// ```
    /// let cell = leasehold::WatchCell::new(vec![1, 2, 3]);
    /// let len = cell.index(|v: &Vec<i32>| v.len());
    /// assert_eq!(len.get(), 3);
    /// ```
    pub fn get(&self) -> K {
        let mut state = self.owner.cell.shared.state.lock();
        let state = &mut *state;
        let slot = state.indexes.slot(self.owner.id);
        (slot.evaluate)(&state.value, slot.core.as_any_mut());
        core_of::<K>(slot.core.as_mut())
            .current
            .take()
            .expect("evaluated just now")
    }

    /// How many waits on this index are registered right now.
    pub fn waiting(&self) -> usize {
        let mut state = self.owner.cell.shared.state.lock();
        state.indexes.slot(self.owner.id).core.len()
    }

    /// Waits until the key has reached `k` (`key(value) >= k`), and returns
    /// the key of the value that satisfied the wait (evaluated on that very
    /// value, so it may be past `k`). Resolves at once if the key is there
    /// already.
    ///
    /// The key is evaluated once now; after that, once per notifying
    /// modification, by the modifier, on the new value, under the lock. The
    /// task is woken only when the key has reached `k`.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the cell is or becomes closed with the key below `k`
    /// (a wait on a closed cell whose key has reached `k` succeeds).
    ///
    /// # Panics
    ///
    /// If the key function panics when this wait evaluates it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future unregisters it in O(log N); a
    /// concurrent modification neither wakes it nor loses another waiter's
    /// wake-up, and a later call waits for the same condition.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cell = leasehold::WatchCell::new(0_u64);
    /// let seqno = cell.index(|v: &u64| *v);
    /// let waiter = seqno.wait_at_least(3);
    /// let writer = async { for _ in 0..5 { cell.modify(|v| *v += 1); tokio::task::yield_now().await } };
    /// let (reached, ()) = tokio::join!(waiter, writer);
    /// assert!(reached.unwrap() >= 3);
    /// # }
    /// ```
    pub fn wait_at_least(&self, k: K) -> impl Future<Output = Result<K, Closed>> + '_ {
        self.wait(k)
    }

    /// [`wait_at_least`](Self::wait_at_least), as a future the crate can
    /// name and embed.
    pub(crate) fn wait(&self, k: K) -> IndexWait<'_, T, K> {
        IndexWait {
            index: self,
            node: IndexWaiter::new(k),
            phase: Phase::Init,
        }
    }

    /// Blocks the current thread until the key has reached `k`; returns the
    /// key of the value that satisfied the wait. Same semantics as
    /// [`wait_at_least`](Self::wait_at_least); do not call it from an async
    /// task.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the cell is or becomes closed with the key below `k`.
    ///
    /// # Panics
    ///
    /// If the key function panics when this wait evaluates it.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = leasehold::WatchCell::new(0_u64);
    /// let seqno = cell.index(|v: &u64| *v);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| cell.modify(|v| *v = 9));
    ///     assert_eq!(seqno.blocking_wait_at_least(9), Ok(9));
    /// });
    /// ```
    pub fn blocking_wait_at_least(&self, k: K) -> Result<K, Closed> {
        self.wait_blocking(k, None).map_err(|_| Closed)
    }

    /// Like [`blocking_wait_at_least`](Self::blocking_wait_at_least), giving
    /// up at `deadline`. A modification that satisfies the wait while it is
    /// timing out wins: the wait returns the key.
    ///
    /// # Errors
    ///
    /// [`WaitTimeoutError::Closed`] if the cell is or becomes closed with the
    /// key below `k`; [`WaitTimeoutError::TimedOut`] if the deadline passes
    /// first.
    ///
    /// # Panics
    ///
    /// As [`blocking_wait_at_least`](Self::blocking_wait_at_least).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::watch_cell::WaitTimeoutError;
    /// use std::time::Instant;
    ///
    /// let cell = leasehold::WatchCell::new(4_u64);
    /// let seqno = cell.index(|v: &u64| *v);
    /// assert_eq!(seqno.blocking_wait_at_least_deadline(4, Instant::now()), Ok(4));
    /// assert_eq!(seqno.blocking_wait_at_least_deadline(5, Instant::now()), Err(WaitTimeoutError::TimedOut));
    /// ```
    pub fn blocking_wait_at_least_deadline(
        &self,
        k: K,
        deadline: Instant,
    ) -> Result<K, WaitTimeoutError> {
        self.wait_blocking(k, Some(deadline))
    }

    /// Like [`blocking_wait_at_least`](Self::blocking_wait_at_least), giving
    /// up after `timeout` (a deadline computed once, at the call).
    ///
    /// # Errors
    ///
    /// As [`blocking_wait_at_least_deadline`](Self::blocking_wait_at_least_deadline).
    ///
    /// # Panics
    ///
    /// As [`blocking_wait_at_least`](Self::blocking_wait_at_least).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let cell = leasehold::WatchCell::new(0_u64);
    /// let seqno = cell.index(|v: &u64| *v);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| cell.modify(|v| *v = 1));
    ///     assert_eq!(seqno.blocking_wait_at_least_timeout(1, Duration::from_secs(60)), Ok(1));
    /// });
    /// ```
    pub fn blocking_wait_at_least_timeout(
        &self,
        k: K,
        timeout: Duration,
    ) -> Result<K, WaitTimeoutError> {
        self.wait_blocking(k, deadline_after(timeout))
    }

    /// The owner-side check, under the lock: the wait's result if it is
    /// over, else registers `node` with `unparker` (handed back otherwise, to
    /// be dropped after unlocking).
    ///
    /// # Safety
    ///
    /// `node` is pinned and `IDLE`, and its owner will call
    /// [`unregister`](Self::unregister) before the node is dropped (or leak
    /// it, and with it the node's memory).
    unsafe fn check_or_register(
        &self,
        state: &mut State<T>,
        node: &IndexWaiter<K>,
        unparker: Unparker,
    ) -> (Check<K>, Option<Unparker>) {
        state.predicate_evals += 1;
        let closed = state.closed;
        let slot = state.indexes.slot(self.owner.id);
        let value = &state.value;
        let evaluated = catch_unwind(AssertUnwindSafe(|| {
            (slot.evaluate)(value, slot.core.as_any_mut());
        }));
        if let Err(payload) = evaluated {
            return (Check::Panicked(payload), Some(unparker));
        }
        let core = core_of::<K>(slot.core.as_mut());
        let key = core.current.take().expect("evaluated just now");
        if key >= *node.threshold() {
            return (Check::Done(Ok(key)), Some(unparker));
        }
        drop(key);
        if closed {
            return (Check::Done(Err(Closed)), Some(unparker));
        }
        // SAFETY: forwarded from this function's contract; we hold the lock.
        unsafe { core.insert(node, unparker) };
        (Check::Wait, None)
    }

    /// Removes `node` if no modifier or `close` completed it first. After
    /// this returns, nothing but its owner will touch the node again.
    fn unregister(&self, node: &IndexWaiter<K>) {
        // A completed node is out of the map for good (invariant 3).
        if node.state() != WAITING {
            return;
        }
        let mut state = self.owner.cell.shared.state.lock();
        if node.state() == WAITING {
            let core = core_of::<K>(state.indexes.slot(self.owner.id).core.as_mut());
            // SAFETY: we hold the lock, and a `WAITING` node is registered in
            // this index (its owner registered it through this handle).
            let unparker = unsafe { core.remove(node) };
            drop(state);
            drop(unparker);
        }
    }

    /// On a re-poll of a node the caller saw `WAITING` (without locking):
    /// whether it is still registered, with (a clone of) `waker` as its
    /// unparker; clones and drops happen outside the lock.
    fn still_waiting(&self, node: &IndexWaiter<K>, waker: &Waker) -> bool {
        {
            let _state = self.owner.cell.shared.state.lock();
            if node.state() != WAITING {
                return false;
            }
            // SAFETY: we hold the lock and the node is `WAITING`.
            if unsafe { node.will_wake(waker) } {
                return true;
            }
        }
        let waker = Unparker::Task(waker.clone());
        let state = self.owner.cell.shared.state.lock();
        if node.state() != WAITING {
            drop(state);
            drop(waker);
            return false;
        }
        // SAFETY: we hold the lock and the node is `WAITING`.
        let replaced = unsafe { node.replace_unparker(waker) };
        drop(state);
        drop(replaced);
        true
    }

    fn wait_blocking(&self, k: K, deadline: Option<Instant>) -> Result<K, WaitTimeoutError> {
        let node = pin!(IndexWaiter::new(k));
        let node: &IndexWaiter<K> = &node;
        let thread = Unparker::Thread(sync::current());
        let mut state = self.owner.cell.shared.state.lock();
        // SAFETY: `node` is pinned in this frame, `IDLE`, and `_registration`
        // below unregisters it on every exit path, unwinding included (a
        // frame cannot be leaked).
        let (check, unparker) = unsafe { self.check_or_register(&mut state, node, thread) };
        let _registration = Registration { index: self, node };
        drop(state);
        drop(unparker);
        match check {
            Check::Done(result) => return result.map_err(WaitTimeoutError::from),
            Check::Panicked(payload) => resume_unwind(payload),
            Check::Wait => {}
        }
        loop {
            if node.state() != WAITING {
                return node.completion().map_err(WaitTimeoutError::from);
            }
            match deadline {
                None => sync::park(),
                Some(deadline) => {
                    let now = sync::now();
                    if now >= deadline {
                        self.unregister(node);
                        // `IDLE`: we removed it; otherwise a modifier
                        // completed it first, and its outcome wins.
                        if node.state() == IDLE {
                            return Err(WaitTimeoutError::TimedOut);
                        }
                        continue;
                    }
                    sync::park_timeout(deadline - now);
                }
            }
        }
    }
}

/// Unregisters a blocking wait's node on every exit.
struct Registration<'a, T, K: Ord + Clone + Send + 'static> {
    index: &'a WatchIndex<T, K>,
    node: &'a IndexWaiter<K>,
}

impl<T, K: Ord + Clone + Send + 'static> Drop for Registration<'_, T, K> {
    fn drop(&mut self) {
        self.index.unregister(self.node);
    }
}

impl<T, K> Clone for WatchIndex<T, K> {
    fn clone(&self) -> Self {
        Self {
            owner: sync::Arc::clone(&self.owner),
            _key: PhantomData,
        }
    }
}

impl<T, K> fmt::Debug for WatchIndex<T, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("WatchIndex");
        d.field("id", &self.owner.id);
        // `try_lock`: formatting from inside a closure on the cell must not deadlock.
        if let Some(mut state) = self.owner.cell.shared.state.try_lock() {
            d.field("waiting", &state.indexes.slot(self.owner.id).core.len());
        }
        d.finish_non_exhaustive()
    }
}

/// The result of the owner-side check.
enum Check<K> {
    Done(Result<K, Closed>),
    Wait,
    Panicked(Box<dyn Any + Send>),
}

// ------------------------------------------------------------ the future ---

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Init,
    Registered,
    Done,
}

/// The future of [`WatchIndex::wait_at_least`].
pub(crate) struct IndexWait<'a, T, K: Ord + Clone + Send + 'static> {
    index: &'a WatchIndex<T, K>,
    node: IndexWaiter<K>,
    phase: Phase,
}

// SAFETY: a shared `&IndexWait` gives access to nothing (every field is
// private; `poll` and `drop` need `Pin<&mut Self>` / `&mut self`), so sharing
// references between threads cannot race on the node.
unsafe impl<T, K: Ord + Clone + Send + 'static> Sync for IndexWait<'_, T, K> {}

impl<T, K: Ord + Clone + Send + 'static> Future for IndexWait<'_, T, K> {
    type Output = Result<K, Closed>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // An always-ready wait in a loop must still let the scheduler run
        // other tasks: a first poll spends tokio's task budget, yielding
        // when it is spent. A registered wait has returned `Pending` once
        // already, so its later polls need not (that saves a thread-local
        // round trip on every wake-up).
        let budget = match self.phase {
            Phase::Init => Some(ready!(sync::poll_proceed(cx))),
            Phase::Registered | Phase::Done => None,
        };
        // SAFETY: `node` is never moved out of the pinned future.
        let this = unsafe { self.get_unchecked_mut() };
        let result = match this.phase {
            Phase::Init => {
                // Cloned before locking: waker code never runs under the lock.
                let waker = Unparker::Task(cx.waker().clone());
                let mut state = this.index.owner.cell.shared.state.lock();
                // SAFETY: the node is pinned inside this future, whose `Drop`
                // unregisters it. If the future is leaked instead, pinning
                // keeps the node's memory alive for good; it holds only owned
                // data (`K: 'static`), and only a completing modifier or
                // `close` will ever touch it again, through the map.
                let (check, unparker) =
                    unsafe { this.index.check_or_register(&mut state, &this.node, waker) };
                drop(state);
                drop(unparker);
                match check {
                    Check::Done(result) => result,
                    Check::Wait => {
                        this.phase = Phase::Registered;
                        return Poll::Pending;
                    }
                    Check::Panicked(payload) => {
                        this.phase = Phase::Done;
                        resume_unwind(payload)
                    }
                }
            }
            Phase::Registered => {
                // The common case, a completed node, without a call.
                if this.node.state() == WAITING && this.index.still_waiting(&this.node, cx.waker())
                {
                    return Poll::Pending;
                }
                this.node.completion()
            }
            Phase::Done => panic!("`WatchIndex` wait future polled after completion"),
        };
        this.phase = Phase::Done;
        if let Some(budget) = budget {
            budget.made_progress();
        }
        Poll::Ready(result)
    }
}

impl<T, K: Ord + Clone + Send + 'static> Drop for IndexWait<'_, T, K> {
    fn drop(&mut self) {
        if self.phase == Phase::Registered {
            self.index.unregister(&self.node);
        }
    }
}

/// One index of a cell: its waiters, and the key function that evaluates
/// the key into them.
pub(super) struct Slot<T> {
    pub(super) core: Box<dyn ErasedCore>,
    /// `key(value)`, stored into `core.current`.
    #[allow(clippy::type_complexity)]
    evaluate: Box<dyn FnMut(&T, &mut dyn Any) + Send>,
}

/// The indexes of one cell, by id. Accessed only under the cell's lock.
pub(super) struct Indexes<T> {
    slots: Vec<Option<Slot<T>>>,
}

impl<T> Indexes<T> {
    pub(super) const fn new() -> Self {
        Self { slots: Vec::new() }
    }

    fn insert(&mut self, slot: Slot<T>) -> usize {
        match self.slots.iter().position(Option::is_none) {
            Some(id) => {
                self.slots[id] = Some(slot);
                id
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    fn slot(&mut self, id: usize) -> &mut Slot<T> {
        self.slots[id]
            .as_mut()
            .expect("an index lives while a handle does")
    }

    /// Registered waits over all indexes.
    pub(super) fn len(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|slot| slot.core.len())
            .sum()
    }

    /// After a notifying modification: evaluates the key of every index that
    /// has waiters, once, and completes the waiters it satisfies. Returns the
    /// number of key evaluations. A key function that panics leaves its
    /// index's waiters waiting; the first such panic is deferred to `wakes`,
    /// to resume after the wake-ups.
    pub(super) fn notify(&mut self, value: &T, wakes: &mut WakeList) -> u64 {
        let mut evaluations = 0;
        for slot in self.slots.iter_mut().flatten() {
            if slot.core.len() == 0 {
                continue;
            }
            evaluations += 1;
            let evaluate = &mut slot.evaluate;
            let core = &mut slot.core;
            match catch_unwind(AssertUnwindSafe(|| evaluate(value, core.as_any_mut()))) {
                Ok(()) => core.complete_reached(wakes),
                Err(payload) => wakes.defer_panic(payload),
            }
        }
        evaluations
    }

    /// Completes every index waiter with `Closed`.
    pub(super) fn close_all(&mut self, wakes: &mut WakeList) {
        for slot in self.slots.iter_mut().flatten() {
            slot.core.close_all(wakes);
        }
    }
}
