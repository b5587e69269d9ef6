//! A versioned store whose garbage collector never deletes what a live
//! reader reads, while readers are killed and frozen: the crate's
//! demonstration of durable leases.
//!
//! A compactor process appends versions (one per seqno) and deletes every
//! version below the shard's GC horizon: the least seqno hold of the live
//! readers in a lease table. Reader processes hold snapshots: each pins the
//! latest seqno ([`Lease::lease_seqno`]), reads that version again and again
//! for a while, advances its since, releases the pin, and starts over. Their
//! leases heartbeat through the table; the compactor expires readers whose
//! heartbeat counter it has seen unchanged for the staleness on its own
//! monotonic clock (no wall clock anywhere).
//!
//! Every read is a *fenced read* ([`SqliteLeaseTable::read_fenced`]): it runs
//! in one transaction with the check that the reader's lease row is still
//! there. A reader frozen (SIGSTOP) past the staleness is expired, the
//! horizon moves past its pin and its version is deleted; when it resumes,
//! its next read or heartbeat is refused, it never reads the deleted
//! version, and it registers again as a new reader.
//!
//! ```text
//! lease_gc [demo] [--dir D | --postgres URL] [--readers 4] [--seconds 30] [--ttl-ms 1000]
//!                 [--timeout-s 300] [--seed S] [--unfenced]
//! lease_gc compactor --db PATH | --postgres URL --pg-schema S  [--ttl-ms 1000]
//! lease_gc reader    --db PATH | --postgres URL --pg-schema S  [--ttl-ms 1000] [--seed S]
//!                    [--unfenced]
//! ```
//!
//! `--unfenced` makes the readers read without the store's fence, trusting
//! only what their lease task last learnt ([`Lease::ended`]): the run that
//! shows what the fence is for (a resumed reader reads before its task has
//! heard that the lease is gone, and finds its version deleted).
//!
//! The demo runs one compactor and `--readers` reader processes, and every
//! second or so SIGKILLs a reader (and starts a new one) or SIGSTOPs one for
//! longer than the staleness plus a heartbeat period. It measures, for each
//! killed reader, how long its lease row outlived it (the horizon no longer
//! counts a reader once its row is gone), and checks that each frozen reader
//! was refused after it resumed and registered again. Its last line is
//!
//! ```text
//! verify: deleted_reads=0 horizon_lag_ms=N horizon_bound_ms=N refused=N stops=N stops_refused=N
//!         reregistered=N kills=N lags=N reads=N deleted_versions=N saved_by_fence=N
//!         missing_above_horizon=0 violations=0
//! ```
//!
//! (one line), and the exit status is non-zero on a violation: a read of a
//! deleted version by a live reader, a dead reader's row outliving it by
//! more than the staleness plus one heartbeat period (plus the compactor's
//! scan interval and a scheduling allowance, printed as the bound), a frozen
//! reader not refused or not registered again, or a version at or above
//! the horizon missing. `saved_by_fence` counts refused readers whose pinned
//! version was already deleted: reads the fence stopped.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use leasehold::changelog::Durability;
use leasehold::heartbeat::BoxError;
use leasehold::lease::{
    FencedReadError, Lease, LeaseConfig, LeaseError, ReaderFence, ReaderId, SqliteLeaseTable,
};
use rand::{Rng, SeedableRng};
use rusqlite::OptionalExtension;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const SHARD: &str = "versions";
/// The compactor's loop: a version written, stale readers expired, the
/// horizon read, versions below it deleted.
const SCAN: Duration = Duration::from_millis(50);
/// How long a reader pauses between two reads of its pinned version.
const READ_EVERY: Duration = Duration::from_millis(20);

// ------------------------------------------------------------------ store --

/// The shard: its lease table and its versions, in one database.
#[derive(Clone)]
enum Store {
    Sqlite {
        table: SqliteLeaseTable<u64>,
        path: PathBuf,
    },
    #[cfg(feature = "postgres")]
    Postgres {
        table: leasehold::lease::PostgresLeaseTable<u64>,
        /// `"schema".lease_gc_versions`.
        versions: String,
        url: String,
        schema: String,
    },
}

impl Store {
    async fn open(args: &Args, staleness: Duration) -> Result<Store, BoxError> {
        if let Some(url) = args.get("postgres") {
            #[cfg(feature = "postgres")]
            return Self::open_postgres(url, args, staleness).await;
            #[cfg(not(feature = "postgres"))]
            return Err(format!(
                "--postgres {url:?}: this build has no PostgreSQL (build with --features postgres)"
            )
            .into());
        }
        let path = match args.get("db") {
            Some(db) => PathBuf::from(db),
            None => args.dir()?.join("shard.db"),
        };
        let table = SqliteLeaseTable::<u64>::builder(&path, SHARD)
            .staleness(staleness)
            .durability(Durability::ProcessCrash)
            .busy_timeout(Duration::from_secs(10))
            .open(0, 0)
            .await?;
        let conn = sqlite_conn(&path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS lease_gc_versions (seqno INTEGER PRIMARY KEY, value TEXT NOT NULL);
             INSERT OR IGNORE INTO lease_gc_versions VALUES (0, 'v0');",
        )?;
        Ok(Store::Sqlite { table, path })
    }

