//! Errors of the checkpointed recovery scan.

/// A boxed error from a backend (a key source, a progress store).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A [`SettledCursor`](super::SettledCursor) transition that does not apply
/// to the key's current state. The cursor is left unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CursorError {
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
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProgressStoreError {
    /// The backend failed (I/O, connection, lock timeout, worker gone); the
    /// operation may succeed if retried.
    #[error("the {backend} progress store failed: {source}")]
    Backend {
        /// Which backend reported it (`"memory"`, `"sqlite"`, …).
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The stored checkpoint is unreadable (written by a newer version, or
    /// damaged). Clearing it restarts the scan from the beginning.
    #[error("stored checkpoint is corrupt: {reason}")]
    Corrupt {
        /// What is wrong with it.
        reason: String,
    },
}

/// Why a [`RecoveryScan`](super::RecoveryScan) ended without completing or
/// being stopped.
///
/// On every error the scan has attempted a final save of its resume point
/// (see [`RecoveryScan::run`](super::RecoveryScan::run)); the checkpoint in
/// the store is never ahead of unfinished work, so running the scan again
/// resumes safely.
#[derive(Debug, thiserror::Error)]
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
