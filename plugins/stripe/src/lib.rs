//! Stripe Checkout as a Bursar payment gateway.
//!
//! - `create-payment` creates a Checkout Session (the payment id is its
//!   `client_reference_id` and the request's idempotency key) and sends the
//!   payer to its URL.
//! - `handle-callback` verifies `Stripe-Signature` (`t=…,v1=…`: HMAC-SHA256
//!   over `"{t}.{raw body}"`, compared in constant time, within
//!   `tolerance_secs` of now, against every secret in `webhook_secrets` so
//!   secrets can be rotated) and then **re-reads the session from the API**:
//!   the webhook body alone never makes a payment paid.
//! - `query` reads the session; `refund` refunds its payment intent.
//!
//! Settings: `secret_key` (keep it in a secret), `webhook_secrets`
//! (comma-separated `whsec_…`), `api_base` (default
//! `https://api.stripe.com`), `tolerance_secs` (default 300).

use std::time::{SystemTime, UNIX_EPOCH};

use bursar_plugin_sdk::http::{Request, Response};
use bursar_plugin_sdk::prelude::*;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

struct Stripe;

/// Every Stripe API path the plugin uses.
mod paths {
    pub const SESSIONS: &str = "/v1/checkout/sessions";
    pub const REFUNDS: &str = "/v1/refunds";
}

struct Api {
    base: String,
    key: String,
}

impl Api {
    fn new(settings: &Params) -> Result<Api, PluginError> {
        Ok(Api {
            base: settings.get("api_base").unwrap_or("https://api.stripe.com").trim_end_matches('/').to_owned(),
            key: settings.require("secret_key")?.to_owned(),
        })
    }

    fn send(&self, req: Request) -> Result<Response, PluginError> {
        let r = req.header("authorization", &format!("Bearer {}", self.key)).timeout_ms(20_000).send()?;
        match r.status {
            200..=299 => Ok(r),
            401 | 403 => Err(PluginError::invalid_config(format!("Stripe refused the secret key: {}", error_text(&r)))),
            404 => Err(PluginError::not_found(error_text(&r))),
            400 | 402 | 409 => Err(PluginError::rejected(error_text(&r))),
            _ => Err(PluginError::unavailable(format!("Stripe answered HTTP {}: {}", r.status, error_text(&r)))),
        }
    }

    fn post_form(&self, path: &str, form: &[(String, String)], idempotency_key: &str) -> Result<Response, PluginError> {
        self.send(
            Request::new("POST", &format!("{}{path}", self.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .header("idempotency-key", idempotency_key)
                .body(encode_form(form)),
        )
    }

    fn session(&self, id: &str) -> Result<Session, PluginError> {
        if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(PluginError::rejected(format!("`{id}` is not a Checkout Session id")));
        }
        self.send(Request::new("GET", &format!("{}{}/{id}", self.base, paths::SESSIONS)))?.json()
    }
}

fn error_text(r: &Response) -> String {
    serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| r.text().chars().take(200).collect())
}

fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn encode_form(form: &[(String, String)]) -> String {
    form.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

#[derive(Debug, Deserialize)]
struct Session {
    id: String,
    #[serde(default)]
    url: Option<String>,
    /// `open`, `complete` or `expired`.
    status: String,
    /// `paid`, `unpaid` or `no_payment_required`.
    payment_status: String,
    #[serde(default)]
    amount_total: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    payment_intent: Option<String>,
}

impl Session {
    fn status(&self) -> PaymentStatus {
        match (self.status.as_str(), self.payment_status.as_str()) {
            (_, "paid") => PaymentStatus::Paid,
            ("expired", _) => PaymentStatus::Expired,
            _ => PaymentStatus::Pending,
        }
    }

    /// The session as Bursar sees it, named by its state so that the same
    /// state reported twice is applied once.
    fn event(&self, cause: &str) -> PaymentEvent {
        let status = self.status();
        let amount = match (status, self.amount_total, &self.currency) {
            (PaymentStatus::Paid, Some(a), Some(c)) => Some(Money { amount: a, currency: c.to_ascii_uppercase() }),
            _ => None,
        };
        PaymentEvent {
            gateway_ref: self.id.clone(),
            status,
            amount,
            event_id: format!("{cause}:{}:{}", self.id, self.payment_status),
        }
    }
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `v1` signatures considered at most: Stripe sends one per secret it
/// signs with (two during a rotation). More is not a real header.
const MAX_SIGNATURES: usize = 4;
/// A header longer than this is not Stripe's.
const MAX_HEADER_LEN: usize = 1024;

/// Checks `Stripe-Signature` against every configured secret. The header
/// is read strictly — one timestamp, at most [`MAX_SIGNATURES`] `v1`
/// signatures of 32 bytes each — and the MAC of the body is computed once
/// per secret, so a forged header costs what a real one does.
fn verify(settings: &Params, header: &str, body: &[u8], now: i64) -> Result<(), PluginError> {
    let secrets: Vec<&str> = settings
        .require("webhook_secrets")?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let tolerance = settings.parse::<i64>("tolerance_secs")?.unwrap_or(300);
    if header.len() > MAX_HEADER_LEN {
        return Err(PluginError::rejected("Stripe-Signature is too long"));
    }
    let mut timestamp = None;
    let mut signatures: Vec<[u8; 32]> = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                if timestamp.is_some() {
                    return Err(PluginError::rejected("Stripe-Signature has two timestamps"));
                }
                timestamp = Some(t.parse::<i64>().map_err(|_| PluginError::rejected("Stripe-Signature has a bad timestamp"))?);
            }
            Some(("v1", sig)) => {
                let sig = hex::decode(sig)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| PluginError::rejected("a Stripe-Signature v1 is not 64 hex digits"))?;
                if signatures.len() == MAX_SIGNATURES {
                    return Err(PluginError::rejected("Stripe-Signature carries too many signatures"));
                }
                signatures.push(sig);
            }
            _ => {}
        }
    }
    let t = timestamp.ok_or_else(|| PluginError::rejected("Stripe-Signature has no timestamp"))?;
    if signatures.is_empty() {
        return Err(PluginError::rejected("Stripe-Signature has no v1 signature"));
    }
    if (now - t).abs() > tolerance {
        return Err(PluginError::rejected(format!(
            "Stripe-Signature timestamp is {}s away from now (tolerance {tolerance}s)",
            now - t
        )));
    }
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|_| PluginError::invalid_config("unusable webhook secret"))?;
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        // The body is hashed once; `verify_slice` on a copy of the state
        // compares each candidate in constant time.
        if signatures.iter().any(|sig| mac.clone().verify_slice(sig).is_ok()) {
            return Ok(());
        }
    }
    Err(PluginError::rejected("Stripe-Signature does not match any webhook secret"))
}

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: serde_json::Value,
}

