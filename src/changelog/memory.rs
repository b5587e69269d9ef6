//! The in-memory changelog: the contract without durability, for tests and
//! simulations.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    Advanced, Attempt, ChangeLog, ChangeLogError, ClaimedEntry, EntryId, EntryInfo, EntryState,
    Fence, FencedCommitError, OwnerId, Ownership, RECENT_FAILURES, Removal, clip_failure,
};
use crate::clock::Clock;
use crate::sync::Mutex;

/// A [`ChangeLog`] held in memory, with staleness measured on an injected
/// [`Clock`].
///
/// Pick it for tests and simulations: with a
/// [`ManualClock`](crate::clock::ManualClock) a test makes entries stale by
/// advancing time, instead of sleeping. Clones share the same log (so several
/// "instances" in one process can claim from it); nothing survives the
/// process.
///
/// Every call takes one short lock, so each is atomic; a claim selects and
/// re-owns its entries under that lock, which is what makes it exclusive.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use leasehold::changelog::{ChangeLog, MemoryChangeLog, OwnerId};
/// use leasehold::clock::ManualClock;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let clock = ManualClock::new();
/// let log = MemoryChangeLog::new(Arc::new(clock.clone()), Duration::from_secs(10));
/// log.record(&OwnerId::new("w"), vec![1]).await.unwrap();
/// assert!(log.claim_stale(&OwnerId::new("r"), 10).await.unwrap().is_empty());
/// clock.advance(Duration::from_secs(10));
/// assert_eq!(log.claim_stale(&OwnerId::new("r"), 10).await.unwrap().len(), 1);
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryChangeLog {
    shared: Arc<Shared>,
}

struct Shared {
    clock: Arc<dyn Clock>,
    staleness: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
}

struct Entry {
    owner: OwnerId,
    generation: u64,
    refreshed: Instant,
    claims: u32,
    quarantine: Option<String>,
    committed: bool,
    attempts: u32,
    failures: Vec<String>,
    payload: Vec<u8>,
}

impl Entry {
    fn owned_by(&self, fence: &Fence) -> bool {
        self.generation == fence.generation && self.owner == fence.owner
    }

    fn info(&self, id: u64, now: Instant) -> EntryInfo {
        EntryInfo {
            fence: Fence::new(EntryId::new(id), self.owner.clone(), self.generation),
            payload: self.payload.clone(),
            claims: self.claims,
            committed: self.committed,
            attempts: self.attempts,
            failures: self.failures.clone(),
            age: now.saturating_duration_since(self.refreshed),
            state: match &self.quarantine {
                None => EntryState::Active,
                Some(reason) => EntryState::Quarantined {
                    reason: reason.clone(),
                },
            },
        }
    }
}

