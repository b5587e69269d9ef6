//! What does the write-ahead changelog cost?
//!
//! - `record_remove`: one `record` + `remove` round trip — the changelog's
//!   overhead on every write of a client — on `MemoryChangeLog` and on
//!   `SqliteChangeLog` with `Durability::ProcessCrash` (WAL, no fsync per
//!   commit) and `Durability::PowerLoss` (the default: fsync per commit).
//! - `claim_stale_1000`: one `claim_stale` that claims 1,000 stale entries
//!   (a staleness threshold of zero keeps the same 1,000 entries claimable
//!   on every iteration; each claim moves every one to a new generation).
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

use std::time::Duration;

use criterion::Criterion;
use leasehold::changelog::{ChangeLog, Durability, MemoryChangeLog, OwnerId, SqliteChangeLog};

const CLAIMED: usize = 1_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn sqlite(
    dir: &tempfile::TempDir,
    name: &str,
    durability: Durability,
    staleness: Duration,
) -> SqliteChangeLog {
    SqliteChangeLog::builder(dir.path().join(name))
        .staleness(staleness)
        .durability(durability)
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

fn bench_claim<L: ChangeLog>(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, log: &L) {
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
        b.to_async(rt).iter(|| async {
            let claimed = log.claim_stale(&owner, CLAIMED).await.unwrap();
            assert_eq!(claimed.len(), CLAIMED);
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
        staleness: Duration,
    ) -> leasehold::changelog::PostgresChangeLog {
        rt.block_on(
            leasehold::changelog::PostgresChangeLog::builder(&self.url)
                .schema(format!("{}_{table}", self.schema))
                .staleness(staleness)
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
            for table in ["rr", "claim"] {
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

    let memory = MemoryChangeLog::new(leasehold::clock::system(), Duration::from_secs(30));
    bench_round_trip(&mut c, &rt, "memory", &memory);
    let normal = sqlite(
        &dir,
        "rr-normal.db",
        Durability::ProcessCrash,
        Duration::from_secs(30),
    );
    bench_round_trip(&mut c, &rt, "sqlite_process_crash", &normal);
    let full = sqlite(
        &dir,
        "rr-full.db",
        Durability::PowerLoss,
        Duration::from_secs(30),
    );
    bench_round_trip(&mut c, &rt, "sqlite_power_loss", &full);
    #[cfg(feature = "postgres")]
    if let Some(pg) = &postgres {
        let log = pg.log(&rt, "rr", Duration::from_secs(30));
        bench_round_trip(&mut c, &rt, "postgres", &log);
    }

    let memory = MemoryChangeLog::new(leasehold::clock::system(), Duration::ZERO);
    bench_claim(&mut c, &rt, "memory", &memory);
    let normal = sqlite(
        &dir,
        "claim-normal.db",
        Durability::ProcessCrash,
        Duration::ZERO,
    );
    bench_claim(&mut c, &rt, "sqlite_process_crash", &normal);
    let full = sqlite(&dir, "claim-full.db", Durability::PowerLoss, Duration::ZERO);
    bench_claim(&mut c, &rt, "sqlite_power_loss", &full);
    #[cfg(feature = "postgres")]
    if let Some(pg) = &postgres {
        let log = pg.log(&rt, "claim", Duration::ZERO);
        bench_claim(&mut c, &rt, "postgres", &log);
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
