//! WatchCell against its peers, in one run:
//!
//! - blocking ping-pong between two threads: `WatchCell` vs `parking_lot`
//!   Mutex+Condvar vs std Mutex+Condvar (baseline: parking_lot);
//! - async ping-pong between two tasks on a multi-thread runtime: `WatchCell`
//!   vs `tokio::sync::watch` vs a hand-rolled `RwLock` + `Notify` cell
//!   (baseline: watch);
//! - fan-out: N waiters, each waiting for a distinct threshold, one writer
//!   stepping through the thresholds: time per modification and wake-ups per
//!   waiter (baseline: watch).
//!
//! Run: `cargo bench --bench watch_cell`. Ratios are printed at the end.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use leasehold::WatchCell;
use parking_lot::Mutex;
use tokio::runtime::Runtime;
use tokio::sync::{Notify, RwLock, watch};

// ---------------------------------------------------------------- peers ---

/// The pattern the field hand-rolls today: state behind a `RwLock`, every
/// modification followed by `notify_waiters`, every waiter re-checking.
struct RwLockNotifyCell<T> {
    value: RwLock<T>,
    notify: Notify,
}

impl<T> RwLockNotifyCell<T> {
    fn new(value: T) -> Self {
        Self {
            value: RwLock::new(value),
            notify: Notify::new(),
        }
    }

    async fn modify(&self, f: impl FnOnce(&mut T)) {
        f(&mut *self.value.write().await);
        self.notify.notify_waiters();
    }

    /// Waits until `pred` holds; returns how many times the task was woken.
    async fn wait_for(&self, mut pred: impl FnMut(&T) -> bool) -> u64 {
        let mut wakeups = 0;
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if pred(&*self.value.read().await) {
                return wakeups;
            }
            notified.await;
            wakeups += 1;
        }
    }
}

fn multi_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------- blocking ping-pong ---

