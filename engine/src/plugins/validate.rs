//! Every value a plugin returns is checked here before the engine uses or
//! stores it: lengths, counts, key syntax, enum ranges. A plugin that
//! answers garbage fails its call with `invalid_result`.

use std::collections::BTreeSet;

use crate::plugins::since_v0_1::processing::bursar::plugin::types::{PluginError, PluginInfo};
use crate::plugins::since_v0_1::processing::exports::bursar::plugin::processing as wit;
use crate::services::module::{ModuleError, ModuleOutcome};

const MAX_PARAMS: usize = 256;
const MAX_KEY: usize = 128;
const MAX_VALUE: usize = 64 * 1024;
const MAX_TEXT: usize = 4096;
const MAX_REF: usize = 1024;
const MAX_POLL_MS: u64 = 24 * 3600 * 1000;
const MAX_CATALOG: usize = 10_000;

fn bad(what: impl Into<String>) -> ModuleError {
    ModuleError::InvalidResult(what.into())
}

/// `field` is formatted only when the text is too long: naming a param's
/// field costs nothing on the path every valid answer takes.
fn text(field: impl std::fmt::Display, s: &str, max: usize) -> Result<(), ModuleError> {
    if s.len() > max {
        return Err(bad(format!(
            "{field} is {} bytes long (at most {max})",
            s.len()
        )));
    }
    Ok(())
}

