//! Injected monotonic time.
//!
//! Every primitive that reasons about deadlines (heartbeats, validity, lease
//! ticks, recovery backoff) reads time through a [`Clock`], so tests can drive
//! it by hand instead of sleeping.
//!
//! | clock | `now()` | `sleep_until` | use it for |
//! |---|---|---|---|
//! | [`SystemClock`] | tokio's monotonic clock, plus time spent suspended | `tokio::time::sleep_until` | production, and tests with tokio's paused time |
//! | [`ManualClock`] | moves only on [`ManualClock::advance`] | wakes when advanced past the deadline | deterministic tests, no runtime timer needed |
//!
//! # Examples
//!
//! ```
//! use leasehold::clock::{Clock, ManualClock};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let start = clock.now();
//! clock.advance(Duration::from_secs(30));
//! assert_eq!(clock.now() - start, Duration::from_secs(30));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::sync::Mutex;

/// A boxed future returned by [`Clock::sleep_until`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of monotonic time that can also sleep.
///
/// Implementations must never go backwards. Pass clocks around as
/// `Arc<dyn Clock>` (see [`system`]); both provided clocks are cheap to share.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant. Never earlier than a previously returned one.
    fn now(&self) -> Instant;

    /// A future that completes once `now() >= deadline`.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the sleep and has no other effect.
    fn sleep_until(&self, deadline: Instant) -> Sleep;

    /// A future that completes once `duration` has elapsed from now.
    fn sleep(&self, duration: Duration) -> Sleep {
        self.sleep_until(self.now() + duration)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        (**self).sleep_until(deadline)
    }
}

/// The shared system clock, as `Arc<dyn Clock>`.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The real monotonic clock, read through tokio so that it follows tokio's
/// paused time (`#[tokio::test(start_paused = true)]`) in tests, and
/// **counting time the machine spent suspended**.
///
/// `std::time::Instant` (`CLOCK_MONOTONIC` on Linux) stops while the machine
/// is suspended, so a deadline measured on it would still lie ahead after a
/// suspend that made every other machine give up on this one. On Linux,
/// `now()` adds the time spent suspended since the process first read the
/// clock (`CLOCK_BOOTTIME - CLOCK_MONOTONIC`, in whole milliseconds), so a
/// suspended writer's validity has expired when it wakes up. Elsewhere it is
/// tokio's monotonic clock alone.
///
/// `now()` works anywhere; outside a tokio runtime it is `Instant::now()`
/// plus the suspended time. `sleep_until` must be polled inside a tokio
/// runtime with the time driver enabled; a suspend that happens *during* a
/// sleep lengthens that sleep (the timer does not count it), which only ever
/// makes a tick late, never a deadline early.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std() + suspended::total()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let deadline = deadline.checked_sub(suspended::total()).unwrap_or(deadline);
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

/// Time spent suspended since this process first asked.
mod suspended {
    use std::time::Duration;

    #[cfg(all(target_os = "linux", not(miri)))]
    pub(super) fn total() -> Duration {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};

        /// `BOOTTIME - MONOTONIC` at the first call, in nanoseconds.
        static BASE: OnceLock<i128> = OnceLock::new();
        /// The largest suspended total returned so far, in milliseconds:
        /// `now()` must never go backwards, even if two reads jitter.
        static SEEN_MS: AtomicU64 = AtomicU64::new(0);

        let gap = boottime_minus_monotonic();
        let base = *BASE.get_or_init(|| gap);
        // Whole milliseconds only: the two reads are not simultaneous, and
        // their sub-millisecond jitter must not show up as suspended time.
        let ms = u64::try_from((gap - base).max(0) / 1_000_000).unwrap_or(u64::MAX);
        let ms = SEEN_MS.fetch_max(ms, Ordering::Relaxed).max(ms);
        Duration::from_millis(ms)
    }

    #[cfg(not(all(target_os = "linux", not(miri))))]
    pub(super) fn total() -> Duration {
        Duration::ZERO
    }

    #[cfg(all(target_os = "linux", not(miri)))]
    fn boottime_minus_monotonic() -> i128 {
        fn read(clock: libc::clockid_t) -> i128 {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, writable timespec; both clock ids exist
            // on every Linux this crate supports (2.6.39+).
            let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
            assert_eq!(rc, 0, "clock_gettime({clock}) failed");
            i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
        }
        read(libc::CLOCK_BOOTTIME) - read(libc::CLOCK_MONOTONIC)
    }
}

