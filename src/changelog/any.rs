//! [`AnyChangeLog`]: one type for whichever shipped backend a program
//! chooses at run time.

use std::fmt;
use std::time::Duration;

#[cfg(feature = "postgres")]
use super::PostgresChangeLog;
#[cfg(feature = "sqlite")]
use super::SqliteChangeLog;
use super::{
    Advanced, Attempt, ChangeLog, ChangeLogError, ClaimedEntry, EntryId, EntryInfo, Fence,
    MemoryChangeLog, OwnerId, Ownership, Removal,
};

/// Any of the shipped changelog backends, chosen at run time (from a flag,
/// a configuration file), behind one [`ChangeLog`] type.
///
/// [`ChangeLog`] uses `async fn` in traits, so `dyn ChangeLog` is not a
/// type; pick this enum when the backend is only known at run time, and
/// a generic `L: ChangeLog` when it is known at compile time (or when the
/// backend is your own). Each call forwards to the backend held, with no
/// allocation. It is as cheap to clone as the backend it holds.
///
/// Which variants exist depends on the crate's features: `Memory` always,
/// `Sqlite` with `sqlite`, `Postgres` with `postgres`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use leasehold::changelog::{AnyChangeLog, ChangeLog, MemoryChangeLog, OwnerId};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// fn open(url: Option<&str>) -> AnyChangeLog {
///     match url {
///         // Some(path) => SqliteChangeLog::open(path, ..)?.into(),   (feature `sqlite`)
///         // Some(url) => PostgresChangeLog::builder(url).build().await?.into(),   (feature `postgres`)
///         _ => MemoryChangeLog::new(leasehold::clock::system(), Duration::from_secs(30)).into(),
///     }
/// }
/// let log = open(None);
/// log.record(&OwnerId::new("writer"), b"intent".to_vec()).await?;
/// assert_eq!(log.list().await?.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum AnyChangeLog {
    /// The in-memory log (tests, single-process use).
    Memory(MemoryChangeLog),
    /// The SQLite log: several processes on one machine.
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    Sqlite(SqliteChangeLog),
    /// The PostgreSQL log: several machines.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    Postgres(PostgresChangeLog),
}

impl fmt::Debug for AnyChangeLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyChangeLog::Memory(log) => f.debug_tuple("Memory").field(log).finish(),
            #[cfg(feature = "sqlite")]
            AnyChangeLog::Sqlite(log) => f.debug_tuple("Sqlite").field(log).finish(),
            #[cfg(feature = "postgres")]
            AnyChangeLog::Postgres(log) => f.debug_tuple("Postgres").field(log).finish(),
        }
    }
}

impl From<MemoryChangeLog> for AnyChangeLog {
    fn from(log: MemoryChangeLog) -> Self {
        AnyChangeLog::Memory(log)
    }
}

#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
impl From<SqliteChangeLog> for AnyChangeLog {
    fn from(log: SqliteChangeLog) -> Self {
        AnyChangeLog::Sqlite(log)
    }
}

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
impl From<PostgresChangeLog> for AnyChangeLog {
    fn from(log: PostgresChangeLog) -> Self {
        AnyChangeLog::Postgres(log)
    }
}

/// Forwards a call to the backend held.
macro_rules! forward {
    ($self:ident, $log:ident => $call:expr) => {
        match $self {
            AnyChangeLog::Memory($log) => $call,
            #[cfg(feature = "sqlite")]
            AnyChangeLog::Sqlite($log) => $call,
            #[cfg(feature = "postgres")]
            AnyChangeLog::Postgres($log) => $call,
        }
    };
}

impl ChangeLog for AnyChangeLog {
    fn staleness(&self) -> Duration {
        forward!(self, log => log.staleness())
    }

    async fn record(&self, owner: &OwnerId, payload: Vec<u8>) -> Result<Fence, ChangeLogError> {
        forward!(self, log => log.record(owner, payload).await)
    }

    async fn refresh(&self, fence: &Fence) -> Result<Ownership, ChangeLogError> {
        forward!(self, log => log.refresh(fence).await)
    }

    async fn remove(&self, fence: &Fence) -> Result<Removal, ChangeLogError> {
        forward!(self, log => log.remove(fence).await)
    }

    async fn claim_stale(
        &self,
        owner: &OwnerId,
        max: usize,
    ) -> Result<Vec<ClaimedEntry>, ChangeLogError> {
        forward!(self, log => log.claim_stale(owner, max).await)
    }

    async fn quarantine(&self, fence: &Fence, reason: &str) -> Result<Ownership, ChangeLogError> {
        forward!(self, log => log.quarantine(fence, reason).await)
    }

    async fn advance(&self, fence: &Fence) -> Result<Advanced, ChangeLogError> {
        forward!(self, log => log.advance(fence).await)
    }

    async fn start_attempt(&self, fence: &Fence) -> Result<Attempt, ChangeLogError> {
        forward!(self, log => log.start_attempt(fence).await)
    }

    async fn record_failure(
        &self,
        fence: &Fence,
        reason: &str,
    ) -> Result<Ownership, ChangeLogError> {
        forward!(self, log => log.record_failure(fence, reason).await)
    }

    fn next_stale_in(&self) -> Option<Duration> {
        forward!(self, log => log.next_stale_in())
    }

    async fn get(&self, id: EntryId) -> Result<Option<EntryInfo>, ChangeLogError> {
        forward!(self, log => log.get(id).await)
    }

    async fn list(&self) -> Result<Vec<EntryInfo>, ChangeLogError> {
        forward!(self, log => log.list().await)
    }
}
