//! Errors returned by [`WatchCell`](super::WatchCell) waits.

/// The cell was closed with [`WatchCell::close`](super::WatchCell::close):
/// the wait can never succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("the watch cell is closed")]
pub struct Closed;

/// Why a blocking wait with a deadline ended without its predicate holding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WaitTimeoutError {
    /// The cell was closed.
    #[error("the watch cell is closed")]
    Closed,
    /// The deadline passed first.
    #[error("the wait timed out")]
    TimedOut,
}

impl From<Closed> for WaitTimeoutError {
    fn from(_: Closed) -> Self {
        WaitTimeoutError::Closed
    }
}
