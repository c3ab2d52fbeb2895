//! The customer portal: sign up, log in and out, the dashboard, a service,
//! an invoice.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::act::{self, FormRequest};
use super::auth::CustomerSession;
use super::auth::{self, Attempt};
use super::view;
use crate::accounts::Role;
use crate::api::AppState;
use crate::api::policy::Action;
use crate::directory;
use crate::error::Error;
use crate::ledger::LedgerAccountId;
use crate::lifecycle;
use crate::store::logins::{self, NewLogin, Realm};
use crate::store::services as services_repo;
use crate::store::{accounts as accounts_repo, invoices as invoices_repo, ledger as ledger_repo};

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    form_token: String,
}

pub async fn login_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (token, cookie) = auth::form_token(&state, &headers);
    view::with_cookie(
        view::ok(
            "login.html",
            context! { staff => false, action => "/login", form_token => token, email => "", error => "", needs_code => false, signup => state.console.signup },
        ),
        cookie,
    )
}

/// Shared by the portal and the staff console.
pub async fn login_attempt(
    state: &AppState,
    parts: &Parts,
    realm: Realm,
    form: &LoginForm,
) -> Response {
    let staff = realm == Realm::Staff;
    let action = if staff { "/staff/login" } else { "/login" };
    if !auth::form_token_ok(&parts.headers, &form.form_token) {
        return view::bad_form();
    }
    let again = |status: StatusCode, error: &str, needs_code: bool| {
        view::page(
            status,
            "login.html",
            context! { staff, action, form_token => form.form_token.clone(), email => form.email.clone(), error, needs_code, signup => state.console.signup && !staff },
        )
    };
    let code = (!form.code.is_empty()).then_some(form.code.as_str());
    let addr = auth::client_addr(parts);
    match auth::attempt(state, realm, &form.email, &form.password, code, addr).await {
        Err(e) => view::failed(e),
        Ok(Attempt::Throttled) => again(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed attempts. Wait a few minutes and try again.",
            false,
        ),
        Ok(Attempt::Wrong) => again(StatusCode::UNAUTHORIZED, "Wrong e-mail or password.", false),
        Ok(Attempt::NotActive) => again(
            StatusCode::FORBIDDEN,
            "This account is blocked or closed. Contact us.",
            false,
        ),
        Ok(Attempt::NeedsCode) => again(
            StatusCode::UNAUTHORIZED,
            if code.is_some() {
                "That code is not right. Enter the code your authenticator app shows now."
            } else {
                "Enter the code from your authenticator app."
            },
            true,
        ),
        Ok(Attempt::Ok(login)) => {
            if login.role == Role::Admin && login.totp_secret.is_none() {
                return again(
                    StatusCode::FORBIDDEN,
                    "An admin must have two-factor authentication: create the login again with `bursar staff create` (admins get TOTP).",
                    false,
                );
            }
            // A session the browser had before is ended, not kept beside.
            if let Err(e) = auth::end(state, &parts.headers, realm).await {
                return view::failed(e);
            }
            match auth::start(state, &login).await {
                Ok(cookie) => view::with_cookie(
                    view::see_other(if staff { "/staff" } else { "/" }),
                    Some(cookie),
                ),
                Err(e) => view::failed(e),
            }
        }
    }
}

pub async fn login(
    State(state): State<AppState>,
    parts: Parts,
    Form(form): Form<LoginForm>,
) -> Response {
    login_attempt(&state, &parts, Realm::Customer, &form).await
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    CustomerSession(s): CustomerSession,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    match auth::end(&state, &headers, Realm::Customer).await {
        Ok(cookie) => view::with_cookie(view::see_other("/login"), Some(cookie)),
        Err(e) => view::failed(e),
    }
}

#[derive(Deserialize)]
pub struct SignupForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    form_token: String,
}

pub async fn signup_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !state.console.signup {
        return view::not_found();
    }
    let (token, cookie) = auth::form_token(&state, &headers);
    view::with_cookie(
        view::ok(
            "signup.html",
            context! { staff => false, form_token => token, email => "", name => "", country => "", error => "" },
        ),
        cookie,
    )
}

