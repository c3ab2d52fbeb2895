//! Money workflows: payments through gateways — started, confirmed,
//! refunded, reported by webhooks, reconciled, expired — and staff credits
//! and debits. The HTTP API, the CLI and automation all call these; they
//! take the store, the gateways and the clock's `now`, never HTTP types.
//!
//! A gateway is never called inside a database transaction. Each step
//! that waits on one is a state the reconciler finishes or undoes if the
//! process stops in the middle:
//! - a payment is stored `new` before its gateway is asked; a `new` payment
//!   older than `reconcile_after_secs` is handed to its gateway again (the
//!   payment id is the gateway's idempotency key), or failed if the
//!   gateway refuses it;
//! - a refund is stored `pending` with its debit before its gateway is
//!   asked; a pending refund is asked for again (the refund id is the
//!   idempotency key) until the gateway makes it — or refuses it for good,
//!   and the debit is given back.

mod refunds;

use refunds::resume_refunds;
pub use refunds::{RefundOutcome, RefundRequest, refund};

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::ledger::{TransactionDraft, TransactionKind};
use crate::money::{Currency, Money};
use crate::payments::{
    Applied, CallbackRequest, CallbackResponse, Checkout, Gateway, Gateways, Payment, PaymentEvent,
    PaymentRequest, PaymentStatus, PaymentsConfig, Reconciled, payment_draft,
};
use crate::services::module::ModuleError;
use crate::services::{ServiceStatus, SuspendReason};
use crate::store::payments::{self as repo, NewPayment};
use crate::store::{Conn, Store, accounts as accounts_repo, services as services_repo};

/// A payment asked for: a top-up, or the payment of an unpaid order.
pub struct NewPaymentRequest<'a> {
    pub account_id: &'a str,
    pub gateway: &'a str,
    /// Minor units, positive.
    pub amount: i64,
    /// ISO 4217; the account's currency.
    pub currency: &'a str,
    /// An unpaid order of the account the payment is for.
    pub service_id: Option<&'a str>,
    pub description: Option<&'a str>,
    pub return_url: Option<&'a str>,
    /// The caller's idempotency key (API key id and `Idempotency-Key`).
    pub request_key: &'a str,
    /// The request, hashed: the same key with another request is refused.
    pub request_hash: &'a str,
    pub created_by: &'a str,
}

/// What asking for a payment did.
pub struct CreatedOutcome {
    pub payment: Payment,
    /// The same request was made before: this is what it created.
    pub replayed: bool,
    /// The gateway failed (by kind); the payment is `failed`.
    pub gateway_failed: Option<&'static str>,
}

