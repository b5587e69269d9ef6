//! [`PostgresProgressStore`]: scan checkpoints in a PostgreSQL database.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

use super::error::ProgressStoreError;
use super::progress::{
    Checkpoint, CheckpointWithGivenUp, ProgressStore, ScopeFingerprint, resume_from_row,
    resume_to_row,
};
use crate::store::failure::StoreFailure;
use crate::store::postgres::Connect;

const BACKEND: &str = "postgres";

/// The progress-table schema version this crate writes and reads (2 added
/// `given_up`).
const SCHEMA_VERSION: i64 = 2;

impl From<StoreFailure> for ProgressStoreError {
    fn from(failure: StoreFailure) -> Self {
        ProgressStoreError::from_failure(BACKEND, failure)
    }
}

fn pg(error: tokio_postgres::Error) -> ProgressStoreError {
    StoreFailure::from(error).into()
}

/// Configures and opens a [`PostgresProgressStore`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct PostgresProgressStoreBuilder {
    connect: Connect,
    scan: String,
}

impl PostgresProgressStoreBuilder {
    /// Puts the progress table in this schema (created if missing; default:
    /// the connection's `search_path`). Plain identifiers only.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.connect.schema = Some(schema.into());
        self
    }

    /// At most this many connections (default 4; a scan needs one at a
    /// time).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.connect.pool_size = size;
        self
    }

    /// How long opening a connection, or waiting for a free one, may take
    /// (default 10 s).
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

    /// Connects and creates the progress table if it does not exist yet
    /// (serialized by an advisory lock, so processes may open at once).
    ///
    /// # Errors
    ///
    /// Permanent: [`ProgressStoreError::Config`] for an unusable URL,
    /// schema name or pool size; [`ProgressStoreError::CannotOpen`] for an
    /// unknown database or role, or failed authentication;
    /// [`ProgressStoreError::PermissionDenied`] for a missing privilege;
    /// [`ProgressStoreError::Rejected`] if the server refuses the schema
    /// (e.g. `pg_catalog`); [`ProgressStoreError::CorruptDatabase`] if the
    /// version row is there but the table is not;
    /// [`ProgressStoreError::SchemaTooNew`] if the database holds a newer
    /// progress schema than this crate reads. Transient:
    /// [`ProgressStoreError::Backend`] if the server cannot be reached.
    /// Every error from the server shows its message and SQLSTATE.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the table is created in one transaction.
    pub async fn open(self) -> Result<PostgresProgressStore, ProgressStoreError> {
        let (pool, tables) = self.connect.pool()?;
        let table = tables.table("leasehold_scan_progress");
        // `position`: 0 = start, 1 = from `key` (inclusive), 2 = after `key`
        // (exclusive), as in the SQLite store. `given_up`: the keys the scan
        // gave up on, in order.
        let ddl = format!(
            "CREATE TABLE {table} (
                 scan TEXT PRIMARY KEY,
                 scope BYTEA NOT NULL,
                 position SMALLINT NOT NULL,
                 key BYTEA,
                 given_up BYTEA[]
             )"
        );
        let upgrades = [format!("ALTER TABLE {table} ADD COLUMN given_up BYTEA[]")];
        tables
            .ensure(
                &pool,
                "scan_progress",
                SCHEMA_VERSION,
                &ddl,
                &upgrades,
                &["leasehold_scan_progress"],
            )
            .await?;
        Ok(PostgresProgressStore {
            shared: Arc::new(Shared {
                pool,
                schema: tables.schema().map(str::to_owned),
                scan: self.scan,
                load: format!("SELECT scope, position, key, given_up FROM {table} WHERE scan = $1"),
                // One statement: the row is replaced whole or not at all.
                save: format!(
                    "INSERT INTO {table} (scan, scope, position, key, given_up)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (scan) DO UPDATE
                     SET scope = excluded.scope, position = excluded.position, key = excluded.key,
                         given_up = excluded.given_up"
                ),
                clear: format!("DELETE FROM {table} WHERE scan = $1"),
            }),
        })
    }
}

