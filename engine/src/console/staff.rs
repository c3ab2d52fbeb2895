//! The staff console: log in (TOTP for admins), the dashboard, accounts,
//! credits and debits.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, request::Parts};
use axum::response::Response;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::auth::StaffSession;
use super::auth::{self, SessionCtx};
use super::portal::{self, CsrfForm, LoginForm};
use super::view;
use crate::api::AppState;
use crate::api::policy::Action;
use crate::error::Error;
use crate::ledger::{LedgerAccountId, TransactionKind};
use crate::money::Money;
use crate::sql;
use crate::store::logins::Realm;
use crate::store::{
    accounts as accounts_repo, invoices as invoices_repo, ledger as ledger_repo,
    payments as payments_repo, services as services_repo,
};

pub(super) fn who(s: &SessionCtx) -> minijinja::Value {
    context! { email => s.login.email.clone(), role => s.login.role.as_str() }
}

pub async fn login_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (token, cookie) = auth::form_token(&state, &headers);
    let response = view::ok(
        "login.html",
        context! { staff => true, action => "/staff/login", form_token => token, email => "", error => "", needs_code => false, signup => false },
    );
    view::with_cookie(response, cookie)
}

pub async fn login(
    State(state): State<AppState>,
    parts: Parts,
    Form(form): Form<LoginForm>,
) -> Response {
    portal::login_attempt(&state, &parts, Realm::Staff, &form).await
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    StaffSession(s): StaffSession,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    match auth::end(&state, &headers, Realm::Staff).await {
        Ok(cookie) => view::with_cookie(view::see_other("/staff/login"), Some(cookie)),
        Err(e) => view::failed(e),
    }
}

#[derive(Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
}

#[derive(Serialize)]
struct AccountRow {
    id: String,
    email: String,
    name: String,
    status: String,
}

