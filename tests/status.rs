//! Behavioural specification of the sync-status channel and `SyncRegistry`.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use leasehold::WatchCell;
use leasehold::status::{
    self, BlockingCancellation, CancellationToken, Claim, Outcome, SyncOutcome, SyncReceiver,
    SyncRegistry, SyncStatus, TimedOut,
};

/// A guard against hangs: far longer than any of these tests needs.
const HANG: Duration = Duration::from_secs(30);

/// How long a call that must not deadlock may take (Miri interprets the
/// code, some hundred times slower).
const DEADLOCK: Duration = Duration::from_secs(if cfg!(miri) { 120 } else { 5 });

/// Sizes of the stress tests: smaller under Miri, which checks each
/// interleaving it runs for undefined behaviour rather than hunting races.
const WAITERS: (usize, usize) = if cfg!(miri) { (8, 2) } else { (100, 10) };
const STARTS: usize = if cfg!(miri) { 40 } else { 1000 };
const ROUNDS: usize = if cfg!(miri) { 20 } else { 2000 };

fn multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// Spins (yielding) until `n` waits are parked on `receiver`'s channel.
fn await_waiting<O>(receiver: &SyncReceiver<O>, n: usize) {
    while receiver.waiting() < n {
        std::thread::yield_now();
    }
}

/// An outcome that says which job produced it, and carries a payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum BlobCopy {
    Done { job: usize, bytes: u64 },
    Stopped { job: usize, bytes: u64 },
    Abandoned,
    Panicked(String),
}

impl Outcome for BlobCopy {
    fn abandoned() -> Self {
        BlobCopy::Abandoned
    }
    fn panicked(message: String) -> Self {
        BlobCopy::Panicked(message)
    }
}

/// Runs `f` on its own thread and fails the test if it has not returned
/// within a few seconds: a deadlock fails fast instead of hanging the run.
///
/// `hostages` is what the test would drop on its way out; a deadlocked `f`
/// may hold the locks those drops need, so on a timeout they are leaked
/// rather than dropped, and the failure is reported instead of hanging.
fn within_seconds<T: Send + 'static, H>(
    what: &str,
    hostages: H,
    f: impl FnOnce() -> T + Send + 'static,
) -> (T, H) {
    let (done, finished) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = done.send(f());
    });
    match finished.recv_timeout(DEADLOCK) {
        Ok(value) => (value, hostages),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(thread.join().expect_err("the thread sent nothing"))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            std::mem::forget(hostages);
            panic!("{what} did not return within {DEADLOCK:?} (deadlocked?)")
        }
    }
}

/// A waker that runs its callback when woken, on the waking thread: a task
/// whose wake-up calls back into the registry inline.
struct CallbackWaker(Box<dyn Fn() + Send + Sync>);

impl Wake for CallbackWaker {
    fn wake(self: Arc<Self>) {
        (self.0)();
    }
}

/// A gate that jobs wait on, so they stay in flight until a test opens it.
fn gate() -> WatchCell<bool> {
    WatchCell::new(false)
}

// ---------------------------------------------------------------- channel

#[test]
fn async_and_blocking_waiters_all_observe_the_same_outcome() {
    let runtime = multi_thread(2);
    let (publisher, receiver) = status::channel();
    let (tasks, threads) = WAITERS;
    let tasks: Vec<_> = (0..tasks)
        .map(|_| {
            let receiver = receiver.clone();
            runtime.spawn(async move { receiver.done().await })
        })
        .collect();
    let threads: Vec<_> = (0..threads)
        .map(|_| {
            let receiver = receiver.subscribe();
            std::thread::spawn(move || receiver.blocking_done())
        })
        .collect();
    await_waiting(&receiver, WAITERS.0 + WAITERS.1);
    publisher.publish(SyncOutcome::Failed("checksum mismatch".into()));
    let expected = SyncOutcome::Failed("checksum mismatch".into());
    runtime.block_on(async {
        for task in tasks {
            assert_eq!(task.await.unwrap(), expected);
        }
    });
    for thread in threads {
        assert_eq!(thread.join().unwrap(), expected);
    }
    assert_eq!(receiver.waiting(), 0);
}

