//! `/api/v1/orders` and `/api/v1/services`: ordering and the service
//! lifecycle.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{Problem, ProblemKind};
use crate::api::extract::{ApiJson, ApiQuery, IdempotencyKey, OptionalJson, Principal};
use crate::api::idempotency::{Idempotency, Reply};
use crate::api::policy::Reach;
use crate::api::views::*;
use crate::api::{AppState, ListQuery, PageBody, SeqListQuery, page_limit};
use crate::calendar::Period;
use crate::catalog::{AddonValues, CustomerAction};
use crate::lifecycle::order_batch::BatchOrder;
use crate::lifecycle::{self, OrderRequest};
use crate::services::proration::Proration;
use crate::services::{Operation, Service, ServiceStatus, SuspendReason};
use crate::store::Conn;
use crate::store::catalog as plans_repo;
use crate::store::services as repo;

/// An order for a plan.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// The ordering account; a customer key may leave it out.
    pub account_id: Option<String>,
    pub plan_id: String,
    #[schema(example = "1m")]
    pub period: Period,
    /// Add-on code → value (`true`, a number, or a choice).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub addons: AddonValues,
    /// Overrides the plan's default.
    pub auto_renew: Option<bool>,
}

#[utoipa::path(post, path = "/api/v1/orders", operation_id = "createOrder", tag = "services",
    request_body = CreateOrder,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses(
        (status = 201, body = ServiceView, description = "`opening` when paid from the balance, else `ordered` with `amount_due`"),
        (status = 422, description = "archived plan, unsold period or currency, add-on out of range")),
    security(("bearer" = [])))]
pub async fn order(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    body: ApiJson<CreateOrder>,
) -> Result<Response, Problem> {
    let req = body.value;
    let account_id = match (req.account_id, &principal.account_id) {
        (Some(a), _) => a,
        (None, Some(own)) => own.clone(),
        (None, None) => {
            return Err(Problem::invalid(
                "account_id",
                "staff must name the account",
            ));
        }
    };
    principal.require_account(&account_id)?;
    let order = OrderRequest {
        account_id,
        plan_id: req.plan_id,
        period: req.period,
        addons: req.addons,
        auto_renew: req.auto_renew,
    };
    let now = state.clock.now();
    let actor = principal.actor();
    let billing = state.billing.clone();
    let batch = BatchOrder {
        req: order.clone(),
        actor: actor.clone(),
        billing: billing.clone(),
    };
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    idem.run_grouped(&state, Some(batch), move |tx| {
        Box::pin(async move {
            let service = lifecycle::place_order(tx.conn(), order, &billing, &actor, now).await?;
            metrics::counter!("bursar_orders_total", "status" => service.status.as_str())
                .increment(1);
            Reply::new(StatusCode::CREATED, ServiceView::from(service))
        })
    })
    .await
}

