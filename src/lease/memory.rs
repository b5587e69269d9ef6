//! [`MemoryShard`]: an in-memory reference backend, a model of a shard that
//! leases its state to readers.
//!
//! The shard tracks each registered reader's since and seqno hold and the
//! time of its last heartbeat, on an injected [`Clock`]. A reader that has
//! not heartbeated for a ttl is expired (lazily, at the next operation on
//! the shard, or by [`MemoryShard::expire_stale`]); its next heartbeat then
//! reports [`BackendError::Lost`]. From the live readers the shard computes:
//!
//! - its **since**: the meet of its live readers' sinces (the smallest, for
//!   a total order): history before it may be compacted. It never moves
//!   back, also when readers come and go;
//! - its **GC horizon**: the smallest reader seqno hold, or the latest
//!   seqno when no reader holds anything (state before it may be deleted).
//!   It never moves back either.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backend::{HeartbeatReply, LeaseBackend, Seqno, Since, meet_all};
use super::error::BackendError;
use crate::clock::Clock;
use crate::sync::Mutex;

/// Identifies a reader registered with a shard ([`MemoryShard`], or a
/// durable lease table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReaderId(u64);

impl ReaderId {
    /// Wraps a store-assigned id (for backend implementations).
    pub const fn new(id: u64) -> Self {
        ReaderId(id)
    }

    /// The numeric id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ReaderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reader {}", self.0)
    }
}

/// What the shard knows about one reader, from [`MemoryShard::reader`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReaderState<S, Q> {
    /// The since the reader holds.
    pub since: S,
    /// The seqno hold of the reader.
    pub seqno_hold: Q,
    /// When the reader last registered or heartbeated.
    pub last_heartbeat: Instant,
}

/// Counters of a [`MemoryShard`], from [`MemoryShard::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ShardStats {
    /// Heartbeats that succeeded.
    pub heartbeats: u64,
    /// Heartbeats that moved a reader's since forward.
    pub downgrades: u64,
    /// Heartbeats failed on purpose by [`MemoryShard::fail_next_heartbeats`].
    pub injected_failures: u64,
    /// Readers expired because they missed their heartbeats.
    pub expired_stale: u64,
    /// Readers expired on request (their lease's expiry).
    pub expired_on_request: u64,
}

/// An in-memory shard that leases its state to readers: the reference
/// [`LeaseBackend`] for tests, benches and examples.
///
/// Clones share the same shard. [`register`](Self::register) adds a reader
/// and returns its backend ([`MemoryReader`]), to pass to
/// [`Lease::spawn`](super::Lease::spawn).
///
/// # Examples
///
/// ```
/// use leasehold::clock::{Clock, ManualClock};
/// use leasehold::lease::{LeaseBackend, MemoryShard};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # futures::executor::block_on(async {
/// let clock = ManualClock::new();
/// let shard = MemoryShard::new(Arc::new(clock.clone()), Duration::from_secs(60), 0_u64, 10_u64);
/// let (a, ..) = shard.register();
/// let (b, ..) = shard.register();
/// shard.advance_seqno(12);
/// clock.advance(Duration::from_secs(30));
/// a.heartbeat(5, 12).await.unwrap();
/// assert_eq!((shard.since(), shard.gc_horizon()), (0, 10)); // b still holds 0 and 10
///
/// clock.advance(Duration::from_secs(30)); // b never heartbeated: expired
/// assert_eq!((shard.since(), shard.gc_horizon()), (5, 12));
/// assert!(b.heartbeat(5, 12).await.is_err()); // lost
/// # });
/// ```
pub struct MemoryShard<S, Q> {
    inner: Arc<Inner<S, Q>>,
}

struct Inner<S, Q> {
    clock: Arc<dyn Clock>,
    ttl: Duration,
    state: Mutex<ShardState<S, Q>>,
}

