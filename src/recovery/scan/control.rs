//! What a caller sees of a running [`RecoveryScan`](super::RecoveryScan)(super::RecoveryScan):
//! the [`ScanProgress`] counters, the [`ScanReport`] of a run, the
//! [`FinalCheckpoint`] it left, and the [`ScanControl`] handle.

use std::fmt;
use std::sync::Arc;

use super::cursor::ResumePoint;
use crate::status::{CancellationToken, Outcome, SyncReceiver};
use crate::sync::Mutex;

/// A snapshot of a scan's progress, from [`ScanControl::progress`], the
/// progress callback, and the [`ScanReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanProgress<K> {
    /// Where this run started: the checkpoint's resume point, or `Start`.
    pub started_from: ResumePoint<K>,
    /// Whether a checkpoint of another scope was found and cleared.
    pub scope_changed: bool,
    /// Keys read from the source.
    pub read: u64,
    /// Keys settled: succeeded, skipped, found done by a re-check, or given up.
    pub settled: u64,
    /// Syncs that reported [`SyncOutcome::Success`](crate::status::SyncOutcome::Success).
    pub succeeded: u64,
    /// Syncs that reported [`SyncOutcome::Skipped`](crate::status::SyncOutcome::Skipped).
    pub skipped: u64,
    /// Keys a re-check found done.
    pub found_done: u64,
    /// Keys given up after [`RetryPolicy::max_attempts`](super::RetryPolicy::max_attempts),
    /// including those an earlier, interrupted run of this scan gave up and
    /// saved with its checkpoint.
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
    pub(super) fn new(started_from: ResumePoint<K>, scope_changed: bool) -> Self
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

/// How a run of [`RecoveryScan::run`](super::RecoveryScan::run) ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanReport<K> {
    /// `true` if every key settled and the checkpoint was cleared; `false`
    /// if the scan was stopped through [`ScanControl::cancel`] (its resume
    /// point saved).
    pub completed: bool,
    /// The final counters.
    pub progress: ScanProgress<K>,
    /// Keys given up after [`RetryPolicy::max_attempts`](super::RetryPolicy::max_attempts),
    /// in the order they were given up: first those an earlier, interrupted
    /// run of this scan gave up (saved with the checkpoint, if the store
    /// [keeps them](super::ProgressStore::keeps_given_up)), then this run's.
    /// The resume point has passed them: they are the caller's to handle.
    /// A completed run clears the checkpoint, so this report is their last
    /// record.
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

/// A handle on a [`RecoveryScan`](super::RecoveryScan) from [`RecoveryScan::control`](super::RecoveryScan::control): stop it,
/// read its progress, and wait until its final checkpoint is stored.
/// Cheap to clone.
pub struct ScanControl<K> {
    pub(super) shared: Arc<Shared<K>>,
    pub(super) stopped: SyncReceiver<FinalCheckpoint<K>>,
}

/// What the scan and its control handles share.
pub(super) struct Shared<K> {
    pub(super) cancel: CancellationToken,
    pub(super) progress: Mutex<ScanProgress<K>>,
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

/// The callback of [`RecoveryScan::on_progress`](super::RecoveryScan::on_progress).
pub(super) type ProgressCallback<K> = Box<dyn FnMut(&ScanProgress<K>) + Send>;
