//! The checkpoint writer of a [`RecoveryScan`](super::RecoveryScan): the
//! scan's cursor, and the duty to save its resume point (periodically, at
//! the end, and from `Drop` when the run is aborted).

use std::sync::Arc;

use super::control::{FinalCheckpoint, ProgressCallback, ScanProgress, ScanReport, Shared};
use super::cursor::{ResumePoint, SettledCursor};
use super::error::{ProgressStoreError, ScanError};
use super::progress::{Checkpoint, ProgressStore, ScanKey, ScopeFingerprint};
use crate::status::SyncPublisher;

/// The scan's persistent state: the cursor, and the duty to save it.
///
/// **Final save**: `stopped` is `Some` until the run has stored its final
/// checkpoint (or cleared it). If the run's future is dropped before that,
/// `Drop` spawns the save, so an aborted scan still persists its resume
/// point whenever a runtime is there to run the save.
pub(super) struct CheckpointWriter<K: ScanKey, S: ProgressStore> {
    pub(super) cursor: SettledCursor<K>,
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
    pub(super) progress: ScanProgress<K>,
    shared: Arc<Shared<K>>,
    on_progress: Option<ProgressCallback<K>>,
}

impl<K: ScanKey, S: ProgressStore> CheckpointWriter<K, S> {
    /// A writer for the checkpoint of `scope` in `store`; nothing is loaded
    /// yet. From here on, the writer's drop owns the final save, and
    /// `stopped` learns what it stored.
    pub(super) fn new(
        store: Arc<S>,
        scope: ScopeFingerprint,
        stopped: SyncPublisher<FinalCheckpoint<K>>,
        shared: Arc<Shared<K>>,
        on_progress: Option<ProgressCallback<K>>,
    ) -> Self {
        Self {
            cursor: SettledCursor::new(ResumePoint::Start),
            store,
            scope,
            persisted: None,
            passed_at_persist: 0,
            loaded: false,
            stopped: Some(stopped),
            progress: ScanProgress::new(ResumePoint::Start, false),
            shared,
            on_progress,
        }
    }

    /// Loads the checkpoint: resume if its scope matches, else clear it.
    pub(super) async fn load(&mut self) -> Result<(), ScanError> {
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
    pub(super) async fn maybe_save(&mut self, every: u64) -> Result<(), ProgressStoreError> {
        if self.cursor.passed() - self.passed_at_persist >= every {
            self.save().await?;
            self.report();
        }
        Ok(())
    }

    /// Publishes the counters to the control handle (and, with `report`, to
    /// the callback).
    pub(super) fn sync_progress(&mut self) {
        self.progress.resume_point = self.cursor.resume_point();
        self.progress.in_flight = self.cursor.in_flight();
        self.progress.awaiting_retry = self.cursor.awaiting_retry();
        *self.shared.progress.lock() = self.progress.clone();
    }

    pub(super) fn report(&mut self) {
        self.sync_progress();
        if let Some(callback) = &mut self.on_progress {
            callback(&self.progress);
        }
    }

    /// Stores the final checkpoint for `outcome` and turns it into the
    /// run's result.
    pub(super) async fn finish(
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

impl<K: ScanKey, S: ProgressStore> Drop for CheckpointWriter<K, S> {
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
