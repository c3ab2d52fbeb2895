//! Two-factor authentication for customers, optional and theirs to turn
//! on: the page shows a fresh secret (and its `otpauth://` URI for an
//! authenticator app); it is kept only once a code from it and the
//! password are given. Turning it off takes the password and a code too.

use axum::Form;
use axum::extract::State;
use axum::http::{StatusCode, request::Parts};
use axum::response::Response;
use minijinja::context;
use serde::Deserialize;

use super::auth::CustomerSession;
use super::auth::{self, Attempt, SessionCtx};
use super::view;
use crate::api::AppState;
use crate::store::logins::{self, Realm};

fn page(s: &SessionCtx, notice: &str, status: StatusCode) -> Response {
    let on = s.login.totp_secret.is_some();
    let secret = (!on).then(auth::new_totp_secret);
    view::page(
        status,
        "security.html",
        context! {
            staff => false, csrf => s.csrf.clone(), on, notice,
            uri => secret.as_deref().map(|x| auth::totp_uri(x, "Bursar", &s.login.email)),
            secret,
        },
    )
}

pub async fn show(CustomerSession(s): CustomerSession) -> Response {
    page(&s, "", StatusCode::OK)
}

#[derive(Deserialize)]
pub struct TotpForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
    /// Turning on: the secret the page showed.
    #[serde(default)]
    secret: String,
}

/// Turns TOTP on (with the shown secret and a code from it) or off (with a
/// code from the current one). The password (and, to turn it off, the
/// code) is checked as a login checks it: throttled, and the code good
/// once.
pub async fn set(
    State(state): State<AppState>,
    CustomerSession(s): CustomerSession,
    parts: Parts,
    Form(form): Form<TotpForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    let refuse = |why: &str| page(&s, why, StatusCode::UNPROCESSABLE_ENTITY);
    let on = s.login.totp_secret.is_some();
    let checked = auth::attempt(
        &state,
        Realm::Customer,
        &s.login.email,
        &form.password,
        on.then_some(form.code.as_str()),
        auth::client_addr(&parts),
    )
    .await;
    match checked {
        Err(e) => return view::failed(e),
        Ok(Attempt::Ok(_)) => {}
        Ok(Attempt::Throttled) => {
            return page(
                &s,
                "Too many failed attempts. Wait a few minutes and try again.",
                StatusCode::TOO_MANY_REQUESTS,
            );
        }
        Ok(Attempt::NeedsCode) => {
            return refuse(
                "That code is not right. Enter the code your authenticator app shows now.",
            );
        }
        Ok(Attempt::Wrong | Attempt::NotActive) => return refuse("The password is not right."),
    }
    let now = state.clock.now();
    let turned_on = if on {
        None
    } else {
        let secret = form.secret.trim();
        let Some(step) = auth::totp_step(secret, &form.code, now) else {
            return refuse(
                "That code is not right. Enter the code your authenticator app shows now.",
            );
        };
        Some((state.secrets.seal(secret), step))
    };
    let done = async {
        let mut tx = state.store.begin().await?;
        logins::set_totp(
            tx.conn(),
            &s.login.id,
            turned_on.as_ref().map(|(sealed, _)| sealed.as_str()),
        )
        .await?;
        if let Some((_, step)) = &turned_on {
            // The code just used cannot log in again.
            logins::use_totp_step(tx.conn(), &s.login.id, *step).await?;
        }
        tx.commit().await
    }
    .await;
    match done {
        Ok(()) => {
            tracing::info!(login = %s.login.id, on = !on, "customer two-factor changed");
            view::see_other("/security")
        }
        Err(e) => view::failed(e),
    }
}
