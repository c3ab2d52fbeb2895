//! Idempotent POSTs. The response to a request carrying an
//! `Idempotency-Key` is stored in the same database transaction as the work,
//! so either both happen or neither. A replay of the same request returns
//! the stored status and body (with `Idempotent-Replayed: true`); the same
//! key with a different request is a 409. Keys are scoped to the API key
//! that sent them. Only successful responses are stored: a request that
//! failed (say, for insufficient funds) may be retried with the same key.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde_json::Value;

use crate::api::AppState;
use crate::api::error::Problem;
use crate::api::extract::{IdempotencyKey, Principal};
use crate::error::Error;
use crate::store::Tx;
use crate::store::idempotency::{self, Seen, StoredResponse};

pub const REPLAYED: &str = "idempotent-replayed";

/// What a unit of work answers.
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    /// What to store for replays instead of `body` (a secret shown once is
    /// not kept).
    pub stored_body: Option<Value>,
}

impl Reply {
    /// `body` is one of the API's own response types (see `api::views`),
    /// never a domain struct.
    pub fn new(
        status: StatusCode,
        body: impl serde::Serialize + utoipa::ToSchema,
    ) -> Result<Reply, Problem> {
        Ok(Reply {
            status,
            body: serde_json::to_value(body).map_err(|_| Problem::internal())?,
            stored_body: None,
        })
    }
}

/// A request's identity for idempotency: who sent it, its key, its hash.
pub struct Idempotency<'a> {
    pub principal: &'a Principal,
    pub key: &'a IdempotencyKey,
    pub request_hash: &'a str,
}

impl Idempotency<'_> {
    /// A stable key for a ledger transaction this request posts, derived
    /// from the Idempotency-Key, or a fresh one when the request has none.
    pub fn ledger_key(&self, purpose: &str) -> String {
        match &self.key.0 {
            Some(k) => format!("{purpose}:{}:{k}", self.principal.key_id),
            None => format!("{purpose}:{}", crate::ids::new_id("req")),
        }
    }

    /// Runs `work` in one database transaction together with storing its
    /// response under the key.
    pub async fn run<F>(&self, state: &AppState, work: F) -> Result<Response, Problem>
    where
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<Reply, Problem>>,
    {
        let scope = &self.principal.key_id;
        let mut tx = state.store.begin().await?;
        if let Some(key) = &self.key.0 {
            match idempotency::lookup(tx.conn(), scope, key, self.request_hash).await? {
                Seen::Same(stored) => return Ok(replay(stored)),
                Seen::Different => return Err(Error::IdempotencyMismatch.into()),
                Seen::Never => {}
            }
        }
        let reply = work(&mut tx).await?;
        if let Some(key) = &self.key.0 {
            let stored = StoredResponse {
                status: reply.status.as_u16(),
                body: reply
                    .stored_body
                    .as_ref()
                    .unwrap_or(&reply.body)
                    .to_string(),
            };
            let now = state.clock.now();
            if let Err(e) =
                idempotency::save(tx.conn(), scope, key, self.request_hash, &stored, now).await
            {
                if !e.is_unique_violation() {
                    return Err(e.into());
                }
                // A concurrent request with the same key won; ours rolls back.
                drop(tx);
                let mut reader = state.store.reader().await?;
                return match idempotency::lookup(reader.conn(), scope, key, self.request_hash)
                    .await?
                {
                    Seen::Same(stored) => Ok(replay(stored)),
                    _ => Err(Error::IdempotencyMismatch.into()),
                };
            }
        }
        tx.commit().await?;
        Ok(json_response(reply.status, reply.body.to_string()))
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = json_response(status, stored.body);
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
