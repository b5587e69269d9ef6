//! A two-tier object store that survives `kill -9`, frozen processes and
//! stepped clocks: the crate's main demonstration of the write-ahead
//! changelog, fenced commits and continuous recovery.
//!
//! Each object lives in two tiers: a metadata row (object -> blob name) and
//! the blob itself, a file under `blobs/`. A write must never leave a blob
//! that no metadata references (an orphan, leaked forever) nor metadata
//! pointing to a missing blob (a dangling reference: data loss). Writers
//! therefore:
//!
//! 1. record `{object, new blob, old blob}` in the changelog, durably,
//!    before touching anything — a [`ChangeGuard`] whose heartbeat keeps
//!    the entry alive;
//! 2. write the new blob file;
//! 3. compare-and-swap the metadata row to the new blob *through the
//!    store's fence* ([`ChangeGuard::commit_fenced`]): the CAS runs in one
//!    transaction with the check that the writer's changelog entry is still
//!    its own, so the store refuses it once recovery has claimed the entry
//!    (the guard's validity is only the early, cheap refusal);
//! 4. clean up (delete whichever of the two blobs the metadata does not
//!    reference) and remove the entry. A commit whose outcome the writer
//!    does not know (cut off at its validity deadline, or the store failed
//!    while committing) is settled with the store first. A writer whose
//!    commit was refused for good deletes its own new blob: if it was paused
//!    before the blob reached the disk, recovery may have cleaned up before
//!    the file existed. (A writer *killed* right after such a late write
//!    leaks that one file, an orphan, never a dangling reference; a real
//!    store sweeps unreferenced blobs older than the staleness threshold.)
//!
//! The changelog backend is chosen at run time (an
//! [`AnyChangeLog`](leasehold::changelog::AnyChangeLog)). The metadata tables live in the changelog's own database, so that the
//! fence check and the CAS can be one transaction: `changelog.db` in the
//! store directory (SQLite, one file), or the changelog's PostgreSQL schema
//! with `--postgres`.
//!
//! Writers that crash or freeze leave their entry behind; a [`RecoveryLoop`]
//! in any process sees its heartbeat stop, claims it — exactly one claimer
//! per entry, which fences the writer out — and runs the same idempotent
//! cleanup, reading the metadata from the store. Staleness is judged by each
//! claimer on its own monotonic clock, never by comparing wall clocks.
//!
//! Run `cargo run --release --features sqlite --example tiered_store` for the demonstration:
//! writer processes killed with SIGKILL at random points, stalled
//! heartbeats, a recovery loop, a progress line, and a final report whose
//! orphan and dangling counts must be 0 (else it exits 1). SIGINT or
//! SIGTERM stops the demo's writer processes, then the demo (exit status
//! 130 or 143); `--help` prints the usage, and an unknown option or a bad
//! value is an error with exit status 2. With the `tracing` feature,
//! `RUST_LOG=leasehold=info` (any `tracing-subscriber` filter) prints the
//! crate's events on stderr: claims, cleanups, quarantines, lost validity.
//! Subcommands run each role as its
//! own process (the crash-torture test drives them):
//!
//! ```text
//! tiered_store [demo] [--dir D] [--writers 3] [--kills 20] [--stall-every 25]
//! tiered_store writer   --dir D [--objects 64] [--count N] [--stall-every N] [--seed S]
//!                       [--write-ms N] [--announce-commits] [--gate-commits]
//! tiered_store recovery --dir D [--until-empty] [--timeout-s 120] [--batch 50]
//! tiered_store verify   --dir D
//! ```
//!
//! For the fault tests: a writer stops between two writes on SIGTERM and
//! prints `writer: committed=.. refused=.. conflicts=.. in_doubt=.. errors=..`;
//! recovery stops on SIGTERM and prints `recovery: claimed=.. cleaned=..`.
//! `--announce-commits` prints `commit-start entry=ID object=O blob=B` as a
//! commit starts and `commit-outcome ... outcome=committed|refused|conflict|in_doubt`
//! after it; `--gate-commits` prints `commit-ready entry=ID object=O` before
//! each commit and waits for a line on stdin (so a test can take a lock the
//! commit must wait on); `--write-ms N` makes each blob write N ms slower.
//!
//! Every subcommand also takes `--postgres URL [--pg-schema NAME]` (feature
//! `postgres`): the changelog and the metadata tables then live in
//! PostgreSQL (in schema `NAME`, default `tiered_store`) instead of
//! `changelog.db`, as they would when the writers and recoverers run on
//! several machines (the blobs stay local files here). Each run over
//! PostgreSQL should get its own schema (or an empty one), since `verify`
//! counts every entry in it.
//!
//! [`ChangeGuard`]: leasehold::changelog::ChangeGuard
//! [`ChangeGuard::commit_fenced`]: leasehold::changelog::ChangeGuard::commit_fenced
//! [`RecoveryLoop`]: leasehold::recovery::RecoveryLoop

use std::collections::{HashMap, HashSet};
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[cfg(feature = "postgres")]
use leasehold::changelog::PostgresChangeLog;
use leasehold::changelog::{
    Advanced, AnyChangeLog, Attempt, BoxError, ChangeLog, ChangeLogError, ChangeManager,
    ClaimedEntry, Cleanup, CommitError, DecodeError, EntryId, EntryInfo, EntryState, Fence,
    FencedCommitError, FieldReader, FieldWriter, FinishError, OwnerId, Ownership, Payload, Phase,
    Removal, SqliteChangeLog,
};
use leasehold::heartbeat::HeartbeatConfig;
use leasehold::recovery::{RecoveryConfig, RecoveryLoop};
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, OptionalExtension, params};

