//! The retry schedule of a [`RecoveryScan`](super::RecoveryScan): failed
//! attempts counted per key, the give-up decision, the backoff queue, and
//! what a re-check before a retry decides.

use std::collections::HashMap;
use std::time::Instant;

use super::progress::ScanKey;
use super::retry::{RetryPolicy, RetryQueue};

/// What a re-check before a retry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recheck {
    /// The key still needs its sync: run it again.
    NeedsWork,
    /// The work is done (another instance, or a request, did it): settle the
    /// key without running the sync.
    Done,
}

/// What to do with a key whose sync failed or was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterFailure {
    /// It is scheduled for a retry.
    Retry,
    /// It reached [`RetryPolicy::max_attempts`]: settle it as given up.
    GiveUp,
}

/// Keys waiting for a retry, and the failed attempts of every unfinished key.
pub(super) struct RetrySchedule<K: ScanKey> {
    policy: RetryPolicy,
    queue: RetryQueue<K>,
    /// Failed attempts per unfinished key.
    failures: HashMap<K, u32>,
}

impl<K: ScanKey> RetrySchedule<K> {
    /// A schedule with `policy` (validated), jittered from `jitter_seed`.
    pub(super) fn new(policy: RetryPolicy, jitter_seed: u64) -> Self {
        Self {
            policy,
            queue: RetryQueue::new(policy, jitter_seed).expect("validated in `RecoveryScan::new`"),
            failures: HashMap::new(),
        }
    }

    /// Counts a failed attempt of `key` and decides: retry after a backoff
    /// from `now`, or give up.
    pub(super) fn failed(&mut self, key: K, now: Instant) -> AfterFailure {
        let failures = self.failures.entry(key.clone()).or_insert(0);
        *failures += 1;
        let failures = *failures;
        let give_up = self
            .policy
            .max_attempts
            .is_some_and(|max| failures >= max.get());
        if give_up {
            self.failures.remove(&key);
            AfterFailure::GiveUp
        } else {
            self.queue.schedule(key, failures, now);
            AfterFailure::Retry
        }
    }

    /// Forgets the attempts of `key`, which settled.
    pub(super) fn settled(&mut self, key: &K) {
        self.failures.remove(key);
    }

    /// Unknown is not done: asks again after the next, longer backoff.
    pub(super) fn recheck_failed(&mut self, key: K, retry: u32, now: Instant) {
        self.queue.schedule(key, retry.saturating_add(1), now);
    }

    /// The earliest retry due by `now`: its key and retry number.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(K, u32)> {
        self.queue
            .pop_due(now)
            .map(|retry| (retry.key, retry.retry))
    }

    /// When the next retry is due, if any waits.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.queue.next_due()
    }

    /// Whether no retry waits.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
