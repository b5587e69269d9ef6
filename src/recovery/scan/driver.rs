//! [`RecoveryScan`]: drives a sync over every key of an ordered source,
//! concurrently, with retries, persisting a resume point that never passes
//! unfinished work.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};

use super::cursor::{ResumePoint, SettledCursor};
use super::error::{ProgressStoreError, ScanConfigError, ScanError};
use super::progress::{Checkpoint, ProgressStore, ScanKey, ScopeFingerprint};
use super::retry::{RetryPolicy, RetryQueue};
use crate::clock::{self, Clock};
use crate::status::{
    self, CancellationToken, Outcome, SyncOutcome, SyncPublisher, SyncReceiver, SyncRegistry,
};
use crate::sync::Mutex;

/// An ordered source of the keys a scan walks (e.g. an index query).
///
/// Errors are errors: the scan stops with [`ScanError::Source`] rather than
/// take a failed read for the end of the keys.
///
/// # Examples
///
/// ```
/// use leasehold::recovery::{KeySource, ResumePoint};
///
/// /// Keys 0, 10, 20, …, 990.
/// struct Tens;
///
/// impl KeySource<u64> for Tens {
///     type Error = std::convert::Infallible;
///
///     async fn next_batch(&self, from: &ResumePoint<u64>, limit: usize) -> Result<Vec<u64>, Self::Error> {
///         Ok((0..100).map(|i| i * 10).filter(|k| !from.covers(k)).take(limit).collect())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// assert_eq!(Tens.next_batch(&ResumePoint::After(20), 2).await.unwrap(), [30, 40]);
/// # }
/// ```
pub trait KeySource<K>: Send + Sync + 'static {
    /// Why a read failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Up to `limit` keys that `from` does not cover (see
    /// [`ResumePoint::covers`]), in strictly increasing order. Fewer than
    /// `limit` is fine; an empty batch means there are no more keys.
    ///
    /// # Errors
    ///
    /// `Self::Error` if the keys could not be read.
    fn next_batch(
        &self,
        from: &ResumePoint<K>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<K>, Self::Error>> + Send;
}

/// A fixed set of keys is a source (handy for tests and small scans).
impl<K: ScanKey> KeySource<K> for BTreeSet<K> {
    type Error = Infallible;

    async fn next_batch(&self, from: &ResumePoint<K>, limit: usize) -> Result<Vec<K>, Infallible> {
        let keys = match from {
            ResumePoint::Start => self.range(..),
            ResumePoint::From(key) => self.range(key.clone()..),
            ResumePoint::After(key) => self.range((
                std::ops::Bound::Excluded(key.clone()),
                std::ops::Bound::Unbounded,
            )),
        };
        Ok(keys.take(limit).cloned().collect())
    }
}

impl<K, S: KeySource<K>> KeySource<K> for Arc<S> {
    type Error = S::Error;

    fn next_batch(
        &self,
        from: &ResumePoint<K>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<K>, Self::Error>> + Send {
        (**self).next_batch(from, limit)
    }
}

/// What a re-check before a retry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recheck {
    /// The key still needs its sync: run it again.
    NeedsWork,
    /// The work is done (another instance, or a request, did it): settle the
    /// key without running the sync.
    Done,
}

/// The settings of a [`RecoveryScan`].
#[derive(Debug, Clone)]
pub struct ScanConfig {
    /// Most syncs and re-checks running at once (default 16). Retries count.
    pub concurrency: usize,
    /// Persist the resume point each time it has moved past this many more
    /// settled keys (default 100): a rate in settled items, not key
    /// distance.
    pub checkpoint_every: u64,
    /// Most keys read but not yet passed by the resume point (default 256):
    /// unfinished keys plus settled keys waiting behind one. It bounds both
    /// memory and the work a crash repeats; the scan reads no new key while
    /// it is full.
    pub window: usize,
    /// Keys asked of the source per read (default 256).
    pub batch_size: usize,
    /// Backoff of failed and cancelled syncs (default 1 s doubling, capped
    /// at 30 s, jitter 0.5, never give up).
    pub retry: RetryPolicy,
    /// Seeds the retry jitter (default: random per scan).
    pub jitter_seed: u64,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            concurrency: 16,
            checkpoint_every: 100,
            window: 256,
            batch_size: 256,
            retry: RetryPolicy::default(),
            jitter_seed: std::collections::hash_map::RandomState::new().hash_one(0_u8),
        }
    }
}