/// A clock that moves only when told to: deterministic tests of deadlines.
///
/// Clones share the same time. Sleeps complete (and their tasks are woken)
/// as soon as [`advance`](ManualClock::advance) moves the time past their
/// deadline; they need no timer driver and no runtime.
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

struct ManualInner {
    origin: Instant,
    state: Mutex<ManualState>,
}

#[derive(Default)]
struct ManualState {
    elapsed: Duration,
    next_id: u64,
    /// Pending sleeps by (deadline, id): `advance` splits off the expired prefix.
    sleepers: BTreeMap<(Instant, u64), Waker>,
}

impl ManualClock {
    /// A clock starting at the current real instant, frozen there.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(ManualInner {
                origin: Instant::now(),
                state: Mutex::new(ManualState::default()),
            }),
        }
    }

    /// Moves time forward by `by` and wakes every sleep whose deadline passed.
    pub fn advance(&self, by: Duration) {
        let expired = {
            let mut state = self.inner.state.lock();
            state.elapsed += by;
            let now = self.inner.origin + state.elapsed;
            // Keys strictly after (now, MAX) are still pending.
            let pending = state.sleepers.split_off(&(now, u64::MAX));
            std::mem::replace(&mut state.sleepers, pending)
        };
        for waker in expired.into_values() {
            waker.wake();
        }
    }

    /// Total time advanced since the clock was created.
    pub fn elapsed(&self) -> Duration {
        self.inner.state.lock().elapsed
    }

    /// Number of sleeps currently waiting on this clock: lets a test know a
    /// background task has reached its sleep before advancing time.
    pub fn pending_sleeps(&self) -> usize {
        self.inner.state.lock().sleepers.len()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("ManualClock")
            .field("elapsed", &state.elapsed)
            .field("pending_sleeps", &state.sleepers.len())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.origin + self.inner.state.lock().elapsed
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(ManualSleep {
            inner: Arc::clone(&self.inner),
            deadline,
            key: None,
        })
    }
}

struct ManualSleep {
    inner: Arc<ManualInner>,
    deadline: Instant,
    key: Option<(Instant, u64)>,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut state = this.inner.state.lock();
        if this.inner.origin + state.elapsed >= this.deadline {
            if let Some(key) = this.key.take() {
                state.sleepers.remove(&key);
            }
            return Poll::Ready(());
        }
        let key = *this.key.get_or_insert_with(|| {
            state.next_id += 1;
            (this.deadline, state.next_id)
        });
        // Re-inserting also covers a sleep that `advance` removed but whose
        // deadline has not passed (it cannot happen today, but costs nothing).
        state.sleepers.insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.inner.state.lock().sleepers.remove(&key);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn manual_sleep_completes_only_after_advance_past_deadline() {
        let clock = ManualClock::new();
        let mut sleep = clock.sleep(Duration::from_secs(10));
        assert!((&mut sleep).now_or_never().is_none());
        assert_eq!(clock.pending_sleeps(), 1);
        clock.advance(Duration::from_secs(9));
        assert!((&mut sleep).now_or_never().is_none());
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.pending_sleeps(), 0);
        assert!(sleep.now_or_never().is_some());
    }

    #[test]
    fn dropped_manual_sleep_deregisters() {
        let clock = ManualClock::new();
        let mut sleep = clock.sleep(Duration::from_secs(1));
        assert!((&mut sleep).now_or_never().is_none());
        drop(sleep);
        assert_eq!(clock.pending_sleeps(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn system_clock_follows_paused_time() {
        let clock = SystemClock;
        let start = clock.now();
        clock.sleep(Duration::from_secs(3600)).await;
        assert!(clock.now() - start >= Duration::from_secs(3600));
    }
}