/// A [`ProgressStore`] in a PostgreSQL database: the checkpoint outlives the
/// machine that wrote it, so a scan can resume on another node.
///
/// Each handle is bound to one *scan name*; a database holds the
/// checkpoints of many scans (one row each, in `leasehold_scan_progress`,
/// beside a `PostgresChangeLog`'s tables if they share the schema; both
/// record their version in `leasehold_schema`). A `save` that returned is
/// committed, as durable as the server's `synchronous_commit` makes it.
/// Requires the `postgres` feature; clones share one connection pool.
///
/// # Examples
///
/// ```no_run
/// use leasehold::recovery::{Checkpoint, PostgresProgressStore, ProgressStore, ResumePoint, ScopeFingerprint};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresProgressStore::builder("postgres://app@db.internal/storage", "blob-recovery")
///     .schema("leasehold")
///     .open()
///     .await?;
/// let checkpoint = Checkpoint { scope: ScopeFingerprint::from("shards 1,4"), resume: ResumePoint::After(vec![7]) };
/// store.save(checkpoint.clone()).await?;
/// // Any process, on any machine, finds it.
/// assert_eq!(store.load().await?, Some(checkpoint));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresProgressStore {
    shared: Arc<Shared>,
}

struct Shared {
    pool: Pool,
    schema: Option<String>,
    scan: String,
    load: String,
    save: String,
    clear: String,
}

impl PostgresProgressStore {
    /// A builder for the checkpoint of the scan named `scan` in the database
    /// at `url` (a libpq-style connection string).
    pub fn builder(
        url: impl Into<String>,
        scan: impl Into<String>,
    ) -> PostgresProgressStoreBuilder {
        PostgresProgressStoreBuilder {
            connect: Connect::url(url.into()).with_pool_size(4),
            scan: scan.into(),
        }
    }

    /// A builder for the checkpoint of the scan named `scan` in the database
    /// `config` connects to.
    pub fn builder_with_config(
        config: tokio_postgres::Config,
        scan: impl Into<String>,
    ) -> PostgresProgressStoreBuilder {
        PostgresProgressStoreBuilder {
            connect: Connect::config(config).with_pool_size(4),
            scan: scan.into(),
        }
    }

    /// The scan whose checkpoint this handle reads and writes.
    pub fn scan(&self) -> &str {
        &self.shared.scan
    }

    /// The schema holding the table, if one was configured.
    pub fn schema(&self) -> Option<&str> {
        self.shared.schema.as_deref()
    }

    async fn client(&self) -> Result<Object, ProgressStoreError> {
        self.shared
            .pool
            .get()
            .await
            .map_err(|error| StoreFailure::from_pool(error).into())
    }
}

impl fmt::Debug for PostgresProgressStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresProgressStore")
            .field("schema", &self.shared.schema)
            .field("scan", &self.shared.scan)
            .finish_non_exhaustive()
    }
}

impl ProgressStore for PostgresProgressStore {
    async fn load(&self) -> Result<Option<Checkpoint>, ProgressStoreError> {
        Ok(self
            .load_with_given_up()
            .await?
            .map(|(checkpoint, _)| checkpoint))
    }

    async fn save(&self, checkpoint: Checkpoint) -> Result<(), ProgressStoreError> {
        self.save_with_given_up(checkpoint, Vec::new()).await
    }

    async fn clear(&self) -> Result<(), ProgressStoreError> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.shared.clear)
            .await
            .map_err(pg)?;
        client
            .execute(&statement, &[&self.shared.scan])
            .await
            .map_err(pg)?;
        Ok(())
    }

    fn keeps_given_up(&self) -> bool {
        true
    }

    async fn load_with_given_up(
        &self,
    ) -> Result<Option<CheckpointWithGivenUp>, ProgressStoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&self.shared.load).await.map_err(pg)?;
        let row = client
            .query_opt(&statement, &[&self.shared.scan])
            .await
            .map_err(pg)?;
        row.map(|row| {
            let checkpoint = Checkpoint {
                scope: ScopeFingerprint::new(row.get::<_, Vec<u8>>(0)),
                resume: resume_from_row(i64::from(row.get::<_, i16>(1)), row.get(2))?,
            };
            let given_up: Option<Vec<Vec<u8>>> =
                row.try_get(3)
                    .map_err(|error| ProgressStoreError::Corrupt {
                        reason: format!("unreadable given-up keys: {error}"),
                    })?;
            Ok((checkpoint, given_up.unwrap_or_default()))
        })
        .transpose()
    }

    async fn save_with_given_up(
        &self,
        checkpoint: Checkpoint,
        given_up: Vec<Vec<u8>>,
    ) -> Result<(), ProgressStoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&self.shared.save).await.map_err(pg)?;
        let (position, key) = resume_to_row(checkpoint.resume);
        let given_up = (!given_up.is_empty()).then_some(given_up);
        client
            .execute(
                &statement,
                &[
                    &self.shared.scan,
                    &checkpoint.scope.as_bytes(),
                    &position,
                    &key,
                    &given_up,
                ],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }
}