impl ScanConfig {
    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ScanConfigError`] naming the first setting that is zero where it must
    /// be positive, or an invalid [`RetryPolicy`].
    pub fn validate(&self) -> Result<(), ScanConfigError> {
        let positive = [
            ("concurrency", self.concurrency as u64),
            ("checkpoint_every", self.checkpoint_every),
            ("window", self.window as u64),
            ("batch_size", self.batch_size as u64),
        ];
        if let Some((setting, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ScanConfigError {
                setting,
                reason: "must be positive".to_owned(),
            });
        }
        self.retry.validate()
    }
}

/// A snapshot of a scan's progress, from [`ScanControl::progress`], the
/// progress callback, and the [`ScanReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanProgress<K> {
    /// Where this run started: the checkpoint's resume point, or `Start`.
    pub started_from: ResumePoint<K>,
    /// Whether a checkpoint of another scope was found and cleared.
    pub scope_changed: bool,
    /// Keys read from the source.
    pub read: u64,
    /// Keys settled: succeeded, skipped, found done by a re-check, or given up.
    pub settled: u64,
    /// Syncs that reported [`SyncOutcome::Success`].
    pub succeeded: u64,
    /// Syncs that reported [`SyncOutcome::Skipped`].
    pub skipped: u64,
    /// Keys a re-check found done.
    pub found_done: u64,
    /// Keys given up after [`RetryPolicy::max_attempts`].
    pub gave_up: u64,
    /// Syncs that ended `Failed` or `Cancelled` and were scheduled for a retry.
    pub retries: u64,
    /// Re-checks that failed (and were scheduled again).
    pub recheck_errors: u64,
    /// Keys whose sync is running now.
    pub in_flight: usize,
    /// Keys waiting for a retry (or being re-checked) now.
    pub awaiting_retry: usize,
    /// The point the scan could resume from now.
    pub resume_point: ResumePoint<K>,
    /// The last resume point this run saved, if any.
    pub persisted: Option<ResumePoint<K>>,
    /// Checkpoints this run saved.
    pub checkpoints: u64,
}

impl<K> ScanProgress<K> {
    fn new(started_from: ResumePoint<K>, scope_changed: bool) -> Self
    where
        K: Clone,
    {
        Self {
            resume_point: started_from.clone(),
            started_from,
            scope_changed,
            read: 0,
            settled: 0,
            succeeded: 0,
            skipped: 0,
            found_done: 0,
            gave_up: 0,
            retries: 0,
            recheck_errors: 0,
            in_flight: 0,
            awaiting_retry: 0,
            persisted: None,
            checkpoints: 0,
        }
    }
}

/// How a run of [`RecoveryScan::run`] ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport<K> {
    /// `true` if every key settled and the checkpoint was cleared; `false`
    /// if the scan was stopped through [`ScanControl::cancel`] (its resume
    /// point saved).
    pub completed: bool,
    /// The final counters.
    pub progress: ScanProgress<K>,
    /// Keys given up after [`RetryPolicy::max_attempts`], in the order they
    /// were given up. The resume point has passed them: they are the
    /// caller's to handle.
    pub gave_up: Vec<K>,
}

/// What happened to a scan's checkpoint when it stopped, from
/// [`ScanControl::stopped`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalCheckpoint<K> {
    /// The scan completed and cleared its checkpoint.
    Cleared,
    /// The scan stopped (cancelled, failed, or dropped) and its checkpoint
    /// holds this resume point.
    Saved(ResumePoint<K>),
    /// The final save failed, with this error; the store holds the
    /// previous checkpoint, which is older but still safe.
    Failed(String),
    /// No final save could run: the scan was dropped outside a tokio
    /// runtime, or the runtime shut down before the save ran. As after a
    /// crash, the store holds the last periodic checkpoint.
    NotSaved,
}

