//! The SQLite changelog: the embedded durable default, shared by the
//! processes of one machine.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::staleness::{Observations, Seen};
use super::{
    Advanced, Attempt, ChangeLog, ChangeLogError, ClaimedEntry, EntryId, EntryInfo, EntryState,
    Fence, FencedCommitError, OwnerId, Ownership, RECENT_FAILURES, Removal, clip_failure, to_i64,
    to_u64,
};
use crate::clock::Clock;
use crate::store::sqlite::{self, GroupCommit, Outcome, Schema, Synchronous};
use crate::sync::Mutex;

const BACKEND: &str = "sqlite";

/// The changelog's tables, at the schema version this crate writes and reads.
///
/// `AUTOINCREMENT`: ids are never reused, so a fence of a removed entry can
/// never match a later entry at the same generation.
///
/// `beat` is the heartbeat counter that staleness is judged on; `committed`
/// is set by a fenced commit in the commit's own transaction; `attempts`
/// counts cleanup attempts started, `failures` keeps the most recent
/// failure reasons, one per line, oldest first. The wall-clock
/// columns (`refreshed_ms`, `recorded_ms`) are for people reading the table;
/// no decision reads them.
const SCHEMA: Schema = Schema {
    component: "changelog",
    version: 2,
    create: "CREATE TABLE leasehold_changelog (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 owner TEXT NOT NULL,
                 generation INTEGER NOT NULL,
                 refreshed_ms INTEGER NOT NULL,
                 recorded_ms INTEGER NOT NULL,
                 claims INTEGER NOT NULL DEFAULT 0,
                 quarantined TEXT,
                 payload BLOB NOT NULL,
                 beat INTEGER NOT NULL DEFAULT 0,
                 committed INTEGER NOT NULL DEFAULT 0,
                 attempts INTEGER NOT NULL DEFAULT 0,
                 failures TEXT NOT NULL DEFAULT ''
             );",
    upgrades: &[
        "ALTER TABLE leasehold_changelog ADD COLUMN beat INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE leasehold_changelog ADD COLUMN committed INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE leasehold_changelog ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE leasehold_changelog ADD COLUMN failures TEXT NOT NULL DEFAULT '';
                 DROP INDEX IF EXISTS leasehold_changelog_claimable;",
    ],
    tables: &["leasehold_changelog"],
};

/// The wall clock, in milliseconds since the Unix epoch, for the
/// informational columns only.
const WALL_MS: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

/// How durable a committed call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous = FULL`: every commit is fsynced; survives power loss and
    /// OS crashes. The default.
    #[default]
    PowerLoss,
    /// `synchronous = NORMAL`: survives the crash of any process (SIGKILL
    /// included) but may lose the last commits on power loss. Faster.
    ProcessCrash,
}

/// Configures and opens a [`SqliteChangeLog`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct SqliteChangeLogBuilder {
    path: PathBuf,
    staleness: Duration,
    busy_timeout: Duration,
    durability: Durability,
    clock: Arc<dyn Clock>,
}

impl SqliteChangeLogBuilder {
    /// Entries may be claimed once this handle has seen them go this long
    /// without a refresh (default 30 s).
    pub fn staleness(mut self, staleness: Duration) -> Self {
        self.staleness = staleness;
        self
    }

    /// The monotonic clock this handle measures staleness on (default
    /// [`clock::system`](crate::clock::system), which counts suspended
    /// time). Tests pass a [`ManualClock`](crate::clock::ManualClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long a call waits for another process's write lock before failing
    /// with [`ChangeLogError::Busy`] (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How durable each commit is (default [`Durability::PowerLoss`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Opens (creating if needed) the database file and the changelog schema,
    /// on a blocking thread.
    ///
    /// # Errors
    ///
    /// The file is checked here, not at the first call: permanent errors
    /// are [`ChangeLogError::CannotOpen`] (a missing directory),
    /// [`ChangeLogError::Corrupt`] (not a database, damaged, or the
    /// changelog's table is gone), [`ChangeLogError::PermissionDenied`] (a
    /// read-only file or directory), [`ChangeLogError::SchemaTooNew`] (a
    /// file written by a newer version of this crate),
    /// [`ChangeLogError::Config`] (out-of-range durations, a file system
    /// that refuses WAL mode). Transient: [`ChangeLogError::Busy`] if other
    /// processes held the database locked past the busy timeout,
    /// [`ChangeLogError::Storage`] for I/O errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped open leaves at most an empty schema behind.
    pub async fn open(self) -> Result<SqliteChangeLog, ChangeLogError> {
        tokio::task::spawn_blocking(move || self.open_blocking())
            .await
            .map_err(|_| ChangeLogError::WorkerUnavailable { backend: BACKEND })?
    }