/// An entry goes stale once a claimer has seen its heartbeat unchanged for
/// 1 s (on the claimer's own monotonic clock).
const STALENESS: Duration = Duration::from_millis(1000);
/// Writers refresh every 150 ms; ttl 3 × 150 = 450 ms, minus a 50 ms margin:
/// a writer whose heartbeat stalls stops committing (its validity) well
/// before a claimer may call its entry stale; the store's fence covers the
/// writer that pauses after that check.
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(150);
const HEARTBEAT_MARGIN: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------- payload --

/// What a write is about to do: the changelog entry's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Intent {
    object: String,
    new_blob: String,
    old_blob: Option<String>,
}

impl Payload for Intent {
    fn encode(&self) -> Vec<u8> {
        let mut w = FieldWriter::new(b"tiered-store/intent/1");
        w.str(&self.object)
            .str(&self.new_blob)
            .opt_str(self.old_blob.as_deref());
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = FieldReader::new(bytes, b"tiered-store/intent/1")?;
        let intent = Intent {
            object: r.string()?,
            new_blob: r.string()?,
            old_blob: r.opt_string()?,
        };
        r.finish()?;
        Ok(intent)
    }
}

// ------------------------------------------------------------ the 2 tiers --

/// The store: blob files under `blobs/`, and the metadata tables (`objects`,
/// `counters`) in the changelog's own database — `changelog.db` in the
/// store directory, or the changelog's PostgreSQL schema — so that a commit
/// and the check that its changelog entry is still the writer's are one
/// transaction.
#[derive(Clone, Debug)]
struct Store {
    dir: PathBuf,
    log: AnyChangeLog,
    /// SQLite: our own connection to the changelog's file, for reads and
    /// counters (commits go through the log's `commit_fenced`).
    sqlite: Option<Arc<Mutex<Connection>>>,
}

/// The metadata CAS found the object changed since the writer read it.
#[derive(Debug)]
enum CasError {
    Conflict,
    Db(BoxError),
}

impl std::fmt::Display for CasError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CasError::Conflict => f.write_str("conflict: the object changed since it was read"),
            CasError::Db(error) => write!(f, "metadata: {error}"),
        }
    }
}

impl std::error::Error for CasError {}

const SQLITE_TABLES: &str = "CREATE TABLE IF NOT EXISTS objects (
         name TEXT PRIMARY KEY,
         blob TEXT NOT NULL,
         version INTEGER NOT NULL
     );
     CREATE TABLE IF NOT EXISTS counters (
         name TEXT PRIMARY KEY,
         value INTEGER NOT NULL
     );
     CREATE TABLE IF NOT EXISTS commits (blob TEXT PRIMARY KEY);";

impl Store {
    /// Opens (creating if needed) the store `args` name: the changelog in
    /// `changelog.db` in the store directory, or in PostgreSQL with
    /// `--postgres URL`; the metadata tables beside it.
    async fn open(args: &Args) -> Result<Self, BoxError> {
        let dir = args.dir()?;
        std::fs::create_dir_all(dir.join("blobs"))?;
        let log = match args.get("postgres") {
            None => AnyChangeLog::Sqlite(
                SqliteChangeLog::builder(dir.join("changelog.db"))
                    .staleness(STALENESS)
                    .open()
                    .await?,
            ),
            #[cfg(feature = "postgres")]
            Some(url) => AnyChangeLog::Postgres(
                PostgresChangeLog::builder(url)
                    .schema(args.get("pg-schema").unwrap_or("tiered_store"))
                    .staleness(STALENESS)
                    .open()
                    .await?,
            ),
            #[cfg(not(feature = "postgres"))]
            Some(_) => {
                return Err("--postgres needs the example built with `--features postgres`".into());
            }
        };
        let sqlite = match &log {
            AnyChangeLog::Sqlite(log) => {
                let path = log.path().to_owned();
                let conn = tokio::task::spawn_blocking(move || {
                    let conn = Connection::open(path)?;
                    conn.busy_timeout(Duration::from_secs(5))?;
                    conn.execute_batch(SQLITE_TABLES)?;
                    Ok::<_, rusqlite::Error>(conn)
                })
                .await??;
                Some(Arc::new(Mutex::new(conn)))
            }
            #[cfg(feature = "postgres")]
            AnyChangeLog::Postgres(log) => {
                let mut client = log.client().await?;
                let tx = client.transaction().await?;
                // Serialized: concurrent CREATE TABLE IF NOT EXISTS can fail.
                tx.batch_execute(&format!(
                    "SELECT pg_advisory_xact_lock(7243190551);
                     CREATE TABLE IF NOT EXISTS {objects} (
                         name TEXT PRIMARY KEY,
                         blob TEXT NOT NULL,
                         version BIGINT NOT NULL
                     );
                     CREATE TABLE IF NOT EXISTS {counters} (
                         name TEXT PRIMARY KEY,
                         value BIGINT NOT NULL
                     );
                     CREATE TABLE IF NOT EXISTS {commits} (blob TEXT PRIMARY KEY);",
                    objects = pg_table(log, "objects"),
                    counters = pg_table(log, "counters"),
                    commits = pg_table(log, "commits"),
                ))
                .await?;
                tx.commit().await?;
                None
            }
            _ => unreachable!("the store opens SQLite or PostgreSQL"),
        };
        Ok(Store { dir, log, sqlite })
    }

    fn blob_path(&self, blob: &str) -> PathBuf {
        self.dir.join("blobs").join(blob)
    }