fn blocking_ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("blocking_ping_pong");

    group.bench_function("watch_cell", |b| {
        b.iter_custom(|iters| {
            let cell = WatchCell::new(0_u64);
            std::thread::scope(|s| {
                s.spawn(|| {
                    for i in 0..iters {
                        cell.blocking_wait_for(|v| *v == 2 * i + 1).unwrap();
                        cell.modify(|v| *v += 1);
                    }
                });
                let start = Instant::now();
                for i in 0..iters {
                    cell.modify(|v| *v += 1);
                    cell.blocking_wait_for(|v| *v == 2 * i + 2).unwrap();
                }
                start.elapsed()
            })
        })
    });

    group.bench_function("parking_lot", |b| {
        b.iter_custom(|iters| {
            let state = (Mutex::new(0_u64), parking_lot::Condvar::new());
            std::thread::scope(|s| {
                s.spawn(|| {
                    let (lock, condvar) = &state;
                    for i in 0..iters {
                        let mut v = lock.lock();
                        condvar.wait_while(&mut v, |v| *v != 2 * i + 1);
                        *v += 1;
                        condvar.notify_one();
                    }
                });
                let (lock, condvar) = &state;
                let start = Instant::now();
                for i in 0..iters {
                    let mut v = lock.lock();
                    *v += 1;
                    condvar.notify_one();
                    condvar.wait_while(&mut v, |v| *v != 2 * i + 2);
                }
                start.elapsed()
            })
        })
    });

    group.bench_function("std", |b| {
        b.iter_custom(|iters| {
            let state = (std::sync::Mutex::new(0_u64), std::sync::Condvar::new());
            std::thread::scope(|s| {
                s.spawn(|| {
                    let (lock, condvar) = &state;
                    for i in 0..iters {
                        let v = lock.lock().unwrap();
                        let mut v = condvar.wait_while(v, |v| *v != 2 * i + 1).unwrap();
                        *v += 1;
                        condvar.notify_one();
                    }
                });
                let (lock, condvar) = &state;
                let start = Instant::now();
                for i in 0..iters {
                    let mut v = lock.lock().unwrap();
                    *v += 1;
                    condvar.notify_one();
                    drop(condvar.wait_while(v, |v| *v != 2 * i + 2).unwrap());
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

// ------------------------------------------------------- async ping-pong ---

fn async_ping_pong(c: &mut Criterion) {
    let runtime = multi_thread_runtime();
    let mut group = c.benchmark_group("async_ping_pong");

    group.bench_function("watch_cell", |b| {
        b.to_async(&runtime).iter_custom(|iters| async move {
            let cell = WatchCell::new(0_u64);
            let pong = tokio::spawn({
                let cell = cell.clone();
                async move {
                    for i in 0..iters {
                        cell.wait_for(move |v| *v == 2 * i + 1).await.unwrap();
                        cell.modify(|v| *v += 1);
                    }
                }
            });
            let ping = tokio::spawn(async move {
                let start = Instant::now();
                for i in 0..iters {
                    cell.modify(|v| *v += 1);
                    cell.wait_for(move |v| *v == 2 * i + 2).await.unwrap();
                }
                start.elapsed()
            });
            pong.await.unwrap();
            ping.await.unwrap()
        })
    });

    group.bench_function("tokio_watch", |b| {
        b.to_async(&runtime).iter_custom(|iters| async move {
            let (tx, mut rx_ping) = watch::channel(0_u64);
            let tx = Arc::new(tx);
            let mut rx_pong = tx.subscribe();
            let pong = tokio::spawn({
                let tx = tx.clone();
                async move {
                    for i in 0..iters {
                        rx_pong.wait_for(|v| *v == 2 * i + 1).await.unwrap();
                        tx.send_modify(|v| *v += 1);
                    }
                }
            });
            let ping = tokio::spawn(async move {
                let start = Instant::now();
                for i in 0..iters {
                    tx.send_modify(|v| *v += 1);
                    rx_ping.wait_for(|v| *v == 2 * i + 2).await.unwrap();
                }
                start.elapsed()
            });
            pong.await.unwrap();
            ping.await.unwrap()
        })
    });

    group.bench_function("rwlock_notify", |b| {
        b.to_async(&runtime).iter_custom(|iters| async move {
            let cell = Arc::new(RwLockNotifyCell::new(0_u64));
            let pong = tokio::spawn({
                let cell = cell.clone();
                async move {
                    for i in 0..iters {
                        cell.wait_for(move |v| *v == 2 * i + 1).await;
                        cell.modify(|v| *v += 1).await;
                    }
                }
            });
            let ping = tokio::spawn(async move {
                let start = Instant::now();
                for i in 0..iters {
                    cell.modify(|v| *v += 1).await;
                    cell.wait_for(move |v| *v == 2 * i + 2).await;
                }
                start.elapsed()
            });
            pong.await.unwrap();
            ping.await.unwrap()
        })
    });
    group.finish();
}

// ---------------------------------------------------------------- fan-out ---

const FAN_OUT: [usize; 4] = [1, 10, 100, 1000];

/// Wake-ups and waiters observed per (contender, N), over all iterations.
type WakeupTally = BTreeMap<(&'static str, usize), (u64, u64)>;
static WAKEUPS: Mutex<WakeupTally> = Mutex::new(BTreeMap::new());

fn record(contender: &'static str, n: usize, wakeups: u64) {
    let mut map = WAKEUPS.lock();
    let entry = map.entry((contender, n)).or_default();
    entry.0 += wakeups;
    entry.1 += n as u64;
}

/// Waits until `ready` waiters announced themselves, then lets them park.
async fn until_ready(ready: &AtomicUsize, n: usize) {
    while ready.load(Ordering::Acquire) < n {
        tokio::task::yield_now().await;
    }
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

/// Waits until the waiter of threshold `step` (and all below it) completed:
/// the writer's steps are events that each get observed, not a burst that
/// waiters could coalesce.
async fn until_done(done: &AtomicUsize, step: usize) {
    while done.load(Ordering::Acquire) < step {
        tokio::task::yield_now().await;
    }
}

/// One fan-out round per iteration: `n` waiters for thresholds `1..=n`, a
/// writer that steps the value through them, each step observed by its
/// waiter before the next. Reports the time per modification.
fn fan_out(c: &mut Criterion) {
    let runtime = multi_thread_runtime();
    let mut group = c.benchmark_group("fan_out");
    group.sample_size(10);
    for n in FAN_OUT {
        group.bench_with_input(BenchmarkId::new("watch_cell", n), &n, |b, &n| {
            b.to_async(&runtime).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let cell = WatchCell::new(0_usize);
                    let done = Arc::new(AtomicUsize::new(0));
                    let waiters: Vec<_> = (1..=n)
                        .map(|threshold| {
                            let (cell, done) = (cell.clone(), done.clone());
                            tokio::spawn(async move {
                                cell.wait_for(move |v| *v >= threshold).await.unwrap();
                                done.fetch_add(1, Ordering::Release);
                            })
                        })
                        .collect();
                    while cell.stats().waiters < n {
                        tokio::task::yield_now().await;
                    }
                    let before = cell.stats().wakeups;
                    let start = Instant::now();
                    for step in 1..=n {
                        cell.modify(|v| *v = step);
                        until_done(&done, step).await;
                    }
                    for waiter in waiters {
                        waiter.await.unwrap();
                    }
                    total += start.elapsed() / n as u32;
                    record("watch_cell", n, cell.stats().wakeups - before);
                }
                total
            })
        });

        group.bench_with_input(BenchmarkId::new("tokio_watch", n), &n, |b, &n| {
            b.to_async(&runtime).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (tx, rx) = watch::channel(0_usize);
                    let ready = Arc::new(AtomicUsize::new(0));
                    let done = Arc::new(AtomicUsize::new(0));
                    let wakeups = Arc::new(AtomicU64::new(0));
                    let waiters: Vec<_> = (1..=n)
                        .map(|threshold| {
                            let mut rx = rx.clone();
                            let (ready, wakeups, done) =
                                (ready.clone(), wakeups.clone(), done.clone());
                            tokio::spawn(async move {
                                let mut checks = 0_u64;
                                ready.fetch_add(1, Ordering::Release);
                                rx.wait_for(|v| {
                                    checks += 1;
                                    *v >= threshold
                                })
                                .await
                                .unwrap();
                                // The first check is not a wake-up.
                                wakeups.fetch_add(checks - 1, Ordering::Relaxed);
                                done.fetch_add(1, Ordering::Release);
                            })
                        })
                        .collect();
                    until_ready(&ready, n).await;
                    let start = Instant::now();
                    for step in 1..=n {
                        tx.send_replace(step);
                        until_done(&done, step).await;
                    }
                    for waiter in waiters {
                        waiter.await.unwrap();
                    }
                    total += start.elapsed() / n as u32;
                    record("tokio_watch", n, wakeups.load(Ordering::Relaxed));
                }
                total
            })
        });

        group.bench_with_input(BenchmarkId::new("rwlock_notify", n), &n, |b, &n| {
            b.to_async(&runtime).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let cell = Arc::new(RwLockNotifyCell::new(0_usize));
                    let ready = Arc::new(AtomicUsize::new(0));
                    let done = Arc::new(AtomicUsize::new(0));
                    let wakeups = Arc::new(AtomicU64::new(0));
                    let waiters: Vec<_> = (1..=n)
                        .map(|threshold| {
                            let (cell, ready, wakeups, done) =
                                (cell.clone(), ready.clone(), wakeups.clone(), done.clone());
                            tokio::spawn(async move {
                                ready.fetch_add(1, Ordering::Release);
                                let woken = cell.wait_for(move |v| *v >= threshold).await;
                                wakeups.fetch_add(woken, Ordering::Relaxed);
                                done.fetch_add(1, Ordering::Release);
                            })
                        })
                        .collect();
                    until_ready(&ready, n).await;
                    let start = Instant::now();
                    for step in 1..=n {
                        cell.modify(|v| *v = step).await;
                        until_done(&done, step).await;
                    }
                    for waiter in waiters {
                        waiter.await.unwrap();
                    }
                    total += start.elapsed() / n as u32;
                    record("rwlock_notify", n, wakeups.load(Ordering::Relaxed));
                }
                total
            })
        });
    }
    group.finish();
}

