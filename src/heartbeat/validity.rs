//! [`Validity`], the token, and [`ValidityController`], its controlling half.
//!
//! # How the token stays lock-free and lossless
//!
//! The truth lives in two atomics: `reason` (0 while valid, else the first
//! [`InvalidReason`]'s code) and `deadline` (nanoseconds since the token's
//! origin on its [`Clock`], plus a `FROZEN` bit). A reader loads `reason`,
//! then reads the clock, then loads `deadline`: no lock, no allocation.
//! The clock comes first so that the deadline compared is never older than
//! the time it is compared with; an extension that landed before the clock
//! read is always seen.
//!
//! Expiry is lazy, so nobody has to be awake at the deadline for readers to
//! see it. It is also *sticky*: the reader that first sees `now >= deadline`
//! sets `FROZEN` in the deadline word with a CAS against the very deadline it
//! compared, then records `Expired` in `reason`. Extensions CAS the deadline
//! word too, against the deadline they checked. So an extension racing a
//! reader either lands first (the reader's CAS fails and it looks again,
//! seeing the new deadline) or finds the word frozen and is refused: an
//! accepted extension is never undone, and no reader can see "expired" and a
//! later reader "valid".
//!
//! Wake-ups go through a [`WatchCell`] holding the recorded reason. An
//! invalidation writes the atomic first and the cell second; a waiter checks
//! the atomics and then registers a predicate on the cell, so an invalidation
//! either is seen by the check or wakes the registration. Extensions do not
//! touch the cell: a waiter sleeping until the old deadline re-checks there
//! and re-arms its sleep for the new one.

