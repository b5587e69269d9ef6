//! The plumbing every durable table shares — the changelog, the scan's
//! progress store and the lease table each keep one file per backend and
//! take everything else from here: opening and versioning schemas,
//! connections and pools, the group-committed SQLite write path, the
//! caller-driven batcher of the PostgreSQL tables, and one classification of
//! driver errors.
//!
//! Crate-private. Under `--cfg loom` the batcher is compiled without any
//! backend, for its loom models.

#[cfg(any(feature = "postgres", loom))]
pub(crate) mod batch;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod failure;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

/// Column conversions shared by the SQL tables, which store ids, counters
/// and seqnos as signed 64-bit integers. Out of range saturates; values this
/// crate writes never are.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// See [`to_u64`].
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
