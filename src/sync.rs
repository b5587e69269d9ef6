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

    /// Spends one unit of tokio's task budget (a no-op outside a runtime).
    pub(crate) use tokio::task::coop::poll_proceed;
}

#[cfg(loom)]
#[allow(unused_imports)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::Arc;
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
    pub(crate) use loom::thread::{Thread, current, park};
    pub(crate) use std::time::Instant;

    /// A non-poisoning mutex, as `parking_lot`'s is. Loom's own `Mutex`
    /// wraps a std mutex and unwraps its poisoning on every `lock`, so a
    /// predicate that panics under the lock (its panic is meant to resume on
    /// the waiter's thread, with the cell still usable) would fail the model
    /// where `parking_lot` carries on.
    ///
    /// This one is built from a loom `Mutex<bool>` ("held") and a `Condvar`,
    /// whose guard is held only inside `lock` and the guard's `drop`, never
    /// while a caller's code runs, so it is never poisoned (a guard taken
    /// while already unwinding does not poison either). Loom sees the
    /// acquire/release of its mutex, and the data sits in a loom
    /// `UnsafeCell`, so loom still checks that every access is under the lock.
    #[derive(Debug)]
    pub(crate) struct Mutex<T> {
        held: loom::sync::Mutex<bool>,
        released: loom::sync::Condvar,
        data: UnsafeCell<T>,
    }

    // SAFETY: the lock hands out `&mut T` to one thread at a time, as
    // `std::sync::Mutex` does.
    unsafe impl<T: Send> Send for Mutex<T> {}
    // SAFETY: as above.
    unsafe impl<T: Send> Sync for Mutex<T> {}

    /// Holds the lock; dereferences to the data.
    pub(crate) struct MutexGuard<'a, T> {
        mutex: &'a Mutex<T>,
        /// Loom's record of this exclusive access; dropped before unlocking.
        data: Option<loom::cell::MutPtr<T>>,
    }

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self {
                held: loom::sync::Mutex::new(false),
                released: loom::sync::Condvar::new(),
                data: UnsafeCell::new(value),
            }
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            let mut held = self.held.lock().expect("never poisoned");
            while *held {
                held = self.released.wait(held).expect("never poisoned");
            }
            *held = true;
            drop(held);
            self.guard()
        }

        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            let mut held = self.held.lock().expect("never poisoned");
            if *held {
                return None;
            }
            *held = true;
            drop(held);
            Some(self.guard())
        }

        fn guard(&self) -> MutexGuard<'_, T> {
            MutexGuard {
                mutex: self,
                data: Some(self.data.get_mut()),
            }
        }
    }

    impl<T> std::ops::Deref for MutexGuard<'_, T> {
        type Target = T;

        fn deref(&self) -> &T {
            // SAFETY: the guard holds the lock, so this is the only access.
            unsafe { self.data.as_ref().expect("guard holds the lock").deref() }
        }
    }

    impl<T> std::ops::DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: as in `deref`, and `&mut self` makes it exclusive.
            unsafe { self.data.as_ref().expect("guard holds the lock").deref() }
        }
    }

    impl<T> Drop for MutexGuard<'_, T> {
        /// Unlocks, also while unwinding: no poisoning.
        fn drop(&mut self) {
            self.data = None;
            *self.mutex.held.lock().expect("never poisoned") = false;
            // `notify_all`, not `notify_one`: loom's `Thread::unpark` ends a
            // thread's condvar wait early (unlike std, where it only sets the
            // park token), and a `notify_one` that then goes to that thread
            // would leave a real waiter blocked on a free lock, a deadlock
            // that exists only in the model.
            self.mutex.released.notify_all();
        }
    }

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Self {
            Self::new(T::default())
        }
    }

    /// Tokio's task budget is not modelled: every poll may proceed.
    pub(crate) fn poll_proceed(_cx: &mut std::task::Context<'_>) -> std::task::Poll<Unbudgeted> {
        std::task::Poll::Ready(Unbudgeted)
    }

    /// What [`poll_proceed`] hands back under loom.
    pub(crate) struct Unbudgeted;

    impl Unbudgeted {
        pub(crate) fn made_progress(&self) {}
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
