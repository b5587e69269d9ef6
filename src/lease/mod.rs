//! [`Lease`]: a reader's since frontier and seqno holds on a shard, kept
//! alive and downgraded by a background task that owns every backend call.
//!
//! A read handle that downgrades its holds only when its owner remembers to
//! (and a snapshot can block its owner for minutes) leaks them: the shard
//! cannot compact or garbage-collect. Here the handle only writes shared
//! state, synchronously, and a task does the rest:
//!
//! | the handle… | the task… |
//! |---|---|
//! | records a since ([`maybe_downgrade_since`](Lease::maybe_downgrade_since)), a seqno lease ([`lease_seqno`](Lease::lease_seqno)), an observed seqno | sends them with the next heartbeat, every `ttl / 4` (with jitter) |
//! | requests a sync ([`downgrade_since`](Lease::downgrade_since)) | heartbeats at once and acknowledges it |
//! | is dropped, or [`expire`](Lease::expire)d | expires the lease through the backend, then exits |
//! | reads [`validity`](Lease::validity) | extends it on each successful heartbeat; invalidates it when the backend reports the lease lost |
//!
//! | you need | use |
//! |---|---|
//! | a lease on your store | implement [`LeaseBackend`] (heartbeat-with-downgrade, expire) and [`Lease::spawn`] |
//! | a store to test against | [`MemoryShard`] (tracks readers, expires stale ones, computes the shard's since and GC horizon) |
//! | readers in several processes of one machine | `SqliteLeaseTable` (feature `sqlite`): one durable table of a shard's readers; the owner asks it for the since, the GC horizon, and expires stale readers |
//! | readers on several machines | `PostgresLeaseTable` (feature `postgres`): the same, on a server |
//! | a since that is only partially ordered (a product timestamp, an antichain) | implement [`Since`] (`less_equal`, `join`, `meet`); totally ordered types already are one |
//!
//! # Durable lease tables
//!
//! A shard's owner (its compactor or garbage collector) must never delete
//! what a live reader still reads, and must not wait forever for a reader
//! that died. The tables decide both in the store, never on a wall clock:
//!
//! - a reader's heartbeat increments its row's counter; the owner expires a
//!   reader once it has *observed* that counter unchanged for the staleness,
//!   on its own monotonic clock, with a delete conditional on what it saw;
//! - an expired reader's row is gone: its next heartbeat reports
//!   [`BackendError::Lost`], its lease ends and its
//!   [`Validity`](crate::heartbeat::Validity) with it, and it can never move
//!   the shard's holds again (it registers anew, with a new id);
//! - a reader reads through `read_fenced`, which checks its row in the same
//!   snapshot as the read, so a reader that was frozen past its expiry never
//!   reads what the owner deleted meanwhile.
//!
//! # Differences from the field
//!
//! - **`RwLock` + `Notify` shared state** wakes the lease task on every
//!   `maybe_downgrade_since` and every seqno bump, to find nothing to do.
//!   Here the task waits on a [`WatchCell`](crate::WatchCell) predicate
//!   ("a sync or expiry was requested"): plain downgrades and seqno leases
//!   are recorded under a short lock and wake nobody; the next tick sends
//!   them. A no-op downgrade does not even notify.
//! - **`tokio::time::interval`** (default [`MissedTickBehavior::Burst`])
//!   fires every missed tick back to back after a stall. The next tick here
//!   is computed from the start of the last heartbeat, so a stall costs one
//!   heartbeat, never a burst.
//! - **"Is my task alive?"** is not whether the lease is held: the
//!   [`Validity`](crate::heartbeat::Validity) expires at the last
//!   heartbeat's start + ttl - margin, with no task involved.
//!
//! [`MissedTickBehavior::Burst`]: tokio::time::MissedTickBehavior::Burst
//!
//! # Examples
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
//! // A slow snapshot: hold its seqno, keep downgrading the since meanwhile.
//! let snapshot = lease.lease_seqno();
//! for t in 1..=600_u64 {
//!     shard.advance_seqno(t);
//!     lease.maybe_downgrade_since(t);
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//! }
//! assert!(shard.since() >= 585);     // heartbeats carried the downgrades
//! assert_eq!(shard.gc_horizon(), 0); // the snapshot still holds seqno 0
//! drop(snapshot);
//! lease.observe_seqno(600); // the reader has caught up
//! tokio::time::sleep(config.period() + Duration::from_secs(1)).await;
//! assert_eq!(shard.gc_horizon(), 600); // the next tick released the hold
//!
//! // 600 downgrades over 10 minutes: the task woke only for its ticks.
//! let stats = lease.stats();
//! assert_eq!(stats.wakeups, stats.heartbeats);
//! assert!(stats.heartbeats <= 48 && stats.early_wakeups == 0);
//! # }
//! ```

mod backend;
mod config;
mod error;
mod handle;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod state;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod table;
mod task;

pub use backend::{HeartbeatReply, LeaseBackend, Seqno, Since};
pub use config::{HEARTBEATS_PER_TTL, LeaseConfig, LeaseConfigBuilder};
pub use error::{BackendError, ConfigError, FencedReadError, LeaseError, LeaseTableError};
pub use handle::{Lease, LeaseStats, SeqnoLease};
pub use memory::{MemoryReader, MemoryShard, ReaderId, ReaderState, ShardStats};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresLeaseReader, PostgresLeaseTable, PostgresLeaseTableBuilder};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteLeaseReader, SqliteLeaseTable, SqliteLeaseTableBuilder};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use table::{ReaderFence, ReaderRow, TableSince};

#[cfg(loom)]
#[doc(hidden)]
pub use state::LeaseProtocol;
