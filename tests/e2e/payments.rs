//! Payments through gateway plugins: bank transfers staff confirm, instant
//! gateways, paying orders and suspended services, refunds, bad input.

use axum::http::StatusCode;
use bursar_tests::{ADMIN_KEY, TestApp};
use serde_json::{Value, json};

fn gateway(
    name: &str,
    component: &str,
    settings: Value,
) -> bursar::plugins::instances::PluginConfig {
    serde_json::from_value(json!({
        "name": name, "kind": "gateway", "component": component, "settings": settings,
    }))
    .unwrap()
}

fn echo_path() -> String {
    std::path::Path::new(bursar::plugins::builtin::WASM_DIR)
        .join("gateway_echo.wasm")
        .to_string_lossy()
        .into_owned()
}

async fn app() -> TestApp {
    TestApp::with_plugins(&[
        gateway(
            "bank",
            "builtin:bank-transfer",
            json!({"beneficiary": "Hosting Ltd", "iban": "DE02120300000000202051", "bic": "BYLADEM1001"}),
        ),
        gateway("instant", &echo_path(), json!({})),
    ])
    .await
}

async fn pay(app: &TestApp, key: &str, body: Value, idem: &str) -> bursar_tests::Reply {
    let req = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v1/payments")
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .header("idempotency-key", idem)
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    app.send(req).await
}

async fn payment_count(app: &TestApp) -> i64 {
    let r = app.get("/api/v1/payments?limit=500", ADMIN_KEY).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json["data"].as_array().unwrap().len() as i64
}

#[tokio::test]
async fn a_bank_transfer_is_credited_once_when_staff_mark_it_paid() {
    let app = app().await;
    let acc = app.create_account("ann@example.com", "EUR", 0).await;
    let key = app.customer_key(&acc).await;
    let r = pay(
        &app,
        &key,
        json!({"account_id": acc, "gateway": "bank", "amount": 2500, "currency": "EUR"}),
        "topup-1",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["status"], "pending");
    assert_eq!(r.json["checkout"]["type"], "instructions");
    let text = r.json["checkout"]["text"].as_str().unwrap();
    let reference = r.json["gateway_ref"].as_str().unwrap();
    assert!(
        text.contains("25.00 EUR") && text.contains(reference),
        "{text}"
    );
    assert_eq!(
        app.balance(&acc).await,
        0,
        "nothing lands before the money does"
    );
    let id = r.json["id"].as_str().unwrap().to_owned();

    // The same request again: the same payment, not a second one.
    let again = pay(
        &app,
        &key,
        json!({"account_id": acc, "gateway": "bank", "amount": 2500, "currency": "EUR"}),
        "topup-1",
    )
    .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.json["id"], id.as_str());
    let other = pay(
        &app,
        &key,
        json!({"account_id": acc, "gateway": "bank", "amount": 9900, "currency": "EUR"}),
        "topup-1",
    )
    .await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.text);

    // Customers cannot confirm their own transfer.
    let r = app
        .post(&format!("/api/v1/payments/{id}/mark-paid"), &key, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // Staff marking it paid several times at once credit it once.
    let path = format!("/api/v1/payments/{id}/mark-paid");
    let marks =
        (0..5).map(|_| app.post(&path, ADMIN_KEY, json!({"reason": "seen on the statement"})));
    for r in futures::future::join_all(marks).await {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["status"], "paid");
    }
    assert_eq!(app.balance(&acc).await, 2500);
    assert_eq!(app.ledger_count(&acc, "payment").await, 1);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn an_instant_gateway_credits_at_once() {
    let app = app().await;
    let acc = app.create_account("bob@example.com", "EUR", 0).await;
    let r = pay(
        &app,
        ADMIN_KEY,
        json!({"account_id": acc, "gateway": "instant", "amount": 700, "currency": "EUR"}),
        "i-1",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["status"], "paid");
    assert_eq!(
        r.json["checkout"],
        json!({"type": "instant", "status": "paid"})
    );
    assert_eq!(app.balance(&acc).await, 700);
}

