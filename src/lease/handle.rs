//! [`Lease`], the handle, and [`SeqnoLease`], its RAII seqno hold.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::backend::{LeaseBackend, Seqno, Since};
use super::config::LeaseConfig;
use super::error::LeaseError;
use super::state::{Ended, LeaseShared};
use super::task;
use crate::heartbeat::{Validity, ValidityController};
use crate::sync::Ordering;

/// A reader's lease on a shard: a since frontier and seqno holds, kept alive
/// and downgraded by a background task that owns every backend call.
///
/// The handle only writes shared state, synchronously; it never calls the
/// backend. So it is cheap to call from hot paths, and dropping it works
/// anywhere (a plain thread, outside any runtime): the task, which outlives
/// the handle, expires the lease and exits.
///
/// | you want to… | call | wakes the task? |
/// |---|---|---|
/// | move the since forward, applied by the next heartbeat | [`maybe_downgrade_since`](Self::maybe_downgrade_since) | never |
/// | move it and know the shard has it | [`downgrade_since`](Self::downgrade_since)`.await` | once, if not applied yet |
/// | keep the shard from GC'ing the state you are reading | [`lease_seqno`](Self::lease_seqno) (drop to release) | never |
/// | record that you have read up to a seqno | [`observe_seqno`](Self::observe_seqno) | never |
/// | act only while the shard still holds your lease | [`validity`](Self::validity) | – |
/// | give the lease up and wait for it to be gone | [`expire`](Self::expire)`.await` | yes |
///
/// The seqno hold the task sends is the smallest live leased seqno, else the
/// latest seqno observed (by the handle, or reported by the backend).
///
/// # Examples
///
/// ```
/// use leasehold::lease::{Lease, LeaseConfig, MemoryShard};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let config = LeaseConfig::builder(Duration::from_secs(60)).build().unwrap();
/// let shard = MemoryShard::new(config.clock().clone(), config.ttl(), 0_u64, 0_u64);
/// let (backend, since, seqno) = shard.register();
/// let lease = Lease::spawn(backend, &config, since, seqno);
///
/// let snapshot = lease.lease_seqno(); // hold seqno 0 while reading
/// shard.advance_seqno(5);
/// lease.maybe_downgrade_since(10);    // applied at the next heartbeat
/// tokio::time::sleep(config.period() + Duration::from_secs(1)).await; // a tick
/// assert_eq!(shard.since(), 10);
/// assert_eq!(shard.gc_horizon(), 0);  // still held by the snapshot
///
/// drop(snapshot);
/// assert_eq!(lease.downgrade_since(20).await, Ok(20)); // synced now
/// assert_eq!(shard.gc_horizon(), 5);  // the latest seqno the backend reported
///
/// lease.expire().await.unwrap();
/// assert_eq!(shard.readers(), 0);
/// # }
/// ```
pub struct Lease<B: LeaseBackend> {
    shared: Arc<LeaseShared<B::Since, B::Seqno>>,
    validity: Validity,
}

/// Counters of a [`Lease`]'s task, from [`Lease::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LeaseStats {
    /// Times the task was woken (polled after its first poll): ticks,
    /// requested syncs and expiries, backend futures and retry sleeps.
    pub wakeups: u64,
    /// Wake-ups before the tick, for a requested sync or expiry.
    pub early_wakeups: u64,
    /// Successful heartbeats.
    pub heartbeats: u64,
    /// Heartbeats that failed transiently (and were retried).
    pub failed_heartbeats: u64,
    /// Successful heartbeats that moved the applied since forward.
    pub downgrades: u64,
}

impl<B: LeaseBackend> Lease<B> {
    /// Starts the lease task for a reader the backend registered holding
    /// `since` and `seqno`. The lease is valid for `ttl - margin` from now;
    /// the first heartbeat runs one period (minus jitter) from now.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (like `tokio::spawn`).
    pub fn spawn(backend: B, config: &LeaseConfig, since: B::Since, seqno: B::Seqno) -> Self {
        let clock = config.clock().clone();
        let start = clock.now();
        let controller = ValidityController::new(clock, start + config.validity_window());
        let validity = controller.validity();
        let shared = Arc::new(LeaseShared::new(since, seqno));
        task::spawn(
            backend,
            Arc::clone(&shared),
            controller,
            config.clone(),
            start,
        );
        Self { shared, validity }
    }

