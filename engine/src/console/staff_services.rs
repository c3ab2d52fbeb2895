//! The staff console's services: a filtered list, a service with its
//! operations and event timeline, and the actions staff take on it
//! (suspend with a reason, resume, prolong, close), each through the same
//! lifecycle services and idempotency runner as the API.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::act::{self, FormRequest};
use super::auth::StaffSession;
use super::auth::{self, SessionCtx};
use super::staff::who;
use super::view;
use crate::api::AppState;
use crate::api::idempotency::Reply;
use crate::api::policy::Action;
use crate::api::views::ServiceView;
use crate::calendar::Period;
use crate::clock::from_micros;
use crate::error::Error;
use crate::lifecycle;
use crate::money::Currency;
use crate::services::{ServiceStatus, SuspendReason};
use crate::sql;
use crate::store::{accounts as accounts_repo, catalog as plans_repo, services as services_repo};

const STATUSES: [&str; 6] = [
    "ordered",
    "opening",
    "active",
    "suspended",
    "closing",
    "closed",
];

#[derive(Deserialize, Default)]
pub struct Filter {
    #[serde(default)]
    status: String,
    #[serde(default)]
    plan: String,
    #[serde(default)]
    module: String,
    /// An account id or e-mail.
    #[serde(default)]
    account: String,
}

#[derive(Serialize)]
struct Row {
    id: String,
    account_id: String,
    email: String,
    plan: String,
    module: String,
    status: String,
    price: String,
    paid_until: String,
}

/// Services by status, plan, module and account, newest first.
pub async fn list(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Query(filter): Query<Filter>,
) -> Response {
    if s.principal(Action::ServiceRead).is_none() {
        return view::forbidden();
    }
    let status = filter.status.trim();
    let plan = filter.plan.trim();
    let module = filter.module.trim();
    let account = filter.account.trim();
    type Found = (
        String,
        String,
        String,
        String,
        String,
        String,
        i64,
        String,
        Option<i64>,
    );
    let loaded = async {
        let mut r = state.store.reader().await?;
        // An account named by id or e-mail is found first, so that its
        // services are read through their index, not picked out of all.
        let account: Option<String> = if account.is_empty() {
            None
        } else {
            let found: Option<String> = sql!(&mut r.conn(), c => sqlx::query_scalar(
                "SELECT id FROM accounts WHERE id = $1 OR LOWER(email) = LOWER($1) LIMIT 1")
                .bind(account).fetch_optional(&mut **c).await)?;
            Some(found.unwrap_or_default())
        };
        let by_account = if account.is_some() {
            "s.account_id = $4"
        } else {
            "$4 = ''"
        };
        let q = format!(
            "SELECT s.id, s.account_id, a.email, p.name, p.module, s.status, s.recurring_price, s.currency, s.paid_until
             FROM services s JOIN plans p ON p.id = s.plan_id JOIN accounts a ON a.id = s.account_id
             WHERE {by_account} AND ($1 = '' OR s.status = $1) AND ($2 = '' OR s.plan_id = $2)
               AND ($3 = '' OR p.module = $3)
             ORDER BY s.id DESC LIMIT 200"
        );
        let rows: Vec<Found> = sql!(&mut r.conn(), c => sqlx::query_as(&q)
            .bind(status).bind(plan).bind(module).bind(account.unwrap_or_default())
            .fetch_all(&mut **c).await)?;
        let plans: Vec<(String, String, String)> = sql!(&mut r.conn(), c => sqlx::query_as(
            "SELECT id, name, module FROM plans ORDER BY name, id")
            .fetch_all(&mut **c).await)?;
        Ok::<_, Error>((rows, plans))
    }
    .await;
    let (rows, plans) = match loaded {
        Ok(v) => v,
        Err(e) => return view::failed(e),
    };
    let zone = state.billing.time_zone;
    let rows: Vec<Row> = rows
        .into_iter()
        .map(
            |(id, account_id, email, plan, module, status, price, currency, paid_until)| Row {
                price: Currency::from_code(&currency)
                    .map(|c| view::money(price, c))
                    .unwrap_or_else(|_| format!("{price} {currency}")),
                paid_until: view::when(paid_until.map(from_micros), zone),
                id,
                account_id,
                email,
                plan,
                module,
                status,
            },
        )
        .collect();
    let mut modules: Vec<String> = plans.iter().map(|(_, _, m)| m.clone()).collect();
    modules.sort();
    modules.dedup();
    let plans: Vec<minijinja::Value> = plans
        .into_iter()
        .map(|(id, name, _)| context! { id, name })
        .collect();
    view::ok(
        "staff_services.html",
        context! {
            staff => true, csrf => s.csrf.clone(), who => who(&s),
            services => rows, plans, modules, statuses => STATUSES,
            status, plan, module, account,
        },
    )
}

