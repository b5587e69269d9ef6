//! SQLite plumbing shared by the reference layer's durable stores (the
//! changelog and the scan checkpoint): opening a database file in WAL mode,
//! keeping each component's schema versioned in one `leasehold_schema`
//! table, so several components (and several processes) share a file
//! safely, classifying driver errors, and the group-committed write path
//! ([`GroupCommit`]).

mod group_commit;

pub(crate) use group_commit::{GroupCommit, Outcome};

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, MAIN_DB, OptionalExtension, TransactionBehavior, params};

use crate::store::failure::StoreFailure;

/// The `synchronous` setting: what a committed write survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Synchronous {
    /// Every commit fsynced: survives power loss.
    Full,
    /// Survives any process crash; may lose the last commits on power loss.
    Normal,
}

/// One component's tables, at one schema version.
#[derive(Debug)]
pub(crate) struct Schema {
    /// The component's row in `leasehold_schema`.
    pub(crate) component: &'static str,
    /// The version this crate writes and reads.
    pub(crate) version: i64,
    /// Statements creating the component's tables at `version`.
    pub(crate) create: &'static str,
    /// `upgrades[i]` moves the component's tables from version `i + 1` to
    /// `i + 2`; run in order, under the write lock, in the opening
    /// transaction.
    pub(crate) upgrades: &'static [&'static str],
    /// The component's tables, probed when the file is opened.
    pub(crate) tables: &'static [&'static str],
}

/// Classifies a driver error by its cause (see [`StoreFailure`]); the
/// error, with SQLite's message, is kept as the source.
impl From<rusqlite::Error> for StoreFailure {
    fn from(error: rusqlite::Error) -> Self {
        let Some(code) = error.sqlite_error_code() else {
            // Not from SQLite itself: a row that does not convert (a
            // damaged or foreign table), or a misuse of the API.
            return StoreFailure::Rejected(Box::new(error));
        };
        let source = Box::new(error);
        match code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => StoreFailure::Busy(source),
            ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::OutOfMemory
            | ErrorCode::OperationInterrupted
            | ErrorCode::OperationAborted
            | ErrorCode::SchemaChanged
            | ErrorCode::FileLockingProtocolFailed => StoreFailure::Unavailable(source),
            ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => StoreFailure::Corrupt(source),
            ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::AuthorizationForStatementDenied => StoreFailure::PermissionDenied(source),
            ErrorCode::CannotOpen | ErrorCode::NotFound | ErrorCode::NoLargeFileSupport => {
                StoreFailure::CannotOpen(source)
            }
            ErrorCode::TooBig => StoreFailure::TooBig(source),
            // `Unknown` is SQLITE_ERROR: a missing table or column, an SQL
            // error. Constraint and type errors, misuse: none heals itself.
            _ => StoreFailure::Rejected(source),
        }
    }
}

/// Whether `error` means another connection held the lock past the busy
/// timeout: a transient condition.
pub(crate) fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Opens (creating if needed) the database at `path` in WAL mode, creates
/// `schema`'s tables or checks their version, and checks that the file is
/// usable: writable, and with every table of `schema` readable. Blocks.
///
/// Switching a fresh file to WAL needs a moment of exclusive access, which
/// SQLite's busy handler does not always cover when several processes open
/// the file at once; busy failures are retried until `busy_timeout`.
pub(crate) fn open(
    path: &Path,
    busy_timeout: Duration,
    synchronous: Synchronous,
    schema: &Schema,
) -> Result<Connection, StoreFailure> {
    let in_path = |failure: StoreFailure| failure.context(format!("{}", path.display()));
    let mut conn = Connection::open(path).map_err(|error| in_path(error.into()))?;
    conn.busy_timeout(busy_timeout)?;
    let give_up = Instant::now() + busy_timeout;
    loop {
        match init(&mut conn, synchronous, schema) {
            Err(Init::Sqlite(error)) if is_busy(&error) && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(Init::Sqlite(error)) => return Err(in_path(error.into())),
            Err(Init::Failure(failure)) => return Err(in_path(failure)),
            Ok(()) => break,
        }
    }
    probe(&conn, schema).map_err(in_path)?;
    Ok(conn)
}