    /// Runs `f` on our SQLite connection, on the blocking pool.
    async fn sqlite<T: Send + 'static>(
        conn: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, BoxError> {
        let conn = Arc::clone(conn);
        let out = tokio::task::spawn_blocking(move || f(&conn.lock().unwrap())).await?;
        Ok(out?)
    }

    /// The blob `object` references, read from the store.
    async fn current(&self, object: &str) -> Result<Option<String>, BoxError> {
        let object = object.to_owned();
        match (&self.log, &self.sqlite) {
            (AnyChangeLog::Sqlite(_), Some(conn)) => {
                Self::sqlite(conn, move |c| {
                    c.query_row("SELECT blob FROM objects WHERE name = ?1", [object], |r| {
                        r.get(0)
                    })
                    .optional()
                })
                .await
            }
            #[cfg(feature = "postgres")]
            (AnyChangeLog::Postgres(log), _) => {
                let client = log.client().await?;
                let sql = format!(
                    "SELECT blob FROM {} WHERE name = $1",
                    pg_table(log, "objects")
                );
                let row = client.query_opt(&sql, &[&object]).await?;
                Ok(row.map(|r| r.get(0)))
            }
            _ => unreachable!("SQLite stores have a connection"),
        }
    }

    /// Whether the commit that publishes `blob` landed (final once its
    /// fence is dead: claimed, removed, or advanced by `finish`).
    async fn landed(&self, blob: &str) -> Result<bool, BoxError> {
        let blob = blob.to_owned();
        match (&self.log, &self.sqlite) {
            (AnyChangeLog::Sqlite(_), Some(conn)) => {
                Self::sqlite(conn, move |c| {
                    c.prepare_cached("SELECT 1 FROM commits WHERE blob = ?1")?
                        .exists([blob])
                })
                .await
            }
            #[cfg(feature = "postgres")]
            (AnyChangeLog::Postgres(log), _) => {
                let client = log.client().await?;
                let sql = format!("SELECT 1 FROM {} WHERE blob = $1", pg_table(log, "commits"));
                Ok(client.query_opt(&sql, &[&blob]).await?.is_some())
            }
            _ => unreachable!("SQLite stores have a connection"),
        }
    }

    /// Adds 1 to `counter`. Retries while the store is busy (bounded): the
    /// torture tests compare these counters with what the writers saw, so a
    /// statistic must not be lost to a busy lock.
    async fn bump(&self, counter: &'static str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let bumped: Result<(), BoxError> = match (&self.log, &self.sqlite) {
                (AnyChangeLog::Sqlite(_), Some(conn)) => {
                    Self::sqlite(conn, move |c| {
                        c.execute(
                            "INSERT INTO counters (name, value) VALUES (?1, 1)
                         ON CONFLICT (name) DO UPDATE SET value = value + 1",
                            [counter],
                        )
                        .map(drop)
                    })
                    .await
                }
                #[cfg(feature = "postgres")]
                (AnyChangeLog::Postgres(log), _) => {
                    async {
                        let client = log.client().await?;
                        let table = pg_table(log, "counters");
                        client
                            .execute(
                                &format!(
                                    "INSERT INTO {table} (name, value) VALUES ($1, 1)
                                 ON CONFLICT (name) DO UPDATE SET value = {table}.value + 1"
                                ),
                                &[&counter],
                            )
                            .await?;
                        Ok(())
                    }
                    .await
                }
                _ => unreachable!("SQLite stores have a connection"),
            };
            match bumped {
                Ok(()) => return,
                Err(error) if Instant::now() > deadline => {
                    eprintln!("tiered_store: counter {counter} not bumped: {error}");
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Every object row, and every counter.
    async fn snapshot(&self) -> Result<(Vec<(String, String, u64)>, Vec<(String, u64)>), BoxError> {
        match (&self.log, &self.sqlite) {
            (AnyChangeLog::Sqlite(_), Some(conn)) => {
                Self::sqlite(conn, |c| {
                    let rows = c
                        .prepare("SELECT name, blob, version FROM objects")?
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect::<Result<_, _>>()?;
                    let counters = c
                        .prepare("SELECT name, value FROM counters")?
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                        .collect::<Result<_, _>>()?;
                    Ok((rows, counters))
                })
                .await
            }
            #[cfg(feature = "postgres")]
            (AnyChangeLog::Postgres(log), _) => {
                let client = log.client().await?;
                let rows = client
                    .query(
                        &format!(
                            "SELECT name, blob, version FROM {}",
                            pg_table(log, "objects")
                        ),
                        &[],
                    )
                    .await?
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2) as u64))
                    .collect();
                let counters = client
                    .query(
                        &format!("SELECT name, value FROM {}", pg_table(log, "counters")),
                        &[],
                    )
                    .await?
                    .iter()
                    .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
                    .collect();
                Ok((rows, counters))
            }
            _ => unreachable!("SQLite stores have a connection"),
        }
    }

    /// The metadata compare-and-swap `object`: `old` -> `new`, committed
    /// only if `fence` still owns the intent's changelog entry, checked by
    /// the store in the same transaction.
    async fn cas(&self, fence: Fence, intent: &Intent) -> Result<(), FencedCommitError<CasError>> {
        let intent = intent.clone();
        match &self.log {
            AnyChangeLog::Sqlite(log) => {
                log.commit_fenced(&fence, move |tx| {
                    let changed = match &intent.old_blob {
                        Some(old) => tx.execute(
                            "UPDATE objects SET blob = ?3, version = version + 1
                             WHERE name = ?1 AND blob = ?2",
                            params![intent.object, old, intent.new_blob],
                        ),
                        None => tx.execute(
                            "INSERT INTO objects (name, blob, version) VALUES (?1, ?2, 1)
                             ON CONFLICT (name) DO NOTHING",
                            params![intent.object, intent.new_blob],
                        ),
                    }
                    .map_err(|e| CasError::Db(e.into()))?;
                    if changed != 1 {
                        return Err(CasError::Conflict);
                    }
                    // Which commits landed, in the same transaction: how a
                    // writer settles a commit it is in doubt about.
                    tx.execute("INSERT INTO commits (blob) VALUES (?1)", [&intent.new_blob])
                        .map_err(|e| CasError::Db(e.into()))?;
                    Ok(())
                })
                .await
            }
            #[cfg(feature = "postgres")]
            AnyChangeLog::Postgres(log) => {
                let objects = pg_table(log, "objects");
                let commits = pg_table(log, "commits");
                log.commit_fenced(&fence, move |tx| {
                    Box::pin(async move {
                        let changed = match &intent.old_blob {
                            Some(old) => {
                                tx.execute(
                                    &format!(
                                        "UPDATE {objects} SET blob = $3, version = version + 1
                                         WHERE name = $1 AND blob = $2"
                                    ),
                                    &[&intent.object, old, &intent.new_blob],
                                )
                                .await
                            }
                            None => {
                                tx.execute(
                                    &format!(
                                        "INSERT INTO {objects} (name, blob, version) VALUES ($1, $2, 1)
                                         ON CONFLICT (name) DO NOTHING"
                                    ),
                                    &[&intent.object, &intent.new_blob],
                                )
                                .await
                            }
                        }
                        .map_err(|e| CasError::Db(e.into()))?;
                        if changed != 1 {
                            return Err(CasError::Conflict);
                        }
                        tx.execute(
                            &format!("INSERT INTO {commits} (blob) VALUES ($1)"),
                            &[&intent.new_blob],
                        )
                        .await
                        .map_err(|e| CasError::Db(e.into()))?;
                        Ok(())
                    })
                })
                .await
            }
            _ => unreachable!("the store opens SQLite or PostgreSQL"),
        }
    }
}

