//! Behavioural specification of the checkpointed recovery scan: the
//! settled cursor, the retry queue's use by the scan, progress stores, and
//! `RecoveryScan` across stops, drops and crashes.
//!
//! Time is tokio's paused time or a `ManualClock`; nothing sleeps for real
//! (except the PostgreSQL scan, whose driver needs the real timer).

#[cfg(feature = "postgres")]
#[path = "support/postgres.rs"]
mod pg_support;

use std::collections::{BTreeSet, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use leasehold::WatchCell;
use leasehold::clock::ManualClock;
use leasehold::recovery::{
    Checkpoint, FinalCheckpoint, KeySource, MemoryProgressStore, ProgressStore, ProgressStoreError,
    Recheck, RecoveryScan, ResumePoint, RetryPolicy, ScanConfig, ScanError, ScanKey, ScanReport,
    ScopeFingerprint,
};
use leasehold::status::{SyncOutcome, SyncRegistry};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn keys(range: std::ops::Range<u64>) -> BTreeSet<u64> {
    range.collect()
}

fn scope(name: &str) -> ScopeFingerprint {
    ScopeFingerprint::from(name)
}

fn config(concurrency: usize, checkpoint_every: u64, window: usize) -> ScanConfig {
    ScanConfig::default()
        .with_concurrency(concurrency)
        .with_checkpoint_every(checkpoint_every)
        .with_window(window)
        .with_batch_size(32)
        .with_jitter_seed(1)
}

fn decode(point: &ResumePoint<Vec<u8>>) -> ResumePoint<u64> {
    point.clone().map(|bytes| u64::from_bytes(&bytes).unwrap())
}

async fn no_recheck(_key: u64) -> Result<Recheck, Infallible> {
    Ok(Recheck::NeedsWork)
}

/// A store that checks, at every save, that the saved resume point covers
/// only keys whose work is really done: the property a checkpoint must keep.
#[derive(Clone)]
struct CheckingStore {
    inner: MemoryProgressStore,
    done: Arc<Mutex<HashSet<u64>>>,
    universe: Arc<BTreeSet<u64>>,
    saved: Arc<Mutex<Vec<ResumePoint<u64>>>>,
}

impl CheckingStore {
    fn check(&self, checkpoint: &Checkpoint) {
        let point = decode(&checkpoint.resume);
        let done = self.done.lock();
        for key in self.universe.iter().take_while(|key| point.covers(key)) {
            assert!(
                done.contains(key),
                "checkpoint {point:?} passes key {key}, whose work is unfinished"
            );
        }
        let mut saved = self.saved.lock();
        if let Some(last) = saved.last() {
            assert!(
                *last <= point,
                "checkpoint moved backwards: {last:?} -> {point:?}"
            );
        }
        saved.push(point);
    }
}

impl ProgressStore for CheckingStore {
    async fn load(&self) -> Result<Option<Checkpoint>, ProgressStoreError> {
        self.inner.load().await
    }

    async fn save(&self, checkpoint: Checkpoint) -> Result<(), ProgressStoreError> {
        self.check(&checkpoint);
        self.inner.save(checkpoint).await
    }

    async fn clear(&self) -> Result<(), ProgressStoreError> {
        self.inner.clear().await
    }
}

// ---------------------------------------------------------------- scan: property

/// Random job durations (so random completion order), failures, external
/// cancellations through the registry, re-checks that err or find the work
/// done, and stops with restarts: every checkpoint saved covers only keys
/// whose work is done, never moves backwards, and the scan completes with
/// every key done and the checkpoint cleared.
#[test]
fn persisted_resume_point_never_passes_unfinished_key_under_random_completions() {
    for seed in 0..48 {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.random_range(20..160_u64);
        let universe = Arc::new(keys(0..n));
        let store = CheckingStore {
            inner: MemoryProgressStore::new(),
            done: Arc::default(),
            universe: Arc::clone(&universe),
            saved: Arc::default(),
        };
        let registry = Arc::new(SyncRegistry::new());
        let config = ScanConfig::default()
            .with_concurrency(rng.random_range(1..8))
            .with_checkpoint_every(rng.random_range(1..10))
            .with_window(rng.random_range(1..40))
            .with_batch_size(rng.random_range(1..20))
            .with_jitter_seed(seed);
        let stops = rng.random_range(0..3);
        let runtime = paused_runtime();
        let mut completed = false;
        for run in 0..=stops {
            let done = Arc::clone(&store.done);
            let recheck_done = Arc::clone(&store.done);
            let case_rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed * 100 + run)));
            let job_rng = Arc::clone(&case_rng);
            let recheck_rng = Arc::clone(&case_rng);
            let scan = RecoveryScan::new(
                Arc::clone(&universe),
                store.clone(),
                Arc::clone(&registry),
                config.clone(),
            )
            .unwrap();
            let control = scan.control();
            let sync = move |key: u64, cancel: leasehold::status::CancellationToken| {
                let (millis, roll) = {
                    let mut rng = job_rng.lock();
                    (rng.random_range(1..50), rng.random_range(0..100))
                };
                let done = Arc::clone(&done);
                async move {
                    let slept = cancel
                        .run_until_cancelled(tokio::time::sleep(Duration::from_millis(millis)))
                        .await;
                    match (slept, roll) {
                        (None, _) => SyncOutcome::Cancelled,
                        (Some(()), 0..15) => SyncOutcome::Failed("disk hiccup".into()),
                        (Some(()), roll) => {
                            done.lock().insert(key);
                            if roll < 25 {
                                SyncOutcome::Skipped
                            } else {
                                SyncOutcome::Success
                            }
                        }
                    }
                }
            };
            let recheck = move |key: u64| {
                let roll = recheck_rng.lock().random_range(0..10);
                let done = Arc::clone(&recheck_done);
                async move {
                    match roll {
                        0..3 => Err("index unavailable"),
                        3..5 => {
                            done.lock().insert(key); // another instance did it
                            Ok(Recheck::Done)
                        }
                        _ => Ok(Recheck::NeedsWork),
                    }
                }
            };
            let stop_after = Duration::from_millis(rng.random_range(10..3_000));
            let canceller_registry = Arc::clone(&registry);
            let canceller_seed = seed * 7 + run;
            let report = runtime.block_on(async {
                let scan = tokio::spawn(scan.run(scope("s"), sync, recheck));
                // Cancel random in-flight syncs from outside, as a handler would.
                let canceller = tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(canceller_seed);
                    loop {
                        tokio::time::sleep(Duration::from_millis(rng.random_range(1..30))).await;
                        let key = rng.random_range(0..n);
                        canceller_registry.cancel(&key);
                    }
                });
                if run < stops {
                    tokio::time::sleep(stop_after).await;
                    control.cancel();
                }
                let report = scan.await.unwrap().unwrap();
                canceller.abort();
                report
            });
            if report.completed {
                completed = true;
                break;
            }
            assert_eq!(
                runtime.block_on(control.stopped()),
                FinalCheckpoint::Saved(report.progress.resume_point.clone())
            );
        }
        assert!(completed, "seed {seed}: the scan did not complete");
        let done = store.done.lock();
        assert!(universe.iter().all(|key| done.contains(key)), "seed {seed}");
        assert_eq!(
            store.inner.checkpoint(),
            None,
            "seed {seed}: cleared when done"
        );
    }
}

