//! WatchCell against its peers, in one run:
//!
//! - blocking ping-pong between two threads: `WatchCell` vs `parking_lot`
//!   Mutex+Condvar vs std Mutex+Condvar (baseline: parking_lot);
//! - async ping-pong between two tasks on a multi-thread runtime: `WatchCell`
//!   vs `tokio::sync::watch` vs a hand-rolled `RwLock` + `Notify` cell
//!   (baseline: watch);
//! - fan-out: N waiters, each waiting for a distinct threshold, one writer
//!   stepping through the thresholds: time per modification and wake-ups per
//!   waiter (baseline: watch);
//! - work queue: one slot, one producer putting messages one at a time, 10
//!   consumers taking them: time per message and consumer wake-ups per
//!   message. Blocking: `WatchCell::blocking_wait_take` vs `parking_lot`
//!   Mutex + two Condvars with `notify_one` (baseline); async:
//!   `WatchCell::wait_take` vs a Mutex + two `tokio::sync::Notify` with
//!   `notify_one` (baseline);
//! - modify under N registered waiters, none satisfied (`modify_lock_hold`):
//!   the time of one modification, which for `WatchCell` is all spent under
//!   its lock, with N = 1,000, 10,000, 100,000 threshold waits on a
//!   `WatchIndex` (`watch_cell_index`), N `wait_for` predicate waits
//!   (`watch_cell_predicate`), and tokio `watch` with N receivers waiting on
//!   `wait_for` (`tokio_watch`: the `send_modify` call; the receivers'
//!   re-checks that follow it are not timed, and are reported separately).
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

// ------------------------------------------------ modify under N waiters ---

const REGISTERED: [usize; 3] = [1_000, 10_000, 100_000];

/// Far above any value the benches reach: thresholds that are never met.
const UNREACHED: u64 = 1 << 40;

/// Per N: tokio receivers' re-check time per `send_modify` (ns), summed
/// over iterations, and the number of modifications.
static TOKIO_RECHECKS: Mutex<BTreeMap<usize, (f64, u64)>> = Mutex::new(BTreeMap::new());

/// Polls each future once with a no-op waker; all must stay pending.
fn poll_all_pending<F: std::future::Future>(futures: &mut [std::pin::Pin<Box<F>>]) {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for future in futures {
        assert!(future.as_mut().poll(&mut cx).is_pending());
    }
}

/// One modification with N registered waiters, none of which it satisfies.
fn modify_lock_hold(c: &mut Criterion) {
    let mut group = c.benchmark_group("modify_lock_hold");
    group.sample_size(10);
    for n in REGISTERED {
        group.bench_with_input(BenchmarkId::new("watch_cell_index", n), &n, |b, &n| {
            let cell = WatchCell::new(0_u64);
            let seqno = cell.index(|v: &u64| *v);
            let mut waits: Vec<_> = (0..n as u64)
                .map(|i| Box::pin(seqno.wait_at_least(UNREACHED + i)))
                .collect();
            poll_all_pending(&mut waits);
            assert_eq!(seqno.waiting(), n);
            b.iter(|| cell.modify(|v| *v += 1));
            assert_eq!(cell.stats().wakeups, 0);
        });

        group.bench_with_input(BenchmarkId::new("watch_cell_predicate", n), &n, |b, &n| {
            let cell = WatchCell::new(0_u64);
            let mut waits: Vec<_> = (0..n as u64)
                .map(|i| Box::pin(cell.wait_for(move |v| *v >= UNREACHED + i)))
                .collect();
            poll_all_pending(&mut waits);
            assert_eq!(cell.stats().waiters, n);
            b.iter(|| cell.modify(|v| *v += 1));
            assert_eq!(cell.stats().wakeups, 0);
        });

        group.bench_with_input(BenchmarkId::new("tokio_watch", n), &n, |b, &n| {
            let (tx, rx) = watch::channel(0_u64);
            let mut receivers: Vec<_> = (0..n).map(|_| rx.clone()).collect();
            let mut waits: Vec<_> = receivers
                .iter_mut()
                .zip(0_u64..)
                .map(|(rx, i)| Box::pin(rx.wait_for(move |v| *v >= UNREACHED + i)))
                .collect();
            poll_all_pending(&mut waits);
            b.iter_custom(|iters| {
                let mut held = Duration::ZERO;
                let mut rechecks = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    tx.send_modify(|v| *v += 1);
                    held += start.elapsed();
                    // Every receiver was woken: it re-checks and re-registers
                    // (the work `WatchCell` spares it; not the modifier's).
                    let start = Instant::now();
                    poll_all_pending(&mut waits);
                    rechecks += start.elapsed();
                }
                let mut tally = TOKIO_RECHECKS.lock();
                let entry = tally.entry(n).or_default();
                entry.0 += rechecks.as_nanos() as f64;
                entry.1 += iters;
                held
            });
        });
    }
    group.finish();
}

