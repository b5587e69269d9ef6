//! [`ChangeManager`] and [`ChangeGuard`]: one writer operation, from the
//! durable record to the removal of its entry.

use std::fmt;
use std::future::IntoFuture;
use std::marker::PhantomData;
use std::sync::Arc;

use super::cleanup::{Cleanup, Phase};
use super::error::{CommitError, FinishError, ManagerConfigError};
use super::{ChangeLog, ChangeLogError, Fence, OwnerId, Ownership, Payload, Removal};
use crate::heartbeat::{BeatError, Heartbeat, HeartbeatConfig, Invalid, Validity};

/// Runs writer operations through a [`ChangeLog`]: each
/// [`record`](ChangeManager::record) returns a [`ChangeGuard`] that keeps the
/// entry alive with a [`Heartbeat`] until the operation is finished.
///
/// Pick it for any operation whose side effects span stores and must be
/// cleaned up after a crash: record the intent, do the work, commit while
/// the entry is still yours, clean up, remove.
///
/// The heartbeat refreshes the entry every `interval` of the
/// [`HeartbeatConfig`]; its `ttl` (3 × interval by default) must not exceed
/// the log's staleness threshold, so that the writer's [`Validity`] has
/// always expired by the time the store calls the entry stale and lets
/// recovery claim it.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use leasehold::changelog::{BoxError, ChangeLog, ChangeManager, Cleanup, MemoryChangeLog, OwnerId, Phase};
/// use leasehold::heartbeat::HeartbeatConfig;
///
/// struct Forget;
/// impl Cleanup<String> for Forget {
///     async fn cleanup(&self, _: &String, _: Phase) -> Result<(), BoxError> { Ok(()) }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log = MemoryChangeLog::new(leasehold::clock::system(), Duration::from_secs(30));
/// let heartbeat = HeartbeatConfig::builder(Duration::from_secs(10)).build()?; // ttl 30 s
/// let manager = ChangeManager::new(log.clone(), OwnerId::unique("writer"), heartbeat, Forget)?;
///
/// let mut guard = manager.record("put a -> blob-7".to_string()).await?;
/// // ... write blob-7 ...
/// guard.mark_applied();
/// let committed = guard.commit(async { Ok::<_, std::io::Error>("a -> blob-7") }).await?;
/// assert_eq!(committed, "a -> blob-7");
/// guard.finish().await?; // cleanup, stop the heartbeat, remove the entry
/// assert!(log.list().await?.is_empty());
/// # Ok(()) }
/// ```
pub struct ChangeManager<L, P, C> {
    inner: Arc<Inner<L, C>>,
    _payload: PhantomData<fn(P) -> P>,
}

struct Inner<L, C> {
    log: L,
    owner: OwnerId,
    heartbeat: HeartbeatConfig,
    cleanup: C,
}

impl<L, P, C> Clone for ChangeManager<L, P, C> {
    fn clone(&self) -> Self {
        ChangeManager {
            inner: Arc::clone(&self.inner),
            _payload: PhantomData,
        }
    }
}

impl<L, P, C> fmt::Debug for ChangeManager<L, P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeManager")
            .field("owner", &self.inner.owner)
            .field("heartbeat", &self.inner.heartbeat)
            .finish_non_exhaustive()
    }
}

