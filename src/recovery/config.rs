//! Configuration of a [`RecoveryLoop`](super::RecoveryLoop).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::RecoveryConfigError;
use crate::backoff::Backoff;
use crate::clock::{self, Clock};
use crate::heartbeat::HeartbeatConfig;

/// How a [`RecoveryLoop`](super::RecoveryLoop) claims, waits and gives up.
///
/// Build it with [`RecoveryConfig::builder`]. The defaults: batches of 100,
/// 1 s idle wait, error backoff 100 ms × 1.5 capped at 30 s with full jitter, three cleanup
/// attempts per entry (counted in the log, across claims and recoverers),
/// each abandoned after four times the log's staleness threshold.
#[derive(Clone)]
pub struct RecoveryConfig {
    pub(super) batch_size: usize,
    pub(super) idle_wait: Duration,
    pub(super) backoff_initial: Duration,
    pub(super) backoff_factor: f64,
    pub(super) backoff_max: Duration,
    pub(super) backoff_jitter: bool,
    pub(super) cleanup_attempts: u32,
    pub(super) cleanup_deadline: Option<Duration>,
    pub(super) heartbeat_interval: Option<Duration>,
    pub(super) clock: Arc<dyn Clock>,
}

impl RecoveryConfig {
    /// A builder with the defaults.
    pub fn builder() -> RecoveryConfigBuilder {
        RecoveryConfigBuilder {
            config: RecoveryConfig {
                batch_size: 100,
                idle_wait: Duration::from_secs(1),
                backoff_initial: Duration::from_millis(100),
                backoff_factor: 1.5,
                backoff_max: Duration::from_secs(30),
                backoff_jitter: true,
                cleanup_attempts: 3,
                cleanup_deadline: None,
                heartbeat_interval: None,
                clock: clock::system(),
            },
        }
    }

    /// Entries claimed per [`claim_stale`](crate::changelog::ChangeLog::claim_stale).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The wait after a poll that found nothing stale.
    pub fn idle_wait(&self) -> Duration {
        self.idle_wait
    }

    /// Cleanup attempts per entry before it is quarantined.
    pub fn cleanup_attempts(&self) -> u32 {
        self.cleanup_attempts
    }

    /// The per-attempt cleanup deadline for a log whose staleness threshold
    /// is `staleness`: as set, or 4 × `staleness`.
    ///
    /// # Errors
    ///
    /// [`RecoveryConfigError::CleanupDeadlineTooShort`] if the deadline set
    /// is shorter than `staleness`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use leasehold::recovery::{RecoveryConfig, RecoveryConfigError};
    ///
    /// let s = Duration::from_secs(30);
    /// let default = RecoveryConfig::builder().build().unwrap();
    /// assert_eq!(default.cleanup_deadline_for(s), Ok(4 * s));
    ///
    /// let short = RecoveryConfig::builder()
    ///     .cleanup_deadline(Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// assert!(matches!(
    ///     short.cleanup_deadline_for(s),
    ///     Err(RecoveryConfigError::CleanupDeadlineTooShort { .. })
    /// ));
    /// ```
    pub fn cleanup_deadline_for(
        &self,
        staleness: Duration,
    ) -> Result<Duration, RecoveryConfigError> {
        let deadline = self
            .cleanup_deadline
            .unwrap_or_else(|| staleness.saturating_mul(4));
        if deadline < staleness {
            return Err(RecoveryConfigError::CleanupDeadlineTooShort {
                deadline,
                staleness,
            });
        }
        Ok(deadline)
    }

    /// The heartbeat that keeps a claimed batch alive, for a log whose
    /// staleness threshold is `staleness`: every `staleness / 4` unless set,
    /// ttl 3 × interval.
    ///
    /// # Errors
    ///
    /// [`RecoveryConfigError::Heartbeat`] if no valid heartbeat fits in
    /// `staleness` (e.g. a zero threshold).
    pub fn heartbeat_for(
        &self,
        staleness: Duration,
    ) -> Result<HeartbeatConfig, RecoveryConfigError> {
        let interval = self.heartbeat_interval.unwrap_or(staleness / 4);
        let config = HeartbeatConfig::builder(interval)
            .clock(Arc::clone(&self.clock))
            .build()
            .map_err(RecoveryConfigError::Heartbeat)?;
        if config.ttl() > staleness {
            return Err(RecoveryConfigError::TtlExceedsStaleness {
                ttl: config.ttl(),
                staleness,
            });
        }
        Ok(config)
    }
}

impl fmt::Debug for RecoveryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryConfig")
            .field("batch_size", &self.batch_size)
            .field("idle_wait", &self.idle_wait)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_factor", &self.backoff_factor)
            .field("backoff_max", &self.backoff_max)
            .field("backoff_jitter", &self.backoff_jitter)
            .field("cleanup_attempts", &self.cleanup_attempts)
            .field("cleanup_deadline", &self.cleanup_deadline)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("clock", &self.clock)
            .finish()
    }
}

