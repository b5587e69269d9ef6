//! What do the durable lease tables cost, and does the compactor's horizon
//! query stay cheap as readers pile up?
//!
//! For 1, 100 and 10,000 registered readers of one shard:
//!
//! - `heartbeat/<backend>/<readers>`: one reader's heartbeat that also
//!   downgrades its since (a new since every call) and sends its seqno hold:
//!   the lease task's round trip to the store.
//! - `horizon/<backend>/<readers>`: the owner's `gc_horizon()`, the least
//!   live seqno hold. The tables answer it from the index on
//!   `(shard, seqno_hold)`; its cost should grow no faster than the index's
//!   depth (logarithmically), not with the number of readers.
//!
//! Backends: `memory` ([`MemoryShard`], the in-process reference: its
//! heartbeat recomputes the shard's since and horizon over every reader),
//! `sqlite` ([`SqliteLeaseTable`], `Durability::ProcessCrash`), and
//! `postgres` ([`PostgresLeaseTable`]) when `LEASEHOLD_PG_URL` names a
//! server (`bash scripts/with-postgres.sh cargo bench --all-features --bench lease_table`).
//!
//! Then the lease task's wake-ups for 10,000 `maybe_downgrade_since` calls
//! and one `downgrade_since` against the SQLite table: the downgrades wake
//! nobody; the sync costs the wake-ups of one heartbeat.

use std::time::{Duration, Instant};

use criterion::BenchmarkId;
use parking_lot::Mutex;

use leasehold::changelog::Durability;
use leasehold::clock;
use leasehold::lease::{Lease, LeaseBackend, LeaseConfig, MemoryShard, SqliteLeaseTable};

mod common;

const READERS: [usize; 3] = [1, 100, 10_000];

/// Work done by one horizon query, measured by the store itself:
/// (backend, readers, what, amount).
static WORK: Mutex<Vec<(&'static str, usize, &'static str, i64)>> = Mutex::new(Vec::new());
const TTL: Duration = Duration::from_secs(3600);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Heartbeats `backend` `iters` times, each with a since one ahead.
fn bench_heartbeats<B: LeaseBackend<Since = u64, Seqno = u64>>(
    group: &mut Group<'_>,
    rt: &tokio::runtime::Runtime,
    id: BenchmarkId,
    backend: &B,
) {
    let mut since = 0_u64;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    since += 1;
                    backend.heartbeat(since, 5).await.unwrap();
                }
                start.elapsed()
            })
        });
    });
}

fn bench_memory(heartbeat: &mut Group<'_>, horizon: &mut Group<'_>, rt: &tokio::runtime::Runtime) {
    for readers in READERS {
        let shard = MemoryShard::new(clock::system(), TTL, 0_u64, 10_u64);
        let mut backends: Vec<_> = (0..readers).map(|_| shard.register().0).collect();
        let reader = backends.pop().unwrap();
        bench_heartbeats(heartbeat, rt, BenchmarkId::new("memory", readers), &reader);
        horizon.bench_function(BenchmarkId::new("memory", readers), |b| {
            b.iter(|| shard.gc_horizon())
        });
    }
}

fn bench_sqlite(heartbeat: &mut Group<'_>, horizon: &mut Group<'_>, rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    for readers in READERS {
        let table = rt.block_on(async {
            SqliteLeaseTable::<u64>::builder(dir.path().join("leases.db"), format!("s{readers}"))
                .durability(Durability::ProcessCrash)
                .open(0, 10)
                .await
                .unwrap()
        });
        let reader = rt.block_on(async {
            let mut last = None;
            for i in 0..readers {
                // Spread the holds, so the index is a real one.
                table.advance_seqno(10 + i as u64).await.unwrap();
                last = Some(table.register().await.unwrap().0);
            }
            last.unwrap()
        });
        bench_heartbeats(heartbeat, rt, BenchmarkId::new("sqlite", readers), &reader);
        // The same query on a connection of our own, to read SQLite's count
        // of virtual-machine steps: the work done, free of timing noise.
        let conn = rusqlite::Connection::open(dir.path().join("leases.db")).unwrap();
        let mut statement = conn
            .prepare(
                "SELECT coalesce(
                     (SELECT min(seqno_hold) FROM leasehold_lease_readers WHERE shard = ?1), seqno)
                 FROM leasehold_lease_shards WHERE shard = ?1",
            )
            .unwrap();
        let _: i64 = statement
            .query_row([format!("s{readers}")], |row| row.get(0))
            .unwrap();
        let steps = statement.get_status(rusqlite::StatementStatus::VmStep);
        WORK.lock()
            .push(("sqlite", readers, "VM steps", i64::from(steps)));
        horizon.bench_function(BenchmarkId::new("sqlite", readers), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        table.gc_horizon().await.unwrap();
                    }
                    start.elapsed()
                })
            });
        });
    }
}