/// `name` in the changelog's schema.
#[cfg(feature = "postgres")]
fn pg_table(log: &PostgresChangeLog, name: &str) -> String {
    match log.schema() {
        Some(schema) => format!("\"{schema}\".{name}"),
        None => name.to_owned(),
    }
}

/// The idempotent cleanup, the same for writers and recovery: delete each
/// blob of the intent that the metadata does not reference.
///
/// Why it is safe: blob names are unique per write, and only the write that
/// created a blob ever commits a reference to it, in a transaction in which
/// the store checks that the write's changelog entry is still the writer's
/// (`commit_fenced`). A recoverer runs this cleanup only on an entry it has
/// claimed, and the claim moves the entry to a new owner: from then on the
/// store refuses the writer's commit, however late it arrives (a process
/// frozen mid-commit, a clock stepped). So the cleanup reads the metadata
/// from the store — whether the commit landed or not, in doubt or not — and
/// once it sees a blob unreferenced, it stays unreferenced.
#[derive(Clone, Debug)]
struct TieredCleanup {
    store: Store,
    /// Counter bumped on every successful cleanup (`recovery_cleanups` for
    /// the recovery loop).
    counter: Option<&'static str>,
}

impl Cleanup<Intent> for TieredCleanup {
    async fn cleanup(&self, intent: &Intent, _phase: Phase) -> Result<(), BoxError> {
        let current = self.store.current(&intent.object).await?;
        for blob in std::iter::once(&intent.new_blob).chain(intent.old_blob.as_ref()) {
            if current.as_ref() != Some(blob) {
                match tokio::fs::remove_file(self.store.blob_path(blob)).await {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    other => other?,
                }
            }
        }
        if let Some(counter) = self.counter {
            self.store.bump(counter).await;
        }
        Ok(())
    }
}

// -------------------------------------------------------------- changelog --

/// What the store's changelog is, for the demo's header.
fn describe(log: &AnyChangeLog) -> String {
    match log {
        AnyChangeLog::Sqlite(log) => format!("SQLite ({})", log.path().display()),
        #[cfg(feature = "postgres")]
        AnyChangeLog::Postgres(log) => {
            format!("PostgreSQL (schema {})", log.schema().unwrap_or("public"))
        }
        other => format!("{other:?}"),
    }
}

// ----------------------------------------------------------------- writer --

/// The writer's changelog, with a switch that makes heartbeats hang (an
/// injected stall: a slow RPC, a GC pause).
#[derive(Clone, Debug)]
struct StallableLog {
    inner: AnyChangeLog,
    stalled: Arc<AtomicBool>,
}

