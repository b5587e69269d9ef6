//! The synchronization shim: the one module that names `loom`.
//!
//! Everything in the crate that loom must see (mutexes, atomics, `UnsafeCell`,
//! thread parking, and the time a blocking wait compares its deadline with)
//! is imported from here. Normally these are `parking_lot` and `std` types;
//! under `--cfg loom` they are loom's mocks, so the models in `loom-tests/`
//! explore every interleaving of the real code.

#[cfg(not(loom))]
#[allow(unused_imports)] // the shim offers a fixed toolkit; not every item is used by every primitive
mod imp {
    pub(crate) use std::sync::Arc;
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
    pub(crate) use std::thread::{Thread, current, park};
    pub(crate) use std::time::Instant;

    /// A non-poisoning mutex (`parking_lot`): closure-scoped access means a
    /// panicking closure unwinds through the guard, and the cell stays usable.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(parking_lot::Mutex::new(value))
        }

        #[inline]
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }

        #[inline]
        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock()
        }
    }

    /// `UnsafeCell` with loom's closure API, so the same code compiles against both.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        #[inline]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        #[inline]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// The monotonic time that blocking deadlines are measured against.
    #[inline]
    pub(crate) fn now() -> Instant {
        Instant::now()
    }

    /// Parks the current thread for at most `timeout` (may return spuriously).
    #[inline]
    pub(crate) fn park_timeout(timeout: std::time::Duration) {
        std::thread::park_timeout(timeout);
    }
}

#[cfg(loom)]
#[allow(unused_imports)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
    pub(crate) use loom::thread::{Thread, current, park};
    pub(crate) use std::time::Instant;

    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            // Closures that panic are caught before they unwind through a guard,
            // so poisoning never happens in the models.
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }

        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }
    }

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Self {
            Self::new(T::default())
        }
    }

    loom::lazy_static! {
        static ref ORIGIN: Instant = Instant::now();
        static ref ELAPSED_NANOS: AtomicU64 = AtomicU64::new(0);
    }

    /// Under loom, time is a model variable: it only moves when a model calls
    /// [`advance`], so deadline races are explored deterministically.
    pub(crate) fn now() -> Instant {
        *ORIGIN + std::time::Duration::from_nanos(ELAPSED_NANOS.load(Ordering::SeqCst))
    }

    /// Advances the modelled time.
    pub(crate) fn advance(by: std::time::Duration) {
        ELAPSED_NANOS.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }

    /// A timed park is a yield under loom: the waiter re-checks the modelled
    /// time and its state, exactly as after a spurious wake-up.
    pub(crate) fn park_timeout(_timeout: std::time::Duration) {
        loom::thread::yield_now();
    }
}

pub(crate) use imp::*;
