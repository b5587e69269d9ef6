//! What the durable lease tables (`SqliteLeaseTable`, `PostgresLeaseTable`)
//! share: the reader's fence, a reader's row, and how a since is stored.

use super::backend::Since;
use super::error::LeaseTableError;
use super::memory::ReaderId;
use crate::changelog::Payload;

/// A since a durable lease table can store: a [`Since`] with the crate's
/// [`Payload`] encoding (implemented for `u64`; implement `Payload` for your
/// own frontier type, e.g. with [`FieldWriter`](crate::changelog::FieldWriter)).
pub trait TableSince: Since + Payload {}

impl<T: Since + Payload> TableSince for T {}

/// One registration of a reader in a lease table: its id (never reused) and
/// its generation (the shard's registration count when it registered; a
/// reader that registers again gets a larger one). Every call made for the
/// reader is conditional on both, so once the reader is expired none of
/// them matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReaderFence {
    reader: ReaderId,
    generation: u64,
}

impl ReaderFence {
    pub(crate) fn new(reader: ReaderId, generation: u64) -> Self {
        Self { reader, generation }
    }

    /// The reader's id.
    pub fn reader(&self) -> ReaderId {
        self.reader
    }

    /// The reader's generation: grows with every registration in the shard,
    /// so it can serve as a fencing token in a store the table cannot join.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// What a lease table holds for one live reader.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReaderRow<S> {
    /// The reader's id and generation.
    pub fence: ReaderFence,
    /// The since it holds.
    pub since: S,
    /// Its seqno hold.
    pub seqno_hold: u64,
    /// Its heartbeat counter: how many heartbeats succeeded.
    pub beats: u64,
}

/// Decodes a stored since; `reader` names the row for the error (0: the
/// shard's row).
pub(crate) fn decode_since<S: Payload>(reader: u64, bytes: &[u8]) -> Result<S, LeaseTableError> {
    S::decode(bytes).map_err(|error| LeaseTableError::Undecodable {
        reader,
        reason: error.reason,
    })
}