impl<K> Outcome for FinalCheckpoint<K> {
    fn abandoned() -> Self {
        FinalCheckpoint::NotSaved
    }

    fn panicked(message: String) -> Self {
        FinalCheckpoint::Failed(message)
    }
}

/// A handle on a [`RecoveryScan`] from [`RecoveryScan::control`]: stop it,
/// read its progress, and wait until its final checkpoint is stored.
/// Cheap to clone.
pub struct ScanControl<K> {
    shared: Arc<Shared<K>>,
    stopped: SyncReceiver<FinalCheckpoint<K>>,
}

struct Shared<K> {
    cancel: CancellationToken,
    progress: Mutex<ScanProgress<K>>,
}

impl<K: Clone> ScanControl<K> {
    /// Asks the scan to stop: it starts no more work, saves its resume point
    /// and returns a report with `completed == false`. Syncs in flight are
    /// not cancelled; they run on in the registry, and a later scan (or
    /// request) of their keys attaches to them.
    pub fn cancel(&self) {
        self.shared.cancel.cancel();
    }

    /// The scan's progress now.
    pub fn progress(&self) -> ScanProgress<K> {
        self.shared.progress.lock().clone()
    }

    /// Waits until the scan has stopped, however it stopped (completed,
    /// cancelled, failed, or its future dropped), and its final checkpoint
    /// save has finished; returns what was stored.
    ///
    /// Await it before starting another scan over the same store in the same
    /// process, so that the final save of the old scan cannot land after the
    /// new one's first save.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn stopped(&self) -> FinalCheckpoint<K>
    where
        K: Send + 'static,
    {
        self.stopped.done().await
    }

    /// Whether the scan has stopped and its final save finished.
    pub fn is_stopped(&self) -> bool {
        self.stopped.is_done()
    }
}

impl<K> Clone for ScanControl<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            stopped: self.stopped.clone(),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for ScanControl<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanControl")
            .field("cancelled", &self.shared.cancel.is_cancelled())
            .field("stopped", &self.stopped.is_done())
            .finish_non_exhaustive()
    }
}

type ProgressCallback<K> = Box<dyn FnMut(&ScanProgress<K>) + Send>;

/// A checkpointed scan over an ordered key space: runs a sync for every key
/// with at most [`concurrency`](ScanConfig::concurrency) at once, retries
/// the ones that fail or are cancelled, and persists a resume point that
/// never passes a key still in flight or waiting for a retry.
///
/// Pick it for recovery after downtime ("sync every blob this node should
/// hold"): a restart resumes where the last run got to instead of
/// rescanning everything, and never skips a key whose sync had not
/// finished.
///
/// - **Resume iff the scope matches.** The checkpoint carries a
///   [`ScopeFingerprint`]; a run with another scope clears it and starts
///   from the beginning.
/// - **Syncs go through a [`SyncRegistry`].** A key whose sync is already
///   in flight (from a stopped run of this scan, or from a request handler)
///   is attached to, not run twice.
/// - **Retries** of `Failed` and `Cancelled` syncs wait a capped,
///   jittered exponential backoff ([`RetryPolicy`]), take a concurrency
///   slot like any sync, and are preceded by the caller's re-check
///   ([`Recheck`]). A re-check that errs is scheduled again, never taken as
///   "done".
/// - **Checkpoints** are saved each time the resume point has passed
///   [`checkpoint_every`](ScanConfig::checkpoint_every) more settled keys,
///   and when the scan stops (see [`run`](Self::run) for the exact
///   guarantee); the checkpoint is cleared when every key has settled.
///   A crash therefore repeats at most `checkpoint_every - 1 + window`
///   settled keys' work.
///
/// # Examples
///
/// ```
/// use std::collections::BTreeSet;
/// use std::sync::Arc;
/// use leasehold::recovery::{MemoryProgressStore, Recheck, RecoveryScan, ScanConfig, ScopeFingerprint};
/// use leasehold::status::{SyncOutcome, SyncRegistry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let blobs: BTreeSet<u64> = (0..1_000).collect();
/// let store = MemoryProgressStore::new();
/// let scan = RecoveryScan::new(blobs, store.clone(), Arc::new(SyncRegistry::new()), ScanConfig::default())
///     .unwrap();
/// let report = scan
///     .run(
///         ScopeFingerprint::from("shards 0-3"),
///         |_blob, _cancel| async { SyncOutcome::Success },
///         |_blob| async { Ok::<_, std::io::Error>(Recheck::NeedsWork) },
///     )
///     .await
///     .unwrap();
/// assert!(report.completed);
/// assert_eq!(report.progress.succeeded, 1_000);
/// assert_eq!(store.checkpoint(), None); // cleared when done
/// # }
/// ```
pub struct RecoveryScan<K: ScanKey, Src, S> {
    source: Src,
    store: Arc<S>,
    registry: Arc<SyncRegistry<K>>,
    config: ScanConfig,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared<K>>,
    stopped: SyncPublisher<FinalCheckpoint<K>>,
    stopped_receiver: SyncReceiver<FinalCheckpoint<K>>,
    on_progress: Option<ProgressCallback<K>>,
}