    /// [`open`](Self::open) for synchronous callers (tools, tests outside a
    /// runtime). Blocks the calling thread.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_blocking(self) -> Result<SqliteChangeLog, ChangeLogError> {
        if self.staleness.is_zero() {
            return Err(ChangeLogError::Config {
                reason: "staleness must be greater than zero".into(),
            });
        }
        let synchronous = match self.durability {
            Durability::PowerLoss => Synchronous::Full,
            Durability::ProcessCrash => Synchronous::Normal,
        };
        let failed = |failure| ChangeLogError::from_failure(BACKEND, failure);
        let conn =
            sqlite::open(&self.path, self.busy_timeout, synchronous, &SCHEMA).map_err(failed)?;
        let reader = sqlite::open_reader(&self.path, self.busy_timeout).map_err(failed)?;
        // Without an fsync per commit, a lone call is cheaper run inline
        // than handed to the writer thread.
        let inline = self.durability == Durability::ProcessCrash;
        let writer = GroupCommit::start(conn, self.busy_timeout, inline, "leasehold-changelog")
            .map_err(|_| ChangeLogError::WorkerUnavailable { backend: BACKEND })?;
        Ok(SqliteChangeLog {
            shared: Arc::new(Shared {
                path: self.path,
                staleness: self.staleness,
                clock: self.clock,
                observations: Mutex::new(Observations::default()),
                writer,
                reader: Mutex::new(reader),
            }),
        })
    }
}

/// Maps a driver error by its cause: lock timeouts are
/// [`ChangeLogError::Busy`], I/O errors [`ChangeLogError::Storage`]
/// (both transient); a corrupt file, permissions, a missing path or a value
/// too big are permanent.
fn storage(error: rusqlite::Error) -> ChangeLogError {
    ChangeLogError::from_failure(BACKEND, error.into())
}

/// A [`ChangeLog`] in an SQLite database file: durable, and safe for several
/// processes on one machine.
///
/// Pick it as the default embedded log. The database runs in WAL mode.
/// Clones share one handle; open the file again for another.
///
/// # Group commit
///
/// Each handle has a writer thread that owns its write connection. Writes
/// (`record`, `refresh`, `remove`, a claim's updates, fenced commits, ...)
/// that arrive while a commit is running are committed together, in one
/// `BEGIN IMMEDIATE … COMMIT` (under [`Durability::PowerLoss`], one fsync
/// for all of them), and each call returns only once the commit that holds
/// it has returned: an acknowledged call is exactly as durable as if it had
/// committed alone. Each call of a batch runs in its own savepoint, its
/// statements in a row, in the order the calls arrived: a call that fails
/// fails alone and leaves nothing behind, and fenced calls and claims of
/// one entry still conflict on its row, so exactly one of them wins. A lone
/// call is committed at once, with no wait for company; under
/// [`Durability::ProcessCrash`], where a commit does not fsync, it even
/// runs on the calling thread (tens of microseconds) when nothing else is
/// writing and no other process holds the write lock. Reads (`list`,
/// `get`, a claim's scan) run on tokio's blocking pool on a second
/// connection, which never waits for the writer. No call blocks an
/// executor thread on an fsync or on another process's lock. Dropping the
/// last clone of a handle lets its writer finish the writes already queued
/// and close the file, and waits for that.
///
/// # Exclusive claims
///
/// [`claim_stale`](ChangeLog::claim_stale) reads the active entries'
/// `(id, generation, beat)`, picks those this handle has seen unchanged for
/// the staleness threshold, and re-owns them in one `BEGIN IMMEDIATE`
/// transaction, each with an update conditional on the triple it saw. A
/// concurrent claimer, a beat or a fenced commit that got the write lock
/// first has changed the row, so the update matches nothing: each entry is
/// won by exactly one. Fenced calls are single conditional statements on
/// `(id, owner, generation)`.
///
/// # Fenced commits
///
/// [`commit_fenced`](SqliteChangeLog::commit_fenced) runs your statements
/// in the log's own database file, in the same `BEGIN IMMEDIATE`
/// transaction as the check that your fence still owns the entry: keep the
/// tables your commit publishes in this file, and a writer that paused
/// anywhere can never publish after recovery claimed its entry.
///
/// # No wall clock
///
/// Staleness is measured on this handle's monotonic clock (see the
/// [module documentation](super)); the wall-clock columns of the table are
/// informational.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold::changelog::{ChangeLog, Removal, SqliteChangeLog, OwnerId};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let log = SqliteChangeLog::builder(dir.path().join("changelog.db"))
///     .staleness(Duration::from_secs(10))
///     .open()
///     .await?;
/// let fence = log.record(&OwnerId::new("writer"), b"intent".to_vec()).await?;
/// assert_eq!(log.list().await?.len(), 1);
/// assert_eq!(log.remove(&fence).await?, Removal::Removed);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteChangeLog {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    staleness: Duration,
    clock: Arc<dyn Clock>,
    observations: Mutex<Observations>,
    /// The write path: every write of this handle, group-committed.
    writer: GroupCommit,
    /// Reads (listings, the claim's scan): a WAL reader, never waiting for
    /// the writer.
    reader: Mutex<Connection>,
}