impl ChangeLog for StallableLog {
    fn staleness(&self) -> Duration {
        self.inner.staleness()
    }
    async fn record(&self, owner: &OwnerId, payload: Vec<u8>) -> Result<Fence, ChangeLogError> {
        self.inner.record(owner, payload).await
    }
    async fn refresh(&self, fence: &Fence) -> Result<Ownership, ChangeLogError> {
        if self.stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.refresh(fence).await
    }
    async fn remove(&self, fence: &Fence) -> Result<Removal, ChangeLogError> {
        self.inner.remove(fence).await
    }
    async fn claim_stale(
        &self,
        owner: &OwnerId,
        max: usize,
    ) -> Result<Vec<ClaimedEntry>, ChangeLogError> {
        self.inner.claim_stale(owner, max).await
    }
    async fn quarantine(&self, fence: &Fence, reason: &str) -> Result<Ownership, ChangeLogError> {
        self.inner.quarantine(fence, reason).await
    }
    async fn advance(&self, fence: &Fence) -> Result<Advanced, ChangeLogError> {
        self.inner.advance(fence).await
    }
    async fn start_attempt(&self, fence: &Fence) -> Result<Attempt, ChangeLogError> {
        self.inner.start_attempt(fence).await
    }
    async fn record_failure(
        &self,
        fence: &Fence,
        reason: &str,
    ) -> Result<Ownership, ChangeLogError> {
        self.inner.record_failure(fence, reason).await
    }
    async fn get(&self, id: EntryId) -> Result<Option<EntryInfo>, ChangeLogError> {
        self.inner.get(id).await
    }
    async fn list(&self) -> Result<Vec<EntryInfo>, ChangeLogError> {
        self.inner.list().await
    }
}

/// How a writer's commits went, printed as its last line (`writer: ...`)
/// when it stops by itself (`--count`) or on SIGTERM.
#[derive(Debug, Default)]
struct WriterTally {
    committed: u64,
    refused: u64,
    conflicts: u64,
    in_doubt: u64,
    errors: u64,
}

/// How one commit went, as the writer counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Committed,
    Refused,
    Conflict,
    InDoubt,
    Error,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Committed => "committed",
            Outcome::Refused => "refused",
            Outcome::Conflict => "conflict",
            Outcome::InDoubt => "in_doubt",
            Outcome::Error => "error",
        }
    }
}

/// The writer's commit, as announced with `--announce-commits`.
fn announce(args: &Args, what: &str, guard_id: EntryId, intent: &Intent) -> Option<String> {
    args.flag("announce-commits").then(|| {
        format!(
            "{what} entry={} object={} blob={}",
            guard_id.get(),
            intent.object,
            intent.new_blob
        )
    })
}

async fn run_writer(args: &Args) -> Result<(), BoxError> {
    let objects: u64 = args.num("objects", 64);
    let count: u64 = args.num("count", u64::MAX);
    let stall_every: u64 = args.num("stall-every", 0);
    // `--gate-commits`: before each commit, announce `commit-ready` and wait
    // for a line on stdin (a test takes a lock the commit must wait on).
    let gate = args.flag("gate-commits");
    // `--write-ms N`: the blob write takes N ms more (a slow upload), so each
    // entry stays in flight, heartbeating, for at least that long.
    let write_time = Duration::from_millis(args.num("write-ms", 0));
    let store = Store::open(args).await?;
    let log = StallableLog {
        inner: store.log.clone(),
        stalled: Arc::new(AtomicBool::new(false)),
    };
    let heartbeat = HeartbeatConfig::builder(HEARTBEAT_INTERVAL)
        .margin(HEARTBEAT_MARGIN)
        .build()?;
    let cleanup = TieredCleanup {
        store: store.clone(),
        counter: None,
    };
    let owner = OwnerId::unique("writer");
    let manager = ChangeManager::new(log.clone(), owner, heartbeat, cleanup)?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tally = WriterTally::default();
    // `--seed S` makes the writer's choice of objects, blob names and stalls repeatable.
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.num("seed", rand::random()));
    let pid = std::process::id();
    for n in 0..count {
        // SIGTERM stops the writer between two writes, never inside one.
        if futures::FutureExt::now_or_never(sigterm.recv()).is_some() {
            break;
        }
        let object = format!("object-{:03}", rng.random_range(0..objects));
        let old_blob = match store.current(&object).await {
            Ok(blob) => blob,
            Err(error) => {
                // A busy store (a frozen process holds its lock): try again.
                eprintln!("tiered_store writer: reading {object}: {error}");
                tally.errors += 1;
                continue;
            }
        };
        let intent = Intent {
            old_blob,
            new_blob: format!("{object}.{pid}.{n}.{:08x}", rng.random::<u32>()),
            object,
        };
        // 1. Record the intent durably, before any side effect.
        let mut guard = match manager.record(intent.clone()).await {
            Ok(guard) => guard,
            Err(error) if error.is_transient() => {
                eprintln!("tiered_store writer: record: {error}");
                tally.errors += 1;
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        // 2. Write the blob.
        tokio::fs::write(store.blob_path(&intent.new_blob), intent.encode()).await?;
        guard.mark_applied();
        if !write_time.is_zero() {
            tokio::time::sleep(write_time).await;
        }
        // Injected stall: the heartbeat hangs until the deadline passes.
        if stall_every > 0 && rng.random_range(0..stall_every) == 0 {
            log.stalled.store(true, Ordering::SeqCst);
            guard.validity().invalidated().await;
            store.bump("stalls").await;
        }
        let id = guard.fence().id();
        if gate {
            println!("commit-ready entry={} object={}", id.get(), intent.object);
            // On the blocking pool: the heartbeat keeps running meanwhile.
            let read = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map(|n| n > 0)
            });
            if !read.await?? {
                return Err("--gate-commits: stdin closed".into());
            }
        }
        // 3. Commit through the store's fence: the CAS lands only if the
        //    entry is still ours, checked in the CAS's own transaction.
        let start = announce(args, "commit-start", id, &intent);
        let committed = guard
            .commit_fenced(|fence| {
                if let Some(line) = start {
                    println!("{line}");
                }
                store.cas(fence.clone(), &intent)
            })
            .await;
        let mut outcome = match committed {
            Ok(()) => Outcome::Committed,
            // Refused before it started (validity) or by the store (fence):
            // nothing was committed.
            Err(
                CommitError::Invalid {
                    in_flight: false, ..
                }
                | CommitError::Fenced,
            ) => Outcome::Refused,
            Err(CommitError::Rejected(CasError::Conflict)) => Outcome::Conflict,
            // Cut off at the deadline, or the store failed while committing:
            // it may have landed.
            Err(
                CommitError::Invalid {
                    in_flight: true, ..
                }
                | CommitError::InDoubt(_),
            ) => Outcome::InDoubt,
            // Nothing committed (a busy store, a failed statement): the
            // entry is still ours, `finish` cleans up.
            Err(other) => {
                eprintln!("tiered_store writer: commit: {other}");
                Outcome::Error
            }
        };
        log.stalled.store(false, Ordering::SeqCst);
        // 4. Clean up and remove; an invalid guard leaves it to recovery.
        //    An in-doubt commit is settled first: `finish` moves the entry to
        //    its next generation (or finds it claimed), after which the store
        //    refuses the old fence, so whether the commit landed is final.
        let finished = guard.finish().await;
        if outcome == Outcome::InDoubt && !matches!(finished, Err(FinishError::Log(_))) {
            match store.landed(&intent.new_blob).await {
                Ok(true) => outcome = Outcome::Committed,
                Ok(false) => outcome = Outcome::Refused,
                Err(error) => eprintln!("tiered_store writer: settling a commit: {error}"),
            }
        }
        match outcome {
            Outcome::Committed => tally.committed += 1,
            Outcome::Refused => {
                // Refused for good (the store refused the fence, or the commit
                // never started), and the blob name is unique to this write:
                // nothing will ever reference it. A writer paused before its
                // blob write reached the disk may have written it *after*
                // recovery cleaned up, so delete it here, not leave an orphan.
                match tokio::fs::remove_file(store.blob_path(&intent.new_blob)).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        eprintln!("tiered_store writer: deleting a refused blob: {e}");
                    }
                    _ => {}
                }
                tally.refused += 1;
                store.bump("commits_refused").await;
            }
            Outcome::Conflict => {
                tally.conflicts += 1;
                store.bump("cas_conflicts").await;
            }
            Outcome::InDoubt => {
                tally.in_doubt += 1;
                store.bump("commits_in_doubt").await;
            }
            Outcome::Error => tally.errors += 1,
        }
        if let Some(line) = announce(args, "commit-outcome", id, &intent) {
            println!("{line} outcome={}", outcome.name());
        }
    }
    println!(
        "writer: committed={} refused={} conflicts={} in_doubt={} errors={}",
        tally.committed, tally.refused, tally.conflicts, tally.in_doubt, tally.errors
    );
    Ok(())
}

