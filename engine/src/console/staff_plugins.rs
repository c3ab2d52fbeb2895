//! The staff console's plugins page: each instance with its health (its
//! `check-connection`, run on request), its calls since the process
//! started, their time and failures, and its last errors.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::Serialize;

use super::auth::SessionCtx;
use super::auth::StaffSession;
use super::portal::CsrfForm;
use super::staff::who;
use super::view;
use crate::api::AppState;
use crate::api::policy::Action;

#[derive(Serialize)]
struct Failure {
    kind: &'static str,
    message: String,
    at: String,
}

#[derive(Serialize)]
struct Row {
    name: String,
    kind: String,
    plugin: String,
    version: String,
    health: String,
    health_message: Option<String>,
    checked: String,
    calls: u64,
    failures: u64,
    mean_ms: String,
    max_ms: String,
    errors: Vec<Failure>,
}

fn millis(micros: u64) -> String {
    format!("{:.1}", micros as f64 / 1000.0)
}

fn plugins_page(state: &AppState, s: &SessionCtx, notice: String, status: StatusCode) -> Response {
    let zone = state.billing.time_zone;
    let mut rows: Vec<Row> = state
        .plugins
        .list_with_stats()
        .into_iter()
        .map(|(v, stats)| Row {
            kind: serde_json::to_value(v.kind)
                .ok()
                .and_then(|k| k.as_str().map(str::to_owned))
                .unwrap_or_default(),
            plugin: v.plugin_name,
            version: v.version,
            health: v.health.status,
            health_message: v.health.message,
            checked: view::when(v.health.checked_at, zone),
            calls: stats.calls,
            failures: stats.failures,
            mean_ms: millis(stats.mean_micros()),
            max_ms: millis(stats.max_micros),
            errors: stats
                .last_errors
                .into_iter()
                .map(|f| Failure {
                    kind: f.kind,
                    message: f.message,
                    at: view::when(Some(f.at), zone),
                })
                .collect(),
            name: v.name,
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    view::page(
        status,
        "staff_plugins.html",
        context! {
            staff => true, csrf => s.csrf.clone(), who => who(s),
            plugins => rows, notice,
        },
    )
}

pub async fn list(State(state): State<AppState>, StaffSession(s): StaffSession) -> Response {
    if s.principal(Action::PluginRead).is_none() {
        return view::forbidden();
    }
    plugins_page(&state, &s, String::new(), StatusCode::OK)
}

/// Runs the instance's `check-connection` now and records its health.
pub async fn check(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    if s.principal(Action::PluginRead).is_none() {
        return view::forbidden();
    }
    match state.plugins.check(&name, state.clock.now()).await {
        None => view::not_found(),
        Some((_, Ok(()))) => plugins_page(
            &state,
            &s,
            format!("{name}: connection ok."),
            StatusCode::OK,
        ),
        Some((_, Err(e))) => plugins_page(
            &state,
            &s,
            format!("{name}: {} — {e}", e.kind()),
            StatusCode::OK,
        ),
    }
}
