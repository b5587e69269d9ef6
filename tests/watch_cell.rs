//! Behavioural specification of `WatchCell`.
//!
//! Sizes shrink under Miri (`cargo +nightly miri test --test watch_cell`),
//! which runs these tests to check the unsafe waiter list.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Wake, Waker};
use std::time::{Duration, Instant};

use leasehold::WatchCell;
use leasehold::watch_cell::{Closed, WaitTimeoutError};
use rand::seq::SliceRandom;

/// A waker that counts how often it was woken.
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

/// How long a test body may run before it counts as hung (Miri is slow).
const TIME_LIMIT: Duration = Duration::from_secs(if cfg!(miri) { 600 } else { 10 });

/// Runs `body` on a thread of its own and fails the test if it has not
/// finished within [`TIME_LIMIT`]: a deadlock or a lost wake-up fails fast
/// instead of hanging the run. A panic in `body` resumes here.
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

/// Spins (yielding) until `n` waiters are registered on `cell`.
fn await_registered<T>(cell: &WatchCell<T>, n: usize) {
    while cell.stats().waiters < n {
        std::thread::yield_now();
    }
}

#[test]
fn shuffled_async_waiters_each_run_in_index_order_and_wake_at_most_once() {
    let n = scaled(1000, 20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let cell = WatchCell::new(0_usize);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand::rng());
    runtime.block_on(async {
        let tasks: Vec<_> = order
            .into_iter()
            .map(|index| {
                let cell = cell.clone();
                tokio::spawn(async move {
                    cell.wait_for(move |v| *v == index).await.unwrap();
                    // Nobody else may move the value while it equals our index.
                    cell.modify(|v| {
                        assert_eq!(*v, index);
                        *v += 1;
                    });
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
    let stats = cell.stats();
    assert_eq!(cell.read(|v| *v), n);
    assert_eq!(stats.notifications, n as u64);
    assert_eq!(stats.waiters, 0);
    // Every wake-up satisfied a distinct waiter: none woke spuriously.
    assert!(stats.wakeups <= n as u64, "{stats:?}");
}

#[test]
fn shuffled_blocking_waiters_each_run_in_index_order_and_wake_at_most_once() {
    let n = scaled(128, 8);
    let cell = WatchCell::new(0_usize);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand::rng());
    std::thread::scope(|s| {
        for index in order {
            let cell = &cell;
            s.spawn(move || {
                cell.blocking_wait_for(|v| *v == index).unwrap();
                cell.modify(|v| {
                    assert_eq!(*v, index);
                    *v += 1;
                });
            });
        }
    });
    let stats = cell.stats();
    assert_eq!(cell.read(|v| *v), n);
    assert_eq!(stats.waiters, 0);
    assert!(stats.wakeups <= n as u64, "{stats:?}");
}

#[test]
fn fan_out_wakes_exactly_the_satisfied_waiters() {
    let n = scaled(100, 10);
    let cell = WatchCell::new(0_usize);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let tasks: Vec<_> = (1..=n)
        .map(|threshold| {
            let cell = cell.clone();
            runtime.spawn(async move { cell.wait_for(move |v| *v >= threshold).await })
        })
        .collect();
    await_registered(&cell, n);
    let before = cell.stats();
    assert_eq!(before.wakeups, 0);

    cell.modify(|v| *v = n / 2);
    let half = cell.stats();
    assert_eq!(half.wakeups, (n / 2) as u64);
    assert_eq!(half.waiters, n - n / 2);
    // One evaluation per waiting predicate for that modification.
    assert_eq!(half.predicate_evals - before.predicate_evals, n as u64);

    cell.modify(|v| *v = n);
    assert_eq!(cell.stats().wakeups, n as u64);
    runtime.block_on(async {
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    });
}

#[test]
fn waiter_is_not_woken_when_predicate_stays_false() {
    let cell = WatchCell::new(0_u32);
    let (counter, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut wait = pin!(cell.wait_for(|v| *v == 1_000_000));
    assert!(wait.as_mut().poll(&mut cx).is_pending());
    for i in 0..scaled(1000, 50) as u32 {
        cell.modify(|v| *v = i);
    }
    assert_eq!(wakes(&counter), 0);
    cell.modify(|v| *v = 1_000_000);
    assert_eq!(wakes(&counter), 1);
    assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Ok(())));
}

#[test]
fn predicate_runs_at_most_once_per_modification() {
    let cell = WatchCell::new(0_u32);
    let evaluations = Arc::new(AtomicUsize::new(0));
    let (_counter, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut wait = pin!(cell.wait_for({
        let evaluations = evaluations.clone();
        move |v| {
            evaluations.fetch_add(1, Ordering::SeqCst);
            *v == 10
        }
    }));
    assert!(wait.as_mut().poll(&mut cx).is_pending());
    assert_eq!(evaluations.load(Ordering::SeqCst), 1);
    for _ in 0..10 {
        cell.modify(|v| *v += 1);
    }
    assert_eq!(evaluations.load(Ordering::SeqCst), 11);
    // Satisfied: later modifications no longer evaluate it.
    cell.modify(|v| *v += 1);
    assert_eq!(evaluations.load(Ordering::SeqCst), 11);
    assert!(wait.as_mut().poll(&mut cx).is_ready());
}

#[test]
fn modify_if_without_change_notifies_nobody() {
    let cell = WatchCell::new(5_u32);
    let (counter, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut wait = pin!(cell.wait_for(|v| *v == 5 + 1));
    assert!(wait.as_mut().poll(&mut cx).is_pending());
    let evals = cell.stats().predicate_evals;
    assert!(!cell.modify_if(|_| false));
    assert_eq!(cell.version().get(), 0);
    assert_eq!(cell.stats().predicate_evals, evals);
    assert!(cell.modify_if(|v| {
        *v += 1;
        true
    }));
    assert_eq!(wakes(&counter), 1);
    assert!(wait.as_mut().poll(&mut cx).is_ready());
}

#[test]
fn wait_for_map_yields_the_value_of_the_satisfying_state() {
    let cell = WatchCell::new(0_u32);
    let (_counter, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut wait = pin!(cell.wait_for_map(|v| (*v % 7 == 3).then_some(*v * 100)));
    assert!(wait.as_mut().poll(&mut cx).is_pending());
    cell.modify(|v| *v = 3);
    // Moves on before the waiter runs: it still gets what the state held.
    cell.modify(|v| *v = 4);
    assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Ok(300)));
}

#[tokio::test]
async fn changed_resolves_on_the_next_notifying_modification() {
    let cell = WatchCell::new(0);
    let seen = cell.version();
    assert!(!cell.modify_if(|_| false));
    let wait = cell.changed(seen);
    let modify = async { cell.modify(|v| *v += 1) };
    let (version, ()) = tokio::join!(wait, modify);
    assert_eq!(version.unwrap().get(), 1);
    // Already past: resolves at once.
    assert_eq!(cell.changed(seen).await.unwrap().get(), 1);
    assert_eq!(cell.blocking_changed(seen).unwrap().get(), 1);
}

#[test]
fn close_fails_current_and_future_waits_whose_predicate_does_not_hold() {
    let cell = WatchCell::new(0_u32);
    let (counter, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut async_wait = pin!(cell.wait_for(|v| *v == 1));
    assert!(async_wait.as_mut().poll(&mut cx).is_pending());
    std::thread::scope(|s| {
        let blocking = s.spawn(|| cell.blocking_wait_for(|v| *v == 1));
        await_registered(&cell, 2);
        assert!(cell.close());
        assert_eq!(blocking.join().unwrap(), Err(Closed));
    });
    assert_eq!(wakes(&counter), 1);
    assert_eq!(async_wait.as_mut().poll(&mut cx), Poll::Ready(Err(Closed)));
    // A later wait fails fast unless its predicate holds on the final value.
    assert_eq!(
        futures::executor::block_on(cell.wait_for(|v| *v == 1)),
        Err(Closed)
    );
    assert_eq!(
        cell.blocking_wait_for_timeout(|v| *v == 1, Duration::from_secs(3600)),
        Err(WaitTimeoutError::Closed)
    );
    // The value itself stays usable.
    cell.modify(|v| *v = 1);
    assert_eq!(cell.read(|v| *v), 1);
    assert!(cell.is_closed());
}

#[test]
fn blocking_wait_with_past_deadline_times_out_without_registering() {
    let cell = WatchCell::new(0_u32);
    let evals = cell.stats().predicate_evals;
    let result = cell.blocking_wait_for_deadline(|v| *v == 1, Instant::now());
    assert_eq!(result, Err(WaitTimeoutError::TimedOut));
    let stats = cell.stats();
    assert_eq!(stats.waiters, 0);
    // The predicate was still checked once: a satisfied wait never times out.
    assert_eq!(stats.predicate_evals, evals + 1);
    assert_eq!(
        cell.blocking_wait_for_deadline(|v| *v == 0, Instant::now()),
        Ok(())
    );
}

#[test]
fn blocking_wait_times_out_and_unregisters() {
    // Waits on the real clock by nature: the timeout path parks the thread.
    let cell = WatchCell::new(0_u32);
    let timeout = Duration::from_millis(20);
    let start = Instant::now();
    let result = cell.blocking_wait_for_map_timeout(|v| (*v == 1).then_some(()), timeout);
    assert_eq!(result, Err(WaitTimeoutError::TimedOut));
    assert!(start.elapsed() >= timeout);
    assert_eq!(cell.stats().waiters, 0);
}

#[test]
fn blocking_wait_with_deadline_succeeds_when_satisfied_in_time() {
    let cell = WatchCell::new(0_u32);
    std::thread::scope(|s| {
        let waiter =
            s.spawn(|| cell.blocking_wait_for_timeout(|v| *v == 1, Duration::from_secs(3600)));
        await_registered(&cell, 1);
        cell.modify(|v| *v = 1);
        assert_eq!(waiter.join().unwrap(), Ok(()));
    });
}

#[test]
fn dropped_wait_is_unregistered_and_never_woken() {
    let cell = WatchCell::new(0_u32);
    let (dropped_counter, dropped_waker) = counting_waker();
    let (live_counter, live_waker) = counting_waker();
    {
        let mut dropped = Box::pin(cell.wait_for(|v| *v == 1));
        assert!(
            dropped
                .as_mut()
                .poll(&mut Context::from_waker(&dropped_waker))
                .is_pending()
        );
        let mut live = pin!(cell.wait_for(|v| *v == 1));
        assert!(
            live.as_mut()
                .poll(&mut Context::from_waker(&live_waker))
                .is_pending()
        );
        assert_eq!(cell.stats().waiters, 2);
        drop(dropped);
        assert_eq!(cell.stats().waiters, 1);
        cell.modify(|v| *v = 1);
        assert_eq!(wakes(&dropped_counter), 0);
        assert_eq!(wakes(&live_counter), 1);
        assert!(
            live.as_mut()
                .poll(&mut Context::from_waker(&live_waker))
                .is_ready()
        );
    }
    assert_eq!(cell.stats().waiters, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waits_racing_modifications_lose_no_wake_up() {
    let cell = WatchCell::new(0_u64);
    let rounds = scaled(2000, 20) as u64;
    let survivor = tokio::spawn({
        let cell = cell.clone();
        async move { cell.wait_for(move |v| *v == rounds).await }
    });
    let canceller = tokio::spawn({
        let cell = cell.clone();
        async move {
            for round in 0..rounds {
                // Races each modification: polled once (registered), then dropped.
                let _ = futures::FutureExt::now_or_never(cell.wait_for(move |v| *v == round + 1));
                tokio::task::yield_now().await;
            }
        }
    });
    for _ in 0..rounds {
        cell.modify(|v| *v += 1);
        tokio::task::yield_now().await;
    }
    canceller.await.unwrap();
    survivor.await.unwrap().unwrap();
    assert_eq!(cell.stats().waiters, 0);
}

#[tokio::test]
async fn predicate_panicking_on_modifier_side_resumes_in_the_waiter() {
    let cell = WatchCell::new(0_u32);
    let waiter = tokio::spawn({
        let cell = cell.clone();
        async move {
            cell.wait_for(|v| {
                assert!(*v != 13, "unlucky value");
                false
            })
            .await
        }
    });
    while cell.stats().waiters == 0 {
        tokio::task::yield_now().await;
    }
    // The modifier is not harmed by the waiter's panic...
    cell.modify(|v| *v = 13);
    // ...the cell is not poisoned...
    assert_eq!(cell.read(|v| *v), 13);
    cell.modify(|v| *v = 14);
    // ...and the panic surfaces in the waiter's task.
    let panic = waiter.await.unwrap_err().into_panic();
    assert_eq!(panic.downcast_ref::<&str>(), Some(&"unlucky value"));
}

#[test]
fn predicate_panicking_on_modifier_side_resumes_in_the_blocking_waiter() {
    let cell = WatchCell::new(0_u32);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            cell.blocking_wait_for(|v| {
                assert!(*v != 13, "unlucky value");
                false
            })
        });
        await_registered(&cell, 1);
        cell.modify(|v| *v = 13);
        let panic = waiter.join().unwrap_err();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"unlucky value"));
    });
    assert_eq!(cell.stats().waiters, 0);
}

#[test]
fn panicking_modification_still_notifies_and_does_not_poison() {
    let cell = WatchCell::new(0_u32);
    let (counter, waker) = counting_waker();
    let mut cx = Context::from_waker(&waker);
    let mut wait = pin!(cell.wait_for(|v| *v == 1));
    assert!(wait.as_mut().poll(&mut cx).is_pending());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cell.modify(|v| {
            *v = 1;
            panic!("modification failed half-way");
        })
    }));
    assert!(result.is_err());
    assert_eq!(wakes(&counter), 1);
    assert!(wait.as_mut().poll(&mut cx).is_ready());
    cell.modify(|v| *v = 2);
    assert_eq!(cell.read(|v| *v), 2);
}

