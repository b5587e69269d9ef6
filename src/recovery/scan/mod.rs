//! The checkpointed recovery scan (see [`RecoveryScan`]).
//!
//! The pieces are re-exported from [`recovery`](super).

mod checkpoint;
mod control;
mod cursor;
mod driver;
mod error;
#[cfg(feature = "postgres")]
mod postgres;
mod progress;
mod retry;
mod retry_schedule;
mod source;
#[cfg(feature = "sqlite")]
mod sqlite;
mod window;

pub use control::{FinalCheckpoint, ScanControl, ScanProgress, ScanReport};
pub use cursor::ResumePoint;
pub use driver::{RecoveryScan, ScanConfig};
pub use error::{BoxError, KeyDecodeError, ProgressStoreError, ScanConfigError, ScanError};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresProgressStore, PostgresProgressStoreBuilder};
pub use progress::{
    Checkpoint, CheckpointWithGivenUp, MemoryProgressStore, ProgressStore, ScanKey,
    ScopeFingerprint,
};
pub use retry::RetryPolicy;
pub use retry_schedule::Recheck;
pub use source::KeySource;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteProgressStore;
