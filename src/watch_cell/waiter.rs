//! Waiter nodes, the waiter list and the wake list.
//!
//! A waiter is a node that lives in its owner's frame: inside the pinned
//! future of an async wait, or pinned on the stack of a blocking wait. While
//! it is registered, the cell's waiter list holds a type-erased pointer to it,
//! and modifiers evaluate its predicate under the cell's lock. No allocation
//! is made per wait (the list's `Vec` grows only to the peak waiter count,
//! and is freed when the cell closes).
//!
//! # The invariants that make this sound and lossless
//!
//! 1. A node is in the list iff its `state` is `WAITING`; both change only
//!    while the cell's lock is held.
//! 2. The list holds a node's pointer only while the node is registered. The
//!    owner removes it (under the lock) before the node is dropped, unless a
//!    modifier or `close` already did; a node is pinned, so it never moves
//!    while registered.
//! 3. A modifier that completes a node first removes it from the list, takes
//!    its unparker and writes its outcome (predicate output or panic payload),
//!    and only then stores the new `state` with `Release`. That store is its
//!    last access to the node, so an owner that loads a non-`WAITING` state
//!    with `Acquire` may read the outcome and free the node without locking.
//! 4. Registration evaluates the predicate and pushes the node in the same
//!    critical section, and every notifying modification (a take included)
//!    evaluates every registered node on the new state in its critical
//!    section: no modification can fall between a waiter's check and its
//!    registration (no lost wake-up), and every registered predicate is false
//!    on the current state.
//! 5. No waker is cloned, woken or dropped under the lock: clones are made
//!    before locking, and unparkers leave the list (into a [`WakeList`], or
//!    back to the owner) to be woken or dropped after unlocking.
//!
//! # Order
//!
//! The list keeps registration order (FIFO): a modification evaluates the
//! oldest waiter first, so when one item can satisfy only one taker, the
//! longest-waiting taker gets it. An owner's removal leaves a hole that the
//! next notification (or a push, once holes outnumber nodes) compacts.

use std::any::Any;
use std::marker::PhantomPinned;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::ptr::NonNull;
use std::task::Waker;

use super::Version;
use crate::sync::{AtomicU8, Ordering, Thread, UnsafeCell};

/// Not in the list: never registered, or removed by its owner.
pub(super) const IDLE: u8 = 0;
/// In the list, predicate not yet satisfied.
pub(super) const WAITING: u8 = 1;
/// Removed by a modifier whose new state satisfied the predicate.
pub(super) const SATISFIED: u8 = 2;
/// Removed by `close`.
pub(super) const CLOSED: u8 = 3;
/// Removed by a modifier on whose thread the predicate panicked.
pub(super) const PANICKED: u8 = 4;

/// What a waiter tests, and what it yields once satisfied.
pub(super) trait Predicate<T> {
    type Output;

    /// Whether a successful test modified the value (`wait_take`): the cell
    /// then counts it as a notifying modification.
    const TAKES: bool = false;

    /// Tests the state. On `true`, the predicate keeps whatever it extracted
    /// for [`take_output`](Predicate::take_output). Only a `TAKES` predicate
    /// modifies `value`.
    fn test(&mut self, value: &mut T, version: Version) -> bool;

    /// The output of the last successful [`test`](Predicate::test).
    fn take_output(&mut self) -> Self::Output;

    /// Adjusts the output when the owner collects it after being woken;
    /// `latest` reads the cell's current version (under its lock).
    #[inline]
    fn finish(output: Self::Output, _latest: impl FnOnce() -> Version) -> Self::Output {
        output
    }
}

/// `wait_for`: a boolean predicate over the value.
pub(super) struct Until<F>(pub(super) F);

impl<T, F: FnMut(&T) -> bool> Predicate<T> for Until<F> {
    type Output = ();

    #[inline]
    fn test(&mut self, value: &mut T, _: Version) -> bool {
        (self.0)(value)
    }

    #[inline]
    fn take_output(&mut self) {}
}

/// `wait_for_map`: a predicate that extracts a value when it holds.
pub(super) struct Map<F, U> {
    f: F,
    output: Option<U>,
}