// --------------------------------------------------------------- recovery --

async fn run_recovery(args: &Args) -> Result<(), BoxError> {
    let until_empty = args.flag("until-empty");
    let timeout = Duration::from_secs(args.num("timeout-s", 120));
    let store = Store::open(args).await?;
    let log = Arc::new(store.log.clone());
    let cleanup = TieredCleanup {
        store,
        counter: Some("recovery_cleanups"),
    };
    let config = RecoveryConfig::builder()
        .batch_size(args.num("batch", 50))
        .idle_wait(Duration::from_millis(100))
        .build()?;
    let recovery = RecoveryLoop::spawn::<_, Intent, _>(
        Arc::clone(&log),
        OwnerId::unique("recovery"),
        cleanup,
        config,
    )?;
    let started = Instant::now();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        // SIGTERM: stop and report the counters.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = sigterm.recv() => break,
        }
        if until_empty {
            let active = log
                .list()
                .await?
                .iter()
                .filter(|e| e.state == EntryState::Active)
                .count();
            if active == 0 {
                break;
            }
        }
        if started.elapsed() > timeout {
            return Err(format!("recovery did not converge within {timeout:?}").into());
        }
    }
    if let Some(error) = recovery.last_error() {
        // The whole chain, for the logs of the torture tests.
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&*error);
        while let Some(cause) = source {
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        eprintln!("recovery: last error: {text}");
    }
    let stats = recovery.shutdown().await;
    println!(
        "recovery: claimed={} cleaned={} quarantined={} errors={} lost={} released={} \
         attempts={} failed_attempts={} abandoned={}",
        stats.claimed,
        stats.cleaned,
        stats.quarantined,
        stats.errors,
        stats.lost,
        stats.released,
        stats.attempts,
        stats.failed_attempts,
        stats.abandoned
    );
    Ok(())
}

// ----------------------------------------------------------------- verify --

/// What `verify` finds in a quiescent store directory.
#[derive(Debug, Default)]
struct Report {
    objects: u64,
    writes: u64,
    blobs: u64,
    orphans: Vec<String>,
    dangling: Vec<String>,
    changelog: u64,
    quarantined: u64,
    counters: HashMap<String, u64>,
}

