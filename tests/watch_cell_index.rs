//! Behavioural specification of `WatchIndex`: threshold-indexed waits on a
//! `WatchCell`.
//!
//! Miri runs this file too (`cargo +nightly miri test --test
//! watch_cell_index`): sizes shrink under it.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use leasehold::WatchCell;
use leasehold::watch_cell::{Closed, WaitTimeoutError};

#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting_waker() -> (Arc<CountingWaker>, Waker) {
    let counter = Arc::new(CountingWaker::default());
    (counter.clone(), Waker::from(counter))
}

fn wakes(counter: &CountingWaker) -> usize {
    counter.0.load(Ordering::SeqCst)
}

const fn scaled(full: usize, miri: usize) -> usize {
    if cfg!(miri) { miri } else { full }
}

const TIME_LIMIT: Duration = Duration::from_secs(if cfg!(miri) { 600 } else { 10 });

/// Runs `body` on its own thread; fails the test if it hangs.
fn within_time_limit<R: Send + 'static>(body: impl FnOnce() -> R + Send + 'static) -> R {
    let (done, finished) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = done.send(body());
    });
    match finished.recv_timeout(TIME_LIMIT) {
        Ok(result) => {
            thread.join().unwrap();
            result
        }
        Err(RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(thread.join().unwrap_err())
        }
        Err(RecvTimeoutError::Timeout) => {
            panic!("the test body did not finish within {TIME_LIMIT:?} (deadlock or lost wake-up)")
        }
    }
}

fn poll<F: Future>(future: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(waker))
}

#[derive(Default, Debug)]
struct Log {
    durable: u64,
    written: u64,
}

#[test]
fn modification_that_satisfies_nobody_wakes_nobody_and_evaluates_the_key_once() {
    let n = scaled(1000, 20);
    let cell = WatchCell::new(Log::default());
    let durable = cell.index(|log: &Log| log.durable);
    let (counter, waker) = counting_waker();
    let mut waits: Vec<_> = (0..n)
        .map(|i| Box::pin(durable.wait_at_least(1_000_000 + i as u64)))
        .collect();
    for wait in &mut waits {
        assert!(poll(wait.as_mut(), &waker).is_pending());
    }
    assert_eq!(durable.waiting(), n);
    assert_eq!(cell.stats().waiters, n);
    let before = cell.stats().predicate_evals;
    for _ in 0..10 {
        cell.modify(|log| {
            log.durable += 1;
            log.written += 1;
        });
    }
    assert_eq!(
        cell.stats().predicate_evals - before,
        10,
        "one key evaluation per modification, whatever the number of waiters"
    );
    assert_eq!(wakes(&counter), 0);
    assert_eq!(cell.stats().wakeups, 0);
}

#[test]
fn waits_wake_exactly_when_the_key_reaches_their_threshold_with_that_key() {
    let cell = WatchCell::new(0_u64);
    let seqno = cell.index(|v: &u64| *v);
    let thresholds = [5_u64, 1, 3, 3, 9];
    let wakers: Vec<_> = thresholds.iter().map(|_| counting_waker()).collect();
    let mut waits: Vec<_> = thresholds
        .iter()
        .map(|&k| Box::pin(seqno.wait_at_least(k)))
        .collect();
    for (wait, (_, waker)) in waits.iter_mut().zip(&wakers) {
        assert!(poll(wait.as_mut(), waker).is_pending());
    }
    cell.modify(|v| *v = 3);
    let woken: Vec<usize> = wakers.iter().map(|(c, _)| wakes(c)).collect();
    assert_eq!(woken, [0, 1, 1, 1, 0]);
    assert_eq!(seqno.waiting(), 2);
    cell.modify(|v| *v = 7);
    let woken: Vec<usize> = wakers.iter().map(|(c, _)| wakes(c)).collect();
    assert_eq!(woken, [1, 1, 1, 1, 0]);
    let noop = Waker::noop();
    // Each gets the key of the value that satisfied it.
    let results: Vec<_> = waits[..4]
        .iter_mut()
        .map(|wait| poll(wait.as_mut(), noop))
        .collect();
    assert_eq!(
        results,
        [
            Poll::Ready(Ok(7)),
            Poll::Ready(Ok(3)),
            Poll::Ready(Ok(3)),
            Poll::Ready(Ok(3))
        ]
    );
    assert_eq!(cell.stats().wakeups, 4);
    assert!(poll(waits[4].as_mut(), noop).is_pending());
}