#[test]
fn read_and_modify_work_from_drop_outside_any_runtime() {
    struct ReleaseOnDrop(WatchCell<u32>);
    impl Drop for ReleaseOnDrop {
        fn drop(&mut self) {
            let held = self.0.read(|v| *v);
            self.0.modify(|v| *v = held - 1);
        }
    }
    let cell = WatchCell::new(1);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| cell.blocking_wait_for(|v| *v == 0));
        await_registered(&cell, 1);
        drop(ReleaseOnDrop(cell.clone()));
        waiter.join().unwrap().unwrap();
    });
}

#[test]
fn async_and_blocking_waiters_share_one_cell() {
    let cell = WatchCell::new(0_u32);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    std::thread::scope(|s| {
        let thread = s.spawn(|| cell.blocking_wait_for_map(|v| (*v >= 2).then_some(*v)));
        let task = runtime.spawn({
            let cell = cell.clone();
            async move { cell.wait_for_map(|v| (*v >= 1).then_some(*v)).await }
        });
        await_registered(&cell, 1);
        cell.modify(|v| *v = 1);
        assert_eq!(runtime.block_on(task).unwrap(), Ok(1));
        cell.modify(|v| *v = 2);
        assert_eq!(thread.join().unwrap(), Ok(2));
    });
}

