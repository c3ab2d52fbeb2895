//! `/api/v1/payments`: starting payments through gateways, staff
//! confirmations and refunds, and a reconciliation pass on demand. The
//! workflows are `billing`'s; a request repeated with the same
//! `Idempotency-Key` finds the payment (or refund) it created.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::error::{Problem, ProblemKind};
use crate::api::extract::{ApiJson, ApiQuery, IdempotencyKey, OptionalJson, Principal};
use crate::api::views::*;
use crate::api::{AccountListQuery, AppState, PageBody};
use crate::billing::{self, NewPaymentRequest, RefundRequest};
use crate::payments::{Payment, Reconciled};
use crate::store::payments as repo;

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

fn request_key(principal: &Principal, key: &IdempotencyKey) -> Option<String> {
    key.0.as_ref().map(|k| format!("{}:{k}", principal.key_id))
}

/// A gateway failure as the API tells it: the kind of failure, never the
/// plugin's own words (they are logged for staff).
fn gateway_problem(gateway: &str, what: &str, kind: &str) -> Problem {
    Problem::new(
        ProblemKind::GatewayFailed,
        format!("gateway `{gateway}` failed ({kind}); {what}"),
    )
}

async fn view(state: &AppState, payment: Payment) -> Result<PaymentView, Problem> {
    let mut r = state.store.reader().await?;
    let refunds = repo::refunds_of(r.conn(), &payment).await?;
    Ok(PaymentView::new(payment, Some(refunds)))
}

#[utoipa::path(post, path = "/api/v1/payments", operation_id = "createPayment", tag = "payments",
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
    let request_key = request_key(&principal, &key)
        .unwrap_or_else(|| format!("{}:{}", principal.key_id, crate::ids::new_id("req")));
    let outcome = billing::create_payment(
        &state.store,
        &state.plugins,
        &state.payments,
        NewPaymentRequest {
            account_id: &req.account_id,
            gateway: &req.gateway,
            amount: req.amount,
            currency: &req.currency,
            service_id: req.service_id.as_deref(),
            description: req.description.as_deref(),
            return_url: req.return_url.as_deref(),
            request_key: &request_key,
            request_hash: &body.request_hash,
            created_by: &principal.actor(),
        },
        state.clock.now(),
    )
    .await?;
    let status = if outcome.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    if let Some(kind) = outcome.gateway_failed {
        let what = format!(
            "payment {} is {}",
            outcome.payment.id,
            outcome.payment.status.as_str()
        );
        return Err(gateway_problem(&outcome.payment.gateway, &what, kind));
    }
    Ok((status, Json(view(&state, outcome.payment).await?)).into_response())
}

#[utoipa::path(get, path = "/api/v1/payments", operation_id = "listPayments", tag = "payments",
    params(AccountListQuery),
    responses((status = 200, body = PageBody<PaymentView>)),
    security(("bearer" = [])))]
/// Payments, oldest first: all of them for staff, the customer's own for
/// a customer key.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<AccountListQuery>,
) -> Result<Json<PageBody<PaymentView>>, Problem> {
    let (account, after, limit) = q.resolve(&state, &principal)?;
    let mut r = state.store.reader().await?;
    let page = repo::list(r.conn(), account.as_deref(), after.as_deref(), limit).await?;
    Ok(Json(page.into()))
}

#[utoipa::path(get, path = "/api/v1/payments/{id}", operation_id = "getPayment", tag = "payments",
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

#[utoipa::path(post, path = "/api/v1/payments/{id}/mark-paid", operation_id = "markPaymentPaid", tag = "payments",
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
    let reason = body.value.reason.unwrap_or_default();
    let payment = billing::confirm(
        &state.store,
        &id,
        &reason,
        &principal.actor(),
        state.clock.now(),
    )
    .await?;
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

#[utoipa::path(post, path = "/api/v1/payments/{id}/refunds", operation_id = "refundPayment", tag = "payments",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = CreateRefund,
    responses((status = 201, body = RefundView), (status = 200, description = "a repeated request"),
        (status = 202, body = RefundView, description = "the gateway could not answer now: the refund stays pending and is asked for again"),
        (status = 409), (status = 422), (status = 502, description = "the gateway refused it; the money went back")),
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
    let outcome = billing::refund(
        &state.store,
        &state.plugins,
        &id,
        RefundRequest {
            amount: req.amount,
            reason: &req.reason,
            force: req.force,
            request_key: request_key.as_deref(),
        },
        &principal.actor(),
        state.clock.now(),
    )
    .await?;
    let status = match (
        outcome.replayed,
        outcome.gateway_failed,
        outcome.refund.status,
    ) {
        (true, _, _) => StatusCode::OK,
        (false, None, _) => StatusCode::CREATED,
        (false, Some(_), crate::payments::RefundStatus::Pending) => StatusCode::ACCEPTED,
        (false, Some(kind), _) => {
            let gateway = {
                let mut r = state.store.reader().await?;
                repo::get(r.conn(), &id).await?.gateway
            };
            let what = format!(
                "refund {} failed and the money went back",
                outcome.refund.id
            );
            return Err(gateway_problem(&gateway, &what, kind));
        }
    };
    Ok((status, Json(outcome.refund)).into_response())
}

#[utoipa::path(post, path = "/api/v1/payments/reconcile", operation_id = "reconcilePayments", tag = "payments",
    responses((status = 200, body = Reconciled)),
    security(("bearer" = [])))]
/// Runs a reconciliation pass now (staff).
pub async fn reconcile_now(State(state): State<AppState>) -> Result<Json<Reconciled>, Problem> {
    let report = billing::reconcile(
        &state.store,
        &state.plugins,
        &state.payments,
        state.clock.now(),
    )
    .await?;
    Ok(Json(report))
}