impl SqliteChangeLog {
    /// A builder for the log in the database file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteChangeLogBuilder {
        SqliteChangeLogBuilder {
            path: path.as_ref().to_owned(),
            staleness: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(5),
            durability: Durability::default(),
            clock: crate::clock::system(),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Runs `commit` in one `BEGIN IMMEDIATE` transaction on this log's
    /// database file, after checking, in that transaction, that `fence`
    /// still owns its active entry; marks the entry committed in the same
    /// transaction. Keep the tables your commit publishes in this file.
    ///
    /// A recoverer's claim needs the same write lock and changes the row this
    /// checks, so a claim and a fenced commit of one entry are serialized
    /// and exactly one of them wins: a writer frozen at any point (before the
    /// check, waiting for the lock, between statements) can only commit if
    /// its entry was not claimed meanwhile.
    ///
    /// `commit` runs on the log's writer thread (under
    /// [`Durability::ProcessCrash`], when nothing else is writing, on the
    /// calling thread), inside a savepoint of a transaction that other calls
    /// of this handle may share (see [group commit](SqliteChangeLog#group-commit)):
    /// its statements and the fence check are one unit, committed together
    /// or not at all, and the call returns once the transaction committed.
    /// Keep it short; it must not use this log (the writer is busy running
    /// it) and must not end the transaction itself (`COMMIT`, `ROLLBACK`,
    /// `RELEASE` in raw SQL): return an error to undo it.
    ///
    /// # Errors
    ///
    /// - [`FencedCommitError::Fenced`]: the entry was claimed, removed or
    ///   quarantined; `commit` was not called, nothing changed;
    /// - [`FencedCommitError::Rejected`]: `commit` returned an error; what it
    ///   wrote and the committed mark were rolled back (the other calls of
    ///   its batch are unaffected);
    /// - [`FencedCommitError::Store`]: the transaction could not start
    ///   (e.g. [`ChangeLogError::Busy`]) or the fence check failed to run;
    ///   nothing changed;
    /// - [`FencedCommitError::InDoubt`]: the `COMMIT` of its batch failed,
    ///   or the writer thread went away; settle with
    ///   [`advance`](ChangeLog::advance).
    ///
    /// # Panics
    ///
    /// A panic in `commit` is caught on the writer thread (which carries on
    /// with the other calls), rolls back what `commit` wrote, and resumes
    /// here.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call keeps running on the writer thread,
    /// and its outcome is then unknown to the caller
    /// ([`ChangeGuard::commit_fenced`](super::ChangeGuard::commit_fenced)
    /// records that as [`Phase::InDoubt`](super::Phase::InDoubt)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use leasehold::changelog::{ChangeLog, FencedCommitError, OwnerId, SqliteChangeLog};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("store.db");
    /// let log = SqliteChangeLog::builder(&path).open().await?;
    /// // The metadata the commit publishes lives in the same file.
    /// rusqlite::Connection::open(&path)?
    ///     .execute_batch("CREATE TABLE objects (name TEXT PRIMARY KEY, blob TEXT NOT NULL)")?;
    ///
    /// let fence = log.record(&OwnerId::new("writer"), b"put a".to_vec()).await?;
    /// log.commit_fenced(&fence, |tx| {
    ///     tx.execute("INSERT INTO objects VALUES ('a', 'blob-7')", [])
    /// })
    /// .await?;
    /// assert!(log.get(fence.id()).await?.unwrap().committed);
    ///
    /// // Once the entry is gone (or claimed), the same fence commits nothing.
    /// log.remove(&fence).await?;
    /// let late = log.commit_fenced(&fence, |tx| tx.execute("DELETE FROM objects", [])).await;
    /// assert!(matches!(late, Err(FencedCommitError::Fenced)));
    /// # Ok(()) }
    /// ```
    pub fn commit_fenced<T, E, F>(
        &self,
        fence: &Fence,
        commit: F,
    ) -> impl Future<Output = Result<T, FencedCommitError<E>>> + Send + use<T, E, F>
    where
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let fence = fence.clone();
        let shared = Arc::clone(&self.shared);
        async move { Self::commit_fenced_on(shared, fence, commit).await }
    }

