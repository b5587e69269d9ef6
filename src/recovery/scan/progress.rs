//! Persisted scan progress: the [`Checkpoint`] a [`ProgressStore`] keeps,
//! the [`ScanKey`] codec that turns keys into its bytes, and the
//! [`MemoryProgressStore`].

use std::fmt;
use std::future::Future;
use std::hash::Hash;

use super::cursor::ResumePoint;
use super::error::{KeyDecodeError, ProgressStoreError};
use std::sync::Arc;

use crate::sync::Mutex;

/// A key a [`RecoveryScan`](super::RecoveryScan) can walk: totally ordered,
/// hashable (its syncs are deduplicated by a
/// [`SyncRegistry`](crate::status::SyncRegistry)), and encodable for the
/// checkpoint.
///
/// The encoding only has to round-trip; the order that matters is `Ord`'s.
/// Implemented for the unsigned integers, `i64`, `String` and `Vec<u8>`.
///
/// # Examples
///
/// ```
/// use leasehold::recovery::{KeyDecodeError, ScanKey};
///
/// /// A blob, ordered by shard and then by id.
/// #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
/// struct BlobKey { shard: u32, id: u64 }
///
/// impl ScanKey for BlobKey {
///     fn to_bytes(&self) -> Vec<u8> {
///         [self.shard.to_bytes(), self.id.to_bytes()].concat()
///     }
///     fn from_bytes(bytes: &[u8]) -> Result<Self, KeyDecodeError> {
///         if bytes.len() != 12 {
///             return Err(KeyDecodeError { reason: format!("{} bytes, expected 12", bytes.len()) });
///         }
///         Ok(BlobKey { shard: u32::from_bytes(&bytes[..4])?, id: u64::from_bytes(&bytes[4..])? })
///     }
/// }
///
/// let key = BlobKey { shard: 3, id: 99 };
/// assert_eq!(BlobKey::from_bytes(&key.to_bytes()), Ok(key));
/// ```
pub trait ScanKey: Ord + Hash + Clone + fmt::Debug + Send + Sync + 'static {
    /// The key's stored form.
    fn to_bytes(&self) -> Vec<u8>;

    /// Decodes a key stored by [`to_bytes`](Self::to_bytes).
    ///
    /// # Errors
    ///
    /// [`KeyDecodeError`] if `bytes` is not a key of this type.
    fn from_bytes(bytes: &[u8]) -> Result<Self, KeyDecodeError>;
}

macro_rules! scan_key_for_int {
    ($($int:ty),*) => {$(
        impl ScanKey for $int {
            fn to_bytes(&self) -> Vec<u8> {
                self.to_be_bytes().to_vec()
            }

            fn from_bytes(bytes: &[u8]) -> Result<Self, KeyDecodeError> {
                bytes.try_into().map(<$int>::from_be_bytes).map_err(|_| KeyDecodeError {
                    reason: format!(
                        "{} bytes, expected {} for {}",
                        bytes.len(),
                        size_of::<$int>(),
                        stringify!($int)
                    ),
                })
            }
        }
    )*};
}

scan_key_for_int!(u16, u32, u64, u128, i64);

impl ScanKey for String {
    fn to_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, KeyDecodeError> {
        String::from_utf8(bytes.to_vec()).map_err(|error| KeyDecodeError {
            reason: error.to_string(),
        })
    }
}

impl ScanKey for Vec<u8> {
    fn to_bytes(&self) -> Vec<u8> {
        self.clone()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, KeyDecodeError> {
        Ok(bytes.to_vec())
    }
}

/// What a scan covers (for a storage node, the shards it owns), as bytes a
/// checkpoint can compare: a scan resumes from a checkpoint only if the
/// fingerprints are equal.
///
/// Build it from a canonical, stable encoding of the scope (e.g. the sorted
/// shard ids), not from `std`'s `Hash`, whose output may change between
/// Rust releases.
///
/// # Examples
///
/// ```
/// use leasehold::recovery::ScopeFingerprint;
///
/// let mut shards = vec![7_u32, 2, 5];
/// shards.sort_unstable();
/// let scope = ScopeFingerprint::new(shards.iter().flat_map(|s| s.to_be_bytes()).collect::<Vec<u8>>());
/// assert_eq!(scope.as_bytes().len(), 12);
/// assert_eq!(ScopeFingerprint::from("shards 2,5,7").as_bytes(), b"shards 2,5,7");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScopeFingerprint(Vec<u8>);

impl ScopeFingerprint {
    /// A fingerprint with these bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The fingerprint's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&str> for ScopeFingerprint {
    fn from(scope: &str) -> Self {
        Self::new(scope)
    }
}

impl From<Vec<u8>> for ScopeFingerprint {
    fn from(scope: Vec<u8>) -> Self {
        Self::new(scope)
    }
}

/// What a [`ProgressStore`] keeps: the scope a scan ran over and the point
/// it can resume from, with the key in its stored form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// The scope of the scan that saved it.
    pub scope: ScopeFingerprint,
    /// Where that scan can resume, the key encoded by [`ScanKey::to_bytes`].
    pub resume: ResumePoint<Vec<u8>>,
}

