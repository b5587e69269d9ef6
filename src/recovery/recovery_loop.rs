//! [`RecoveryLoop`]: continuous, exactly-once recovery of stale entries.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{Either, select};

use super::config::RecoveryConfig;
use super::error::{RecoveryConfigError, RecoveryError};
use super::events;
use crate::WatchCell;
use crate::backoff::Backoff;
use crate::changelog::{
    Attempt, ChangeLog, ClaimedEntry, Cleanup, EntryId, Fence, OwnerId, Ownership, Payload, Phase,
    RECENT_FAILURES, Removal, clip_failure,
};
use crate::heartbeat::{BeatError, Heartbeat, HeartbeatConfig, Validity};
use crate::sync::Mutex;
use crate::trace;

/// How many quarantine reports a loop keeps (the most recent); older ones
/// are counted in [`RecoveryStats::reports_dropped`].
pub const REPORTS_KEPT: usize = 1000;

/// Counters of a [`RecoveryLoop`], monotonically increasing.
///
/// Every claimed entry ends in exactly one outcome, so once the loop has
/// stopped `claimed == cleaned + quarantined + lost + released` (while it
/// runs, the difference is the entries in hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct RecoveryStats {
    /// Polls of the log (calls to `claim_stale`).
    pub polls: u64,
    /// Entries claimed.
    pub claimed: u64,
    /// Outcome: entries cleaned up and removed.
    pub cleaned: u64,
    /// Outcome: entries quarantined (undecodable, or out of cleanup
    /// attempts).
    pub quarantined: u64,
    /// Outcome: claimed entries lost to another owner before they were
    /// settled (the batch heartbeat stalled past the staleness threshold).
    pub lost: u64,
    /// Outcome: claimed entries left in the log to go stale and be claimed
    /// again: abandoned at the cleanup deadline, cut off with their batch,
    /// after a store failure, or at shutdown.
    pub released: u64,
    /// Cleanup attempts started (each recorded in the log first).
    pub attempts: u64,
    /// Cleanup attempts that failed: an error, a panic (in the cleanup or
    /// in decoding the payload), or the deadline.
    pub failed_attempts: u64,
    /// Of the failed attempts, those abandoned at the cleanup deadline.
    pub abandoned: u64,
    /// Failed calls and attempts: polls, cleanup attempts, changelog calls
    /// on claimed entries.
    pub errors: u64,
    /// Quarantine reports dropped from
    /// [`quarantine_reports`](RecoveryLoop::quarantine_reports) to bound its
    /// size (the entries themselves stay quarantined in the log).
    pub reports_dropped: u64,
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
    /// Cleanup attempts started on the entry, by any recoverer.
    pub attempts: u32,
    /// Why the most recent attempts failed, oldest first (at most
    /// [`RECENT_FAILURES`](crate::changelog::RECENT_FAILURES)).
    pub failures: Vec<String>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) stats: RecoveryStats,
    pub(super) quarantined: VecDeque<QuarantineReport>,
    pub(super) last_error: Option<Arc<RecoveryError>>,
    pub(super) stopping: bool,
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
/// | a poll fails permanently (schema, configuration) | reports it and retries only at the longest backoff |
/// | nothing is stale | waits the idle wait (1 s by default), polls again |
/// | a batch was claimed | processes it, then polls again at once |
/// | a payload or row does not decode | quarantines the entry and reports it |
/// | a cleanup fails or panics | counts a failed attempt, retries (spaced by the backoff) |
/// | a cleanup overruns its deadline | abandons it (a failed attempt) and stops keeping the entry alive: it goes stale and is retried by the next claim |
/// | an entry is out of attempts | quarantines it with the reasons of its recent failures |
/// | the batch heartbeat lost an entry, or stalled | skips the lost entry, or leaves the rest of the batch to be reclaimed |
///
/// Attempts are counted in the log
/// ([`ChangeLog::start_attempt`]), by every recoverer, before each cleanup
/// starts: an entry whose recoverers keep dying *in* its cleanup runs out of
/// attempts, while healthy entries whose recoverers died before reaching
/// them are charged nothing. Each cleanup attempt runs as its own task, so
/// a panic is contained and a hung attempt can be abandoned.
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
    /// staleness threshold (see [`RecoveryConfig::heartbeat_for`]), or the
    /// cleanup deadline is shorter than it
    /// ([`RecoveryConfig::cleanup_deadline_for`]).
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
        let deadline = config.cleanup_deadline_for(log.staleness())?;
        let state = WatchCell::new(State::default());
        let worker = Worker {
            log,
            owner,
            cleanup: Arc::new(cleanup),
            config,
            heartbeat,
            deadline,
            state: state.clone(),
            _payload: PhantomData::<fn() -> P>,
        };
        let task = tokio::spawn(trace::instrument!(
            worker.run(),
            "recovery_loop",
            owner = %worker.owner
        ));
        Ok(RecoveryLoop {
            state,
            task: Some(task),
        })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RecoveryStats {
        self.state.read(|state| state.stats)
    }

    /// The entries quarantined so far, in order: the most recent
    /// [`REPORTS_KEPT`] not yet drained (older ones are counted in
    /// [`RecoveryStats::reports_dropped`]; the log still lists them).
    pub fn quarantine_reports(&self) -> Vec<QuarantineReport> {
        self.state
            .read(|state| state.quarantined.iter().cloned().collect())
    }

    /// Takes the quarantine reports kept so far, in order, leaving none:
    /// poll this to forward every report (to an operator, an alert) without
    /// the loop's memory growing.
    pub fn drain_quarantine_reports(&self) -> Vec<QuarantineReport> {
        self.state
            .modify(|state| state.quarantined.drain(..).collect())
    }

    /// The most recent error the loop counted, with its source chain.
    ///
    /// # Examples
    ///
    /// ```
    /// # use leasehold::recovery::RecoveryLoop;
    /// fn report(recovery: &RecoveryLoop) {
    ///     if let Some(error) = recovery.last_error() {
    ///         let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    ///         while let Some(e) = cause {
    ///             eprintln!("recovery: {e}");
    ///             cause = e.source();
    ///         }
    ///     }
    /// }
    /// ```
    pub fn last_error(&self) -> Option<Arc<RecoveryError>> {
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
    /// Resumes the loop task's panic, if it panicked. Panics of a cleanup or
    /// of a payload's decoding are contained (counted as failed attempts);
    /// only a panic of the log itself reaches here.
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
    deadline: Duration,
    state: WatchCell<State>,
    _payload: PhantomData<fn() -> P>,
}

