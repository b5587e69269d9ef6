//! The crate's one retry backoff: capped exponential, with full jitter.
//!
//! Every retry loop waits a [`Backoff`]'s delay on its injected
//! [`Clock`](crate::clock::Clock): a heartbeat's failed beat, a lease's
//! failed renewal, the recovery loop's failed poll or cleanup attempt, and a
//! recovery scan's failed sync. The delay before retry `n` (1 for the first)
//! is `initial × factor^(n-1)`, capped at `max`; jitter then removes a random
//! part of it, up to `jitter × delay` (`1.0` is full jitter, uniform in
//! `[0, delay]`; `0.0` gives exact delays, for tests that assert retry
//! times). Jitter is what keeps processes that failed together — an outage
//! of the store — from retrying in lockstep, every retry a thundering herd.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Retry delays after consecutive failures; see the [module docs](self).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    factor: f64,
    max: Duration,
    /// The delay before jitter of the next [`next_delay`](Self::next_delay).
    next: Duration,
    /// The largest fraction of a delay the jitter removes, in `0.0..=1.0`.
    jitter: f64,
    /// xorshift64* state: cheap, no random-number crate, and reproducible
    /// from a seed (see [`seeded`](Self::seeded)).
    rng: u64,
}

impl Backoff {
    /// `initial`, multiplied by `factor` (at least 1) per failure, capped at
    /// `max`; jitter removes up to the fraction `jitter` of each delay. Seeded
    /// at random, so two processes (or two loops) draw different delays.
    pub(crate) fn new(initial: Duration, factor: f64, max: Duration, jitter: f64) -> Self {
        Backoff {
            initial,
            factor,
            max,
            next: initial,
            jitter: jitter.clamp(0.0, 1.0),
            rng: 0,
        }
        .seeded(random_seed())
    }

    /// The same backoff with its jitter drawn from `seed`: the same seed
    /// draws the same delays.
    pub(crate) fn seeded(mut self, seed: u64) -> Self {
        // xorshift must not start at zero.
        self.rng = seed ^ 0x9E37_79B9_7F4A_7C15 | 1;
        self
    }

    /// The (jittered) delay before the next retry; the one after grows.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.grow(delay);
        self.jittered(delay)
    }

    /// The (jittered) delay before retry number `retry` (1 for the first),
    /// for callers that count retries themselves (a scan, per key).
    pub(crate) fn delay_for(&mut self, retry: u32) -> Duration {
        let mut delay = self.initial;
        for _ in 1..retry {
            if delay >= self.max {
                break;
            }
            delay = self.grow(delay);
        }
        self.jittered(delay.min(self.max))
    }

    /// After a success: the next failure starts again from `initial`.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }

    /// Retrying soon cannot help: the next delays are the longest.
    pub(crate) fn exhaust(&mut self) {
        self.next = self.max;
    }

    /// The longest delay, without jitter.
    pub(crate) fn max(&self) -> Duration {
        self.max
    }

    fn grow(&self, delay: Duration) -> Duration {
        let grown = if self.factor == 2.0 {
            // Exact for the common doubling (no float rounding).
            Some(delay.saturating_mul(2))
        } else {
            Duration::try_from_secs_f64(delay.as_secs_f64() * self.factor).ok()
        };
        grown.map_or(self.max, |grown| grown.min(self.max))
    }

    fn jittered(&mut self, delay: Duration) -> Duration {
        if self.jitter == 0.0 {
            return delay;
        }
        let cut = delay.mul_f64(self.jitter * self.next_unit());
        delay.saturating_sub(cut)
    }

    /// A uniform value in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let bits = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        bits as f64 / (1_u64 << 53) as f64
    }
}

/// A seed from std's per-process random hash keys (a fresh one per call).
pub(crate) fn random_seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x6c65_6173_6568_6f6c); // any input; the keys are random
    hasher.finish()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn without_jitter_delays_grow_by_the_factor_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(100 * MS, 2.0, 500 * MS, 0.0);
        let delays: Vec<_> = (0..5).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays, [100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), 100 * MS);
        backoff.exhaust();
        assert_eq!(backoff.next_delay(), 500 * MS);
        assert_eq!(backoff.delay_for(1), 100 * MS);
        assert_eq!(backoff.delay_for(3), 400 * MS);
        assert_eq!(backoff.delay_for(u32::MAX), 500 * MS);
    }

    #[test]
    fn full_jitter_spreads_delays_below_the_exponential_and_a_seed_repeats_them() {
        let draw = |seed| {
            let mut backoff = Backoff::new(100 * MS, 1.5, 10_000 * MS, 1.0).seeded(seed);
            (1..=200)
                .map(|n| backoff.delay_for(n % 8 + 1))
                .collect::<Vec<_>>()
        };
        let delays = draw(7);
        let mut exact = Backoff::new(100 * MS, 1.5, 10_000 * MS, 0.0);
        for (n, delay) in (1..=200).zip(&delays) {
            assert!(*delay <= exact.delay_for(n % 8 + 1), "{delay:?}");
        }
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 150, "jitter should spread delays");
        assert_eq!(draw(7), delays);
        assert_ne!(draw(8), delays);
    }
}