impl<K, Src, S> RecoveryScan<K, Src, S>
where
    K: ScanKey,
    Src: KeySource<K>,
    S: ProgressStore,
{
    /// A scan of the keys of `source`, checkpointed in `store`, running its
    /// syncs through `registry`, on the [system clock](clock::system).
    ///
    /// # Errors
    ///
    /// [`ScanConfigError`] if `config` is invalid ([`ScanConfig::validate`]).
    pub fn new(
        source: Src,
        store: S,
        registry: Arc<SyncRegistry<K>>,
        config: ScanConfig,
    ) -> Result<Self, ScanConfigError> {
        config.validate()?;
        let (stopped, stopped_receiver) = status::channel();
        Ok(Self {
            source,
            store: Arc::new(store),
            registry,
            config,
            clock: clock::system(),
            shared: Arc::new(Shared {
                cancel: CancellationToken::new(),
                progress: Mutex::new(ScanProgress::new(ResumePoint::Start, false)),
            }),
            stopped,
            stopped_receiver,
            on_progress: None,
        })
    }

    /// Uses `clock` for retry backoffs (tests pass a
    /// [`ManualClock`](crate::clock::ManualClock)).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Calls `callback` with the progress when the run starts (after the
    /// checkpoint is loaded), after each checkpoint save, and when it ends.
    /// It runs on the scan's task: keep it short.
    pub fn on_progress(mut self, callback: impl FnMut(&ScanProgress<K>) + Send + 'static) -> Self {
        self.on_progress = Some(Box::new(callback));
        self
    }

    /// A handle to stop the scan, watch it, and wait for its final save.
    pub fn control(&self) -> ScanControl<K> {
        ScanControl {
            shared: Arc::clone(&self.shared),
            stopped: self.stopped_receiver.clone(),
        }
    }

    /// Runs the scan over `scope` until every key has settled, it is
    /// stopped, or it fails.
    ///
    /// `sync(key, cancel)` is started through the registry for each key
    /// (and again for each retry); its [`SyncOutcome`] decides what
    /// follows: `Success` and `Skipped` settle the key, `Failed` and
    /// `Cancelled` schedule a retry. Before a retry, `recheck(key)` decides
    /// whether the key still needs its sync ([`Recheck`]); if it errs, the
    /// re-check itself is retried after the next backoff.
    ///
    /// The run loads the checkpoint first: if its scope is `scope`, reading
    /// resumes at its resume point; if not, it is cleared and the scan
    /// starts from the beginning.
    ///
    /// # Final checkpoint
    ///
    /// - On completion the checkpoint is cleared, and `Ok` with
    ///   `completed == true` is returned.
    /// - On [`ScanControl::cancel`] the resume point is saved before `Ok`
    ///   with `completed == false` is returned.
    /// - On an error the resume point is saved (if the store still works)
    ///   before the error is returned.
    /// - If the future is **dropped** (task aborted, `select!` lost, timeout),
    ///   its drop spawns the final save on the current tokio runtime. It
    ///   completes unless the runtime shuts down first; dropped outside a
    ///   runtime, no save is attempted. [`ScanControl::stopped`] reports
    ///   which happened and resolves only after the save.
    ///
    /// In every case the store keeps a checkpoint that passes no unfinished
    /// key: a save that does not happen leaves an older, more conservative
    /// one (as a crash does).
    ///
    /// # Errors
    ///
    /// [`ScanError::Source`] or [`ScanError::SourceOutOfOrder`] if the
    /// source fails or is not ordered, [`ScanError::Store`] if the store
    /// fails, [`ScanError::CheckpointKey`] if the checkpoint's key does not
    /// decode.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime (syncs are spawned through
    /// [`SyncRegistry::start`]).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future is safe (see *Final checkpoint*); syncs in flight
    /// run on in the registry.
    pub async fn run<J, JF, R, RF, E>(
        self,
        scope: ScopeFingerprint,
        sync: J,
        recheck: R,
    ) -> Result<ScanReport<K>, ScanError>
    where
        J: Fn(K, CancellationToken) -> JF + Send + Sync + 'static,
        JF: Future<Output = SyncOutcome> + Send + 'static,
        R: Fn(K) -> RF + Send + Sync + 'static,
        RF: Future<Output = Result<Recheck, E>> + Send + 'static,
        E: fmt::Display,
    {
        let Self {
            source,
            store,
            registry,
            config,
            clock,
            shared,
            stopped,
            stopped_receiver: _,
            on_progress,
        } = self;
        let retries = RetryQueue::new(config.retry, config.jitter_seed)
            .expect("validated in `RecoveryScan::new`");

        // From here on, the drop of `driver` owns the final save.
        let mut driver = Driver {
            cursor: SettledCursor::new(ResumePoint::Start),
            store,
            scope,
            persisted: None,
            passed_at_persist: 0,
            loaded: false,
            stopped: Some(stopped),
            progress: ScanProgress::new(ResumePoint::Start, false),
            shared: Arc::clone(&shared),
            on_progress,
        };
        let result = driver.load().await;
        let outcome = match result {
            Ok(()) => {
                let mut work = Work {
                    source,
                    registry,
                    sync: Arc::new(sync),
                    recheck: Arc::new(recheck),
                    clock,
                    config,
                    retries,
                    failures: HashMap::new(),
                    running: FuturesUnordered::new(),
                    buffer: VecDeque::new(),
                    read_from: driver.cursor.resume_point(),
                    exhausted: false,
                    gave_up: Vec::new(),
                };
                driver.report();
                let result = work.run(&mut driver, &shared.cancel).await;
                result.map(|completed| (completed, work.gave_up))
            }
            Err(error) => Err(error),
        };
        driver.finish(outcome).await
    }
}

