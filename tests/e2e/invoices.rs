//! Taxes on charges, and the documents every movement of money gets:
//! invoices, receipts, credit notes — numbered without gaps.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use bursar_tests::{ADMIN_KEY, TestApp};
use serde_json::{Value, json};

async fn app() -> TestApp {
    let echo = std::path::Path::new(bursar::plugins::builtin::WASM_DIR)
        .join("gateway_echo.wasm")
        .to_string_lossy()
        .into_owned();
    TestApp::with_config(|c| {
        c.plugins = vec![
            serde_json::from_value(json!({
                "name": "instant", "kind": "gateway", "component": echo,
            }))
            .unwrap(),
        ];
        // Fifty payments at once are each open for the instant of their
        // gateway call.
        c.payments.max_open_per_account = 100;
    })
    .await
}

async fn account_in(app: &TestApp, email: &str, country: &str) -> String {
    let r = app
        .post(
            "/api/v1/accounts",
            ADMIN_KEY,
            json!({"email": email, "name": "Customer", "currency": "EUR", "country": country}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["country"], country.to_ascii_uppercase());
    r.json["id"].as_str().unwrap().to_owned()
}

async fn rule(app: &TestApp, body: Value) -> bursar_tests::Reply {
    app.post("/api/v1/tax-rules", ADMIN_KEY, body).await
}

#[tokio::test]
async fn a_tax_added_on_top_is_charged_posted_and_shown_on_the_invoice() {
    let app = app().await;
    let r = rule(
        &app,
        json!({"country": "DE", "name": "VAT", "rate_bp": 1900, "inclusive": false}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let acc = account_in(&app, "de@example.com", "DE").await;
    app.credit(&acc, 2000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    let order = app.order(&acc, &plan, "1m").await;
    assert_eq!(order.json["status"], "opening", "{}", order.text);
    assert_eq!(app.balance(&acc).await, 810, "1000 + 19 % VAT");
    let docs = app.invoices(Some(&acc)).await;
    let invoice = docs.iter().find(|d| d["kind"] == "invoice").unwrap();
    assert_eq!(
        (
            invoice["net"].as_i64(),
            invoice["tax"].as_i64(),
            invoice["total"].as_i64()
        ),
        (Some(1000), Some(190), Some(1190))
    );
    assert_eq!(invoice["tax_lines"][0]["name"], "VAT");
    assert_eq!(invoice["tax_lines"][0]["rate_bp"], 1900);
    assert!(invoice["number"].as_str().unwrap().starts_with("INV-2026-"));
    let line = &invoice["lines"][0];
    assert_eq!(
        line["net"].as_i64().unwrap() + line["tax"].as_i64().unwrap(),
        1190
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_product_types_own_inclusive_rule_wins_over_the_countrys_general_one() {
    let app = app().await;
    for body in [
        json!({"country": "FR", "name": "TVA réduite", "rate_bp": 550, "inclusive": false}),
        json!({"country": "FR", "product_type": "vps", "name": "TVA", "rate_bp": 2000, "inclusive": true}),
    ] {
        let r = rule(&app, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let acc = account_in(&app, "fr@example.com", "FR").await;
    app.credit(&acc, 10_000, "EUR").await;
    let vps = app.simple_plan(1200).await;
    let domain = app
        .create_plan(json!({
            "name": "Domain", "product_type": "domain",
            "prices": [{"period": "12m", "currency": "EUR", "amount": 1000}]
        }))
        .await;
    app.order(&acc, &vps, "1m").await;
    app.order(&acc, &domain, "12m").await;
    assert_eq!(app.balance(&acc).await, 10_000 - 1200 - 1055);
    let docs = app.invoices(Some(&acc)).await;
    let invoices: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "invoice").collect();
    assert_eq!(invoices.len(), 2);
    let totals: BTreeSet<(i64, i64, i64)> = invoices
        .iter()
        .map(|i| {
            (
                i["net"].as_i64().unwrap(),
                i["tax"].as_i64().unwrap(),
                i["total"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        totals,
        BTreeSet::from([(1000, 200, 1200), (1000, 55, 1055)])
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn payments_get_receipts_refunds_get_credit_notes_and_documents_print() {
    let app = app().await;
    let acc = account_in(&app, "r@example.com", "NL").await;
    let r = app
        .post(
            "/api/v1/payments",
            ADMIN_KEY,
            json!({"account_id": acc, "gateway": "instant", "amount": 5000, "currency": "EUR"}),
        )
        .await;
    assert_eq!(r.json["status"], "paid", "{}", r.text);
    let payment = r.json["id"].as_str().unwrap().to_owned();
    // The echo gateway cannot refund: the credit note is matched by a
    // receipt for the money that came back.
    let r = app
        .post(
            &format!("/api/v1/payments/{payment}/refunds"),
            ADMIN_KEY,
            json!({"amount": 1000, "reason": "<b>goodwill</b>"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    let docs = app.invoices(Some(&acc)).await;
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["receipt", "credit_note", "receipt"]);
    assert!(docs.iter().all(|d| d["payment_id"] == payment.as_str()));
    assert_eq!(docs[1]["total"], 1000);

    let id = docs[1]["id"].as_str().unwrap();
    let r = app
        .get(&format!("/api/v1/invoices/{id}/html"), ADMIN_KEY)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("Credit note CN-2026-000001"), "{}", r.text);
    assert!(
        r.text.contains("&lt;b&gt;goodwill&lt;") && !r.text.contains("<b>goodwill"),
        "escaped: {}",
        r.text
    );
    assert!(r.text.contains("10.00"), "{}", r.text);
    // Customers see their own documents only.
    let key = app.customer_key(&acc).await;
    let other = account_in(&app, "x@example.com", "NL").await;
    let r = app.get(&format!("/api/v1/invoices/{id}"), &key).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app
        .get(&format!("/api/v1/invoices?account_id={other}"), &key)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
}

#[tokio::test]
async fn document_numbers_stay_gap_free_under_50_concurrent_payments() {
    let app = app().await;
    let acc = account_in(&app, "many@example.com", "NL").await;
    let app = &app;
    let requests = (0..50).map(|i| {
        let body =
            json!({"account_id": acc, "gateway": "instant", "amount": 100 + i, "currency": "EUR"});
        async move { app.post("/api/v1/payments", ADMIN_KEY, body).await }
    });
    for r in futures::future::join_all(requests).await {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let mut seqs: Vec<u32> = app
        .invoices(Some(&acc))
        .await
        .iter()
        .map(|d| {
            let n = d["number"].as_str().unwrap();
            assert!(n.starts_with("RCP-2026-"), "{n}");
            n.rsplit('-').next().unwrap().parse().unwrap()
        })
        .collect();
    seqs.sort();
    assert_eq!(seqs, (1..=50).collect::<Vec<u32>>());
    assert_eq!(
        app.balance(&acc).await,
        (0..50).map(|i| 100 + i).sum::<i64>()
    );
}

#[tokio::test]
async fn bad_tax_rules_and_countries_are_refused() {
    let app = app().await;
    for body in [
        json!({"country": "Germany", "name": "VAT", "rate_bp": 1900, "inclusive": false}),
        json!({"country": "DE", "name": "VAT", "rate_bp": 0, "inclusive": false}),
        json!({"country": "DE", "name": "VAT", "rate_bp": 10_001, "inclusive": false}),
        json!({"country": "DE", "name": "", "rate_bp": 1900, "inclusive": false}),
        json!({"country": "DE", "product_type": "spaceship", "name": "VAT", "rate_bp": 1900, "inclusive": false}),
    ] {
        let r = rule(&app, body.clone()).await;
        assert!(r.status.is_client_error(), "{body}: {}", r.text);
    }
    let ok = json!({"country": "DE", "name": "VAT", "rate_bp": 1900, "inclusive": false});
    assert_eq!(rule(&app, ok.clone()).await.status, StatusCode::CREATED);
    assert_eq!(rule(&app, ok).await.status, StatusCode::CONFLICT);
    let r = app
        .post(
            "/api/v1/accounts",
            ADMIN_KEY,
            json!({"email": "c@example.com", "name": "C", "currency": "EUR", "country": "DEU"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
}
