//! What does the write-ahead changelog cost?
//!
//! - `record_remove`: one `record` + `remove` round trip — the changelog's
//!   overhead on every write of a client — on `MemoryChangeLog` and on
//!   `SqliteChangeLog` with `Durability::ProcessCrash` (WAL, no fsync per
//!   commit) and `Durability::PowerLoss` (the default: fsync per commit).
//! - `claim_stale_1000`: one `claim_stale` that claims 1,000 stale entries
//!   (untimed before each iteration: the log looks at the entries and its
//!   manual clock moves past the staleness threshold, so the same 1,000
//!   entries are claimable again; each claim moves every one to a new
//!   generation).
//! - `fenced_commit`: the writer's metadata compare-and-swap (one `UPDATE`)
//!   run through the log's fenced commit (`fenced`: one transaction with the
//!   fence check and the committed mark) beside the same `UPDATE` as a plain
//!   autocommit statement on the caller's own connection (`unfenced`, what a
//!   writer did before), on SQLite (both durabilities) and PostgreSQL.
//! - both against `PostgresChangeLog` too (feature `postgres`) when
//!   `LEASEHOLD_PG_URL` names a server — e.g. the local throwaway one of
//!   `bash scripts/with-postgres.sh cargo bench --all-features --bench changelog`
//!   (which runs the server with `fsync=off`: the figures are the
//!   round-trip and statement cost, not a disk's). Without the URL the
//!   PostgreSQL rows say "not run" and a notice says why.
//!
//! - `group_commit_*`: W = 1, 8, 32, 128 concurrent writers, each doing
//!   `record` + `remove` pairs; the time is per pair, all writers together
//!   (so throughput = 1e9 / time in ns). Against, in the same run:
//!   - `mutex_connection`: one `rusqlite::Connection` behind a mutex, each
//!     statement its own autocommit transaction on tokio's blocking pool —
//!     the shape of the log before group commit, and of the code a user
//!     writes by hand;
//!   - `direct`: the same two statements called directly on one connection
//!     (autocommit), on the writer's own thread (behind a mutex when W > 1);
//!   - `fsync_loop`: the serial fsync limit, a loop of 64-byte
//!     write + `fdatasync` on a file, two per pair (one per operation when
//!     each operation commits alone);
//!   - PostgreSQL: `deadpool`, tokio-postgres + deadpool with the same pool
//!     size as the log's default, `INSERT … RETURNING id` + `DELETE`. Every
//!     pair leaves a dead row in its table, so the PostgreSQL contenders
//!     take turns at each W and every table is vacuumed before each
//!     measurement: none runs beside autovacuum cleaning up after another.
//!
//!   Filter with e.g. `-- group_commit_power_loss`.
//!
//! Ends with tables of ratios to the memory log. Throughput (round trips or
//! claimed entries per second) is 1e9 / the time in ns, × 1,000 for claims.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use futures::future::BoxFuture;
use leasehold::changelog::{ChangeLog, Durability, MemoryChangeLog, OwnerId, SqliteChangeLog};
use leasehold::clock::ManualClock;

const CLAIMED: usize = 1_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

const STALENESS: Duration = Duration::from_secs(30);

fn sqlite(
    dir: &tempfile::TempDir,
    name: &str,
    durability: Durability,
    clock: &ManualClock,
) -> SqliteChangeLog {
    SqliteChangeLog::builder(dir.path().join(name))
        .staleness(STALENESS)
        .durability(durability)
        .clock(Arc::new(clock.clone()))
        .open_blocking()
        .unwrap()
}

fn bench_round_trip<L: ChangeLog>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    log: &L,
) {
    let owner = OwnerId::new("bench-writer");
    let payload = vec![7_u8; 64];
    c.benchmark_group("record_remove")
        .bench_function(name, |b| {
            b.to_async(rt).iter(|| async {
                let fence = log.record(&owner, payload.clone()).await.unwrap();
                log.remove(&fence).await.unwrap();
            });
        });
}