// ---------------------------------------------------------------- scan: crash / resume

#[derive(Clone, Copy, Debug, PartialEq)]
enum Crash {
    /// The process dies: the runtime is dropped with the scan mid-flight; no
    /// final save runs.
    Hard,
    /// The scan's task is aborted; its drop spawns the final save.
    Abort,
    /// The scan is asked to stop and saves its resume point.
    Stop,
}

/// 10,000 keys, random job durations and failures, and a crash of a random
/// kind at a random moment in each incarnation. Every key is processed at
/// least once, and the work each crash causes to be repeated is at most
/// `checkpoint_every - 1 + window` keys.
#[test]
fn crash_and_resume_over_10000_keys_processes_every_key_and_bounds_rescans() {
    const N: u64 = 10_000;
    const EVERY: u64 = 100;
    const WINDOW: usize = 64;
    let universe = Arc::new(keys(0..N));
    let store = MemoryProgressStore::new();
    // Successful completions per key, and the incarnation that did the last.
    let processed: Arc<Vec<AtomicU32>> = Arc::new((0..N).map(|_| AtomicU32::new(0)).collect());
    let last_by: Arc<Vec<AtomicU32>> = Arc::new((0..N).map(|_| AtomicU32::new(u32::MAX)).collect());
    let charged: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut crashes = Vec::new();
    let mut incarnation = 0_u32;
    loop {
        charged.lock().push(0);
        let runtime = paused_runtime();
        let registry = Arc::new(SyncRegistry::new()); // a new process
        let scan = RecoveryScan::new(
            Arc::clone(&universe),
            store.clone(),
            registry,
            config(8, EVERY, WINDOW)
                .with_jitter_seed(u64::from(incarnation))
                .with_retry(RetryPolicy::default().with_initial(Duration::from_millis(50))),
        )
        .unwrap();
        let control = scan.control();
        let job_seed = rng.random();
        let job_rng = Arc::new(Mutex::new(StdRng::seed_from_u64(job_seed)));
        let (processed_, last_by_, charged_) = (
            Arc::clone(&processed),
            Arc::clone(&last_by),
            Arc::clone(&charged),
        );
        let sync = move |key: u64, _cancel| {
            let (millis, fails) = {
                let mut rng = job_rng.lock();
                (rng.random_range(1..20), rng.random_bool(0.02))
            };
            let (processed, last_by, charged) = (
                Arc::clone(&processed_),
                Arc::clone(&last_by_),
                Arc::clone(&charged_),
            );
            async move {
                tokio::time::sleep(Duration::from_millis(millis)).await;
                if fails {
                    return SyncOutcome::Failed("transient".into());
                }
                let k = key as usize;
                if processed[k].fetch_add(1, Ordering::SeqCst) > 0 {
                    // A repeat: charge it to the incarnation whose crash
                    // left this finished key uncovered.
                    let by = last_by[k].load(Ordering::SeqCst) as usize;
                    charged.lock()[by] += 1;
                }
                last_by[k].store(incarnation, Ordering::SeqCst);
                SyncOutcome::Success
            }
        };
        let kind = [Crash::Hard, Crash::Abort, Crash::Stop][rng.random_range(0..3)];
        let crash_at = Duration::from_millis(rng.random_range(100..1_500));
        let crashed = runtime.block_on(async {
            let mut task = tokio::spawn(scan.run(scope("node-1"), sync, no_recheck));
            tokio::select! {
                result = &mut task => {
                    assert!(result.unwrap().unwrap().completed);
                    return false;
                }
                () = tokio::time::sleep(crash_at) => {}
            }
            match kind {
                // The runtime is dropped below, with the scan mid-flight.
                Crash::Hard => {}
                Crash::Abort => {
                    task.abort();
                    assert!((&mut task).await.unwrap_err().is_cancelled());
                    // The drop spawned the final save; it has run.
                    assert!(matches!(control.stopped().await, FinalCheckpoint::Saved(_)));
                }
                Crash::Stop => {
                    control.cancel();
                    assert!(!task.await.unwrap().unwrap().completed);
                    assert!(matches!(control.stopped().await, FinalCheckpoint::Saved(_)));
                }
            }
            true
        });
        if !crashed {
            break;
        }
        drop(runtime);
        if kind == Crash::Hard {
            // A runtime shutting down runs no final save, as after a crash:
            // only a point already stored is reported saved.
            match futures::executor::block_on(control.stopped()) {
                FinalCheckpoint::NotSaved => {}
                FinalCheckpoint::Saved(point) => {
                    assert_eq!(Some(point), store.checkpoint().map(|c| decode(&c.resume)));
                }
                other => panic!("{other:?}"),
            }
        }
        crashes.push(kind);
        incarnation += 1;
        assert!(incarnation < 200, "no progress");
    }
    let never = (0..N as usize)
        .filter(|&k| processed[k].load(Ordering::SeqCst) == 0)
        .count();
    assert_eq!(never, 0, "keys never processed");
    let charged = charged.lock();
    let total: u64 = charged.iter().sum();
    let worst = charged.iter().copied().max().unwrap_or(0);
    let bound = EVERY - 1 + WINDOW as u64;
    println!(
        "crash/resume: {N} keys, {} crashes ({} hard, {} abort, {} stop), {total} keys rescanned \
         in total, at most {worst} per crash (bound {bound}), per crash {charged:?}",
        crashes.len(),
        crashes.iter().filter(|c| **c == Crash::Hard).count(),
        crashes.iter().filter(|c| **c == Crash::Abort).count(),
        crashes.iter().filter(|c| **c == Crash::Stop).count(),
    );
    assert!(crashes.len() >= 5, "the test should crash several times");
    assert!(
        worst <= bound,
        "a crash repeated {worst} keys' work, bound {bound}"
    );
    assert_eq!(store.checkpoint(), None);
}

// ---------------------------------------------------------------- scan: scope

