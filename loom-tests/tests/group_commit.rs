//! Loom models of the caller-driven batcher of the PostgreSQL tables
//! (`GroupCommit`, reached through `leasehold::__loom`), with a fake runner
//! that answers `op * 10`: concurrent callers each get their own output,
//! every operation runs once, at most one batch is in flight, a caller that
//! leaves while queued is not run (or run at most once) without stalling
//! anyone, and a driver dropped mid-statement hands the statement on to
//! another caller of its batch, after which the next batch still starts.
//! A thread blocked forever (a caller nobody answers) fails the model as a
//! deadlock.
//!
//! What is modelled: the batcher's own queue, under the crate's mutex (loom's
//! mutex under `--cfg loom`), and every interleaving of the callers around
//! it. What is not: the `tokio::sync::oneshot` channels a batch answers its
//! callers through. Tokio switches to loom's primitives only when it is
//! itself built for its own tests (`cfg(all(test, loom))`); as a dependency
//! it keeps std's atomics, so under loom each send, receive, close check and
//! wake-up of a channel is one step that loom does not split (its wake-ups
//! still reach loom's `block_on`, so a lost answer is still seen as a
//! deadlock). Tokio checks its channel with loom itself.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test -p leasehold-loom-tests --release --test group_commit`
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use leasehold::__loom::{GroupCommit, Statement};
use loom::future::block_on;
use loom::sync::Mutex;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread::{self, ThreadId};

/// The answer of a caller whose batch was lost (never expected here).
const LOST: u32 = u32::MAX;

/// A caller's call, owned so that it can move to another thread.
type Call = Pin<Box<dyn Future<Output = u32> + Send>>;

/// What the fake runner saw.
#[derive(Default)]
struct Log {
    /// Each batch given to the runner (a statement formed), in order.
    formed: Mutex<Vec<Vec<u32>>>,
    /// Each batch whose statement ran to its end, in order.
    completed: Mutex<Vec<Vec<u32>>>,
    /// Statements formed and not yet finished or dropped.
    in_flight: AtomicUsize,
    /// Statements of several operations finished on another thread than
    /// the one that first polled them: handed on by a driver that left
    /// mid-statement. (A batch of one has nobody to be handed to; the models
    /// start a first one on the main thread and finish it on another.)
    handed_on: AtomicUsize,
}

impl Log {
    fn formed(&self) -> Vec<Vec<u32>> {
        self.formed.lock().unwrap().clone()
    }

    fn completed(&self) -> Vec<Vec<u32>> {
        self.completed.lock().unwrap().clone()
    }

    /// How many times `op` ran to the end of a statement.
    fn runs(&self, op: u32) -> usize {
        self.completed()
            .iter()
            .flatten()
            .filter(|&&o| o == op)
            .count()
    }
}

/// A batcher of at most `max_batch` operations a batch, with the fake runner:
/// it checks that no other statement is in flight, records the batch, and
/// answers `op * 10`; if `yields`, its statement is pending once (waking
/// itself) before it finishes, which gives a driver a point to be dropped at.
fn batcher(max_batch: usize, yields: bool) -> (Arc<GroupCommit<u32, u32>>, Arc<Log>) {
    let log = Arc::new(Log::default());
    let seen = Arc::clone(&log);
    let batcher = GroupCommit::new(
        max_batch,
        || LOST,
        move |ops: Vec<u32>| -> Statement<u32> {
            let before = seen.in_flight.fetch_add(1, Ordering::SeqCst);
            assert_eq!(
                before, 0,
                "a batch {ops:?} formed while another is in flight"
            );
            seen.formed.lock().unwrap().push(ops.clone());
            Box::pin(FakeStatement {
                log: Arc::clone(&seen),
                ops,
                pending: yields,
                first_poller: None,
            })
        },
    );
    (Arc::new(batcher), log)
}

struct FakeStatement {
    log: Arc<Log>,
    ops: Vec<u32>,
    /// Still to return `Pending` once.
    pending: bool,
    first_poller: Option<ThreadId>,
}

impl Future for FakeStatement {
    type Output = Vec<u32>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<u32>> {
        let me = thread::current().id();
        let first = *self.first_poller.get_or_insert(me);
        if std::mem::take(&mut self.pending) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if first != me && self.ops.len() > 1 {
            self.log.handed_on.fetch_add(1, Ordering::SeqCst);
        }
        self.log.completed.lock().unwrap().push(self.ops.clone());
        Poll::Ready(self.ops.iter().map(|op| op * 10).collect())
    }
}

