//! Loom models of `WatchCell`: every interleaving of registration, modification,
//! close, cancellation and timeout, checked for lost wake-ups and for unsound
//! access to the waiter nodes.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p leasehold-loom-tests --release`
#![cfg(loom)]

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use leasehold::WatchCell;
use leasehold::watch_cell::{Closed, WaitTimeoutError};
use loom::future::block_on;
use loom::thread;

#[test]
fn modify_racing_async_registration_loses_no_wake_up() {
    loom::model(|| {
        let cell = WatchCell::new(0_u32);
        let writer = thread::spawn({
            let cell = cell.clone();
            move || cell.modify(|v| *v = 1)
        });
        assert_eq!(block_on(cell.wait_for(|v| *v == 1)), Ok(()));
        writer.join().unwrap();
        assert_eq!(cell.stats().waiters, 0);
    });
}

#[test]
fn modify_racing_blocking_registration_loses_no_wake_up() {
    loom::model(|| {
        let cell = WatchCell::new(0_u32);
        let writer = thread::spawn({
            let cell = cell.clone();
            move || cell.modify(|v| *v = 1)
        });
        assert_eq!(
            cell.blocking_wait_for_map(|v| (*v == 1).then_some(*v)),
            Ok(1)
        );
        writer.join().unwrap();
    });
}

#[test]
fn close_racing_waits_fails_both_with_closed() {
    loom::model(|| {
        let cell = WatchCell::new(0_u32);
        let closer = thread::spawn({
            let cell = cell.clone();
            move || assert!(cell.close())
        });
        let blocking = thread::spawn({
            let cell = cell.clone();
            move || cell.blocking_wait_for(|v| *v == 1)
        });
        assert_eq!(block_on(cell.wait_for(|v| *v == 1)), Err(Closed));
        assert_eq!(blocking.join().unwrap(), Err(Closed));
        closer.join().unwrap();
        assert_eq!(cell.stats().waiters, 0);
    });
}

#[test]
fn dropped_wait_racing_modify_neither_wakes_it_nor_loses_another() {
    loom::model(|| {
        let cell = WatchCell::new(0_u32);
        let canceller = thread::spawn({
            let cell = cell.clone();
            move || {
                let mut wait = pin!(cell.wait_for(|v| *v == 1));
                let mut cx = Context::from_waker(Waker::noop());
                // Registered (or already satisfied), then cancelled.
                let _ = wait.as_mut().poll(&mut cx);
            }
        });
        let writer = thread::spawn({
            let cell = cell.clone();
            move || cell.modify(|v| *v = 1)
        });
        assert_eq!(block_on(cell.wait_for(|v| *v == 1)), Ok(()));
        canceller.join().unwrap();
        writer.join().unwrap();
        assert_eq!(cell.stats().waiters, 0);
    });
}

#[test]
fn two_waiters_with_different_predicates_each_wake_once_satisfied() {
    loom::model(|| {
        let cell = WatchCell::new(0_u32);
        let low = thread::spawn({
            let cell = cell.clone();
            move || block_on(cell.wait_for_map(|v| (*v >= 1).then_some(*v)))
        });
        let high = thread::spawn({
            let cell = cell.clone();
            move || cell.blocking_wait_for_map(|v| (*v >= 2).then_some(*v))
        });
        cell.modify(|v| *v = 1);
        cell.modify(|v| *v = 2);
        let low = low.join().unwrap().unwrap();
        assert!(low == 1 || low == 2);
        assert_eq!(high.join().unwrap(), Ok(2));
        // No wake-up without a satisfied predicate.
        assert!(cell.stats().wakeups <= 2);
    });
}

#[test]
fn deadline_racing_satisfying_modify_reports_one_consistent_outcome() {
    loom::model(|| {
        let cell = WatchCell::new(0_u32);
        let deadline = leasehold::__loom::now() + Duration::from_secs(1);
        let timer = thread::spawn(|| leasehold::__loom::advance_time(Duration::from_secs(1)));
        let writer = thread::spawn({
            let cell = cell.clone();
            move || cell.modify(|v| *v = 1)
        });
        let result = cell.blocking_wait_for_map_deadline(|v| (*v == 1).then_some(*v), deadline);
        match result {
            // Satisfied before or while timing out: the value is not lost.
            Ok(value) => assert_eq!(value, 1),
            Err(WaitTimeoutError::TimedOut) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
        timer.join().unwrap();
        writer.join().unwrap();
        // Either way the node left the list before the waiter's frame ended.
        assert_eq!(cell.stats().waiters, 0);
    });
}

#[test]
fn waker_update_on_repoll_racing_modify_wakes_the_latest_waker() {
    loom::model(|| {
        let cell = WatchCell::new(0_u32);
        let writer = thread::spawn({
            let cell = cell.clone();
            move || cell.modify(|v| *v = 1)
        });
        let mut wait = pin!(cell.wait_for(|v| *v == 1));
        // First poll with a no-op waker, then finish under block_on's waker:
        // the second registration of the waker must not be lost.
        let first = wait.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        if first == Poll::Pending {
            assert_eq!(block_on(wait), Ok(()));
        }
        writer.join().unwrap();
    });
}

/// Silences the report of the panics these models raise on purpose, so that
/// thousands of explored interleavings do not flood the output.
fn quiet_panic(message: &'static str) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let expected = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| m.starts_with("expected:"));
            if !expected {
                default(info);
            }
        }));
    });
    debug_assert!(message.starts_with("expected:"));
}

