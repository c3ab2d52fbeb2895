//! Payments through gateway plugins: their states, the ledger transactions
//! they post, and the gateway port (`gateway`). Free of I/O; the
//! workflows are `billing`.
//!
//! A payment is created `new`, handed to its gateway (`create-payment`),
//! and becomes `pending` with the gateway's reference and a checkout for
//! the payer. Money lands only on what the gateway confirmed — a verified
//! callback, a `query`, an instant checkout, or staff marking an offline
//! payment paid — and exactly once: the gateway event id is recorded once,
//! the payment row is locked, and the ledger transaction's idempotency key
//! is the payment id. Then unpaid orders the balance covers open, and
//! services suspended for non-payment are renewed and resumed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ledger::{
    LedgerAccountId, LedgerAccountKind, Posting, TransactionDraft, TransactionKind,
};
use crate::money::{Currency, Money};

pub mod gateway;

pub use gateway::{
    CallbackRequest, CallbackResponse, CallbackResult, CreatedPayment, Gateway, Gateways,
    PaymentEvent, PaymentRequest,
};

/// Where a payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    New,
    Pending,
    Paid,
    Failed,
    Canceled,
    Expired,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::New => "new",
            PaymentStatus::Pending => "pending",
            PaymentStatus::Paid => "paid",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Canceled => "canceled",
            PaymentStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "new" => PaymentStatus::New,
            "pending" => PaymentStatus::Pending,
            "paid" => PaymentStatus::Paid,
            "failed" => PaymentStatus::Failed,
            "canceled" => PaymentStatus::Canceled,
            "expired" => PaymentStatus::Expired,
            _ => return None,
        })
    }

    /// Still waiting for the payer or the gateway.
    pub fn is_open(self) -> bool {
        matches!(self, PaymentStatus::New | PaymentStatus::Pending)
    }
}

