//! One fixture per backend: a fresh store, handles on it, and store time.

use std::sync::Arc;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use std::sync::Mutex;
use std::time::Duration;

#[cfg(feature = "sqlite")]
use leasehold::changelog::SqliteChangeLog;
use leasehold::changelog::{ChangeLog, MemoryChangeLog};
use leasehold::clock::ManualClock;

/// A fresh, empty store of one backend.
#[allow(async_fn_in_trait)] // test-only trait, awaited by the tests themselves
pub trait Fixture: Sized + Send + Sync + 'static {
    /// The backend's log handle.
    type Log: ChangeLog + Clone;

    /// A fresh, empty store whose entries go stale after `staleness`.
    async fn new(staleness: Duration) -> Self;

    /// A handle on the store: a separate connection where the backend has
    /// connections, so concurrent handles really race.
    async fn handle(&self) -> Self::Log;

    /// Moves the store's clock forward by `by`, as every handle sees it.
    fn advance(&self, by: Duration);

    /// Whether the backend can run here (a server-backed fixture without a
    /// server says so loudly and returns `false`, or panics where the
    /// server is required).
    fn available(_test: &str) -> bool {
        true
    }
}

/// `MemoryChangeLog` on a `ManualClock`; handles are clones.
pub struct MemoryFixture {
    clock: ManualClock,
    log: MemoryChangeLog,
}

impl Fixture for MemoryFixture {
    type Log = MemoryChangeLog;

    async fn new(staleness: Duration) -> Self {
        let clock = ManualClock::new();
        let log = MemoryChangeLog::new(Arc::new(clock.clone()), staleness);
        MemoryFixture { clock, log }
    }

    async fn handle(&self) -> MemoryChangeLog {
        self.log.clone()
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

#[cfg(feature = "sqlite")]
/// `SqliteChangeLog` in a temporary directory; each handle is a new
/// connection, and store time is moved by each handle's clock offset.
pub struct SqliteFixture {
    dir: tempfile::TempDir,
    staleness: Duration,
    offset: Mutex<Duration>,
    handles: Mutex<Vec<SqliteChangeLog>>,
}

#[cfg(feature = "sqlite")]
impl Fixture for SqliteFixture {
    type Log = SqliteChangeLog;

    async fn new(staleness: Duration) -> Self {
        SqliteFixture {
            dir: tempfile::tempdir().expect("temp dir"),
            staleness,
            offset: Mutex::new(Duration::ZERO),
            handles: Mutex::new(Vec::new()),
        }
    }

    async fn handle(&self) -> SqliteChangeLog {
        let offset = *self.offset.lock().unwrap();
        let log = SqliteChangeLog::builder(self.dir.path().join("changelog.db"))
            .staleness(self.staleness)
            .clock_offset(offset)
            .open()
            .await
            .expect("open sqlite changelog");
        self.handles.lock().unwrap().push(log.clone());
        log
    }

    fn advance(&self, by: Duration) {
        // Hold the offset lock so a handle opened concurrently gets the same
        // view of time as the existing ones.
        let mut offset = self.offset.lock().unwrap();
        *offset += by;
        for handle in self.handles.lock().unwrap().iter() {
            handle.shift_clock(by);
        }
    }
}

#[cfg(feature = "postgres")]
/// `PostgresChangeLog` in a fresh schema of the `LEASEHOLD_PG_URL` database
/// (dropped at the end); each handle is a separate pool, and store time is
/// moved by each handle's clock offset, as for SQLite.
pub struct PostgresFixture {
    url: String,
    schema: String,
    staleness: Duration,
    offset: Mutex<Duration>,
    handles: Mutex<Vec<leasehold::changelog::PostgresChangeLog>>,
}

#[cfg(feature = "postgres")]
impl Fixture for PostgresFixture {
    type Log = leasehold::changelog::PostgresChangeLog;

    async fn new(staleness: Duration) -> Self {
        PostgresFixture {
            url: crate::pg_support::url("conformance").expect("checked by `available`"),
            schema: crate::pg_support::fresh_schema("lh_conformance"),
            staleness,
            offset: Mutex::new(Duration::ZERO),
            handles: Mutex::new(Vec::new()),
        }
    }

    async fn handle(&self) -> Self::Log {
        let offset = *self.offset.lock().unwrap();
        let log = leasehold::changelog::PostgresChangeLog::builder(&self.url)
            .schema(&self.schema)
            .staleness(self.staleness)
            .clock_offset(offset)
            .pool_size(2)
            .open()
            .await
            .expect("open postgres changelog");
        self.handles.lock().unwrap().push(log.clone());
        log
    }

    fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock().unwrap();
        *offset += by;
        for handle in self.handles.lock().unwrap().iter() {
            handle.shift_clock(by);
        }
    }

    fn available(test: &str) -> bool {
        crate::pg_support::url(&format!("changelog conformance (postgres) {test}")).is_some()
    }
}

#[cfg(feature = "postgres")]
impl Drop for PostgresFixture {
    fn drop(&mut self) {
        crate::pg_support::drop_schema(&self.url, &self.schema);
    }
}
