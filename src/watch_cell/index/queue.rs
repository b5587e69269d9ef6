//! The waiters of one index: threshold waiter nodes, pinned in their
//! owners, kept in one FIFO list per distinct threshold, linked through the
//! nodes themselves, and a `BTreeMap` from threshold to list.
//!
//! Registration and cancellation find the threshold's list in O(log T) (T
//! distinct thresholds) and link or unlink the node in O(1); a cancellation
//! in the middle of a list needs no lookup at all. Completing k waiters
//! walks their lists: no allocation, free or map node per waiter. The
//! invariants are those listed at the top of `index.rs`.

use std::any::Any;
use std::collections::BTreeMap;
use std::marker::PhantomPinned;
use std::ptr::NonNull;
use std::task::Waker;

use super::super::Closed;
use super::super::waiter::{CLOSED, IDLE, SATISFIED, Unparker, WAITING, WakeList};
use crate::sync::{AtomicU8, Ordering, UnsafeCell};

/// A link to a registered node of the same index.
type Link<K> = Option<NonNull<IndexWaiter<K>>>;

/// A threshold waiter, pinned in its owner. The fields a completing
/// modifier writes and the owner then reads (state, output, unparker) come
/// first, so that for small keys they share a cache line with the link the
/// modifier follows next; the threshold sits beside the state and output,
/// in what would otherwise be padding for small keys (a node with a `bool`
/// or `u32` key is 48 bytes, not 56: every byte of a wait future counts
/// in a task that holds one). (Aligning the node to a cache line measured
/// no faster, and made every task that holds one an over-aligned
/// allocation.)
#[repr(C)]
pub(in crate::watch_cell) struct IndexWaiter<K> {
    /// `IDLE`, `WAITING`, `SATISFIED` or `CLOSED` (invariant 1).
    state: AtomicU8,
    /// Written by the completing modifier before its `Release` store.
    output: UnsafeCell<Option<K>>,
    threshold: K,
    /// Guarded by the lock while `WAITING`.
    unparker: UnsafeCell<Option<Unparker>>,
    /// The next (younger) node of the same threshold; guarded by the lock,
    /// meaningful while `WAITING`.
    next: UnsafeCell<Link<K>>,
    /// The previous (older) node of the same threshold; as `next`.
    prev: UnsafeCell<Link<K>>,
    _pinned: PhantomPinned,
}

// SAFETY: the links are the only non-`Send` fields. They are read and
// written only under the cell's lock, by whoever holds it, and lead to
// other nodes of the same index, whose data (`K`, an unparker) is `Send`.
// Moving a node (before it is registered) to another thread moves nothing
// that another thread could be using.
unsafe impl<K: Send> Send for IndexWaiter<K> {}

impl<K> IndexWaiter<K> {
    pub(in crate::watch_cell) fn new(threshold: K) -> Self {
        Self {
            state: AtomicU8::new(IDLE),
            output: UnsafeCell::new(None),
            threshold,
            unparker: UnsafeCell::new(None),
            next: UnsafeCell::new(None),
            prev: UnsafeCell::new(None),
            _pinned: PhantomPinned,
        }
    }

    pub(in crate::watch_cell) fn threshold(&self) -> &K {
        &self.threshold
    }

    /// Loads the state with `Acquire` (invariant 3).
    #[inline]
    pub(in crate::watch_cell) fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// The result of a completed node.
    pub(in crate::watch_cell) fn completion(&self) -> Result<K, Closed> {
        match self.state() {
            // SAFETY: a non-`WAITING` state was loaded with `Acquire`; the
            // completing modifier's store was its last access (invariant 3).
            SATISFIED => Ok(self
                .output
                .with_mut(|o| unsafe { (*o).take() })
                .expect("a satisfied index waiter holds its key")),
            CLOSED => Err(Closed),
            state => unreachable!("index waiter completed in state {state}"),
        }
    }

    /// # Safety
    ///
    /// The caller holds the cell's lock and the node is `WAITING`.
    pub(in crate::watch_cell) unsafe fn will_wake(&self, waker: &Waker) -> bool {
        self.unparker.with(|u| {
            // SAFETY: guarded by the lock per the contract.
            matches!(unsafe { &*u }, Some(Unparker::Task(current)) if current.will_wake(waker))
        })
    }

    /// # Safety
    ///
    /// The caller holds the cell's lock and the node is `WAITING`.
    pub(in crate::watch_cell) unsafe fn replace_unparker(
        &self,
        unparker: Unparker,
    ) -> Option<Unparker> {
        // SAFETY: guarded by the lock per the contract.
        self.unparker
            .with_mut(|u| unsafe { (*u).replace(unparker) })
    }

