//! The checkpointed recovery scan (see [`RecoveryScan`]).
//!
//! The pieces are re-exported from [`recovery`](super).

mod cursor;
mod driver;
mod error;
#[cfg(feature = "postgres")]
mod postgres;
mod progress;
mod retry;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use cursor::{KeyState, ResumePoint, SettledCursor};
pub use driver::{
    FinalCheckpoint, KeySource, Recheck, RecoveryScan, ScanConfig, ScanControl, ScanProgress,
    ScanReport,
};
pub use error::{
    BoxError, CursorError, KeyDecodeError, ProgressStoreError, ScanConfigError, ScanError,
};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresProgressStore, PostgresProgressStoreBuilder};
pub use progress::{Checkpoint, MemoryProgressStore, ProgressStore, ScanKey, ScopeFingerprint};
pub use retry::{Retry, RetryPolicy, RetryQueue};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteProgressStore;
