//! [`LeaseConfig`] and its validating builder.

use std::fmt;
use std::time::Duration;

use super::error::ConfigError;
use crate::clock::Clock;
use crate::heartbeat::HeartbeatConfig;

/// How often a lease heartbeats: four times per ttl, so three heartbeats in
/// a row may fail before the shard expires the reader.
pub const HEARTBEATS_PER_TTL: u32 = 4;

/// A validated lease configuration, reusable for many leases.
///
/// | setting | default | meaning |
/// |---|---|---|
/// | `ttl` | (required) | how long the shard keeps a reader that stopped heartbeating |
/// | period | `ttl / 4` (derived) | time between regular heartbeats |
/// | `jitter` | period / 8 | each tick comes up to this much *early*, drawn per lease, per tick |
/// | `margin` | zero | the lease's [`Validity`](crate::heartbeat::Validity) ends at `heartbeat start + ttl - margin` |
/// | `backoff` | period / 8 doubling up to the period | delay between retries of a failed heartbeat |
/// | `backoff_jitter` | on | each retry delay drawn from `[0, delay]` (full jitter) |
/// | `clock` | [`clock::system()`](crate::clock::system) | the clock ticks and deadlines are measured on |
///
/// The ttl, margin and backoff follow the [`HeartbeatConfig`] rules (the
/// lease *is* a heartbeat with `interval = ttl / 4`, and reuses its
/// validation); the jitter must be less than the period. Jitter only ever
/// makes a tick earlier, so it never stretches the time between renewals.
///
/// # Examples
///
/// ```
/// use leasehold::lease::{ConfigError, LeaseConfig};
/// use std::time::Duration;
///
/// let config = LeaseConfig::builder(Duration::from_secs(60)).build().unwrap();
/// assert_eq!(config.period(), Duration::from_secs(15));
/// assert_eq!(config.jitter(), Duration::from_millis(1875));
///
/// let bad = LeaseConfig::builder(Duration::from_secs(60)).jitter(Duration::from_secs(15)).build();
/// assert!(matches!(bad, Err(ConfigError::JitterTooLarge { .. })));
/// ```
#[derive(Clone)]
pub struct LeaseConfig {
    pub(super) heartbeat: HeartbeatConfig,
    pub(super) jitter: Duration,
}

impl LeaseConfig {
    /// A builder for leases the shard expires after `ttl` without a heartbeat.
    pub fn builder(ttl: Duration) -> LeaseConfigBuilder {
        LeaseConfigBuilder {
            ttl,
            jitter: None,
            margin: Duration::ZERO,
            backoff: None,
            backoff_jitter: true,
            clock: None,
        }
    }

    /// The ttl.
    pub fn ttl(&self) -> Duration {
        self.heartbeat.ttl()
    }

    /// The time between regular heartbeats: `ttl / 4`.
    pub fn period(&self) -> Duration {
        self.heartbeat.interval()
    }

    /// The most a tick may come early.
    pub fn jitter(&self) -> Duration {
        self.jitter
    }

    /// `ttl - margin`: how long after a successful heartbeat's start the
    /// lease's validity lasts.
    pub fn validity_window(&self) -> Duration {
        self.heartbeat.validity_window()
    }

    /// The clock ticks and deadlines are measured on.
    pub fn clock(&self) -> &std::sync::Arc<dyn Clock> {
        self.heartbeat.clock()
    }
}

impl fmt::Debug for LeaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseConfig")
            .field("heartbeat", &self.heartbeat)
            .field("jitter", &self.jitter)
            .finish()
    }
}

/// Builds a [`LeaseConfig`]; see there for defaults and rules.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct LeaseConfigBuilder {
    ttl: Duration,
    jitter: Option<Duration>,
    margin: Duration,
    backoff: Option<(Duration, Duration)>,
    backoff_jitter: bool,
    clock: Option<std::sync::Arc<dyn Clock>>,
}

impl LeaseConfigBuilder {
    /// The most a tick may come early (default: period / 8). Zero makes the
    /// ticks exact, which tests like.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Safety slack subtracted from the ttl for the lease's validity
    /// (default: zero).
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// Retry delays for failed heartbeats: `initial`, doubling up to `max`
    /// (default: period / 8 up to the period), each shortened by jitter (see
    /// [`backoff_jitter`](Self::backoff_jitter)). Retries stop at the lease's
    /// validity deadline.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Some((initial, max));
        self
    }

    /// Whether each retry delay is drawn at random from `[0, delay]` (full
    /// jitter; the default), so that readers whose heartbeats failed
    /// together do not retry in lockstep. `false` makes the delays exact,
    /// which tests like.
    pub fn backoff_jitter(mut self, jitter: bool) -> Self {
        self.backoff_jitter = jitter;
        self
    }

    /// The clock (default: [`clock::system()`](crate::clock::system)).
    pub fn clock(mut self, clock: std::sync::Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Heartbeat`] if the ttl is zero (or too small to divide
    /// into periods), the margin is not less than `3/4 × ttl`, or the backoff
    /// is invalid; [`ConfigError::JitterTooLarge`] if the jitter is not less
    /// than the period.
    pub fn build(self) -> Result<LeaseConfig, ConfigError> {
        let period = self.ttl / HEARTBEATS_PER_TTL;
        let mut heartbeat = HeartbeatConfig::builder(period)
            .ttl(self.ttl)
            .margin(self.margin);
        heartbeat = heartbeat.backoff_jitter(self.backoff_jitter);
        if let Some((initial, max)) = self.backoff {
            heartbeat = heartbeat.backoff(initial, max);
        }
        if let Some(clock) = self.clock {
            heartbeat = heartbeat.clock(clock);
        }
        let heartbeat = heartbeat.build()?;
        let jitter = self.jitter.unwrap_or(period / 8);
        if jitter >= period {
            return Err(ConfigError::JitterTooLarge { jitter, period });
        }
        Ok(LeaseConfig { heartbeat, jitter })
    }
}
