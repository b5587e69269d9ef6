//! [`SqliteLeaseTable`]: a shard's readers in an SQLite file, shared by the
//! processes of one machine.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::backend::{HeartbeatReply, LeaseBackend, meet_all};
use super::error::{BackendError, FencedReadError, LeaseTableError};
use super::memory::ReaderId;
use super::table::{ReaderFence, ReaderRow, TableSince, decode_since};
use crate::changelog::staleness::{Observations, Seen};
use crate::changelog::{Durability, Payload};
use crate::clock::Clock;
use crate::store::sqlite::{self, Schema, Synchronous};
use crate::store::{to_i64, to_u64};
use crate::sync::Mutex;

const BACKEND: &str = "sqlite";

/// The lease tables, at the schema version this crate writes and reads.
///
/// One row per shard (its since as of the last [`SqliteLeaseTable::since`],
/// its latest seqno, its registration counter) and one row per live reader.
/// `AUTOINCREMENT`: reader ids are never reused, so a fence of an expired
/// reader never matches a later one. `beat` is the heartbeat counter that
/// staleness is judged on. The index on `(shard, seqno_hold)` serves the GC
/// horizon, `min(seqno_hold)`, by one descent of the index.
const SCHEMA: Schema = Schema {
    component: "lease",
    version: 1,
    create: "CREATE TABLE leasehold_lease_shards (
                 shard TEXT PRIMARY KEY,
                 since BLOB NOT NULL,
                 seqno INTEGER NOT NULL,
                 registrations INTEGER NOT NULL DEFAULT 0
             );
             CREATE TABLE leasehold_lease_readers (
                 reader INTEGER PRIMARY KEY AUTOINCREMENT,
                 shard TEXT NOT NULL,
                 generation INTEGER NOT NULL,
                 since BLOB NOT NULL,
                 seqno_hold INTEGER NOT NULL,
                 beat INTEGER NOT NULL DEFAULT 0
             );
             CREATE INDEX leasehold_lease_readers_hold
                 ON leasehold_lease_readers (shard, seqno_hold);",
    upgrades: &[],
    tables: &["leasehold_lease_shards", "leasehold_lease_readers"],
};

fn storage(error: rusqlite::Error) -> LeaseTableError {
    LeaseTableError::from_failure(BACKEND, error.into())
}

/// Configures and opens a [`SqliteLeaseTable`].
#[must_use = "a builder does nothing until `open` is called"]
pub struct SqliteLeaseTableBuilder<S> {
    path: PathBuf,
    shard: String,
    staleness: Duration,
    busy_timeout: Duration,
    durability: Durability,
    clock: Arc<dyn Clock>,
    since: PhantomData<fn() -> S>,
}

