//! The staff console's money pages: a payment with its refunds and the
//! refund form, and the invoices and credit notes.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::auth::StaffSession;
use super::auth::{self, SessionCtx};
use super::portal::printable_invoice;
use super::staff::who;
use super::view;
use crate::api::AppState;
use crate::api::policy::Action;
use crate::billing::{self, RefundRequest};
use crate::error::Error;
use crate::money::Money;
use crate::store::{invoices as invoices_repo, payments as payments_repo};

#[derive(Serialize)]
struct RefundRow {
    id: String,
    amount: String,
    status: &'static str,
    reason: String,
    forced: bool,
    error: Option<String>,
    by: String,
    at: String,
}

async fn payment_page(
    state: &AppState,
    s: &SessionCtx,
    id: &str,
    notice: String,
    status: StatusCode,
) -> Response {
    if s.principal(Action::PaymentRead).is_none() {
        return view::forbidden();
    }
    let loaded = async {
        let mut r = state.store.reader().await?;
        let payment = payments_repo::get(r.conn(), id).await?;
        let refunds = payments_repo::refunds_of(r.conn(), &payment).await?;
        Ok::<_, Error>((payment, refunds))
    }
    .await;
    let (payment, refunds) = match loaded {
        Ok(v) => v,
        Err(Error::NotFound { .. }) => return view::not_found(),
        Err(e) => return view::failed(e),
    };
    let zone = state.billing.time_zone;
    let currency = payment.currency;
    let refunds: Vec<RefundRow> = refunds
        .into_iter()
        .map(|r| RefundRow {
            id: r.id,
            amount: view::money(r.amount, currency),
            status: r.status.as_str(),
            reason: r.reason,
            forced: r.forced,
            error: r.last_error,
            by: r.created_by,
            at: view::when(Some(r.created_at), zone),
        })
        .collect();
    let refundable = payment.refundable();
    view::page(
        status,
        "staff_payment.html",
        context! {
            staff => true, csrf => s.csrf.clone(), who => who(s),
            id => payment.id, account_id => payment.account_id, gateway => payment.gateway,
            amount => view::money(payment.amount, currency),
            status => payment.status.as_str(),
            refunded => view::money(payment.refunded_amount, currency),
            refundable => view::money(refundable, currency),
            currency => currency.code(),
            created => view::when(Some(payment.created_at), zone),
            refunds, notice,
            may_refund => refundable > 0 && s.principal(Action::PaymentRefund).is_some(),
            request_id => auth::random_token(),
        },
    )
}

