use axum::http::{Method, StatusCode};
use bursar_tests::{ADMIN_KEY, TestApp};
use serde_json::json;

#[tokio::test]
async fn account_is_created_read_and_updated() {
    let app = TestApp::new().await;
    let r = app
        .post(
            "/api/v1/accounts",
            ADMIN_KEY,
            json!({"email": "Ann@Example.com", "name": "Ann", "currency": "KWD", "credit_limit": 1500}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json["email"], "ann@example.com");
    assert_eq!(r.json["currency"], "KWD");
    assert_eq!(r.json["status"], "active");

    let got = app.get(&format!("/api/v1/accounts/{id}"), ADMIN_KEY).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json, r.json, "a read returns what the create returned");

    let patched = app
        .request(
            Method::PATCH,
            &format!("/api/v1/accounts/{id}"),
            Some(ADMIN_KEY),
            Some(json!({"name": "Ann B.", "credit_limit": 0, "status": "blocked"})),
            &[],
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert_eq!(patched.json["name"], "Ann B.");
    assert_eq!(patched.json["credit_limit"], 0);
    assert_eq!(patched.json["status"], "blocked");
    let balance = app
        .get(&format!("/api/v1/accounts/{id}/balance"), ADMIN_KEY)
        .await;
    assert_eq!(
        balance.json["credit_limit"], 0,
        "the ledger floor follows the limit"
    );
}

#[tokio::test]
async fn email_is_unique_case_insensitively() {
    let app = TestApp::new().await;
    app.create_account("bob@example.com", "EUR", 0).await;
    let before = app.counts().await;
    let r = app
        .post(
            "/api/v1/accounts",
            ADMIN_KEY,
            json!({"email": "BOB@example.com", "name": "Bob 2", "currency": "EUR"}),
        )
        .await;
    r.problem(409);
    assert_eq!(app.counts().await, before);
}

#[tokio::test]
async fn accounts_list_pages_with_a_cursor_and_misses_nothing() {
    let app = TestApp::new().await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            app.create_account(&format!("c{i}@example.com"), "EUR", 0)
                .await,
        );
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/accounts?limit=3&after={a}"),
            None => "/api/v1/accounts?limit=3".to_owned(),
        };
        let r = app.get(&path, ADMIN_KEY).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        pages += 1;
        let data = r.json["data"].as_array().unwrap();
        assert!(data.len() <= 3);
        seen.extend(data.iter().map(|a| a["id"].as_str().unwrap().to_owned()));
        match r.json["next_cursor"].as_str() {
            Some(c) => after = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "every account once, in creation order");
}

#[tokio::test]
async fn credit_and_debit_move_the_balance_and_appear_on_the_ledger() {
    let app = TestApp::new().await;
    let id = app.create_account("led@example.com", "EUR", 500).await;
    let r = app.credit(&id, 1250, "EUR").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["balance"]["balance"], 1250);
    assert_eq!(r.json["balance"]["balance_decimal"], "12.50");
    assert_eq!(r.json["transaction"]["kind"], "credit");
    let entries = r.json["transaction"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let sum: i64 = entries.iter().map(|e| e["amount"].as_i64().unwrap()).sum();
    assert_eq!(sum, 0, "a transaction's entries sum to zero");

    // The credit limit lets the balance go to -500, not further.
    let credits = format!("/api/v1/accounts/{id}/credits");
    let debit = |amount: i64| {
        app.post(
            &credits,
            ADMIN_KEY,
            json!({"kind": "debit", "amount": amount, "currency": "EUR", "reason": "manual fee"}),
        )
    };
    let r = debit(1700).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["balance"]["balance"], -450);
    assert_eq!(r.json["balance"]["available"], 50);
    let r = debit(51).await;
    assert_eq!(r.problem(402), "urn:bursar:problem:insufficient-funds");
    assert_eq!(r.json["balance"], -450);
    assert_eq!(r.json["credit_limit"], 500);
    assert_eq!(r.json["required"], 51);
    assert_eq!(debit(50).await.status, StatusCode::CREATED);
    assert_eq!(app.balance(&id).await, -500);

    let ledger = app
        .get(&format!("/api/v1/accounts/{id}/ledger?limit=2"), ADMIN_KEY)
        .await;
    assert_eq!(ledger.status, StatusCode::OK);
    let lines = ledger.json["data"].as_array().unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["amount"], 1250);
    assert_eq!(lines[0]["kind"], "credit");
    assert_eq!(lines[1]["amount"], -1700);
    assert_eq!(lines[1]["description"], "manual fee");
    let next = ledger.json["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            &format!("/api/v1/accounts/{id}/ledger?after={next}"),
            ADMIN_KEY,
        )
        .await;
    let lines = rest.json["data"].as_array().unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["amount"], -50);
    assert!(rest.json["next_cursor"].is_null());
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn credit_limit_cannot_be_cut_below_the_debt() {
    let app = TestApp::new().await;
    let id = app.create_account("debt@example.com", "EUR", 1000).await;
    let r = app
        .post(
            &format!("/api/v1/accounts/{id}/credits"),
            ADMIN_KEY,
            json!({"kind": "debit", "amount": 800, "currency": "EUR", "reason": "usage"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = app
        .request(
            Method::PATCH,
            &format!("/api/v1/accounts/{id}"),
            Some(ADMIN_KEY),
            Some(json!({"credit_limit": 500})),
            &[],
        )
        .await;
    r.problem(409);
    let r = app
        .get(&format!("/api/v1/accounts/{id}/balance"), ADMIN_KEY)
        .await;
    assert_eq!(r.json["credit_limit"], 1000);
}

#[tokio::test]
async fn api_keys_are_shown_once_listed_without_secrets_and_revocable() {
    let app = TestApp::new().await;
    let id = app.create_account("keys@example.com", "EUR", 0).await;
    let r = app
        .post(
            &format!("/api/v1/accounts/{id}/api-keys"),
            ADMIN_KEY,
            json!({"name": "shop"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let secret = r.json["secret"].as_str().unwrap().to_owned();
    let key_id = r.json["key"]["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("bsr_cus_"));
    assert_eq!(
        app.get(&format!("/api/v1/accounts/{id}"), &secret)
            .await
            .status,
        StatusCode::OK
    );

    let list = app
        .get(&format!("/api/v1/accounts/{id}/api-keys"), &secret)
        .await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.text.contains(&secret), "the secret is never listed");
    assert_eq!(list.json["data"][0]["name"], "shop");

    let revoked = app
        .request(
            Method::DELETE,
            &format!("/api/v1/accounts/{id}/api-keys/{key_id}"),
            Some(ADMIN_KEY),
            None,
            &[],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text);
    assert!(revoked.json["revoked_at"].is_string());
    app.get(&format!("/api/v1/accounts/{id}"), &secret)
        .await
        .problem(401);
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi_are_served() {
    let app = TestApp::new().await;
    let r = app.request(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.request(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);

    app.create_account("m@example.com", "EUR", 0).await;
    let r = app.request(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.content_type.starts_with("text/plain"));
    assert!(r.text.contains("bursar_http_requests_total"), "{}", r.text);

    let r = app
        .request(Method::GET, "/api/v1/openapi.json", None, None, &[])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/v1/accounts",
        "/api/v1/accounts/{id}",
        "/api/v1/accounts/{id}/balance",
        "/api/v1/accounts/{id}/ledger",
        "/api/v1/accounts/{id}/credits",
        "/api/v1/accounts/{id}/api-keys",
    ] {
        assert!(
            r.json["paths"][path].is_object(),
            "{path} missing from OpenAPI"
        );
    }
}