/// Runs a scan of `0..n` to completion or stop, recording which keys ran.
async fn run_recording(
    store: MemoryProgressStore,
    n: u64,
    scope_name: &str,
    config: ScanConfig,
) -> (
    Result<leasehold::recovery::ScanReport<u64>, ScanError>,
    Vec<u64>,
) {
    let ran: Arc<Mutex<Vec<u64>>> = Arc::default();
    let ran_ = Arc::clone(&ran);
    let scan = RecoveryScan::new(keys(0..n), store, Arc::new(SyncRegistry::new()), config).unwrap();
    let result = scan
        .run(
            scope(scope_name),
            move |key, _cancel| {
                ran_.lock().push(key);
                async { SyncOutcome::Success }
            },
            no_recheck,
        )
        .await;
    let mut ran = ran.lock().clone();
    ran.sort_unstable();
    (result, ran)
}

fn seeded(scope_name: &str, point: ResumePoint<u64>) -> MemoryProgressStore {
    let store = MemoryProgressStore::new();
    futures::executor::block_on(store.save(Checkpoint {
        scope: scope(scope_name),
        resume: point.map(|key| key.to_bytes()),
    }))
    .unwrap();
    store
}

#[tokio::test]
async fn matching_scope_resumes_from_the_checkpoint() {
    let store = seeded("shards 1,2", ResumePoint::From(600));
    let (result, ran) = run_recording(store.clone(), 1_000, "shards 1,2", config(4, 10, 32)).await;
    let report = result.unwrap();
    assert_eq!(report.progress.started_from, ResumePoint::From(600));
    assert!(!report.progress.scope_changed);
    assert_eq!(ran, (600..1_000).collect::<Vec<_>>());
    assert_eq!(store.checkpoint(), None);
}

#[tokio::test]
async fn scope_change_clears_the_checkpoint_and_forces_a_full_restart() {
    let store = seeded("shards 1,2", ResumePoint::After(600));
    let cleared_before_first_save = Arc::new(AtomicU32::new(0));
    let (result, ran) =
        run_recording(store.clone(), 1_000, "shards 1,2,3", config(4, 10, 32)).await;
    let report = result.unwrap();
    assert!(report.progress.scope_changed);
    assert_eq!(report.progress.started_from, ResumePoint::Start);
    assert_eq!(ran, (0..1_000).collect::<Vec<_>>());
    assert_eq!(store.checkpoint(), None);
    drop(cleared_before_first_save);
}

#[tokio::test]
async fn stopped_scan_with_a_new_scope_saves_under_the_new_scope() {
    let store = seeded("old", ResumePoint::After(900));
    let scan = RecoveryScan::new(
        keys(0..1_000),
        store.clone(),
        Arc::new(SyncRegistry::new()),
        config(1, 1, 1),
    )
    .unwrap();
    let control = scan.control();
    let report = scan
        .run(
            scope("new"),
            move |key, _cancel| {
                if key == 5 {
                    control.cancel();
                }
                async { SyncOutcome::Success }
            },
            no_recheck,
        )
        .await
        .unwrap();
    assert!(!report.completed);
    let checkpoint = store.checkpoint().unwrap();
    assert_eq!(checkpoint.scope, scope("new"));
    // Key 5's sync was started; the stop came before its outcome was seen.
    assert_eq!(decode(&checkpoint.resume), ResumePoint::From(5));
}

// ---------------------------------------------------------------- scan: re-check

/// Drives a scan on a `ManualClock` in 100 ms steps until it finishes.
async fn drive(clock: &ManualClock, task: &mut tokio::task::JoinHandle<()>) {
    while !task.is_finished() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        if clock.pending_sleeps() > 0 {
            clock.advance(Duration::from_millis(100));
        }
    }
}

#[tokio::test]
async fn recheck_error_is_retried_with_backoff_and_never_taken_as_done() {
    let clock = ManualClock::new();
    let store = MemoryProgressStore::new();
    let saved: Arc<Mutex<Vec<ResumePoint<u64>>>> = Arc::default();
    let rechecks: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let runs = Arc::new(AtomicU32::new(0));
    let scan = RecoveryScan::new(
        keys(0..20),
        store.clone(),
        Arc::new(SyncRegistry::new()),
        config(4, 1, 64).with_retry(RetryPolicy::default().with_jitter(0.0)),
    )
    .unwrap()
    .with_clock(Arc::new(clock.clone()))
    .on_progress({
        let saved = Arc::clone(&saved);
        move |progress| saved.lock().extend(progress.persisted.clone())
    });
    let control = scan.control();
    let (runs_, rechecks_, clock_) = (Arc::clone(&runs), Arc::clone(&rechecks), clock.clone());
    let mut task = tokio::spawn(async move {
        let report = scan
            .run(
                scope("s"),
                move |key, _cancel| {
                    let first = key == 3 && runs_.fetch_add(1, Ordering::SeqCst) == 0;
                    async move {
                        if first {
                            SyncOutcome::Cancelled
                        } else {
                            SyncOutcome::Success
                        }
                    }
                },
                move |key| {
                    assert_eq!(key, 3, "only key 3 is retried");
                    let mut calls = rechecks_.lock();
                    calls.push(clock_.elapsed());
                    let attempt = calls.len();
                    async move {
                        if attempt <= 2 {
                            Err(std::io::Error::other("index unavailable"))
                        } else {
                            Ok(Recheck::NeedsWork)
                        }
                    }
                },
            )
            .await
            .unwrap();
        assert!(report.completed);
        assert_eq!(report.progress.recheck_errors, 2);
        assert_eq!(report.progress.retries, 1);
        assert_eq!(report.progress.succeeded, 20);
    });
    drive(&clock, &mut task).await;
    task.await.unwrap();
    // First retry after 1 s; each failed re-check backs off further: 2 s, 4 s.
    let secs = |s| Duration::from_secs(s);
    assert_eq!(*rechecks.lock(), [secs(1), secs(3), secs(7)]);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the sync ran again after the re-check"
    );
    // While key 3 waited, no checkpoint passed it.
    let saved = saved.lock().clone();
    assert!(saved.contains(&ResumePoint::From(3)));
    let passed_3 = saved.iter().position(|p| p.covers(&3)).unwrap();
    assert_eq!(
        saved[passed_3],
        ResumePoint::After(19),
        "passed key 3 only once it settled"
    );
    assert!(matches!(control.stopped().await, FinalCheckpoint::Cleared));
}