/// Loads a service the caller may see; for a customer action, also checks
/// that the plan allows it.
pub(crate) async fn authorize(
    mut c: Conn<'_>,
    principal: &Principal,
    id: &str,
    action: Option<CustomerAction>,
) -> Result<Service, Problem> {
    let service = repo::get(c.reborrow(), id).await?;
    principal.require_account(&service.account_id)?;
    if let (Some(action), Reach::Own) = (action, principal.reach) {
        let plan = plans_repo::get(c, &service.plan_id).await?;
        if !plan.spec.customer_actions.contains(&action) {
            return Err(Problem::forbidden(format!(
                "the plan does not let customers {}",
                serde_json::to_value(action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )));
        }
    }
    Ok(service)
}

#[utoipa::path(get, path = "/api/v1/services/{id}", operation_id = "getService", tag = "services",
    params(("id" = String, Path)),
    responses((status = 200, body = ServiceView)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ServiceView>, Problem> {
    let mut r = state.store.reader().await?;
    Ok(Json(
        authorize(r.conn(), &principal, &id, None).await?.into(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ServiceQuery {
    pub account_id: Option<String>,
    pub status: Option<ServiceStatus>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    #[param(value_type = Option<String>, pattern = "^[a-z]{1,8}_[0-9a-f]{32}$")]
    pub after: Option<crate::api::IdCursor>,
}

#[utoipa::path(get, path = "/api/v1/services", operation_id = "listServices", tag = "services",
    params(ServiceQuery),
    responses((status = 200, body = PageBody<ServiceView>)),
    security(("bearer" = [])))]
/// Services by account and status; a customer key sees its own.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ServiceQuery>,
) -> Result<Json<PageBody<ServiceView>>, Problem> {
    let limit = page_limit(&state, q.limit)?;
    let account = principal.scope(q.account_id.as_deref())?;
    let mut r = state.store.reader().await?;
    let page = repo::list(
        r.conn(),
        account.as_deref(),
        q.status,
        q.after.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(page.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    #[schema(example = "admin")]
    pub reason: SuspendReason,
}

#[utoipa::path(post, path = "/api/v1/services/{id}/suspend", operation_id = "suspendService", tag = "services",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = SuspendRequest,
    responses((status = 200, body = ServiceView), (status = 409, description = "not possible in the current state")),
    security(("bearer" = [])))]
pub async fn suspend(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: ApiJson<SuspendRequest>,
) -> Result<Response, Problem> {
    let reason = body.value.reason;
    let now = state.clock.now();
    let actor = principal.actor();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    idem.run(&state, |tx| {
        Box::pin(async move {
            Reply::new(
                StatusCode::OK,
                ServiceView::from(lifecycle::suspend(tx.conn(), &id, reason, &actor, now).await?),
            )
        })
    })
    .await
}

/// No input.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[utoipa::path(post, path = "/api/v1/services/{id}/resume", operation_id = "resumeService", tag = "services",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = ServiceView), (status = 409)),
    security(("bearer" = [])))]
/// Lifts any suspension (staff only).
pub async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJson<Empty>,
) -> Result<Response, Problem> {
    let now = state.clock.now();
    let actor = principal.actor();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    idem.run(&state, |tx| {
        Box::pin(async move {
            Reply::new(
                StatusCode::OK,
                ServiceView::from(lifecycle::resume(tx.conn(), &id, &actor, now).await?),
            )
        })
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/services/{id}/close", operation_id = "closeService", tag = "services",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    responses((status = 200, body = ServiceView), (status = 409)),
    security(("bearer" = [])))]
/// Closes a service (an unpaid order is canceled at once).
pub async fn close(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: OptionalJson<Empty>,
) -> Result<Response, Problem> {
    let now = state.clock.now();
    let actor = principal.actor();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    let p = principal.clone();
    idem.run(&state, |tx| {
        Box::pin(async move {
            authorize(tx.conn(), &p, &id, Some(CustomerAction::Close)).await?;
            Reply::new(
                StatusCode::OK,
                ServiceView::from(lifecycle::close(tx.conn(), &id, &actor, now).await?),
            )
        })
    })
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProlongRequest {
    #[schema(example = "1m")]
    pub period: Period,
}

#[utoipa::path(post, path = "/api/v1/services/{id}/prolong", operation_id = "prolongService", tag = "services",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = ProlongRequest,
    responses((status = 200, body = ServiceView), (status = 402, description = "the balance does not cover it; nothing written")),
    security(("bearer" = [])))]
/// Extends the paid time, charged from the balance.
pub async fn prolong(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: ApiJson<ProlongRequest>,
) -> Result<Response, Problem> {
    let period = body.value.period;
    let now = state.clock.now();
    let actor = principal.actor();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    let ledger_key = idem.ledger_key(&format!("prolong:{id}"));
    let p = principal.clone();
    idem.run(&state, |tx| {
        Box::pin(async move {
            authorize(tx.conn(), &p, &id, Some(CustomerAction::Prolong)).await?;
            Reply::new(
                StatusCode::OK,
                ServiceView::from(
                    lifecycle::prolong(tx.conn(), &id, period, &actor, ledger_key, now).await?,
                ),
            )
        })
    })
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoRenewRequest {
    /// Renew from the balance when the paid time ends.
    pub auto_renew: bool,
}

#[utoipa::path(post, path = "/api/v1/services/{id}/auto-renew", operation_id = "setServiceAutoRenew", tag = "services",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = AutoRenewRequest,
    responses((status = 200, body = ServiceView), (status = 409, description = "closing or closed")),
    security(("bearer" = [])))]
