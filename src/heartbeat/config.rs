//! [`HeartbeatConfig`] and its validating builder.

use std::fmt;
use std::time::Duration;

use super::error::ConfigError;
use crate::backoff::Backoff;
use crate::clock::{self, Clock};

/// `ttl` must be at least this many beat intervals: with less, a single
/// slow or failed beat expires the token.
pub const MIN_TTL_FACTOR: u32 = 2;

/// `ttl` when none is set: this many intervals (the usual "refresh every
/// 10 s, stale after 30 s").
pub const DEFAULT_TTL_FACTOR: u32 = 3;

/// A validated heartbeat configuration, reusable for many heartbeats.
///
/// | setting | default | meaning |
/// |---|---|---|
/// | `interval` | (required) | time between the starts of successful beats |
/// | `ttl` | 3 × `interval` | how long a successful beat keeps the entry alive for others |
/// | `margin` | zero | safety slack: the token expires at `beat start + ttl - margin` |
/// | `backoff` | `interval / 8` doubling up to `interval` | delay between retries of a failed beat |
/// | `backoff_jitter` | on | each retry delay drawn from `[0, delay]` (full jitter) |
/// | `clock` | [`clock::system()`] | the clock deadlines are measured on |
///
/// Rules, checked by [`HeartbeatConfigBuilder::build`]: `interval > 0`;
/// `ttl >= MIN_TTL_FACTOR × interval`; `margin < ttl - interval`;
/// `0 < backoff initial <= backoff max`.
///
/// # Examples
///
/// ```
/// use leasehold::heartbeat::{ConfigError, HeartbeatConfig};
/// use std::time::Duration;
///
/// let config = HeartbeatConfig::builder(Duration::from_secs(10))
///     .margin(Duration::from_secs(2))
///     .build()
///     .unwrap();
/// assert_eq!(config.ttl(), Duration::from_secs(30));
/// assert_eq!(config.validity_window(), Duration::from_secs(28));
///
/// let too_short = HeartbeatConfig::builder(Duration::from_secs(10)).ttl(Duration::from_secs(15)).build();
/// assert!(matches!(too_short, Err(ConfigError::TtlTooShort { .. })));
/// ```
#[derive(Clone)]
pub struct HeartbeatConfig {
    pub(super) interval: Duration,
    pub(super) ttl: Duration,
    pub(super) margin: Duration,
    pub(super) backoff_initial: Duration,
    pub(super) backoff_max: Duration,
    pub(super) backoff_jitter: bool,
    pub(super) clock: std::sync::Arc<dyn Clock>,
}

impl HeartbeatConfig {
    /// A builder beating every `interval`, with the defaults in the table
    /// above.
    pub fn builder(interval: Duration) -> HeartbeatConfigBuilder {
        HeartbeatConfigBuilder {
            interval,
            ttl: None,
            margin: Duration::ZERO,
            backoff: None,
            backoff_jitter: true,
            clock: None,
        }
    }

    /// The time between the starts of successful beats.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How long one successful beat keeps the entry alive.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The safety margin subtracted from `ttl`.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// `ttl - margin`: how long after a successful beat's start the token
    /// stays valid.
    pub fn validity_window(&self) -> Duration {
        self.ttl - self.margin
    }

    /// The clock deadlines are measured on.
    pub fn clock(&self) -> &std::sync::Arc<dyn Clock> {
        &self.clock
    }

    /// A fresh retry schedule for one failed beat (or lease renewal).
    pub(crate) fn backoff(&self) -> Backoff {
        let jitter = if self.backoff_jitter { 1.0 } else { 0.0 };
        Backoff::new(self.backoff_initial, 2.0, self.backoff_max, jitter)
    }
}

impl fmt::Debug for HeartbeatConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeartbeatConfig")
            .field("interval", &self.interval)
            .field("ttl", &self.ttl)
            .field("margin", &self.margin)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("backoff_jitter", &self.backoff_jitter)
            .field("clock", &self.clock)
            .finish()
    }
}

/// Builds a [`HeartbeatConfig`]; see there for defaults and rules.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct HeartbeatConfigBuilder {
    interval: Duration,
    ttl: Option<Duration>,
    margin: Duration,
    backoff: Option<(Duration, Duration)>,
    backoff_jitter: bool,
    clock: Option<std::sync::Arc<dyn Clock>>,
}

impl HeartbeatConfigBuilder {
    /// How long a successful beat keeps the entry alive (default: 3 × interval).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Safety slack subtracted from `ttl` (default: zero): cover clock skew
    /// with the store and the time a commit takes to land.
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// Retry delays for failed beats: `initial`, doubling up to `max`
    /// (default: `interval / 8` up to `interval`), each shortened by jitter
    /// (see [`backoff_jitter`](Self::backoff_jitter)). Retries never go past
    /// the token's deadline.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Some((initial, max));
        self
    }

    /// Whether each retry delay is drawn at random from `[0, delay]` (full
    /// jitter; the default), so that processes whose beats failed together,
    /// in an outage of the store, do not retry in lockstep. `false` makes the
    /// delays exact, which tests that assert retry times like.
    pub fn backoff_jitter(mut self, jitter: bool) -> Self {
        self.backoff_jitter = jitter;
        self
    }

    /// The clock to measure deadlines and sleep on (default: [`clock::system()`]).
    pub fn clock(mut self, clock: std::sync::Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first rule broken (see
    /// [`HeartbeatConfig`]).
    pub fn build(self) -> Result<HeartbeatConfig, ConfigError> {
        let interval = self.interval;
        if interval.is_zero() {
            return Err(ConfigError::ZeroInterval);
        }
        let ttl = match self.ttl {
            Some(ttl) => ttl,
            None => interval
                .checked_mul(DEFAULT_TTL_FACTOR)
                .ok_or(ConfigError::TtlTooShort {
                    ttl: Duration::MAX,
                    interval,
                    factor: DEFAULT_TTL_FACTOR,
                })?,
        };
        // An interval so long that the product overflows cannot be satisfied.
        let min_ttl = interval.checked_mul(MIN_TTL_FACTOR);
        if min_ttl.is_none_or(|min_ttl| ttl < min_ttl) {
            return Err(ConfigError::TtlTooShort {
                ttl,
                interval,
                factor: MIN_TTL_FACTOR,
            });
        }
        let limit = ttl - interval;
        if self.margin >= limit {
            return Err(ConfigError::MarginTooLarge {
                margin: self.margin,
                limit,
            });
        }
        let (backoff_initial, backoff_max) = self
            .backoff
            .unwrap_or(((interval / 8).max(Duration::from_nanos(1)), interval));
        if backoff_initial.is_zero() || backoff_max < backoff_initial {
            return Err(ConfigError::InvalidBackoff {
                initial: backoff_initial,
                max: backoff_max,
            });
        }
        Ok(HeartbeatConfig {
            interval,
            ttl,
            margin: self.margin,
            backoff_initial,
            backoff_max,
            backoff_jitter: self.backoff_jitter,
            clock: self.clock.unwrap_or_else(clock::system),
        })
    }
}
