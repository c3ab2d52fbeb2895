//! Rendering console pages: templates compiled into the binary, every value
//! HTML-escaped (the templates are `.html`: MiniJinja escapes by default).

use std::sync::OnceLock;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use minijinja::{Environment, Value};

use crate::calendar::Zone;
use crate::money::{Currency, Money};

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("templates/", $name)))),*]
    };
}

const TEMPLATES: &[(&str, &str)] = templates![
    "base.html",
    "login.html",
    "signup.html",
    "dashboard.html",
    "service.html",
    "message.html",
    "catalog.html",
    "order.html",
    "top_up.html",
    "payment.html",
    "staff_dashboard.html",
    "staff_accounts.html",
    "staff_account.html",
    "staff_operations.html",
    "staff_payments.html",
    "forgot.html",
    "reset.html",
    "keys.html",
    "staff_services.html",
    "staff_service.html",
    "staff_payment.html",
    "staff_invoices.html",
    "staff_plugins.html",
    "staff_plans.html",
    "staff_plan_form.html",
    "staff_tax_rules.html",
    "staff_users.html",
    "security.html",
];

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("console template {name}: {e}"));
        }
        env
    })
}

/// A page, or a plain error page if the template fails (a bug).
pub fn page(status: StatusCode, name: &str, ctx: Value) -> Response {
    match env().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "console page failed to render");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "The page could not be shown.",
            )
        }
    }
}

pub fn ok(name: &str, ctx: Value) -> Response {
    page(StatusCode::OK, name, ctx)
}

/// A short page saying what happened (errors, refusals).
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let ctx = minijinja::context! { title, text, status => status.as_u16() };
    match env()
        .get_template("message.html")
        .and_then(|t| t.render(ctx))
    {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(_) => (status, text.to_owned()).into_response(),
    }
}

pub fn forbidden() -> Response {
    message(
        StatusCode::FORBIDDEN,
        "Not allowed",
        "Your login may not see or do this.",
    )
}

pub fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "Not found", "There is nothing here.")
}

pub fn bad_form() -> Response {
    message(
        StatusCode::FORBIDDEN,
        "The form expired",
        "The form was sent without its security token. Go back, reload the page and send it again.",
    )
}

pub fn failed(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console request failed");
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "Try again in a moment.",
    )
}

/// The response with a `Set-Cookie` added, when there is one.
pub fn with_cookie(mut response: Response, cookie: Option<String>) -> Response {
    if let Some(c) = cookie.and_then(|c| c.parse().ok()) {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

/// 303 See Other: after a form, the browser loads `to` with GET.
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// An amount with the currency's sign and exponent: `€12.50`, `¥1200`.
pub fn money(minor: i64, currency: Currency) -> String {
    match Money::new(minor, currency) {
        Ok(m) => {
            let text = m.to_decimal_string();
            let symbol = currency.symbol();
            match text.strip_prefix('-') {
                Some(abs) => format!("−{symbol}{abs}"),
                None => format!("{symbol}{text}"),
            }
        }
        Err(_) => format!("{minor} {}", currency.code()),
    }
}

/// A moment in the reader's time zone.
pub fn when(at: Option<DateTime<Utc>>, zone: Zone) -> String {
    at.map(|t| zone.format(t)).unwrap_or_else(|| "—".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_file_is_registered_and_compiles() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/console/templates");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut registered: Vec<String> = TEMPLATES.iter().map(|(n, _)| (*n).to_owned()).collect();
        registered.sort();
        assert_eq!(files, registered);
        for (name, _) in TEMPLATES {
            env().get_template(name).unwrap();
        }
    }

    #[test]
    fn page_titles_are_text_only() {
        for (name, source) in TEMPLATES {
            if let Some(start) = source.find("{% block title %}") {
                let rest = &source[start..];
                let end = rest.find("{% endblock %}").unwrap();
                assert!(!rest[..end].contains('<'), "{name}: markup in the title");
            }
        }
    }

    #[test]
    fn money_has_the_sign_and_the_exponent_of_its_currency() {
        assert_eq!(money(1250, Currency::EUR), "€12.50");
        assert_eq!(money(-1250, Currency::EUR), "−€12.50");
        assert_eq!(money(1200, Currency::JPY), "¥1200");
        assert_eq!(
            money(1250, Currency::KWD),
            format!("{}1.250", Currency::KWD.symbol())
        );
    }

    #[test]
    fn values_are_escaped() {
        let html = env()
            .get_template("message.html")
            .unwrap()
            .render(minijinja::context! { title => "<script>x</script>", text => "\"'&", status => 400 })
            .unwrap();
        assert!(!html.contains("<script>x"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }
}