struct ShardState<S, Q> {
    since: S,
    seqno: Q,
    gc_horizon: Q,
    readers: BTreeMap<ReaderId, ReaderState<S, Q>>,
    next_id: u64,
    fail_next: u64,
    stats: ShardStats,
}

impl<S: Since, Q: Seqno> ShardState<S, Q> {
    /// Drops the readers whose last heartbeat is a ttl old.
    fn expire_stale(&mut self, now: Instant, ttl: Duration) -> usize {
        let before = self.readers.len();
        self.readers
            .retain(|_, reader| now < reader.last_heartbeat + ttl);
        let expired = before - self.readers.len();
        self.stats.expired_stale += expired as u64;
        if expired > 0 {
            self.recompute();
        }
        expired
    }

    /// The shard's since and GC horizon from the live readers; neither
    /// moves back.
    fn recompute(&mut self) {
        // The meet over the live readers, joined with the old since: a
        // reader registered later holds at least the old since, so the join
        // only guards against a user lattice that is not one.
        if let Some(since) = meet_all(self.readers.values().map(|r| &r.since)) {
            if !since.less_equal(&self.since) {
                self.since = self.since.join(&since);
            }
        }
        let horizon = self
            .readers
            .values()
            .map(|r| &r.seqno_hold)
            .min()
            .unwrap_or(&self.seqno);
        if *horizon > self.gc_horizon {
            self.gc_horizon = horizon.clone();
        }
    }
}

impl<S: Since, Q: Seqno> MemoryShard<S, Q> {
    /// A shard at `since` and `seqno`, expiring readers that miss their
    /// heartbeats for `ttl` on `clock`.
    pub fn new(clock: Arc<dyn Clock>, ttl: Duration, since: S, seqno: Q) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock,
                ttl,
                state: Mutex::new(ShardState {
                    since,
                    gc_horizon: seqno.clone(),
                    seqno,
                    readers: BTreeMap::new(),
                    next_id: 0,
                    fail_next: 0,
                    stats: ShardStats::default(),
                }),
            }),
        }
    }

    /// Runs `f` on the state after expiring stale readers.
    fn with_state<R>(&self, f: impl FnOnce(&mut ShardState<S, Q>, Instant) -> R) -> R {
        let now = self.inner.clock.now();
        let mut state = self.inner.state.lock();
        state.expire_stale(now, self.inner.ttl);
        f(&mut state, now)
    }

    /// Registers a reader at the shard's since and latest seqno; returns its
    /// backend and what it holds, ready for
    /// [`Lease::spawn`](super::Lease::spawn).
    pub fn register(&self) -> (MemoryReader<S, Q>, S, Q) {
        self.with_state(|state, now| {
            let id = ReaderId(state.next_id);
            state.next_id += 1;
            let (since, seqno) = (state.since.clone(), state.seqno.clone());
            state.readers.insert(
                id,
                ReaderState {
                    since: since.clone(),
                    seqno_hold: seqno.clone(),
                    last_heartbeat: now,
                },
            );
            let reader = MemoryReader {
                shard: self.clone(),
                id,
            };
            (reader, since, seqno)
        })
    }

    /// A write: moves the shard's latest seqno forward to `seqno`.
    pub fn advance_seqno(&self, seqno: Q) {
        self.with_state(|state, _| {
            if seqno > state.seqno {
                state.seqno = seqno;
                state.recompute();
            }
        });
    }

    /// The shard's since: the meet of its live readers' sinces (never behind
    /// an earlier one).
    pub fn since(&self) -> S {
        self.with_state(|state, _| state.since.clone())
    }

    /// The shard's latest seqno.
    pub fn seqno(&self) -> Q {
        self.with_state(|state, _| state.seqno.clone())
    }

    /// The seqno GC horizon: state before it may be deleted.
    pub fn gc_horizon(&self) -> Q {
        self.with_state(|state, _| state.gc_horizon.clone())
    }

    /// The number of live readers.
    pub fn readers(&self) -> usize {
        self.with_state(|state, _| state.readers.len())
    }

    /// What the shard holds for reader `id`, if it is live.
    pub fn reader(&self, id: ReaderId) -> Option<ReaderState<S, Q>> {
        self.with_state(|state, _| state.readers.get(&id).cloned())
    }

    /// Expires the readers that missed their heartbeats for a ttl; returns
    /// how many. (Every other call does this too, lazily.)
    pub fn expire_stale(&self) -> usize {
        let now = self.inner.clock.now();
        self.inner.state.lock().expire_stale(now, self.inner.ttl)
    }

    /// Removes reader `id` as if someone else had expired it: its next
    /// heartbeat reports [`BackendError::Lost`]. Returns whether it was live.
    pub fn remove_reader(&self, id: ReaderId) -> bool {
        self.with_state(|state, _| {
            let removed = state.readers.remove(&id).is_some();
            state.recompute();
            removed
        })
    }

    /// Fails the next `n` heartbeats (of any reader) with
    /// [`BackendError::Transient`], to exercise retries.
    pub fn fail_next_heartbeats(&self, n: u64) {
        self.with_state(|state, _| state.fail_next = n);
    }

    /// The shard's counters.
    pub fn stats(&self) -> ShardStats {
        self.with_state(|state, _| state.stats)
    }
}