pub async fn accounts(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Query(search): Query<Search>,
) -> Response {
    if s.principal(Action::AccountRead).is_none() {
        return view::forbidden();
    }
    let q = search.q.trim().to_lowercase();
    let found = async {
        let mut r = state.store.reader().await?;
        let pattern = format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        let found: Vec<(String, String, String, String)> = sql!(&mut r.conn(), c => sqlx::query_as(
            "SELECT id, email, name, status FROM accounts
             WHERE $1 = '' OR id = $2 OR LOWER(email) LIKE $3 ESCAPE '\\' OR LOWER(name) LIKE $3 ESCAPE '\\'
             ORDER BY id DESC LIMIT 100")
            .bind(&q).bind(search.q.trim()).bind(&pattern).fetch_all(&mut **c).await)?;
        let rows: Vec<AccountRow> = found
            .into_iter()
            .map(|(id, email, name, status)| AccountRow { id, email, name, status })
            .collect();
        Ok::<_, Error>(rows)
    }
    .await;
    match found {
        Ok(rows) => view::ok(
            "staff_accounts.html",
            context! { staff => true, csrf => s.csrf.clone(), who => who(&s), q => search.q, accounts => rows },
        ),
        Err(e) => view::failed(e),
    }
}

#[derive(Serialize)]
struct ServiceRow {
    id: String,
    status: &'static str,
    price: String,
    paid_until: String,
}

#[derive(Serialize)]
struct LedgerRow {
    at: String,
    kind: &'static str,
    description: String,
    amount: String,
    by: String,
}

#[derive(Serialize)]
struct DocRow {
    id: String,
    label: String,
    amount: String,
    status: String,
    at: String,
}

#[derive(Serialize)]
struct EventRow {
    at: String,
    service_id: String,
    action: String,
    to: String,
    reason: Option<String>,
    actor: String,
}

/// How many of the newest ledger lines, payments, invoices and events the
/// account page shows.
const RECENT: usize = 30;

async fn account_page(
    state: &AppState,
    s: &SessionCtx,
    id: &str,
    notice: String,
    status: StatusCode,
) -> Response {
    let loaded = async {
        let mut r = state.store.reader().await?;
        let account = accounts_repo::get(r.conn(), id).await?;
        let ledger_id = LedgerAccountId::customer(id);
        let balance = ledger_repo::balance(r.conn(), &ledger_id).await?;
        let lines = ledger_repo::latest_lines(r.conn(), &ledger_id, RECENT).await?;
        let services = services_repo::list(r.conn(), Some(id), None, None, 200).await?;
        let payments = payments_repo::list_recent(r.conn(), Some(id), RECENT).await?;
        let invoices = invoices_repo::newest(r.conn(), Some(id), RECENT).await?;
        let events: Vec<(i64, String, String, String, Option<String>, String)> = sql!(&mut r.conn(), c => sqlx::query_as(
            "SELECT e.at, e.service_id, e.action, e.to_status, e.reason, e.actor
             FROM service_events e JOIN services s ON s.id = e.service_id
             WHERE s.account_id = $1 ORDER BY e.id DESC LIMIT $2")
            .bind(id).bind(RECENT as i64).fetch_all(&mut **c).await)?;
        Ok::<_, Error>((account, balance, lines, services, payments, invoices, events))
    }
    .await;
    let (account, balance, lines, services, payments, invoices, events) = match loaded {
        Ok(v) => v,
        Err(Error::NotFound { .. }) => return view::not_found(),
        Err(e) => return view::failed(e),
    };
    let zone = account.time_zone.unwrap_or(state.billing.time_zone);
    let rows: Vec<ServiceRow> = services
        .items
        .iter()
        .map(|svc| ServiceRow {
            id: svc.id.clone(),
            status: svc.status.as_str(),
            price: view::money(svc.recurring_price, svc.currency),
            paid_until: view::when(svc.paid_until, zone),
        })
        .collect();
    let ledger: Vec<LedgerRow> = lines
        .into_iter()
        .map(|l| LedgerRow {
            at: view::when(Some(l.created_at), zone),
            kind: l.kind.as_str(),
            description: l.description,
            amount: view::money(l.amount, l.currency),
            by: l.created_by,
        })
        .collect();
    let payments: Vec<DocRow> = payments
        .into_iter()
        .map(|p| DocRow {
            label: p.gateway.clone(),
            amount: view::money(p.amount, p.currency),
            status: p.status.as_str().to_owned(),
            at: view::when(Some(p.created_at), zone),
            id: p.id,
        })
        .collect();
    let invoices: Vec<DocRow> = invoices
        .into_iter()
        .map(|i| DocRow {
            label: i.number.clone(),
            amount: view::money(i.total, i.currency),
            status: i.kind.as_str().to_owned(),
            at: view::when(Some(i.created_at), zone),
            id: i.id,
        })
        .collect();
    let events: Vec<EventRow> = events
        .into_iter()
        .map(|(at, service_id, action, to, reason, actor)| EventRow {
            at: view::when(Some(crate::clock::from_micros(at)), zone),
            service_id,
            action,
            to,
            reason,
            actor,
        })
        .collect();
    view::page(
        status,
        "staff_account.html",
        context! {
            staff => true, csrf => s.csrf.clone(), who => who(s),
            id => account.id, email => account.email, name => account.name,
            status => account.status.as_str(), country => account.country,
            time_zone => account.time_zone.map(|z| z.name().to_owned()),
            currency => account.currency.code(),
            credit_limit => Money::new(account.credit_limit, account.currency)
                .map(|m| m.to_decimal_string())
                .unwrap_or_default(),
            balance => view::money(balance.balance, account.currency),
            services => rows, ledger, payments, invoices, events,
            may_adjust => s.principal(Action::LedgerAdjust).is_some(),
            may_reset => s.principal(Action::AccountEditProfile).is_some(),
            may_edit_billing => s.principal(Action::AccountEditBilling).is_some(),
            request_id => auth::random_token(),
            notice,
        },
    )
}

pub async fn account(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path(id): Path<String>,
) -> Response {
    if s.principal(Action::AccountRead).is_none() {
        return view::forbidden();
    }
    account_page(&state, &s, &id, String::new(), StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct CreditForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    reason: String,
    /// Fixed when the form was shown: sending it twice credits once.
    #[serde(default)]
    request_id: String,
}

/// A credit or debit with a reason: the API's `createCredit` service, with
/// the form's request id as its ledger key.
pub async fn credit(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path(id): Path<String>,
    Form(form): Form<CreditForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    let Some(principal) = s.principal(Action::LedgerAdjust) else {
        return view::forbidden();
    };
    let account = {
        let r = state.store.reader().await;
        match r {
            Ok(mut r) => match accounts_repo::get(r.conn(), &id).await {
                Ok(a) => a,
                Err(Error::NotFound { .. }) => return view::not_found(),
                Err(e) => return view::failed(e),
            },
            Err(e) => return view::failed(e),
        }
    };
    let refuse = |why: String| account_page(&state, &s, &id, why, StatusCode::UNPROCESSABLE_ENTITY);
    let kind = match form.kind.as_str() {
        "credit" => TransactionKind::Credit,
        "debit" => TransactionKind::Debit,
        _ => return refuse("Choose credit or debit.".into()).await,
    };
    let amount = match Money::parse(form.amount.trim(), account.currency) {
        Ok(m) if m.is_positive() => m,
        Ok(_) => return refuse("The amount must be positive.".into()).await,
        Err(e) => return refuse(format!("The amount: {e}")).await,
    };
    let reason = match crate::accounts::check_text("reason", &form.reason, 500) {
        Ok(r) if !r.is_empty() => r,
        Ok(_) => return refuse("Give a reason.".into()).await,
        Err(e) => return refuse(e.to_string()).await,
    };
    if !auth::request_id_ok(&form.request_id) {
        return view::bad_form();
    }
    let actor = principal.actor();
    let ledger_key = format!(
        "console:{}:{}:{}",
        s.login.id,
        form.request_id,
        kind.as_str()
    );
    let now = state.clock.now();
    let done = async {
        let mut tx = state.store.begin().await?;
        let adjustment = crate::billing::Adjustment {
            account_id: &id,
            kind,
            amount,
            reason: &reason,
            ledger_key,
            actor: &actor,
        };
        match crate::billing::adjust(tx.conn(), adjustment, now).await {
            Ok(_) => tx.commit().await,
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
    }
    .await;
    match done {
        Ok(()) => view::see_other(&format!("/staff/accounts/{id}")),
        Err(
            e
            @ (Error::InsufficientFunds { .. } | Error::AccountNotActive { .. } | Error::Money(_)),
        ) => refuse(e.to_string()).await,
        Err(Error::IdempotencyMismatch) => view::bad_form(),
        Err(e) => view::failed(e),
    }
}

#[derive(Serialize)]
struct OperationRow {
    id: String,
    service_id: String,
    kind: &'static str,
    module: String,
    attempts: i64,
    error_kind: Option<String>,
    error: Option<String>,
    since: String,
}

/// The manual queue: operations waiting for staff, with the module's error.
pub async fn operations(State(state): State<AppState>, StaffSession(s): StaffSession) -> Response {
    operations_page(&state, &s, String::new(), StatusCode::OK).await
}

async fn operations_page(
    state: &AppState,
    s: &SessionCtx,
    notice: String,
    status: StatusCode,
) -> Response {
    if s.principal(Action::OperationRead).is_none() {
        return view::forbidden();
    }
    let page = async {
        let mut r = state.store.reader().await?;
        services_repo::list_operations(
            r.conn(),
            None,
            Some(crate::services::OperationStatus::Manual),
            None,
            200,
        )
        .await
    }
    .await;
    let ops = match page {
        Ok(p) => p.items,
        Err(e) => return view::failed(e),
    };
    let zone = state.billing.time_zone;
    let rows: Vec<OperationRow> = ops
        .into_iter()
        .map(|op| OperationRow {
            id: op.id,
            service_id: op.service_id,
            kind: op.kind.as_str(),
            module: op.module,
            attempts: op.attempts,
            error_kind: op.error_kind,
            error: op.last_error,
            since: view::when(Some(op.updated_at), zone),
        })
        .collect();
    view::page(
        status,
        "staff_operations.html",
        context! {
            staff => true, csrf => s.csrf.clone(), who => who(s),
            operations => rows, notice,
            may_work => s.principal(Action::OperationWork).is_some(),
        },
    )
}

#[derive(Deserialize)]
pub struct WorkForm {
    #[serde(default)]
    csrf: String,
    /// `key=value` lines: what the module would have returned.
    #[serde(default)]
    params: String,
}

/// Retry: the operation goes back to the runner's queue, due now.
pub async fn retry(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path(id): Path<String>,
    Form(form): Form<WorkForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    if s.principal(Action::OperationWork).is_none() {
        return view::forbidden();
    }
    let now = state.clock.now();
    let done = async {
        let mut tx = state.store.begin().await?;
        let outcome = crate::lifecycle::operations::retry_manual(tx.conn(), &id, now).await;
        tx.keep_if(outcome.map(|_| true)).await
    }
    .await;
    match done {
        Ok(_) => view::see_other("/staff/operations"),
        Err(Error::NotFound { .. }) => view::not_found(),
        Err(e @ (Error::Conflict(_) | Error::IllegalTransition { .. })) => {
            operations_page(&state, &s, e.to_string(), StatusCode::CONFLICT).await
        }
        Err(e) => view::failed(e),
    }
}

/// Complete: staff did the work by hand; the service moves on with these
/// params, as if the module had answered them.
pub async fn complete(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path(id): Path<String>,
    Form(form): Form<WorkForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    let Some(principal) = s.principal(Action::OperationWork) else {
        return view::forbidden();
    };
    let mut params = Vec::new();
    for line in form.params.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                params.push((k.trim().to_owned(), v.trim().to_owned()))
            }
            _ => {
                return operations_page(
                    &state,
                    &s,
                    format!("`{line}`: write params as key=value, one per line"),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await;
            }
        }
    }
    let now = state.clock.now();
    let actor = principal.actor();
    let done = async {
        let mut tx = state.store.begin().await?;
        let outcome = crate::lifecycle::operations::complete_manual(
            tx.conn(),
            &id,
            &params,
            &state.secrets,
            &actor,
            now,
        )
        .await;
        tx.keep_if(outcome.map(|_| true)).await
    }
    .await;
    match done {
        Ok(_) => view::see_other("/staff/operations"),
        Err(Error::NotFound { .. }) => view::not_found(),
        Err(e @ (Error::Conflict(_) | Error::IllegalTransition { .. } | Error::Field(_))) => {
            operations_page(&state, &s, e.to_string(), StatusCode::CONFLICT).await
        }
        Err(e) => view::failed(e),
    }
}

/// Issues a password reset link for the account's portal login, shown once
/// to staff to hand over (as the mailed link would be).
pub async fn reset_link(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    if s.principal(Action::AccountEditProfile).is_none() {
        return view::forbidden();
    }
    let login = async {
        let mut r = state.store.reader().await?;
        let account = accounts_repo::get(r.conn(), &id).await?;
        crate::store::logins::by_email(r.conn(), Realm::Customer, &account.email).await
    }
    .await;
    let login = match login {
        Ok(Some(l)) if l.account_id.as_deref() == Some(id.as_str()) => l,
        Ok(_) => {
            return account_page(
                &state,
                &s,
                &id,
                "This account has no portal login.".into(),
                StatusCode::CONFLICT,
            )
            .await;
        }
        Err(Error::NotFound { .. }) => return view::not_found(),
        Err(e) => return view::failed(e),
    };
    match auth::issue_reset(&state, &login.id).await {
        Ok(url) => {
            account_page(
                &state,
                &s,
                &id,
                format!(
                    "Reset link (works once, for {} hours): {url}",
                    auth::RESET_HOURS
                ),
                StatusCode::OK,
            )
            .await
        }
        Err(e) => view::failed(e),
    }
}

#[derive(Deserialize)]
pub struct BillingForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    country: String,
    /// Decimal, in the account's currency.
    #[serde(default)]
    credit_limit: String,
    #[serde(default)]
    status: String,
    /// Empty: the deployment's billing time zone.
    #[serde(default)]
    time_zone: String,
}

/// The staff-only fields (country, credit limit, status, time zone): the
/// API's account update, which checks them as it does for a staff key.
pub async fn billing(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path(id): Path<String>,
    Form(form): Form<BillingForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    let Some(principal) = s.principal(Action::AccountEditBilling) else {
        return view::forbidden();
    };
    let account = {
        let r = state.store.reader().await;
        match r {
            Ok(mut r) => match accounts_repo::get(r.conn(), &id).await {
                Ok(a) => a,
                Err(Error::NotFound { .. }) => return view::not_found(),
                Err(e) => return view::failed(e),
            },
            Err(e) => return view::failed(e),
        }
    };
    let refuse = |why: String| account_page(&state, &s, &id, why, StatusCode::UNPROCESSABLE_ENTITY);
    let credit_limit = match Money::parse(form.credit_limit.trim(), account.currency) {
        Ok(m) if m.minor() >= 0 => m.minor(),
        Ok(_) => return refuse("The credit limit cannot be negative.".into()).await,
        Err(e) => return refuse(format!("The credit limit: {e}")).await,
    };
    let Some(status) = crate::accounts::AccountStatus::parse(&form.status) else {
        return refuse("Choose a status.".into()).await;
    };
    let country = form.country.trim().to_uppercase();
    let time_zone = form.time_zone.trim();
    // Only what the form changes is written: saving a page opened before
    // someone else blocked the account (or changed its limit) keeps theirs.
    let current_zone = account.time_zone.map(|z| z.name()).unwrap_or("");
    let edit = crate::directory::AccountEdit {
        email: None,
        name: None,
        credit_limit: (credit_limit != account.credit_limit).then_some(credit_limit),
        status: (status != account.status).then_some(status),
        country: (!country.is_empty() && Some(country.as_str()) != account.country.as_deref())
            .then_some(country.as_str()),
        time_zone: (!time_zone.is_empty() && time_zone != current_zone).then_some(time_zone),
        language: None,
        email_opt_out: None,
    };
    if !edit.touches_billing() {
        return view::see_other(&format!("/staff/accounts/{id}"));
    }
    let done = async {
        let mut tx = state.store.begin().await?;
        let updated = crate::directory::update_account(
            tx.conn(),
            &id,
            edit,
            &principal.actor(),
            state.clock.now(),
        )
        .await;
        tx.keep_if(updated.map(|_| true)).await
    }
    .await;
    // The account's status may have changed: its keys are looked up afresh.
    state.key_cache.forget_account(&id);
    match done {
        Ok(_) => view::see_other(&format!("/staff/accounts/{id}")),
        Err(Error::NotFound { .. }) => view::not_found(),
        Err(e @ (Error::Field(_) | Error::Conflict(_))) => refuse(e.to_string()).await,
        Err(e) => view::failed(e),
    }
}
