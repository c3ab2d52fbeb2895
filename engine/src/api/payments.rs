//! `/api/v1/payments` and `/api/v1/gateways/{instance}/callback`.
//!
//! Gateway calls never run inside a database transaction: a payment is
//! stored `new` first, the gateway is asked, and what it answered is
//! recorded in a second transaction. A request repeated with the same
//! `Idempotency-Key` finds the payment (or refund) it created.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::error::Problem;
use crate::api::extract::{ApiJson, ApiQuery, IdempotencyKey, OptionalJson, Principal};
use crate::api::{AccountListQuery, AppState, PageBody};
use crate::error::{Error, is_unique_violation};
use crate::money::{Currency, Money};
use crate::payments::{self, Checkout, Payment, PaymentStatus, Reconciled, Refund, RefundStatus};
use crate::plugins::gateway::{WitMoney, wit};
use crate::services::ServiceStatus;
use crate::services::module::ModuleError;
use crate::store::payments::{self as repo, NewPayment, NewRefund};
use crate::store::{accounts as accounts_repo, services as services_repo};

/// Top up a balance, or pay an unpaid order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    pub account_id: String,
    /// The gateway plugin instance.
    pub gateway: String,
    /// Minor units, positive.
    pub amount: i64,
    /// Must be the account's currency.
    pub currency: String,
    /// An unpaid order of the account this payment is for.
    pub service_id: Option<String>,
    pub description: Option<String>,
    pub return_url: Option<String>,
}

/// A payment with its refunds.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    #[serde(flatten)]
    pub payment: Payment,
    pub refunds: Vec<Refund>,
}

fn request_key(principal: &Principal, key: &IdempotencyKey) -> Option<String> {
    key.0.as_ref().map(|k| format!("{}:{k}", principal.key_id))
}

fn unprocessable(kind: &'static str, detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        kind,
        "Unprocessable request",
        detail,
    )
}

/// A gateway failure as the API tells it: the kind of failure, never the
/// plugin's own words (they are logged for staff).
fn gateway_problem(gateway: &str, e: &ModuleError) -> Problem {
    tracing::warn!(%gateway, error = %e, "payment gateway call failed");
    Problem::new(
        StatusCode::BAD_GATEWAY,
        "gateway-failed",
        "The payment gateway failed",
        format!("gateway `{gateway}` failed ({}); see the log", e.kind()),
    )
}

async fn view(state: &AppState, payment: Payment) -> Result<PaymentView, Problem> {
    let mut r = state.store.reader().await?;
    let refunds = repo::refunds_of(r.conn(), &payment).await?;
    Ok(PaymentView { payment, refunds })
}

#[utoipa::path(post, path = "/api/v1/payments", tag = "payments",
    params(("Idempotency-Key" = Option<String>, Header)),
    request_body = CreatePayment,
    responses((status = 201, body = PaymentView), (status = 200, description = "a repeated request"),
        (status = 404), (status = 422), (status = 502)),
    security(("bearer" = [])))]