use std::fmt;
use std::future::{Future, IntoFuture, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::future::select;

use super::error::{Invalid, InvalidReason};
use crate::WatchCell;
use crate::clock::Clock;
use crate::sync::{self, Arc, AtomicU8, AtomicU64, Ordering};
use crate::watch_cell::WaitTimeoutError;

/// `reason` while the token is valid.
const VALID: u8 = 0;

/// The bit of the deadline word set when the deadline was found passed: the
/// deadline is final from then on.
const FROZEN: u64 = 1 << 63;

/// The latest representable deadline (about 292 years after the origin).
const MAX_DEADLINE: u64 = FROZEN - 1;

/// What one look at the atomics and the clock found.
enum Observed {
    Valid {
        now: u64,
        deadline: u64,
    },
    /// `now >= deadline`, and the deadline is not frozen yet.
    Due {
        deadline: u64,
    },
    Invalid(InvalidReason),
}

/// A cheap, cloneable token that says whether the owner may still act on
/// something it holds (a changelog entry, a lease): valid until its deadline
/// passes or it is invalidated, whichever comes first.
///
/// Pick it over "is my heartbeat task still running?" (`JoinHandle::is_finished`)
/// or a `CancellationToken`: those stay "fine" while a heartbeat hangs in a
/// slow RPC or the process is paused, long after others have given up on the
/// entry. A `Validity` turns invalid *at the deadline*, measured on its
/// [`Clock`], with no help from any task.
///
/// Tokens come from a [`Heartbeat`](super::Heartbeat) or from a
/// [`ValidityController`]. Clones share the same state.
///
/// # Examples
///
/// ```
/// use leasehold::clock::{Clock, ManualClock};
/// use leasehold::heartbeat::{InvalidReason, ValidityController};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let controller = ValidityController::new(Arc::new(clock.clone()), clock.now() + Duration::from_secs(30));
/// let validity = controller.validity();
/// assert_eq!(validity.check(), Ok(Duration::from_secs(30)));
///
/// clock.advance(Duration::from_secs(30)); // nobody extended it
/// assert!(!validity.is_valid());
/// assert_eq!(validity.check().unwrap_err().reason, InvalidReason::Expired);
/// ```
#[derive(Clone)]
pub struct Validity {
    shared: Arc<Shared>,
}

struct Shared {
    clock: std::sync::Arc<dyn Clock>,
    /// The instant `deadline` counts from.
    origin: Instant,
    /// Nanoseconds from `origin`, at most `MAX_DEADLINE`; only ever grows,
    /// until [`FROZEN`] is set in it.
    deadline: AtomicU64,
    /// `VALID`, or the first reason's code; set once, never cleared.
    reason: AtomicU8,
    /// The recorded reason, for wake-ups (see the module docs).
    events: WatchCell<Option<InvalidReason>>,
}

impl Shared {
    fn nanos_since_origin(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX)
            .min(MAX_DEADLINE)
    }

    fn instant_at(&self, nanos: u64) -> Instant {
        self.origin + Duration::from_nanos(nanos & MAX_DEADLINE)
    }

    /// The remaining time, or why the token is invalid. Lock-free.
    #[inline]
    fn remaining(&self) -> Result<Duration, InvalidReason> {
        loop {
            match self.observe() {
                Observed::Valid { now, deadline } => {
                    return Ok(Duration::from_nanos(deadline - now));
                }
                Observed::Invalid(reason) => return Err(reason),
                Observed::Due { deadline } => {
                    if let Some(reason) = self.freeze(deadline) {
                        return Err(reason);
                    }
                    // The deadline moved since it was compared: look again.
                }
            }
        }
    }

    /// One look at the token: the reason, then the clock, then the deadline.
    ///
    /// The clock is read *before* the deadline is loaded, so the deadline
    /// compared is at least as recent as the time it is compared with: an
    /// extension that landed before that time was read is always seen.
    #[inline]
    fn observe(&self) -> Observed {
        let reason = self.reason.load(Ordering::SeqCst);
        if reason != VALID {
            return Observed::Invalid(decode(reason));
        }
        let now = self.nanos_since_origin(self.clock.now());
        let deadline = self.deadline.load(Ordering::SeqCst);
        if deadline & FROZEN != 0 {
            Observed::Invalid(self.record_expiry())
        } else if now < deadline {
            Observed::Valid { now, deadline }
        } else {
            Observed::Due { deadline }
        }
    }

    /// Fixes the token as expired if its deadline is still `deadline`, the
    /// one found passed; `None` if the deadline moved meanwhile.
    ///
    /// The CAS is on the deadline word itself, against the value compared:
    /// an extension that lands between the comparison and this step makes it
    /// fail, so an accepted extension is never undone by a stale comparison.
    /// Once frozen, the deadline never moves again (see `extend`).
    #[cold]
    fn freeze(&self, deadline: u64) -> Option<InvalidReason> {
        self.deadline
            .compare_exchange(
                deadline,
                deadline | FROZEN,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .ok()
            .map(|_| self.record_expiry())
    }

    /// Records `Expired` for a frozen deadline (the first reason wins).
    #[cold]
    fn record_expiry(&self) -> InvalidReason {
        match self.reason.compare_exchange(
            VALID,
            InvalidReason::Expired.code(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => InvalidReason::Expired,
            Err(actual) => decode(actual),
        }
    }

    /// Moves the deadline to `to` if that is later, unless the token is
    /// invalid or its deadline has passed; returns the remaining time.
    fn extend(&self, to: u64) -> Result<Duration, InvalidReason> {
        loop {
            let (now, deadline) = match self.observe() {
                Observed::Valid { now, deadline } => (now, deadline),
                Observed::Invalid(reason) => return Err(reason),
                Observed::Due { deadline } => match self.freeze(deadline) {
                    Some(reason) => return Err(reason),
                    None => continue,
                },
            };
            if to <= deadline {
                return Ok(Duration::from_nanos(deadline - now));
            }
            // Against the deadline compared with `now`: a reader that froze it
            // in the meantime wins, and the extension is refused.
            if self
                .deadline
                .compare_exchange(deadline, to, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Ok(Duration::from_nanos(to - now));
            }
        }
    }

    /// Records `reason` unless another one came first, then wakes waiters.
    /// Returns whether `reason` is the one recorded.
    fn invalidate(&self, reason: InvalidReason) -> bool {
        let (won, recorded) = match self.reason.compare_exchange(
            VALID,
            reason.code(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => (true, reason),
            Err(actual) => (false, decode(actual)),
        };
        // Also when we lost: a reader may have fixed the token as expired
        // lock-free, without waking anyone; waiters learn it here.
        self.events.modify_if(|event| {
            let wake = event.is_none();
            if wake {
                *event = Some(recorded);
            }
            wake
        });
        won
    }
}

fn decode(code: u8) -> InvalidReason {
    InvalidReason::from_code(code).expect("validity reason codes are written by this module")
}

impl Validity {
    /// Whether the token is valid right now: not invalidated, and its
    /// deadline not reached on its clock.
    ///
    /// Takes no lock and allocates nothing (it reads two atomics and the
    /// clock; [`ManualClock`](crate::clock::ManualClock) itself locks to read
    /// its time, [`SystemClock`](crate::clock::SystemClock) does not).
    ///
    /// # Examples
    ///
    /// ```
    /// # use leasehold::{clock, heartbeat::{InvalidReason, ValidityController}};
    /// # use std::time::Duration;
    /// let controller = ValidityController::valid_for(clock::system(), Duration::from_secs(30));
    /// let validity = controller.validity();
    /// assert!(validity.is_valid());
    /// controller.invalidate(InvalidReason::Stopped);
    /// assert!(!validity.is_valid());
    /// ```
    #[inline]
    pub fn is_valid(&self) -> bool {
        self.shared.remaining().is_ok()
    }

    /// The time left before the deadline, or why the token is invalid.
    ///
    /// Lock-free, as [`is_valid`](Self::is_valid).
    ///
    /// # Errors
    ///
    /// [`Invalid`] with the first recorded reason, or
    /// [`InvalidReason::Expired`] if the deadline has passed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use leasehold::{clock::{Clock, ManualClock}, heartbeat::{InvalidReason, ValidityController}};
    /// # use std::{sync::Arc, time::Duration};
    /// let clock = ManualClock::new();
    /// let controller = ValidityController::new(Arc::new(clock.clone()), clock.now() + Duration::from_secs(10));
    /// clock.advance(Duration::from_secs(4));
    /// assert_eq!(controller.validity().check(), Ok(Duration::from_secs(6)));
    /// ```
    #[inline]
    pub fn check(&self) -> Result<Duration, Invalid> {
        self.shared.remaining().map_err(Invalid::from)
    }

    /// The current deadline on the token's clock: the instant at which it
    /// expires unless extended. Still answers after the token was
    /// invalidated (the last deadline it had).
    ///
    /// ```
    /// # use leasehold::{clock::{Clock, ManualClock}, heartbeat::ValidityController};
    /// # use std::{sync::Arc, time::Duration};
    /// let clock = ManualClock::new();
    /// let deadline = clock.now() + Duration::from_secs(10);
    /// let controller = ValidityController::new(Arc::new(clock), deadline);
    /// assert_eq!(controller.validity().deadline(), deadline);
    /// ```
    pub fn deadline(&self) -> Instant {
        self.shared
            .instant_at(self.shared.deadline.load(Ordering::SeqCst))
    }

    /// Waits until the token is invalid, and returns why: at an
    /// invalidation, or when the deadline passes (re-arming when the
    /// deadline is extended meanwhile).
    ///
    /// The deadline is slept on the token's [`Clock`]: with
    /// [`SystemClock`](crate::clock::SystemClock) this needs a tokio runtime
    /// with the time driver; a [`ManualClock`](crate::clock::ManualClock)
    /// wakes it when advanced past the deadline, on any executor.
    ///
    /// # Panics
    ///
    /// With [`SystemClock`](crate::clock::SystemClock), when polled outside a
    /// tokio runtime with the time driver enabled (as `tokio::time::sleep`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes the token.
    ///
    /// # Examples
    ///
    /// ```
    /// # use leasehold::{clock, heartbeat::{InvalidReason, ValidityController}};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let controller = ValidityController::valid_for(clock::system(), Duration::from_secs(30));
    /// let validity = controller.validity();
    /// // Paused time: the sleep to the deadline completes without waiting.
    /// assert_eq!(validity.invalidated().await, InvalidReason::Expired);
    /// # }
    /// ```
    pub async fn invalidated(&self) -> InvalidReason {
        loop {
            let deadline = match self.shared.remaining() {
                Err(reason) => return reason,
                Ok(_) => self.deadline(),
            };
            let recorded = pin!(self.shared.events.wait_for(Option::is_some));
            let expiry = self.shared.clock.sleep_until(deadline);
            // Either way, loop to re-check: the atomics are the truth, and the
            // deadline may have been extended while we slept.
            let _ = select(recorded, expiry).await;
        }
    }

    /// Blocks the current thread until the token is invalid; returns why.
    ///
    /// Same semantics as [`invalidated`](Self::invalidated), for threads
    /// outside any runtime. Do not call it from an async task.
    ///
    /// The remaining validity is measured on the token's clock but slept in
    /// real time (the thread parks). With
    /// [`SystemClock`](crate::clock::SystemClock) the two agree. With a
    /// [`ManualClock`](crate::clock::ManualClock), advancing the clock does
    /// *not* wake a parked thread: it wakes at an invalidation (a
    /// [`Heartbeat`](super::Heartbeat) records its expiry as one), or after
    /// the remaining time has passed in real time. Tests with a manual clock
    /// should use [`blocking_invalidated_timeout`](Self::blocking_invalidated_timeout)
    /// or invalidate explicitly.
    ///
    /// # Examples
    ///
    /// ```
    /// # use leasehold::{clock, heartbeat::{InvalidReason, ValidityController}};
    /// # use std::time::Duration;
    /// let controller = ValidityController::valid_for(clock::system(), Duration::from_secs(3600));
    /// let validity = controller.validity();
    /// std::thread::scope(|s| {
    ///     s.spawn(|| controller.invalidate(InvalidReason::Fenced));
    ///     assert_eq!(validity.blocking_invalidated(), InvalidReason::Fenced);
    /// });
    /// ```
    pub fn blocking_invalidated(&self) -> InvalidReason {
        self.blocking_wait(None)
            .expect("a wait without a timeout ends only at invalidation")
    }

    /// Like [`blocking_invalidated`](Self::blocking_invalidated), giving up
    /// after `timeout` of real time; `None` if the token is still valid then.
    ///
    /// # Examples
    ///
    /// ```
    /// # use leasehold::{clock, heartbeat::ValidityController};
    /// # use std::time::Duration;
    /// let controller = ValidityController::valid_for(clock::system(), Duration::from_secs(3600));
    /// assert_eq!(controller.validity().blocking_invalidated_timeout(Duration::from_millis(1)), None);
    /// ```
    pub fn blocking_invalidated_timeout(&self, timeout: Duration) -> Option<InvalidReason> {
        // No deadline at all if `now + timeout` overflows.
        self.blocking_wait(Some(sync::now().checked_add(timeout)))
    }

    /// `give_up`: `None` waits forever; `Some(None)` is a timeout too far
    /// away to represent (also forever); `Some(Some(at))` gives up at `at`.
    fn blocking_wait(&self, give_up: Option<Option<Instant>>) -> Option<InvalidReason> {
        let give_up = give_up.flatten();
        loop {
            let remaining = match self.shared.remaining() {
                Err(reason) => return Some(reason),
                Ok(remaining) => remaining,
            };
            let now = sync::now();
            let expiry = now.checked_add(remaining);
            let until = match (expiry, give_up) {
                (Some(expiry), Some(give_up)) => Some(expiry.min(give_up)),
                (expiry, give_up) => expiry.or(give_up),
            };
            let waited = match until {
                Some(until) => self
                    .shared
                    .events
                    .blocking_wait_for_deadline(Option::is_some, until),
                None => self
                    .shared
                    .events
                    .blocking_wait_for(Option::is_some)
                    .map_err(WaitTimeoutError::from),
            };
            if waited == Err(WaitTimeoutError::TimedOut)
                && give_up.is_some_and(|give_up| sync::now() >= give_up)
            {
                return self.shared.remaining().err();
            }
        }
    }

    /// Runs `commit` only while the token is valid, bounded by the remaining
    /// validity; returns its output, or [`Invalid`] if the token is (or
    /// turns) invalid first.
    ///
    /// `commit` is polled only after a check that the token is valid, so it
    /// makes progress only while valid. If it is still pending when the
    /// deadline passes or the token is invalidated, it is dropped (cancelled)
    /// and `Err(Invalid)` is returned at that moment, even if `commit` would
    /// never complete. Output of a poll that completes is returned: a commit
    /// whose last step began before the deadline is reported as done, never
    /// hidden. Choose the [`Heartbeat`](super::Heartbeat) margin to cover the
    /// time a step may take to land after it began.
    ///
    /// # Errors
    ///
    /// [`Invalid`] if the token was invalid before `commit` was first polled,
    /// or became invalid while it was pending.
    ///
    /// # Panics
    ///
    /// If `commit` panics. With [`SystemClock`](crate::clock::SystemClock),
    /// if `commit` is pending outside a tokio runtime with the time driver
    /// (the deadline is slept as [`invalidated`](Self::invalidated) does).
    ///
    /// # Cancel safety
    ///
    /// Dropping the returned future drops `commit`: exactly as cancel safe as
    /// `commit` itself.
    ///
    /// # Examples
    ///
    /// ```
    /// # use leasehold::{clock, heartbeat::{InvalidReason, ValidityController}};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let controller = ValidityController::valid_for(clock::system(), Duration::from_secs(30));
    /// let validity = controller.validity();
    /// assert_eq!(validity.run_while_valid(async { "committed" }).await, Ok("committed"));
    ///
    /// // A commit that hangs is cut off at the deadline.
    /// let hung = validity.run_while_valid(std::future::pending::<()>()).await;
    /// assert_eq!(hung.unwrap_err().reason, InvalidReason::Expired);
    /// # }
    /// ```
    pub async fn run_while_valid<F: IntoFuture>(&self, commit: F) -> Result<F::Output, Invalid> {
        // The first poll checks validity before it polls `commit`: one clock
        // read for a commit that is ready at once.
        let mut commit = pin!(commit.into_future());
        // Built lazily: a commit that is ready at once never arms a sleep.
        let mut invalidated = pin!(self.invalidated());
        poll_fn(|cx| {
            if let Err(invalid) = self.check() {
                return Poll::Ready(Err(invalid));
            }
            if let Poll::Ready(output) = commit.as_mut().poll(cx) {
                return Poll::Ready(Ok(output));
            }
            match invalidated.as_mut().poll(cx) {
                Poll::Ready(reason) => Poll::Ready(Err(Invalid { reason })),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Whether `self` and `other` are clones of the same token.
    pub fn same_token(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl fmt::Debug for Validity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validity")
            .field("state", &self.check())
            .field("deadline", &self.deadline())
            .finish()
    }
}

/// The controlling half of a [`Validity`]: extends its deadline and
/// invalidates it.
///
/// A [`Heartbeat`](super::Heartbeat) owns one; use one directly when
/// something else keeps the thing alive (a lease task extending on each
/// successful renewal, a guard invalidating when its backend reports the
/// entry lost). Not `Clone`: there is one controller per token. Dropping it
/// invalidates the token with [`InvalidReason::Stopped`], so a token never
/// outlives its controller's intent to keep it valid.
///
/// # Examples
///
/// ```
/// use leasehold::clock::{Clock, ManualClock};
/// use leasehold::heartbeat::{InvalidReason, ValidityController};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let ttl = Duration::from_secs(30);
/// let controller = ValidityController::new(Arc::new(clock.clone()), clock.now() + ttl);
/// let validity = controller.validity();
///
/// clock.advance(Duration::from_secs(20));
/// let renewal_started = clock.now();
/// controller.extend_to(renewal_started + ttl).unwrap(); // a renewal succeeded
/// clock.advance(Duration::from_secs(20));
/// assert!(validity.is_valid()); // 40 s in, valid until 50 s
///
/// controller.invalidate(InvalidReason::Lost); // the backend says it is gone
/// assert_eq!(validity.check().unwrap_err().reason, InvalidReason::Lost);
/// ```
pub struct ValidityController {
    validity: Validity,
}

impl ValidityController {
    /// A controller whose token is valid until `deadline` on `clock`.
    ///
    /// A `deadline` not after `clock.now()` makes a token that is expired
    /// from the start.
    pub fn new(clock: std::sync::Arc<dyn Clock>, deadline: Instant) -> Self {
        let origin = clock.now();
        let shared = Shared {
            origin,
            deadline: AtomicU64::new(0),
            reason: AtomicU8::new(VALID),
            events: WatchCell::new(None),
            clock,
        };
        shared
            .deadline
            .store(shared.nanos_since_origin(deadline), Ordering::SeqCst);
        Self {
            validity: Validity {
                shared: Arc::new(shared),
            },
        }
    }

    /// A controller whose token is valid for `ttl` from now.
    pub fn valid_for(clock: std::sync::Arc<dyn Clock>, ttl: Duration) -> Self {
        let deadline = clock.now() + ttl;
        Self::new(clock, deadline)
    }

    /// A token controlled by this controller (clones share it).
    pub fn validity(&self) -> Validity {
        self.validity.clone()
    }

    /// Moves the deadline to `deadline` if that is later (it never moves
    /// back); returns the remaining validity.
    ///
    /// Compute `deadline` from the *start* of the renewal that justifies it
    /// (`start + ttl - margin`), not from its end.
    ///
    /// Expiry is final: if the current deadline has already passed, the
    /// token is recorded as expired and the extension is refused, even if
    /// `deadline` is in the future. An extension that is accepted is never
    /// undone by a concurrent check: the token stays valid until `deadline`
    /// (unless invalidated).
    ///
    /// # Errors
    ///
    /// [`Invalid`] if the token was invalidated or has expired.
    pub fn extend_to(&self, deadline: Instant) -> Result<Duration, Invalid> {
        let shared = &*self.validity.shared;
        shared
            .extend(shared.nanos_since_origin(deadline))
            .map_err(Invalid::from)
    }

    /// Invalidates the token with `reason` and wakes every waiter. The first
    /// reason recorded wins; returns whether it was this one.
    ///
    /// Works from any thread, outside any runtime, and from `Drop`.
    pub fn invalidate(&self, reason: InvalidReason) -> bool {
        self.validity.shared.invalidate(reason)
    }

    /// If the deadline has passed, records the expiry as an invalidation, so
    /// that blocking waiters wake now (see
    /// [`Validity::blocking_invalidated`]); returns whether the token is
    /// invalid.
    pub fn expire_if_due(&self) -> bool {
        match self.validity.shared.remaining() {
            Ok(_) => false,
            Err(reason) => {
                self.validity.shared.invalidate(reason);
                true
            }
        }
    }
}

impl Drop for ValidityController {
    fn drop(&mut self) {
        self.validity.shared.invalidate(InvalidReason::Stopped);
    }
}

impl fmt::Debug for ValidityController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidityController")
            .field("validity", &self.validity)
            .finish()
    }
}
