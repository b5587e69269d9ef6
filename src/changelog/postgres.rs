//! The PostgreSQL changelog: one log shared by the processes of many
//! machines.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::Row;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Socket, Statement};

use super::{
    ChangeLog, ChangeLogError, ClaimedEntry, EntryId, EntryInfo, EntryState, Fence, OwnerId,
    Ownership, Removal, to_i64, to_u64,
};
use crate::postgres::{Connect, PgFailure, millis};

const BACKEND: &str = "postgres";

/// The changelog schema version this crate writes and reads.
const SCHEMA_VERSION: i64 = 1;

impl From<PgFailure> for ChangeLogError {
    fn from(failure: PgFailure) -> Self {
        match failure {
            PgFailure::Busy(_) => ChangeLogError::Busy { backend: BACKEND },
            PgFailure::Storage(source) => ChangeLogError::Storage {
                backend: BACKEND,
                source,
            },
            PgFailure::Config(reason) => ChangeLogError::Config { reason },
            PgFailure::SchemaTooNew { found, supported } => {
                ChangeLogError::SchemaTooNew { found, supported }
            }
        }
    }
}

fn pg(error: tokio_postgres::Error) -> ChangeLogError {
    PgFailure::from(error).into()
}

/// Configures and opens a [`PostgresChangeLog`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct PostgresChangeLogBuilder {
    connect: Connect,
    staleness: Duration,
    clock_offset: Duration,
}

impl PostgresChangeLogBuilder {
    /// Entries go stale this long after their last refresh, on the server's
    /// clock (default 30 s).
    pub fn staleness(mut self, staleness: Duration) -> Self {
        self.staleness = staleness;
        self
    }

    /// Puts the changelog's tables in this schema (created if missing), so
    /// several independent logs can share one database (default: none, the
    /// connection's `search_path`, normally `public`). Plain identifiers
    /// only: ASCII letters, digits and `_`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.connect.schema = Some(schema.into());
        self
    }

    /// At most this many connections per handle (default 4). Connections
    /// are opened on first use; clones of a handle share its pool.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.connect.pool_size = size;
        self
    }

    /// How long opening a connection, or waiting for a free one in the pool,
    /// may take before a call fails (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect.connect_timeout = timeout;
        self
    }

    /// Connects through TLS with this connector (e.g. from
    /// `postgres-native-tls` or `tokio-postgres-rustls`); default: no TLS.
    pub fn tls<T>(mut self, tls: T) -> Self
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        self.connect.tls(tls);
        self
    }

    /// Shifts this handle's reading of the server's clock forward (default
    /// 0); see [`PostgresChangeLog::shift_clock`]. **For tests only.**
    pub fn clock_offset(mut self, offset: Duration) -> Self {
        self.clock_offset = offset;
        self
    }

    /// Connects and creates the changelog's tables if they do not exist yet
    /// (recording their version in `leasehold_schema`). Any number of
    /// processes may open the same log at once: creation is serialized by a
    /// transaction-scoped advisory lock.
    ///
    /// # Errors
    ///
    /// [`ChangeLogError::Config`] for an unusable URL, schema name or
    /// duration, failed authentication, an unknown database or a missing
    /// privilege; [`ChangeLogError::SchemaTooNew`] if the tables were
    /// created by a newer version of this crate; [`ChangeLogError::Storage`]
    /// if the server cannot be reached (transient).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the schema is created in one transaction, which a
    /// dropped open rolls back or leaves committed whole.
    pub async fn open(self) -> Result<PostgresChangeLog, ChangeLogError> {
        let staleness_ms = millis(self.staleness, "staleness")?;
        let offset_ms = millis(self.clock_offset, "clock offset")?;
        let (pool, tables) = self.connect.pool()?;
        let log = tables.table("leasehold_changelog");
        // An identity column: ids are never reused, so the fence of a
        // removed entry can never match a later entry at the same generation.
        let ddl = format!(
            "CREATE TABLE {log} (
                 id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 owner TEXT NOT NULL,
                 generation BIGINT NOT NULL,
                 refreshed_at TIMESTAMPTZ NOT NULL,
                 recorded_at TIMESTAMPTZ NOT NULL,
                 claims INTEGER NOT NULL DEFAULT 0,
                 quarantined TEXT,
                 payload BYTEA NOT NULL
             );
             CREATE INDEX leasehold_changelog_claimable
                 ON {log} (refreshed_at, id) WHERE quarantined IS NULL;"
        );
        tables
            .ensure(&pool, "changelog", SCHEMA_VERSION, &ddl)
            .await?;
        Ok(PostgresChangeLog {
            shared: Arc::new(Shared {
                pool,
                schema: tables.schema().map(str::to_owned),
                staleness: self.staleness,
                staleness_ms,
                offset_ms: AtomicI64::new(offset_ms),
                sql: Sql::new(&log),
            }),
        })
    }
}