/// Asks a gateway for a payment. The payment is stored `new` first, then
/// the gateway is asked, then its answer is recorded: `pending` with the
/// checkout for the payer, or at once `paid` (an instant checkout).
pub async fn create_payment(
    store: &Store,
    gateways: &dyn Gateways,
    config: &PaymentsConfig,
    req: NewPaymentRequest<'_>,
    now: DateTime<Utc>,
) -> Result<CreatedOutcome> {
    {
        let mut r = store.reader().await?;
        if let Some(existing) = repo::find_by_request(r.conn(), req.request_key).await? {
            if existing.request_hash != req.request_hash {
                return Err(Error::IdempotencyMismatch);
            }
            return Ok(CreatedOutcome {
                payment: existing,
                replayed: true,
                gateway_failed: None,
            });
        }
    }
    if req.amount <= 0 {
        return Err(crate::accounts::FieldError::new("amount", "must be positive").into());
    }
    if req.amount > config.max_amount {
        return Err(crate::accounts::FieldError::new(
            "amount",
            format!("may be at most {} minor units", config.max_amount),
        )
        .into());
    }
    let currency = Currency::from_code(req.currency).map_err(|_| {
        crate::accounts::FieldError::new(
            "currency",
            format!("`{}` is not a currency", req.currency),
        )
    })?;
    let gateway = gateways.gateway(req.gateway).ok_or_else(|| {
        Error::from(crate::accounts::FieldError::new(
            "gateway",
            format!("no payment gateway instance named `{}`", req.gateway),
        ))
    })?;
    let description = req
        .description
        .map(str::to_owned)
        .unwrap_or_else(|| match req.service_id {
            Some(s) => format!("payment for order {s}"),
            None => "balance top-up".into(),
        });
    if description.is_empty() || description.chars().count() > 500 {
        return Err(
            crate::accounts::FieldError::new("description", "must be 1 to 500 characters").into(),
        );
    }
    let expires_at = crate::payments::expiry(config, gateways.payment_expiry(req.gateway), now);
    let (account, payment) = {
        let mut tx = store.begin().await?;
        let account = accounts_repo::get(tx.conn(), req.account_id).await?;
        if account.currency != currency {
            return Err(
                crate::money::MoneyError::CurrencyMismatch(currency, account.currency).into(),
            );
        }
        let quota = config.max_open_per_account;
        if repo::count_open(tx.conn(), &account.id).await? >= quota as i64 {
            return Err(Error::Quota {
                what: "open payments",
                message: format!(
                    "an account may have {quota} unpaid payments at once; pay or let one expire first"
                ),
            });
        }
        if let Some(sid) = req.service_id {
            let service = services_repo::get(tx.conn(), sid).await?;
            if service.account_id != account.id || service.status != ServiceStatus::Ordered {
                return Err(Error::Refused {
                    refusal: crate::error::Refusal::NotAnUnpaidOrder,
                    message: format!(
                        "service {sid} is not an unpaid order of account {}",
                        account.id
                    ),
                });
            }
        }
        let payment = repo::create(
            tx.conn(),
            NewPayment {
                account_id: &account.id,
                gateway: req.gateway,
                amount: Money::new(req.amount, currency)?,
                service_id: req.service_id,
                description: &description,
                request_key: req.request_key,
                request_hash: req.request_hash,
                created_by: req.created_by,
                expires_at,
                return_url: Some(req.return_url.unwrap_or(&config.return_url)),
            },
            now,
        )
        .await?;
        tx.commit().await?;
        (account, payment)
    };
    let failed = hand_to_gateway(
        store,
        gateway.as_ref(),
        &payment,
        &account.email,
        config,
        now,
    )
    .await?;
    let payment = {
        let mut r = store.reader().await?;
        repo::get(r.conn(), &payment.id).await?
    };
    metrics::counter!("bursar_payments_created_total", "gateway" => payment.gateway.clone(), "status" => payment.status.as_str())
        .increment(1);
    Ok(CreatedOutcome {
        payment,
        replayed: false,
        gateway_failed: failed,
    })
}