impl<S> fmt::Debug for SqliteLeaseTableBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteLeaseTableBuilder")
            .field("path", &self.path)
            .field("shard", &self.shard)
            .field("staleness", &self.staleness)
            .field("busy_timeout", &self.busy_timeout)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl<S: TableSince> SqliteLeaseTableBuilder<S> {
    /// A reader may be expired by [`expire_stale`](SqliteLeaseTable::expire_stale)
    /// once this handle has seen its heartbeat counter unchanged this long
    /// (default 60 s). Use at least the readers' lease ttl: a reader's
    /// [`Validity`](crate::heartbeat::Validity) then ends before it can be
    /// judged stale.
    pub fn staleness(mut self, staleness: Duration) -> Self {
        self.staleness = staleness;
        self
    }

    /// The monotonic clock this handle measures staleness on (default
    /// [`clock::system`](crate::clock::system), which counts suspended time).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long a call waits for another process's write lock before
    /// failing with [`LeaseTableError::Busy`] (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How durable each commit is (default [`Durability::PowerLoss`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Opens (creating if needed) the database file, the lease tables and
    /// the shard, on a blocking thread. A new shard starts at `since` and
    /// `seqno`; an existing one keeps its own.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError::Config`] for a zero staleness or a file system
    /// that refuses WAL mode; [`LeaseTableError::CannotOpen`],
    /// [`LeaseTableError::Corrupt`], [`LeaseTableError::PermissionDenied`],
    /// [`LeaseTableError::SchemaTooNew`] for a file that cannot serve;
    /// [`LeaseTableError::Busy`] or [`LeaseTableError::Storage`]
    /// (transient).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped open leaves at most the empty tables behind.
    pub async fn open(self, since: S, seqno: u64) -> Result<SqliteLeaseTable<S>, LeaseTableError> {
        tokio::task::spawn_blocking(move || self.open_blocking(since, seqno))
            .await
            .map_err(|_| LeaseTableError::WorkerUnavailable { backend: BACKEND })?
    }

    /// [`open`](Self::open) for synchronous callers. Blocks.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_blocking(
        self,
        since: S,
        seqno: u64,
    ) -> Result<SqliteLeaseTable<S>, LeaseTableError> {
        if self.staleness.is_zero() {
            return Err(LeaseTableError::Config {
                reason: "staleness must be greater than zero".into(),
            });
        }
        let synchronous = match self.durability {
            Durability::ProcessCrash => Synchronous::Normal,
            _ => Synchronous::Full,
        };
        let conn = sqlite::open(&self.path, self.busy_timeout, synchronous, &SCHEMA)
            .map_err(|failure| LeaseTableError::from_failure(BACKEND, failure))?;
        conn.execute(
            "INSERT INTO leasehold_lease_shards (shard, since, seqno) VALUES (?1, ?2, ?3)
             ON CONFLICT (shard) DO NOTHING",
            params![self.shard, since.encode(), to_i64(seqno)],
        )
        .map_err(storage)?;
        Ok(SqliteLeaseTable {
            shared: Arc::new(Shared {
                path: self.path,
                shard: self.shard,
                staleness: self.staleness,
                clock: self.clock,
                observations: Mutex::new(Observations::default()),
                horizon: Mutex::new(0),
                conn: Mutex::new(conn),
            }),
            since: PhantomData,
        })
    }
}