#[tokio::test(start_paused = true)]
async fn recheck_that_finds_the_work_done_settles_without_rerunning_the_sync() {
    let runs = Arc::new(AtomicU32::new(0));
    let runs_ = Arc::clone(&runs);
    let scan = RecoveryScan::new(
        keys(0..5),
        MemoryProgressStore::new(),
        Arc::new(SyncRegistry::new()),
        config(2, 1, 8),
    )
    .unwrap();
    let report = scan
        .run(
            scope("s"),
            move |key, _cancel| {
                runs_.fetch_add(1, Ordering::SeqCst);
                async move {
                    if key == 2 {
                        SyncOutcome::Failed("timeout".into())
                    } else {
                        SyncOutcome::Success
                    }
                }
            },
            |_key| async { Ok::<_, Infallible>(Recheck::Done) },
        )
        .await
        .unwrap();
    assert!(report.completed);
    assert_eq!(runs.load(Ordering::SeqCst), 5);
    assert_eq!(
        (report.progress.found_done, report.progress.succeeded),
        (1, 4)
    );
    assert_eq!(report.progress.settled, 5);
}

#[tokio::test(start_paused = true)]
async fn key_is_given_up_after_max_attempts_and_reported() {
    let scan = RecoveryScan::new(
        keys(0..5),
        MemoryProgressStore::new(),
        Arc::new(SyncRegistry::new()),
        config(2, 1, 8)
            .with_retry(RetryPolicy::default().with_max_attempts(std::num::NonZeroU32::new(3))),
    )
    .unwrap();
    let report = scan
        .run(
            scope("s"),
            |key, _cancel| async move {
                if key == 4 {
                    SyncOutcome::Failed("corrupt".into())
                } else {
                    SyncOutcome::Success
                }
            },
            no_recheck,
        )
        .await
        .unwrap();
    assert!(report.completed);
    assert_eq!(report.gave_up, [4]);
    assert_eq!((report.progress.retries, report.progress.gave_up), (2, 1));
}

// ---------------------------------------------------------------- scan: concurrency, rate

#[tokio::test(start_paused = true)]
async fn retries_and_rechecks_count_toward_the_concurrency_cap() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let enter = {
        let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
        move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
        }
    };
    let (enter_sync, enter_recheck) = (enter.clone(), enter);
    let (leave_sync, leave_recheck) = (Arc::clone(&running), Arc::clone(&running));
    let attempts: Arc<Mutex<std::collections::HashMap<u64, u32>>> = Arc::default();
    let scan = RecoveryScan::new(
        keys(0..60),
        MemoryProgressStore::new(),
        Arc::new(SyncRegistry::new()),
        config(3, 5, 60).with_retry(
            RetryPolicy::default()
                .with_initial(Duration::from_millis(10))
                .with_max(Duration::from_millis(40)),
        ),
    )
    .unwrap();
    let report = scan
        .run(
            scope("s"),
            move |key, _cancel| {
                enter_sync();
                let attempt = {
                    let mut attempts = attempts.lock();
                    let attempt = attempts.entry(key).or_default();
                    *attempt += 1;
                    *attempt
                };
                let leave = Arc::clone(&leave_sync);
                async move {
                    tokio::time::sleep(Duration::from_millis(5 + key % 7)).await;
                    leave.fetch_sub(1, Ordering::SeqCst);
                    // Every key fails twice before it succeeds.
                    if attempt <= 2 {
                        SyncOutcome::Cancelled
                    } else {
                        SyncOutcome::Success
                    }
                }
            },
            move |_key| {
                enter_recheck();
                let leave = Arc::clone(&leave_recheck);
                async move {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    leave.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, Infallible>(Recheck::NeedsWork)
                }
            },
        )
        .await
        .unwrap();
    assert!(report.completed);
    assert_eq!(report.progress.retries, 120);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "syncs plus re-checks never exceed the cap"
    );
}

#[tokio::test]
async fn checkpoints_are_counted_in_settled_items_not_key_distance() {
    // Sparse keys: a step of 1,000,000 in key space per item.
    let sparse: BTreeSet<u64> = (0..100).map(|i| i * 1_000_000).collect();
    let store = MemoryProgressStore::new();
    let persisted: Arc<Mutex<Vec<ResumePoint<u64>>>> = Arc::default();
    let persisted_ = Arc::clone(&persisted);
    let scan = RecoveryScan::new(
        sparse,
        store.clone(),
        Arc::new(SyncRegistry::new()),
        config(1, 10, 16),
    )
    .unwrap()
    .on_progress(move |progress| {
        if let Some(point) = &progress.persisted {
            if persisted_.lock().last() != Some(point) {
                persisted_.lock().push(point.clone());
            }
        }
    });
    let report = scan
        .run(
            scope("s"),
            |_key, _cancel| async { SyncOutcome::Success },
            no_recheck,
        )
        .await
        .unwrap();
    assert_eq!(report.progress.checkpoints, 10);
    assert_eq!(store.saves(), 10);
    let expected: Vec<_> = (1..=10)
        .map(|i| ResumePoint::After((i * 10 - 1) * 1_000_000))
        .collect();
    assert_eq!(*persisted.lock(), expected);
}

// ---------------------------------------------------------------- scan: restart, drop

#[tokio::test]
async fn sync_in_flight_is_reattached_after_a_scan_restart_not_duplicated() {
    let registry = Arc::new(SyncRegistry::new());
    let store = MemoryProgressStore::new();
    let gate = WatchCell::new(false);
    let runs: Arc<Vec<AtomicU32>> = Arc::new((0..10).map(|_| AtomicU32::new(0)).collect());
    let sync = {
        let (gate, runs) = (gate.clone(), Arc::clone(&runs));
        move |key: u64, _cancel| {
            runs[key as usize].fetch_add(1, Ordering::SeqCst);
            let gate = gate.clone();
            async move {
                gate.wait_for(|open| *open).await.unwrap();
                SyncOutcome::Success
            }
        }
    };
    let first = RecoveryScan::new(
        keys(0..10),
        store.clone(),
        Arc::clone(&registry),
        config(4, 1, 16),
    )
    .unwrap();
    let control = first.control();
    let task = tokio::spawn(first.run(scope("s"), sync.clone(), no_recheck));
    while registry.in_flight() < 4 {
        tokio::task::yield_now().await;
    }
    control.cancel();
    assert!(!task.await.unwrap().unwrap().completed);
    assert_eq!(
        control.stopped().await,
        FinalCheckpoint::Saved(ResumePoint::From(0))
    );
    assert_eq!(
        registry.in_flight(),
        4,
        "stopping the scan left its syncs running"
    );

    let second = RecoveryScan::new(
        keys(0..10),
        store.clone(),
        Arc::clone(&registry),
        config(4, 1, 16),
    )
    .unwrap();
    let task = tokio::spawn(second.run(scope("s"), sync, no_recheck));
    tokio::task::yield_now().await;
    gate.modify(|open| *open = true);
    let report = task.await.unwrap().unwrap();
    assert!(report.completed);
    assert_eq!(report.progress.succeeded, 10);
    let runs: Vec<_> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    assert_eq!(runs, [1; 10], "each key's sync ran once across both scans");
}