/// The server's clock plus the handle's test offset (always parameter `$1`).
const STORE_NOW: &str = "(now() + $1::bigint * interval '1 millisecond')";

/// The statements, with the table name filled in (prepared and cached per
/// connection on first use).
struct Sql {
    record: String,
    refresh: String,
    remove: String,
    claim: String,
    quarantine: String,
    get: String,
    list: String,
}

impl Sql {
    fn new(log: &str) -> Self {
        let info = format!(
            "SELECT id, owner, generation, claims, payload, quarantined,
                    greatest(0, floor(extract(epoch FROM {STORE_NOW} - refreshed_at) * 1000))::bigint
             FROM {log}"
        );
        Sql {
            record: format!(
                "INSERT INTO {log} (owner, generation, refreshed_at, recorded_at, payload)
                 VALUES ($2, 1, {STORE_NOW}, {STORE_NOW}, $3)
                 RETURNING id"
            ),
            // Conditional on the fence: a removed, claimed or quarantined
            // entry matches no row, so a late heartbeat can neither recreate
            // nor re-own it. A refresh blocked behind a claimer's row lock is
            // re-checked against the claimed row (generation moved on) and
            // matches nothing.
            refresh: format!(
                "UPDATE {log} SET refreshed_at = greatest(refreshed_at, {STORE_NOW})
                 WHERE id = $2 AND owner = $3 AND generation = $4 AND quarantined IS NULL"
            ),
            // One round trip: the CTE deletes if the fence owns the row; the
            // outer query still sees the statement's snapshot, so it tells
            // "already gone" (no row) from "someone else's now" (a row whose
            // fence differs: ids are never reused).
            remove: format!(
                "WITH deleted AS (
                     DELETE FROM {log} WHERE id = $1 AND owner = $2 AND generation = $3
                     RETURNING id)
                 SELECT (SELECT count(*) FROM deleted),
                        EXISTS (SELECT 1 FROM {log} WHERE id = $1)"
            ),
            // The whole claim is this one statement. The subquery locks the
            // rows it selects (FOR UPDATE) and skips rows another claimer has
            // locked (SKIP LOCKED) instead of waiting for them; a row whose
            // lock holder committed meanwhile is re-checked on its newest
            // version, which a claim has made fresh. So each row is updated
            // by exactly one claimer, which moves it to the next generation
            // and resets its age.
            claim: format!(
                "UPDATE {log}
                 SET owner = $2, generation = generation + 1, claims = claims + 1,
                     refreshed_at = greatest(refreshed_at, {STORE_NOW})
                 WHERE id IN (
                     SELECT id FROM {log}
                     WHERE quarantined IS NULL
                       AND refreshed_at <= {STORE_NOW} - $3::bigint * interval '1 millisecond'
                     ORDER BY refreshed_at, id
                     LIMIT $4
                     FOR UPDATE SKIP LOCKED)
                 RETURNING id, generation, claims, payload"
            ),
            // Idempotent: quarantining again keeps the first reason.
            quarantine: format!(
                "UPDATE {log} SET quarantined = coalesce(quarantined, $4)
                 WHERE id = $1 AND owner = $2 AND generation = $3"
            ),
            get: format!("{info} WHERE id = $2"),
            list: format!("{info} ORDER BY id"),
        }
    }
}

/// A [`ChangeLog`] in a PostgreSQL database: durable, shared by any number
/// of processes on any number of machines.
///
/// Pick it when instances on several machines must recover each other's
/// work; on one machine, `SqliteChangeLog` needs no server. Requires the
/// `postgres` feature. Clones share one connection pool; every call is one
/// statement (one round trip), run on a pooled connection.
///
/// # Exclusive claims
///
/// [`claim_stale`](ChangeLog::claim_stale) is a single
/// `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED LIMIT n) RETURNING …`:
/// a row is re-owned only by the statement that holds its row lock, after
/// checking, on the row's newest version, that it is still stale; the update
/// moves it to the next generation and makes it fresh, so a concurrent
/// claimer either skipped it (locked) or finds it no longer stale. Claimers
/// never wait for each other. Fenced calls are single conditional
/// statements on `(id, owner, generation)`.
///
/// # The server's clock
///
/// Every time is read by the server inside the statement (`now()`, the
/// start of the statement's transaction) and compared with times the server
/// itself wrote. No client's clock is ever sent, so clients whose clocks
/// disagree (by seconds or by hours) still agree on which entries are
/// stale. The only client-side time is the test hook
/// [`shift_clock`](Self::shift_clock), which defaults to zero.
///
/// # Durability
///
/// `record` returns after the server commits; it is as durable as the
/// server's `synchronous_commit` setting makes a commit (the default, `on`,
/// flushes the WAL before acknowledging).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use leasehold::changelog::{ChangeLog, OwnerId, PostgresChangeLog, Removal};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log = PostgresChangeLog::builder("postgres://app@db.internal/storage")
///     .schema("leasehold")
///     .staleness(Duration::from_secs(30))
///     .open()
///     .await?;
/// let fence = log.record(&OwnerId::unique("writer"), b"intent".to_vec()).await?;
/// // ... the side effects the entry protects ...
/// assert_eq!(log.remove(&fence).await?, Removal::Removed);
///
/// // On any machine: recover what crashed writers left behind.
/// for entry in log.claim_stale(&OwnerId::unique("recovery"), 100).await? {
///     // ... idempotent cleanup of entry.payload ...
///     log.remove(&entry.fence).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresChangeLog {
    shared: Arc<Shared>,
}

