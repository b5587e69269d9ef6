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
//! | [`WatchCell`] | shared state that tasks *and* threads wait on with predicates; wakes only the waiters whose predicate holds |
//! | [`status::channel`], [`status::SyncRegistry`] | the outcome of a sync (`Success`, `Cancelled`, `Skipped`, `Failed`) for any number of waiters; one job per key in flight, its key freed in the same step that publishes its outcome |
//! | [`heartbeat::Validity`], [`heartbeat::Heartbeat`] | "may I still act on this entry?": a lock-free token that expires at `last successful beat start + ttl - margin`, not when a task exits; retried beats, deadline-bounded commits |
//! | [`lease::Lease`] | a reader's since frontier and seqno holds on a shard: the handle only records downgrades and seqno leases (waking nobody); a background task heartbeats, syncs on request, and expires the lease after a drop |
//!
//! Everything that reasons about time reads it from an injected
//! [`clock::Clock`], so tests use [`clock::ManualClock`] or tokio's paused
//! time instead of sleeping.
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
//! assert_eq!((a.done().await, b.done().await), (SyncOutcome::Success, SyncOutcome::Success));
//! // A job that panics reports it, and frees its key for a retry.
//! let c = syncs.start(7, |_cancel| async { panic!("blob 7 is corrupt") });
//! assert_eq!(c.done().await, SyncOutcome::Failed("blob 7 is corrupt".into()));
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
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod clock;
pub mod heartbeat;
pub mod lease;
pub mod status;
mod sync;
pub mod watch_cell;

pub use watch_cell::WatchCell;

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
}