/// The readers of a shard in an SQLite database file: the durable
/// [`LeaseBackend`] of their leases, and what the shard's owner (its
/// compactor or garbage collector) needs to know about them. Safe for
/// several processes on one machine; pick `PostgresLeaseTable` for several
/// machines.
///
/// | who | calls | what it does |
/// |---|---|---|
/// | a reader | [`register`](Self::register), then [`Lease::spawn`](super::Lease::spawn) with the returned [`SqliteLeaseReader`] | heartbeats carry its since (joined, never moved back) and seqno hold |
/// | a reader | [`read_fenced`](Self::read_fenced) | reads the shard's data only while the store still holds its lease |
/// | the owner | [`gc_horizon`](Self::gc_horizon) | the least live seqno hold: state before it may be deleted |
/// | the owner | [`since`](Self::since) | the meet of the live readers' sinces: history before it may be compacted |
/// | the owner | [`expire_stale`](Self::expire_stale), periodically | removes readers whose heartbeat counter it has seen unchanged for the staleness |
/// | the owner | [`advance_seqno`](Self::advance_seqno) | publishes the shard's latest seqno (heartbeats report it) |
///
/// # Staleness without wall clocks, fenced expiry
///
/// Every heartbeat increments the reader's counter (`beat`). The owner's
/// handle remembers, on its own monotonic clock, when it first saw each
/// reader's `(reader, generation, beat)`, and expires the reader once that
/// triple stayed unchanged for the staleness threshold, with a delete
/// conditional on the same triple: a heartbeat that lands in between makes
/// it match nothing. No timestamp written by one clock is compared with
/// another clock. An expired reader's row is gone: its next heartbeat
/// reports [`BackendError::Lost`] (its lease then ends and its
/// [`Validity`](crate::heartbeat::Validity) is invalidated), it can never
/// move the shard's holds again, and its fenced reads are refused.
///
/// # Why reads are fenced
///
/// A reader that pauses (SIGSTOP, a VM stall) can resume after its lease was
/// expired and the state it pinned was deleted. Checking validity first
/// cannot prevent that (the pause can fall between the check and the read);
/// [`read_fenced`](Self::read_fenced) checks the reader's row in the same
/// read transaction as the read. An owner that deletes state below the GC
/// horizon computed *after* the expiry committed therefore never deletes
/// what a read that saw the row still reads.
///
/// # Costs
///
/// A heartbeat is one short `BEGIN IMMEDIATE` transaction. The GC horizon is
/// one `min()` served by the index on `(shard, seqno_hold)`: its cost does
/// not grow with the number of readers beyond the index's depth.
/// [`since`](Self::since) and [`expire_stale`](Self::expire_stale) read
/// every reader of the shard (a lattice meet cannot be served by an index;
/// staleness must look at every counter): run them at the owner's pace, not
/// per read.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold::lease::{Lease, LeaseConfig, SqliteLeaseTable};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let table = SqliteLeaseTable::<u64>::builder(dir.path().join("leases.db"), "shard-1")
///     .staleness(Duration::from_secs(60))
///     .open(0, 10) // a new shard at since 0, seqno 10
///     .await?;
///
/// let (reader, since, seqno) = table.register().await?;
/// let config = LeaseConfig::builder(Duration::from_secs(60)).build()?;
/// let lease = Lease::spawn(reader, &config, since, seqno);
/// let snapshot = lease.lease_seqno(); // pins seqno 10
/// table.advance_seqno(12).await?;
/// assert_eq!(lease.downgrade_since(5).await?, 5);
/// assert_eq!(table.since().await?, 5);
/// assert_eq!(table.gc_horizon().await?, 10);
///
/// drop(snapshot);
/// lease.expire().await?;
/// assert_eq!(table.gc_horizon().await?, 12); // no reader holds anything
/// # Ok(()) }
/// ```
pub struct SqliteLeaseTable<S> {
    shared: Arc<Shared>,
    since: PhantomData<fn() -> S>,
}

struct Shared {
    path: PathBuf,
    shard: String,
    staleness: Duration,
    clock: Arc<dyn Clock>,
    observations: Mutex<Observations>,
    /// The largest horizon this handle reported: it never reports less.
    horizon: Mutex<u64>,
    conn: Mutex<Connection>,
}

impl<S> Clone for SqliteLeaseTable<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            since: PhantomData,
        }
    }
}

impl<S> fmt::Debug for SqliteLeaseTable<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteLeaseTable")
            .field("path", &self.shared.path)
            .field("shard", &self.shared.shard)
            .field("staleness", &self.shared.staleness)
            .finish_non_exhaustive()
    }
}

