//! [`RecoveryScan`]: drives a sync over every key of an ordered source,
//! concurrently, with retries, persisting a resume point that never passes
//! unfinished work.
//!
//! The driver owns the scan loop; the jobs it coordinates live beside it:
//! the [window](super::window) of keys read and syncs running, the
//! [retry schedule](super::retry_schedule), and the
//! [checkpoint writer](super::checkpoint).

use std::fmt;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use super::checkpoint::CheckpointWriter;
use super::control::{
    FinalCheckpoint, ProgressCallback, ScanControl, ScanProgress, ScanReport, Shared,
};
use super::cursor::ResumePoint;
use super::error::{ScanConfigError, ScanError};
use super::progress::{ProgressStore, ScanKey, ScopeFingerprint};
use super::retry::RetryPolicy;
use super::retry_schedule::{AfterFailure, Recheck, RetrySchedule};
use super::source::KeySource;
use super::window::{Event, Window};
use crate::clock::{self, Clock};
use crate::status::{
    self, CancellationToken, SyncOutcome, SyncPublisher, SyncReceiver, SyncRegistry,
};
use crate::sync::Mutex;
use crate::trace;

/// The settings of a [`RecoveryScan`].
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// Sets [`concurrency`](Self::concurrency).
    #[must_use]
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Sets [`checkpoint_every`](Self::checkpoint_every).
    #[must_use]
    pub fn with_checkpoint_every(mut self, settled_keys: u64) -> Self {
        self.checkpoint_every = settled_keys;
        self
    }

    /// Sets [`window`](Self::window).
    #[must_use]
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window;
        self
    }

    /// Sets [`batch_size`](Self::batch_size).
    #[must_use]
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets [`retry`](Self::retry).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets [`jitter_seed`](Self::jitter_seed) (tests fix it to reproduce
    /// a run).
    #[must_use]
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = seed;
        self
    }

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
        trace::instrument!(self.run_inner(scope, sync, recheck), "recovery_scan").await
    }

    async fn run_inner<J, JF, R, RF, E>(
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
        // From here on, the drop of `writer` owns the final save.
        let mut writer =
            CheckpointWriter::new(store, scope, stopped, Arc::clone(&shared), on_progress);
        let result = writer.load().await;
        let outcome = match result {
            Ok(()) => {
                let mut work = Work {
                    window: Window::new(
                        source,
                        config.batch_size,
                        registry,
                        sync,
                        writer.cursor.resume_point(),
                    ),
                    schedule: RetrySchedule::new(config.retry, config.jitter_seed),
                    recheck,
                    clock,
                    config,
                };
                writer.report();
                work.run(&mut writer, &shared.cancel).await
            }
            Err(error) => Err(error),
        };
        writer.finish(outcome).await
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

/// The scan loop's parts: the window of running work, the retry schedule,
/// and the caller's re-check.
struct Work<K: ScanKey, Src, J, R> {
    window: Window<K, Src, J>,
    schedule: RetrySchedule<K>,
    recheck: R,
    clock: Arc<dyn Clock>,
    config: ScanConfig,
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
        writer: &mut CheckpointWriter<K, S>,
        cancel: &CancellationToken,
    ) -> Result<bool, ScanError> {
        loop {
            if cancel.is_cancelled() {
                return Ok(false);
            }
            if !self.fill(writer, cancel).await? {
                return Ok(false);
            }
            writer.sync_progress();
            if self.window.is_drained() && self.schedule.is_empty() {
                debug_assert!(writer.cursor.is_idle());
                return Ok(true);
            }
            // Sleep for the next retry only if a slot is free to run it.
            let next_retry = self
                .schedule
                .next_due()
                .filter(|_| self.window.running() < self.config.concurrency);
            let event = {
                let retry_due = async {
                    match next_retry {
                        Some(due) => self.clock.sleep_until(due).await,
                        None => std::future::pending().await,
                    }
                };
                let (mut cancelled, mut next_event, mut retry_due) = (
                    pin!(cancel.cancelled()),
                    pin!(self.window.next_event()),
                    pin!(retry_due),
                );
                // Biased, in this order: a cancellation wins over work.
                std::future::poll_fn(|cx| {
                    if cancelled.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    if let Poll::Ready(event) = next_event.as_mut().poll(cx) {
                        return Poll::Ready(Some(Some(event)));
                    }
                    retry_due.as_mut().poll(cx).map(|()| Some(None))
                })
                .await
            };
            let Some(event) = event else {
                return Ok(false);
            };
            if let Some(event) = event {
                self.handle(writer, event);
                writer.maybe_save(self.config.checkpoint_every).await?;
            }
        }
    }

    /// Starts work while a slot is free: due retries first (they hold the
    /// resume point back), then new keys while the window has room. Returns
    /// `false` if cancelled while reading the source.
    async fn fill<S: ProgressStore>(
        &mut self,
        writer: &mut CheckpointWriter<K, S>,
        cancel: &CancellationToken,
    ) -> Result<bool, ScanError> {
        while self.window.running() < self.config.concurrency {
            if let Some((key, retry)) = self.schedule.pop_due(self.clock.now()) {
                let recheck = (self.recheck)(key.clone());
                self.window.start_recheck(key, retry, recheck);
                continue;
            }
            if writer.cursor.window() >= self.config.window {
                break;
            }
            if self.window.needs_read() {
                let Some(read) = cancel.run_until_cancelled(self.window.read()).await else {
                    return Ok(false);
                };
                read?;
            }
            let Some(key) = self.window.pop() else {
                break;
            };
            writer
                .cursor
                .begin(key.clone())
                .expect("`read` checked the order");
            writer.progress.read += 1;
            self.window.start_sync(key);
        }
        Ok(true)
    }

    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    fn handle<S: ProgressStore>(&mut self, writer: &mut CheckpointWriter<K, S>, event: Event<K>) {
        let cursor = &mut writer.cursor;
        let progress = &mut writer.progress;
        match event {
            Event::Finished { key, outcome } => match outcome {
                SyncOutcome::Success | SyncOutcome::Skipped => {
                    if outcome == SyncOutcome::Success {
                        progress.succeeded += 1;
                    } else {
                        progress.skipped += 1;
                    }
                    progress.settled += 1;
                    self.schedule.settled(&key);
                    cursor
                        .settle(&key)
                        .expect("a finished sync's key is in flight");
                }
                SyncOutcome::Failed(_) | SyncOutcome::Cancelled => {
                    match self.schedule.failed(key.clone(), self.clock.now()) {
                        AfterFailure::GiveUp => writer.give_up(key),
                        AfterFailure::Retry => {
                            trace::event!(debug, key = ?key, outcome = ?outcome, "recovery scan sync failed; retry scheduled");
                            progress.retries += 1;
                            cursor
                                .defer(&key)
                                .expect("a finished sync's key is in flight");
                        }
                    }
                }
            },
            Event::Rechecked { key, retry, result } => match result {
                Ok(Recheck::NeedsWork) => {
                    cursor
                        .retry(&key)
                        .expect("a re-checked key awaits its retry");
                    self.window.start_sync(key);
                }
                Ok(Recheck::Done) => {
                    progress.found_done += 1;
                    progress.settled += 1;
                    self.schedule.settled(&key);
                    cursor
                        .settle(&key)
                        .expect("a re-checked key awaits its retry");
                }
                Err(error) => {
                    trace::event!(warn, key = ?key, retry, error = %error, "recovery scan re-check failed");
                    // Unknown is not done: keep the key unfinished and ask
                    // again after the next, longer backoff.
                    progress.recheck_errors += 1;
                    self.schedule.recheck_failed(key, retry, self.clock.now());
                }
            },
        }
    }
}
