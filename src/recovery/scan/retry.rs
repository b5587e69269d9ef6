//! [`RetryQueue`]: keys waiting for a retry, each due after a capped
//! exponential backoff with jitter.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use super::error::ScanConfigError;
use crate::backoff::Backoff;

/// How a failed or cancelled key is retried.
///
/// The `n`th retry of a key waits `min(initial × 2ⁿ⁻¹, max)`, shortened by a
/// random fraction of at most `jitter` of it (so `jitter = 0.5` waits between
/// half and all of the backoff, and retries that failed together spread
/// out instead of hitting the backend together again).
///
/// # Examples
///
/// ```
/// use leasehold::recovery::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::default();
/// assert_eq!(policy.backoff(1), Duration::from_secs(1));
/// assert_eq!(policy.backoff(3), Duration::from_secs(4));
/// assert_eq!(policy.backoff(10), Duration::from_secs(30)); // capped
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// The backoff before the first retry (default 1 s).
    pub initial: Duration,
    /// The cap on the backoff (default 30 s).
    pub max: Duration,
    /// The largest fraction of a backoff that jitter removes, in `0.0..=1.0`
    /// (default 0.5).
    pub jitter: f64,
    /// Give a key up after this many failed attempts (first run included);
    /// `None` (the default) retries until it settles. A given-up key is
    /// reported, and the resume point moves past it; the store saves it with
    /// the checkpoint, so a run resumed after a crash reports it again (a
    /// store that cannot keep it holds the saved resume point before it
    /// instead: see [`ProgressStore::keeps_given_up`](super::ProgressStore::keeps_given_up)).
    pub max_attempts: Option<NonZeroU32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.5,
            max_attempts: None,
        }
    }
}

impl RetryPolicy {
    /// Sets [`initial`](Self::initial), the backoff before the first retry.
    #[must_use]
    pub fn with_initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Sets [`max`](Self::max), the cap on the backoff.
    #[must_use]
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets [`jitter`](Self::jitter), the largest fraction of a backoff
    /// that jitter removes (`0.0` for exact delays).
    #[must_use]
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts): give a key up after this
    /// many failed attempts (`None`: never).
    #[must_use]
    pub fn with_max_attempts(mut self, max_attempts: Option<NonZeroU32>) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The backoff before retry number `retry` (1 for the first), before
    /// jitter: `min(initial × 2^(retry-1), max)`.
    pub fn backoff(&self, retry: u32) -> Duration {
        Backoff::new(self.initial, 2.0, self.max, 0.0).delay_for(retry)
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ScanConfigError`] if `initial` is zero, `max < initial`, or `jitter` is
    /// outside `0.0..=1.0`.
    pub fn validate(&self) -> Result<(), ScanConfigError> {
        let error = |setting, reason: &str| {
            Err(ScanConfigError {
                setting,
                reason: reason.to_owned(),
            })
        };
        if self.initial.is_zero() {
            return error("retry.initial", "must be positive");
        }
        if self.max < self.initial {
            return error("retry.max", "must be at least `retry.initial`");
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return error("retry.jitter", "must lie in 0.0..=1.0");
        }
        Ok(())
    }
}

/// A key that is due for a retry, from [`RetryQueue::pop_due`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Retry<K> {
    /// The key.
    pub(crate) key: K,
    /// Which retry this is: 1 for the first.
    pub(crate) retry: u32,
    /// When it became due.
    pub(crate) due: Instant,
}

/// Keys waiting for a retry, ordered by when they become due.
///
/// The queue only keeps time; running the retries, and counting them toward
/// a concurrency cap, is its caller's job ([`RecoveryScan`](super::RecoveryScan)
/// does both, and re-checks each key before retrying it). Time comes from the
/// caller, so tests can drive it with a [`ManualClock`](crate::clock::ManualClock).
#[derive(Debug, Clone)]
pub(crate) struct RetryQueue<K> {
    /// The policy's backoff, its jitter seeded: deterministic per seed, so
    /// tests reproduce.
    backoff: Backoff,
    /// By (due, insertion sequence): equal deadlines pop first-in first-out.
    queue: BTreeMap<(Instant, u64), (K, u32)>,
    sequence: u64,
}

impl<K> RetryQueue<K> {
    /// An empty queue; `seed` seeds the jitter.
    ///
    /// # Errors
    ///
    /// As [`RetryPolicy::validate`].
    pub(crate) fn new(policy: RetryPolicy, seed: u64) -> Result<Self, ScanConfigError> {
        policy.validate()?;
        Ok(Self {
            backoff: Backoff::new(policy.initial, 2.0, policy.max, policy.jitter).seeded(seed),
            queue: BTreeMap::new(),
            sequence: 0,
        })
    }

    /// Schedules retry number `retry` (1 for the first) of `key`, due after
    /// the policy's jittered backoff from `now`. Returns when it is due.
    pub(crate) fn schedule(&mut self, key: K, retry: u32, now: Instant) -> Instant {
        let due = now + self.backoff.delay_for(retry);
        self.sequence += 1;
        self.queue.insert((due, self.sequence), (key, retry));
        due
    }

    /// Removes and returns the earliest retry due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Retry<K>> {
        let entry = self.queue.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let ((due, _), (key, retry)) = entry.remove_entry();
        Some(Retry { key, retry, due })
    }

    /// When the earliest retry is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(due, _)| *due)
    }

    /// Whether no key is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn jittered_delays_stay_within_the_jitter_band_and_vary() {
        let policy = RetryPolicy::default();
        let mut queue = RetryQueue::new(policy, 42).unwrap();
        let now = Instant::now();
        let mut delays = Vec::new();
        for retry in 1..=8 {
            for _ in 0..50 {
                let delay = queue.schedule((), retry, now) - now;
                let backoff = policy.backoff(retry);
                assert!(
                    delay <= backoff && delay >= backoff / 2,
                    "{delay:?} vs {backoff:?}"
                );
                delays.push(delay);
            }
        }
        delays.sort();
        delays.dedup();
        assert!(delays.len() > 300, "jitter should spread delays");
    }

    #[test]
    fn backoff_doubles_from_initial_and_saturates_at_max() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let backoffs: Vec<_> = (1..=6).map(|r| policy.backoff(r).as_millis()).collect();
        assert_eq!(backoffs, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn invalid_policies_are_rejected_by_setting_name() {
        let bad = |policy: RetryPolicy| RetryQueue::<()>::new(policy, 0).unwrap_err().setting;
        let base = RetryPolicy::default();
        assert_eq!(
            bad(RetryPolicy {
                initial: Duration::ZERO,
                ..base
            }),
            "retry.initial"
        );
        assert_eq!(
            bad(RetryPolicy {
                max: Duration::from_millis(1),
                ..base
            }),
            "retry.max"
        );
        assert_eq!(
            bad(RetryPolicy {
                jitter: 1.5,
                ..base
            }),
            "retry.jitter"
        );
    }

    #[test]
    fn due_retries_pop_in_deadline_order() {
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let mut queue = RetryQueue::new(policy, 0).unwrap();
        let now = Instant::now();
        queue.schedule('c', 3, now);
        queue.schedule('a', 1, now);
        queue.schedule('b', 2, now);
        let later = now + Duration::from_secs(60);
        let order: Vec<_> = std::iter::from_fn(|| queue.pop_due(later))
            .map(|r| r.key)
            .collect();
        assert_eq!(order, ['a', 'b', 'c']);
    }
}