    async fn commit_fenced_on<T, E, F>(
        shared: Arc<Shared>,
        fence: Fence,
        commit: F,
    ) -> Result<T, FencedCommitError<E>>
    where
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let outcome = shared
            .writer
            .submit(move |tx| {
                // Take the fence and mark the entry in one statement, under
                // the write lock a claim also needs, before `commit` runs. A
                // claimed, removed or quarantined entry matches no row; so
                // does one that an earlier operation of the same batch
                // claimed (the batch runs its operations in order).
                let held = tx
                    .prepare_cached(
                        "UPDATE leasehold_changelog SET committed = 1, beat = beat + 1
                         WHERE id = ?1 AND owner = ?2 AND generation = ?3 AND quarantined IS NULL",
                    )
                    .and_then(|mut stmt| stmt.execute(fence_params(&fence)))
                    .map_err(|e| FencedCommitError::Store(storage(e)))?;
                if held != 1 {
                    return Err(FencedCommitError::Fenced); // rolled back: nothing changed
                }
                commit(tx).map_err(FencedCommitError::Rejected)
            })
            .await;
        match outcome {
            Outcome::Done(result) => result,
            Outcome::NotRun(error) => Err(FencedCommitError::Store(storage(error))),
            Outcome::NotCommitted(error) => Err(FencedCommitError::InDoubt(storage(error))),
            Outcome::Panicked(panic) => std::panic::resume_unwind(panic),
            Outcome::WriterGone => Err(FencedCommitError::InDoubt(
                ChangeLogError::WorkerUnavailable { backend: BACKEND },
            )),
        }
    }

    /// Runs `op` on the write path: in a group-committed transaction,
    /// answered once it committed.
    async fn write<T, F>(&self, op: F) -> Result<T, ChangeLogError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        match self.shared.writer.submit(op).await {
            Outcome::Done(result) => result.map_err(storage),
            Outcome::NotRun(error) | Outcome::NotCommitted(error) => Err(storage(error)),
            Outcome::Panicked(panic) => std::panic::resume_unwind(panic),
            Outcome::WriterGone => Err(ChangeLogError::WorkerUnavailable { backend: BACKEND }),
        }
    }

    /// Runs `f` with the read connection on tokio's blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, ChangeLogError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Shared) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let conn = shared.reader.lock();
            f(&conn, &shared).map_err(storage)
        })
        .await
        .map_err(|_| ChangeLogError::WorkerUnavailable { backend: BACKEND })?
    }
}

impl Shared {
    /// Records what a read just saw of the active entries, for staleness.
    fn observe_all(&self, rows: Vec<Seen>, max: usize) -> Vec<Seen> {
        // The instant is taken after the read returned: never earlier than
        // the moment the store served the rows.
        let now = self.clock.now();
        self.observations
            .lock()
            .observe_all(rows, now, self.staleness, max)
    }
}

fn fence_params(fence: &Fence) -> [rusqlite::types::Value; 3] {
    [
        to_i64(fence.id().get()).into(),
        fence.owner().as_str().to_owned().into(),
        to_i64(fence.generation()).into(),
    ]
}

impl fmt::Debug for SqliteChangeLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteChangeLog")
            .field("path", &self.shared.path)
            .field("staleness", &self.shared.staleness)
            .finish()
    }
}

