//! The state a [`Lease`](super::Lease) handle shares with its task, and the
//! protocol both sides follow on it.
//!
//! Everything lives in one [`WatchCell`]. The handle only *writes* it (from
//! any thread, outside any runtime, from `Drop`); the task waits on it with a
//! single predicate, [`State::task_has_work`]: a sync was requested and not
//! yet acknowledged, or an expiry was requested. Because the cell wakes only
//! waiters whose predicate holds, a plain since downgrade, a seqno lease or
//! its release, or an observed seqno never wakes the task; they wait for the
//! next tick, which reads the latest values.
//!
//! # Why no request is lost
//!
//! A request (sync or expiry) is recorded under the cell's lock by a
//! notifying modification, which evaluates the task's predicate on the new
//! state. Either the task has registered its wait (and is woken), or it has
//! not yet (and its registration tests the predicate first, under the same
//! lock). The acknowledgement works the same way in reverse: the task raises
//! `sync_acked` with a notifying modification, so a `downgrade_since` waiting
//! for its generation is woken, whether it registered before or after.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use super::backend::{HeartbeatReply, Seqno, Since};
use super::error::LeaseError;
use crate::WatchCell;
use crate::sync::{AtomicU64, Ordering};

/// How the task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Expired on request (`expire()` or drop), confirmed by the backend.
    Expired,
    /// Ended otherwise: why.
    Failed(LeaseError),
}

impl Ended {
    /// The error a pending downgrade or a new request sees.
    pub(crate) fn error(self) -> LeaseError {
        match self {
            Ended::Expired => LeaseError::Stopped,
            Ended::Failed(error) => error,
        }
    }
}

/// The shared state. See the module docs for who writes what.
#[derive(Debug)]
pub(crate) struct State<S, Q> {
    /// The join of every since the handle asked for: it only moves forward,
    /// also for stale or incomparable requests.
    since_to_hold: S,
    /// The since the backend last confirmed.
    applied_since: S,
    /// Generation of the latest requested sync; the task acknowledges a
    /// generation once a heartbeat that carried its since succeeded.
    sync_requested: u64,
    sync_acked: u64,
    /// Live seqno leases: refcount per seqno.
    seqno_leases: BTreeMap<Q, usize>,
    /// The latest seqno the handle observed or the backend reported (max).
    latest_seqno: Q,
    expire_requested: bool,
    ended: Option<Ended>,
}

impl<S: Since, Q: Seqno> State<S, Q> {
    /// The task's wait predicate: is there anything that cannot wait for the
    /// next tick?
    pub(crate) fn task_has_work(&self) -> bool {
        self.expire_requested || self.sync_requested > self.sync_acked
    }

    /// The seqno hold to send: the smallest live leased seqno, else the
    /// latest observed one.
    pub(crate) fn seqno_hold(&self) -> Q {
        match self.seqno_leases.keys().next() {
            Some(leased) => leased.clone(),
            None => self.latest_seqno.clone(),
        }
    }
}

/// What the task sends in one heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot<S, Q> {
    pub(crate) since: S,
    pub(crate) seqno_hold: Q,
    /// The sync generation this heartbeat will acknowledge if it succeeds.
    pub(crate) sync_generation: u64,
}

/// Counters, updated by the task and read by `Lease::stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) wakeups: AtomicU64,
    pub(crate) early_wakeups: AtomicU64,
    pub(crate) heartbeats: AtomicU64,
    pub(crate) failed_heartbeats: AtomicU64,
    pub(crate) downgrades: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The cell plus the counters: one allocation shared by the handle, its
/// seqno leases and the task.
pub(crate) struct LeaseShared<S, Q> {
    cell: WatchCell<State<S, Q>>,
    pub(crate) counters: Counters,
}