/// What the payer is shown to pay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Checkout {
    /// Send the payer here.
    Redirect { url: String },
    /// Show this HTML form (it posts to the gateway).
    Form { html: String },
    /// Settled at once, with this outcome.
    Instant { status: PaymentStatus },
    /// Follow these instructions (a bank transfer with a reference).
    Instructions { text: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct Payment {
    pub id: String,
    pub account_id: String,
    /// The gateway plugin instance.
    pub gateway: String,
    /// Minor units of `currency`.
    pub amount: i64,
    pub currency: Currency,
    pub status: PaymentStatus,
    pub gateway_ref: Option<String>,
    /// The unpaid order this payment is for, if any.
    pub service_id: Option<String>,
    pub description: String,
    /// Minor units given back so far.
    pub refunded_amount: i64,
    pub checkout: Option<Checkout>,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub request_hash: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    /// Left open until then, it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Where the payer returns after a redirect checkout.
    #[serde(skip)]
    pub return_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    Succeeded,
    Failed,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => RefundStatus::Pending,
            "succeeded" => RefundStatus::Succeeded,
            "failed" => RefundStatus::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Refund {
    pub id: String,
    pub payment_id: String,
    pub amount: i64,
    pub currency: Currency,
    pub status: RefundStatus,
    pub gateway_ref: Option<String>,
    pub reason: String,
    /// Staff let the balance go below minus the credit limit.
    pub forced: bool,
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Payment {
    pub fn money(&self) -> Money {
        Money::new(self.amount, self.currency).expect("stored amounts are in range")
    }

    /// What may still be refunded.
    pub fn refundable(&self) -> i64 {
        if self.status == PaymentStatus::Paid {
            self.amount - self.refunded_amount
        } else {
            0
        }
    }
}

impl Refund {
    pub fn money(&self) -> Money {
        Money::new(self.amount, self.currency).expect("stored amounts are in range")
    }
}

/// The ledger transaction of a paid payment: gateway clearing → balance.
pub fn payment_draft(p: &Payment, actor: &str) -> TransactionDraft {
    TransactionDraft {
        idempotency_key: format!("payment:{}", p.id),
        kind: TransactionKind::Payment,
        description: format!("payment {} via {}", p.id, p.gateway),
        account_id: Some(p.account_id.clone()),
        created_by: actor.to_owned(),
        postings: vec![
            Posting::new(LedgerAccountId::customer(&p.account_id), p.money()),
            Posting::new(
                LedgerAccountId::system(LedgerAccountKind::GatewayClearing, p.currency),
                p.money().negate(),
            ),
        ],
    }
}

/// The ledger transaction of a refund: balance → gateway clearing. With
/// `force`, the balance may go below minus the credit limit.
pub fn refund_draft(p: &Payment, r: &Refund, actor: &str) -> TransactionDraft {
    let mut customer = Posting::new(LedgerAccountId::customer(&p.account_id), r.money().negate());
    customer.enforce_limit = !r.forced;
    TransactionDraft {
        idempotency_key: format!("refund:{}", r.id),
        kind: TransactionKind::Refund,
        description: format!("refund {} of payment {}: {}", r.id, p.id, r.reason),
        account_id: Some(p.account_id.clone()),
        created_by: actor.to_owned(),
        postings: vec![
            customer,
            Posting::new(
                LedgerAccountId::system(LedgerAccountKind::GatewayClearing, p.currency),
                r.money(),
            ),
        ],
    }
}

/// The reversal of a refund the gateway refused: the money comes back.
pub fn refund_reversal_draft(p: &Payment, r: &Refund, actor: &str) -> TransactionDraft {
    let mut draft = refund_draft(p, r, actor);
    draft.idempotency_key = format!("refund-failed:{}", r.id);
    draft.description = format!("refund {} failed at the gateway; money returned", r.id);
    for posting in &mut draft.postings {
        posting.amount = posting.amount.negate();
        posting.enforce_limit = false;
    }
    draft
}

/// What applying a gateway event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The payment moved (paid, failed, canceled, expired).
    Changed,
    /// Nothing new: a repeated event, or a state the payment already had.
    Unchanged,
    /// No payment has this gateway reference.
    UnknownPayment,
}

/// Settings of `[payments]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsConfig {
    /// The largest single payment, in minor units.
    pub max_amount: i64,
    /// Pending payments older than this are asked about (`query`).
    pub reconcile_after_secs: u64,
    /// How often `serve` reconciles.
    pub reconcile_interval_secs: u64,
    /// Payments asked about per gateway in one pass; every gateway gets
    /// its share, and within a gateway the least recently asked go first.
    pub reconcile_batch: usize,
    /// How long a payment may stay open (unpaid) before it expires; a
    /// gateway instance may say otherwise (`payment_expire_after_secs`).
    pub expire_after_secs: u64,
    /// Open (unpaid) payments one account may have at once.
    pub max_open_per_account: usize,
    /// Where a payer returns after paying, when the request names none.
    pub return_url: String,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        PaymentsConfig {
            max_amount: 10_000_000,
            reconcile_after_secs: 900,
            reconcile_interval_secs: 300,
            reconcile_batch: 50,
            expire_after_secs: 7 * 24 * 3600,
            max_open_per_account: 10,
            return_url: "http://127.0.0.1:8080/".into(),
        }
    }
}

/// What one reconciliation pass did.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Reconciled {
    pub checked: usize,
    pub changed: usize,
    pub failed: usize,
    /// Open payments whose time ran out and that expired.
    pub expired: usize,
    /// Changed payments by their new status.
    pub by_status: std::collections::BTreeMap<String, usize>,
}

/// When a payment through a gateway expires, created at `now`: after the
/// gateway's own `payment_expire_after_secs` when it has one, else
/// `[payments] expire_after_secs`.
pub fn expiry(
    config: &PaymentsConfig,
    gateway_secs: Option<u64>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let secs = gateway_secs.unwrap_or(config.expire_after_secs);
    now + chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2_000_000))
}