/// Starts a payment through a gateway; the answer carries the checkout
/// (a redirect URL, an HTML form, instructions, or an instant result).
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    body: ApiJson<CreatePayment>,
) -> Result<Response, Problem> {
    let req = body.value;
    principal.require_account(&req.account_id)?;
    let now = state.clock.now();
    let request_key = request_key(&principal, &key)
        .unwrap_or_else(|| format!("{}:{}", principal.key_id, crate::ids::new_id("req")));
    {
        let mut r = state.store.reader().await?;
        if let Some(existing) = repo::find_by_request(r.conn(), &request_key).await? {
            if existing.request_hash != body.request_hash {
                return Err(Error::IdempotencyMismatch.into());
            }
            drop(r);
            return Ok((StatusCode::OK, Json(view(&state, existing).await?)).into_response());
        }
    }
    if req.amount <= 0 {
        return Err(unprocessable("invalid-amount", "`amount` must be positive"));
    }
    if req.amount > state.payments.max_amount {
        return Err(unprocessable(
            "amount-too-large",
            format!(
                "`amount` may be at most {} minor units",
                state.payments.max_amount
            ),
        ));
    }
    let currency = Currency::from_code(&req.currency).map_err(|_| {
        unprocessable(
            "invalid-currency",
            format!("`{}` is not a currency", req.currency),
        )
    })?;
    let gateway = state.plugins.gateway(&req.gateway).ok_or_else(|| {
        unprocessable(
            "unknown-gateway",
            format!("no payment gateway instance named `{}`", req.gateway),
        )
    })?;
    let expires_at = payments::expiry(&state.payments, &state.plugins, &req.gateway, now);
    let (account, payment) = {
        let mut tx = state.store.begin().await?;
        let account = accounts_repo::get(tx.conn(), &req.account_id).await?;
        let quota = state.payments.max_open_per_account;
        if repo::count_open(tx.conn(), &account.id).await? >= quota as i64 {
            return Err(Problem::quota(
                "open payments",
                format!(
                    "an account may have {quota} unpaid payments at once; pay or let one expire first"
                ),
            ));
        }
        if account.currency != currency {
            return Err(unprocessable(
                "currency-mismatch",
                format!(
                    "account {} is billed in {}, not {}",
                    account.id,
                    account.currency.code(),
                    currency.code()
                ),
            ));
        }
        if let Some(sid) = &req.service_id {
            let service = services_repo::get(tx.conn(), sid).await?;
            if service.account_id != account.id || service.status != ServiceStatus::Ordered {
                return Err(unprocessable(
                    "not-an-unpaid-order",
                    format!(
                        "service {sid} is not an unpaid order of account {}",
                        account.id
                    ),
                ));
            }
        }
        let description = req
            .description
            .clone()
            .unwrap_or_else(|| match &req.service_id {
                Some(s) => format!("payment for order {s}"),
                None => "balance top-up".into(),
            });
        if description.len() > 500 {
            return Err(unprocessable(
                "invalid-description",
                "`description` is too long",
            ));
        }
        let payment = repo::create(
            tx.conn(),
            NewPayment {
                account_id: &account.id,
                gateway: &req.gateway,
                amount: Money::new(req.amount, currency).map_err(Error::from)?,
                service_id: req.service_id.as_deref(),
                description: &description,
                request_key: &request_key,
                request_hash: &body.request_hash,
                created_by: &principal.actor(),
                expires_at,
            },
            now,
        )
        .await?;
        tx.commit().await?;
        (account, payment)
    };
    let request = wit::PaymentRequest {
        payment_id: payment.id.clone(),
        amount: WitMoney {
            amount: payment.amount,
            currency: currency.code().to_owned(),
        },
        description: payment.description.clone(),
        account_email: account.email.clone(),
        return_url: req
            .return_url
            .clone()
            .unwrap_or_else(|| state.payments.return_url.clone()),
        settings: vec![],
    };
    let outcome = gateway.create_payment(request).await;
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    let failure = match outcome {
        Ok(created) => {
            let checkout = Checkout::from_created(&created);
            let json = serde_json::to_value(&checkout).unwrap_or_default();
            match repo::record_checkout(tx.conn(), &payment.id, &created.gateway_ref, &json, now)
                .await
            {
                Err(Error::Database(e)) if is_unique_violation(&e) => Some(format!(
                    "the gateway reused reference `{}` of another payment",
                    created.gateway_ref
                )),
                Err(e) => return Err(e.into()),
                Ok(()) => {
                    if let wit::Checkout::Instant(status) = created.checkout {
                        let locked = repo::get_for_update(tx.conn(), &payment.id).await?;
                        match PaymentStatus::from(status) {
                            PaymentStatus::Paid => {
                                payments::mark_paid(
                                    tx.conn(),
                                    &locked,
                                    Some(locked.money()),
                                    &format!("gateway:{}", payment.gateway),
                                    now,
                                )
                                .await?;
                            }
                            PaymentStatus::Pending => {}
                            other => {
                                repo::set_status(tx.conn(), &payment.id, other, None, now).await?
                            }
                        }
                    }
                    None
                }
            }
        }
        Err(e) => {
            tracing::warn!(payment = %payment.id, gateway = %payment.gateway, error = %e, "the gateway refused to create a payment");
            Some(format!("the gateway failed ({})", e.kind()))
        }
    };
    if let Some(message) = &failure {
        repo::set_status(
            tx.conn(),
            &payment.id,
            PaymentStatus::Failed,
            Some(message),
            now,
        )
        .await?;
    }
    let payment = repo::get(tx.conn(), &payment.id).await?;
    tx.commit().await?;
    metrics::counter!("bursar_payments_created_total", "gateway" => payment.gateway.clone(), "status" => payment.status.as_str())
        .increment(1);
    if let Some(message) = failure {
        return Err(Problem::new(
            StatusCode::BAD_GATEWAY,
            "gateway-failed",
            "The payment gateway failed",
            format!("payment {} failed: {message}", payment.id),
        ));
    }
    Ok((StatusCode::CREATED, Json(view(&state, payment).await?)).into_response())
}