impl<F, U> Map<F, U> {
    pub(super) fn new(f: F) -> Self {
        Self { f, output: None }
    }
}

impl<T, U, F: FnMut(&T) -> Option<U>> Predicate<T> for Map<F, U> {
    type Output = U;

    #[inline]
    fn test(&mut self, value: &mut T, _: Version) -> bool {
        self.output = (self.f)(value);
        self.output.is_some()
    }

    #[inline]
    fn take_output(&mut self) -> U {
        self.output
            .take()
            .expect("a satisfied map predicate holds its output")
    }
}

/// `wait_take`: a closure that may modify the value, and whose `Some` both
/// satisfies the wait and makes its modification a notifying one.
pub(super) struct Take<F, U> {
    f: F,
    output: Option<U>,
}

impl<F, U> Take<F, U> {
    pub(super) fn new(f: F) -> Self {
        Self { f, output: None }
    }
}

impl<T, U, F: FnMut(&mut T) -> Option<U>> Predicate<T> for Take<F, U> {
    type Output = U;
    const TAKES: bool = true;

    #[inline]
    fn test(&mut self, value: &mut T, _: Version) -> bool {
        self.output = (self.f)(value);
        self.output.is_some()
    }

    #[inline]
    fn take_output(&mut self) -> U {
        self.output
            .take()
            .expect("a satisfied take holds its output")
    }
}

/// `changed`: the version moved past `since`.
pub(super) struct Changed {
    pub(super) since: Version,
    pub(super) seen: Version,
}

impl<T> Predicate<T> for Changed {
    type Output = Version;

    #[inline]
    fn test(&mut self, _: &mut T, version: Version) -> bool {
        self.seen = version;
        version > self.since
    }

    #[inline]
    fn take_output(&mut self) -> Version {
        self.seen
    }

    /// The latest version, not the first one past `since`: modifications
    /// made between the wake-up and the owner's return are reported too, so
    /// a value read next is not reported again by `changed(returned)`.
    #[inline]
    fn finish(seen: Version, latest: impl FnOnce() -> Version) -> Version {
        latest().max(seen)
    }
}

/// How to wake a waiter's owner.
pub(super) enum Unparker {
    Task(Waker),
    Thread(Thread),
}

impl Unparker {
    /// Asks the CPU to fetch what waking this task will touch first (the
    /// data a waker points to: a task's header, for tokio), without
    /// waiting for it. A hint only: it reads nothing, and an address that
    /// is not one (a waker's data may be any value) is ignored.
    #[inline]
    fn prefetch(&self) {
        #[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
        if let Unparker::Task(waker) = self {
            // SAFETY: a prefetch has no effect the program can observe and
            // never faults, whatever the address; SSE (which provides it) is
            // part of every x86_64 target.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    waker.data().cast(),
                );
            }
        }
    }

    fn unpark(self) {
        match self {
            Unparker::Task(waker) => waker.wake(),
            Unparker::Thread(thread) => thread.unpark(),
        }
    }
}

/// The type-independent part of a node: 32 bytes, so a `wait_for` future
/// with a predicate that captures nothing is 48.
pub(super) struct Header {
    /// `IDLE`, `WAITING`, `SATISFIED`, `CLOSED` or `PANICKED` (invariant 1).
    state: AtomicU8,
    /// Position in the list; meaningful while `WAITING`; guarded by the lock.
    /// A `u32` shares a word with `state` (the list refuses to grow past it).
    index: UnsafeCell<u32>,
    /// What the node holds besides its predicate: never an unparker and a
    /// payload at once, so they share a field.
    link: UnsafeCell<Link>,
}

/// The unparker of a registered node (guarded by the lock while
/// `WAITING`), or the payload of a predicate that panicked on a modifier's
/// thread (written before the modifier publishes `PANICKED`, invariant 3).
enum Link {
    Empty,
    Unpark(Unparker),
    Panic(Box<dyn Any + Send>),
}

impl Link {
    #[inline]
    fn into_unparker(self) -> Option<Unparker> {
        match self {
            Link::Unpark(unparker) => Some(unparker),
            Link::Empty | Link::Panic(_) => None,
        }
    }
}

