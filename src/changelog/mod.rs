//! A write-ahead changelog with fenced heartbeats and exactly-once claims.
//!
//! An operation with side effects in several stores (a blob written to a
//! blob store, then a metadata row pointing to it) first records what it is
//! about to do in a [`ChangeLog`], keeps the entry alive while it works, and
//! removes it when it is done. If the writer dies, its entry stops being
//! refreshed, goes *stale*, and a recovering instance claims it and runs an
//! idempotent cleanup.
//!
//! | call | what it guarantees |
//! |---|---|
//! | [`record`](ChangeLog::record) | the entry is durable before it returns; returns the [`Fence`] that owns it |
//! | [`refresh`](ChangeLog::refresh) | keeps the entry alive *only if the fence still owns it*; never recreates a removed entry, never re-owns a claimed one |
//! | [`remove`](ChangeLog::remove) | idempotent; a fenced-out remove changes nothing |
//! | [`claim_stale`](ChangeLog::claim_stale) | claims up to `max` stale entries; exactly one claimer wins each, and the previous owner is fenced out |
//! | [`quarantine`](ChangeLog::quarantine) | parks a poison entry: never claimed again, still listable |
//! | [`start_attempt`](ChangeLog::start_attempt) | durably counts one cleanup attempt on the entry, whoever runs it |
//! | [`record_failure`](ChangeLog::record_failure) | keeps why an attempt failed (the most recent [`RECENT_FAILURES`]) |
//!
//! A row the store cannot decode (a payload of the wrong type, a counter at
//! the top of its range) never makes a claim or a listing fail: a claim
//! quarantines it in the same step, with the decoding error, and reports it
//! ([`ClaimedEntry::quarantined`]).
//!
//! # Fencing
//!
//! Every entry carries an owner and a *generation*. `record` creates it at
//! generation 1; every successful claim moves it to a new owner and the next
//! generation. Conditional calls compare the caller's [`Fence`] with the
//! stored owner and generation, so once an entry has been claimed its
//! previous owner can neither keep it alive nor remove it — the flaw of
//! logs whose heartbeat is an unconditional upsert, where a late heartbeat
//! resurrects a removed entry or steals back a claimed one.
//!
//! # Staleness without wall clocks
//!
//! Every refresh increments the entry's heartbeat counter. A claimer judges
//! an entry stale once it has observed the counter (and the owner's
//! generation) unchanged for the log's [`staleness`](ChangeLog::staleness)
//! threshold, on its *own* monotonic [`Clock`] (which counts suspended time).
//! No timestamp written by one clock is ever compared with another clock, so
//! a wall clock stepping forwards or backwards, on any machine or on the
//! database server, neither makes a live entry stale nor keeps a dead one
//! alive. A claimer that has just started has observed nothing yet: it
//! claims an entry at the earliest `staleness` after its first look.
//! [`MemoryChangeLog`] lives in one process and measures on its injected
//! clock directly.
//!
//! # Who wins is decided by the store
//!
//! Staleness only decides when recovery may *try*. A writer that pauses
//! (SIGSTOP, a GC pause, a VM stall) after checking its validity can resume
//! at any moment, so no client-side check of time can stop its write from
//! landing after recovery claimed its entry. The SQL backends therefore run
//! the writer's own commit in the changelog's database, in one transaction
//! with a check that its [`Fence`] still owns the entry
//! (`SqliteChangeLog::commit_fenced`, `PostgresChangeLog::commit_fenced`);
//! a claim and a fenced commit of the same entry conflict on its row, so
//! exactly one wins, and the loser changes nothing. The same transaction
//! marks the entry committed ([`ClaimedEntry::committed`]), so recovery
//! learns from the store whether the commit landed.
//!
//! Where the writer's commit goes to a store the changelog cannot join (an
//! object store, another database), use the fence's generation as a
//! fencing token in that store's own conditional write (it grows with every
//! change of owner), or accept what validity alone gives: a writer whose
//! process pauses *between* its validity check and its write can still write
//! after its entry was claimed. [`Validity`](crate::heartbeat::Validity)
//! makes that window short and rare (it ends before the entry can be judged
//! stale), not impossible.
//!
//! # Backends
//!
//! | backend | durability | sharing |
//! |---|---|---|
//! | [`MemoryChangeLog`] | none (tests, simulations) | clones of one value, in one process |
//! | `SqliteChangeLog` (feature `sqlite`, default) | WAL, fsync on commit | several processes on one machine |
//! | `PostgresChangeLog` (feature `postgres`) | the server's commit (`synchronous_commit`) | any number of processes on any number of machines |
//!
//! On top of the log, [`ChangeManager`] / [`ChangeGuard`] run a writer's
//! operation (heartbeat, validity-gated commit, cleanup), and
//! [`RecoveryLoop`](crate::recovery::RecoveryLoop) runs recovery.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use leasehold::changelog::{ChangeLog, MemoryChangeLog, Ownership, OwnerId, Removal};
//! use leasehold::clock::ManualClock;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = ManualClock::new();
//! let log = MemoryChangeLog::new(Arc::new(clock.clone()), Duration::from_secs(30));
//!
//! let writer = OwnerId::new("writer-1");
//! let fence = log.record(&writer, b"object=a new=blob-7".to_vec()).await?;
//!
//! // The writer dies; 30 s later its entry is stale and a recoverer claims it.
//! clock.advance(Duration::from_secs(30));
//! let recoverer = OwnerId::new("recovery-1");
//! let claimed = log.claim_stale(&recoverer, 100).await?;
//! assert_eq!(claimed.len(), 1);
//!
//! // The old owner is fenced out: its heartbeat reports the loss, and its
//! // remove changes nothing.
//! assert_eq!(log.refresh(&fence).await?, Ownership::Lost);
//! assert_eq!(log.remove(&fence).await?, Removal::Fenced);
//!
//! // The recoverer cleans up and removes the entry; removing twice is fine.
//! assert_eq!(log.remove(&claimed[0].fence).await?, Removal::Removed);
//! assert_eq!(log.remove(&claimed[0].fence).await?, Removal::Absent);
//! # Ok(()) }
//! ```
//!
//! [`Clock`]: crate::clock::Clock

