//! Refunds: the balance is debited and the refund stored `pending` in one
//! transaction, then the gateway is asked (the refund id is its
//! idempotency key). Made → `succeeded`; refused for good → the debit is
//! given back and the refund `failed`; no answer now → it stays `pending`
//! and the reconciler asks again.

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::money::Money;
use crate::payments::{
    Gateway, Gateways, Payment, PaymentStatus, PaymentsConfig, Reconciled, Refund, RefundStatus,
    refund_draft, refund_reversal_draft,
};
use crate::store::Conn;
use crate::store::Store;
use crate::store::payments::{self as repo, NewRefund};

/// A refund asked for.
pub struct RefundRequest<'a> {
    /// Minor units; at most what is left of the payment.
    pub amount: i64,
    pub reason: &'a str,
    /// Let the balance go below minus the credit limit (staff decision).
    pub force: bool,
    /// The caller's idempotency key, if any.
    pub request_key: Option<&'a str>,
}

/// What asking for a refund did.
pub struct RefundOutcome {
    pub refund: Refund,
    pub replayed: bool,
    /// The gateway failed (by kind): `failed` (money back) when it refused,
    /// still `pending` when it could not answer now.
    pub gateway_failed: Option<&'static str>,
}

/// Refunds a paid payment, in part or whole.
pub async fn refund(
    store: &Store,
    gateways: &dyn Gateways,
    payment_id: &str,
    req: RefundRequest<'_>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<RefundOutcome> {
    let reason = crate::accounts::check_text("reason", req.reason, 500)?;
    let reason = reason.as_str();
    let (payment, refund) = {
        let mut tx = store.begin().await?;
        let payment = repo::get_for_update(tx.conn(), payment_id).await?;
        if let Some(k) = req.request_key
            && let Some(existing) =
                repo::find_refund_by_request(tx.conn(), k, payment.currency).await?
        {
            if existing.payment_id != payment_id || existing.amount != req.amount {
                return Err(Error::IdempotencyMismatch);
            }
            return Ok(RefundOutcome {
                refund: existing,
                replayed: true,
                gateway_failed: None,
            });
        }
        if payment.status != PaymentStatus::Paid {
            return Err(Error::Conflict(format!(
                "payment {payment_id} is {}; only paid payments are refunded",
                payment.status.as_str()
            )));
        }
        if req.amount <= 0 || req.amount > payment.refundable() {
            return Err(Error::Refused {
                refusal: crate::error::Refusal::RefundExceedsPayment,
                message: format!(
                    "a refund of payment {payment_id} must be 1 to {} minor units",
                    payment.refundable()
                ),
            });
        }
        let refund = repo::create_refund(
            tx.conn(),
            &payment,
            NewRefund {
                amount: Money::new(req.amount, payment.currency)?,
                reason,
                forced: req.force,
                request_key: req.request_key,
                created_by: actor,
            },
            now,
        )
        .await?;
        repo::add_refunded(tx.conn(), payment_id, req.amount, now).await?;
        post_refund(tx.conn(), &payment, &refund, false, actor, now).await?;
        tx.commit().await?;
        (payment, refund)
    };
    let failed = match gateways.gateway(&payment.gateway) {
        Some(gateway) => ask(store, gateway.as_ref(), &payment, &refund, actor, now).await?,
        None => {
            tracing::warn!(payment = %payment.id, gateway = %payment.gateway, "the payment's gateway is not configured; the refund waits");
            Some("unknown_module")
        }
    };
    let refund = {
        let mut r = store.reader().await?;
        repo::get_refund(r.conn(), &refund.id, payment.currency).await?
    };
    Ok(RefundOutcome {
        refund,
        replayed: false,
        gateway_failed: failed,
    })
}

/// Asks the gateway for a stored pending refund and records the answer.
/// Returns the kind of failure, if it failed.
async fn ask(
    store: &Store,
    gateway: &dyn Gateway,
    payment: &Payment,
    refund: &Refund,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Option<&'static str>> {
    let outcome = gateway
        .refund(
            payment.gateway_ref.as_deref().unwrap_or_default(),
            refund.money(),
            &refund.id,
        )
        .await;
    let mut tx = store.begin().await?;
    let failed = match &outcome {
        Ok(reference) => {
            repo::finish_refund(
                tx.conn(),
                &refund.id,
                RefundStatus::Succeeded,
                Some(reference),
                None,
                now,
            )
            .await?;
            None
        }
        Err(e) if e.retryable() => {
            tracing::warn!(refund = %refund.id, error = %e, "the gateway could not make the refund now; it is asked again later");
            repo::touch_refund(tx.conn(), &refund.id, now).await?;
            Some(e.kind())
        }
        Err(e) => {
            tracing::warn!(refund = %refund.id, error = %e, "the gateway refused the refund; the money goes back");
            post_refund(tx.conn(), payment, refund, true, actor, now).await?;
            repo::add_refunded(tx.conn(), &payment.id, -refund.amount, now).await?;
            let message = format!("the gateway refused it ({})", e.kind());
            repo::finish_refund(
                tx.conn(),
                &refund.id,
                RefundStatus::Failed,
                None,
                Some(&message),
                now,
            )
            .await?;
            Some(e.kind())
        }
    };
    tx.commit().await?;
    Ok(failed)
}

/// Refunds still `pending` past `reconcile_after_secs` (the process
/// stopped, or the gateway could not answer): asked for again.
pub(super) async fn resume_refunds(
    store: &Store,
    gateways: &dyn Gateways,
    config: &PaymentsConfig,
    now: DateTime<Utc>,
    report: &mut Reconciled,
) -> Result<()> {
    let cutoff = now - chrono::Duration::seconds(config.reconcile_after_secs as i64);
    let stuck = {
        let mut r = store.reader().await?;
        repo::pending_refunds_before(r.conn(), cutoff, config.reconcile_batch).await?
    };
    for (payment, refund) in stuck {
        report.checked += 1;
        let Some(gateway) = gateways.gateway(&payment.gateway) else {
            report.failed += 1;
            continue;
        };
        match ask(
            store,
            gateway.as_ref(),
            &payment,
            &refund,
            "system:reconcile",
            now,
        )
        .await?
        {
            None => report.changed += 1,
            Some(_) => report.failed += 1,
        }
    }
    Ok(())
}

/// Posts a refund's ledger transaction (or, with `reversal`, gives it back
/// after the gateway refused) with its document: a credit note for the
/// refund, a receipt for the money returned.
pub(crate) async fn post_refund(
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
        let refund_fields =
            serde_json::json!({"refund_id": refund.id, "refund_amount": refund.amount});
        super::notify_with(c.reborrow(), event, payment, refund_fields, now).await?;
        let document = crate::charges::Transfer {
            kind,
            account_id: &payment.account_id,
            amount: refund.money(),
            description: &text,
            transaction_id: &txn.id,
            payment_id: &payment.id,
        };
        crate::charges::document_transfer(c, document, now).await?;
    }
    Ok(())
}
