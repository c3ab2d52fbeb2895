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
use crate::api::views::*;
use crate::api::{AppState, PageBody};
use crate::catalog::{Plan, PlanSpec, PlanStatus};
use crate::plans;
use crate::store::catalog as repo;

#[utoipa::path(post, path = "/api/v1/plans", operation_id = "createPlan", tag = "plans",
    request_body = PlanSpec,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 201, body = PlanView), (status = 422)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    body: ApiJson<PlanSpec>,
) -> Result<Response, Problem> {
    let spec = body.value;
    let now = state.clock.now();
    let modules = state.modules.clone();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    idem.run(&state, |tx| {
        Box::pin(async move {
            Reply::new(
                StatusCode::CREATED,
                PlanView::from(plans::create(tx.conn(), &modules, spec, now).await?),
            )
        })
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/plans/{id}", operation_id = "getPlan", tag = "plans",
    params(("id" = String, Path)),
    responses((status = 200, body = PlanView), (status = 404)),
    security(("bearer" = [])))]
/// A customer sees active plans only, without their module settings.
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<PlanView>, Problem> {
    let mut r = state.store.reader().await?;
    let plan = repo::get(r.conn(), &id).await?;
    if principal.is_staff() {
        return Ok(Json(plan.into()));
    }
    if plan.status != PlanStatus::Active {
        return Err(Problem::not_found(format!("plan {id} not found")));
    }
    Ok(Json(plan.for_customers().into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PlanQuery {
    /// `active` or `archived`; customers always see active plans only.
    pub status: Option<PlanStatus>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    #[param(value_type = Option<String>, pattern = "^[a-z]{1,8}_[0-9a-f]{32}$")]
    pub after: Option<crate::api::IdCursor>,
}

#[utoipa::path(get, path = "/api/v1/plans", operation_id = "listPlans", tag = "plans",
    params(PlanQuery),
    responses((status = 200, body = PageBody<PlanView>)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<PlanQuery>,
) -> Result<Json<PageBody<PlanView>>, Problem> {
    let limit = crate::api::page_limit(&state, q.limit)?;
    let staff = principal.is_staff();
    let status = if staff {
        q.status
    } else {
        Some(PlanStatus::Active)
    };
    let mut r = state.store.reader().await?;
    let mut page = repo::list(r.conn(), status, q.after.as_deref(), limit).await?;
    if !staff {
        page.items = page.items.into_iter().map(Plan::for_customers).collect();
    }
    let page: PageBody<PlanView> = page.into();
    Ok(Json(page))
}

#[utoipa::path(put, path = "/api/v1/plans/{id}", operation_id = "updatePlan", tag = "plans",
    params(("id" = String, Path)), request_body = PlanSpec,
    responses((status = 200, body = PlanView), (status = 422)),
    security(("bearer" = [])))]
/// Replaces a plan's definition. Services already sold keep their price
/// until they renew.
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: ApiJson<PlanSpec>,
) -> Result<Json<PlanView>, Problem> {
    let mut tx = state.store.begin().await?;
    let plan = plans::update(
        tx.conn(),
        &state.modules,
        &id,
        body.value,
        state.clock.now(),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(plan.into()))
}

#[utoipa::path(post, path = "/api/v1/plans/{id}/archive", operation_id = "archivePlan", tag = "plans",
    params(("id" = String, Path)),
    responses((status = 200, body = PlanView)),
    security(("bearer" = [])))]
/// Stops selling a plan. Plans are never deleted: services keep using them.
pub async fn archive(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PlanView>, Problem> {
    let mut tx = state.store.begin().await?;
    let plan = plans::archive(tx.conn(), &id, state.clock.now()).await?;
    tx.commit().await?;
    Ok(Json(plan.into()))
}
