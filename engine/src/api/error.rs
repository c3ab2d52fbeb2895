//! One error type for the HTTP layer: a problem+json document (RFC 9457).
//! Internal details are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::error::{Error, Refusal};
use crate::money::MoneyError;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every kind of problem the API answers with: its `type` URI
/// (`urn:bursar:problem:{slug}`), which clients match on, its HTTP status
/// and its title. The same condition is the same kind on every endpoint.
macro_rules! problem_kinds {
    ($($variant:ident = $slug:literal, $status:ident, $title:literal;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum ProblemKind {
            $($variant,)*
        }

        impl ProblemKind {
            pub const ALL: &'static [ProblemKind] = &[$(ProblemKind::$variant,)*];

            /// The last segment of the `type` URI.
            pub fn slug(self) -> &'static str {
                match self {
                    $(ProblemKind::$variant => $slug,)*
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(ProblemKind::$variant => StatusCode::$status,)*
                }
            }

            pub fn title(self) -> &'static str {
                match self {
                    $(ProblemKind::$variant => $title,)*
                }
            }
        }
    };
}

problem_kinds! {
    MalformedJson = "malformed-json", BAD_REQUEST, "The body is not valid JSON";
    InvalidBody = "invalid-body", UNPROCESSABLE_ENTITY, "The body does not have the expected shape";
    UnreadableBody = "unreadable-body", BAD_REQUEST, "The body could not be read";
    InvalidQuery = "invalid-query", BAD_REQUEST, "Invalid query parameters";
    InvalidIdempotencyKey = "invalid-idempotency-key", BAD_REQUEST, "Invalid Idempotency-Key";
    CallbackRefused = "callback-refused", BAD_REQUEST, "Callback refused";
    Unauthorized = "unauthorized", UNAUTHORIZED, "Authentication required";
    InsufficientFunds = "insufficient-funds", PAYMENT_REQUIRED, "Insufficient funds";
    Forbidden = "forbidden", FORBIDDEN, "Not allowed";
    NotFound = "not-found", NOT_FOUND, "Not found";
    MethodNotAllowed = "method-not-allowed", METHOD_NOT_ALLOWED, "Method not allowed";
    Conflict = "conflict", CONFLICT, "Conflict";
    IllegalTransition = "illegal-transition", CONFLICT, "Not possible in the service's current state";
    AccountNotActive = "account-not-active", CONFLICT, "Account not active";
    QuotaExceeded = "quota-exceeded", CONFLICT, "Quota exceeded";
    IdempotencyKeyReused = "idempotency-key-reused", CONFLICT, "Idempotency key reused";
    PlanInUse = "plan-in-use", CONFLICT, "Plan in use";
    NoCatalog = "no-catalog", CONFLICT, "This instance has no catalog";
    PayloadTooLarge = "payload-too-large", PAYLOAD_TOO_LARGE, "Request body too large";
    UnsupportedMediaType = "unsupported-media-type", UNSUPPORTED_MEDIA_TYPE, "Unsupported media type";
    InvalidField = "invalid-field", UNPROCESSABLE_ENTITY, "A field has an invalid value";
    CurrencyMismatch = "currency-mismatch", UNPROCESSABLE_ENTITY, "Currencies do not match";
    InvalidTransaction = "invalid-transaction", UNPROCESSABLE_ENTITY, "The transaction breaks a ledger rule";
    PlanArchived = "plan-archived", UNPROCESSABLE_ENTITY, "The plan is archived";
    InvalidPeriod = "invalid-period", UNPROCESSABLE_ENTITY, "The plan does not offer this period";
    PlanChangeNotAllowed = "plan-change-not-allowed", UNPROCESSABLE_ENTITY, "This plan change is not offered";
    NotAnUnpaidOrder = "not-an-unpaid-order", UNPROCESSABLE_ENTITY, "Not an unpaid order";
    AmountMismatch = "amount-mismatch", UNPROCESSABLE_ENTITY, "The amount does not match";
    RefundExceedsPayment = "refund-exceeds-payment", UNPROCESSABLE_ENTITY, "The refund exceeds what is left of the payment";
    SyncUnsupported = "sync-unsupported", UNPROCESSABLE_ENTITY, "Not supported by the module";
    RateLimited = "rate-limited", TOO_MANY_REQUESTS, "Too many requests";
    HeadersTooLarge = "headers-too-large", REQUEST_HEADER_FIELDS_TOO_LARGE, "Request headers too large";
    Internal = "internal", INTERNAL_SERVER_ERROR, "Internal error";
    GatewayFailed = "gateway-failed", BAD_GATEWAY, "The payment gateway failed";
    PluginFailed = "plugin-failed", BAD_GATEWAY, "The plugin failed";
    Unavailable = "unavailable", SERVICE_UNAVAILABLE, "Temporarily unavailable";
    NotReady = "not-ready", SERVICE_UNAVAILABLE, "Not ready";
    Busy = "busy", SERVICE_UNAVAILABLE, "Busy";
    CallbackFailed = "callback-failed", SERVICE_UNAVAILABLE, "Callback not handled";
    CallbackTimeout = "callback-timeout", SERVICE_UNAVAILABLE, "Not handled in time";
}