pub async fn payment(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path(id): Path<String>,
) -> Response {
    payment_page(&state, &s, &id, String::new(), StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct RefundForm {
    #[serde(default)]
    csrf: String,
    /// Decimal, in the payment's currency.
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
    /// Let the balance go below minus the credit limit.
    #[serde(default)]
    force: String,
    /// Fixed when the page was shown: the form sent twice refunds once.
    #[serde(default)]
    request_id: String,
}

/// A refund: the API's `refundPayment` service, the form's request id as
/// its idempotency key.
pub async fn refund(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path(id): Path<String>,
    Form(form): Form<RefundForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) || !auth::request_id_ok(&form.request_id) {
        return view::bad_form();
    }
    let Some(principal) = s.principal(Action::PaymentRefund) else {
        return view::forbidden();
    };
    let currency = {
        let r = state.store.reader().await;
        match r {
            Ok(mut r) => match payments_repo::get(r.conn(), &id).await {
                Ok(p) => p.currency,
                Err(Error::NotFound { .. }) => return view::not_found(),
                Err(e) => return view::failed(e),
            },
            Err(e) => return view::failed(e),
        }
    };
    let refuse = |why: String, status| payment_page(&state, &s, &id, why, status);
    let amount = match Money::parse(form.amount.trim(), currency) {
        Ok(m) if m.is_positive() => m.minor(),
        Ok(_) => {
            return refuse(
                "The amount must be positive.".into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
        Err(e) => {
            return refuse(format!("The amount: {e}"), StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    if form.reason.trim().is_empty() {
        return refuse("Give a reason.".into(), StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let request_key = format!("{}:console-refund:{}", principal.key_id, form.request_id);
    let outcome = billing::refund(
        &state.store,
        &state.plugins,
        &id,
        RefundRequest {
            amount,
            reason: &form.reason,
            force: form.force == "yes",
            request_key: Some(&request_key),
        },
        &principal.actor(),
        state.clock.now(),
    )
    .await;
    match outcome {
        Ok(o) => match o.gateway_failed {
            None => view::see_other(&format!("/staff/payments/{id}")),
            Some(kind) => {
                let what = match o.refund.status {
                    crate::payments::RefundStatus::Pending => {
                        "it stays pending and is asked for again"
                    }
                    _ => "the money went back to the balance",
                };
                refuse(
                    format!("The gateway failed ({kind}); {what}."),
                    StatusCode::BAD_GATEWAY,
                )
                .await
            }
        },
        Err(Error::NotFound { .. }) => view::not_found(),
        Err(Error::IdempotencyMismatch) => view::bad_form(),
        Err(
            e @ (Error::Conflict(_)
            | Error::Refused { .. }
            | Error::InsufficientFunds { .. }
            | Error::Field(_)
            | Error::Money(_)),
        ) => refuse(e.to_string(), StatusCode::CONFLICT).await,
        Err(e) => view::failed(e),
    }
}

#[derive(Deserialize, Default)]
pub struct InvoiceFilter {
    /// An account id.
    #[serde(default)]
    account: String,
}

#[derive(Serialize)]
struct InvoiceRow {
    id: String,
    number: String,
    kind: &'static str,
    account_id: String,
    net: String,
    tax: String,
    total: String,
    at: String,
}

/// Invoices and credit notes, newest first; by account when asked.
pub async fn invoices(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Query(filter): Query<InvoiceFilter>,
) -> Response {
    if s.principal(Action::InvoiceRead).is_none() {
        return view::forbidden();
    }
    let account = filter.account.trim();
    let loaded = async {
        let mut r = state.store.reader().await?;
        invoices_repo::newest(r.conn(), (!account.is_empty()).then_some(account), 200).await
    }
    .await;
    let found = match loaded {
        Ok(v) => v,
        Err(e) => return view::failed(e),
    };
    let zone = state.billing.time_zone;
    let rows: Vec<InvoiceRow> = found
        .into_iter()
        .map(|i| InvoiceRow {
            net: view::money(i.net, i.currency),
            tax: view::money(i.tax, i.currency),
            total: view::money(i.total, i.currency),
            at: view::when(Some(i.created_at), zone),
            kind: i.kind.as_str(),
            id: i.id,
            number: i.number,
            account_id: i.account_id,
        })
        .collect();
    view::ok(
        "staff_invoices.html",
        context! { staff => true, csrf => s.csrf.clone(), who => who(&s), invoices => rows, account },
    )
}

pub async fn invoice(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path(id): Path<String>,
) -> Response {
    let Some(principal) = s.principal(Action::InvoiceRead) else {
        return view::forbidden();
    };
    printable_invoice(&state, &principal, &id).await
}

#[derive(Serialize)]
struct RuleRow {
    country: String,
    product_type: String,
    name: String,
    rate: String,
    inclusive: bool,
    since: String,
}

/// Percent with at most two decimals (`19`, `7.5`) as basis points.
fn basis_points(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches('%').trim();
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || frac.len() > 2
        || !whole
            .chars()
            .chain(frac.chars())
            .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = format!("{frac:0<2}").parse().ok()?;
    whole.checked_mul(100)?.checked_add(frac)
}

async fn rules_page(
    state: &AppState,
    s: &SessionCtx,
    notice: String,
    status: StatusCode,
) -> Response {
    if s.principal(Action::TaxRuleRead).is_none() {
        return view::forbidden();
    }
    let loaded = async {
        let mut r = state.store.reader().await?;
        invoices_repo::rules(r.conn()).await
    }
    .await;
    let rules = match loaded {
        Ok(r) => r,
        Err(e) => return view::failed(e),
    };
    let zone = state.billing.time_zone;
    let rows: Vec<RuleRow> = rules
        .into_iter()
        .map(|r| RuleRow {
            rate: format!("{}.{:02} %", r.rate_bp / 100, r.rate_bp % 100),
            country: r.country,
            product_type: r
                .product_type
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "every other".into()),
            name: r.name,
            inclusive: r.inclusive,
            since: view::when(Some(r.created_at), zone),
        })
        .collect();
    view::page(
        status,
        "staff_tax_rules.html",
        context! {
            staff => true, csrf => s.csrf.clone(), who => who(s),
            rules => rows, notice,
            may_write => s.principal(Action::TaxRuleWrite).is_some(),
            product_types => ["dedicated_server", "vps", "domain", "ssl_certificate", "generic"],
        },
    )
}

pub async fn tax_rules(State(state): State<AppState>, StaffSession(s): StaffSession) -> Response {
    rules_page(&state, &s, String::new(), StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct RuleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    country: String,
    /// Empty: every product type without a rule of its own.
    #[serde(default)]
    product_type: String,
    #[serde(default)]
    name: String,
    /// Percent, e.g. `19` or `7.5`.
    #[serde(default)]
    rate: String,
    #[serde(default)]
    inclusive: String,
}

/// A new tax rule: the API's `createTaxRule` service.
pub async fn add_tax_rule(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Form(form): Form<RuleForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    if s.principal(Action::TaxRuleWrite).is_none() {
        return view::forbidden();
    }
    let refuse = |why: String| rules_page(&state, &s, why, StatusCode::UNPROCESSABLE_ENTITY);
    let Some(rate_bp) = basis_points(&form.rate) else {
        return refuse("The rate: a percentage with at most two decimals, e.g. 19 or 7.5.".into())
            .await;
    };
    let product_type = match form.product_type.as_str() {
        "" => None,
        t => match crate::catalog::ProductType::parse(t) {
            Some(p) => Some(p),
            None => return refuse("Choose a product type.".into()).await,
        },
    };
    let req = crate::api::invoices::CreateTaxRule {
        country: form.country.trim().to_uppercase(),
        product_type,
        name: form.name,
        rate_bp,
        inclusive: form.inclusive == "yes",
    };
    match crate::api::invoices::add_rule(&state, req).await {
        Ok(_) => view::see_other("/staff/tax-rules"),
        Err(p) => match super::act::refusal(&p) {
            Some((status, detail)) => rules_page(&state, &s, detail, status).await,
            None => view::failed(p.detail),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::basis_points;

    #[test]
    fn a_percentage_is_read_as_basis_points_exactly() {
        assert_eq!(basis_points("19"), Some(1900));
        assert_eq!(basis_points("7.5"), Some(750));
        assert_eq!(basis_points("7.25 %"), Some(725));
        assert_eq!(basis_points("0.01"), Some(1));
        assert_eq!(basis_points("5."), Some(500));
        for bad in ["", "7.255", "-5", "1e3", "x", ".5"] {
            assert_eq!(basis_points(bad), None, "{bad}");
        }
    }
}