impl<K: ScanKey + fmt::Debug, Src, S> fmt::Debug for RecoveryScan<K, Src, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryScan")
            .field("config", &self.config)
            .field("progress", &*self.shared.progress.lock())
            .finish_non_exhaustive()
    }
}

/// The scan's persistent state: the cursor, and the duty to save it.
///
/// **Final save**: `stopped` is `Some` until the run has stored its final
/// checkpoint (or cleared it). If the run's future is dropped before that,
/// `Drop` spawns the save, so an aborted scan still persists its resume
/// point whenever a runtime is there to run the save.
struct Driver<K: ScanKey, S: ProgressStore> {
    cursor: SettledCursor<K>,
    store: Arc<S>,
    scope: ScopeFingerprint,
    /// The resume point the store holds for this scope, as far as this run
    /// knows (loaded or saved).
    persisted: Option<ResumePoint<K>>,
    /// `cursor.passed()` at the last save.
    passed_at_persist: u64,
    /// Whether the checkpoint was loaded (and the cursor set from it).
    loaded: bool,
    stopped: Option<SyncPublisher<FinalCheckpoint<K>>>,
    progress: ScanProgress<K>,
    shared: Arc<Shared<K>>,
    on_progress: Option<ProgressCallback<K>>,
}

impl<K: ScanKey, S: ProgressStore> Driver<K, S> {
    /// Loads the checkpoint: resume if its scope matches, else clear it.
    async fn load(&mut self) -> Result<(), ScanError> {
        let mut scope_changed = false;
        let start = match self.store.load().await? {
            Some(checkpoint) if checkpoint.scope == self.scope => {
                let start = checkpoint.resume.try_map(|bytes| K::from_bytes(&bytes))?;
                self.persisted = Some(start.clone());
                start
            }
            Some(_) => {
                self.store.clear().await?;
                scope_changed = true;
                ResumePoint::Start
            }
            None => ResumePoint::Start,
        };
        self.cursor = SettledCursor::new(start.clone());
        self.progress = ScanProgress::new(start, scope_changed);
        self.loaded = true;
        Ok(())
    }

