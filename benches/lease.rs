//! What do 10,000 since downgrades cost the lease task?
//!
//! A reader calls `maybe_downgrade_since` 10,000 times, yielding after each
//! (as a real reader does between the snapshots and fetches that produce the
//! downgrades, so the lease task gets a chance to run whenever it was woken),
//! then one `downgrade_since` that waits for the backend to have the since.
//! Both contenders heartbeat a `MemoryShard`, on a current-thread runtime:
//! the reader and the task share one thread, so the time measured is all the
//! CPU time the 10,000 downgrades cost.
//!
//! - `lease`: [`leasehold::lease::Lease`]. The task waits on a predicate
//!   ("a sync or an expiry was requested"); plain downgrades wake nobody.
//! - `rwlock_notify`: what the field does today, written here: the state in
//!   an `RwLock`, a `tokio::sync::Notify` notified on every modification, and
//!   a task that wakes on each notification, re-checks `request_sync` under
//!   the read lock, and goes back to sleep.
//!
//! Ends with the time table (ratio to `rwlock_notify`) and a table of task
//! wake-ups per 10,000 downgrades. Target: the lease's wake-ups at most
//! 1/1000 of the baseline's.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::select;
use leasehold::clock;
use leasehold::lease::{Lease, LeaseBackend, LeaseConfig, MemoryReader, MemoryShard};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

mod common;

const DOWNGRADES: u64 = 10_000;
const GROUP: &str = "lease_downgrades";
/// A ttl long enough that no tick falls inside an iteration: every wake-up
/// counted is caused by the downgrades.
const TTL: Duration = Duration::from_secs(3600);

