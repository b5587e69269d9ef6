//! [`LeaseBackend`]: what the lease task needs from the store that holds the
//! lease, and the [`Since`] and [`Seqno`] types it is generic over.

use std::fmt;
use std::future::Future;

use super::error::BackendError;

/// A since frontier: the point in time (or version) before which the reader
/// no longer needs to read, so the shard may compact history up to it.
///
/// A since is an element of a *lattice*: [`less_equal`](Self::less_equal)
/// is its partial order, [`join`](Self::join) the least upper bound (how a
/// reader's requests combine: a since only moves forward) and
/// [`meet`](Self::meet) the greatest lower bound (how a shard combines its
/// readers: it may compact only what none of them still reads).
///
/// Any totally ordered `Clone` type is one (blanket impl, with `join = max`,
/// `meet = min`): `u64` timestamps, `(epoch, counter)` tuples, your own
/// `Ord` type: nothing to implement. A partially ordered frontier (a product
/// timestamp, or the antichain of one, as in dataflow systems) implements the
/// three methods itself; it must not implement `Ord` (the blanket impl would
/// then apply).
///
/// # Why a join, not a comparison
///
/// Two requests for a since combine by their join, never by keeping the one
/// that compares "later": a stale downgrade (behind the recorded since) and
/// an incomparable one (ahead in one dimension, behind in another) both
/// leave the recorded since where it was or move it up to the join, never
/// back. For a total order the join *is* `max`, so `u64` users see exactly
/// "a smaller since is ignored".
///
/// # Laws
///
/// `less_equal` is a partial order (reflexive, antisymmetric, transitive);
/// `a.join(b)` is the least element `>=` both and `a.meet(b)` the greatest
/// element `<=` both. The lease and the shards rely on them: a wrong join can
/// move a frontier back.
///
/// # Examples
///
/// A two-dimensional product timestamp, ordered per coordinate:
///
/// ```
/// use leasehold::lease::Since;
///
/// #[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// struct Product { epoch: u64, round: u64 }
///
/// impl Since for Product {
///     fn less_equal(&self, other: &Self) -> bool {
///         self.epoch <= other.epoch && self.round <= other.round
///     }
///     fn join(&self, other: &Self) -> Self {
///         Product { epoch: self.epoch.max(other.epoch), round: self.round.max(other.round) }
///     }
///     fn meet(&self, other: &Self) -> Self {
///         Product { epoch: self.epoch.min(other.epoch), round: self.round.min(other.round) }
///     }
/// }
///
/// let a = Product { epoch: 2, round: 0 };
/// let b = Product { epoch: 1, round: 5 };
/// assert!(!a.less_equal(&b) && !b.less_equal(&a)); // incomparable
/// assert_eq!(a.join(&b), Product { epoch: 2, round: 5 });
/// assert_eq!(a.meet(&b), Product { epoch: 1, round: 0 });
/// assert_eq!(7_u64.join(&3), 7); // total orders: max and min
/// ```
pub trait Since: Clone + fmt::Debug + Send + Sync + 'static {
    /// Whether `self` is at or before `other` in the partial order.
    fn less_equal(&self, other: &Self) -> bool;

    /// The least upper bound of `self` and `other`.
    #[must_use]
    fn join(&self, other: &Self) -> Self;

    /// The greatest lower bound of `self` and `other`.
    #[must_use]
    fn meet(&self, other: &Self) -> Self;
}

impl<T: Ord + Clone + fmt::Debug + Send + Sync + 'static> Since for T {
    fn less_equal(&self, other: &Self) -> bool {
        self <= other
    }

    fn join(&self, other: &Self) -> Self {
        std::cmp::max(self, other).clone()
    }

    fn meet(&self, other: &Self) -> Self {
        std::cmp::min(self, other).clone()
    }
}

