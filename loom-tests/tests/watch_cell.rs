//! Loom models of `WatchCell`: every interleaving of registration, modification,
//! close, cancellation and timeout, checked for lost wake-ups and for unsound
//! access to the waiter nodes.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p leasehold-loom-tests --release`
#![cfg(loom)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
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