impl<S: Since, Q: Seqno> LeaseShared<S, Q> {
    pub(crate) fn new(since: S, seqno: Q) -> Self {
        Self {
            cell: WatchCell::new(State {
                since_to_hold: since.clone(),
                applied_since: since,
                sync_requested: 0,
                sync_acked: 0,
                seqno_leases: BTreeMap::new(),
                latest_seqno: seqno,
                expire_requested: false,
                ended: None,
            }),
            counters: Counters::default(),
        }
    }

    // ------------------------------------------------------------ handle side

    /// Records `since` for the next heartbeat; returns whether it moved the
    /// since forward. Never wakes the task (its predicate ignores the since);
    /// a stale `since` does not even notify.
    pub(crate) fn maybe_downgrade(&self, since: S) -> bool {
        self.cell.modify_if(|state| {
            // `since <= recorded`: stale, the join is the recorded since.
            let forward = !since.less_equal(&state.since_to_hold);
            if forward {
                state.since_to_hold = state.since_to_hold.join(&since);
            }
            forward
        })
    }

    /// Records `since` and, unless the backend already holds it, requests a
    /// sync: returns the generation to wait for, or `None` if there is
    /// nothing to wait for.
    ///
    /// # Errors
    ///
    /// The task has ended.
    pub(crate) fn request_downgrade(&self, since: S) -> Result<Option<u64>, LeaseError> {
        let mut outcome = Ok(None);
        self.cell.modify_if(|state| {
            if let Some(ended) = state.ended {
                outcome = Err(ended.error());
                return false;
            }
            if since.less_equal(&state.applied_since) {
                return false;
            }
            if !since.less_equal(&state.since_to_hold) {
                state.since_to_hold = state.since_to_hold.join(&since);
            }
            // One outstanding request covers every since recorded before the
            // task takes its snapshot; a later request gets a later generation.
            state.sync_requested += 1;
            outcome = Ok(Some(state.sync_requested));
            true
        });
        outcome
    }