    /// Saves the resume point if it differs from the stored one.
    async fn save(&mut self) -> Result<(), ProgressStoreError> {
        let point = self.cursor.resume_point();
        if self.persisted.as_ref() != Some(&point) {
            self.store.save(self.checkpoint(&point)).await?;
            self.progress.checkpoints += 1;
            self.progress.persisted = Some(point.clone());
            self.persisted = Some(point);
        }
        self.passed_at_persist = self.cursor.passed();
        Ok(())
    }

    fn checkpoint(&self, point: &ResumePoint<K>) -> Checkpoint {
        Checkpoint {
            scope: self.scope.clone(),
            resume: point.clone().map(|key| key.to_bytes()),
        }
    }

    /// Saves when the resume point has passed `every` keys since the last save.
    async fn maybe_save(&mut self, every: u64) -> Result<(), ProgressStoreError> {
        if self.cursor.passed() - self.passed_at_persist >= every {
            self.save().await?;
            self.report();
        }
        Ok(())
    }

    /// Publishes the counters to the control handle (and, with `report`, to
    /// the callback).
    fn sync_progress(&mut self) {
        self.progress.resume_point = self.cursor.resume_point();
        self.progress.in_flight = self.cursor.in_flight();
        self.progress.awaiting_retry = self.cursor.awaiting_retry();
        *self.shared.progress.lock() = self.progress.clone();
    }

    fn report(&mut self) {
        self.sync_progress();
        if let Some(callback) = &mut self.on_progress {
            callback(&self.progress);
        }
    }

    /// Stores the final checkpoint for `outcome` and turns it into the
    /// run's result.
    async fn finish(
        &mut self,
        outcome: Result<(bool, Vec<K>), ScanError>,
    ) -> Result<ScanReport<K>, ScanError> {
        let stored = match &outcome {
            Ok((true, _)) => self.store.clear().await.map(|()| FinalCheckpoint::Cleared),
            // A load that failed leaves the stored checkpoint as it was:
            // saving the cursor's `Start` would only throw it away.
            _ if !self.loaded => Ok(FinalCheckpoint::NotSaved),
            // Stopped or failed: save what we have.
            _ => self
                .save()
                .await
                .map(|()| FinalCheckpoint::Saved(self.cursor.resume_point())),
        };
        self.report();
        let publisher = self.stopped.take().expect("finish runs once");
        match stored {
            Ok(stored) => publisher.publish(stored),
            Err(error) => {
                publisher.publish(FinalCheckpoint::Failed(error.to_string()));
                // The scan's own error, if any, says more than the save's.
                if outcome.is_ok() {
                    return Err(error.into());
                }
            }
        }
        let (completed, gave_up) = outcome?;
        Ok(ScanReport {
            completed,
            progress: self.progress.clone(),
            gave_up,
        })
    }
}

