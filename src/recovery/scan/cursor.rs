//! [`SettledCursor`]: the low-water mark of a scan over an ordered key space,
//! and the [`ResumePoint`] it reports.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::error::CursorError;

/// Where a scan starts reading keys: the value a checkpoint stores.
///
/// Ordered as positions on the key line: `Start` first, then by key, with
/// `From(k)` (which still reads `k`) before `After(k)` (which does not).
///
/// # Examples
///
/// ```
/// use leasehold::recovery::ResumePoint;
///
/// let point = ResumePoint::From(10_u64);
/// assert!(point.covers(&9) && !point.covers(&10));
/// assert!(ResumePoint::After(10).covers(&10));
/// assert!(ResumePoint::Start < ResumePoint::From(0) && ResumePoint::From(10) < ResumePoint::After(10));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResumePoint<K> {
    /// From the first key of the key space.
    Start,
    /// From this key, inclusive: it is (or may be) unfinished.
    From(K),
    /// After this key, exclusive: every key up to it is settled.
    After(K),
}

impl<K: Ord> ResumePoint<K> {
    /// Whether a scan resuming here skips `key`, i.e. whether `key` lies
    /// before this point. A checkpoint must never cover unfinished work.
    pub fn covers(&self, key: &K) -> bool {
        match self {
            ResumePoint::Start => false,
            ResumePoint::From(from) => key < from,
            ResumePoint::After(after) => key <= after,
        }
    }
}

impl<K> ResumePoint<K> {
    /// The key this point names, if any.
    pub fn key(&self) -> Option<&K> {
        match self {
            ResumePoint::Start => None,
            ResumePoint::From(key) | ResumePoint::After(key) => Some(key),
        }
    }

    /// Converts the key (e.g. to and from its stored bytes).
    pub fn map<U>(self, f: impl FnOnce(K) -> U) -> ResumePoint<U> {
        match self {
            ResumePoint::Start => ResumePoint::Start,
            ResumePoint::From(key) => ResumePoint::From(f(key)),
            ResumePoint::After(key) => ResumePoint::After(f(key)),
        }
    }

    /// As [`map`](Self::map), with a conversion that can fail.
    ///
    /// # Errors
    ///
    /// The conversion's error.
    pub fn try_map<U, E>(self, f: impl FnOnce(K) -> Result<U, E>) -> Result<ResumePoint<U>, E> {
        Ok(match self {
            ResumePoint::Start => ResumePoint::Start,
            ResumePoint::From(key) => ResumePoint::From(f(key)?),
            ResumePoint::After(key) => ResumePoint::After(f(key)?),
        })
    }
}

impl<K: Ord> PartialOrd for ResumePoint<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Ord> Ord for ResumePoint<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        use ResumePoint::{After, From, Start};
        match (self, other) {
            (Start, Start) => Ordering::Equal,
            (Start, _) => Ordering::Less,
            (_, Start) => Ordering::Greater,
            (From(a), From(b)) | (After(a), After(b)) => a.cmp(b),
            (From(a), After(b)) => a.cmp(b).then(Ordering::Less),
            (After(a), From(b)) => a.cmp(b).then(Ordering::Greater),
        }
    }
}

/// Where a key tracked by a [`SettledCursor`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum KeyState {
    /// Its job is running.
    InFlight,
    /// Its job did not finish the work; it waits for a retry.
    AwaitingRetry,
    /// Done, but an earlier key is not, so the resume point cannot pass it yet.
    Settled,
}

/// A low-water mark over an ordered key space: the point a scan can resume
/// from without skipping unfinished work.
///
/// Keys enter in increasing order with [`begin`](Self::begin) (in flight),
/// may wait for a retry ([`defer`](Self::defer), [`retry`](Self::retry)),
/// and leave with [`settle`](Self::settle), in any order. The
/// [`resume_point`](Self::resume_point) is "from the smallest unfinished key"
/// while any key is unfinished, else "after the scan position".
///
/// Pick it over "the last key whose job finished": with jobs finishing out of
/// order, that key can lie past a key still in flight, and a checkpoint of it
/// loses the earlier key's work after a crash.
///
/// The cursor is a plain value with `&mut` methods: the scan that owns it
/// applies every transition from one task, so it needs no lock.
#[derive(Debug, Clone)]
pub(crate) struct SettledCursor<K> {
    /// The point the cursor was created at (a loaded checkpoint).
    start: ResumePoint<K>,
    /// The largest key begun: keys are begun in strictly increasing order.
    scanned: Option<K>,
    /// Every begun key at or after the resume point, with its state.
    ///
    /// **Invariant**: the first entry, if any, is not `Settled`. `settle`
    /// re-establishes it by popping settled entries off the front, so the
    /// resume point `From(first key)` is the smallest unfinished key.
    window: BTreeMap<K, KeyState>,
    in_flight: usize,
    awaiting_retry: usize,
    /// Keys the resume point has moved past since creation.
    passed: u64,
}

