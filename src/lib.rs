//! # leasehold
//!
//! Shared-state synchronization primitives for storage systems.
//!
//! Storage engines hand-roll the same few patterns over and over, and get
//! them subtly wrong: `RwLock` + `Notify` cells that wake every waiter on every
//! change, `Arc<Notify>` completion signals that lose their second waiter,
//! validity checks that ask whether a heartbeat *task* is alive instead of
//! whether its *deadline* has passed. `leasehold` packages the correct
//! versions, each model-checked with loom.
//!
//! | primitive | pick it for |
//! |---|---|
//! | [`WatchCell`] | shared state that tasks *and* threads wait on with predicates; wakes only the waiters whose predicate holds; `wait_take` hands each item of a work queue to exactly one waiter; [`WatchCell::index`] gives thousands of "sequence number ≥ mine" waiters O(log N) modifications ([`watch_cell::WatchIndex`]) |
//! | [`status::channel`], [`status::SyncRegistry`] | the outcome of a sync (`Success`, `Cancelled`, `Skipped`, `Failed`) for any number of waiters; one job per key in flight, its key freed in the same step that publishes its outcome |
//! | [`heartbeat::Validity`], [`heartbeat::Heartbeat`] | "may I still act on this entry?": a lock-free token that expires at `last successful beat start + ttl - margin`, not when a task exits; retried beats, deadline-bounded commits |
//! | [`lease::Lease`] | a reader's since frontier and seqno holds on a shard: the handle only records downgrades and seqno leases (waking nobody); a background task heartbeats, syncs on request, and expires the lease after a drop |
//! | [`changelog::ChangeLog`]: [`changelog::MemoryChangeLog`], `changelog::SqliteChangeLog` (feature `sqlite`, several processes on one machine), `changelog::PostgresChangeLog` (feature `postgres`, several machines) | a write-ahead log of intents: durable `record`, heartbeats and removals fenced by owner + generation, `claim_stale` won by exactly one claimer, commits fenced in the store (`commit_fenced`), staleness judged without wall clocks |
//! | [`changelog::ChangeManager`], [`changelog::ChangeGuard`] | one writer operation across stores: record, heartbeat, commit only while the entry is still yours, clean up while valid, else leave it to recovery |
//! | [`recovery::RecoveryLoop`] | continuous crash recovery: claim stale entries in batches, keep each alive until processed, run the idempotent cleanup under a deadline with panics contained, count attempts per entry in the log, quarantine poison entries and undecodable rows; backoff, shutdown |
//! | [`recovery::RecoveryScan`] | a long recovery scan over an ordered key space: concurrent syncs with jittered retries, a checkpoint that never passes unfinished work, resumed only when the scope is unchanged |
//!
//! Everything that reasons about time reads it from an injected
//! [`clock::Clock`], so tests use [`clock::ManualClock`] or tokio's paused
//! time instead of sleeping.
//!
//! ## Features
//!
//! The default build is the primitives and the in-memory changelog: no C
//! code, no database driver. Everything else is opt-in.
//!
//! | feature | brings | costs |
//! |---|---|---|
//! | `sqlite` | `SqliteChangeLog`, `SqliteProgressStore`: the embedded durable backends (several processes on one machine) | `rusqlite` with a bundled SQLite, compiled from C |
//! | `postgres` | `PostgresChangeLog`, `PostgresProgressStore`: several machines share one log | `tokio-postgres`, `deadpool-postgres` |
//! | `tracing` | structured `tracing` events and spans: failed and retried beats, lost validity, lost and expired leases, claims, cleanup attempts, quarantines, recovery errors, checkpoint saves | `tracing` (no proc macros); off, the instrumentation is compiled out |
//!
//! ## A first example
//!
//! ```
//! use leasehold::WatchCell;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let frontier = WatchCell::new(0_u64);
//! let reader = tokio::spawn({
//!     let frontier = frontier.clone();
//!     async move { frontier.wait_for(|f| *f >= 10).await }
//! });
//! tokio::task::yield_now().await; // let the reader register its predicate
//! for f in 1..=10 {
//!     frontier.modify(|v| *v = f);
//! }
//! reader.await.unwrap().unwrap();
//! // Ten modifications, one wake-up: the reader's predicate was tested by
//! // the writer, and it was woken only when it held.
//! assert_eq!(frontier.stats().wakeups, 1);
//! # }
//! ```
//!
//! ## Deduplicated syncs
//!
//! ```
//! use leasehold::status::{SyncOutcome, SyncRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let syncs = SyncRegistry::new();
//! // Two handlers ask for blob 7 at once: one job runs, both learn how it went.
//! let a = syncs.start(7, |_cancel| async { SyncOutcome::Success });
//! let b = syncs.start(7, |_cancel| async { SyncOutcome::Skipped });
//! assert!(a.is_started() && b.is_joined());
//! let (a, b) = (a.into_receiver(), b.into_receiver());
//! assert_eq!((a.done().await, b.done().await), (SyncOutcome::Success, SyncOutcome::Success));
//! // A job that panics reports it, and frees its key for a retry.
//! let c = syncs.start(7, |_cancel| async { panic!("blob 7 is corrupt") });
//! assert_eq!(c.receiver().done().await, SyncOutcome::Failed("blob 7 is corrupt".into()));
//! assert_eq!(syncs.in_flight(), 0);
//! # }
//! ```
//!
//! ## A validity-gated commit
//!
//! ```
//! use leasehold::heartbeat::{BeatError, Heartbeat, HeartbeatConfig};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // Refresh the changelog entry every 10 s; others treat it as stale after 30 s.
//! let config = HeartbeatConfig::builder(Duration::from_secs(10))
//!     .margin(Duration::from_secs(2))
//!     .build()
//!     .unwrap();
//! let heartbeat = Heartbeat::spawn(&config, || async {
//!     // store.refresh(entry, owner_token).await.map_err(BeatError::transient)
//!     Ok::<(), BeatError>(())
//! });
//! let validity = heartbeat.validity();
//!
//! // The CAS runs only while the entry is still ours, and is cut off at the
//! // deadline if the store hangs.
//! let committed = validity.run_while_valid(async { /* cas(pointer).await */ 42 }).await;
//! assert_eq!(committed, Ok(42));
//! heartbeat.stop().await; // stop refreshing, then remove the entry
//! # }
//! ```
//!
//! ## A reader's lease
//!
//! ```
//! use leasehold::lease::{Lease, LeaseConfig, MemoryShard};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let config = LeaseConfig::builder(Duration::from_secs(60)).build().unwrap();
//! let shard = MemoryShard::new(config.clock().clone(), config.ttl(), 0_u64, 0_u64);
//! let (backend, since, seqno) = shard.register();
//! let lease = Lease::spawn(backend, &config, since, seqno);
//!
//! let snapshot = lease.lease_seqno(); // the shard keeps seqno 0 while we read
//! for since in 1..=10_000 {
//!     lease.maybe_downgrade_since(since); // recorded; wakes nobody
//! }
//! assert_eq!(lease.downgrade_since(10_000).await, Ok(10_000)); // one sync
//! assert_eq!((shard.since(), shard.gc_horizon()), (10_000, 0));
//! drop(snapshot);
//! drop(lease); // the background task expires the lease with the shard
//! # while shard.readers() > 0 { tokio::task::yield_now().await }
//! # }
//! ```
//!
//! ## A write-ahead changelog with crash recovery
//!
//! A writer records its intent before any side effect; if it dies, its
//! entry goes stale and a recovery loop (in any process) claims it — exactly
//! once — and runs the same idempotent cleanup. `examples/tiered_store.rs`
//! runs this across SIGKILLed processes on SQLite.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use leasehold::changelog::{BoxError, ChangeLog, ChangeManager, Cleanup, MemoryChangeLog, OwnerId, Phase};
//! use leasehold::heartbeat::HeartbeatConfig;
//! use leasehold::recovery::{RecoveryConfig, RecoveryLoop};
//!
//! /// Deletes the temporary blob an unfinished upload left behind.
//! struct DeleteUpload;
//! impl Cleanup<String> for DeleteUpload {
//!     async fn cleanup(&self, blob: &String, _phase: Phase) -> Result<(), BoxError> {
//!         println!("deleting {blob} if nothing references it");
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let log = Arc::new(MemoryChangeLog::new(leasehold::clock::system(), Duration::from_secs(40)));
//! // ttl 30 s, plus one 10 s interval of slack before the 40 s staleness.
//! let heartbeat = HeartbeatConfig::builder(Duration::from_secs(10)).build()?;
//! let writer = ChangeManager::new(Arc::clone(&log), OwnerId::unique("writer"), heartbeat, DeleteUpload)?;
//!
//! let guard = writer.record("blob-7".to_string()).await?;
//! guard.abandon().await; // the writer "crashes": its heartbeat stops
//!
//! let recovery = RecoveryLoop::spawn::<_, String, _>(
//!     Arc::clone(&log),
//!     OwnerId::unique("recovery"),
//!     DeleteUpload,
//!     RecoveryConfig::builder().build()?,
//! )?;
//! recovery.wait_for_stats(|s| s.cleaned == 1).await; // 40 s later, on paused time
//! recovery.shutdown().await;
//! assert!(log.list().await?.is_empty());
//! # Ok(()) }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![deny(unsafe_op_in_unsafe_fn)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
pub mod changelog;
pub mod clock;
pub mod heartbeat;
pub mod lease;
pub mod recovery;
pub mod status;
#[cfg(any(feature = "sqlite", feature = "postgres", loom))]
mod store;
mod sync;
mod trace;
pub mod watch_cell;

