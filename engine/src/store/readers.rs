//! SQLite's read connections, pooled without a ping per use.
//!
//! sqlx's own pool pings every connection as it goes back to the pool, and
//! this cannot be turned off. On SQLite a ping is a round trip to the
//! connection's thread, as costly as the read it follows. A SQLite read
//! connection is a file handle in this process: it does not go stale, so a
//! connection is tested only when it has sat idle for a while.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use super::PING_IDLE_AFTER;

/// How long a read waits for a free connection, or for a new one to open.
const WAIT: Duration = Duration::from_secs(30);

pub type ReadPool = managed::Pool<SqliteReaders>;
pub type ReadConnection = managed::Object<SqliteReaders>;

/// Opens read-only connections to one SQLite database.
#[derive(Debug)]
pub struct SqliteReaders {
    options: SqliteConnectOptions,
}

impl managed::Manager for SqliteReaders {
    type Type = SqliteConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<SqliteConnection, sqlx::Error> {
        self.options.connect().await
    }

    async fn recycle(
        &self,
        conn: &mut SqliteConnection,
        metrics: &Metrics,
    ) -> RecycleResult<sqlx::Error> {
        if metrics.last_used() < PING_IDLE_AFTER {
            return Ok(());
        }
        conn.ping().await.map_err(RecycleError::Backend)
    }
}

/// A pool of up to `size` read-only connections opened with `options`.
pub fn pool(options: SqliteConnectOptions, size: u32) -> sqlx::Result<ReadPool> {
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    managed::Pool::builder(SqliteReaders {
        options: options.read_only(true).create_if_missing(false),
    })
    .max_size(size)
    .runtime(deadpool::Runtime::Tokio1)
    .wait_timeout(Some(WAIT))
    .create_timeout(Some(WAIT))
    .build()
    .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))
}

/// A read connection from the pool.
pub async fn get(pool: &ReadPool) -> sqlx::Result<ReadConnection> {
    pool.get().await.map_err(|e| match e {
        managed::PoolError::Backend(e) => e,
        managed::PoolError::Timeout(_) => sqlx::Error::PoolTimedOut,
        managed::PoolError::Closed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Configuration(other.to_string().into()),
    })
}
