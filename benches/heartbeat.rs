//! What does asking "may I still act?" cost?
//!
//! `Validity::is_valid` against the two checks the field uses instead:
//! `JoinHandle::is_finished` on the heartbeat task and
//! `CancellationToken::is_cancelled` (tokio-util), in the same run; then
//! `check()` and the overhead `run_while_valid` adds to a commit future that
//! is ready at once. Ends with a table of ratios to `is_cancelled`.
//!
//! `is_valid` reads a clock where the peers read only a flag; that clock read
//! is what buys expiry at the deadline. It is measured twice: on
//! `SystemClock` (tokio's `Instant::now`, which with tokio's `test-util`
//! feature, on in this bench, also consults the runtime's pausable clock) and
//! on a plain `std::time::Instant::now` clock.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use leasehold::clock::{self, Clock, Sleep};
use leasehold::heartbeat::ValidityController;
use tokio_util::sync::CancellationToken;

/// `std::time::Instant::now`, without tokio in the way.
#[derive(Debug)]
struct StdClock;

impl Clock for StdClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

/// Mean nanoseconds per iteration of each benchmark, for the ratio table.
type Results = Arc<Mutex<Vec<(&'static str, f64)>>>;

/// Times `op` `iters` times and records the mean under `name`.
fn timed(results: &Results, name: &'static str, iters: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    let elapsed = start.elapsed();
    let mut results = results.lock().unwrap();
    let per_iter = elapsed.as_nanos() as f64 / iters as f64;
    match results.iter_mut().find(|(n, _)| *n == name) {
        // Keep the latest estimate: criterion's later samples run more iterations.
        Some(entry) => entry.1 = per_iter,
        None => results.push((name, per_iter)),
    }
    elapsed
}

fn poll_once<F: Future>(future: F) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(future).poll(&mut cx).is_ready()
}

fn liveness_checks(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let results: Results = Arc::default();

    let ttl = Duration::from_secs(3600);
    let system = ValidityController::valid_for(clock::system(), ttl);
    let system_validity = system.validity();
    let std_clock = ValidityController::valid_for(Arc::new(StdClock), ttl);
    let std_validity = std_clock.validity();
    let task = runtime.spawn(std::future::pending::<()>());
    let token = CancellationToken::new();

    // Times come from the `Criterion` configured below, so that
    // `--warm-up-time` and `--measurement-time` on the command line apply.
    let mut group = c.benchmark_group("heartbeat");

    group.bench_function("CancellationToken::is_cancelled", |b| {
        b.iter_custom(|iters| {
            timed(&results, "CancellationToken::is_cancelled", iters, || {
                black_box(black_box(&token).is_cancelled());
            })
        })
    });
    group.bench_function("JoinHandle::is_finished", |b| {
        b.iter_custom(|iters| {
            timed(&results, "JoinHandle::is_finished", iters, || {
                black_box(black_box(&task).is_finished());
            })
        })
    });
    group.bench_function("std::time::Instant::now (the floor)", |b| {
        b.iter_custom(|iters| {
            timed(
                &results,
                "std::time::Instant::now (the floor)",
                iters,
                || {
                    black_box(Instant::now());
                },
            )
        })
    });
    group.bench_function("Validity::is_valid (SystemClock)", |b| {
        b.iter_custom(|iters| {
            timed(&results, "Validity::is_valid (SystemClock)", iters, || {
                black_box(black_box(&system_validity).is_valid());
            })
        })
    });
    group.bench_function("Validity::is_valid (std Instant)", |b| {
        b.iter_custom(|iters| {
            timed(&results, "Validity::is_valid (std Instant)", iters, || {
                black_box(black_box(&std_validity).is_valid());
            })
        })
    });
    group.bench_function("Validity::check (SystemClock)", |b| {
        b.iter_custom(|iters| {
            timed(&results, "Validity::check (SystemClock)", iters, || {
                let _ = black_box(black_box(&system_validity).check());
            })
        })
    });
    group.bench_function("ready commit, polled bare", |b| {
        b.iter_custom(|iters| {
            timed(&results, "ready commit, polled bare", iters, || {
                assert!(poll_once(async { black_box(1_u64) }));
            })
        })
    });
    group.bench_function("ready commit, run_while_valid", |b| {
        b.iter_custom(|iters| {
            timed(&results, "ready commit, run_while_valid", iters, || {
                let commit = system_validity.run_while_valid(async { black_box(1_u64) });
                assert!(poll_once(commit));
            })
        })
    });
    group.finish();

    let results = results.lock().unwrap();
    let base = results
        .iter()
        .find(|(name, _)| *name == "CancellationToken::is_cancelled")
        .map(|(_, ns)| *ns)
        .unwrap_or(f64::NAN);
    println!();
    println!("| check | ns/op | × is_cancelled |");
    println!("|---|---:|---:|");
    for (name, ns) in results.iter() {
        println!("| {name} | {ns:.2} | {:.1} |", ns / base);
    }
    let lookup = |name: &str| {
        results
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(f64::NAN, |(_, ns)| *ns)
    };
    println!(
        "| run_while_valid overhead on a ready commit | {:.2} | |",
        lookup("ready commit, run_while_valid") - lookup("ready commit, polled bare")
    );
    drop(system);
    drop(std_clock);
}

criterion_group! {
    name = benches;
    // Short defaults for a small shared machine; the command line overrides
    // them (`configure_from_args` runs after this configuration).
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = liveness_checks
}
criterion_main!(benches);
