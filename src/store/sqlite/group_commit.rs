//! Group commit: the write path of the SQLite stores.
//!
//! One writer thread per store handle owns the write connection. A caller
//! queues its operation and waits on a oneshot; the writer takes everything
//! queued, runs it in one `BEGIN IMMEDIATE … COMMIT` (one fsync under
//! `synchronous = FULL`, however many operations), and only then answers
//! each caller. Batches form only from operations that arrived while a
//! commit was running, so a lone operation is committed at once: two thread
//! hops (caller → writer, writer → caller), no waiting for company.
//!
//! Concurrent writers are a different matter. When a batch of `k > 1`
//! callers is answered, they come back with their next writes one by one;
//! a writer that started a commit on the first to arrive would commit a
//! batch of one, while the other `k - 1` wait a whole fsync for the next
//! (measured: over half the batches held a single write at 32 writers). So
//! after a batch of `k`, the writer gathers: it starts once `k` writes are
//! queued, or after half the last commit's duration (at most
//! [`MAX_GATHER`]), whichever comes first — PostgreSQL's `commit_delay`
//! with `commit_siblings`, sized by what the last commit cost. A lone
//! writer (batches of one) never waits.
//!
//! Where a commit does not sync (`synchronous = NORMAL`), a lone operation
//! does not even take the hops: if nothing is queued and the connection is
//! free, the caller runs it inline (tens of microseconds), without waiting
//! for another process's write lock (it hands the operation to the writer
//! instead) and without running WAL checkpoints (the writer does those, once
//! the WAL holds [`CHECKPOINT_FRAMES`] frames, as SQLite's automatic
//! checkpoint would).
//!
//! # What a batch keeps
//!
//! - Each operation of a batch runs in its own `SAVEPOINT`, in the order the
//!   operations were queued, all its statements in a row: an operation's
//!   conditional updates see the effects of the operations before it, as if
//!   each had been its own transaction, so a fenced commit and a claim of
//!   one entry still conflict on its row and exactly one wins.
//! - An operation that fails (an error, or a panic, caught on the writer
//!   and resumed in the caller) rolls back to its savepoint: it fails
//!   alone and leaves nothing visible.
//! - An operation is answered only after the `COMMIT` that contains it
//!   returned. If the `COMMIT` fails, or SQLite rolls the whole transaction
//!   back after an I/O error, every operation of the batch that had
//!   succeeded gets the error ([`Outcome::NotCommitted`]).

use std::any::Any;
use std::cell::Cell;
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

/// The most operations one transaction takes: bounds the latency the last
/// one of a large queue pays.
const MAX_BATCH: usize = 1024;

/// How large the WAL may grow, in frames (pages), before the writer
/// checkpoints it: SQLite's own automatic checkpoint, which is turned off on
/// the write connection so that an inline operation never pays for a
/// checkpoint. Keep the WAL short: appending a frame to the WAL index probes
/// past every earlier frame of the same page, so a log that rewrites the
/// same few pages pays per commit in proportion to the WAL's length.
const CHECKPOINT_FRAMES: i32 = 1000;

thread_local! {
    /// The WAL's size in frames after the last commit on this thread, set
    /// by [`note_wal_size`] (SQLite calls its WAL hook on the thread that
    /// committed, before the commit returns).
    static WAL_FRAMES: Cell<i32> = const { Cell::new(0) };
}

/// The write connection's WAL hook: notes the WAL's size for the thread
/// that just committed.
fn note_wal_size(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(frames);
    Ok(())
}

/// Commits `tx`, answering whether the WAL is now due for a checkpoint.
fn commit(tx: Transaction<'_>) -> (rusqlite::Result<()>, bool) {
    WAL_FRAMES.set(0);
    let committed = tx.commit();
    (committed, WAL_FRAMES.get() >= CHECKPOINT_FRAMES)
}

/// The longest the writer waits for the callers of its last batch to come
/// back before it starts the next (see the module documentation).
const MAX_GATHER: Duration = Duration::from_micros(500);