mod any;
mod cleanup;
mod codec;
mod error;
mod manager;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) mod staleness;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use any::AnyChangeLog;
pub use cleanup::{Cleanup, Phase};
pub use codec::{FieldReader, FieldWriter, Payload};
pub use error::{
    BoxError, ChangeLogError, CommitError, DecodeError, FencedCommitError, FinishError,
    ManagerConfigError,
};
pub use manager::{ChangeGuard, ChangeManager};
pub use memory::MemoryChangeLog;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresChangeLog, PostgresChangeLogBuilder};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{Durability, SqliteChangeLog, SqliteChangeLogBuilder};

/// Identifies one changelog entry; assigned by the store, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(u64);

impl EntryId {
    /// Wraps a store-assigned id (for backend implementations).
    pub const fn new(id: u64) -> Self {
        EntryId(id)
    }

    /// The numeric id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Names the instance (writer or recoverer) that owns an entry.
///
/// Two live instances must not share an owner id; [`OwnerId::unique`]
/// makes one that is unique across processes and restarts.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnerId(Arc<str>);

impl OwnerId {
    /// An owner id with the given name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        OwnerId(name.into())
    }

    /// `"{prefix}-{pid}-{random}"`: unique across processes and restarts.
    pub fn unique(prefix: &str) -> Self {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        // `RandomState` is seeded from the OS's randomness per process.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        OwnerId::new(format!(
            "{prefix}-{}-{:016x}",
            std::process::id(),
            hasher.finish()
        ))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fencing token of one ownership of one entry: entry id, owner and