pub use watch_cell::WatchCell;

/// The boxed error a caller's code (a beat, a cleanup, a backend, a key
/// source, a progress store) may report as its cause. The same type is
/// re-exported by the modules that take one (`heartbeat`, `changelog`,
/// `recovery`), so glob imports of several of them do not clash.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The PostgreSQL driver the `postgres` backends are built on, re-exported
/// so that a `tokio_postgres::Config` or TLS connector given to them comes
/// from the same version.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use tokio_postgres;

/// Hooks for the loom models in `loom-tests/`; not part of the API.
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    /// Advances the modelled time that blocking deadlines are checked against.
    pub fn advance_time(by: std::time::Duration) {
        crate::sync::advance(by);
    }

    /// The modelled time.
    pub fn now() -> std::time::Instant {
        crate::sync::now()
    }

    pub use crate::lease::LeaseProtocol;

    /// One batch's statement, as a runner returns it.
    pub type Statement<Out> =
        std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Out>> + Send + 'static>>;

    /// The caller-driven batcher of the PostgreSQL tables (`store::batch`),
    /// which is crate-private: this forwards to it unchanged.
    #[allow(missing_debug_implementations)]
    pub struct GroupCommit<Op: Send + 'static, Out: Send + 'static>(
        crate::store::batch::GroupCommit<Op, Out>,
    );

    impl<Op: Send + 'static, Out: Send + 'static> GroupCommit<Op, Out> {
        /// A batcher of at most `max_batch` operations a batch, run by `run`
        /// (one output per operation, in order); `lost` answers the callers
        /// of a batch whose runner panicked.
        pub fn new(
            max_batch: usize,
            lost: fn() -> Out,
            run: impl Fn(Vec<Op>) -> Statement<Out> + Send + Sync + 'static,
        ) -> Self {
            Self(crate::store::batch::GroupCommit::new(
                max_batch,
                lost,
                Box::new(run),
            ))
        }

        /// Runs `op` alone at once if no batch is in flight, else in a later
        /// batch, and yields its output.
        pub async fn submit(&self, op: Op) -> Out {
            self.0.submit(op).await
        }
    }
}