#[tokio::test]
async fn dropped_scan_saves_its_resume_point_on_the_runtime() {
    let store = MemoryProgressStore::new();
    let gate = WatchCell::new(false);
    let scan = RecoveryScan::new(
        keys(0..100),
        store.clone(),
        Arc::new(SyncRegistry::new()),
        config(4, 1_000, 16),
    )
    .unwrap();
    let control = scan.control();
    let task = tokio::spawn(scan.run(
        scope("s"),
        {
            let gate = gate.clone();
            move |key, _cancel| {
                let gate = gate.clone();
                async move {
                    if key >= 30 {
                        gate.wait_for(|open| *open).await.unwrap();
                    }
                    SyncOutcome::Success
                }
            }
        },
        no_recheck,
    ));
    while control.progress().settled < 30 {
        tokio::task::yield_now().await;
    }
    assert_eq!(store.saves(), 0, "checkpoint_every is far away");
    task.abort();
    assert_eq!(
        control.stopped().await,
        FinalCheckpoint::Saved(ResumePoint::From(30))
    );
    assert_eq!(
        decode(&store.checkpoint().unwrap().resume),
        ResumePoint::From(30)
    );
}

#[test]
fn scan_dropped_outside_a_runtime_reports_that_nothing_was_saved() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = seeded("s", ResumePoint::After(9));
    let scan = RecoveryScan::new(
        keys(0..100),
        store.clone(),
        Arc::new(SyncRegistry::new()),
        config(2, 1_000, 16),
    )
    .unwrap();
    let control = scan.control();
    let mut run = Box::pin(scan.run(
        scope("s"),
        |_key, _cancel| std::future::pending::<SyncOutcome>(),
        no_recheck,
    ));
    runtime.block_on(async {
        while control.progress().in_flight < 2 {
            assert!(futures::poll!(run.as_mut()).is_pending());
            tokio::task::yield_now().await;
        }
    });
    drop(runtime);
    drop(run);
    assert_eq!(
        futures::executor::block_on(control.stopped()),
        FinalCheckpoint::NotSaved
    );
    assert_eq!(
        decode(&store.checkpoint().unwrap().resume),
        ResumePoint::After(9)
    );
}

// ---------------------------------------------------------------- scan: errors

/// A source that fails on its `fail_on`th read, or returns keys out of order.
struct FaultySource {
    reads: AtomicU32,
    fail_on: u32,
    disorder: bool,
}

impl KeySource<u64> for FaultySource {
    type Error = std::io::Error;

    async fn next_batch(
        &self,
        from: &ResumePoint<u64>,
        limit: usize,
    ) -> Result<Vec<u64>, Self::Error> {
        let read = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        if read == self.fail_on {
            return Err(std::io::Error::other("index scan timed out"));
        }
        if self.disorder && read == 2 {
            return Ok(vec![3]);
        }
        Ok((0..1_000).filter(|k| !from.covers(k)).take(limit).collect())
    }
}

#[tokio::test]
async fn source_read_error_is_an_error_not_the_end_of_the_keys() {
    let store = MemoryProgressStore::new();
    let source = FaultySource {
        reads: AtomicU32::new(0),
        fail_on: 3,
        disorder: false,
    };
    let scan = RecoveryScan::new(
        source,
        store.clone(),
        Arc::new(SyncRegistry::new()),
        config(4, 1_000, 256),
    )
    .unwrap();
    let control = scan.control();
    let error = scan
        .run(
            scope("s"),
            |_key, _cancel| async { SyncOutcome::Success },
            no_recheck,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ScanError::Source(_)), "{error}");
    assert!(error.to_string().contains("index scan timed out"));
    // The checkpoint was saved, not cleared.
    let FinalCheckpoint::Saved(point) = control.stopped().await else {
        panic!("not saved")
    };
    assert!(point > ResumePoint::Start);
    assert_eq!(decode(&store.checkpoint().unwrap().resume), point);
}

#[tokio::test]
async fn out_of_order_source_is_rejected() {
    let source = FaultySource {
        reads: AtomicU32::new(0),
        fail_on: 0,
        disorder: true,
    };
    let scan = RecoveryScan::new(
        source,
        MemoryProgressStore::new(),
        Arc::new(SyncRegistry::new()),
        config(4, 1_000, 256),
    )
    .unwrap();
    let error = scan
        .run(
            scope("s"),
            |_key, _cancel| async { SyncOutcome::Success },
            no_recheck,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, ScanError::SourceOutOfOrder { .. }),
        "{error}"
    );
}

/// A store whose reads fail.
struct Unreadable;

impl ProgressStore for Unreadable {
    async fn load(&self) -> Result<Option<Checkpoint>, ProgressStoreError> {
        Err(ProgressStoreError::Backend {
            backend: "test",
            source: "disk gone".into(),
        })
    }
    async fn save(&self, _: Checkpoint) -> Result<(), ProgressStoreError> {
        panic!("nothing to save after a failed load")
    }
    async fn clear(&self) -> Result<(), ProgressStoreError> {
        panic!("a failed load is not an empty store")
    }
}

#[tokio::test]
async fn store_load_error_stops_the_scan_before_any_sync() {
    let scan = RecoveryScan::new(
        keys(0..10),
        Unreadable,
        Arc::new(SyncRegistry::new()),
        config(4, 1, 16),
    )
    .unwrap();
    let control = scan.control();
    let error = scan
        .run(
            scope("s"),
            |_key, _cancel| async { panic!("no sync may run") },
            no_recheck,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, ScanError::Store(ProgressStoreError::Backend { .. })),
        "{error}"
    );
    assert_eq!(control.stopped().await, FinalCheckpoint::NotSaved);
}

#[tokio::test]
async fn undecodable_checkpoint_key_is_an_error() {
    let store = MemoryProgressStore::new();
    store
        .save(Checkpoint {
            scope: scope("s"),
            resume: ResumePoint::From(vec![1, 2, 3]),
        })
        .await
        .unwrap();
    let scan = RecoveryScan::new(
        keys(0..10),
        store,
        Arc::new(SyncRegistry::new()),
        config(4, 1, 16),
    )
    .unwrap();
    let error = scan
        .run(
            scope("s"),
            |_key, _cancel| async { SyncOutcome::Success },
            no_recheck,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ScanError::CheckpointKey(_)), "{error}");
}