/// Cuts an error message a plugin sent to a length fit for logs and the API.
fn clip(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut cut = MAX_TEXT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

pub fn params(field: &str, params: &[(String, String)]) -> Result<(), ModuleError> {
    if params.len() > MAX_PARAMS {
        return Err(bad(format!(
            "{field} has {} entries (at most {MAX_PARAMS})",
            params.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for (k, v) in params {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_KEY
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !key_ok {
            return Err(bad(format!(
                "{field}: key `{}` must be 1 to {MAX_KEY} of [A-Za-z0-9_.-]",
                clip(k.clone())
            )));
        }
        if !seen.insert(k.as_str()) {
            return Err(bad(format!("{field}: key `{k}` appears twice")));
        }
        text(format_args!("{field}.{k}"), v, MAX_VALUE)?;
    }
    Ok(())
}

pub fn info(info: PluginInfo) -> Result<PluginInfo, ModuleError> {
    text("info.name", &info.name, MAX_KEY)?;
    text("info.version", &info.version, MAX_KEY)?;
    if info.name.is_empty() {
        return Err(bad("info.name is empty"));
    }
    if info.features.len() > 64 || info.features.iter().any(|f| f.len() > MAX_KEY) {
        return Err(bad("info.features: at most 64 names of at most 128 bytes"));
    }
    Ok(info)
}

pub fn outcome(o: wit::Outcome) -> Result<ModuleOutcome, ModuleError> {
    match o {
        wit::Outcome::Done(d) => {
            params("params", &d.params)?;
            params("secret-params", &d.secret_params)?;
            Ok(ModuleOutcome::Done {
                params: d.params,
                secret_params: d.secret_params,
            })
        }
        wit::Outcome::InProgress(p) => {
            if p.remote_ref.is_empty() {
                return Err(bad("remote-ref is empty"));
            }
            text("remote-ref", &p.remote_ref, MAX_REF)?;
            if let Some(m) = &p.message {
                text("progress message", m, MAX_TEXT)?;
            }
            if p.poll_after_ms > MAX_POLL_MS {
                return Err(bad(format!(
                    "poll-after-ms {} exceeds a day",
                    p.poll_after_ms
                )));
            }
            Ok(ModuleOutcome::InProgress {
                remote_ref: p.remote_ref,
                poll_after: std::time::Duration::from_millis(p.poll_after_ms),
                progress: p.message,
            })
        }
    }
}

pub fn catalog(items: Vec<wit::CatalogItem>) -> Result<Vec<wit::CatalogItem>, ModuleError> {
    if items.len() > MAX_CATALOG {
        return Err(bad(format!(
            "catalog has {} items (at most {MAX_CATALOG})",
            items.len()
        )));
    }
    for item in &items {
        if !matches!(
            item.kind.as_str(),
            "configuration" | "os-template" | "addon"
        ) {
            return Err(bad(format!(
                "catalog item kind `{}` is not configuration, os-template or addon",
                clip(item.kind.clone())
            )));
        }
        text("catalog id", &item.id, MAX_REF)?;
        text("catalog name", &item.name, MAX_TEXT)?;
        params("catalog details", &item.details)?;
    }
    Ok(items)
}

/// A plugin's error, with its message clipped.
pub fn plugin_error(e: PluginError) -> ModuleError {
    match e {
        PluginError::InvalidConfig(m) => ModuleError::InvalidConfig(clip(m)),
        PluginError::Unavailable(u) => ModuleError::Unavailable {
            message: clip(u.message),
            retry_after: u
                .retry_after_ms
                .map(|ms| std::time::Duration::from_millis(ms.min(MAX_POLL_MS))),
        },
        PluginError::Rejected(m) => ModuleError::Rejected(clip(m)),
        PluginError::NotFound(m) => ModuleError::NotFound(clip(m)),
        PluginError::Unsupported(m) => ModuleError::Unsupported(clip(m)),
        PluginError::Internal(m) => ModuleError::Internal(clip(m)),
    }
}

/// What a gateway returns, checked before any of it is used or stored.
pub mod gateway {
    use super::{MAX_REF, MAX_TEXT, bad, text};
    use crate::money::{Currency, Money};
    use crate::payments::{
        CallbackResponse, CallbackResult, Checkout, CreatedPayment, PaymentEvent, PaymentStatus,
    };
    use crate::plugins::since_v0_1::gateway::exports::bursar::plugin::gateway as gw;
    use crate::plugins::since_v0_1::processing::bursar::plugin::types::Money as WitMoney;
    use crate::services::module::ModuleError;

    /// Largest callback answer body a gateway may send back.
    const MAX_BODY: usize = 256 * 1024;
    const MAX_HEADERS: usize = 64;
    const MAX_EVENTS: usize = 100;

    /// A positive amount in a known currency.
    pub fn money(field: &str, m: &WitMoney) -> Result<Money, ModuleError> {
        let currency = Currency::from_code(&m.currency).map_err(|_| {
            bad(format!(
                "{field}: `{}` is not an ISO 4217 currency",
                super::clip(m.currency.clone())
            ))
        })?;
        if m.amount <= 0 {
            return Err(bad(format!("{field}: amount {} is not positive", m.amount)));
        }
        Money::new(m.amount, currency)
            .map_err(|e| bad(format!("{field}: amount {}: {e}", m.amount)))
    }

    fn gateway_ref(field: &str, r: &str) -> Result<(), ModuleError> {
        if r.is_empty() {
            return Err(bad(format!("{field} is empty")));
        }
        text(field, r, MAX_REF)
    }

    /// A payment status in the engine's terms.
    pub fn status(s: gw::PaymentStatus) -> PaymentStatus {
        match s {
            gw::PaymentStatus::Pending => PaymentStatus::Pending,
            gw::PaymentStatus::Paid => PaymentStatus::Paid,
            gw::PaymentStatus::Failed => PaymentStatus::Failed,
            gw::PaymentStatus::Canceled => PaymentStatus::Canceled,
            gw::PaymentStatus::Expired => PaymentStatus::Expired,
        }
    }

    pub fn created(c: gw::CreatedPayment) -> Result<CreatedPayment, ModuleError> {
        gateway_ref("gateway-ref", &c.gateway_ref)?;
        match &c.checkout {
            gw::Checkout::Redirect(url) => {
                text("checkout redirect", url, MAX_REF)?;
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(bad("checkout redirect is not an http(s) URL"));
                }
            }
            gw::Checkout::Form(html) => text("checkout form", html, MAX_BODY)?,
            gw::Checkout::Instant(_) => {}
        }
        if let Some(i) = &c.instructions {
            text("instructions", i, MAX_TEXT)?;
        }
        let checkout = match (c.checkout, c.instructions) {
            (gw::Checkout::Redirect(url), _) => Checkout::Redirect { url },
            (gw::Checkout::Form(html), _) => Checkout::Form { html },
            (gw::Checkout::Instant(gw::PaymentStatus::Pending), Some(text)) => {
                Checkout::Instructions { text }
            }
            (gw::Checkout::Instant(s), _) => Checkout::Instant { status: status(s) },
        };
        Ok(CreatedPayment {
            gateway_ref: c.gateway_ref,
            checkout,
        })
    }

    pub fn event(e: gw::PaymentEvent) -> Result<PaymentEvent, ModuleError> {
        gateway_ref("event gateway-ref", &e.gateway_ref)?;
        text("event-id", &e.event_id, MAX_REF)?;
        let amount = e
            .amount
            .as_ref()
            .map(|m| money("event amount", m))
            .transpose()?;
        Ok(PaymentEvent {
            gateway_ref: e.gateway_ref,
            status: status(e.status),
            amount,
            event_id: e.event_id,
        })
    }

    pub fn callback(c: gw::CallbackResult) -> Result<CallbackResult, ModuleError> {
        if !(100..=599).contains(&c.response.status) {
            return Err(bad(format!(
                "callback response status {} is not an HTTP status",
                c.response.status
            )));
        }
        if c.response.headers.len() > MAX_HEADERS {
            return Err(bad("callback response has too many headers"));
        }
        for (k, v) in &c.response.headers {
            let ok = !k.is_empty()
                && k.len() <= 128
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && v.len() <= MAX_TEXT
                && !v.bytes().any(|b| b == b'\r' || b == b'\n');
            if !ok {
                return Err(bad(format!(
                    "callback response header `{}` is invalid",
                    super::clip(k.clone())
                )));
            }
        }
        if c.response.body.len() > MAX_BODY {
            return Err(bad("callback response body is too large"));
        }
        if c.events.len() > MAX_EVENTS {
            return Err(bad("callback reports too many events"));
        }
        let gw::CallbackResult { response, events } = c;
        let events = events
            .into_iter()
            .map(event)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CallbackResult {
            response: CallbackResponse {
                status: response.status,
                headers: response.headers,
                body: response.body,
            },
            events,
        })
    }

    pub fn refund_ref(r: String) -> Result<String, ModuleError> {
        gateway_ref("refund reference", &r)?;
        Ok(r)
    }
}