    #[cfg(feature = "postgres")]
    async fn open_postgres(url: &str, args: &Args, staleness: Duration) -> Result<Store, BoxError> {
        let schema = args
            .get("pg-schema")
            .map_or_else(|| format!("lease_gc_{}", std::process::id()), str::to_owned);
        let table = leasehold::lease::PostgresLeaseTable::<u64>::builder(url, SHARD)
            .schema(schema.clone())
            .staleness(staleness)
            .open(0, 0)
            .await?;
        let versions = format!("\"{schema}\".lease_gc_versions");
        table
            .client()
            .await?
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {versions} (seqno BIGINT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO {versions} VALUES (0, 'v0') ON CONFLICT DO NOTHING;"
            ))
            .await?;
        Ok(Store::Postgres {
            table,
            versions,
            url: url.to_owned(),
            schema,
        })
    }

    fn describe(&self) -> String {
        match self {
            Store::Sqlite { path, .. } => format!("SQLite file {}", path.display()),
            #[cfg(feature = "postgres")]
            Store::Postgres { schema, .. } => format!("PostgreSQL schema {schema}"),
        }
    }

    /// The arguments that open this store in a child process.
    fn child_args(&self) -> Vec<String> {
        match self {
            Store::Sqlite { path, .. } => vec!["--db".into(), path.display().to_string()],
            #[cfg(feature = "postgres")]
            Store::Postgres { url, schema, .. } => vec![
                "--postgres".into(),
                url.clone(),
                "--pg-schema".into(),
                schema.clone(),
            ],
        }
    }

    async fn register(&self) -> Result<(Reader, u64, u64), BoxError> {
        match self {
            Store::Sqlite { table, .. } => {
                let (reader, since, seqno) = table.register().await?;
                Ok((Reader::Sqlite(reader), since, seqno))
            }
            #[cfg(feature = "postgres")]
            Store::Postgres { table, .. } => {
                let (reader, since, seqno) = table.register().await?;
                Ok((Reader::Postgres(reader), since, seqno))
            }
        }
    }

    async fn seqno(&self) -> Result<u64, BoxError> {
        match self {
            Store::Sqlite { table, .. } => Ok(table.seqno().await?),
            #[cfg(feature = "postgres")]
            Store::Postgres { table, .. } => Ok(table.seqno().await?),
        }
    }

    async fn horizon(&self) -> Result<u64, BoxError> {
        match self {
            Store::Sqlite { table, .. } => Ok(table.gc_horizon().await?),
            #[cfg(feature = "postgres")]
            Store::Postgres { table, .. } => Ok(table.gc_horizon().await?),
        }
    }

    async fn expire_stale(&self) -> Result<Vec<ReaderId>, BoxError> {
        match self {
            Store::Sqlite { table, .. } => Ok(table.expire_stale().await?),
            #[cfg(feature = "postgres")]
            Store::Postgres { table, .. } => Ok(table.expire_stale().await?),
        }
    }

    async fn reader_live(&self, id: ReaderId) -> Result<bool, BoxError> {
        match self {
            Store::Sqlite { table, .. } => Ok(table.reader(id).await?.is_some()),
            #[cfg(feature = "postgres")]
            Store::Postgres { table, .. } => Ok(table.reader(id).await?.is_some()),
        }
    }

    /// Runs one statement on the PostgreSQL versions table: `sql` with
    /// `{versions}` replaced, returning the first column of the first row.
    #[cfg(feature = "postgres")]
    async fn pg_one(
        table: &leasehold::lease::PostgresLeaseTable<u64>,
        versions: &str,
        sql: &str,
        params: &[i64],
    ) -> Result<Option<tokio_postgres::Row>, BoxError> {
        let sql = sql.replace("{versions}", versions);
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as _).collect();
        Ok(table.client().await?.query_opt(&sql, &params).await?)
    }

    /// Reads version `seqno` if `fence`'s lease is still held: `Ok(None)` if
    /// the version is gone.
    async fn read_fenced(&self, fence: ReaderFence, seqno: u64) -> Result<Option<String>, Read> {
        match self {
            Store::Sqlite { table, .. } => {
                let seqno = i64::try_from(seqno).unwrap_or(i64::MAX);
                table
                    .read_fenced(fence, move |tx| {
                        tx.query_row(
                            "SELECT value FROM lease_gc_versions WHERE seqno = ?1",
                            [seqno],
                            |row| row.get::<_, String>(0),
                        )
                        .optional()
                    })
                    .await
                    .map_err(|error| match error {
                        FencedReadError::Lost => Read::Lost,
                        other => Read::Failed(other.into()),
                    })
            }
            #[cfg(feature = "postgres")]
            Store::Postgres {
                table, versions, ..
            } => {
                let sql = format!("SELECT value FROM {versions} WHERE seqno = $1");
                let seqno = i64::try_from(seqno).unwrap_or(i64::MAX);
                table
                    .read_fenced(fence, move |tx| {
                        Box::pin(async move {
                            Ok::<_, tokio_postgres::Error>(
                                tx.query_opt(&sql, &[&seqno])
                                    .await?
                                    .map(|row| row.get::<_, String>(0)),
                            )
                        })
                    })
                    .await
                    .map_err(|error| match error {
                        FencedReadError::Lost => Read::Lost,
                        other => Read::Failed(other.into()),
                    })
            }
        }
    }

    /// Reads version `seqno` without asking the lease table: what a reader
    /// that trusts its lease task's last word does (`--unfenced`).
    async fn read_unfenced(&self, seqno: u64) -> Result<Option<String>, BoxError> {
        match self {
            Store::Sqlite { path, .. } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> Result<Option<String>, BoxError> {
                    Ok(sqlite_conn(&path)?
                        .query_row(
                            "SELECT value FROM lease_gc_versions WHERE seqno = ?1",
                            [i64::try_from(seqno)?],
                            |row| row.get(0),
                        )
                        .optional()?)
                })
                .await?
            }
            #[cfg(feature = "postgres")]
            Store::Postgres {
                table, versions, ..
            } => Ok(Self::pg_one(
                table,
                versions,
                "SELECT value FROM {versions} WHERE seqno = $1",
                &[i64::try_from(seqno)?],
            )
            .await?
            .map(|row| row.get(0))),
        }
    }

    /// Whether version `seqno` still exists (an unfenced look, for the report).
    async fn version_exists(&self, seqno: u64) -> Result<bool, BoxError> {
        match self {
            Store::Sqlite { path, .. } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> Result<bool, BoxError> {
                    let conn = sqlite_conn(&path)?;
                    Ok(conn
                        .query_row(
                            "SELECT 1 FROM lease_gc_versions WHERE seqno = ?1",
                            [i64::try_from(seqno)?],
                            |_| Ok(()),
                        )
                        .optional()?
                        .is_some())
                })
                .await?
            }
            #[cfg(feature = "postgres")]
            Store::Postgres {
                table, versions, ..
            } => Ok(Self::pg_one(
                table,
                versions,
                "SELECT 1 FROM {versions} WHERE seqno = $1",
                &[i64::try_from(seqno)?],
            )
            .await?
            .is_some()),
        }
    }

    /// Appends version `seqno`, then publishes it as the shard's latest.
    async fn write_version(&self, seqno: u64) -> Result<(), BoxError> {
        match self {
            Store::Sqlite { table, path } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> Result<(), BoxError> {
                    sqlite_conn(&path)?.execute(
                        "INSERT OR IGNORE INTO lease_gc_versions VALUES (?1, ?2)",
                        rusqlite::params![i64::try_from(seqno)?, format!("v{seqno}")],
                    )?;
                    Ok(())
                })
                .await??;
                table.advance_seqno(seqno).await?;
                Ok(())
            }
            #[cfg(feature = "postgres")]
            Store::Postgres {
                table, versions, ..
            } => {
                Self::pg_one(
                    table,
                    versions,
                    "INSERT INTO {versions} VALUES ($1::bigint, 'v' || $1::bigint::text) ON CONFLICT DO NOTHING",
                    &[i64::try_from(seqno)?],
                )
                .await?;
                table.advance_seqno(seqno).await?;
                Ok(())
            }
        }
    }

    /// Deletes the versions below `horizon`; returns how many.
    async fn delete_below(&self, horizon: u64) -> Result<u64, BoxError> {
        match self {
            Store::Sqlite { path, .. } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> Result<u64, BoxError> {
                    let n = sqlite_conn(&path)?.execute(
                        "DELETE FROM lease_gc_versions WHERE seqno < ?1",
                        [i64::try_from(horizon)?],
                    )?;
                    Ok(n as u64)
                })
                .await?
            }
            #[cfg(feature = "postgres")]
            Store::Postgres {
                table, versions, ..
            } => {
                let row = Self::pg_one(
                    table,
                    versions,
                    "WITH d AS (DELETE FROM {versions} WHERE seqno < $1 RETURNING 1)
                     SELECT count(*) FROM d",
                    &[i64::try_from(horizon)?],
                )
                .await?;
                Ok(row.map_or(0, |row| u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
            }
        }
    }

    /// Versions at or above `horizon` that are missing, up to `latest`.
    async fn missing_from(&self, horizon: u64, latest: u64) -> Result<u64, BoxError> {
        match self {
            Store::Sqlite { path, .. } => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> Result<u64, BoxError> {
                    let present: i64 = sqlite_conn(&path)?.query_row(
                        "SELECT count(*) FROM lease_gc_versions WHERE seqno >= ?1 AND seqno <= ?2",
                        [i64::try_from(horizon)?, i64::try_from(latest)?],
                        |row| row.get(0),
                    )?;
                    Ok((latest - horizon + 1).saturating_sub(u64::try_from(present)?))
                })
                .await?
            }
            #[cfg(feature = "postgres")]
            Store::Postgres {
                table, versions, ..
            } => {
                let row = Self::pg_one(
                    table,
                    versions,
                    "SELECT count(*) FROM {versions} WHERE seqno >= $1 AND seqno <= $2",
                    &[i64::try_from(horizon)?, i64::try_from(latest)?],
                )
                .await?;
                let present = row.map_or(0, |row| row.get::<_, i64>(0));
                Ok((latest - horizon + 1).saturating_sub(u64::try_from(present)?))
            }
        }
    }
}