fn bench_claim<L: ChangeLog>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    log: &L,
    clock: &ManualClock,
) {
    let owner = OwnerId::new("bench-recovery");
    rt.block_on(async {
        for i in 0..CLAIMED {
            log.record(&OwnerId::new("crashed"), i.to_le_bytes().to_vec())
                .await
                .unwrap();
        }
    });
    let mut group = c.benchmark_group("claim_stale_1000");
    group.sample_size(10);
    group.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let owner = &owner;
            async move {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    // Untimed: the log sees the entries, then they age.
                    log.list().await.unwrap();
                    clock.advance(STALENESS);
                    let start = Instant::now();
                    let claimed = log.claim_stale(owner, CLAIMED).await.unwrap();
                    timed += start.elapsed();
                    assert_eq!(claimed.len(), CLAIMED);
                }
                timed
            }
        });
    });
    group.finish();
}

/// The metadata CAS of a writer, fenced by the log or not, on one SQLite
/// file holding both the log and the `objects` table.
fn bench_fenced_sqlite(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    log: &SqliteChangeLog,
) {
    const CAS: &str = "UPDATE objects SET version = version + 1 WHERE name = 'a'";
    let own = rusqlite::Connection::open(log.path()).unwrap();
    own.busy_timeout(Duration::from_secs(5)).unwrap();
    own.execute_batch(
        "CREATE TABLE IF NOT EXISTS objects (name TEXT PRIMARY KEY, version INTEGER NOT NULL);
         INSERT OR IGNORE INTO objects VALUES ('a', 0);",
    )
    .unwrap();
    // The caller's own connection, as durable as the log's.
    let full = name.ends_with("power_loss");
    own.execute_batch(if full {
        "PRAGMA synchronous = FULL"
    } else {
        "PRAGMA synchronous = NORMAL"
    })
    .unwrap();
    let own = Arc::new(std::sync::Mutex::new(own));
    let fence = rt
        .block_on(log.record(&OwnerId::new("bench-writer"), vec![1; 64]))
        .unwrap();
    let mut group = c.benchmark_group("fenced_commit");
    group.bench_function(BenchmarkId::new("unfenced", name), |b| {
        b.to_async(rt).iter(|| {
            let own = Arc::clone(&own);
            async move {
                tokio::task::spawn_blocking(move || own.lock().unwrap().execute(CAS, []).unwrap())
                    .await
                    .unwrap()
            }
        });
    });
    group.bench_function(BenchmarkId::new("fenced", name), |b| {
        b.to_async(rt).iter(|| async {
            log.commit_fenced(&fence, |tx| tx.execute(CAS, []))
                .await
                .unwrap()
        });
    });
    group.finish();
}

/// The writer counts of the group-commit benches.
const WRITERS: [usize; 4] = [1, 8, 32, 128];

