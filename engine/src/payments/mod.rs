//! Payments through gateway plugins.
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

use crate::error::{Error, Result};
use crate::ledger::{
    LedgerAccountId, LedgerAccountKind, Posting, TransactionDraft, TransactionKind,
};
use crate::money::{Currency, Money};
use crate::plugins::gateway::wit;
use crate::services::{ServiceStatus, SuspendReason};
use crate::store::{Conn, Store, payments as repo, services as services_repo};

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

impl From<wit::PaymentStatus> for PaymentStatus {
    fn from(s: wit::PaymentStatus) -> Self {
        match s {
            wit::PaymentStatus::Pending => PaymentStatus::Pending,
            wit::PaymentStatus::Paid => PaymentStatus::Paid,
            wit::PaymentStatus::Failed => PaymentStatus::Failed,
            wit::PaymentStatus::Canceled => PaymentStatus::Canceled,
            wit::PaymentStatus::Expired => PaymentStatus::Expired,
        }
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

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Payment {
    pub id: String,
    pub account_id: String,
    /// The gateway plugin instance.
    pub gateway: String,
    /// Minor units of `currency`.
    pub amount: i64,
    #[schema(value_type = String)]
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

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Refund {
    pub id: String,
    pub payment_id: String,
    pub amount: i64,
    #[schema(value_type = String)]
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

impl Checkout {
    /// The checkout a gateway's `create-payment` answer describes.
    pub fn from_created(created: &wit::CreatedPayment) -> Checkout {
        match (&created.checkout, &created.instructions) {
            (wit::Checkout::Redirect(url), _) => Checkout::Redirect { url: url.clone() },
            (wit::Checkout::Form(html), _) => Checkout::Form { html: html.clone() },
            (wit::Checkout::Instant(wit::PaymentStatus::Pending), Some(text)) => {
                Checkout::Instructions { text: text.clone() }
            }
            (wit::Checkout::Instant(s), _) => Checkout::Instant {
                status: (*s).into(),
            },
        }
    }
}

/// The ledger transaction of a paid payment: gateway clearing → balance.
fn payment_draft(p: &Payment, actor: &str) -> TransactionDraft {
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

/// Marks a locked payment paid: the ledger transaction (once, keyed by the
/// payment id), the status, then the orders and services the money now
/// covers. `confirmed` is the amount the gateway reported, if it did: a
/// payment is never credited with an amount the gateway did not confirm.
pub async fn mark_paid(
    mut c: Conn<'_>,
    payment: &Payment,
    confirmed: Option<Money>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    if payment.status == PaymentStatus::Paid {
        return Ok(false);
    }
    if let Some(amount) = confirmed
        && amount != payment.money()
    {
        return Err(Error::Unprocessable {
            kind: "amount-mismatch",
            message: format!(
                "the gateway confirmed {} {} for payment {}, which is for {} {}",
                amount.minor(),
                amount.currency().code(),
                payment.id,
                payment.amount,
                payment.currency.code()
            ),
        });
    }
    let posted =
        crate::store::ledger::post(c.reborrow(), &payment_draft(payment, actor), now).await?;
    if let crate::store::ledger::Posted::New(txn) = &posted {
        let description = format!(
            "{} ({} via {})",
            payment.description, payment.id, payment.gateway
        );
        let receipt = crate::invoices::Transfer {
            kind: crate::invoices::InvoiceKind::Receipt,
            account_id: &payment.account_id,
            amount: payment.money(),
            description: &description,
            transaction_id: &txn.id,
            payment_id: &payment.id,
        };
        crate::invoices::document_transfer(c.reborrow(), receipt, now).await?;
    }
    repo::set_status(c.reborrow(), &payment.id, PaymentStatus::Paid, None, now).await?;
    notify(c.reborrow(), "payment.paid", payment, now).await?;
    metrics::counter!("bursar_payments_paid_total", "gateway" => payment.gateway.clone())
        .increment(1);
    crate::lifecycle::settle_unpaid(c.reborrow(), &payment.account_id, actor, now).await?;
    renew_suspended(c, &payment.account_id, actor, now).await?;
    Ok(true)
}

/// Tells the webhook endpoints about a payment.
async fn notify(c: Conn<'_>, event_type: &str, p: &Payment, now: DateTime<Utc>) -> Result<()> {
    crate::notify::record(
        c,
        event_type,
        serde_json::json!({
            "payment_id": p.id,
            "account_id": p.account_id,
            "gateway": p.gateway,
            "amount": p.amount,
            "currency": p.currency.code(),
            "service_id": p.service_id,
        }),
        now,
    )
    .await
}

/// Services of the account suspended for non-payment (never for `admin` or
/// `abuse`) that the balance can now renew: renewed for one period and
/// resumed. One renewal per (service, paid period): the ledger key says so.
pub async fn renew_suspended(
    mut c: Conn<'_>,
    account_id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    let mut renewed = Vec::new();
    for id in services_repo::suspended_for_nonpayment(c.reborrow(), account_id).await? {
        let service = services_repo::get(c.reborrow(), &id).await?;
        if service.status != ServiceStatus::Suspended
            || service.suspend_reason != Some(SuspendReason::NonPayment)
        {
            continue;
        }
        // Not enough money for this one: it stays suspended.
        if crate::lifecycle::renew(c.reborrow(), &service, actor, now)
            .await?
            .is_some()
        {
            renewed.push(id);
        }
    }
    Ok(renewed)
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

/// Applies one event a gateway confirmed (a verified callback or a
/// `query`), exactly once.
pub async fn apply_event(
    store: &Store,
    gateway: &str,
    event: &wit::PaymentEvent,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Applied> {
    let mut tx = store.begin().await?;
    let Some(found) = repo::find_by_gateway_ref(tx.conn(), gateway, &event.gateway_ref).await?
    else {
        return Ok(Applied::UnknownPayment);
    };
    let status: PaymentStatus = event.status.into();
    if !repo::record_event(
        tx.conn(),
        gateway,
        &event.event_id,
        Some(&found.id),
        status,
        now,
    )
    .await?
    {
        return Ok(Applied::Unchanged);
    }
    let payment = repo::get_for_update(tx.conn(), &found.id).await?;
    let changed = match status {
        PaymentStatus::Paid => {
            let confirmed = event
                .amount
                .as_ref()
                .map(|m| crate::plugins::validate::gateway::money("event amount", m))
                .transpose()
                .map_err(|e| Error::Unprocessable {
                    kind: "invalid-gateway-event",
                    message: e.to_string(),
                })?;
            mark_paid(tx.conn(), &payment, confirmed, actor, now).await?
        }
        PaymentStatus::Failed | PaymentStatus::Canceled | PaymentStatus::Expired
            if payment.status.is_open() =>
        {
            repo::set_status(tx.conn(), &payment.id, status, None, now).await?;
            notify(
                tx.conn(),
                &format!("payment.{}", status.as_str()),
                &payment,
                now,
            )
            .await?;
            true
        }
        _ => false,
    };
    tx.commit().await?;
    Ok(if changed {
        Applied::Changed
    } else {
        Applied::Unchanged
    })
}

/// Posts a refund's ledger transaction (or, with `reversal`, gives it back
/// after the gateway refused) with its document: a credit note for the
/// refund, a receipt for the money returned.
pub async fn post_refund(
    mut c: Conn<'_>,
    payment: &Payment,
    refund: &Refund,
    reversal: bool,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let (draft, kind, text) = if reversal {
        (
            refund_reversal_draft(payment, refund, actor),
            crate::invoices::InvoiceKind::Receipt,
            format!(
                "refund {} not made by the gateway; money returned",
                refund.id
            ),
        )
    } else {
        (
            refund_draft(payment, refund, actor),
            crate::invoices::InvoiceKind::CreditNote,
            format!("refund of payment {}: {}", payment.id, refund.reason),
        )
    };
    let posted = crate::store::ledger::post(c.reborrow(), &draft, now).await?;
    if let crate::store::ledger::Posted::New(txn) = &posted {
        let event = if reversal {
            "payment.refund_failed"
        } else {
            "payment.refunded"
        };
        notify(c.reborrow(), event, payment, now).await?;
        let document = crate::invoices::Transfer {
            kind,
            account_id: &payment.account_id,
            amount: refund.money(),
            description: &text,
            transaction_id: &txn.id,
            payment_id: &payment.id,
        };
        crate::invoices::document_transfer(c, document, now).await?;
    }
    Ok(())
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

/// When a payment through `gateway` created at `now` expires.
pub fn expiry(
    config: &PaymentsConfig,
    gateways: &crate::plugins::instances::PluginRegistry,
    gateway: &str,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let secs = gateways
        .payment_expiry(gateway)
        .unwrap_or(config.expire_after_secs);
    now + chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 2_000_000))
}

/// One reconciliation pass: asks every gateway about its pending payments
/// older than `reconcile_after_secs` — up to `reconcile_batch` each, the
/// least recently asked first, so no gateway and no payment waits behind
/// others for ever — and applies what it says; then expires open payments
/// whose time ran out (asking the gateway one last time first).
pub async fn reconcile(
    store: &Store,
    gateways: &crate::plugins::instances::PluginRegistry,
    config: &PaymentsConfig,
    now: DateTime<Utc>,
) -> Result<Reconciled> {
    let cutoff = now - chrono::Duration::seconds(config.reconcile_after_secs as i64);
    let mut report = Reconciled::default();
    for name in gateways.gateway_names() {
        let pending = {
            let mut r = store.reader().await?;
            repo::pending_before(r.conn(), &name, cutoff, config.reconcile_batch).await?
        };
        for p in pending {
            report.checked += 1;
            match ask(store, gateways, &p, now).await {
                Ok(Some(status)) => {
                    report.changed += 1;
                    *report
                        .by_status
                        .entry(status.as_str().to_owned())
                        .or_default() += 1;
                }
                Ok(None) => {}
                Err(e) => {
                    report.failed += 1;
                    tracing::warn!(payment = %p.id, gateway = %p.gateway, error = %e, "reconciliation failed");
                }
            }
        }
    }
    expire(store, gateways, now, &mut report).await?;
    metrics::counter!("bursar_payments_reconciled_total").increment(report.changed as u64);
    Ok(report)
}

/// Asks the gateway about a pending payment and applies the answer;
/// returns the new status when it changed.
async fn ask(
    store: &Store,
    gateways: &crate::plugins::instances::PluginRegistry,
    p: &Payment,
    now: DateTime<Utc>,
) -> Result<Option<PaymentStatus>> {
    {
        let mut tx = store.begin().await?;
        repo::mark_checked(tx.conn(), &p.id, now).await?;
        tx.commit().await?;
    }
    let (Some(gateway), Some(reference)) = (gateways.gateway(&p.gateway), &p.gateway_ref) else {
        return Err(Error::Conflict(format!(
            "payment {} has no gateway `{}` or no reference to ask about",
            p.id, p.gateway
        )));
    };
    let mut event = gateway
        .query(reference)
        .await
        .map_err(|e| Error::Conflict(format!("the gateway could not say: {e}")))?;
    // The same answer twice applies once; a new state is new.
    let status: PaymentStatus = event.status.into();
    event.event_id = format!("query:{reference}:{}", status.as_str());
    match apply_event(store, &p.gateway, &event, "system:reconcile", now).await? {
        Applied::Changed => Ok(Some(status)),
        _ => Ok(None),
    }
}

/// Expires open payments whose time ran out. A pending one is asked about
/// one last time: money that arrived still lands. One the gateway cannot
/// answer for stays until it can.
async fn expire(
    store: &Store,
    gateways: &crate::plugins::instances::PluginRegistry,
    now: DateTime<Utc>,
    report: &mut Reconciled,
) -> Result<()> {
    let due = {
        let mut r = store.reader().await?;
        repo::expired(r.conn(), now, 500).await?
    };
    for p in due {
        if p.status == PaymentStatus::Pending && p.gateway_ref.is_some() {
            match ask(store, gateways, &p, now).await {
                Ok(Some(status)) if !status.is_open() => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(payment = %p.id, error = %e, "not expiring a payment its gateway cannot answer for");
                    continue;
                }
            }
        }
        let mut tx = store.begin().await?;
        let locked = repo::get_for_update(tx.conn(), &p.id).await?;
        if locked.status.is_open() {
            repo::set_status(tx.conn(), &p.id, PaymentStatus::Expired, None, now).await?;
            report.expired += 1;
        }
        tx.commit().await?;
    }
    Ok(())
}
