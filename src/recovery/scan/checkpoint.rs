//! The checkpoint writer of a [`RecoveryScan`](super::RecoveryScan): the
//! scan's cursor, and the duty to save its resume point (periodically, at
//! the end, and from `Drop` when the run is aborted).

use std::sync::Arc;

use super::control::{FinalCheckpoint, ProgressCallback, ScanProgress, ScanReport, Shared};
use super::cursor::{ResumePoint, SettledCursor};
use super::error::{ProgressStoreError, ScanError};
use super::progress::{Checkpoint, ProgressStore, ScanKey, ScopeFingerprint};
use crate::status::SyncPublisher;
use crate::trace;

/// The scan's persistent state: the cursor, the keys given up, and the duty
/// to save them.
///
/// **Given-up keys** are settled in the cursor, so the resume point moves
/// past them; they must not be passed silently. If the store keeps them
/// ([`ProgressStore::keeps_given_up`]), each save carries the whole list
/// with the resume point, and a resumed run reports them again. If it does
/// not, the saved point stops at the first of them: a resumed run reads it,
/// and retries it, again.
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
    /// Every key given up on, loaded ones first, in the order given up.
    given_up: Vec<K>,
    /// `given_up.len()` when the store last saved them.
    given_up_at_persist: usize,
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
            given_up: Vec::new(),
            given_up_at_persist: 0,
            loaded: false,
            stopped: Some(stopped),
            progress: ScanProgress::new(ResumePoint::Start, false),
            shared,
            on_progress,
        }
    }

    /// Loads the checkpoint: resume if its scope matches (with the keys
    /// given up before), else clear it.
    pub(super) async fn load(&mut self) -> Result<(), ScanError> {
        let mut scope_changed = false;
        let start = match self.store.load_with_given_up().await? {
            Some((checkpoint, given_up)) if checkpoint.scope == self.scope => {
                let start = checkpoint.resume.try_map(|bytes| K::from_bytes(&bytes))?;
                self.given_up = given_up
                    .iter()
                    .map(|bytes| K::from_bytes(bytes))
                    .collect::<Result<_, _>>()?;
                self.given_up_at_persist = self.given_up.len();
                self.persisted = Some(start.clone());
                start
            }
            Some(_) => {
                trace::event!(
                    info,
                    "recovery scan scope changed: checkpoint cleared, starting over"
                );
                self.store.clear().await?;
                scope_changed = true;
                ResumePoint::Start
            }
            None => ResumePoint::Start,
        };
        self.cursor = SettledCursor::new(start.clone());
        self.progress = ScanProgress::new(start, scope_changed);
        self.progress.gave_up = self.given_up.len() as u64;
        self.loaded = true;
        Ok(())
    }

    /// Settles `key`, whose sync failed for the last allowed time, as given
    /// up: the next save records it.
    pub(super) fn give_up(&mut self, key: K) {
        trace::event!(warn, key = ?key, "recovery scan gave a key up");
        self.progress.gave_up += 1;
        self.progress.settled += 1;
        self.cursor
            .settle(&key)
            .expect("a finished sync's key is in flight");
        self.given_up.push(key);
    }

    /// The resume point to save: the cursor's, held before the first
    /// given-up key if the store cannot keep them.
    ///
    /// Held back, the saved point still never moves backwards: until a key
    /// is given up it is unfinished, so no saved point passed it.
    fn point_to_save(&self) -> ResumePoint<K> {
        let point = self.cursor.resume_point();
        if self.store.keeps_given_up() {
            return point;
        }
        match self.given_up.iter().min() {
            Some(first) => point.min(ResumePoint::From(first.clone())),
            None => point,
        }
    }

    /// Whether the store lacks the point or given-up keys this run would
    /// save now.
    fn unsaved(&self, point: &ResumePoint<K>) -> bool {
        self.persisted.as_ref() != Some(point)
            || (self.store.keeps_given_up() && self.given_up_at_persist != self.given_up.len())
    }

    /// Saves the resume point (and the given-up keys) if they differ from
    /// the stored ones.
    #[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
    async fn save(&mut self) -> Result<(), ProgressStoreError> {
        let point = self.point_to_save();
        if self.unsaved(&point) {
            let (checkpoint, given_up) = self.checkpoint(&point);
            let saved = self.store.save_with_given_up(checkpoint, given_up).await;
            if let Err(error) = &saved {
                trace::event!(warn, error = %error, resume = ?point, "recovery scan checkpoint save failed");
            }
            saved?;
            trace::event!(
                info,
                resume = ?point,
                settled = self.progress.settled,
                given_up = self.given_up.len(),
                "recovery scan checkpoint saved"
            );
            self.progress.checkpoints += 1;
            self.progress.persisted = Some(point.clone());
            self.persisted = Some(point);
            self.given_up_at_persist = self.given_up.len();
        }
        self.passed_at_persist = self.cursor.passed();
        Ok(())
    }

    fn checkpoint(&self, point: &ResumePoint<K>) -> (Checkpoint, Vec<Vec<u8>>) {
        let checkpoint = Checkpoint {
            scope: self.scope.clone(),
            resume: point.clone().map(|key| key.to_bytes()),
        };
        (
            checkpoint,
            self.given_up.iter().map(ScanKey::to_bytes).collect(),
        )
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
        outcome: Result<bool, ScanError>,
    ) -> Result<ScanReport<K>, ScanError> {
        let stored = match &outcome {
            Ok(true) => self.store.clear().await.map(|()| FinalCheckpoint::Cleared),
            // A load that failed leaves the stored checkpoint as it was:
            // saving the cursor's `Start` would only throw it away.
            _ if !self.loaded => Ok(FinalCheckpoint::NotSaved),
            // Stopped or failed: save what we have.
            _ => self
                .save()
                .await
                .map(|()| FinalCheckpoint::Saved(self.point_to_save())),
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
        Ok(ScanReport {
            completed: outcome?,
            progress: self.progress.clone(),
            gave_up: self.given_up.clone(),
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
        let point = self.point_to_save();
        if !self.unsaved(&point) {
            publisher.publish(FinalCheckpoint::Saved(point));
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // dropping the publisher publishes `NotSaved`
        };
        let store = Arc::clone(&self.store);
        let (checkpoint, given_up) = self.checkpoint(&point);
        // Detached: `ScanControl::stopped` reports when (and whether) it
        // ran. If the runtime is shutting down the task is dropped unrun,
        // and the dropped publisher publishes `NotSaved`.
        drop(runtime.spawn(async move {
            match store.save_with_given_up(checkpoint, given_up).await {
                Ok(()) => publisher.publish(FinalCheckpoint::Saved(point)),
                Err(error) => publisher.publish(FinalCheckpoint::Failed(error.to_string())),
            }
        }));
    }
}
