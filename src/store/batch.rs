//! Group commit for the PostgreSQL stores: concurrent operations of one kind
//! sent to the server as one statement (one round trip, one transaction).
//! The batcher itself is generic (the runner is any async function of a
//! batch), so it is also compiled, without any backend, for the loom models.
//!
//! There is no writer task or thread. The first caller to find no batch in
//! flight runs its own operation at once, alone: a lone caller waits for
//! nobody. Callers arriving while a batch is in flight queue; when that
//! batch ends, everything queued (up to a bound) becomes the next batch, and
//! one of its callers — the *driver* — runs it on its own task while the
//! others wait for their answers. So a batch forms only from operations that
//! arrived while a statement was in flight, and there is at most one batch
//! in flight per [`GroupCommit`].
//!
//! # What a caller is promised
//!
//! - Its answer comes from the statement that ran its operation, after that
//!   statement returned (an autocommit statement: committed, or failed as a
//!   whole). Which answer belongs to which caller is the runner's business:
//!   it returns one output per operation, in the order it was given them.
//! - Cancel safety: dropping a waiting caller's future never loses or stalls
//!   anyone else's operation. A queued operation whose caller left before
//!   its batch started is not run. A driver that is dropped mid-statement
//!   hands the statement, as it is, to another caller of the same batch,
//!   who goes on driving it; if no caller of the batch is left, the
//!   statement is dropped (as a single caller's dropped call would be) and
//!   the next batch starts. Either way the batcher moves on: no batch is
//!   left unanswered and nobody waits for a statement that nobody drives.
//! - A runner that panics fails its batch: the driver resumes the panic,
//!   the other callers get the batcher's `lost` output.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use crate::sync::Mutex;

/// What runs a batch: given the operations, in order, yields one output per
/// operation, in the same order.
pub(crate) type Runner<Op, Out> =
    Box<dyn Fn(Vec<Op>) -> BoxFuture<'static, Vec<Out>> + Send + Sync>;

/// Batches the operations of concurrent callers; see the module
/// documentation.
pub(crate) struct GroupCommit<Op: Send + 'static, Out: Send + 'static> {
    inner: Arc<Inner<Op, Out>>,
}

struct Inner<Op: Send + 'static, Out: Send + 'static> {
    queue: Mutex<Queue<Op, Out>>,
    run: Runner<Op, Out>,
    /// The most operations one batch takes.
    max_batch: usize,
    /// The answer of a caller whose batch's runner panicked (or, should it
    /// ever happen, whose batch vanished).
    lost: fn() -> Out,
}

struct Queue<Op: Send + 'static, Out: Send + 'static> {
    /// A batch is in flight (being driven, or handed to its next driver).
    /// While it is, new operations queue; `false` only with `waiting` empty.
    busy: bool,
    waiting: VecDeque<Waiting<Op, Out>>,
}

struct Waiting<Op: Send + 'static, Out: Send + 'static> {
    op: Op,
    reply: oneshot::Sender<Reply<Op, Out>>,
}

enum Reply<Op: Send + 'static, Out: Send + 'static> {
    /// Your operation's outcome.
    Done(Out),
    /// Drive this batch, which holds your operation.
    Drive(Batch<Op, Out>),
}

/// A batch in flight: its statement, and who waits for which output.
/// Dropping it before the statement finished hands it to another of its
/// callers (see the module documentation).
struct Batch<Op: Send + 'static, Out: Send + 'static> {
    inner: Arc<Inner<Op, Out>>,
    /// `None` once finished (or moved out of a husk).
    statement: Option<BoxFuture<'static, std::thread::Result<Vec<Out>>>>,
    /// Where each operation's output goes, in order; `None` for the driver
    /// (who takes its output from the statement) and for callers already
    /// answered.
    replies: Vec<Option<oneshot::Sender<Reply<Op, Out>>>>,
    /// The position of the driver's own operation.
    driver: usize,
}