#[test]
fn wait_whose_key_is_already_reached_resolves_at_once_without_registering() {
    let cell = WatchCell::new(10_u64);
    let seqno = cell.index(|v: &u64| *v);
    let mut wait = pin!(seqno.wait_at_least(10));
    assert_eq!(poll(wait.as_mut(), Waker::noop()), Poll::Ready(Ok(10)));
    assert_eq!(seqno.waiting(), 0);
    assert_eq!(seqno.blocking_wait_at_least(3), Ok(10));
    assert_eq!(seqno.get(), 10);
}

#[test]
fn dropped_wait_is_unregistered_and_never_woken() {
    let cell = WatchCell::new(0_u64);
    let seqno = cell.index(|v: &u64| *v);
    let (counter, waker) = counting_waker();
    {
        let mut wait = pin!(seqno.wait_at_least(1));
        assert!(poll(wait.as_mut(), &waker).is_pending());
        assert_eq!(seqno.waiting(), 1);
    }
    assert_eq!(seqno.waiting(), 0);
    cell.modify(|v| *v = 1);
    assert_eq!(wakes(&counter), 0);
}

#[test]
fn cancelling_some_waits_leaves_the_others_and_their_order_intact() {
    let n = scaled(200, 20);
    let cell = WatchCell::new(0_u64);
    let seqno = cell.index(|v: &u64| *v);
    let noop = Waker::noop();
    let mut waits: Vec<Option<Pin<Box<_>>>> = (0..n)
        .map(|i| Some(Box::pin(seqno.wait_at_least(1 + (i % 7) as u64))))
        .collect();
    for wait in waits.iter_mut().flatten() {
        assert!(poll(wait.as_mut(), noop).is_pending());
    }
    for i in (0..n).step_by(3) {
        waits[i] = None;
    }
    let kept = waits.iter().flatten().count();
    assert_eq!(seqno.waiting(), kept);
    cell.modify(|v| *v = 7);
    assert_eq!(seqno.waiting(), 0);
    for wait in waits.iter_mut().flatten() {
        assert_eq!(poll(wait.as_mut(), noop), Poll::Ready(Ok(7)));
    }
    assert_eq!(cell.stats().wakeups, kept as u64);
}

