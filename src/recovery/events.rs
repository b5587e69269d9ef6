//! What a [`RecoveryLoop`](super::RecoveryLoop) reports as it goes: one
//! function per event, the only place the loop's counters, quarantine
//! reports and last error change.
//!
//! Today each event updates the loop's shared state (read through
//! [`RecoveryLoop::stats`](super::RecoveryLoop::stats) and friends); an
//! event stream (e.g. `tracing` events) is added here, and only here.

use std::sync::Arc;

use super::error::RecoveryError;
use super::recovery_loop::{QuarantineReport, REPORTS_KEPT, State};
use crate::WatchCell;
use crate::changelog::{EntryId, Fence};

/// A poll of the log ran (whatever its outcome).
pub(super) fn polled(state: &WatchCell<State>) {
    state.modify(|s| s.stats.polls += 1);
}

/// A poll of the log failed.
pub(super) fn poll_failed(state: &WatchCell<State>, error: RecoveryError) {
    failed(state, error, |_| {});
}

/// A poll claimed `count` entries.
pub(super) fn claimed(state: &WatchCell<State>, count: usize) {
    state.modify(|s| s.stats.claimed += count as u64);
}

/// A cleanup attempt on `fence`'s entry was recorded in the log and starts
/// now; `number` counts the entry's attempts across claims.
pub(super) fn attempt_started(state: &WatchCell<State>, _fence: &Fence, _number: u32) {
    state.modify(|s| s.stats.attempts += 1);
}

/// A cleanup attempt failed: an error, or a panic in the cleanup or the
/// payload's decoding.
pub(super) fn attempt_failed(state: &WatchCell<State>, error: RecoveryError) {
    failed(state, error, |s| s.stats.failed_attempts += 1);
}

/// A cleanup attempt was still running at its deadline and was abandoned.
pub(super) fn abandoned(state: &WatchCell<State>, error: RecoveryError) {
    failed(state, error, |s| {
        s.stats.failed_attempts += 1;
        s.stats.abandoned += 1;
    });
}

/// A changelog call on one claimed entry failed.
pub(super) fn store_failed(state: &WatchCell<State>, error: RecoveryError) {
    failed(state, error, |_| {});
}

/// Outcome: the entry's cleanup completed and the entry was removed.
pub(super) fn cleaned(state: &WatchCell<State>, _fence: &Fence) {
    state.modify(|s| s.stats.cleaned += 1);
}

/// Outcome: the entry was parked in the log, for the reason reported.
pub(super) fn quarantined(state: &WatchCell<State>, report: QuarantineReport) {
    state.modify(|s| {
        s.stats.quarantined += 1;
        if s.quarantined.len() == REPORTS_KEPT {
            s.quarantined.pop_front();
            s.stats.reports_dropped += 1;
        }
        s.quarantined.push_back(report);
    });
}

/// Outcome: another owner took the entry (or removed or quarantined it).
pub(super) fn lost(state: &WatchCell<State>, _fence: &Fence) {
    state.modify(|s| s.stats.lost += 1);
}

/// Outcome: the entry was left in the log, to go stale and be claimed
/// again (abandoned at its deadline, batch cut off, store failure,
/// shutdown).
pub(super) fn released(state: &WatchCell<State>, _id: EntryId) {
    state.modify(|s| s.stats.released += 1);
}

fn failed(state: &WatchCell<State>, error: RecoveryError, count: impl FnOnce(&mut State)) {
    let error = Arc::new(error);
    state.modify(|s| {
        s.stats.errors += 1;
        count(s);
        s.last_error = Some(error);
    });
}
