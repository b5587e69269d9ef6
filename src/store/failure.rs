//! How a failure of a durable store (SQLite, PostgreSQL) is classified, once
//! for every backend; the changelog and the progress stores map the class
//! into their public errors.
//!
//! Crate-private. The class decides whether a caller's retry can help:
//! `Busy` and `Unavailable` are transient, every other class permanent.

use std::fmt;
use std::sync::Arc;

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
        match self.into_parts() {
            Ok((make, source)) => make(Box::new(Context {
                context: context.into(),
                source,
            })),
            Err(other) => other,
        }
    }

    /// `n` copies of `self`, for the `n` operations of a batch that failed
    /// together: the same class, each with the same driver error (shared)
    /// as its source.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn copies(self, n: usize) -> Vec<StoreFailure> {
        match self.into_parts() {
            Ok((make, source)) => {
                let source: Arc<dyn std::error::Error + Send + Sync> = Arc::from(source);
                (0..n)
                    .map(|_| make(Box::new(Shared(Arc::clone(&source)))))
                    .collect()
            }
            // The two variants without a source.
            Err(other) => (0..n)
                .map(|_| match &other {
                    StoreFailure::SchemaTooNew { found, supported } => StoreFailure::SchemaTooNew {
                        found: *found,
                        supported: *supported,
                    },
                    StoreFailure::Config(reason) => StoreFailure::Config(reason.clone()),
                    _ => unreachable!("every other variant keeps a source"),
                })
                .collect(),
        }
    }

    /// The variant and the driver's error, for the variants that keep one;
    /// `self` for the others.
    fn into_parts(self) -> Result<(Variant, BoxError), StoreFailure> {
        match self {
            StoreFailure::Busy(source) => Ok((StoreFailure::Busy, source)),
            StoreFailure::Unavailable(source) => Ok((StoreFailure::Unavailable, source)),
            StoreFailure::Corrupt(source) => Ok((StoreFailure::Corrupt, source)),
            StoreFailure::PermissionDenied(source) => Ok((StoreFailure::PermissionDenied, source)),
            StoreFailure::CannotOpen(source) => Ok((StoreFailure::CannotOpen, source)),
            StoreFailure::TooBig(source) => Ok((StoreFailure::TooBig, source)),
            StoreFailure::Rejected(source) => Ok((StoreFailure::Rejected, source)),
            other => Err(other),
        }
    }
}

/// A variant of [`StoreFailure`] that keeps the driver's error.
type Variant = fn(BoxError) -> StoreFailure;

/// One driver error shown by several failures: displays as the error, and
/// has its source.
#[derive(Debug)]
struct Shared(Arc<dyn std::error::Error + Send + Sync>);

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
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