/// One writer's `record` + `remove` pair (or its baseline's equivalent).
type Pair = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Runs `iters` pairs spread over `writers` concurrent tasks; the time per
/// pair, all writers together, times `iters`.
fn concurrent_pairs(
    rt: &tokio::runtime::Runtime,
    iters: u64,
    writers: usize,
    pair: &Pair,
) -> Duration {
    let per_writer = iters.div_ceil(writers as u64).max(1);
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let pair = Arc::clone(pair);
                tokio::spawn(async move {
                    for _ in 0..per_writer {
                        pair().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let done = per_writer * writers as u64;
        start.elapsed().mul_f64(iters as f64 / done as f64)
    })
}

/// One contender of a group-commit bench.
struct Contender {
    name: &'static str,
    pair: Pair,
    /// Measured at W = 1 only: a serial limit, the same at every W.
    serial: bool,
}

impl Contender {
    fn new(name: &'static str, pair: Pair) -> Self {
        Contender {
            name,
            pair,
            serial: false,
        }
    }

    fn serial(name: &'static str, pair: Pair) -> Self {
        Contender {
            name,
            pair,
            serial: true,
        }
    }
}

/// Measures every contender at every W in [`WRITERS`]: the contenders of
/// one W one right after the other, so that the machine's drift over a run
/// (load, disk) falls on all of them alike instead of on whichever is
/// measured last.
fn bench_pairs(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    group: &str,
    contenders: &[Contender],
) {
    bench_pairs_after(c, rt, group, contenders, || {});
}

/// [`bench_pairs`], calling `prepare` (untimed) before each measurement.
fn bench_pairs_after(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    group: &str,
    contenders: &[Contender],
    prepare: impl Fn(),
) {
    let mut g = c.benchmark_group(group);
    for writers in WRITERS {
        for contender in contenders {
            if contender.serial && writers != 1 {
                continue;
            }
            prepare();
            g.bench_function(BenchmarkId::new(contender.name, writers), |b| {
                b.iter_custom(|iters| concurrent_pairs(rt, iters, writers, &contender.pair));
            });
        }
    }
    g.finish();
}

fn leasehold_pair<L: ChangeLog + Clone + 'static>(log: &L) -> Pair {
    let log = log.clone();
    let owner = OwnerId::new("bench-writer");
    Arc::new(move || {
        let (log, owner) = (log.clone(), owner.clone());
        Box::pin(async move {
            let fence = log.record(&owner, vec![7_u8; 64]).await.unwrap();
            log.remove(&fence).await.unwrap();
        })
    })
}

/// The hand-written log: a table like the changelog's, two autocommit
/// statements per pair.
fn hand_written(
    dir: &tempfile::TempDir,
    name: &str,
    durability: Durability,
) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(dir.path().join(name)).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let sync = match durability {
        Durability::PowerLoss => "FULL",
        _ => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync};
         CREATE TABLE IF NOT EXISTS intents (
             id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL,
             generation INTEGER NOT NULL, payload BLOB NOT NULL);"
    ))
    .unwrap();
    conn
}

fn hand_written_pair(conn: &rusqlite::Connection) {
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO intents (owner, generation, payload) VALUES (?1, 1, ?2) RETURNING id",
        )
        .unwrap()
        .query_row(rusqlite::params!["bench-writer", vec![7_u8; 64]], |row| {
            row.get(0)
        })
        .unwrap();
    conn.prepare_cached("DELETE FROM intents WHERE id = ?1 AND owner = ?2 AND generation = 1")
        .unwrap()
        .execute(rusqlite::params![id, "bench-writer"])
        .unwrap();
}

/// One connection behind a mutex, each statement on the blocking pool.
fn mutex_connection_pair(conn: rusqlite::Connection) -> Pair {
    let conn = Arc::new(std::sync::Mutex::new(conn));
    Arc::new(move || {
        let conn = Arc::clone(&conn);
        Box::pin(async move {
            let insert = Arc::clone(&conn);
            let id: i64 = tokio::task::spawn_blocking(move || {
                insert
                    .lock()
                    .unwrap()
                    .prepare_cached(
                        "INSERT INTO intents (owner, generation, payload) VALUES (?1, 1, ?2) RETURNING id",
                    )
                    .unwrap()
                    .query_row(rusqlite::params!["bench-writer", vec![7_u8; 64]], |row| row.get(0))
                    .unwrap()
            })
            .await
            .unwrap();
            tokio::task::spawn_blocking(move || {
                conn.lock()
                    .unwrap()
                    .prepare_cached(
                        "DELETE FROM intents WHERE id = ?1 AND owner = ?2 AND generation = 1",
                    )
                    .unwrap()
                    .execute(rusqlite::params![id, "bench-writer"])
                    .unwrap();
            })
            .await
            .unwrap();
        })
    })
}