#[test]
fn wait_futures_are_send_and_sync_when_predicate_is_send() {
    fn assert_send<F: Future + Send>(_: &F) {}
    fn assert_sync<F: Future + Sync>(_: &F) {}
    // Not `Sync` itself: the wait future is `Sync` all the same.
    let cell = WatchCell::new(std::cell::Cell::new(0_u32));
    assert_sync(&cell.wait_for(|v| v.get() == 1));
    assert_sync(&cell.changed(leasehold::watch_cell::Version::INITIAL));
    assert_sync(&cell.wait_take(|v| (v.get() > 0).then(|| v.replace(0))));
    let cell = WatchCell::new(String::new());
    let needle = String::from("x");
    let wait = cell.wait_for({
        let needle = needle.clone();
        move |s| s.contains(needle.as_str())
    });
    assert_send(&wait);
    assert_sync(&wait);
    let map = cell.wait_for_map(move |s| s.strip_prefix(needle.as_str()).map(str::to_owned));
    assert_send(&map);
    assert_sync(&map);
    let take = cell.wait_take(|s: &mut String| (!s.is_empty()).then(|| std::mem::take(s)));
    assert_send(&take);
    assert_sync(&take);
}

/// A waker whose `wake` panics.
struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("waker failed");
    }
}

/// Sets the cell to 1, and checks that the modifier's call panicked with
/// [`PanickingWaker`]'s panic.
fn set_to_one_sees_the_waker_panic(cell: &WatchCell<u32>) {
    let modification = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cell.modify(|v| *v = 1);
    }));
    let payload = modification.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"waker failed"));
}