/// Creates the account (the API's `createAccount` service) and its login
/// in one transaction, then logs in.
pub async fn signup(
    State(state): State<AppState>,
    parts: Parts,
    Form(form): Form<SignupForm>,
) -> Response {
    if !state.console.signup {
        return view::not_found();
    }
    if !auth::form_token_ok(&parts.headers, &form.form_token) {
        return view::bad_form();
    }
    let again = |error: String| {
        view::page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "signup.html",
            context! { staff => false, form_token => form.form_token.clone(), email => form.email.clone(), name => form.name.clone(), country => form.country.clone(), error },
        )
    };
    if let Some(problem) = auth::password_problem(&form.password) {
        return again(problem);
    }
    let country = form.country.trim().to_uppercase();
    // The country decides the taxes charged: a customer cannot leave it out.
    if country.is_empty() {
        return again("country: give the two letters of your country, e.g. DE".into());
    }
    match auth::signup_allowed(&state, auth::client_addr(&parts)).await {
        Ok(true) => {}
        Ok(false) => {
            return view::page(
                StatusCode::TOO_MANY_REQUESTS,
                "signup.html",
                context! { staff => false, form_token => form.form_token.clone(), email => form.email.clone(), name => form.name.clone(), country => form.country.clone(), error => "Too many sign-ups from your address. Try again later." },
            );
        }
        Err(e) => return view::failed(e),
    }
    let new = match (directory::AccountForm {
        email: &form.email,
        name: &form.name,
        currency: &state.console.currency,
        credit_limit: 0,
        country: (!country.is_empty()).then_some(country.as_str()),
        time_zone: None,
        language: None,
        email_opt_out: &[],
    })
    .check()
    {
        Ok(new) => new,
        Err(Error::Field(f)) => return again(format!("{}: {}", f.field, f.message)),
        Err(e) => return again(e.to_string()),
    };
    let hash = auth::hash_password(&form.password).await;
    let now = state.clock.now();
    let created = async {
        let mut tx = state.store.begin().await?;
        let account = match directory::create_account(tx.conn(), new, now).await {
            Ok(a) => a,
            Err(e) => {
                tx.rollback().await?;
                return Err(e);
            }
        };
        let login = logins::create(
            tx.conn(),
            NewLogin {
                email: &account.email,
                role: Role::Customer,
                account_id: Some(&account.id),
                name: &account.name,
                password_hash: &hash,
                totp_secret: None,
            },
            now,
        )
        .await?;
        let Some(login) = login else {
            tx.rollback().await?;
            return Err(Error::Conflict("an account with this e-mail exists".into()));
        };
        tx.commit().await?;
        Ok(login)
    }
    .await;
    match created {
        Ok(login) => match auth::start(&state, &login).await {
            Ok(cookie) => view::with_cookie(view::see_other("/"), Some(cookie)),
            Err(e) => view::failed(e),
        },
        // Whether the address has an account is not said more plainly
        // than the API says it to anyone who tries to create one.
        Err(Error::Conflict(_)) => {
            again("An account with this e-mail exists: log in instead.".into())
        }
        Err(Error::Field(f)) => again(format!("{}: {}", f.field, f.message)),
        Err(e) => view::failed(e),
    }
}

#[derive(Serialize)]
struct ServiceRow {
    id: String,
    plan: String,
    status: &'static str,
    price: String,
    period: &'static str,
    paid_until: String,
    hostname: Option<String>,
}

#[derive(Serialize)]
struct InvoiceRow {
    id: String,
    number: String,
    kind: &'static str,
    total: String,
    date: String,
}

