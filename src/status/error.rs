//! Errors returned by the [`status`](super) module.

/// A blocking wait for a [`SyncReceiver`](super::SyncReceiver) gave up: its
/// deadline passed while the sync was still pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("the sync was still pending when the wait timed out")]
pub struct TimedOut;