fn print_tokio_rechecks() {
    println!(
        "\n## modify_lock_hold: tokio watch receivers' re-checks per send_modify (not timed above)"
    );
    println!("| N | re-check work per modification |");
    println!("|---|---|");
    for (n, (ns, modifications)) in TOKIO_RECHECKS.lock().iter() {
        println!("| {n} | {} |", common::human(ns / *modifications as f64));
    }
}

// ------------------------------------------------------------ work queue ---

const CONSUMERS: usize = 10;

/// Per contender, over all iterations: consumer wake-ups, wake-ups that
/// found the slot empty (another consumer got there first), and messages.
type QueueTally = BTreeMap<&'static str, (u64, u64, u64)>;
static QUEUE_WAKEUPS: Mutex<QueueTally> = Mutex::new(BTreeMap::new());

fn record_queue(contender: &'static str, wakeups: u64, empty: u64, messages: u64) {
    let mut map = QUEUE_WAKEUPS.lock();
    let entry = map.entry(contender).or_default();
    entry.0 += wakeups;
    entry.1 += empty;
    entry.2 += messages;
}

/// A one-slot queue for the `Condvar` and `Notify` peers.
#[derive(Default)]
struct Slot {
    message: Option<u64>,
    closed: bool,
}

/// Counts the times a future is polled again after returning `Pending`: the
/// times its task was woken to resume it.
async fn count_resumes<F: std::future::Future>(future: F, resumes: &mut u64) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut first = true;
    std::future::poll_fn(|cx| {
        if !first {
            *resumes += 1;
        }
        first = false;
        future.as_mut().poll(cx)
    })
    .await
}

