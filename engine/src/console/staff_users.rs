//! Staff logins, managed by admins in the console: create one (its
//! password and TOTP secret shown once), disable it or enable it again,
//! end its sessions. An admin cannot disable their own login.

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::{Deserialize, Serialize};

use super::auth::StaffSession;
use super::auth::{self, SessionCtx};
use super::portal::CsrfForm;
use super::staff::who;
use super::view;
use crate::accounts::Role;
use crate::api::AppState;
use crate::api::policy::Action;
use crate::error::Error;
use crate::store::logins::{self, Realm};

#[derive(Serialize)]
struct Row {
    id: String,
    email: String,
    role: &'static str,
    totp: bool,
    disabled: bool,
    created: String,
    me: bool,
}

async fn users_page(
    state: &AppState,
    s: &SessionCtx,
    notice: String,
    created: Option<minijinja::Value>,
    status: StatusCode,
) -> Response {
    if s.principal(Action::StaffLogins).is_none() {
        return view::forbidden();
    }
    let loaded = async {
        let mut r = state.store.reader().await?;
        logins::staff(r.conn()).await
    }
    .await;
    let users = match loaded {
        Ok(u) => u,
        Err(e) => return view::failed(e),
    };
    let zone = state.billing.time_zone;
    let rows: Vec<Row> = users
        .into_iter()
        .map(|l| Row {
            me: l.id == s.login.id,
            role: l.role.as_str(),
            totp: l.totp_secret.is_some(),
            disabled: l.disabled,
            created: view::when(Some(l.created_at), zone),
            id: l.id,
            email: l.email,
        })
        .collect();
    view::page(
        status,
        "staff_users.html",
        context! {
            staff => true, csrf => s.csrf.clone(), who => who(s),
            users => rows, notice, created,
        },
    )
}

pub async fn list(State(state): State<AppState>, StaffSession(s): StaffSession) -> Response {
    users_page(&state, &s, String::new(), None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub struct NewUser {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    totp: String,
}

/// A new staff login with a generated password (shown once); admins
/// always get TOTP.
pub async fn create(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Form(form): Form<NewUser>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    if s.principal(Action::StaffLogins).is_none() {
        return view::forbidden();
    }
    let role = match Role::parse(&form.role) {
        Some(r) if r.is_staff() => r,
        _ => {
            return users_page(
                &state,
                &s,
                "Choose a staff role.".into(),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let made = auth::create_staff(
        &state.store,
        &state.secrets,
        &form.email,
        role,
        None,
        form.totp == "yes",
        state.clock.now(),
    )
    .await;
    match made {
        Ok(c) => {
            tracing::info!(login = %c.id, role = c.role, actor = %format!("login:{}", s.login.id), "staff login created");
            let created = context! {
                email => c.email, role => c.role, password => c.password,
                totp_secret => c.totp_secret, totp_uri => c.totp_uri,
            };
            users_page(
                &state,
                &s,
                String::new(),
                Some(created),
                StatusCode::CREATED,
            )
            .await
        }
        Err(e @ (Error::Conflict(_) | Error::Field(_))) => {
            users_page(
                &state,
                &s,
                e.to_string(),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => view::failed(e),
    }
}

/// `disable`, `enable` or `end-sessions`.
pub async fn act(
    State(state): State<AppState>,
    StaffSession(s): StaffSession,
    Path((id, what)): Path<(String, String)>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !s.csrf_ok(&form.csrf) {
        return view::bad_form();
    }
    if s.principal(Action::StaffLogins).is_none() {
        return view::forbidden();
    }
    if !matches!(what.as_str(), "disable" | "enable" | "end-sessions") {
        return view::not_found();
    }
    if id == s.login.id && what != "end-sessions" {
        return users_page(
            &state,
            &s,
            "You cannot disable your own login.".into(),
            None,
            StatusCode::CONFLICT,
        )
        .await;
    }
    let now = state.clock.now();
    let done = async {
        let mut tx = state.store.begin().await?;
        let target = match logins::get(tx.conn(), &id).await? {
            Some(l) if l.realm == Realm::Staff => l,
            _ => {
                tx.rollback().await?;
                return Ok(false);
            }
        };
        match what.as_str() {
            "disable" => logins::set_disabled(tx.conn(), &target.id, true, now).await?,
            "enable" => logins::set_disabled(tx.conn(), &target.id, false, now).await?,
            _ => {
                logins::end_sessions_of(tx.conn(), &target.id, now).await?;
                true
            }
        };
        tx.commit().await?;
        tracing::info!(login = %id, action = %what, actor = %format!("login:{}", s.login.id), "staff login changed");
        Ok::<_, Error>(true)
    }
    .await;
    match done {
        Ok(true) => view::see_other("/staff/users"),
        Ok(false) => view::not_found(),
        Err(e) => view::failed(e),
    }
}
