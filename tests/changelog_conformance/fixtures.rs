//! One fixture per backend: a fresh store, handles on it, and store time.

use std::sync::Arc;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use std::sync::Mutex;
use std::time::Duration;

#[cfg(feature = "sqlite")]
use leasehold::changelog::SqliteChangeLog;
use leasehold::changelog::{BoxError, ChangeLog, Fence, FencedCommitError, MemoryChangeLog};
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

    /// Ages every entry by `by` as every handle sees it: each handle first
    /// looks at the entries (the SQL backends judge staleness on what a
    /// handle has observed, on its own clock), then the clock moves.
    async fn advance(&self, by: Duration);

    /// A fenced commit on `log` with `fence` that records `marker` in a
    /// table of the same store (in the same transaction as the fence check).
    async fn commit_marker(
        &self,
        log: &Self::Log,
        fence: &Fence,
        marker: &str,
    ) -> Result<(), FencedCommitError<BoxError>>;

    /// The markers committed so far, sorted.
    async fn markers(&self) -> Vec<String>;

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
    markers: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Fixture for MemoryFixture {
    type Log = MemoryChangeLog;

    async fn new(staleness: Duration) -> Self {
        let clock = ManualClock::new();
        let log = MemoryChangeLog::new(Arc::new(clock.clone()), staleness);
        MemoryFixture {
            clock,
            log,
            markers: Arc::default(),
        }
    }

    async fn handle(&self) -> MemoryChangeLog {
        self.log.clone()
    }

    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    async fn commit_marker(
        &self,
        log: &MemoryChangeLog,
        fence: &Fence,
        marker: &str,
    ) -> Result<(), FencedCommitError<BoxError>> {
        log.commit_fenced(fence, || {
            self.markers.lock().unwrap().push(marker.to_owned());
            Ok(())
        })
        .await
    }

    async fn markers(&self) -> Vec<String> {
        let mut markers = self.markers.lock().unwrap().clone();
        markers.sort();
        markers
    }
}

/// Lets every handle observe the entries, then moves the shared clock.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
async fn observe_then_advance<L: ChangeLog + Clone>(
    handles: &Mutex<Vec<L>>,
    clock: &ManualClock,
    by: Duration,
) {
    let handles = handles.lock().unwrap().clone();
    for handle in handles {
        handle.list().await.expect("observe the entries");
    }
    clock.advance(by);
}

#[cfg(feature = "sqlite")]
/// `SqliteChangeLog` in a temporary directory; each handle is a new
/// connection, and all handles measure staleness on one manual clock.
pub struct SqliteFixture {
    dir: tempfile::TempDir,
    staleness: Duration,
    clock: ManualClock,
    handles: Mutex<Vec<SqliteChangeLog>>,
}

#[cfg(feature = "sqlite")]
impl Fixture for SqliteFixture {
    type Log = SqliteChangeLog;

    async fn new(staleness: Duration) -> Self {
        SqliteFixture {
            dir: tempfile::tempdir().expect("temp dir"),
            staleness,
            clock: ManualClock::new(),
            handles: Mutex::new(Vec::new()),
        }
    }

    async fn handle(&self) -> SqliteChangeLog {
        let log = SqliteChangeLog::builder(self.dir.path().join("changelog.db"))
            .staleness(self.staleness)
            .clock(Arc::new(self.clock.clone()))
            .open()
            .await
            .expect("open sqlite changelog");
        self.handles.lock().unwrap().push(log.clone());
        log
    }

    async fn advance(&self, by: Duration) {
        observe_then_advance(&self.handles, &self.clock, by).await;
    }

    async fn commit_marker(
        &self,
        log: &SqliteChangeLog,
        fence: &Fence,
        marker: &str,
    ) -> Result<(), FencedCommitError<BoxError>> {
        let marker = marker.to_owned();
        log.commit_fenced(fence, move |tx| {
            tx.execute_batch("CREATE TABLE IF NOT EXISTS markers (name TEXT NOT NULL)")?;
            tx.execute("INSERT INTO markers VALUES (?1)", [marker])?;
            Ok::<_, BoxError>(())
        })
        .await
    }

    async fn markers(&self) -> Vec<String> {
        let conn = rusqlite::Connection::open(self.dir.path().join("changelog.db")).unwrap();
        let Ok(mut stmt) = conn.prepare("SELECT name FROM markers ORDER BY name") else {
            return Vec::new(); // no table: nothing committed yet
        };
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }
}

#[cfg(feature = "postgres")]
/// `PostgresChangeLog` in a fresh schema of the `LEASEHOLD_PG_URL` database
/// (dropped at the end); each handle is a separate pool, and store time is
/// measured on one manual clock, as for SQLite.
pub struct PostgresFixture {
    url: String,
    schema: String,
    staleness: Duration,
    clock: ManualClock,
    handles: Mutex<Vec<leasehold::changelog::PostgresChangeLog>>,
    markers_created: tokio::sync::Mutex<bool>,
}

#[cfg(feature = "postgres")]
impl Fixture for PostgresFixture {
    type Log = leasehold::changelog::PostgresChangeLog;

    async fn new(staleness: Duration) -> Self {
        PostgresFixture {
            url: crate::pg_support::url("conformance").expect("checked by `available`"),
            schema: crate::pg_support::fresh_schema("lh_conformance"),
            staleness,
            clock: ManualClock::new(),
            handles: Mutex::new(Vec::new()),
            markers_created: tokio::sync::Mutex::new(false),
        }
    }

    async fn handle(&self) -> Self::Log {
        let log = leasehold::changelog::PostgresChangeLog::builder(&self.url)
            .schema(&self.schema)
            .staleness(self.staleness)
            .clock(Arc::new(self.clock.clone()))
            .pool_size(2)
            .open()
            .await
            .expect("open postgres changelog");
        self.handles.lock().unwrap().push(log.clone());
        log
    }

    async fn advance(&self, by: Duration) {
        observe_then_advance(&self.handles, &self.clock, by).await;
    }

    async fn commit_marker(
        &self,
        log: &Self::Log,
        fence: &Fence,
        marker: &str,
    ) -> Result<(), FencedCommitError<BoxError>> {
        let table = format!("\"{}\".markers", self.schema);
        {
            // Created once, outside the fenced transactions that use it.
            let mut created = self.markers_created.lock().await;
            if !*created {
                let client = log.client().await.unwrap();
                client
                    .batch_execute(&format!(
                        "CREATE TABLE IF NOT EXISTS {table} (name TEXT NOT NULL)"
                    ))
                    .await
                    .unwrap();
                *created = true;
            }
        }
        let marker = marker.to_owned();
        log.commit_fenced(fence, move |tx| {
            Box::pin(async move {
                tx.execute(&format!("INSERT INTO {table} VALUES ($1)"), &[&marker])
                    .await?;
                Ok::<_, BoxError>(())
            })
        })
        .await
    }

    async fn markers(&self) -> Vec<String> {
        let Some(log) = self.handles.lock().unwrap().first().cloned() else {
            return Vec::new();
        };
        let client = log.client().await.unwrap();
        match client
            .query(
                &format!("SELECT name FROM \"{}\".markers ORDER BY name", self.schema),
                &[],
            )
            .await
        {
            Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
            Err(_) => Vec::new(), // no table: nothing committed yet
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