fn sqlite_conn(path: &Path) -> Result<rusqlite::Connection, BoxError> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch("PRAGMA synchronous = NORMAL;")?;
    Ok(conn)
}

enum Reader {
    Sqlite(leasehold::lease::SqliteLeaseReader<u64>),
    #[cfg(feature = "postgres")]
    Postgres(leasehold::lease::PostgresLeaseReader<u64>),
}

enum Read {
    Lost,
    Failed(BoxError),
}

// -------------------------------------------------------------- compactor --

async fn run_compactor(args: &Args) -> Result<(), BoxError> {
    let ttl = Duration::from_millis(args.num("ttl-ms", 1000));
    let store = Store::open(args, ttl).await?;
    let mut seqno = store.seqno().await?;
    let (mut deleted, mut expired, mut horizon) = (0_u64, 0_u64, 0_u64);
    let mut last_progress = Instant::now();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let parent = parent_pid();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            () = tokio::time::sleep(SCAN) => {}
        }
        if parent_pid() != parent {
            return Err("the parent process went away".into());
        }
        seqno += 1;
        store.write_version(seqno).await?;
        // Expiry first, then the horizon, then the deletes: a read that saw
        // an expired reader's row started before its expiry committed, so
        // before these deletes.
        for id in store.expire_stale().await? {
            println!("expired reader={}", id.get());
            expired += 1;
        }
        horizon = store.horizon().await?;
        deleted += store.delete_below(horizon).await?;
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            println!(
                "compactor: seqno={seqno} horizon={horizon} deleted={deleted} expired={expired}"
            );
        }
    }
    println!("compactor: seqno={seqno} horizon={horizon} deleted={deleted} expired={expired}");
    Ok(())
}

