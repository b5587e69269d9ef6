//! Recovery: the checkpointed recovery scan.
//!
//! A storage node back from downtime must sync every key it should hold.
//! [`RecoveryScan`] walks an ordered key source with a concurrency cap,
//! retries failed syncs with a capped, jittered backoff, and persists a
//! [`ResumePoint`] in a [`ProgressStore`] so that a restart resumes where the
//! last run got to, never past a key that was still unfinished.
//!
//! | piece | what it owns |
//! |---|---|
//! | [`SettledCursor`] | the low-water mark: in-flight, retry-pending and settled keys, and the resume point |
//! | [`RetryQueue`], [`RetryPolicy`] | when each failed key is due again (1 s doubling, capped at 30 s, jittered) |
//! | [`ProgressStore`], [`MemoryProgressStore`] | the durable `{scope fingerprint, resume point}` |
//! | [`RecoveryScan`], [`ScanControl`] | the driver, its stop switch, counters and final save |

mod cursor;
mod error;
mod progress;
mod retry;
mod scan;

pub use cursor::{KeyState, ResumePoint, SettledCursor};
pub use error::{BoxError, ConfigError, CursorError, KeyDecodeError, ScanError, StoreError};
pub use progress::{Checkpoint, MemoryProgressStore, ProgressStore, ScanKey, ScopeFingerprint};
pub use retry::{Retry, RetryPolicy, RetryQueue};
pub use scan::{
    FinalCheckpoint, KeySource, Recheck, RecoveryScan, ScanConfig, ScanControl, ScanProgress,
    ScanReport,
};
