//! A Stripe-compatible test server: the Checkout Session and Refund
//! endpoints the `stripe` plugin uses, with the secret-key check, plus
//! webhooks signed the way Stripe signs them (`Stripe-Signature:
//! t=…,v1=…`, HMAC-SHA256 over `"{t}.{body}"`) — or signed badly, late,
//! or tampered with, on demand.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

#[derive(Default)]
struct Inner {
    sessions: BTreeMap<String, Value>,
    refunds: Vec<Value>,
    /// Idempotency-Key → the answer first given.
    replies: BTreeMap<String, Value>,
    next: u64,
    /// The next this many creations (sessions, refunds) answer 503.
    outage: u32,
    /// Refunds are refused (400).
    refuse_refunds: bool,
}

/// A running test server.
#[derive(Clone)]
pub struct StripeSim {
    inner: Arc<Mutex<Inner>>,
    pub secret_key: String,
    pub addr: SocketAddr,
}

/// How to sign a webhook.
#[derive(Debug, Clone)]
pub struct Signing {
    pub secret: String,
    /// Seconds since the epoch written into `t=`.
    pub timestamp: i64,
    /// Sign with the wrong key.
    pub bad_signature: bool,
    /// Change the body after signing it.
    pub tamper: bool,
}

impl Signing {
    pub fn now(secret: &str) -> Signing {
        Signing {
            secret: secret.into(),
            timestamp: chrono::Utc::now().timestamp(),
            bad_signature: false,
            tamper: false,
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message}}))).into_response()
}

impl StripeSim {
    pub async fn spawn(secret_key: &str) -> StripeSim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = StripeSim {
            inner: Arc::default(),
            secret_key: secret_key.into(),
            addr: listener.local_addr().unwrap(),
        };
        let app = Router::new()
            .route(
                "/v1/checkout/sessions",
                post(create_session).get(list_sessions),
            )
            .route("/v1/checkout/sessions/{id}", get(get_session))
            .route("/v1/refunds", post(create_refund))
            .with_state(sim.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        sim
    }

    fn take_outage(&self) -> bool {
        let mut inner = self.lock();
        if inner.outage > 0 {
            inner.outage -= 1;
            true
        } else {
            false
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {}", self.secret_key))
    }

    pub fn session(&self, id: &str) -> Value {
        self.lock().sessions.get(id).cloned().unwrap_or(Value::Null)
    }

    pub fn sessions(&self) -> Vec<Value> {
        self.lock().sessions.values().cloned().collect()
    }

    pub fn refunds(&self) -> Vec<Value> {
        self.lock().refunds.clone()
    }

    /// The payer paid: the session completes with a payment intent.
    /// The next `n` session or refund creations answer 503, as Stripe does
    /// when it is having a bad day.
    pub fn fail_next(&self, n: u32) {
        self.lock().outage = n;
    }

    /// Refuses every refund from now on (`false` lifts it).
    pub fn refuse_refunds(&self, refuse: bool) {
        self.lock().refuse_refunds = refuse;
    }

    pub fn pay(&self, id: &str) {
        let mut inner = self.lock();
        inner.next += 1;
        let intent = format!("pi_test_{}", inner.next);
        let s = inner.sessions.get_mut(id).expect("session");
        s["status"] = json!("complete");
        s["payment_status"] = json!("paid");
        s["payment_intent"] = json!(intent);
    }

    /// The session ran out of time.
    pub fn expire(&self, id: &str) {
        let mut inner = self.lock();
        let s = inner.sessions.get_mut(id).expect("session");
        s["status"] = json!("expired");
    }

    /// An event about a session: the session as the server has it, with
    /// `claim` laid over it (what the body says, true or not).
    pub fn event(&self, kind: &str, session_id: &str, claim: Value) -> Value {
        let mut object = self.session(session_id);
        if let (Some(o), Some(c)) = (object.as_object_mut(), claim.as_object()) {
            for (k, v) in c {
                o.insert(k.clone(), v.clone());
            }
        }
        let mut inner = self.lock();
        inner.next += 1;
        json!({
            "id": format!("evt_test_{}", inner.next),
            "object": "event",
            "type": kind,
            "data": {"object": object},
        })
    }

    /// Headers and body of a webhook delivery of `event`.
    pub fn signed(event: &Value, signing: &Signing) -> (Vec<(String, String)>, Vec<u8>) {
        let body = serde_json::to_vec(event).unwrap();
        let key = if signing.bad_signature {
            format!("{}-wrong", signing.secret)
        } else {
            signing.secret.clone()
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{}.", signing.timestamp).as_bytes());
        mac.update(&body);
        let signature = hex::encode(mac.finalize().into_bytes());
        let mut body = body;
        if signing.tamper {
            let text = String::from_utf8(body).unwrap().replace("unpaid", "paid");
            body = format!("{text} ").into_bytes();
        }
        (
            vec![
                (
                    "stripe-signature".into(),
                    format!("t={},v1={signature}", signing.timestamp),
                ),
                ("content-type".into(), "application/json".into()),
            ],
            body,
        )
    }
}

async fn create_session(
    State(sim): State<StripeSim>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    if !sim.authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "Invalid API Key provided");
    }
    if sim.take_outage() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Stripe is having a bad day",
        );
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(k) = &key
        && let Some(reply) = sim.lock().replies.get(k)
    {
        return Json(reply.clone()).into_response();
    }
    let field = |k: &str| form.get(k).cloned();
    let (Some(amount), Some(currency), Some(_), Some(_)) = (
        field("line_items[0][price_data][unit_amount]").and_then(|a| a.parse::<i64>().ok()),
        field("line_items[0][price_data][currency]"),
        field("success_url"),
        field("line_items[0][price_data][product_data][name]"),
    ) else {
        return error(StatusCode::BAD_REQUEST, "Missing required param");
    };
    if form.get("mode").map(String::as_str) != Some("payment") {
        return error(StatusCode::BAD_REQUEST, "mode must be payment");
    }
    let mut inner = sim.lock();
    inner.next += 1;
    let id = format!("cs_test_{}", inner.next);
    let session = json!({
        "id": id,
        "object": "checkout.session",
        "url": format!("https://checkout.stripe.test/c/pay/{id}"),
        "status": "open",
        "payment_status": "unpaid",
        "amount_total": amount,
        "currency": currency,
        "client_reference_id": field("client_reference_id"),
        "customer_email": field("customer_email"),
        "metadata": {"payment_id": field("metadata[payment_id]")},
        "payment_intent": null,
    });
    inner.sessions.insert(id, session.clone());
    if let Some(k) = key {
        inner.replies.insert(k, session.clone());
    }
    Json(session).into_response()
}