impl<K: Ord + Clone> SettledCursor<K> {
    /// A cursor resuming at `start`: the first key begun must lie at or
    /// after it.
    pub(crate) fn new(start: ResumePoint<K>) -> Self {
        Self {
            start,
            scanned: None,
            window: BTreeMap::new(),
            in_flight: 0,
            awaiting_retry: 0,
            passed: 0,
        }
    }

    /// The point a scan can resume from without skipping unfinished work.
    ///
    /// **Never passes unfinished work**: every unfinished key is in `window`
    /// and the first entry is unfinished (the invariant on `window`), so
    /// `From(first)` covers only settled keys and keys before `start`; with
    /// nothing unfinished, every begun key is settled and
    /// `After(scanned)` covers only those.
    ///
    /// **Never moves backwards**: the first entry only leaves `window` by
    /// settling, which moves the point to a later entry (keys are ordered)
    /// or to `After(scanned)`, and `scanned` is at or after every entry. A
    /// key begun later is after `scanned`, so it never becomes the first
    /// entry while an earlier one is present, and `From(new) > After(old
    /// scanned)`. Before anything is begun the point is `start`, and
    /// [`begin`](Self::begin) refuses keys that `start` covers.
    pub(crate) fn resume_point(&self) -> ResumePoint<K> {
        if let Some(first) = self.window.keys().next() {
            ResumePoint::From(first.clone())
        } else if let Some(scanned) = &self.scanned {
            ResumePoint::After(scanned.clone())
        } else {
            self.start.clone()
        }
    }

    /// Marks `key` in flight. Keys must be begun in strictly increasing
    /// order, at or after the cursor's start.
    ///
    /// # Errors
    ///
    /// [`CursorError::OutOfOrder`] if `key` is not after the last key begun,
    /// or lies before the start; the cursor is unchanged.
    pub(crate) fn begin(&mut self, key: K) -> Result<(), CursorError> {
        let after_scanned = self.scanned.as_ref().is_none_or(|scanned| key > *scanned);
        if !after_scanned || self.start.covers(&key) {
            return Err(CursorError::OutOfOrder);
        }
        self.scanned = Some(key.clone());
        self.window.insert(key, KeyState::InFlight);
        self.in_flight += 1;
        Ok(())
    }

    /// Marks an in-flight `key` as waiting for a retry; the resume point
    /// stays at or before it.
    ///
    /// # Errors
    ///
    /// [`CursorError::NotInFlight`] if `key` is not in flight.
    pub(crate) fn defer(&mut self, key: &K) -> Result<(), CursorError> {
        self.transition(key, KeyState::InFlight, KeyState::AwaitingRetry)?;
        self.in_flight -= 1;
        self.awaiting_retry += 1;
        Ok(())
    }

    /// Marks a `key` that awaited a retry as in flight again.
    ///
    /// # Errors
    ///
    /// [`CursorError::NotAwaitingRetry`] if `key` was not deferred.
    pub(crate) fn retry(&mut self, key: &K) -> Result<(), CursorError> {
        self.transition(key, KeyState::AwaitingRetry, KeyState::InFlight)
            .map_err(|_| CursorError::NotAwaitingRetry)?;
        self.awaiting_retry -= 1;
        self.in_flight += 1;
        Ok(())
    }

    /// Settles `key` (in flight or awaiting a retry: a re-check may find it
    /// done). Returns whether the resume point moved.
    ///
    /// # Errors
    ///
    /// [`CursorError::NotUnfinished`] if `key` is not tracked or already
    /// settled.
    pub(crate) fn settle(&mut self, key: &K) -> Result<bool, CursorError> {
        let state = self.window.get_mut(key).ok_or(CursorError::NotUnfinished)?;
        match std::mem::replace(state, KeyState::Settled) {
            KeyState::InFlight => self.in_flight -= 1,
            KeyState::AwaitingRetry => self.awaiting_retry -= 1,
            KeyState::Settled => return Err(CursorError::NotUnfinished),
        }
        // Restore the invariant: the first entry is unfinished.
        let mut moved = false;
        while let Some(entry) = self.window.first_entry() {
            if *entry.get() != KeyState::Settled {
                break;
            }
            entry.remove();
            self.passed += 1;
            moved = true;
        }
        Ok(moved)
    }

    fn transition(&mut self, key: &K, from: KeyState, to: KeyState) -> Result<(), CursorError> {
        match self.window.get_mut(key) {
            Some(state) if *state == from => {
                *state = to;
                Ok(())
            }
            _ => Err(CursorError::NotInFlight),
        }
    }

    /// The largest key begun.
    #[cfg(test)]
    pub(crate) fn scanned(&self) -> Option<&K> {
        self.scanned.as_ref()
    }

    /// Keys begun but not yet passed by the resume point: unfinished keys,
    /// and settled keys waiting behind one. A crash now repeats the work of
    /// the settled ones, so a scan bounds this number.
    pub(crate) fn window(&self) -> usize {
        self.window.len()
    }