    /// # Safety
    ///
    /// The caller holds the cell's lock.
    #[inline]
    unsafe fn next(&self) -> Link<K> {
        // SAFETY: guarded by the lock per the contract.
        self.next.with(|n| unsafe { *n })
    }

    /// # Safety
    ///
    /// The caller holds the cell's lock.
    #[inline]
    unsafe fn prev(&self) -> Link<K> {
        // SAFETY: guarded by the lock per the contract.
        self.prev.with(|p| unsafe { *p })
    }

    /// # Safety
    ///
    /// The caller holds the cell's lock.
    #[inline]
    unsafe fn set_next(&self, next: Link<K>) {
        // SAFETY: guarded by the lock per the contract.
        self.next.with_mut(|n| unsafe { *n = next });
    }

    /// # Safety
    ///
    /// The caller holds the cell's lock.
    #[inline]
    unsafe fn set_prev(&self, prev: Link<K>) {
        // SAFETY: guarded by the lock per the contract.
        self.prev.with_mut(|p| unsafe { *p = prev });
    }
}

/// The registered waiters of one threshold, oldest first: a list linked
/// through the nodes. Never empty while in the map.
struct Fifo<K> {
    head: NonNull<IndexWaiter<K>>,
    tail: NonNull<IndexWaiter<K>>,
}

/// The waiters of one index, by threshold, each threshold's in
/// registration order. Accessed only under the cell's lock.
pub(in crate::watch_cell) struct Core<K> {
    waiters: BTreeMap<K, Fifo<K>>,
    /// Registered nodes, over all lists.
    len: usize,
    /// The key just evaluated by the slot's `evaluate`, taken at once.
    pub(in crate::watch_cell) current: Option<K>,
}

// SAFETY: the core is reachable only through the cell's mutex. Its pointers
// lead to nodes whose data (`K`, an unparker) is `Send`; a modifier on
// another thread writes a `K` into them and moves their unparker out, which
// is what `Send` permits.
unsafe impl<K: Send> Send for Core<K> {}

impl<K> Core<K> {
    pub(in crate::watch_cell) const fn new() -> Self {
        Self {
            waiters: BTreeMap::new(),
            len: 0,
            current: None,
        }
    }
}

impl<K: Ord + Clone> Core<K> {
    /// Links `node` at the tail of its threshold's list.
    ///
    /// # Safety
    ///
    /// The caller holds the cell's lock; `node` is pinned and `IDLE`, and
    /// stays alive until it leaves the list (invariant 2).
    pub(in crate::watch_cell) unsafe fn insert(
        &mut self,
        node: &IndexWaiter<K>,
        unparker: Unparker,
    ) {
        let ptr = NonNull::from(node);
        // SAFETY (all accesses below): we hold the lock; `node` is not yet
        // shared, and `fifo.tail` is registered, hence alive (invariant 2),
        // leaked or not.
        unsafe {
            node.unparker.with_mut(|u| *u = Some(unparker));
            node.set_next(None);
            match self.waiters.get_mut(&node.threshold) {
                Some(fifo) => {
                    node.set_prev(Some(fifo.tail));
                    fifo.tail.as_ref().set_next(Some(ptr));
                    fifo.tail = ptr;
                }
                None => {
                    node.set_prev(None);
                    let fifo = Fifo {
                        head: ptr,
                        tail: ptr,
                    };
                    self.waiters.insert(node.threshold.clone(), fifo);
                }
            }
        }
        self.len += 1;
        node.state.store(WAITING, Ordering::Relaxed);
    }

    /// Unlinks a `WAITING` node on its owner's behalf; returns its unparker.
    ///
    /// # Safety
    ///
    /// The caller holds the cell's lock and `node` is `WAITING` in this core.
    pub(in crate::watch_cell) unsafe fn remove(
        &mut self,
        node: &IndexWaiter<K>,
    ) -> Option<Unparker> {
        // SAFETY (all accesses below): we hold the lock; `node`'s neighbours
        // are registered in the same list, hence alive (invariant 2), even
        // if their futures were leaked: only their links are written, and a
        // leaked node's links are never read by anyone but a lock holder.
        unsafe {
            match (node.prev(), node.next()) {
                (Some(prev), Some(next)) => {
                    prev.as_ref().set_next(Some(next));
                    next.as_ref().set_prev(Some(prev));
                }
                (None, None) => {
                    let unwinding = AbortOnUnwind;
                    let removed = self.waiters.remove_entry(&node.threshold);
                    std::mem::forget(unwinding);
                    debug_assert!(removed.is_some(), "a waiting node is in its index");
                    // The threshold's `Drop` runs with the node unlinked.
                    drop(removed);
                }
                (prev, next) => {
                    let unwinding = AbortOnUnwind;
                    let fifo = self
                        .waiters
                        .get_mut(&node.threshold)
                        .expect("a waiting node is in its index");
                    std::mem::forget(unwinding);
                    if let Some(prev) = prev {
                        prev.as_ref().set_next(None);
                        fifo.tail = prev;
                    }
                    if let Some(next) = next {
                        next.as_ref().set_prev(None);
                        fifo.head = next;
                    }
                }
            }
        }
        self.len -= 1;
        node.state.store(IDLE, Ordering::Relaxed);
        // SAFETY: guarded by the lock; the node is no longer registered.
        node.unparker.with_mut(|u| unsafe { (*u).take() })
    }

