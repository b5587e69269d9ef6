//! [`SqliteProgressStore`]: scan checkpoints in an SQLite database file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::error::ProgressStoreError;
use super::progress::{
    Checkpoint, CheckpointWithGivenUp, ProgressStore, ScopeFingerprint, resume_from_row,
    resume_to_row,
};
use crate::store::sqlite::{self, GroupCommit, Outcome, Schema, Synchronous};
use crate::sync::Mutex;

const BACKEND: &str = "sqlite";

/// The progress table, at the schema version this crate writes and reads.
/// `position`: 0 = start, 1 = from `key` (inclusive), 2 = after `key`
/// (exclusive). `given_up`: the keys the scan gave up on, each a 4-byte
/// big-endian length and the key's bytes (version 2).
const SCHEMA: Schema = Schema {
    component: "scan_progress",
    version: 2,
    create: "CREATE TABLE leasehold_scan_progress (
                 scan TEXT PRIMARY KEY,
                 scope BLOB NOT NULL,
                 position INTEGER NOT NULL,
                 key BLOB,
                 given_up BLOB
             );",
    upgrades: &["ALTER TABLE leasehold_scan_progress ADD COLUMN given_up BLOB;"],
    tables: &["leasehold_scan_progress"],
};

/// The `given_up` column's form of a list of keys.
fn encode_given_up(keys: &[Vec<u8>]) -> Option<Vec<u8>> {
    if keys.is_empty() {
        return None;
    }
    let mut bytes = Vec::with_capacity(keys.iter().map(|key| key.len() + 4).sum());
    for key in keys {
        let len = u32::try_from(key.len()).expect("a key of 4 GiB or more cannot be stored");
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(key);
    }
    Some(bytes)
}

/// Reads back [`encode_given_up`]'s form; a truncated list is corrupt.
fn decode_given_up(bytes: Option<Vec<u8>>) -> Result<Vec<Vec<u8>>, ProgressStoreError> {
    let mut keys = Vec::new();
    let mut rest = bytes.as_deref().unwrap_or_default();
    while !rest.is_empty() {
        let corrupt = || ProgressStoreError::Corrupt {
            reason: format!("given-up key {} is truncated", keys.len()),
        };
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| corrupt())?;
        if tail.len() < len {
            return Err(corrupt());
        }
        let (key, tail) = tail.split_at(len);
        keys.push(key.to_vec());
        rest = tail;
    }
    Ok(keys)
}

/// How long a call waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A [`ProgressStore`] in an SQLite database file: durable across process
/// crashes, shared by the processes of one machine.
///
/// Each store handle is bound to one *scan name*; a file can hold the
/// checkpoints of many scans (one row each, in table
/// `leasehold_scan_progress`). The file may be the one that holds a
/// `SqliteChangeLog`: the tables do
/// not overlap, and both record their schema version in `leasehold_schema`.
///
/// The database runs in WAL mode with `synchronous = FULL`: a `save` that
/// returned survives power loss. Writes (`save`, `clear`) go to a writer
/// thread that commits the writes of concurrent callers together, one fsync
/// for all of them, and answers each once its write has committed; reads
/// run on tokio's blocking pool. Never on an executor thread. Clones share
/// the writer.
///
/// # Examples
///
/// ```
/// use leasehold::recovery::{Checkpoint, ProgressStore, ResumePoint, ScopeFingerprint, SqliteProgressStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("node.db");
/// let store = SqliteProgressStore::open(&path, "blob-recovery").await?;
/// let checkpoint = Checkpoint { scope: ScopeFingerprint::from("shards 1,4"), resume: ResumePoint::After(vec![7]) };
/// store.save(checkpoint.clone()).await?;
/// drop(store);
/// // A new process opens the file and finds the checkpoint.
/// let reopened = SqliteProgressStore::open(&path, "blob-recovery").await?;
/// assert_eq!(reopened.load().await?, Some(checkpoint));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteProgressStore {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    scan: String,
    /// The write path, group-committed.
    writer: GroupCommit,
    /// Reads: a WAL reader, never waiting for the writer.
    reader: Mutex<Connection>,
}

impl SqliteProgressStore {
    /// Opens (creating if needed) the database at `path` and the progress
    /// table, for the scan named `scan`, on a blocking thread.
    ///
    /// # Errors
    ///
    /// The file is checked here, not at the first call. Permanent:
    /// [`ProgressStoreError::CannotOpen`] (a missing directory),
    /// [`ProgressStoreError::CorruptDatabase`] (not a database, damaged, or
    /// the progress table is gone), [`ProgressStoreError::PermissionDenied`]
    /// (a read-only file or directory), [`ProgressStoreError::SchemaTooNew`]
    /// (a file written by a newer version of this crate),
    /// [`ProgressStoreError::Config`] (a file system that refuses WAL mode).
    /// Transient: [`ProgressStoreError::Backend`] (locked past the busy
    /// timeout, I/O errors).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a dropped open leaves at most an empty table behind.
    pub async fn open(
        path: impl AsRef<Path>,
        scan: impl Into<String>,
    ) -> Result<Self, ProgressStoreError> {
        let (path, scan) = (path.as_ref().to_owned(), scan.into());
        tokio::task::spawn_blocking(move || Self::open_blocking(path, scan))
            .await
            .map_err(worker_gone)?
    }

