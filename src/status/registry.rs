//! [`SyncRegistry`]: one in-flight job per key, any number of waiters.

use std::any::Any;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use super::{CancellationToken, Outcome, SyncOutcome, SyncPublisher, SyncReceiver, channel};
use crate::sync::{Arc, Mutex};

/// Deduplicates in-flight syncs by key: the first [`start`](Self::start) of
/// a key spawns its job, every later one until the job finishes subscribes
/// to the same outcome.
///
/// Pick it over a `HashMap<K, watch::Receiver>` you maintain by hand: the
/// job's publication of its outcome and the removal of its key are **one
/// atomic step**, so there is no window in which a caller starts a
/// duplicate job (key already gone, outcome not yet published) or attaches
/// to a job that has finished (outcome published, key still there). A job
/// that panics publishes [`Outcome::panicked`] (`Failed` with the panic
/// message) and frees its key; a job that is dropped unfinished (aborted, or
/// its runtime shut down) publishes [`Outcome::abandoned`] (`Cancelled`).
///
/// Each job receives a [`CancellationToken`] (tokio-util's), cancelled by
/// [`cancel`](Self::cancel), [`cancel_where`](Self::cancel_where) or
/// [`cancel_all`](Self::cancel_all). It is a child of the registry's own
/// token, which in turn can be a child of yours
/// ([`with_parent_token`](Self::with_parent_token)): cancelling your
/// service's shutdown token cancels every job. Cancellation is cooperative:
/// the job stays registered under its key until it publishes (a `start` in
/// the meantime attaches to it), and the cancelling caller gets receivers to
/// wait for exactly that.
///
/// Dropping the registry cancels every job still in flight; the jobs run on
/// until they publish, and their receivers stay valid.
///
/// To run jobs on something other than the current tokio runtime, use
/// [`claim`](Self::claim) and publish through the [`KeyedPublisher`] it
/// hands out.
///
/// # Examples
///
/// ```
/// use leasehold::status::{SyncOutcome, SyncRegistry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let syncs = SyncRegistry::new();
/// let first = syncs.start("blob-7", |_cancel| async { SyncOutcome::Success });
/// // Before the job finishes, a second start joins it.
/// let second = syncs.start("blob-7", |_cancel| async { unreachable!("runs once") });
/// assert!(first.is_started() && second.is_joined());
/// assert!(first.receiver().same_channel(second.receiver()));
/// assert_eq!(second.into_receiver().done().await, SyncOutcome::Success);
/// assert_eq!(syncs.in_flight(), 0);
/// # }
/// ```
pub struct SyncRegistry<K, O = SyncOutcome>
where
    K: Eq + Hash,
    O: Outcome,
{
    jobs: Arc<Jobs<K, O>>,
    /// The parent of every job's token.
    root: CancellationToken,
}

/// The in-flight jobs, shared by the registry and every job's publisher.
///
/// **Invariant**: a key is in `map` iff its job's status is `Pending`.
/// Both halves change together, under the `map` lock: an entry is inserted
/// with a fresh, pending channel ([`SyncRegistry::claim`]), and removed in
/// the same critical section that publishes its outcome
/// ([`KeyedPublisher::finish`]). Nothing else inserts, removes, or publishes.
/// Lock order: `map`, then a status cell; never the reverse.
///
/// No user code runs under `map`: publication defers its wake-ups
/// ([`WakeList`](crate::watch_cell::WakeList)) until `map` is released, and
/// cancellation collects the jobs under `map` and cancels them after it, so a
/// waker or predicate that calls back into the registry cannot deadlock.
struct Jobs<K, O> {
    map: Mutex<HashMap<K, Job<O>>>,
}

struct Job<O> {
    status: SyncReceiver<O>,
    cancel: CancellationToken,
}

/// What [`SyncRegistry::claim`] found under a key.
#[derive(Debug)]
pub enum Claim<K, O = SyncOutcome>
where
    K: Eq + Hash,
    O: Outcome,
{
    /// A job is in flight under the key: here is a receiver of its outcome.
    Attached(SyncReceiver<O>),
    /// The key was free and is now yours: run the job and publish through
    /// this publisher, which frees the key.
    Owner(KeyedPublisher<K, O>),
}

/// What [`SyncRegistry::start`] did: started the job, or joined the job in
/// flight under the key. Either way it carries a receiver of the outcome of
/// the job that runs.
#[derive(Debug)]
pub enum Start<O = SyncOutcome> {
    /// The key was free: the job was spawned, and this receives its outcome.
    Started(SyncReceiver<O>),
    /// A job was in flight under the key: the job passed to `start` was
    /// dropped uncalled, and this receives the outcome of the one in flight.
    Joined(SyncReceiver<O>),
}

