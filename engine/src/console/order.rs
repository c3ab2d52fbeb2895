//! Ordering from the portal: the catalog, a plan's form with its periods
//! and add-ons, the price preview (the API's own quote) and the order
//! (the API's own order service), paid from the balance.

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::Serialize;

use super::auth::CustomerSession;
use super::auth::{self, SessionCtx};
use super::view;
use crate::api::AppState;
use crate::api::extract::IdempotencyKey;
use crate::api::idempotency::{Idempotency, Reply};
use crate::api::policy::Action;
use crate::calendar::Period;
use crate::catalog::{self, Addon, AddonValues, Plan, PlanStatus};
use crate::error::Error;
use crate::store::{accounts as accounts_repo, catalog as plans_repo};

#[derive(Serialize)]
struct PlanCard {
    id: String,
    name: String,
    from: String,
    period: &'static str,
}

/// The catalog: active plans sold in the account's currency.
pub async fn catalog(
    State(state): State<AppState>,
    CustomerSession(s): CustomerSession,
) -> Response {
    let (Some(_), Some(account_id)) = (s.principal(Action::PlanRead), s.login.account_id.clone())
    else {
        return view::forbidden();
    };
    let loaded = async {
        let mut r = state.store.reader().await?;
        let account = accounts_repo::get(r.conn(), &account_id).await?;
        let plans = plans_repo::list(r.conn(), Some(PlanStatus::Active), None, 500).await?;
        Ok::<_, Error>((account, plans.items))
    }
    .await;
    let (account, plans) = match loaded {
        Ok(v) => v,
        Err(e) => return view::failed(e),
    };
    let cards: Vec<PlanCard> = plans
        .iter()
        .filter_map(|p| {
            let cheapest = p
                .spec
                .prices
                .iter()
                .filter(|pr| pr.currency == account.currency)
                .min_by_key(|pr| (pr.period.units(), pr.amount))?;
            Some(PlanCard {
                id: p.id.clone(),
                name: p.spec.name.clone(),
                from: view::money(cheapest.amount, account.currency),
                period: cheapest.period.as_str(),
            })
        })
        .collect();
    view::ok(
        "catalog.html",
        context! { staff => false, csrf => s.csrf, plans => cards },
    )
}

#[derive(Serialize)]
struct Field {
    code: String,
    name: String,
    /// `boolean`, `integer` or `enum`.
    kind: &'static str,
    value: String,
    min: i64,
    max: i64,
    choices: Vec<(String, String)>,
}

/// The form's fields: `period`, `addon.CODE`; booleans are present when on.
fn parse_form(
    plan: &Plan,
    pairs: &[(String, String)],
) -> (Option<Period>, AddonValues, Option<String>) {
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let period = get("period").and_then(Period::parse);
    let mut addons = AddonValues::new();
    let mut problem = None;
    for addon in &plan.spec.addons {
        let key = format!("addon.{}", addon.code());
        match addon {
            Addon::Boolean { code, .. } => {
                addons.insert(code.clone(), serde_json::Value::Bool(get(&key).is_some()));
            }
            Addon::Integer { code, name, .. } => match get(&key).map(str::trim) {
                None | Some("") => {}
                Some(v) => match v.parse::<i64>() {
                    Ok(n) => {
                        addons.insert(code.clone(), serde_json::json!(n));
                    }
                    Err(_) => problem = Some(format!("{name}: a whole number, please")),
                },
            },
            Addon::Enum { code, .. } => {
                if let Some(v) = get(&key).filter(|v| !v.is_empty()) {
                    addons.insert(code.clone(), serde_json::json!(v));
                }
            }
        }
    }
    (period, addons, problem)
}