/// Task wake-ups per iteration, for the second table: (contender, wake-ups).
static WAKEUPS: Mutex<Vec<(&'static str, f64)>> = Mutex::new(Vec::new());

fn record_wakeups(name: &'static str, per_iteration: f64) {
    let mut table = WAKEUPS.lock();
    match table.iter_mut().find(|(n, _)| *n == name) {
        Some(entry) => entry.1 = per_iteration,
        None => table.push((name, per_iteration)),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn shard() -> MemoryShard<u64, u64> {
    MemoryShard::new(clock::system(), TTL, 0, 0)
}

// ------------------------------------------------------------ the baseline

#[derive(Debug, Default)]
struct BaselineState {
    since: u64,
    applied_since: u64,
    request_sync: bool,
    sync_acked: u64,
    expire: bool,
}

/// `RwLock` + `Notify`: every modification notifies the task.
struct Baseline {
    state: RwLock<BaselineState>,
    notify: Notify,
    acked: Notify,
    wakeups: AtomicU64,
}

impl Baseline {
    fn maybe_downgrade_since(&self, since: u64) {
        {
            let mut state = self.state.write();
            if since > state.since {
                state.since = since;
            }
        }
        self.notify.notify_one();
    }

    async fn downgrade_since(&self, since: u64) -> u64 {
        let generation = {
            let mut state = self.state.write();
            state.since = state.since.max(since);
            state.request_sync = true;
            state.sync_acked + 1
        };
        self.notify.notify_one();
        loop {
            let mut acked = pin!(self.acked.notified());
            acked.as_mut().enable();
            {
                let state = self.state.read();
                if state.sync_acked >= generation {
                    return state.applied_since;
                }
            }
            acked.await;
        }
    }

    /// The task: heartbeats every ttl / 4, or when a sync is requested;
    /// woken by every notification to find out which.
    async fn run(self: Arc<Self>, backend: MemoryReader<u64, u64>) {
        let period = TTL / 4;
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            let (sync, expire, since) = {
                let state = self.state.read();
                (state.request_sync, state.expire, state.since)
            };
            if expire {
                return;
            }
            if sync {
                let reply = backend.heartbeat(since, 0).await.unwrap();
                let mut state = self.state.write();
                state.applied_since = reply.since;
                state.request_sync = false;
                state.sync_acked += 1;
                drop(state);
                self.acked.notify_waiters();
            }
            let tick = tokio::time::sleep(period);
            let _ = select(notified, pin!(tick)).await;
            self.wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// --------------------------------------------------------------- the runs

/// 10,000 plain downgrades, each followed by a yield, then one that waits.
async fn downgrades<F: Future>(
    next_since: &mut u64,
    mut plain: impl FnMut(u64),
    synced: impl FnOnce(u64) -> F,
) {
    for _ in 0..DOWNGRADES {
        *next_since += 1;
        plain(*next_since);
        tokio::task::yield_now().await;
    }
    synced(*next_since).await;
}

fn bench_lease(c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let rt = runtime();
    let shard = shard();
    let config = LeaseConfig::builder(TTL).build().unwrap();
    let lease = rt.block_on(async {
        let (backend, since, seqno) = shard.register();
        Lease::spawn(backend, &config, since, seqno)
    });
    let mut next_since = 0;
    c.bench_function("lease", |b| {
        b.iter_custom(|iters| {
            let wakeups_before = lease.stats().wakeups;
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(downgrades(
                    &mut next_since,
                    |since| {
                        lease.maybe_downgrade_since(since);
                    },
                    |since| {
                        let synced = lease.downgrade_since(since);
                        async move { assert_eq!(synced.await, Ok(since)) }
                    },
                ));
            }
            let elapsed = start.elapsed();
            let wakeups = lease.stats().wakeups - wakeups_before;
            record_wakeups("lease", wakeups as f64 / iters as f64);
            elapsed
        });
    });
    rt.block_on(lease.expire()).unwrap();
}

fn bench_baseline(c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let rt = runtime();
    let shard = shard();
    let baseline = Arc::new(Baseline {
        state: RwLock::default(),
        notify: Notify::new(),
        acked: Notify::new(),
        wakeups: AtomicU64::new(0),
    });
    let (backend, ..) = shard.register();
    let task = rt.spawn(Arc::clone(&baseline).run(backend));
    let mut next_since = 0;
    c.bench_function("rwlock_notify", |b| {
        b.iter_custom(|iters| {
            let wakeups_before = baseline.wakeups.load(Ordering::Relaxed);
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(downgrades(
                    &mut next_since,
                    |since| baseline.maybe_downgrade_since(since),
                    |since| {
                        let baseline = &baseline;
                        async move { assert_eq!(baseline.downgrade_since(since).await, since) }
                    },
                ));
            }
            let elapsed = start.elapsed();
            let wakeups = baseline.wakeups.load(Ordering::Relaxed) - wakeups_before;
            record_wakeups("rwlock_notify", wakeups as f64 / iters as f64);
            elapsed
        });
    });
    baseline.state.write().expire = true;
    baseline.notify.notify_one();
    rt.block_on(task).unwrap();
}

fn print_wakeups() {
    let table = WAKEUPS.lock();
    let base = table
        .iter()
        .find(|(n, _)| *n == "rwlock_notify")
        .map_or(f64::NAN, |(_, w)| *w);
    println!(
        "\n## task wake-ups per {DOWNGRADES} downgrades (ratio = wake-ups / rwlock_notify wake-ups; target <= 0.001)"
    );
    println!("| contender | wake-ups | ratio |");
    println!("|---|---:|---:|");
    for (name, wakeups) in table.iter() {
        println!("| {name} | {wakeups:.1} | {:.6} |", wakeups / base);
    }
}

fn main() {
    let mut c = common::criterion();
    {
        let mut group = c.benchmark_group(GROUP);
        bench_baseline(&mut group);
        bench_lease(&mut group);
        group.finish();
    }
    c.final_summary();
    common::print_ratios(GROUP, &[""], &["rwlock_notify", "lease"], "rwlock_notify");
    print_wakeups();
}