impl<O> Start<O> {
    /// Whether this call started the job.
    pub const fn is_started(&self) -> bool {
        matches!(self, Start::Started(_))
    }

    /// Whether this call joined a job already in flight.
    pub const fn is_joined(&self) -> bool {
        matches!(self, Start::Joined(_))
    }

    /// The receiver of the outcome.
    pub const fn receiver(&self) -> &SyncReceiver<O> {
        match self {
            Start::Started(receiver) | Start::Joined(receiver) => receiver,
        }
    }

    /// The receiver of the outcome.
    pub fn into_receiver(self) -> SyncReceiver<O> {
        match self {
            Start::Started(receiver) | Start::Joined(receiver) => receiver,
        }
    }
}

impl<K, O> SyncRegistry<K, O>
where
    K: Eq + Hash,
    O: Outcome,
{
    /// An empty registry.
    pub fn new() -> Self {
        Self::with_root(CancellationToken::new())
    }

    /// An empty registry whose jobs are cancelled when `parent` is: every
    /// job's token is a child of `parent` (through the registry's own
    /// token). A job started after `parent` was cancelled starts cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::status::{CancellationToken, SyncOutcome, SyncRegistry};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let shutdown = CancellationToken::new();
    /// let syncs = SyncRegistry::with_parent_token(&shutdown);
    /// let copy = syncs.start("blob-9", |cancel| async move {
    ///     cancel.cancelled().await;
    ///     SyncOutcome::Cancelled
    /// });
    /// shutdown.cancel();
    /// assert_eq!(copy.into_receiver().done().await, SyncOutcome::Cancelled);
    /// # }
    /// ```
    pub fn with_parent_token(parent: &CancellationToken) -> Self {
        Self::with_root(parent.child_token())
    }

    fn with_root(root: CancellationToken) -> Self {
        Self {
            jobs: Arc::new(Jobs {
                map: Mutex::new(HashMap::new()),
            }),
            root,
        }
    }

    /// Claims `key`: attaches to the job in flight under it, or, if there is
    /// none, registers a new pending job and makes the caller its owner.
    ///
    /// This is [`start`](Self::start) without the spawning, for jobs that run
    /// on a thread or another executor. The owner must eventually publish
    /// through the [`KeyedPublisher`] (or drop it, which publishes
    /// [`Outcome::abandoned`]); until then the key stays claimed. On another
    /// executor, spawn [`KeyedPublisher::run`], which publishes a panic as
    /// [`Outcome::panicked`]; on a thread, a panic that unwinds through the
    /// owner publishes [`Outcome::panicked`] too.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::status::{Claim, SyncOutcome, SyncRegistry};
    ///
    /// let syncs = SyncRegistry::<u64>::new();
    /// let Claim::Owner(owner) = syncs.claim(7) else { unreachable!("the key is free") };
    /// let Claim::Attached(waiter) = syncs.claim(7) else { unreachable!("the key is claimed") };
    /// std::thread::spawn(move || owner.publish(SyncOutcome::Skipped));
    /// assert_eq!(waiter.blocking_done(), SyncOutcome::Skipped);
    /// ```
    pub fn claim(&self, key: K) -> Claim<K, O>
    where
        K: Clone,
    {
        let mut map = self.jobs.map.lock();
        match map.entry(key) {
            // Present, so pending (invariant): its publication needs the lock
            // we hold, so the receiver cannot miss it.
            Entry::Occupied(job) => Claim::Attached(job.get().status.subscribe()),
            // Absent, so any earlier job under this key has published.
            Entry::Vacant(slot) => {
                let (publisher, status) = channel();
                let cancel = self.root.child_token();
                let key = slot.key().clone();
                slot.insert(Job {
                    status,
                    cancel: cancel.clone(),
                });
                Claim::Owner(KeyedPublisher {
                    jobs: Arc::clone(&self.jobs),
                    key,
                    publisher: Some(publisher),
                    cancel,
                })
            }
        }
    }

    /// Starts `job` for `key` on the current tokio runtime, unless a job is
    /// in flight under `key` already; says which ([`Start::Started`] or
    /// [`Start::Joined`]), with a receiver of the outcome of the job that
    /// runs.
    ///
    /// `job` is called once, on the spawned task, with the job's
    /// [`CancellationToken`]; when the caller joins a job in flight, `job` is
    /// dropped uncalled. Its output is published to every receiver and frees
    /// the key in one atomic step. If `job` (or its future) panics,
    /// [`Outcome::panicked`] with the panic message is published instead.
    ///
    /// The outcome type must be `Sync` as well as `Send`: the spawned task
    /// holds the registry's receivers, which read the published outcome by
    /// reference from any thread.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime (as `tokio::spawn`). The registry
    /// is left unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::status::{SyncOutcome, SyncRegistry};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let syncs = SyncRegistry::new();
    /// let first = syncs.start(1, |_cancel| async { panic!("disk full") });
    /// assert!(first.is_started());
    /// let second = syncs.start(1, |_cancel| async { SyncOutcome::Success });
    /// assert!(second.is_joined(), "the first job is still in flight");
    /// assert_eq!(second.receiver().done().await, SyncOutcome::Failed("disk full".into()));
    /// // The key was freed: a new start runs a new job.
    /// let retried = syncs.start(1, |_cancel| async { SyncOutcome::Success });
    /// assert!(retried.is_started());
    /// assert_eq!(retried.into_receiver().done().await, SyncOutcome::Success);
    /// # }
    /// ```
    pub fn start<F, Fut>(&self, key: K, job: F) -> Start<O>
    where
        K: Clone + Send + 'static,
        O: Send + Sync + 'static,
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = O> + Send + 'static,
    {
        // Before claiming: without a runtime, panic with the map untouched.
        let runtime = tokio::runtime::Handle::current();
        match self.claim(key) {
            Claim::Attached(receiver) => Start::Joined(receiver),
            Claim::Owner(owner) => {
                let receiver = owner.subscribe();
                // Detached: the owner publishes (and frees the key) when the
                // job ends, panics, or its task is dropped unfinished.
                drop(runtime.spawn(owner.run(job)));
                Start::Started(receiver)
            }
        }
    }

    /// A receiver of the job in flight under `key`, if any; starts nothing.
    pub fn subscribe<Q>(&self, key: &Q) -> Option<SyncReceiver<O>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let map = self.jobs.map.lock();
        map.get(key).map(|job| job.status.subscribe())
    }

    /// Cancels the job in flight under `key`, if any, and returns a receiver
    /// of its outcome, to wait until it has finished.
    ///
    /// The job stays registered until it publishes: a `start` of `key` in the
    /// meantime attaches to the cancelled job.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::status::{SyncOutcome, SyncRegistry};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let syncs = SyncRegistry::new();
    /// let receiver = syncs.start("blob-3", |cancel| async move {
    ///     cancel.cancelled().await;
    ///     SyncOutcome::Cancelled
    /// }).into_receiver();
    /// let cancelled = syncs.cancel("blob-3").expect("in flight");
    /// assert_eq!(cancelled.done().await, SyncOutcome::Cancelled);
    /// assert_eq!(receiver.done().await, SyncOutcome::Cancelled);
    /// assert!(syncs.cancel("blob-3").is_none());
    /// # }
    /// ```
    pub fn cancel<Q>(&self, key: &Q) -> Option<SyncReceiver<O>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (cancel, status) = {
            let map = self.jobs.map.lock();
            let job = map.get(key)?;
            (job.cancel.clone(), job.status.subscribe())
        };
        // After unlocking: cancelling wakes the job's waiters, whose wakers
        // may call back into the registry. Should the job publish meanwhile,
        // cancelling its token is harmless and `status` resolves.
        cancel.cancel();
        Some(status)
    }

    /// Cancels every job in flight whose key satisfies `predicate`.
    ///
    /// `predicate` runs on a snapshot of the keys in flight, with no lock
    /// held, so it may call into this registry. A job that publishes while
    /// the predicate runs is still listed (its receiver is already done).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::status::{SyncOutcome, SyncRegistry};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let syncs = SyncRegistry::new();
    /// for blob in 0..6_u32 {
    ///     syncs.start(blob, |cancel| async move { cancel.cancelled().await; SyncOutcome::Cancelled });
    /// }
    /// let odd = syncs.cancel_where(|blob| blob % 2 == 1);
    /// assert_eq!(odd.len(), 3);
    /// let mut finished = odd.finished().await;
    /// finished.sort_by_key(|(blob, _)| *blob);
    /// assert_eq!(finished, vec![(1, SyncOutcome::Cancelled), (3, SyncOutcome::Cancelled), (5, SyncOutcome::Cancelled)]);
    /// assert_eq!(syncs.in_flight(), 3);
    /// # }
    /// ```
    pub fn cancel_where(&self, mut predicate: impl FnMut(&K) -> bool) -> Cancellation<K, O>
    where
        K: Clone,
    {
        let in_flight: Vec<_> = {
            let map = self.jobs.map.lock();
            map.iter()
                .map(|(key, job)| (key.clone(), job.cancel.clone(), job.status.subscribe()))
                .collect()
        };
        // No lock held from here: neither the predicate nor the wakers that
        // cancelling runs can deadlock against the registry.
        let jobs = in_flight
            .into_iter()
            .filter(|(key, _, _)| predicate(key))
            .map(|(key, cancel, status)| {
                cancel.cancel();
                (key, status)
            })
            .collect();
        Cancellation { jobs }
    }

    /// Cancels every job in flight.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::status::{SyncOutcome, SyncRegistry};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let syncs = SyncRegistry::new();
    /// syncs.start("a", |cancel| async move { cancel.cancelled().await; SyncOutcome::Cancelled });
    /// syncs.start("b", |cancel| async move { cancel.cancelled().await; SyncOutcome::Cancelled });
    /// let all = syncs.cancel_all();
    /// assert_eq!(all.finished().await.len(), 2);
    /// assert_eq!(syncs.in_flight(), 0);
    /// # }
    /// ```
    pub fn cancel_all(&self) -> Cancellation<K, O>
    where
        K: Clone,
    {
        self.cancel_where(|_| true)
    }

    /// The number of jobs in flight (claimed keys whose outcome is not yet
    /// published).
    pub fn in_flight(&self) -> usize {
        self.jobs.map.lock().len()
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "job panicked with a non-string payload".to_owned()
    }
}

