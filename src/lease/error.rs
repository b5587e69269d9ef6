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

/// Why a call on a durable lease table (`SqliteLeaseTable`,
/// `PostgresLeaseTable`) failed. [`is_transient`](Self::is_transient) tells
/// whether retrying the same call may succeed.
///
/// A reader whose lease was expired is not an error of the table: its
/// heartbeat reports [`BackendError::Lost`], and a fenced read
/// [`FencedReadError::Lost`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseTableError {
    /// Locked by another writer past the busy timeout, or a serialization
    /// conflict: transient.
    #[error("the {backend} lease table stayed locked by another writer (or conflicted)")]
    Busy {
        /// Which backend reported it (`"sqlite"`, `"postgres"`).
        backend: &'static str,
    },
    /// An I/O error, a full disk, a lost connection, a server shutting down
    /// or starting up: transient.
    #[error("the {backend} lease table failed: {source}")]
    Storage {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// Not a database, a damaged file, or tables that are gone: permanent.
    #[error("the {backend} lease table's database is unusable: {source}")]
    Corrupt {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// A read-only file or mount, or a role without the privilege:
    /// permanent until the permissions change.
    #[error("the {backend} lease table may not be written: {source}")]
    PermissionDenied {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The database cannot be opened (a missing directory, an unknown
    /// database or role, failed authentication): permanent.
    #[error("the {backend} lease table's database cannot be opened: {source}")]
    CannotOpen {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The store refused a statement (a value too big, a constraint, an
    /// unexpected SQL error): permanent.
    #[error("the {backend} lease table refused a statement: {source}")]
    Rejected {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// A reader's stored since does not decode as the table's since type
    /// (another program's table, or a type changed without a migration):
    /// permanent for that row.
    #[error("reader {reader} of the lease table holds an undecodable since: {reason}")]
    Undecodable {
        /// The reader whose row it is.
        reader: u64,
        /// What the decoder said.
        reason: String,
    },
    /// Unusable configuration: permanent.
    #[error("invalid lease table configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The tables were written by a newer version of this crate: permanent.
    #[error(
        "the lease table's schema is version {found}; this version of leasehold reads up to {supported}"
    )]
    SchemaTooNew {
        /// The version found.
        found: i64,
        /// The newest version this crate reads.
        supported: i64,
    },
    /// The blocking worker (SQLite) or the runtime went away mid-call:
    /// transient.
    #[error("the {backend} lease table's worker went away")]
    WorkerUnavailable {
        /// Which backend reported it.
        backend: &'static str,
    },
}

impl LeaseTableError {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LeaseTableError::Busy { .. }
                | LeaseTableError::Storage { .. }
                | LeaseTableError::WorkerUnavailable { .. }
        )
    }

    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn from_failure(
        backend: &'static str,
        failure: crate::store_failure::StoreFailure,
    ) -> Self {
        use crate::store_failure::StoreFailure;
        match failure {
            StoreFailure::Busy(_) => LeaseTableError::Busy { backend },
            StoreFailure::Unavailable(source) => LeaseTableError::Storage { backend, source },
            StoreFailure::Corrupt(source) => LeaseTableError::Corrupt { backend, source },
            StoreFailure::PermissionDenied(source) => {
                LeaseTableError::PermissionDenied { backend, source }
            }
            StoreFailure::CannotOpen(source) => LeaseTableError::CannotOpen { backend, source },
            StoreFailure::TooBig(source) | StoreFailure::Rejected(source) => {
                LeaseTableError::Rejected { backend, source }
            }
            StoreFailure::Config(reason) => LeaseTableError::Config { reason },
            StoreFailure::SchemaTooNew { found, supported } => {
                LeaseTableError::SchemaTooNew { found, supported }
            }
        }
    }

    /// The heartbeat's view: a failing table is worth a retry while the
    /// lease is valid (after it, the lease times out by itself).
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn into_backend(self) -> BackendError {
        BackendError::transient(self)
    }
}

/// Why a fenced read (`SqliteLeaseTable::read_fenced`,
/// `PostgresLeaseTable::read_fenced`) returned nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FencedReadError<E> {
    /// The reader's lease was expired (or the reader never existed): the
    /// read did not run. State the reader held may already be deleted.
    #[error("the reader's lease was expired; the read did not run")]
    Lost,
    /// The read ran and returned this error.
    #[error("the fenced read failed")]
    Read(#[source] E),
    /// The table could not be asked.
    #[error(transparent)]
    Store(#[from] LeaseTableError),
}