#[test]
fn late_subscriber_sees_done_at_once_and_it_outlives_the_publisher() {
    let (publisher, early) = status::channel();
    let publisher_side = publisher.subscribe();
    publisher.publish(SyncOutcome::Skipped);
    // The publisher is gone (consumed); new receivers still read the outcome.
    let late = early.subscribe();
    assert_eq!(late.status(), SyncStatus::Done(SyncOutcome::Skipped));
    assert!(late.is_done());
    assert_eq!(
        late.blocking_done_deadline(Instant::now()),
        Ok(SyncOutcome::Skipped)
    );
    assert_eq!(publisher_side.blocking_done(), SyncOutcome::Skipped);
    assert!(late.same_channel(&publisher_side));
}

#[test]
fn dropped_publisher_wakes_every_waiter_with_cancelled() {
    let runtime = multi_thread(2);
    let (publisher, receiver) = status::channel::<SyncOutcome>();
    let task = runtime.spawn({
        let receiver = receiver.clone();
        async move { receiver.done().await }
    });
    let thread = std::thread::spawn({
        let receiver = receiver.clone();
        move || receiver.blocking_done()
    });
    await_waiting(&receiver, 2);
    drop(publisher);
    assert_eq!(runtime.block_on(task).unwrap(), SyncOutcome::Cancelled);
    assert_eq!(thread.join().unwrap(), SyncOutcome::Cancelled);
    assert_eq!(receiver.status(), SyncStatus::Done(SyncOutcome::Cancelled));
}

#[test]
fn dropped_publisher_of_a_custom_outcome_publishes_its_abandoned_value() {
    let (publisher, receiver) = status::channel::<BlobCopy>();
    drop(publisher);
    assert_eq!(receiver.blocking_done(), BlobCopy::Abandoned);
}

#[test]
fn blocking_wait_times_out_while_pending_and_an_outcome_published_later_is_still_seen() {
    let (publisher, receiver) = status::channel::<SyncOutcome>();
    assert_eq!(
        receiver.blocking_done_deadline(Instant::now()),
        Err(TimedOut)
    );
    assert_eq!(
        receiver.blocking_done_timeout(Duration::ZERO),
        Err(TimedOut)
    );
    assert_eq!(receiver.waiting(), 0, "a timed-out wait unregisters");
    publisher.publish(SyncOutcome::Success);
    assert_eq!(
        receiver.blocking_done_timeout(Duration::ZERO),
        Ok(SyncOutcome::Success)
    );
}

#[tokio::test(start_paused = true)]
async fn async_wait_cut_short_by_a_timeout_unregisters_and_a_retry_gets_the_outcome() {
    let (publisher, receiver) = status::channel();
    let cut_short = tokio::time::timeout(Duration::from_secs(3600), receiver.done()).await;
    assert!(cut_short.is_err(), "nothing was published");
    assert_eq!(receiver.waiting(), 0);
    publisher.publish(SyncOutcome::Success);
    assert_eq!(receiver.done().await, SyncOutcome::Success);
}

#[test]
fn blocking_waiter_is_released_by_publication_and_unregisters() {
    let (publisher, receiver) = status::channel();
    let waiter = std::thread::spawn({
        let receiver = receiver.clone();
        move || receiver.blocking_done()
    });
    await_waiting(&receiver, 1);
    publisher.publish(SyncOutcome::Success);
    assert_eq!(waiter.join().unwrap(), SyncOutcome::Success);
    assert_eq!(receiver.waiting(), 0);
}

// --------------------------------------------------------------- registry