/// What became of one queued operation.
pub(crate) enum Outcome<T, E> {
    /// The operation ran: `Ok` is committed, `Err` left nothing behind.
    Done(Result<T, E>),
    /// The operation never ran: its batch's transaction could not start
    /// (e.g. another process held the write lock past the busy timeout).
    NotRun(rusqlite::Error),
    /// The operation ran and succeeded, but its batch did not commit:
    /// `COMMIT` failed (it may still have landed) or SQLite rolled the
    /// transaction back after an I/O error.
    NotCommitted(rusqlite::Error),
    /// The operation panicked; its savepoint was rolled back. Resume the
    /// panic in the caller.
    Panicked(Box<dyn Any + Send>),
    /// The writer thread is gone: the operation's fate is unknown.
    WriterGone,
}

/// The write side of one store handle. Dropping it lets the writer thread
/// finish what is queued, close the connection and exit, and waits for
/// that: once a store handle is gone, so is its hold on the file.
pub(crate) struct GroupCommit {
    inner: Arc<Inner>,
    writer: Option<std::thread::JoinHandle<()>>,
}

struct Inner {
    conn: Mutex<Connection>,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Whether a lone operation may run on the caller's thread.
    inline: bool,
    busy_timeout: Duration,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Box<dyn Job>>,
    /// Every handle is gone: finish the queue and exit.
    closed: bool,
    /// The writer thread has exited (or never started): refuse new jobs.
    dead: bool,
    /// An inline commit left the WAL at [`CHECKPOINT_FRAMES`] or more.
    checkpoint_due: bool,
    /// While the writer gathers a batch: how many jobs it waits for (a
    /// caller whose job reaches that count wakes it). 0: not gathering.
    gather: usize,
}

impl GroupCommit {
    /// Starts the writer thread for `conn`, the store's write connection
    /// (opened with `busy_timeout`). `inline`: a lone operation may run on
    /// the caller's thread; pass it only where a commit does not fsync.
    pub(crate) fn start(
        conn: Connection,
        busy_timeout: Duration,
        inline: bool,
        name: &str,
    ) -> std::io::Result<Self> {
        // The writer checkpoints; the inline path must never. (The pragma
        // would replace the hook: it comes first.)
        let _ = conn.execute_batch("PRAGMA wal_autocheckpoint = 0");
        conn.wal_hook(Some(note_wal_size));
        let inner = Arc::new(Inner {
            conn: Mutex::new(conn),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            inline,
            busy_timeout,
        });
        let serving = Arc::clone(&inner);
        let writer = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || serving.serve())?;
        Ok(GroupCommit {
            inner,
            writer: Some(writer),
        })
    }

    /// Runs `op` in a batch transaction and yields its outcome once the
    /// batch has committed. Runs `op` inline, before returning, when the
    /// store allows it and nothing else is writing.
    ///
    /// The returned future only waits: dropping it does not cancel the
    /// operation, whose outcome is then lost.
    pub(crate) fn submit<T, E, F>(
        &self,
        op: F,
    ) -> impl Future<Output = Outcome<T, E>> + use<T, E, F>
    where
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Op { op, reply });
        if let Err(job) = self.inner.try_inline(job) {
            self.inner.enqueue(job);
        }
        async move { answer.await.unwrap_or(Outcome::WriterGone) }
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.inner.queue.lock().closed = true;
        self.inner.wake.notify_one();
        if let Some(writer) = self.writer.take() {
            // Not on the writer itself (an operation that held the last
            // handle): it exits once it returns from that operation.
            if writer.thread().id() != std::thread::current().id() {
                let _ = writer.join();
            }
        }
    }
}

