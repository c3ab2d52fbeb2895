//! Storage: the one place that talks SQL.
//!
//! Two backends behind one interface: SQLite (the embedded zero-set-up
//! default) and PostgreSQL (production, several nodes). Queries are written
//! once in the SQL both understand (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT`); the [`sql!`] macro expands each body once per backend, so
//! there is no `Any` driver and no dynamic dispatch per row. Timestamps are
//! stored as microseconds since the epoch (`BIGINT`) in both.
//!
//! Write transactions on SQLite go through a single-connection pool and
//! start with `BEGIN IMMEDIATE`, taking the write lock up front; reads use a
//! separate pool of read connections (WAL lets them run beside the writer).

pub mod accounts;
pub mod audit;
pub mod bulk;
pub mod catalog;
pub mod idempotency;
pub mod invoices;
pub mod ledger;
pub mod logins;
pub mod notifications;
pub mod outbox;
pub mod payments;
mod readers;
pub mod services;
pub mod statistics;

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool};

use crate::error::Result;

/// Runs `$body` with `$c` bound to the backend's connection
/// (`&mut SqliteConnection` or `&mut PgConnection`). The body is compiled
/// once per backend.
#[macro_export]
macro_rules! sql {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::store::Conn::Sqlite($c) => $body,
            $crate::store::Conn::Postgres($c) => $body,
        }
    };
}

/// Which database engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 10,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// A pooled connection idle for longer than this is tested before use.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// A handle to the database. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Store {
    Sqlite {
        write: SqlitePool,
        read: readers::ReadPool,
    },
    Postgres(PgPool),
}

/// A borrowed connection of either backend.
pub enum Conn<'a> {
    Sqlite(&'a mut SqliteConnection),
    Postgres(&'a mut PgConnection),
}

/// An open write transaction. Dropped without [`Tx::commit`] it rolls back.
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

/// A pooled connection for reads.
pub enum Reader {
    Sqlite(readers::ReadConnection),
    Postgres(PoolConnection<Postgres>),
}

/// The kind of database a URL names, or a message naming what is wrong.
pub fn backend_of(url: &str) -> std::result::Result<Backend, String> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(format!(
            "`{url}` is not a database URL Bursar knows: use sqlite://PATH or postgres://…"
        ))
    }
}