// ----------------------------------------------------------------- reader --

async fn run_reader(args: &Args) -> Result<(), BoxError> {
    let ttl = Duration::from_millis(args.num("ttl-ms", 1000));
    let store = Store::open(args, ttl).await?;
    let config = LeaseConfig::builder(ttl).build()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.num("seed", rand::random()));
    let parent = parent_pid();
    let unfenced = args.flag("unfenced");
    loop {
        let (backend, since, seqno) = store.register().await?;
        let fence = match &backend {
            Reader::Sqlite(reader) => reader.fence(),
            #[cfg(feature = "postgres")]
            Reader::Postgres(reader) => reader.fence(),
        };
        let id = fence.reader().get();
        println!("registered reader={id} generation={}", fence.generation());
        // One lease type per backend; the loop below drives either through
        // `ReaderLease`.
        let lease: Box<dyn ReaderLease> = match backend {
            Reader::Sqlite(reader) => Box::new(Lease::spawn(reader, &config, since, seqno)),
            #[cfg(feature = "postgres")]
            Reader::Postgres(reader) => Box::new(Lease::spawn(reader, &config, since, seqno)),
        };
        let mut reads = 0_u64;
        'snapshots: loop {
            if parent_pid() != parent {
                return Err("the parent process went away".into());
            }
            match store.seqno().await {
                Ok(latest) => {
                    lease.observe_seqno(latest);
                }
                Err(error) => eprintln!("reader {id}: {error}"),
            }
            let pin = lease.lease_seqno();
            let pinned = *pin.seqno();
            let hold = Duration::from_millis(rng.random_range(100..600));
            let started = Instant::now();
            // Read, then check the time: a snapshot ends with a read made
            // after its last pause (a freeze included).
            loop {
                if let Some(LeaseError::Lost | LeaseError::TimedOut) = lease.ended() {
                    refused(&store, id, "heartbeat", pinned).await;
                    break 'snapshots;
                }
                let read = if unfenced {
                    store.read_unfenced(pinned).await.map_err(Read::Failed)
                } else {
                    store.read_fenced(fence, pinned).await
                };
                match read {
                    Ok(Some(_)) => reads += 1,
                    Ok(None) => println!("deleted-read reader={id} seqno={pinned}"),
                    Err(Read::Lost) => {
                        refused(&store, id, "read", pinned).await;
                        break 'snapshots;
                    }
                    Err(Read::Failed(error)) => eprintln!("reader {id}: {error}"),
                }
                if started.elapsed() >= hold {
                    break;
                }
                tokio::time::sleep(READ_EVERY).await;
            }
            // Done with the snapshot: the since may pass it, the pin goes.
            lease.maybe_downgrade_since(pinned);
            drop(pin);
            println!("reads reader={id} n={reads}");
            reads = 0;
        }
        if reads > 0 {
            println!("reads reader={id} n={reads}");
        }
        drop(lease);
    }
}

