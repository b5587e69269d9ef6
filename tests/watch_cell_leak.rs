//! A registered async wait that is leaked (`mem::forget`) stays in the
//! cell's waiter list for good, and every later modification calls its
//! predicate. That is sound only because async predicates own what they
//! capture (`'static`); a borrowing one does not compile (see the
//! `compile_fail` examples on `WatchCell::wait_for` and `wait_for_map`).
//!
//! Miri runs this file with `-Zmiri-ignore-leaks` (the leak is the point), in
//! a binary of its own so that the other tests keep Miri's leak check.

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Waker};

use leasehold::WatchCell;

/// Polls `future` once, boxed and pinned, then leaks it while registered.
fn poll_once_and_leak<F: Future>(future: F) {
    let mut future = Box::pin(future);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(future.as_mut().poll(&mut cx).is_pending());
    mem::forget(future);
}

#[test]
fn leaked_wait_keeps_its_owned_predicate_alive_for_later_modifications() {
    let cell = WatchCell::new(0_u64);
    let calls = Arc::new(AtomicUsize::new(0));
    {
        // What a borrowing predicate would have pointed at: a value that
        // dies at the end of this block. The predicate owns its own handle.
        let target = Box::new(5_u64);
        let seen = Arc::clone(&calls);
        let target_owned = *target;
        poll_once_and_leak(cell.wait_for(move |v| {
            seen.fetch_add(1, Ordering::SeqCst);
            *v >= target_owned
        }));
        drop(target);
    }
    assert_eq!(cell.stats().waiters, 1);
    // Each modification calls the leaked predicate: it must still be valid.
    for _ in 0..4 {
        cell.modify(|v| *v += 1);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "1 at registration + 4 modifications"
    );
    assert_eq!(cell.stats().waiters, 1);
    // Satisfied: the modifier writes the outcome into the leaked node and
    // removes it from the list; later modifications no longer call it.
    cell.modify(|v| *v += 1);
    assert_eq!(cell.stats().waiters, 0);
    cell.modify(|v| *v += 1);
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}

#[test]
fn leaked_map_wait_receives_its_output_and_the_cell_drops_cleanly() {
    let cell = WatchCell::new(String::new());
    let prefix = String::from("blob:");
    poll_once_and_leak(
        cell.wait_for_map(move |s: &String| s.strip_prefix(prefix.as_str()).map(str::to_owned)),
    );
    poll_once_and_leak(cell.wait_for(|s: &String| s.len() > 100));
    cell.modify(|s| s.push_str("blob:7"));
    assert_eq!(
        cell.stats().waiters,
        1,
        "the map wait was satisfied, the other still waits"
    );
    assert!(cell.close());
    assert_eq!(cell.stats().waiters, 0);
    drop(cell);
}

#[test]
fn leaked_wait_outlives_the_cell_without_being_touched() {
    let cell = WatchCell::new(0_u32);
    let waker_calls = Arc::new(AtomicUsize::new(0));
    struct CountingWake(Arc<AtomicUsize>);
    impl std::task::Wake for CountingWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let waker = Waker::from(Arc::new(CountingWake(Arc::clone(&waker_calls))));
    let mut future: Pin<Box<_>> = Box::pin(cell.wait_for(|v| *v == 1));
    assert!(
        future
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    mem::forget(future);
    // The last handle goes away with the node still registered: dropping the
    // list must not touch the node (it only holds pointers).
    drop(cell);
    assert_eq!(waker_calls.load(Ordering::SeqCst), 0);
}

#[test]
fn leaked_index_wait_is_completed_through_the_index_and_the_index_drops_cleanly() {
    let cell = WatchCell::new(0_u64);
    let seqno = cell.index(|v: &u64| *v);
    poll_once_and_leak(seqno.wait_at_least(3));
    poll_once_and_leak(seqno.wait_at_least(100));
    assert_eq!(seqno.waiting(), 2);
    for _ in 0..3 {
        cell.modify(|v| *v += 1);
    }
    // The modifier wrote the key into the leaked node and took it out.
    assert_eq!(seqno.waiting(), 1);
    // The other one stays in the index until close, which completes it.
    assert!(cell.close());
    assert_eq!(seqno.waiting(), 0);
    drop(seqno);
    drop(cell);
}

#[test]
fn leaked_index_wait_outlives_its_index_and_cell_without_being_touched() {
    let cell = WatchCell::new(0_u64);
    let seqno = cell.index(|v: &u64| *v);
    poll_once_and_leak(seqno.wait_at_least(1));
    // The last handle goes with the node registered: the index is dropped,
    // its map holds only pointers, and the node is never touched again.
    drop(seqno);
    cell.modify(|v| *v = 1);
    assert_eq!(cell.stats().waiters, 0);
    drop(cell);
}

#[test]
fn leaked_index_wait_between_two_live_ones_survives_their_cancellation_and_is_completed() {
    let cell = WatchCell::new(0_u64);
    let seqno = cell.index(|v: &u64| *v);
    let mut cx = Context::from_waker(Waker::noop());
    // One threshold, one list: live, leaked, live.
    let mut older = Box::pin(seqno.wait_at_least(1));
    assert!(older.as_mut().poll(&mut cx).is_pending());
    poll_once_and_leak(seqno.wait_at_least(1));
    let mut younger = Box::pin(seqno.wait_at_least(1));
    assert!(younger.as_mut().poll(&mut cx).is_pending());
    assert_eq!(seqno.waiting(), 3);
    // Each cancellation rewrites the leaked node's links, then frees its own.
    drop(older);
    drop(younger);
    assert_eq!(seqno.waiting(), 1);
    // A new wait links after the leaked node, which is now the list's tail;
    // cancelled again, the leaked node is the list's only node.
    let mut newest = Box::pin(seqno.wait_at_least(1));
    assert!(newest.as_mut().poll(&mut cx).is_pending());
    drop(newest);
    let mut last = Box::pin(seqno.wait_at_least(1));
    assert!(last.as_mut().poll(&mut cx).is_pending());
    assert_eq!(seqno.waiting(), 2);
    // The modifier walks the list through the leaked node to the live one.
    cell.modify(|v| *v = 1);
    assert_eq!(seqno.waiting(), 0);
    assert_eq!(last.as_mut().poll(&mut cx), std::task::Poll::Ready(Ok(1)));
    assert_eq!(cell.stats().wakeups, 2);
}
