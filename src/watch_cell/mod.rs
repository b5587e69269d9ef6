//! [`WatchCell`]: shared state with closure-scoped access and predicate waits
//! that wake only the waiters whose predicate holds.
//!
//! # Choosing a wait
//!
//! | you want to wait until… | async | blocking thread |
//! |---|---|---|
//! | a condition on the value holds | [`wait_for`] | [`blocking_wait_for`], [`_deadline`], [`_timeout`] |
//! | a condition holds, and copy something out of the value | [`wait_for_map`] | [`blocking_wait_for_map`], [`_map_deadline`], [`_map_timeout`] |
//! | there is something to take, and take it (a work queue: one item, one taker) | [`wait_take`] | [`blocking_wait_take`], [`_take_deadline`], [`_take_timeout`] |
//! | anything changed since a version you saw | [`changed`] | [`blocking_changed`], [`_changed_deadline`], [`_changed_timeout`] |
//! | a number in the value has reached a threshold, with many waiters (durable seqno ≥ mine, applied index ≥ i) | [`WatchIndex::wait_at_least`] | [`blocking_wait_at_least`], [`_at_least_deadline`], [`_at_least_timeout`] |
//!
//! A predicate wait costs every notifying modification one call of its
//! predicate, under the lock: N waiters make a modification O(N). When many
//! waits compare the same key with different thresholds, create a
//! [`WatchIndex`] over that key with [`index`]: a modification then costs one
//! key evaluation and O(log N + woken), however many wait.
//!
//! Prefer a predicate wait over [`changed`]: the modifier tests your
//! predicate for you under the lock, so you are woken exactly once, when it
//! holds. `changed` wakes on every notifying modification, like
//! `tokio::sync::watch`; pair it with [`read_and_mark`] (tokio's
//! `borrow_and_update`) to read the value and mark what you read as seen in
//! one step.
//!
//! `wait_for_map` copies out of a state that any number of waiters may see;
//! `wait_take` *changes* the state for the waiter it satisfies (pops the
//! job), so the next waiter in line is tested on what is left. Takers are
//! served in the order they registered.
//!
//! # Differences from the peers
//!
//! - **`tokio::sync::watch` and `RwLock` + `Notify`** wake every waiter on every
//!   change; each re-checks and most go back to sleep. Here the *modifier*
//!   evaluates each waiting predicate on the new state, under the lock, and
//!   wakes only those that hold: a waiter is never woken to find its predicate
//!   false, and no wake-up can be lost between a waiter's check and its sleep.
//! - **Every state counts, not just the latest.** Because the modifier tests
//!   predicates on each state it makes, a state that held only briefly
//!   satisfies [`wait_for`] (and [`wait_for_map`] yields what that state held),
//!   even if it was overwritten before the waiter ran. tokio's `watch` only
//!   ever shows a receiver the latest value, so it misses such a state.
//! - **`Condvar` + `notify_one`** hands a work item to one waiter, which then
//!   re-locks and re-checks (and may lose the item to a thread that was not
//!   waiting). [`wait_take`] applies the waiter's take in the modifier's
//!   critical section: the item is the waiter's before it is even woken.
//!   `Condvar` serves threads only and leaves the re-check loop to the
//!   caller; every wait here exists in an async and a blocking form with the
//!   same semantics, on the same cell.
//! - **Deadlines.** A blocking wait whose predicate is satisfied by a
//!   modification racing its deadline returns the result: success wins over
//!   the timeout, and a taken item is never dropped. `parking_lot`'s
//!   `Condvar::wait_until` reports the timeout in that race and leaves the
//!   re-check to the caller.
//! - **Close.** [`close`] ends every wait whose predicate does not hold on
//!   the final value with [`Closed`]; a wait (current or started later) whose
//!   predicate holds on the value as it is gets its result, so takers drain
//!   a closed queue before seeing `Closed`. This matches tokio's `watch`,
//!   which still shows a receiver the last value after the sender is gone,
//!   and `mpsc`, which delivers buffered messages after close.
//!   Registered waiters were tested on every state up to the close, so
//!   closing wakes exactly those, with `Closed`; the value stays readable and
//!   modifiable.
//! - **No guards.** Access is scoped to a closure ([`read`], [`modify`]), so a
//!   guard can never be held across an `.await`; both work outside any runtime
//!   and from `Drop`.
//! - **No poisoning.** A modification closure that panics unwinds through the
//!   lock, still notifying waiters of whatever it changed. A predicate that
//!   panics while a modifier evaluates it is caught; the panic resumes on the
//!   waiter's own thread.
//! - **Cooperative.** Async waits spend tokio's task budget, like tokio's own
//!   primitives: a loop over a wait that is always ready still yields to the
//!   scheduler.
//!
//! # What runs under the lock
//!
//! Predicates (and take closures) run under the cell's lock, possibly on a
//! modifier's thread: keep them short, and do not touch the same cell from
//! inside one (the lock is not re-entrant, so that would deadlock). The same
//! holds for the closures passed to [`read`], [`modify`] and friends.
//!
//! Nothing else of yours does. Wakers are cloned before the lock is taken,
//! and woken or dropped after it is released, so a waker whose `clone`,
//! `wake` or `drop` touches the cell is fine. If a waker panics, every other
//! waiter of the same modification is still woken, then the first such panic
//! resumes in the modifier (after its change was made and published).
//!
//! [`wait_for`]: WatchCell::wait_for
//! [`wait_for_map`]: WatchCell::wait_for_map
//! [`wait_take`]: WatchCell::wait_take
//! [`changed`]: WatchCell::changed
//! [`read_and_mark`]: WatchCell::read_and_mark
//! [`blocking_wait_for`]: WatchCell::blocking_wait_for
//! [`_deadline`]: WatchCell::blocking_wait_for_deadline
//! [`_timeout`]: WatchCell::blocking_wait_for_timeout
//! [`blocking_wait_for_map`]: WatchCell::blocking_wait_for_map
//! [`_map_deadline`]: WatchCell::blocking_wait_for_map_deadline
//! [`_map_timeout`]: WatchCell::blocking_wait_for_map_timeout
//! [`blocking_wait_take`]: WatchCell::blocking_wait_take
//! [`_take_deadline`]: WatchCell::blocking_wait_take_deadline
//! [`_take_timeout`]: WatchCell::blocking_wait_take_timeout
//! [`blocking_changed`]: WatchCell::blocking_changed
//! [`_changed_deadline`]: WatchCell::blocking_changed_deadline
//! [`_changed_timeout`]: WatchCell::blocking_changed_timeout
//! [`read`]: WatchCell::read
//! [`modify`]: WatchCell::modify
//! [`close`]: WatchCell::close
//! [`index`]: WatchCell::index
//! [`blocking_wait_at_least`]: WatchIndex::blocking_wait_at_least
//! [`_at_least_deadline`]: WatchIndex::blocking_wait_at_least_deadline
//! [`_at_least_timeout`]: WatchIndex::blocking_wait_at_least_timeout