fn reply(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

impl GatewayPlugin for Stripe {
    fn info() -> PluginInfo {
        PluginInfo::new("stripe", env!("CARGO_PKG_VERSION"), &["checkout", "webhooks", "refund"])
    }

    fn check_connection(settings: Params) -> Result<(), PluginError> {
        let api = Api::new(&settings)?;
        api.send(Request::new("GET", &format!("{}{}?limit=1", api.base, paths::SESSIONS)))?;
        Ok(())
    }

    fn create_payment(request: PaymentRequest) -> Result<CreatedPayment, PluginError> {
        let settings = Params(request.settings.clone());
        let api = Api::new(&settings)?;
        let s = |k: &str, v: String| (k.to_owned(), v);
        let form = vec![
            s("mode", "payment".into()),
            s("client_reference_id", request.payment_id.clone()),
            s("metadata[payment_id]", request.payment_id.clone()),
            s("customer_email", request.account_email.clone()),
            s("success_url", request.return_url.clone()),
            s("cancel_url", request.return_url.clone()),
            s("line_items[0][quantity]", "1".into()),
            s("line_items[0][price_data][currency]", request.amount.currency.to_ascii_lowercase()),
            s("line_items[0][price_data][unit_amount]", request.amount.amount.to_string()),
            s("line_items[0][price_data][product_data][name]", request.description.clone()),
        ];
        let session: Session = api.post_form(paths::SESSIONS, &form, &request.payment_id)?.json()?;
        let url = session.url.clone().ok_or_else(|| PluginError::internal("Stripe returned a session without a URL"))?;
        Ok(CreatedPayment { gateway_ref: session.id, checkout: Checkout::Redirect(url), instructions: None })
    }

    fn handle_callback(settings: Params, request: HttpRequest) -> Result<CallbackResult, PluginError> {
        let header = request
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("stripe-signature"))
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| PluginError::rejected("no Stripe-Signature header"))?;
        verify(&settings, header, &request.body, now_secs())?;
        let event: Event = serde_json::from_slice(&request.body)
            .map_err(|e| PluginError::rejected(format!("not a Stripe event: {e}")))?;
        let mut events = vec![];
        if event.kind.starts_with("checkout.session.") {
            let id = event.data.object["id"]
                .as_str()
                .ok_or_else(|| PluginError::rejected("the event names no session"))?;
            // Never trust the body: ask Stripe what the session is now.
            let session = Api::new(&settings)?.session(id)?;
            log::info(&format!("{} ({}) → session {} is {}", event.id, event.kind, session.id, session.payment_status));
            events.push(session.event(&event.id));
        }
        Ok(CallbackResult { response: reply(200, "{\"received\":true}"), events })
    }

    fn query(settings: Params, gateway_ref: String) -> Result<PaymentEvent, PluginError> {
        Ok(Api::new(&settings)?.session(&gateway_ref)?.event("query"))
    }

    fn refund(settings: Params, gateway_ref: String, amount: Money, refund_id: String) -> Result<String, PluginError> {
        let api = Api::new(&settings)?;
        let session = api.session(&gateway_ref)?;
        let intent = session
            .payment_intent
            .ok_or_else(|| PluginError::rejected(format!("session {gateway_ref} has no payment to refund")))?;
        let form = vec![
            ("payment_intent".to_owned(), intent),
            ("amount".to_owned(), amount.amount.to_string()),
            ("metadata[refund_id]".to_owned(), refund_id.clone()),
        ];
        #[derive(Deserialize)]
        struct Created {
            id: String,
        }
        Ok(api.post_form(paths::REFUNDS, &form, &refund_id)?.json::<Created>()?.id)
    }
}

bursar_plugin_sdk::gateway_plugin!(Stripe);