impl<S, Q> Clone for MemoryShard<S, Q> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S: Since, Q: Seqno> fmt::Debug for MemoryShard<S, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("MemoryShard")
            .field("since", &state.since)
            .field("seqno", &state.seqno)
            .field("gc_horizon", &state.gc_horizon)
            .field("readers", &state.readers.len())
            .field("ttl", &self.inner.ttl)
            .finish()
    }
}

/// One reader of a [`MemoryShard`]: the [`LeaseBackend`] of its lease.
#[derive(Clone)]
pub struct MemoryReader<S, Q> {
    shard: MemoryShard<S, Q>,
    id: ReaderId,
}

impl<S: Since, Q: Seqno> fmt::Debug for MemoryReader<S, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReader")
            .field("id", &self.id)
            .field("shard", &self.shard)
            .finish()
    }
}

impl<S, Q> MemoryReader<S, Q> {
    /// The reader's id in its shard.
    pub fn id(&self) -> ReaderId {
        self.id
    }
}

impl<S: Since, Q: Seqno> LeaseBackend for MemoryReader<S, Q> {
    type Since = S;
    type Seqno = Q;

    /// Renews the reader: its since moves to the join of the held and the
    /// sent one, its seqno hold forward to the one sent (never back), and its
    /// ttl restarts.
    async fn heartbeat(
        &self,
        since: S,
        seqno_hold: Q,
    ) -> Result<HeartbeatReply<S, Q>, BackendError> {
        self.shard.with_state(|state, now| {
            if state.fail_next > 0 {
                state.fail_next -= 1;
                state.stats.injected_failures += 1;
                return Err(BackendError::transient("injected heartbeat failure"));
            }
            let reader = state.readers.get_mut(&self.id).ok_or(BackendError::Lost)?;
            if !since.less_equal(&reader.since) {
                reader.since = reader.since.join(&since);
                state.stats.downgrades += 1;
            }
            if seqno_hold > reader.seqno_hold {
                reader.seqno_hold = seqno_hold;
            }
            reader.last_heartbeat = now;
            let reply = HeartbeatReply {
                since: reader.since.clone(),
                seqno: state.seqno.clone(),
            };
            state.stats.heartbeats += 1;
            state.recompute();
            Ok(reply)
        })
    }

    /// Removes the reader. Idempotent.
    async fn expire(&self) -> Result<(), BackendError> {
        self.shard.with_state(|state, _| {
            if state.readers.remove(&self.id).is_some() {
                state.stats.expired_on_request += 1;
                state.recompute();
            }
            Ok(())
        })
    }
}