fn fields(plan: &Plan, addons: &AddonValues) -> Vec<Field> {
    plan.spec
        .addons
        .iter()
        .map(|a| {
            let value = addons
                .get(a.code())
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            match a {
                Addon::Boolean { code, name, .. } => Field {
                    code: code.clone(),
                    name: name.clone(),
                    kind: "boolean",
                    value,
                    min: 0,
                    max: 1,
                    choices: vec![],
                },
                Addon::Integer {
                    code,
                    name,
                    min,
                    max,
                    ..
                } => Field {
                    code: code.clone(),
                    name: name.clone(),
                    kind: "integer",
                    value,
                    min: *min,
                    max: *max,
                    choices: vec![],
                },
                Addon::Enum {
                    code,
                    name,
                    choices,
                    default,
                } => Field {
                    code: code.clone(),
                    name: name.clone(),
                    kind: "enum",
                    value: if value.is_empty() {
                        default.clone().unwrap_or_default()
                    } else {
                        value
                    },
                    min: 0,
                    max: 0,
                    choices: choices
                        .iter()
                        .map(|c| {
                            (
                                c.value.clone(),
                                if c.name.is_empty() {
                                    c.value.clone()
                                } else {
                                    c.name.clone()
                                },
                            )
                        })
                        .collect(),
                },
            }
        })
        .collect()
}

async fn load_plan(
    state: &AppState,
    s: &SessionCtx,
    plan_id: &str,
) -> Result<(Plan, crate::accounts::Account), Response> {
    let Some(account_id) = s.login.account_id.clone() else {
        return Err(view::forbidden());
    };
    let loaded = async {
        let mut r = state.store.reader().await?;
        let plan = plans_repo::get(r.conn(), plan_id).await?;
        let account = accounts_repo::get(r.conn(), &account_id).await?;
        Ok::<_, Error>((plan, account))
    }
    .await;
    match loaded {
        Ok((plan, _)) if plan.status != PlanStatus::Active => Err(view::not_found()),
        Ok(v) => Ok(v),
        Err(Error::NotFound { .. }) => Err(view::not_found()),
        Err(e) => Err(view::failed(e)),
    }
}

