//! Errors of the changelog layer.

use std::time::Duration;

pub use crate::heartbeat::BoxError;
use crate::heartbeat::{Invalid, InvalidReason};

/// Why a [`ChangeLog`](super::ChangeLog) call failed.
///
/// A fenced-out owner is *not* an error: [`refresh`](super::ChangeLog::refresh)
/// reports it as [`Ownership::Lost`](super::Ownership::Lost) and
/// [`remove`](super::ChangeLog::remove) as
/// [`Removal::Fenced`](super::Removal::Fenced). These variants are failures
/// of the store itself; [`is_transient`](ChangeLogError::is_transient) tells
/// whether retrying the same call may succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeLogError {
    /// The store was locked by another writer for longer than the configured
    /// busy timeout. Retrying later may succeed.
    #[error("the {backend} changelog stayed locked by another writer past the busy timeout")]
    Busy {
        /// Which backend reported it (`"sqlite"`, …).
        backend: &'static str,
    },
    /// The store failed in a way that may heal: an I/O error, a full disk,
    /// a lost connection, a server shutting down or starting up. Retrying
    /// later may succeed.
    #[error("the {backend} changelog failed: {source}")]
    Storage {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error (with its message, and SQLite's code or the
        /// server's SQLSTATE).
        #[source]
        source: BoxError,
    },
    /// The database is not a database, is damaged, or holds a changelog
    /// schema whose tables are gone. Permanent: restore the file or the
    /// schema, or point the log at another one.
    #[error(
        "the {backend} changelog's database is unusable (corrupt, not a database, or its tables are gone): {source}"
    )]
    Corrupt {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The store may not be written: a read-only file, directory or mount,
    /// or a database role without the privilege. Permanent until the
    /// permissions change.
    #[error(
        "the {backend} changelog may not be written (read-only, or missing privilege): {source}"
    )]
    PermissionDenied {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The database cannot be opened: a missing directory, an unknown
    /// database or role, failed authentication. Permanent: fix the path or
    /// the connection settings.
    #[error("the {backend} changelog's database cannot be opened: {source}")]
    CannotOpen {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// A value (a payload) is larger than the store accepts. Permanent for
    /// this value.
    #[error("a value is too big for the {backend} changelog: {source}")]
    TooBig {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The store refused the statement itself (e.g. the configured schema is
    /// reserved, a table or column is missing). Permanent: the same call
    /// fails again.
    #[error("the {backend} changelog refused the request: {source}")]
    Rejected {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The store holds a changelog schema newer than this version of the
    /// crate understands; upgrade the crate instead of writing to it.
    #[error("changelog schema version {found} is newer than the supported version {supported}")]
    SchemaTooNew {
        /// The version found in the store.
        found: i64,
        /// The newest version this crate writes.
        supported: i64,
    },
    /// The worker that runs the store's blocking calls panicked or was shut
    /// down (e.g. the runtime is shutting down).
    #[error("the {backend} changelog worker is unavailable (panicked or shut down)")]
    WorkerUnavailable {
        /// Which backend reported it.
        backend: &'static str,
    },
    /// The configuration given when opening the store is unusable.
    #[error("invalid changelog configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
}

impl ChangeLogError {
    /// Whether retrying the same call later may succeed (a busy store, an
    /// I/O hiccup, a lost connection, a worker gone) as opposed to a
    /// permanent condition that needs a person (a corrupt or foreign file,
    /// permissions, a missing path, a value too big, a schema too new, bad
    /// configuration).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::changelog::ChangeLogError;
    ///
    /// assert!(ChangeLogError::Busy { backend: "sqlite" }.is_transient());
    /// assert!(!ChangeLogError::SchemaTooNew { found: 9, supported: 2 }.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ChangeLogError::Busy { .. }
                | ChangeLogError::Storage { .. }
                | ChangeLogError::WorkerUnavailable { .. }
        )
    }

    /// Maps a classified store failure of `backend`.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn from_failure(
        backend: &'static str,
        failure: crate::store::failure::StoreFailure,
    ) -> Self {
        use crate::store::failure::StoreFailure;
        match failure {
            StoreFailure::Busy(_) => ChangeLogError::Busy { backend },
            StoreFailure::Unavailable(source) => ChangeLogError::Storage { backend, source },
            StoreFailure::Corrupt(source) => ChangeLogError::Corrupt { backend, source },
            StoreFailure::PermissionDenied(source) => {
                ChangeLogError::PermissionDenied { backend, source }
            }
            StoreFailure::CannotOpen(source) => ChangeLogError::CannotOpen { backend, source },
            StoreFailure::TooBig(source) => ChangeLogError::TooBig { backend, source },
            StoreFailure::Rejected(source) => ChangeLogError::Rejected { backend, source },
            StoreFailure::Config(reason) => ChangeLogError::Config { reason },
            StoreFailure::SchemaTooNew { found, supported } => {
                ChangeLogError::SchemaTooNew { found, supported }
            }
        }
    }
}

/// A payload could not be decoded by its [`Payload`](super::Payload) codec.
///
/// The recovery loop quarantines such entries instead of retrying them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable changelog payload: {reason}")]
pub struct DecodeError {
    /// What was wrong with the bytes.
    pub reason: String,
}

impl DecodeError {
    /// A decode error with the given explanation.
    pub fn new(reason: impl Into<String>) -> Self {
        DecodeError {
            reason: reason.into(),
        }
    }
}

/// Why a [`ChangeManager`](super::ChangeManager) could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerConfigError {
    /// The heartbeat leaves too little slack before the log's staleness
    /// threshold. The rule is `ttl + interval <= staleness`: a writer's
    /// validity must end at least one heartbeat interval before recovery may
    /// judge its entry stale, so that clock-rate differences between
    /// machines and the time a cut-off commit takes to stop are absorbed,
    /// and validity keeps refusing late commits early and cheaply.
    #[error(
        "heartbeat ttl {ttl:?} plus interval {interval:?} exceeds the changelog's staleness \
         threshold {staleness:?}: recovery could judge an entry stale while, or right after, \
         its writer still believes it valid; raise the staleness to at least {required:?} \
         or shorten the heartbeat"
    )]
    InsufficientSlack {
        /// The heartbeat's ttl.
        ttl: Duration,
        /// The heartbeat's interval: the minimum slack.
        interval: Duration,
        /// The log's staleness threshold.
        staleness: Duration,
        /// The smallest staleness this heartbeat accepts (`ttl + interval`).
        required: Duration,
    },
}

