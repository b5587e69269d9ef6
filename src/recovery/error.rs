//! Errors of the recovery layer.

use std::time::Duration;

use crate::changelog::{BoxError, ChangeLogError, EntryId};
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
    /// The per-attempt cleanup deadline is shorter than the log's staleness
    /// threshold. A writer may spend up to that threshold on the same
    /// cleanup (its validity ends before its entry can go stale), so a
    /// shorter deadline would abandon, and in the end quarantine, cleanups
    /// that are merely as slow as the writers are allowed to be.
    #[error(
        "cleanup deadline {deadline:?} is shorter than the log's staleness threshold {staleness:?}"
    )]
    CleanupDeadlineTooShort {
        /// The configured deadline.
        deadline: Duration,
        /// The log's threshold.
        staleness: Duration,
    },
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

/// An error a [`RecoveryLoop`](super::RecoveryLoop) counted, as reported by
/// [`RecoveryLoop::last_error`](super::RecoveryLoop::last_error).
///
/// The changelog's and the cleanup's own errors are kept as the
/// [`source`](std::error::Error::source), so the whole chain can be walked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// Polling the log for stale entries failed.
    #[error("polling the changelog for stale entries failed")]
    Poll(#[source] ChangeLogError),
    /// A changelog call on one claimed entry failed; the entry is left in
    /// the log and reclaimed once stale.
    #[error("changelog call `{call}` on entry {id} failed")]
    Store {
        /// The entry.
        id: EntryId,
        /// The call (`start_attempt`, `remove`, …).
        call: &'static str,
        /// The store's error.
        #[source]
        source: ChangeLogError,
    },
    /// A cleanup attempt returned an error.
    #[error("cleanup of entry {id} failed (attempt {attempt})")]
    Cleanup {
        /// The entry.
        id: EntryId,
        /// The entry's attempt number, counted across claims.
        attempt: u32,
        /// The cleanup's error.
        #[source]
        source: BoxError,
    },
    /// A cleanup attempt, or the decoding of the entry's payload, panicked;
    /// the panic was contained.
    #[error("{what} of entry {id} panicked (attempt {attempt}): {message}")]
    Panicked {
        /// The entry.
        id: EntryId,
        /// The entry's attempt number.
        attempt: u32,
        /// `"cleanup"` or `"decoding"`.
        what: &'static str,
        /// The panic's message, if it had one.
        message: String,
    },
    /// A cleanup attempt was still running at its deadline and was
    /// abandoned; the entry is left to go stale and be reclaimed.
    #[error("cleanup of entry {id} abandoned at its deadline of {deadline:?} (attempt {attempt})")]
    DeadlineExceeded {
        /// The entry.
        id: EntryId,
        /// The entry's attempt number.
        attempt: u32,
        /// The per-attempt deadline.
        deadline: Duration,
    },
}

impl RecoveryError {
    /// The entry the error is about, unless it is a failed poll.
    pub fn entry(&self) -> Option<EntryId> {
        match self {
            RecoveryError::Poll(_) => None,
            RecoveryError::Store { id, .. }
            | RecoveryError::Cleanup { id, .. }
            | RecoveryError::Panicked { id, .. }
            | RecoveryError::DeadlineExceeded { id, .. } => Some(*id),
        }
    }

    /// The entry's cleanup attempt the error is about (counted across
    /// claims), if it is about one.
    pub fn attempt(&self) -> Option<u32> {
        match self {
            RecoveryError::Poll(_) | RecoveryError::Store { .. } => None,
            RecoveryError::Cleanup { attempt, .. }
            | RecoveryError::Panicked { attempt, .. }
            | RecoveryError::DeadlineExceeded { attempt, .. } => Some(*attempt),
        }
    }

    /// Whether the condition may clear by itself (a busy or unreachable
    /// store, a failed cleanup that may succeed next time), as opposed to a
    /// permanent one (the log's schema or configuration), which the loop
    /// reports and retries only at its longest backoff.
    pub fn is_transient(&self) -> bool {
        match self {
            RecoveryError::Poll(source) | RecoveryError::Store { source, .. } => {
                source.is_transient()
            }
            RecoveryError::Cleanup { .. }
            | RecoveryError::Panicked { .. }
            | RecoveryError::DeadlineExceeded { .. } => true,
        }
    }
}
