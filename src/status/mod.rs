//! Completion status of a sync, for any number of waiters, and a registry
//! that runs each keyed sync once.
//!
//! | you have… | pick |
//! |---|---|
//! | one piece of work and several parties waiting for its outcome | [`channel`]: a [`SyncPublisher`] and cloneable [`SyncReceiver`]s |
//! | work identified by a key (a blob, a shard), requested by many callers at once | [`SyncRegistry`]: one job per key in flight, every caller gets its outcome |
//!
//! # Differences from the peers
//!
//! - **`Arc<Notify>` + `notify_one`** wakes one waiter and carries no result:
//!   a second waiter hangs, and nobody learns whether the sync succeeded.
//!   Here every receiver gets the [`SyncOutcome`] (`Success`, `Cancelled`,
//!   `Skipped`, `Failed(reason)`, or your own [`Outcome`] type).
//! - **`tokio::sync::watch`** fixes the multi-waiter problem but not the rest:
//!   a sender dropped before sending leaves the value `Pending` (waiters get a
//!   `RecvError` and must guess), blocking threads cannot wait, and a
//!   hand-maintained `HashMap<K, watch::Receiver>` removes the key and
//!   publishes in two steps. Here a dropped publisher publishes
//!   [`Outcome::abandoned`], blocking waits exist, and the registry publishes
//!   and frees a key atomically.
//! - **Sticky.** `Done` never changes; a receiver subscribed after
//!   completion sees it at once, and it stays readable after the publisher
//!   is gone.
//!
//! The status is a [`WatchCell`](crate::WatchCell) underneath: waiters are
//! woken once, when the outcome is published, never on intermediate changes.
//!
//! Registry jobs are cancelled through tokio-util's [`CancellationToken`]
//! (re-exported here), the type a tokio service already passes around: child
//! tokens, drop guards, owned futures and equality come with it, and a
//! registry can hang its jobs under your shutdown token
//! ([`SyncRegistry::with_parent_token`]). [`BlockingCancellation`] adds
//! blocking waits for jobs that run on threads.
//!
//! # Examples
//!
//! ```
//! use leasehold::status::{SyncOutcome, SyncRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let syncs = SyncRegistry::new();
//! // Three handlers ask for the same blob: one job runs.
//! let starts: Vec<_> = (0..3)
//!     .map(|_| syncs.start("blob-42", |cancel| async move {
//!         match cancel.run_until_cancelled(async { /* copy the blob */ }).await {
//!             Some(()) => SyncOutcome::Success,
//!             None => SyncOutcome::Cancelled,
//!         }
//!     }))
//!     .collect();
//! assert_eq!(starts.iter().filter(|start| start.is_started()).count(), 1);
//! for start in starts {
//!     assert_eq!(start.into_receiver().done().await, SyncOutcome::Success);
//! }
//! # }
//! ```

mod cancel;
mod channel;
mod error;
mod outcome;
mod registry;
mod slot;

pub use cancel::BlockingCancellation;
pub use channel::{SyncPublisher, SyncReceiver, channel};
pub use error::TimedOut;
pub use outcome::{Outcome, SyncOutcome, SyncStatus};
pub use registry::{Cancellation, Claim, KeyedPublisher, Start, SyncRegistry};
/// tokio-util's cancellation token, re-exported: every registry job gets one
/// (a child of its registry's token), so the version always matches.
pub use tokio_util::sync::CancellationToken;