/// A [`Checkpoint`] and the keys given up before it (in their stored form,
/// in the order they were given up), as
/// [`ProgressStore::load_with_given_up`] returns them.
pub type CheckpointWithGivenUp = (Checkpoint, Vec<Vec<u8>>);

/// The row form of a resume point that the SQL stores share: a position
/// code (0 = start, 1 = from `key` inclusive, 2 = after `key` exclusive) and
/// the key, present for codes 1 and 2.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(super) fn resume_to_row(point: ResumePoint<Vec<u8>>) -> (i16, Option<Vec<u8>>) {
    match point {
        ResumePoint::Start => (0, None),
        ResumePoint::From(key) => (1, Some(key)),
        ResumePoint::After(key) => (2, Some(key)),
    }
}

/// Reads back [`resume_to_row`]'s form; any other combination is a corrupt row.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(super) fn resume_from_row(
    position: i64,
    key: Option<Vec<u8>>,
) -> Result<ResumePoint<Vec<u8>>, ProgressStoreError> {
    match (position, key) {
        (0, None) => Ok(ResumePoint::Start),
        (1, Some(key)) => Ok(ResumePoint::From(key)),
        (2, Some(key)) => Ok(ResumePoint::After(key)),
        (position, key) => Err(ProgressStoreError::Corrupt {
            reason: format!(
                "position {position} with {} key",
                if key.is_some() { "a" } else { "no" }
            ),
        }),
    }
}

/// Durable storage for one scan's [`Checkpoint`].
///
/// A store holds at most one checkpoint: give each scan its own store (the
/// SQLite and PostgreSQL stores take a scan name). Every method reports
/// backend failures as errors: a failed `load` is never "no checkpoint".
///
/// # Examples
///
/// ```
/// use leasehold::recovery::{Checkpoint, MemoryProgressStore, ProgressStore, ResumePoint, ScopeFingerprint};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = MemoryProgressStore::new();
/// assert_eq!(store.load().await.unwrap(), None);
/// let checkpoint = Checkpoint { scope: ScopeFingerprint::from("shard 1"), resume: ResumePoint::From(vec![4]) };
/// store.save(checkpoint.clone()).await.unwrap();
/// assert_eq!(store.load().await.unwrap(), Some(checkpoint));
/// store.clear().await.unwrap();
/// assert_eq!(store.load().await.unwrap(), None);
/// # }
/// ```
pub trait ProgressStore: Send + Sync + 'static {
    /// The saved checkpoint, if any.
    ///
    /// # Errors
    ///
    /// [`ProgressStoreError`] if the store cannot be read or holds an unreadable
    /// checkpoint.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    fn load(&self) -> impl Future<Output = Result<Option<Checkpoint>, ProgressStoreError>> + Send;

    /// Durably replaces the checkpoint with `checkpoint`.
    ///
    /// # Errors
    ///
    /// [`ProgressStoreError`] if the store failed; the previous checkpoint is then
    /// still in place.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the sense that matters: a dropped save leaves the old
    /// or the new checkpoint, never a mix.
    fn save(
        &self,
        checkpoint: Checkpoint,
    ) -> impl Future<Output = Result<(), ProgressStoreError>> + Send;

    /// Removes the checkpoint (idempotent).
    ///
    /// # Errors
    ///
    /// [`ProgressStoreError`] if the store failed.
    ///
    /// # Cancel safety
    ///
    /// As for [`save`](Self::save).
    fn clear(&self) -> impl Future<Output = Result<(), ProgressStoreError>> + Send;

    /// Whether this store keeps, with the checkpoint, the keys a scan gave
    /// up on ([`RetryPolicy::max_attempts`](super::RetryPolicy::max_attempts)):
    /// whether [`save_with_given_up`](Self::save_with_given_up) stores them
    /// and [`load_with_given_up`](Self::load_with_given_up) returns them.
    ///
    /// The default is `false`. A scan over a store that does not keep them
    /// never saves a resume point past a key it gave up on, so after a
    /// crash the key is read, and retried, again. Over a store that keeps
    /// them, the resume point moves on, and a resumed scan reports them
    /// again in [`ScanReport::gave_up`](super::ScanReport::gave_up).
    fn keeps_given_up(&self) -> bool {
        false
    }

    /// The saved checkpoint, if any, with the given-up keys saved with it
    /// (in their stored form, in the order they were given up).
    ///
    /// The default returns [`load`](Self::load)'s checkpoint with no keys.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read only).
    fn load_with_given_up(
        &self,
    ) -> impl Future<Output = Result<Option<CheckpointWithGivenUp>, ProgressStoreError>> + Send
    {
        async move {
            Ok(self
                .load()
                .await?
                .map(|checkpoint| (checkpoint, Vec::new())))
        }
    }

    /// Durably replaces the checkpoint and its given-up keys, in one step.
    /// [`save`](Self::save) is this with no keys.
    ///
    /// The default saves `checkpoint` and drops `given_up`: such a store
    /// answers `false` to [`keeps_given_up`](Self::keeps_given_up), and the
    /// scan keeps its resume point before the keys instead.
    ///
    /// # Errors
    ///
    /// As [`save`](Self::save).
    ///
    /// # Cancel safety
    ///
    /// As [`save`](Self::save).
    fn save_with_given_up(
        &self,
        checkpoint: Checkpoint,
        given_up: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<(), ProgressStoreError>> + Send {
        drop(given_up);
        self.save(checkpoint)
    }
}