/// The calls the reader makes on its lease, whatever the backend.
trait ReaderLease: Send {
    fn observe_seqno(&self, seqno: u64) -> bool;
    fn lease_seqno(&self) -> leasehold::lease::SeqnoLease<u64>;
    fn maybe_downgrade_since(&self, since: u64) -> bool;
    fn ended(&self) -> Option<LeaseError>;
}

impl<B: leasehold::lease::LeaseBackend<Since = u64, Seqno = u64>> ReaderLease for Lease<B> {
    fn observe_seqno(&self, seqno: u64) -> bool {
        Lease::observe_seqno(self, seqno)
    }
    fn lease_seqno(&self) -> leasehold::lease::SeqnoLease<u64> {
        Lease::lease_seqno(self)
    }
    fn maybe_downgrade_since(&self, since: u64) -> bool {
        Lease::maybe_downgrade_since(self, since)
    }
    fn ended(&self) -> Option<LeaseError> {
        Lease::ended(self)
    }
}

/// Reports a refusal, and whether the pinned version was already deleted
/// (a read the fence stopped).
async fn refused(store: &Store, id: u64, via: &str, pinned: u64) {
    let deleted = !store.version_exists(pinned).await.unwrap_or(true);
    println!("refused reader={id} via={via} seqno={pinned} pinned_deleted={deleted}");
}

#[cfg(unix)]
fn parent_pid() -> u32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    u32::try_from(unsafe { libc::getppid() }).unwrap_or(0)
}

// ------------------------------------------------------------------- demo --

/// What one child process said, and when the demo read it.
struct Said {
    slot: usize,
    line: String,
}

fn spawn_role(
    role: &str,
    args: &[String],
    slot: usize,
    said: &mpsc::UnboundedSender<Said>,
) -> Result<Child, BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg(role)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let said = said.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = said.send(Said { slot, line });
        }
    });
    Ok(child)
}

fn signal(child: &Child, signal: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on a child we own; no memory is involved.
        unsafe {
            libc::kill(i32::try_from(pid).unwrap_or(0), signal);
        }
    }
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
}

/// One reader process's slot.
struct Slot {
    child: Child,
    /// The reader id it registered last.
    reader: Option<u64>,
    /// Resume at this instant (it is stopped).
    resume_at: Option<Instant>,
    /// It was refused and has not registered again since.
    awaiting_registration: bool,
}

/// What the demo saw. Reader ids are never reused, so sets of ids relate
/// the compactor's expiries to the readers' refusals whatever order their
/// lines arrive in.
#[derive(Default)]
struct Tally {
    reads: u64,
    deleted_reads: u64,
    refused: u64,
    reregistered: u64,
    kills: u64,
    saved_by_fence: u64,
    deleted_versions: u64,
    lags: Vec<Duration>,
    /// Reader ids: expired by the compactor, refused, killed, stopped.
    expired: HashSet<u64>,
    refused_ids: HashSet<u64>,
    killed: HashSet<u64>,
    stopped: HashSet<u64>,
}

impl Tally {
    /// Expired readers whose process is alive but that were not refused
    /// (yet).
    fn unrefused(&self) -> usize {
        self.expired
            .iter()
            .filter(|id| !self.refused_ids.contains(id) && !self.killed.contains(id))
            .count()
    }

    fn stops_refused(&self) -> usize {
        self.stopped.intersection(&self.refused_ids).count()
    }

    fn stops_expired(&self) -> usize {
        self.stopped.intersection(&self.expired).count()
    }
}