/// generation.
///
/// Returned by [`ChangeLog::record`] and in every [`ClaimedEntry`]; required
/// by the conditional calls. A fence stops working as soon as the entry is
/// claimed by someone else (the generation moves on) or removed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    id: EntryId,
    owner: OwnerId,
    generation: u64,
}

impl Fence {
    /// A fence (for backend implementations; a forged fence is harmless: it
    /// only ever fails to match).
    pub fn new(id: EntryId, owner: OwnerId, generation: u64) -> Self {
        Fence {
            id,
            owner,
            generation,
        }
    }

    /// The entry.
    pub fn id(&self) -> EntryId {
        self.id
    }

    /// The owner this fence was issued to.
    pub fn owner(&self) -> &OwnerId {
        &self.owner
    }

    /// The generation this fence was issued for (1 for the recording writer,
    /// incremented by each claim and each [`ChangeLog::advance`]).
    ///
    /// It only grows while the entry exists, so it serves as a *fencing
    /// token* for a store the changelog cannot join: write it beside your
    /// data and make your conditional write require that the stored token
    /// is not greater than yours.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// The result of [`ChangeLog::advance`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Advanced {
    /// The entry moved to the next generation; `fence` owns it now and the
    /// old fence is refused by the store from here on.
    Held {
        /// The new fence (same owner, next generation).
        fence: Fence,
        /// Whether a fenced commit for the entry has landed
        /// ([`ClaimedEntry::committed`]).
        committed: bool,
    },
    /// The entry was claimed by another owner, removed, or quarantined.
    Lost,
}

/// Whether a fence still owns its entry, as reported by
/// [`ChangeLog::refresh`] and [`ChangeLog::quarantine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ownership {
    /// The fence owns the entry; the call took effect.
    Held,
    /// The entry was claimed by another owner, removed, or quarantined: the
    /// call changed nothing, and the caller must stop acting on the entry.
    Lost,
}

/// The result of [`ChangeLog::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Removal {
    /// This call removed the entry.
    Removed,
    /// No such entry (already removed): nothing to do.
    Absent,
    /// The entry exists but is owned by a later generation: nothing changed.
    Fenced,
}

/// One entry won by [`ChangeLog::claim_stale`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClaimedEntry {
    /// The claimer's fence: the entry's new owner and generation.
    pub fence: Fence,
    /// The payload the writer recorded.
    pub payload: Vec<u8>,
    /// How many times the entry has been claimed, this claim included. An
    /// entry claimed again and again never completes its cleanup (its
    /// recoverers crash on it): a candidate for quarantine.
    pub claims: u32,
    /// Whether the writer's fenced commit landed (a fenced commit marks the
    /// entry in the same transaction). `false` also for logs and writers
    /// that commit without the store's fence: the cleanup must then inspect
    /// the committed state.
    pub committed: bool,
    /// How many cleanup attempts were started on the entry before this
    /// claim, by any owner ([`ChangeLog::start_attempt`]). Claims alone do
    /// not count: a recoverer that died before trying charges nothing.
    pub attempts: u32,
    /// Why recent attempts failed, oldest first (at most
    /// [`RECENT_FAILURES`]; [`ChangeLog::record_failure`]).
    pub failures: Vec<String>,
    /// `Some(reason)` if the store could not decode the row: the claim
    /// quarantined it in the same step, with this reason. The payload is
    /// then empty; the fence can still [`remove`](ChangeLog::remove) it.
    pub quarantined: Option<String>,
}

/// How many failure reasons an entry keeps ([`ChangeLog::record_failure`]):
/// the most recent ones.
pub const RECENT_FAILURES: usize = 5;

/// The longest failure reason an entry keeps, in bytes; longer ones are cut
/// at a character boundary.
pub const MAX_FAILURE_LEN: usize = 500;

/// A failure reason as an entry keeps it: at most [`MAX_FAILURE_LEN`] bytes,
/// on one line.
pub(crate) fn clip_failure(reason: &str) -> String {
    let mut end = reason.len().min(MAX_FAILURE_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].replace(['\n', '\r'], " ")
}