impl<K: ScanKey, S: ProgressStore> Drop for Driver<K, S> {
    fn drop(&mut self) {
        let Some(publisher) = self.stopped.take() else {
            return; // `finish` stored the final checkpoint
        };
        if !self.loaded {
            return; // the stored checkpoint is untouched; `NotSaved`
        }
        let point = self.cursor.resume_point();
        if self.persisted.as_ref() == Some(&point) {
            publisher.publish(FinalCheckpoint::Saved(point));
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // dropping the publisher publishes `NotSaved`
        };
        let store = Arc::clone(&self.store);
        let checkpoint = self.checkpoint(&point);
        // Detached: `ScanControl::stopped` reports when (and whether) it
        // ran. If the runtime is shutting down the task is dropped unrun,
        // and the dropped publisher publishes `NotSaved`.
        drop(runtime.spawn(async move {
            match store.save(checkpoint).await {
                Ok(()) => publisher.publish(FinalCheckpoint::Saved(point)),
                Err(error) => publisher.publish(FinalCheckpoint::Failed(error.to_string())),
            }
        }));
    }
}

enum Event<K> {
    /// A sync of `key` published its outcome.
    Finished { key: K, outcome: SyncOutcome },
    /// The re-check before retry number `retry` of `key` finished.
    Rechecked {
        key: K,
        retry: u32,
        result: Result<Recheck, String>,
    },
}

type Running<K> = FuturesUnordered<Pin<Box<dyn Future<Output = Event<K>> + Send>>>;

/// The scan's moving parts, apart from the persistent state in [`Driver`].
struct Work<K: ScanKey, Src, J, R> {
    source: Src,
    registry: Arc<SyncRegistry<K>>,
    sync: Arc<J>,
    recheck: Arc<R>,
    clock: Arc<dyn Clock>,
    config: ScanConfig,
    retries: RetryQueue<K>,
    /// Failed attempts per unfinished key.
    failures: HashMap<K, u32>,
    /// Syncs and re-checks: each holds a concurrency slot.
    running: Running<K>,
    /// Keys read but not begun.
    buffer: VecDeque<K>,
    /// Where the next read starts.
    read_from: ResumePoint<K>,
    exhausted: bool,
    gave_up: Vec<K>,
}