/// Why a commit fenced by the store did not commit: returned by the SQL
/// backends' `commit_fenced` and by [`MemoryChangeLog::commit_fenced`].
///
/// [`MemoryChangeLog::commit_fenced`]: super::MemoryChangeLog::commit_fenced
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FencedCommitError<E> {
    /// The store refused: the fence no longer owns its entry (claimed by a
    /// recoverer, removed or quarantined). Nothing was committed, and
    /// nothing will be; stop acting on the entry.
    #[error("commit refused by the store: the changelog entry is no longer owned by this fence")]
    Fenced,
    /// The caller's commit returned this error; its transaction was rolled
    /// back, so nothing was committed. The entry is still ours.
    #[error("commit rejected: {0}")]
    Rejected(#[source] E),
    /// The store failed before the commit was attempted: nothing was
    /// committed.
    #[error("commit not attempted: {0}")]
    Store(#[source] ChangeLogError),
    /// The store failed while committing (connection lost, I/O error at
    /// `COMMIT`): the commit may or may not have landed. Settle it with
    /// [`ChangeLog::advance`](super::ChangeLog::advance), which refuses any
    /// commit still in flight and reports whether one landed.
    #[error("commit outcome unknown: {0}")]
    InDoubt(#[source] ChangeLogError),
}

/// Why [`ChangeGuard::commit`](super::ChangeGuard::commit) did not commit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError<E> {
    /// The entry was no longer ours (validity expired, heartbeat fenced out
    /// or failed). With `in_flight: false` the commit was never started;
    /// with `in_flight: true` it was cut off at the deadline and may or may
    /// not have taken effect: leave the entry to recovery, whose cleanup
    /// inspects the committed state.
    #[error(
        "commit refused: the changelog entry is no longer ours ({reason}); in flight: {in_flight}"
    )]
    Invalid {
        /// Why the entry is no longer ours.
        reason: InvalidReason,
        /// Whether the commit had started when it was cut off.
        in_flight: bool,
    },
    /// The caller's compare-and-swap itself failed (a conflict, an I/O
    /// error); the entry is still ours, so cleaning up is the writer's job.
    #[error("commit rejected: {0}")]
    Rejected(#[source] E),
    /// The store refused a fenced commit: the entry had been claimed by a
    /// recoverer, removed or quarantined. Nothing was committed.
    #[error("commit refused by the store: the changelog entry is no longer ours")]
    Fenced,
    /// The store failed before a fenced commit was attempted; nothing was
    /// committed and the phase is unchanged.
    #[error("commit not attempted: {0}")]
    Store(#[source] ChangeLogError),
    /// A fenced commit's outcome is unknown (the store failed while
    /// committing). The phase is [`Phase::InDoubt`](super::Phase::InDoubt):
    /// [`finish`](super::ChangeGuard::finish) settles it with the store
    /// before cleaning up.
    #[error("commit outcome unknown: {0}")]
    InDoubt(#[source] ChangeLogError),
}

/// Why [`ChangeGuard::finish`](super::ChangeGuard::finish) could not remove
/// the entry. In every case the heartbeat is stopped and the entry is left
/// for recovery, whose cleanup is idempotent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FinishError {
    /// The entry was no longer ours before or during the cleanup.
    #[error("entry left for recovery: {0}")]
    Invalid(#[source] Invalid),
    /// The caller's cleanup failed.
    #[error("cleanup failed, entry left for recovery: {0}")]
    Cleanup(#[source] BoxError),
    /// Removing the entry failed.
    #[error("removing the entry failed, left for recovery: {0}")]
    Log(#[source] ChangeLogError),
}