#[cfg(feature = "postgres")]
fn bench_postgres(
    heartbeat: &mut Group<'_>,
    horizon: &mut Group<'_>,
    rt: &tokio::runtime::Runtime,
) {
    use leasehold::lease::PostgresLeaseTable;
    let Ok(url) = std::env::var("LEASEHOLD_PG_URL") else {
        eprintln!("LEASEHOLD_PG_URL is not set: no PostgreSQL rows");
        return;
    };
    let schema = format!("lh_bench_{}", std::process::id());
    for readers in READERS {
        let table = rt.block_on(async {
            PostgresLeaseTable::<u64>::builder(url.clone(), format!("s{readers}"))
                .schema(schema.clone())
                .open(0, 10)
                .await
                .unwrap()
        });
        let reader = rt.block_on(async {
            let mut last = None;
            for i in 0..readers {
                table.advance_seqno(10 + i as u64).await.unwrap();
                last = Some(table.register().await.unwrap().0);
            }
            table
                .client()
                .await
                .unwrap()
                .batch_execute(&format!("ANALYZE \"{schema}\".leasehold_lease_readers"))
                .await
                .unwrap();
            last.unwrap()
        });
        bench_heartbeats(
            heartbeat,
            rt,
            BenchmarkId::new("postgres", readers),
            &reader,
        );
        // The buffers the server touched for one horizon query.
        let plan = rt.block_on(async {
            let rows = table
                .client()
                .await
                .unwrap()
                .query(
                    &format!(
                        "EXPLAIN (ANALYZE, BUFFERS) SELECT coalesce(
                             (SELECT min(seqno_hold) FROM \"{schema}\".leasehold_lease_readers
                              WHERE shard = $1), seqno)
                         FROM \"{schema}\".leasehold_lease_shards WHERE shard = $1"
                    ),
                    &[&format!("s{readers}")],
                )
                .await
                .unwrap();
            rows.iter()
                .map(|row| row.get::<_, String>(0))
                .collect::<Vec<_>>()
        });
        let buffers = plan
            .iter()
            .find_map(|line| line.split("shared hit=").nth(1))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(-1);
        // A table of one page is scanned (the planner's right call); from
        // 100 readers on, the index serves the `min()`.
        let scanned = plan
            .iter()
            .any(|line| line.contains("Seq Scan on leasehold_lease_readers"));
        assert!(readers < 100 || !scanned, "{plan:#?}");
        WORK.lock()
            .push(("postgres", readers, "buffers hit", buffers));
        horizon.bench_function(BenchmarkId::new("postgres", readers), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        table.gc_horizon().await.unwrap();
                    }
                    start.elapsed()
                })
            });
        });
        if readers == READERS[READERS.len() - 1] {
            rt.block_on(async {
                table
                    .client()
                    .await
                    .unwrap()
                    .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                    .await
                    .unwrap();
            });
        }
    }
}

/// Wake-ups of the lease task for 10,000 plain downgrades and one sync, on
/// the SQLite table.
fn wakeups_on_sqlite(rt: &tokio::runtime::Runtime) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let table = SqliteLeaseTable::<u64>::builder(dir.path().join("leases.db"), "w")
            .durability(Durability::ProcessCrash)
            .open(0, 0)
            .await
            .unwrap();
        let (reader, since, seqno) = table.register().await.unwrap();
        let lease = Lease::spawn(
            reader,
            &LeaseConfig::builder(TTL).build().unwrap(),
            since,
            seqno,
        );
        tokio::task::yield_now().await;
        let before = lease.stats().wakeups;
        for since in 1..=10_000_u64 {
            lease.maybe_downgrade_since(since);
            tokio::task::yield_now().await;
        }
        let after_plain = lease.stats().wakeups;
        assert_eq!(lease.downgrade_since(10_000).await, Ok(10_000));
        let after_sync = lease.stats().wakeups;
        lease.expire().await.unwrap();
        (after_plain - before, after_sync - before)
    })
}

fn print_growth(group: &str, backends: &[&str]) {
    println!("\n## {group}: time by registered readers (ratio = time / time at 1 reader)");
    println!("| backend | 1 | 100 | 10000 |");
    println!("|---|---:|---:|---:|");
    for backend in backends {
        let base = common::mean_ns(group, &format!("{backend}/1"));
        let mut row = format!("| {backend} |");
        for readers in READERS {
            row += &match (
                common::mean_ns(group, &format!("{backend}/{readers}")),
                base,
            ) {
                (Some(t), Some(b)) => format!(" {} ({:.2}x) |", common::human(t), t / b),
                _ => " not run |".to_owned(),
            };
        }
        println!("{row}");
    }
}

fn main() {
    let rt = runtime();
    let mut c = common::criterion();
    run_groups(&mut c, &rt);
    c.final_summary();
    let backends = ["memory", "sqlite", "postgres"];
    print_growth("lease_table_heartbeat", &backends);
    print_growth("lease_table_horizon", &backends);
    println!("\n## work per horizon query, counted by the store");
    println!("| backend | measure | 1 | 100 | 10000 |");
    println!("|---|---|---:|---:|---:|");
    let work = WORK.lock();
    for backend in ["sqlite", "postgres"] {
        let cells: Vec<_> = work.iter().filter(|w| w.0 == backend).collect();
        if let Some(first) = cells.first() {
            let amounts: Vec<String> = cells.iter().map(|w| w.3.to_string()).collect();
            println!("| {backend} | {} | {} |", first.2, amounts.join(" | "));
        }
    }
    drop(work);
    let (plain, with_sync) = wakeups_on_sqlite(&rt);
    println!(
        "\n## lease task wake-ups on the SQLite table\n| 10,000 maybe_downgrade_since | + one downgrade_since |\n|---:|---:|\n| {plain} | {with_sync} |"
    );
}

fn run_groups(c: &mut criterion::Criterion, rt: &tokio::runtime::Runtime) {
    // criterion allows one open group per `Criterion`; clone its settings
    // for the second group.
    let mut other = common::criterion();
    let mut heartbeat = c.benchmark_group("lease_table_heartbeat");
    let mut horizon = other.benchmark_group("lease_table_horizon");
    bench_memory(&mut heartbeat, &mut horizon, rt);
    bench_sqlite(&mut heartbeat, &mut horizon, rt);
    #[cfg(feature = "postgres")]
    bench_postgres(&mut heartbeat, &mut horizon, rt);
    heartbeat.finish();
    horizon.finish();
}