    /// Waits until the task acknowledged `generation` (returns the applied
    /// since) or ended.
    pub(crate) fn wait_synced(
        &self,
        generation: u64,
    ) -> impl Future<Output = Result<S, LeaseError>> + Send + '_ {
        let wait = self.cell.wait_for_map(move |state| {
            if state.sync_acked >= generation {
                Some(Ok(state.applied_since.clone()))
            } else {
                state.ended.map(|ended| Err(ended.error()))
            }
        });
        async move { wait.await.unwrap_or(Err(LeaseError::Stopped)) }
    }

    /// The current applied since, or the task's end.
    pub(crate) fn applied_since(&self) -> S {
        self.cell.read(|state| state.applied_since.clone())
    }

    /// The since recorded for the next heartbeat.
    pub(crate) fn since_to_hold(&self) -> S {
        self.cell.read(|state| state.since_to_hold.clone())
    }

    /// Leases the latest seqno (refcount + 1) and returns it.
    pub(crate) fn lease_seqno(&self) -> Q {
        self.cell.modify(|state| {
            let seqno = state.latest_seqno.clone();
            *state.seqno_leases.entry(seqno.clone()).or_insert(0) += 1;
            seqno
        })
    }

    /// Releases one lease of `seqno`.
    pub(crate) fn release_seqno(&self, seqno: &Q) {
        self.cell
            .modify_if(|state| match state.seqno_leases.get_mut(seqno) {
                Some(count) => {
                    *count -= 1;
                    if *count == 0 {
                        state.seqno_leases.remove(seqno);
                    }
                    true
                }
                // Unreachable through `SeqnoLease`, which releases what it leased.
                None => false,
            });
    }

    /// Joins `seqno` into the latest observed seqno; returns whether it moved.
    pub(crate) fn observe_seqno(&self, seqno: Q) -> bool {
        self.cell.modify_if(|state| {
            let forward = seqno > state.latest_seqno;
            if forward {
                state.latest_seqno = seqno;
            }
            forward
        })
    }

    pub(crate) fn latest_seqno(&self) -> Q {
        self.cell.read(|state| state.latest_seqno.clone())
    }

    pub(crate) fn seqno_hold(&self) -> Q {
        self.cell.read(State::seqno_hold)
    }

    /// Asks the task to expire the lease and exit. Wakes it (once).
    pub(crate) fn request_expire(&self) {
        self.cell.modify_if(|state| {
            let first = !state.expire_requested && state.ended.is_none();
            state.expire_requested = true;
            first
        });
    }

    /// Waits until the task ended, and returns how.
    pub(crate) fn wait_ended(&self) -> impl Future<Output = Ended> + Send + '_ {
        let wait = self.cell.wait_for_map(|state| state.ended);
        async move { wait.await.unwrap_or(Ended::Failed(LeaseError::Stopped)) }
    }

    pub(crate) fn ended(&self) -> Option<Ended> {
        self.cell.read(|state| state.ended)
    }

    // -------------------------------------------------------------- task side

    /// Resolves once a sync or an expiry is requested.
    pub(crate) fn wait_for_work(&self) -> impl Future<Output = ()> + Send + '_ {
        let wait = self.cell.wait_for(State::task_has_work);
        async move {
            // The cell is never closed.
            let _ = wait.await;
        }
    }

    /// Resolves once an expiry is requested.
    pub(crate) fn wait_for_expire_request(&self) -> impl Future<Output = ()> + Send + '_ {
        let wait = self.cell.wait_for(|state| state.expire_requested);
        async move {
            let _ = wait.await;
        }
    }

    pub(crate) fn expire_requested(&self) -> bool {
        self.cell.read(|state| state.expire_requested)
    }

    /// What the next heartbeat sends. The since, the seqno hold and the sync
    /// generation are read together, so acknowledging the generation later
    /// acknowledges exactly the since that was sent.
    pub(crate) fn snapshot(&self) -> Snapshot<S, Q> {
        self.cell.read(|state| Snapshot {
            since: state.since_to_hold.clone(),
            seqno_hold: state.seqno_hold(),
            sync_generation: state.sync_requested,
        })
    }

    /// Records a successful heartbeat for `sent`: the applied since and the
    /// latest seqno move forward (never back), and `sent`'s generation is
    /// acknowledged, waking the downgrades waiting for it. Returns whether
    /// the applied since moved.
    pub(crate) fn ack(&self, sent: &Snapshot<S, Q>, reply: HeartbeatReply<S, Q>) -> bool {
        let mut downgraded = false;
        self.cell.modify_if(|state| {
            let mut changed = false;
            if !reply.since.less_equal(&state.applied_since) {
                state.applied_since = state.applied_since.join(&reply.since);
                downgraded = true;
                changed = true;
            }
            if reply.seqno > state.latest_seqno {
                state.latest_seqno = reply.seqno;
                changed = true;
            }
            if sent.sync_generation > state.sync_acked {
                state.sync_acked = sent.sync_generation;
                changed = true;
            }
            changed
        });
        downgraded
    }

    /// Records how the task ended (the first end stands), waking everyone
    /// waiting for a sync or for the end.
    pub(crate) fn end(&self, how: Ended) {
        self.cell.modify_if(|state| {
            let first = state.ended.is_none();
            if first {
                state.ended = Some(how);
            }
            first
        });
    }
}

impl<S: Since, Q: Seqno> fmt::Debug for LeaseShared<S, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cell.read(|state| {
            f.debug_struct("LeaseShared")
                .field("since_to_hold", &state.since_to_hold)
                .field("applied_since", &state.applied_since)
                .field("seqno_hold", &state.seqno_hold())
                .field("sync_requested", &state.sync_requested)
                .field("sync_acked", &state.sync_acked)
                .field("expire_requested", &state.expire_requested)
                .field("ended", &state.ended)
                .finish()
        })
    }
}