/// Builds a [`RecoveryConfig`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RecoveryConfigBuilder {
    config: RecoveryConfig,
}

impl RecoveryConfigBuilder {
    /// Entries claimed at a time (default 100). Every claimed entry is kept
    /// alive until processed, so a batch costs one refresh per entry per
    /// heartbeat interval.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.config.batch_size = batch_size;
        self
    }

    /// The wait after a poll that found nothing (default 1 s). After a poll
    /// that found work, the loop polls again at once.
    pub fn idle_wait(mut self, idle_wait: Duration) -> Self {
        self.config.idle_wait = idle_wait;
        self
    }

    /// The backoff after a failed poll: `initial`, multiplied by `factor`
    /// after each consecutive failure, capped at `max` (default
    /// 100 ms × 1.5, 30 s). Reset by a successful poll.
    pub fn backoff(mut self, initial: Duration, factor: f64, max: Duration) -> Self {
        self.config.backoff_initial = initial;
        self.config.backoff_factor = factor;
        self.config.backoff_max = max;
        self
    }

    /// Whether each backoff delay is drawn at random from `[0, delay]` (full
    /// jitter; the default), so that recoverers whose polls failed together,
    /// in an outage of the store, do not retry in lockstep. `false` makes
    /// the delays exact, which tests like. A permanent poll error waits the
    /// longest backoff, `max`, without jitter.
    pub fn backoff_jitter(mut self, jitter: bool) -> Self {
        self.config.backoff_jitter = jitter;
        self
    }

    /// Cleanup attempts per entry before it is quarantined (default 3).
    ///
    /// Attempts are counted in the log
    /// ([`start_attempt`](crate::changelog::ChangeLog::start_attempt)), by
    /// every recoverer and across claims, and only when an attempt actually
    /// starts: an entry whose recoverers died before trying it is charged
    /// nothing, one whose cleanup fails, panics, overruns its deadline or
    /// kills its recoverer is charged each time. Failed attempts within one
    /// claim are spaced by the backoff.
    pub fn cleanup_attempts(mut self, attempts: u32) -> Self {
        self.config.cleanup_attempts = attempts;
        self
    }

    /// How long one cleanup attempt may run (default: 4 × the log's
    /// staleness threshold; at least that threshold). An attempt still
    /// running at its deadline is abandoned (its future dropped), counted
    /// as a failed attempt, and its entry is no longer kept alive, so it
    /// goes stale and is retried by whichever recoverer claims it next.
    ///
    /// Dropping the future stops an async cleanup at its next await point;
    /// a cleanup that blocks its thread cannot be stopped and runs on, so it
    /// may overlap the next attempt (which the cleanup's idempotence must
    /// allow anyway). The deadline must be at least the log's staleness
    /// threshold ([`RecoveryConfig::cleanup_deadline_for`]).
    pub fn cleanup_deadline(mut self, deadline: Duration) -> Self {
        self.config.cleanup_deadline = Some(deadline);
        self
    }

    /// The heartbeat interval for claimed batches (default: the log's
    /// staleness threshold / 4; ttl is 3 × interval and must not exceed the
    /// threshold).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = Some(interval);
        self
    }

    /// The clock for waits, backoff and heartbeats (default
    /// [`clock::system`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.config.clock = clock;
        self
    }

    /// Validates and returns the configuration.
    ///
    /// # Errors
    ///
    /// [`RecoveryConfigError`] naming the first bad value.
    pub fn build(self) -> Result<RecoveryConfig, RecoveryConfigError> {
        let c = &self.config;
        if c.batch_size == 0 {
            return Err(RecoveryConfigError::ZeroBatch);
        }
        if c.backoff_initial.is_zero()
            || c.backoff_max < c.backoff_initial
            || !(c.backoff_factor >= 1.0 && c.backoff_factor.is_finite())
        {
            return Err(RecoveryConfigError::InvalidBackoff {
                initial: c.backoff_initial,
                factor: c.backoff_factor,
                max: c.backoff_max,
            });
        }
        if c.cleanup_attempts == 0 {
            return Err(RecoveryConfigError::ZeroCleanupAttempts);
        }
        Ok(self.config)
    }
}

impl RecoveryConfig {
    /// A fresh backoff for failed polls or cleanup attempts.
    pub(super) fn backoff(&self) -> Backoff {
        let jitter = if self.backoff_jitter { 1.0 } else { 0.0 };
        Backoff::new(
            self.backoff_initial,
            self.backoff_factor,
            self.backoff_max,
            jitter,
        )
    }
}
