//! Behavioural specification of `WatchCell`.
//!
//! Sizes shrink under Miri (`cargo +nightly miri test --test watch_cell`),
//! which runs these tests to check the unsafe waiter list.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
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
fn close_fails_current_and_future_waits_with_closed() {
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
    // Even a predicate that holds fails fast on a closed cell.
    assert_eq!(
        futures::executor::block_on(cell.wait_for(|_| true)),
        Err(Closed)
    );
    assert_eq!(
        cell.blocking_wait_for_timeout(|_| true, Duration::from_secs(3600)),
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
fn wait_futures_are_send_when_predicate_is_send() {
    fn assert_send<F: Future + Send>(_: &F) {}
    let cell = WatchCell::new(String::new());
    let needle = String::from("x");
    let wait = cell.wait_for({
        let needle = needle.clone();
        move |s| s.contains(needle.as_str())
    });
    assert_send(&wait);
    let map = cell.wait_for_map(move |s| s.strip_prefix(needle.as_str()).map(str::to_owned));
    assert_send(&map);
}