#[test]
fn panicking_waker_does_not_strand_the_other_satisfied_waiters() {
    let cell = WatchCell::new(0_u32);
    let panicking = Waker::from(Arc::new(PanickingWaker));
    let (first_counter, first_waker) = counting_waker();
    let (second_counter, second_waker) = counting_waker();
    // The panicking waker registers first, so it is the first to be woken.
    let mut doomed = pin!(cell.wait_for(|v| *v == 1));
    let mut first = pin!(cell.wait_for(|v| *v == 1));
    let mut second = pin!(cell.wait_for(|v| *v == 1));
    assert!(
        doomed
            .as_mut()
            .poll(&mut Context::from_waker(&panicking))
            .is_pending()
    );
    assert!(
        first
            .as_mut()
            .poll(&mut Context::from_waker(&first_waker))
            .is_pending()
    );
    assert!(
        second
            .as_mut()
            .poll(&mut Context::from_waker(&second_waker))
            .is_pending()
    );

    // The modifier sees the waker's panic, after every other waiter was woken.
    set_to_one_sees_the_waker_panic(&cell);
    assert_eq!(wakes(&first_counter), 1);
    assert_eq!(wakes(&second_counter), 1);
    let noop = &mut Context::from_waker(Waker::noop());
    assert_eq!(first.as_mut().poll(noop), Poll::Ready(Ok(())));
    assert_eq!(second.as_mut().poll(noop), Poll::Ready(Ok(())));
    assert_eq!(doomed.as_mut().poll(noop), Poll::Ready(Ok(())));
    // The modification stands and the cell is not poisoned.
    assert_eq!(cell.read(|v| *v), 1);
    assert_eq!(cell.stats().waiters, 0);
}

