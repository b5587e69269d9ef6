//! One fixture per backend: a fresh store, handles on it, and store time.

use std::sync::Arc;
#[cfg(feature = "sqlite")]
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