    /// Records `since` (the recorded since becomes the join of both, so a
    /// stale or incomparable `since` never moves it back), requests a sync
    /// and resolves once a heartbeat carrying it succeeded: the backend holds
    /// it. Returns the since the backend applied (at or after `since`).
    ///
    /// The request is recorded when this is *called*, not when the future is
    /// first polled. A `since` the backend already holds resolves at once and
    /// wakes nobody (so it does not flush seqno holds either: those always
    /// wait for a heartbeat).
    ///
    /// # Errors
    ///
    /// The [`LeaseError`] the task ended with, if it ended before applying
    /// `since`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future only stops waiting. The request
    /// stays, and the task applies it anyway.
    ///
    /// # Examples
    ///
    /// ```
    /// # use leasehold::lease::{Lease, LeaseConfig, MemoryShard};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// # let config = LeaseConfig::builder(Duration::from_secs(60)).build().unwrap();
    /// # let shard = MemoryShard::new(config.clock().clone(), config.ttl(), 0_u64, 0_u64);
    /// # let (backend, since, seqno) = shard.register();
    /// let lease = Lease::spawn(backend, &config, since, seqno);
    /// assert_eq!(lease.downgrade_since(7).await, Ok(7));
    /// assert_eq!(shard.since(), 7); // the shard has it, no tick needed
    /// assert_eq!(lease.downgrade_since(3).await, Ok(7)); // since never moves back
    /// # }
    /// ```
    pub fn downgrade_since(
        &self,
        since: B::Since,
    ) -> impl Future<Output = Result<B::Since, LeaseError>> + Send + 'static {
        let request = self.shared.request_downgrade(since);
        let shared = Arc::clone(&self.shared);
        async move {
            match request? {
                Some(generation) => shared.wait_synced(generation).await,
                None => Ok(shared.applied_since()),
            }
        }
    }

    /// Records `since` for the next heartbeat, unless it is at or before the
    /// recorded one; returns whether it moved the recorded since, which
    /// becomes the join of both (for an incomparable `since` of a partially
    /// ordered frontier, something after both). Wakes nobody, costs one short
    /// lock.
    ///
    /// Works from any thread, outside any runtime, and from `Drop`.
    ///
    /// ```
    /// # use leasehold::lease::{Lease, LeaseConfig, MemoryShard};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// # let config = LeaseConfig::builder(Duration::from_secs(60)).build().unwrap();
    /// # let shard = MemoryShard::new(config.clock().clone(), config.ttl(), 0_u64, 0_u64);
    /// # let (backend, since, seqno) = shard.register();
    /// let lease = Lease::spawn(backend, &config, since, seqno);
    /// for since in 1..=10_000 {
    ///     lease.maybe_downgrade_since(since);
    /// }
    /// assert!(!lease.maybe_downgrade_since(5)); // behind: ignored
    /// assert_eq!(lease.since(), 10_000);
    /// assert_eq!(shard.since(), 0); // not until the next heartbeat
    /// # }
    /// ```
    pub fn maybe_downgrade_since(&self, since: B::Since) -> bool {
        self.shared.maybe_downgrade(since)
    }

    /// Leases the latest known seqno: until the returned hold is dropped,
    /// the seqno hold sent is at most that seqno, so the shard keeps the
    /// state you are reading. Holds are reference-counted per seqno.
    ///
    /// Wakes nobody; the next heartbeat sends the new hold. Releasing the
    /// hold (dropping it) works from any thread, outside any runtime.
    ///
    /// ```
    /// # use leasehold::lease::{Lease, LeaseConfig, MemoryShard};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// # let config = LeaseConfig::builder(Duration::from_secs(60)).build().unwrap();
    /// # let shard = MemoryShard::new(config.clock().clone(), config.ttl(), 0_u64, 3_u64);
    /// # let (backend, since, seqno) = shard.register();
    /// let lease = Lease::spawn(backend, &config, since, seqno);
    /// let reading = lease.lease_seqno();
    /// assert_eq!(*reading.seqno(), 3);
    /// lease.observe_seqno(8);
    /// assert_eq!(lease.seqno_hold(), 3); // the lease wins over the observation
    /// drop(reading);
    /// assert_eq!(lease.seqno_hold(), 8);
    /// # }
    /// ```
    pub fn lease_seqno(&self) -> SeqnoLease<B::Seqno> {
        let seqno = self.shared.lease_seqno();
        SeqnoLease {
            holds: Arc::clone(&self.shared) as Arc<dyn SeqnoHolds<B::Seqno>>,
            seqno,
        }
    }

    /// Records that the reader has seen the shard's state at `seqno` (if it
    /// is ahead of the latest known); returns whether it was. With no seqno
    /// leased, the hold sent moves up to it. Wakes nobody.
    pub fn observe_seqno(&self, seqno: B::Seqno) -> bool {
        self.shared.observe_seqno(seqno)
    }

    /// The since recorded for the next heartbeat.
    pub fn since(&self) -> B::Since {
        self.shared.since_to_hold()
    }

    /// The since the backend last confirmed holding.
    pub fn applied_since(&self) -> B::Since {
        self.shared.applied_since()
    }

    /// The seqno hold the next heartbeat will send.
    pub fn seqno_hold(&self) -> B::Seqno {
        self.shared.seqno_hold()
    }

    /// The latest seqno observed or reported by the backend: what
    /// [`lease_seqno`](Self::lease_seqno) leases.
    pub fn latest_seqno(&self) -> B::Seqno {
        self.shared.latest_seqno()
    }

    /// The lease's [`Validity`]: valid until `start of the last successful
    /// heartbeat + ttl - margin`; invalidated at once with
    /// [`InvalidReason::Lost`](crate::heartbeat::InvalidReason::Lost) when
    /// the backend reports the lease lost, and with
    /// [`Stopped`](crate::heartbeat::InvalidReason::Stopped) on expiry.
    pub fn validity(&self) -> Validity {
        self.validity.clone()
    }

    /// Why the task ended, if it has (the lease is then of no further use).
    pub fn ended(&self) -> Option<LeaseError> {
        self.shared.ended().map(Ended::error)
    }

    /// The task's counters.
    pub fn stats(&self) -> LeaseStats {
        let counters = &self.shared.counters;
        LeaseStats {
            wakeups: counters.wakeups.load(Ordering::Relaxed),
            early_wakeups: counters.early_wakeups.load(Ordering::Relaxed),
            heartbeats: counters.heartbeats.load(Ordering::Relaxed),
            failed_heartbeats: counters.failed_heartbeats.load(Ordering::Relaxed),
            downgrades: counters.downgrades.load(Ordering::Relaxed),
        }
    }

    /// Asks the task to expire the lease at once (the validity turns
    /// [`Stopped`](crate::heartbeat::InvalidReason::Stopped)), then returns a
    /// future that resolves once the backend confirmed it and the task
    /// exited.
    ///
    /// # Errors
    ///
    /// [`LeaseError::Lost`] or [`LeaseError::TimedOut`] if the lease had
    /// already ended that way; [`LeaseError::TimedOut`] if the backend kept
    /// failing until the lease's validity deadline (the shard then expires
    /// the reader by itself); [`LeaseError::Stopped`] if the task was
    /// dropped by its runtime.
    ///
    /// # Cancel safety
    ///
    /// The expiry is requested before this returns; dropping the future
    /// only stops waiting for it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use leasehold::lease::{Lease, LeaseConfig, MemoryShard};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// # let config = LeaseConfig::builder(Duration::from_secs(60)).build().unwrap();
    /// # let shard = MemoryShard::new(config.clock().clone(), config.ttl(), 0_u64, 0_u64);
    /// let (backend, since, seqno) = shard.register();
    /// let lease = Lease::spawn(backend, &config, since, seqno);
    /// let validity = lease.validity();
    /// lease.expire().await.unwrap();
    /// assert_eq!(shard.readers(), 0);
    /// assert!(!validity.is_valid());
    /// # }
    /// ```
    pub fn expire(self) -> impl Future<Output = Result<(), LeaseError>> + Send + 'static {
        self.shared.request_expire();
        let shared = Arc::clone(&self.shared);
        async move {
            match shared.wait_ended().await {
                Ended::Expired => Ok(()),
                Ended::Failed(error) => Err(error),
            }
        }
    }
}