impl<K, O> Default for SyncRegistry<K, O>
where
    K: Eq + Hash,
    O: Outcome,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, O> Drop for SyncRegistry<K, O>
where
    K: Eq + Hash,
    O: Outcome,
{
    fn drop(&mut self) {
        // Nobody could cancel these jobs any more: ask them to stop. Every
        // job's token is a child of `root`; no lock of ours is held while
        // their waiters are woken.
        self.root.cancel();
    }
}

impl<K, O> fmt::Debug for SyncRegistry<K, O>
where
    K: Eq + Hash + fmt::Debug,
    O: Outcome,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SyncRegistry");
        // `try_lock`: formatting must not deadlock, whoever holds the lock.
        match self.jobs.map.try_lock() {
            Some(map) => d.field("in_flight", &map.keys().collect::<Vec<_>>()),
            None => d.field("in_flight", &format_args!("<locked>")),
        };
        d.finish()
    }
}

/// The publishing half of a job registered under a key, from
/// [`SyncRegistry::claim`].
///
/// [`publish`](Self::publish) publishes the outcome and frees the key in one
/// atomic step. Dropping it unpublished does the same with
/// [`Outcome::abandoned`], or with [`Outcome::panicked`] if it is dropped by
/// a panic unwinding the thread that holds it (a job on a thread that
/// panics reports `Failed`, not `Cancelled`). A panic in an async job is
/// caught by [`run`](Self::run).
pub struct KeyedPublisher<K, O = SyncOutcome>
where
    K: Eq + Hash,
    O: Outcome,
{
    jobs: Arc<Jobs<K, O>>,
    key: K,
    /// `None` once published.
    publisher: Option<SyncPublisher<O>>,
    cancel: CancellationToken,
}

