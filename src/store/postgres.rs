//! What the PostgreSQL backends share: how to connect (a `deadpool-postgres`
//! pool over `tokio-postgres`), where their tables live (an optional schema),
//! how their schema versions are created and checked under an advisory lock,
//! and how driver errors are classified. Their group commit (concurrent
//! operations of one kind sent as one statement) is the generic batcher in
//! `store::batch`.
//!
//! Crate-private; the public faces are `changelog::PostgresChangeLog` and
//! `recovery::PostgresProgressStore`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{NoTls, Socket};

use crate::store::failure::StoreFailure;

/// Builds the pool's connection manager for a configuration: the TLS
/// connector is captured here, so the builders need not be generic over it.
type MakeManager = Arc<dyn Fn(tokio_postgres::Config) -> Manager + Send + Sync>;

/// Where and how to connect; embedded in each backend's builder.
#[derive(Clone)]
pub(crate) struct Connect {
    target: Target,
    make_manager: MakeManager,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) schema: Option<String>,
}

#[derive(Clone)]
enum Target {
    Url(String),
    Config(Box<tokio_postgres::Config>),
}

impl Connect {
    pub(crate) fn url(url: String) -> Self {
        Self::new(Target::Url(url))
    }

    pub(crate) fn config(config: tokio_postgres::Config) -> Self {
        Self::new(Target::Config(Box::new(config)))
    }

    /// `self` with a default pool size of `size` instead of
    /// [`default_pool_size`] (for a store with little concurrency).
    pub(crate) fn with_pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    fn new(target: Target) -> Self {
        Connect {
            target,
            make_manager: manager_for(NoTls),
            pool_size: default_pool_size(),
            connect_timeout: Duration::from_secs(10),
            schema: None,
        }
    }

    pub(crate) fn tls<T>(&mut self, tls: T)
    where
        T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
        T::Stream: Sync + Send,
        T::TlsConnect: Sync + Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        self.make_manager = manager_for(tls);
    }

    /// The pool (connections are opened lazily, on first use) and the
    /// validated schema.
    pub(crate) fn pool(&self) -> Result<(Pool, Tables), StoreFailure> {
        let mut config = match &self.target {
            Target::Url(url) => url.parse::<tokio_postgres::Config>().map_err(|error| {
                StoreFailure::Config(format!("unusable PostgreSQL connection string: {error}"))
            })?,
            Target::Config(config) => (**config).clone(),
        };
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.connect_timeout);
        }
        if self.pool_size == 0 {
            return Err(StoreFailure::Config(
                "the pool size must be at least 1".into(),
            ));
        }
        let tables = Tables::new(self.schema.as_deref())?;
        let pool = Pool::builder((self.make_manager)(config))
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.connect_timeout))
            .create_timeout(Some(self.connect_timeout))
            .build()
            .map_err(|error| StoreFailure::Config(format!("cannot build the pool: {error}")))?;
        Ok((pool, tables))
    }
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the URL: it may carry a password.
        f.debug_struct("Connect")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// The default pool size: enough connections for the concurrency a store
/// sees (each call holds one for a round trip or two; with fewer, callers
/// queue for a connection while the server idles): 16, or 4 per available
/// core on larger machines (deadpool's own default).
pub(crate) fn default_pool_size() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (4 * cores).max(16)
}

fn manager_for<T>(tls: T) -> MakeManager
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    Arc::new(move |config| {
        Manager::from_config(
            config,
            tls.clone(),
            ManagerConfig {
                // `is_closed` only: a dead connection is dropped on return,
                // and the next call opens a fresh one.
                recycling_method: RecyclingMethod::Fast,
            },
        )
    })
}

/// The schema the tables live in: `None` for the connection's
/// `search_path` (normally `public`).
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    schema: Option<String>,
}

