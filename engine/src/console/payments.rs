//! Topping up from the portal through a gateway (a redirect to the
//! gateway's checkout, or bank-transfer instructions), and the staff's
//! payments list where an offline payment is marked paid.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::auth::{self, SessionCtx};
use super::auth::{CustomerSession, StaffSession};
use super::view;
use crate::api::AppState;
use crate::api::policy::Action;
use crate::billing::{self, NewPaymentRequest};
use crate::error::Error;
use crate::money::Money;
use crate::payments::{Checkout, Payment};
use crate::plugins::instances::PluginKind;
use crate::store::{accounts as accounts_repo, payments as payments_repo};

fn gateways(state: &AppState) -> Vec<String> {
    let mut names: Vec<String> = state
        .plugins
        .list()
        .into_iter()
        .filter(|p| p.kind == PluginKind::Gateway)
        .map(|p| p.name)
        .collect();
    names.sort();
    names
}

pub async fn new_form(
    State(state): State<AppState>,
    CustomerSession(s): CustomerSession,
) -> Response {
    top_up_page(&state, &s, StatusCode::OK, String::new(), String::new()).await
}

async fn top_up_page(
    state: &AppState,
    s: &SessionCtx,
    status: StatusCode,
    amount: String,
    error: String,
) -> Response {
    if s.principal(Action::PaymentCreate).is_none() {
        return view::forbidden();
    }
    let Some(account_id) = &s.login.account_id else {
        return view::forbidden();
    };
    let account = {
        let r = state.store.reader().await;
        match r {
            Ok(mut r) => match accounts_repo::get(r.conn(), account_id).await {
                Ok(a) => a,
                Err(e) => return view::failed(e),
            },
            Err(e) => return view::failed(e),
        }
    };
    view::page(
        status,
        "top_up.html",
        context! {
            staff => false, csrf => s.csrf.clone(),
            gateways => gateways(state), currency => account.currency.code(),
            amount, error, request_id => auth::random_token(),
        },
    )
}

#[derive(Deserialize)]
pub struct TopUpForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    gateway: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    request_id: String,
}

/// Starts a payment (the API's `createPayment` service); the form's request
/// id is its idempotency key.
pub async fn create(
    State(state): State<AppState>,
    CustomerSession(s): CustomerSession,
    Form(form): Form<TopUpForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    let Some(principal) = s.principal(Action::PaymentCreate) else {
        return view::forbidden();
    };
    if !auth::request_id_ok(&form.request_id) {
        return view::bad_form();
    }
    let Some(account_id) = principal.account_id.clone() else {
        return view::forbidden();
    };
    let currency = {
        let r = state.store.reader().await;
        match r {
            Ok(mut r) => match accounts_repo::get(r.conn(), &account_id).await {
                Ok(a) => a.currency,
                Err(e) => return view::failed(e),
            },
            Err(e) => return view::failed(e),
        }
    };
    let again = |error: String| {
        top_up_page(
            &state,
            &s,
            StatusCode::UNPROCESSABLE_ENTITY,
            form.amount.clone(),
            error,
        )
    };
    let amount = match Money::parse(form.amount.trim(), currency) {
        Ok(m) if m.is_positive() => m,
        Ok(_) => return again("The amount must be positive.".into()).await,
        Err(e) => return again(format!("The amount: {e}")).await,
    };
    if !gateways(&state).contains(&form.gateway) {
        return again("Choose a way to pay.".into()).await;
    }
    let request_key = format!("{}:console-payment:{}", principal.key_id, form.request_id);
    let hash = auth::sha256_hex(&format!("{}|{}", form.gateway, amount.minor()));
    let outcome = billing::create_payment(
        &state.store,
        &state.plugins,
        &state.payments,
        NewPaymentRequest {
            account_id: &account_id,
            gateway: &form.gateway,
            amount: amount.minor(),
            currency: currency.code(),
            service_id: None,
            description: Some("Top-up"),
            return_url: None,
            request_key: &request_key,
            request_hash: &hash,
            created_by: &principal.actor(),
        },
        state.clock.now(),
    )
    .await;
    match outcome {
        Ok(o) => match (&o.gateway_failed, &o.payment.checkout) {
            (None, Some(Checkout::Redirect { url }))
                if url.starts_with("https://") || url.starts_with("http://") =>
            {
                view::see_other(url)
            }
            _ => view::see_other(&format!("/payments/{}", o.payment.id)),
        },
        Err(
            e @ (Error::Field(_)
            | Error::Refused { .. }
            | Error::Money(_)
            | Error::Quota { .. }
            | Error::AccountNotActive { .. }),
        ) => again(e.to_string()).await,
        Err(Error::IdempotencyMismatch) => view::bad_form(),
        Err(e) => {
            // The same form sent twice at once: the other request made it.
            let made = async {
                let mut r = state.store.reader().await?;
                payments_repo::find_by_request(r.conn(), &request_key).await
            }
            .await;
            match made {
                Ok(Some(p)) if p.account_id == account_id => {
                    view::see_other(&format!("/payments/{}", p.id))
                }
                _ => view::failed(e),
            }
        }
    }
}

