//! Stored responses of idempotent requests, written in the same database
//! transaction as the work they describe.

use chrono::{DateTime, Utc};

use crate::clock::to_micros;
use crate::error::Result;
use crate::sql;
use crate::store::Conn;

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// What a key has seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Never,
    /// The same request: replay this response.
    Same(StoredResponse),
    /// Another request used this key.
    Different,
}

pub async fn lookup(mut c: Conn<'_>, scope: &str, key: &str, request_hash: &str) -> Result<Seen> {
    let row: Option<(String, i64, String)> = sql!(&mut c, c => sqlx::query_as(
        "SELECT request_hash, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2")
        .bind(scope).bind(key).fetch_optional(&mut **c).await)?;
    Ok(match row {
        None => Seen::Never,
        Some((hash, status, body)) if hash == request_hash => Seen::Same(StoredResponse {
            status: u16::try_from(status).unwrap_or(500),
            body,
        }),
        Some(_) => Seen::Different,
    })
}

/// Records the response. A concurrent request that stored the same key
/// first makes this fail with a unique violation, rolling back the work.
pub async fn save(
    mut c: Conn<'_>,
    scope: &str,
    key: &str,
    request_hash: &str,
    response: &StoredResponse,
    now: DateTime<Utc>,
) -> Result<()> {
    sql!(&mut c, c => sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash, status, body, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(scope).bind(key).bind(request_hash).bind(i64::from(response.status))
        .bind(&response.body).bind(to_micros(now))
        .execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(())
}