impl Tables {
    fn new(schema: Option<&str>) -> Result<Self, StoreFailure> {
        if let Some(schema) = schema {
            // Identifiers cannot be bound as parameters; only plain ones are
            // accepted, so quoting them is enough to make them inert.
            let plain = !schema.is_empty()
                && schema.len() <= 63
                && schema
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !schema.starts_with(|c: char| c.is_ascii_digit());
            if !plain {
                return Err(StoreFailure::Config(format!(
                    "schema name {schema:?} must be 1 to 63 ASCII letters, digits or `_`, \
                     not starting with a digit"
                )));
            }
        }
        Ok(Tables {
            schema: schema.map(str::to_owned),
        })
    }

    /// `name`, qualified with the schema if there is one.
    pub(crate) fn table(&self, name: &str) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".{name}"),
            None => name.to_owned(),
        }
    }

    pub(crate) fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Creates (once) the tables of `component` at `version` with `ddl`, in
    /// one transaction serialized by an advisory lock on the schema, so that
    /// any number of processes may open the same store at once; then probes
    /// each of `tables` (`SELECT * ... LIMIT 0`), so that a store whose
    /// version row is there but whose tables are not is refused now, not at
    /// the first call.
    ///
    /// Returns [`StoreFailure::SchemaTooNew`] if the store was written by a
    /// newer version of the crate.
    ///
    /// `upgrades[i]` moves the tables from version `i + 1` to `i + 2`; the
    /// needed ones run in order, in the same transaction and lock.
    pub(crate) async fn ensure(
        &self,
        pool: &Pool,
        component: &str,
        version: i64,
        ddl: &str,
        upgrades: &[String],
        tables: &[&str],
    ) -> Result<(), StoreFailure> {
        let mut client = pool.get().await.map_err(StoreFailure::from_pool)?;
        let tx = client.transaction().await.map_err(StoreFailure::from)?;
        let done = match self
            .create_or_check(&tx, component, version, ddl, upgrades)
            .await
        {
            Ok(()) => self.probe(&tx, component, version, tables).await,
            Err(failure) => Err(failure),
        };
        match done {
            Ok(()) => Ok(tx.commit().await?),
            Err(failure) => {
                // Roll back now, not when the dropped transaction's ROLLBACK
                // gets sent: the lock on `leasehold_schema` must not outlive
                // this call (a DROP SCHEMA would wait on it).
                let _ = tx.rollback().await;
                Err(failure)
            }
        }
    }

    async fn probe(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        component: &str,
        version: i64,
        tables: &[&str],
    ) -> Result<(), StoreFailure> {
        for table in tables {
            let name = self.table(table);
            if let Err(error) = tx
                .batch_execute(&format!("SELECT * FROM {name} LIMIT 0"))
                .await
            {
                let failure = match StoreFailure::from(error) {
                    // A missing table or column: the version row lies.
                    StoreFailure::Rejected(source) => StoreFailure::Corrupt(source),
                    other => other,
                };
                return Err(failure.context(format!(
                    "the {component} schema (version {version}) is damaged: table {name} is \
                     unreadable"
                )));
            }
        }
        Ok(())
    }

    async fn create_or_check(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        component: &str,
        version: i64,
        ddl: &str,
        upgrades: &[String],
    ) -> Result<(), StoreFailure> {
        // Serialize concurrent creators: `CREATE ... IF NOT EXISTS` alone
        // races (two creators can both miss the catalog row and one fails
        // on its unique index). The lock is released at commit or rollback.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('leasehold_schema'), \
             hashtext(coalesce($1::text, current_schema(), '')))",
            &[&self.schema],
        )
        .await?;
        if let Some(schema) = &self.schema {
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .await?;
        }
        let versions = self.table("leasehold_schema");
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {versions} (
                 component TEXT PRIMARY KEY,
                 version BIGINT NOT NULL
             )"
        ))
        .await?;
        let found: Option<i64> = tx
            .query_opt(
                &format!("SELECT version FROM {versions} WHERE component = $1"),
                &[&component],
            )
            .await?
            .map(|row| row.get(0));
        match found {
            Some(found) if found > version => {
                return Err(StoreFailure::SchemaTooNew {
                    found,
                    supported: version,
                });
            }
            Some(found) if found < version => {
                let from = usize::try_from(found - 1).unwrap_or(0);
                for upgrade in upgrades.iter().skip(from) {
                    tx.batch_execute(upgrade).await?;
                }
                tx.execute(
                    &format!("UPDATE {versions} SET version = $2 WHERE component = $1"),
                    &[&component, &version],
                )
                .await?;
            }
            Some(_) => {}
            None => {
                tx.batch_execute(ddl).await?;
                tx.execute(
                    &format!("INSERT INTO {versions} (component, version) VALUES ($1, $2)"),
                    &[&component, &version],
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// Classifies a driver error by its SQLSTATE (see [`StoreFailure`]); the
/// error is kept as the source, shown with the server's message, SQLSTATE,
/// detail and hint.
impl From<tokio_postgres::Error> for StoreFailure {
    fn from(error: tokio_postgres::Error) -> Self {
        let Some(code) = error.code().cloned() else {
            // No SQLSTATE: an I/O or protocol error, a closed connection, a
            // connect timeout.
            return StoreFailure::Unavailable(Box::new(ServerError(error)));
        };
        let source = Box::new(ServerError(error));
        let class = &code.code()[..2];
        if [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
        ]
        .contains(&code)
        {
            StoreFailure::Busy(source)
        } else if class == "08" // connection exception
            || class == "53" // insufficient resources: disk full, out of memory, connections
            || class == "58" // system error: I/O
            || [
                SqlState::ADMIN_SHUTDOWN,
                SqlState::CRASH_SHUTDOWN,
                SqlState::CANNOT_CONNECT_NOW,
                SqlState::QUERY_CANCELED,
                SqlState::T_R_STATEMENT_COMPLETION_UNKNOWN,
                SqlState::OBJECT_IN_USE,
                SqlState::READ_ONLY_SQL_TRANSACTION, // a standby: a failover heals it
                SqlState::INTERNAL_ERROR,
            ]
            .contains(&code)
        {
            StoreFailure::Unavailable(source)
        } else if class == "28" // invalid authorization: unknown role, bad password
            || code == SqlState::INVALID_CATALOG_NAME // no such database
            || code == SqlState::DATABASE_DROPPED
        {
            StoreFailure::CannotOpen(source)
        } else if code == SqlState::INSUFFICIENT_PRIVILEGE {
            StoreFailure::PermissionDenied(source)
        } else if class == "54" {
            // Program limit exceeded: a value or statement too large.
            StoreFailure::TooBig(source)
        } else if code == SqlState::DATA_CORRUPTED || code == SqlState::INDEX_CORRUPTED {
            StoreFailure::Corrupt(source)
        } else {
            // A reserved or invalid schema, a missing table, a constraint,
            // bad data: the same statement fails again.
            StoreFailure::Rejected(source)
        }
    }
}

impl StoreFailure {
    pub(crate) fn from_pool(error: PoolError) -> Self {
        match error {
            PoolError::Backend(error) => StoreFailure::from(error),
            other => StoreFailure::Unavailable(Box::new(other)),
        }
    }
}

/// A driver error shown with what the server said: its message, SQLSTATE,
/// detail and hint (`tokio_postgres::Error` alone shows only "db error").
/// Its source is the driver's error.
#[derive(Debug)]
pub(crate) struct ServerError(tokio_postgres::Error);

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(db) = self.0.as_db_error() else {
            // Not from the server: the driver's words, and their cause.
            fmt::Display::fmt(&self.0, f)?;
            let mut cause = std::error::Error::source(&self.0);
            while let Some(error) = cause {
                write!(f, ": {error}")?;
                cause = error.source();
            }
            return Ok(());
        };
        write!(
            f,
            "{} (SQLSTATE {}, {})",
            db.message(),
            db.code().code(),
            db.severity()
        )?;
        if let Some(detail) = db.detail() {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = db.hint() {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}