    /// [`open`](Self::open) for synchronous callers. Blocks the calling
    /// thread.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_blocking(
        path: impl AsRef<Path>,
        scan: impl Into<String>,
    ) -> Result<Self, ProgressStoreError> {
        let path = path.as_ref().to_owned();
        let failed = |failure| ProgressStoreError::from_failure(BACKEND, failure);
        let conn = sqlite::open(&path, BUSY_TIMEOUT, Synchronous::Full, &SCHEMA).map_err(failed)?;
        let reader = sqlite::open_reader(&path, BUSY_TIMEOUT).map_err(failed)?;
        let writer = GroupCommit::start(conn, BUSY_TIMEOUT, false, "leasehold-progress").map_err(
            |error| ProgressStoreError::Backend {
                backend: BACKEND,
                source: format!("cannot start the writer thread: {error}").into(),
            },
        )?;
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                scan: scan.into(),
                writer,
                reader: Mutex::new(reader),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The scan whose checkpoint this handle reads and writes.
    pub fn scan(&self) -> &str {
        &self.shared.scan
    }

    /// Runs `f` with the read connection and scan name on tokio's
    /// blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, ProgressStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> Result<T, ProgressStoreError> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let conn = shared.reader.lock();
            f(&conn, &shared.scan)
        })
        .await
        .map_err(worker_gone)?
    }

    /// Runs `f` on the write path: in a group-committed transaction,
    /// answered once it committed.
    async fn write<F>(&self, f: F) -> Result<(), ProgressStoreError>
    where
        F: FnOnce(&Transaction<'_>, &str) -> Result<(), rusqlite::Error> + Send + 'static,
    {
        let scan = self.shared.scan.clone();
        let outcome = self.shared.writer.submit(move |tx| f(tx, &scan)).await;
        match outcome {
            Outcome::Done(result) => result.map_err(backend),
            Outcome::NotRun(error) | Outcome::NotCommitted(error) => Err(backend(error)),
            Outcome::Panicked(panic) => std::panic::resume_unwind(panic),
            Outcome::WriterGone => Err(ProgressStoreError::Backend {
                backend: BACKEND,
                source: "the writer thread is gone".into(),
            }),
        }
    }
}

/// Maps a driver error by its cause: lock timeouts and I/O errors are
/// transient ([`ProgressStoreError::Backend`]); a corrupt file,
/// permissions, a missing path or a value too big are permanent.
fn backend(error: rusqlite::Error) -> ProgressStoreError {
    ProgressStoreError::from_failure(BACKEND, error.into())
}

fn worker_gone(error: tokio::task::JoinError) -> ProgressStoreError {
    ProgressStoreError::Backend {
        backend: BACKEND,
        source: format!("the blocking worker is unavailable: {error}").into(),
    }
}

impl ProgressStore for SqliteProgressStore {
    async fn load(&self) -> Result<Option<Checkpoint>, ProgressStoreError> {
        Ok(self
            .load_with_given_up()
            .await?
            .map(|(checkpoint, _)| checkpoint))
    }

    async fn save(&self, checkpoint: Checkpoint) -> Result<(), ProgressStoreError> {
        self.save_with_given_up(checkpoint, Vec::new()).await
    }

    async fn clear(&self) -> Result<(), ProgressStoreError> {
        self.write(|tx, scan| {
            tx.prepare_cached("DELETE FROM leasehold_scan_progress WHERE scan = ?1")?
                .execute(params![scan])?;
            Ok(())
        })
        .await
    }

    fn keeps_given_up(&self) -> bool {
        true
    }

    async fn load_with_given_up(
        &self,
    ) -> Result<Option<CheckpointWithGivenUp>, ProgressStoreError> {
        type Row = (Vec<u8>, i64, Option<Vec<u8>>, Option<Vec<u8>>);
        self.read(|conn, scan| {
            let row: Option<Row> = conn
                .query_row(
                    "SELECT scope, position, key, given_up FROM leasehold_scan_progress
                     WHERE scan = ?1",
                    params![scan],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                )
                .optional()
                .map_err(backend)?;
            row.map(|(scope, position, key, given_up)| {
                let checkpoint = Checkpoint {
                    scope: ScopeFingerprint::new(scope),
                    resume: resume_from_row(position, key)?,
                };
                Ok((checkpoint, decode_given_up(given_up)?))
            })
            .transpose()
        })
        .await
    }

    async fn save_with_given_up(
        &self,
        checkpoint: Checkpoint,
        given_up: Vec<Vec<u8>>,
    ) -> Result<(), ProgressStoreError> {
        let given_up = encode_given_up(&given_up);
        self.write(move |tx, scan| {
            let (position, key) = resume_to_row(checkpoint.resume);
            tx.prepare_cached(
                "INSERT INTO leasehold_scan_progress (scan, scope, position, key, given_up)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (scan) DO UPDATE
                 SET scope = excluded.scope, position = excluded.position, key = excluded.key,
                     given_up = excluded.given_up",
            )?
            .execute(params![
                scan,
                checkpoint.scope.as_bytes(),
                position,
                key,
                given_up
            ])?;
            Ok(())
        })
        .await
    }
}

impl fmt::Debug for SqliteProgressStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteProgressStore")
            .field("path", &self.shared.path)
            .field("scan", &self.shared.scan)
            .finish()
    }
}