#[test]
fn wakers_panicking_in_the_middle_of_a_bulk_wake_up_strand_no_one() {
    // Every other waiter's waker panics: the first panic leaves the
    // modification once the others after it were woken, and the second,
    // raised while the first unwinds, is caught rather than aborting.
    let cell = WatchCell::new(0_u32);
    let panicking = Waker::from(Arc::new(PanickingWaker));
    let mut waits: Vec<_> = (0..9)
        .map(|_| Box::pin(cell.wait_for(|v| *v == 1)))
        .collect();
    let mut counters = Vec::new();
    for (i, wait) in waits.iter_mut().enumerate() {
        let waker = if i % 2 == 1 {
            panicking.clone()
        } else {
            let (counter, waker) = counting_waker();
            counters.push(counter);
            waker
        };
        assert!(
            wait.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
    }
    set_to_one_sees_the_waker_panic(&cell);
    for counter in &counters {
        assert_eq!(wakes(counter), 1);
    }
    let noop = &mut Context::from_waker(Waker::noop());
    for wait in &mut waits {
        assert_eq!(wait.as_mut().poll(noop), Poll::Ready(Ok(())));
    }
    assert_eq!(cell.stats().waiters, 0);
}

/// What a [`reentrant_waker`] did, and the cell it touches.
struct Reentrant {
    cell: WatchCell<u32>,
    clones: AtomicUsize,
    drops: AtomicUsize,
    wakes: AtomicUsize,
}

/// A waker whose `clone`, `wake` and `drop` each read `cell`'s counters,
/// i.e. take the cell's lock: it deadlocks if the cell calls it while
/// holding that lock.
fn reentrant_waker(state: &Arc<Reentrant>) -> Waker {
    unsafe fn clone(data: *const ()) -> RawWaker {
        // SAFETY: `data` came from `Arc::into_raw` and the waker holds a count.
        let state = unsafe { &*data.cast::<Reentrant>() };
        let _ = state.cell.stats();
        state.clones.fetch_add(1, Ordering::SeqCst);
        unsafe { Arc::increment_strong_count(data.cast::<Reentrant>()) };
        RawWaker::new(data, &VTABLE)
    }
    unsafe fn wake(data: *const ()) {
        // SAFETY: `wake` consumes the waker: act as `wake_by_ref`, then give
        // back its count as `drop` does.
        unsafe {
            wake_by_ref(data);
            drop(data);
        }
    }
    unsafe fn wake_by_ref(data: *const ()) {
        // SAFETY: as in `clone`.
        let state = unsafe { &*data.cast::<Reentrant>() };
        let _ = state.cell.stats();
        state.wakes.fetch_add(1, Ordering::SeqCst);
    }
    unsafe fn drop(data: *const ()) {
        // SAFETY: as in `clone`; this gives back the waker's count.
        let state = unsafe { Arc::from_raw(data.cast::<Reentrant>()) };
        let _ = state.cell.stats();
        state.drops.fetch_add(1, Ordering::SeqCst);
    }
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop);
    let data = Arc::into_raw(Arc::clone(state)).cast::<()>();
    // SAFETY: the vtable functions uphold the `RawWaker` contract for an
    // `Arc<Reentrant>` pointer.
    unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) }
}

