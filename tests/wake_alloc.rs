//! A bulk wake-up (one modification, `close`, or a status publication
//! completing N waiters at once) allocates nothing once its thread has woken
//! as many before: the buffer the wake-ups are collected in, under the lock,
//! is kept per thread and reused. Only buffers up to a bound are kept (a
//! thread that once woke 100,000 waiters does not hold their buffer for
//! good). And `close` frees the cell's waiter list, which a closed cell never
//! uses again.
//!
//! Counted with a global allocator that counts each thread's allocations;
//! the waits are polled by hand with a no-op waker, so nothing but the
//! crate allocates on the measuring thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Waker};

use leasehold::WatchCell;
use leasehold::status::{self, SyncOutcome};

struct Counting;

thread_local! {
    /// Allocations made by this thread (no destructor: safe to touch from
    /// the allocator).
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Bytes this thread freed (likewise).
    static FREED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the count
// is a thread-local without a destructor, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = FREED.try_with(|f| f.set(f.get() + layout.size()));
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations made by this thread while `f` runs.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = allocations();
    f();
    allocations() - before
}

type Wait = Pin<Box<dyn Future<Output = ()>>>;

/// Polls each wait once: they must all register.
fn register(waits: &mut [Wait]) {
    let mut cx = Context::from_waker(Waker::noop());
    for wait in waits {
        assert!(wait.as_mut().poll(&mut cx).is_pending());
    }
}

/// Polls each wait once more: they must all be done.
fn finish(waits: &mut [Wait]) {
    let mut cx = Context::from_waker(Waker::noop());
    for wait in waits {
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }
}

/// `n` predicate waits on `cell` for an odd value, registered.
fn odd_waits(cell: &WatchCell<u64>, n: usize) -> Vec<Wait> {
    let mut waits: Vec<Wait> = (0..n)
        .map(|_| {
            let cell = cell.clone();
            Box::pin(async move { cell.wait_for(|v| v % 2 == 1).await.unwrap() }) as Wait
        })
        .collect();
    register(&mut waits);
    waits
}

#[test]
fn a_modification_waking_many_allocates_nothing_the_second_time() {
    let cell = WatchCell::new(0_u64);
    let mut first = odd_waits(&cell, 1000);
    let allocated = allocations_in(|| cell.modify(|v| *v = 1));
    assert!(allocated > 0, "the first bulk wake-up allocates its buffer");
    finish(&mut first);

    cell.modify(|v| *v = 2);
    let mut second = odd_waits(&cell, 1000);
    let allocated = allocations_in(|| cell.modify(|v| *v = 3));
    assert_eq!(allocated, 0, "the second one reuses it");
    finish(&mut second);
}

#[test]
fn a_close_waking_many_allocates_nothing_after_a_first_bulk_wake_up() {
    let warm_up = WatchCell::new(0_u64);
    let mut waits = odd_waits(&warm_up, 1000);
    warm_up.modify(|v| *v = 1);
    finish(&mut waits);

    let cell = WatchCell::new(0_u64);
    let mut waits: Vec<Wait> = (0..1000)
        .map(|_| {
            let cell = cell.clone();
            Box::pin(async move {
                cell.wait_for(|v| *v > 0).await.unwrap_err();
            }) as Wait
        })
        .collect();
    register(&mut waits);
    assert_eq!(allocations_in(|| assert!(cell.close())), 0);
    finish(&mut waits);
}

#[test]
fn close_frees_the_waiter_list() {
    let n = 1000;
    let cell = WatchCell::new(0_u64);
    let waits = odd_waits(&cell, n);
    let before = FREED.with(Cell::get);
    let allocated = allocations_in(|| assert!(cell.close()));
    let freed = FREED.with(Cell::get) - before;
    // The list holds at least a pointer per waiter; the wake buffer (the
    // one allocation) is kept, not freed.
    assert!(allocated <= 1);
    assert!(
        freed >= n * size_of::<usize>(),
        "close freed {freed} bytes, less than the list of {n} waiters"
    );
    // Completed as closed: dropped without touching the freed list.
    drop(waits);
    assert_eq!(cell.stats().waiters, 0);
}

#[test]
fn a_status_publication_to_many_allocates_nothing_the_second_time() {
    for round in 0..2 {
        let (publisher, receiver) = status::channel::<SyncOutcome>();
        let mut waits: Vec<Wait> = (0..1000)
            .map(|_| {
                let receiver = receiver.clone();
                Box::pin(async move {
                    assert_eq!(receiver.done().await, SyncOutcome::Success);
                }) as Wait
            })
            .collect();
        register(&mut waits);
        let allocated = allocations_in(|| publisher.publish(SyncOutcome::Success));
        if round == 1 {
            assert_eq!(allocated, 0, "the second publication reuses the buffer");
        }
        finish(&mut waits);
    }
}

#[test]
fn a_buffer_past_the_bound_is_freed_not_kept() {
    // More waiters than the kept buffer may hold: each round allocates.
    let n = 20_000;
    for _ in 0..2 {
        let cell = WatchCell::new(0_u64);
        let mut waits = odd_waits(&cell, n);
        let allocated = allocations_in(|| cell.modify(|v| *v = 1));
        assert!(allocated > 0, "a buffer of {n} wake-ups is not kept");
        finish(&mut waits);
    }
    // A smaller one still is.
    let cell = WatchCell::new(0_u64);
    let mut waits = odd_waits(&cell, 1000);
    cell.modify(|v| *v = 1);
    finish(&mut waits);
    let cell = WatchCell::new(0_u64);
    let mut waits = odd_waits(&cell, 1000);
    assert_eq!(allocations_in(|| cell.modify(|v| *v = 1)), 0);
    finish(&mut waits);
}