mod error;
mod index;
mod wait;
mod waiter;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, Instant};

pub use error::{Closed, WaitTimeoutError};
pub(crate) use index::IndexWait;
pub use index::WatchIndex;

use crate::sync::{Arc, Mutex};
use index::Indexes;
use wait::Wait;
pub(crate) use waiter::WakeList;
use waiter::{Changed, Map, Predicate, Take, Until, Waiter, WaiterList};

/// The number of notifying modifications a cell has seen.
///
/// Starts at zero; every [`WatchCell::modify`], every
/// [`WatchCell::modify_if`] that reports a change, and every successful take
/// ([`WatchCell::wait_take`]) increments it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version(u64);

impl Version {
    /// The version of a freshly created cell.
    pub const INITIAL: Version = Version(0);

    /// The raw counter.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Counters describing how a cell has been used, from [`WatchCell::stats`].
///
/// `wakeups / satisfied waits` is the figure to watch: it is 1.0 for a
/// `WatchCell`, and grows with the modification rate for `watch` or `Notify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WatchStats {
    /// Notifying modifications, takes included (equals the current
    /// [`Version`]).
    pub notifications: u64,
    /// Waiters woken: because their predicate held, because it panicked on a
    /// modifier's thread, or because the cell closed.
    pub wakeups: u64,
    /// Predicate evaluations, by waiters and by modifiers. An index's key
    /// evaluation counts as one, however many waits it settles.
    pub predicate_evals: u64,
    /// Waiters registered right now (predicate and index waits).
    pub waiters: usize,
}

/// Shared state with closure-scoped access and targeted predicate waits,
/// for async tasks and blocking threads alike.
///
/// `WatchCell` is a cheap handle (`Clone` shares the same state, like an
/// `Arc`). Pick it over `tokio::sync::watch`, `RwLock` + `Notify` or a
/// `Condvar` when waiters care about conditions on the state rather than
/// about every change, or when threads and tasks wait on the same state.
/// See the [module documentation](self) for the full comparison.
///
/// # Examples
///
/// ```
/// use leasehold::WatchCell;
///
/// #[derive(Default)]
/// struct Shard { since: u64, request_sync: bool }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cell = WatchCell::new(Shard::default());
/// let task = tokio::spawn({
///     let cell = cell.clone();
///     async move {
///         // Woken once, when a sync is requested: never by since downgrades.
///         cell.wait_for(|s| s.request_sync).await.unwrap();
///         cell.read(|s| s.since)
///     }
/// });
/// tokio::task::yield_now().await;
/// for since in 1..=100 {
///     cell.modify(|s| s.since = since);
/// }
/// cell.modify(|s| s.request_sync = true);
/// assert_eq!(task.await.unwrap(), 100);
/// assert_eq!(cell.stats().wakeups, 1);
/// # }
/// ```
pub struct WatchCell<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    value: T,
    version: Version,
    closed: bool,
    waiters: WaiterList<T>,
    indexes: Indexes<T>,
    wakeups: u64,
    predicate_evals: u64,
}

/// The outcome of the owner-side check made before registering.
enum Attempt<O> {
    /// The wait is over: the predicate holds, or it does not and the cell is
    /// closed.
    Done(Result<O, Closed>),
    /// Register and wait.
    Wait,
    /// The predicate panicked; resume the panic once the lock is released.
    Panicked(Box<dyn Any + Send>),
}