impl<L, P, C> ChangeManager<L, P, C>
where
    L: ChangeLog,
    P: Payload,
    C: Cleanup<P>,
{
    /// A manager recording entries in `log` as `owner`, refreshing them per
    /// `heartbeat`, and running `cleanup` when an operation finishes.
    ///
    /// # Errors
    ///
    /// [`ManagerConfigError::TtlExceedsStaleness`] if `heartbeat.ttl()`
    /// exceeds `log.staleness()`.
    pub fn new(
        log: L,
        owner: OwnerId,
        heartbeat: HeartbeatConfig,
        cleanup: C,
    ) -> Result<Self, ManagerConfigError> {
        if heartbeat.ttl() > log.staleness() {
            return Err(ManagerConfigError::TtlExceedsStaleness {
                ttl: heartbeat.ttl(),
                staleness: log.staleness(),
            });
        }
        Ok(ChangeManager {
            inner: Arc::new(Inner {
                log,
                owner,
                heartbeat,
                cleanup,
            }),
            _payload: PhantomData,
        })
    }

    /// The log.
    pub fn log(&self) -> &L {
        &self.inner.log
    }

    /// The owner id entries are recorded under.
    pub fn owner(&self) -> &OwnerId {
        &self.inner.owner
    }

    /// The heartbeat configuration of every guard.
    pub fn heartbeat_config(&self) -> &HeartbeatConfig {
        &self.inner.heartbeat
    }

    /// Durably records `payload` and starts the heartbeat that keeps the
    /// entry alive. Do this *before* any side effect.
    ///
    /// The guard's [`Validity`] is anchored at the start of this call, not
    /// its end: a slow record eats into the validity, never extends it.
    ///
    /// # Errors
    ///
    /// The log's error; then no entry exists and no side effect may start.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the heartbeat is a tokio task).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may leave a recorded entry with no
    /// heartbeat; it goes stale and recovery cleans it up.
    pub async fn record(&self, payload: P) -> Result<ChangeGuard<L, P, C>, ChangeLogError> {
        let anchor = self.inner.heartbeat.clock().now();
        let fence = self
            .inner
            .log
            .record(&self.inner.owner, payload.encode())
            .await?;
        let heartbeat = Heartbeat::spawn_anchored(&self.inner.heartbeat, anchor, {
            let inner = Arc::clone(&self.inner);
            let fence = fence.clone();
            move || {
                let inner = Arc::clone(&inner);
                let fence = fence.clone();
                async move { beat(&inner.log, &fence).await }
            }
        });
        Ok(ChangeGuard {
            inner: Arc::clone(&self.inner),
            validity: heartbeat.validity(),
            heartbeat: Some(heartbeat),
            fence,
            payload: Some(payload),
            phase: Phase::Recorded,
        })
    }
}

/// One refresh of a guarded entry: fenced out means the heartbeat must stop.
async fn beat<L: ChangeLog>(log: &L, fence: &Fence) -> Result<(), BeatError> {
    match log.refresh(fence).await {
        Ok(Ownership::Held) => Ok(()),
        Ok(Ownership::Lost) => Err(BeatError::Fenced),
        Err(error) if error.is_transient() => Err(BeatError::transient(error)),
        Err(error) => Err(BeatError::failed(error)),
    }
}

/// One in-flight writer operation: its recorded entry, the heartbeat that
/// keeps it alive, and the operation's [`Phase`].
///
/// Finish it with [`finish`](ChangeGuard::finish). A guard that is dropped
/// unfinished schedules the same completion on the runtime *only while its
/// validity holds*; an invalid guard (heartbeat stalled or fenced out) never
/// touches the entry again and leaves it for recovery.
pub struct ChangeGuard<L: ChangeLog, P: Payload, C: Cleanup<P>> {
    inner: Arc<Inner<L, C>>,
    fence: Fence,
    /// `None` once finished (or handed to the drop-time completion).
    payload: Option<P>,
    phase: Phase,
    heartbeat: Option<Heartbeat>,
    validity: Validity,
}

impl<L: ChangeLog, P: Payload + fmt::Debug, C: Cleanup<P>> fmt::Debug for ChangeGuard<L, P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeGuard")
            .field("fence", &self.fence)
            .field("phase", &self.phase)
            .field("payload", &self.payload)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl<L, P, C> ChangeGuard<L, P, C>