async fn run_demo(args: &Args) -> Result<bool, BoxError> {
    let (args, _, _temp) = args.with_demo_dir()?;
    let args = &args;
    let readers: usize = args.num("readers", 4);
    let seconds: u64 = args.num("seconds", 30);
    let ttl_ms: u64 = args.num("ttl-ms", 1000);
    let ttl = Duration::from_millis(ttl_ms);
    let period = ttl / 4;
    let stop_for = ttl + 2 * period + Duration::from_millis(500);
    // Staleness (= ttl) plus one heartbeat period; plus the compactor's scan
    // interval twice and the poll of this process (how often the expiry
    // can be noticed), and a scheduling allowance for shared CPUs.
    let bound = ttl + period + 2 * SCAN + Duration::from_millis(300);
    let deadline = Instant::now() + Duration::from_secs(args.num("timeout-s", 300));
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.num("seed", rand::random()));

    let store = Store::open(args, ttl).await?;
    println!(
        "lease_gc: a versioned store and its lease table in {}",
        store.describe()
    );
    println!(
        "  1 compactor, {readers} readers; ttl = staleness {ttl:?}, heartbeat every {period:?}; \
         readers SIGKILLed or SIGSTOPped for {stop_for:?} about every second, for {seconds} s"
    );
    let mut child_args = store.child_args();
    child_args.extend(["--ttl-ms".into(), ttl_ms.to_string()]);
    let mut reader_flags = Vec::new();
    if args.flag("unfenced") {
        println!("  --unfenced: readers read without the store's fence (expect deleted reads)");
        reader_flags.push("--unfenced".to_owned());
    }
    let (said_tx, mut said) = mpsc::unbounded_channel();
    // SIGINT or SIGTERM stops the demo; returning drops the children, which
    // are spawned with `kill_on_drop`: none outlives the demo.
    let mut interrupt = Interrupt::new()?;
    let mut compactor = spawn_role("compactor", &child_args, usize::MAX, &said_tx)?;
    let mut slots: Vec<Slot> = (0..readers)
        .map(|slot| {
            let mut reader_args = child_args.clone();
            reader_args.extend(reader_flags.iter().cloned());
            reader_args.extend(["--seed".into(), rng.random::<u64>().to_string()]);
            Ok::<_, BoxError>(Slot {
                child: spawn_role("reader", &reader_args, slot, &said_tx)?,
                reader: None,
                resume_at: None,
                awaiting_registration: false,
            })
        })
        .collect::<Result<_, _>>()?;

    let mut tally = Tally::default();
    let (lag_tx, mut lag_rx) = mpsc::unbounded_channel::<Duration>();
    let mut pending_lags = 0_usize;
    let started = Instant::now();
    let run_until = started + Duration::from_secs(seconds);
    let mut next_fault = started + Duration::from_millis(rng.random_range(500..1500));
    let mut last_progress = Instant::now();
    let mut horizon = 0;
    loop {
        if Instant::now() > deadline {
            return Err("the demo ran past its --timeout-s watchdog".into());
        }
        if let Some(status) = compactor.try_wait()? {
            return Err(format!("the compactor exited ({status}); see its error above").into());
        }
        tokio::select! {
            Some(Said { slot, line }) = said.recv() => {
                if slot == usize::MAX {
                    if line.starts_with("compactor:") {
                        horizon = field(&line, "horizon").unwrap_or(horizon);
                        tally.deleted_versions = field(&line, "deleted").unwrap_or(0);
                    } else if let Some(id) = line.strip_prefix("expired ").and_then(|l| field(l, "reader")) {
                        tally.expired.insert(id);
                    }
                    continue;
                }
                let s = &mut slots[slot];
                if line.starts_with("registered ") {
                    s.reader = field(&line, "reader");
                    if std::mem::take(&mut s.awaiting_registration) {
                        tally.reregistered += 1;
                    }
                } else if line.starts_with("reads ") {
                    tally.reads += field(&line, "n").unwrap_or(0);
                } else if line.starts_with("deleted-read ") {
                    tally.deleted_reads += 1;
                    println!("VIOLATION slot {slot}: {line}");
                } else if line.starts_with("refused ") {
                    println!("  slot {slot}: {line}");
                    tally.refused += 1;
                    if line.contains("pinned_deleted=true") {
                        tally.saved_by_fence += 1;
                    }
                    if let Some(id) = field(&line, "reader") {
                        tally.refused_ids.insert(id);
                    }
                    s.awaiting_registration = true;
                }
            }
            Some(lag) = lag_rx.recv() => {
                pending_lags -= 1;
                if lag > bound {
                    println!("VIOLATION: a killed reader's lease outlived it by {lag:?} (bound {bound:?})");
                }
                tally.lags.push(lag);
            }
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            signal = interrupt.recv() => {
                for s in &mut slots {
                    let _ = s.child.start_kill();
                    let _ = s.child.wait().await;
                }
                let _ = compactor.start_kill();
                let _ = compactor.wait().await;
                let stopped = slots.len() as u64 + 1;
                return Err(Box::new(Interrupted { signal, stopped }));
            }
        }
        let now = Instant::now();
        for s in &mut slots {
            if s.resume_at.is_some_and(|at| now >= at) {
                s.resume_at = None;
                signal(&s.child, libc::SIGCONT);
            }
        }
        if now < run_until && now >= next_fault {
            next_fault = now + Duration::from_millis(rng.random_range(600..1400));
            // Not a frozen reader (until it is resumed), nor one whose
            // refusal is due: a reader the compactor expired is left alone
            // until it has been refused, or its kill would hide whether the
            // fence refuses it.
            let refusal_due = |reader: Option<u64>| {
                reader.is_some_and(|id| {
                    tally.expired.contains(&id) && !tally.refused_ids.contains(&id)
                })
            };
            let candidates: Vec<usize> = (0..slots.len())
                .filter(|&i| {
                    slots[i].resume_at.is_none()
                        && !slots[i].awaiting_registration
                        && !refusal_due(slots[i].reader)
                })
                .collect();
            if !candidates.is_empty() {
                let victim = candidates[rng.random_range(0..candidates.len())];
                let s = &mut slots[victim];
                if rng.random_bool(0.5) {
                    // SIGKILL: no expiry from the reader; the compactor must
                    // notice its silence. Measure how long its row outlives it.
                    s.child.start_kill()?;
                    let killed_at = Instant::now();
                    tally.kills += 1;
                    if let Some(reader) = s.reader.take() {
                        tally.killed.insert(reader);
                        pending_lags += 1;
                        let (store, lag_tx) = (store.clone(), lag_tx.clone());
                        tokio::spawn(async move {
                            while store
                                .reader_live(ReaderId::new(reader))
                                .await
                                .unwrap_or(true)
                            {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            let _ = lag_tx.send(killed_at.elapsed());
                        });
                    }
                    let _ = s.child.wait().await;
                    let mut reader_args = child_args.clone();
                    reader_args.extend(reader_flags.iter().cloned());
                    reader_args.extend(["--seed".into(), rng.random::<u64>().to_string()]);
                    s.child = spawn_role("reader", &reader_args, victim, &said_tx)?;
                } else {
                    signal(&s.child, libc::SIGSTOP);
                    s.resume_at = Some(Instant::now() + stop_for);
                    if let Some(reader) = s.reader {
                        tally.stopped.insert(reader);
                    }
                }
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            println!(
                "[{:5.1}s] reads {:6}  kills {:3}  stops {:3}  refused {:3}  horizon {horizon:5}  deleted reads {}",
                started.elapsed().as_secs_f64(),
                tally.reads,
                tally.kills,
                tally.stopped.len(),
                tally.refused,
                tally.deleted_reads,
            );
            let _ = std::io::stdout().flush();
        }
        // After the run: wait until the last frozen readers were resumed,
        // refused and registered again, and the last lags measured.
        if now >= run_until {
            let settled = slots
                .iter()
                .all(|s| s.resume_at.is_none() && !s.awaiting_registration)
                && pending_lags == 0
                && tally.unrefused() == 0;
            if settled || now >= run_until + 4 * stop_for {
                break;
            }
        }
    }
    let unrefused = tally.unrefused();
    let unregistered = slots.iter().filter(|s| s.awaiting_registration).count();
    for s in &mut slots {
        signal(&s.child, libc::SIGCONT);
        let _ = s.child.start_kill();
        let _ = s.child.wait().await;
    }
    signal(&compactor, libc::SIGTERM);
    let _ = tokio::time::timeout(Duration::from_secs(10), compactor.wait()).await;
    // The compactor's last line, if it is still in the pipe.
    while let Ok(Some(Said { slot, line })) =
        tokio::time::timeout(Duration::from_millis(500), said.recv()).await
    {
        if slot == usize::MAX && line.starts_with("compactor:") {
            tally.deleted_versions = field(&line, "deleted").unwrap_or(tally.deleted_versions);
        }
    }
    let latest = store.seqno().await?;
    let horizon = store.horizon().await?;
    let missing = store.missing_from(horizon, latest).await?;
    let lag = tally.lags.iter().max().copied().unwrap_or_default();
    let violations = tally.deleted_reads
        + u64::from(lag > bound)
        + unrefused as u64
        + unregistered as u64
        + missing;

    println!(
        "\n=== lease_gc report ({:.1} s) ===",
        started.elapsed().as_secs_f64()
    );
    println!("fenced reads by live readers:          {}", tally.reads);
    println!(
        "reads of a deleted version:            {}",
        tally.deleted_reads
    );
    println!(
        "versions deleted by the compactor:     {}",
        tally.deleted_versions
    );
    println!("readers SIGKILLed:                     {}", tally.kills);
    println!(
        "  lease row outlived the reader:       max {lag:?} over {} kills (bound {bound:?})",
        tally.lags.len()
    );
    println!(
        "readers SIGSTOPped past the staleness: {}",
        tally.stopped.len()
    );
    println!(
        "  expired meanwhile:                   {}",
        tally.stops_expired()
    );
    println!(
        "  refused after resuming:              {}",
        tally.stops_refused()
    );
    println!(
        "live readers expired:                  {}",
        tally.expired.len() - tally.expired.intersection(&tally.killed).count()
    );
    println!("  not refused:                         {unrefused}");
    println!("refusals in all:                       {}", tally.refused);
    println!(
        "  registered again afterwards:         {}",
        tally.reregistered
    );
    println!("  not registered again:                {unregistered}");
    println!(
        "  whose pinned version was deleted:    {} (reads the fence stopped)",
        tally.saved_by_fence
    );
    println!("versions missing at or above the horizon: {missing}");
    println!(
        "verify: deleted_reads={} horizon_lag_ms={} horizon_bound_ms={} refused={} stops={} stops_expired={} \
         stops_refused={} unrefused={unrefused} reregistered={} kills={} lags={} reads={} deleted_versions={} \
         saved_by_fence={} missing_above_horizon={missing} violations={violations}",
        tally.deleted_reads,
        lag.as_millis(),
        bound.as_millis(),
        tally.refused,
        tally.stopped.len(),
        tally.stops_expired(),
        tally.stops_refused(),
        tally.reregistered,
        tally.kills,
        tally.lags.len(),
        tally.reads,
        tally.deleted_versions,
        tally.saved_by_fence,
    );
    #[cfg(feature = "postgres")]
    if let Store::Postgres { table, schema, .. } = &store {
        if args.get("pg-schema").is_none() {
            // The schema this demo made up for itself.
            table
                .client()
                .await?
                .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .await?;
        }
    }
    Ok(violations == 0)
}

// ------------------------------------------------------------------- main --

#[path = "common/args.rs"]
mod args;
use args::{Args, Kind, Opt};
#[path = "common/interrupt.rs"]
mod interrupt;
use interrupt::{Interrupt, Interrupted};

const USAGE: &str = "\
lease_gc: a compactor deletes old versions while readers hold leases on them; readers are
SIGKILLed and SIGSTOPped, and no reader may ever read a deleted version

usage:
  lease_gc [demo] [--dir D | --postgres URL [--pg-schema S]] [--readers 4] [--seconds 30]
                  [--ttl-ms 1000] [--timeout-s 300] [--seed S] [--unfenced]
  lease_gc compactor --db PATH | --postgres URL --pg-schema S  [--ttl-ms 1000]
  lease_gc reader    --db PATH | --postgres URL --pg-schema S  [--ttl-ms 1000] [--seed S]
                     [--unfenced]

the demo exits 0 only if its report counts no violation; SIGINT or SIGTERM stops it and
its child processes (exit status 130 or 143).
";

/// The options of `command`.
fn options(command: &str) -> &'static [Opt] {
    match command {
        "compactor" => &[
            ("db", Kind::Text),
            ("dir", Kind::Text),
            ("postgres", Kind::Text),
            ("pg-schema", Kind::Text),
            ("ttl-ms", Kind::Number),
        ],
        "reader" => &[
            ("db", Kind::Text),
            ("dir", Kind::Text),
            ("postgres", Kind::Text),
            ("pg-schema", Kind::Text),
            ("ttl-ms", Kind::Number),
            ("seed", Kind::Number),
            ("unfenced", Kind::Flag),
        ],
        _ => &[
            ("dir", Kind::Text),
            ("db", Kind::Text),
            ("postgres", Kind::Text),
            ("pg-schema", Kind::Text),
            ("readers", Kind::Number),
            ("seconds", Kind::Number),
            ("ttl-ms", Kind::Number),
            ("timeout-s", Kind::Number),
            ("seed", Kind::Number),
            ("unfenced", Kind::Flag),
        ],
    }
}

impl Args {
    fn dir(&self) -> Result<PathBuf, BoxError> {
        self.get("dir")
            .map(PathBuf::from)
            .ok_or_else(|| "--dir or --db is required".into())
    }
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = args::subcommand(&raw, &["demo", "compactor", "reader"], "demo");
    let args = match Args::parse("lease_gc", rest, options(command), USAGE) {
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
            "compactor" => run_compactor(&args).await.map(|()| true),
            "reader" => run_reader(&args).await.map(|()| true),
            _ => run_demo(&args).await,
        }
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("lease_gc: VIOLATION (see the report above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            let mut message = error.to_string();
            let mut source = error.source();
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("lease_gc {command}: {message}");
            match error.downcast_ref::<Interrupted>() {
                Some(interrupted) => interrupted.exit_code(),
                None => ExitCode::from(2),
            }
        }
    }
}