/// The result of [`ChangeLog::start_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Attempt {
    /// The attempt is recorded: it is the entry's `number`-th (1-based),
    /// counted across every claim and owner.
    Started {
        /// The attempts started on the entry so far, this one included.
        number: u32,
    },
    /// The entry was claimed by another owner, removed, or quarantined:
    /// nothing was recorded, and the caller must not clean it up.
    Lost,
}

/// Whether an entry is live or parked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EntryState {
    /// Owned, refreshed, claimable once stale.
    Active,
    /// Parked by [`ChangeLog::quarantine`]: never claimed again.
    Quarantined {
        /// Why it was quarantined.
        reason: String,
    },
}

/// A snapshot of one entry, for inspection ([`ChangeLog::get`],
/// [`ChangeLog::list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EntryInfo {
    /// The entry's current fence (owner and generation).
    pub fence: Fence,
    /// The payload.
    pub payload: Vec<u8>,
    /// How many times the entry has been claimed.
    pub claims: u32,
    /// How long the entry has been seen unchanged (no refresh, no change of
    /// owner): on this handle's clock, since this handle first saw it so, for
    /// the SQL backends (zero on a first look); since the last refresh on the
    /// log's clock for [`MemoryChangeLog`].
    pub age: Duration,
    /// Whether a fenced commit for the entry has landed.
    pub committed: bool,
    /// Cleanup attempts started on the entry ([`ChangeLog::start_attempt`]).
    pub attempts: u32,
    /// Why recent attempts failed, oldest first (at most
    /// [`RECENT_FAILURES`]).
    pub failures: Vec<String>,
    /// Live or quarantined.
    pub state: EntryState,
}