pub async fn dashboard(
    State(state): State<AppState>,
    CustomerSession(s): CustomerSession,
) -> Response {
    let Some(principal) = s.principal(Action::AccountRead) else {
        return view::forbidden();
    };
    let Some(account_id) = principal.account_id.clone() else {
        return view::forbidden();
    };
    let page = async {
        let mut r = state.store.reader().await?;
        let account = accounts_repo::get(r.conn(), &account_id).await?;
        let balance =
            ledger_repo::balance(r.conn(), &LedgerAccountId::customer(&account.id)).await?;
        let services = services_repo::list(r.conn(), Some(&account.id), None, None, 200).await?;
        let invoices = invoices_repo::newest(r.conn(), Some(&account.id), 50).await?;
        let payments = crate::store::payments::list_recent(r.conn(), Some(&account.id), 20).await?;
        let mut plans = std::collections::BTreeMap::new();
        for svc in &services.items {
            if !plans.contains_key(&svc.plan_id) {
                let name = crate::store::catalog::get(r.conn(), &svc.plan_id)
                    .await
                    .map(|p| p.spec.name)
                    .unwrap_or_else(|_| svc.plan_id.clone());
                plans.insert(svc.plan_id.clone(), name);
            }
        }
        Ok::<_, Error>((account, balance, services, invoices, payments, plans))
    }
    .await;
    let (account, balance, services, invoices, payments, plans) = match page {
        Ok(p) => p,
        Err(e) => return view::failed(e),
    };
    let zone = account.time_zone.unwrap_or(state.billing.time_zone);
    let cur = account.currency;
    let rows: Vec<ServiceRow> = services
        .items
        .iter()
        .map(|svc| ServiceRow {
            id: svc.id.clone(),
            plan: plans.get(&svc.plan_id).cloned().unwrap_or_default(),
            status: svc.status.as_str(),
            price: view::money(svc.recurring_price, svc.currency),
            period: svc.period.as_str(),
            paid_until: view::when(svc.paid_until, zone),
            hostname: svc.params.get("hostname").cloned(),
        })
        .collect();
    // What renews next, and whether the balance covers it.
    let next = services
        .items
        .iter()
        .filter(|svc| svc.auto_renew && svc.paid_until.is_some() && svc.status.as_str() == "active")
        .min_by_key(|svc| svc.paid_until);
    let available = balance.balance + balance.min_balance.map_or(0, |m| -m);
    let renewal = next.map(|svc| {
        context! {
            service => svc.id.clone(),
            date => view::when(svc.paid_until, zone),
            amount => view::money(svc.recurring_price, svc.currency),
            covered => available >= svc.recurring_price,
        }
    });
    let payments: Vec<minijinja::Value> = payments
        .iter()
        .map(|p| {
            context! {
                id => p.id.clone(), gateway => p.gateway.clone(), status => p.status.as_str(),
                amount => view::money(p.amount, p.currency),
                refunded => (p.refunded_amount > 0).then(|| view::money(p.refunded_amount, p.currency)),
                date => view::when(Some(p.created_at), zone),
            }
        })
        .collect();
    let docs: Vec<InvoiceRow> = invoices
        .iter()
        .map(|i| InvoiceRow {
            id: i.id.clone(),
            number: i.number.clone(),
            kind: i.kind.as_str(),
            total: view::money(i.total, i.currency),
            date: view::when(Some(i.created_at), zone),
        })
        .collect();
    view::ok(
        "dashboard.html",
        context! {
            staff => false,
            csrf => s.csrf,
            name => account.name,
            email => account.email,
            balance => view::money(balance.balance, cur),
            negative => balance.balance < 0,
            services => rows,
            renewal,
            invoices => docs,
            payments,
        },
    )
}

pub async fn service(
    State(state): State<AppState>,
    CustomerSession(s): CustomerSession,
    Path(id): Path<String>,
) -> Response {
    let Some(principal) = s.principal(Action::ServiceRead) else {
        return view::forbidden();
    };
    let loaded = async {
        let mut r = state.store.reader().await?;
        let svc = crate::api::services::authorize(r.conn(), &principal, &id, None).await?;
        let account = accounts_repo::get(r.conn(), &svc.account_id).await?;
        // While it opens: the step the module last reported.
        let progress = if svc.status.as_str() == "opening" {
            let ops =
                services_repo::list_operations(r.conn(), Some(&svc.id), None, None, 100).await?;
            ops.items
                .into_iter()
                .rev()
                .find(|o| o.kind == crate::services::OperationKind::Open)
                .map(|mut o| {
                    o.summarize_for_customer();
                    o.progress
                        .or(o.last_error)
                        .unwrap_or_else(|| "waiting to start".into())
                })
        } else {
            None
        };
        let plan = crate::store::catalog::get(r.conn(), &svc.plan_id).await?;
        // The change list, as the customer may see it: plans still sold.
        let mut change_to = vec![];
        if plan
            .spec
            .customer_actions
            .contains(&crate::catalog::CustomerAction::ChangePlan)
        {
            for id in &plan.spec.change_to {
                if let Ok(p) = crate::store::catalog::get(r.conn(), id).await
                    && p.status == crate::catalog::PlanStatus::Active
                {
                    change_to.push((p.id, p.spec.name));
                }
            }
        }
        Ok::<_, crate::api::error::Problem>((svc, account, progress, plan, change_to))
    }
    .await;
    let (svc, account, progress, plan, change_to) = match loaded {
        Ok(v) => v,
        Err(p) if p.status() == StatusCode::NOT_FOUND || p.status() == StatusCode::FORBIDDEN => {
            return view::not_found();
        }
        Err(p) => return view::failed(p.detail),
    };
    let zone = account.time_zone.unwrap_or(state.billing.time_zone);
    view::ok(
        "service.html",
        context! {
            staff => false,
            csrf => s.csrf,
            id => svc.id,
            status => svc.status.as_str(),
            params => svc.params,
            price => view::money(svc.recurring_price, svc.currency),
            period => svc.period.as_str(),
            paid_until => view::when(svc.paid_until, zone),
            credentials => None::<Vec<(String, String)>>,
            may_reveal => s.principal(Action::ServiceCredentials).is_some(),
            refresh => progress.is_some(),
            progress,
            actions => actions_of(&plan, &svc, change_to),
            auto_renew => svc.auto_renew,
            may_auto_renew => !matches!(svc.status.as_str(), "closing" | "closed")
                && s.principal(Action::ServiceAutoRenew).is_some(),
            request_id => auth::random_token(),
        },
    )
}

