//! Recovery of stale changelog entries.
//!
//! A writer that crashes (or stalls past its deadline) leaves its
//! [`changelog`](crate::changelog) entry behind; the entry stops being
//! refreshed and goes stale. [`RecoveryLoop`] runs continuously on every
//! instance, claims stale entries — each by exactly one instance — and runs
//! the caller's idempotent [`Cleanup`](crate::changelog::Cleanup) on them.
//!
//! | type | role |
//! |---|---|
//! | [`RecoveryLoop`] | the loop: claim, keep alive, clean up, remove; backoff, idle wait, shutdown |
//! | [`RecoveryConfig`] | batch size, waits, backoff, attempts before quarantine |
//! | [`RecoveryStats`], [`QuarantineReport`] | what it did, and which poison entries it parked |
//!
//! # Differences from the reference design this replaces
//!
//! - Claims are exclusive and fenced (the log's
//!   [`claim_stale`](crate::changelog::ChangeLog::claim_stale)), not an
//!   unconditional overwrite that a late writer heartbeat can undo.
//! - *Every* claimed entry of a batch is kept alive until processed, not only
//!   the one being cleaned: the rest of a batch of 100 does not go stale and
//!   get recovered a second time elsewhere.
//! - Entries whose payload cannot be decoded, whose cleanup keeps failing, or
//!   that keep getting claimed are quarantined and reported instead of
//!   retried forever in front of the healthy ones.
//! - The loop backs off on errors, waits when idle, re-polls at once after
//!   work, and can be shut down and awaited.

mod config;
mod error;
mod recovery_loop;

pub use config::{RecoveryConfig, RecoveryConfigBuilder};
pub use error::RecoveryConfigError;
pub use recovery_loop::{QuarantineReport, RecoveryLoop, RecoveryStats};