fn to_u32(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

impl ChangeLog for SqliteChangeLog {
    fn staleness(&self) -> Duration {
        self.shared.staleness
    }

    async fn record(&self, owner: &OwnerId, payload: Vec<u8>) -> Result<Fence, ChangeLogError> {
        let owner = owner.clone();
        let sql = format!(
            "INSERT INTO leasehold_changelog (owner, generation, refreshed_ms, recorded_ms, payload)
             VALUES (?1, 1, {WALL_MS}, {WALL_MS}, ?2)"
        );
        self.write(move |tx| {
            tx.prepare_cached(&sql)?
                .execute(params![owner.as_str(), payload])?;
            // Answered once the batch has committed (and, by the
            // configured durability, synced).
            let id = tx.last_insert_rowid();
            Ok(Fence::new(EntryId::new(to_u64(id)), owner, 1))
        })
        .await
    }

    async fn refresh(&self, fence: &Fence) -> Result<Ownership, ChangeLogError> {
        let fence = fence.clone();
        let sql = format!(
            "UPDATE leasehold_changelog SET beat = beat + 1, refreshed_ms = {WALL_MS}
             WHERE id = ?1 AND owner = ?2 AND generation = ?3 AND quarantined IS NULL"
        );
        self.write(move |tx| {
            // Conditional on the fence: a removed, claimed or quarantined
            // entry matches no row, so a late heartbeat can neither recreate
            // nor re-own it.
            let changed = tx.prepare_cached(&sql)?.execute(fence_params(&fence))?;
            Ok(if changed == 1 {
                Ownership::Held
            } else {
                Ownership::Lost
            })
        })
        .await
    }

    async fn remove(&self, fence: &Fence) -> Result<Removal, ChangeLogError> {
        let fence = fence.clone();
        let id = fence.id().get();
        let removal = self
            .write(move |tx| {
                let deleted = tx
                    .prepare_cached(
                        "DELETE FROM leasehold_changelog
                         WHERE id = ?1 AND owner = ?2 AND generation = ?3",
                    )?
                    .execute(fence_params(&fence))?;
                if deleted == 1 {
                    return Ok(Removal::Removed);
                }
                // Nothing deleted: tell "already gone" from "someone else's
                // now". Ids are never reused, so an existing row is a later
                // generation.
                let exists = tx
                    .prepare_cached("SELECT 1 FROM leasehold_changelog WHERE id = ?1")?
                    .exists(params![to_i64(fence.id().get())])?;
                Ok(if exists {
                    Removal::Fenced
                } else {
                    Removal::Absent
                })
            })
            .await?;
        if removal == Removal::Removed {
            self.shared.observations.lock().forget(id);
        }
        Ok(removal)
    }

    async fn claim_stale(
        &self,
        owner: &OwnerId,
        max: usize,
    ) -> Result<Vec<ClaimedEntry>, ChangeLogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let owner = owner.clone();
        let (stale, broken) = self
            .read(move |conn, shared| {
                // A plain read on the read connection (a WAL snapshot; it takes
                // no write lock). A row whose counters cannot be used is read
                // too, and quarantined below once stale, instead of failing the
                // claim.
                let mut broken = std::collections::HashMap::new();
                let rows = conn
                    .prepare_cached(
                        "SELECT id, generation, beat FROM leasehold_changelog
                     WHERE quarantined IS NULL",
                    )?
                    .query_map([], |row| Ok(Scanned::read(row)))?
                    .collect::<Result<Vec<_>, _>>()?;
                let rows = rows
                    .into_iter()
                    .flatten()
                    .map(|scanned| {
                        if let Some(reason) = scanned.broken {
                            broken.insert(scanned.seen.id, reason);
                        }
                        scanned.seen
                    })
                    .collect();
                Ok((shared.observe_all(rows, max), broken))
            })
            .await?;
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let claimed = self
            .write(move |tx| {
                // Each update is conditional on the triple this handle saw
                // unchanged: whoever changed the row first (a beat, a fenced
                // commit, another claimer, an earlier operation of the same
                // batch) makes it match nothing.
                let mut claimed = Vec::with_capacity(stale.len());
                for seen in &stale {
                    let won = match broken.get(&seen.id) {
                        Some(reason) => quarantine_unusable(tx, &owner, seen, reason)?,
                        None => claim_one(tx, &owner, seen)?,
                    };
                    claimed.extend(won);
                }
                Ok(claimed)
            })
            .await?;
        let mut observations = self.shared.observations.lock();
        for entry in &claimed {
            observations.forget(entry.fence.id().get());
        }
        Ok(claimed)
    }

    async fn quarantine(&self, fence: &Fence, reason: &str) -> Result<Ownership, ChangeLogError> {
        let fence = fence.clone();
        let reason = reason.to_owned();
        self.write(move |tx| {
            // Idempotent: quarantining again keeps the first reason.
            let changed = tx
                .prepare_cached(
                    "UPDATE leasehold_changelog SET quarantined = coalesce(quarantined, ?4)
                     WHERE id = ?1 AND owner = ?2 AND generation = ?3",
                )?
                .execute(params![
                    to_i64(fence.id().get()),
                    fence.owner().as_str(),
                    to_i64(fence.generation()),
                    reason
                ])?;
            Ok(if changed == 1 {
                Ownership::Held
            } else {
                Ownership::Lost
            })
        })
        .await
    }

    async fn advance(&self, fence: &Fence) -> Result<Advanced, ChangeLogError> {
        let fence = fence.clone();
        self.write(move |tx| {
            let advanced = tx
                .prepare_cached(
                    "UPDATE leasehold_changelog SET generation = generation + 1, beat = beat + 1
                     WHERE id = ?1 AND owner = ?2 AND generation = ?3 AND quarantined IS NULL
                     RETURNING generation, committed",
                )?
                .query_row(fence_params(&fence), |row| {
                    Ok(Advanced::Held {
                        fence: Fence::new(fence.id(), fence.owner().clone(), to_u64(row.get(0)?)),
                        committed: row.get(1)?,
                    })
                })
                .optional()?;
            Ok(advanced.unwrap_or(Advanced::Lost))
        })
        .await
    }

    async fn start_attempt(&self, fence: &Fence) -> Result<Attempt, ChangeLogError> {
        let fence = fence.clone();
        let sql = format!(
            "UPDATE leasehold_changelog
             SET attempts = attempts + 1, beat = beat + 1, refreshed_ms = {WALL_MS}
             WHERE id = ?1 AND owner = ?2 AND generation = ?3 AND quarantined IS NULL
             RETURNING attempts"
        );
        self.write(move |tx| {
            let number = tx
                .prepare_cached(&sql)?
                .query_row(fence_params(&fence), |row| row.get::<_, i64>(0))
                .optional()?;
            Ok(number.map_or(Attempt::Lost, |n| Attempt::Started { number: to_u32(n) }))
        })
        .await
    }

    async fn record_failure(
        &self,
        fence: &Fence,
        reason: &str,
    ) -> Result<Ownership, ChangeLogError> {
        let fence = fence.clone();
        let reason = clip_failure(reason);
        self.write(move |tx| {
            // Read, append, trim and write under the write lock.
            let failures = tx
                .prepare_cached(
                    "SELECT failures FROM leasehold_changelog
                     WHERE id = ?1 AND owner = ?2 AND generation = ?3 AND quarantined IS NULL",
                )?
                .query_row(fence_params(&fence), |row| {
                    Ok(split_failures(&text_lossy(row.get_ref(0)?)))
                })
                .optional()?;
            let Some(mut failures) = failures else {
                return Ok(Ownership::Lost);
            };
            failures.push(reason);
            let excess = failures.len().saturating_sub(RECENT_FAILURES);
            failures.drain(..excess);
            tx.prepare_cached("UPDATE leasehold_changelog SET failures = ?2 WHERE id = ?1")?
                .execute(params![to_i64(fence.id().get()), failures.join("\n")])?;
            Ok(Ownership::Held)
        })
        .await
    }

    fn next_stale_in(&self) -> Option<Duration> {
        let now = self.shared.clock.now();
        self.shared
            .observations
            .lock()
            .next_stale_in(now, self.shared.staleness)
    }

    async fn get(&self, id: EntryId) -> Result<Option<EntryInfo>, ChangeLogError> {
        let sql = format!("{SELECT_INFO} WHERE id = ?1");
        self.read(move |conn, shared| {
            let row = conn
                .prepare_cached(&sql)?
                .query_row(params![to_i64(id.get())], Row::read)
                .optional()?;
            let now = shared.clock.now();
            let mut observations = shared.observations.lock();
            Ok(row.map(|row| row.info(|seen| observations.observe(seen, now))))
        })
        .await
    }

    async fn list(&self) -> Result<Vec<EntryInfo>, ChangeLogError> {
        let sql = format!("{SELECT_INFO} ORDER BY id");
        self.read(move |conn, shared| {
            let rows = conn
                .prepare_cached(&sql)?
                .query_map([], Row::read)?
                .collect::<Result<Vec<_>, _>>()?;
            // A read of every entry: it counts as an observation for later
            // claims, like the claim's own read.
            let active = rows.iter().filter_map(Row::active).collect();
            shared.observe_all(active, 0);
            let now = shared.clock.now();
            let mut observations = shared.observations.lock();
            Ok(rows
                .into_iter()
                .map(|row| row.info(|seen| observations.observe(seen, now)))
                .collect())
        })
        .await
    }
}

