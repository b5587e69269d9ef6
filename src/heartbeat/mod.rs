//! [`Heartbeat`] and [`Validity`]: a liveness token that expires on a
//! deadline, not when a task exits.
//!
//! A writer that keeps an entry alive with a background heartbeat ("re-record
//! every 10 s; others recover entries older than 30 s") must stop acting on
//! that entry when *others* may consider it stale, whatever its own task is
//! doing. A [`Validity`] is valid iff it was not invalidated and
//! `now < start of the last successful beat + ttl - margin` on a monotonic
//! [`Clock`](crate::clock::Clock).
//!
//! | you have… | use |
//! |---|---|
//! | an async "refresh my entry" to repeat | [`Heartbeat::spawn`] with a [`HeartbeatConfig`] |
//! | your own renewal loop (a lease task, a guard) | a [`ValidityController`]: [`extend_to`](ValidityController::extend_to), [`invalidate`](ValidityController::invalidate) |
//! | a commit that must not run once the entry may be stale | [`Validity::run_while_valid`] |
//! | a fast "may I still act?" on a hot path | [`Validity::is_valid`] (lock-free), [`Validity::check`] (with time left) |
//! | to wait for the end | [`Validity::invalidated`], [`Validity::blocking_invalidated`] |
//!
//! # Differences from the peers
//!
//! - **`JoinHandle::is_finished()`** on the heartbeat task stays "alive"
//!   while a beat hangs in a slow RPC or the process is paused: long after
//!   others have recovered the entry. A `Validity` expires at its deadline
//!   with no task involved.
//! - **`CancellationToken`** turns only when someone cancels it; nobody is
//!   awake to cancel at the deadline of a stuck process. `Validity` has the
//!   same cheap `is_cancelled`-style check, plus the deadline.
//! - **Giving up on the first failed beat** wastes the slack a ttl of three
//!   intervals buys: [`Heartbeat`] retries [`BeatError::Transient`] failures
//!   with backoff until the deadline.
//!
//! # Examples
//!
//! A beat that hangs: the token turns invalid at its deadline, and a commit
//! that hangs too is cut off there.
//!
//! ```
//! use leasehold::heartbeat::{Heartbeat, HeartbeatConfig, InvalidReason};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let config = HeartbeatConfig::builder(Duration::from_secs(10)).build().unwrap(); // ttl 30 s
//! let heartbeat = Heartbeat::spawn(&config, || std::future::pending()); // the RPC never returns
//! let validity = heartbeat.validity();
//! let started = tokio::time::Instant::now();
//!
//! let commit = validity.run_while_valid(std::future::pending::<()>()).await;
//! assert_eq!(commit.unwrap_err().reason, InvalidReason::Expired);
//! assert_eq!(started.elapsed(), Duration::from_secs(30));
//! # }
//! ```

mod config;
mod error;
mod task;
mod validity;

pub use config::{DEFAULT_TTL_FACTOR, HeartbeatConfig, HeartbeatConfigBuilder, MIN_TTL_FACTOR};
pub use error::{BeatError, BoxError, ConfigError, Invalid, InvalidReason};
pub use task::{Heartbeat, HeartbeatStats};
pub use validity::{Validity, ValidityController};
