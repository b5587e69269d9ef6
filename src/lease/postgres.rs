//! [`PostgresLeaseTable`]: a shard's readers in PostgreSQL, shared by the
//! processes of many machines.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use futures::future::BoxFuture;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{IsolationLevel, Socket, Statement};

use super::backend::{HeartbeatReply, LeaseBackend, meet_all};
use super::error::{BackendError, FencedReadError, LeaseTableError};
use super::memory::ReaderId;
use super::table::{ReaderFence, ReaderRow, TableSince, decode_since};
use crate::changelog::Payload;
use crate::changelog::staleness::{Observations, Seen};
use crate::clock::Clock;
use crate::store::failure::StoreFailure;
use crate::store::postgres::Connect;
use crate::store::{to_i64, to_u64};
use crate::sync::Mutex;

const BACKEND: &str = "postgres";

/// The lease tables' schema version this crate writes and reads.
const SCHEMA_VERSION: i64 = 1;

fn pg(error: tokio_postgres::Error) -> LeaseTableError {
    LeaseTableError::from_failure(BACKEND, StoreFailure::from(error))
}

/// Configures and opens a [`PostgresLeaseTable`].
#[must_use = "a builder does nothing until `open` is called"]
pub struct PostgresLeaseTableBuilder<S> {
    connect: Connect,
    shard: String,
    staleness: Duration,
    clock: Arc<dyn Clock>,
    since: PhantomData<fn() -> S>,
}

impl<S> fmt::Debug for PostgresLeaseTableBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLeaseTableBuilder")
            .field("connect", &self.connect)
            .field("shard", &self.shard)
            .field("staleness", &self.staleness)
            .finish_non_exhaustive()
    }
}

impl<S: TableSince> PostgresLeaseTableBuilder<S> {
    /// A reader may be expired once this handle has seen its heartbeat
    /// counter unchanged this long (default 60 s). Use at least the readers'
    /// lease ttl.
    pub fn staleness(mut self, staleness: Duration) -> Self {
        self.staleness = staleness;
        self
    }

    /// The monotonic clock this handle measures staleness on (default
    /// [`clock::system`](crate::clock::system), which counts suspended time).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Puts the lease tables in this schema (created if missing). Plain
    /// identifiers only: ASCII letters, digits and `_`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.connect.schema = Some(schema.into());
        self
    }

    /// At most this many connections per handle (default 4).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.connect.pool_size = size;
        self
    }

    /// How long opening a connection, or waiting for a free one, may take
    /// before a call fails (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect.connect_timeout = timeout;
        self
    }

    /// Connects through TLS with this connector; default: no TLS.
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

    /// Connects, creates the lease tables if they do not exist yet, and the
    /// shard at `since` and `seqno` unless it exists. Any number of
    /// processes may open the same table at once.
    ///
    /// # Errors
    ///
    /// Permanent: [`LeaseTableError::Config`] (an unusable URL, schema name
    /// or staleness), [`LeaseTableError::CannotOpen`],
    /// [`LeaseTableError::PermissionDenied`], [`LeaseTableError::Rejected`],
    /// [`LeaseTableError::Corrupt`], [`LeaseTableError::SchemaTooNew`].
    /// Transient: [`LeaseTableError::Storage`] if the server cannot be
    /// reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the tables are created in one transaction.
    pub async fn open(
        self,
        since: S,
        seqno: u64,
    ) -> Result<PostgresLeaseTable<S>, LeaseTableError> {
        if self.staleness.is_zero() {
            return Err(LeaseTableError::Config {
                reason: "staleness must be greater than zero".into(),
            });
        }
        let failure = |f| LeaseTableError::from_failure(BACKEND, f);
        let (pool, tables) = self.connect.pool().map_err(failure)?;
        let shards = tables.table("leasehold_lease_shards");
        let readers = tables.table("leasehold_lease_readers");
        // An identity column: reader ids are never reused. The index on
        // `(shard, seqno_hold)` serves the GC horizon's `min()`.
        let ddl = format!(
            "CREATE TABLE {shards} (
                 shard TEXT PRIMARY KEY,
                 since BYTEA NOT NULL,
                 seqno BIGINT NOT NULL,
                 registrations BIGINT NOT NULL DEFAULT 0
             );
             CREATE TABLE {readers} (
                 reader BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 shard TEXT NOT NULL,
                 generation BIGINT NOT NULL,
                 since BYTEA NOT NULL,
                 seqno_hold BIGINT NOT NULL,
                 beat BIGINT NOT NULL DEFAULT 0
             );
             CREATE INDEX leasehold_lease_readers_hold ON {readers} (shard, seqno_hold);"
        );
        tables
            .ensure(
                &pool,
                "lease",
                SCHEMA_VERSION,
                &ddl,
                &[],
                &["leasehold_lease_shards", "leasehold_lease_readers"],
            )
            .await
            .map_err(failure)?;
        let client = pool
            .get()
            .await
            .map_err(|e| failure(StoreFailure::from_pool(e)))?;
        client
            .execute(
                &format!(
                    "INSERT INTO {shards} (shard, since, seqno) VALUES ($1, $2, $3)
                     ON CONFLICT (shard) DO NOTHING"
                ),
                &[&self.shard, &since.encode(), &to_i64(seqno)],
            )
            .await
            .map_err(pg)?;
        Ok(PostgresLeaseTable {
            shared: Arc::new(Shared {
                pool,
                schema: tables.schema().map(str::to_owned),
                shard: self.shard,
                staleness: self.staleness,
                clock: self.clock,
                observations: Mutex::new(Observations::default()),
                horizon: Mutex::new(0),
                sql: Sql::new(&shards, &readers),
            }),
            since: PhantomData,
        })
    }
}

