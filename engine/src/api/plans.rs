//! `/api/v1/plans`: the catalog.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::error::Problem;
use crate::api::extract::{ApiJson, ApiQuery, IdempotencyKey, Principal};
use crate::api::idempotency::{Idempotency, Reply};
use crate::api::{AppState, PageBody};
use crate::catalog::{Plan, PlanSpec, PlanStatus};
use crate::services::module::missing_requirement;
use crate::store::catalog as repo;

/// Each plan of the change list exists and is provisioned by the same
/// module instance for the same product type (a move to another module is
/// a staff migration, never a plan change).
async fn check_change_list(
    mut c: crate::store::Conn<'_>,
    spec: &PlanSpec,
    own_id: Option<&str>,
) -> Result<(), Problem> {
    for id in &spec.change_to {
        if Some(id.as_str()) == own_id {
            return Err(Problem::invalid(
                "change_to",
                "a plan cannot change to itself",
            ));
        }
        let other = match repo::get(c.reborrow(), id).await {
            Ok(p) => p,
            Err(crate::error::Error::NotFound { .. }) => {
                return Err(Problem::invalid("change_to", format!("no plan {id}")));
            }
            Err(e) => return Err(e.into()),
        };
        if other.spec.module != spec.module || other.spec.product_type != spec.product_type {
            return Err(Problem::invalid(
                "change_to",
                format!(
                    "plan {id} is provisioned by `{}` as {}; a plan changes only to plans of its own module and product type",
                    other.spec.module,
                    other.spec.product_type.as_str()
                ),
            ));
        }
    }
    Ok(())
}

fn check_spec(state: &AppState, spec: &PlanSpec) -> Result<(), Problem> {
    spec.validate()?;
    let Some(module) = state.modules.get(&spec.module) else {
        return Err(Problem::invalid(
            "module",
            format!(
                "no processing module instance named `{}` (known: {})",
                spec.module,
                state.modules.names().join(", ")
            ),
        ));
    };
    let codes: Vec<&str> = spec.addons.iter().map(|a| a.code()).collect();
    if let Some(missing) = missing_requirement(&module.features(), &spec.module_settings, &codes) {
        return Err(Problem::invalid(
            "module_settings",
            format!(
                "module `{}` needs the plan to set `{missing}` (a module setting, or an add-on of that code)",
                spec.module
            ),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/plans", tag = "plans",
    request_body = PlanSpec,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = Plan), (status = 422)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    body: ApiJson<PlanSpec>,
) -> Result<Response, Problem> {
    let mut spec = body.value;
    spec.name = spec.name.trim().to_owned();
    check_spec(&state, &spec)?;
    let now = state.clock.now();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    idem.run(&state, |tx| {
        Box::pin(async move {
            check_change_list(tx.conn(), &spec, None).await?;
            Reply::new(
                StatusCode::CREATED,
                repo::create(tx.conn(), spec, now).await?,
            )
        })
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/plans/{id}", tag = "plans",
    params(("id" = String, Path)),
    responses((status = 200, body = Plan), (status = 404)),
    security(("bearer" = [])))]
/// A customer sees active plans only, without their module settings.
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Plan>, Problem> {
    let mut r = state.store.reader().await?;
    let plan = repo::get(r.conn(), &id).await?;
    if principal.is_staff() {
        return Ok(Json(plan));
    }
    if plan.status != PlanStatus::Active {
        return Err(Problem::not_found(format!("plan {id} not found")));
    }
    Ok(Json(plan.for_customers()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PlanQuery {
    /// `active` or `archived`; customers always see active plans only.
    pub status: Option<PlanStatus>,
    pub limit: Option<usize>,
    pub after: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/plans", tag = "plans",
    params(PlanQuery),
    responses((status = 200, body = PageBody<Plan>)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<PlanQuery>,
) -> Result<Json<PageBody<Plan>>, Problem> {
    let limit = crate::api::page_limit(&state, q.limit)?;
    let staff = principal.is_staff();
    let status = if staff {
        q.status
    } else {
        Some(PlanStatus::Active)
    };
    let mut r = state.store.reader().await?;
    let mut page: PageBody<Plan> = repo::list(r.conn(), status, q.after.as_deref(), limit)
        .await?
        .into();
    if !staff {
        page.data = page.data.into_iter().map(Plan::for_customers).collect();
    }
    Ok(Json(page))
}

#[utoipa::path(put, path = "/api/v1/plans/{id}", tag = "plans",
    params(("id" = String, Path)), request_body = PlanSpec,
    responses((status = 200, body = Plan), (status = 422)),
    security(("bearer" = [])))]
/// Replaces a plan's definition. Services already sold keep their price
/// until they renew.
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: ApiJson<PlanSpec>,
) -> Result<Json<Plan>, Problem> {
    let mut spec = body.value;
    spec.name = spec.name.trim().to_owned();
    check_spec(&state, &spec)?;
    let mut tx = state.store.begin().await?;
    check_change_list(tx.conn(), &spec, Some(&id)).await?;
    let current = repo::get(tx.conn(), &id).await?;
    if (current.spec.module != spec.module || current.spec.product_type != spec.product_type)
        && repo::live_services(tx.conn(), &id).await? > 0
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "plan-in-use",
            "Plan in use",
            "services on this plan would silently move to another module or product type; \
             create a new plan and migrate them (POST /services/{id}/migrate)",
        ));
    }
    let plan = repo::update(tx.conn(), &id, spec, state.clock.now()).await?;
    tx.commit().await?;
    Ok(Json(plan))
}

#[utoipa::path(post, path = "/api/v1/plans/{id}/archive", tag = "plans",
    params(("id" = String, Path)),
    responses((status = 200, body = Plan)),
    security(("bearer" = [])))]
/// Stops selling a plan. Plans are never deleted: services keep using them.
pub async fn archive(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Plan>, Problem> {
    let mut tx = state.store.begin().await?;
    let plan = repo::archive(tx.conn(), &id, state.clock.now()).await?;
    tx.commit().await?;
    Ok(Json(plan))
}
