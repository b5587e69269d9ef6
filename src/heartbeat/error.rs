//! Errors of the heartbeat module: why a token is invalid, why a beat
//! failed, and why a configuration was rejected.

use std::fmt;
use std::time::Duration;

/// Why a [`Validity`](super::Validity) is no longer valid.
///
/// Once a token is invalid it stays invalid with the first reason recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidReason {
    /// The deadline passed: no successful beat (or extension) came in time.
    Expired,
    /// A beat reported a terminal failure ([`BeatError::Failed`]).
    BeatFailed,
    /// The owner stopped the heartbeat (or dropped the controlling half).
    Stopped,
    /// A beat reported that the entry was taken over by someone else
    /// ([`BeatError::Fenced`]).
    Fenced,
    /// The backend reported the lease or entry lost (used by leases).
    Lost,
}

impl InvalidReason {
    /// The code stored in the token's atomic; `0` means valid.
    pub(super) const fn code(self) -> u8 {
        match self {
            InvalidReason::Expired => 1,
            InvalidReason::BeatFailed => 2,
            InvalidReason::Stopped => 3,
            InvalidReason::Fenced => 4,
            InvalidReason::Lost => 5,
        }
    }

    /// The reason for a non-zero code written by [`code`](Self::code).
    pub(super) const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(InvalidReason::Expired),
            2 => Some(InvalidReason::BeatFailed),
            3 => Some(InvalidReason::Stopped),
            4 => Some(InvalidReason::Fenced),
            5 => Some(InvalidReason::Lost),
            _ => None,
        }
    }
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidReason::Expired => "the validity deadline passed",
            InvalidReason::BeatFailed => "a heartbeat failed terminally",
            InvalidReason::Stopped => "the heartbeat was stopped",
            InvalidReason::Fenced => "the entry was taken over (fenced)",
            InvalidReason::Lost => "the lease was lost",
        })
    }
}

/// The token is invalid: returned by [`Validity::check`](super::Validity::check)
/// and [`Validity::run_while_valid`](super::Validity::run_while_valid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("invalid: {reason}")]
pub struct Invalid {
    /// Why.
    pub reason: InvalidReason,
}

impl From<InvalidReason> for Invalid {
    fn from(reason: InvalidReason) -> Self {
        Invalid { reason }
    }
}

pub use crate::BoxError;

/// How a beat failed: tells the [`Heartbeat`](super::Heartbeat) whether to retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BeatError {
    /// A failure worth retrying (a timeout, a dropped connection). The
    /// heartbeat retries with backoff while the token is still valid.
    #[error("transient beat failure: {0}")]
    Transient(#[source] BoxError),
    /// The entry was taken over by another owner. Terminal: the token turns
    /// [`InvalidReason::Fenced`] at once and beating stops.
    #[error("the entry was taken over (fenced)")]
    Fenced,
    /// Any other failure that retrying cannot fix. Terminal: the token turns
    /// [`InvalidReason::BeatFailed`] at once and beating stops.
    #[error("terminal beat failure: {0}")]
    Failed(#[source] BoxError),
}

impl BeatError {
    /// A [`BeatError::Transient`] from any error (or message).
    pub fn transient(error: impl Into<BoxError>) -> Self {
        BeatError::Transient(error.into())
    }

    /// A [`BeatError::Failed`] from any error (or message).
    pub fn failed(error: impl Into<BoxError>) -> Self {
        BeatError::Failed(error.into())
    }
}

/// A rejected [`HeartbeatConfig`](super::HeartbeatConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The beat interval is zero.
    #[error("the heartbeat interval must be non-zero")]
    ZeroInterval,
    /// `ttl` is shorter than [`MIN_TTL_FACTOR`](super::MIN_TTL_FACTOR) ×
    /// `interval`: one slow or failed beat would already expire the token.
    #[error("ttl {ttl:?} must be at least {factor} x the interval {interval:?}")]
    TtlTooShort {
        /// The configured time to live.
        ttl: Duration,
        /// The configured interval.
        interval: Duration,
        /// The required factor.
        factor: u32,
    },
    /// `margin` is not less than `ttl - interval`: the token would expire
    /// before the next regular beat could extend it.
    #[error("margin {margin:?} must be less than ttl - interval = {limit:?}")]
    MarginTooLarge {
        /// The configured safety margin.
        margin: Duration,
        /// `ttl - interval`, the exclusive upper bound.
        limit: Duration,
    },
    /// The retry backoff is zero, or its cap is below its initial value.
    #[error("retry backoff must satisfy 0 < initial {initial:?} <= max {max:?}")]
    InvalidBackoff {
        /// The initial retry delay.
        initial: Duration,
        /// The cap on the retry delay.
        max: Duration,
    },
}