const SELECT_INFO: &str =
    "SELECT id, owner, generation, claims, payload, quarantined, beat, committed, attempts, failures
     FROM leasehold_changelog";

/// One row of the claim's scan: what staleness is judged on, and why the row
/// cannot be claimed normally, if it cannot. `None` for a row without
/// usable counters at all (never claimed, never fatal).
struct Scanned {
    seen: Seen,
    broken: Option<String>,
}

impl Scanned {
    fn read(row: &rusqlite::Row<'_>) -> Option<Scanned> {
        let id = row.get_ref(0).ok()?.as_i64().ok()?;
        let generation = row.get_ref(1).ok()?.as_i64().ok()?;
        let beat = row.get_ref(2).ok()?.as_i64().ok()?;
        // The claim increments both: a value at the top of the range (or
        // below the bottom) would fail the whole claim's transaction.
        let broken = if !(1..i64::MAX).contains(&generation) {
            Some(format!(
                "undecodable row: generation {generation} is out of range"
            ))
        } else if !(0..i64::MAX).contains(&beat) {
            Some(format!("undecodable row: beat {beat} is out of range"))
        } else {
            None
        };
        Some(Scanned {
            // Bit casts: an out-of-range value still identifies what was seen.
            seen: Seen {
                id: id as u64,
                generation: generation as u64,
                beat: beat as u64,
            },
            broken,
        })
    }
}