/// The meet of every since in `sinces` (`None` if there are none): the
/// since a shard may compact to, from its readers' sinces.
pub(crate) fn meet_all<'a, S: Since>(sinces: impl IntoIterator<Item = &'a S>) -> Option<S> {
    sinces.into_iter().fold(None, |acc, since| {
        Some(match acc {
            None => since.clone(),
            Some(acc) => since.meet(&acc),
        })
    })
}

/// A sequence number of the shard's state: the reader's seqno hold keeps the
/// shard from garbage-collecting state at or after it.
///
/// Any totally ordered `Clone` type is one (blanket impl). Observed seqnos
/// combine with `max`; the hold sent is the smallest live leased seqno.
pub trait Seqno: Ord + Clone + fmt::Debug + Send + Sync + 'static {}

impl<T: Ord + Clone + fmt::Debug + Send + Sync + 'static> Seqno for T {}

/// What a successful heartbeat reports back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply<S, Q> {
    /// The since the backend now holds for this reader: the join of the one
    /// sent and the one held before (usually the one sent).
    pub since: S,
    /// The shard's latest seqno: the reader may lease it from now on, and
    /// holds it when no older seqno is leased.
    pub seqno: Q,
}

/// The store side of one reader's lease: a heartbeat that also downgrades
/// the reader's since and seqno hold, and an expiry.
///
/// One backend value serves one lease (it knows which reader it renews); the
/// lease task owns it and is the only caller, one call at a time.
///
/// Implement the methods as `async fn` or return any `Send` future; the
/// trait uses native `async fn` in traits (`impl Future + Send`), no boxing.
///
/// # Examples
///
/// A backend that forwards to an RPC client (here, a stand-in that always
/// succeeds):
///
/// ```
/// use leasehold::lease::{BackendError, HeartbeatReply, LeaseBackend};
///
/// #[derive(Debug)]
/// struct ShardClient { reader_id: u64 }
///
/// impl LeaseBackend for ShardClient {
///     type Since = u64;
///     type Seqno = u64;
///
///     async fn heartbeat(&self, since: u64, seqno_hold: u64) -> Result<HeartbeatReply<u64, u64>, BackendError> {
///         // rpc.heartbeat_reader(self.reader_id, since, seqno_hold).await
///         //    .map_err(|e| if e.is_not_found() { BackendError::Lost } else { BackendError::transient(e) })
///         Ok(HeartbeatReply { since, seqno: seqno_hold })
///     }
///
///     async fn expire(&self) -> Result<(), BackendError> {
///         // rpc.expire_reader(self.reader_id).await.map_err(BackendError::transient)
///         Ok(())
///     }
/// }
/// ```
pub trait LeaseBackend: Send + Sync + 'static {
    /// The since frontier type.
    type Since: Since;
    /// The seqno type.
    type Seqno: Seqno;

    /// Renews the lease, holding the join of `since` and what this reader
    /// held before (the lease only ever sends the join of its requests, so
    /// usually `since` itself) and
    /// `seqno_hold` (the smallest seqno the reader still needs).
    ///
    /// Returns the since actually applied and the shard's latest seqno.
    ///
    /// # Errors
    ///
    /// [`BackendError::Lost`] if the lease no longer exists (the task then
    /// ends the lease); [`BackendError::Transient`] for anything worth a
    /// retry.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe in the sense that dropping the future leaves the
    /// lease in a state a later heartbeat or expiry can fix: the task drops
    /// an in-flight heartbeat when the lease is expired or its validity runs
    /// out.
    fn heartbeat(
        &self,
        since: Self::Since,
        seqno_hold: Self::Seqno,
    ) -> impl Future<Output = Result<HeartbeatReply<Self::Since, Self::Seqno>, BackendError>> + Send;

    /// Expires the lease: the reader's since and seqno holds are released.
    /// Idempotent: expiring a lease that is already gone succeeds (or
    /// reports [`BackendError::Lost`], which the task treats the same).
    ///
    /// # Errors
    ///
    /// [`BackendError::Transient`] for anything worth a retry.
    fn expire(&self) -> impl Future<Output = Result<(), BackendError>> + Send;
}