#[utoipa::path(get, path = "/api/v1/payments", tag = "payments",
    params(AccountListQuery),
    responses((status = 200, body = PageBody<Payment>)),
    security(("bearer" = [])))]
/// Payments, oldest first: all of them for staff, the customer's own for
/// a customer key.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<AccountListQuery>,
) -> Result<Json<PageBody<Payment>>, Problem> {
    let (account, after, limit) = q.resolve(&state, &principal)?;
    let mut r = state.store.reader().await?;
    let page = repo::list(r.conn(), account.as_deref(), after.as_deref(), limit).await?;
    Ok(Json(page.into()))
}

#[utoipa::path(get, path = "/api/v1/payments/{id}", tag = "payments",
    params(("id" = String, Path)),
    responses((status = 200, body = PaymentView), (status = 404)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<PaymentView>, Problem> {
    let payment = {
        let mut r = state.store.reader().await?;
        repo::get(r.conn(), &id).await?
    };
    principal
        .require_account(&payment.account_id)
        .map_err(|_| Problem::not_found(format!("payment {id} not found")))?;
    Ok(Json(view(&state, payment).await?))
}

/// Why staff mark a payment paid.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkPaid {
    pub reason: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/payments/{id}/mark-paid", tag = "payments",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = MarkPaid,
    responses((status = 200, body = PaymentView), (status = 409)),
    security(("bearer" = [])))]
/// Staff confirm that an offline payment (a bank transfer) arrived: the
/// balance is credited once, and what the money covers opens or resumes.
pub async fn mark_paid(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: OptionalJson<MarkPaid>,
) -> Result<Json<PaymentView>, Problem> {
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    let payment = repo::get_for_update(tx.conn(), &id).await?;
    match payment.status {
        PaymentStatus::Paid => {}
        s if s.is_open() => {
            let reason = body.value.reason.unwrap_or_default();
            repo::record_event(
                tx.conn(),
                &payment.gateway,
                &format!("manual:{}", payment.id),
                Some(&payment.id),
                PaymentStatus::Paid,
                now,
            )
            .await?;
            let actor = principal.actor();
            payments::mark_paid(tx.conn(), &payment, None, &actor, now).await?;
            tracing::info!(payment = %payment.id, %actor, %reason, "payment marked paid by staff");
        }
        s => {
            return Err(Error::Conflict(format!(
                "payment {id} is {}; only a new or pending payment can be marked paid",
                s.as_str()
            ))
            .into());
        }
    }
    let payment = repo::get(tx.conn(), &id).await?;
    tx.commit().await?;
    Ok(Json(view(&state, payment).await?))
}

/// Give (part of) a paid payment back.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// Minor units; at most what is left of the payment.
    pub amount: i64,
    pub reason: String,
    /// Let the balance go below minus the credit limit (staff decision,
    /// recorded with the reason).
    #[serde(default)]
    pub force: bool,
}