#[test]
fn concurrent_starts_of_ten_keys_run_exactly_ten_jobs() {
    let runtime = multi_thread(4);
    let registry = Arc::new(SyncRegistry::<usize, BlobCopy>::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let open = gate();
    let receivers = runtime.block_on(async {
        let starts: Vec<_> = (0..STARTS)
            .map(|i| {
                let (registry, runs, open) = (registry.clone(), runs.clone(), open.clone());
                tokio::spawn(async move {
                    let key = i % 10;
                    let start = registry.start(key, move |_cancel| async move {
                        let job = runs.fetch_add(1, Ordering::SeqCst);
                        open.wait_for(|open| *open).await.unwrap();
                        BlobCopy::Done {
                            job,
                            bytes: key as u64,
                        }
                    });
                    (key, start)
                })
            })
            .collect();
        let mut receivers = Vec::new();
        for start in starts {
            receivers.push(start.await.unwrap());
        }
        receivers
    });
    assert_eq!(registry.in_flight(), 10);
    // Exactly one caller per key was told it started the job.
    let started: Vec<_> = receivers
        .iter()
        .filter(|(_, start)| start.is_started())
        .map(|(key, _)| *key)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        receivers
            .iter()
            .filter(|(_, start)| start.is_started())
            .count(),
        10
    );
    assert_eq!(started.len(), 10);
    open.modify(|open| *open = true);
    let outcomes = runtime.block_on(async {
        let mut outcomes = Vec::new();
        for (key, start) in &receivers {
            let receiver = start.receiver();
            let outcome = tokio::time::timeout(HANG, receiver.done()).await.unwrap();
            outcomes.push((*key, outcome));
        }
        outcomes
    });
    assert_eq!(runs.load(Ordering::SeqCst), 10);
    // Every receiver of a key got the outcome of that key's one job.
    for key in 0..10 {
        let jobs: HashSet<_> = outcomes
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, outcome)| outcome.clone())
            .collect();
        assert_eq!(jobs.len(), 1, "key {key} saw outcomes {jobs:?}");
        assert!(
            matches!(jobs.iter().next(), Some(BlobCopy::Done { bytes, .. }) if *bytes == key as u64)
        );
    }
    assert_eq!(registry.in_flight(), 0);
}

#[test]
fn start_racing_completion_never_returns_a_hanging_receiver() {
    let runtime = multi_thread(2);
    let registry = Arc::new(SyncRegistry::<u8, BlobCopy>::new());
    let runs = Arc::new(AtomicUsize::new(0));
    runtime.block_on(async {
        for _ in 0..ROUNDS {
            let job = |runs: Arc<AtomicUsize>| {
                move |_cancel| async move {
                    let job = runs.fetch_add(1, Ordering::SeqCst);
                    BlobCopy::Done { job, bytes: 0 }
                }
            };
            let first = registry.start(0, job(runs.clone()));
            assert!(first.is_started(), "the previous job has freed the key");
            let first = first.into_receiver();
            // Races the first job's completion on another worker.
            let second = tokio::spawn({
                let (registry, runs) = (registry.clone(), runs.clone());
                async move { registry.start(0, job(runs)) }
            })
            .await
            .unwrap();
            let joined = second.is_joined();
            let second = second.into_receiver();
            let first_outcome = tokio::time::timeout(HANG, first.done()).await.unwrap();
            let second_outcome = tokio::time::timeout(HANG, second.done()).await.unwrap();
            // Joined the same job, or started a new one: never both seeing
            // a stale or duplicated job, and told which.
            assert_eq!(first.same_channel(&second), joined);
            assert_eq!(
                joined,
                first_outcome == second_outcome,
                "{first_outcome:?} / {second_outcome:?}"
            );
        }
        // Wait for every job to have freed its key.
        while registry.in_flight() > 0 {
            tokio::task::yield_now().await;
        }
    });
    assert!(runs.load(Ordering::SeqCst) >= ROUNDS);
}