fn work_queue_blocking(c: &mut Criterion) {
    let mut group = c.benchmark_group("work_queue_blocking");

    group.bench_function("watch_cell", |b| {
        b.iter_custom(|messages| {
            let slot = WatchCell::new(None::<u64>);
            let wakeups = AtomicU64::new(0);
            let elapsed = std::thread::scope(|s| {
                for _ in 0..CONSUMERS {
                    s.spawn(|| {
                        let me = std::thread::current().id();
                        let mut woken = 0;
                        // A take made on another thread (a modifier's) is
                        // the one wake-up of this wait; one made here is none.
                        while slot
                            .blocking_wait_take(|slot| {
                                let message = slot.take()?;
                                woken += u64::from(std::thread::current().id() != me);
                                Some(message)
                            })
                            .is_ok()
                        {}
                        wakeups.fetch_add(woken, Ordering::Relaxed);
                    });
                }
                let start = Instant::now();
                for message in 0..messages {
                    slot.blocking_wait_take(|slot| slot.is_none().then(|| *slot = Some(message)))
                        .unwrap();
                }
                // Closing lets the consumers drain the last message first.
                slot.close();
                start
            });
            let elapsed = elapsed.elapsed();
            // Its consumers are woken only with a message in hand.
            record_queue("blocking/watch_cell", wakeups.into_inner(), 0, messages);
            elapsed
        })
    });

    group.bench_function("parking_lot", |b| {
        b.iter_custom(|messages| {
            let slot = Mutex::new(Slot::default());
            let (not_empty, not_full) = (parking_lot::Condvar::new(), parking_lot::Condvar::new());
            let (wakeups, empty) = (AtomicU64::new(0), AtomicU64::new(0));
            let elapsed = std::thread::scope(|s| {
                for _ in 0..CONSUMERS {
                    s.spawn(|| {
                        let (mut woken, mut found_empty) = (0, 0);
                        let mut slot = slot.lock();
                        loop {
                            if let Some(_message) = slot.message.take() {
                                not_full.notify_one();
                            } else if slot.closed {
                                break;
                            } else {
                                not_empty.wait(&mut slot);
                                // A wake-up that finds the queue closed and
                                // empty is shutdown, not work.
                                woken += u64::from(slot.message.is_some() || !slot.closed);
                                found_empty += u64::from(slot.message.is_none() && !slot.closed);
                            }
                        }
                        wakeups.fetch_add(woken, Ordering::Relaxed);
                        empty.fetch_add(found_empty, Ordering::Relaxed);
                    });
                }
                let start = Instant::now();
                for message in 0..messages {
                    let mut slot = slot.lock();
                    while slot.message.is_some() {
                        not_full.wait(&mut slot);
                    }
                    slot.message = Some(message);
                    not_empty.notify_one();
                }
                slot.lock().closed = true;
                not_empty.notify_all();
                start
            });
            let elapsed = elapsed.elapsed();
            record_queue(
                "blocking/parking_lot",
                wakeups.into_inner(),
                empty.into_inner(),
                messages,
            );
            elapsed
        })
    });
    group.finish();
}

fn work_queue_async(c: &mut Criterion) {
    let runtime = multi_thread_runtime();
    let mut group = c.benchmark_group("work_queue_async");

    group.bench_function("watch_cell", |b| {
        b.to_async(&runtime).iter_custom(|messages| async move {
            let slot = WatchCell::new(None::<u64>);
            let wakeups = Arc::new(AtomicU64::new(0));
            let consumers: Vec<_> = (0..CONSUMERS)
                .map(|_| {
                    let (slot, wakeups) = (slot.clone(), wakeups.clone());
                    tokio::spawn(async move {
                        let mut woken = 0;
                        loop {
                            let mut resumes = 0;
                            let taken =
                                count_resumes(slot.wait_take(Option::take), &mut resumes).await;
                            if taken.is_err() {
                                break;
                            }
                            woken += resumes;
                        }
                        wakeups.fetch_add(woken, Ordering::Relaxed);
                    })
                })
                .collect();
            let start = Instant::now();
            for message in 0..messages {
                slot.wait_take(move |slot| slot.is_none().then(|| *slot = Some(message)))
                    .await
                    .unwrap();
            }
            slot.close();
            for consumer in consumers {
                consumer.await.unwrap();
            }
            let elapsed = start.elapsed();
            // Its consumers are woken only with a message in hand.
            record_queue(
                "async/watch_cell",
                wakeups.load(Ordering::Relaxed),
                0,
                messages,
            );
            elapsed
        })
    });

    group.bench_function("tokio_notify", |b| {
        b.to_async(&runtime).iter_custom(|messages| async move {
            let slot = Arc::new(Mutex::new(Slot::default()));
            let not_empty = Arc::new(Notify::new());
            let not_full = Arc::new(Notify::new());
            let wakeups = Arc::new(AtomicU64::new(0));
            let empty = Arc::new(AtomicU64::new(0));
            let consumers: Vec<_> = (0..CONSUMERS)
                .map(|_| {
                    let (slot, not_empty, not_full) =
                        (slot.clone(), not_empty.clone(), not_full.clone());
                    let (wakeups, empty) = (wakeups.clone(), empty.clone());
                    tokio::spawn(async move {
                        let (mut woken, mut found_empty) = (0, 0);
                        let mut resumed = false;
                        loop {
                            let (message, closed) = {
                                let mut slot = slot.lock();
                                (slot.message.take(), slot.closed)
                            };
                            // A wake-up that finds the queue closed and empty
                            // is shutdown, not work.
                            woken += u64::from(resumed && (message.is_some() || !closed));
                            found_empty += u64::from(resumed && message.is_none() && !closed);
                            resumed = false;
                            if message.is_some() {
                                not_full.notify_one();
                                continue;
                            }
                            if closed {
                                break;
                            }
                            // `notify_one` keeps a permit when nobody waits:
                            // no wake-up is lost between the check and here.
                            not_empty.notified().await;
                            resumed = true;
                        }
                        wakeups.fetch_add(woken, Ordering::Relaxed);
                        empty.fetch_add(found_empty, Ordering::Relaxed);
                    })
                })
                .collect();
            let start = Instant::now();
            for message in 0..messages {
                loop {
                    {
                        let mut slot = slot.lock();
                        if slot.message.is_none() {
                            slot.message = Some(message);
                            break;
                        }
                    }
                    not_full.notified().await;
                }
                not_empty.notify_one();
            }
            slot.lock().closed = true;
            for _ in 0..CONSUMERS {
                not_empty.notify_one();
            }
            for consumer in consumers {
                consumer.await.unwrap();
            }
            let elapsed = start.elapsed();
            record_queue(
                "async/tokio_notify",
                wakeups.load(Ordering::Relaxed),
                empty.load(Ordering::Relaxed),
                messages,
            );
            elapsed
        })
    });
    group.finish();
}

