//! [`RecoveryLoop`]: continuous, exactly-once recovery of stale entries.

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{Either, select};

use super::config::{Backoff, RecoveryConfig};
use super::error::RecoveryConfigError;
use crate::WatchCell;
use crate::changelog::{
    ChangeLog, ClaimedEntry, Cleanup, EntryId, Fence, OwnerId, Ownership, Payload, Phase, Removal,
};
use crate::heartbeat::{BeatError, Heartbeat, HeartbeatConfig, Validity};
use crate::sync::Mutex;

/// Counters of a [`RecoveryLoop`], monotonically increasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct RecoveryStats {
    /// Polls of the log (calls to `claim_stale`).
    pub polls: u64,
    /// Entries claimed.
    pub claimed: u64,
    /// Entries cleaned up and removed.
    pub cleaned: u64,
    /// Entries quarantined (undecodable, cleanup failing every attempt, or
    /// claimed too often).
    pub quarantined: u64,
    /// Failed calls: polls, cleanup attempts, removals, quarantines.
    pub errors: u64,
    /// Claimed entries lost to another owner before they were processed
    /// (the batch heartbeat stalled past the staleness threshold).
    pub lost: u64,
}

/// A poison entry the loop quarantined, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuarantineReport {
    /// The quarantined entry, with the fence that quarantined it (an
    /// operator can remove the entry with it).
    pub fence: Fence,
    /// The reason stored with the entry.
    pub reason: String,
}

#[derive(Debug, Default)]
struct State {
    stats: RecoveryStats,
    quarantined: Vec<QuarantineReport>,
    last_error: Option<String>,
    stopping: bool,
}

/// Continuous recovery: claims stale changelog entries in batches, keeps
/// every claimed entry alive while it waits its turn, runs the caller's
/// idempotent [`Cleanup`] with [`Phase::Unknown`], and removes the entry.
///
/// Run one per instance; any number of loops (in any number of processes)
/// may share a log, since each entry is claimed by exactly one of them.
///
/// | situation | what the loop does |
/// |---|---|
/// | a poll fails | counts an error, backs off (100 ms × 1.5, capped at 30 s by default), polls again |
/// | nothing is stale | waits the idle wait (1 s by default), polls again |
/// | a batch was claimed | processes it, then polls again at once |
/// | a payload does not decode | quarantines the entry and reports it |
/// | a cleanup fails | retries it (spaced by the backoff), quarantines after the last attempt |
/// | an entry was claimed too often | quarantines it: its recoverers keep dying on it |
/// | the batch heartbeat lost an entry, or stalled | skips the lost entry, or leaves the rest of the batch to be reclaimed |
///
/// [`shutdown`](RecoveryLoop::shutdown) stops the loop at its next await
/// point and waits for it; dropping the handle stops it too. An entry whose
/// cleanup was interrupted stays claimed and is reclaimed once stale (the
/// cleanup is idempotent).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use leasehold::changelog::{BoxError, ChangeLog, Cleanup, MemoryChangeLog, OwnerId, Phase};
/// use leasehold::clock::ManualClock;
/// use leasehold::recovery::{RecoveryConfig, RecoveryLoop};
///
/// struct Print;
/// impl Cleanup<String> for Print {
///     async fn cleanup(&self, intent: &String, _: Phase) -> Result<(), BoxError> {
///         println!("undoing {intent}");
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = leasehold::clock::system();
/// let log = Arc::new(MemoryChangeLog::new(clock.clone(), Duration::from_secs(30)));
/// log.record(&OwnerId::new("crashed-writer"), b"put a -> blob-7".to_vec()).await?;
///
/// let recovery = RecoveryLoop::spawn::<_, String, _>(
///     Arc::clone(&log),
///     OwnerId::unique("recovery"),
///     Print,
///     RecoveryConfig::builder().clock(clock).build()?,
/// )?;
/// // 30 s later (paused time: instantly) the entry is stale, claimed, cleaned.
/// recovery.wait_for_stats(|s| s.cleaned == 1).await;
/// let stats = recovery.shutdown().await;
/// assert_eq!((stats.claimed, stats.cleaned, stats.quarantined), (1, 1, 0));
/// assert!(log.list().await?.is_empty());
/// # Ok(()) }
/// ```
pub struct RecoveryLoop {
    state: WatchCell<State>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for RecoveryLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.state.read(|state| {
            f.debug_struct("RecoveryLoop")
                .field("stats", &state.stats)
                .field("stopping", &state.stopping)
                .finish_non_exhaustive()
        })
    }
}