impl<T> State<T> {
    /// The owner-side check made before registering. The predicate is tested
    /// even on a closed cell: a wait whose predicate holds on the final value
    /// gets it. A take that succeeds (or panics) here is a notifying
    /// modification: the returned wake-ups are to be delivered after
    /// unlocking.
    fn try_complete<P: Predicate<T>>(
        &mut self,
        node: &Waiter<P>,
    ) -> (Attempt<P::Output>, WakeList) {
        self.predicate_evals += 1;
        let version = self.version;
        let tested = catch_unwind(AssertUnwindSafe(|| {
            node.test_unregistered(&mut self.value, version)
        }));
        let wakes = match tested {
            Ok(true) | Err(_) if P::TAKES => self.notify(),
            _ => WakeList::default(),
        };
        let attempt = match tested {
            Ok(true) => Attempt::Done(Ok(node.take_output())),
            Ok(false) if self.closed => Attempt::Done(Err(Closed)),
            Ok(false) => Attempt::Wait,
            Err(payload) => Attempt::Panicked(payload),
        };
        (attempt, wakes)
    }

    /// Bumps the version and completes the waiters whose predicate now holds
    /// (each take among them bumps it again), and the index waiters whose
    /// threshold the new value's key has reached: O(log N) per index, not
    /// O(N), when nobody is satisfied.
    fn notify(&mut self) -> WakeList {
        self.version.0 += 1;
        let mut wakes = WakeList::default();
        self.predicate_evals += self.indexes.notify(&self.value, &mut wakes);
        let before = self.version;
        self.predicate_evals += self
            .waiters
            .notify(&mut self.value, &mut self.version, &mut wakes);
        if self.version != before {
            // Takes changed the value: the indexes see what they left.
            self.predicate_evals += self.indexes.notify(&self.value, &mut wakes);
        }
        self.wakeups += wakes.len() as u64;
        wakes
    }

    /// Registered waits: predicate waits and index waits.
    fn waiting(&self) -> usize {
        self.waiters.len() + self.indexes.len()
    }
}