impl<B: LeaseBackend> Drop for Lease<B> {
    /// Asks the task to expire the lease and exit; returns at once. Works
    /// from any thread, outside any runtime.
    ///
    /// If the runtime the task runs on shuts down first, nobody calls the
    /// backend's expire: the shard expires the reader once its ttl passes.
    fn drop(&mut self) {
        self.shared.request_expire();
    }
}

impl<B: LeaseBackend> fmt::Debug for Lease<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("state", &self.shared)
            .field("validity", &self.validity)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Releases seqno leases; erases the since type from [`SeqnoLease`].
trait SeqnoHolds<Q>: Send + Sync {
    fn release(&self, seqno: &Q);
}

impl<S: Since, Q: Seqno> SeqnoHolds<Q> for LeaseShared<S, Q> {
    fn release(&self, seqno: &Q) {
        self.release_seqno(seqno);
    }
}

/// A hold on a seqno, from [`Lease::lease_seqno`]: while it lives, the
/// lease's seqno hold is at most this seqno. Dropping it releases the hold
/// (from any thread, outside any runtime); the next heartbeat sends the
/// raised hold. It may outlive the [`Lease`].
#[must_use = "the seqno is held only while the lease value lives"]
pub struct SeqnoLease<Q: Seqno> {
    holds: Arc<dyn SeqnoHolds<Q>>,
    seqno: Q,
}

impl<Q: Seqno> SeqnoLease<Q> {
    /// The seqno held.
    pub fn seqno(&self) -> &Q {
        &self.seqno
    }
}

impl<Q: Seqno> Drop for SeqnoLease<Q> {
    fn drop(&mut self) {
        self.holds.release(&self.seqno);
    }
}

impl<Q: Seqno> fmt::Debug for SeqnoLease<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeqnoLease")
            .field("seqno", &self.seqno)
            .finish()
    }
}

/// Hooks for the loom models: the handle/task protocol without a runtime.
#[cfg(loom)]
pub(crate) fn seqno_lease_for_model<S: Since, Q: Seqno>(
    shared: &Arc<LeaseShared<S, Q>>,
) -> SeqnoLease<Q> {
    let seqno = shared.lease_seqno();
    SeqnoLease {
        holds: Arc::clone(shared) as Arc<dyn SeqnoHolds<Q>>,
        seqno,
    }
}