/// What the plan lets the customer do with the service in its state.
fn actions_of(
    plan: &crate::catalog::Plan,
    svc: &crate::services::Service,
    change_to: Vec<(String, String)>,
) -> minijinja::Value {
    use crate::catalog::CustomerAction;
    let status = svc.status.as_str();
    let live = matches!(status, "active" | "suspended");
    let periods: Vec<(&'static str, String)> = plan
        .spec
        .prices
        .iter()
        .filter(|p| p.currency == svc.currency)
        .map(|p| (p.period.as_str(), view::money(p.amount, svc.currency)))
        .collect();
    context! {
        prolong => live && plan.spec.customer_actions.contains(&CustomerAction::Prolong) && !periods.is_empty(),
        close => live && plan.spec.customer_actions.contains(&CustomerAction::Close),
        periods,
        change_to => if status == "active" { change_to } else { vec![] },
    }
}

/// Reveals the credentials on the service page (a POST: every reveal is
/// recorded, and is limited like the API's).
pub async fn reveal(
    State(state): State<AppState>,
    CustomerSession(s): CustomerSession,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    let Some(principal) = s.principal(Action::ServiceCredentials) else {
        return view::forbidden();
    };
    let now = state.clock.now();
    let revealed = async {
        let mut tx = state.store.begin().await?;
        let svc = crate::api::services::authorize(tx.conn(), &principal, &id, None).await?;
        if state.reveals.0.check_key(&id).is_err() {
            return Err(crate::api::error::Problem::new(
                crate::api::error::ProblemKind::RateLimited,
                "these credentials were revealed too often in the last hour; try again later",
            ));
        }
        let credentials =
            lifecycle::reveal_credentials(tx.conn(), &id, &state.secrets, &principal.actor(), now)
                .await?;
        let account = accounts_repo::get(tx.conn(), &svc.account_id).await?;
        tx.commit().await?;
        Ok((svc, account, credentials))
    }
    .await;
    let (svc, account, credentials) = match revealed {
        Ok(v) => v,
        Err(p) if p.status() == StatusCode::NOT_FOUND || p.status() == StatusCode::FORBIDDEN => {
            return view::not_found();
        }
        Err(p) if p.status() == StatusCode::TOO_MANY_REQUESTS => {
            return view::message(StatusCode::TOO_MANY_REQUESTS, "Try again later", &p.detail);
        }
        Err(p) => return view::failed(p.detail),
    };
    let zone = account.time_zone.unwrap_or(state.billing.time_zone);
    let credentials: Vec<(String, String)> = credentials.into_iter().collect();
    view::ok(
        "service.html",
        context! {
            staff => false,
            csrf => s.csrf,
            id => svc.id,
            status => svc.status.as_str(),
            params => svc.params,
            price => view::money(svc.recurring_price, svc.currency),
            period => svc.period.as_str(),
            paid_until => view::when(svc.paid_until, zone),
            credentials,
            may_reveal => true,
            refresh => false,
            progress => None::<String>,
            actions => None::<minijinja::Value>,
            auto_renew => svc.auto_renew,
            may_auto_renew => false,
            request_id => auth::random_token(),
        },
    )
}

/// The printable invoice: the same page the API serves as `/html`.
pub async fn invoice(
    State(state): State<AppState>,
    CustomerSession(s): CustomerSession,
    Path(id): Path<String>,
) -> Response {
    let Some(principal) = s.principal(Action::InvoiceRead) else {
        return view::forbidden();
    };
    printable_invoice(&state, &principal, &id).await
}

/// An invoice or credit note the principal may read, as its printable
/// page (the portal's and the staff console's).
pub(super) async fn printable_invoice(
    state: &AppState,
    principal: &crate::api::extract::Principal,
    id: &str,
) -> Response {
    let invoice = match crate::api::invoices::load(state, principal, id).await {
        Ok(i) => i,
        Err(p) if p.status() == StatusCode::NOT_FOUND || p.status() == StatusCode::FORBIDDEN => {
            return view::not_found();
        }
        Err(p) => return view::failed(p.detail),
    };
    match crate::api::invoices::render(state, &invoice).await {
        // The document's own styles are inline; it has no script either.
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
                ),
            ],
            html,
        )
            .into_response(),
        Err(p) => view::failed(p.detail),
    }
}

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    period: String,
    #[serde(default)]
    confirm: String,
    /// Change plan: the plan of the change list.
    #[serde(default)]
    plan_id: String,
    /// Auto-renew: `on` or `off`.
    #[serde(default)]
    auto_renew: String,
    /// Fixed when the page was shown: sending the form twice does it once.
    #[serde(default)]
    request_id: String,
}

