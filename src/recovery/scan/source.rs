//! [`KeySource`]: where a [`RecoveryScan`](super::RecoveryScan) reads its
//! keys, in order.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use super::cursor::ResumePoint;
use super::progress::ScanKey;

/// An ordered source of the keys a scan walks (e.g. an index query).
///
/// Errors are errors: the scan stops with [`ScanError::Source`](super::ScanError::Source) rather than
/// take a failed read for the end of the keys.
///
/// # Examples
///
/// ```
/// use leasehold::recovery::{KeySource, ResumePoint};
///
/// /// Keys 0, 10, 20, …, 990.
/// struct Tens;
///
/// impl KeySource<u64> for Tens {
///     type Error = std::convert::Infallible;
///
///     async fn next_batch(&self, from: &ResumePoint<u64>, limit: usize) -> Result<Vec<u64>, Self::Error> {
///         Ok((0..100).map(|i| i * 10).filter(|k| !from.covers(k)).take(limit).collect())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// assert_eq!(Tens.next_batch(&ResumePoint::After(20), 2).await.unwrap(), [30, 40]);
/// # }
/// ```
pub trait KeySource<K>: Send + Sync + 'static {
    /// Why a read failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Up to `limit` keys that `from` does not cover (see
    /// [`ResumePoint::covers`]), in strictly increasing order. Fewer than
    /// `limit` is fine; an empty batch means there are no more keys.
    ///
    /// # Errors
    ///
    /// `Self::Error` if the keys could not be read.
    fn next_batch(
        &self,
        from: &ResumePoint<K>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<K>, Self::Error>> + Send;
}

/// A fixed set of keys is a source (handy for tests and small scans).
impl<K: ScanKey> KeySource<K> for BTreeSet<K> {
    type Error = Infallible;

    async fn next_batch(&self, from: &ResumePoint<K>, limit: usize) -> Result<Vec<K>, Infallible> {
        let keys = match from {
            ResumePoint::Start => self.range(..),
            ResumePoint::From(key) => self.range(key.clone()..),
            ResumePoint::After(key) => self.range((
                std::ops::Bound::Excluded(key.clone()),
                std::ops::Bound::Unbounded,
            )),
        };
        Ok(keys.take(limit).cloned().collect())
    }
}

impl<K, S: KeySource<K>> KeySource<K> for Arc<S> {
    type Error = S::Error;

    fn next_batch(
        &self,
        from: &ResumePoint<K>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<K>, Self::Error>> + Send {
        (**self).next_batch(from, limit)
    }
}
