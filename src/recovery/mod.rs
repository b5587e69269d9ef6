//! Recovery after crashes and downtime.
//!
//! | situation | use |
//! |---|---|
//! | writers crashed (or stalled) and left [`changelog`](crate::changelog) entries behind | [`RecoveryLoop`] |
//! | a storage node back from downtime must sync every key it should hold | [`RecoveryScan`] |
//!
//! # The continuous changelog recovery
//!
//! A writer that crashes (or stalls past its deadline) leaves its changelog
//! entry behind; the entry stops being refreshed and goes stale.
//! [`RecoveryLoop`] runs continuously on every instance, claims stale
//! entries — each by exactly one instance — and runs the caller's idempotent
//! [`Cleanup`](crate::changelog::Cleanup) on them.
//!
//! | type | role |
//! |---|---|
//! | [`RecoveryLoop`] | the loop: claim, keep alive, clean up, remove; backoff, idle wait, shutdown |
//! | [`RecoveryConfig`] | batch size, waits, backoff, attempts before quarantine |
//! | [`RecoveryStats`], [`QuarantineReport`], [`RecoveryError`] | what it did, which poison entries it parked, what went wrong |
//!
//! Differences from the usual hand-rolled recovery loop:
//!
//! - Claims are exclusive and fenced (the log's
//!   [`claim_stale`](crate::changelog::ChangeLog::claim_stale)), not an
//!   unconditional overwrite that a late writer heartbeat can undo.
//! - *Every* claimed entry of a batch is kept alive until processed, not only
//!   the one being cleaned: the rest of a batch of 100 does not go stale and
//!   get recovered a second time elsewhere.
//! - Recovery never stops for one entry. Every cleanup attempt has a
//!   deadline and runs as its own task, so a hung attempt is abandoned and a
//!   panic is contained; attempts are counted in the log, per entry and
//!   only when one actually starts, so an entry whose cleanup keeps failing
//!   (or keeps killing its recoverers) is quarantined with the reasons of
//!   its recent failures, while healthy entries whose recoverers crashed
//!   for other reasons are not; rows the store cannot decode are
//!   quarantined by the claim itself.
//! - Every claimed entry ends in exactly one counted outcome (cleaned,
//!   quarantined, lost, released), and errors are reported typed
//!   ([`RecoveryError`]), with their source chain.
//! - The loop backs off on errors, waits when idle, re-polls at once after
//!   work, and can be shut down and awaited.
//!
//! # The checkpointed recovery scan
//!
//! A storage node back from downtime must sync every key it should hold.
//! [`RecoveryScan`] walks an ordered key source with a concurrency cap,
//! retries failed syncs with a capped, jittered backoff (re-checking each
//! key first), and persists a [`ResumePoint`] with a [`ScopeFingerprint`]
//! in a [`ProgressStore`], so that a restart with the same scope resumes
//! where the last run got to, and never past a key that was unfinished.
//!
//! | piece | what it owns |
//! |---|---|
//! | [`ResumePoint`] | the low-water mark over in-flight, retry-pending and settled keys: what a checkpoint stores |
//! | [`RetryPolicy`] | when each failed key is due again (1 s doubling, capped at 30 s, jittered) |
//! | [`ProgressStore`], [`MemoryProgressStore`] | the durable `{scope fingerprint, resume point}` |
//! | [`RecoveryScan`], [`ScanControl`] | the driver, its stop switch, counters and final save |

mod config;
mod error;
mod events;
mod recovery_loop;
mod scan;

pub use config::{RecoveryConfig, RecoveryConfigBuilder};
pub use error::{RecoveryConfigError, RecoveryError};
pub use recovery_loop::{QuarantineReport, REPORTS_KEPT, RecoveryLoop, RecoveryStats};
pub use scan::*;