#[test]
fn claim_attaches_before_publication_and_starts_fresh_after_it() {
    let registry = SyncRegistry::<&str>::new();
    let Claim::Owner(owner) = registry.claim("blob") else {
        panic!("the key was free");
    };
    let Claim::Attached(attached) = registry.claim("blob") else {
        panic!("the key is claimed");
    };
    assert!(owner.subscribe().same_channel(&attached));
    assert_eq!(registry.in_flight(), 1);
    owner.publish(SyncOutcome::Success);
    // One step: the key is free and the outcome readable.
    assert_eq!(registry.in_flight(), 0);
    assert_eq!(attached.status(), SyncStatus::Done(SyncOutcome::Success));
    let Claim::Owner(fresh) = registry.claim("blob") else {
        panic!("the key was freed by publication");
    };
    assert!(!fresh.subscribe().same_channel(&attached));
    assert!(fresh.subscribe().status().is_pending());
}

#[test]
fn dropped_keyed_publisher_frees_its_key_and_publishes_abandoned() {
    let registry = SyncRegistry::<u32, BlobCopy>::new();
    let Claim::Owner(owner) = registry.claim(9) else {
        panic!("the key was free");
    };
    let receiver = owner.subscribe();
    drop(owner);
    assert_eq!(receiver.blocking_done(), BlobCopy::Abandoned);
    assert_eq!(registry.in_flight(), 0);
    assert!(registry.subscribe(&9).is_none());
}

#[tokio::test]
async fn cancelled_job_outcome_is_cancelled() {
    let registry = SyncRegistry::new();
    let receiver = registry
        .start("blob", |cancel| async move {
            match cancel
                .run_until_cancelled(std::future::pending::<()>())
                .await
            {
                Some(()) => SyncOutcome::Success,
                None => SyncOutcome::Cancelled,
            }
        })
        .into_receiver();
    let cancelled = registry.cancel("blob").expect("the job is in flight");
    assert_eq!(cancelled.done().await, SyncOutcome::Cancelled);
    assert_eq!(receiver.done().await, SyncOutcome::Cancelled);
    assert_eq!(registry.in_flight(), 0);
}

#[tokio::test]
async fn cancel_by_key_signals_only_that_job() {
    let registry = SyncRegistry::new();
    let open = gate();
    let mut receivers = Vec::new();
    for key in ["a", "b"] {
        let open = open.clone();
        receivers.push(
            registry
                .start(key, move |cancel| async move {
                    let opened = cancel
                        .run_until_cancelled(async { open.wait_for(|open| *open).await.unwrap() })
                        .await;
                    match opened {
                        Some(()) => SyncOutcome::Success,
                        None => SyncOutcome::Cancelled,
                    }
                })
                .into_receiver(),
        );
    }
    assert!(registry.cancel("missing").is_none());
    let a = registry.cancel("a").expect("in flight");
    assert_eq!(a.done().await, SyncOutcome::Cancelled);
    assert_eq!(registry.in_flight(), 1);
    assert!(registry.subscribe("b").is_some());
    open.modify(|open| *open = true);
    assert_eq!(receivers[1].done().await, SyncOutcome::Success);
}

/// A job that copies until cancelled, then reports how far it got.
fn copier(
    job: usize,
    progress: u64,
) -> impl FnOnce(CancellationToken) -> std::pin::Pin<Box<dyn Future<Output = BlobCopy> + Send>> {
    move |cancel| {
        Box::pin(async move {
            cancel.cancelled().await;
            BlobCopy::Stopped {
                job,
                bytes: progress,
            }
        })
    }
}

#[tokio::test]
async fn cancel_where_cancels_matching_keys_and_returns_each_jobs_payload() {
    let registry = SyncRegistry::<u32, BlobCopy>::new();
    for key in 0..6 {
        registry.start(key, copier(key as usize, u64::from(key) * 100));
    }
    let odd = registry.cancel_where(|key| key % 2 == 1);
    assert_eq!(odd.len(), 3);
    let mut keys: Vec<_> = odd.keys().copied().collect();
    keys.sort();
    assert_eq!(keys, [1, 3, 5]);
    let mut finished = odd.finished().await;
    finished.sort_by_key(|(key, _)| *key);
    assert_eq!(
        finished,
        [1, 3, 5].map(|key| (
            key,
            BlobCopy::Stopped {
                job: key as usize,
                bytes: u64::from(key) * 100
            }
        ))
    );
    assert_eq!(registry.in_flight(), 3);
    for key in [0, 2, 4] {
        let receiver = registry.subscribe(&key).expect("even keys still run");
        assert!(receiver.status().is_pending());
    }
    assert!(registry.cancel_where(|key| key % 2 == 1).is_empty());
}