impl ProblemKind {
    /// The problem's `type`.
    pub fn uri(self) -> String {
        format!("urn:bursar:problem:{}", self.slug())
    }
}

impl From<Refusal> for ProblemKind {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::PlanArchived => ProblemKind::PlanArchived,
            Refusal::InvalidPeriod => ProblemKind::InvalidPeriod,
            Refusal::PlanChangeNotAllowed => ProblemKind::PlanChangeNotAllowed,
            Refusal::NotAnUnpaidOrder => ProblemKind::NotAnUnpaidOrder,
            Refusal::AmountMismatch => ProblemKind::AmountMismatch,
            Refusal::RefundExceedsPayment => ProblemKind::RefundExceedsPayment,
            Refusal::PlanInUse => ProblemKind::PlanInUse,
            Refusal::SyncUnsupported => ProblemKind::SyncUnsupported,
        }
    }
}

/// An error response: a problem+json document of one [`ProblemKind`],
/// with a human-readable `detail` and, for some kinds, more members
/// (`field`, `quota`, `current_status`, the amounts of insufficient funds).
#[derive(Debug, Clone)]
pub struct Problem {
    pub kind: ProblemKind,
    pub detail: String,
    pub extra: Map<String, Value>,
}

impl Problem {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::InvalidField, detail).with("field", field)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::Unauthorized, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::Forbidden, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::NotFound, detail)
    }

    /// A per-account limit is reached (pending payments, API keys).
    pub fn quota(what: &str, detail: impl Into<String>) -> Self {
        Problem::new(ProblemKind::QuotaExceeded, detail).with("quota", what)
    }

    pub fn internal() -> Self {
        Problem::new(
            ProblemKind::Internal,
            "the server could not complete the request; it has been logged",
        )
    }

    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("type".into(), json!(self.kind.uri()));
        body.insert("title".into(), json!(self.kind.title()));
        body.insert("status".into(), json!(self.status().as_u16()));
        body.insert("detail".into(), json!(self.detail));
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, self.body().to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
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
                ProblemKind::CurrencyMismatch,
                format!("the amount is in {a} but the account is billed in {b}"),
            ),
            Error::Money(m @ MoneyError::UnknownCurrency(_)) => {
                Problem::invalid("currency", m.to_string())
            }
            Error::Money(m) => Problem::invalid("amount", m.to_string()),
            Error::Ledger(l) => Problem::new(ProblemKind::InvalidTransaction, l.to_string()),
            Error::InsufficientFunds {
                ref account_id,
                ref currency,
                balance,
                credit_limit,
                required,
            } => Problem::new(ProblemKind::InsufficientFunds, e.to_string())
                .with("account_id", account_id.clone())
                .with("currency", currency.clone())
                .with("balance", balance)
                .with("credit_limit", credit_limit)
                .with("required", required),
            Error::Conflict(msg) => Problem::new(ProblemKind::Conflict, msg),
            Error::IllegalTransition { status, .. } => {
                Problem::new(ProblemKind::IllegalTransition, e.to_string())
                    .with("current_status", status)
            }
            Error::Refused { refusal, message } => Problem::new(refusal.into(), message),
            Error::Quota { what, message } => Problem::quota(what, message),
            Error::AccountNotActive { .. } => {
                Problem::new(ProblemKind::AccountNotActive, e.to_string())
            }
            Error::IdempotencyMismatch => {
                Problem::new(ProblemKind::IdempotencyKeyReused, e.to_string())
            }
            Error::Forbidden(msg) => Problem::forbidden(msg),
            Error::Database(ref db) if is_transient(db) => {
                tracing::warn!(error = %db, "database busy");
                Problem::new(
                    ProblemKind::Unavailable,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_type_and_an_error_status() {
        let mut seen = std::collections::HashSet::new();
        for kind in ProblemKind::ALL {
            assert!(seen.insert(kind.uri()), "{} twice", kind.slug());
            assert!(
                kind.status().is_client_error() || kind.status().is_server_error(),
                "{}",
                kind.slug()
            );
        }
    }

    #[test]
    fn a_refusal_is_the_problem_kind_of_its_name() {
        for r in crate::error::Refusal::ALL {
            assert_eq!(ProblemKind::from(r).slug(), r.as_str());
        }
    }

    #[test]
    fn a_bad_amount_is_an_invalid_field_named_amount() {
        let p = Problem::from(Error::Money(MoneyError::OutOfRange));
        assert_eq!(p.kind, ProblemKind::InvalidField);
        assert_eq!(p.extra["field"], "amount");
        let p = Problem::from(Error::Money(MoneyError::UnknownCurrency("XXX".into())));
        assert_eq!(p.extra["field"], "currency");
    }
}