struct Shared {
    pool: Pool,
    schema: Option<String>,
    staleness: Duration,
    staleness_ms: i64,
    offset_ms: AtomicI64,
    sql: Sql,
}

impl PostgresChangeLog {
    /// A builder for the log in the database at `url`, a libpq-style
    /// connection string (`postgres://user:password@host:port/database` or
    /// `host=… user=… dbname=…`).
    pub fn builder(url: impl Into<String>) -> PostgresChangeLogBuilder {
        Self::with_connect(Connect::url(url.into()))
    }

    /// A builder for the log in the database `config` connects to.
    pub fn builder_with_config(config: tokio_postgres::Config) -> PostgresChangeLogBuilder {
        Self::with_connect(Connect::config(config))
    }

    fn with_connect(connect: Connect) -> PostgresChangeLogBuilder {
        PostgresChangeLogBuilder {
            connect,
            staleness: Duration::from_secs(30),
            clock_offset: Duration::ZERO,
        }
    }

    /// The schema holding the tables, if one was configured.
    pub fn schema(&self) -> Option<&str> {
        self.shared.schema.as_deref()
    }

    /// Moves this handle's (and its clones') reading of the server's clock
    /// forward by `by`: entries look `by` older to its claims, and its own
    /// writes are stamped `by` later.
    ///
    /// **A testing hook**: it makes entries stale without sleeping. It is
    /// added to the server's `now()` inside the SQL; production handles
    /// leave it at 0 (a handle with an offset *is* a client with a skewed
    /// clock, the very thing server-side time avoids).
    pub fn shift_clock(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.shared.offset_ms.fetch_add(by, Ordering::SeqCst);
    }

    /// This handle's test offset on the server's clock.
    pub fn clock_offset(&self) -> Duration {
        Duration::from_millis(to_u64(self.offset()))
    }

    fn offset(&self) -> i64 {
        self.shared.offset_ms.load(Ordering::SeqCst)
    }

    async fn client(&self) -> Result<Object, ChangeLogError> {
        self.shared
            .pool
            .get()
            .await
            .map_err(|error| PgFailure::from_pool(error).into())
    }

    async fn prepared(
        &self,
        sql: impl Fn(&Sql) -> &str,
    ) -> Result<(Object, Statement), ChangeLogError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql(&self.shared.sql))
            .await
            .map_err(pg)?;
        Ok((client, statement))
    }
}

impl fmt::Debug for PostgresChangeLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresChangeLog")
            .field("schema", &self.shared.schema)
            .field("staleness", &self.shared.staleness)
            .finish_non_exhaustive()
    }
}