/// The entries of a claimed batch not yet settled: what its heartbeat
/// refreshes. Whoever takes an entry out (the loop about to remove,
/// quarantine or release it, or the heartbeat finding it lost) counts its
/// one outcome; an entry leaves *before* it is removed or quarantined, so a
/// beat never mistakes our own removal for a loss.
#[derive(Debug, Default)]
struct Ledger {
    open: Mutex<Vec<Fence>>,
}

impl Ledger {
    fn fences(&self) -> Vec<Fence> {
        self.open.lock().clone()
    }

    fn holds(&self, id: EntryId) -> bool {
        self.open.lock().iter().any(|f| f.id() == id)
    }

    /// Takes the entry out; `false` if someone already did.
    fn take(&self, id: EntryId) -> bool {
        let mut open = self.open.lock();
        let before = open.len();
        open.retain(|f| f.id() != id);
        open.len() != before
    }
}

/// Releases whatever a batch leaves unsettled, however its processing ends
/// (done, cut off, or dropped at shutdown): each such entry's outcome.
struct Settle {
    ledger: Arc<Ledger>,
    state: WatchCell<State>,
}

impl Drop for Settle {
    fn drop(&mut self) {
        let rest = std::mem::take(&mut *self.ledger.open.lock());
        for fence in rest {
            events::released(&self.state, fence.id());
        }
    }
}

/// Sets `stopping` however the loop task ends (a panic included), waking
/// `wait_for_stats` callers.
struct Stopped(WatchCell<State>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0
            .modify_if(|state| !std::mem::replace(&mut state.stopping, true));
    }
}

/// Aborts a cleanup task when its attempt is abandoned or dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How one cleanup attempt ended.
enum Attempted {
    Done,
    Failed(RecoveryError),
    Undecodable(crate::changelog::DecodeError),
    /// The batch's validity lapsed: the entry may be someone else's now.
    Invalid,
}