impl Header {
    /// The end of [`Waiter::completion`] for a predicate that panicked on a
    /// modifier's thread: out of line, so the common ends stay small.
    #[cold]
    #[inline(never)]
    fn resume_panic(&self, state: u8) -> ! {
        assert_eq!(state, PANICKED, "waiter completed in state {state}");
        // SAFETY: as in `take_output`: the modifier wrote the payload before
        // its `Release` store of `PANICKED`.
        let link = self
            .link
            .with_mut(|l| unsafe { std::mem::replace(&mut *l, Link::Empty) });
        let Link::Panic(payload) = link else {
            unreachable!("a panicked waiter holds the payload")
        };
        std::panic::resume_unwind(payload)
    }
}

/// A waiter node: header plus the caller's predicate, pinned in its owner.
/// `repr(C)` puts the header first, so the list reaches it from a node
/// pointer without a virtual call ([`header_of`]).
#[repr(C)]
pub(super) struct Waiter<P> {
    header: Header,
    predicate: UnsafeCell<P>,
    _pinned: PhantomPinned,
}

/// The object-safe view of a node the list stores. Implemented by
/// [`Waiter`] only: [`header_of`] relies on its layout.
trait Node<T> {
    /// Whether a successful (or panicking) test may have modified the value.
    fn takes(&self) -> bool;

    /// # Safety
    ///
    /// The caller holds the cell's lock and the node is registered, so no one
    /// else touches the predicate.
    unsafe fn test(&self, value: &mut T, version: Version) -> bool;
}

impl<T, P: Predicate<T>> Node<T> for Waiter<P> {
    fn takes(&self) -> bool {
        P::TAKES
    }

    unsafe fn test(&self, value: &mut T, version: Version) -> bool {
        // SAFETY: exclusive access per this function's contract.
        self.predicate
            .with_mut(|p| unsafe { (*p).test(value, version) })
    }
}

/// The header of the node `ptr` points to: its first field, at offset 0
/// (every `Node` is a `repr(C)` `Waiter` whose first field is the header).
///
/// # Safety
///
/// The node is alive for `'a`.
#[inline]
unsafe fn header_of<'a, T>(ptr: NonNull<dyn Node<T>>) -> &'a Header {
    // SAFETY: `Waiter` is the only implementor of `Node`, and is `repr(C)`
    // with the header first; the node is alive per the contract.
    unsafe { ptr.cast::<Header>().as_ref() }
}

/// How a completed wait ended.
pub(super) enum Completion<O> {
    Satisfied(O),
    Closed,
}

impl<P> Waiter<P> {
    pub(super) fn new(predicate: P) -> Self {
        Self {
            header: Header {
                state: AtomicU8::new(IDLE),
                index: UnsafeCell::new(0),
                link: UnsafeCell::new(Link::Empty),
            },
            predicate: UnsafeCell::new(predicate),
            _pinned: PhantomPinned,
        }
    }

    /// Loads the state with `Acquire`, synchronizing with the modifier that
    /// completed the node (invariant 3).
    #[inline]
    pub(super) fn state(&self) -> u8 {
        self.header.state.load(Ordering::Acquire)
    }

    /// Tests the predicate from the owner's side, before registration.
    ///
    /// The caller holds the cell's lock. A panic unwinds on the owner's thread.
    pub(super) fn test_unregistered<T>(&self, value: &mut T, version: Version) -> bool
    where
        P: Predicate<T>,
    {
        debug_assert_eq!(self.header.state.load(Ordering::Relaxed), IDLE);
        // SAFETY: an unregistered node is reachable only through its owner.
        self.predicate
            .with_mut(|p| unsafe { (*p).test(value, version) })
    }

    /// Takes the output of a satisfied predicate.
    pub(super) fn take_output<T>(&self) -> P::Output
    where
        P: Predicate<T>,
    {
        // SAFETY: called by the owner either before registration or after a
        // non-`WAITING` state was loaded with `Acquire`; no modifier touches
        // the node any more (invariant 3).
        self.predicate.with_mut(|p| unsafe { (*p).take_output() })
    }