#[test]
fn invalid_configuration_is_rejected_by_setting_name() {
    let new = |config| {
        RecoveryScan::new(
            keys(0..1),
            MemoryProgressStore::new(),
            Arc::new(SyncRegistry::new()),
            config,
        )
        .unwrap_err()
        .setting
    };
    assert_eq!(new(config(0, 1, 1)), "concurrency");
    assert_eq!(new(config(1, 0, 1)), "checkpoint_every");
    assert_eq!(new(config(1, 1, 0)), "window");
}

// ---------------------------------------------------------------- scan: given-up keys and crashes

/// Runs a scan of keys `0..10` over `store`, on a runtime of its own, where
/// key 3 fails its only allowed attempt (it is given up at once) and key 7's
/// sync never finishes; then "crashes" (drops the runtime with the scan and
/// everything it spawned) once the stored checkpoint has passed key 3.
fn crash_after_giving_up_key_3<S: ProgressStore + Clone>(store: S) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let scan = RecoveryScan::new(
            keys(0..10),
            store.clone(),
            Arc::new(SyncRegistry::new()),
            config(4, 1, 16)
                .with_retry(RetryPolicy::default().with_max_attempts(std::num::NonZeroU32::new(1))),
        )
        .unwrap();
        let run = scan.run(
            scope("s"),
            |key, _cancel| async move {
                match key {
                    3 => SyncOutcome::Failed("corrupt blob".into()),
                    7 => std::future::pending().await,
                    _ => SyncOutcome::Success,
                }
            },
            no_recheck,
        );
        let passed_3 = async {
            loop {
                let saved = store.load().await.unwrap();
                if saved.is_some_and(|checkpoint| decode(&checkpoint.resume).covers(&3)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::select! {
            report = run => panic!("the scan cannot finish while key 7 hangs: {report:?}"),
            passed = tokio::time::timeout(Duration::from_secs(10), passed_3) => {
                passed.expect("the checkpoint passes key 3");
            }
        }
    });
    drop(runtime); // the crash: nothing more runs
}

/// The scan that resumes after [`crash_after_giving_up_key_3`]: every sync
/// succeeds; returns its report and how often each key's sync ran.
fn resume_after_the_crash<S: ProgressStore>(store: S) -> (ScanReport<u64>, Vec<u32>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ran: Arc<Vec<AtomicU32>> = Arc::new((0..10).map(|_| AtomicU32::new(0)).collect());
    let report = runtime.block_on({
        let ran = Arc::clone(&ran);
        async move {
            let scan = RecoveryScan::new(
                keys(0..10),
                store,
                Arc::new(SyncRegistry::new()),
                config(4, 1, 16),
            )
            .unwrap();
            let run = scan.run(
                scope("s"),
                move |key: u64, _cancel| {
                    ran[key as usize].fetch_add(1, Ordering::SeqCst);
                    async { SyncOutcome::Success }
                },
                no_recheck,
            );
            tokio::time::timeout(Duration::from_secs(10), run)
                .await
                .expect("the resumed scan finishes")
                .unwrap()
        }
    });
    let ran = ran.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    (report, ran)
}

#[test]
fn given_up_key_is_reported_again_by_the_scan_resumed_after_a_crash() {
    let store = MemoryProgressStore::new();
    crash_after_giving_up_key_3(store.clone());
    assert_eq!(store.given_up(), [3_u64.to_bytes()]);

    let (report, ran) = resume_after_the_crash(store.clone());
    assert!(report.completed);
    assert_eq!(
        report.gave_up,
        [3],
        "the given-up key is reported, not lost"
    );
    assert_eq!(report.progress.gave_up, 1);
    assert_eq!(ran[3], 0, "a given-up key is the caller's, not retried");
    assert_eq!(ran[7], 1, "the key in flight at the crash runs again");
    assert_eq!(store.checkpoint(), None);
}

/// A store that implements only `load`, `save` and `clear`: it cannot keep
/// given-up keys.
#[derive(Clone, Default)]
struct PlainStore(MemoryProgressStore);

impl ProgressStore for PlainStore {
    async fn load(&self) -> Result<Option<Checkpoint>, ProgressStoreError> {
        self.0.load().await
    }
    async fn save(&self, checkpoint: Checkpoint) -> Result<(), ProgressStoreError> {
        self.0.save(checkpoint).await
    }
    async fn clear(&self) -> Result<(), ProgressStoreError> {
        self.0.clear().await
    }
}

#[test]
fn given_up_key_is_retried_after_a_crash_when_the_store_cannot_keep_it() {
    let store = PlainStore::default();
    // The checkpoint never passes key 3 in such a store, so "crash" once it
    // reached it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let scan = RecoveryScan::new(
            keys(0..10),
            store.clone(),
            Arc::new(SyncRegistry::new()),
            config(4, 1, 16)
                .with_retry(RetryPolicy::default().with_max_attempts(std::num::NonZeroU32::new(1))),
        )
        .unwrap();
        let control = scan.control();
        let run = scan.run(
            scope("s"),
            |key, _cancel| async move {
                match key {
                    3 => SyncOutcome::Failed("corrupt blob".into()),
                    7 => std::future::pending().await,
                    _ => SyncOutcome::Success,
                }
            },
            no_recheck,
        );
        let settled = async {
            // Every key but 7 settled (3 given up); the saves are done.
            while control.progress().settled < 9 || control.progress().checkpoints == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::select! {
            report = run => panic!("the scan cannot finish while key 7 hangs: {report:?}"),
            () = settled => {}
        }
        assert_eq!(control.progress().resume_point, ResumePoint::From(7));
    });
    drop(runtime);
    let saved = decode(&store.0.checkpoint().unwrap().resume);
    assert!(
        !saved.covers(&3),
        "saved {saved:?} passes the given-up key 3"
    );

    let (report, ran) = resume_after_the_crash(store);
    assert!(report.completed);
    assert_eq!(ran[3], 1, "the given-up key is retried, not passed");
    assert!(report.gave_up.is_empty());
}