#[test]
fn waker_that_touches_the_cell_in_clone_wake_and_drop_does_not_deadlock() {
    within_time_limit(|| {
        let cell = WatchCell::new(0_u32);
        let reentrant = |cell: &WatchCell<u32>| {
            Arc::new(Reentrant {
                cell: cell.clone(),
                clones: AtomicUsize::new(0),
                drops: AtomicUsize::new(0),
                wakes: AtomicUsize::new(0),
            })
        };
        let (a, b) = (reentrant(&cell), reentrant(&cell));
        let (waker_a, waker_b) = (reentrant_waker(&a), reentrant_waker(&b));

        // Registered with `a`, re-polled with `b` (clone `b`, drop `a`), then
        // completed by a modifier (wake `b`).
        let mut completed = Box::pin(cell.wait_for(|v| *v == 2));
        assert!(
            completed
                .as_mut()
                .poll(&mut Context::from_waker(&waker_a))
                .is_pending()
        );
        assert!(
            completed
                .as_mut()
                .poll(&mut Context::from_waker(&waker_b))
                .is_pending()
        );
        assert_eq!(
            a.drops.load(Ordering::SeqCst),
            1,
            "the replaced waker was dropped"
        );
        cell.modify(|v| *v = 2);
        assert_eq!(b.wakes.load(Ordering::SeqCst), 1);
        assert!(
            completed
                .as_mut()
                .poll(&mut Context::from_waker(&waker_b))
                .is_ready()
        );

        // Registered with `a`, then cancelled (drop `a`'s clone).
        let mut cancelled = Box::pin(cell.wait_for(|v| *v == 3));
        assert!(
            cancelled
                .as_mut()
                .poll(&mut Context::from_waker(&waker_a))
                .is_pending()
        );
        drop(cancelled);
        assert_eq!(cell.stats().waiters, 0);

        drop((waker_a, waker_b));
        for state in [&a, &b] {
            // `wake` consumes (drops) its waker too.
            assert_eq!(
                state.clones.load(Ordering::SeqCst) + 1,
                state.drops.load(Ordering::SeqCst),
                "every waker made was dropped exactly once"
            );
        }
    });
}

#[test]
fn changed_returns_the_latest_version_so_a_value_read_after_it_is_not_reported_again() {
    let cell = WatchCell::new(0_u32);
    let noop = &mut Context::from_waker(Waker::noop());
    let seen = cell.version();
    let mut wait = pin!(cell.changed(seen));
    assert!(wait.as_mut().poll(noop).is_pending());
    // Two modifications before the owner runs: it learns of both at once.
    cell.modify(|v| *v = 1);
    cell.modify(|v| *v = 2);
    let Poll::Ready(Ok(seen)) = wait.as_mut().poll(noop) else {
        panic!("changed did not resolve");
    };
    assert_eq!(seen.get(), 2);
    assert_eq!(cell.read(|v| *v), 2);
    // Nothing happened since the value just read: the next wait waits.
    assert!(pin!(cell.changed(seen)).poll(noop).is_pending());
    cell.modify(|v| *v = 3);
    assert_eq!(cell.blocking_changed(seen).map(|v| v.get()), Ok(3));
}

#[test]
fn loop_over_an_always_ready_wait_yields_to_other_tasks() {
    within_time_limit(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let cell = WatchCell::new(0_u32);
            cell.modify(|v| *v = 1);
            // Spawned first, so it runs first: it never waits for anything.
            let spinner = tokio::spawn({
                let cell = cell.clone();
                async move {
                    loop {
                        cell.wait_for(|v| *v == 1).await.unwrap();
                        let _ = cell.changed(leasehold::watch_cell::Version::INITIAL).await;
                    }
                }
            });
            // Runs only if the spinner returns to the scheduler: the wait
            // futures spend tokio's task budget and yield when it is spent.
            tokio::spawn(async {}).await.unwrap();
            spinner.abort();
        });
    });
}

#[test]
fn read_and_mark_makes_changed_wait_for_a_modification_after_the_read() {
    let cell = WatchCell::new(0_u32);
    let noop = &mut Context::from_waker(Waker::noop());
    let mut seen = cell.version();
    cell.modify(|v| *v = 1);
    assert_eq!(cell.read_and_mark(&mut seen, |v| *v), 1);
    assert_eq!(seen.get(), 1);
    assert!(pin!(cell.changed(seen)).poll(noop).is_pending());
}

#[test]
fn blocking_changed_with_deadline_times_out_or_reports_the_latest_version() {
    let cell = WatchCell::new(0_u32);
    let seen = cell.version();
    assert_eq!(
        cell.blocking_changed_deadline(seen, Instant::now()),
        Err(WaitTimeoutError::TimedOut)
    );
    assert_eq!(
        cell.blocking_changed_timeout(seen, Duration::ZERO),
        Err(WaitTimeoutError::TimedOut)
    );
    assert_eq!(cell.stats().waiters, 0);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| cell.blocking_changed_timeout(seen, Duration::from_secs(3600)));
        await_registered(&cell, 1);
        cell.modify(|v| *v = 1);
        assert!(waiter.join().unwrap().unwrap() > seen);
    });
    cell.close();
    // Changed before the close: reported, not `Closed`.
    assert_eq!(
        cell.blocking_changed_deadline(seen, Instant::now())
            .map(|v| v.get()),
        Ok(1)
    );
    assert_eq!(
        cell.blocking_changed_deadline(cell.version(), Instant::now()),
        Err(WaitTimeoutError::Closed)
    );
}

