//! [`LeaseBackend`]: what the lease task needs from the store that holds the
//! lease, and the [`Since`] and [`Seqno`] types it is generic over.

use std::fmt;
use std::future::Future;

use super::error::BackendError;

/// A since frontier: the point in time (or version) before which the reader
/// no longer needs to read, so the shard may compact history up to it.
///
/// Any totally ordered `Clone` type is one (blanket impl): `u64`
/// timestamps, `(epoch, counter)` tuples, your own `Ord` type.
///
/// **Why a total order, with join = `max`:** a since only ever moves forward,
/// and two requests for it combine by taking the later one. For a totally
/// ordered type that combination (the lattice join) *is* `max`, so there is
/// nothing for a user to implement and no way to get it wrong: a stale
/// downgrade (`since` behind the recorded one) is ignored rather than moving
/// the frontier back. Partially ordered frontiers (antichains) would need a
/// user-supplied join; the lease does not model them.
pub trait Since: Ord + Clone + fmt::Debug + Send + Sync + 'static {}

impl<T: Ord + Clone + fmt::Debug + Send + Sync + 'static> Since for T {}

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
    /// The since the backend now holds for this reader: usually the one
    /// sent, never behind the one held before.
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

    /// Renews the lease, holding `since` (never behind what this reader held
    /// before: the lease only ever sends a since that moved forward) and
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
