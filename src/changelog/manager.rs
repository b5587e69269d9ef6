//! [`ChangeManager`] and [`ChangeGuard`]: one writer operation, from the
//! durable record to the removal of its entry.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::sync::Arc;

use super::cleanup::{Cleanup, Phase};
use super::error::{CommitError, FencedCommitError, FinishError, ManagerConfigError};
use super::{Advanced, ChangeLog, ChangeLogError, Fence, OwnerId, Ownership, Payload, Removal};
use crate::heartbeat::{BeatError, Heartbeat, HeartbeatConfig, Invalid, InvalidReason, Validity};
use crate::sync::Mutex;
use crate::trace;

/// Runs writer operations through a [`ChangeLog`]: each
/// [`record`](ChangeManager::record) returns a [`ChangeGuard`] that keeps the
/// entry alive with a [`Heartbeat`] until the operation is finished.
///
/// Pick it for any operation whose side effects span stores and must be
/// cleaned up after a crash: record the intent, do the work, commit while
/// the entry is still yours, clean up, remove.
///
/// The heartbeat refreshes the entry every `interval` of the
/// [`HeartbeatConfig`]; its `ttl` (3 × interval by default) plus one more
/// interval must not exceed the log's staleness threshold, so that the
/// writer's [`Validity`] has always expired, with slack to spare, by the
/// time recovery may judge the entry stale.
///
/// Prefer [`ChangeGuard::commit_fenced`] where the log can run your commit
/// in its own store (the SQL backends): the store then decides whether your
/// commit or a recoverer's claim wins, whatever the timing.
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
/// let log = MemoryChangeLog::new(leasehold::clock::system(), Duration::from_secs(60));
/// let heartbeat = HeartbeatConfig::builder(Duration::from_secs(10)).build()?; // ttl 30 s
/// // 30 s ttl + 10 s interval <= 60 s staleness: real slack.
/// let manager = ChangeManager::new(log.clone(), OwnerId::unique("writer"), heartbeat, Forget)?;
///
/// let mut guard = manager.record("put a -> blob-7".to_string()).await?;
/// // ... write blob-7 ...
/// guard.mark_applied();
/// // The commit runs under the log's fence check: it cannot land once a
/// // recoverer has claimed the entry.
/// let committed = guard
///     .commit_fenced(|fence| log.commit_fenced(fence, || Ok::<_, std::io::Error>("a -> blob-7")))
///     .await?;
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
    /// [`ManagerConfigError::InsufficientSlack`] unless
    /// `heartbeat.ttl() + heartbeat.interval() <= log.staleness()`.
    pub fn new(
        log: L,
        owner: OwnerId,
        heartbeat: HeartbeatConfig,
        cleanup: C,
    ) -> Result<Self, ManagerConfigError> {
        let required = heartbeat.ttl().saturating_add(heartbeat.interval());
        if required > log.staleness() {
            return Err(ManagerConfigError::InsufficientSlack {
                ttl: heartbeat.ttl(),
                interval: heartbeat.interval(),
                staleness: log.staleness(),
                required,
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
        trace::event!(
            debug,
            entry = %fence.id(),
            owner = %fence.owner(),
            generation = fence.generation(),
            "changelog entry recorded"
        );
        let current = Arc::new(Mutex::new(fence.clone()));
        // The heartbeat's events carry the entry's fields.
        let heartbeat = trace::in_span!(
            Heartbeat::spawn_anchored(&self.inner.heartbeat, anchor, {
                let inner = Arc::clone(&self.inner);
                let current = Arc::clone(&current);
                move || {
                    let inner = Arc::clone(&inner);
                    let current = Arc::clone(&current);
                    async move { beat(&inner.log, &current).await }
                }
            }),
            "change",
            entry = %fence.id(),
            owner = %fence.owner(),
            generation = fence.generation()
        );
        Ok(ChangeGuard {
            inner: Arc::clone(&self.inner),
            validity: heartbeat.validity(),
            heartbeat: Some(heartbeat),
            fence: current,
            payload: Some(payload),
            phase: Phase::Recorded,
            fenced_commit: false,
        })
    }
}

/// One refresh of a guarded entry: fenced out means the heartbeat must stop.
///
/// The guard may move its own entry to the next generation meanwhile
/// ([`ChangeLog::advance`], to settle an in-doubt commit): a refresh with
/// the fence it replaced is retried once with the new one.
async fn beat<L: ChangeLog>(log: &L, current: &Mutex<Fence>) -> Result<(), BeatError> {
    let mut fence = current.lock().clone();
    loop {
        match log.refresh(&fence).await {
            Ok(Ownership::Held) => return Ok(()),
            Ok(Ownership::Lost) => {
                let now = current.lock().clone();
                if now == fence {
                    return Err(BeatError::Fenced);
                }
                fence = now;
            }
            Err(error) if error.is_transient() => return Err(BeatError::transient(error)),
            Err(error) => return Err(BeatError::failed(error)),
        }
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
    /// The entry's current fence, shared with the heartbeat's beats.
    fence: Arc<Mutex<Fence>>,
    /// Whether a commit was attempted through the store's fence, so that an
    /// in-doubt outcome can be settled with the store.
    fenced_commit: bool,
    /// `None` once finished (or handed to the drop-time completion).
    payload: Option<P>,
    phase: Phase,
    heartbeat: Option<Heartbeat>,
    validity: Validity,
}

impl<L: ChangeLog, P: Payload + fmt::Debug, C: Cleanup<P>> fmt::Debug for ChangeGuard<L, P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeGuard")
            .field("fence", &self.fence())
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
    /// The entry's current fence (owner and generation).
    pub fn fence(&self) -> Fence {
        self.fence.lock().clone()
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
    /// Use it for a commit to a store the changelog cannot join. It refuses
    /// a commit that would start after the validity deadline and cuts off
    /// one still running there, which ends before recovery may judge the
    /// entry stale; but a process that pauses *after* the check, while its
    /// write is already on its way to the store, can still land it after
    /// recovery claimed the entry. Where the log can run the commit in its
    /// own store, use [`commit_fenced`](Self::commit_fenced), which closes
    /// that window; elsewhere, make `cas` conditional on
    /// [`Fence::generation`] as a fencing token.
    ///
    /// # Errors
    ///
    /// - [`CommitError::Invalid`] if the entry was no longer ours before the
    ///   commit started (`in_flight: false`: nothing was attempted), or the
    ///   deadline passed while it ran (`in_flight: true`: the commit future
    ///   was dropped; whether it took effect is unknown, so the phase becomes
    ///   [`Phase::InDoubt`]).
    /// - [`CommitError::Rejected`] with the CAS's own error (e.g. a
    ///   conflicting writer); the phase is unchanged.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a commit dropped after it started leaves the phase
    /// [`Phase::InDoubt`], since it may have taken effect.
    pub async fn commit<F, T, E>(&mut self, cas: F) -> Result<T, CommitError<E>>
    where
        F: IntoFuture<Output = Result<T, E>>,
    {
        self.check_before_commit()?;
        let before = std::mem::replace(&mut self.phase, Phase::InDoubt);
        match self.validity.run_while_valid(cas).await {
            Ok(Ok(value)) => {
                self.phase = Phase::Committed;
                Ok(value)
            }
            Ok(Err(error)) => {
                self.phase = before;
                Err(CommitError::Rejected(error))
            }
            Err(Invalid { reason }) => Err(CommitError::Invalid {
                reason,
                in_flight: true,
            }),
        }
    }

    /// Commits through the store's fence: `commit` receives the entry's
    /// current [`Fence`] and must hand it to the log's fenced commit (e.g.
    /// `SqliteChangeLog::commit_fenced`, `PostgresChangeLog::commit_fenced`,
    /// [`MemoryChangeLog::commit_fenced`](super::MemoryChangeLog::commit_fenced)),
    /// which checks the fence in the same transaction as your writes. Once
    /// a recoverer has claimed the entry, the store refuses the commit, so a
    /// writer that paused anywhere (even inside the commit) cannot publish
    /// what recovery is cleaning up.
    ///
    /// Validity still refuses to start a commit after its deadline, and
    /// cuts off one that runs past it (its outcome is then settled with the
    /// store by [`finish`](Self::finish)).
    ///
    /// # Errors
    ///
    /// - [`CommitError::Invalid`] as for [`commit`](Self::commit);
    /// - [`CommitError::Fenced`]: the store refused, nothing was committed;
    /// - [`CommitError::Rejected`]: your commit's own error, rolled back;
    /// - [`CommitError::Store`]: the store failed before committing;
    /// - [`CommitError::InDoubt`]: the store failed while committing; the
    ///   phase is [`Phase::InDoubt`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe, but never unsafe: a dropped commit leaves
    /// [`Phase::InDoubt`], which [`finish`](Self::finish) settles with the
    /// store before it cleans up.
    pub async fn commit_fenced<F, Fut, T, E>(&mut self, commit: F) -> Result<T, CommitError<E>>
    where
        F: FnOnce(&Fence) -> Fut,
        Fut: Future<Output = Result<T, FencedCommitError<E>>>,
    {
        self.check_before_commit()?;
        let fence = self.fence();
        self.fenced_commit = true;
        let before = std::mem::replace(&mut self.phase, Phase::InDoubt);
        let outcome = match self.validity.run_while_valid(commit(&fence)).await {
            Ok(outcome) => outcome,
            Err(Invalid { reason }) => {
                return Err(CommitError::Invalid {
                    reason,
                    in_flight: true,
                });
            }
        };
        match outcome {
            Ok(value) => {
                self.phase = Phase::Committed;
                Ok(value)
            }
            Err(FencedCommitError::InDoubt(error)) => Err(CommitError::InDoubt(error)),
            Err(known) => {
                // Refused or rolled back: the store guarantees nothing landed.
                self.phase = before;
                Err(match known {
                    FencedCommitError::Fenced => CommitError::Fenced,
                    FencedCommitError::Rejected(error) => CommitError::Rejected(error),
                    FencedCommitError::Store(error) => CommitError::Store(error),
                    FencedCommitError::InDoubt(_) => unreachable!("matched above"),
                })
            }
        }
    }

    /// Learns from the store whether a fenced commit whose outcome was in
    /// doubt ([`Phase::InDoubt`]: the commit future was dropped, cut off at
    /// the validity deadline, or the store failed while committing) landed,
    /// and returns the phase: [`Phase::Committed`] or [`Phase::Applied`].
    ///
    /// It moves the entry to its next generation
    /// ([`ChangeLog::advance`]), so a commit still in flight with the old
    /// fence is refused by the store from then on: the answer cannot change
    /// afterwards. Any other phase is returned as it is, and so is an
    /// in-doubt commit that was not fenced, or whose entry is no longer ours
    /// (recovery settles it then). [`finish`](Self::finish) settles by
    /// itself; call this to report the outcome before finishing.
    ///
    /// # Errors
    ///
    /// The log's error; the phase stays [`Phase::InDoubt`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: a dropped call may have moved the entry on,
    /// leaving the phase in doubt; a later `settle` or `finish` then finds
    /// the entry lost and leaves it to recovery.
    pub async fn settle(&mut self) -> Result<Phase, ChangeLogError> {
        if self.phase == Phase::InDoubt && self.fenced_commit {
            if let Some(settled) = settle_in_store(&self.inner.log, &self.fence).await? {
                self.phase = settled;
            }
        }
        Ok(self.phase)
    }

    fn check_before_commit<E>(&self) -> Result<(), CommitError<E>> {
        self.validity
            .check()
            .map(drop)
            .map_err(|invalid| CommitError::Invalid {
                reason: invalid.reason,
                in_flight: false,
            })
    }

    /// Completes the operation: runs the cleanup for the current phase while
    /// the entry is still ours, stops the heartbeat, then removes the entry.
    ///
    /// Returns how the removal went; [`Removal::Fenced`] means a recoverer
    /// claimed the entry meanwhile and will clean up again (the cleanup is
    /// idempotent).
    ///
    /// A [`Phase::InDoubt`] left by a fenced commit is settled first: the
    /// entry is moved to its next generation
    /// ([`ChangeLog::advance`]), so a commit still in flight can no longer
    /// land, and the store reports whether it did; the cleanup then sees
    /// [`Phase::Committed`] or [`Phase::Applied`].
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
        complete(self.completion(payload, heartbeat)).await
    }

    fn completion(&self, payload: P, heartbeat: Option<Heartbeat>) -> Completion<L, P, C> {
        Completion {
            inner: Arc::clone(&self.inner),
            fence: Arc::clone(&self.fence),
            settle: self.phase == Phase::InDoubt && self.fenced_commit,
            payload,
            phase: self.phase,
            heartbeat,
            validity: self.validity.clone(),
        }
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

/// Asks the store for the outcome of an in-doubt fenced commit by moving the
/// entry to its next generation (so a commit still in flight with the old
/// fence is refused from now on): `Some(Committed | Applied)`, or `None` if
/// the entry is no longer ours.
async fn settle_in_store<L: ChangeLog>(
    log: &L,
    fence: &Mutex<Fence>,
) -> Result<Option<Phase>, ChangeLogError> {
    let old = fence.lock().clone();
    Ok(match log.advance(&old).await? {
        Advanced::Held {
            fence: new,
            committed,
        } => {
            *fence.lock() = new;
            Some(if committed {
                Phase::Committed
            } else {
                Phase::Applied
            })
        }
        Advanced::Lost => None,
    })
}

/// What [`complete`] needs of a guard.
struct Completion<L, P, C> {
    inner: Arc<Inner<L, C>>,
    fence: Arc<Mutex<Fence>>,
    /// Settle an in-doubt fenced commit with the store first.
    settle: bool,
    payload: P,
    phase: Phase,
    heartbeat: Option<Heartbeat>,
    validity: Validity,
}

/// Settle an in-doubt fenced commit, cleanup while valid, then stop the
/// heartbeat, then remove.
async fn complete<L, P, C>(completion: Completion<L, P, C>) -> Result<Removal, FinishError>
where
    L: ChangeLog,
    P: Payload,
    C: Cleanup<P>,
{
    let Completion {
        inner,
        fence,
        settle,
        payload,
        mut phase,
        heartbeat,
        validity,
    } = completion;
    let stop = |heartbeat: Option<Heartbeat>| async move {
        if let Some(heartbeat) = heartbeat {
            heartbeat.stop().await;
        }
    };
    if settle {
        match settle_in_store(&inner.log, &fence).await {
            Ok(Some(settled)) => phase = settled,
            Ok(None) => {
                stop(heartbeat).await;
                return Err(FinishError::Invalid(Invalid {
                    reason: InvalidReason::Fenced,
                }));
            }
            Err(error) => {
                stop(heartbeat).await;
                return Err(FinishError::Log(error));
            }
        }
    }
    let fence = fence.lock().clone();
    let cleaned = validity
        .run_while_valid(inner.cleanup.cleanup(&payload, phase))
        .await;
    // The heartbeat is stopped before the entry is removed, and on every
    // failure path: a beat can never run after (or race with) the removal.
    stop(heartbeat).await;
    match cleaned {
        Err(invalid) => {
            trace::event!(
                warn,
                entry = %fence.id(),
                owner = %fence.owner(),
                generation = fence.generation(),
                reason = %invalid.reason,
                "writer cleanup cut off: validity lost; the entry is left for recovery"
            );
            Err(FinishError::Invalid(invalid))
        }
        Ok(Err(error)) => {
            trace::event!(
                warn,
                entry = %fence.id(),
                owner = %fence.owner(),
                generation = fence.generation(),
                error = %error,
                "writer cleanup failed; the entry is left for recovery"
            );
            Err(FinishError::Cleanup(error))
        }
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
            trace::event!(
                warn,
                entry = %self.fence().id(),
                owner = %self.fence().owner(),
                generation = self.fence().generation(),
                "change guard dropped after its validity lapsed; the entry is left for recovery"
            );
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime to run the cleanup on: recovery will
        };
        drop(runtime.spawn(complete(self.completion(payload, heartbeat))));
    }
}