#[test]
fn wait_on_a_closed_cell_gets_the_final_value_when_its_predicate_holds() {
    let cell = WatchCell::new(7_u32);
    cell.close();
    let noop = &mut Context::from_waker(Waker::noop());
    assert_eq!(
        pin!(cell.wait_for(|v| *v == 7)).poll(noop),
        Poll::Ready(Ok(()))
    );
    assert_eq!(
        pin!(cell.wait_for_map(|v| Some(*v))).poll(noop),
        Poll::Ready(Ok(7))
    );
    assert_eq!(
        cell.blocking_wait_for_map(|v| (*v == 7).then_some(*v)),
        Ok(7)
    );
    assert_eq!(
        pin!(cell.wait_for(|v| *v == 8)).poll(noop),
        Poll::Ready(Err(Closed))
    );
}

/// A registered async taker: its wake-up counter, its waker, its future.
struct Taker<F> {
    woken: Arc<CountingWaker>,
    waker: Waker,
    take: std::pin::Pin<Box<F>>,
}

/// `n` async takers of one job each, registered on `queue`, oldest first.
fn registered_takers(
    queue: &WatchCell<Vec<u32>>,
    n: usize,
) -> Vec<Taker<impl Future<Output = Result<u32, Closed>>>> {
    (0..n)
        .map(|_| {
            let (woken, waker) = counting_waker();
            let mut take = Box::pin(queue.wait_take(|jobs: &mut Vec<u32>| jobs.pop()));
            assert!(
                take.as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending()
            );
            Taker { woken, waker, take }
        })
        .collect()
}

#[test]
fn one_pushed_item_wakes_exactly_one_taker_the_longest_waiting() {
    let queue = WatchCell::new(Vec::<u32>::new());
    let mut takers = registered_takers(&queue, 5);
    for job in 1..=5 {
        queue.modify(|jobs| jobs.push(job));
        let woken: Vec<usize> = takers.iter().map(|taker| wakes(&taker.woken)).collect();
        // Exactly one more wake-up per job, and it went to the oldest taker.
        assert_eq!(woken.iter().sum::<usize>(), job as usize, "{woken:?}");
        assert_eq!(woken[job as usize - 1], 1, "{woken:?}");
        assert_eq!(queue.stats().waiters, 5 - job as usize);
        assert!(
            queue.read(Vec::is_empty),
            "the taker took the job under the lock"
        );
    }
    for (job, taker) in (1..=5).zip(&mut takers) {
        let cx = &mut Context::from_waker(&taker.waker);
        assert_eq!(taker.take.as_mut().poll(cx), Poll::Ready(Ok(job)));
    }
    let stats = queue.stats();
    assert_eq!(stats.wakeups, 5);
    // Five pushes and five takes: each take is a notifying modification.
    assert_eq!(stats.notifications, 10);
}

#[test]
fn takers_keep_their_order_when_others_cancel() {
    let queue = WatchCell::new(Vec::<u32>::new());
    let mut takers = registered_takers(&queue, 4);
    // Cancel the first and third: the second is now the oldest.
    drop(takers.remove(2));
    drop(takers.remove(0));
    let mut late = registered_takers(&queue, 1);
    takers.append(&mut late);
    for job in [10, 20, 30] {
        queue.modify(|jobs| jobs.push(job));
    }
    for (job, taker) in [10, 20, 30].into_iter().zip(&mut takers) {
        assert_eq!(wakes(&taker.woken), 1);
        let cx = &mut Context::from_waker(&taker.waker);
        assert_eq!(taker.take.as_mut().poll(cx), Poll::Ready(Ok(job)));
    }
}

