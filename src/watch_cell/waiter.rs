//! Waiter nodes, the waiter list and the wake list.
//!
//! A waiter is a node that lives in its owner's frame: inside the pinned
//! future of an async wait, or pinned on the stack of a blocking wait. While
//! it is registered, the cell's waiter list holds a type-erased pointer to it,
//! and modifiers evaluate its predicate under the cell's lock. No allocation
//! is made per wait (the list's `Vec` grows only to the peak waiter count).
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
//!    critical section, and every notifying modification evaluates every
//!    registered node in its critical section: no modification can fall
//!    between a waiter's check and its registration (no lost wake-up).

use std::any::Any;
use std::marker::PhantomPinned;
use std::panic::{AssertUnwindSafe, catch_unwind};
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

    /// Tests the state. On `true`, the predicate keeps whatever it extracted
    /// for [`take_output`](Predicate::take_output).
    fn test(&mut self, value: &T, version: Version) -> bool;

    /// The output of the last successful [`test`](Predicate::test).
    fn take_output(&mut self) -> Self::Output;
}

/// `wait_for`: a boolean predicate over the value.
pub(super) struct Until<F>(pub(super) F);

impl<T, F: FnMut(&T) -> bool> Predicate<T> for Until<F> {
    type Output = ();

    #[inline]
    fn test(&mut self, value: &T, _: Version) -> bool {
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
    fn test(&mut self, value: &T, _: Version) -> bool {
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

/// `changed`: the version moved past `since`.
pub(super) struct Changed {
    pub(super) since: Version,
    pub(super) seen: Version,
}

impl<T> Predicate<T> for Changed {
    type Output = Version;

    #[inline]
    fn test(&mut self, _: &T, version: Version) -> bool {
        self.seen = version;
        version > self.since
    }

    #[inline]
    fn take_output(&mut self) -> Version {
        self.seen
    }
}

/// How to wake a waiter's owner.
pub(super) enum Unparker {
    Task(Waker),
    Thread(Thread),
}

impl Unparker {
    fn unpark(self) {
        match self {
            Unparker::Task(waker) => waker.wake(),
            Unparker::Thread(thread) => thread.unpark(),
        }
    }
}

/// The type-independent part of a node.
pub(super) struct Header {
    /// `IDLE`, `WAITING`, `SATISFIED`, `CLOSED` or `PANICKED` (invariant 1).
    state: AtomicU8,
    /// Position in the list; meaningful while `WAITING`; guarded by the lock.
    index: UnsafeCell<usize>,
    /// Guarded by the lock while `WAITING`.
    unparker: UnsafeCell<Option<Unparker>>,
    /// Written by a modifier before it publishes `PANICKED` (invariant 3).
    panic: UnsafeCell<Option<Box<dyn Any + Send>>>,
}

/// A waiter node: header plus the caller's predicate, pinned in its owner.
pub(super) struct Waiter<P> {
    header: Header,
    predicate: UnsafeCell<P>,
    _pinned: PhantomPinned,
}

/// The object-safe view of a node the list stores.
trait Node<T> {
    fn header(&self) -> &Header;

    /// # Safety
    ///
    /// The caller holds the cell's lock and the node is registered, so no one
    /// else touches the predicate.
    unsafe fn test(&self, value: &T, version: Version) -> bool;
}

impl<T, P: Predicate<T>> Node<T> for Waiter<P> {
    fn header(&self) -> &Header {
        &self.header
    }

    unsafe fn test(&self, value: &T, version: Version) -> bool {
        // SAFETY: exclusive access per this function's contract.
        self.predicate
            .with_mut(|p| unsafe { (*p).test(value, version) })
    }
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
                unparker: UnsafeCell::new(None),
                panic: UnsafeCell::new(None),
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
    pub(super) fn test_unregistered<T>(&self, value: &T, version: Version) -> bool
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
    pub(super) fn completion<T>(&self) -> Completion<P::Output>
    where
        P: Predicate<T>,
    {
        match self.state() {
            SATISFIED => Completion::Satisfied(self.take_output()),
            CLOSED => Completion::Closed,
            PANICKED => {
                // SAFETY: as in `take_output`: the modifier wrote the payload
                // before its `Release` store of `PANICKED`.
                let payload = self.header.panic.with_mut(|p| unsafe { (*p).take() });
                std::panic::resume_unwind(payload.expect("a panicked waiter holds the payload"))
            }
            state => unreachable!("waiter completed in state {state}"),
        }
    }

    /// Replaces the unparker of a registered node.
    ///
    /// # Safety
    ///
    /// The caller holds the cell's lock and the node is `WAITING`.
    pub(super) unsafe fn set_unparker(&self, waker: &Waker) {
        self.header.unparker.with_mut(|u| {
            // SAFETY: guarded by the lock per the contract.
            let slot = unsafe { &mut *u };
            match slot {
                Some(Unparker::Task(current)) if current.will_wake(waker) => {}
                _ => *slot = Some(Unparker::Task(waker.clone())),
            }
        });
    }
}

/// The registered waiters of one cell. Accessed only under the cell's lock.
pub(super) struct WaiterList<T> {
    nodes: Vec<NonNull<dyn Node<T>>>,
}

// SAFETY: the list is only reachable through the cell's mutex. The nodes it
// points to are predicates bounded by `Send` at registration (`push`), whose
// outputs are `Send`; a modifier on another thread only tests them and moves
// outputs, which is what `Send` permits.
unsafe impl<T: Send> Send for WaiterList<T> {}

impl<T> WaiterList<T> {
    pub(super) const fn new() -> Self {
        Self { nodes: Vec::new() }
    }

    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Registers `node`, to be woken through `unparker`.
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
        let header = &node.header;
        // SAFETY: guarded by the lock (caller); the node is not yet shared.
        header.unparker.with_mut(|u| unsafe { *u = Some(unparker) });
        header.index.with_mut(|i| unsafe { *i = self.nodes.len() });
        header.state.store(WAITING, Ordering::Relaxed);
        let ptr: NonNull<dyn Node<T> + 'a> = NonNull::from(node as &(dyn Node<T> + 'a));
        // SAFETY: only the lifetime bound is erased. The pointer is removed
        // from the list before `'a` ends, by the owner or by a modifier
        // (contract above), so it is never dereferenced after the node dies.
        let ptr: NonNull<dyn Node<T>> = unsafe { std::mem::transmute(ptr) };
        self.nodes.push(ptr);
    }