fn to_u32(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

fn held(changed: u64) -> Ownership {
    if changed == 1 {
        Ownership::Held
    } else {
        Ownership::Lost
    }
}

impl ChangeLog for PostgresChangeLog {
    fn staleness(&self) -> Duration {
        self.shared.staleness
    }

    async fn record(&self, owner: &OwnerId, payload: Vec<u8>) -> Result<Fence, ChangeLogError> {
        let (client, statement) = self.prepared(|s| &s.record).await?;
        // An autocommit statement: committed when the row comes back.
        let row = client
            .query_one(&statement, &[&self.offset(), &owner.as_str(), &payload])
            .await
            .map_err(pg)?;
        Ok(Fence::new(
            EntryId::new(to_u64(row.get(0))),
            owner.clone(),
            1,
        ))
    }

    async fn refresh(&self, fence: &Fence) -> Result<Ownership, ChangeLogError> {
        let (client, statement) = self.prepared(|s| &s.refresh).await?;
        let changed = client
            .execute(
                &statement,
                &[
                    &self.offset(),
                    &to_i64(fence.id().get()),
                    &fence.owner().as_str(),
                    &to_i64(fence.generation()),
                ],
            )
            .await
            .map_err(pg)?;
        Ok(held(changed))
    }

    async fn remove(&self, fence: &Fence) -> Result<Removal, ChangeLogError> {
        let (client, statement) = self.prepared(|s| &s.remove).await?;
        let row = client
            .query_one(
                &statement,
                &[
                    &to_i64(fence.id().get()),
                    &fence.owner().as_str(),
                    &to_i64(fence.generation()),
                ],
            )
            .await
            .map_err(pg)?;
        let deleted: i64 = row.get(0);
        let existed: bool = row.get(1);
        Ok(match (deleted, existed) {
            (1, _) => Removal::Removed,
            (_, true) => Removal::Fenced,
            (_, false) => Removal::Absent,
        })
    }

    async fn claim_stale(
        &self,
        owner: &OwnerId,
        max: usize,
    ) -> Result<Vec<ClaimedEntry>, ChangeLogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let (client, statement) = self.prepared(|s| &s.claim).await?;
        let rows = client
            .query(
                &statement,
                &[
                    &self.offset(),
                    &owner.as_str(),
                    &self.shared.staleness_ms,
                    &i64::try_from(max).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(pg)?;
        let mut claimed: Vec<ClaimedEntry> = rows
            .iter()
            .map(|row| ClaimedEntry {
                fence: Fence::new(
                    EntryId::new(to_u64(row.get(0))),
                    owner.clone(),
                    to_u64(row.get(1)),
                ),
                claims: to_u32(row.get(2)),
                payload: row.get(3),
            })
            .collect();
        claimed.sort_by_key(|entry| entry.fence.id());
        Ok(claimed)
    }

    async fn quarantine(&self, fence: &Fence, reason: &str) -> Result<Ownership, ChangeLogError> {
        let (client, statement) = self.prepared(|s| &s.quarantine).await?;
        let changed = client
            .execute(
                &statement,
                &[
                    &to_i64(fence.id().get()),
                    &fence.owner().as_str(),
                    &to_i64(fence.generation()),
                    &reason,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(held(changed))
    }

    async fn get(&self, id: EntryId) -> Result<Option<EntryInfo>, ChangeLogError> {
        let (client, statement) = self.prepared(|s| &s.get).await?;
        let row = client
            .query_opt(&statement, &[&self.offset(), &to_i64(id.get())])
            .await
            .map_err(pg)?;
        Ok(row.as_ref().map(entry_info))
    }

    async fn list(&self) -> Result<Vec<EntryInfo>, ChangeLogError> {
        let (client, statement) = self.prepared(|s| &s.list).await?;
        let rows = client
            .query(&statement, &[&self.offset()])
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(entry_info).collect())
    }
}

fn entry_info(row: &Row) -> EntryInfo {
    let owner: String = row.get(1);
    let quarantined: Option<String> = row.get(5);
    EntryInfo {
        fence: Fence::new(
            EntryId::new(to_u64(row.get(0))),
            OwnerId::new(owner),
            to_u64(row.get(2)),
        ),
        claims: to_u32(row.get(3)),
        payload: row.get(4),
        state: match quarantined {
            None => EntryState::Active,
            Some(reason) => EntryState::Quarantined { reason },
        },
        age: Duration::from_millis(to_u64(row.get(6))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Configuration errors are found before any connection is made, and
    /// are permanent.
    #[tokio::test]
    async fn unusable_configuration_is_a_permanent_config_error() {
        let cases = [
            PostgresChangeLog::builder("postgres://h:notaport/db"),
            PostgresChangeLog::builder("postgres://127.0.0.1:1/db").schema("x\"; DROP TABLE y; --"),
            PostgresChangeLog::builder("postgres://127.0.0.1:1/db").schema("1starts_with_digit"),
            PostgresChangeLog::builder("postgres://127.0.0.1:1/db").schema(""),
            PostgresChangeLog::builder("postgres://127.0.0.1:1/db").schema("a".repeat(64)),
            PostgresChangeLog::builder("postgres://127.0.0.1:1/db").pool_size(0),
            PostgresChangeLog::builder("postgres://127.0.0.1:1/db").staleness(Duration::MAX),
        ];
        for builder in cases {
            let error = builder.clone().open().await.unwrap_err();
            assert!(
                matches!(error, ChangeLogError::Config { .. }) && !error.is_transient(),
                "{builder:?}: {error}"
            );
        }
    }

    /// An unreachable server is a transient storage error, not a config one.
    #[tokio::test]
    async fn unreachable_server_is_a_transient_storage_error() {
        let error = PostgresChangeLog::builder("postgres://nobody@127.0.0.1:1/none")
            .schema("plain_name_1")
            .connect_timeout(Duration::from_secs(2))
            .open()
            .await
            .unwrap_err();
        assert!(
            matches!(error, ChangeLogError::Storage { .. }) && error.is_transient(),
            "{error}"
        );
    }

    #[test]
    fn debug_never_shows_the_connection_string() {
        let builder = PostgresChangeLog::builder("postgres://user:s3cret@db/x");
        assert!(!format!("{builder:?}").contains("s3cret"));
    }
}