#[tokio::test]
async fn cancel_all_cancels_every_job_and_frees_every_key() {
    let registry = SyncRegistry::<u32, BlobCopy>::new();
    for key in 0..4 {
        registry.start(key, copier(key as usize, 1));
    }
    let all = registry.cancel_all();
    assert_eq!(all.len(), 4);
    let finished = all.finished().await;
    assert!(finished.iter().all(|(key, outcome)| *outcome
        == BlobCopy::Stopped {
            job: *key as usize,
            bytes: 1
        }));
    assert_eq!(registry.in_flight(), 0);
}

#[test]
fn cancellation_can_be_awaited_from_a_blocking_thread() {
    let runtime = multi_thread(1);
    let registry = SyncRegistry::<u32, BlobCopy>::new();
    runtime.block_on(async {
        registry.start(1, copier(1, 7));
    });
    let finished = registry.cancel_all().blocking_finished();
    assert_eq!(finished, [(1, BlobCopy::Stopped { job: 1, bytes: 7 })]);
}

#[tokio::test]
async fn start_during_cancellation_attaches_to_the_cancelled_job() {
    let registry = SyncRegistry::new();
    let finish = gate();
    let first = registry
        .start("blob", {
            let finish = finish.clone();
            move |cancel| async move {
                cancel.cancelled().await;
                // Cleanup takes a while: the key stays claimed meanwhile.
                finish.wait_for(|finish| *finish).await.unwrap();
                SyncOutcome::Cancelled
            }
        })
        .into_receiver();
    let cancelled = registry.cancel("blob").unwrap();
    let during = registry.start("blob", |_| async { SyncOutcome::Success });
    assert!(during.is_joined());
    let during = during.into_receiver();
    assert!(during.same_channel(&first));
    finish.modify(|finish| *finish = true);
    assert_eq!(cancelled.done().await, SyncOutcome::Cancelled);
    assert_eq!(during.done().await, SyncOutcome::Cancelled);
    // After it published, a new start runs a new job.
    let after = registry
        .start("blob", |_| async { SyncOutcome::Success })
        .into_receiver();
    assert_eq!(after.done().await, SyncOutcome::Success);
}

#[tokio::test]
async fn dropping_the_registry_cancels_jobs_in_flight() {
    let registry = SyncRegistry::<u32, BlobCopy>::new();
    let receiver = registry.start(3, copier(3, 42)).into_receiver();
    drop(registry);
    assert_eq!(
        receiver.done().await,
        BlobCopy::Stopped { job: 3, bytes: 42 }
    );
}

#[tokio::test]
async fn panicking_job_publishes_failed_with_its_message_and_frees_its_key() {
    let registry = SyncRegistry::new();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            registry
                .start(5, |_cancel| async {
                    tokio::task::yield_now().await;
                    panic!("blob 5: disk full");
                })
                .into_receiver()
        })
        .collect();
    for waiter in &waiters {
        assert_eq!(
            waiter.done().await,
            SyncOutcome::Failed("blob 5: disk full".into())
        );
    }
    assert_eq!(registry.in_flight(), 0);
    let retried = registry
        .start(5, |_cancel| async { SyncOutcome::Success })
        .into_receiver();
    assert_eq!(retried.done().await, SyncOutcome::Success);
}

#[tokio::test]
async fn job_that_panics_before_returning_a_future_publishes_failed_with_a_formatted_message() {
    let registry = SyncRegistry::<u8, BlobCopy>::new();
    let blob = 12;
    let receiver = registry
        .start(1, move |_cancel| -> std::future::Ready<BlobCopy> {
            panic!("no route to blob {blob}")
        })
        .into_receiver();
    assert_eq!(
        receiver.done().await,
        BlobCopy::Panicked("no route to blob 12".into())
    );
    assert_eq!(registry.in_flight(), 0);
}