/// A second connection to a store that [`open`] already opened, for reads:
/// in WAL mode its reads never wait for the writer, and it can never write.
pub(crate) fn open_reader(path: &Path, busy_timeout: Duration) -> Result<Connection, StoreFailure> {
    let in_path = |failure: StoreFailure| failure.context(format!("{}", path.display()));
    let conn = Connection::open(path).map_err(|error| in_path(error.into()))?;
    conn.busy_timeout(busy_timeout)?;
    conn.execute_batch("PRAGMA query_only = 1")?;
    Ok(conn)
}

/// Why [`init`] failed: a driver error (maybe busy, then retried), or a
/// classified failure.
enum Init {
    Sqlite(rusqlite::Error),
    Failure(StoreFailure),
}

impl From<rusqlite::Error> for Init {
    fn from(error: rusqlite::Error) -> Self {
        Init::Sqlite(error)
    }
}

/// Refuses a file that opened but cannot be used, now rather than at the
/// first call: a read-only file (SQLite falls back to read-only access
/// without an error), and a schema whose version row is there but whose
/// tables are not (dropped, or damaged). Reads one row of each table: cheap
/// whatever the table's size.
fn probe(conn: &Connection, schema: &Schema) -> Result<(), StoreFailure> {
    if conn.is_readonly(MAIN_DB)? {
        return Err(StoreFailure::PermissionDenied(
            "the database file is read-only (file permissions, an immutable file, or a \
             read-only mount)"
                .into(),
        ));
    }
    for table in schema.tables {
        // Preparing finds a missing table or column; stepping reads the
        // table's root page, so a file truncated or garbled there fails now.
        let read = conn
            .prepare(&format!("SELECT * FROM {table} LIMIT 1"))
            .and_then(|mut statement| statement.query([])?.next().map(|_| ()));
        if let Err(error) = read {
            return Err(match StoreFailure::from(error) {
                // A missing table or column: the version row lies.
                StoreFailure::Rejected(source) => StoreFailure::Corrupt(source),
                other => other,
            }
            .context(format!(
                "the {} schema (version {}) is damaged: table {table} is unreadable",
                schema.component, schema.version
            )));
        }
    }
    Ok(())
}

fn init(conn: &mut Connection, synchronous: Synchronous, schema: &Schema) -> Result<(), Init> {
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Init::Failure(StoreFailure::Config(format!(
            "the database refused WAL mode (journal_mode is {mode}; a network file system?)"
        ))));
    }
    conn.execute_batch(match synchronous {
        Synchronous::Full => "PRAGMA synchronous = FULL;",
        Synchronous::Normal => "PRAGMA synchronous = NORMAL;",
    })?;
    // IMMEDIATE: the check and the creation happen under the write lock, so
    // two processes opening a fresh file cannot both create the tables.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS leasehold_schema (
             component TEXT PRIMARY KEY,
             version INTEGER NOT NULL
         );",
    )?;
    let found: Option<i64> = tx
        .query_row(
            "SELECT version FROM leasehold_schema WHERE component = ?1",
            params![schema.component],
            |row| row.get(0),
        )
        .optional()?;
    match found {
        Some(found) if found > schema.version => {
            return Err(Init::Failure(StoreFailure::SchemaTooNew {
                found,
                supported: schema.version,
            }));
        }
        Some(found) if found < schema.version => {
            let from = usize::try_from(found - 1).unwrap_or(0);
            for upgrade in schema.upgrades.iter().skip(from) {
                tx.execute_batch(upgrade)?;
            }
            tx.execute(
                "UPDATE leasehold_schema SET version = ?2 WHERE component = ?1",
                params![schema.component, schema.version],
            )?;
        }
        Some(_) => {}
        None => {
            tx.execute_batch(schema.create)?;
            tx.execute(
                "INSERT INTO leasehold_schema (component, version) VALUES (?1, ?2)",
                params![schema.component, schema.version],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}
