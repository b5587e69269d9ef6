//! The SQLite changelog: the embedded durable default, shared by the
//! processes of one machine.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    ChangeLog, ChangeLogError, ClaimedEntry, EntryId, EntryInfo, EntryState, Fence, OwnerId,
    Ownership, Removal, to_i64, to_u64,
};
use crate::sqlite::{self, OpenError, Schema, Synchronous};
use crate::sync::Mutex;

const BACKEND: &str = "sqlite";

/// The changelog's tables, at the schema version this crate writes and reads.
///
/// `AUTOINCREMENT`: ids are never reused, so a fence of a removed entry can
/// never match a later entry at the same generation.
const SCHEMA: Schema = Schema {
    component: "changelog",
    version: 1,
    create: "CREATE TABLE leasehold_changelog (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 owner TEXT NOT NULL,
                 generation INTEGER NOT NULL,
                 refreshed_ms INTEGER NOT NULL,
                 recorded_ms INTEGER NOT NULL,
                 claims INTEGER NOT NULL DEFAULT 0,
                 quarantined TEXT,
                 payload BLOB NOT NULL
             );
             CREATE INDEX leasehold_changelog_claimable
                 ON leasehold_changelog (refreshed_ms, id) WHERE quarantined IS NULL;",
};

/// The store's clock, in milliseconds since the Unix epoch, read by SQLite
/// itself from the machine that holds the file. `:off` is the handle's test
/// offset ([`SqliteChangeLog::shift_clock`]).
const STORE_NOW_MS: &str = "(CAST(unixepoch('subsec') * 1000 AS INTEGER) + :off)";

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
    clock_offset: Duration,
}

impl SqliteChangeLogBuilder {
    /// Entries go stale this long after their last refresh (default 30 s).
    pub fn staleness(mut self, staleness: Duration) -> Self {
        self.staleness = staleness;
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

    /// Shifts this handle's reading of the store clock forward (default 0);
    /// see [`SqliteChangeLog::shift_clock`]. Lets a test process see
    /// entries as older than they are, without sleeping.
    pub fn clock_offset(mut self, offset: Duration) -> Self {
        self.clock_offset = offset;
        self
    }

    /// Opens (creating if needed) the database file and the changelog schema,
    /// on a blocking thread.
    ///
    /// # Errors
    ///
    /// [`ChangeLogError::Storage`] if the file cannot be opened or the schema
    /// created, [`ChangeLogError::SchemaTooNew`] if the file was written by a
    /// newer version of this crate, [`ChangeLogError::Busy`] if other
    /// processes held the database locked past the busy timeout,
    /// [`ChangeLogError::Config`] for out-of-range durations.
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
        let millis = |d: Duration, what: &str| {
            i64::try_from(d.as_millis()).map_err(|_| ChangeLogError::Config {
                reason: format!("{what} {d:?} is out of range"),
            })
        };
        let staleness_ms = millis(self.staleness, "staleness")?;
        let offset_ms = millis(self.clock_offset, "clock offset")?;
        let synchronous = match self.durability {
            Durability::PowerLoss => Synchronous::Full,
            Durability::ProcessCrash => Synchronous::Normal,
        };
        let conn =
            sqlite::open(&self.path, self.busy_timeout, synchronous, &SCHEMA).map_err(|error| {
                match error {
                    OpenError::Sqlite(error) => storage(error),
                    OpenError::NotWal { mode } => ChangeLogError::Config {
                        reason: format!("the database refused WAL mode (journal_mode is {mode})"),
                    },
                    OpenError::SchemaTooNew { found, supported } => {
                        ChangeLogError::SchemaTooNew { found, supported }
                    }
                }
            })?;
        Ok(SqliteChangeLog {
            shared: Arc::new(Shared {
                path: self.path,
                staleness: self.staleness,
                staleness_ms,
                offset_ms: AtomicI64::new(offset_ms),
                conn: Mutex::new(conn),
            }),
        })
    }
}

/// Maps a driver error: lock timeouts are [`ChangeLogError::Busy`], the
/// rest [`ChangeLogError::Storage`].
fn storage(error: rusqlite::Error) -> ChangeLogError {
    if sqlite::is_busy(&error) {
        ChangeLogError::Busy { backend: BACKEND }
    } else {
        ChangeLogError::Storage {
            backend: BACKEND,
            source: Box::new(error),
        }
    }
}

