//! SQLite plumbing shared by the reference layer's durable stores (the
//! changelog and the scan checkpoint): opening a database file in WAL mode,
//! and keeping each component's schema versioned in one `leasehold_schema`
//! table, so several components (and several processes) share a file safely.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

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
}

/// Why a database could not be opened for a component.
#[derive(Debug)]
pub(crate) enum OpenError {
    Sqlite(rusqlite::Error),
    /// The database refused WAL mode (e.g. a network file system).
    NotWal {
        mode: String,
    },
    /// The file holds the component at a version newer than this crate's.
    SchemaTooNew {
        found: i64,
        supported: i64,
    },
}

impl From<rusqlite::Error> for OpenError {
    fn from(error: rusqlite::Error) -> Self {
        OpenError::Sqlite(error)
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

/// Opens (creating if needed) the database at `path` in WAL mode, and
/// creates `schema`'s tables or checks their version. Blocks.
///
/// Switching a fresh file to WAL needs a moment of exclusive access, which
/// SQLite's busy handler does not always cover when several processes open
/// the file at once; busy failures are retried until `busy_timeout`.
pub(crate) fn open(
    path: &Path,
    busy_timeout: Duration,
    synchronous: Synchronous,
    schema: &Schema,
) -> Result<Connection, OpenError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(busy_timeout)?;
    let give_up = Instant::now() + busy_timeout;
    loop {
        match init(&mut conn, synchronous, schema) {
            Err(OpenError::Sqlite(error)) if is_busy(&error) && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.map(|()| conn),
        }
    }
}

fn init(conn: &mut Connection, synchronous: Synchronous, schema: &Schema) -> Result<(), OpenError> {
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal { mode });
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
            return Err(OpenError::SchemaTooNew {
                found,
                supported: schema.version,
            });
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
