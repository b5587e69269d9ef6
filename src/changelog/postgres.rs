//! The PostgreSQL changelog: one log shared by the processes of many
//! machines.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use deadpool_postgres::{Object, Pool};
use futures::future::{BoxFuture, join_all};
use tokio_postgres::Row;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Socket, Statement};

use super::staleness::{Observations, Seen};
use super::{
    Advanced, Attempt, ChangeLog, ChangeLogError, ClaimedEntry, EntryId, EntryInfo, EntryState,
    Fence, FencedCommitError, OwnerId, Ownership, RECENT_FAILURES, Removal, clip_failure, to_i64,
    to_u64,
};
use crate::clock::Clock;
use crate::store::batch::GroupCommit;
use crate::store::failure::StoreFailure;
use crate::store::postgres::Connect;
use crate::sync::Mutex;

const BACKEND: &str = "postgres";

/// The changelog schema version this crate writes and reads.
const SCHEMA_VERSION: i64 = 2;

/// The top of `BIGINT` and `INTEGER`: counters there cannot be incremented.
const MAX_BIGINT: i64 = i64::MAX;
const MAX_INTEGER: i32 = i32::MAX;

impl From<StoreFailure> for ChangeLogError {
    fn from(failure: StoreFailure) -> Self {
        ChangeLogError::from_failure(BACKEND, failure)
    }
}

fn pg(error: tokio_postgres::Error) -> ChangeLogError {
    StoreFailure::from(error).into()
}

/// Configures and opens a [`PostgresChangeLog`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct PostgresChangeLogBuilder {
    connect: Connect,
    staleness: Duration,
    clock: Arc<dyn Clock>,
}

impl PostgresChangeLogBuilder {
    /// Entries may be claimed once this handle has seen them go this long
    /// without a refresh (default 30 s).
    pub fn staleness(mut self, staleness: Duration) -> Self {
        self.staleness = staleness;
        self
    }

    /// The monotonic clock this handle measures staleness on (default
    /// [`clock::system`](crate::clock::system), which counts suspended
    /// time). Tests pass a [`ManualClock`](crate::clock::ManualClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
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

    /// At most this many connections per handle (default 16, or 4 per
    /// available core where that is more). Connections are opened on first
    /// use; clones of a handle share its pool. Each call holds a connection
    /// for its round trips: with fewer connections than concurrent calls,
    /// calls queue for one.
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

    /// Connects and creates the changelog's tables if they do not exist yet
    /// (recording their version in `leasehold_schema`). Any number of
    /// processes may open the same log at once: creation is serialized by a
    /// transaction-scoped advisory lock.
    ///
    /// # Errors
    ///
    /// Permanent: [`ChangeLogError::Config`] for an unusable URL, schema
    /// name or duration; [`ChangeLogError::CannotOpen`] for an unknown
    /// database or role, or failed authentication;
    /// [`ChangeLogError::PermissionDenied`] for a missing privilege;
    /// [`ChangeLogError::Rejected`] if the server refuses the schema (e.g. a
    /// reserved one such as `pg_catalog`); [`ChangeLogError::Corrupt`] if
    /// the version row is there but the table is not;
    /// [`ChangeLogError::SchemaTooNew`] if the tables were created by a
    /// newer version of this crate. Transient: [`ChangeLogError::Storage`]
    /// if the server cannot be reached or is shutting down. Every error
    /// from the server shows its message and SQLSTATE.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the schema is created in one transaction, which a
    /// dropped open rolls back or leaves committed whole.
    pub async fn open(self) -> Result<PostgresChangeLog, ChangeLogError> {
        if self.staleness.is_zero() {
            return Err(ChangeLogError::Config {
                reason: "staleness must be greater than zero".into(),
            });
        }
        let (pool, tables) = self.connect.pool()?;
        let log = tables.table("leasehold_changelog");
        // An identity column: ids are never reused, so the fence of a
        // removed entry can never match a later entry at the same generation.
        // `beat` is what staleness is judged on; `committed` is set by a
        // fenced commit in its own transaction; `attempts` counts cleanup
        // attempts started, `failures` keeps the most recent failure reasons,
        // oldest first. The timestamps are for people reading the table; no
        // decision reads them.
        let ddl = format!(
            "CREATE TABLE {log} (
                 id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 owner TEXT NOT NULL,
                 generation BIGINT NOT NULL,
                 refreshed_at TIMESTAMPTZ NOT NULL,
                 recorded_at TIMESTAMPTZ NOT NULL,
                 claims INTEGER NOT NULL DEFAULT 0,
                 quarantined TEXT,
                 payload BYTEA NOT NULL,
                 beat BIGINT NOT NULL DEFAULT 0,
                 committed BOOLEAN NOT NULL DEFAULT false,
                 attempts INTEGER NOT NULL DEFAULT 0,
                 failures TEXT[] NOT NULL DEFAULT '{{}}'
             );"
        );
        let upgrades = [format!(
            "ALTER TABLE {log} ADD COLUMN beat BIGINT NOT NULL DEFAULT 0;
             ALTER TABLE {log} ADD COLUMN committed BOOLEAN NOT NULL DEFAULT false;
             ALTER TABLE {log} ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE {log} ADD COLUMN failures TEXT[] NOT NULL DEFAULT '{{}}';
             DROP INDEX IF EXISTS {};",
            tables.table("leasehold_changelog_claimable")
        )];
        tables
            .ensure(
                &pool,
                "changelog",
                SCHEMA_VERSION,
                &ddl,
                &upgrades,
                &["leasehold_changelog"],
            )
            .await?;
        let sequence = id_sequence(&pool, &log).await?;
        let sql = Arc::new(Sql::new(&log, &sequence));
        Ok(PostgresChangeLog {
            shared: Arc::new(Shared {
                records: group_commit(&pool, &sql, record_batch),
                removals: group_commit(&pool, &sql, remove_batch),
                pool,
                schema: tables.schema().map(str::to_owned),
                staleness: self.staleness,
                clock: self.clock,
                observations: Mutex::new(Observations::default()),
                sql,
            }),
        })
    }
}