    /// Turns a completed node into the wait's result.
    ///
    /// # Panics
    ///
    /// Resumes the predicate's panic if it panicked on a modifier's thread.
    #[inline]
    pub(super) fn completion<T>(&self) -> Completion<P::Output>
    where
        P: Predicate<T>,
    {
        match self.state() {
            SATISFIED => Completion::Satisfied(self.take_output()),
            CLOSED => Completion::Closed,
            state => self.header.resume_panic(state),
        }
    }

    /// Whether the registered unparker would wake the same task as `waker`.
    /// Compares pointers only: no waker code runs.
    ///
    /// # Safety
    ///
    /// The caller holds the cell's lock and the node is `WAITING`.
    pub(super) unsafe fn will_wake(&self, waker: &Waker) -> bool {
        self.header.link.with(|l| {
            // SAFETY: guarded by the lock per the contract.
            matches!(unsafe { &*l }, Link::Unpark(Unparker::Task(current)) if current.will_wake(waker))
        })
    }

    /// Replaces the unparker of a registered node, returning the old one for
    /// the caller to drop after unlocking (invariant 5).
    ///
    /// # Safety
    ///
    /// The caller holds the cell's lock and the node is `WAITING`.
    pub(super) unsafe fn replace_unparker(&self, unparker: Unparker) -> Option<Unparker> {
        // SAFETY: guarded by the lock per the contract.
        self.header
            .link
            .with_mut(|l| unsafe { std::mem::replace(&mut *l, Link::Unpark(unparker)) })
            .into_unparker()
    }
}

/// The registered waiters of one cell, in registration order. Accessed only
/// under the cell's lock.
pub(super) struct WaiterList<T> {
    /// `None` is a hole left by an owner's removal.
    slots: Vec<Option<NonNull<dyn Node<T>>>>,
    /// Registered nodes (the `Some` slots).
    live: usize,
}

// SAFETY: the list is only reachable through the cell's mutex. The nodes it
// points to are predicates bounded by `Send` at registration (`push`), whose
// outputs are `Send`; a modifier on another thread only tests them and moves
// outputs, which is what `Send` permits.
unsafe impl<T: Send> Send for WaiterList<T> {}