async fn verify(args: &Args) -> Result<Report, BoxError> {
    let dir = &args.dir()?;
    let store = Store::open(args).await?;
    let log = &store.log;
    let (rows, counters) = store.snapshot().await?;
    let mut files = HashSet::new();
    for entry in std::fs::read_dir(dir.join("blobs"))? {
        files.insert(entry?.file_name().to_string_lossy().into_owned());
    }
    let referenced: HashSet<&String> = rows.iter().map(|(_, blob, _)| blob).collect();
    let entries = log.list().await?;
    let mut orphans: Vec<String> = files
        .iter()
        .filter(|f| !referenced.contains(f))
        .cloned()
        .collect();
    orphans.sort();
    Ok(Report {
        objects: rows.len() as u64,
        writes: rows.iter().map(|(_, _, v)| v).sum(),
        blobs: files.len() as u64,
        orphans,
        dangling: rows
            .iter()
            .filter(|(_, blob, _)| !files.contains(blob))
            .map(|(name, blob, _)| format!("{name} -> {blob}"))
            .collect(),
        changelog: entries.len() as u64,
        quarantined: entries
            .iter()
            .filter(|e| matches!(e.state, EntryState::Quarantined { .. }))
            .count() as u64,
        counters: counters.into_iter().collect(),
    })
}

impl Report {
    fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    fn is_consistent(&self) -> bool {
        self.orphans.is_empty() && self.dangling.is_empty() && self.changelog == 0
    }

    /// One `key=value` line, for tests to parse.
    fn machine_line(&self) -> String {
        format!(
            "verify: objects={} writes={} blobs={} orphans={} dangling={} changelog={} quarantined={} \
             stalls={} commits_refused={} commits_in_doubt={} cas_conflicts={} recovery_cleanups={}",
            self.objects,
            self.writes,
            self.blobs,
            self.orphans.len(),
            self.dangling.len(),
            self.changelog,
            self.quarantined,
            self.counter("stalls"),
            self.counter("commits_refused"),
            self.counter("commits_in_doubt"),
            self.counter("cas_conflicts"),
            self.counter("recovery_cleanups"),
        )
    }
}

async fn run_verify(args: &Args) -> Result<bool, BoxError> {
    let report = verify(args).await?;
    println!("{}", report.machine_line());
    for orphan in report.orphans.iter().take(10) {
        println!("  orphaned blob: {orphan}");
    }
    for dangling in report.dangling.iter().take(10) {
        println!("  dangling reference: {dangling}");
    }
    Ok(report.is_consistent())
}

// ------------------------------------------------------------------- demo --

fn spawn_role(dir: &Path, role: &str, extra: &[String]) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .arg(role)
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(if logging() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
}

/// The demo's writer processes. Dropping it (any early return) SIGKILLs
/// and reaps the ones still running, so none outlives the demo.
struct Children(Vec<Child>);

impl Children {
    /// SIGKILLs and reaps every writer still running; returns how many.
    fn kill_all(&mut self) -> u64 {
        let mut killed = 0;
        for mut child in self.0.drain(..) {
            if child.kill().is_ok() {
                killed += 1;
            }
            let _ = child.wait();
        }
        killed
    }

    /// Stops the writers after `signal`.
    fn stop_for(&mut self, signal: Signal) -> BoxError {
        let stopped = self.kill_all();
        Box::new(Interrupted { signal, stopped })
    }
}

async fn run_demo(args: &Args) -> Result<bool, BoxError> {
    let (args, dir, _temp) = args.with_demo_dir()?;
    let args = &args;
    let writers: usize = args.num("writers", 3);
    let kills_wanted: u64 = args.num("kills", 20);
    let stall_every = args.num::<u64>("stall-every", 25).to_string();
    let store = Store::open(args).await?;
    let log = Arc::new(store.log.clone());
    println!(
        "tiered_store: blobs as files in {}; the changelog and the metadata table in {}",
        dir.display(),
        describe(&log)
    );
    println!(
        "  {writers} writer processes, {kills_wanted} SIGKILLed at random points (then the \
         {writers} left are SIGKILLed too: {} crashes); 1 in {stall_every} writes stalls its \
         heartbeat past the deadline",
        kills_wanted + writers as u64
    );
    println!("  staleness {STALENESS:?}, heartbeat every {HEARTBEAT_INTERVAL:?} (ttl 3x)\n");
    let recovery = RecoveryLoop::spawn::<_, Intent, _>(
        Arc::clone(&log),
        OwnerId::unique("recovery"),
        TieredCleanup {
            store: store.clone(),
            counter: Some("recovery_cleanups"),
        },
        RecoveryConfig::builder()
            .idle_wait(Duration::from_millis(100))
            .build()?,
    )?;
    let mut writer_args = vec!["--stall-every".to_owned(), stall_every];
    writer_args.extend(args.changelog_args());
    // SIGINT or SIGTERM stops the demo, its writer processes first: they
    // must not outlive it. Installed before the first writer is spawned.
    let mut interrupt = Interrupt::new()?;
    let mut children = Children(Vec::with_capacity(writers));
    for _ in 0..writers {
        children.0.push(spawn_role(&dir, "writer", &writer_args)?);
    }
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut kills = 0;
    let mut rng = rand::rng();
    let mut last_progress = Instant::now();
    while kills < kills_wanted {
        let pause = Duration::from_millis(rng.random_range(100..400));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            signal = interrupt.recv() => return Err(children.stop_for(signal)),
        }
        let victim = rng.random_range(0..children.0.len());
        children.0[victim].kill()?; // SIGKILL: no cleanup, no goodbye
        children.0[victim].wait()?;
        kills += 1;
        children.0[victim] = spawn_role(&dir, "writer", &writer_args)?;
        if tty || last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let stats = recovery.stats();
            let pending = log.list().await?.len();
            let line = format!(
                "[{:5.1}s] kills {kills:3}/{kills_wanted}  recovered {:4}  quarantined {}  changelog entries {pending:3}",
                started.elapsed().as_secs_f64(),
                stats.cleaned,
                stats.quarantined,
            );
            if tty {
                print!("\r{line}");
                std::io::stdout().flush()?;
            } else {
                println!("{line}");
            }
        }
    }
    // Stop the workload the hard way too, then let recovery converge.
    let final_kills = children.kill_all();
    if tty {
        println!();
    }
    println!("writers stopped; waiting for recovery to drain the changelog...");
    let drain_started = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        let pending = log.list().await?.len();
        if pending == 0 {
            break;
        }
        if drain_started.elapsed() > Duration::from_secs(60) {
            return Err("recovery did not converge within 60 s".into());
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            println!(
                "[{:5.1}s] draining: changelog entries {pending:3}, recovered {}",
                started.elapsed().as_secs_f64(),
                recovery.stats().cleaned
            );
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            signal = interrupt.recv() => return Err(children.stop_for(signal)),
        }
    }
    let stats = recovery.shutdown().await;
    let report = verify(args).await?;
    println!(
        "\n=== tiered_store report ({:.1} s) ===",
        started.elapsed().as_secs_f64()
    );
    println!("objects written (committed):   {}", report.writes);
    println!("distinct objects:              {}", report.objects);
    // The same count as the header: the random kills plus the final stop.
    println!("crashes injected (SIGKILL):    {}", kills + final_kills);
    println!(
        "heartbeat stalls injected:     {}",
        report.counter("stalls")
    );
    println!(
        "commits refused:               {}",
        report.counter("commits_refused")
    );
    println!("entries recovered:             {}", stats.cleaned);
    println!("entries quarantined:           {}", stats.quarantined);
    println!("orphaned blobs:                {}", report.orphans.len());
    println!("dangling references:           {}", report.dangling.len());
    println!("changelog entries left:        {}", report.changelog);
    println!("{}", report.machine_line());
    Ok(report.is_consistent())
}

