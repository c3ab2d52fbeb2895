//! `/api/v1/plugins`: the loaded plugin instances (never their settings).

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::error::{Problem, ProblemKind};
use crate::api::{AppState, PageBody};
use crate::plugins::instances::{CatalogEntry, PluginView};
use crate::services::module::ModuleError;

#[utoipa::path(get, path = "/api/v1/plugins", operation_id = "listPlugins", tag = "plugins",
    responses((status = 200, body = PageBody<PluginView>)),
    security(("bearer" = [])))]
/// Instances with kind, version, features and health (staff only).
pub async fn list(State(state): State<AppState>) -> Result<Json<PageBody<PluginView>>, Problem> {
    Ok(Json(PageBody {
        data: state.plugins.list(),
        next_cursor: None,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResult {
    pub ok: bool,
    /// The failure kind (`unavailable`, `invalid_config`, `timeout`…).
    pub error_kind: Option<String>,
    pub plugin: PluginView,
}

#[utoipa::path(post, path = "/api/v1/plugins/{name}/check", operation_id = "checkPlugin", tag = "plugins",
    params(("name" = String, Path)),
    responses((status = 200, body = CheckResult), (status = 404)),
    security(("bearer" = [])))]
/// Runs the instance's `check-connection` and records its health.
pub async fn check(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<CheckResult>, Problem> {
    let (plugin, result) = state
        .plugins
        .check(&name, state.clock.now())
        .await
        .ok_or_else(|| Problem::not_found(format!("no plugin instance named `{name}`")))?;
    Ok(Json(CheckResult {
        ok: result.is_ok(),
        error_kind: result.err().map(|e| e.kind().to_owned()),
        plugin,
    }))
}

#[utoipa::path(get, path = "/api/v1/plugins/{name}/catalog", operation_id = "getPluginCatalog", tag = "plugins",
    params(("name" = String, Path)),
    responses((status = 200, body = PageBody<CatalogEntry>), (status = 404), (status = 502)),
    security(("bearer" = [])))]
/// What a processing module instance can provision (configurations with
/// free counts, OS templates, orderable add-ons), asked live — for staff
/// building plans.
pub async fn catalog(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PageBody<CatalogEntry>>, Problem> {
    let items = state
        .plugins
        .catalog(&name)
        .await
        .ok_or_else(|| Problem::not_found(format!("no plugin instance named `{name}`")))?
        .map_err(|e| match e {
            ModuleError::Unsupported(m) => Problem::new(ProblemKind::NoCatalog, m),
            e => Problem::new(ProblemKind::PluginFailed, format!("{name}: {e}")),
        })?;
    Ok(Json(PageBody {
        data: items,
        next_cursor: None,
    }))
}
