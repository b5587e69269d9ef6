//! Recovery after downtime.
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
//! | [`SettledCursor`] | the low-water mark over in-flight, retry-pending and settled keys |
//! | [`RetryQueue`], [`RetryPolicy`] | when each failed key is due again (1 s doubling, capped at 30 s, jittered) |
//! | [`ProgressStore`], [`MemoryProgressStore`] | the durable `{scope fingerprint, resume point}` |
//! | [`RecoveryScan`], [`ScanControl`] | the driver, its stop switch, counters and final save |

mod scan;

pub use scan::*;
