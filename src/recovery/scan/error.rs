//! Errors of the checkpointed recovery scan.

pub use crate::BoxError;

/// A [`SettledCursor`](super::cursor::SettledCursor) transition that does not apply
/// to the key's current state. The cursor is left unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub(crate) enum CursorError {
    /// `begin` of a key that is not after the last key begun, or that lies
    /// before the cursor's start.
    #[error("keys must be begun in strictly increasing order, at or after the cursor's start")]
    OutOfOrder,
    /// `defer` of a key that is not in flight.
    #[error("the key is not in flight")]
    NotInFlight,
    /// `retry` of a key that is not waiting for a retry.
    #[error("the key is not waiting for a retry")]
    NotAwaitingRetry,
    /// `settle` of a key that is not tracked, or settled already.
    #[error("the key is not unfinished (never begun, or settled already)")]
    NotUnfinished,
}

/// A scan or retry setting out of range: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("invalid recovery scan setting `{setting}`: {reason}")]
pub struct ScanConfigError {
    /// The setting's name, as in the configuration struct.
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// A key's stored bytes do not decode as a key of the scan's type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("stored key does not decode: {reason}")]
pub struct KeyDecodeError {
    /// Why decoding failed.
    pub reason: String,
}

/// A [`ProgressStore`](super::ProgressStore) operation failed.
///
/// [`is_transient`](Self::is_transient) tells whether retrying may help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProgressStoreError {
    /// The backend failed in a way that may heal (I/O, a full disk, a lost
    /// connection, a lock timeout, a worker gone); the operation may
    /// succeed if retried.
    #[error("the {backend} progress store failed: {source}")]
    Backend {
        /// Which backend reported it (`"memory"`, `"sqlite"`, …).
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The stored checkpoint is unreadable (damaged, or written by
    /// something else). Clearing it restarts the scan from the beginning.
    #[error("stored checkpoint is corrupt: {reason}")]
    Corrupt {
        /// What is wrong with it.
        reason: String,
    },
    /// The database is not a database, is damaged, or holds a progress
    /// schema whose table is gone. Permanent.
    #[error(
        "the {backend} progress store's database is unusable (corrupt, not a database, or its table is gone): {source}"
    )]
    CorruptDatabase {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The store may not be written: a read-only file, directory or mount,
    /// or a database role without the privilege. Permanent.
    #[error(
        "the {backend} progress store may not be written (read-only, or missing privilege): {source}"
    )]
    PermissionDenied {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The database cannot be opened: a missing directory, an unknown
    /// database or role, failed authentication. Permanent.
    #[error("the {backend} progress store's database cannot be opened: {source}")]
    CannotOpen {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// A value (a key, a scope) is larger than the store accepts.
    /// Permanent for this value.
    #[error("a value is too big for the {backend} progress store: {source}")]
    TooBig {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The store refused the statement itself (e.g. a reserved schema, a
    /// missing column). Permanent.
    #[error("the {backend} progress store refused the request: {source}")]
    Rejected {
        /// Which backend reported it.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The store holds a progress schema newer than this version of the
    /// crate reads; upgrade the crate instead of writing to it. Permanent.
    #[error("scan progress schema version {found} is newer than the supported version {supported}")]
    SchemaTooNew {
        /// The version found in the store.
        found: i64,
        /// The newest version this crate writes.
        supported: i64,
    },
    /// The configuration given when opening the store is unusable (a bad
    /// URL, schema name or pool size, a file system that refuses WAL mode).
    /// Permanent.
    #[error("invalid progress store configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
}

impl ProgressStoreError {
    /// Whether retrying the same call later may succeed, as opposed to a
    /// permanent condition that needs a person (a corrupt checkpoint or
    /// file, permissions, a missing path, a value too big, a schema too
    /// new, bad configuration).
    ///
    /// # Examples
    ///
    /// ```
    /// use leasehold::recovery::ProgressStoreError;
    ///
    /// let gone = ProgressStoreError::Backend { backend: "memory", source: "disk gone".into() };
    /// assert!(gone.is_transient());
    /// assert!(!ProgressStoreError::SchemaTooNew { found: 9, supported: 2 }.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(self, ProgressStoreError::Backend { .. })
    }

    /// Maps a classified store failure of `backend`.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    pub(crate) fn from_failure(
        backend: &'static str,
        failure: crate::store_failure::StoreFailure,
    ) -> Self {
        use crate::store_failure::StoreFailure;
        match failure {
            StoreFailure::Busy(source) | StoreFailure::Unavailable(source) => {
                ProgressStoreError::Backend { backend, source }
            }
            StoreFailure::Corrupt(source) => {
                ProgressStoreError::CorruptDatabase { backend, source }
            }
            StoreFailure::PermissionDenied(source) => {
                ProgressStoreError::PermissionDenied { backend, source }
            }
            StoreFailure::CannotOpen(source) => ProgressStoreError::CannotOpen { backend, source },
            StoreFailure::TooBig(source) => ProgressStoreError::TooBig { backend, source },
            StoreFailure::Rejected(source) => ProgressStoreError::Rejected { backend, source },
            StoreFailure::Config(reason) => ProgressStoreError::Config { reason },
            StoreFailure::SchemaTooNew { found, supported } => {
                ProgressStoreError::SchemaTooNew { found, supported }
            }
        }
    }
}

/// Why a [`RecoveryScan`](super::RecoveryScan) ended without completing or
/// being stopped.
///
/// On every error the scan has attempted a final save of its resume point
/// (see [`RecoveryScan::run`](super::RecoveryScan::run)); the checkpoint in
/// the store is never ahead of unfinished work, so running the scan again
/// resumes safely.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// Reading keys from the source failed. Never taken as "no more keys".
    #[error("reading keys from the source failed: {0}")]
    Source(#[source] BoxError),
    /// The source returned a key that is not after the previous one (or
    /// before the requested bound): it is not an ordered source.
    #[error("the key source returned {key} out of order (not after {previous})")]
    SourceOutOfOrder {
        /// The offending key (`Debug`-formatted).
        key: String,
        /// The position it should have followed (`Debug`-formatted).
        previous: String,
    },
    /// Loading, saving or clearing the checkpoint failed.
    #[error("progress store: {0}")]
    Store(#[from] ProgressStoreError),
    /// The stored checkpoint's key does not decode as a key of this scan.
    #[error("the checkpoint's resume key is unreadable: {0}")]
    CheckpointKey(#[from] KeyDecodeError),
}