impl Store {
    /// Connects to the database a URL names (`sqlite://…` or
    /// `postgres://…`). A SQLite file and its directory are created when
    /// missing.
    pub async fn connect(url: &str, opts: &StoreOptions) -> Result<Store> {
        match backend_of(url).map_err(|m| sqlx::Error::Configuration(m.into()))? {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)?;
                Store::connect_sqlite(options, opts).await
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url)?;
                Store::connect_postgres(options, opts).await
            }
        }
    }

    pub async fn connect_sqlite(
        options: SqliteConnectOptions,
        opts: &StoreOptions,
    ) -> Result<Store> {
        let path = options.get_filename().to_path_buf();
        let cannot = |what: &str, p: &std::path::Path, e: std::io::Error| {
            sqlx::Error::Configuration(
                format!(
                    "cannot create the {what} {} for the SQLite database: {e}",
                    p.display()
                )
                .into(),
            )
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::create_private_dir(dir).map_err(|e| cannot("directory", dir, e))?;
        }
        if path.as_os_str() != ":memory:" && !path.exists() {
            crate::files::create_private_file(&path).map_err(|e| cannot("file", &path, e))?;
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk when it returns (NORMAL can lose
            // the last commits on a power cut). Orders pay the flush once
            // per group (`api::idempotency::GroupCommit`).
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(opts.busy_timeout)
            .foreign_keys(true);
        // No ping before handing out a connection: a SQLite connection is
        // a file handle in this process that cannot go stale, and the ping
        // is one more hand-off to the connection's thread per request.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let read = readers::pool(options, opts.max_connections.max(2))?;
        // Open one now, so a database that cannot be read fails here.
        drop(readers::get(&read).await?);
        Ok(Store::Sqlite { write, read })
    }

    pub async fn connect_postgres(options: PgConnectOptions, opts: &StoreOptions) -> Result<Store> {
        // sqlx pings every connection as it goes back to the pool, so one
        // in use a moment ago needs no second ping on the way out: only a
        // connection idle for a while (a database restart may have dropped
        // it) is pinged before it is handed out.
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for < PING_IDLE_AFTER {
                        return Ok(true);
                    }
                    Ok(sqlx::Connection::ping(conn).await.is_ok())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Store::Postgres(pool))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite { .. } => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// Creates or upgrades the schema. Safe to run from several processes:
    /// sqlx takes an advisory lock on PostgreSQL, SQLite serialises writers.
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Store::Sqlite { write, .. } => {
                sqlx::migrate!("src/store/migrations/sqlite")
                    .run(write)
                    .await?
            }
            Store::Postgres(pool) => {
                sqlx::migrate!("src/store/migrations/postgres")
                    .run(pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Starts a write transaction (on SQLite with `BEGIN IMMEDIATE`).
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match self {
            Store::Sqlite { write, .. } => Tx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?),
            Store::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// A connection for reads outside any transaction.
    pub async fn reader(&self) -> Result<Reader> {
        Ok(match self {
            Store::Sqlite { read, .. } => Reader::Sqlite(readers::get(read).await?),
            Store::Postgres(pool) => Reader::Postgres(pool.acquire().await?),
        })
    }

    /// Is the database answering?
    pub async fn ping(&self) -> Result<()> {
        let mut r = self.reader().await?;
        sql!(r.conn(), c => sqlx::query("SELECT 1").execute(&mut *c).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Refreshes the planner statistics of `table` (a name from the
    /// schema) on PostgreSQL; nothing on SQLite, whose queue claims are
    /// steered by hints ([`indexed_by`]). See [`statistics`]. It never
    /// waits for a lock (another `ANALYZE`, a `VACUUM`, a migration):
    /// then it skips the table, and it gives up after ten seconds.
    pub async fn analyze(&self, table: &str) -> Result<()> {
        if let Store::Postgres(pool) = self {
            let mut tx = pool.begin().await?;
            sqlx::query("SET LOCAL statement_timeout = 10000")
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("ANALYZE (SKIP_LOCKED) {table}"))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        match self {
            Store::Sqlite { write, read } => {
                read.close();
                write.close().await;
            }
            Store::Postgres(pool) => pool.close().await,
        }
    }
}

/// The hint that makes SQLite read a table through `index` (nothing on
/// PostgreSQL). A queue claim takes it so that it walks its pending index
/// (`operations_pending`, `outbox_pending`, `notifications_pending`) first
/// due first and stops at its batch: left to itself SQLite reads every
/// pending row through a `(status, …)` index and sorts them, a cost that
/// grows with the backlog.
pub fn indexed_by(backend: Backend, index: &str) -> String {
    match backend {
        Backend::Sqlite => format!("INDEXED BY {index}"),
        Backend::Postgres => String::new(),
    }
}

impl Conn<'_> {
    /// Which database engine this connection is to.
    pub fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Postgres(_) => Backend::Postgres,
        }
    }

    /// A shorter borrow of the same connection, to pass to another query
    /// function and keep using this one afterwards.
    pub fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }
}

impl Tx {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Sqlite(t) => Conn::Sqlite(&mut *t),
            Tx::Postgres(t) => Conn::Postgres(&mut *t),
        }
    }

    pub async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    /// Rolls back now. A dropped transaction is rolled back too, but only
    /// when its connection is next used: until then its row locks stay
    /// held, and `SKIP LOCKED` readers would pass those rows over.
    pub async fn rollback(self) -> Result<()> {
        match self {
            Tx::Sqlite(t) => t.rollback().await?,
            Tx::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }

    /// Commits when the work says `Ok(true)` (it changed something worth
    /// keeping); otherwise rolls back at once. Returns the work's outcome;
    /// an error keeps its own cause even if the rollback fails too.
    pub async fn keep_if(self, outcome: Result<bool>) -> Result<bool> {
        match outcome {
            Ok(true) => self.commit().await.map(|()| true),
            Ok(false) => self.rollback().await.map(|()| false),
            Err(e) => {
                if let Err(rollback) = self.rollback().await {
                    tracing::warn!(error = %rollback, "rollback after a failure failed");
                }
                Err(e)
            }
        }
    }
}

impl Reader {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Reader::Sqlite(c) => Conn::Sqlite(&mut *c),
            Reader::Postgres(c) => Conn::Postgres(&mut *c),
        }
    }
}

/// A page of a cursor-paginated list: the items and the cursor that fetches
/// the next page, if there is one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows: the extra row only tells
    /// that there is more.
    pub fn from_rows(mut rows: Vec<T>, limit: usize, cursor_of: impl Fn(&T) -> String) -> Self {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(cursor_of)
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}
