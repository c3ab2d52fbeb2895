//! A form that changes something, run under the API's idempotency runner:
//! the request id fixed when the page was shown is its Idempotency-Key, so
//! a form sent twice (a double click, a reload) does its work once.

use axum::http::StatusCode;
use axum::response::Response;
use futures::future::BoxFuture;

use super::{auth, view};
use crate::api::AppState;
use crate::api::error::Problem;
use crate::api::extract::{IdempotencyKey, Principal};
use crate::api::idempotency::{Idempotency, Reply};
use crate::store::Tx;

pub struct FormRequest {
    key: IdempotencyKey,
    hash: String,
}

impl FormRequest {
    /// `what` names the action, `fingerprint` what the form asked for: the
    /// same request id with another fingerprint is refused, not replayed.
    pub fn new(what: &str, request_id: &str, fingerprint: &str) -> FormRequest {
        FormRequest {
            key: IdempotencyKey(Some(format!("console-{what}:{request_id}"))),
            hash: auth::sha256_hex(&format!("{what}|{fingerprint}")),
        }
    }

    /// The key of a ledger transaction the action posts: the same for a
    /// repeated form.
    pub fn ledger_key(&self, principal: &Principal, purpose: &str) -> String {
        self.idempotency(principal).ledger_key(purpose)
    }

    fn idempotency<'a>(&'a self, principal: &'a Principal) -> Idempotency<'a> {
        Idempotency {
            principal,
            key: &self.key,
            request_hash: &self.hash,
        }
    }

    pub async fn run<F>(
        &self,
        state: &AppState,
        principal: &Principal,
        work: F,
    ) -> Result<Response, Problem>
    where
        F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<Reply, Problem>>,
    {
        self.idempotency(principal).run(state, work).await
    }
}

/// What a refused action says on a page: its status and the API's words;
/// `None` for a server failure (logged, shown as such).
pub fn refusal(p: &Problem) -> Option<(StatusCode, String)> {
    p.status()
        .is_client_error()
        .then(|| (p.status(), p.detail.clone()))
}

/// A failed action as a page of its own.
pub fn refused(p: Problem) -> Response {
    match refusal(&p) {
        Some((StatusCode::NOT_FOUND, _)) => view::not_found(),
        Some((status, detail)) => view::message(status, "Not done", &detail),
        None => view::failed(p.detail),
    }
}