/// The statements, with the table names filled in (prepared and cached per
/// connection on first use).
struct Sql {
    register: String,
    advance: String,
    seqno: String,
    horizon: String,
    shard_since: String,
    reader_sinces: String,
    store_since: String,
    scan: String,
    expire: String,
    count: String,
    reader: String,
    live: String,
    read_since: String,
    heartbeat: String,
    remove: String,
}

impl Sql {
    fn new(shards: &str, readers: &str) -> Self {
        Sql {
            // One statement: the registration count and the reader's row
            // move together.
            register: format!(
                "WITH s AS (
                     UPDATE {shards} SET registrations = registrations + 1 WHERE shard = $1
                     RETURNING since, seqno, registrations)
                 INSERT INTO {readers} (shard, generation, since, seqno_hold)
                 SELECT $1, registrations, since, seqno FROM s
                 RETURNING reader, generation, since, seqno_hold"
            ),
            advance: format!(
                "UPDATE {shards} SET seqno = GREATEST(seqno, $2) WHERE shard = $1 RETURNING seqno"
            ),
            seqno: format!("SELECT seqno FROM {shards} WHERE shard = $1"),
            horizon: format!(
                "SELECT coalesce(
                     (SELECT min(seqno_hold) FROM {readers} WHERE shard = $1), seqno)
                 FROM {shards} WHERE shard = $1"
            ),
            shard_since: format!("SELECT since FROM {shards} WHERE shard = $1 FOR UPDATE"),
            reader_sinces: format!("SELECT reader, since FROM {readers} WHERE shard = $1"),
            store_since: format!("UPDATE {shards} SET since = $2 WHERE shard = $1"),
            scan: format!("SELECT reader, generation, beat FROM {readers} WHERE shard = $1"),
            expire: format!(
                "DELETE FROM {readers} r
                 USING unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS s(reader, generation, beat)
                 WHERE r.reader = s.reader AND r.generation = s.generation AND r.beat = s.beat
                 RETURNING r.reader"
            ),
            count: format!("SELECT count(*) FROM {readers} WHERE shard = $1"),
            reader: format!(
                "SELECT generation, since, seqno_hold, beat FROM {readers}
                 WHERE shard = $1 AND reader = $2"
            ),
            live: format!("SELECT 1 FROM {readers} WHERE reader = $1 AND generation = $2"),
            read_since: format!(
                "SELECT since FROM {readers} WHERE reader = $1 AND generation = $2"
            ),
            // One round trip: fenced on (reader, generation); a NULL since
            // keeps the stored one.
            heartbeat: format!(
                "UPDATE {readers} r
                 SET since = coalesce($3, r.since), seqno_hold = GREATEST(r.seqno_hold, $4),
                     beat = r.beat + 1
                 WHERE r.reader = $1 AND r.generation = $2
                 RETURNING (SELECT s.seqno FROM {shards} s WHERE s.shard = r.shard)"
            ),
            remove: format!("DELETE FROM {readers} WHERE reader = $1 AND generation = $2"),
        }
    }
}