#[test]
fn job_dropped_by_runtime_shutdown_publishes_abandoned_and_frees_its_key() {
    let registry = SyncRegistry::new();
    let runtime = multi_thread(1);
    let receiver = runtime.block_on(async {
        registry
            .start("blob", |_cancel| std::future::pending::<SyncOutcome>())
            .into_receiver()
    });
    assert_eq!(registry.in_flight(), 1);
    drop(runtime);
    assert_eq!(receiver.blocking_done(), SyncOutcome::Cancelled);
    assert_eq!(registry.in_flight(), 0);
}

#[test]
fn start_outside_a_runtime_panics_and_leaves_the_registry_unchanged() {
    let registry = SyncRegistry::<u8>::new();
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        registry.start(1, |_cancel| async { SyncOutcome::Success })
    }));
    assert!(started.is_err());
    assert_eq!(registry.in_flight(), 0);
    assert!(matches!(registry.claim(1), Claim::Owner(_)));
}

#[tokio::test]
async fn subscribe_by_key_sees_only_jobs_in_flight() {
    let registry = SyncRegistry::new();
    assert!(registry.subscribe(&1).is_none());
    let open = gate();
    let started = registry
        .start(1, {
            let open = open.clone();
            move |_| async move {
                open.wait_for(|open| *open).await.unwrap();
                SyncOutcome::Skipped
            }
        })
        .into_receiver();
    let subscribed = registry.subscribe(&1).expect("in flight");
    assert!(subscribed.same_channel(&started));
    open.modify(|open| *open = true);
    assert_eq!(subscribed.done().await, SyncOutcome::Skipped);
    assert!(registry.subscribe(&1).is_none());
}

// ------------------------------------------------ re-entrant wake-ups

/// Claims key 1 of `registry` and parks a waiter on the job's cancellation
/// whose waker, when woken, calls `in_flight()` on the registry (if it is
/// still alive) and publishes the job inline (which frees its key under the
/// registry's lock). Then runs `cancel` under a time limit: it must return,
/// having woken the waiter, and the job must have published.
fn cancellation_survives_a_waker_that_reenters_the_registry(
    what: &str,
    cancel: impl FnOnce(Arc<SyncRegistry<u32>>) + Send + 'static,
) -> Option<usize> {
    let registry = Arc::new(SyncRegistry::<u32>::new());
    let Claim::Owner(owner) = registry.claim(1) else {
        panic!("the key was free");
    };
    let receiver = owner.subscribe();
    let signal = owner.cancellation_token().clone();
    let owner = Mutex::new(Some(owner));
    let seen_in_flight = Arc::new(Mutex::new(None));
    let waker = Waker::from(Arc::new(CallbackWaker(Box::new({
        let registry: Weak<_> = Arc::downgrade(&registry);
        let seen_in_flight = seen_in_flight.clone();
        move || {
            if let Some(registry) = registry.upgrade() {
                *seen_in_flight.lock().unwrap() = Some(registry.in_flight());
            }
            if let Some(owner) = owner.lock().unwrap().take() {
                owner.publish(SyncOutcome::Cancelled);
            }
        }
    }))));
    let mut waiter: Pin<Box<dyn Future<Output = ()> + Send>> =
        Box::pin(async move { signal.cancelled().await });
    let mut cx = Context::from_waker(&waker);
    assert!(waiter.as_mut().poll(&mut cx).is_pending());

    let ((), mut waiter) = within_seconds(what, waiter, move || cancel(registry));

    assert_eq!(receiver.status(), SyncStatus::Done(SyncOutcome::Cancelled));
    assert_eq!(waiter.as_mut().poll(&mut cx), Poll::Ready(()));
    *seen_in_flight.lock().unwrap()
}