/// The two statements called directly on the writer's thread.
fn direct_pair(conn: rusqlite::Connection) -> Pair {
    let conn = Arc::new(std::sync::Mutex::new(conn));
    Arc::new(move || {
        hand_written_pair(&conn.lock().unwrap());
        Box::pin(async {})
    })
}

/// The serial fsync limit: one 64-byte write + fdatasync per operation,
/// overwriting a preallocated file in place (as SQLite reuses its WAL), so
/// that no fsync also has to write the file's size.
fn fsync_pair(dir: &tempfile::TempDir) -> Pair {
    use std::os::unix::fs::FileExt;
    const SPAN: u64 = 1 << 20;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.path().join("fsync-loop"))
        .unwrap();
    file.write_all_at(&vec![0_u8; SPAN as usize], 0).unwrap();
    file.sync_all().unwrap();
    let state = Arc::new(std::sync::Mutex::new((file, 0_u64)));
    Arc::new(move || {
        let mut state = state.lock().unwrap();
        let (file, offset) = &mut *state;
        for _ in 0..2 {
            file.write_all_at(&[7_u8; 64], *offset).unwrap();
            file.sync_data().unwrap();
            *offset = (*offset + 64) % SPAN;
        }
        Box::pin(async {})
    })
}

fn bench_group_commit_sqlite(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    dir: &tempfile::TempDir,
    clock: &ManualClock,
) {
    let full = sqlite(dir, "gc-full.db", Durability::PowerLoss, clock);
    let mutex = hand_written(dir, "gc-mutex-full.db", Durability::PowerLoss);
    bench_pairs(
        c,
        rt,
        "group_commit_power_loss",
        &[
            Contender::new("leasehold", leasehold_pair(&full)),
            Contender::new("mutex_connection", mutex_connection_pair(mutex)),
            Contender::serial("fsync_loop", fsync_pair(dir)),
        ],
    );

    let normal = sqlite(dir, "gc-normal.db", Durability::ProcessCrash, clock);
    let mutex = hand_written(dir, "gc-mutex-normal.db", Durability::ProcessCrash);
    let direct = hand_written(dir, "gc-direct-normal.db", Durability::ProcessCrash);
    bench_pairs(
        c,
        rt,
        "group_commit_process_crash",
        &[
            Contender::new("leasehold", leasehold_pair(&normal)),
            Contender::new("direct", direct_pair(direct)),
            Contender::new("mutex_connection", mutex_connection_pair(mutex)),
        ],
    );
}

/// Prints one group-commit table: pairs/s per contender and W, and each
/// contender's throughput as a multiple of `baseline`'s.
fn print_group_commit(group: &str, contenders: &[&str], baseline: &str) {
    println!(
        "\n## {group}: record+remove pairs/s, all writers together (× = throughput / {baseline}'s)"
    );
    let mut header = format!("| {:<5} |", "W");
    for contender in contenders {
        header += &format!(" {contender:<26} |");
    }
    println!("{header}");
    println!("|{}", "---|".repeat(contenders.len() + 1));
    for writers in WRITERS {
        let case = writers.to_string();
        let ns = |contender: &str| common::mean_ns(group, &format!("{contender}/{case}"));
        // A serial baseline is measured at W = 1 only.
        let base = ns(baseline).or_else(|| common::mean_ns(group, &format!("{baseline}/1")));
        let mut row = format!("| {case:<5} |");
        for contender in contenders {
            let own = ns(contender).or_else(|| {
                (contender == &baseline)
                    .then(|| common::mean_ns(group, &format!("{baseline}/1")))
                    .flatten()
            });
            let cell = match (own, base) {
                (Some(t), Some(b)) => format!("{:.0} ({:.2}x)", 1e9 / t, b / t),
                (Some(t), None) => format!("{:.0}", 1e9 / t),
                _ => "not run".to_owned(),
            };
            row += &format!(" {cell:<26} |");
        }
        println!("{row}");
    }
}