#[derive(Serialize)]
struct OperationRow {
    id: String,
    kind: &'static str,
    status: &'static str,
    attempts: i64,
    error: Option<String>,
    progress: Option<String>,
    at: String,
}

#[derive(Serialize)]
struct EventRow {
    at: String,
    action: String,
    from: String,
    to: String,
    reason: Option<String>,
    actor: String,
    detail: Option<String>,
}

async fn page(
    state: &AppState,
    s: &SessionCtx,
    id: &str,
    notice: String,
    status: StatusCode,
) -> Response {
    let loaded = async {
        let mut r = state.store.reader().await?;
        let svc = services_repo::get(r.conn(), id).await?;
        let account = accounts_repo::get(r.conn(), &svc.account_id).await?;
        let plan = plans_repo::get(r.conn(), &svc.plan_id).await?;
        let ops = services_repo::list_operations(r.conn(), Some(id), None, None, 100).await?;
        let events = services_repo::events(r.conn(), id, None, 500).await?;
        let mut change_to = vec![];
        for other in &plan.spec.change_to {
            if let Ok(p) = plans_repo::get(r.conn(), other).await {
                change_to.push((p.id, p.spec.name));
            }
        }
        Ok::<_, Error>((svc, account, plan, ops.items, events.items, change_to))
    }
    .await;
    let (svc, account, plan, ops, events, change_to) = match loaded {
        Ok(v) => v,
        Err(Error::NotFound { .. }) => return view::not_found(),
        Err(e) => return view::failed(e),
    };
    let zone = state.billing.time_zone;
    let operations: Vec<OperationRow> = ops
        .into_iter()
        .rev()
        .map(|o| OperationRow {
            id: o.id,
            kind: o.kind.as_str(),
            status: o.status.as_str(),
            attempts: o.attempts,
            error: o.last_error,
            progress: o.progress,
            at: view::when(Some(o.updated_at), zone),
        })
        .collect();
    let timeline: Vec<EventRow> = events
        .into_iter()
        .rev()
        .map(|e| EventRow {
            at: view::when(Some(e.at), zone),
            action: e.action,
            from: e.from_status,
            to: e.to_status,
            reason: e.reason,
            actor: e.actor,
            detail: e.detail,
        })
        .collect();
    let st = svc.status;
    let live = matches!(st, ServiceStatus::Active | ServiceStatus::Suspended);
    let periods: Vec<(&'static str, String)> = plan
        .spec
        .prices
        .iter()
        .filter(|p| p.currency == svc.currency)
        .map(|p| (p.period.as_str(), view::money(p.amount, svc.currency)))
        .collect();
    let may = |a: Action| s.principal(a).is_some();
    let change_to: Vec<(String, String)> = change_to
        .into_iter()
        .filter(|_| st == ServiceStatus::Active)
        .collect();
    view::page(
        status,
        "staff_service.html",
        context! {
            staff => true, csrf => s.csrf.clone(), who => who(s),
            id => svc.id, account_id => svc.account_id, email => account.email,
            plan => plan.spec.name, plan_id => plan.id, module => plan.spec.module,
            status => st.as_str(),
            suspend_reason => svc.suspend_reason.map(SuspendReason::as_str),
            params => svc.params,
            price => view::money(svc.recurring_price, svc.currency),
            period => svc.period.as_str(),
            auto_renew => svc.auto_renew,
            paid_until => view::when(svc.paid_until, zone),
            operations, timeline, periods, notice,
            may_suspend => st == ServiceStatus::Active && may(Action::ServiceSuspend),
            may_resume => st == ServiceStatus::Suspended && may(Action::ServiceResume),
            may_prolong => live && may(Action::ServiceProlong),
            may_close => (live || st == ServiceStatus::Ordered) && may(Action::ServiceClose),
            may_auto_renew => !matches!(st, ServiceStatus::Closing | ServiceStatus::Closed)
                && may(Action::ServiceAutoRenew),
            change_to => if may(Action::ServiceChangePlan) { change_to } else { vec![] },
            request_id => auth::random_token(),
        },
    )
}

pub async fn show(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path(id): Path<String>,
) -> Response {
    if s.principal(Action::ServiceRead).is_none() {
        return view::forbidden();
    }
    page(&state, &s, &id, String::new(), StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    request_id: String,
    /// Suspend: `admin` or `abuse`.
    #[serde(default)]
    reason: String,
    /// Prolong: the period.
    #[serde(default)]
    period: String,
    /// Close: the confirmation box.
    #[serde(default)]
    confirm: String,
    /// Change plan: the new plan.
    #[serde(default)]
    plan_id: String,
    /// Auto-renew: `on` or `off`.
    #[serde(default)]
    auto_renew: String,
}

enum StaffAction {
    Suspend(SuspendReason),
    Resume,
    Prolong(Period),
    Close,
    ChangePlan(String),
    AutoRenew(bool),
}

/// `suspend`, `resume`, `prolong` or `close`, as the form says.
pub async fn act(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path((id, what)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) || !auth::request_id_ok(&form.request_id) {
        return view::bad_form();
    }
    let refuse = |why: &str| {
        page(
            &state,
            &s,
            &id,
            why.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
    };
    let (action, policy) = match what.as_str() {
        "suspend" => match form.reason.as_str() {
            "admin" => (
                StaffAction::Suspend(SuspendReason::Admin),
                Action::ServiceSuspend,
            ),
            "abuse" => (
                StaffAction::Suspend(SuspendReason::Abuse),
                Action::ServiceSuspend,
            ),
            _ => return refuse("Choose why it is suspended: admin or abuse.").await,
        },
        "resume" => (StaffAction::Resume, Action::ServiceResume),
        "prolong" => match Period::parse(&form.period) {
            Some(p) => (StaffAction::Prolong(p), Action::ServiceProlong),
            None => return refuse("Choose the period to prolong it by.").await,
        },
        "close" if form.confirm == "yes" => (StaffAction::Close, Action::ServiceClose),
        "close" => return refuse("Tick the box to confirm the service is to be closed.").await,
        "change-plan" if !form.plan_id.is_empty() => (
            StaffAction::ChangePlan(form.plan_id.clone()),
            Action::ServiceChangePlan,
        ),
        "change-plan" => return refuse("Choose the plan to change to.").await,
        "auto-renew" => match form.auto_renew.as_str() {
            "on" => (StaffAction::AutoRenew(true), Action::ServiceAutoRenew),
            "off" => (StaffAction::AutoRenew(false), Action::ServiceAutoRenew),
            _ => return view::bad_form(),
        },
        _ => return view::not_found(),
    };
    let Some(principal) = s.principal(policy) else {
        return view::forbidden();
    };
    let request = FormRequest::new(
        &format!("staff-{what}"),
        &form.request_id,
        &format!(
            "{id}|{}|{}|{}|{}",
            form.reason, form.period, form.plan_id, form.auto_renew
        ),
    );
    let purpose = if what == "change-plan" {
        "change-plan"
    } else {
        "prolong"
    };
    let ledger_key = request.ledger_key(&principal, &format!("{purpose}:{id}"));
    let (now, actor, sid) = (state.clock.now(), principal.actor(), id.clone());
    let done = request
        .run(&state, &principal, |tx| {
            Box::pin(async move {
                let c = tx.conn();
                let service = match action {
                    StaffAction::Suspend(r) => lifecycle::suspend(c, &sid, r, &actor, now).await?,
                    StaffAction::Resume => lifecycle::resume(c, &sid, &actor, now).await?,
                    StaffAction::Prolong(p) => {
                        lifecycle::prolong(c, &sid, p, &actor, ledger_key, now).await?
                    }
                    StaffAction::Close => lifecycle::close(c, &sid, &actor, now).await?,
                    StaffAction::ChangePlan(plan) => {
                        lifecycle::request_plan_change(c, &sid, &plan, &actor, &ledger_key, now)
                            .await?
                            .service
                    }
                    StaffAction::AutoRenew(on) => {
                        lifecycle::set_auto_renew(c, &sid, on, &actor, now).await?
                    }
                };
                Reply::new(StatusCode::OK, ServiceView::from(service))
            })
        })
        .await;
    match done {
        Ok(_) => view::see_other(&format!("/staff/services/{id}")),
        Err(p) => match act::refusal(&p) {
            Some((StatusCode::NOT_FOUND, _)) => view::not_found(),
            Some((status, detail)) => page(&state, &s, &id, detail, status).await,
            None => view::failed(p.detail),
        },
    }
}