#[test]
fn a_take_wakes_the_waiters_its_change_satisfies_even_those_tested_before_it() {
    let queue = WatchCell::new(vec![1_u32]);
    let noop = &mut Context::from_waker(Waker::noop());
    // Registered before the taker: tested first on every modification.
    let (drained_counter, drained_waker) = counting_waker();
    let mut drained = pin!(queue.wait_for(|jobs| jobs.is_empty()));
    assert!(
        drained
            .as_mut()
            .poll(&mut Context::from_waker(&drained_waker))
            .is_pending()
    );
    let (changed_counter, changed_waker) = counting_waker();
    let mut changed = pin!(queue.changed(queue.version()));
    assert!(
        changed
            .as_mut()
            .poll(&mut Context::from_waker(&changed_waker))
            .is_pending()
    );
    // Registered after them: takes two jobs at once.
    let mut pair = pin!(queue.wait_take(|jobs: &mut Vec<u32>| {
        (jobs.len() >= 2).then(|| (jobs.remove(0), jobs.remove(0)))
    }));
    assert!(pair.as_mut().poll(noop).is_pending());
    // The push makes [1, 2]: `drained` is tested (false), then the pair is
    // taken, leaving the queue empty. `drained` must be tested again.
    queue.modify(|jobs| jobs.push(2));
    assert_eq!(pair.as_mut().poll(noop), Poll::Ready(Ok((1, 2))));
    assert_eq!(wakes(&drained_counter), 1);
    assert_eq!(drained.as_mut().poll(noop), Poll::Ready(Ok(())));
    assert_eq!(queue.version().get(), 2, "the push and the take");
    assert_eq!(wakes(&changed_counter), 1);
    assert_eq!(
        changed.as_mut().poll(noop).map(|v| v.map(|v| v.get())),
        Poll::Ready(Ok(2))
    );
}

#[test]
fn take_on_registration_is_a_notifying_modification() {
    let queue = WatchCell::new(vec![1_u32]);
    let (counter, waker) = counting_waker();
    let mut drained = pin!(queue.wait_for(|jobs| jobs.is_empty()));
    assert!(
        drained
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    // Takes at once, on this thread: the drained waiter is still woken.
    assert_eq!(queue.blocking_wait_take(|jobs| jobs.pop()), Ok(1));
    assert_eq!(wakes(&counter), 1);
    assert_eq!(queue.version().get(), 1);
}

#[test]
fn blocking_takers_share_the_items_one_each() {
    let n = scaled(16, 4);
    let queue = WatchCell::new(Vec::<usize>::new());
    let taken = std::thread::scope(|s| {
        let takers: Vec<_> = (0..n)
            .map(|_| s.spawn(|| queue.blocking_wait_take(|jobs| jobs.pop())))
            .collect();
        await_registered(&queue, n);
        for job in 0..n {
            queue.modify(|jobs| jobs.push(job));
        }
        let mut taken: Vec<usize> = takers
            .into_iter()
            .map(|t| t.join().unwrap().unwrap())
            .collect();
        taken.sort_unstable();
        taken
    });
    assert_eq!(taken, (0..n).collect::<Vec<_>>());
    // One wake-up per item: no taker woke to find the queue empty.
    assert_eq!(queue.stats().wakeups, n as u64);
}

#[test]
fn closing_a_queue_lets_takers_drain_it_then_fails_them() {
    let queue = WatchCell::new(Vec::<u32>::new());
    let noop = &mut Context::from_waker(Waker::noop());
    let mut waiting = pin!(queue.wait_take(|jobs: &mut Vec<u32>| jobs.pop()));
    assert!(waiting.as_mut().poll(noop).is_pending());
    queue.modify(|jobs| jobs.push(1));
    queue.close();
    assert_eq!(waiting.as_mut().poll(noop), Poll::Ready(Ok(1)));
    let mut registered = pin!(queue.wait_take(|jobs: &mut Vec<u32>| jobs.pop()));
    assert_eq!(registered.as_mut().poll(noop), Poll::Ready(Err(Closed)));
    queue.modify(|jobs| jobs.push(2));
    assert_eq!(queue.blocking_wait_take(|jobs| jobs.pop()), Ok(2));
}

#[test]
fn take_that_panics_on_the_modifiers_side_resumes_in_the_taker() {
    let queue = WatchCell::new(Vec::<u32>::new());
    std::thread::scope(|s| {
        let taker = s.spawn(|| {
            queue.blocking_wait_take(|jobs: &mut Vec<u32>| {
                let job = jobs.pop()?;
                assert!(job != 13, "poison job");
                Some(job)
            })
        });
        await_registered(&queue, 1);
        queue.modify(|jobs| jobs.push(13));
        let panic = taker.join().unwrap_err();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"poison job"));
    });
    // What the take did before panicking stands, and was a modification.
    assert!(queue.read(Vec::is_empty));
    assert_eq!(queue.version().get(), 2);
}