impl<Op, Out> GroupCommit<Op, Out>
where
    Op: Send + 'static,
    Out: Send + 'static,
{
    /// A batcher whose batches hold at most `max_batch` operations (at
    /// least 1), run by `run`. `lost` is the output of a caller whose batch
    /// could not be run to the end (its runner panicked).
    pub(crate) fn new(max_batch: usize, lost: fn() -> Out, run: Runner<Op, Out>) -> Self {
        GroupCommit {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue {
                    busy: false,
                    waiting: VecDeque::new(),
                }),
                run,
                max_batch: max_batch.max(1),
                lost,
            }),
        }
    }

    /// Runs `op`, alone at once if no batch is in flight, else in the next
    /// batch, and yields its output.
    ///
    /// Cancel safe in the sense of the module documentation: dropping the
    /// future never affects other callers; `op` itself is not run if the
    /// future is dropped while it is queued, and may have run otherwise.
    pub(crate) async fn submit(&self, op: Op) -> Out {
        let (reply, answer) = oneshot::channel();
        let queued = {
            let mut queue = self.inner.queue.lock();
            if queue.busy {
                queue.waiting.push_back(Waiting { op, reply });
                None
            } else {
                queue.busy = true;
                Some(op)
            }
        };
        let Some(op) = queued else {
            return match answer.await {
                Ok(Reply::Done(out)) => out,
                Ok(Reply::Drive(batch)) => batch.drive().await,
                // Every batch answers or hands on each caller it holds; only
                // a batch dropped mid-unwind could fail to.
                Err(_) => (self.inner.lost)(),
            };
        };
        // Nothing in flight: run alone, now.
        Batch::start(Arc::clone(&self.inner), vec![op], vec![None], 0)
            .drive()
            .await
    }
}