#[test]
fn predicate_panicking_on_the_modifiers_thread_resumes_in_the_waiter_with_its_payload() {
    const PANIC: &str = "expected: unlucky value";
    quiet_panic(PANIC);
    loom::model(|| {
        let cell = WatchCell::new(0_u32);
        let writer = thread::spawn({
            let cell = cell.clone();
            move || cell.modify(|v| *v = 13)
        });
        // Registered first (the writer then runs the predicate and stores
        // the payload for us), or tested here after the write.
        let waited = catch_unwind(AssertUnwindSafe(|| {
            block_on(cell.wait_for(|v| {
                if *v == 13 {
                    std::panic::panic_any(PANIC);
                }
                false
            }))
        }));
        let payload = waited.expect_err("the predicate's panic resumes in the waiter");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&PANIC));
        writer.join().unwrap();
        // Neither side poisoned the cell.
        assert_eq!(cell.stats().waiters, 0);
        cell.modify(|v| *v = 14);
        assert_eq!(cell.read(|v| *v), 14);
    });
}

#[test]
fn closure_panicking_under_the_lock_leaves_the_cell_usable_for_every_thread() {
    const PANIC: &str = "expected: reader failed";
    quiet_panic(PANIC);
    loom::model(|| {
        let cell = WatchCell::new(0_u32);
        let reader = thread::spawn({
            let cell = cell.clone();
            move || {
                // Unwinds through the lock: like parking_lot, no poisoning.
                let read = catch_unwind(AssertUnwindSafe(|| {
                    cell.read(|_| std::panic::panic_any(PANIC))
                }));
                assert!(read.is_err());
            }
        });
        cell.modify(|v| *v += 1);
        reader.join().unwrap();
        assert_eq!(cell.read(|v| *v), 1);
    });
}

/// Counts wake-ups (not modelled by loom: read only after the threads joined).
#[derive(Default)]
struct CountingWake(AtomicUsize);

impl Wake for CountingWake {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type Job = Pin<Box<dyn Future<Output = Result<u32, Closed>> + Send>>;

/// A consumer that polls a take of one job once, on its own thread.
fn consumer(
    cell: &WatchCell<Vec<u32>>,
) -> thread::JoinHandle<(Job, Poll<Result<u32, Closed>>, Arc<CountingWake>)> {
    let cell = cell.clone();
    thread::spawn(move || {
        let woken = Arc::new(CountingWake::default());
        let waker = Waker::from(Arc::clone(&woken));
        let cell_for_take = cell.clone();
        let mut take: Job = Box::pin(async move {
            cell_for_take
                .wait_take(|jobs: &mut Vec<u32>| jobs.pop())
                .await
        });
        let first = take.as_mut().poll(&mut Context::from_waker(&waker));
        (take, first, woken)
    })
}

#[test]
fn one_item_and_two_takers_exactly_one_gets_it_and_the_other_is_not_woken() {
    loom::model(|| {
        let cell = WatchCell::new(Vec::<u32>::new());
        let consumers = [consumer(&cell), consumer(&cell)];
        cell.modify(|jobs| jobs.push(7));
        let mut got = 0;
        let mut pending = 0;
        for handle in consumers {
            let (mut take, first, woken) = handle.join().unwrap();
            let woken = woken.0.load(Ordering::SeqCst);
            let result = match first {
                Poll::Ready(result) => Some(result),
                // Woken only if a modifier took the job for it.
                Poll::Pending if woken == 1 => {
                    match take.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                        Poll::Ready(result) => Some(result),
                        Poll::Pending => panic!("woken, but nothing was taken for it"),
                    }
                }
                Poll::Pending => {
                    assert_eq!(woken, 0);
                    let noop = &mut Context::from_waker(Waker::noop());
                    assert!(take.as_mut().poll(noop).is_pending());
                    None
                }
            };
            match result {
                Some(result) => {
                    assert_eq!(result, Ok(7));
                    got += 1;
                }
                None => {
                    // Still registered until its future is dropped.
                    assert_eq!(cell.stats().waiters, 1);
                    pending += 1;
                }
            }
        }
        assert_eq!((got, pending), (1, 1));
        assert!(cell.read(Vec::is_empty));
        assert_eq!(cell.stats().waiters, 0);
        // One wake-up at most: the other taker never woke.
        assert!(cell.stats().wakeups <= 1);
    });
}

// ------------------------------------------------------- indexed waits ---