fn print_wakeups_per_waiter() {
    println!("\n## fan_out wake-ups per waiter (target: 1.0 for watch_cell)");
    println!("| N | watch_cell | tokio_watch | rwlock_notify |");
    println!("|---|---|---|---|");
    let map = WAKEUPS.lock();
    for n in FAN_OUT {
        let cell = |contender| match map.get(&(contender, n)) {
            Some((wakeups, waiters)) if *waiters > 0 => {
                format!("{:.2}", *wakeups as f64 / *waiters as f64)
            }
            _ => "not run".to_owned(),
        };
        println!(
            "| {n} | {} | {} | {} |",
            cell("watch_cell"),
            cell("tokio_watch"),
            cell("rwlock_notify")
        );
    }
}

fn main() {
    let mut c = common::criterion();
    blocking_ping_pong(&mut c);
    async_ping_pong(&mut c);
    fan_out(&mut c);
    c.final_summary();

    common::print_ratios(
        "blocking_ping_pong",
        &[""],
        &["watch_cell", "parking_lot", "std"],
        "parking_lot",
    );
    common::print_ratios(
        "async_ping_pong",
        &[""],
        &["watch_cell", "tokio_watch", "rwlock_notify"],
        "tokio_watch",
    );
    let cases: Vec<String> = FAN_OUT.iter().map(ToString::to_string).collect();
    let cases: Vec<&str> = cases.iter().map(String::as_str).collect();
    common::print_ratios(
        "fan_out",
        &cases,
        &["watch_cell", "tokio_watch", "rwlock_notify"],
        "tokio_watch",
    );
    print_wakeups_per_waiter();
}