impl<T> WatchCell<T> {
    /// Creates a cell holding `value`, at [`Version::INITIAL`].
    pub fn new(value: T) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    value,
                    version: Version::INITIAL,
                    closed: false,
                    waiters: WaiterList::new(),
                    indexes: Indexes::new(),
                    wakeups: 0,
                    predicate_evals: 0,
                }),
            }),
        }
    }

    /// Runs `f` on the current value and returns its result.
    ///
    /// The lock is held only while `f` runs; `f` must not access this cell.
    ///
    /// ```
    /// let cell = leasehold::WatchCell::new(vec![1, 2, 3]);
    /// assert_eq!(cell.read(|v| v.len()), 3);
    /// ```
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.shared.state.lock().value)
    }

    /// Like [`read`](Self::read), also passing the value's [`Version`], for a
    /// later [`changed`](Self::changed) that cannot miss a modification.
    ///
    /// ```
    /// let cell = leasehold::WatchCell::new(7);
    /// let (value, version) = cell.read_versioned(|v, version| (*v, version));
    /// assert_eq!((value, version.get()), (7, 0));
    /// ```
    pub fn read_versioned<R>(&self, f: impl FnOnce(&T, Version) -> R) -> R {
        let state = self.shared.state.lock();
        f(&state.value, state.version)
    }

    /// Runs `f` on the current value and sets `seen` to that value's
    /// [`Version`], in one step: the counterpart of tokio's
    /// `borrow_and_update`. A later [`changed(seen)`](Self::changed) then
    /// waits for a modification made after this read, never for one already
    /// read.
    ///
    /// The lock is held only while `f` runs; `f` must not access this cell.
    ///
    /// ```
    /// let cell = leasehold::WatchCell::new(0);
    /// let mut seen = cell.version();
    /// cell.modify(|v| *v = 5);
    /// assert_eq!(cell.read_and_mark(&mut seen, |v| *v), 5);
    /// assert_eq!(seen, cell.version());
    /// ```
    pub fn read_and_mark<R>(&self, seen: &mut Version, f: impl FnOnce(&T) -> R) -> R {
        let state = self.shared.state.lock();
        *seen = state.version;
        f(&state.value)
    }

    /// Modifies the value with `f`, then wakes the waiters whose predicate
    /// holds on the new value. Always notifies; see
    /// [`modify_if`](Self::modify_if) to skip notification when nothing
    /// changed.
    ///
    /// Works from any thread, outside any runtime, and from `Drop`.
    ///
    /// # Panics
    ///
    /// If `f` panics, the panic propagates after waiters were notified of
    /// whatever `f` changed before panicking (the cell is not poisoned).
    /// If a waiter's waker panics when woken, the other waiters are still
    /// woken, then that panic propagates; the modification stands. So does
    /// the panic of an index's key function (see [`WatchIndex`]).
    ///
    /// ```
    /// let cell = leasehold::WatchCell::new(0_u64);
    /// let doubled = cell.modify(|v| { *v += 21; *v * 2 });
    /// assert_eq!(doubled, 42);
    /// assert_eq!(cell.version().get(), 1);
    /// ```
    pub fn modify<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.modify_inner(|value| {
            let result = f(value);
            (true, result)
        })
    }

    /// Modifies the value with `f`, which returns whether it changed anything.
    /// Notifies (and bumps the version) only if it did; returns that flag.
    ///
    /// # Panics
    ///
    /// If `f` panics, waiters are notified (it may have changed the value)
    /// and the panic propagates. A panicking waker: as for
    /// [`modify`](Self::modify).
    ///
    /// ```
    /// let cell = leasehold::WatchCell::new(10_u64);
    /// // Downgrade only forward: a stale value changes nothing, wakes nobody.
    /// let advance = |to: u64| cell.modify_if(|v| { let changed = to > *v; if changed { *v = to } changed });
    /// assert!(!advance(5));
    /// assert!(advance(20));
    /// assert_eq!(cell.version().get(), 1);
    /// ```
    pub fn modify_if(&self, f: impl FnOnce(&mut T) -> bool) -> bool {
        self.modify_inner(|value| {
            let changed = f(value);
            (changed, changed)
        })
    }

    /// Replaces the value, notifying waiters; returns the old value.
    ///
    /// # Panics
    ///
    /// If a waiter's waker panics: as for [`modify`](Self::modify).
    ///
    /// ```
    /// let cell = leasehold::WatchCell::new("old");
    /// assert_eq!(cell.replace("new"), "old");
    /// ```
    pub fn replace(&self, value: T) -> T {
        self.modify(|current| std::mem::replace(current, value))
    }

    fn modify_inner<R>(&self, f: impl FnOnce(&mut T) -> (bool, R)) -> R {
        let (result, wakes) = self.modify_deferred(f);
        drop(wakes);
        result
    }

    /// [`modify_if`](Self::modify_if) that hands back the wake-ups instead of
    /// delivering them: they are delivered when the returned list is dropped.
    /// Lets a caller holding another lock (the status registry's map) release
    /// it before waking anyone.
    pub(crate) fn modify_deferred<R>(&self, f: impl FnOnce(&mut T) -> (bool, R)) -> (R, WakeList) {
        let mut state = self.shared.state.lock();
        match catch_unwind(AssertUnwindSafe(|| f(&mut state.value))) {
            Ok((changed, result)) => {
                let wakes = if changed {
                    state.notify()
                } else {
                    WakeList::default()
                };
                (result, wakes)
            }
            Err(payload) => {
                // The value may be half-modified: evaluate the waiters anyway,
                // so none misses a state its predicate accepts.
                let wakes = state.notify();
                drop(state);
                // The modification's own panic wins over a waker's.
                let _ = catch_unwind(AssertUnwindSafe(|| drop(wakes)));
                resume_unwind(payload)
            }
        }
    }

    /// The current [`Version`].
    pub fn version(&self) -> Version {
        self.shared.state.lock().version
    }

    /// Closes the cell: every current wait returns [`Closed`] (its predicate
    /// was tested on every state, the final one included, and did not hold).
    /// A later wait tests its predicate once on the value as it is: if it
    /// holds, the wait returns its result, otherwise [`Closed`] at once. The
    /// value stays readable and modifiable.
    ///
    /// Returns `true` if this call closed the cell, `false` if it was closed
    /// already.
    ///
    /// # Panics
    ///
    /// If a waiter's waker panics: as for [`modify`](Self::modify).
    ///
    /// ```
    /// use leasehold::watch_cell::Closed;
    ///
    /// let queue = leasehold::WatchCell::new(vec![1, 2]);
    /// assert!(queue.close());
    /// assert!(!queue.close());
    /// // Takers drain what is left, then learn that nothing more will come.
    /// assert_eq!(queue.blocking_wait_take(|jobs| jobs.pop()), Ok(2));
    /// assert_eq!(queue.blocking_wait_take(|jobs| jobs.pop()), Ok(1));
    /// assert_eq!(queue.blocking_wait_take(|jobs| jobs.pop()), Err(Closed));
    /// ```
    pub fn close(&self) -> bool {
        let mut state = self.shared.state.lock();
        if state.closed {
            return false;
        }
        state.closed = true;
        let mut wakes = WakeList::default();
        // A closed cell registers no more waiters: the list leaves the cell,
        // and its buffer is freed here, after unlocking, rather than with
        // the cell by whichever waiter drops the last handle. (There, in the
        // middle of the wake-up of a thousand tasks that had just freed
        // their futures, a 16 KiB buffer often cost the allocator some
        // 10 µs: `close` ran 5% slower than a `Notify`'s `notify_waiters`.)
        let mut waiters = std::mem::replace(&mut state.waiters, WaiterList::new());
        waiters.close_all(&mut wakes);
        state.indexes.close_all(&mut wakes);
        state.wakeups += wakes.len() as u64;
        drop(state);
        drop(waiters);
        drop(wakes);
        true
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.state.lock().closed
    }

    /// The cell's usage counters.
    pub fn stats(&self) -> WatchStats {
        let state = self.shared.state.lock();
        WatchStats {
            notifications: state.version.0,
            wakeups: state.wakeups,
            predicate_evals: state.predicate_evals,
            waiters: state.waiting(),
        }
    }

    /// Whether `self` and `other` are handles to the same cell.
    pub fn same_cell(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl<T> WatchCell<T> {
    /// Waits until `predicate` holds on the value.
    ///
    /// The predicate is tested once now; after that, only by modifiers, once
    /// per notifying modification, on the new value and under the lock. The
    /// task is woken only when it holds. It must be `Send`, since a modifier
    /// on another thread may run it, and `'static`: it owns what it captures
    /// (move an `Arc` or a copy in). A future can be leaked with
    /// [`mem::forget`](std::mem::forget) while registered, and the cell keeps
    /// calling a registered predicate, so one that borrowed a local could be
    /// called after the local is gone. The blocking waits have no such bound:
    /// their predicate lives in the waiting frame, which cannot be leaked.
    ///
    /// ```compile_fail
    /// # async fn f(cell: leasehold::WatchCell<u64>) {
    /// let target = 3;
    /// // Rejected: the predicate borrows `target`.
    /// cell.wait_for(|v| *v >= target).await.unwrap();
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Closed`] if the cell is or becomes closed while the predicate does
    /// not hold (a wait on a closed cell whose predicate holds succeeds).
    ///
    /// # Panics
    ///
    /// If the predicate panics, on this task or on a modifier's thread, the
    /// panic resumes here.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropping the future unregisters it; a concurrent
    /// modification neither wakes it nor loses another waiter's wake-up.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cell = leasehold::WatchCell::new(0_u64);
    /// let target = 3;
    /// let waiter = cell.wait_for(move |v| *v >= target);
    /// let writer = async { for _ in 0..5 { cell.modify(|v| *v += 1); tokio::task::yield_now().await } };
    /// let (result, ()) = tokio::join!(waiter, writer);
    /// result.unwrap();
    /// # }
    /// ```
    pub fn wait_for<'a, F>(&'a self, predicate: F) -> impl Future<Output = Result<(), Closed>> + 'a
    where
        F: FnMut(&T) -> bool + Send + 'static,
    {
        Wait::new(&self.shared, Until(predicate))
    }

    /// Waits until `f` returns `Some(x)` on the value, and returns `x`.
    ///
    /// `x` is extracted on the very state that satisfied the wait, by the
    /// modifier that made it, so nothing can change in between. `f` and `x`
    /// are `'static` for the reason given at [`wait_for`](Self::wait_for).
    ///
    /// ```compile_fail
    /// # async fn f(cell: leasehold::WatchCell<Vec<u64>>) {
    /// let wanted = 7;
    /// // Rejected: the closure borrows `wanted`.
    /// cell.wait_for_map(|v| v.iter().find(|x| **x == wanted).copied()).await.unwrap();
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Closed`] if the cell is or becomes closed while the predicate does
    /// not hold.
    ///
    /// # Panics
    ///
    /// If `f` panics, on this task or on a modifier's thread, the panic
    /// resumes here.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: as [`wait_for`](Self::wait_for). An `x` extracted for a
    /// future that is dropped before it is polled again is dropped with it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cell = leasehold::WatchCell::new(Vec::<String>::new());
    /// let first = cell.wait_for_map(|jobs| jobs.first().cloned());
    /// let push = async { cell.modify(|jobs| jobs.push("sync blob 7".into())) };
    /// let (first, ()) = tokio::join!(first, push);
    /// assert_eq!(first.unwrap(), "sync blob 7");
    /// # }
    /// ```
    pub fn wait_for_map<'a, U, F>(&'a self, f: F) -> impl Future<Output = Result<U, Closed>> + 'a
    where
        F: FnMut(&T) -> Option<U> + Send + 'static,
        U: Send + 'static,
    {
        Wait::new(&self.shared, Map::new(f))
    }

    /// Waits until `f` returns `Some(x)`, with `f` given the value mutably,
    /// and returns `x`: an exclusive hand-off, such as taking one job out of
    /// a queue.
    ///
    /// `f` runs under the lock, here or on the thread of the modifier that
    /// made the state it accepts. When it returns `Some`, what it did to the
    /// value stands and counts as a notifying modification: the version
    /// moves on and every other waiter is tested on the value `f` left
    /// (a waiter for "the queue is empty" is woken by the take that emptied
    /// it). One pushed job therefore wakes exactly one taker, and takers are
    /// served in the order they registered. When `f` returns `None` it should
    /// leave the value alone: a change it makes anyway stands, but notifies
    /// nobody, like [`modify_if`](Self::modify_if) returning `false`.
    ///
    /// `f` and `x` are `'static` for the reason given at
    /// [`wait_for`](Self::wait_for).
    ///
    /// # Errors
    ///
    /// [`Closed`] if the cell is or becomes closed while `f` finds nothing to
    /// take. A wait started on a closed cell still takes what is there, so
    /// takers drain a closed queue before they see `Closed`.
    ///
    /// # Panics
    ///
    /// If `f` panics, on this task or on a modifier's thread, the panic
    /// resumes here; what `f` did to the value before panicking stands and
    /// notifies the other waiters.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe once it has taken: if the future is dropped after a
    /// modifier ran `f` successfully for it but before it is polled again,
    /// `x` is dropped with it (the take stands). Use it where dropping `x` is
    /// harmless, or do not cancel a registered take (for example, do not race
    /// it in `select!` against a branch that wins while it is pending). Before
    /// a take it is cancel safe as [`wait_for`](Self::wait_for) is.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::VecDeque;
    /// use leasehold::WatchCell;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let queue = WatchCell::new(VecDeque::new());
    /// let workers: Vec<_> = (0..3)
    ///     .map(|_| {
    ///         let queue = queue.clone();
    ///         tokio::spawn(async move { queue.wait_take(|jobs: &mut VecDeque<u32>| jobs.pop_front()).await })
    ///     })
    ///     .collect();
    /// while queue.stats().waiters < 3 {
    ///     tokio::task::yield_now().await;
    /// }
    /// queue.modify(|jobs| jobs.push_back(7));
    /// // One job, one wake-up: the longest-waiting worker took it.
    /// assert_eq!(queue.stats().wakeups, 1);
    /// assert_eq!(queue.stats().waiters, 2);
    /// queue.modify(|jobs| jobs.extend([8, 9]));
    /// let mut taken: Vec<u32> = Vec::new();
    /// for worker in workers {
    ///     taken.push(worker.await.unwrap().unwrap());
    /// }
    /// assert_eq!(taken, [7, 8, 9]);
    /// # }
    /// ```
    pub fn wait_take<'a, U, F>(&'a self, f: F) -> impl Future<Output = Result<U, Closed>> + 'a
    where
        F: FnMut(&mut T) -> Option<U> + Send + 'static,
        U: Send + 'static,
    {
        Wait::new(&self.shared, Take::new(f))
    }

    /// Waits until the version is greater than `since`, and returns the
    /// latest version: the one current when this call returns, which counts
    /// every modification made up to then, not just the first one past
    /// `since`. Resolves at once if the version is already past `since`.
    ///
    /// Like `tokio::sync::watch::Receiver::changed`, which marks the newest
    /// value seen when it returns. Wakes on every notifying modification:
    /// prefer [`wait_for`](Self::wait_for) when you wait for a condition.
    ///
    /// To read the value and learn which version you read, in one step (the
    /// counterpart of tokio's `borrow_and_update`), follow it with
    /// [`read_and_mark`](Self::read_and_mark): a modification made between
    /// `changed` returning and your read is then not reported again.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the cell is or becomes closed with the version still at
    /// `since`. A change made before the cell closed is reported first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: as [`wait_for`](Self::wait_for). Since the caller keeps
    /// `since`, a retried call cannot miss a modification.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cell = leasehold::WatchCell::new(0);
    /// let mut seen = cell.version();
    /// cell.modify(|v| *v = 1);
    /// cell.modify(|v| *v = 2);
    /// cell.changed(seen).await.unwrap();
    /// // Read and mark what was read as seen: the next `changed` waits for a
    /// // modification made after this read.
    /// assert_eq!(cell.read_and_mark(&mut seen, |v| *v), 2);
    /// assert_eq!(seen.get(), 2);
    /// # }
    /// ```
    pub fn changed(&self, since: Version) -> impl Future<Output = Result<Version, Closed>> + '_ {
        Wait::new(&self.shared, Changed { since, seen: since })
    }

    /// Blocks the current thread until `predicate` holds on the value.
    ///
    /// Same semantics as [`wait_for`](Self::wait_for); the thread is unparked
    /// only when the predicate holds. Do not call it from an async task: it
    /// blocks the executor thread.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the cell is or becomes closed while the predicate does
    /// not hold.
    ///
    /// # Panics
    ///
    /// If the predicate panics, here or on a modifier's thread, the panic
    /// resumes here.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = leasehold::WatchCell::new(0);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| cell.modify(|v| *v = 5));
    ///     cell.blocking_wait_for(|v| *v == 5).unwrap();
    /// });
    /// ```
    pub fn blocking_wait_for<F>(&self, predicate: F) -> Result<(), Closed>
    where
        F: FnMut(&T) -> bool + Send,
    {
        self.shared
            .wait_blocking(Until(predicate), None)
            .map_err(|_| Closed)
    }

    /// Like [`blocking_wait_for`](Self::blocking_wait_for), giving up at `deadline`.
    ///
    /// The deadline is absolute: spurious wake-ups do not extend it. If a
    /// modification satisfies the predicate while the wait is timing out, the
    /// wait succeeds (where `parking_lot`'s `Condvar::wait_until` would report
    /// a timeout): a result that was produced for this waiter is never lost.
    ///
    /// # Errors
    ///
    /// [`WaitTimeoutError::Closed`] if the cell is or becomes closed while
    /// the predicate does not hold;
    /// [`WaitTimeoutError::TimedOut`] if the deadline passes first.
    ///
    /// # Panics
    ///
    /// As [`blocking_wait_for`](Self::blocking_wait_for).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::watch_cell::WaitTimeoutError;
    /// use std::time::Instant;
    ///
    /// let cell = leasehold::WatchCell::new(false);
    /// let already_passed = Instant::now();
    /// assert_eq!(cell.blocking_wait_for_deadline(|v| *v, already_passed), Err(WaitTimeoutError::TimedOut));
    /// ```
    pub fn blocking_wait_for_deadline<F>(
        &self,
        predicate: F,
        deadline: Instant,
    ) -> Result<(), WaitTimeoutError>
    where
        F: FnMut(&T) -> bool + Send,
    {
        self.shared.wait_blocking(Until(predicate), Some(deadline))
    }

    /// Like [`blocking_wait_for`](Self::blocking_wait_for), giving up after
    /// `timeout` (a deadline computed once, at the call).
    ///
    /// # Errors
    ///
    /// As [`blocking_wait_for_deadline`](Self::blocking_wait_for_deadline).
    ///
    /// # Panics
    ///
    /// As [`blocking_wait_for`](Self::blocking_wait_for).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let cell = leasehold::WatchCell::new(1);
    /// // Holds already: returns at once, whatever the timeout.
    /// cell.blocking_wait_for_timeout(|v| *v == 1, Duration::from_secs(60)).unwrap();
    /// ```
    pub fn blocking_wait_for_timeout<F>(
        &self,
        predicate: F,
        timeout: Duration,
    ) -> Result<(), WaitTimeoutError>
    where
        F: FnMut(&T) -> bool + Send,
    {
        self.shared
            .wait_blocking(Until(predicate), deadline_after(timeout))
    }

    /// Blocks until `f` returns `Some(x)` on the value, and returns `x`.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the cell is or becomes closed while the predicate does
    /// not hold.
    ///
    /// # Panics
    ///
    /// If `f` panics, here or on a modifier's thread, the panic resumes here.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = leasehold::WatchCell::new(None::<u32>);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| cell.modify(|v| *v = Some(9)));
    ///     assert_eq!(cell.blocking_wait_for_map(|v| *v).unwrap(), 9);
    /// });
    /// ```
    pub fn blocking_wait_for_map<U, F>(&self, f: F) -> Result<U, Closed>
    where
        F: FnMut(&T) -> Option<U> + Send,
        U: Send,
    {
        self.shared
            .wait_blocking(Map::new(f), None)
            .map_err(|_| Closed)
    }

    /// Like [`blocking_wait_for_map`](Self::blocking_wait_for_map), giving up
    /// at `deadline`.
    ///
    /// # Errors
    ///
    /// As [`blocking_wait_for_deadline`](Self::blocking_wait_for_deadline).
    ///
    /// # Panics
    ///
    /// As [`blocking_wait_for_map`](Self::blocking_wait_for_map).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    ///
    /// let cell = leasehold::WatchCell::new(Some("ready"));
    /// let deadline = Instant::now() + Duration::from_secs(1);
    /// assert_eq!(cell.blocking_wait_for_map_deadline(|v| *v, deadline), Ok("ready"));
    /// ```
    pub fn blocking_wait_for_map_deadline<U, F>(
        &self,
        f: F,
        deadline: Instant,
    ) -> Result<U, WaitTimeoutError>
    where
        F: FnMut(&T) -> Option<U> + Send,
        U: Send,
    {
        self.shared.wait_blocking(Map::new(f), Some(deadline))
    }

    /// Like [`blocking_wait_for_map`](Self::blocking_wait_for_map), giving up
    /// after `timeout`.
    ///
    /// # Errors
    ///
    /// As [`blocking_wait_for_deadline`](Self::blocking_wait_for_deadline).
    ///
    /// # Panics
    ///
    /// As [`blocking_wait_for_map`](Self::blocking_wait_for_map).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::watch_cell::WaitTimeoutError;
    /// use std::time::Duration;
    ///
    /// let cell = leasehold::WatchCell::new(None::<u8>);
    /// assert_eq!(cell.blocking_wait_for_map_timeout(|v| *v, Duration::ZERO), Err(WaitTimeoutError::TimedOut));
    /// ```
    pub fn blocking_wait_for_map_timeout<U, F>(
        &self,
        f: F,
        timeout: Duration,
    ) -> Result<U, WaitTimeoutError>
    where
        F: FnMut(&T) -> Option<U> + Send,
        U: Send,
    {
        self.shared
            .wait_blocking(Map::new(f), deadline_after(timeout))
    }

    /// Blocks until the version is greater than `since`; returns the latest
    /// version, as [`changed`](Self::changed) does.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the cell is or becomes closed with the version still at
    /// `since`.
    ///
    /// # Examples
    ///
    /// ```
    /// let cell = leasehold::WatchCell::new(0);
    /// let seen = cell.version();
    /// cell.modify(|v| *v += 1);
    /// assert_eq!(cell.blocking_changed(seen).unwrap().get(), 1);
    /// ```
    pub fn blocking_changed(&self, since: Version) -> Result<Version, Closed> {
        self.shared
            .wait_blocking(Changed { since, seen: since }, None)
            .map_err(|_| Closed)
    }

    /// Like [`blocking_changed`](Self::blocking_changed), giving up at
    /// `deadline`.
    ///
    /// # Errors
    ///
    /// As [`blocking_wait_for_deadline`](Self::blocking_wait_for_deadline).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::watch_cell::WaitTimeoutError;
    /// use std::time::Instant;
    ///
    /// let cell = leasehold::WatchCell::new(0);
    /// let seen = cell.version();
    /// assert_eq!(cell.blocking_changed_deadline(seen, Instant::now()), Err(WaitTimeoutError::TimedOut));
    /// cell.modify(|v| *v += 1);
    /// assert_eq!(cell.blocking_changed_deadline(seen, Instant::now()).unwrap().get(), 1);
    /// ```
    pub fn blocking_changed_deadline(
        &self,
        since: Version,
        deadline: Instant,
    ) -> Result<Version, WaitTimeoutError> {
        self.shared
            .wait_blocking(Changed { since, seen: since }, Some(deadline))
    }

    /// Like [`blocking_changed`](Self::blocking_changed), giving up after
    /// `timeout` (a deadline computed once, at the call).
    ///
    /// # Errors
    ///
    /// As [`blocking_wait_for_deadline`](Self::blocking_wait_for_deadline).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let cell = leasehold::WatchCell::new(0);
    /// let seen = cell.version();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| cell.modify(|v| *v += 1));
    ///     assert!(cell.blocking_changed_timeout(seen, Duration::from_secs(60)).unwrap() > seen);
    /// });
    /// ```
    pub fn blocking_changed_timeout(
        &self,
        since: Version,
        timeout: Duration,
    ) -> Result<Version, WaitTimeoutError> {
        self.shared
            .wait_blocking(Changed { since, seen: since }, deadline_after(timeout))
    }

    /// Blocks until `f` returns `Some(x)`, with `f` given the value mutably,
    /// and returns `x`. Same semantics as [`wait_take`](Self::wait_take):
    /// an exclusive hand-off, one taker served per item, oldest first.
    ///
    /// `f` may borrow from the caller's stack: it lives in this frame.
    ///
    /// # Errors
    ///
    /// [`Closed`] if the cell is or becomes closed while `f` finds nothing to
    /// take.
    ///
    /// # Panics
    ///
    /// If `f` panics, here or on a modifier's thread, the panic resumes here.
    ///
    /// # Examples
    ///
    /// ```
    /// let queue = leasehold::WatchCell::new(Vec::<u32>::new());
    /// std::thread::scope(|s| {
    ///     let worker = s.spawn(|| queue.blocking_wait_take(|jobs| jobs.pop()));
    ///     queue.modify(|jobs| jobs.push(7));
    ///     assert_eq!(worker.join().unwrap(), Ok(7));
    /// });
    /// assert!(queue.read(|jobs| jobs.is_empty()));
    /// ```
    pub fn blocking_wait_take<U, F>(&self, f: F) -> Result<U, Closed>
    where
        F: FnMut(&mut T) -> Option<U> + Send,
        U: Send,
    {
        self.shared
            .wait_blocking(Take::new(f), None)
            .map_err(|_| Closed)
    }

    /// Like [`blocking_wait_take`](Self::blocking_wait_take), giving up at
    /// `deadline`. A take made while the wait is timing out wins: the item is
    /// returned, never lost.
    ///
    /// # Errors
    ///
    /// As [`blocking_wait_for_deadline`](Self::blocking_wait_for_deadline).
    ///
    /// # Panics
    ///
    /// As [`blocking_wait_take`](Self::blocking_wait_take).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::watch_cell::WaitTimeoutError;
    /// use std::time::Instant;
    ///
    /// let queue = leasehold::WatchCell::new(vec![1_u32]);
    /// assert_eq!(queue.blocking_wait_take_deadline(|jobs| jobs.pop(), Instant::now()), Ok(1));
    /// assert_eq!(queue.blocking_wait_take_deadline(|jobs| jobs.pop(), Instant::now()), Err(WaitTimeoutError::TimedOut));
    /// ```
    pub fn blocking_wait_take_deadline<U, F>(
        &self,
        f: F,
        deadline: Instant,
    ) -> Result<U, WaitTimeoutError>
    where
        F: FnMut(&mut T) -> Option<U> + Send,
        U: Send,
    {
        self.shared.wait_blocking(Take::new(f), Some(deadline))
    }

    /// Like [`blocking_wait_take`](Self::blocking_wait_take), giving up after
    /// `timeout`.
    ///
    /// # Errors
    ///
    /// As [`blocking_wait_for_deadline`](Self::blocking_wait_for_deadline).
    ///
    /// # Panics
    ///
    /// As [`blocking_wait_take`](Self::blocking_wait_take).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let queue = leasehold::WatchCell::new(vec!["job"]);
    /// assert_eq!(queue.blocking_wait_take_timeout(|jobs| jobs.pop(), Duration::from_secs(1)), Ok("job"));
    /// ```
    pub fn blocking_wait_take_timeout<U, F>(
        &self,
        f: F,
        timeout: Duration,
    ) -> Result<U, WaitTimeoutError>
    where
        F: FnMut(&mut T) -> Option<U> + Send,
        U: Send,
    {
        self.shared
            .wait_blocking(Take::new(f), deadline_after(timeout))
    }
}

/// `now + timeout`, or no deadline if that overflows `Instant`.
fn deadline_after(timeout: Duration) -> Option<Instant> {
    crate::sync::now().checked_add(timeout)
}

impl<T> Clone for WatchCell<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T: Default> Default for WatchCell<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> From<T> for WatchCell<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: fmt::Debug> fmt::Debug for WatchCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("WatchCell");
        // `try_lock`: formatting from inside a closure on this cell must not deadlock.
        match self.shared.state.try_lock() {
            Some(state) => d
                .field("value", &state.value)
                .field("version", &state.version)
                .field("closed", &state.closed)
                .field("waiters", &state.waiting()),
            None => d.field("value", &format_args!("<locked>")),
        };
        d.finish()
    }
}
