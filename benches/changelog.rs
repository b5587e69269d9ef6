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
//! Ends with tables of ratios to the memory log. Throughput (round trips or
//! claimed entries per second) is 1e9 / the time in ns, × 1,000 for claims.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
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
            for table in ["rr", "claim", "fenced"] {
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
        pg.drop_schemas(&rt);
    }
    let postgres_ran = postgres.is_some();

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
}