/// What a service form asks for.
enum ServiceAction {
    Prolong(crate::calendar::Period),
    Close,
    ChangePlan(String),
    AutoRenew(bool),
}

/// A service form: the API's own services under its idempotency runner,
/// with the plan's customer actions checked as the API checks them.
async fn service_action(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    form: &ActionForm,
    what: &str,
) -> Response {
    use crate::api::idempotency::Reply;
    use crate::catalog::CustomerAction;
    let s = match auth::require(state, headers, Realm::Customer).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !s.csrf_ok(&form.csrf) || !auth::request_id_ok(&form.request_id) {
        return view::bad_form();
    }
    let not_done =
        |title: &str, text: &str| view::message(StatusCode::UNPROCESSABLE_ENTITY, title, text);
    let action = match what {
        "prolong" => match crate::calendar::Period::parse(&form.period) {
            Some(p) => ServiceAction::Prolong(p),
            None => {
                return not_done(
                    "Choose a period",
                    "Go back and choose how long to prolong it by.",
                );
            }
        },
        "close" if form.confirm == "yes" => ServiceAction::Close,
        "close" => {
            return not_done(
                "Not closed",
                "Tick the box to confirm that the service and its data are to be removed.",
            );
        }
        "change-plan" if !form.plan_id.is_empty() => {
            ServiceAction::ChangePlan(form.plan_id.clone())
        }
        "change-plan" => {
            return not_done("Choose a plan", "Go back and choose the plan to change to.");
        }
        "auto-renew" => match form.auto_renew.as_str() {
            "on" => ServiceAction::AutoRenew(true),
            "off" => ServiceAction::AutoRenew(false),
            _ => return view::bad_form(),
        },
        _ => return view::not_found(),
    };
    let (policy_action, plan_action) = match &action {
        ServiceAction::Prolong(_) => (Action::ServiceProlong, Some(CustomerAction::Prolong)),
        ServiceAction::Close => (Action::ServiceClose, Some(CustomerAction::Close)),
        ServiceAction::ChangePlan(_) => {
            (Action::ServiceChangePlan, Some(CustomerAction::ChangePlan))
        }
        ServiceAction::AutoRenew(_) => (Action::ServiceAutoRenew, None),
    };
    let Some(principal) = s.principal(policy_action) else {
        return view::forbidden();
    };
    let request = FormRequest::new(
        what,
        &form.request_id,
        &format!("{id}|{}|{}|{}", form.period, form.plan_id, form.auto_renew),
    );
    let ledger_key = request.ledger_key(
        &principal,
        &format!(
            "{}:{id}",
            if what == "change-plan" {
                "change-plan"
            } else {
                "prolong"
            }
        ),
    );
    let (now, actor, p, sid) = (
        state.clock.now(),
        principal.actor(),
        principal.clone(),
        id.to_owned(),
    );
    let done = request
        .run(state, &principal, |tx| {
            Box::pin(async move {
                crate::api::services::authorize(tx.conn(), &p, &sid, plan_action).await?;
                let c = tx.conn();
                let service = match action {
                    ServiceAction::Prolong(period) => {
                        lifecycle::prolong(c, &sid, period, &actor, ledger_key, now).await?
                    }
                    ServiceAction::Close => lifecycle::close(c, &sid, &actor, now).await?,
                    ServiceAction::ChangePlan(plan) => {
                        lifecycle::request_plan_change(c, &sid, &plan, &actor, &ledger_key, now)
                            .await?
                            .service
                    }
                    ServiceAction::AutoRenew(on) => {
                        lifecycle::set_auto_renew(c, &sid, on, &actor, now).await?
                    }
                };
                Reply::new(
                    StatusCode::OK,
                    crate::api::views::ServiceView::from(service),
                )
            })
        })
        .await;
    match done {
        Ok(_) => view::see_other(&format!("/services/{id}")),
        Err(p) => act::refused(p),
    }
}

/// `prolong`, `close`, `change-plan` or `auto-renew`.
pub async fn act(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, what)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    service_action(&state, &headers, &id, &form, &what).await
}