#[test]
fn cancel_wakes_the_job_after_unlocking_so_a_waker_may_call_into_the_registry() {
    let seen = cancellation_survives_a_waker_that_reenters_the_registry("cancel", |registry| {
        let cancelled = registry.cancel(&1).expect("in flight");
        assert_eq!(cancelled.blocking_done(), SyncOutcome::Cancelled);
        assert_eq!(registry.in_flight(), 0);
    });
    assert_eq!(seen, Some(1), "the waker ran while the job was in flight");
}

#[test]
fn cancel_where_wakes_the_jobs_after_unlocking_so_a_waker_may_call_into_the_registry() {
    let seen =
        cancellation_survives_a_waker_that_reenters_the_registry("cancel_where", |registry| {
            let cancelled = registry.cancel_where(|key| *key == 1);
            assert_eq!(cancelled.blocking_finished(), [(1, SyncOutcome::Cancelled)]);
            assert_eq!(registry.in_flight(), 0);
        });
    assert_eq!(seen, Some(1));
}

#[test]
fn cancel_where_predicate_may_call_into_the_registry() {
    let registry = Arc::new(SyncRegistry::<u32>::new());
    let Claim::Owner(owner) = registry.claim(1) else {
        panic!("the key was free");
    };
    let (cancelled, owner) = within_seconds("cancel_where", owner, {
        let registry = registry.clone();
        move || {
            let cancelled = registry.cancel_where(|key| registry.subscribe(key).is_some());
            cancelled.keys().copied().collect::<Vec<_>>()
        }
    });
    assert_eq!(cancelled, [1]);
    assert!(owner.cancellation_token().is_cancelled());
}

#[test]
fn cancel_all_wakes_the_jobs_after_unlocking_so_a_waker_may_call_into_the_registry() {
    let seen = cancellation_survives_a_waker_that_reenters_the_registry("cancel_all", |registry| {
        let cancelled = registry.cancel_all();
        assert_eq!(cancelled.blocking_finished(), [(1, SyncOutcome::Cancelled)]);
        assert_eq!(registry.in_flight(), 0);
    });
    assert_eq!(seen, Some(1));
}

#[test]
fn dropping_the_registry_wakes_the_jobs_after_unlocking_so_a_job_may_publish_from_its_waker() {
    let seen = cancellation_survives_a_waker_that_reenters_the_registry("drop", |registry| {
        drop(Arc::into_inner(registry).expect("the only strong reference"));
    });
    assert_eq!(seen, None, "the registry was gone when the waker ran");
}

// ------------------------------------------------------------ cancellation

#[tokio::test]
async fn cancelling_the_parent_token_cancels_jobs_in_flight_and_jobs_started_later() {
    let shutdown = CancellationToken::new();
    let registry = SyncRegistry::<u32, BlobCopy>::with_parent_token(&shutdown);
    let before = registry.start(1, copier(1, 10)).into_receiver();
    shutdown.cancel();
    assert_eq!(before.done().await, BlobCopy::Stopped { job: 1, bytes: 10 });
    let after = registry.start(2, copier(2, 0)).into_receiver();
    assert_eq!(after.done().await, BlobCopy::Stopped { job: 2, bytes: 0 });
    assert_eq!(registry.in_flight(), 0);
}

#[test]
fn cancelling_a_registry_job_leaves_the_parent_token_and_other_jobs_alone() {
    let shutdown = CancellationToken::new();
    let registry = SyncRegistry::<u32>::with_parent_token(&shutdown);
    let (Claim::Owner(a), Claim::Owner(b)) = (registry.claim(1), registry.claim(2)) else {
        panic!("the keys were free");
    };
    registry.cancel(&1).expect("in flight");
    assert!(a.cancellation_token().is_cancelled());
    assert!(!b.cancellation_token().is_cancelled());
    assert!(!shutdown.is_cancelled());
}

#[test]
fn job_on_a_thread_waits_for_its_cancellation_with_blocking_cancelled() {
    let registry = SyncRegistry::<u32>::new();
    let Claim::Owner(owner) = registry.claim(4) else {
        panic!("the key was free");
    };
    let receiver = owner.subscribe();
    let ((), receiver) = within_seconds("blocking_cancelled", receiver, move || {
        let thread = std::thread::spawn(move || {
            owner.cancellation_token().blocking_cancelled();
            owner.publish(SyncOutcome::Cancelled);
        });
        registry.cancel(&4).expect("in flight");
        thread.join().unwrap();
    });
    assert_eq!(receiver.status(), SyncStatus::Done(SyncOutcome::Cancelled));
}

