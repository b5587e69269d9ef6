//! What a [`RecoveryLoop`](super::RecoveryLoop) reports as it goes: one
//! function per event, the only place the loop's counters, quarantine
//! reports and last error change.
//!
//! Each event updates the loop's shared state (read through
//! [`RecoveryLoop::stats`](super::RecoveryLoop::stats) and friends) and,
//! with the `tracing` feature, emits a `tracing` event with the fields an
//! operator filters on (`entry`, `generation`, `attempt`, `error`). The
//! loop's span (`recovery_loop`, field `owner`) and the spans of a claimed
//! batch and of a cleanup attempt wrap them.

use std::sync::Arc;
use std::time::Duration;

use super::error::RecoveryError;
use super::recovery_loop::{QuarantineReport, REPORTS_KEPT, State};
use crate::WatchCell;
use crate::changelog::{ClaimedEntry, EntryId, Fence};
use crate::trace;

/// A poll of the log ran (whatever its outcome).
pub(super) fn polled(state: &WatchCell<State>) {
    state.modify(|s| s.stats.polls += 1);
}

/// A poll of the log failed.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(super) fn poll_failed(state: &WatchCell<State>, error: RecoveryError, retry_in: Duration) {
    trace::event!(
        warn,
        error = %Chain(&error),
        transient = error.is_transient(),
        retry_in = ?retry_in,
        "recovery poll failed"
    );
    failed(state, error, |_| {});
}

/// A poll claimed `batch`.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(super) fn claimed(state: &WatchCell<State>, batch: &[ClaimedEntry]) {
    for entry in batch {
        trace::event!(
            info,
            entry = %entry.fence.id(),
            generation = entry.fence.generation(),
            attempts = entry.attempts,
            "claimed a stale entry"
        );
    }
    state.modify(|s| s.stats.claimed += batch.len() as u64);
}

/// A cleanup attempt on `fence`'s entry was recorded in the log and starts
/// now; `number` counts the entry's attempts across claims.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(super) fn attempt_started(state: &WatchCell<State>, fence: &Fence, number: u32) {
    trace::event!(
        debug,
        entry = %fence.id(),
        generation = fence.generation(),
        attempt = number,
        "cleanup attempt started"
    );
    state.modify(|s| s.stats.attempts += 1);
}

/// A cleanup attempt failed: an error, or a panic in the cleanup or the
/// payload's decoding.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(super) fn attempt_failed(state: &WatchCell<State>, fence: &Fence, error: RecoveryError) {
    trace::event!(
        warn,
        entry = %fence.id(),
        generation = fence.generation(),
        attempt = error.attempt(),
        error = %Chain(&error),
        "cleanup attempt failed"
    );
    failed(state, error, |s| s.stats.failed_attempts += 1);
}

/// A cleanup attempt was still running at its deadline and was abandoned.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(super) fn abandoned(state: &WatchCell<State>, fence: &Fence, error: RecoveryError) {
    trace::event!(
        warn,
        entry = %fence.id(),
        generation = fence.generation(),
        attempt = error.attempt(),
        error = %Chain(&error),
        "cleanup attempt abandoned at its deadline"
    );
    failed(state, error, |s| {
        s.stats.failed_attempts += 1;
        s.stats.abandoned += 1;
    });
}

/// A changelog call on one claimed entry failed.
pub(super) fn store_failed(state: &WatchCell<State>, error: RecoveryError) {
    trace::event!(
        warn,
        entry = error.entry().map(tracing::field::display),
        error = %Chain(&error),
        transient = error.is_transient(),
        "recovery store call failed"
    );
    failed(state, error, |_| {});
}

/// Outcome: the entry's cleanup completed and the entry was removed.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(super) fn cleaned(state: &WatchCell<State>, fence: &Fence) {
    trace::event!(
        info,
        entry = %fence.id(),
        generation = fence.generation(),
        "entry cleaned up and removed"
    );
    state.modify(|s| s.stats.cleaned += 1);
}

/// Outcome: the entry was parked in the log, for the reason reported.
pub(super) fn quarantined(state: &WatchCell<State>, report: QuarantineReport) {
    trace::event!(
        error,
        entry = %report.fence.id(),
        generation = report.fence.generation(),
        attempts = report.attempts,
        reason = %report.reason,
        "entry quarantined"
    );
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
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(super) fn lost(state: &WatchCell<State>, fence: &Fence) {
    trace::event!(
        warn,
        entry = %fence.id(),
        generation = fence.generation(),
        "claimed entry lost to another owner"
    );
    state.modify(|s| s.stats.lost += 1);
}

/// Outcome: the entry was left in the log, to go stale and be claimed
/// again (abandoned at its deadline, batch cut off, store failure,
/// shutdown).
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
pub(super) fn released(state: &WatchCell<State>, id: EntryId) {
    trace::event!(debug, entry = %id, "claimed entry released, to be claimed again");
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

/// An error and its sources, on one line.
#[cfg(feature = "tracing")]
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

#[cfg(feature = "tracing")]
impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