impl Inner {
    fn enqueue(&self, job: Box<dyn Job>) {
        let mut queue = self.queue.lock();
        if queue.dead {
            drop(queue);
            drop(job); // its caller sees `WriterGone`
            return;
        }
        queue.jobs.push_back(job);
        // Wake the writer only when it has something to do: the first job
        // (it is idle), or the last one it gathers for.
        let wake = queue.jobs.len() == 1 || (queue.gather > 0 && queue.jobs.len() >= queue.gather);
        drop(queue);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Runs `job` on this thread if inline runs are allowed, nothing is
    /// queued, the connection is free and the write lock can be had without
    /// waiting; otherwise hands it back.
    fn try_inline(&self, job: Box<dyn Job>) -> Result<(), Box<dyn Job>> {
        if !self.inline || !self.queue.lock().jobs.is_empty() {
            return Err(job);
        }
        let Some(conn) = self.conn.try_lock() else {
            return Err(job);
        };
        // Another process's write lock is waited for on the writer thread,
        // never on the caller's (a runtime worker, most likely).
        let _ = conn.busy_timeout(Duration::ZERO);
        let begun = Transaction::new_unchecked(&conn, TransactionBehavior::Immediate);
        let _ = conn.busy_timeout(self.busy_timeout);
        let Ok(tx) = begun else {
            return Err(job);
        };
        if run_transaction(tx, &mut std::iter::once(job).peekable(), true) {
            self.queue.lock().checkpoint_due = true;
            self.wake.notify_one();
        }
        Ok(())
    }

    /// The writer thread: batch after batch until every handle is gone.
    fn serve(self: Arc<Self>) {
        // Refuses new jobs and fails queued ones if this thread ends for any
        // reason, so no caller waits for a writer that is not there.
        struct Exit<'a>(&'a Inner);
        impl Drop for Exit<'_> {
            fn drop(&mut self) {
                let mut queue = self.0.queue.lock();
                queue.dead = true;
                let orphans = std::mem::take(&mut queue.jobs);
                drop(queue);
                drop(orphans);
            }
        }
        let _exit = Exit(&self);
        // The size of the last batch, and how long its commit took.
        let mut last_batch = 0_usize;
        let mut last_commit = Duration::ZERO;
        loop {
            let (batch, mut checkpoint) = {
                let mut queue = self.queue.lock();
                while queue.jobs.is_empty() && !queue.checkpoint_due && !queue.closed {
                    self.wake.wait(&mut queue);
                }
                if queue.jobs.is_empty() && queue.closed {
                    return;
                }
                if last_batch > 1
                    && !queue.jobs.is_empty()
                    && queue.jobs.len() < last_batch
                    && !queue.closed
                {
                    // The callers just answered are coming back: gather them.
                    let until = std::time::Instant::now() + (last_commit / 2).min(MAX_GATHER);
                    queue.gather = last_batch;
                    while queue.jobs.len() < last_batch && !queue.closed {
                        if self.wake.wait_until(&mut queue, until).timed_out() {
                            break;
                        }
                    }
                    queue.gather = 0;
                }
                let n = queue.jobs.len().min(MAX_BATCH);
                let batch: Vec<_> = queue.jobs.drain(..n).collect();
                (batch, std::mem::take(&mut queue.checkpoint_due))
            };
            let conn = self.conn.lock();
            let started = std::time::Instant::now();
            last_batch = batch.len();
            let mut jobs = batch.into_iter().peekable();
            while jobs.peek().is_some() {
                match Transaction::new_unchecked(&conn, TransactionBehavior::Immediate) {
                    Ok(tx) => {
                        let single = jobs.len() == 1;
                        checkpoint |= run_transaction(tx, &mut jobs, single);
                    }
                    Err(error) => {
                        for job in jobs.by_ref() {
                            job.not_run(duplicate(&error));
                        }
                    }
                }
            }
            last_commit = started.elapsed();
            if checkpoint {
                // PASSIVE: never waits for readers or writers; a checkpoint
                // that cannot finish now is retried after later commits.
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        }
    }
}