/// Turns automatic renewal on or off; nothing is charged or given back.
pub async fn auto_renew(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: ApiJson<AutoRenewRequest>,
) -> Result<Response, Problem> {
    let on = body.value.auto_renew;
    let now = state.clock.now();
    let actor = principal.actor();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    let p = principal.clone();
    idem.run(&state, |tx| {
        Box::pin(async move {
            authorize(tx.conn(), &p, &id, None).await?;
            Reply::new(
                StatusCode::OK,
                ServiceView::from(
                    lifecycle::set_auto_renew(tx.conn(), &id, on, &actor, now).await?,
                ),
            )
        })
    })
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePlanRequest {
    /// A plan of the current plan's `change_to` list.
    pub plan_id: String,
}

/// A plan change on its way: nothing has changed yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangePlanResult {
    /// The service as it is: still on its plan until the module has made
    /// the change.
    pub service: ServiceView,
    /// What the change gives back and charges, worked out now; the money
    /// moves when the module has made the change, worked out again then.
    pub proration: Proration,
    /// Set aside from the balance until the module answers (what the
    /// change costs beyond what comes back); given back either way.
    pub hold: i64,
    /// The `change_plan` operation sent to the service's module.
    pub operation: OperationView,
}

#[utoipa::path(post, path = "/api/v1/services/{id}/change-plan", operation_id = "changeServicePlan", tag = "services",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = ChangePlanRequest,
    responses((status = 202, body = ChangePlanResult),
        (status = 402, description = "the balance does not cover what the change costs beyond what comes back"),
        (status = 409, description = "not active, already on the plan, or a change is pending"),
        (status = 422, description = "the plan is not in the change list, is archived, or is on another module or product type")),
    security(("bearer" = [])))]
/// Asks to move the service to a plan of its plan's change list. The
/// service's module makes the change; only then do the plan and the money
/// move (prorated to the second over the paid calendar periods). A module
/// that does not support it changes nothing and moves nothing.
pub async fn change_plan(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: ApiJson<ChangePlanRequest>,
) -> Result<Response, Problem> {
    let plan_id = body.value.plan_id;
    let now = state.clock.now();
    let actor = principal.actor();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    let ledger_key = idem.ledger_key(&format!("change-plan:{id}"));
    let p = principal.clone();
    idem.run(&state, |tx| {
        Box::pin(async move {
            authorize(tx.conn(), &p, &id, Some(CustomerAction::ChangePlan)).await?;
            let r =
                lifecycle::request_plan_change(tx.conn(), &id, &plan_id, &actor, &ledger_key, now)
                    .await?;
            Reply::new(
                StatusCode::ACCEPTED,
                ChangePlanResult {
                    service: r.service.into(),
                    proration: r.proration,
                    hold: r.hold,
                    operation: r.operation.into(),
                },
            )
        })
    })
    .await
}

/// A staff migration to a plan of another module.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    pub plan_id: String,
    /// Why: recorded in the service's events.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MigrateResult {
    /// The service on its new plan; the old module closes it and the new
    /// one opens it, in that order.
    pub service: ServiceView,
    pub proration: Proration,
}

#[utoipa::path(post, path = "/api/v1/services/{id}/migrate", operation_id = "migrateService", tag = "services",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = MigrateRequest,
    responses((status = 200, body = MigrateResult), (status = 402), (status = 409), (status = 422)),
    security(("bearer" = [])))]
/// Staff: moves a service to a plan of any module — closed on the old
/// module, opened on the new — with the money of a plan change, recorded
/// with its reason.
pub async fn migrate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: ApiJson<MigrateRequest>,
) -> Result<Response, Problem> {
    let req = body.value;
    let reason = crate::accounts::check_text("reason", &req.reason, 500)?;
    let now = state.clock.now();
    let actor = principal.actor();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    let ledger_key = idem.ledger_key(&format!("migrate:{id}"));
    idem.run(&state, |tx| {
        Box::pin(async move {
            let (service, proration) = lifecycle::migrate(
                tx.conn(),
                &id,
                &req.plan_id,
                &reason,
                &actor,
                &ledger_key,
                now,
            )
            .await?;
            Reply::new(
                StatusCode::OK,
                MigrateResult {
                    service: service.into(),
                    proration,
                },
            )
        })
    })
    .await
}