    /// Removes a `WAITING` node on its owner's behalf and marks it `IDLE`.
    ///
    /// # Safety
    ///
    /// The caller holds the cell's lock and `node` is `WAITING` in this list.
    pub(super) unsafe fn remove<P>(&mut self, node: &Waiter<P>) {
        debug_assert_eq!(node.header.state.load(Ordering::Relaxed), WAITING);
        // SAFETY: guarded by the lock.
        let index = node.header.index.with(|i| unsafe { *i });
        unsafe { self.swap_remove(index) };
        node.header.unparker.with_mut(|u| unsafe { *u = None });
        node.header.state.store(IDLE, Ordering::Relaxed);
    }

    /// Removes the node at `index`, fixing the index of the node moved into
    /// its place. Does not touch the removed node.
    ///
    /// # Safety
    ///
    /// The caller holds the cell's lock.
    unsafe fn swap_remove(&mut self, index: usize) {
        self.nodes.swap_remove(index);
        if let Some(moved) = self.nodes.get(index) {
            // SAFETY: registered nodes are alive (invariant 2); the index
            // field is guarded by the lock.
            unsafe { moved.as_ref() }
                .header()
                .index
                .with_mut(|i| unsafe { *i = index });
        }
    }

    /// Tests every registered predicate against the new state and completes
    /// the satisfied ones, returning the number of predicate evaluations.
    ///
    /// Each predicate runs at most once. A predicate that panics is caught
    /// here, on the modifier's thread, and completed as `PANICKED` so the
    /// panic surfaces on its owner's thread instead.
    pub(super) fn notify(&mut self, value: &T, version: Version, wakes: &mut WakeList) -> u64 {
        let mut evaluations = 0;
        let mut i = 0;
        while i < self.nodes.len() {
            // SAFETY: registered nodes are alive (invariant 2).
            let node = unsafe { self.nodes[i].as_ref() };
            evaluations += 1;
            // SAFETY: we hold the lock (`&mut self`) and the node is registered.
            let outcome = catch_unwind(AssertUnwindSafe(|| unsafe { node.test(value, version) }));
            let state = match outcome {
                Ok(false) => {
                    i += 1;
                    continue;
                }
                Ok(true) => SATISFIED,
                Err(payload) => {
                    // SAFETY: guarded by the lock; published by the store below.
                    node.header()
                        .panic
                        .with_mut(|p| unsafe { *p = Some(payload) });
                    PANICKED
                }
            };
            // The node moved into slot `i` (if any) is tested next iteration.
            // SAFETY: we hold the lock.
            unsafe { self.complete(i, state, wakes) };
        }
        evaluations
    }

    /// Completes every registered node as `CLOSED`.
    pub(super) fn close_all(&mut self, wakes: &mut WakeList) {
        while !self.nodes.is_empty() {
            // SAFETY: `&mut self` means we hold the lock.
            unsafe { self.complete(self.nodes.len() - 1, CLOSED, wakes) };
        }
    }

    /// # Safety
    ///
    /// The caller holds the cell's lock; `index` is in bounds.
    unsafe fn complete(&mut self, index: usize, state: u8, wakes: &mut WakeList) {
        // SAFETY: registered nodes are alive (invariant 2).
        let header = unsafe { self.nodes[index].as_ref() }.header() as *const Header;
        unsafe { self.swap_remove(index) };
        // SAFETY: the node is still alive: its owner cannot free it before
        // observing the store below, which is our last access (invariant 3).
        let header = unsafe { &*header };
        if let Some(unparker) = header.unparker.with_mut(|u| unsafe { (*u).take() }) {
            wakes.push(unparker);
        }
        header.state.store(state, Ordering::Release);
    }
}

/// Unparkers collected under the lock, woken when the list is dropped: after
/// the lock is released, so a woken waiter never contends with the modifier
/// for it.
///
/// The first unparker is stored inline: the common single wake-up allocates
/// nothing.
#[derive(Default)]
#[must_use = "dropping the list wakes its waiters: drop it after releasing locks"]
pub(crate) struct WakeList {
    first: Option<Unparker>,
    rest: Vec<Unparker>,
}

impl WakeList {
    fn push(&mut self, unparker: Unparker) {
        if self.first.is_none() {
            self.first = Some(unparker);
        } else {
            self.rest.push(unparker);
        }
    }

    pub(super) fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }
}

impl Drop for WakeList {
    fn drop(&mut self) {
        if let Some(first) = self.first.take() {
            first.unpark();
        }
        for unparker in self.rest.drain(..) {
            unparker.unpark();
        }
    }
}