/// A [`ChangeLog`] in an SQLite database file: durable, and safe for several
/// processes on one machine.
///
/// Pick it as the default embedded log. The database runs in WAL mode;
/// every call runs on tokio's blocking pool, never on an executor thread.
/// Clones share one connection; open the file again for another.
///
/// # Exclusive claims
///
/// [`claim_stale`](ChangeLog::claim_stale) runs in a `BEGIN IMMEDIATE`
/// transaction: it takes the database's single write lock *before* reading,
/// so no other connection (in this or another process) can claim between its
/// selection of stale rows and their re-ownership. The update moves each row
/// to the next generation and resets its age, so the next claimer to get
/// the lock no longer finds it stale. Fenced calls are single conditional
/// statements on `(id, owner, generation)`.
///
/// # The store's clock
///
/// Times are read by SQLite inside the statements (`unixepoch('subsec')`),
/// from the clock of the machine that holds the file — the same for every
/// process that can open it. No process's own monotonic clock is stored.
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
    staleness_ms: i64,
    offset_ms: AtomicI64,
    conn: Mutex<Connection>,
}

impl SqliteChangeLog {
    /// A builder for the log in the database file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteChangeLogBuilder {
        SqliteChangeLogBuilder {
            path: path.as_ref().to_owned(),
            staleness: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(5),
            durability: Durability::default(),
            clock_offset: Duration::ZERO,
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Moves this handle's (and its clones') reading of the store clock
    /// forward by `by`: entries look `by` older to its claims, and its own
    /// writes are stamped `by` later.
    ///
    /// A testing hook: it makes entries stale without sleeping. Handles that
    /// share a file should agree on the offset in production (leave it 0).
    pub fn shift_clock(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.shared.offset_ms.fetch_add(by, Ordering::SeqCst);
    }

    /// Runs `f` with the connection on tokio's blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, ChangeLogError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Shared) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let mut conn = shared.conn.lock();
            f(&mut conn, &shared).map_err(storage)
        })
        .await
        .map_err(|_| ChangeLogError::WorkerUnavailable { backend: BACKEND })?
    }
}