    /// Keys in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Keys waiting for a retry.
    pub(crate) fn awaiting_retry(&self) -> usize {
        self.awaiting_retry
    }

    /// Keys the resume point has moved past since the cursor was created:
    /// the count a scan persists by, in settled items rather than key
    /// distance.
    pub(crate) fn passed(&self) -> u64 {
        self.passed
    }

    /// Whether no key is in flight or waiting for a retry.
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.awaiting_retry == 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Random begin / defer / retry / settle sequences against a model: after
    /// every step the resume point covers no unfinished key, never moves
    /// backwards, and is exactly "from the smallest unfinished key" or "after
    /// the scan position".
    #[test]
    fn cursor_resume_point_never_passes_unfinished_key_in_any_completion_order() {
        for seed in 0..400 {
            let mut rng = StdRng::seed_from_u64(seed);
            let start = rng.random_range(0..20_u64);
            let mut cursor = SettledCursor::new(ResumePoint::After(start));
            let mut next = start + 1;
            let mut in_flight: Vec<u64> = Vec::new();
            let mut awaiting: Vec<u64> = Vec::new();
            let mut last = cursor.resume_point();
            let mut settled = 0_u64;
            for _ in 0..300 {
                match rng.random_range(0..10) {
                    0..=3 => {
                        next += rng.random_range(1..4); // sparse keys
                        cursor.begin(next).unwrap();
                        in_flight.push(next);
                    }
                    4..=6 if !in_flight.is_empty() => {
                        let key = in_flight.swap_remove(rng.random_range(0..in_flight.len()));
                        cursor.settle(&key).unwrap();
                        settled += 1;
                    }
                    7 if !in_flight.is_empty() => {
                        let key = in_flight.swap_remove(rng.random_range(0..in_flight.len()));
                        cursor.defer(&key).unwrap();
                        awaiting.push(key);
                    }
                    8 if !awaiting.is_empty() => {
                        let key = awaiting.swap_remove(rng.random_range(0..awaiting.len()));
                        cursor.retry(&key).unwrap();
                        in_flight.push(key);
                    }
                    9 if !awaiting.is_empty() => {
                        // a re-check found the work done
                        let key = awaiting.swap_remove(rng.random_range(0..awaiting.len()));
                        cursor.settle(&key).unwrap();
                        settled += 1;
                    }
                    _ => {}
                }
                let point = cursor.resume_point();
                for key in in_flight.iter().chain(&awaiting) {
                    assert!(
                        !point.covers(key),
                        "seed {seed}: {point:?} passes unfinished {key}"
                    );
                }
                assert!(
                    point >= last,
                    "seed {seed}: moved backwards {last:?} -> {point:?}"
                );
                let expected = match in_flight.iter().chain(&awaiting).min() {
                    Some(min) => ResumePoint::From(*min),
                    None if next > start + 1 || cursor.scanned().is_some() => {
                        ResumePoint::After(*cursor.scanned().unwrap())
                    }
                    None => ResumePoint::After(start),
                };
                assert_eq!(point, expected, "seed {seed}");
                assert_eq!(cursor.in_flight(), in_flight.len());
                assert_eq!(cursor.awaiting_retry(), awaiting.len());
                last = point;
            }
            assert!(cursor.passed() <= settled);
        }
    }

    #[test]
    fn begin_refuses_keys_at_or_before_the_scan_position_or_start() {
        let mut cursor = SettledCursor::new(ResumePoint::After(5_u32));
        assert_eq!(cursor.begin(5), Err(CursorError::OutOfOrder));
        cursor.begin(6).unwrap();
        assert_eq!(cursor.begin(6), Err(CursorError::OutOfOrder));
        assert_eq!(cursor.begin(3), Err(CursorError::OutOfOrder));
        assert_eq!(cursor.resume_point(), ResumePoint::From(6));
    }

    #[test]
    fn untouched_cursor_reports_its_start() {
        let cursor = SettledCursor::new(ResumePoint::From(9_u32));
        assert_eq!(cursor.resume_point(), ResumePoint::From(9));
    }

    #[test]
    fn wrong_transitions_are_errors_and_change_nothing() {
        let mut cursor = SettledCursor::new(ResumePoint::Start);
        cursor.begin(1_u32).unwrap();
        assert_eq!(cursor.retry(&1), Err(CursorError::NotAwaitingRetry));
        assert_eq!(cursor.defer(&2), Err(CursorError::NotInFlight));
        cursor.begin(2).unwrap();
        cursor.settle(&2).unwrap();
        assert_eq!(cursor.settle(&2), Err(CursorError::NotUnfinished));
        assert_eq!(cursor.defer(&2), Err(CursorError::NotInFlight));
        assert_eq!((cursor.in_flight(), cursor.window()), (1, 2));
    }
}