// ---------------------------------------------------------------- SQLite store

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;
    use leasehold::recovery::{ProgressStoreError, SqliteProgressStore};

    #[tokio::test]
    async fn sqlite_store_round_trips_every_resume_point_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.db");
        let store = SqliteProgressStore::open(&path, "scan-a").await.unwrap();
        assert_eq!(store.load().await.unwrap(), None);
        for resume in [
            ResumePoint::Start,
            ResumePoint::From(vec![1, 2]),
            ResumePoint::After(vec![]),
        ] {
            let checkpoint = Checkpoint {
                scope: scope("shards 1,2"),
                resume,
            };
            store.save(checkpoint.clone()).await.unwrap();
            drop(store.clone());
            let reopened = SqliteProgressStore::open(&path, "scan-a").await.unwrap();
            assert_eq!(reopened.load().await.unwrap(), Some(checkpoint));
        }
        store.clear().await.unwrap();
        store.clear().await.unwrap(); // idempotent
        assert_eq!(
            SqliteProgressStore::open(&path, "scan-a")
                .await
                .unwrap()
                .load()
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn sqlite_store_keeps_the_checkpoints_of_different_scans_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.db");
        let a = SqliteProgressStore::open(&path, "a").await.unwrap();
        let b = SqliteProgressStore::open(&path, "b").await.unwrap();
        let checkpoint = Checkpoint {
            scope: scope("s"),
            resume: ResumePoint::After(vec![9]),
        };
        a.save(checkpoint.clone()).await.unwrap();
        assert_eq!(b.load().await.unwrap(), None);
        b.clear().await.unwrap();
        assert_eq!(a.load().await.unwrap(), Some(checkpoint));
    }

    #[tokio::test]
    async fn sqlite_store_reports_an_unreadable_row_as_corrupt_not_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.db");
        let store = SqliteProgressStore::open(&path, "a").await.unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO leasehold_scan_progress (scan, scope, position, key) VALUES ('a', x'00', 7, NULL)",
            [],
        )
        .unwrap();
        let error = store.load().await.unwrap_err();
        assert!(
            matches!(error, ProgressStoreError::Corrupt { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn sqlite_store_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.db");
        drop(SqliteProgressStore::open(&path, "a").await.unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE leasehold_schema SET version = 99 WHERE component = 'scan_progress'",
            [],
        )
        .unwrap();
        let error = SqliteProgressStore::open(&path, "a").await.unwrap_err();
        assert!(error.to_string().contains("99"), "{error}");
    }

    #[test]
    fn given_up_key_is_reported_again_after_a_crash_with_the_sqlite_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let open = || SqliteProgressStore::open_blocking(&path, "recovery").unwrap();
        crash_after_giving_up_key_3(open());

        let (report, ran) = resume_after_the_crash(open());
        assert!(report.completed);
        assert_eq!(
            report.gave_up,
            [3],
            "the given-up key is reported, not lost"
        );
        assert_eq!(ran[3], 0);
        assert_eq!(ran[7], 1);
    }

    /// A file written before given-up keys were kept (progress schema 1) is
    /// upgraded in place when opened: its checkpoint stays.
    #[tokio::test]
    async fn sqlite_store_upgrades_a_version_1_file_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE leasehold_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL);
             INSERT INTO leasehold_schema VALUES ('scan_progress', 1);
             CREATE TABLE leasehold_scan_progress (
                 scan TEXT PRIMARY KEY, scope BLOB NOT NULL, position INTEGER NOT NULL, key BLOB);
             INSERT INTO leasehold_scan_progress VALUES ('a', X'73', 2, X'0000000000000005');",
        )
        .unwrap();
        drop(conn);
        let store = SqliteProgressStore::open(&path, "a").await.unwrap();
        let checkpoint = Checkpoint {
            scope: scope("s"),
            resume: ResumePoint::After(5_u64.to_bytes()),
        };
        assert_eq!(store.load().await.unwrap(), Some(checkpoint.clone()));
        store
            .save_with_given_up(checkpoint.clone(), vec![vec![1], vec![]])
            .await
            .unwrap();
        let reopened = SqliteProgressStore::open(&path, "a").await.unwrap();
        assert_eq!(
            reopened.load_with_given_up().await.unwrap(),
            Some((checkpoint, vec![vec![1], vec![]]))
        );
    }

    /// A scan stopped in one "process" resumes in the next from the
    /// checkpoint in the file, and clears it when done.
    #[tokio::test(start_paused = true)]
    async fn scan_resumes_from_the_sqlite_checkpoint_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.db");
        let ran: Arc<Vec<AtomicU32>> = Arc::new((0..2_000).map(|_| AtomicU32::new(0)).collect());
        let sync = {
            let ran = Arc::clone(&ran);
            move |key: u64, _cancel| {
                ran[key as usize].fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(1 + key % 5)).await;
                    SyncOutcome::Success
                }
            }
        };
        let open = || SqliteProgressStore::open_blocking(&path, "recovery");
        let first = RecoveryScan::new(
            keys(0..2_000),
            open().unwrap(),
            Arc::new(SyncRegistry::new()),
            config(8, 50, 64),
        )
        .unwrap();
        let control = first.control();
        let task = tokio::spawn(first.run(scope("s"), sync.clone(), no_recheck));
        while control.progress().settled < 700 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        task.abort(); // the drop saves the resume point
        let FinalCheckpoint::Saved(saved) = control.stopped().await else {
            panic!("not saved")
        };

        let second = RecoveryScan::new(
            keys(0..2_000),
            open().unwrap(),
            Arc::new(SyncRegistry::new()),
            config(8, 50, 64),
        )
        .unwrap();
        let report = second.run(scope("s"), sync, no_recheck).await.unwrap();
        assert!(report.completed);
        assert_eq!(report.progress.started_from, saved);
        let rescanned = ran.iter().filter(|r| r.load(Ordering::SeqCst) > 1).count();
        assert!(ran.iter().all(|r| r.load(Ordering::SeqCst) >= 1));
        assert!(
            rescanned <= 64,
            "only the window is repeated, got {rescanned}"
        );
        assert_eq!(open().unwrap().load().await.unwrap(), None);
    }
}