#[utoipa::path(post, path = "/api/v1/payments/{id}/refunds", tag = "payments",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = CreateRefund,
    responses((status = 201, body = Refund), (status = 200, description = "a repeated request"),
        (status = 409), (status = 422)),
    security(("bearer" = [])))]
/// Refunds a paid payment, in part or whole: the balance is debited (not
/// below minus the credit limit unless forced), then the gateway gives the
/// money back; if it refuses, the debit is reversed.
pub async fn refund(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: ApiJson<CreateRefund>,
) -> Result<Response, Problem> {
    let req = body.value;
    let request_key = request_key(&principal, &key);
    let reason = req.reason.trim().to_owned();
    if reason.is_empty() || reason.len() > 500 {
        return Err(unprocessable(
            "invalid-reason",
            "`reason` is required (at most 500 characters)",
        ));
    }
    let now = state.clock.now();
    let actor = principal.actor();
    let (payment, refund) = {
        let mut tx = state.store.begin().await?;
        let payment = repo::get_for_update(tx.conn(), &id).await?;
        if let Some(k) = &request_key
            && let Some(existing) =
                repo::find_refund_by_request(tx.conn(), k, payment.currency).await?
        {
            if existing.payment_id != id || existing.amount != req.amount {
                return Err(Error::IdempotencyMismatch.into());
            }
            return Ok((StatusCode::OK, Json(existing)).into_response());
        }
        if payment.status != PaymentStatus::Paid {
            return Err(Error::Conflict(format!(
                "payment {id} is {}; only paid payments are refunded",
                payment.status.as_str()
            ))
            .into());
        }
        if req.amount <= 0 || req.amount > payment.refundable() {
            return Err(unprocessable(
                "refund-exceeds-payment",
                format!(
                    "a refund of payment {id} must be 1 to {} minor units",
                    payment.refundable()
                ),
            ));
        }
        let refund = repo::create_refund(
            tx.conn(),
            &payment,
            NewRefund {
                amount: Money::new(req.amount, payment.currency).map_err(Error::from)?,
                reason: &reason,
                forced: req.force,
                request_key: request_key.as_deref(),
                created_by: &actor,
            },
            now,
        )
        .await?;
        repo::add_refunded(tx.conn(), &id, req.amount, now).await?;
        payments::post_refund(tx.conn(), &payment, &refund, false, &actor, now).await?;
        tx.commit().await?;
        (payment, refund)
    };
    let Some(gateway) = state.plugins.gateway(&payment.gateway) else {
        return Err(gateway_problem(
            &payment.gateway,
            &ModuleError::UnknownModule(payment.gateway.clone()),
        ));
    };
    let outcome = gateway
        .refund(
            payment.gateway_ref.as_deref().unwrap_or_default(),
            WitMoney {
                amount: refund.amount,
                currency: refund.currency.code().to_owned(),
            },
            &refund.id,
        )
        .await;
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    match &outcome {
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
        }
        Err(e) => {
            payments::post_refund(tx.conn(), &payment, &refund, true, &actor, now).await?;
            repo::add_refunded(tx.conn(), &id, -refund.amount, now).await?;
            repo::finish_refund(
                tx.conn(),
                &refund.id,
                RefundStatus::Failed,
                None,
                Some(&e.to_string()),
                now,
            )
            .await?;
        }
    }
    let refund = repo::get_refund(tx.conn(), &refund.id, payment.currency).await?;
    tx.commit().await?;
    if let Err(e) = outcome {
        return Err(gateway_problem(&payment.gateway, &e));
    }
    Ok((StatusCode::CREATED, Json(refund)).into_response())
}

#[utoipa::path(post, path = "/api/v1/payments/reconcile", tag = "payments",
    responses((status = 200, body = Reconciled)),
    security(("bearer" = [])))]
/// Runs a reconciliation pass now (staff).
pub async fn reconcile_now(State(state): State<AppState>) -> Result<Json<Reconciled>, Problem> {
    let report = payments::reconcile(
        &state.store,
        &state.plugins,
        &state.payments,
        state.clock.now(),
    )
    .await?;
    Ok(Json(report))
}