/// Wakes by pushing its id to a shared log.
struct LoggingWaker {
    id: usize,
    log: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl std::task::Wake for LoggingWaker {
    fn wake(self: Arc<Self>) {
        self.log.lock().unwrap().push(self.id);
    }
}

#[test]
fn waits_of_one_threshold_are_woken_oldest_first_whichever_were_cancelled() {
    let cell = WatchCell::new(0_u64);
    let seqno = cell.index(|v: &u64| *v);
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waits: Vec<Option<Pin<Box<_>>>> = Vec::new();
    for id in 0..8 {
        let waker = Waker::from(Arc::new(LoggingWaker {
            id,
            log: Arc::clone(&log),
        }));
        let mut wait = Box::pin(seqno.wait_at_least(3));
        assert!(poll(wait.as_mut(), &waker).is_pending());
        waits.push(Some(wait));
    }
    // Cancel the head, a middle one, the tail, then the new head.
    for id in [0, 4, 7, 1] {
        waits[id] = None;
    }
    assert_eq!(seqno.waiting(), 4);
    // Another threshold below, reached by the same modification.
    let waker = Waker::from(Arc::new(LoggingWaker {
        id: 100,
        log: Arc::clone(&log),
    }));
    let mut lower = Box::pin(seqno.wait_at_least(2));
    assert!(poll(lower.as_mut(), &waker).is_pending());
    cell.modify(|v| *v = 3);
    assert_eq!(*log.lock().unwrap(), [100, 2, 3, 5, 6]);
    assert_eq!(seqno.waiting(), 0);
    for wait in waits.iter_mut().flatten() {
        assert_eq!(poll(wait.as_mut(), Waker::noop()), Poll::Ready(Ok(3)));
    }
}

#[test]
fn key_that_goes_down_leaves_waits_waiting_and_a_later_rise_wakes_them() {
    let cell = WatchCell::new(5_i64);
    let key = cell.index(|v: &i64| *v);
    let (counter, waker) = counting_waker();
    let mut wait = pin!(key.wait_at_least(8));
    assert!(poll(wait.as_mut(), &waker).is_pending());
    cell.modify(|v| *v = -3);
    cell.modify(|v| *v = 7);
    assert_eq!(wakes(&counter), 0);
    cell.modify(|v| *v = 9);
    assert_eq!(wakes(&counter), 1);
    cell.modify(|v| *v = 0);
    // Satisfied by the state it saw: a later fall does not undo it.
    assert_eq!(poll(wait.as_mut(), &waker), Poll::Ready(Ok(9)));
}

#[test]
fn close_fails_registered_waits_and_later_waits_get_the_key_if_it_is_reached() {
    let cell = WatchCell::new(4_u64);
    let seqno = cell.index(|v: &u64| *v);
    let (counter, waker) = counting_waker();
    let mut wait = pin!(seqno.wait_at_least(5));
    assert!(poll(wait.as_mut(), &waker).is_pending());
    assert!(cell.close());
    assert_eq!(wakes(&counter), 1);
    assert_eq!(poll(wait.as_mut(), &waker), Poll::Ready(Err(Closed)));
    assert_eq!(seqno.waiting(), 0);
    assert_eq!(seqno.blocking_wait_at_least(4), Ok(4));
    assert_eq!(seqno.blocking_wait_at_least(5), Err(Closed));
    assert_eq!(
        seqno.blocking_wait_at_least_timeout(5, Duration::from_secs(60)),
        Err(WaitTimeoutError::Closed)
    );
    let mut late = pin!(seqno.wait_at_least(5));
    assert_eq!(poll(late.as_mut(), &waker), Poll::Ready(Err(Closed)));
}

#[test]
fn blocking_wait_with_deadline_times_out_and_unregisters() {
    let cell = WatchCell::new(0_u64);
    let seqno = cell.index(|v: &u64| *v);
    let deadline = Instant::now() + Duration::from_millis(20);
    assert_eq!(
        seqno.blocking_wait_at_least_deadline(1, deadline),
        Err(WaitTimeoutError::TimedOut)
    );
    assert!(Instant::now() >= deadline);
    assert_eq!(seqno.waiting(), 0);
}

#[test]
fn blocking_waits_on_many_threads_each_wake_once_with_their_threshold_reached() {
    within_time_limit(|| {
        let threads = scaled(8, 3);
        let cell = WatchCell::new(0_u64);
        let seqno = cell.index(|v: &u64| *v);
        std::thread::scope(|s| {
            let waiters: Vec<_> = (1..=threads as u64)
                .map(|k| {
                    let seqno = &seqno;
                    s.spawn(move || (k, seqno.blocking_wait_at_least(k)))
                })
                .collect();
            while seqno.waiting() < threads {
                std::thread::yield_now();
            }
            for v in 1..=threads as u64 {
                cell.modify(|value| *value = v);
            }
            for waiter in waiters {
                let (k, reached) = waiter.join().unwrap();
                assert!(reached.unwrap() >= k);
            }
        });
        assert_eq!(cell.stats().wakeups, threads as u64);
    });
}

#[test]
fn async_waits_across_tasks_lose_no_wake_up_under_racing_cancellation() {
    within_time_limit(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        runtime.block_on(async {
            let rounds = scaled(200, 5) as u64;
            let cell = WatchCell::new(0_u64);
            let seqno = cell.index(|v: &u64| *v);
            let waiter = tokio::spawn({
                let seqno = seqno.clone();
                async move {
                    for k in 1..=rounds {
                        // A wait cancelled right away, racing the writer...
                        let mut cancelled = Box::pin(seqno.wait_at_least(k));
                        let _ = std::future::poll_fn(|cx| Poll::Ready(cancelled.as_mut().poll(cx)))
                            .await;
                        drop(cancelled);
                        // ...must not cost the next wait its wake-up.
                        assert!(seqno.wait_at_least(k).await.unwrap() >= k);
                    }
                }
            });
            for _ in 0..rounds {
                cell.modify(|v| *v += 1);
                tokio::task::yield_now().await;
            }
            waiter.await.unwrap();
            assert_eq!(seqno.waiting(), 0);
        });
    });
}

