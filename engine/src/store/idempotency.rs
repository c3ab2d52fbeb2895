//! Stored responses of idempotent requests, written in the same database
//! transaction as the work they describe.

use chrono::{DateTime, Utc};

use crate::clock::to_micros;
use crate::error::Result;
use crate::sql;
use crate::store::{Conn, bulk};

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

/// What is stored under a key: the request's hash and its response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub request_hash: String,
    pub response: StoredResponse,
}

impl Stored {
    fn from_row((request_hash, status, body): (String, i64, String)) -> Stored {
        Stored {
            request_hash,
            response: StoredResponse {
                status: u16::try_from(status).unwrap_or(500),
                body,
            },
        }
    }

    /// What a request hashed `request_hash` sent under this key sees.
    pub fn seen_by(&self, request_hash: &str) -> Seen {
        if self.request_hash == request_hash {
            Seen::Same(self.response.clone())
        } else {
            Seen::Different
        }
    }
}

pub async fn lookup(mut c: Conn<'_>, scope: &str, key: &str, request_hash: &str) -> Result<Seen> {
    let row: Option<(String, i64, String)> = sql!(&mut c, c => sqlx::query_as(
        "SELECT request_hash, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2")
        .bind(scope).bind(key).fetch_optional(&mut **c).await)?;
    Ok(row.map_or(Seen::Never, |row| {
        Stored::from_row(row).seen_by(request_hash)
    }))
}

/// What is stored under each of many `(scope, key)` pairs; those never
/// used are left out. Returns `(scope, key, stored)`.
pub async fn lookup_many(
    c: Conn<'_>,
    keys: &[(&str, &str)],
) -> Result<Vec<(String, String, Stored)>> {
    let mut rows = bulk::Rows::new(2);
    for (scope, key) in keys {
        rows.push([(*scope).into(), (*key).into()]);
    }
    let found: Vec<(String, String, String, i64, String)> = bulk::fetch_all(
        c,
        "WITH v (scope, key) AS ({rows})
         SELECT DISTINCT i.scope, i.key, i.request_hash, i.status, i.body
         FROM idempotency_keys i JOIN v ON i.scope = v.scope AND i.key = v.key",
        &rows,
    )
    .await?;
    Ok(found
        .into_iter()
        .map(|(scope, key, hash, status, body)| {
            (scope, key, Stored::from_row((hash, status, body)))
        })
        .collect())
}

/// Records the responses of many requests (scope, key, request hash,
/// response each) with multi-row statements; a key stored before fails
/// them all with a unique violation.
pub async fn save_many(
    c: Conn<'_>,
    saved: &[(&str, &str, &str, &StoredResponse)],
    now: DateTime<Utc>,
) -> Result<()> {
    let at = to_micros(now);
    let mut rows = bulk::Rows::new(6);
    for (scope, key, hash, response) in saved {
        rows.push([
            (*scope).into(),
            (*key).into(),
            (*hash).into(),
            i64::from(response.status).into(),
            response.body.as_str().into(),
            at.into(),
        ]);
    }
    bulk::execute(
        c,
        "INSERT INTO idempotency_keys (scope, key, request_hash, status, body, created_at) {rows}",
        &rows,
    )
    .await?;
    Ok(())
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