/// Re-owns one stale entry, conditional on the triple `seen`; a row whose
/// other columns do not decode is quarantined in the same transaction.
fn claim_one(
    tx: &rusqlite::Transaction<'_>,
    owner: &OwnerId,
    seen: &Seen,
) -> rusqlite::Result<Option<ClaimedEntry>> {
    let won = tx
        .prepare_cached(
            "UPDATE leasehold_changelog
             SET owner = ?1, generation = generation + 1, claims = claims + 1, beat = beat + 1
             WHERE id = ?2 AND generation = ?3 AND beat = ?4 AND quarantined IS NULL
             RETURNING generation, claims, payload, committed, attempts, failures",
        )?
        .query_row(
            params![
                owner.as_str(),
                to_i64(seen.id),
                to_i64(seen.generation),
                to_i64(seen.beat)
            ],
            |row| {
                let generation = to_u64(row.get(0)?);
                let fence = Fence::new(EntryId::new(seen.id), owner.clone(), generation);
                Ok(decode_claimed(row).map_or_else(
                    |reason| (fence.clone(), Err(reason)),
                    |entry| (fence.clone(), Ok(entry)),
                ))
            },
        )
        .optional()?;
    let Some((fence, decoded)) = won else {
        return Ok(None);
    };
    Ok(Some(match decoded {
        Ok((claims, payload, committed, attempts, failures)) => ClaimedEntry {
            fence,
            payload,
            claims,
            committed,
            attempts,
            failures,
            quarantined: None,
        },
        Err(reason) => {
            tx.prepare_cached(
                "UPDATE leasehold_changelog SET quarantined = ?4
                 WHERE id = ?1 AND owner = ?2 AND generation = ?3",
            )?
            .execute(params![
                to_i64(fence.id().get()),
                fence.owner().as_str(),
                to_i64(fence.generation()),
                reason
            ])?;
            unusable(fence, reason)
        }
    }))
}

/// The columns of a claimed row after its fence, or why they do not decode.
type Decoded = (u32, Vec<u8>, bool, u32, Vec<String>);

