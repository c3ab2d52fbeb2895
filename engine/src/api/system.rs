//! Health, readiness, metrics, the OpenAPI document and the fallbacks.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::api::AppState;
use crate::api::error::{Problem, ProblemKind};

/// The process is up.
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// The process can serve: the database answers.
pub async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, Problem> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        Problem::new(ProblemKind::NotReady, "the database does not answer")
    })?;
    Ok(Json(serde_json::json!({"status": "ready"})))
}

/// Prometheus text exposition.
pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
}

#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "getOpenApi", tag = "system",
    responses((status = 200, description = "this document", content_type = "application/json")))]
/// Public: the OpenAPI document of this API.
pub async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    Json(crate::api::contract::document(
        &state.api,
        state.payments.max_amount,
    ))
}

pub async fn not_found() -> Problem {
    Problem::not_found("no such endpoint")
}

pub async fn method_not_allowed() -> Problem {
    Problem::new(
        ProblemKind::MethodNotAllowed,
        "this endpoint does not accept that method",
    )
}
