//! Shared helpers of the changelog and recovery tests: a log wrapper that can
//! stall or fail on demand, and a two-tier store in memory.
#![allow(dead_code)] // each test crate uses the part it needs

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold::changelog::{
    Advanced, Attempt, BoxError, ChangeLog, ChangeLogError, ClaimedEntry, Cleanup, DecodeError,
    EntryId, EntryInfo, Fence, FieldReader, FieldWriter, MemoryChangeLog, OwnerId, Ownership,
    Payload, Phase, Removal,
};

/// A `MemoryChangeLog` whose refreshes can be made to hang (a stuck
/// heartbeat RPC) and whose claims can be made to fail; records when each
/// claim was attempted (on tokio's clock, paused in these tests).
#[derive(Clone, Debug)]
pub struct FaultyLog {
    pub inner: MemoryChangeLog,
    pub stall_refresh: Arc<AtomicBool>,
    pub failing_claims: Arc<AtomicUsize>,
    /// Claims fail with a permanent error while set.
    pub broken_schema: Arc<AtomicBool>,
    pub claim_times: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

impl FaultyLog {
    pub fn new(inner: MemoryChangeLog) -> Self {
        FaultyLog {
            inner,
            stall_refresh: Arc::new(AtomicBool::new(false)),
            failing_claims: Arc::new(AtomicUsize::new(0)),
            broken_schema: Arc::new(AtomicBool::new(false)),
            claim_times: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn stall_refreshes(&self, stall: bool) {
        self.stall_refresh.store(stall, Ordering::SeqCst);
    }
}

impl ChangeLog for FaultyLog {
    fn staleness(&self) -> Duration {
        self.inner.staleness()
    }

    async fn record(&self, owner: &OwnerId, payload: Vec<u8>) -> Result<Fence, ChangeLogError> {
        self.inner.record(owner, payload).await
    }

    async fn refresh(&self, fence: &Fence) -> Result<Ownership, ChangeLogError> {
        if self.stall_refresh.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.refresh(fence).await
    }

    async fn remove(&self, fence: &Fence) -> Result<Removal, ChangeLogError> {
        self.inner.remove(fence).await
    }

    async fn claim_stale(
        &self,
        owner: &OwnerId,
        max: usize,
    ) -> Result<Vec<ClaimedEntry>, ChangeLogError> {
        self.claim_times
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        let fail = self
            .failing_claims
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(ChangeLogError::Busy { backend: "faulty" });
        }
        if self.broken_schema.load(Ordering::SeqCst) {
            return Err(ChangeLogError::SchemaTooNew {
                found: 99,
                supported: 2,
            });
        }
        self.inner.claim_stale(owner, max).await
    }

    async fn quarantine(&self, fence: &Fence, reason: &str) -> Result<Ownership, ChangeLogError> {
        self.inner.quarantine(fence, reason).await
    }

    async fn advance(&self, fence: &Fence) -> Result<Advanced, ChangeLogError> {
        self.inner.advance(fence).await
    }

    async fn start_attempt(&self, fence: &Fence) -> Result<Attempt, ChangeLogError> {
        self.inner.start_attempt(fence).await
    }

    async fn record_failure(
        &self,
        fence: &Fence,
        reason: &str,
    ) -> Result<Ownership, ChangeLogError> {
        self.inner.record_failure(fence, reason).await
    }

    async fn get(&self, id: EntryId) -> Result<Option<EntryInfo>, ChangeLogError> {
        self.inner.get(id).await
    }

    async fn list(&self) -> Result<Vec<EntryInfo>, ChangeLogError> {
        self.inner.list().await
    }
}

/// The intent of one write to the two-tier store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub object: String,
    pub new_blob: String,
    pub old_blob: Option<String>,
}

impl Payload for Intent {
    fn encode(&self) -> Vec<u8> {
        let mut w = FieldWriter::new(b"test-intent/1");
        w.str(&self.object)
            .str(&self.new_blob)
            .opt_str(self.old_blob.as_deref());
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = FieldReader::new(bytes, b"test-intent/1")?;
        let intent = Intent {
            object: r.string()?,
            new_blob: r.string()?,
            old_blob: r.opt_string()?,
        };
        r.finish()?;
        Ok(intent)
    }
}

/// A two-tier store in memory: metadata (object -> blob) and a blob set.
#[derive(Debug, Default, Clone)]
pub struct TwoTier {
    inner: Arc<Mutex<TwoTierState>>,
}

#[derive(Debug, Default)]
struct TwoTierState {
    meta: HashMap<String, String>,
    blobs: HashSet<String>,
}

impl TwoTier {
    pub fn put_blob(&self, blob: &str) {
        self.inner.lock().unwrap().blobs.insert(blob.to_owned());
    }

    pub fn has_blob(&self, blob: &str) -> bool {
        self.inner.lock().unwrap().blobs.contains(blob)
    }

    pub fn meta(&self, object: &str) -> Option<String> {
        self.inner.lock().unwrap().meta.get(object).cloned()
    }

    /// Compare-and-swap of the metadata: `object` from `old` to `new`.
    pub fn cas(&self, object: &str, old: Option<&str>, new: &str) -> Result<(), std::io::Error> {
        let mut state = self.inner.lock().unwrap();
        if state.meta.get(object).map(String::as_str) != old {
            return Err(std::io::Error::other("cas conflict"));
        }
        state.meta.insert(object.to_owned(), new.to_owned());
        Ok(())
    }

    /// Metadata pointing to a missing blob.
    pub fn dangling(&self) -> Vec<String> {
        let state = self.inner.lock().unwrap();
        state
            .meta
            .values()
            .filter(|b| !state.blobs.contains(*b))
            .cloned()
            .collect()
    }

    /// Blobs no metadata points to.
    pub fn orphans(&self) -> Vec<String> {
        let state = self.inner.lock().unwrap();
        let referenced: HashSet<&String> = state.meta.values().collect();
        state
            .blobs
            .iter()
            .filter(|b| !referenced.contains(b))
            .cloned()
            .collect()
    }
}

/// The idempotent cleanup of the two-tier store: delete each blob of the
/// intent that the metadata does not reference. Counts its calls.
#[derive(Debug, Clone)]
pub struct TwoTierCleanup {
    pub store: TwoTier,
    pub calls: Arc<Mutex<Vec<(Intent, Phase)>>>,
}

impl TwoTierCleanup {
    pub fn new(store: TwoTier) -> Self {
        TwoTierCleanup {
            store,
            calls: Arc::default(),
        }
    }

    pub fn calls(&self) -> Vec<(Intent, Phase)> {
        self.calls.lock().unwrap().clone()
    }
}

impl Cleanup<Intent> for TwoTierCleanup {
    async fn cleanup(&self, intent: &Intent, phase: Phase) -> Result<(), BoxError> {
        self.calls.lock().unwrap().push((intent.clone(), phase));
        let mut state = self.store.inner.lock().unwrap();
        let current = state.meta.get(&intent.object).cloned();
        for blob in std::iter::once(&intent.new_blob).chain(intent.old_blob.as_ref()) {
            if current.as_ref() != Some(blob) {
                state.blobs.remove(blob);
            }
        }
        Ok(())
    }
}