impl<L, P, C> Worker<L, P, C>
where
    L: ChangeLog,
    P: Payload,
    C: Cleanup<P>,
{
    async fn run(self) {
        let _stopped = Stopped(self.state.clone());
        let mut backoff = self.config.backoff();
        loop {
            let stop = pin!(self.state.wait_for(|state| state.stopping));
            let step = pin!(self.step(&mut backoff));
            if let Either::Left(_) = select(stop, step).await {
                break;
            }
        }
    }

    /// One poll, and what follows it: backoff, idle wait, or a batch.
    async fn step(&self, backoff: &mut Backoff) {
        let anchor = self.config.clock.now();
        let polled = self
            .log
            .claim_stale(&self.owner, self.config.batch_size)
            .await;
        events::polled(&self.state);
        match polled {
            Err(source) => {
                // Retrying soon cannot fix a schema or a configuration: say
                // so, and retry at the longest backoff only.
                let wait = if source.is_transient() {
                    backoff.next_delay()
                } else {
                    backoff.exhaust();
                    backoff.max()
                };
                events::poll_failed(&self.state, RecoveryError::Poll(source), wait);
                self.config.clock.sleep(wait).await;
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
                events::claimed(&self.state, &batch);
                trace::instrument!(
                    self.process(anchor, batch),
                    "recovery_batch",
                    entries = batch.len()
                )
                .await;
            }
        }
    }

    /// Processes a claimed batch while one heartbeat keeps all of its
    /// unsettled entries alive.
    async fn process(&self, anchor: Instant, batch: Vec<ClaimedEntry>) {
        // Rows the store could not decode were quarantined by the claim.
        let (unusable, batch): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|e| e.quarantined.is_some());
        for entry in unusable {
            events::quarantined(
                &self.state,
                QuarantineReport {
                    reason: entry.quarantined.unwrap_or_default(),
                    fence: entry.fence,
                    attempts: entry.attempts,
                    failures: entry.failures,
                },
            );
        }
        let ledger = Arc::new(Ledger {
            open: Mutex::new(batch.iter().map(|entry| entry.fence.clone()).collect()),
        });
        let _settle = Settle {
            ledger: Arc::clone(&ledger),
            state: self.state.clone(),
        };
        let heartbeat = Heartbeat::spawn_anchored(&self.heartbeat, anchor, {
            let (log, ledger, state) = (
                Arc::clone(&self.log),
                Arc::clone(&ledger),
                self.state.clone(),
            );
            move || {
                let (log, ledger, state) = (Arc::clone(&log), Arc::clone(&ledger), state.clone());
                async move { refresh_open(&*log, &ledger, &state).await }
            }
        });
        let validity = heartbeat.validity();
        let mut backoff = self.config.backoff();
        for entry in &batch {
            // Once the batch's validity has lapsed, others may own the rest:
            // leave it to be reclaimed (released when `_settle` drops).
            if !validity.is_valid() {
                break;
            }
            if !ledger.holds(entry.fence.id()) {
                continue; // lost, and counted, by the heartbeat
            }
            self.process_entry(entry, &validity, &ledger, &mut backoff)
                .await;
        }
        heartbeat.stop().await;
    }

    /// Attempts `entry`'s cleanup until it is settled: cleaned, quarantined
    /// (out of attempts, or undecodable), lost, or released.
    async fn process_entry(
        &self,
        entry: &ClaimedEntry,
        validity: &Validity,
        ledger: &Ledger,
        backoff: &mut Backoff,
    ) {
        let fence = &entry.fence;
        let id = fence.id();
        let mut attempts = entry.attempts;
        let mut failures = entry.failures.clone();
        backoff.reset();
        // The store knows whether a fenced commit landed; otherwise the
        // cleanup must find out.
        let phase = if entry.committed {
            Phase::Committed
        } else {
            Phase::Unknown
        };
        loop {
            if attempts >= self.config.cleanup_attempts {
                let reason = out_of_attempts(attempts, &failures);
                return self
                    .quarantine(fence, reason, attempts, failures, ledger)
                    .await;
            }
            // Counted durably before the cleanup starts: a recoverer that
            // dies inside it has still used the attempt up.
            match self.log.start_attempt(fence).await {
                Ok(Attempt::Started { number }) => attempts = number,
                Ok(_) => return self.lose(fence, ledger),
                Err(source) => {
                    let call = "start_attempt";
                    return self.release_after(ledger, id, call, source);
                }
            }
            events::attempt_started(&self.state, fence, attempts);
            let failure = match self.attempt(entry, phase, attempts, validity).await {
                Attempted::Done => return self.remove(fence, ledger).await,
                Attempted::Undecodable(error) => {
                    let reason = error.to_string();
                    return self
                        .quarantine(fence, reason, attempts, failures, ledger)
                        .await;
                }
                Attempted::Invalid => {
                    if ledger.take(id) {
                        events::released(&self.state, id);
                    }
                    return;
                }
                Attempted::Failed(failure) => failure,
            };
            let reason = chain(&failure);
            let abandoned = matches!(failure, RecoveryError::DeadlineExceeded { .. });
            if abandoned {
                events::abandoned(&self.state, fence, failure);
            } else {
                events::attempt_failed(&self.state, fence, failure);
            }
            match self.log.record_failure(fence, &reason).await {
                Ok(Ownership::Held) => {}
                Ok(Ownership::Lost) => return self.lose(fence, ledger),
                // The attempt itself is counted; only its reason is missing.
                Err(source) => events::store_failed(
                    &self.state,
                    RecoveryError::Store {
                        id,
                        call: "record_failure",
                        source,
                    },
                ),
            }
            failures.push(clip_failure(&reason));
            let excess = failures.len().saturating_sub(RECENT_FAILURES);
            failures.drain(..excess);
            if attempts >= self.config.cleanup_attempts {
                continue; // quarantined at the top of the loop
            }
            if abandoned {
                // Stop keeping it alive: whoever claims it next (perhaps
                // this loop) tries again, with a fresh attempt.
                if ledger.take(id) {
                    events::released(&self.state, id);
                }
                return;
            }
            let retry = self.config.clock.sleep(backoff.next_delay());
            if let Either::Right(_) = select(retry, pin!(validity.invalidated())).await {
                if ledger.take(id) {
                    events::released(&self.state, id);
                }
                return;
            }
        }
    }

    /// One cleanup attempt: decodes the payload and runs the cleanup as its
    /// own task, with panics contained, until it ends, its deadline passes,
    /// or the batch's validity lapses.
    async fn attempt(
        &self,
        entry: &ClaimedEntry,
        phase: Phase,
        attempt: u32,
        validity: &Validity,
    ) -> Attempted {
        let id = entry.fence.id();
        let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| P::decode(&entry.payload)));
        let payload = match decoded {
            Ok(Ok(payload)) => payload,
            Ok(Err(error)) => return Attempted::Undecodable(error),
            Err(panic) => {
                return Attempted::Failed(RecoveryError::Panicked {
                    id,
                    attempt,
                    what: "decoding",
                    message: panic_message(&*panic),
                });
            }
        };
        let cleanup = Arc::clone(&self.cleanup);
        // The cleanup's own events carry the entry and the attempt.
        let mut task = tokio::spawn(trace::instrument!(
            AssertUnwindSafe(async move { cleanup.cleanup(&payload, phase).await }).catch_unwind(),
            "cleanup",
            entry = %id,
            generation = entry.fence.generation(),
            attempt,
        ));
        // Dropping the attempt (deadline, lapse, shutdown) drops the cleanup.
        let _abort = AbortOnDrop(task.abort_handle());
        let mut deadline = self.config.clock.sleep(self.deadline);
        let mut invalidated = pin!(validity.invalidated());
        enum Ended<T> {
            Joined(T),
            Invalid,
            Deadline,
        }
        // Biased, in this order: a cleanup that ended counts even if the
        // deadline passed in the same poll.
        let ended = std::future::poll_fn(|cx| {
            if let Poll::Ready(joined) = Pin::new(&mut task).poll(cx) {
                return Poll::Ready(Ended::Joined(joined));
            }
            if invalidated.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ended::Invalid);
            }
            deadline.as_mut().poll(cx).map(|()| Ended::Deadline)
        });
        match ended.await {
            Ended::Joined(Ok(Ok(Ok(())))) => Attempted::Done,
            Ended::Joined(Ok(Ok(Err(source)))) => Attempted::Failed(RecoveryError::Cleanup {
                id,
                attempt,
                source,
            }),
            Ended::Joined(Ok(Err(panic))) => Attempted::Failed(RecoveryError::Panicked {
                id,
                attempt,
                what: "cleanup",
                message: panic_message(&*panic),
            }),
            // Cancelled by the runtime shutting down.
            Ended::Joined(Err(error)) => Attempted::Failed(RecoveryError::Panicked {
                id,
                attempt,
                what: "cleanup",
                message: error.to_string(),
            }),
            Ended::Invalid => Attempted::Invalid,
            Ended::Deadline => Attempted::Failed(RecoveryError::DeadlineExceeded {
                id,
                attempt,
                deadline: self.deadline,
            }),
        }
    }

    async fn remove(&self, fence: &Fence, ledger: &Ledger) {
        if !ledger.take(fence.id()) {
            return; // lost meanwhile, and counted by the heartbeat
        }
        match self.log.remove(fence).await {
            Ok(Removal::Removed | Removal::Absent) => events::cleaned(&self.state, fence),
            Ok(Removal::Fenced) => events::lost(&self.state, fence),
            Err(source) => {
                let error = RecoveryError::Store {
                    id: fence.id(),
                    call: "remove",
                    source,
                };
                events::store_failed(&self.state, error);
                events::released(&self.state, fence.id());
            }
        }
    }

    async fn quarantine(
        &self,
        fence: &Fence,
        reason: String,
        attempts: u32,
        failures: Vec<String>,
        ledger: &Ledger,
    ) {
        if !ledger.take(fence.id()) {
            return;
        }
        match self.log.quarantine(fence, &reason).await {
            Ok(Ownership::Held) => events::quarantined(
                &self.state,
                QuarantineReport {
                    fence: fence.clone(),
                    reason,
                    attempts,
                    failures,
                },
            ),
            Ok(Ownership::Lost) => events::lost(&self.state, fence),
            Err(source) => {
                let error = RecoveryError::Store {
                    id: fence.id(),
                    call: "quarantine",
                    source,
                };
                events::store_failed(&self.state, error);
                events::released(&self.state, fence.id());
            }
        }
    }

    fn lose(&self, fence: &Fence, ledger: &Ledger) {
        if ledger.take(fence.id()) {
            events::lost(&self.state, fence);
        }
    }

    fn release_after(
        &self,
        ledger: &Ledger,
        id: EntryId,
        call: &'static str,
        source: crate::changelog::ChangeLogError,
    ) {
        events::store_failed(&self.state, RecoveryError::Store { id, call, source });
        if ledger.take(id) {
            events::released(&self.state, id);
        }
    }
}

/// The quarantine reason of an entry out of attempts.
fn out_of_attempts(attempts: u32, failures: &[String]) -> String {
    if failures.is_empty() {
        format!(
            "cleanup attempted {attempts} times without completing; no failure was recorded \
             (its recoverers stopped during the cleanup)"
        )
    } else {
        format!(
            "cleanup attempted {attempts} times without completing; recent failures: {}",
            failures.join(" | ")
        )
    }
}

/// An error and its sources, on one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// One beat of a batch: refresh every unsettled entry. An entry reported
/// lost leaves the batch; a store failure makes the beat transient (retried
/// by the heartbeat until the deadline).
async fn refresh_open<L: ChangeLog>(
    log: &L,
    ledger: &Ledger,
    state: &WatchCell<State>,
) -> Result<(), BeatError> {
    for fence in ledger.fences() {
        match log.refresh(&fence).await {
            Ok(Ownership::Held) => {}
            // Counted only if still open: an entry we just removed or
            // quarantined ourselves is not lost.
            Ok(Ownership::Lost) => {
                if ledger.take(fence.id()) {
                    events::lost(state, &fence);
                }
            }
            Err(error) => return Err(BeatError::transient(error)),
        }
    }
    Ok(())
}