/// The PostgreSQL contender, in a schema of its own (dropped at the end).
#[cfg(feature = "postgres")]
struct Postgres {
    url: String,
    schema: String,
}

#[cfg(feature = "postgres")]
impl Postgres {
    fn from_env() -> Option<Self> {
        match std::env::var("LEASEHOLD_PG_URL") {
            Ok(url) if !url.is_empty() => Some(Postgres {
                url,
                schema: format!("lh_bench_{}", std::process::id()),
            }),
            _ => {
                println!(
                    "\n!!! PostgreSQL SKIPPED: LEASEHOLD_PG_URL is not set. Run \
                     `bash scripts/with-postgres.sh cargo bench --all-features --bench changelog` !!!\n"
                );
                None
            }
        }
    }

    fn log(
        &self,
        rt: &tokio::runtime::Runtime,
        table: &str,
        clock: &ManualClock,
    ) -> leasehold::changelog::PostgresChangeLog {
        rt.block_on(
            leasehold::changelog::PostgresChangeLog::builder(&self.url)
                .schema(format!("{}_{table}", self.schema))
                .staleness(STALENESS)
                .clock(Arc::new(clock.clone()))
                .open(),
        )
        .unwrap()
    }

    fn drop_schemas(&self, rt: &tokio::runtime::Runtime) {
        rt.block_on(async {
            let (client, connection) =
                leasehold::tokio_postgres::connect(&self.url, leasehold::tokio_postgres::NoTls)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            for table in ["rr", "claim", "fenced", "gc", "gc4"] {
                client
                    .batch_execute(&format!(
                        "DROP SCHEMA IF EXISTS {}_{table} CASCADE",
                        self.schema
                    ))
                    .await
                    .unwrap();
            }
        });
    }
}

/// The metadata CAS on PostgreSQL, fenced by the log or not; both on a
/// pooled connection of the log's own pool.
#[cfg(feature = "postgres")]
fn bench_fenced_postgres(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    log: &leasehold::changelog::PostgresChangeLog,
) {
    let schema = log.schema().unwrap().to_owned();
    let cas = format!("UPDATE \"{schema}\".objects SET version = version + 1 WHERE name = 'a'");
    rt.block_on(async {
        log.client()
            .await
            .unwrap()
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS \"{schema}\".objects (name TEXT PRIMARY KEY, version BIGINT NOT NULL);
                 INSERT INTO \"{schema}\".objects VALUES ('a', 0) ON CONFLICT DO NOTHING;"
            ))
            .await
            .unwrap();
    });
    let fence = rt
        .block_on(log.record(&OwnerId::new("bench-writer"), vec![1; 64]))
        .unwrap();
    let mut group = c.benchmark_group("fenced_commit");
    group.bench_function(BenchmarkId::new("unfenced", "postgres"), |b| {
        b.to_async(rt).iter(|| async {
            let client = log.client().await.unwrap();
            client.execute(cas.as_str(), &[]).await.unwrap()
        });
    });
    group.bench_function(BenchmarkId::new("fenced", "postgres"), |b| {
        b.to_async(rt).iter(|| async {
            let cas = cas.clone();
            log.commit_fenced(&fence, move |tx| {
                Box::pin(async move { tx.execute(cas.as_str(), &[]).await })
            })
            .await
            .unwrap()
        });
    });
    group.finish();
}