#[allow(clippy::too_many_arguments)]
async fn order_page(
    state: &AppState,
    status: StatusCode,
    s: &SessionCtx,
    plan: &Plan,
    account: &crate::accounts::Account,
    period: Option<Period>,
    addons: &AddonValues,
    preview: bool,
    error: String,
) -> Response {
    let periods: Vec<(&'static str, String)> = plan
        .spec
        .prices
        .iter()
        .filter(|p| p.currency == account.currency)
        .map(|p| (p.period.as_str(), view::money(p.amount, account.currency)))
        .collect();
    let period = period.or_else(|| {
        plan.spec
            .prices
            .iter()
            .find(|p| p.currency == account.currency)
            .map(|p| p.period)
    });
    // The preview is the API's quote, with the account's tax on top as the
    // order charges it.
    let (quote, error) = match (preview, period) {
        (true, Some(p)) if error.is_empty() => {
            match catalog::quote(&plan.spec, p, account.currency, addons, true) {
                Ok(q) => {
                    let gross = async {
                        let mut r = state.store.reader().await?;
                        let product = plan.spec.product_type.as_str();
                        let now =
                            crate::charges::gross_for(r.conn(), &account.id, product, q.total)
                                .await?;
                        let then =
                            crate::charges::gross_for(r.conn(), &account.id, product, q.recurring)
                                .await?;
                        Ok::<_, Error>((now, then))
                    }
                    .await;
                    match gross {
                        Ok((due, renews)) => (
                            Some(context! {
                                lines => q.lines.iter().map(|l| (l.description.clone(), view::money(l.amount, q.currency))).collect::<Vec<_>>(),
                                tax => (due != q.total).then(|| view::money(due - q.total, q.currency)),
                                total => view::money(due, q.currency),
                                recurring => view::money(renews, q.currency),
                            }),
                            error,
                        ),
                        Err(e) => return view::failed(e),
                    }
                }
                Err(e) => (None, e.to_string()),
            }
        }
        _ => (None, error),
    };
    view::page(
        status,
        "order.html",
        context! {
            staff => false, csrf => s.csrf.clone(),
            plan_id => plan.id.clone(), plan_name => plan.spec.name.clone(),
            periods, period => period.map(Period::as_str),
            fields => fields(plan, addons),
            quote, error,
            request_id => auth::random_token(),
        },
    )
}

/// The plan's form.
pub async fn form(
    State(state): State<AppState>,
    CustomerSession(s): CustomerSession,
    Path(plan_id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    if s.principal(Action::Order).is_none() {
        return view::forbidden();
    }
    let (plan, account) = match load_plan(&state, &s, &plan_id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (period, addons, problem) = parse_form(&plan, &query);
    order_page(
        &state,
        StatusCode::OK,
        &s,
        &plan,
        &account,
        period,
        &addons,
        false,
        problem.unwrap_or_default(),
    )
    .await
}

/// The price of what the form holds: a POST (with the form's CSRF token, so
/// no token ever lands in a URL) that changes nothing.
pub async fn preview(
    State(state): State<AppState>,
    CustomerSession(s): CustomerSession,
    Path(plan_id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let token = pairs
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if !s.csrf_ok(token) {
        return view::bad_form();
    }
    if s.principal(Action::Order).is_none() {
        return view::forbidden();
    }
    let (plan, account) = match load_plan(&state, &s, &plan_id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (period, addons, problem) = parse_form(&plan, &pairs);
    order_page(
        &state,
        StatusCode::OK,
        &s,
        &plan,
        &account,
        period,
        &addons,
        true,
        problem.unwrap_or_default(),
    )
    .await
}

/// Places the order (from the balance; an order the balance does not cover
/// waits as `ordered` with the amount due). The form's request id is the
/// Idempotency-Key, so sending it twice orders once.
pub async fn place(
    State(state): State<AppState>,
    CustomerSession(s): CustomerSession,
    Path(plan_id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if !s.csrf_ok(&get("csrf")) {
        return view::bad_form();
    }
    let Some(principal) = s.principal(Action::Order) else {
        return view::forbidden();
    };
    let request_id = get("request_id");
    if !auth::request_id_ok(&request_id) {
        return view::bad_form();
    }
    let (plan, account) = match load_plan(&state, &s, &plan_id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (period, addons, problem) = parse_form(&plan, &pairs);
    let again = |error: String| {
        order_page(
            &state,
            StatusCode::UNPROCESSABLE_ENTITY,
            &s,
            &plan,
            &account,
            period,
            &addons,
            true,
            error,
        )
    };
    if let Some(problem) = problem {
        return again(problem).await;
    }
    let Some(period) = period else {
        return again("Choose a period.".into()).await;
    };
    let order = crate::lifecycle::OrderRequest {
        account_id: account.id.clone(),
        plan_id: plan.id.clone(),
        period,
        addons: addons.clone(),
        auto_renew: None,
    };
    let key = IdempotencyKey(Some(format!("console-order:{request_id}")));
    let hash = auth::sha256_hex(&format!(
        "{}|{}|{}",
        plan.id,
        period.as_str(),
        serde_json::to_string(&addons).unwrap_or_default()
    ));
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &hash,
    };
    let now = state.clock.now();
    let actor = principal.actor();
    let billing = state.billing.clone();
    let placed = idem
        .run(&state, |tx| {
            Box::pin(async move {
                let service =
                    crate::lifecycle::place_order(tx.conn(), order, &billing, &actor, now).await?;
                metrics::counter!("bursar_orders_total", "status" => service.status.as_str())
                    .increment(1);
                Reply::new(
                    StatusCode::CREATED,
                    crate::api::views::ServiceView::from(service),
                )
            })
        })
        .await;
    match placed {
        Ok(response) => {
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let id = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned));
            match id {
                Some(id) => view::see_other(&format!("/services/{id}")),
                None => view::failed("an order's reply without an id"),
            }
        }
        Err(p) if p.status().is_client_error() => again(p.detail).await,
        Err(p) => view::failed(p.detail),
    }
}
