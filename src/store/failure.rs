//! How a failure of a durable store (SQLite, PostgreSQL) is classified, once
//! for every backend; the changelog and the progress stores map the class
//! into their public errors.
//!
//! Crate-private. The class decides whether a caller's retry can help:
//! `Busy` and `Unavailable` are transient, every other class permanent.

use std::fmt;

use crate::heartbeat::BoxError;

/// A store's failure, classified by its cause. Each variant but `Config`
/// and `SchemaTooNew` keeps the driver's error (its message, and the
/// SQLSTATE or SQLite code) as the source.
#[derive(Debug)]
pub(crate) enum StoreFailure {
    /// Locked by another writer past the timeout, a serialization conflict
    /// or a deadlock: transient.
    Busy(BoxError),
    /// I/O error, full disk, connection lost, server shutting down or
    /// starting up, pool exhausted: transient.
    Unavailable(BoxError),
    /// Not a database, a damaged file, or a schema whose tables are gone:
    /// permanent.
    Corrupt(BoxError),
    /// A read-only file, directory or mount, or a role without the
    /// privilege: permanent.
    PermissionDenied(BoxError),
    /// The database cannot be opened: a missing directory, an unknown
    /// database or role, failed authentication: permanent.
    CannotOpen(BoxError),
    /// A value over the store's size limit: permanent.
    TooBig(BoxError),
    /// The store refused the statement itself (a reserved schema, a
    /// constraint, an unexpected SQL error): permanent.
    Rejected(BoxError),
    /// Unusable configuration, found before reaching the store: permanent.
    Config(String),
    /// The store was written by a newer version of this crate: permanent.
    SchemaTooNew { found: i64, supported: i64 },
}

impl StoreFailure {
    /// `self`, with `context` prefixed to its message: the source stays the
    /// driver's error.
    pub(crate) fn context(self, context: impl Into<String>) -> Self {
        let wrap = |source| -> BoxError {
            Box::new(Context {
                context: context.into(),
                source,
            })
        };
        match self {
            StoreFailure::Busy(source) => StoreFailure::Busy(wrap(source)),
            StoreFailure::Unavailable(source) => StoreFailure::Unavailable(wrap(source)),
            StoreFailure::Corrupt(source) => StoreFailure::Corrupt(wrap(source)),
            StoreFailure::PermissionDenied(source) => StoreFailure::PermissionDenied(wrap(source)),
            StoreFailure::CannotOpen(source) => StoreFailure::CannotOpen(wrap(source)),
            StoreFailure::TooBig(source) => StoreFailure::TooBig(wrap(source)),
            StoreFailure::Rejected(source) => StoreFailure::Rejected(wrap(source)),
            other => other,
        }
    }
}

/// A driver error with what we were doing when it happened.
#[derive(Debug)]
struct Context {
    context: String,
    source: BoxError,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.source)
    }
}

impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
