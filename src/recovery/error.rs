//! Errors of the recovery layer.

use std::time::Duration;

use crate::heartbeat::ConfigError as HeartbeatConfigError;

/// A [`RecoveryConfig`](super::RecoveryConfig) value is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryConfigError {
    /// A batch must claim at least one entry.
    #[error("the recovery batch size must be at least 1")]
    ZeroBatch,
    /// The backoff must satisfy `0 < initial <= max` and `factor >= 1`.
    #[error(
        "recovery backoff must satisfy 0 < initial {initial:?} <= max {max:?} and factor {factor} >= 1"
    )]
    InvalidBackoff {
        /// The first wait.
        initial: Duration,
        /// The growth factor.
        factor: f64,
        /// The cap.
        max: Duration,
    },
    /// At least one cleanup attempt is needed.
    #[error("cleanup attempts must be at least 1")]
    ZeroCleanupAttempts,
    /// The heartbeat for claimed batches is invalid (e.g. a zero interval
    /// derived from a zero staleness threshold).
    #[error("invalid heartbeat for claimed batches: {0}")]
    Heartbeat(#[source] HeartbeatConfigError),
    /// The batch heartbeat's ttl exceeds the log's staleness threshold: the
    /// loop would still believe in entries that others may claim.
    #[error("batch heartbeat ttl {ttl:?} exceeds the log's staleness threshold {staleness:?}")]
    TtlExceedsStaleness {
        /// The heartbeat ttl.
        ttl: Duration,
        /// The log's threshold.
        staleness: Duration,
    },
}