impl MemoryChangeLog {
    /// An empty log whose entries go stale `staleness` after their last
    /// refresh, as measured by `clock`.
    pub fn new(clock: Arc<dyn Clock>, staleness: Duration) -> Self {
        MemoryChangeLog {
            shared: Arc::new(Shared {
                clock,
                staleness,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Number of entries, active and quarantined.
    pub fn len(&self) -> usize {
        self.shared.state.lock().entries.len()
    }

    /// Whether the log holds no entry at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `commit` under the log's lock, after checking that `fence` still
    /// owns its active entry, and marks the entry committed if it returns
    /// `Ok`: the in-memory model of the SQL backends' fenced commits, for
    /// state kept in memory beside the log (tests, simulations). A claim
    /// cannot interleave with it.
    ///
    /// `commit` runs under the lock: it must not call this log.
    ///
    /// # Errors
    ///
    /// [`FencedCommitError::Fenced`] if the fence no longer owns the entry
    /// (`commit` is not called); [`FencedCommitError::Rejected`] with
    /// `commit`'s error (the entry is not marked; undoing any partial effect
    /// of `commit` is the caller's job, as there is no transaction here).
    ///
    /// # Cancel safety
    ///
    /// `commit` runs when this is called; the returned future is ready.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use leasehold::changelog::{ChangeLog, FencedCommitError, MemoryChangeLog, OwnerId};
    /// use leasehold::clock::ManualClock;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let clock = ManualClock::new();
    /// let log = MemoryChangeLog::new(Arc::new(clock.clone()), Duration::from_secs(10));
    /// let fence = log.record(&OwnerId::new("w"), vec![]).await.unwrap();
    /// clock.advance(Duration::from_secs(10));
    /// log.claim_stale(&OwnerId::new("recovery"), 10).await.unwrap();
    /// // The writer resumes after its entry was claimed: refused.
    /// let late = log.commit_fenced(&fence, || Ok::<_, std::io::Error>(())).await;
    /// assert!(matches!(late, Err(FencedCommitError::Fenced)));
    /// # }
    /// ```
    pub fn commit_fenced<T, E>(
        &self,
        fence: &Fence,
        commit: impl FnOnce() -> Result<T, E>,
    ) -> std::future::Ready<Result<T, FencedCommitError<E>>> {
        let mut state = self.shared.state.lock();
        let result = match state
            .entries
            .get_mut(&fence.id.get())
            .filter(|e| e.owned_by(fence) && e.quarantine.is_none())
        {
            None => Err(FencedCommitError::Fenced),
            Some(entry) => commit()
                .inspect(|_| entry.committed = true)
                .map_err(FencedCommitError::Rejected),
        };
        std::future::ready(result)
    }
}

impl fmt::Debug for MemoryChangeLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryChangeLog")
            .field("staleness", &self.shared.staleness)
            .field("entries", &self.len())
            .finish()
    }
}

impl ChangeLog for MemoryChangeLog {
    fn staleness(&self) -> Duration {
        self.shared.staleness
    }

    async fn record(&self, owner: &OwnerId, payload: Vec<u8>) -> Result<Fence, ChangeLogError> {
        let now = self.shared.clock.now();
        let mut state = self.shared.state.lock();
        // Ids are never reused, so a fence of a removed entry can never match
        // a later entry.
        state.next_id += 1;
        let id = state.next_id;
        state.entries.insert(
            id,
            Entry {
                owner: owner.clone(),
                generation: 1,
                refreshed: now,
                claims: 0,
                quarantine: None,
                committed: false,
                attempts: 0,
                failures: Vec::new(),
                payload,
            },
        );
        Ok(Fence::new(EntryId::new(id), owner.clone(), 1))
    }

    async fn refresh(&self, fence: &Fence) -> Result<Ownership, ChangeLogError> {
        let now = self.shared.clock.now();
        let mut state = self.shared.state.lock();
        match state.entries.get_mut(&fence.id.get()) {
            Some(entry) if entry.owned_by(fence) && entry.quarantine.is_none() => {
                entry.refreshed = entry.refreshed.max(now);
                Ok(Ownership::Held)
            }
            // Removed, claimed by a later generation, or quarantined: never
            // recreate or re-own.
            _ => Ok(Ownership::Lost),
        }
    }

    async fn remove(&self, fence: &Fence) -> Result<Removal, ChangeLogError> {
        let mut state = self.shared.state.lock();
        match state.entries.get(&fence.id.get()) {
            None => Ok(Removal::Absent),
            Some(entry) if entry.owned_by(fence) => {
                state.entries.remove(&fence.id.get());
                Ok(Removal::Removed)
            }
            Some(_) => Ok(Removal::Fenced),
        }
    }

    async fn claim_stale(
        &self,
        owner: &OwnerId,
        max: usize,
    ) -> Result<Vec<ClaimedEntry>, ChangeLogError> {
        let now = self.shared.clock.now();
        let staleness = self.shared.staleness;
        let mut state = self.shared.state.lock();
        // Selection and re-ownership happen under one lock: a concurrent
        // claimer sees either the old generation (and the entry stale) or the
        // new one (and the entry fresh), never both claimable.
        let mut stale: Vec<(Instant, u64)> = state
            .entries
            .iter()
            .filter(|(_, e)| {
                e.quarantine.is_none() && now.saturating_duration_since(e.refreshed) >= staleness
            })
            .map(|(&id, e)| (e.refreshed, id))
            .collect();
        stale.sort_unstable();
        stale.truncate(max);
        let claimed = stale
            .into_iter()
            .map(|(_, id)| {
                let entry = state.entries.get_mut(&id).expect("selected under the lock");
                entry.owner = owner.clone();
                entry.generation += 1;
                entry.claims += 1;
                entry.refreshed = now;
                ClaimedEntry {
                    fence: Fence::new(EntryId::new(id), owner.clone(), entry.generation),
                    payload: entry.payload.clone(),
                    claims: entry.claims,
                    committed: entry.committed,
                    attempts: entry.attempts,
                    failures: entry.failures.clone(),
                    quarantined: None,
                }
            })
            .collect();
        Ok(claimed)
    }

    async fn quarantine(&self, fence: &Fence, reason: &str) -> Result<Ownership, ChangeLogError> {
        let mut state = self.shared.state.lock();
        match state.entries.get_mut(&fence.id.get()) {
            // Idempotent: quarantining again keeps the first reason.
            Some(entry) if entry.owned_by(fence) => {
                entry.quarantine.get_or_insert_with(|| reason.to_owned());
                Ok(Ownership::Held)
            }
            _ => Ok(Ownership::Lost),
        }
    }

    async fn advance(&self, fence: &Fence) -> Result<Advanced, ChangeLogError> {
        let now = self.shared.clock.now();
        let mut state = self.shared.state.lock();
        match state.entries.get_mut(&fence.id.get()) {
            Some(entry) if entry.owned_by(fence) && entry.quarantine.is_none() => {
                entry.generation += 1;
                entry.refreshed = entry.refreshed.max(now);
                Ok(Advanced::Held {
                    fence: Fence::new(fence.id, fence.owner.clone(), entry.generation),
                    committed: entry.committed,
                })
            }
            _ => Ok(Advanced::Lost),
        }
    }

    async fn start_attempt(&self, fence: &Fence) -> Result<Attempt, ChangeLogError> {
        let now = self.shared.clock.now();
        let mut state = self.shared.state.lock();
        match state.entries.get_mut(&fence.id.get()) {
            Some(entry) if entry.owned_by(fence) && entry.quarantine.is_none() => {
                entry.attempts = entry.attempts.saturating_add(1);
                entry.refreshed = entry.refreshed.max(now);
                Ok(Attempt::Started {
                    number: entry.attempts,
                })
            }
            _ => Ok(Attempt::Lost),
        }
    }

    async fn record_failure(
        &self,
        fence: &Fence,
        reason: &str,
    ) -> Result<Ownership, ChangeLogError> {
        let mut state = self.shared.state.lock();
        match state.entries.get_mut(&fence.id.get()) {
            Some(entry) if entry.owned_by(fence) && entry.quarantine.is_none() => {
                entry.failures.push(clip_failure(reason));
                let excess = entry.failures.len().saturating_sub(RECENT_FAILURES);
                entry.failures.drain(..excess);
                Ok(Ownership::Held)
            }
            _ => Ok(Ownership::Lost),
        }
    }

    async fn get(&self, id: EntryId) -> Result<Option<EntryInfo>, ChangeLogError> {
        let now = self.shared.clock.now();
        let state = self.shared.state.lock();
        Ok(state.entries.get(&id.get()).map(|e| e.info(id.get(), now)))
    }

    async fn list(&self) -> Result<Vec<EntryInfo>, ChangeLogError> {
        let now = self.shared.clock.now();
        let state = self.shared.state.lock();
        Ok(state
            .entries
            .iter()
            .map(|(&id, e)| e.info(id, now))
            .collect())
    }
}
