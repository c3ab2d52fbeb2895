//! One error type for the HTTP layer: a problem+json document (RFC 9457).
//! Internal details are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::money::MoneyError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error response. `kind` becomes the problem `type`
/// (`urn:bursar:problem:{kind}`), which clients match on.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub extra: Map<String, Value>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            status,
            kind,
            title,
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn bad_request(kind: &'static str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, kind, "Bad request", detail)
    }

    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "A field has an invalid value",
            detail,
        )
        .with("field", field)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            detail,
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// A per-account limit is reached (pending payments, API keys).
    pub fn quota(what: &str, detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::CONFLICT,
            "quota-exceeded",
            "Quota exceeded",
            detail,
        )
        .with("quota", what)
    }

    pub fn internal() -> Self {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the server could not complete the request; it has been logged",
        )
    }

    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            json!(format!("urn:bursar:problem:{}", self.kind)),
        );
        body.insert("title".into(), json!(self.title));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("detail".into(), json!(self.detail));
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body().to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<Error> for Problem {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound { .. } => Problem::not_found(e.to_string()),
            Error::Field(f) => Problem::invalid(f.field, f.to_string()),
            Error::Money(MoneyError::CurrencyMismatch(a, b)) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "currency-mismatch",
                "Currencies do not match",
                format!("the amount is in {a} but the account is billed in {b}"),
            ),
            Error::Money(m) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-amount",
                "Invalid amount",
                m.to_string(),
            ),
            Error::Ledger(l) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-transaction",
                "The transaction breaks a ledger rule",
                l.to_string(),
            ),
            Error::InsufficientFunds {
                ref account_id,
                ref currency,
                balance,
                credit_limit,
                required,
            } => Problem::new(
                StatusCode::PAYMENT_REQUIRED,
                "insufficient-funds",
                "Insufficient funds",
                e.to_string(),
            )
            .with("account_id", account_id.clone())
            .with("currency", currency.clone())
            .with("balance", balance)
            .with("credit_limit", credit_limit)
            .with("required", required),
            Error::Conflict(msg) => Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", msg),
            Error::IllegalTransition { status, .. } => Problem::new(
                StatusCode::CONFLICT,
                "illegal-transition",
                "Not possible in the service's current state",
                e.to_string(),
            )
            .with("current_status", status),
            Error::Unprocessable { kind, message } => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                kind,
                "Cannot be done",
                message,
            ),
            Error::Quota { what, message } => Problem::quota(what, message),
            Error::AccountNotActive { .. } => Problem::new(
                StatusCode::CONFLICT,
                "account-not-active",
                "Account not active",
                e.to_string(),
            ),
            Error::IdempotencyMismatch => Problem::new(
                StatusCode::CONFLICT,
                "idempotency-key-reused",
                "Idempotency key reused",
                e.to_string(),
            ),
            Error::Forbidden(msg) => Problem::forbidden(msg),
            Error::Database(ref db) if is_transient(db) => {
                tracing::warn!(error = %db, "database busy");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Temporarily unavailable",
                    "the database is busy; retry the request (with the same Idempotency-Key)",
                )
            }
            Error::Database(_) | Error::Migrate(_) => {
                tracing::error!(error = %e, "request failed");
                Problem::internal()
            }
        }
    }
}

/// Errors worth retrying: pool exhaustion, SQLite busy/locked, PostgreSQL
/// serialization failures and deadlocks.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            Some("5" | "6" | "517" | "261" | "40001" | "40P01" | "55P03")
        ),
        _ => false,
    }
}

impl From<crate::accounts::FieldError> for Problem {
    fn from(f: crate::accounts::FieldError) -> Self {
        Problem::from(Error::Field(f))
    }
}