/// The handle/task protocol on a lease's shared state, for the loom models
/// in `loom-tests/` (no runtime, no backend): each method is one step either
/// side takes. Generic over the since, so a model can drive a partially
/// ordered one. Not part of the API.
#[cfg(loom)]
#[derive(Debug)]
pub struct LeaseProtocol<S: Since = u64> {
    shared: std::sync::Arc<LeaseShared<S, u64>>,
}

#[cfg(loom)]
impl<S: Since> Clone for LeaseProtocol<S> {
    fn clone(&self) -> Self {
        Self {
            shared: std::sync::Arc::clone(&self.shared),
        }
    }
}

#[cfg(loom)]
impl LeaseProtocol<u64> {
    /// A lease's state, holding `since` and `seqno`.
    pub fn new(since: u64, seqno: u64) -> Self {
        Self::with_since(since, seqno)
    }
}

#[cfg(loom)]
impl<S: Since> LeaseProtocol<S> {
    /// A lease's state, holding `since` (of any lattice) and `seqno`.
    pub fn with_since(since: S, seqno: u64) -> Self {
        Self {
            shared: std::sync::Arc::new(LeaseShared::new(since, seqno)),
        }
    }

    /// Handle: `maybe_downgrade_since`.
    pub fn maybe_downgrade(&self, since: S) -> bool {
        self.shared.maybe_downgrade(since)
    }

    /// Handle: `downgrade_since`, the request and the wait.
    pub fn downgrade(&self, since: S) -> impl Future<Output = Result<S, LeaseError>> + '_ {
        let request = self.shared.request_downgrade(since);
        async move {
            match request? {
                Some(generation) => self.shared.wait_synced(generation).await,
                None => Ok(self.shared.applied_since()),
            }
        }
    }

    /// Handle: `since()`, the since recorded for the next heartbeat.
    pub fn since(&self) -> S {
        self.shared.since_to_hold()
    }

    /// Handle: `lease_seqno`.
    pub fn lease_seqno(&self) -> super::SeqnoLease<u64> {
        super::handle::seqno_lease_for_model(&self.shared)
    }

    /// Handle: `observe_seqno`.
    pub fn observe_seqno(&self, seqno: u64) -> bool {
        self.shared.observe_seqno(seqno)
    }

    /// Handle: what `Drop` does.
    pub fn drop_handle(&self) {
        self.shared.request_expire();
    }

    /// Handle: the wait in `expire()`; `true` if expired on request.
    pub async fn wait_ended(&self) -> bool {
        self.shared.wait_ended().await == Ended::Expired
    }

    /// Task: the idle wait (without the tick).
    pub fn wait_for_work(&self) -> impl Future<Output = ()> + '_ {
        self.shared.wait_for_work()
    }

    /// Task: whether an expiry was requested.
    pub fn expire_requested(&self) -> bool {
        self.shared.expire_requested()
    }

    /// Task: the snapshot a heartbeat sends: `(since, seqno hold, generation)`.
    pub fn snapshot(&self) -> (S, u64, u64) {
        let snapshot = self.shared.snapshot();
        (
            snapshot.since,
            snapshot.seqno_hold,
            snapshot.sync_generation,
        )
    }

    /// Task: a heartbeat of `snapshot` succeeded, the backend applied its
    /// since and reported `latest_seqno`.
    pub fn ack(&self, snapshot: (S, u64, u64), latest_seqno: u64) {
        let (since, seqno_hold, sync_generation) = snapshot;
        let sent = Snapshot {
            since: since.clone(),
            seqno_hold,
            sync_generation,
        };
        self.shared.ack(
            &sent,
            HeartbeatReply {
                since,
                seqno: latest_seqno,
            },
        );
    }

    /// Task: the backend confirmed the expiry; the task exits.
    pub fn end_expired(&self) {
        self.shared.end(Ended::Expired);
    }

    /// The seqno hold the next heartbeat would send.
    pub fn seqno_hold(&self) -> u64 {
        self.shared.seqno_hold()
    }
}