fn decode_claimed(row: &rusqlite::Row<'_>) -> Result<Decoded, String> {
    let cell = |i: usize| {
        row.get_ref(i)
            .map_err(|e| format!("undecodable row: column {i}: {e}"))
    };
    let int = |i: usize, name: &str| {
        cell(i)?
            .as_i64()
            .map_err(|_| format!("undecodable row: {name} is not an integer"))
    };
    let payload = match cell(2)? {
        rusqlite::types::ValueRef::Blob(bytes) => bytes.to_vec(),
        other => {
            return Err(format!(
                "undecodable row: the payload is {:?}, not a BLOB",
                other.data_type()
            ));
        }
    };
    Ok((
        to_u32(int(1, "claims")?),
        payload,
        int(3, "committed")? != 0,
        to_u32(int(4, "attempts")?),
        split_failures(&text_lossy(cell(5)?)),
    ))
}

/// Quarantines a stale row whose counters cannot be incremented, as
/// `owner`, conditional on the triple `seen` (like a claim).
fn quarantine_unusable(
    tx: &rusqlite::Transaction<'_>,
    owner: &OwnerId,
    seen: &Seen,
    reason: &str,
) -> rusqlite::Result<Option<ClaimedEntry>> {
    let changed = tx
        .prepare_cached(
            "UPDATE leasehold_changelog SET owner = ?1, quarantined = ?5
             WHERE id = ?2 AND generation = ?3 AND beat = ?4 AND quarantined IS NULL",
        )?
        .execute(params![
            owner.as_str(),
            seen.id as i64,
            seen.generation as i64,
            seen.beat as i64,
            reason
        ])?;
    Ok((changed == 1).then(|| {
        let fence = Fence::new(EntryId::new(seen.id), owner.clone(), seen.generation);
        unusable(fence, reason.to_owned())
    }))
}

/// What a claim reports for a row it quarantined as undecodable.
fn unusable(fence: Fence, reason: String) -> ClaimedEntry {
    ClaimedEntry {
        fence,
        payload: Vec::new(),
        claims: 0,
        committed: false,
        attempts: 0,
        failures: Vec::new(),
        quarantined: Some(reason),
    }
}

/// A TEXT cell as a string; anything else (a BLOB, a number) rendered.
fn text_lossy(value: rusqlite::types::ValueRef<'_>) -> String {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => String::new(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(x) => x.to_string(),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            String::from_utf8_lossy(bytes).into_owned()
        }
    }
}

/// The `failures` column: one reason per line.
fn split_failures(column: &str) -> Vec<String> {
    if column.is_empty() {
        return Vec::new();
    }
    column.split('\n').map(str::to_owned).collect()
}

/// One row of [`SELECT_INFO`], read without failing: a cell of the wrong
/// type reads as its best rendering (a listing never fails on one row).
struct Row {
    seen: Seen,
    owner: String,
    claims: i64,
    payload: Vec<u8>,
    quarantined: Option<String>,
    committed: bool,
    attempts: i64,
    failures: Vec<String>,
}

impl Row {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        use rusqlite::types::ValueRef;
        let int = |i: usize| row.get_ref(i).map(|v| v.as_i64().unwrap_or(0));
        Ok(Row {
            seen: Seen {
                id: to_u64(int(0)?),
                generation: to_u64(int(2)?),
                beat: to_u64(int(6)?),
            },
            owner: text_lossy(row.get_ref(1)?),
            claims: int(3)?,
            payload: match row.get_ref(4)? {
                ValueRef::Blob(bytes) | ValueRef::Text(bytes) => bytes.to_vec(),
                _ => Vec::new(),
            },
            quarantined: match row.get_ref(5)? {
                ValueRef::Null => None,
                other => Some(text_lossy(other)),
            },
            committed: int(7)? != 0,
            attempts: int(8)?,
            failures: split_failures(&text_lossy(row.get_ref(9)?)),
        })
    }

    fn active(&self) -> Option<Seen> {
        self.quarantined.is_none().then_some(self.seen)
    }

    /// The snapshot; `observe` gives the age of an active entry.
    fn info(self, mut observe: impl FnMut(Seen) -> Duration) -> EntryInfo {
        let age = match self.quarantined {
            None => observe(self.seen),
            Some(_) => Duration::ZERO,
        };
        EntryInfo {
            fence: Fence::new(
                EntryId::new(self.seen.id),
                OwnerId::new(self.owner),
                self.seen.generation,
            ),
            claims: to_u32(self.claims),
            payload: self.payload,
            state: match self.quarantined {
                None => EntryState::Active,
                Some(reason) => EntryState::Quarantined { reason },
            },
            age,
            committed: self.committed,
            attempts: to_u32(self.attempts),
            failures: self.failures,
        }
    }
}