/// Group commit on PostgreSQL: the log with its default pool, the log with
/// the previous default of 4 connections, and tokio-postgres + deadpool by
/// hand with the log's pool size.
///
/// Each contender writes its own table, and every row written is deleted, so
/// each table collects dead rows: a contender measured after others would
/// share the server's CPU with autovacuum cleaning up after them. So the
/// contenders take turns at each W, and every table is vacuumed before each
/// measurement.
#[cfg(feature = "postgres")]
fn bench_group_commit_postgres(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    pg: &Postgres,
    clock: &ManualClock,
) -> usize {
    let group = "group_commit_postgres";
    let log = pg.log(rt, "gc", clock);
    let pool_size = log.pool_size();
    let small = rt
        .block_on(
            leasehold::changelog::PostgresChangeLog::builder(&pg.url)
                .schema(format!("{}_gc4", pg.schema))
                .staleness(STALENESS)
                .clock(Arc::new(clock.clone()))
                .pool_size(4)
                .open(),
        )
        .unwrap();

    let table = format!("\"{}_gc\".intents", pg.schema);
    let config: leasehold::tokio_postgres::Config = pg.url.parse().unwrap();
    let manager = deadpool_postgres::Manager::from_config(
        config,
        leasehold::tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(pool_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .unwrap();
    rt.block_on(async {
        pool.get()
            .await
            .unwrap()
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {table} (
                     id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, owner TEXT NOT NULL,
                     generation BIGINT NOT NULL, payload BYTEA NOT NULL)"
            ))
            .await
            .unwrap();
    });
    let insert = Arc::new(format!(
        "INSERT INTO {table} (owner, generation, payload) VALUES ($1, 1, $2) RETURNING id"
    ));
    let delete = Arc::new(format!(
        "DELETE FROM {table} WHERE id = $1 AND owner = $2 AND generation = 1"
    ));
    let vacuum = format!(
        "VACUUM \"{schema}_gc\".leasehold_changelog, \"{schema}_gc4\".leasehold_changelog, {table}",
        schema = pg.schema
    );
    let vacuum_pool = pool.clone();
    let by_hand: Pair = Arc::new(move || {
        let (pool, insert, delete) = (pool.clone(), Arc::clone(&insert), Arc::clone(&delete));
        Box::pin(async move {
            let client = pool.get().await.unwrap();
            let statement = client.prepare_cached(&insert).await.unwrap();
            let row = client
                .query_one(&statement, &[&"bench-writer", &vec![7_u8; 64]])
                .await
                .unwrap();
            let id: i64 = row.get(0);
            drop(client);
            let client = pool.get().await.unwrap();
            let statement = client.prepare_cached(&delete).await.unwrap();
            client
                .execute(&statement, &[&id, &"bench-writer"])
                .await
                .unwrap();
        })
    });
    let vacuum_all = || {
        rt.block_on(async {
            let client = vacuum_pool.get().await.unwrap();
            client.batch_execute(&vacuum).await.unwrap();
        });
    };
    bench_pairs_after(
        c,
        rt,
        group,
        &[
            Contender::new("leasehold", leasehold_pair(&log)),
            Contender::new("deadpool", by_hand),
            Contender::new("leasehold_pool_4", leasehold_pair(&small)),
        ],
        vacuum_all,
    );
    pool_size
}

#[cfg(not(feature = "postgres"))]
struct Postgres;

#[cfg(not(feature = "postgres"))]
impl Postgres {
    fn from_env() -> Option<Self> {
        println!(
            "\n!!! PostgreSQL SKIPPED: the bench was built without the `postgres` feature \
             (use `--all-features`) !!!\n"
        );
        None
    }
}