impl<S: TableSince> SqliteLeaseTable<S> {
    /// A builder for shard `shard`'s readers in the database file at `path`.
    pub fn builder(path: impl AsRef<Path>, shard: impl Into<String>) -> SqliteLeaseTableBuilder<S> {
        SqliteLeaseTableBuilder {
            path: path.as_ref().to_owned(),
            shard: shard.into(),
            staleness: Duration::from_secs(60),
            busy_timeout: Duration::from_secs(5),
            durability: Durability::default(),
            clock: crate::clock::system(),
            since: PhantomData,
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The shard's name.
    pub fn shard(&self) -> &str {
        &self.shared.shard
    }

    /// Runs `f` with the connection on tokio's blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, LeaseTableError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Shared) -> Result<T, LeaseTableError> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let mut conn = shared.conn.lock();
            f(&mut conn, &shared)
        })
        .await
        .map_err(|_| LeaseTableError::WorkerUnavailable { backend: BACKEND })?
    }

    /// Registers a new reader at the shard's since and latest seqno (its
    /// seqno hold); returns its backend and what it holds, ready for
    /// [`Lease::spawn`](super::Lease::spawn). Its generation is the shard's
    /// registration count: a reader that registers again after its lease was
    /// expired gets a new id and a larger generation.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError`]; [`LeaseTableError::Undecodable`] if the shard's
    /// stored since does not decode.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may still register the reader, which
    /// nobody then heartbeats; the owner expires it after the staleness.
    pub async fn register(&self) -> Result<(SqliteLeaseReader<S>, S, u64), LeaseTableError> {
        let table = self.clone();
        self.run(move |conn, shared| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(storage)?;
            let (since, seqno, generation): (Vec<u8>, i64, i64) = tx
                .query_row(
                    "UPDATE leasehold_lease_shards SET registrations = registrations + 1
                     WHERE shard = ?1 RETURNING since, seqno, registrations",
                    params![shared.shard],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .map_err(storage)?;
            let since = decode_since::<S>(0, &since)?;
            let reader: i64 = tx
                .query_row(
                    "INSERT INTO leasehold_lease_readers (shard, generation, since, seqno_hold)
                     VALUES (?1, ?2, ?3, ?4) RETURNING reader",
                    params![shared.shard, generation, since.encode(), seqno],
                    |row| row.get(0),
                )
                .map_err(storage)?;
            tx.commit().map_err(storage)?;
            let fence = ReaderFence::new(ReaderId::new(to_u64(reader)), to_u64(generation));
            Ok((SqliteLeaseReader { table, fence }, since, to_u64(seqno)))
        })
        .await
    }

    /// Publishes the shard's latest seqno (a write happened), if it is ahead
    /// of the stored one; returns the latest seqno. Heartbeats report it.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the update is idempotent.
    pub async fn advance_seqno(&self, seqno: u64) -> Result<u64, LeaseTableError> {
        self.run(move |conn, shared| {
            conn.query_row(
                "UPDATE leasehold_lease_shards SET seqno = max(seqno, ?2) WHERE shard = ?1
                 RETURNING seqno",
                params![shared.shard, to_i64(seqno)],
                |row| row.get(0),
            )
            .map(to_u64)
            .map_err(storage)
        })
        .await
    }

    /// The shard's latest seqno.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (a read).
    pub async fn seqno(&self) -> Result<u64, LeaseTableError> {
        self.run(move |conn, shared| {
            conn.query_row(
                "SELECT seqno FROM leasehold_lease_shards WHERE shard = ?1",
                params![shared.shard],
                |row| row.get(0),
            )
            .map(to_u64)
            .map_err(storage)
        })
        .await
    }

    /// The shard's GC horizon: the least seqno hold of its live readers, or
    /// its latest seqno when no reader holds anything. State before it may
    /// be deleted. Never less than what this handle reported before.
    ///
    /// One `min()` served by the index on `(shard, seqno_hold)`. A reader
    /// that is dead but not yet expired still holds: run
    /// [`expire_stale`](Self::expire_stale) first.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (a read).
    pub async fn gc_horizon(&self) -> Result<u64, LeaseTableError> {
        self.run(move |conn, shared| {
            let found: i64 = conn
                .prepare_cached(
                    "SELECT coalesce(
                         (SELECT min(seqno_hold) FROM leasehold_lease_readers WHERE shard = ?1),
                         seqno)
                     FROM leasehold_lease_shards WHERE shard = ?1",
                )
                .and_then(|mut stmt| stmt.query_row(params![shared.shard], |row| row.get(0)))
                .map_err(storage)?;
            let mut horizon = shared.horizon.lock();
            *horizon = (*horizon).max(to_u64(found));
            Ok(*horizon)
        })
        .await
    }

    /// The shard's since: the meet of its live readers' sinces, joined with
    /// the since stored for the shard (so it never moves back); stored when
    /// it moved, so readers registering later start there. With no live
    /// reader, the stored since.
    ///
    /// Reads every reader of the shard.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError::Undecodable`] for a row whose since does not
    /// decode; other [`LeaseTableError`]s.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped call at most stores a since that a later call
    /// would store too.
    pub async fn since(&self) -> Result<S, LeaseTableError> {
        self.run(move |conn, shared| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(storage)?;
            let stored: Vec<u8> = tx
                .query_row(
                    "SELECT since FROM leasehold_lease_shards WHERE shard = ?1",
                    params![shared.shard],
                    |row| row.get(0),
                )
                .map_err(storage)?;
            let stored = decode_since::<S>(0, &stored)?;
            let rows = tx
                .prepare_cached(
                    "SELECT reader, since FROM leasehold_lease_readers WHERE shard = ?1",
                )
                .and_then(|mut stmt| {
                    stmt.query_map(params![shared.shard], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(storage)?;
            let sinces = rows
                .iter()
                .map(|(reader, bytes)| decode_since::<S>(to_u64(*reader), bytes))
                .collect::<Result<Vec<_>, _>>()?;
            let Some(meet) = meet_all(&sinces) else {
                return Ok(stored);
            };
            if meet.less_equal(&stored) {
                return Ok(stored);
            }
            let since = stored.join(&meet);
            tx.execute(
                "UPDATE leasehold_lease_shards SET since = ?2 WHERE shard = ?1",
                params![shared.shard, since.encode()],
            )
            .map_err(storage)?;
            tx.commit().map_err(storage)?;
            Ok(since)
        })
        .await
    }

    /// Expires the readers whose heartbeat counter this handle has seen
    /// unchanged for the staleness threshold, on its own monotonic clock;
    /// returns their ids. Each delete is conditional on the
    /// `(reader, generation, beat)` seen, so a heartbeat that lands first
    /// keeps its reader. A handle that has just started has seen nothing
    /// yet: it expires a reader at the earliest one staleness after its
    /// first call. Call it periodically (more often than the staleness).
    ///
    /// # Errors
    ///
    /// [`LeaseTableError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: a dropped call may still expire the readers it
    /// found stale, which a later call would have expired too.
    pub async fn expire_stale(&self) -> Result<Vec<ReaderId>, LeaseTableError> {
        self.run(move |conn, shared| {
            let rows = conn
                .prepare_cached(
                    "SELECT reader, generation, beat FROM leasehold_lease_readers WHERE shard = ?1",
                )
                .and_then(|mut stmt| {
                    stmt.query_map(params![shared.shard], |row| {
                        Ok(Seen {
                            id: to_u64(row.get(0)?),
                            generation: to_u64(row.get(1)?),
                            beat: to_u64(row.get(2)?),
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(storage)?;
            // After the read returned: never earlier than the moment the
            // store served the counters.
            let now = shared.clock.now();
            let stale =
                shared
                    .observations
                    .lock()
                    .observe_all(rows, now, shared.staleness, usize::MAX);
            if stale.is_empty() {
                return Ok(Vec::new());
            }
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(storage)?;
            let mut expired = Vec::new();
            {
                let mut delete = tx
                    .prepare_cached(
                        "DELETE FROM leasehold_lease_readers
                         WHERE reader = ?1 AND generation = ?2 AND beat = ?3",
                    )
                    .map_err(storage)?;
                for seen in &stale {
                    let deleted = delete
                        .execute(params![
                            to_i64(seen.id),
                            to_i64(seen.generation),
                            to_i64(seen.beat)
                        ])
                        .map_err(storage)?;
                    if deleted == 1 {
                        expired.push(ReaderId::new(seen.id));
                    }
                }
            }
            tx.commit().map_err(storage)?;
            let mut observations = shared.observations.lock();
            for seen in &stale {
                observations.forget(seen.id);
            }
            Ok(expired)
        })
        .await
    }

    /// The number of live (not yet expired) readers of the shard.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (a read).
    pub async fn readers(&self) -> Result<usize, LeaseTableError> {
        self.run(move |conn, shared| {
            conn.query_row(
                "SELECT count(*) FROM leasehold_lease_readers WHERE shard = ?1",
                params![shared.shard],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| usize::try_from(n).unwrap_or(0))
            .map_err(storage)
        })
        .await
    }

    /// What the table holds for reader `id`, if it is live.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError::Undecodable`] if its since does not decode; other
    /// [`LeaseTableError`]s.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (a read).
    pub async fn reader(&self, id: ReaderId) -> Result<Option<ReaderRow<S>>, LeaseTableError> {
        self.run(move |conn, shared| {
            let row = conn
                .query_row(
                    "SELECT generation, since, seqno_hold, beat FROM leasehold_lease_readers
                     WHERE shard = ?1 AND reader = ?2",
                    params![shared.shard, to_i64(id.get())],
                    |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, Vec<u8>>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, i64>(3)?,
                        ))
                    },
                )
                .optional()
                .map_err(storage)?;
            row.map(|(generation, since, hold, beat)| {
                Ok(ReaderRow {
                    fence: ReaderFence::new(id, to_u64(generation)),
                    since: decode_since::<S>(id.get(), &since)?,
                    seqno_hold: to_u64(hold),
                    beats: to_u64(beat),
                })
            })
            .transpose()
        })
        .await
    }

    /// Runs `read` in one read transaction on this table's database file,
    /// after checking, in that transaction, that `reader`'s lease is still
    /// held. Keep the data the reader reads in this file: an owner that
    /// deletes state below the [`gc_horizon`](Self::gc_horizon) it computed
    /// after expiring the reader commits those deletes after the expiry, so a
    /// read that still saw the reader's row cannot see them.
    ///
    /// `read` runs on tokio's blocking pool; it must not use this table (its
    /// connection is busy with the transaction).
    ///
    /// # Errors
    ///
    /// [`FencedReadError::Lost`]: the reader was expired; `read` did not
    /// run. [`FencedReadError::Read`]: `read` failed.
    /// [`FencedReadError::Store`]: the transaction could not run.
    ///
    /// # Panics
    ///
    /// A panic in `read` resumes here.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped read changes nothing (it keeps running on the
    /// blocking pool until `read` returns).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::lease::{FencedReadError, SqliteLeaseTable};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("shard.db");
    /// let table = SqliteLeaseTable::<u64>::builder(&path, "s").open(0, 0).await?;
    /// rusqlite::Connection::open(&path)?
    ///     .execute_batch("CREATE TABLE versions (seqno INTEGER PRIMARY KEY, value TEXT)")?;
    ///
    /// let (reader, ..) = table.register().await?;
    /// let fence = reader.fence();
    /// let count: i64 = table
    ///     .read_fenced(fence, |tx| tx.query_row("SELECT count(*) FROM versions", [], |r| r.get(0)))
    ///     .await?;
    /// assert_eq!(count, 0);
    /// # use leasehold::lease::LeaseBackend;
    /// reader.expire().await?; // or expired by the owner
    /// let late = table.read_fenced(fence, |tx| tx.execute("SELECT 1", [])).await;
    /// assert!(matches!(late, Err(FencedReadError::Lost)));
    /// # Ok(()) }
    /// ```
    pub async fn read_fenced<T, E, F>(
        &self,
        reader: ReaderFence,
        read: F,
    ) -> Result<T, FencedReadError<E>>
    where
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let joined = tokio::task::spawn_blocking(move || {
            let mut conn = shared.conn.lock();
            // DEFERRED: a read transaction; its WAL snapshot starts at the
            // first statement, the check, and the read sees the same one.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .map_err(|e| FencedReadError::Store(storage(e)))?;
            let live = tx
                .prepare_cached(
                    "SELECT 1 FROM leasehold_lease_readers WHERE reader = ?1 AND generation = ?2",
                )
                .and_then(|mut stmt| {
                    stmt.exists(params![
                        to_i64(reader.reader().get()),
                        to_i64(reader.generation())
                    ])
                })
                .map_err(|e| FencedReadError::Store(storage(e)))?;
            if !live {
                return Err(FencedReadError::Lost);
            }
            let value = read(&tx).map_err(FencedReadError::Read)?;
            // Ending a read transaction cannot lose anything; an error here
            // is the store's.
            tx.commit()
                .map_err(|e| FencedReadError::Store(storage(e)))?;
            Ok(value)
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(FencedReadError::Store(LeaseTableError::WorkerUnavailable {
                backend: BACKEND,
            })),
        }
    }
}

/// One reader of a [`SqliteLeaseTable`]: the [`LeaseBackend`] of its lease,
/// from [`SqliteLeaseTable::register`].
pub struct SqliteLeaseReader<S> {
    table: SqliteLeaseTable<S>,
    fence: ReaderFence,
}

impl<S> SqliteLeaseReader<S> {
    /// The reader's id and generation, for [`SqliteLeaseTable::read_fenced`].
    pub fn fence(&self) -> ReaderFence {
        self.fence
    }
}

impl<S> fmt::Debug for SqliteLeaseReader<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteLeaseReader")
            .field("fence", &self.fence)
            .field("table", &self.table)
            .finish()
    }
}

impl<S: TableSince> LeaseBackend for SqliteLeaseReader<S> {
    type Since = S;
    type Seqno = u64;

    /// One `BEGIN IMMEDIATE` transaction, fenced on `(reader, generation)`:
    /// the reader's since becomes the join of the stored and the sent one,
    /// its seqno hold moves forward to the sent one (never back), its
    /// heartbeat counter increments; reports the shard's latest seqno. A
    /// reader whose row is gone (expired) gets [`BackendError::Lost`].
    async fn heartbeat(
        &self,
        since: S,
        seqno_hold: u64,
    ) -> Result<HeartbeatReply<S, u64>, BackendError> {
        let fence = self.fence;
        let outcome = self
            .table
            .run(move |conn, shared| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(storage)?;
                let key = params![to_i64(fence.reader().get()), to_i64(fence.generation())];
                let stored: Option<Vec<u8>> = tx
                    .prepare_cached(
                        "SELECT since FROM leasehold_lease_readers
                         WHERE reader = ?1 AND generation = ?2",
                    )
                    .and_then(|mut stmt| stmt.query_row(key, |row| row.get(0)).optional())
                    .map_err(storage)?;
                let Some(stored) = stored else {
                    return Ok(None);
                };
                let stored = decode_since::<S>(fence.reader().get(), &stored)?;
                let joined = if since.less_equal(&stored) {
                    None
                } else {
                    Some(stored.join(&since))
                };
                tx.prepare_cached(
                    "UPDATE leasehold_lease_readers
                     SET since = coalesce(?3, since), seqno_hold = max(seqno_hold, ?4),
                         beat = beat + 1
                     WHERE reader = ?1 AND generation = ?2",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        to_i64(fence.reader().get()),
                        to_i64(fence.generation()),
                        joined.as_ref().map(Payload::encode),
                        to_i64(seqno_hold)
                    ])
                })
                .map_err(storage)?;
                let seqno: i64 = tx
                    .prepare_cached("SELECT seqno FROM leasehold_lease_shards WHERE shard = ?1")
                    .and_then(|mut stmt| stmt.query_row(params![shared.shard], |row| row.get(0)))
                    .map_err(storage)?;
                tx.commit().map_err(storage)?;
                Ok(Some(HeartbeatReply {
                    since: joined.unwrap_or(stored),
                    seqno: to_u64(seqno),
                }))
            })
            .await;
        match outcome {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(BackendError::Lost),
            Err(error) => Err(error.into_backend()),
        }
    }

    /// Deletes the reader's row (fenced on its generation). Idempotent.
    async fn expire(&self) -> Result<(), BackendError> {
        let fence = self.fence;
        self.table
            .run(move |conn, _| {
                conn.execute(
                    "DELETE FROM leasehold_lease_readers WHERE reader = ?1 AND generation = ?2",
                    params![to_i64(fence.reader().get()), to_i64(fence.generation())],
                )
                .map_err(storage)
            })
            .await
            .map(drop)
            .map_err(LeaseTableError::into_backend)
    }
}