#[tokio::test]
async fn paying_an_unpaid_order_opens_it() {
    let app = app().await;
    let acc = app.create_account("cy@example.com", "EUR", 0).await;
    let plan = app.simple_plan(1500).await;
    let order = app.order(&acc, &plan, "1m").await;
    assert_eq!(order.json["status"], "ordered", "{}", order.text);
    let service = order.json["id"].as_str().unwrap().to_owned();
    let r = pay(
        &app,
        ADMIN_KEY,
        json!({"account_id": acc, "gateway": "bank", "amount": 1500, "currency": "EUR", "service_id": service}),
        "order-pay",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["service_id"], service.as_str());
    let id = r.json["id"].as_str().unwrap();
    let r = app
        .post(
            &format!("/api/v1/payments/{id}/mark-paid"),
            ADMIN_KEY,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(app.service(&service).await["status"], "opening");
    assert_eq!(app.balance(&acc).await, 0);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_payment_renews_and_resumes_a_non_payment_suspension_but_never_an_admin_one() {
    let app = app().await;
    let acc = app.create_account("di@example.com", "EUR", 0).await;
    app.credit(&acc, 3000, "EUR").await;
    let plan = app.simple_plan(1500).await;
    let mut services = vec![];
    for _ in 0..2 {
        let r = app.order(&acc, &plan, "1m").await;
        services.push(r.json["id"].as_str().unwrap().to_owned());
    }
    app.run_operations().await;
    for (id, reason) in services.iter().zip(["non-payment", "admin"]) {
        let r = app
            .post(
                &format!("/api/v1/services/{id}/suspend"),
                ADMIN_KEY,
                json!({"reason": reason}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    app.run_operations().await;
    let paid_until = app.service(&services[0]).await["paid_until"].clone();
    let r = pay(
        &app,
        ADMIN_KEY,
        json!({"account_id": acc, "gateway": "instant", "amount": 1500, "currency": "EUR"}),
        "renew",
    )
    .await;
    assert_eq!(r.json["status"], "paid", "{}", r.text);
    let renewed = app.service(&services[0]).await;
    assert_eq!(renewed["status"], "active", "{renewed}");
    assert_ne!(renewed["paid_until"], paid_until, "renewed for a period");
    let admin = app.service(&services[1]).await;
    assert_eq!(admin["status"], "suspended");
    assert_eq!(admin["suspend_reason"], "admin");
    assert_eq!(app.balance(&acc).await, 0);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn partial_then_full_refund_reverses_the_ledger_and_more_is_refused() {
    let app = app().await;
    let acc = app.create_account("ed@example.com", "EUR", 0).await;
    let r = pay(
        &app,
        ADMIN_KEY,
        json!({"account_id": acc, "gateway": "bank", "amount": 10_000, "currency": "EUR"}),
        "r-1",
    )
    .await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    let refund = |amount: i64, idem: &str| {
        let req = axum::http::Request::builder()
            .method("POST")
            .uri(format!("/api/v1/payments/{id}/refunds"))
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .header("content-type", "application/json")
            .header("idempotency-key", idem)
            .body(axum::body::Body::from(
                json!({"amount": amount, "reason": "customer asked"}).to_string(),
            ))
            .unwrap();
        app.send(req)
    };
    let r = refund(1000, "rf-0").await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "only paid payments: {}",
        r.text
    );
    app.post(
        &format!("/api/v1/payments/{id}/mark-paid"),
        ADMIN_KEY,
        json!({}),
    )
    .await;
    assert_eq!(app.balance(&acc).await, 10_000);

    let r = refund(3000, "rf-1").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["status"], "succeeded");
    assert!(
        r.json["gateway_ref"]
            .as_str()
            .unwrap()
            .starts_with("manual-")
    );
    let again = refund(3000, "rf-1").await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "a repeated request refunds once"
    );
    assert_eq!(app.balance(&acc).await, 7000);
    let r = refund(7001, "rf-2").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let r = refund(7000, "rf-3").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(app.balance(&acc).await, 0);
    let r = refund(1, "rf-4").await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "nothing left: {}",
        r.text
    );
    let p = app.get(&format!("/api/v1/payments/{id}"), ADMIN_KEY).await;
    assert_eq!(p.json["refunded_amount"], 10_000);
    assert_eq!(p.json["refunds"].as_array().unwrap().len(), 2);
    assert_eq!(app.ledger_count(&acc, "refund").await, 2);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_refund_may_not_take_the_balance_below_the_credit_limit_unless_forced() {
    let app = app().await;
    let acc = app.create_account("fa@example.com", "EUR", 500).await;
    let r = pay(
        &app,
        ADMIN_KEY,
        json!({"account_id": acc, "gateway": "bank", "amount": 2000, "currency": "EUR"}),
        "c-1",
    )
    .await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/api/v1/payments/{id}/mark-paid"),
        ADMIN_KEY,
        json!({}),
    )
    .await;
    let plan = app.simple_plan(1800).await;
    app.order(&acc, &plan, "1m").await;
    assert_eq!(app.balance(&acc).await, 200);
    let before = app.counts().await;
    let r = app
        .post(
            &format!("/api/v1/payments/{id}/refunds"),
            ADMIN_KEY,
            json!({"amount": 2000, "reason": "chargeback"}),
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.text);
    assert_eq!(app.counts().await, before, "nothing written");
    assert_eq!(app.balance(&acc).await, 200);
    let r = app
        .post(
            &format!("/api/v1/payments/{id}/refunds"),
            ADMIN_KEY,
            json!({"amount": 2000, "reason": "chargeback", "force": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["forced"], true);
    assert_eq!(app.balance(&acc).await, -1800);
    let mut reader = app.store().reader().await.unwrap();
    let audit = bursar::store::ledger::audit(reader.conn()).await.unwrap();
    assert!(audit.totals.iter().all(|(_, t)| *t == 0), "{audit:?}");
    assert!(audit.mismatched_balances.is_empty(), "{audit:?}");
    assert!(audit.unbalanced_transactions.is_empty(), "{audit:?}");
    assert_eq!(
        audit.below_floor,
        [(format!("customer:{acc}"), -1800, -500)],
        "only the forced refund's account is below its floor"
    );
}

#[tokio::test]
async fn bad_payment_requests_are_problems_and_write_nothing() {
    let app = app().await;
    let acc = app.create_account("gu@example.com", "EUR", 0).await;
    let before = app.counts().await;
    // Every bad field is the same kind of problem, naming the field.
    for (body, kind, field) in [
        (
            json!({"account_id": acc, "gateway": "bank", "amount": 0, "currency": "EUR"}),
            "invalid-field",
            Some("amount"),
        ),
        (
            json!({"account_id": acc, "gateway": "bank", "amount": -5, "currency": "EUR"}),
            "invalid-field",
            Some("amount"),
        ),
        (
            json!({"account_id": acc, "gateway": "bank", "amount": 10_000_001, "currency": "EUR"}),
            "invalid-field",
            Some("amount"),
        ),
        (
            json!({"account_id": acc, "gateway": "bank", "amount": 100, "currency": "USD"}),
            "currency-mismatch",
            None,
        ),
        (
            json!({"account_id": acc, "gateway": "nope", "amount": 100, "currency": "EUR"}),
            "invalid-field",
            Some("gateway"),
        ),
        (
            json!({"account_id": acc, "gateway": "bank", "amount": 100, "currency": "EURO"}),
            "invalid-field",
            Some("currency"),
        ),
    ] {
        let r = app.post("/api/v1/payments", ADMIN_KEY, body.clone()).await;
        assert!(r.problem(422).ends_with(kind), "{body}: {}", r.text);
        if let Some(field) = field {
            assert_eq!(r.json["field"], field, "{body}: {}", r.text);
        }
    }
    assert_eq!(app.counts().await, before);
    assert_eq!(payment_count(&app).await, 0);

    // A gateway that has no callbacks, and one that does not exist.
    let r = app
        .post(
            "/api/v1/gateways/bank/callback",
            "",
            json!({"forged": "paid"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = app
        .post("/api/v1/gateways/nope/callback", "", json!({}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(app.counts().await, before);
}

#[tokio::test]
async fn a_refund_the_gateway_refuses_gives_the_money_back() {
    let app = app().await;
    let acc = app.create_account("ha@example.com", "EUR", 0).await;
    let r = pay(
        &app,
        ADMIN_KEY,
        json!({"account_id": acc, "gateway": "instant", "amount": 900, "currency": "EUR"}),
        "h-1",
    )
    .await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    let r = app
        .post(
            &format!("/api/v1/payments/{id}/refunds"),
            ADMIN_KEY,
            json!({"amount": 900, "reason": "test"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(app.balance(&acc).await, 900, "the debit was reversed");
    let p = app.get(&format!("/api/v1/payments/{id}"), ADMIN_KEY).await;
    assert_eq!(p.json["refunded_amount"], 0);
    assert_eq!(p.json["refunds"][0]["status"], "failed");
    app.assert_ledger_clean().await;
}