#[test]
fn blocking_cancelled_timeout_reports_whether_the_token_was_cancelled() {
    let token = CancellationToken::new();
    assert!(!token.blocking_cancelled_timeout(Duration::ZERO));
    assert!(!token.blocking_cancelled_timeout(Duration::from_millis(1)));
    token.cancel();
    assert!(token.blocking_cancelled_timeout(Duration::ZERO));
    assert!(token.blocking_cancelled_timeout(Duration::MAX));
}

#[test]
fn job_tokens_are_unwind_safe_and_registry_handles_are_send_and_sync() {
    fn unwind_safe<T: std::panic::UnwindSafe + std::panic::RefUnwindSafe>() {}
    fn send_sync<T: Send + Sync>() {}
    unwind_safe::<CancellationToken>();
    send_sync::<SyncRegistry<u32>>();
    send_sync::<leasehold::status::KeyedPublisher<u32>>();
}

// ------------------------------------------------- claimed jobs on threads

#[test]
fn job_on_a_thread_that_panics_publishes_failed_not_cancelled_and_frees_its_key() {
    let registry = SyncRegistry::<u32, BlobCopy>::new();
    let Claim::Owner(owner) = registry.claim(8) else {
        panic!("the key was free");
    };
    let receiver = owner.subscribe();
    let thread = std::thread::spawn(move || {
        let _owner = owner;
        panic!("blob 8: checksum mismatch");
    });
    assert!(thread.join().is_err());
    assert!(
        matches!(receiver.blocking_done(), BlobCopy::Panicked(_)),
        "{:?}",
        receiver.status()
    );
    assert_eq!(registry.in_flight(), 0);
}

#[test]
fn channel_publisher_dropped_by_a_panic_publishes_failed() {
    let (publisher, receiver) = status::channel::<SyncOutcome>();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _publisher = publisher;
        panic!("copy failed");
    }));
    assert!(panicked.is_err());
    assert!(matches!(receiver.blocking_done(), SyncOutcome::Failed(_)));
}

#[tokio::test]
async fn claimed_job_run_with_run_publishes_its_panic_message_as_failed() {
    let registry = SyncRegistry::<u32>::new();
    let Claim::Owner(owner) = registry.claim(2) else {
        panic!("the key was free");
    };
    let receiver = owner.subscribe();
    // Another executor's task, here a plain tokio task.
    tokio::spawn(owner.run(|_cancel| async {
        tokio::task::yield_now().await;
        panic!("blob 2: disk full");
    }))
    .await
    .unwrap();
    assert_eq!(
        receiver.done().await,
        SyncOutcome::Failed("blob 2: disk full".into())
    );
    assert_eq!(registry.in_flight(), 0);
}

#[tokio::test]
async fn start_reports_whether_it_started_the_job_or_joined_one_in_flight() {
    let registry = SyncRegistry::<u32>::new();
    let open = gate();
    let first = registry.start(1, {
        let open = open.clone();
        move |_| async move {
            open.wait_for(|open| *open).await.unwrap();
            SyncOutcome::Success
        }
    });
    let second = registry.start(1, |_| async { unreachable!("joined, never called") });
    let other_key = registry.start(2, |_| async { SyncOutcome::Skipped });
    assert!(matches!(first, status::Start::Started(_)));
    assert!(matches!(second, status::Start::Joined(_)));
    assert!(other_key.is_started());
    assert!(first.receiver().same_channel(second.receiver()));
    open.modify(|open| *open = true);
    assert_eq!(second.into_receiver().done().await, SyncOutcome::Success);
    assert!(
        registry
            .start(1, |_| async { SyncOutcome::Success })
            .is_started()
    );
}
