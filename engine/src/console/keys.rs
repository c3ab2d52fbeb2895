//! API keys self-service in the portal: a customer's own keys, made and
//! revoked with the API's key workflows (the same quota and checks).

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::auth::CustomerSession;
use super::auth::SessionCtx;
use super::view;
use crate::accounts::Role;
use crate::api::AppState;
use crate::api::policy::Action;
use crate::directory;
use crate::error::Error;
use crate::store::accounts as accounts_repo;

#[derive(Serialize)]
struct KeyRow {
    id: String,
    name: String,
    prefix: String,
    created: String,
    last_used: String,
}

async fn page(
    state: &AppState,
    s: &SessionCtx,
    status: StatusCode,
    secret: Option<String>,
    error: String,
) -> Response {
    let Some(account_id) = s.login.account_id.clone() else {
        return view::forbidden();
    };
    if s.principal(Action::CustomerKeys).is_none() {
        return view::forbidden();
    }
    let keys = async {
        let mut r = state.store.reader().await?;
        accounts_repo::list_keys(r.conn(), &account_id, state.clock.now()).await
    }
    .await;
    let keys = match keys {
        Ok(k) => k,
        Err(e) => return view::failed(e),
    };
    let zone = state.billing.time_zone;
    let rows: Vec<KeyRow> = keys
        .into_iter()
        .map(|k| KeyRow {
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            created: view::when(Some(k.created_at), zone),
            last_used: view::when(k.last_used_at, zone),
        })
        .collect();
    view::page(
        status,
        "keys.html",
        context! { staff => false, csrf => s.csrf.clone(), keys => rows, secret, error },
    )
}

pub async fn list(State(state): State<AppState>, CustomerSession(s): CustomerSession) -> Response {
    page(&state, &s, StatusCode::OK, None, String::new()).await
}

#[derive(Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

/// A new key: its secret is shown on this page once, never again.
pub async fn create(
    State(state): State<AppState>,
    CustomerSession(s): CustomerSession,
    Form(form): Form<KeyForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    let Some(principal) = s.principal(Action::CustomerKeys) else {
        return view::forbidden();
    };
    let Some(account_id) = principal.account_id.clone() else {
        return view::forbidden();
    };
    let now = state.clock.now();
    let made = async {
        let mut tx = state.store.begin().await?;
        let made = directory::create_key(
            tx.conn(),
            directory::KeyForm {
                role: Role::Customer,
                account_id: Some(&account_id),
                name: &form.name,
                expires_at: None,
            },
            state.api.max_keys_per_account,
            &principal.actor(),
            now,
        )
        .await;
        match made {
            Ok((_, secret)) => {
                tx.commit().await?;
                Ok(secret)
            }
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
    }
    .await;
    match made {
        Ok(secret) => {
            page(
                &state,
                &s,
                StatusCode::CREATED,
                Some(secret.expose().to_owned()),
                String::new(),
            )
            .await
        }
        Err(e @ (Error::Field(_) | Error::Quota { .. } | Error::Forbidden(_))) => {
            page(
                &state,
                &s,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                e.to_string(),
            )
            .await
        }
        Err(e) => view::failed(e),
    }
}

pub async fn revoke(
    State(state): State<AppState>,
    CustomerSession(s): CustomerSession,
    Path(key_id): Path<String>,
    Form(form): Form<KeyForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    let Some(principal) = s.principal(Action::CustomerKeys) else {
        return view::forbidden();
    };
    let Some(account_id) = principal.account_id.clone() else {
        return view::forbidden();
    };
    let done = async {
        let mut tx = state.store.begin().await?;
        let outcome =
            directory::revoke_key(tx.conn(), &account_id, &key_id, state.clock.now()).await;
        tx.keep_if(outcome.map(|_| true)).await
    }
    .await;
    if done.is_ok() {
        state.key_cache.forget_key(&key_id);
    }
    match done {
        Ok(_) => view::see_other("/keys"),
        Err(Error::NotFound { .. }) => view::not_found(),
        Err(e) => view::failed(e),
    }
}