impl Drop for FakeStatement {
    /// Finished or abandoned: no longer in flight.
    fn drop(&mut self) {
        self.log.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `loom::model`, and how many interleavings it explored (shown with
/// `--nocapture`).
fn model(f: impl Fn() + Send + Sync + 'static) {
    let runs = Arc::new(StdAtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    loom::model(move || {
        counted.fetch_add(1, Relaxed);
        f();
    });
    println!("{} interleavings", runs.load(Relaxed));
}

fn call(batcher: &Arc<GroupCommit<u32, u32>>, op: u32) -> Call {
    let batcher = Arc::clone(batcher);
    Box::pin(async move { batcher.submit(op).await })
}

/// Polls `call` once, on this thread.
fn poll_once(call: &mut Call) -> Poll<u32> {
    block_on(std::future::poll_fn(|cx| {
        Poll::Ready(call.as_mut().poll(cx))
    }))
}

/// Every operation the runner was given ran to its end exactly once, in
/// batches of at most `max_batch`, and nothing is left in flight.
fn assert_each_ran_once(log: &Log, ops: &[u32], max_batch: usize) {
    let mut ran: Vec<u32> = log.completed().into_iter().flatten().collect();
    ran.sort_unstable();
    assert_eq!(ran, ops, "batches {:?}", log.completed());
    assert_eq!(
        log.formed(),
        log.completed(),
        "a statement was restarted or lost"
    );
    assert!(log.completed().iter().all(|b| b.len() <= max_batch));
    assert_eq!(log.in_flight.load(Ordering::SeqCst), 0);
}

/// Concurrent callers (two on their own threads, one on the main thread)
/// each get exactly their own output; every operation runs exactly once; at
/// most one batch is in flight at a time (checked by the runner).
fn concurrent_callers_each_get_their_own_output(max_batch: usize, yields: bool) {
    let batched = Arc::new(StdAtomicUsize::new(0));
    let seen = Arc::clone(&batched);
    model(move || {
        let (batcher, log) = batcher(max_batch, yields);
        let callers: Vec<_> = [1, 2]
            .map(|op| {
                let call = call(&batcher, op);
                thread::spawn(move || block_on(call))
            })
            .into();
        assert_eq!(block_on(call(&batcher, 3)), 30);
        for (caller, op) in callers.into_iter().zip([1, 2]) {
            assert_eq!(caller.join().unwrap(), op * 10);
        }
        assert_each_ran_once(&log, &[1, 2, 3], max_batch);
        if log.completed().iter().any(|batch| batch.len() > 1) {
            seen.fetch_add(1, Relaxed);
        }
    });
    if max_batch > 1 {
        assert!(
            batched.load(Relaxed) > 0,
            "no interleaving formed a batch of several operations"
        );
    }
}

#[test]
fn concurrent_callers_each_get_their_own_output_ready_runner() {
    concurrent_callers_each_get_their_own_output(8, false);
}

#[test]
fn concurrent_callers_each_get_their_own_output_yielding_runner() {
    concurrent_callers_each_get_their_own_output(8, true);
}

#[test]
fn concurrent_callers_each_get_their_own_output_in_batches_of_one() {
    concurrent_callers_each_get_their_own_output(1, true);
}

/// A caller queued behind a statement in flight leaves (its future is
/// dropped) while that statement finishes on another thread and a third
/// caller arrives: its operation runs at most once (not at all if it left
/// before its batch formed), and the others still get their outputs.
#[test]
fn a_caller_that_leaves_while_queued_stalls_nobody() {
    static NOT_RUN: StdAtomicUsize = StdAtomicUsize::new(0);
    model(|| {
        let (batcher, log) = batcher(8, true);
        // 1 in flight (its statement started, pending), 2 queued behind it.
        let mut first = call(&batcher, 1);
        assert!(poll_once(&mut first).is_pending());
        let mut leaver = call(&batcher, 2);
        assert!(poll_once(&mut leaver).is_pending());
        assert_eq!(log.formed(), [vec![1]]);

        let driver = thread::spawn(move || block_on(first));
        let leaving = thread::spawn(move || drop(leaver));
        assert_eq!(block_on(call(&batcher, 3)), 30);
        assert_eq!(driver.join().unwrap(), 10);
        leaving.join().unwrap();

        assert_eq!(log.runs(1), 1);
        assert_eq!(log.runs(3), 1);
        let runs = log.runs(2);
        assert!(runs <= 1, "op 2 ran {runs} times");
        if !log.formed().iter().flatten().any(|&op| op == 2) {
            NOT_RUN.fetch_add(1, Relaxed);
        }
        assert_eq!(log.in_flight.load(Ordering::SeqCst), 0);
    });
    assert!(
        NOT_RUN.load(Relaxed) > 0,
        "no interleaving dropped the queued operation before its batch formed"
    );
}

/// The driver of the next batch (2, with 3, and 4 if it queued in time)
/// leaves: its future is polled once (which, if the batch has reached it,
/// starts the statement) and dropped, while the batch before it finishes and
/// the other callers of its batch wait; a fourth caller arrives meanwhile. The statement is handed on, not
/// restarted; the other caller and the fourth get their outputs, so the
/// next batch started.
#[test]
fn a_driver_dropped_mid_statement_hands_it_on() {
    static HANDED_ON: StdAtomicUsize = StdAtomicUsize::new(0);
    model(|| {
        let (batcher, log) = batcher(8, true);
        // 1 in flight (its statement started, pending), 2 and 3 queued: the
        // next batch, which 2 will drive.
        let mut first = call(&batcher, 1);
        assert!(poll_once(&mut first).is_pending());
        let mut driver = call(&batcher, 2);
        assert!(poll_once(&mut driver).is_pending());
        let mut other = call(&batcher, 3);
        assert!(poll_once(&mut other).is_pending());

        let finishing = thread::spawn(move || block_on(first));
        let leaving = thread::spawn(move || {
            let _ = poll_once(&mut driver);
            drop(driver);
        });
        let waiting = thread::spawn(move || block_on(other));
        assert_eq!(block_on(call(&batcher, 4)), 40);
        assert_eq!(finishing.join().unwrap(), 10);
        leaving.join().unwrap();
        assert_eq!(waiting.join().unwrap(), 30);

        for op in [1, 3, 4] {
            assert_eq!(log.runs(op), 1, "op {op} in {:?}", log.completed());
        }
        assert!(log.runs(2) <= 1);
        // Handed on, not restarted: every statement formed ran once (3 never
        // leaves, so each batch has someone to hand it to).
        assert_eq!(log.formed(), log.completed());
        HANDED_ON.fetch_add(log.handed_on.load(Ordering::SeqCst), Relaxed);
        assert_eq!(log.in_flight.load(Ordering::SeqCst), 0);
    });
    assert!(
        HANDED_ON.load(Relaxed) > 0,
        "no interleaving handed a started statement on"
    );
}