#[utoipa::path(post, path = "/api/v1/services/{id}/sync", operation_id = "syncService", tag = "services",
    params(("id" = String, Path)),
    responses((status = 202, body = OperationView), (status = 409, description = "not active or suspended"),
        (status = 422, description = "the service's module does not check state")),
    security(("bearer" = [])))]
/// Staff: has the service's module compare the remote side (power, switch
/// ports) with the service's state now and repair any drift; what it
/// repaired is recorded in the service's events.
pub async fn sync(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    let op = lifecycle::request_sync(tx.conn(), &state.modules, &id, now).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(op)).into_response())
}

/// How often one service's credentials may be revealed: each reveal is an
/// event, so reveals are bounded like any other write.
pub struct RevealLimit(pub(crate) governor::DefaultKeyedRateLimiter<String>);

impl Default for RevealLimit {
    fn default() -> Self {
        let per_hour = std::num::NonZeroU32::new(30).unwrap_or(std::num::NonZeroU32::MIN);
        RevealLimit(governor::RateLimiter::keyed(governor::Quota::per_hour(
            per_hour,
        )))
    }
}

/// A service's credentials.
#[derive(Debug, Serialize, ToSchema)]
pub struct Credentials {
    pub service_id: String,
    /// What the module returned as secret (e.g. `root_password`).
    pub credentials: std::collections::BTreeMap<String, String>,
}

#[utoipa::path(get, path = "/api/v1/services/{id}/credentials", operation_id = "getServiceCredentials", tag = "services",
    params(("id" = String, Path)),
    responses((status = 200, body = Credentials), (status = 403), (status = 404),
        (status = 429, description = "revealed too often; try again later")),
    security(("bearer" = [])))]
/// Reveals the service's credentials to its owner or staff; every reveal
/// is recorded in the service's events (who, never what).
pub async fn credentials(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    authorize(tx.conn(), &principal, &id, None).await?;
    if state.reveals.0.check_key(&id).is_err() {
        return Err(Problem::new(
            ProblemKind::RateLimited,
            "these credentials were revealed too often in the last hour; try again later",
        ));
    }
    let credentials =
        lifecycle::reveal_credentials(tx.conn(), &id, &state.secrets, &principal.actor(), now)
            .await?;
    tx.commit().await?;
    let mut response = Json(Credentials {
        service_id: id,
        credentials,
    })
    .into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/services/{id}/operations", operation_id = "listServiceOperations", tag = "services",
    params(("id" = String, Path), ListQuery),
    responses((status = 200, body = PageBody<OperationView>)),
    security(("bearer" = [])))]
pub async fn operations(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<PageBody<OperationView>>, Problem> {
    let limit = page_limit(&state, q.limit)?;
    let mut r = state.store.reader().await?;
    authorize(r.conn(), &principal, &id, None).await?;
    let mut page =
        repo::list_operations(r.conn(), Some(&id), None, q.after.as_deref(), limit).await?;
    if principal.reach == Reach::Own {
        page.items
            .iter_mut()
            .for_each(Operation::summarize_for_customer);
    }
    Ok(Json(page.into()))
}

#[utoipa::path(get, path = "/api/v1/services/{id}/events", operation_id = "listServiceEvents", tag = "services",
    params(("id" = String, Path), SeqListQuery),
    responses((status = 200, body = PageBody<ServiceEventView>)),
    security(("bearer" = [])))]
/// The service's history: every transition, who made it and why.
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<SeqListQuery>,
) -> Result<Json<PageBody<ServiceEventView>>, Problem> {
    let limit = page_limit(&state, q.limit)?;
    let after = q.after.map(|c| c.0);
    let mut r = state.store.reader().await?;
    authorize(r.conn(), &principal, &id, None).await?;
    Ok(Json(
        repo::events(r.conn(), &id, after, limit).await?.into(),
    ))
}