impl<T> WaiterList<T> {
    pub(super) const fn new() -> Self {
        Self {
            slots: Vec::new(),
            live: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Registers `node` at the tail, to be woken through `unparker`.
    ///
    /// # Safety
    ///
    /// The caller holds the cell's lock; `node` is pinned, `IDLE`, and its
    /// owner will call [`remove`](Self::remove) (under the lock) before the
    /// node is dropped unless the node's state has left `WAITING`
    /// (invariant 2).
    pub(super) unsafe fn push<'a, P>(&mut self, node: &'a Waiter<P>, unparker: Unparker)
    where
        P: Predicate<T> + Send + 'a,
        P::Output: Send,
        T: 'a,
    {
        if self.slots.len() - self.live > self.live {
            // SAFETY: we hold the lock (caller).
            unsafe { self.compact() };
        }
        let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 registered waiters");
        let header = &node.header;
        // SAFETY: guarded by the lock (caller); the node is not yet shared.
        header
            .link
            .with_mut(|l| unsafe { *l = Link::Unpark(unparker) });
        header.index.with_mut(|i| unsafe { *i = index });
        header.state.store(WAITING, Ordering::Relaxed);
        let ptr: NonNull<dyn Node<T> + 'a> = NonNull::from(node as &(dyn Node<T> + 'a));
        // SAFETY: only the lifetime bound is erased. The pointer is removed
        // from the list before `'a` ends, by the owner or by a modifier
        // (contract above), so it is never dereferenced after the node dies.
        let ptr: NonNull<dyn Node<T>> = unsafe { std::mem::transmute(ptr) };
        self.slots.push(Some(ptr));
        self.live += 1;
    }

    /// Removes a `WAITING` node on its owner's behalf and marks it `IDLE`.
    /// Returns its unparker, which the caller drops after unlocking.
    ///
    /// # Safety
    ///
    /// The caller holds the cell's lock and `node` is `WAITING` in this list.
    pub(super) unsafe fn remove<P>(&mut self, node: &Waiter<P>) -> Option<Unparker> {
        debug_assert_eq!(node.header.state.load(Ordering::Relaxed), WAITING);
        // SAFETY: guarded by the lock.
        let index = node.header.index.with(|i| unsafe { *i });
        self.slots[index as usize] = None;
        self.live -= 1;
        while let Some(None) = self.slots.last() {
            self.slots.pop();
        }
        node.header.state.store(IDLE, Ordering::Relaxed);
        // SAFETY: guarded by the lock; the node is no longer registered.
        node.header
            .link
            .with_mut(|l| unsafe { std::mem::replace(&mut *l, Link::Empty) })
            .into_unparker()
    }

    /// Closes the holes, keeping order, and fixes the moved nodes' indices.
    ///
    /// # Safety
    ///
    /// The caller holds the cell's lock.
    unsafe fn compact(&mut self) {
        self.slots.retain(Option::is_some);
        for (index, slot) in (0..).zip(&self.slots) {
            let node = slot.expect("retained slots are occupied");
            // SAFETY: registered nodes are alive (invariant 2); the index
            // field is guarded by the lock.
            unsafe { header_of(node) }
                .index
                .with_mut(|i| unsafe { *i = index });
        }
    }

    /// Tests every registered predicate against the new state, oldest first,
    /// and completes the satisfied ones. Returns the number of evaluations.
    ///
    /// A take that succeeds (or panics) modifies the value: it bumps
    /// `version`, and the scan goes on round the list until every remaining
    /// node has been tested on the value as it now is, so a waiter tested
    /// before the take is tested again on what the take left (invariant 4).
    /// Each node is tested once per version.
    ///
    /// A predicate that panics is caught here, on the modifier's thread, and
    /// completed as `PANICKED` so the panic surfaces on its owner's thread.
    pub(super) fn notify(
        &mut self,
        value: &mut T,
        version: &mut Version,
        wakes: &mut WakeList,
    ) -> u64 {
        let len = self.slots.len();
        let mut evaluations = 0;
        // Live nodes tested, in a row, since the value last changed.
        let mut tested_clean = 0;
        let mut completed = false;
        let mut i = 0;
        while tested_clean < self.live {
            let index = i;
            i = (i + 1) % len;
            let Some(ptr) = self.slots[index] else {
                continue;
            };
            // SAFETY: registered nodes are alive (invariant 2).
            let node = unsafe { ptr.as_ref() };
            evaluations += 1;
            // SAFETY: we hold the lock (`&mut self`) and the node is registered.
            let outcome = catch_unwind(AssertUnwindSafe(|| unsafe { node.test(value, *version) }));
            let (state, panic) = match outcome {
                Ok(false) => {
                    tested_clean += 1;
                    continue;
                }
                Ok(true) => (SATISFIED, None),
                Err(payload) => (PANICKED, Some(payload)),
            };
            let took = node.takes();
            // SAFETY: we hold the lock; `index` holds a registered node.
            unsafe { self.complete(index, state, panic, wakes) };
            completed = true;
            if took {
                version.0 += 1;
                tested_clean = 0;
            }
        }
        if completed {
            // SAFETY: we hold the lock.
            unsafe { self.compact() };
        }
        evaluations
    }

    /// Completes every registered node as `CLOSED`, oldest first.
    pub(super) fn close_all(&mut self, wakes: &mut WakeList) {
        wakes.reserve(self.live);
        self.live = 0;
        for ptr in self.slots.drain(..).flatten() {
            // SAFETY: `&mut self` means we hold the lock; the node was
            // registered, and the list no longer leads to it.
            unsafe { finish(ptr, CLOSED, None, wakes) };
        }
    }

    /// Removes the node at `index` (leaving a hole), and completes it
    /// ([`finish`]).
    ///
    /// # Safety
    ///
    /// The caller holds the cell's lock; `index` holds a registered node.
    unsafe fn complete(
        &mut self,
        index: usize,
        state: u8,
        panic: Option<Box<dyn Any + Send>>,
        wakes: &mut WakeList,
    ) {
        let ptr = self.slots[index]
            .take()
            .expect("completing a registered node");
        self.live -= 1;
        // SAFETY: per this function's contract; the slot no longer leads to
        // the node.
        unsafe { finish(ptr, state, panic, wakes) };
    }
}

