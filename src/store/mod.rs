//! The plumbing every durable table shares — the changelog, the scan's
//! progress store and the lease table each keep one file per backend and
//! take everything else from here: opening and versioning schemas,
//! connections and pools, the group-committed SQLite write path, and one
//! classification of driver errors.
//!
//! Crate-private.

pub(crate) mod failure;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;
