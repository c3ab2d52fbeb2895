//! Forgotten passwords: a link by e-mail to the customer, or issued by
//! staff on the account's page; the link sets a new password once.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, request::Parts};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::auth;
use super::view;
use crate::api::AppState;
use crate::messages::{Kind, NewMessage};
use crate::store::logins::{self, Realm};

#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    form_token: String,
}

pub async fn forgot_form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (token, cookie) = auth::form_token(&state, &headers);
    let response = view::ok(
        "forgot.html",
        context! { staff => false, form_token => token, sent => false, error => "" },
    );
    view::with_cookie(response, cookie)
}

/// Mails a reset link when the address has a customer login; the page says
/// the same either way, so it does not tell who is a customer.
pub async fn forgot(
    State(state): State<AppState>,
    parts: Parts,
    Form(form): Form<ForgotForm>,
) -> Response {
    if !auth::form_token_ok(&parts.headers, &form.form_token) {
        return view::bad_form();
    }
    match auth::allowed_per_address(&state, "reset", auth::client_addr(&parts)).await {
        Ok(true) => {}
        Ok(false) => {
            return view::page(
                StatusCode::TOO_MANY_REQUESTS,
                "forgot.html",
                context! { staff => false, form_token => form.form_token, sent => false, error => "Too many requests from your address. Try again later." },
            );
        }
        Err(e) => return view::failed(e),
    }
    let sent = async {
        let login = {
            let mut r = state.store.reader().await?;
            logins::by_email(r.conn(), Realm::Customer, &form.email).await?
        };
        let Some(login) = login.filter(|l| !l.disabled) else {
            return Ok::<_, crate::error::Error>(());
        };
        let Some(account_id) = login.account_id.clone() else {
            return Ok(());
        };
        let url = auth::issue_reset(&state, &login.id).await?;
        let mut tx = state.store.begin().await?;
        crate::store::notifications::insert(
            tx.conn(),
            &[NewMessage {
                kind: Kind::PasswordReset,
                data: json!({"account_id": account_id, "reset": {"url": url, "valid_hours": auth::RESET_HOURS}}),
                dedup_key: None,
            }],
            state.clock.now(),
        )
        .await?;
        tx.commit().await
    }
    .await;
    match sent {
        Ok(()) => view::ok(
            "forgot.html",
            context! { staff => false, form_token => form.form_token, sent => true, error => "" },
        ),
        Err(e) => view::failed(e),
    }
}

pub async fn reset_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let (form_token, cookie) = auth::form_token(&state, &headers);
    let response = view::ok(
        "reset.html",
        context! { staff => false, form_token, token, error => "" },
    );
    view::with_cookie(response, cookie)
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    form_token: String,
}

pub async fn reset(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(form): Form<ResetForm>,
) -> Response {
    if !auth::form_token_ok(&headers, &form.form_token) {
        return view::bad_form();
    }
    let again = |status: StatusCode, error: &str| {
        view::page(
            status,
            "reset.html",
            context! { staff => false, form_token => form.form_token.clone(), token => token.clone(), error },
        )
    };
    if let Some(problem) = auth::password_problem(&form.password) {
        return again(StatusCode::UNPROCESSABLE_ENTITY, &problem);
    }
    match auth::reset_password(&state, &token, &form.password).await {
        Ok(Some(login)) => view::see_other(match login.realm {
            Realm::Customer => "/login",
            Realm::Staff => "/staff/login",
        }),
        Ok(None) => again(
            StatusCode::GONE,
            "This link was used already or has expired. Ask for a new one.",
        ),
        Err(e) => view::failed(e),
    }
}
