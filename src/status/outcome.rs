//! What a finished sync reports: [`SyncStatus`], [`SyncOutcome`] and the
//! [`Outcome`] trait that lets a custom outcome type stand in for it.

use std::fmt;

/// Where a sync stands, as seen by a [`SyncReceiver`](super::SyncReceiver).
///
/// `Done` is terminal and sticky: once published it never changes, and every
/// receiver, including one created later, reads the same outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SyncStatus<O = SyncOutcome> {
    /// The sync has not finished yet.
    Pending,
    /// The sync finished with this outcome.
    Done(O),
}

impl<O> SyncStatus<O> {
    /// Whether the sync finished.
    pub const fn is_done(&self) -> bool {
        matches!(self, SyncStatus::Done(_))
    }

    /// Whether the sync is still running.
    pub const fn is_pending(&self) -> bool {
        matches!(self, SyncStatus::Pending)
    }

    /// The outcome, if the sync finished.
    pub const fn outcome(&self) -> Option<&O> {
        match self {
            SyncStatus::Done(outcome) => Some(outcome),
            SyncStatus::Pending => None,
        }
    }

    /// The outcome, if the sync finished.
    pub fn into_outcome(self) -> Option<O> {
        match self {
            SyncStatus::Done(outcome) => Some(outcome),
            SyncStatus::Pending => None,
        }
    }
}

/// The default outcome of a sync.
///
/// # Examples
///
/// ```
/// use leasehold::status::SyncOutcome;
///
/// let failed = SyncOutcome::Failed("checksum mismatch".into());
/// assert!(!failed.is_success());
/// assert_eq!(failed.to_string(), "failed: checksum mismatch");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SyncOutcome {
    /// The sync did its work.
    Success,
    /// The sync was cancelled, or its publisher went away without publishing.
    Cancelled,
    /// The sync decided there was nothing to do (e.g. the blob was already in
    /// place).
    Skipped,
    /// The sync failed, for this reason (for a panicking registry job, the
    /// panic message).
    Failed(String),
}

impl SyncOutcome {
    /// Whether this is [`SyncOutcome::Success`].
    pub const fn is_success(&self) -> bool {
        matches!(self, SyncOutcome::Success)
    }
}

impl fmt::Display for SyncOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncOutcome::Success => f.write_str("success"),
            SyncOutcome::Cancelled => f.write_str("cancelled"),
            SyncOutcome::Skipped => f.write_str("skipped"),
            SyncOutcome::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

/// An outcome type the status channel and registry can publish on their
/// own, when the code that should have published it never did.
///
/// [`SyncOutcome`] implements it; implement it for your own type to carry a
/// payload (bytes copied, a new checksum, ...) to every waiter.
///
/// # Examples
///
/// ```
/// use leasehold::status::{self, Outcome};
///
/// #[derive(Debug, Clone, PartialEq)]
/// enum BlobSync { Copied { bytes: u64 }, Gone, Broken(String) }
///
/// impl Outcome for BlobSync {
///     fn abandoned() -> Self { BlobSync::Gone }
///     fn panicked(message: String) -> Self { BlobSync::Broken(message) }
/// }
///
/// let (publisher, receiver) = status::channel::<BlobSync>();
/// drop(publisher);
/// assert_eq!(receiver.blocking_done(), BlobSync::Gone);
/// ```
pub trait Outcome: Sized {
    /// Published when a publisher is dropped without publishing (its job was
    /// dropped, its task aborted, its runtime shut down).
    fn abandoned() -> Self;

    /// Published when a [`SyncRegistry`](super::SyncRegistry) job panics;
    /// `message` is the panic message (or a fixed text when a publisher is
    /// dropped by a panic that unwinds its thread).
    fn panicked(message: String) -> Self;
}

impl Outcome for SyncOutcome {
    /// [`SyncOutcome::Cancelled`].
    fn abandoned() -> Self {
        SyncOutcome::Cancelled
    }

    /// [`SyncOutcome::Failed`] with the panic message.
    fn panicked(message: String) -> Self {
        SyncOutcome::Failed(message)
    }
}