fn checkout_view(p: &Payment) -> minijinja::Value {
    match &p.checkout {
        Some(Checkout::Instructions { text }) => context! { kind => "instructions", text },
        Some(Checkout::Redirect { url }) => context! { kind => "redirect", url },
        Some(Checkout::Instant { status }) => {
            context! { kind => "instant", text => status.as_str() }
        }
        Some(Checkout::Form { .. }) => context! { kind => "form" },
        None => context! { kind => "none" },
    }
}

/// One payment: its status and how to pay it.
pub async fn show(
    State(state): State<AppState>,
    CustomerSession(s): CustomerSession,
    Path(id): Path<String>,
) -> Response {
    let Some(principal) = s.principal(Action::PaymentRead) else {
        return view::forbidden();
    };
    let payment = {
        let r = state.store.reader().await;
        match r {
            Ok(mut r) => match payments_repo::get(r.conn(), &id).await {
                Ok(p) => p,
                Err(Error::NotFound { .. }) => return view::not_found(),
                Err(e) => return view::failed(e),
            },
            Err(e) => return view::failed(e),
        }
    };
    if principal.require_account(&payment.account_id).is_err() {
        return view::not_found();
    }
    view::ok(
        "payment.html",
        context! {
            staff => false, csrf => s.csrf.clone(),
            id => payment.id.clone(), status => payment.status.as_str(),
            amount => view::money(payment.amount, payment.currency),
            gateway => payment.gateway.clone(),
            checkout => checkout_view(&payment),
        },
    )
}

#[derive(Serialize)]
struct PaymentRow {
    id: String,
    account_id: String,
    gateway: String,
    amount: String,
    status: &'static str,
    created: String,
    pending: bool,
}

/// Staff: the latest payments, with "mark paid" for offline ones waiting.
pub async fn staff_list(State(state): State<AppState>, StaffSession(s): StaffSession) -> Response {
    staff_page(&state, &s, String::new(), StatusCode::OK).await
}

async fn staff_page(
    state: &AppState,
    s: &SessionCtx,
    notice: String,
    status: StatusCode,
) -> Response {
    if s.principal(Action::PaymentRead).is_none() {
        return view::forbidden();
    }
    let loaded = async {
        let mut r = state.store.reader().await?;
        payments_repo::list_recent(r.conn(), None, 200).await
    }
    .await;
    let payments = match loaded {
        Ok(p) => p,
        Err(e) => return view::failed(e),
    };
    let zone = state.billing.time_zone;
    let rows: Vec<PaymentRow> = payments
        .into_iter()
        .map(|p| PaymentRow {
            // Only offline payments (instructions to pay by transfer) are
            // confirmed by hand; a checkout's payment is the gateway's word.
            pending: p.status.as_str() == "pending"
                && matches!(p.checkout, Some(Checkout::Instructions { .. })),
            id: p.id,
            account_id: p.account_id,
            gateway: p.gateway,
            amount: view::money(p.amount, p.currency),
            status: p.status.as_str(),
            created: view::when(Some(p.created_at), zone),
        })
        .collect();
    view::page(
        status,
        "staff_payments.html",
        context! {
            staff => true, csrf => s.csrf.clone(),
            who => context! { email => s.login.email.clone(), role => s.login.role.as_str() },
            payments => rows, notice,
            may_confirm => s.principal(Action::PaymentConfirm).is_some(),
        },
    )
}

#[derive(Deserialize)]
pub struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    /// The bank's reference of the transfer that arrived.
    #[serde(default)]
    reference: String,
}

/// An offline payment arrived: the API's `markPaymentPaid` service.
pub async fn mark_paid(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path(id): Path<String>,
    Form(form): Form<ConfirmForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    let Some(principal) = s.principal(Action::PaymentConfirm) else {
        return view::forbidden();
    };
    let payment = {
        let r = state.store.reader().await;
        match r {
            Ok(mut r) => match payments_repo::get(r.conn(), &id).await {
                Ok(p) => p,
                Err(Error::NotFound { .. }) => return view::not_found(),
                Err(e) => return view::failed(e),
            },
            Err(e) => return view::failed(e),
        }
    };
    if !matches!(payment.checkout, Some(Checkout::Instructions { .. })) {
        return staff_page(
            &state,
            &s,
            format!("{id} is paid through its gateway's checkout; only offline payments are marked paid here"),
            StatusCode::CONFLICT,
        )
        .await;
    }
    let reference = form.reference.trim();
    if reference.is_empty()
        || reference.chars().count() > 200
        || reference.chars().any(char::is_control)
    {
        return staff_page(
            &state,
            &s,
            "Give the bank's reference of the transfer (up to 200 characters).".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let reason = format!("transfer received, reference {reference}");
    match billing::confirm(
        &state.store,
        &id,
        &reason,
        &principal.actor(),
        state.clock.now(),
    )
    .await
    {
        Ok(_) => view::see_other("/staff/payments"),
        Err(Error::NotFound { .. }) => view::not_found(),
        Err(e @ (Error::Conflict(_) | Error::Refused { .. })) => {
            staff_page(&state, &s, e.to_string(), StatusCode::CONFLICT).await
        }
        Err(e) => view::failed(e),
    }
}