impl<K, O> KeyedPublisher<K, O>
where
    K: Eq + Hash,
    O: Outcome,
{
    /// The key this job is registered under.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The job's cancellation token, cancelled when the job is cancelled
    /// through the registry, when the registry is dropped, or when the
    /// registry's parent token is cancelled.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// A new receiver of this job's outcome.
    pub fn subscribe(&self) -> SyncReceiver<O> {
        self.publisher
            .as_ref()
            .expect("`publisher` is `Some` until consumed or dropped")
            .subscribe()
    }

    /// Publishes `outcome` and frees the key, atomically: a `start` or
    /// `claim` of the key either attached to this job before (and receives
    /// `outcome`), or comes after and starts afresh.
    pub fn publish(mut self, outcome: O) {
        self.finish(outcome);
    }

    /// Runs `job` with this job's cancellation token and publishes its
    /// output; if `job` (or its future) panics, publishes
    /// [`Outcome::panicked`] with the panic message instead. This is what
    /// [`SyncRegistry::start`] spawns; use it to run a claimed job on
    /// another executor.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes drops `job` and the
    /// publisher, which publishes [`Outcome::abandoned`] and frees the key.
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::status::{Claim, SyncOutcome, SyncRegistry};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let syncs = SyncRegistry::<u32>::new();
    /// let Claim::Owner(owner) = syncs.claim(3) else { unreachable!("the key is free") };
    /// let receiver = owner.subscribe();
    /// owner.run(|_cancel| async { panic!("checksum mismatch") }).await;
    /// assert_eq!(receiver.done().await, SyncOutcome::Failed("checksum mismatch".into()));
    /// # }
    /// ```
    pub async fn run<F, Fut>(self, job: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = O>,
    {
        let cancel = self.cancellation_token().clone();
        // `job` is called inside the guarded future, so a panic while
        // building the future is caught too. Nothing observes the job's
        // state after a panic, so asserting unwind safety is sound.
        let outcome = match AssertUnwindSafe(async move { job(cancel).await })
            .catch_unwind()
            .await
        {
            Ok(outcome) => outcome,
            Err(payload) => O::panicked(panic_message(payload.as_ref())),
        };
        self.publish(outcome);
    }

    /// The registry's atomic step (see the invariant on [`Jobs`]).
    fn finish(&mut self, outcome: O) {
        let Some(publisher) = self.publisher.take() else {
            return;
        };
        let mut map = self.jobs.map.lock();
        // Only this publisher removes its key, so the entry is still ours.
        let removed = map.remove_entry(&self.key);
        debug_assert!(
            removed
                .as_ref()
                .is_some_and(|(_, job)| publisher.same_channel(&job.status)),
            "a claimed key was removed by someone other than its publisher"
        );
        // Publish before unlocking: from now on the key is free and the
        // outcome readable, and no one saw one without the other. The
        // waiters are woken, and the removed key and job dropped, after the
        // map lock is released.
        let wakes = publisher.publish_deferred(outcome);
        drop(map);
        drop(wakes);
        drop(removed);
    }
}

impl<K, O> Drop for KeyedPublisher<K, O>
where
    K: Eq + Hash,
    O: Outcome,
{
    fn drop(&mut self) {
        if self.publisher.is_some() {
            self.finish(super::channel::unpublished());
        }
    }
}

impl<K, O> fmt::Debug for KeyedPublisher<K, O>
where
    K: Eq + Hash + fmt::Debug,
    O: Outcome,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedPublisher")
            .field("key", &self.key)
            .field("published", &self.publisher.is_none())
            .field("cancel", &self.cancel)
            .finish()
    }
}

