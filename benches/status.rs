//! Time from publication until N async waiters have all observed `Done`:
//! `leasehold::status` against `tokio::sync::watch` and `Arc<Notify>` +
//! `notify_waiters` (with the outcome in a `OnceLock`), in the same run; and
//! the time from `WatchCell::close` until N `wait_for` waiters have all
//! returned `Closed` (`watch_cell_close`), against the same peers.
//!
//! Each round parks N waiter tasks on a current-thread runtime (untimed),
//! then times the publication and the runtime's running of every woken
//! waiter until the last one has its outcome. Every iteration runs one
//! round of each peer, side by side (see `timed_rounds`); criterion reports
//! each peer's own time, and a ratio table over all the rounds is printed
//! at the end.

use std::collections::BTreeMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use leasehold::status::{self, SyncOutcome, SyncStatus};
use tokio::sync::{Notify, watch};

const WAITERS: [usize; 5] = [1, 10, 100, 1000, 10_000];
const PEERS: [&str; 4] = [
    "leasehold",
    "watch_cell_close",
    "tokio_watch",
    "notify_waiters",
];

/// Per-(peer, N) mean time per iteration of each criterion sample, for the
/// ratio table.
static SAMPLES: Mutex<BTreeMap<(&'static str, usize), Vec<f64>>> = Mutex::new(BTreeMap::new());

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One round: the waiters to spawn, and the publication to time.
struct Round {
    waiters: Vec<BoxFuture>,
    publish: Box<dyn FnOnce() + Send>,
}

/// Builds a round for `peer` with `n` waiters; each waiter bumps `ready`
/// once registered and decrements `remaining` once it holds the outcome.
fn round(peer: &str, n: usize, ready: &Arc<AtomicUsize>, remaining: &Arc<AtomicUsize>) -> Round {
    let mut waiters: Vec<BoxFuture> = Vec::with_capacity(n);
    match peer {
        "leasehold" => {
            let (publisher, receiver) = status::channel::<SyncOutcome>();
            for _ in 0..n {
                let (receiver, ready, remaining) =
                    (receiver.clone(), ready.clone(), remaining.clone());
                waiters.push(Box::pin(async move {
                    // Registers in this same poll, before the driver resumes.
                    ready.fetch_add(1, Ordering::Relaxed);
                    black_box(receiver.done().await);
                    remaining.fetch_sub(1, Ordering::Release);
                }));
            }
            Round {
                waiters,
                publish: Box::new(move || publisher.publish(SyncOutcome::Success)),
            }
        }
        "watch_cell_close" => {
            let cell = leasehold::WatchCell::new(false);
            for _ in 0..n {
                let (cell, ready, remaining) = (cell.clone(), ready.clone(), remaining.clone());
                waiters.push(Box::pin(async move {
                    ready.fetch_add(1, Ordering::Relaxed);
                    black_box(cell.wait_for(|done| *done).await.unwrap_err());
                    remaining.fetch_sub(1, Ordering::Release);
                }));
            }
            Round {
                waiters,
                publish: Box::new(move || {
                    cell.close();
                }),
            }
        }
        "tokio_watch" => {
            let (sender, receiver) = watch::channel(SyncStatus::<SyncOutcome>::Pending);
            for _ in 0..n {
                let (mut receiver, ready, remaining) =
                    (receiver.clone(), ready.clone(), remaining.clone());
                waiters.push(Box::pin(async move {
                    ready.fetch_add(1, Ordering::Relaxed);
                    let status = receiver.wait_for(SyncStatus::is_done).await.unwrap();
                    black_box(status.outcome().cloned());
                    drop(status);
                    remaining.fetch_sub(1, Ordering::Release);
                }));
            }
            Round {
                waiters,
                publish: Box::new(move || {
                    sender.send_replace(SyncStatus::Done(SyncOutcome::Success));
                }),
            }
        }
        "notify_waiters" => {
            let shared = Arc::new((Notify::new(), OnceLock::<SyncOutcome>::new()));
            for _ in 0..n {
                let (shared, ready, remaining) = (shared.clone(), ready.clone(), remaining.clone());
                waiters.push(Box::pin(async move {
                    let (notify, outcome) = &*shared;
                    let mut notified = pin!(notify.notified());
                    notified.as_mut().enable();
                    ready.fetch_add(1, Ordering::Relaxed);
                    if outcome.get().is_none() {
                        notified.await;
                    }
                    black_box(outcome.get().cloned());
                    remaining.fetch_sub(1, Ordering::Release);
                }));
            }
            Round {
                waiters,
                publish: Box::new(move || {
                    let (notify, outcome) = &*shared;
                    outcome.set(SyncOutcome::Success).unwrap();
                    notify.notify_waiters();
                }),
            }
        }
        _ => unreachable!("unknown peer {peer}"),
    }
}

/// One round of `peer`: the time from publication until every waiter
/// observed the outcome.
async fn timed_round(peer: &str, n: usize) -> Duration {
    let ready = Arc::new(AtomicUsize::new(0));
    let remaining = Arc::new(AtomicUsize::new(n));
    let Round { waiters, publish } = round(peer, n, &ready, &remaining);
    let handles: Vec<_> = waiters.into_iter().map(tokio::spawn).collect();
    while ready.load(Ordering::Relaxed) < n {
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    publish();
    while remaining.load(Ordering::Acquire) > 0 {
        tokio::task::yield_now().await;
    }
    let elapsed = start.elapsed();
    for handle in handles {
        handle.await.unwrap();
    }
    elapsed
}

/// Runs `iters` iterations and returns `measured`'s time. Each iteration
/// runs one round of every peer, in an order that rotates, and every
/// peer's time goes into the ratio table: the peers are measured round by
/// round, side by side, so the host's drift (this machine is small and
/// shared) falls on all of them alike rather than on whichever criterion
/// happens to be measuring.
async fn timed_rounds(measured: &'static str, n: usize, iters: u64) -> Duration {
    let mut totals = [Duration::ZERO; PEERS.len()];
    for iter in 0..iters {
        for k in 0..PEERS.len() {
            let peer = (iter as usize + k) % PEERS.len();
            totals[peer] += timed_round(PEERS[peer], n).await;
        }
    }
    let mut samples = SAMPLES.lock().unwrap();
    for (peer, total) in PEERS.iter().zip(totals) {
        let per_iter = total.as_secs_f64() * 1e9 / iters.max(1) as f64;
        samples.entry((peer, n)).or_default().push(per_iter);
    }
    totals[PEERS.iter().position(|p| *p == measured).unwrap()]
}

fn publish_until_all_observed(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("status/publish_until_all_observed");
    for n in WAITERS {
        for peer in PEERS {
            group.bench_with_input(BenchmarkId::new(peer, n), &n, |b, &n| {
                b.to_async(&runtime)
                    .iter_custom(|iters| timed_rounds(peer, n, iters));
            });
        }
    }
    group.finish();
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn print_ratio_table() {
    let mut samples = SAMPLES.lock().unwrap();
    println!();
    println!(
        "publish (or close) -> all N waiters observed it (peers measured side by side, round by round; median of per-sample means; speed vs Notify = Notify time / our time, >= 1.0 is as fast or faster)"
    );
    println!();
    println!(
        "| N | Notify + OnceLock | status publish | speed vs Notify | cell close | speed vs Notify | tokio watch | status speed vs watch |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for n in WAITERS {
        let mut figure = |peer| samples.get_mut(&(peer, n)).map(|s| median(s));
        let (ours, close, watch, notify) = (
            figure("leasehold"),
            figure("watch_cell_close"),
            figure("tokio_watch"),
            figure("notify_waiters"),
        );
        let Some(notify) = notify else {
            continue; // filtered out on the command line
        };
        let cell = |t: Option<f64>| t.map_or_else(|| "not run".to_owned(), human);
        let ratio = |base: Option<f64>, t: Option<f64>| match (base, t) {
            (Some(base), Some(t)) => format!("{:.2}", base / t),
            _ => "-".to_owned(),
        };
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} |",
            human(notify),
            cell(ours),
            ratio(Some(notify), ours),
            cell(close),
            ratio(Some(notify), close),
            cell(watch),
            ratio(watch, ours),
        );
    }
}

fn human(nanos: f64) -> String {
    if nanos >= 1e6 {
        format!("{:.2} ms", nanos / 1e6)
    } else if nanos >= 1e3 {
        format!("{:.2} µs", nanos / 1e3)
    } else {
        format!("{nanos:.0} ns")
    }
}

fn main() {
    // Short runs: the bench machine is small and shared.
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    publish_until_all_observed(&mut criterion);
    criterion.final_summary();
    print_ratio_table();
}