/// The readers of a shard in a PostgreSQL database: the durable
/// [`LeaseBackend`] of their leases, and what the shard's owner needs to
/// know about them. For processes on many machines; the same model as
/// `SqliteLeaseTable` (feature `sqlite`).
///
/// | who | calls | what it does |
/// |---|---|---|
/// | a reader | [`register`](Self::register), then [`Lease::spawn`](super::Lease::spawn) with the returned [`PostgresLeaseReader`] | heartbeats carry its since (joined, never moved back) and seqno hold |
/// | a reader | [`read_fenced`](Self::read_fenced) | reads the shard's data only while the store still holds its lease |
/// | the owner | [`gc_horizon`](Self::gc_horizon) | the least live seqno hold: state before it may be deleted |
/// | the owner | [`since`](Self::since) | the meet of the live readers' sinces |
/// | the owner | [`expire_stale`](Self::expire_stale), periodically | removes readers whose heartbeat counter it has seen unchanged for the staleness |
/// | the owner | [`advance_seqno`](Self::advance_seqno) | publishes the shard's latest seqno |
///
/// Staleness is judged by the owner's handle on its own monotonic clock,
/// from the heartbeat counters it observes, never from timestamps; the
/// expiry is a delete conditional on the `(reader, generation, beat)` seen,
/// so a heartbeat that lands first keeps its reader. An expired reader's
/// heartbeat reports [`BackendError::Lost`] and its fenced reads are
/// refused: a reader frozen past its expiry never reads what the owner
/// deleted after expiring it.
///
/// | call | cost |
/// |---|---|
/// | a heartbeat | one `UPDATE` (one round trip); two after a failed or cancelled one (the stored since is read first) |
/// | [`gc_horizon`](Self::gc_horizon) | one `min()` served by the index on `(shard, seqno_hold)` |
/// | [`read_fenced`](Self::read_fenced) | a `REPEATABLE READ READ ONLY` transaction: the check and the read see one snapshot |
/// | [`since`](Self::since), [`expire_stale`](Self::expire_stale) | read every reader of the shard |
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use leasehold::lease::{Lease, LeaseConfig, PostgresLeaseTable};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let table = PostgresLeaseTable::<u64>::builder("postgres://leasehold@db/leasehold", "shard-1")
///     .staleness(Duration::from_secs(60))
///     .open(0, 0)
///     .await?;
/// let (reader, since, seqno) = table.register().await?;
/// let lease = Lease::spawn(reader, &LeaseConfig::builder(Duration::from_secs(60)).build()?, since, seqno);
/// lease.downgrade_since(5).await?;
/// assert_eq!(table.since().await?, 5);
/// # Ok(()) }
/// ```
pub struct PostgresLeaseTable<S> {
    shared: Arc<Shared>,
    since: PhantomData<fn() -> S>,
}

struct Shared {
    pool: Pool,
    schema: Option<String>,
    shard: String,
    staleness: Duration,
    clock: Arc<dyn Clock>,
    observations: Mutex<Observations>,
    /// The largest horizon this handle reported.
    horizon: Mutex<u64>,
    sql: Sql,
}

impl<S> Clone for PostgresLeaseTable<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            since: PhantomData,
        }
    }
}

impl<S> fmt::Debug for PostgresLeaseTable<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLeaseTable")
            .field("schema", &self.shared.schema)
            .field("shard", &self.shared.shard)
            .field("staleness", &self.shared.staleness)
            .finish_non_exhaustive()
    }
}

impl<S: TableSince> PostgresLeaseTable<S> {
    /// A builder for shard `shard`'s readers on the server at `url`
    /// (`postgres://user:password@host/db`).
    pub fn builder(
        url: impl Into<String>,
        shard: impl Into<String>,
    ) -> PostgresLeaseTableBuilder<S> {
        Self::builder_from(Connect::url(url.into()), shard.into())
    }

    /// A builder from a ready `tokio_postgres::Config`.
    pub fn builder_with_config(
        config: tokio_postgres::Config,
        shard: impl Into<String>,
    ) -> PostgresLeaseTableBuilder<S> {
        Self::builder_from(Connect::config(config), shard.into())
    }

    fn builder_from(connect: Connect, shard: String) -> PostgresLeaseTableBuilder<S> {
        PostgresLeaseTableBuilder {
            connect,
            shard,
            staleness: Duration::from_secs(60),
            clock: crate::clock::system(),
            since: PhantomData,
        }
    }

    /// The shard's name.
    pub fn shard(&self) -> &str {
        &self.shared.shard
    }