/// Runs jobs from `jobs` in `tx` and commits; answers each. Stops early,
/// leaving the rest in `jobs`, if SQLite rolled the transaction back on its
/// own. `single`: `jobs` holds exactly one job, which then needs no
/// savepoint of its own. Returns whether the WAL is due for a checkpoint.
fn run_transaction(
    tx: Transaction<'_>,
    jobs: &mut std::iter::Peekable<impl ExactSizeIterator<Item = Box<dyn Job>>>,
    single: bool,
) -> bool {
    if single {
        let job = jobs.next().expect("one job");
        let (ok, answer) = job.run(&tx);
        if !ok {
            drop(tx); // rolls back
            answer.send(Ok(()));
            return false;
        }
        let (committed, checkpoint) = commit(tx);
        answer.send(committed.as_ref().map(|_| ()));
        return checkpoint;
    }
    let mut ran: Vec<Box<dyn Answer>> = Vec::with_capacity(jobs.len());
    for job in jobs.by_ref() {
        if let Err(error) = savepoint(&tx, "SAVEPOINT leasehold_op") {
            job.not_run(duplicate(&error));
            abandon(tx, ran, &error);
            return false;
        }
        let (ok, answer) = job.run(&tx);
        ran.push(answer);
        if tx.is_autocommit() {
            // An I/O error, a full disk: SQLite rolled everything back.
            abandon(tx, ran, &aborted());
            return false;
        }
        let end = if ok {
            savepoint(&tx, "RELEASE leasehold_op")
        } else {
            savepoint(&tx, "ROLLBACK TO leasehold_op")
                .and_then(|()| savepoint(&tx, "RELEASE leasehold_op"))
        };
        if let Err(error) = end {
            abandon(tx, ran, &error);
            return false;
        }
    }
    let (committed, checkpoint) = commit(tx);
    for answer in ran {
        answer.send(committed.as_ref().map(|_| ()));
    }
    checkpoint
}

/// Rolls `tx` back and tells every job that ran in it.
fn abandon(tx: Transaction<'_>, ran: Vec<Box<dyn Answer>>, error: &rusqlite::Error) {
    drop(tx);
    for answer in ran {
        answer.send(Err(error));
    }
}

fn savepoint(tx: &Transaction<'_>, sql: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The error a job of a transaction that SQLite rolled back gets.
fn aborted() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
        Some(
            "the batch's transaction was rolled back after an I/O error of another operation"
                .into(),
        ),
    )
}

/// A copy of `error` for each job of a batch (the driver's errors do not
/// clone); keeps SQLite's code, by which errors are classified.
fn duplicate(error: &rusqlite::Error) -> rusqlite::Error {
    match error {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// A queued operation, its types erased.
trait Job: Send {
    /// Runs the operation in `tx`; `false` if its effects must be rolled
    /// back. The answer waits for the transaction's fate.
    fn run(self: Box<Self>, tx: &Transaction<'_>) -> (bool, Box<dyn Answer>);

    /// Answers without running: the transaction could not start.
    fn not_run(self: Box<Self>, error: rusqlite::Error);
}

/// The answer to a job that ran, sent once its transaction ended.
trait Answer: Send {
    fn send(self: Box<Self>, committed: Result<(), &rusqlite::Error>);
}

struct Op<F, T, E> {
    op: F,
    reply: oneshot::Sender<Outcome<T, E>>,
}

struct Ran<T, E> {
    result: Result<Result<T, E>, Box<dyn Any + Send>>,
    reply: oneshot::Sender<Outcome<T, E>>,
}

impl<F, T, E> Job for Op<F, T, E>
where
    F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send,
    T: Send + 'static,
    E: Send + 'static,
{
    fn run(self: Box<Self>, tx: &Transaction<'_>) -> (bool, Box<dyn Answer>) {
        let Op { op, reply } = *self;
        // A panic is the operation's own failure: caught here, so the
        // writer thread lives on, and resumed in the caller.
        let result = catch_unwind(AssertUnwindSafe(|| op(tx)));
        let ok = matches!(result, Ok(Ok(_)));
        (ok, Box::new(Ran { result, reply }))
    }

    fn not_run(self: Box<Self>, error: rusqlite::Error) {
        let _ = self.reply.send(Outcome::NotRun(error));
    }
}

impl<T: Send, E: Send> Answer for Ran<T, E> {
    fn send(self: Box<Self>, committed: Result<(), &rusqlite::Error>) {
        let outcome = match (self.result, committed) {
            (Err(panic), _) => Outcome::Panicked(panic),
            // Rolled back to its savepoint: nothing of it could land.
            (Ok(Err(error)), _) => Outcome::Done(Err(error)),
            (Ok(Ok(value)), Ok(())) => Outcome::Done(Ok(value)),
            (Ok(Ok(_)), Err(error)) => Outcome::NotCommitted(duplicate(error)),
        };
        let _ = self.reply.send(outcome);
    }
}