impl<Op, Out> Batch<Op, Out>
where
    Op: Send + 'static,
    Out: Send + 'static,
{
    fn start(
        inner: Arc<Inner<Op, Out>>,
        ops: Vec<Op>,
        replies: Vec<Option<oneshot::Sender<Reply<Op, Out>>>>,
        driver: usize,
    ) -> Self {
        let statement = AssertUnwindSafe((inner.run)(ops)).catch_unwind().boxed();
        Batch {
            inner,
            statement: Some(statement),
            replies,
            driver,
        }
    }

    /// Runs the statement to its end, answers the other callers, starts the
    /// next batch and yields the driver's own output.
    async fn drive(mut self) -> Out {
        let outcome = self
            .statement
            .as_mut()
            .expect("a batch is driven until it finishes")
            .await;
        // Finished: from here on, dropping `self` hands nothing on.
        self.statement = None;
        let replies = std::mem::take(&mut self.replies);
        let inner = Arc::clone(&self.inner);
        let own = match outcome {
            Ok(outs) => {
                debug_assert_eq!(outs.len(), replies.len(), "one output per operation");
                let mut own = None;
                for (i, (out, reply)) in outs.into_iter().zip(replies).enumerate() {
                    if i == self.driver {
                        own = Some(out);
                    } else if let Some(reply) = reply {
                        // A caller that left is simply not answered.
                        let _ = reply.send(Reply::Done(out));
                    }
                }
                Ok(own.unwrap_or_else(inner.lost))
            }
            Err(panic) => {
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Reply::Done((inner.lost)()));
                }
                Err(panic)
            }
        };
        Inner::next_batch(&inner);
        match own {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl<Op: Send + 'static, Out: Send + 'static> Drop for Batch<Op, Out> {
    fn drop(&mut self) {
        // Dropped mid-statement (its driver's future was dropped): the
        // statement goes on with another caller of the batch.
        let Some(mut statement) = self.statement.take() else {
            return;
        };
        let mut replies = std::mem::take(&mut self.replies);
        let inner = Arc::clone(&self.inner);
        for next in 0..replies.len() {
            let Some(reply) = replies[next].take() else {
                continue;
            };
            if reply.is_closed() {
                continue;
            }
            let batch = Batch {
                inner: Arc::clone(&inner),
                statement: Some(statement),
                replies,
                driver: next,
            };
            match reply.send(Reply::Drive(batch)) {
                Ok(()) => return,
                // It left just now: take the batch back, leaving a husk
                // whose drop hands nothing on, and try the next caller.
                Err(Reply::Drive(mut husk)) => {
                    statement = husk.statement.take().expect("sent unfinished");
                    replies = std::mem::take(&mut husk.replies);
                }
                Err(Reply::Done(_)) => unreachable!("a drive was sent"),
            }
        }
        // Nobody of this batch is left to answer: drop the statement, as a
        // lone caller's dropped call would, and let the next batch start.
        drop(statement);
        Inner::next_batch(&inner);
    }
}

impl<Op: Send + 'static, Out: Send + 'static> Inner<Op, Out> {
    /// Called when a batch has ended: hands the queued operations, as the
    /// next batch, to one of their callers to drive, or marks the batcher
    /// idle if nothing is queued.
    fn next_batch(this: &Arc<Self>) {
        let taken: Vec<Waiting<Op, Out>> = {
            let mut queue = this.queue.lock();
            // Operations whose callers left before their batch started are
            // not run.
            queue.waiting.retain(|waiting| !waiting.reply.is_closed());
            if queue.waiting.is_empty() {
                queue.busy = false;
                return;
            }
            let n = queue.waiting.len().min(this.max_batch);
            queue.waiting.drain(..n).collect()
        };
        let (ops, mut replies): (Vec<Op>, Vec<_>) = taken
            .into_iter()
            .map(|waiting| (waiting.op, Some(waiting.reply)))
            .unzip();
        // The first caller drives; the batch is built outside the lock.
        let first = replies[0].take().expect("just queued");
        let batch = Batch::start(Arc::clone(this), ops, replies, 0);
        // If that caller left meanwhile, dropping the unpolled batch hands
        // it to the next of its callers or, if none is left, comes back
        // here for the operations queued after it.
        let _ = first.send(Reply::Drive(batch));
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;

    use tokio::sync::Semaphore;

    use super::*;

    /// A runner that records each batch it is given, waits for a permit of
    /// `gate` (one per batch), and answers `op * 10`.
    struct Fake {
        batches: Arc<Mutex<Vec<Vec<u32>>>>,
        gate: Arc<Semaphore>,
        batcher: GroupCommit<u32, u32>,
    }

    impl Fake {
        fn new(max_batch: usize) -> Self {
            let batches = Arc::new(Mutex::new(Vec::new()));
            let gate = Arc::new(Semaphore::new(0));
            let (seen, open) = (Arc::clone(&batches), Arc::clone(&gate));
            let batcher = GroupCommit::new(
                max_batch,
                || u32::MAX,
                Box::new(move |ops: Vec<u32>| {
                    let (seen, open) = (Arc::clone(&seen), Arc::clone(&open));
                    Box::pin(async move {
                        seen.lock().push(ops.clone());
                        open.acquire().await.unwrap().forget();
                        ops.into_iter().map(|op| op * 10).collect()
                    })
                }),
            );
            Fake {
                batches,
                gate,
                batcher,
            }
        }

        fn submit(&self, op: u32) -> Pin<Box<dyn Future<Output = u32> + Send + '_>> {
            Box::pin(self.batcher.submit(op))
        }

        fn batches(&self) -> Vec<Vec<u32>> {
            self.batches.lock().clone()
        }
    }

    #[tokio::test]
    async fn a_lone_operation_runs_at_once_in_a_batch_of_its_own() {
        let fake = Fake::new(8);
        let mut call = fake.submit(1);
        assert!(futures::poll!(call.as_mut()).is_pending());
        assert_eq!(fake.batches(), [vec![1]], "started on the first poll");
        fake.gate.add_permits(1);
        assert_eq!(call.await, 10);
        // Idle again: the next one runs at once too.
        let mut call = fake.submit(2);
        assert!(futures::poll!(call.as_mut()).is_pending());
        assert_eq!(fake.batches(), [vec![1], vec![2]]);
        fake.gate.add_permits(1);
        assert_eq!(call.await, 20);
    }

    #[tokio::test]
    async fn operations_arriving_in_flight_form_the_next_batches_in_order_and_bounded() {
        let fake = Fake::new(3);
        let mut calls: Vec<_> = (1..=6).map(|op| fake.submit(op)).collect();
        for call in &mut calls {
            assert!(futures::poll!(call.as_mut()).is_pending());
        }
        assert_eq!(fake.batches(), [vec![1]], "the others wait for the first");
        fake.gate.add_permits(3);
        let outs = futures::future::join_all(calls).await;
        assert_eq!(
            outs,
            [10, 20, 30, 40, 50, 60],
            "each caller gets its own output"
        );
        assert_eq!(fake.batches(), [vec![1], vec![2, 3, 4], vec![5, 6]]);
    }

    #[tokio::test]
    async fn a_dropped_driver_hands_its_running_statement_to_another_caller() {
        let fake = Fake::new(8);
        let mut calls: Vec<_> = (1..=4).map(|op| Some(fake.submit(op))).collect();
        for call in calls.iter_mut().flatten() {
            assert!(futures::poll!(call.as_mut()).is_pending());
        }
        fake.gate.add_permits(1);
        assert_eq!(calls[0].take().unwrap().await, 10);
        // Caller 2 drives the batch [2, 3, 4]; it starts, then 2 leaves.
        for call in calls.iter_mut().flatten() {
            assert!(futures::poll!(call.as_mut()).is_pending());
        }
        assert_eq!(fake.batches(), [vec![1], vec![2, 3, 4]]);
        calls[1] = None;
        // A caller that arrives meanwhile queues behind the batch.
        let mut late = fake.submit(5);
        assert!(futures::poll!(late.as_mut()).is_pending());
        fake.gate.add_permits(2);
        assert_eq!(calls[2].take().unwrap().await, 30);
        assert_eq!(calls[3].take().unwrap().await, 40);
        assert_eq!(late.await, 50);
        // The batch ran once: handed on, not restarted.
        assert_eq!(fake.batches(), [vec![1], vec![2, 3, 4], vec![5]]);
    }

    #[tokio::test]
    async fn a_caller_that_leaves_before_its_batch_starts_is_not_run() {
        let fake = Fake::new(8);
        let mut calls: Vec<_> = (1..=4).map(|op| Some(fake.submit(op))).collect();
        for call in calls.iter_mut().flatten() {
            assert!(futures::poll!(call.as_mut()).is_pending());
        }
        calls[2] = None;
        fake.gate.add_permits(2);
        assert_eq!(calls[0].take().unwrap().await, 10);
        assert_eq!(calls[1].take().unwrap().await, 20);
        assert_eq!(calls[3].take().unwrap().await, 40);
        assert_eq!(fake.batches(), [vec![1], vec![2, 4]]);
    }

    #[tokio::test]
    async fn when_every_caller_of_a_batch_leaves_the_next_batch_still_runs() {
        let fake = Fake::new(2);
        let mut calls: Vec<_> = (1..=5).map(|op| Some(fake.submit(op))).collect();
        for call in calls.iter_mut().flatten() {
            assert!(futures::poll!(call.as_mut()).is_pending());
        }
        // The lone driver leaves mid-statement: [2, 3] is handed to 2.
        calls[0] = None;
        assert_eq!(fake.batches(), [vec![1]]);
        // Both callers of [2, 3] leave before it was polled: nobody drives
        // it; [4, 5] starts instead.
        calls[1] = None;
        calls[2] = None;
        fake.gate.add_permits(1);
        assert_eq!(calls[3].take().unwrap().await, 40);
        assert_eq!(calls[4].take().unwrap().await, 50);
        assert_eq!(fake.batches(), [vec![1], vec![4, 5]]);
    }

    #[tokio::test]
    async fn a_panicking_runner_fails_its_own_batch_only() {
        let batcher = GroupCommit::new(
            8,
            || u32::MAX,
            Box::new(|ops: Vec<u32>| {
                Box::pin(async move {
                    tokio::task::yield_now().await;
                    assert!(!ops.contains(&3), "op 3 panics its batch");
                    ops.into_iter().map(|op| op * 10).collect()
                })
            }),
        );
        let mut first = Box::pin(batcher.submit(1));
        let mut rest: Vec<_> = [2, 3, 4].map(|op| Box::pin(batcher.submit(op))).into();
        assert!(futures::poll!(first.as_mut()).is_pending());
        for call in &mut rest {
            assert!(futures::poll!(call.as_mut()).is_pending());
        }
        assert_eq!(first.await, 10);
        let driver = rest.remove(0);
        let panicked = AssertUnwindSafe(driver).catch_unwind().await;
        assert!(panicked.is_err(), "the driver resumes the panic");
        for call in rest {
            assert_eq!(call.await, u32::MAX, "the others get the lost output");
        }
        // And the batcher goes on.
        assert_eq!(batcher.submit(5).await, 50);
    }
}