/// Completes a node taken out of the list: moves its unparker to `wakes`,
/// leaves the payload of a `panic` in its place, and publishes `state`, its
/// last access (invariant 3).
///
/// # Safety
///
/// The caller holds the cell's lock, and `ptr` is a node that was
/// registered until the caller took it out of the list.
#[inline(always)]
unsafe fn finish<T>(
    ptr: NonNull<dyn Node<T>>,
    state: u8,
    panic: Option<Box<dyn Any + Send>>,
    wakes: &mut WakeList,
) {
    // SAFETY: the node is still alive: its owner cannot free it before
    // observing the store below.
    let header = unsafe { header_of(ptr) };
    header.link.with_mut(|link| {
        // SAFETY: guarded by the lock.
        let link = unsafe { &mut *link };
        if let Link::Unpark(unparker) = link {
            // SAFETY: the unparker is read out of the node and its place
            // overwritten without a drop, so it is neither lost nor dropped
            // twice. (Moved out through `mem::replace`, it went through the
            // stack in pieces that were re-read whole, a store-forwarding
            // stall on every node of a bulk wake-up.)
            let unparker = unsafe {
                let unparker = std::ptr::read(unparker);
                std::ptr::write(link, Link::Empty);
                unparker
            };
            wakes.push(unparker);
        }
        if let Some(payload) = panic {
            *link = Link::Panic(payload);
        }
    });
    header.state.store(state, Ordering::Release);
}

/// Unparkers collected under the lock, woken when the list is dropped: after
/// the lock is released, so a woken waiter never contends with the modifier
/// for it, and a waker's own code (which may touch the cell) never runs
/// under the lock (invariant 5).
///
/// The first unparker is stored inline: the common single wake-up allocates
/// nothing. A bulk wake-up reuses its thread's buffer ([`spare`]): waking N
/// waiters allocates nothing once the thread has woken as many before.
#[derive(Default)]
#[must_use = "dropping the list wakes its waiters: drop it after releasing locks"]
pub(crate) struct WakeList {
    first: Option<Unparker>,
    rest: Vec<Unparker>,
    /// A panic caught under the lock (an index's key function), resumed
    /// once every waiter was woken.
    panic: Option<Box<dyn Any + Send>>,
}

impl WakeList {
    #[inline]
    pub(super) fn push(&mut self, unparker: Unparker) {
        if self.first.is_none() {
            self.first = Some(unparker);
        } else {
            if self.rest.len() == self.rest.capacity() {
                self.grow();
            }
            self.rest.push(unparker);
        }
    }

    /// Room for one more in `rest` (taking the thread's buffer first).
    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        self.rest().reserve(1);
    }

    pub(super) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    /// Keeps `payload` (the first one only) to resume after the wake-ups.
    pub(super) fn defer_panic(&mut self, payload: Box<dyn Any + Send>) {
        self.panic.get_or_insert(payload);
    }

    /// Room for `additional` more unparkers, reserved before a bulk wake-up.
    pub(super) fn reserve(&mut self, additional: usize) {
        self.rest().reserve(additional);
    }

    /// The overflow buffer: the thread's spare one, on first use.
    fn rest(&mut self) -> &mut Vec<Unparker> {
        if self.rest.capacity() == 0 {
            self.rest = spare::take();
        }
        &mut self.rest
    }
}