impl RecoveryLoop {
    /// Starts the loop on the current tokio runtime, claiming as `owner`.
    ///
    /// # Errors
    ///
    /// [`RecoveryConfigError`] if no valid batch heartbeat fits in the log's
    /// staleness threshold (see [`RecoveryConfig::heartbeat_for`]).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn<L, P, C>(
        log: Arc<L>,
        owner: OwnerId,
        cleanup: C,
        config: RecoveryConfig,
    ) -> Result<Self, RecoveryConfigError>
    where
        L: ChangeLog,
        P: Payload,
        C: Cleanup<P>,
    {
        let heartbeat = config.heartbeat_for(log.staleness())?;
        let state = WatchCell::new(State::default());
        let worker = Worker {
            log,
            owner,
            cleanup: Arc::new(cleanup),
            config,
            heartbeat,
            state: state.clone(),
            _payload: PhantomData::<fn() -> P>,
        };
        let task = tokio::spawn(worker.run());
        Ok(RecoveryLoop {
            state,
            task: Some(task),
        })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RecoveryStats {
        self.state.read(|state| state.stats)
    }

    /// Every entry quarantined so far, in order.
    pub fn quarantine_reports(&self) -> Vec<QuarantineReport> {
        self.state.read(|state| state.quarantined.clone())
    }

    /// The most recent error the loop counted, for display.
    pub fn last_error(&self) -> Option<String> {
        self.state.read(|state| state.last_error.clone())
    }

    /// Waits until `predicate` holds on the counters (woken only when it
    /// does), e.g. `|s| s.cleaned >= 1000`, or until the loop stops.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_for_stats(
        &self,
        mut predicate: impl FnMut(&RecoveryStats) -> bool + Send + 'static,
    ) {
        let _ = self
            .state
            .wait_for(move |state| predicate(&state.stats) || state.stopping)
            .await;
    }

    /// Whether the loop task is still running.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }

    /// Stops the loop at its next await point and waits for it to end;
    /// returns the final counters.
    ///
    /// Entries claimed but not yet processed stay claimed and are reclaimed
    /// once stale.
    ///
    /// # Panics
    ///
    /// Resumes the loop task's panic, if it panicked (a cleanup that panics).
    ///
    /// # Cancel safety
    ///
    /// The stop is requested when `shutdown` is called; the returned future
    /// only waits for it, and may be dropped.
    pub fn shutdown(mut self) -> impl std::future::Future<Output = RecoveryStats> + Send + 'static {
        self.request_stop();
        let task = self.task.take();
        let state = self.state.clone();
        async move {
            if let Some(task) = task {
                if let Err(error) = task.await {
                    if error.is_panic() {
                        std::panic::resume_unwind(error.into_panic());
                    }
                }
            }
            state.read(|state| state.stats)
        }
    }

    fn request_stop(&self) {
        self.state
            .modify_if(|state| !std::mem::replace(&mut state.stopping, true));
    }
}

impl Drop for RecoveryLoop {
    fn drop(&mut self) {
        self.request_stop();
    }
}

struct Worker<L, P, C> {
    log: Arc<L>,
    owner: OwnerId,
    cleanup: Arc<C>,
    config: RecoveryConfig,
    heartbeat: HeartbeatConfig,
    state: WatchCell<State>,
    _payload: PhantomData<fn() -> P>,
}