/// Asks the gateway to create a stored `new` payment and records what it
/// answered. A refusal fails the payment (returns its kind); a gateway
/// that cannot answer now leaves it `new` for the reconciler.
async fn hand_to_gateway(
    store: &Store,
    gateway: &dyn Gateway,
    payment: &Payment,
    account_email: &str,
    config: &PaymentsConfig,
    now: DateTime<Utc>,
) -> Result<Option<&'static str>> {
    let request = PaymentRequest {
        payment_id: payment.id.clone(),
        amount: payment.money(),
        description: payment.description.clone(),
        account_email: account_email.to_owned(),
        return_url: payment
            .return_url
            .clone()
            .unwrap_or_else(|| config.return_url.clone()),
    };
    let outcome = gateway.create_payment(request).await;
    let mut tx = store.begin().await?;
    let failure = match outcome {
        Ok(created) => {
            let checkout = serde_json::to_value(&created.checkout).unwrap_or_default();
            match repo::record_checkout(
                tx.conn(),
                &payment.id,
                &created.gateway_ref,
                &checkout,
                now,
            )
            .await
            {
                Err(Error::Database(e)) if crate::error::is_unique_violation(&e) => {
                    tracing::warn!(payment = %payment.id, gateway_ref = %created.gateway_ref, "the gateway reused another payment's reference");
                    Some("invalid_result")
                }
                Err(e) => return Err(e),
                Ok(()) => {
                    if let Checkout::Instant { status } = created.checkout {
                        let locked = repo::get_for_update(tx.conn(), &payment.id).await?;
                        match status {
                            PaymentStatus::Paid => {
                                mark_paid(
                                    tx.conn(),
                                    &locked,
                                    Some(locked.money()),
                                    &format!("gateway:{}", payment.gateway),
                                    now,
                                )
                                .await?;
                            }
                            PaymentStatus::Pending | PaymentStatus::New => {}
                            other => {
                                repo::set_status(tx.conn(), &payment.id, other, None, now).await?
                            }
                        }
                    }
                    None
                }
            }
        }
        // Not now: the payment stays `new`, and the reconciler asks again.
        Err(e) if e.retryable() => {
            tracing::warn!(payment = %payment.id, gateway = %payment.gateway, error = %e, "the gateway could not create a payment now");
            Some(e.kind())
        }
        Err(e) => {
            tracing::warn!(payment = %payment.id, gateway = %payment.gateway, error = %e, "the gateway refused to create a payment");
            Some(e.kind())
        }
    };
    if let Some(kind) = failure
        && !matches!(
            kind,
            "unavailable" | "timeout" | "internal" | "trap" | "out_of_memory"
        )
    {
        let message = format!("the gateway failed ({kind})");
        repo::set_status(
            tx.conn(),
            &payment.id,
            PaymentStatus::Failed,
            Some(&message),
            now,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(failure)
}

/// Staff confirm that an offline payment (a bank transfer) arrived: the
/// balance is credited once, and what the money covers opens or resumes.
/// Only a `new` or `pending` payment can be; a paid one is left as it is.
pub async fn confirm(
    store: &Store,
    payment_id: &str,
    reason: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Payment> {
    let mut tx = store.begin().await?;
    let payment = repo::get_for_update(tx.conn(), payment_id).await?;
    match payment.status {
        PaymentStatus::Paid => {}
        s if s.is_open() => {
            repo::record_event(
                tx.conn(),
                &payment.gateway,
                &format!("manual:{}", payment.id),
                Some(&payment.id),
                PaymentStatus::Paid,
                now,
            )
            .await?;
            mark_paid(tx.conn(), &payment, None, actor, now).await?;
            tracing::info!(payment = %payment.id, %actor, %reason, "payment marked paid by staff");
        }
        s => {
            return Err(Error::Conflict(format!(
                "payment {payment_id} is {}; only a new or pending payment can be marked paid",
                s.as_str()
            )));
        }
    }
    let payment = repo::get(tx.conn(), payment_id).await?;
    tx.commit().await?;
    Ok(payment)
}

/// Why a webhook was not handled.
#[derive(Debug)]
pub enum CallbackError {
    /// The plugin refused it or failed (its words are logged, never sent).
    Plugin(ModuleError),
    /// What it verified could not be recorded: the gateway delivers again.
    Store(Error),
}

/// A gateway's webhook: the plugin verifies it (and confirms with the
/// gateway), then every event it reports is applied exactly once. Returns
/// the plugin's answer for the gateway.
pub async fn handle_callback(
    store: &Store,
    instance: &str,
    gateway: &dyn Gateway,
    request: CallbackRequest,
    now: DateTime<Utc>,
) -> std::result::Result<CallbackResponse, CallbackError> {
    let result = gateway
        .handle_callback(request)
        .await
        .map_err(CallbackError::Plugin)?;
    let actor = format!("gateway:{instance}");
    for event in &result.events {
        match apply_event(store, instance, event, &actor, now).await {
            Ok(Applied::UnknownPayment) => {
                tracing::warn!(gateway = %instance, gateway_ref = %event.gateway_ref, "callback for an unknown payment")
            }
            Ok(applied) => {
                tracing::info!(gateway = %instance, gateway_ref = %event.gateway_ref, ?applied, "callback applied")
            }
            Err(Error::Refused {
                refusal: kind,
                message,
            }) => {
                tracing::error!(gateway = %instance, %kind, %message, "callback event not applied")
            }
            Err(e) => return Err(CallbackError::Store(e)),
        }
    }
    Ok(result.response)
}

/// What a staff member moves onto or off a balance, and why.
pub struct Adjustment<'a> {
    pub account_id: &'a str,
    /// [`TransactionKind::Credit`] or [`TransactionKind::Debit`].
    pub kind: TransactionKind,
    pub amount: Money,
    pub reason: &'a str,
    pub ledger_key: String,
    pub actor: &'a str,
}

/// A staff credit (money onto a balance) or debit (off it; never below
/// minus the credit limit), with its reason on the customer's statement;
/// a credit then opens the unpaid orders it covers.
pub async fn adjust(
    mut c: Conn<'_>,
    adjustment: Adjustment<'_>,
    now: DateTime<Utc>,
) -> Result<crate::store::ledger::LedgerTransaction> {
    let Adjustment {
        account_id,
        kind,
        amount,
        reason,
        ledger_key,
        actor,
    } = adjustment;
    let account = accounts_repo::get(c.reborrow(), account_id).await?;
    if account.status != crate::accounts::AccountStatus::Active {
        return Err(Error::AccountNotActive {
            account_id: account.id,
            status: account.status.as_str(),
        });
    }
    if account.currency != amount.currency() {
        return Err(crate::money::MoneyError::CurrencyMismatch(
            amount.currency(),
            account.currency,
        )
        .into());
    }
    let draft = TransactionDraft::adjustment(account_id, kind, amount, reason, ledger_key, actor);
    let transaction = crate::store::ledger::post(c.reborrow(), &draft, now)
        .await?
        .into_transaction();
    metrics::counter!("bursar_ledger_transactions_total", "kind" => kind.as_str()).increment(1);
    if kind == TransactionKind::Credit {
        // Money arrived: the unpaid orders it now covers open.
        crate::lifecycle::settle_unpaid(c, account_id, actor, now).await?;
    }
    Ok(transaction)
}

/// Payments still `new` past `reconcile_after_secs`: the process stopped
/// between storing them and recording their gateway's answer. Each is
/// handed to its gateway again (the payment id is its idempotency key).
async fn resume_creations(
    store: &Store,
    gateways: &dyn Gateways,
    config: &PaymentsConfig,
    now: DateTime<Utc>,
    report: &mut Reconciled,
) -> Result<()> {
    let cutoff = now - chrono::Duration::seconds(config.reconcile_after_secs as i64);
    let stuck = {
        let mut r = store.reader().await?;
        repo::new_before(r.conn(), cutoff, config.reconcile_batch).await?
    };
    for p in stuck {
        report.checked += 1;
        let Some(gateway) = gateways.gateway(&p.gateway) else {
            report.failed += 1;
            continue;
        };
        let email = {
            let mut r = store.reader().await?;
            accounts_repo::get(r.conn(), &p.account_id).await?.email
        };
        match hand_to_gateway(store, gateway.as_ref(), &p, &email, config, now).await? {
            None => report.changed += 1,
            Some(_) => report.failed += 1,
        }
    }
    Ok(())
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
        return Err(Error::Refused {
            refusal: crate::error::Refusal::AmountMismatch,
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
        let receipt = crate::charges::Transfer {
            kind: crate::invoices::InvoiceKind::Receipt,
            account_id: &payment.account_id,
            amount: payment.money(),
            description: &description,
            transaction_id: &txn.id,
            payment_id: &payment.id,
        };
        crate::charges::document_transfer(c.reborrow(), receipt, now).await?;
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
pub(crate) async fn notify(
    c: Conn<'_>,
    event_type: &str,
    p: &Payment,
    now: DateTime<Utc>,
) -> Result<()> {
    notify_with(c, event_type, p, serde_json::json!({}), now).await
}

/// [`notify`] with more fields (a refund's id and amount).
pub(crate) async fn notify_with(
    c: Conn<'_>,
    event_type: &str,
    p: &Payment,
    extra: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut data = serde_json::json!({
        "payment_id": p.id,
        "account_id": p.account_id,
        "gateway": p.gateway,
        "amount": p.amount,
        "currency": p.currency.code(),
        "service_id": p.service_id,
    });
    if let (Some(data), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
        data.extend(extra.clone());
    }
    crate::notify::record(c, event_type, data, now).await
}

/// Services of the account suspended for non-payment (never for `admin` or
/// `abuse`) that the balance can now renew (those renewing automatically:
/// see `lifecycle::renew`): renewed for one period and
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

/// Applies one event a gateway confirmed (a verified callback or a
/// `query`), exactly once.
pub async fn apply_event(
    store: &Store,
    gateway: &str,
    event: &PaymentEvent,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Applied> {
    let mut tx = store.begin().await?;
    let Some(found) = repo::find_by_gateway_ref(tx.conn(), gateway, &event.gateway_ref).await?
    else {
        return Ok(Applied::UnknownPayment);
    };
    let status = event.status;
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
        PaymentStatus::Paid => mark_paid(tx.conn(), &payment, event.amount, actor, now).await?,
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

/// One reconciliation pass: asks every gateway about its pending payments
/// older than `reconcile_after_secs` — up to `reconcile_batch` each, the
/// least recently asked first, so no gateway and no payment waits behind
/// others for ever — and applies what it says; then expires open payments
/// whose time ran out (asking the gateway one last time first).
pub async fn reconcile(
    store: &Store,
    gateways: &dyn Gateways,
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
    resume_creations(store, gateways, config, now, &mut report).await?;
    resume_refunds(store, gateways, config, now, &mut report).await?;
    expire(store, gateways, now, &mut report).await?;
    metrics::counter!("bursar_payments_reconciled_total").increment(report.changed as u64);
    Ok(report)
}

/// Asks the gateway about a pending payment and applies the answer;
/// returns the new status when it changed.
async fn ask(
    store: &Store,
    gateways: &dyn Gateways,
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
    let status = event.status;
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
    gateways: &dyn Gateways,
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