/// A durable write-ahead changelog with fenced ownership.
///
/// Implementations must make [`claim_stale`](ChangeLog::claim_stale)
/// exclusive across every handle on the same store (other processes
/// included), and judge staleness without comparing clocks (see the
/// [module documentation](self)). The conformance
/// suite in `tests/changelog_conformance/` states the contract as tests;
/// every backend runs it.
///
/// Handles are cheap to clone where the backend allows it; the futures are
/// `Send` so they can run on any executor thread.
pub trait ChangeLog: Send + Sync + 'static {
    /// The staleness threshold: an entry whose last refresh is at least this
    /// old (on the store's clock) may be claimed.
    fn staleness(&self) -> Duration;

    /// Durably records a new entry owned by `owner` at generation 1.
    ///
    /// # Errors
    ///
    /// A [`ChangeLogError`] if the store failed; the entry then does not
    /// exist.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if the future is dropped, the entry may or may not
    /// have been recorded (and if it was, it goes stale and is recovered).
    fn record(
        &self,
        owner: &OwnerId,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Fence, ChangeLogError>> + Send;

    /// Resets the entry's age, if `fence` still owns it and it is active.
    ///
    /// Returns [`Ownership::Lost`] (changing nothing) if the entry was
    /// claimed by another generation, removed or quarantined.
    ///
    /// # Errors
    ///
    /// A [`ChangeLogError`] if the store failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the refresh either happened or did not, and either way
    /// repeating it is harmless.
    fn refresh(
        &self,
        fence: &Fence,
    ) -> impl Future<Output = Result<Ownership, ChangeLogError>> + Send;

    /// Removes the entry if `fence` owns it (active or quarantined).
    /// Idempotent: removing an absent entry reports [`Removal::Absent`].
    ///
    /// # Errors
    ///
    /// A [`ChangeLogError`] if the store failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: repeat the call to learn the outcome.
    fn remove(&self, fence: &Fence)
    -> impl Future<Output = Result<Removal, ChangeLogError>> + Send;

    /// Atomically claims up to `max` active entries that have gone without a
    /// refresh for at least [`staleness`](ChangeLog::staleness) (as this
    /// handle observed them), longest-silent first: each is given to `owner`
    /// at the next generation. Exactly one concurrent claimer wins each
    /// entry; the previous owner's fence stops working, and a fenced commit
    /// with it is refused by the store.
    ///
    /// # Errors
    ///
    /// A [`ChangeLogError`] if the store failed; then nothing was claimed.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: entries claimed by a dropped call are owned by
    /// `owner` but unknown to the caller; they go stale again and are
    /// reclaimed after the threshold.
    fn claim_stale(
        &self,
        owner: &OwnerId,
        max: usize,
    ) -> impl Future<Output = Result<Vec<ClaimedEntry>, ChangeLogError>> + Send;

    /// Parks the entry owned by `fence`: it is never claimed again (and no
    /// longer refreshable) but stays listable, with `reason`, for an operator
    /// (who may [`remove`](ChangeLog::remove) it with the same fence).
    /// Idempotent for the owning fence, which keeps the first reason;
    /// returns [`Ownership::Lost`] (changing nothing) for any other fence.
    ///
    /// # Errors
    ///
    /// A [`ChangeLogError`] if the store failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: repeat the call to learn the outcome.
    fn quarantine(
        &self,
        fence: &Fence,
        reason: &str,
    ) -> impl Future<Output = Result<Ownership, ChangeLogError>> + Send;

    /// Durably counts one cleanup attempt on the entry `fence` owns, before
    /// the cleanup starts, and counts as a refresh.
    ///
    /// Attempts are counted per entry across claims and owners, so a
    /// recovery loop can tell an entry whose cleanup keeps failing (or
    /// crashing its recoverers) from one whose recoverers died for
    /// unrelated reasons before trying it. Returns [`Attempt::Lost`]
    /// (changing nothing) if the entry was claimed by another generation,
    /// removed or quarantined.
    ///
    /// # Errors
    ///
    /// A [`ChangeLogError`] if the store failed; the attempt may or may not
    /// have been counted.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may have counted the attempt.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use leasehold::changelog::{Attempt, ChangeLog, MemoryChangeLog, OwnerId, Ownership};
    /// use leasehold::clock::ManualClock;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let clock = ManualClock::new();
    /// let log = MemoryChangeLog::new(Arc::new(clock.clone()), Duration::from_secs(30));
    /// log.record(&OwnerId::new("crashed-writer"), b"undo a".to_vec()).await?;
    /// clock.advance(Duration::from_secs(30));
    /// let claimed = log.claim_stale(&OwnerId::new("recovery-1"), 10).await?.remove(0);
    /// assert_eq!(claimed.attempts, 0);
    ///
    /// // Counted before the cleanup starts; the failure recorded after it.
    /// assert_eq!(log.start_attempt(&claimed.fence).await?, Attempt::Started { number: 1 });
    /// assert_eq!(log.record_failure(&claimed.fence, "blob store timed out").await?, Ownership::Held);
    ///
    /// // The next recoverer sees both.
    /// clock.advance(Duration::from_secs(30));
    /// let again = log.claim_stale(&OwnerId::new("recovery-2"), 10).await?.remove(0);
    /// assert_eq!(again.attempts, 1);
    /// assert_eq!(again.failures, ["blob store timed out"]);
    /// # Ok(()) }
    /// ```
    fn start_attempt(
        &self,
        fence: &Fence,
    ) -> impl Future<Output = Result<Attempt, ChangeLogError>> + Send;

    /// Records why an attempt on the entry `fence` owns failed: the entry
    /// keeps the [`RECENT_FAILURES`] most recent reasons, each cut to
    /// [`MAX_FAILURE_LEN`] bytes on one line. Does not count as a refresh.
    /// Returns [`Ownership::Lost`] (changing nothing) for a fence that no
    /// longer owns an active entry.
    ///
    /// # Errors
    ///
    /// A [`ChangeLogError`] if the store failed.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may have recorded the reason, and
    /// repeating it records it twice.
    fn record_failure(
        &self,
        fence: &Fence,
        reason: &str,
    ) -> impl Future<Output = Result<Ownership, ChangeLogError>> + Send;

    /// Moves the entry `fence` owns to the next generation, same owner, and
    /// reports whether a fenced commit for it has landed.
    ///
    /// A writer whose commit's outcome is unknown (the commit future was
    /// dropped, the connection was lost) calls this before cleaning up: a
    /// commit still in flight with the old fence is then refused by the
    /// store, so what the cleanup reads can no longer change under it.
    ///
    /// # Errors
    ///
    /// A [`ChangeLogError`] if the store failed.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may have advanced the generation,
    /// leaving the caller with a fence that no longer works (the entry then
    /// goes stale and is recovered).
    fn advance(
        &self,
        fence: &Fence,
    ) -> impl Future<Output = Result<Advanced, ChangeLogError>> + Send;

    /// How long until the next entry this handle has seen may be judged
    /// stale, if it has seen any; a recovery loop sleeps no longer than this
    /// when idle. The default says nothing (`None`).
    fn next_stale_in(&self) -> Option<Duration> {
        None
    }

    /// A snapshot of one entry, active or quarantined.
    ///
    /// # Errors
    ///
    /// A [`ChangeLogError`] if the store failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    fn get(
        &self,
        id: EntryId,
    ) -> impl Future<Output = Result<Option<EntryInfo>, ChangeLogError>> + Send;

    /// Snapshots of every entry, active and quarantined, by id.
    ///
    /// # Errors
    ///
    /// A [`ChangeLogError`] if the store failed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    fn list(&self) -> impl Future<Output = Result<Vec<EntryInfo>, ChangeLogError>> + Send;
}