impl<S: ProgressStore> ProgressStore for Arc<S> {
    fn load(&self) -> impl Future<Output = Result<Option<Checkpoint>, ProgressStoreError>> + Send {
        (**self).load()
    }

    fn save(
        &self,
        checkpoint: Checkpoint,
    ) -> impl Future<Output = Result<(), ProgressStoreError>> + Send {
        (**self).save(checkpoint)
    }

    fn clear(&self) -> impl Future<Output = Result<(), ProgressStoreError>> + Send {
        (**self).clear()
    }

    fn keeps_given_up(&self) -> bool {
        (**self).keeps_given_up()
    }

    fn load_with_given_up(
        &self,
    ) -> impl Future<Output = Result<Option<CheckpointWithGivenUp>, ProgressStoreError>> + Send
    {
        (**self).load_with_given_up()
    }

    fn save_with_given_up(
        &self,
        checkpoint: Checkpoint,
        given_up: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<(), ProgressStoreError>> + Send {
        (**self).save_with_given_up(checkpoint, given_up)
    }
}

/// A [`ProgressStore`] in memory: for tests, and for scans that need only
/// survive a restart of the scan task, not of the process.
///
/// Clones share the checkpoint. [`saves`](Self::saves) counts writes, so
/// tests can check how often a scan persists.
#[derive(Debug, Clone, Default)]
pub struct MemoryProgressStore {
    inner: Arc<Mutex<MemoryState>>,
}

#[derive(Debug, Default)]
struct MemoryState {
    checkpoint: Option<Checkpoint>,
    given_up: Vec<Vec<u8>>,
    saves: u64,
}

impl MemoryProgressStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The checkpoint now held, read synchronously.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        self.inner.lock().checkpoint.clone()
    }

    /// The given-up keys saved with the checkpoint, read synchronously.
    pub fn given_up(&self) -> Vec<Vec<u8>> {
        self.inner.lock().given_up.clone()
    }

    /// How many times [`save`](ProgressStore::save) (or
    /// [`save_with_given_up`](ProgressStore::save_with_given_up)) has
    /// succeeded.
    pub fn saves(&self) -> u64 {
        self.inner.lock().saves
    }
}

impl ProgressStore for MemoryProgressStore {
    async fn load(&self) -> Result<Option<Checkpoint>, ProgressStoreError> {
        Ok(self.checkpoint())
    }

    async fn save(&self, checkpoint: Checkpoint) -> Result<(), ProgressStoreError> {
        self.save_with_given_up(checkpoint, Vec::new()).await
    }

    async fn clear(&self) -> Result<(), ProgressStoreError> {
        let mut state = self.inner.lock();
        state.checkpoint = None;
        state.given_up.clear();
        Ok(())
    }

    fn keeps_given_up(&self) -> bool {
        true
    }

    async fn load_with_given_up(
        &self,
    ) -> Result<Option<CheckpointWithGivenUp>, ProgressStoreError> {
        let state = self.inner.lock();
        Ok(state
            .checkpoint
            .clone()
            .map(|checkpoint| (checkpoint, state.given_up.clone())))
    }

    async fn save_with_given_up(
        &self,
        checkpoint: Checkpoint,
        given_up: Vec<Vec<u8>>,
    ) -> Result<(), ProgressStoreError> {
        let mut state = self.inner.lock();
        state.checkpoint = Some(checkpoint);
        state.given_up = given_up;
        state.saves += 1;
        Ok(())
    }
}