    /// A connection from the handle's pool, for the caller's own tables
    /// (the data the readers read, in the same database).
    ///
    /// # Errors
    ///
    /// [`LeaseTableError::Storage`] if no connection could be had in time.
    pub async fn client(&self) -> Result<Object, LeaseTableError> {
        self.shared
            .pool
            .get()
            .await
            .map_err(|e| LeaseTableError::from_failure(BACKEND, StoreFailure::from_pool(e)))
    }

    async fn prepared(
        &self,
        sql: impl Fn(&Sql) -> &str,
    ) -> Result<(Object, Statement), LeaseTableError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(sql(&self.shared.sql))
            .await
            .map_err(pg)?;
        Ok((client, statement))
    }

    /// Registers a new reader at the shard's since and latest seqno, in one
    /// statement. Its generation is the shard's registration count: a reader
    /// that registers again after its lease was expired gets a new id and a
    /// larger generation.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError`]; [`LeaseTableError::Undecodable`] if the shard's
    /// since does not decode.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a dropped call may still register the reader, which
    /// the owner expires after the staleness.
    pub async fn register(&self) -> Result<(PostgresLeaseReader<S>, S, u64), LeaseTableError> {
        let (client, statement) = self.prepared(|sql| &sql.register).await?;
        let row = client
            .query_one(&statement, &[&self.shared.shard])
            .await
            .map_err(pg)?;
        let (reader, generation): (i64, i64) = (row.get(0), row.get(1));
        let since = decode_since::<S>(to_u64(reader), row.get::<_, &[u8]>(2))?;
        let seqno = to_u64(row.get(3));
        let fence = ReaderFence::new(ReaderId::new(to_u64(reader)), to_u64(generation));
        let reader = PostgresLeaseReader {
            table: self.clone(),
            fence,
            stored_since: Mutex::new(Some(since.clone())),
        };
        Ok((reader, since, seqno))
    }

    /// Publishes the shard's latest seqno, if it is ahead; returns the
    /// latest seqno.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the update is idempotent.
    pub async fn advance_seqno(&self, seqno: u64) -> Result<u64, LeaseTableError> {
        let (client, statement) = self.prepared(|sql| &sql.advance).await?;
        let row = client
            .query_one(&statement, &[&self.shared.shard, &to_i64(seqno)])
            .await
            .map_err(pg)?;
        Ok(to_u64(row.get(0)))
    }

    /// The shard's latest seqno.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (a read).
    pub async fn seqno(&self) -> Result<u64, LeaseTableError> {
        let (client, statement) = self.prepared(|sql| &sql.seqno).await?;
        let row = client
            .query_one(&statement, &[&self.shared.shard])
            .await
            .map_err(pg)?;
        Ok(to_u64(row.get(0)))
    }

    /// The shard's GC horizon: the least seqno hold of its live readers, or
    /// its latest seqno when none holds anything; never less than what this
    /// handle reported before. One `min()` served by the index.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (a read).
    pub async fn gc_horizon(&self) -> Result<u64, LeaseTableError> {
        let (client, statement) = self.prepared(|sql| &sql.horizon).await?;
        let row = client
            .query_one(&statement, &[&self.shared.shard])
            .await
            .map_err(pg)?;
        let mut horizon = self.shared.horizon.lock();
        *horizon = (*horizon).max(to_u64(row.get(0)));
        Ok(*horizon)
    }

    /// The shard's since: the meet of its live readers' sinces, joined with
    /// the stored one (so it never moves back), and stored when it moved.
    /// Reads every reader of the shard.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError::Undecodable`] for a row whose since does not
    /// decode; other [`LeaseTableError`]s.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: one transaction, committed whole or not at all.
    pub async fn since(&self) -> Result<S, LeaseTableError> {
        let mut client = self.client().await?;
        let sql = &self.shared.sql;
        let tx = client.transaction().await.map_err(pg)?;
        let stored = tx
            .query_one(&sql.shard_since, &[&self.shared.shard])
            .await
            .map_err(pg)?;
        let stored = decode_since::<S>(0, stored.get::<_, &[u8]>(0))?;
        let rows = tx
            .query(&sql.reader_sinces, &[&self.shared.shard])
            .await
            .map_err(pg)?;
        let sinces = rows
            .iter()
            .map(|row| decode_since::<S>(to_u64(row.get(0)), row.get::<_, &[u8]>(1)))
            .collect::<Result<Vec<_>, _>>()?;
        let since = match meet_all(&sinces) {
            Some(meet) if !meet.less_equal(&stored) => {
                let since = stored.join(&meet);
                tx.execute(&sql.store_since, &[&self.shared.shard, &since.encode()])
                    .await
                    .map_err(pg)?;
                since
            }
            _ => stored,
        };
        // Commit either way: the row lock must not wait for a lazy rollback.
        tx.commit().await.map_err(pg)?;
        Ok(since)
    }

    /// Expires the readers whose heartbeat counter this handle has seen
    /// unchanged for the staleness, on its own monotonic clock, with one
    /// delete conditional on each `(reader, generation, beat)` seen; returns
    /// their ids. A handle that has just started has seen nothing yet: it
    /// expires a reader at the earliest one staleness after its first call.
    /// Call it periodically (more often than the staleness).
    ///
    /// # Errors
    ///
    /// [`LeaseTableError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in effect: a dropped call may still expire the readers it
    /// found stale.
    pub async fn expire_stale(&self) -> Result<Vec<ReaderId>, LeaseTableError> {
        let (client, statement) = self.prepared(|sql| &sql.scan).await?;
        let rows = client
            .query(&statement, &[&self.shared.shard])
            .await
            .map_err(pg)?;
        let seen: Vec<Seen> = rows
            .iter()
            .map(|row| Seen {
                id: to_u64(row.get(0)),
                generation: to_u64(row.get(1)),
                beat: to_u64(row.get(2)),
            })
            .collect();
        // After the read returned: never earlier than the moment the server
        // served the counters.
        let now = self.shared.clock.now();
        let stale = self.shared.observations.lock().observe_all(
            seen,
            now,
            self.shared.staleness,
            usize::MAX,
        );
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        let column = |f: fn(&Seen) -> u64| stale.iter().map(|s| to_i64(f(s))).collect::<Vec<_>>();
        let (ids, generations, beats) = (
            column(|s| s.id),
            column(|s| s.generation),
            column(|s| s.beat),
        );
        let statement = client
            .prepare_cached(&self.shared.sql.expire)
            .await
            .map_err(pg)?;
        let expired = client
            .query(&statement, &[&ids, &generations, &beats])
            .await
            .map_err(pg)?;
        let mut observations = self.shared.observations.lock();
        for seen in &stale {
            observations.forget(seen.id);
        }
        let mut expired: Vec<ReaderId> = expired
            .iter()
            .map(|row| ReaderId::new(to_u64(row.get(0))))
            .collect();
        expired.sort();
        Ok(expired)
    }

    /// The number of live readers of the shard.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (a read).
    pub async fn readers(&self) -> Result<usize, LeaseTableError> {
        let (client, statement) = self.prepared(|sql| &sql.count).await?;
        let row = client
            .query_one(&statement, &[&self.shared.shard])
            .await
            .map_err(pg)?;
        Ok(usize::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    /// What the table holds for reader `id`, if it is live.
    ///
    /// # Errors
    ///
    /// [`LeaseTableError::Undecodable`] if its since does not decode; other
    /// [`LeaseTableError`]s.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (a read).
    pub async fn reader(&self, id: ReaderId) -> Result<Option<ReaderRow<S>>, LeaseTableError> {
        let (client, statement) = self.prepared(|sql| &sql.reader).await?;
        let row = client
            .query_opt(&statement, &[&self.shared.shard, &to_i64(id.get())])
            .await
            .map_err(pg)?;
        row.map(|row| {
            Ok(ReaderRow {
                fence: ReaderFence::new(id, to_u64(row.get(0))),
                since: decode_since::<S>(id.get(), row.get::<_, &[u8]>(1))?,
                seqno_hold: to_u64(row.get(2)),
                beats: to_u64(row.get(3)),
            })
        })
        .transpose()
    }

    /// Runs `read` in one `REPEATABLE READ READ ONLY` transaction on this
    /// table's database, after checking, in that transaction, that
    /// `reader`'s lease is still held. The check and the read see one
    /// snapshot, so an owner that deletes state below the horizon computed
    /// after expiring the reader commits those deletes after the expiry, out
    /// of this read's sight.
    ///
    /// `read` gets the transaction and returns a boxed future, so that it
    /// may borrow it: `|tx| Box::pin(async move { ... })`.
    ///
    /// # Errors
    ///
    /// [`FencedReadError::Lost`]: the reader was expired; `read` did not
    /// run. [`FencedReadError::Read`]: `read` failed.
    /// [`FencedReadError::Store`]: the transaction could not run.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a read-only transaction, rolled back when dropped.
    pub async fn read_fenced<T, E, F>(
        &self,
        reader: ReaderFence,
        read: F,
    ) -> Result<T, FencedReadError<E>>
    where
        F: for<'t> FnOnce(&'t tokio_postgres::Transaction<'t>) -> BoxFuture<'t, Result<T, E>>,
    {
        let store = |e| FencedReadError::Store(pg(e));
        let mut client = self.client().await?;
        let live = client
            .prepare_cached(&self.shared.sql.live)
            .await
            .map_err(store)?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(store)?;
        // The first statement takes the snapshot the read sees too.
        let held = tx
            .query_opt(
                &live,
                &[&to_i64(reader.reader().get()), &to_i64(reader.generation())],
            )
            .await
            .map_err(store)?
            .is_some();
        if !held {
            let _ = tx.rollback().await;
            return Err(FencedReadError::Lost);
        }
        let value = read(&tx).await.map_err(FencedReadError::Read)?;
        tx.commit().await.map_err(store)?;
        Ok(value)
    }
}

/// One reader of a [`PostgresLeaseTable`]: the [`LeaseBackend`] of its
/// lease, from [`PostgresLeaseTable::register`].
pub struct PostgresLeaseReader<S> {
    table: PostgresLeaseTable<S>,
    fence: ReaderFence,
    /// The since the row holds, as of this reader's last successful call;
    /// `None` while a call is in flight (a cancelled call may or may not
    /// have landed): the next heartbeat then reads the row.
    stored_since: Mutex<Option<S>>,
}

impl<S> PostgresLeaseReader<S> {
    /// The reader's id and generation, for
    /// [`PostgresLeaseTable::read_fenced`].
    pub fn fence(&self) -> ReaderFence {
        self.fence
    }
}

impl<S> fmt::Debug for PostgresLeaseReader<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLeaseReader")
            .field("fence", &self.fence)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl<S: TableSince> PostgresLeaseReader<S> {
    async fn heartbeat_inner(
        &self,
        since: S,
        seqno_hold: u64,
    ) -> Result<Option<HeartbeatReply<S, u64>>, LeaseTableError> {
        let key = (
            to_i64(self.fence.reader().get()),
            to_i64(self.fence.generation()),
        );
        // Only this reader writes its since, so the join can be computed
        // here from what the row holds; read it if a cancelled call left
        // that unknown.
        let known = self.stored_since.lock().take();
        let stored = match known {
            Some(stored) => stored,
            None => {
                let (client, statement) = self.table.prepared(|sql| &sql.read_since).await?;
                let Some(row) = client
                    .query_opt(&statement, &[&key.0, &key.1])
                    .await
                    .map_err(pg)?
                else {
                    return Ok(None);
                };
                decode_since::<S>(self.fence.reader().get(), row.get::<_, &[u8]>(0))?
            }
        };
        let joined = (!since.less_equal(&stored)).then(|| stored.join(&since));
        let (client, statement) = self.table.prepared(|sql| &sql.heartbeat).await?;
        let row = client
            .query_opt(
                &statement,
                &[
                    &key.0,
                    &key.1,
                    &joined.as_ref().map(Payload::encode),
                    &to_i64(seqno_hold),
                ],
            )
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let since = joined.unwrap_or(stored);
        *self.stored_since.lock() = Some(since.clone());
        Ok(Some(HeartbeatReply {
            since,
            seqno: to_u64(row.get(0)),
        }))
    }
}

impl<S: TableSince> LeaseBackend for PostgresLeaseReader<S> {
    type Since = S;
    type Seqno = u64;

    /// One `UPDATE` fenced on `(reader, generation)`: the since becomes the
    /// join of the stored and the sent one, the seqno hold moves forward
    /// (never back), the heartbeat counter increments; reports the shard's
    /// latest seqno. A reader whose row is gone gets [`BackendError::Lost`].
    async fn heartbeat(
        &self,
        since: S,
        seqno_hold: u64,
    ) -> Result<HeartbeatReply<S, u64>, BackendError> {
        match self.heartbeat_inner(since, seqno_hold).await {
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(BackendError::Lost),
            Err(error) => Err(error.into_backend()),
        }
    }

    /// Deletes the reader's row (fenced on its generation). Idempotent.
    async fn expire(&self) -> Result<(), BackendError> {
        let outcome = async {
            let (client, statement) = self.table.prepared(|sql| &sql.remove).await?;
            client
                .execute(
                    &statement,
                    &[
                        &to_i64(self.fence.reader().get()),
                        &to_i64(self.fence.generation()),
                    ],
                )
                .await
                .map_err(pg)
        };
        outcome
            .await
            .map(drop)
            .map_err(LeaseTableError::into_backend)
    }
}