#[test]
fn modify_racing_index_registration_loses_no_wake_up() {
    loom::model(|| {
        let cell = WatchCell::new(0_u64);
        let seqno = cell.index(|v: &u64| *v);
        let writer = thread::spawn({
            let cell = cell.clone();
            move || cell.modify(|v| *v = 2)
        });
        let blocking = thread::spawn({
            let seqno = seqno.clone();
            move || seqno.blocking_wait_at_least(1)
        });
        assert_eq!(block_on(seqno.wait_at_least(2)), Ok(2));
        assert_eq!(blocking.join().unwrap(), Ok(2));
        writer.join().unwrap();
        assert_eq!(seqno.waiting(), 0);
    });
}

#[test]
fn cancelled_index_wait_racing_a_satisfying_modify_neither_wakes_it_nor_loses_another() {
    loom::model(|| {
        let cell = WatchCell::new(0_u64);
        let seqno = cell.index(|v: &u64| *v);
        let canceller = thread::spawn({
            let seqno = seqno.clone();
            move || {
                let woken = Arc::new(CountingWake::default());
                let waker = Waker::from(Arc::clone(&woken));
                {
                    let mut wait = pin!(seqno.wait_at_least(1));
                    // Registered (or already satisfied), then cancelled.
                    let _ = wait.as_mut().poll(&mut Context::from_waker(&waker));
                }
                // Cancelled before or after the modifier completed it: woken
                // at most once, and never after the drop returned.
                let at_drop = woken.0.load(Ordering::SeqCst);
                assert!(at_drop <= 1);
                at_drop
            }
        });
        let writer = thread::spawn({
            let cell = cell.clone();
            move || cell.modify(|v| *v = 1)
        });
        assert_eq!(block_on(seqno.wait_at_least(1)), Ok(1));
        let woken_at_drop = canceller.join().unwrap();
        writer.join().unwrap();
        assert_eq!(seqno.waiting(), 0);
        assert!(woken_at_drop <= 1);
    });
}

#[test]
fn close_racing_index_waits_fails_them_with_closed_or_gives_the_reached_key() {
    loom::model(|| {
        let cell = WatchCell::new(0_u64);
        let seqno = cell.index(|v: &u64| *v);
        let closer = thread::spawn({
            let cell = cell.clone();
            move || assert!(cell.close())
        });
        let writer = thread::spawn({
            let cell = cell.clone();
            move || cell.modify(|v| *v = 1)
        });
        let blocking = thread::spawn({
            let seqno = seqno.clone();
            move || seqno.blocking_wait_at_least(2)
        });
        // Reached before or after the close: the key wins, as for predicates.
        match block_on(seqno.wait_at_least(1)) {
            Ok(key) => assert_eq!(key, 1),
            Err(Closed) => {}
        }
        assert_eq!(blocking.join().unwrap(), Err(Closed));
        closer.join().unwrap();
        writer.join().unwrap();
        assert_eq!(seqno.waiting(), 0);
    });
}

#[test]
fn index_deadline_racing_a_satisfying_modify_reports_one_consistent_outcome() {
    loom::model(|| {
        let cell = WatchCell::new(0_u64);
        let seqno = cell.index(|v: &u64| *v);
        let deadline = leasehold::__loom::now() + Duration::from_secs(1);
        let timer = thread::spawn(|| leasehold::__loom::advance_time(Duration::from_secs(1)));
        let writer = thread::spawn({
            let cell = cell.clone();
            move || cell.modify(|v| *v = 1)
        });
        match seqno.blocking_wait_at_least_deadline(1, deadline) {
            Ok(key) => assert_eq!(key, 1),
            Err(WaitTimeoutError::TimedOut) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
        timer.join().unwrap();
        writer.join().unwrap();
        assert_eq!(seqno.waiting(), 0);
    });
}

/// Three waits of one threshold share one list. The head and the tail are
/// cancelled while a modifier completes the list and another thread links
/// a fourth wait of the same threshold: every interleaving of the unlinks
/// and the link (each rewriting a neighbour's links) with the walk down the
/// list completes every live wait exactly once, and touches no node after
/// its owner was free to drop it.
#[test]
fn cancellations_racing_the_completion_of_their_neighbours_in_one_list() {
    loom::model(|| {
        let cell = WatchCell::new(0_u64);
        let seqno = cell.index(|v: &u64| *v);
        let register = || {
            let mut wait = Box::pin(seqno.wait_at_least(1));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            wait
        };
        let (head, middle, tail) = (register(), register(), register());
        assert_eq!(seqno.waiting(), 3);
        let writer = thread::spawn({
            let cell = cell.clone();
            move || cell.modify(|v| *v = 1)
        });
        let latecomer = thread::spawn({
            let seqno = seqno.clone();
            move || block_on(seqno.wait_at_least(1))
        });
        drop(head);
        drop(tail);
        assert_eq!(block_on(middle), Ok(1));
        assert_eq!(latecomer.join().unwrap(), Ok(1));
        writer.join().unwrap();
        assert_eq!(seqno.waiting(), 0);
    });
}