/// The entries of a claimed batch not yet processed: what its heartbeat
/// refreshes. An entry leaves it *before* it is removed or quarantined, so
/// a beat never mistakes our own removal for a loss.
type Pending = Arc<Mutex<Vec<Fence>>>;

impl<L, P, C> Worker<L, P, C>
where
    L: ChangeLog,
    P: Payload,
    C: Cleanup<P>,
{
    async fn run(self) {
        let mut backoff = Backoff::new(&self.config);
        loop {
            let stop = pin!(self.state.wait_for(|state| state.stopping));
            let step = pin!(self.step(&mut backoff));
            if let Either::Left(_) = select(stop, step).await {
                break;
            }
        }
        // Wake `wait_for_stats` callers waiting on a loop that stopped
        // for any reason.
        self.state
            .modify_if(|state| !std::mem::replace(&mut state.stopping, true));
    }

    /// One poll, and what follows it: backoff, idle wait, or a batch.
    async fn step(&self, backoff: &mut Backoff) {
        let anchor = self.config.clock.now();
        let polled = self
            .log
            .claim_stale(&self.owner, self.config.batch_size)
            .await;
        self.count(|s| s.polls += 1);
        match polled {
            Err(error) => {
                self.error(&error);
                self.config.clock.sleep(backoff.next_wait()).await;
            }
            Ok(batch) if batch.is_empty() => {
                backoff.reset();
                // Wake when the next entry this handle watches may be judged
                // stale, if that comes before the idle wait ends: a dead
                // writer's entry is claimed within staleness plus one poll.
                let idle = self.config.idle_wait;
                let wait = self.log.next_stale_in().map_or(idle, |ripe| {
                    ripe.clamp(idle.min(Duration::from_millis(10)), idle)
                });
                self.config.clock.sleep(wait).await;
            }
            Ok(batch) => {
                backoff.reset();
                let n = batch.len() as u64;
                self.count(|s| s.claimed += n);
                self.process(anchor, batch).await;
            }
        }
    }

    /// Processes a claimed batch while one heartbeat keeps all of its
    /// unprocessed entries alive.
    async fn process(&self, anchor: Instant, batch: Vec<ClaimedEntry>) {
        let pending: Pending = Arc::new(Mutex::new(
            batch.iter().map(|entry| entry.fence.clone()).collect(),
        ));
        let lost = Arc::new(Mutex::new(HashSet::<EntryId>::new()));
        let heartbeat = Heartbeat::spawn_anchored(&self.heartbeat, anchor, {
            let (log, pending, lost, state) = (
                Arc::clone(&self.log),
                Arc::clone(&pending),
                Arc::clone(&lost),
                self.state.clone(),
            );
            move || {
                let (log, pending, lost, state) = (
                    Arc::clone(&log),
                    Arc::clone(&pending),
                    Arc::clone(&lost),
                    state.clone(),
                );
                async move { refresh_pending(&*log, &pending, &lost, &state).await }
            }
        });
        let validity = heartbeat.validity();
        let mut backoff = Backoff::new(&self.config);
        for entry in batch {
            // Once the batch's validity has lapsed, others may own the rest:
            // leave it to be reclaimed.
            if !validity.is_valid() {
                break;
            }
            if lost.lock().contains(&entry.fence.id()) {
                continue;
            }
            self.process_entry(&entry, &validity, &pending, &lost, &mut backoff)
                .await;
        }
        heartbeat.stop().await;
    }

    async fn process_entry(
        &self,
        entry: &ClaimedEntry,
        validity: &Validity,
        pending: &Pending,
        lost: &Mutex<HashSet<EntryId>>,
        backoff: &mut Backoff,
    ) {
        if entry.claims > self.config.max_claims {
            let reason = format!(
                "claimed {} times without its cleanup completing",
                entry.claims
            );
            return self.quarantine(&entry.fence, reason, pending).await;
        }
        let payload = match P::decode(&entry.payload) {
            Ok(payload) => payload,
            Err(error) => {
                return self
                    .quarantine(&entry.fence, error.to_string(), pending)
                    .await;
            }
        };
        backoff.reset();
        // The store knows whether a fenced commit landed; otherwise the
        // cleanup must find out.
        let phase = if entry.committed {
            Phase::Committed
        } else {
            Phase::Unknown
        };
        for attempt in 1..=self.config.cleanup_attempts {
            let cleaned = validity
                .run_while_valid(self.cleanup.cleanup(&payload, phase))
                .await;
            match cleaned {
                // Validity lapsed mid-cleanup: the entry may be someone
                // else's now; they will clean up (idempotently).
                Err(_) => return,
                Ok(Ok(())) => {
                    unpend(pending, &entry.fence);
                    match self.log.remove(&entry.fence).await {
                        Ok(Removal::Removed | Removal::Absent) => self.count(|s| s.cleaned += 1),
                        // Counted once, whether the beat or the removal saw it.
                        Ok(Removal::Fenced) => {
                            if lost.lock().insert(entry.fence.id()) {
                                self.count(|s| s.lost += 1);
                            }
                        }
                        Err(error) => self.error(&error),
                    }
                    return;
                }
                Ok(Err(error)) => {
                    self.error(&*error);
                    if attempt == self.config.cleanup_attempts {
                        let reason = format!("cleanup failed {attempt} times; last error: {error}");
                        return self.quarantine(&entry.fence, reason, pending).await;
                    }
                    let retry = self.config.clock.sleep(backoff.next_wait());
                    if let Either::Right(_) = select(retry, pin!(validity.invalidated())).await {
                        return;
                    }
                }
            }
        }
    }

    async fn quarantine(&self, fence: &Fence, reason: String, pending: &Pending) {
        unpend(pending, fence);
        match self.log.quarantine(fence, &reason).await {
            Ok(Ownership::Held) => self.state.modify(|state| {
                state.stats.quarantined += 1;
                state.quarantined.push(QuarantineReport {
                    fence: fence.clone(),
                    reason,
                });
            }),
            Ok(Ownership::Lost) => self.count(|s| s.lost += 1),
            Err(error) => self.error(&error),
        }
    }

    fn count(&self, f: impl FnOnce(&mut RecoveryStats)) {
        self.state.modify(|state| f(&mut state.stats));
    }

    fn error(&self, error: &(dyn std::error::Error + '_)) {
        let message = error.to_string();
        self.state.modify(|state| {
            state.stats.errors += 1;
            state.last_error = Some(message);
        });
    }
}

fn unpend(pending: &Pending, fence: &Fence) {
    pending.lock().retain(|pending| pending != fence);
}

/// One beat of a batch: refresh every unprocessed entry. An entry reported
/// lost leaves the batch; a store failure makes the beat transient (retried
/// by the heartbeat until the deadline).
async fn refresh_pending<L: ChangeLog>(
    log: &L,
    pending: &Pending,
    lost: &Mutex<HashSet<EntryId>>,
    state: &WatchCell<State>,
) -> Result<(), BeatError> {
    let fences = pending.lock().clone();
    for fence in fences {
        match log.refresh(&fence).await {
            Ok(Ownership::Held) => {}
            Ok(Ownership::Lost) => {
                // Count it only if it is still pending: an entry we just
                // removed or quarantined ourselves is not lost.
                let was_pending = {
                    let mut pending = pending.lock();
                    let before = pending.len();
                    pending.retain(|p| p != &fence);
                    pending.len() != before
                };
                if was_pending {
                    lost.lock().insert(fence.id());
                    state.modify(|state| state.stats.lost += 1);
                }
            }
            Err(error) => return Err(BeatError::transient(error)),
        }
    }
    Ok(())
}