#[test]
fn repoll_with_another_waker_wakes_the_latest_one() {
    let cell = WatchCell::new(0_u64);
    let seqno = cell.index(|v: &u64| *v);
    let (first, first_waker) = counting_waker();
    let (second, second_waker) = counting_waker();
    let mut wait = pin!(seqno.wait_at_least(1));
    assert!(poll(wait.as_mut(), &first_waker).is_pending());
    assert!(poll(wait.as_mut(), &second_waker).is_pending());
    cell.modify(|v| *v = 1);
    assert_eq!((wakes(&first), wakes(&second)), (0, 1));
    assert_eq!(poll(wait.as_mut(), &second_waker), Poll::Ready(Ok(1)));
}

#[test]
fn key_panicking_on_the_modifiers_thread_resumes_there_after_notifying_the_others() {
    let cell = WatchCell::new(0_u64);
    let fragile = cell.index(|v: &u64| {
        assert!(*v != 13, "unlucky key");
        *v
    });
    let (index_woken, index_waker) = counting_waker();
    let (predicate_woken, predicate_waker) = counting_waker();
    let mut index_wait = pin!(fragile.wait_at_least(10));
    let mut predicate_wait = pin!(cell.wait_for(|v| *v == 13));
    assert!(poll(index_wait.as_mut(), &index_waker).is_pending());
    assert!(poll(predicate_wait.as_mut(), &predicate_waker).is_pending());
    let modified = catch_unwind(AssertUnwindSafe(|| cell.modify(|v| *v = 13)));
    assert!(
        modified.is_err(),
        "the key function's panic resumes in the modifier"
    );
    assert_eq!(cell.read(|v| *v), 13, "the modification stands");
    assert_eq!(wakes(&predicate_woken), 1, "the other waits were notified");
    assert_eq!(wakes(&index_woken), 0, "the index's waits keep waiting");
    assert_eq!(fragile.waiting(), 1);
    cell.modify(|v| *v = 14);
    assert_eq!(poll(index_wait.as_mut(), &index_waker), Poll::Ready(Ok(14)));
}

/// Whether cloning a [`Touchy`] key panics.
static TOUCHY_CLONE_PANICS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// A key whose `Clone` panics on demand.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Touchy(u64);

impl Clone for Touchy {
    fn clone(&self) -> Self {
        assert!(
            !TOUCHY_CLONE_PANICS.load(Ordering::SeqCst),
            "the key's clone panicked"
        );
        Touchy(self.0)
    }
}

#[test]
fn key_clone_panicking_on_the_modifiers_thread_leaves_the_waits_not_completed_registered() {
    let cell = WatchCell::new(0_u64);
    let index = cell.index(|v: &u64| Touchy(*v));
    let noop = Waker::noop();
    let mut waits: Vec<_> = (0..3)
        .map(|_| Box::pin(index.wait_at_least(Touchy(1))))
        .collect();
    for wait in &mut waits {
        assert!(poll(wait.as_mut(), noop).is_pending());
    }
    TOUCHY_CLONE_PANICS.store(true, Ordering::SeqCst);
    let modified = catch_unwind(AssertUnwindSafe(|| cell.modify(|v| *v = 1)));
    TOUCHY_CLONE_PANICS.store(false, Ordering::SeqCst);
    assert!(
        modified.is_err(),
        "the clone's panic resumes in the modifier"
    );
    assert_eq!(index.waiting(), 3);
    // The list is still well formed: a cancellation in its middle, then a
    // modification, complete the others.
    drop(waits.remove(1));
    assert_eq!(index.waiting(), 2);
    cell.modify(|v| *v = 2);
    assert_eq!(index.waiting(), 0);
    for wait in &mut waits {
        assert_eq!(poll(wait.as_mut(), noop), Poll::Ready(Ok(Touchy(2))));
    }
}

#[test]
fn key_panicking_when_a_wait_checks_it_resumes_in_that_wait() {
    let cell = WatchCell::new(13_u64);
    let fragile = cell.index(|v: &u64| {
        assert!(*v != 13, "unlucky key");
        *v
    });
    let waited = catch_unwind(AssertUnwindSafe(|| fragile.blocking_wait_at_least(1)));
    assert!(waited.is_err());
    assert_eq!(fragile.waiting(), 0);
    cell.modify(|v| *v = 1);
    assert_eq!(fragile.blocking_wait_at_least(1), Ok(1));
}