impl<K, Src, J, JF, R, RF, E> Work<K, Src, J, R>
where
    K: ScanKey,
    Src: KeySource<K>,
    J: Fn(K, CancellationToken) -> JF + Send + Sync + 'static,
    JF: Future<Output = SyncOutcome> + Send + 'static,
    R: Fn(K) -> RF + Send + Sync + 'static,
    RF: Future<Output = Result<Recheck, E>> + Send + 'static,
    E: fmt::Display,
{
    /// The scan loop. Returns `Ok(true)` when every key has settled,
    /// `Ok(false)` when cancelled.
    async fn run<S: ProgressStore>(
        &mut self,
        driver: &mut Driver<K, S>,
        cancel: &CancellationToken,
    ) -> Result<bool, ScanError> {
        loop {
            if cancel.is_cancelled() {
                return Ok(false);
            }
            if !self.fill(driver, cancel).await? {
                return Ok(false);
            }
            driver.sync_progress();
            if self.running.is_empty()
                && self.retries.is_empty()
                && self.buffer.is_empty()
                && self.exhausted
            {
                debug_assert!(driver.cursor.is_idle());
                return Ok(true);
            }
            // Sleep for the next retry only if a slot is free to run it.
            let next_retry = self
                .retries
                .next_due()
                .filter(|_| self.running.len() < self.config.concurrency);
            let retry_due = async {
                match next_retry {
                    Some(due) => self.clock.sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(false),
                Some(event) = self.running.next(), if !self.running.is_empty() => Some(event),
                () = retry_due => None,
            };
            if let Some(event) = event {
                self.handle(driver, event);
                driver.maybe_save(self.config.checkpoint_every).await?;
            }
        }
    }

    /// Starts work while a slot is free: due retries first (they hold the
    /// resume point back), then new keys while the window has room. Returns
    /// `false` if cancelled while reading the source.
    async fn fill<S: ProgressStore>(
        &mut self,
        driver: &mut Driver<K, S>,
        cancel: &CancellationToken,
    ) -> Result<bool, ScanError> {
        while self.running.len() < self.config.concurrency {
            if let Some(retry) = self.retries.pop_due(self.clock.now()) {
                self.start_recheck(retry.key, retry.retry);
                continue;
            }
            if driver.cursor.window() >= self.config.window {
                break;
            }
            if self.buffer.is_empty() && !self.exhausted {
                let Some(read) = cancel.run_until_cancelled(self.read()).await else {
                    return Ok(false);
                };
                read?;
            }
            let Some(key) = self.buffer.pop_front() else {
                break;
            };
            driver
                .cursor
                .begin(key.clone())
                .expect("`read` checked the order");
            driver.progress.read += 1;
            self.start_sync(key);
        }
        Ok(true)
    }

    /// Reads the next batch into the buffer, checking its order.
    async fn read(&mut self) -> Result<(), ScanError> {
        let batch = self
            .source
            .next_batch(&self.read_from, self.config.batch_size)
            .await
            .map_err(|error| ScanError::Source(Box::new(error)))?;
        let Some(last) = batch.last() else {
            self.exhausted = true;
            return Ok(());
        };
        let mut previous = self.read_from.clone();
        for key in &batch {
            if previous.covers(key) {
                return Err(ScanError::SourceOutOfOrder {
                    key: format!("{key:?}"),
                    previous: format!("{previous:?}"),
                });
            }
            previous = ResumePoint::After(key.clone());
        }
        self.read_from = ResumePoint::After(last.clone());
        self.buffer.extend(batch);
        Ok(())
    }

    fn start_sync(&mut self, key: K) {
        let sync = Arc::clone(&self.sync);
        let job_key = key.clone();
        let receiver = self
            .registry
            .start(key.clone(), move |cancel| sync(job_key, cancel))
            .into_receiver();
        self.running.push(Box::pin(async move {
            let outcome = receiver.done().await;
            Event::Finished { key, outcome }
        }));
    }

    fn start_recheck(&mut self, key: K, retry: u32) {
        let recheck = (self.recheck)(key.clone());
        self.running.push(Box::pin(async move {
            let result = recheck.await.map_err(|error| error.to_string());
            Event::Rechecked { key, retry, result }
        }));
    }

    fn handle<S: ProgressStore>(&mut self, driver: &mut Driver<K, S>, event: Event<K>) {
        let cursor = &mut driver.cursor;
        let progress = &mut driver.progress;
        match event {
            Event::Finished { key, outcome } => match outcome {
                SyncOutcome::Success | SyncOutcome::Skipped => {
                    if outcome == SyncOutcome::Success {
                        progress.succeeded += 1;
                    } else {
                        progress.skipped += 1;
                    }
                    progress.settled += 1;
                    self.failures.remove(&key);
                    cursor
                        .settle(&key)
                        .expect("a finished sync's key is in flight");
                }
                SyncOutcome::Failed(_) | SyncOutcome::Cancelled => {
                    let failures = self.failures.entry(key.clone()).or_insert(0);
                    *failures += 1;
                    let failures = *failures;
                    let give_up = self
                        .config
                        .retry
                        .max_attempts
                        .is_some_and(|max| failures >= max.get());
                    if give_up {
                        self.failures.remove(&key);
                        progress.gave_up += 1;
                        progress.settled += 1;
                        cursor
                            .settle(&key)
                            .expect("a finished sync's key is in flight");
                        self.gave_up.push(key);
                    } else {
                        progress.retries += 1;
                        cursor
                            .defer(&key)
                            .expect("a finished sync's key is in flight");
                        self.retries.schedule(key, failures, self.clock.now());
                    }
                }
            },
            Event::Rechecked { key, retry, result } => match result {
                Ok(Recheck::NeedsWork) => {
                    cursor
                        .retry(&key)
                        .expect("a re-checked key awaits its retry");
                    self.start_sync(key);
                }
                Ok(Recheck::Done) => {
                    progress.found_done += 1;
                    progress.settled += 1;
                    self.failures.remove(&key);
                    cursor
                        .settle(&key)
                        .expect("a re-checked key awaits its retry");
                }
                Err(_) => {
                    // Unknown is not done: keep the key unfinished and ask
                    // again after the next, longer backoff.
                    progress.recheck_errors += 1;
                    self.retries
                        .schedule(key, retry.saturating_add(1), self.clock.now());
                }
            },
        }
    }
}
