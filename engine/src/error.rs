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

    /// A request the domain refuses for a reason clients tell apart.
    #[error("{message}")]
    Refused { refusal: Refusal, message: String },

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

/// Why the domain refused a well-formed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Archived plans are not sold.
    PlanArchived,
    /// The plan does not offer the period asked for.
    InvalidPeriod,
    /// The service's plan does not list the plan asked for.
    PlanChangeNotAllowed,
    /// Only an unpaid order can be paid for like this.
    NotAnUnpaidOrder,
    /// A gateway's amount differs from the payment's.
    AmountMismatch,
    /// More refunded than is left of the payment.
    RefundExceedsPayment,
    /// Services on the plan would silently change module or product type.
    PlanInUse,
    /// The service's module does not check its services' state.
    SyncUnsupported,
}

impl Refusal {
    pub const ALL: [Refusal; 8] = [
        Refusal::PlanArchived,
        Refusal::InvalidPeriod,
        Refusal::PlanChangeNotAllowed,
        Refusal::NotAnUnpaidOrder,
        Refusal::AmountMismatch,
        Refusal::RefundExceedsPayment,
        Refusal::PlanInUse,
        Refusal::SyncUnsupported,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PlanArchived => "plan-archived",
            Refusal::InvalidPeriod => "invalid-period",
            Refusal::PlanChangeNotAllowed => "plan-change-not-allowed",
            Refusal::NotAnUnpaidOrder => "not-an-unpaid-order",
            Refusal::AmountMismatch => "amount-mismatch",
            Refusal::RefundExceedsPayment => "refund-exceeds-payment",
            Refusal::PlanInUse => "plan-in-use",
            Refusal::SyncUnsupported => "sync-unsupported",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