#[test]
fn a_take_that_raises_the_key_wakes_the_index_waits_it_satisfies() {
    #[derive(Default)]
    struct Queue {
        jobs: Vec<u32>,
        taken: u64,
    }
    let cell = WatchCell::new(Queue::default());
    let taken = cell.index(|q: &Queue| q.taken);
    let (counter, waker) = counting_waker();
    let mut wait = pin!(taken.wait_at_least(1));
    assert!(poll(wait.as_mut(), &waker).is_pending());
    let mut take = pin!(cell.wait_take(|q: &mut Queue| {
        let job = q.jobs.pop()?;
        q.taken += 1;
        Some(job)
    }));
    assert!(poll(take.as_mut(), Waker::noop()).is_pending());
    cell.modify(|q| q.jobs.push(7));
    assert_eq!(wakes(&counter), 1);
    assert_eq!(poll(wait.as_mut(), &waker), Poll::Ready(Ok(1)));
    assert_eq!(poll(take.as_mut(), Waker::noop()), Poll::Ready(Ok(7)));
}

#[test]
fn dropping_the_last_handle_removes_the_index_from_the_cell() {
    let cell = WatchCell::new(0_u64);
    let seqno = cell.index(|v: &u64| *v);
    let clone = seqno.clone();
    drop(seqno);
    let mut wait = Box::pin(clone.wait_at_least(100));
    assert!(poll(wait.as_mut(), Waker::noop()).is_pending());
    let before = cell.stats().predicate_evals;
    cell.modify(|v| *v += 1);
    assert_eq!(cell.stats().predicate_evals - before, 1);
    drop(wait);
    drop(clone);
    cell.modify(|v| *v += 1);
    assert_eq!(
        cell.stats().predicate_evals - before,
        1,
        "no index left to evaluate"
    );
    // A new index reuses the slot and works as before.
    let again = cell.index(|v: &u64| v * 10);
    assert_eq!(again.blocking_wait_at_least(20), Ok(20));
}

#[test]
fn index_with_no_waits_costs_modifications_nothing() {
    let cell = WatchCell::new(0_u64);
    let evaluations = Arc::new(AtomicUsize::new(0));
    let _seqno = cell.index({
        let evaluations = evaluations.clone();
        move |v: &u64| {
            evaluations.fetch_add(1, Ordering::SeqCst);
            *v
        }
    });
    for _ in 0..10 {
        cell.modify(|v| *v += 1);
    }
    assert_eq!(evaluations.load(Ordering::SeqCst), 0);
}

#[test]
fn loop_over_an_always_ready_index_wait_yields_to_other_tasks() {
    within_time_limit(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let cell = WatchCell::new(1_u64);
            let seqno = cell.index(|v: &u64| *v);
            let spinner = tokio::spawn(async move {
                loop {
                    seqno.wait_at_least(1).await.unwrap();
                }
            });
            // Runs only if the spinner yields: the wait spends tokio's budget.
            tokio::spawn(async {}).await.unwrap();
            spinner.abort();
        });
    });
}

#[test]
fn index_wait_futures_are_send_and_sync() {
    fn assert_send_sync<F: Send + Sync>(_: &F) {}
    let cell = WatchCell::new(0_u64);
    let seqno = cell.index(|v: &u64| *v);
    let wait = seqno.wait_at_least(1);
    assert_send_sync(&wait);
    assert_send_sync(&seqno);
}

#[test]
fn waker_that_touches_the_cell_when_woken_does_not_deadlock() {
    struct Reentrant(WatchCell<u64>, AtomicUsize);
    impl Wake for Reentrant {
        fn wake(self: Arc<Self>) {
            // Would deadlock if woken under the cell's lock.
            let _ = self.0.read(|v| *v);
            self.0.modify(|_| ());
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }
    within_time_limit(|| {
        let cell = WatchCell::new(0_u64);
        let seqno = cell.index(|v: &u64| *v);
        let reentrant = Arc::new(Reentrant(cell.clone(), AtomicUsize::new(0)));
        let waker = Waker::from(reentrant.clone());
        let mut wait = pin!(seqno.wait_at_least(1));
        assert!(poll(wait.as_mut(), &waker).is_pending());
        cell.modify(|v| *v = 1);
        assert_eq!(reentrant.1.load(Ordering::SeqCst), 1);
        assert!(cell.close());
    });
}
