//! Staleness without wall clocks: what a claimer has observed of each entry.
//!
//! A store-backed log never compares timestamps written by different clocks.
//! Each live entry carries a heartbeat counter (`beat`) that its owner's
//! [`refresh`](super::ChangeLog::refresh) increments. A claimer reads
//! `(id, generation, beat)` of the active entries and remembers, on its own
//! monotonic [`Clock`](crate::clock::Clock), when it first saw each triple.
//! An entry is stale for that claimer once the triple has stayed unchanged
//! for the staleness threshold; the claim itself is a conditional update on
//! the same triple, so a beat or a competing claim that lands in between
//! makes it match nothing.
//!
//! # Why this is safe against paused processes and stepped clocks
//!
//! - The first-seen instant is taken *after* the read returns, so it is never
//!   earlier than the moment the store served the value: the claimer
//!   measures at least `staleness` of real silence, never less.
//! - Only durations on one process's monotonic clock are compared. A wall
//!   clock stepping forwards or backwards, on any machine or on the server,
//!   changes nothing; the default clock also counts suspended time.
//! - Clocks of different machines need to agree on *rate* only (monotonic
//!   clocks drift by parts per million), which the slack between a writer's
//!   validity and the staleness threshold absorbs.
//! - Staleness only decides when recovery *may try*: whether a writer's
//!   commit or a recoverer's claim wins is decided by the store, in the
//!   transaction of each (see the fenced commits of the SQL backends).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One active entry as read from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) id: u64,
    pub(crate) generation: u64,
    pub(crate) beat: u64,
}

/// A claimer's memory of the entries it has seen, shared by the clones of
/// one log handle.
#[derive(Debug, Default)]
pub(crate) struct Observations {
    /// Entry id -> (generation, beat) last seen, and when first seen so.
    entries: HashMap<u64, (u64, u64, Instant)>,
}

impl Observations {
    /// Records one read of entry `seen`, made just before `now`; returns
    /// for how long this triple has been observed unchanged.
    pub(crate) fn observe(&mut self, seen: Seen, now: Instant) -> Duration {
        let slot = self
            .entries
            .entry(seen.id)
            .or_insert((seen.generation, seen.beat, now));
        if (slot.0, slot.1) != (seen.generation, seen.beat) {
            *slot = (seen.generation, seen.beat, now);
        }
        now.saturating_duration_since(slot.2)
    }

    /// Records a read of *every* active entry, made just before `now`:
    /// forgets the entries it no longer holds (removed, quarantined), and
    /// returns up to `max` entries unchanged for at least `staleness`,
    /// longest-unchanged first (then by id).
    pub(crate) fn observe_all(
        &mut self,
        rows: impl IntoIterator<Item = Seen>,
        now: Instant,
        staleness: Duration,
        max: usize,
    ) -> Vec<Seen> {
        let mut present = HashMap::with_capacity(self.entries.len());
        let mut ripe = Vec::new();
        for seen in rows {
            let unchanged = self.observe(seen, now);
            present.insert(seen.id, self.entries[&seen.id]);
            if unchanged >= staleness {
                ripe.push((std::cmp::Reverse(unchanged), seen.id, seen));
            }
        }
        self.entries = present;
        ripe.sort_unstable_by_key(|&(unchanged, id, _)| (unchanged, id));
        ripe.into_iter()
            .take(max)
            .map(|(_, _, seen)| seen)
            .collect()
    }

    /// How long until the longest-unchanged entry not yet stale becomes
    /// stale, as of `now` (`None`: nothing is waiting to become stale).
    pub(crate) fn next_stale_in(&self, now: Instant, staleness: Duration) -> Option<Duration> {
        self.entries
            .values()
            .map(|&(_, _, since)| staleness.saturating_sub(now.saturating_duration_since(since)))
            .min()
    }

    /// Forgets an entry (claimed or removed by this handle).
    pub(crate) fn forget(&mut self, id: u64) {
        self.entries.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(10);

    fn seen(id: u64, beat: u64) -> Seen {
        Seen {
            id,
            generation: 1,
            beat,
        }
    }

    #[test]
    fn an_entry_is_stale_only_after_staying_unchanged_for_the_threshold() {
        let t0 = Instant::now();
        let mut obs = Observations::default();
        assert!(obs.observe_all([seen(1, 0)], t0, S, 10).is_empty());
        assert!(obs.observe_all([seen(1, 0)], t0 + S / 2, S, 10).is_empty());
        assert_eq!(obs.next_stale_in(t0 + S / 2, S), Some(S / 2));
        assert_eq!(obs.observe_all([seen(1, 0)], t0 + S, S, 10), [seen(1, 0)]);
    }

    #[test]
    fn a_beat_restarts_the_observation() {
        let t0 = Instant::now();
        let mut obs = Observations::default();
        obs.observe_all([seen(1, 0)], t0, S, 10);
        assert!(obs.observe_all([seen(1, 1)], t0 + S, S, 10).is_empty());
        assert!(
            obs.observe_all([seen(1, 1)], t0 + S * 2 - Duration::from_millis(1), S, 10)
                .is_empty()
        );
        assert_eq!(obs.observe_all([seen(1, 1)], t0 + S * 2, S, 10).len(), 1);
    }

    #[test]
    fn entries_no_longer_read_are_forgotten_and_start_over() {
        let t0 = Instant::now();
        let mut obs = Observations::default();
        obs.observe_all([seen(1, 0), seen(2, 0)], t0, S, 10);
        obs.observe_all([seen(2, 0)], t0 + S / 2, S, 10);
        // Entry 1 disappeared (e.g. quarantined) and came back: a new observation.
        assert_eq!(
            obs.observe_all([seen(1, 0), seen(2, 0)], t0 + S, S, 10),
            [seen(2, 0)]
        );
    }

    #[test]
    fn longest_unchanged_first_up_to_max() {
        let t0 = Instant::now();
        let mut obs = Observations::default();
        obs.observe_all([seen(3, 0)], t0, S, 10);
        obs.observe_all([seen(3, 0), seen(1, 0), seen(2, 0)], t0 + S / 4, S, 10);
        let ripe = obs.observe_all([seen(1, 0), seen(2, 0), seen(3, 0)], t0 + S * 2, S, 2);
        assert_eq!(ripe, [seen(3, 0), seen(1, 0)]);
    }
}
