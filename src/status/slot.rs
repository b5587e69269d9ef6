//! [`OutcomeSlot`]: where a status channel keeps its published outcome, so
//! that receivers read it without taking a lock.

use std::fmt;

use super::SyncStatus;
use crate::sync::{AtomicU8, Ordering, UnsafeCell};

/// Nothing stored yet.
const EMPTY: u8 = 0;
/// A `set` claimed the slot and is storing its value.
const STORING: u8 = 1;
/// The value is stored; it never changes again.
const STORED: u8 = 2;

/// A write-once slot: the first [`set`](Self::set) stores a value that every
/// thread may then read by reference, without locking, for as long as the
/// slot lives.
///
/// The value is written once, before the `Release` store of `STORED`, and
/// never again; a reader that loads `STORED` with `Acquire` sees it whole.
/// Readers on several threads share `&O`: hence `Sync` only for `O: Sync`.
pub(super) struct OutcomeSlot<O> {
    state: AtomicU8,
    /// Written once, by the `set` that moved `state` from `EMPTY` to
    /// `STORING`; read only after `state` was seen `STORED`.
    value: UnsafeCell<Option<O>>,
}

// SAFETY: the slot owns its value; sending it sends an `O`.
unsafe impl<O: Send> Send for OutcomeSlot<O> {}
// SAFETY: through `&OutcomeSlot`, one thread moves an `O` in (`O: Send`),
// and then any number of threads read `&O` at once (`O: Sync`). The
// `STORING` claim makes that one write exclusive, and no read overlaps it
// (see `get`).
unsafe impl<O: Send + Sync> Sync for OutcomeSlot<O> {}

impl<O> OutcomeSlot<O> {
    pub(super) fn new() -> Self {
        Self {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(None),
        }
    }

    /// Stores `value` if nothing was stored yet; otherwise hands it back.
    pub(super) fn set(&self, value: O) -> Result<(), O> {
        // Relaxed: the claim only makes this the one writer; what it writes
        // is published by the `Release` store below.
        if self
            .state
            .compare_exchange(EMPTY, STORING, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return Err(value);
        }
        // SAFETY: the claim above makes this the only write, ever, and no
        // reader touches the value before it sees `STORED`, stored below
        // after this write.
        self.value.with_mut(|v| unsafe { *v = Some(value) });
        self.state.store(STORED, Ordering::Release);
        Ok(())
    }

    /// Whether a value is stored.
    pub(super) fn is_set(&self) -> bool {
        self.state.load(Ordering::Acquire) == STORED
    }

    /// Calls `f` on the stored value, if there is one.
    pub(super) fn get<R>(&self, f: impl FnOnce(&O) -> R) -> Option<R> {
        if !self.is_set() {
            return None;
        }
        self.value.with(|v| {
            // SAFETY: `STORED` was loaded with `Acquire`, after the one write
            // (`Release`); nothing writes the value again while the slot
            // lives, so shared reads are all that can follow.
            let value = unsafe { &*v }.as_ref();
            Some(f(value.expect("a stored slot holds its value")))
        })
    }

    /// The status the slot stands for: `Done` once a value is stored.
    pub(super) fn status(&self) -> SyncStatus<O>
    where
        O: Clone,
    {
        self.get(O::clone)
            .map_or(SyncStatus::Pending, SyncStatus::Done)
    }
}

impl<O: fmt::Debug> fmt::Debug for OutcomeSlot<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.get(|value| write!(f, "Done({value:?})")) {
            Some(written) => written,
            None => f.write_str("Pending"),
        }
    }
}
