//! Errors of the lease module: what a backend reports, why a lease call
//! failed, and why a configuration was rejected.

use std::time::Duration;

use crate::heartbeat::{self, BoxError};

/// A failed [`LeaseBackend`](super::LeaseBackend) call: tells the lease task
/// whether to retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The lease is gone: the shard expired the reader (it missed its
    /// heartbeats) or someone else removed it. Terminal: the task invalidates
    /// the lease's [`Validity`](crate::heartbeat::Validity) with
    /// [`InvalidReason::Lost`](crate::heartbeat::InvalidReason::Lost) and exits.
    #[error("the lease was lost")]
    Lost,
    /// A failure worth retrying (a timeout, a dropped connection). The task
    /// retries with backoff while the lease is still valid.
    #[error("transient backend failure: {0}")]
    Transient(#[source] BoxError),
}

impl BackendError {
    /// A [`BackendError::Transient`] from any error (or message).
    pub fn transient(error: impl Into<BoxError>) -> Self {
        BackendError::Transient(error.into())
    }
}

/// Why a lease operation could not complete: the lease task has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The backend reported the lease lost.
    #[error("the backend reported the lease lost")]
    Lost,
    /// The lease's validity ran out while the backend kept failing (or
    /// hanging): the shard may have expired the reader meanwhile.
    #[error("the lease's validity ran out before the backend answered")]
    TimedOut,
    /// The lease was expired on request (or its task stopped) before the
    /// operation was applied.
    #[error("the lease was expired or its task stopped")]
    Stopped,
}

/// A rejected [`LeaseConfig`](super::LeaseConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The ttl, margin or backoff broke one of the heartbeat rules (the lease
    /// heartbeats every `ttl / 4`; see
    /// [`HeartbeatConfig`](crate::heartbeat::HeartbeatConfig)).
    #[error(transparent)]
    Heartbeat(#[from] heartbeat::ConfigError),
    /// The jitter is not less than the heartbeat period: a tick could be
    /// jittered to the same instant as the previous one.
    #[error("jitter {jitter:?} must be less than the heartbeat period {period:?}")]
    JitterTooLarge {
        /// The configured maximum jitter.
        jitter: Duration,
        /// The heartbeat period, `ttl / 4`.
        period: Duration,
    },
}
