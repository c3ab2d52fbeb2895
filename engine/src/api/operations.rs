//! `/api/v1/operations`: the provisioning queue, and the manual queue staff
//! work from.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::api::error::Problem;
use crate::api::extract::{ApiQuery, IdempotencyKey, OptionalJson, Principal};
use crate::api::idempotency::{Idempotency, Reply};
use crate::api::views::*;
use crate::api::{AppState, PageBody, page_limit};
use crate::lifecycle::operations as service;
use crate::services::OperationStatus;
use crate::store::services as repo;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OperationQuery {
    /// e.g. `manual` for the operations waiting for staff.
    pub status: Option<OperationStatus>,
    pub service_id: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    #[param(value_type = Option<String>, pattern = "^[a-z]{1,8}_[0-9a-f]{32}$")]
    pub after: Option<crate::api::IdCursor>,
}

#[utoipa::path(get, path = "/api/v1/operations", operation_id = "listOperations", tag = "operations",
    params(OperationQuery),
    responses((status = 200, body = PageBody<OperationView>)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<OperationQuery>,
) -> Result<Json<PageBody<OperationView>>, Problem> {
    let limit = page_limit(&state, q.limit)?;
    let mut r = state.store.reader().await?;
    let page = repo::list_operations(
        r.conn(),
        q.service_id.as_deref(),
        q.status,
        q.after.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(page.into()))
}

#[utoipa::path(get, path = "/api/v1/operations/{id}", operation_id = "getOperation", tag = "operations",
    params(("id" = String, Path)),
    responses((status = 200, body = OperationView)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<OperationView>, Problem> {
    let mut r = state.store.reader().await?;
    Ok(Json(repo::get_operation(r.conn(), &id).await?.into()))
}

#[utoipa::path(post, path = "/api/v1/operations/{id}/retry", operation_id = "retryOperation", tag = "operations",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = OperationView), (status = 409, description = "not in the manual queue")),
    security(("bearer" = [])))]
/// Puts an operation from the manual queue back in the queue, due now,
/// with a fresh set of attempts.
pub async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJson<crate::api::services::Empty>,
) -> Result<Response, Problem> {
    let now = state.clock.now();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    idem.run(&state, |tx| {
        Box::pin(async move {
            Reply::new(
                StatusCode::OK,
                OperationView::from(service::retry_manual(tx.conn(), &id, now).await?),
            )
        })
    })
    .await
}

/// Staff did the work by hand.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// Params to store on the service (server id, IPs…).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

#[utoipa::path(post, path = "/api/v1/operations/{id}/complete", operation_id = "completeOperation", tag = "operations",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = CompleteRequest,
    responses((status = 200, body = OperationView), (status = 409)),
    security(("bearer" = [])))]
/// Marks an operation from the manual queue done, with what it would have
/// returned; the service moves on as if the module had done it.
pub async fn complete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJson<CompleteRequest>,
) -> Result<Response, Problem> {
    let now = state.clock.now();
    let actor = principal.actor();
    let params: Vec<(String, String)> = body.value.params.into_iter().collect();
    let secrets = state.secrets.clone();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    idem.run(&state, |tx| {
        Box::pin(async move {
            let op =
                service::complete_manual(tx.conn(), &id, &params, &secrets, &actor, now).await?;
            Reply::new(StatusCode::OK, OperationView::from(op))
        })
    })
    .await
}