    /// Completes the nodes of `fifo`, a list in the map, oldest first,
    /// giving each `output()`, until it is empty; the caller then removes it
    /// from the map. The list stays well formed after each node: if `output`
    /// (`K::clone`) panics, the nodes not yet completed stay registered in
    /// it, and the map stays consistent.
    ///
    /// # Safety
    ///
    /// The caller holds the cell's lock, and `fifo` is in this core's map.
    unsafe fn complete_list(
        fifo: &mut Fifo<K>,
        len: &mut usize,
        state: u8,
        mut output: impl FnMut() -> Option<K>,
        wakes: &mut WakeList,
    ) {
        loop {
            // Before touching the node: a panic here changes nothing.
            let output = output();
            // SAFETY: the head is registered, hence alive (invariant 2).
            let node = unsafe { fifo.head.as_ref() };
            // SAFETY (links, output, unparker): guarded by the lock; the
            // output is published by the `Release` store below.
            let next = unsafe { node.next() };
            node.output.with_mut(|o| unsafe { *o = output });
            if let Some(unparker) = node.unparker.with_mut(|u| unsafe { (*u).take() }) {
                wakes.push(unparker);
            }
            *len -= 1;
            if let Some(next) = next {
                // SAFETY: `next` is registered in this list, hence alive.
                unsafe { next.as_ref().set_prev(None) };
                fifo.head = next;
            }
            // The last access to the node (invariant 3): the list no longer
            // leads to it.
            node.state.store(state, Ordering::Release);
            if next.is_none() {
                return;
            }
        }
    }
}

/// Aborts the process when dropped, which only unwinding does (it is
/// forgotten otherwise): a panic in `K`'s `Ord` while a node is being
/// unlinked would leave the map pointing to a node its owner is about to
/// free.
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        std::process::abort();
    }
}

/// The `K`-typed operations the cell runs on an index without knowing `K`.
pub(in crate::watch_cell) trait ErasedCore: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn len(&self) -> usize;
    /// Completes every waiter whose threshold the key just evaluated (left
    /// in `current`) has reached.
    fn complete_reached(&mut self, wakes: &mut WakeList);
    /// Completes every waiter with `Closed`.
    fn close_all(&mut self, wakes: &mut WakeList);
}

impl<K: Ord + Clone + Send + 'static> ErasedCore for Core<K> {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn len(&self) -> usize {
        self.len
    }

    fn complete_reached(&mut self, wakes: &mut WakeList) {
        let key = self.current.take().expect("evaluated just now");
        if matches!(self.waiters.last_key_value(), Some((highest, _)) if *highest <= key) {
            // Everyone: room for every wake-up at once.
            wakes.reserve(self.len);
        }
        // Lowest threshold first; O(log T) when nobody is satisfied, the
        // usual case. Each list leaves the map once completed, so a panic
        // in `K`'s `Ord` or `Clone` leaves every node not yet completed
        // registered, in a consistent map.
        while let Some(mut entry) = self.waiters.first_entry() {
            if *entry.key() > key {
                break;
            }
            // SAFETY: `&mut self` means the caller holds the lock; the list
            // is in the map.
            unsafe {
                Self::complete_list(
                    entry.get_mut(),
                    &mut self.len,
                    SATISFIED,
                    || Some(key.clone()),
                    wakes,
                );
            }
            entry.remove();
        }
    }

    fn close_all(&mut self, wakes: &mut WakeList) {
        wakes.reserve(self.len);
        while let Some(mut entry) = self.waiters.first_entry() {
            // SAFETY: as in `complete_reached`.
            unsafe { Self::complete_list(entry.get_mut(), &mut self.len, CLOSED, || None, wakes) };
            entry.remove();
        }
    }
}

/// The core of an index whose handle knows its key type.
pub(in crate::watch_cell) fn core_of<K: 'static>(core: &mut dyn ErasedCore) -> &mut Core<K> {
    core.as_any_mut()
        .downcast_mut::<Core<K>>()
        .expect("an index's core has its handle's key type")
}
