//! Health, readiness, metrics, the OpenAPI document and the fallbacks.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

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

/// Prometheus text exposition; behind `[api] metrics_token` when set.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.api.metrics_token {
        let Ok(expected) = token.resolve() else {
            tracing::error!("[api] metrics_token cannot be read; /metrics refuses everyone");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Compared as digests: the time taken says nothing of the token.
        use sha2::Digest;
        if sha2::Sha256::digest(given.as_bytes())
            != sha2::Sha256::digest(expected.trim().as_bytes())
        {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
            )
                .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
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
