//! The engine's error type: what went wrong in domain terms. The HTTP layer
//! maps each variant to a status and a problem+json body (`api::error`).

use crate::accounts::FieldError;
use crate::ledger::LedgerError;
use crate::money::MoneyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} `{id}` does not exist")]
    NotFound { what: &'static str, id: String },

    #[error(transparent)]
    Field(#[from] FieldError),

    #[error(transparent)]
    Money(#[from] MoneyError),

    #[error(transparent)]
    Ledger(#[from] LedgerError),

    #[error(
        "insufficient funds: balance {balance} plus credit limit {credit_limit} does not cover {required} (minor units of {currency})"
    )]
    InsufficientFunds {
        account_id: String,
        currency: String,
        balance: i64,
        credit_limit: i64,
        required: i64,
    },

    #[error("{0}")]
    Conflict(String),

    #[error("service {service_id} is {status}: `{action}` is not possible there")]
    IllegalTransition {
        service_id: String,
        status: &'static str,
        action: &'static str,
    },

    #[error("{message}")]
    Unprocessable { kind: &'static str, message: String },

    /// The account is blocked or closed: it orders, pays and is credited
    /// no more.
    #[error("account {account_id} is {status}")]
    AccountNotActive {
        account_id: String,
        status: &'static str,
    },

    /// A per-account limit is reached.
    #[error("{message}")]
    Quota { what: &'static str, message: String },

    #[error("this idempotency key was already used with a different request")]
    IdempotencyMismatch,

    #[error("{0}")]
    Forbidden(String),

    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),

    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Error {
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Error::NotFound {
            what,
            id: id.into(),
        }
    }

    /// True when the database refused a row because of a unique constraint.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, Error::Database(e) if is_unique_violation(e))
    }
}

pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