// ------------------------------------------------------------------- main --

#[path = "common/args.rs"]
mod args;
use args::{Args, Kind, Opt};
#[path = "common/interrupt.rs"]
mod interrupt;
use interrupt::{Interrupt, Interrupted, Signal};

const USAGE: &str = "\
tiered_store: a two-tier object store that survives kill -9, frozen processes and stepped clocks

usage:
  tiered_store [demo] [--dir D] [--writers 3] [--kills 20] [--stall-every 25]
  tiered_store writer   --dir D [--objects 64] [--count N] [--stall-every N] [--seed S]
                        [--write-ms N] [--announce-commits] [--gate-commits]
  tiered_store recovery --dir D [--until-empty] [--timeout-s 120] [--batch 50]
  tiered_store verify   --dir D

every subcommand also takes --postgres URL [--pg-schema NAME] (feature `postgres`).
the demo exits 0 only if the final report finds no orphan and no dangling reference;
SIGINT or SIGTERM stops it and its writer processes (exit status 130 or 143).
";

/// The options every subcommand takes: where the store is.
const STORE_OPTIONS: [Opt; 3] = [
    ("dir", Kind::Text),
    ("postgres", Kind::Text),
    ("pg-schema", Kind::Text),
];

/// The options of `command`, besides [`STORE_OPTIONS`].
fn options(command: &str) -> &'static [Opt] {
    match command {
        "writer" => &[
            ("objects", Kind::Number),
            ("count", Kind::Number),
            ("stall-every", Kind::Number),
            ("seed", Kind::Number),
            ("write-ms", Kind::Number),
            ("announce-commits", Kind::Flag),
            ("gate-commits", Kind::Flag),
        ],
        "recovery" => &[
            ("until-empty", Kind::Flag),
            ("timeout-s", Kind::Number),
            ("batch", Kind::Number),
        ],
        "verify" => &[],
        _ => &[
            ("writers", Kind::Number),
            ("kills", Kind::Number),
            ("stall-every", Kind::Number),
        ],
    }
}

impl Args {
    /// The arguments that choose the changelog, for child processes.
    fn changelog_args(&self) -> Vec<String> {
        ["postgres", "pg-schema"]
            .into_iter()
            .filter_map(|key| Some([format!("--{key}"), self.get(key)?.to_owned()]))
            .flatten()
            .collect()
    }

    fn dir(&self) -> Result<PathBuf, BoxError> {
        self.get("dir")
            .map(PathBuf::from)
            .ok_or_else(|| "--dir is required".into())
    }
}

/// Whether `RUST_LOG` asks for the crate's `tracing` events (built with
/// the `tracing` feature), e.g. `RUST_LOG=leasehold=info`.
fn logging() -> bool {
    std::env::var_os("RUST_LOG").is_some()
}

fn main() -> ExitCode {
    if logging() {
        // Events go to stderr, each with its span's fields (owner, entry,
        // generation, attempt); the children of the demo inherit it.
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = args::subcommand(&raw, &["demo", "writer", "recovery", "verify"], "demo");
    let accepted: Vec<Opt> = STORE_OPTIONS
        .iter()
        .chain(options(command))
        .copied()
        .collect();
    let args = match Args::parse("tiered_store", rest, &accepted, USAGE) {
        Ok(args) => args,
        Err(exit) => return exit,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(async {
        match command {
            "writer" => run_writer(&args).await.map(|()| true),
            "recovery" => run_recovery(&args).await.map(|()| true),
            "verify" => run_verify(&args).await,
            _ => run_demo(&args).await,
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("tiered_store: INCONSISTENT store (see the report above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("tiered_store {command}: {error}");
            match error.downcast_ref::<Interrupted>() {
                Some(interrupted) => interrupted.exit_code(),
                None => ExitCode::from(2),
            }
        }
    }
}