/// The jobs a [`SyncRegistry::cancel_where`] or
/// [`SyncRegistry::cancel_all`] call cancelled, to wait until they have
/// finished and collect what each published.
#[must_use = "a cancellation does not wait for the jobs; call `finished` to"]
pub struct Cancellation<K, O = SyncOutcome> {
    jobs: Vec<(K, SyncReceiver<O>)>,
}

impl<K, O> Cancellation<K, O> {
    /// How many jobs were cancelled.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job was in flight to cancel.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The keys of the cancelled jobs.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.jobs.iter().map(|(key, _)| key)
    }

    /// Waits until every cancelled job has published, and returns each key
    /// with its job's outcome (the per-job payload, for a custom
    /// [`Outcome`]).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future drops the outcomes collected so
    /// far (the jobs are unaffected).
    pub async fn finished(self) -> Vec<(K, O)>
    where
        O: Clone + Send + 'static,
    {
        let mut finished = Vec::with_capacity(self.jobs.len());
        for (key, status) in self.jobs {
            let outcome = status.done().await;
            finished.push((key, outcome));
        }
        finished
    }

    /// Blocks until every cancelled job has published; as
    /// [`finished`](Self::finished).
    pub fn blocking_finished(self) -> Vec<(K, O)>
    where
        O: Clone + Send,
    {
        self.jobs
            .into_iter()
            .map(|(key, status)| {
                let outcome = status.blocking_done();
                (key, outcome)
            })
            .collect()
    }

    /// The cancelled jobs' keys with receivers of their outcomes.
    pub fn into_receivers(self) -> Vec<(K, SyncReceiver<O>)> {
        self.jobs
    }
}

impl<K: fmt::Debug, O: fmt::Debug> fmt::Debug for Cancellation<K, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancellation")
            .field("jobs", &self.jobs)
            .finish()
    }
}