async fn list_sessions(State(sim): State<StripeSim>, headers: HeaderMap) -> Response {
    if !sim.authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "Invalid API Key provided");
    }
    Json(json!({"object": "list", "data": sim.sessions()})).into_response()
}

async fn get_session(
    State(sim): State<StripeSim>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !sim.authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "Invalid API Key provided");
    }
    match sim.lock().sessions.get(&id) {
        Some(s) => Json(s.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("No such checkout.session: '{id}'"),
        ),
    }
}

async fn create_refund(
    State(sim): State<StripeSim>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    if !sim.authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "Invalid API Key provided");
    }
    if sim.take_outage() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Stripe is having a bad day",
        );
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut inner = sim.lock();
    if let Some(k) = &key
        && let Some(reply) = inner.replies.get(k)
    {
        return Json(reply.clone()).into_response();
    }
    if inner.refuse_refunds {
        return error(StatusCode::BAD_REQUEST, "This charge cannot be refunded");
    }
    let intent = form.get("payment_intent").cloned().unwrap_or_default();
    let Some(paid) = inner
        .sessions
        .values()
        .find(|s| s["payment_intent"] == json!(intent))
        .and_then(|s| s["amount_total"].as_i64())
    else {
        return error(StatusCode::BAD_REQUEST, "No such payment_intent");
    };
    let amount: i64 = form
        .get("amount")
        .and_then(|a| a.parse().ok())
        .unwrap_or(paid);
    let refunded: i64 = inner
        .refunds
        .iter()
        .filter(|r| r["payment_intent"] == json!(intent))
        .filter_map(|r| r["amount"].as_i64())
        .sum();
    if amount <= 0 || refunded + amount > paid {
        return error(
            StatusCode::BAD_REQUEST,
            "Refund amount is greater than the unrefunded charge",
        );
    }
    inner.next += 1;
    let refund = json!({
        "id": format!("re_test_{}", inner.next),
        "object": "refund",
        "amount": amount,
        "payment_intent": intent,
        "status": "succeeded",
    });
    inner.refunds.push(refund.clone());
    if let Some(k) = key {
        inner.replies.insert(k, refund.clone());
    }
    Json(refund).into_response()
}