/// A shared log is a log: lets a writer's [`ChangeManager`] and a
/// [`RecoveryLoop`](crate::recovery::RecoveryLoop) share one handle.
impl<L: ChangeLog> ChangeLog for Arc<L> {
    fn staleness(&self) -> Duration {
        (**self).staleness()
    }

    fn record(
        &self,
        owner: &OwnerId,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Fence, ChangeLogError>> + Send {
        (**self).record(owner, payload)
    }

    fn refresh(
        &self,
        fence: &Fence,
    ) -> impl Future<Output = Result<Ownership, ChangeLogError>> + Send {
        (**self).refresh(fence)
    }

    fn remove(
        &self,
        fence: &Fence,
    ) -> impl Future<Output = Result<Removal, ChangeLogError>> + Send {
        (**self).remove(fence)
    }

    fn claim_stale(
        &self,
        owner: &OwnerId,
        max: usize,
    ) -> impl Future<Output = Result<Vec<ClaimedEntry>, ChangeLogError>> + Send {
        (**self).claim_stale(owner, max)
    }

    fn quarantine(
        &self,
        fence: &Fence,
        reason: &str,
    ) -> impl Future<Output = Result<Ownership, ChangeLogError>> + Send {
        (**self).quarantine(fence, reason)
    }

    fn advance(
        &self,
        fence: &Fence,
    ) -> impl Future<Output = Result<Advanced, ChangeLogError>> + Send {
        (**self).advance(fence)
    }

    fn start_attempt(
        &self,
        fence: &Fence,
    ) -> impl Future<Output = Result<Attempt, ChangeLogError>> + Send {
        (**self).start_attempt(fence)
    }

    fn record_failure(
        &self,
        fence: &Fence,
        reason: &str,
    ) -> impl Future<Output = Result<Ownership, ChangeLogError>> + Send {
        (**self).record_failure(fence, reason)
    }

    fn next_stale_in(&self) -> Option<Duration> {
        (**self).next_stale_in()
    }

    fn get(
        &self,
        id: EntryId,
    ) -> impl Future<Output = Result<Option<EntryInfo>, ChangeLogError>> + Send {
        (**self).get(id)
    }

    fn list(&self) -> impl Future<Output = Result<Vec<EntryInfo>, ChangeLogError>> + Send {
        (**self).list()
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::store::{to_i64, to_u64};