fn print_work_queue() {
    println!(
        "\n## work_queue: consumer wake-ups per message (target: 1.00 for watch_cell) and throughput"
    );
    println!("| mode | contender | wake-ups / message | of which found it empty | messages / s |");
    println!("|---|---|---|---|---|");
    let map = QUEUE_WAKEUPS.lock();
    for (mode, contenders) in [
        ("blocking", ["watch_cell", "parking_lot"]),
        ("async", ["watch_cell", "tokio_notify"]),
    ] {
        for contender in contenders {
            let key = format!("{mode}/{contender}");
            let (per_message, empty) = match map.get(key.as_str()) {
                Some((wakeups, empty, messages)) if *messages > 0 => (
                    format!("{:.2}", *wakeups as f64 / *messages as f64),
                    format!("{:.2}", *empty as f64 / *messages as f64),
                ),
                _ => ("not run".to_owned(), "not run".to_owned()),
            };
            let throughput = common::mean_ns(&format!("work_queue_{mode}"), contender)
                .map_or_else(|| "not run".to_owned(), |ns| format!("{:.0}", 1e9 / ns));
            println!("| {mode} | {contender} | {per_message} | {empty} | {throughput} |");
        }
    }
}

fn main() {
    let mut c = common::criterion();
    blocking_ping_pong(&mut c);
    async_ping_pong(&mut c);
    fan_out(&mut c);
    work_queue_blocking(&mut c);
    work_queue_async(&mut c);
    modify_lock_hold(&mut c);
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
    common::print_ratios(
        "work_queue_blocking",
        &[""],
        &["watch_cell", "parking_lot"],
        "parking_lot",
    );
    common::print_ratios(
        "work_queue_async",
        &[""],
        &["watch_cell", "tokio_notify"],
        "tokio_notify",
    );
    print_work_queue();
    let cases: Vec<String> = REGISTERED.iter().map(ToString::to_string).collect();
    let cases: Vec<&str> = cases.iter().map(String::as_str).collect();
    common::print_ratios(
        "modify_lock_hold",
        &cases,
        &["watch_cell_index", "watch_cell_predicate", "tokio_watch"],
        "tokio_watch",
    );
    print_tokio_rechecks();
}