/// The statements, with the table name filled in (prepared and cached per
/// connection on first use).
struct Sql {
    record: String,
    record_many: String,
    remove_many: String,
    exists_many: String,
    refresh: String,
    remove: String,
    exists: String,
    scan: String,
    claim: String,
    quarantine_unusable: String,
    quarantine: String,
    start_attempt: String,
    record_failure: String,
    advance: String,
    take_fence: String,
    get: String,
    list: String,
}

impl Sql {
    /// `sequence`: the qualified name of the id column's sequence.
    fn new(log: &str, sequence: &str) -> Self {
        let sequence = sequence.replace('\'', "''");
        let info = format!(
            "SELECT id, owner, generation, claims, payload, quarantined, beat, committed,
                    attempts, failures
             FROM {log}"
        );
        Sql {
            record: format!(
                "INSERT INTO {log} (owner, generation, refreshed_at, recorded_at, payload)
                 VALUES ($1, 1, now(), now(), $2)
                 RETURNING id"
            ),
            // A batch of records in one statement. Each input row takes its
            // id from the column's own sequence in the same row of `input`,
            // which is evaluated once (it calls a volatile function and is
            // read twice), so the ids come back in the input's order by
            // construction, not by any order of insertion or of RETURNING.
            // (`nextval` needs USAGE on the sequence, which the tables' owner
            // has; a role without it gets an error here, and every record of
            // the batch is then retried alone with `record`.)
            record_many: format!(
                "WITH input AS (
                     SELECT nextval('{sequence}'::regclass) AS id, e.owner, e.payload, e.ord
                     FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS e(owner, payload, ord)),
                 inserted AS (
                     INSERT INTO {log} (id, owner, generation, refreshed_at, recorded_at, payload)
                     OVERRIDING SYSTEM VALUE
                     SELECT id, owner, 1, now(), now(), payload FROM input)
                 SELECT id FROM input ORDER BY ord"
            ),
            // A batch of removes in one statement: each fence deletes its
            // row only if it still owns it, like `remove`; the deleted rows'
            // fences say which removes took effect. A fence is matched as
            // one key, `id:generation:owner` (unambiguous: the first two are
            // digits), so that two fences of one entry in a batch are told
            // apart. The rows are found through the primary key alone
            // (`id = ANY`, no join to plan) and locked in id order, so two
            // batches never deadlock on each other. A row that
            // another transaction changes meanwhile (a claim) is re-checked
            // on its newest version, as a plain conditional delete would be.
            remove_many: format!(
                "WITH locked AS (
                     SELECT id FROM {log}
                     WHERE id = ANY($1::bigint[])
                       AND id::text || ':' || generation::text || ':' || owner = ANY($2::text[])
                     ORDER BY id
                     FOR UPDATE)
                 DELETE FROM {log} WHERE id = ANY(ARRAY(SELECT id FROM locked))
                 RETURNING id, owner, generation"
            ),
            exists_many: format!("SELECT id FROM {log} WHERE id = ANY($1::bigint[])"),
            // Conditional on the fence: a removed, claimed or quarantined
            // entry matches no row, so a late heartbeat can neither recreate
            // nor re-own it. A refresh blocked behind a claimer's row lock is
            // re-checked against the claimed row (generation moved on) and
            // matches nothing.
            refresh: format!(
                "UPDATE {log} SET beat = beat + 1, refreshed_at = now()
                 WHERE id = $1 AND owner = $2 AND generation = $3 AND quarantined IS NULL"
            ),
            // A plain conditional delete: the common case (the owner
            // removes its entry) is one light statement.
            remove: format!("DELETE FROM {log} WHERE id = $1 AND owner = $2 AND generation = $3"),
            // Only when the delete matched nothing: "already gone" (no row)
            // or "someone else's now" (a row whose fence differs: ids are
            // never reused, and a fence's generation never comes back).
            exists: format!("SELECT EXISTS (SELECT 1 FROM {log} WHERE id = $1)"),
            scan: format!(
                "SELECT id, generation, beat, claims FROM {log} WHERE quarantined IS NULL"
            ),
            // One statement for the whole batch, each row conditional on the
            // (generation, beat) this handle saw unchanged. The rows are
            // locked in id order and rows another transaction holds (a claim,
            // a beat, a fenced commit) are skipped, so claimers never wait for
            // each other or deadlock; a row changed and committed meanwhile is
            // re-checked on its newest version, which no longer matches. So
            // each row is re-owned by exactly one claimer.
            claim: format!(
                "WITH seen AS (
                     SELECT * FROM unnest($2::bigint[], $3::bigint[], $4::bigint[])
                         AS c(id, generation, beat)),
                 locked AS (
                     SELECT l.id FROM {log} AS l JOIN seen ON l.id = seen.id
                     WHERE l.generation = seen.generation AND l.beat = seen.beat
                       AND l.quarantined IS NULL
                       AND l.generation < {MAX_BIGINT} AND l.beat < {MAX_BIGINT}
                       AND l.claims < {MAX_INTEGER}
                     ORDER BY l.id
                     FOR UPDATE OF l SKIP LOCKED)
                 UPDATE {log} AS l
                 SET owner = $1, generation = l.generation + 1, claims = l.claims + 1,
                     beat = l.beat + 1
                 FROM locked WHERE l.id = locked.id
                 RETURNING l.id, l.generation, l.claims, l.payload, l.committed, l.attempts,
                           l.failures"
            ),
            // Stale rows whose counters a claim cannot increment: taken by
            // the claimer and quarantined with the reason, conditional on
            // the triple seen, like a claim.
            quarantine_unusable: format!(
                "WITH seen AS (
                     SELECT * FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::text[])
                         AS c(id, generation, beat, reason)),
                 locked AS (
                     SELECT l.id, seen.reason FROM {log} AS l JOIN seen ON l.id = seen.id
                     WHERE l.generation = seen.generation AND l.beat = seen.beat
                       AND l.quarantined IS NULL
                     ORDER BY l.id
                     FOR UPDATE OF l SKIP LOCKED)
                 UPDATE {log} AS l SET owner = $1, quarantined = locked.reason
                 FROM locked WHERE l.id = locked.id
                 RETURNING l.id, l.generation, locked.reason"
            ),
            start_attempt: format!(
                "UPDATE {log} SET attempts = attempts + 1, beat = beat + 1, refreshed_at = now()
                 WHERE id = $1 AND owner = $2 AND generation = $3 AND quarantined IS NULL
                   AND attempts < {MAX_INTEGER} AND beat < {MAX_BIGINT}
                 RETURNING attempts"
            ),
            // Appends the reason and keeps the most recent ones.
            record_failure: format!(
                "UPDATE {log}
                 SET failures = (failures || $4::text)[greatest(1, cardinality(failures) + 2 - $5):]
                 WHERE id = $1 AND owner = $2 AND generation = $3 AND quarantined IS NULL"
            ),
            // Idempotent: quarantining again keeps the first reason.
            quarantine: format!(
                "UPDATE {log} SET quarantined = coalesce(quarantined, $4)
                 WHERE id = $1 AND owner = $2 AND generation = $3"
            ),
            advance: format!(
                "UPDATE {log} SET generation = generation + 1, beat = beat + 1
                 WHERE id = $1 AND owner = $2 AND generation = $3 AND quarantined IS NULL
                 RETURNING generation, committed"
            ),
            // The first statement of a fenced commit: takes the row lock a
            // claim also needs, until the commit's transaction ends.
            take_fence: format!(
                "UPDATE {log} SET committed = true, beat = beat + 1
                 WHERE id = $1 AND owner = $2 AND generation = $3 AND quarantined IS NULL"
            ),
            get: format!("{info} WHERE id = $1"),
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
/// statement (one round trip), run on a pooled connection, except that
/// concurrent `record`s and concurrent `remove`s share theirs (see *Group
/// commit*).
///
/// # Group commit
///
/// A handle (with its clones) batches concurrent [`record`](ChangeLog::record)
/// calls into one statement, and concurrent [`remove`](ChangeLog::remove)
/// calls into another: one round trip and one transaction for many writers,
/// which is what bounds a busy log's throughput. A call that finds no
/// statement of its kind in flight runs its own at once, so a lone writer
/// waits for nobody; calls that arrive while one is in flight go together
/// in the next (at most 256 per statement), run by one of their callers.
/// Each call's outcome is exactly what it would be alone: a record's fence
/// names its own entry, answered once the statement that inserted it has
/// committed; a remove reports [`Removal::Removed`], `Fenced` or `Absent`
/// for its own fence. If the server refuses a batch's statement (a
/// permanent error, such as a value it cannot store), which then changed
/// nothing, each of its calls is retried alone, so only the one at fault
/// fails; if the store fails (a lost connection, a server shutting down: a
/// transient [`ChangeLogError::Storage`] or `Busy`), every call of the
/// batch gets the error, as it would have alone. Claims, refreshes and fenced
/// commits are never batched: they conflict on the entry's row as they
/// always do, and a batched remove locks its rows in id order.
///
/// Dropping a call's future never affects the other calls of its batch,
/// even when the dropped caller was the one running the statement (another
/// caller of the batch takes it over). The dropped call itself was not run
/// if its batch had not started, and may have been otherwise: as for any
/// dropped `record`, its entry may exist, and then goes stale and is
/// recovered.
///
/// A batched record takes its id with `nextval` on the id column's
/// sequence, which needs `USAGE` on it (the tables' owner has it); without
/// it, each record of a batch falls back to a statement of its own.
///
/// # Exclusive claims
///
/// [`claim_stale`](ChangeLog::claim_stale) reads the active entries'
/// `(id, generation, beat)`, picks those this handle has seen unchanged for
/// the staleness threshold, and re-owns them with one statement that locks
/// them (`FOR UPDATE SKIP LOCKED`, in id order) only where the row still
/// holds the triple it saw. PostgreSQL re-checks a row that another
/// transaction changed meanwhile on its newest version, which no longer
/// matches, and claimers skip rather than wait for each other's rows: each
/// entry is won by exactly one claimer, and claimers never deadlock. Fenced calls are
/// single conditional statements on `(id, owner, generation)`.
///
/// # Fenced commits
///
/// [`commit_fenced`](PostgresChangeLog::commit_fenced) runs your statements
/// in a transaction whose first statement takes the entry's row (checking
/// the fence) and marks it committed: a claim of the same entry waits for
/// that transaction and then finds the row changed, or wins first and the
/// commit finds the fence gone. Keep the tables your commit publishes in
/// this database.
///
/// # No clock comparison
///
/// Staleness is measured on this handle's monotonic clock (see the
/// [module documentation](super)); neither the server's nor any client's
/// wall clock decides anything, so machines whose clocks disagree or step
/// still agree on who owns what.
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
    clock: Arc<dyn Clock>,
    observations: Mutex<Observations>,
    sql: Arc<Sql>,
    /// Concurrent records, and concurrent removes, each sent as one
    /// statement.
    records: GroupCommit<NewEntry, Result<i64, ChangeLogError>>,
    removals: GroupCommit<Fence, Result<Removal, ChangeLogError>>,
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
            clock: crate::clock::system(),
        }
    }

    /// The schema holding the tables, if one was configured.
    pub fn schema(&self) -> Option<&str> {
        self.shared.schema.as_deref()
    }

    /// The most connections this handle (and its clones) opens
    /// ([`pool_size`](PostgresChangeLogBuilder::pool_size)).
    pub fn pool_size(&self) -> usize {
        self.shared.pool.status().max_size
    }

    /// A pooled connection to the log's database, for your own statements
    /// (e.g. reading the tables your fenced commits publish).
    ///
    /// # Errors
    ///
    /// [`ChangeLogError::Storage`] if no connection could be had within the
    /// connect timeout.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn client(&self) -> Result<Object, ChangeLogError> {
        self.shared
            .pool
            .get()
            .await
            .map_err(|error| StoreFailure::from_pool(error).into())
    }

    /// Runs `commit` in one transaction on this log's database, whose first
    /// statement checks that `fence` still owns its active entry, takes the
    /// entry's row lock and marks it committed. Keep the tables your commit
    /// publishes in this database.
    ///
    /// A recoverer's claim updates the same row, so it either waits for
    /// this transaction and then finds the row changed, or wins first and
    /// this commit finds the fence gone: exactly one wins, whatever the
    /// timing, even for a writer frozen in the middle of its commit.
    ///
    /// `commit` gets the transaction and returns a boxed future, so that it
    /// may borrow the transaction: `|tx| Box::pin(async move { ... })`.
    ///
    /// # Errors
    ///
    /// - [`FencedCommitError::Fenced`]: the entry was claimed, removed or
    ///   quarantined; `commit` was not called, nothing changed;
    /// - [`FencedCommitError::Rejected`]: `commit` returned an error; the
    ///   transaction was rolled back;
    /// - [`FencedCommitError::Store`]: the transaction could not start or
    ///   the fence check failed to run; nothing changed;
    /// - [`FencedCommitError::InDoubt`]: `COMMIT` failed (e.g. the
    ///   connection was lost): it may have landed; settle with
    ///   [`advance`](ChangeLog::advance).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may or may not have committed
    /// ([`ChangeGuard::commit_fenced`](super::ChangeGuard::commit_fenced)
    /// records that as [`Phase::InDoubt`](super::Phase::InDoubt)).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use leasehold::changelog::{ChangeLog, OwnerId, PostgresChangeLog};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let log = PostgresChangeLog::builder("postgres://app@db.internal/storage").open().await?;
    /// let fence = log.record(&OwnerId::unique("writer"), b"put a".to_vec()).await?;
    /// log.commit_fenced(&fence, |tx| {
    ///     Box::pin(async move {
    ///         tx.execute("UPDATE objects SET blob = 'blob-7' WHERE name = 'a'", &[]).await
    ///     })
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    pub fn commit_fenced<'a, T, E, F>(
        &'a self,
        fence: &Fence,
        commit: F,
    ) -> impl Future<Output = Result<T, FencedCommitError<E>>> + Send + use<'a, T, E, F>
    where
        F: for<'t> FnOnce(&'t tokio_postgres::Transaction<'t>) -> BoxFuture<'t, Result<T, E>>
            + Send
            + 'a,
        T: Send + 'a,
        E: Send + 'a,
    {
        let fence = fence.clone();
        async move { self.commit_fenced_owned(fence, commit).await }
    }

    async fn commit_fenced_owned<T, E, F>(
        &self,
        fence: Fence,
        commit: F,
    ) -> Result<T, FencedCommitError<E>>
    where
        F: for<'t> FnOnce(&'t tokio_postgres::Transaction<'t>) -> BoxFuture<'t, Result<T, E>>,
    {
        let store = FencedCommitError::Store;
        let mut client = self.client().await.map_err(store)?;
        let statement = client
            .prepare_cached(&self.shared.sql.take_fence)
            .await
            .map_err(|e| store(pg(e)))?;
        let tx = client.transaction().await.map_err(|e| store(pg(e)))?;
        let held = tx
            .execute(
                &statement,
                &[
                    &to_i64(fence.id().get()),
                    &fence.owner().as_str(),
                    &to_i64(fence.generation()),
                ],
            )
            .await
            .map_err(|e| store(pg(e)))?;
        if held != 1 {
            let _ = tx.rollback().await;
            return Err(FencedCommitError::Fenced);
        }
        match commit(&tx).await {
            Ok(value) => {
                tx.commit()
                    .await
                    .map_err(|e| FencedCommitError::InDoubt(pg(e)))?;
                Ok(value)
            }
            Err(error) => {
                let _ = tx.rollback().await;
                Err(FencedCommitError::Rejected(error))
            }
        }
    }

    /// Records what a read just saw of the active entries, for staleness.
    fn observe_all(&self, rows: Vec<Seen>, max: usize) -> Vec<Seen> {
        // The instant is taken after the read returned: never earlier than
        // the moment the server served the rows.
        let now = self.shared.clock.now();
        self.shared
            .observations
            .lock()
            .observe_all(rows, now, self.shared.staleness, max)
    }

    /// Sorts a claim's entries by id and stops watching them.
    fn forget_claimed(&self, mut claimed: Vec<ClaimedEntry>) -> Vec<ClaimedEntry> {
        claimed.sort_by_key(|entry| entry.fence.id());
        let mut observations = self.shared.observations.lock();
        for entry in &claimed {
            observations.forget(entry.fence.id().get());
        }
        claimed
    }

    async fn prepared(
        &self,
        sql: impl Fn(&Sql) -> &str,
    ) -> Result<(Object, Statement), ChangeLogError> {
        prepared(&self.shared.pool, sql(&self.shared.sql)).await
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

/// A pooled connection and `sql`, prepared on it (cached per connection).
async fn prepared(pool: &Pool, sql: &str) -> Result<(Object, Statement), ChangeLogError> {
    let client = pool.get().await.map_err(StoreFailure::from_pool)?;
    let statement = client.prepare_cached(sql).await.map_err(pg)?;
    Ok((client, statement))
}

/// The name of the sequence the id column takes its values from.
async fn id_sequence(pool: &Pool, log: &str) -> Result<String, ChangeLogError> {
    let client = pool.get().await.map_err(StoreFailure::from_pool)?;
    let row = client
        .query_one("SELECT pg_get_serial_sequence($1, 'id')", &[&log])
        .await
        .map_err(pg)?;
    row.get::<_, Option<String>>(0).ok_or_else(|| {
        StoreFailure::Corrupt(format!("the id column of {log} has no sequence").into()).into()
    })
}

/// The most operations one batch statement carries: bounds the statement's
/// size and the wait of the last caller of a long queue.
const MAX_BATCH: usize = 256;

/// An entry to record.
struct NewEntry {
    owner: OwnerId,
    payload: Vec<u8>,
}

/// A batcher whose batches `run` runs on `pool` with `sql`.
fn group_commit<Op, Out, F>(
    pool: &Pool,
    sql: &Arc<Sql>,
    run: fn(Pool, Arc<Sql>, Vec<Op>) -> F,
) -> GroupCommit<Op, Result<Out, ChangeLogError>>
where
    Op: Send + 'static,
    Out: Send + 'static,
    F: Future<Output = Vec<Result<Out, ChangeLogError>>> + Send + 'static,
{
    let (pool, sql) = (pool.clone(), Arc::clone(sql));
    GroupCommit::new(
        MAX_BATCH,
        || Err(ChangeLogError::WorkerUnavailable { backend: BACKEND }),
        Box::new(move |ops| Box::pin(run(pool.clone(), Arc::clone(&sql), ops))),
    )
}

/// Why a batch statement failed, which decides what its operations get.
enum BatchFailure {
    /// The server refused the statement itself (a permanent error, e.g. a
    /// value it cannot store): it rolled back whole, nothing of it is
    /// visible, and the fault may be one operation's. Each operation is
    /// retried alone, so only one at fault fails.
    Refused,
    /// The store failed, not the statement: no connection, a connection
    /// lost (the statement's fate unknown), a server shutting down, a
    /// timeout. Every operation gets the error, as each would have alone;
    /// none is retried (a record may have landed).
    Failed(StoreFailure),
}

impl From<tokio_postgres::Error> for BatchFailure {
    fn from(error: tokio_postgres::Error) -> Self {
        match StoreFailure::from(error) {
            failure @ (StoreFailure::Busy(_) | StoreFailure::Unavailable(_)) => {
                BatchFailure::Failed(failure)
            }
            // Permanent classes come only with the server's answer (a
            // SQLSTATE): the statement failed and rolled back.
            _ => BatchFailure::Refused,
        }
    }
}

/// A pooled connection and a batch statement, prepared on it.
async fn batch_prepared(pool: &Pool, sql: &str) -> Result<(Object, Statement), BatchFailure> {
    let client = pool
        .get()
        .await
        .map_err(|error| BatchFailure::Failed(StoreFailure::from_pool(error)))?;
    let statement = client.prepare_cached(sql).await?;
    Ok((client, statement))
}

/// `failure`, for each of `n` operations.
fn failed<T>(failure: StoreFailure, n: usize) -> Vec<Result<T, ChangeLogError>> {
    failure
        .copies(n)
        .into_iter()
        .map(|failure| Err(failure.into()))
        .collect()
}

/// Records one entry; its id.
async fn record_one(pool: &Pool, sql: &Sql, entry: &NewEntry) -> Result<i64, ChangeLogError> {
    let (client, statement) = prepared(pool, &sql.record).await?;
    // An autocommit statement: committed when the row comes back.
    let row = client
        .query_one(&statement, &[&entry.owner.as_str(), &entry.payload])
        .await
        .map_err(pg)?;
    Ok(row.get(0))
}

/// Records a batch of entries in one statement; each one's id, in order.
async fn record_batch(
    pool: Pool,
    sql: Arc<Sql>,
    entries: Vec<NewEntry>,
) -> Vec<Result<i64, ChangeLogError>> {
    if let [entry] = &entries[..] {
        return vec![record_one(&pool, &sql, entry).await];
    }
    let batch = async {
        let (client, statement) = batch_prepared(&pool, &sql.record_many).await?;
        let owners: Vec<&str> = entries.iter().map(|e| e.owner.as_str()).collect();
        let payloads: Vec<&[u8]> = entries.iter().map(|e| e.payload.as_slice()).collect();
        // An autocommit statement: every entry is committed when the ids
        // come back, or none is.
        let rows = client.query(&statement, &[&owners, &payloads]).await?;
        Ok::<_, BatchFailure>(rows.iter().map(|row| row.get(0)).collect::<Vec<i64>>())
    };
    match batch.await {
        Ok(ids) if ids.len() == entries.len() => ids.into_iter().map(Ok).collect(),
        Ok(ids) => failed(
            StoreFailure::Rejected(
                format!(
                    "a batched record returned {} ids for {} entries",
                    ids.len(),
                    entries.len()
                )
                .into(),
            ),
            entries.len(),
        ),
        Err(BatchFailure::Refused) => {
            join_all(entries.iter().map(|entry| record_one(&pool, &sql, entry))).await
        }
        Err(BatchFailure::Failed(failure)) => failed(failure, entries.len()),
    }
}

/// Removes one entry if `fence` owns it.
async fn remove_one(pool: &Pool, sql: &Sql, fence: &Fence) -> Result<Removal, ChangeLogError> {
    let (client, statement) = prepared(pool, &sql.remove).await?;
    let (id, owner, generation) = fence_params(fence);
    let deleted = client
        .execute(&statement, &[&id, &owner, &generation])
        .await
        .map_err(pg)?;
    if deleted == 1 {
        return Ok(Removal::Removed);
    }
    let exists = client.prepare_cached(&sql.exists).await.map_err(pg)?;
    let row = client.query_one(&exists, &[&id]).await.map_err(pg)?;
    Ok(if row.get(0) {
        Removal::Fenced
    } else {
        Removal::Absent
    })
}

/// Removes a batch of entries in one statement, each if its fence owns it;
/// each one's outcome, in order.
async fn remove_batch(
    pool: Pool,
    sql: Arc<Sql>,
    fences: Vec<Fence>,
) -> Vec<Result<Removal, ChangeLogError>> {
    if let [fence] = &fences[..] {
        return vec![remove_one(&pool, &sql, fence).await];
    }
    let ids: Vec<i64> = fences.iter().map(|f| to_i64(f.id().get())).collect();
    let batch = async {
        let (client, statement) = batch_prepared(&pool, &sql.remove_many).await?;
        // The values `remove` compares, as one key per fence.
        let keys: Vec<String> = fences
            .iter()
            .map(|fence| {
                let (id, owner, generation) = fence_params(fence);
                format!("{id}:{generation}:{owner}")
            })
            .collect();
        let rows = client.query(&statement, &[&ids, &keys]).await?;
        Ok::<_, BatchFailure>((client, rows))
    };
    let (client, deleted) = match batch.await {
        Ok(done) => done,
        Err(BatchFailure::Refused) => {
            return join_all(fences.iter().map(|fence| remove_one(&pool, &sql, fence))).await;
        }
        Err(BatchFailure::Failed(failure)) => return failed(failure, fences.len()),
    };
    // Each deleted row answers the first remove of its exact fence (ids are
    // unique, so the fence names the caller; a second remove of the same
    // fence in the batch finds the row gone, as it would after the first).
    let mut by_id: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        by_id.entry(*id).or_default().push(i);
    }
    let mut outcomes: Vec<Option<Result<Removal, ChangeLogError>>> =
        std::iter::repeat_with(|| None).take(fences.len()).collect();
    for row in &deleted {
        let (id, owner, generation): (i64, &str, i64) = (row.get(0), row.get(1), row.get(2));
        let removed = by_id.get(&id).into_iter().flatten().find(|&&i| {
            outcomes[i].is_none()
                && fences[i].owner().as_str() == owner
                && to_i64(fences[i].generation()) == generation
        });
        if let Some(&i) = removed {
            outcomes[i] = Some(Ok(Removal::Removed));
        }
    }
    // The others matched no row: already gone (no row), or someone else's
    // now (a row whose fence differs), told apart as `remove` does.
    let rest: Vec<usize> = (0..fences.len())
        .filter(|&i| outcomes[i].is_none())
        .collect();
    if !rest.is_empty() {
        let rest_ids: Vec<i64> = rest.iter().map(|&i| ids[i]).collect();
        let existing = async {
            let statement = client.prepare_cached(&sql.exists_many).await?;
            let rows = client.query(&statement, &[&rest_ids]).await?;
            Ok::<_, tokio_postgres::Error>(
                rows.iter()
                    .map(|row| row.get::<_, i64>(0))
                    .collect::<std::collections::HashSet<_>>(),
            )
        };
        match existing.await {
            Ok(existing) => {
                for &i in &rest {
                    outcomes[i] = Some(Ok(if existing.contains(&ids[i]) {
                        Removal::Fenced
                    } else {
                        Removal::Absent
                    }));
                }
            }
            Err(error) => {
                let copies = StoreFailure::from(error).copies(rest.len());
                for (&i, failure) in rest.iter().zip(copies) {
                    outcomes[i] = Some(Err(failure.into()));
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every remove answered"))
        .collect()
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

fn fence_params(fence: &Fence) -> (i64, &str, i64) {
    (
        to_i64(fence.id().get()),
        fence.owner().as_str(),
        to_i64(fence.generation()),
    )
}

impl ChangeLog for PostgresChangeLog {
    fn staleness(&self) -> Duration {
        self.shared.staleness
    }

    async fn record(&self, owner: &OwnerId, payload: Vec<u8>) -> Result<Fence, ChangeLogError> {
        let id = self
            .shared
            .records
            .submit(NewEntry {
                owner: owner.clone(),
                payload,
            })
            .await?;
        Ok(Fence::new(EntryId::new(to_u64(id)), owner.clone(), 1))
    }

    async fn refresh(&self, fence: &Fence) -> Result<Ownership, ChangeLogError> {
        let (client, statement) = self.prepared(|s| &s.refresh).await?;
        let (id, owner, generation) = fence_params(fence);
        let changed = client
            .execute(&statement, &[&id, &owner, &generation])
            .await
            .map_err(pg)?;
        Ok(held(changed))
    }

    async fn remove(&self, fence: &Fence) -> Result<Removal, ChangeLogError> {
        let removal = self.shared.removals.submit(fence.clone()).await?;
        if removal == Removal::Removed {
            self.shared.observations.lock().forget(fence.id().get());
        }
        Ok(removal)
    }

    async fn claim_stale(
        &self,
        owner: &OwnerId,
        max: usize,
    ) -> Result<Vec<ClaimedEntry>, ChangeLogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let (client, scan) = self.prepared(|s| &s.scan).await?;
        let rows = client.query(&scan, &[]).await.map_err(pg)?;
        // A row whose counters a claim cannot increment would fail the whole
        // claim statement: it is quarantined instead, once stale.
        let mut broken = std::collections::HashMap::new();
        let seen = rows
            .iter()
            .map(|row| {
                let (id, generation, beat, claims): (i64, i64, i64, i32) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                let reason = if !(1..MAX_BIGINT).contains(&generation) {
                    Some(format!(
                        "undecodable row: generation {generation} is out of range"
                    ))
                } else if !(0..MAX_BIGINT).contains(&beat) {
                    Some(format!("undecodable row: beat {beat} is out of range"))
                } else if !(0..MAX_INTEGER).contains(&claims) {
                    Some(format!("undecodable row: claims {claims} is out of range"))
                } else {
                    None
                };
                if let Some(reason) = reason {
                    broken.insert(id as u64, (generation, beat, reason));
                }
                // Bit casts: an out-of-range value still identifies what was seen.
                Seen {
                    id: id as u64,
                    generation: generation as u64,
                    beat: beat as u64,
                }
            })
            .collect();
        let ripe = self.observe_all(seen, max);
        if ripe.is_empty() {
            return Ok(Vec::new());
        }
        let (unusable, stale): (Vec<Seen>, Vec<Seen>) =
            ripe.into_iter().partition(|s| broken.contains_key(&s.id));
        let mut claimed = Vec::with_capacity(unusable.len() + stale.len());
        if !unusable.is_empty() {
            let statement = client
                .prepare_cached(&self.shared.sql.quarantine_unusable)
                .await
                .map_err(pg)?;
            let ids: Vec<i64> = unusable.iter().map(|s| s.id as i64).collect();
            let generations: Vec<i64> = unusable.iter().map(|s| broken[&s.id].0).collect();
            let beats: Vec<i64> = unusable.iter().map(|s| broken[&s.id].1).collect();
            let reasons: Vec<&str> = unusable.iter().map(|s| broken[&s.id].2.as_str()).collect();
            let rows = client
                .query(
                    &statement,
                    &[&owner.as_str(), &ids, &generations, &beats, &reasons],
                )
                .await
                .map_err(pg)?;
            claimed.extend(rows.iter().map(|row| ClaimedEntry {
                fence: Fence::new(
                    EntryId::new(to_u64(row.get(0))),
                    owner.clone(),
                    to_u64(row.get(1)),
                ),
                payload: Vec::new(),
                claims: 0,
                committed: false,
                attempts: 0,
                failures: Vec::new(),
                quarantined: Some(row.get(2)),
            }));
        }
        if stale.is_empty() {
            return Ok(self.forget_claimed(claimed));
        }
        let column = |f: fn(&Seen) -> u64| stale.iter().map(|s| to_i64(f(s))).collect::<Vec<_>>();
        let claim = client
            .prepare_cached(&self.shared.sql.claim)
            .await
            .map_err(pg)?;
        let rows = client
            .query(
                &claim,
                &[
                    &owner.as_str(),
                    &column(|s| s.id),
                    &column(|s| s.generation),
                    &column(|s| s.beat),
                ],
            )
            .await
            .map_err(pg)?;
        claimed.extend(rows.iter().map(|row| ClaimedEntry {
            fence: Fence::new(
                EntryId::new(to_u64(row.get(0))),
                owner.clone(),
                to_u64(row.get(1)),
            ),
            claims: to_u32(row.get(2)),
            payload: row.get(3),
            committed: row.get(4),
            attempts: to_u32(row.get(5)),
            failures: row.get(6),
            quarantined: None,
        }));
        Ok(self.forget_claimed(claimed))
    }

    async fn start_attempt(&self, fence: &Fence) -> Result<Attempt, ChangeLogError> {
        let (client, statement) = self.prepared(|s| &s.start_attempt).await?;
        let (id, owner, generation) = fence_params(fence);
        let row = client
            .query_opt(&statement, &[&id, &owner, &generation])
            .await
            .map_err(pg)?;
        Ok(row.map_or(Attempt::Lost, |row| Attempt::Started {
            number: to_u32(row.get(0)),
        }))
    }

    async fn record_failure(
        &self,
        fence: &Fence,
        reason: &str,
    ) -> Result<Ownership, ChangeLogError> {
        let (client, statement) = self.prepared(|s| &s.record_failure).await?;
        let (id, owner, generation) = fence_params(fence);
        let reason = clip_failure(reason);
        let kept = RECENT_FAILURES as i32;
        let changed = client
            .execute(&statement, &[&id, &owner, &generation, &reason, &kept])
            .await
            .map_err(pg)?;
        Ok(held(changed))
    }

    async fn quarantine(&self, fence: &Fence, reason: &str) -> Result<Ownership, ChangeLogError> {
        let (client, statement) = self.prepared(|s| &s.quarantine).await?;
        let (id, owner, generation) = fence_params(fence);
        let changed = client
            .execute(&statement, &[&id, &owner, &generation, &reason])
            .await
            .map_err(pg)?;
        Ok(held(changed))
    }

    async fn advance(&self, fence: &Fence) -> Result<Advanced, ChangeLogError> {
        let (client, statement) = self.prepared(|s| &s.advance).await?;
        let (id, owner, generation) = fence_params(fence);
        let row = client
            .query_opt(&statement, &[&id, &owner, &generation])
            .await
            .map_err(pg)?;
        Ok(match row {
            Some(row) => Advanced::Held {
                fence: Fence::new(fence.id(), fence.owner().clone(), to_u64(row.get(0))),
                committed: row.get(1),
            },
            None => Advanced::Lost,
        })
    }

    fn next_stale_in(&self) -> Option<Duration> {
        let now = self.shared.clock.now();
        self.shared
            .observations
            .lock()
            .next_stale_in(now, self.shared.staleness)
    }

    async fn get(&self, id: EntryId) -> Result<Option<EntryInfo>, ChangeLogError> {
        let (client, statement) = self.prepared(|s| &s.get).await?;
        let row = client
            .query_opt(&statement, &[&to_i64(id.get())])
            .await
            .map_err(pg)?;
        let now = self.shared.clock.now();
        let mut observations = self.shared.observations.lock();
        Ok(row
            .as_ref()
            .map(|row| entry_info(row, |seen| observations.observe(seen, now))))
    }

    async fn list(&self) -> Result<Vec<EntryInfo>, ChangeLogError> {
        let (client, statement) = self.prepared(|s| &s.list).await?;
        let rows = client.query(&statement, &[]).await.map_err(pg)?;
        // A read of every entry: it counts as an observation for later
        // claims, like the claim's own read.
        let active = rows
            .iter()
            .filter(|row| row.get::<_, Option<String>>(5).is_none())
            .map(seen)
            .collect();
        self.observe_all(active, 0);
        let now = self.shared.clock.now();
        let mut observations = self.shared.observations.lock();
        Ok(rows
            .iter()
            .map(|row| entry_info(row, |seen| observations.observe(seen, now)))
            .collect())
    }
}

fn seen(row: &Row) -> Seen {
    Seen {
        id: to_u64(row.get(0)),
        generation: to_u64(row.get(2)),
        beat: to_u64(row.get(6)),
    }
}

/// A row of the `get`/`list` statements; `observe` gives an active entry's
/// age.
fn entry_info(row: &Row, observe: impl FnOnce(Seen) -> Duration) -> EntryInfo {
    let owner: String = row.get(1);
    let quarantined: Option<String> = row.get(5);
    let age = match quarantined {
        None => observe(seen(row)),
        Some(_) => Duration::ZERO,
    };
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
        age,
        committed: row.get(7),
        attempts: to_u32(row.get(8)),
        failures: row.get(9),
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
            PostgresChangeLog::builder("postgres://127.0.0.1:1/db").staleness(Duration::ZERO),
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