// ------------------------------------------------------------ PostgreSQL store

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use leasehold::recovery::{PostgresProgressStore, ProgressStoreError};

    /// The server and a private schema, dropped at the end; `None` (after a
    /// loud notice) without a server.
    struct Db {
        url: String,
        schema: String,
    }

    impl Db {
        fn new(test: &str) -> Option<Self> {
            Some(Db {
                url: crate::pg_support::url(test)?,
                schema: crate::pg_support::fresh_schema("lh_progress"),
            })
        }

        async fn open(&self, scan: &str) -> Result<PostgresProgressStore, ProgressStoreError> {
            PostgresProgressStore::builder(&self.url, scan)
                .schema(&self.schema)
                .pool_size(2)
                .open()
                .await
        }

        async fn sql(&self, sql: &str) {
            let (client, connection) =
                leasehold::tokio_postgres::connect(&self.url, leasehold::tokio_postgres::NoTls)
                    .await
                    .unwrap();
            tokio::spawn(connection);
            client
                .batch_execute(&format!("SET search_path = \"{}\"; {sql}", self.schema))
                .await
                .unwrap();
        }
    }

    impl Drop for Db {
        fn drop(&mut self) {
            crate::pg_support::drop_schema(&self.url, &self.schema);
        }
    }

    #[tokio::test]
    async fn postgres_store_round_trips_every_resume_point_and_survives_reopen() {
        let Some(db) = Db::new("postgres_store_round_trips") else {
            return;
        };
        let store = db.open("scan-a").await.unwrap();
        assert_eq!(store.load().await.unwrap(), None);
        for resume in [
            ResumePoint::Start,
            ResumePoint::From(vec![1, 2]),
            ResumePoint::After(vec![]),
        ] {
            let checkpoint = Checkpoint {
                scope: scope("shards 1,2"),
                resume,
            };
            store.save(checkpoint.clone()).await.unwrap();
            let reopened = db.open("scan-a").await.unwrap();
            assert_eq!(reopened.load().await.unwrap(), Some(checkpoint));
        }
        store.clear().await.unwrap();
        store.clear().await.unwrap(); // idempotent
        assert_eq!(db.open("scan-a").await.unwrap().load().await.unwrap(), None);
    }

    #[tokio::test]
    async fn postgres_store_keeps_the_checkpoints_of_different_scans_apart() {
        let Some(db) = Db::new("postgres_store_keeps_scans_apart") else {
            return;
        };
        let a = db.open("a").await.unwrap();
        let b = db.open("b").await.unwrap();
        let checkpoint = Checkpoint {
            scope: scope("s"),
            resume: ResumePoint::After(vec![9]),
        };
        a.save(checkpoint.clone()).await.unwrap();
        assert_eq!(b.load().await.unwrap(), None);
        b.clear().await.unwrap();
        assert_eq!(a.load().await.unwrap(), Some(checkpoint));
    }

    #[tokio::test]
    async fn postgres_store_reports_an_unreadable_row_as_corrupt_not_as_absent() {
        let Some(db) = Db::new("postgres_store_reports_corrupt") else {
            return;
        };
        let store = db.open("a").await.unwrap();
        db.sql(
            "INSERT INTO leasehold_scan_progress (scan, scope, position, key) \
             VALUES ('a', '\\x00', 7, NULL)",
        )
        .await;
        let error = store.load().await.unwrap_err();
        assert!(
            matches!(error, ProgressStoreError::Corrupt { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn postgres_store_refuses_a_newer_schema() {
        let Some(db) = Db::new("postgres_store_refuses_a_newer_schema") else {
            return;
        };
        drop(db.open("a").await.unwrap());
        db.sql("UPDATE leasehold_schema SET version = 99 WHERE component = 'scan_progress'")
            .await;
        let error = db.open("a").await.unwrap_err();
        assert!(
            matches!(
                error,
                ProgressStoreError::SchemaTooNew {
                    found: 99,
                    supported: 2
                }
            ) && !error.is_transient(),
            "{error}"
        );
    }

    #[tokio::test]
    async fn postgres_store_reports_an_unreachable_server_as_a_backend_error() {
        let Some(_db) = Db::new("postgres_store_unreachable_server") else {
            return;
        };
        // Port 1 on loopback: nothing listens there.
        let error = PostgresProgressStore::builder("postgres://nobody@127.0.0.1:1/none", "a")
            .connect_timeout(Duration::from_secs(2))
            .open()
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProgressStoreError::Backend { .. }),
            "{error}"
        );
    }

    /// Many processes may open a fresh database at once: the schema is
    /// created exactly once, under the advisory lock, and nobody fails.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_opens_of_a_fresh_database_all_succeed() {
        let Some(db) = Db::new("postgres_concurrent_opens") else {
            return;
        };
        let db = Arc::new(db);
        let opens: Vec<_> = (0..8)
            .map(|i| {
                let db = Arc::clone(&db);
                tokio::spawn(async move { db.open(&format!("scan-{i}")).await.map(|_| ()) })
            })
            .collect();
        for open in opens {
            open.await.unwrap().unwrap();
        }
    }

    #[test]
    fn given_up_key_is_reported_again_after_a_crash_with_the_postgres_store() {
        let Some(db) = Db::new("given_up_key_survives_a_crash") else {
            return;
        };
        let open = || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(db.open("recovery")).unwrap()
        };
        crash_after_giving_up_key_3(open());

        let (report, ran) = resume_after_the_crash(open());
        assert!(report.completed);
        assert_eq!(
            report.gave_up,
            [3],
            "the given-up key is reported, not lost"
        );
        assert_eq!(ran[3], 0);
        assert_eq!(ran[7], 1);
    }

    /// A scan stopped in one "process" resumes in the next from the
    /// checkpoint on the server, and clears it when done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scan_resumes_from_the_postgres_checkpoint_after_a_restart() {
        let Some(db) = Db::new("scan_resumes_from_the_postgres_checkpoint") else {
            return;
        };
        let ran: Arc<Vec<AtomicU32>> = Arc::new((0..2_000).map(|_| AtomicU32::new(0)).collect());
        let sync = {
            let ran = Arc::clone(&ran);
            move |key: u64, _cancel| {
                ran[key as usize].fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(1 + key % 3)).await;
                    SyncOutcome::Success
                }
            }
        };
        let first = RecoveryScan::new(
            keys(0..2_000),
            db.open("recovery").await.unwrap(),
            Arc::new(SyncRegistry::new()),
            config(16, 50, 64),
        )
        .unwrap();
        let control = first.control();
        let task = tokio::spawn(first.run(scope("s"), sync.clone(), no_recheck));
        while control.progress().settled < 700 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        task.abort(); // the drop saves the resume point
        let FinalCheckpoint::Saved(saved) = control.stopped().await else {
            panic!("not saved")
        };

        let second = RecoveryScan::new(
            keys(0..2_000),
            db.open("recovery").await.unwrap(),
            Arc::new(SyncRegistry::new()),
            config(16, 50, 64),
        )
        .unwrap();
        let report = second.run(scope("s"), sync, no_recheck).await.unwrap();
        assert!(report.completed);
        assert_eq!(report.progress.started_from, saved);
        assert_ne!(saved, ResumePoint::Start, "the first run got somewhere");
        let rescanned = ran.iter().filter(|r| r.load(Ordering::SeqCst) > 1).count();
        assert!(ran.iter().all(|r| r.load(Ordering::SeqCst) >= 1));
        assert!(
            rescanned <= 64,
            "only the window is repeated, got {rescanned}"
        );
        assert_eq!(
            db.open("recovery").await.unwrap().load().await.unwrap(),
            None
        );
    }
}
