//! The web console, served by `bursar serve` beside the API: the customer
//! portal under `/` and the staff console under `/staff`.
//!
//! Pages are rendered on the server from templates compiled into the
//! binary; there is no script at all, so every flow works in any browser
//! and the Content-Security-Policy forbids scripts outright. People log in
//! with a password (argon2id) and, for staff admins always and for others
//! when they turn it on, a TOTP code. A session is a random cookie
//! (HttpOnly, SameSite=Lax, Secure when configured) whose hash is stored;
//! every state-changing form carries the session's CSRF token.
//!
//! Authorization is the API's: a session becomes a [`Principal`] with the
//! login's role, and every page asks [`policy::allowed`] for the action it
//! takes, then calls the same domain services the API handlers call.

mod act;
pub mod auth;
mod keys;
mod order;
mod payments;
mod portal;
mod reset;
mod security;
mod staff;
mod staff_dashboard;
mod staff_money;
mod staff_plans;
mod staff_plugins;
mod staff_services;
mod staff_users;
mod view;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::AppState;

pub use crate::config::ConsoleConfig;

/// The console's routes (merged into the API's router).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(portal::dashboard))
        .route("/signup", get(portal::signup_form).post(portal::signup))
        .route("/login", get(portal::login_form).post(portal::login))
        .route("/logout", post(portal::logout))
        .route(
            "/password/forgot",
            get(reset::forgot_form).post(reset::forgot),
        )
        .route(
            "/password/reset/{token}",
            get(reset::reset_form).post(reset::reset),
        )
        .route("/staff/accounts/{id}/reset-link", post(staff::reset_link))
        .route("/order", get(order::catalog))
        .route("/order/{plan}", get(order::form).post(order::place))
        .route("/order/{plan}/preview", post(order::preview))
        .route(
            "/payments/new",
            get(payments::new_form).post(payments::create),
        )
        .route("/payments/{id}", get(payments::show))
        .route("/staff/payments", get(payments::staff_list))
        .route("/staff/payments/{id}", get(staff_money::payment))
        .route("/staff/payments/{id}/mark-paid", post(payments::mark_paid))
        .route("/staff/payments/{id}/refund", post(staff_money::refund))
        .route("/staff/invoices", get(staff_money::invoices))
        .route(
            "/staff/tax-rules",
            get(staff_money::tax_rules).post(staff_money::add_tax_rule),
        )
        .route("/staff/invoices/{id}", get(staff_money::invoice))
        .route("/keys", get(keys::list).post(keys::create))
        .route("/security", get(security::show))
        .route("/security/totp", post(security::set))
        .route("/keys/{id}/revoke", post(keys::revoke))
        .route("/services/{id}", get(portal::service))
        .route("/services/{id}/credentials", post(portal::reveal))
        .route("/services/{id}/{action}", post(portal::act))
        .route("/invoices/{id}", get(portal::invoice))
        .route("/staff", get(staff_dashboard::dashboard))
        .route("/staff/login", get(staff::login_form).post(staff::login))
        .route("/staff/logout", post(staff::logout))
        .route("/staff/accounts", get(staff::accounts))
        .route("/staff/accounts/{id}", get(staff::account))
        .route("/staff/accounts/{id}/credit", post(staff::credit))
        .route("/staff/accounts/{id}/billing", post(staff::billing))
        .route("/staff/services", get(staff_services::list))
        .route("/staff/services/{id}", get(staff_services::show))
        .route("/staff/services/{id}/{action}", post(staff_services::act))
        .route(
            "/staff/plans",
            get(staff_plans::list).post(staff_plans::create),
        )
        .route("/staff/plans/new", get(staff_plans::new_form))
        .route("/staff/plans/{id}", post(staff_plans::update))
        .route("/staff/plans/{id}/edit", get(staff_plans::edit_form))
        .route("/staff/plans/{id}/archive", post(staff_plans::archive))
        .route(
            "/staff/users",
            get(staff_users::list).post(staff_users::create),
        )
        .route("/staff/users/{id}/{action}", post(staff_users::act))
        .route("/staff/plugins", get(staff_plugins::list))
        .route("/staff/plugins/{name}/check", post(staff_plugins::check))
        .route("/staff/operations", get(staff::operations))
        .route("/staff/operations/{id}/retry", post(staff::retry))
        .route("/staff/operations/{id}/complete", post(staff::complete))
        .route("/assets/console.css", get(css))
        .layer(middleware::from_fn(security_headers))
}

const CSS: &str = include_str!("assets/console.css");

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// No script, no framing, no third-party anything; pages are not cached.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
                 frame-ancestors 'none'; base-uri 'none'",
            ),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