fn main() {
    let mut c = common::criterion();
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let postgres = Postgres::from_env();

    let clock = ManualClock::new();
    let memory = MemoryChangeLog::new(Arc::new(clock.clone()), STALENESS);
    bench_round_trip(&mut c, &rt, "memory", &memory);
    let normal = sqlite(&dir, "rr-normal.db", Durability::ProcessCrash, &clock);
    bench_round_trip(&mut c, &rt, "sqlite_process_crash", &normal);
    let full = sqlite(&dir, "rr-full.db", Durability::PowerLoss, &clock);
    bench_round_trip(&mut c, &rt, "sqlite_power_loss", &full);
    #[cfg(feature = "postgres")]
    if let Some(pg) = &postgres {
        let log = pg.log(&rt, "rr", &clock);
        bench_round_trip(&mut c, &rt, "postgres", &log);
    }

    bench_claim(&mut c, &rt, "memory", &memory, &clock);
    let normal = sqlite(&dir, "claim-normal.db", Durability::ProcessCrash, &clock);
    bench_claim(&mut c, &rt, "sqlite_process_crash", &normal, &clock);
    let full = sqlite(&dir, "claim-full.db", Durability::PowerLoss, &clock);
    bench_claim(&mut c, &rt, "sqlite_power_loss", &full, &clock);
    #[cfg(feature = "postgres")]
    if let Some(pg) = &postgres {
        let log = pg.log(&rt, "claim", &clock);
        bench_claim(&mut c, &rt, "postgres", &log, &clock);
    }

    let normal = sqlite(&dir, "fenced-normal.db", Durability::ProcessCrash, &clock);
    bench_fenced_sqlite(&mut c, &rt, "sqlite_process_crash", &normal);
    let full = sqlite(&dir, "fenced-full.db", Durability::PowerLoss, &clock);
    bench_fenced_sqlite(&mut c, &rt, "sqlite_power_loss", &full);
    #[cfg(feature = "postgres")]
    if let Some(pg) = &postgres {
        let log = pg.log(&rt, "fenced", &clock);
        bench_fenced_postgres(&mut c, &rt, &log);
    }
    let postgres_ran = postgres.is_some();

    bench_group_commit_sqlite(&mut c, &rt, &dir, &clock);
    #[cfg(feature = "postgres")]
    let pg_pool = postgres.as_ref().map(|pg| {
        let size = bench_group_commit_postgres(&mut c, &rt, pg, &clock);
        pg.drop_schemas(&rt);
        size
    });

    c.final_summary();
    let contenders: &[&str] = if postgres_ran {
        &[
            "memory",
            "sqlite_process_crash",
            "sqlite_power_loss",
            "postgres",
        ]
    } else {
        &["memory", "sqlite_process_crash", "sqlite_power_loss"]
    };
    common::print_ratios("record_remove", &[""], contenders, "memory");
    common::print_ratios("claim_stale_1000", &[""], contenders, "memory");
    let backends: &[&str] = if postgres_ran {
        &["sqlite_process_crash", "sqlite_power_loss", "postgres"]
    } else {
        &["sqlite_process_crash", "sqlite_power_loss"]
    };
    common::print_ratios(
        "fenced_commit",
        backends,
        &["unfenced", "fenced"],
        "unfenced",
    );
    println!("\n## throughput");
    for &contender in contenders {
        let rr = common::mean_ns("record_remove", contender);
        let claim = common::mean_ns("claim_stale_1000", contender);
        let per_s = |ns: Option<f64>, k: f64| {
            ns.map_or("not run".to_owned(), |ns| format!("{:.0}", k * 1e9 / ns))
        };
        println!(
            "| {contender:<22} | record+remove round trips/s {:>10} | entries claimed/s {:>10} |",
            per_s(rr, 1.0),
            per_s(claim, CLAIMED as f64)
        );
    }

    print_group_commit(
        "group_commit_power_loss",
        &["leasehold", "mutex_connection", "fsync_loop"],
        "mutex_connection",
    );
    print_group_commit(
        "group_commit_power_loss",
        &["leasehold", "mutex_connection", "fsync_loop"],
        "fsync_loop",
    );
    print_group_commit(
        "group_commit_process_crash",
        &["leasehold", "mutex_connection", "direct"],
        "direct",
    );
    #[cfg(feature = "postgres")]
    if let Some(size) = pg_pool {
        println!("\n(PostgreSQL: the log's default pool and deadpool's: {size} connections)");
        print_group_commit(
            "group_commit_postgres",
            &["leasehold", "leasehold_pool_4", "deadpool"],
            "deadpool",
        );
    }
}