impl Shared {
    fn offset(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
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
             VALUES (:owner, 1, {STORE_NOW_MS}, {STORE_NOW_MS}, :payload)"
        );
        self.run(move |conn, shared| {
            let mut stmt = conn.prepare_cached(&sql)?;
            stmt.execute(rusqlite::named_params! {
                ":owner": owner.as_str(),
                ":off": shared.offset(),
                ":payload": payload,
            })?;
            // The autocommit statement has committed (and, by the
            // configured durability, synced) when `execute` returns.
            let id = conn.last_insert_rowid();
            Ok(Fence::new(EntryId::new(to_u64(id)), owner, 1))
        })
        .await
    }

    async fn refresh(&self, fence: &Fence) -> Result<Ownership, ChangeLogError> {
        let fence = fence.clone();
        let sql = format!(
            "UPDATE leasehold_changelog SET refreshed_ms = max(refreshed_ms, {STORE_NOW_MS})
             WHERE id = :id AND owner = :owner AND generation = :generation
               AND quarantined IS NULL"
        );
        self.run(move |conn, shared| {
            // Conditional on the fence: a removed, claimed or quarantined
            // entry matches no row, so a late heartbeat can neither recreate
            // nor re-own it.
            let changed = conn
                .prepare_cached(&sql)?
                .execute(rusqlite::named_params! {
                    ":id": to_i64(fence.id().get()),
                    ":owner": fence.owner().as_str(),
                    ":generation": to_i64(fence.generation()),
                    ":off": shared.offset(),
                })?;
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
        self.run(move |conn, _| {
            let id = to_i64(fence.id().get());
            let deleted = conn
                .prepare_cached(
                    "DELETE FROM leasehold_changelog
                     WHERE id = ?1 AND owner = ?2 AND generation = ?3",
                )?
                .execute(params![
                    id,
                    fence.owner().as_str(),
                    to_i64(fence.generation())
                ])?;
            if deleted == 1 {
                return Ok(Removal::Removed);
            }
            // Nothing deleted: tell "already gone" from "someone else's now".
            // Ids are never reused, so an existing row is a later generation.
            let exists = conn
                .prepare_cached("SELECT 1 FROM leasehold_changelog WHERE id = ?1")?
                .exists(params![id])?;
            Ok(if exists {
                Removal::Fenced
            } else {
                Removal::Absent
            })
        })
        .await
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
        let now_sql = format!("SELECT {STORE_NOW_MS}");
        self.run(move |conn, shared| {
            // BEGIN IMMEDIATE takes the write lock before the selection: no
            // other connection, in any process, can claim (or refresh) between
            // our read of the stale rows and their re-ownership below.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The store's clock, read once for the whole claim.
            let now: i64 = tx.query_row(
                &now_sql,
                rusqlite::named_params! {":off": shared.offset()},
                |row| row.get(0),
            )?;
            let mut claimed = {
                let mut stmt = tx.prepare_cached(
                    "UPDATE leasehold_changelog
                     SET owner = ?1, generation = generation + 1, claims = claims + 1,
                         refreshed_ms = max(refreshed_ms, ?2)
                     WHERE id IN (
                         SELECT id FROM leasehold_changelog
                         WHERE quarantined IS NULL AND refreshed_ms <= ?2 - ?3
                         ORDER BY refreshed_ms, id
                         LIMIT ?4)
                     RETURNING id, generation, claims, payload, refreshed_ms",
                )?;
                let rows = stmt.query_map(
                    params![
                        owner.as_str(),
                        now,
                        shared.staleness_ms,
                        i64::try_from(max).unwrap_or(i64::MAX)
                    ],
                    |row| {
                        Ok((
                            row.get::<_, i64>(4)?,
                            ClaimedEntry {
                                fence: Fence::new(
                                    EntryId::new(to_u64(row.get(0)?)),
                                    owner.clone(),
                                    to_u64(row.get(1)?),
                                ),
                                claims: to_u32(row.get(2)?),
                                payload: row.get(3)?,
                            },
                        ))
                    },
                )?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            tx.commit()?;
            claimed.sort_by_key(|(_, entry)| entry.fence.id());
            Ok(claimed.into_iter().map(|(_, entry)| entry).collect())
        })
        .await
    }

    async fn quarantine(&self, fence: &Fence, reason: &str) -> Result<Ownership, ChangeLogError> {
        let fence = fence.clone();
        let reason = reason.to_owned();
        self.run(move |conn, _| {
            // Idempotent: quarantining again keeps the first reason.
            let changed = conn
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

    async fn get(&self, id: EntryId) -> Result<Option<EntryInfo>, ChangeLogError> {
        let sql = format!("{SELECT_INFO} WHERE id = :id");
        self.run(move |conn, shared| {
            conn.prepare_cached(&sql)?
                .query_row(
                    rusqlite::named_params! {":off": shared.offset(), ":id": to_i64(id.get())},
                    entry_info,
                )
                .optional()
        })
        .await
    }

    async fn list(&self) -> Result<Vec<EntryInfo>, ChangeLogError> {
        let sql = format!("{SELECT_INFO} ORDER BY id");
        self.run(move |conn, shared| {
            conn.prepare_cached(&sql)?
                .query_map(
                    rusqlite::named_params! {":off": shared.offset()},
                    entry_info,
                )?
                .collect()
        })
        .await
    }
}

const SELECT_INFO: &str = "SELECT id, owner, generation, claims, payload, quarantined,
        max(0, (CAST(unixepoch('subsec') * 1000 AS INTEGER) + :off) - refreshed_ms)
     FROM leasehold_changelog";

fn entry_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<EntryInfo> {
    let owner: String = row.get(1)?;
    let quarantined: Option<String> = row.get(5)?;
    Ok(EntryInfo {
        fence: Fence::new(
            EntryId::new(to_u64(row.get(0)?)),
            OwnerId::new(owner),
            to_u64(row.get(2)?),
        ),
        claims: to_u32(row.get(3)?),
        payload: row.get(4)?,
        state: match quarantined {
            None => EntryState::Active,
            Some(reason) => EntryState::Quarantined { reason },
        },
        age: Duration::from_millis(to_u64(row.get(6)?)),
    })
}