where
    L: ChangeLog,
    P: Payload,
    C: Cleanup<P>,
{
    /// The entry's fence (owner and generation).
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The recorded payload.
    pub fn payload(&self) -> &P {
        self.payload
            .as_ref()
            .expect("the payload is only taken by finish or drop")
    }

    /// How far the operation got.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the entry is still ours to act on: see [`Validity`].
    pub fn validity(&self) -> &Validity {
        &self.validity
    }

    /// Reports that side effects may now exist (moves
    /// [`Phase::Recorded`] to [`Phase::Applied`]).
    pub fn mark_applied(&mut self) {
        if self.phase == Phase::Recorded {
            self.phase = Phase::Applied;
        }
    }

    /// Runs the caller's compare-and-swap `cas` only while the entry is still
    /// ours, cut off at the validity deadline; on `Ok` the phase becomes
    /// [`Phase::Committed`].
    ///
    /// This is what closes the data-loss race: once the store may call the
    /// entry stale, a recoverer may delete what this operation wrote, so the
    /// commit that would publish it must not start — or finish — any more.
    ///
    /// # Errors
    ///
    /// - [`CommitError::Invalid`] if the entry was no longer ours before the
    ///   commit started (`in_flight: false`: nothing was attempted), or the
    ///   deadline passed while it ran (`in_flight: true`: the commit future
    ///   was dropped; whether it took effect is unknown, so the phase becomes
    ///   [`Phase::Unknown`]).
    /// - [`CommitError::Rejected`] with the CAS's own error (e.g. a
    ///   conflicting writer); the phase is unchanged.
    ///
    /// # Cancel safety
    ///
    /// As cancel safe as `cas`; a dropped commit leaves the phase unchanged.
    pub async fn commit<F, T, E>(&mut self, cas: F) -> Result<T, CommitError<E>>
    where
        F: IntoFuture<Output = Result<T, E>>,
    {
        if let Err(invalid) = self.validity.check() {
            return Err(CommitError::Invalid {
                reason: invalid.reason,
                in_flight: false,
            });
        }
        match self.validity.run_while_valid(cas).await {
            Ok(Ok(value)) => {
                self.phase = Phase::Committed;
                Ok(value)
            }
            Ok(Err(error)) => Err(CommitError::Rejected(error)),
            Err(Invalid { reason }) => {
                self.phase = Phase::Unknown;
                Err(CommitError::Invalid {
                    reason,
                    in_flight: true,
                })
            }
        }
    }

    /// Completes the operation: runs the cleanup for the current phase while
    /// the entry is still ours, stops the heartbeat, then removes the entry.
    ///
    /// Returns how the removal went; [`Removal::Fenced`] means a recoverer
    /// claimed the entry meanwhile and will clean up again (the cleanup is
    /// idempotent).
    ///
    /// # Errors
    ///
    /// The entry is left for recovery in each case:
    /// - [`FinishError::Invalid`]: the entry was no longer ours (before or
    ///   during the cleanup, which is then cut off);
    /// - [`FinishError::Cleanup`]: the cleanup failed;
    /// - [`FinishError::Log`]: the removal failed.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped finish stops the heartbeat (the guard is
    /// consumed), leaving the entry for recovery.
    pub async fn finish(mut self) -> Result<Removal, FinishError> {
        let payload = self.payload.take().expect("finish runs once");
        let heartbeat = self.heartbeat.take();
        complete(
            Arc::clone(&self.inner),
            self.fence.clone(),
            payload,
            self.phase,
            heartbeat,
            self.validity.clone(),
        )
        .await
    }

    /// Gives the operation up without cleanup: stops the heartbeat and leaves
    /// the entry for recovery, as a crash would. The returned future waits
    /// for the heartbeat task to end.
    ///
    /// # Cancel safety
    ///
    /// The operation is abandoned when `abandon` is called, before any
    /// await; the returned future only waits, and may be dropped.
    pub fn abandon(mut self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.payload = None;
        let stopped = self.heartbeat.take().map(Heartbeat::stop);
        async move {
            if let Some(stopped) = stopped {
                stopped.await;
            }
        }
    }
}

/// Cleanup while valid, then stop the heartbeat, then remove.
async fn complete<L, P, C>(
    inner: Arc<Inner<L, C>>,
    fence: Fence,
    payload: P,
    phase: Phase,
    heartbeat: Option<Heartbeat>,
    validity: Validity,
) -> Result<Removal, FinishError>
where
    L: ChangeLog,
    P: Payload,
    C: Cleanup<P>,
{
    let stop = |heartbeat: Option<Heartbeat>| async move {
        if let Some(heartbeat) = heartbeat {
            heartbeat.stop().await;
        }
    };
    let cleaned = validity
        .run_while_valid(inner.cleanup.cleanup(&payload, phase))
        .await;
    // The heartbeat is stopped before the entry is removed, and on every
    // failure path: a beat can never run after (or race with) the removal.
    stop(heartbeat).await;
    match cleaned {
        Err(invalid) => Err(FinishError::Invalid(invalid)),
        Ok(Err(error)) => Err(FinishError::Cleanup(error)),
        Ok(Ok(())) => inner.log.remove(&fence).await.map_err(FinishError::Log),
    }
}

impl<L: ChangeLog, P: Payload, C: Cleanup<P>> Drop for ChangeGuard<L, P, C> {
    fn drop(&mut self) {
        let Some(payload) = self.payload.take() else {
            return;
        };
        let heartbeat = self.heartbeat.take();
        // An invalid guard must not touch the entry: recovery may own it.
        // Dropping the heartbeat stops it.
        if !self.validity.is_valid() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime to run the cleanup on: recovery will
        };
        drop(runtime.spawn(complete(
            Arc::clone(&self.inner),
            self.fence.clone(),
            payload,
            self.phase,
            heartbeat,
            self.validity.clone(),
        )));
    }
}