impl Drop for WakeList {
    /// Wakes every waiter, even if a waker panics: each wake-up is attempted,
    /// then the first panic resumes (unless the thread is already unwinding,
    /// where a second panic would abort). A panic deferred with
    /// [`defer_panic`](Self::defer_panic) wins over a waker's.
    fn drop(&mut self) {
        let mut first_panic = self.panic.take();
        if first_panic.is_none() && !std::thread::panicking() {
            if self.rest.is_empty() {
                // One wake-up at most (the most common case): a panic in
                // it has no other wake-up to hold back.
                if let Some(unparker) = self.first.take() {
                    unparker.unpark();
                }
            } else {
                // Many, with no `catch_unwind` per wake-up: if a waker
                // panics, `Waking`'s drop wakes the rest while that panic
                // unwinds, and the panic goes on (the first one: later ones
                // are caught).
                Waking {
                    first: self.first.take(),
                    rest: self.rest.drain(..),
                }
                .run();
            }
        } else {
            for unparker in self.first.take().into_iter().chain(self.rest.drain(..)) {
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| unparker.unpark())) {
                    first_panic.get_or_insert(payload);
                }
            }
        }
        spare::give_back(std::mem::take(&mut self.rest));
        if let Some(payload) = first_panic {
            if !std::thread::panicking() {
                resume_unwind(payload);
            }
        }
    }
}

/// The wake-ups of a [`WakeList`] in progress, oldest first. If one panics,
/// dropping this (as the panic unwinds) wakes the others.
struct Waking<'a> {
    first: Option<Unparker>,
    rest: std::vec::Drain<'a, Unparker>,
}

impl Waking<'_> {
    fn run(mut self) {
        if let Some(unparker) = self.first.take() {
            unparker.unpark();
        }
        loop {
            if let Some(ahead) = self.rest.as_slice().get(PREFETCH_AHEAD) {
                ahead.prefetch();
            }
            let Some(unparker) = self.rest.next() else {
                return;
            };
            unparker.unpark();
        }
    }
}

impl Drop for Waking<'_> {
    /// Empty unless a wake-up panicked: wakes the rest, catching their
    /// panics (a second panic while unwinding would abort).
    fn drop(&mut self) {
        for unparker in self.first.take().into_iter().chain(self.rest.by_ref()) {
            let _ = catch_unwind(AssertUnwindSafe(|| unparker.unpark()));
        }
    }
}

/// How far ahead of the wake-up in progress [`WakeList`]'s drop prefetches:
/// a wake-up's first access to its task misses the cache when many are
/// woken at once, and these misses then overlap instead of following one
/// another.
const PREFETCH_AHEAD: usize = 8;

/// One empty wake buffer per thread, kept between bulk wake-ups: waking N
/// waiters fills a buffer of N unparkers (they must all leave the list
/// under the lock, and be woken after it), and allocating it afresh each
/// time cost a third of the publisher's time at N = 1,000 (a large
/// `malloc`, and the copies of a growing `Vec`). Only the largest buffer a thread
/// used is kept, up to [`MAX_KEPT`] unparkers; a larger one is freed.
/// Under loom the buffer is not kept (loom's threads share one OS thread).
mod spare {
    use super::Unparker;

    /// The largest buffer kept per thread, in unparkers (16 bytes each):
    /// 16,384, so 256 KiB at most.
    pub(super) const MAX_KEPT: usize = 1 << 14;

    #[cfg(not(loom))]
    thread_local! {
        static SPARE: std::cell::Cell<Vec<Unparker>> = const { std::cell::Cell::new(Vec::new()) };
    }

    /// The thread's buffer (empty), or a new empty one.
    #[cfg(not(loom))]
    pub(super) fn take() -> Vec<Unparker> {
        // During thread teardown the buffer may be gone: start a new one.
        SPARE.try_with(std::cell::Cell::take).unwrap_or_default()
    }

    /// Keeps `buffer` (drained) for the thread's next bulk wake-up, if it
    /// is larger than the one kept and no larger than [`MAX_KEPT`].
    #[cfg(not(loom))]
    pub(super) fn give_back(buffer: Vec<Unparker>) {
        debug_assert!(buffer.is_empty(), "a buffer is given back drained");
        if buffer.capacity() == 0 || buffer.capacity() > MAX_KEPT {
            return;
        }
        let _ = SPARE.try_with(|spare| {
            let kept = spare.take();
            spare.set(if kept.capacity() >= buffer.capacity() {
                kept
            } else {
                buffer
            });
        });
    }

    #[cfg(loom)]
    pub(super) fn take() -> Vec<Unparker> {
        Vec::new()
    }

    #[cfg(loom)]
    pub(super) fn give_back(_: Vec<Unparker>) {}
}
