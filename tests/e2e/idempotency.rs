use axum::http::{Method, StatusCode};
use bursar_tests::{ADMIN_KEY, TestApp};
use serde_json::json;

fn credit_body(amount: i64) -> serde_json::Value {
    json!({"kind": "credit", "amount": amount, "currency": "EUR", "reason": "top-up"})
}

#[tokio::test]
async fn a_replay_returns_the_same_response_and_writes_nothing() {
    let app = TestApp::new().await;
    let id = app.create_account("idem@example.com", "EUR", 0).await;
    let path = format!("/api/v1/accounts/{id}/credits");
    let headers = [("idempotency-key", "credit-1")];
    let first = app
        .request(
            Method::POST,
            &path,
            Some(ADMIN_KEY),
            Some(credit_body(700)),
            &headers,
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let after_first = app.counts().await;

    for _ in 0..3 {
        let again = app
            .request(
                Method::POST,
                &path,
                Some(ADMIN_KEY),
                Some(credit_body(700)),
                &headers,
            )
            .await;
        assert_eq!(again.status, first.status);
        assert_eq!(again.text, first.text, "identical body");
        assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    }
    assert_eq!(app.counts().await, after_first, "replays write nothing");
    assert_eq!(app.balance(&id).await, 700);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_a_conflict() {
    let app = TestApp::new().await;
    let id = app.create_account("idem2@example.com", "EUR", 0).await;
    let path = format!("/api/v1/accounts/{id}/credits");
    let headers = [("idempotency-key", "k-77")];
    let first = app
        .request(
            Method::POST,
            &path,
            Some(ADMIN_KEY),
            Some(credit_body(100)),
            &headers,
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let before = app.counts().await;
    let other = app
        .request(
            Method::POST,
            &path,
            Some(ADMIN_KEY),
            Some(credit_body(999)),
            &headers,
        )
        .await;
    assert_eq!(
        other.problem(409),
        "urn:bursar:problem:idempotency-key-reused"
    );
    // The same body on another endpoint is another request too.
    let other_account = app.create_account("idem3@example.com", "EUR", 0).await;
    let before_other = app.counts().await;
    let r = app
        .request(
            Method::POST,
            &format!("/api/v1/accounts/{other_account}/credits"),
            Some(ADMIN_KEY),
            Some(credit_body(100)),
            &headers,
        )
        .await;
    r.problem(409);
    assert_eq!(app.counts().await, before_other);
    assert_eq!(before.transactions, before_other.transactions);
    assert_eq!(app.balance(&id).await, 100);
}

#[tokio::test]
async fn key_order_and_whitespace_do_not_make_a_different_request() {
    let app = TestApp::new().await;
    let id = app.create_account("order@example.com", "EUR", 0).await;
    let path = format!("/api/v1/accounts/{id}/credits");
    let send = |body: &'static str| {
        let req = axum::http::Request::builder()
            .method(Method::POST)
            .uri(&path)
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .header("content-type", "application/json")
            .header("idempotency-key", "same")
            .body(axum::body::Body::from(body))
            .unwrap();
        app.send(req)
    };
    let a = send(r#"{"kind":"credit","amount":5,"currency":"EUR","reason":"r"}"#).await;
    let b = send(r#"{ "reason": "r", "currency": "EUR", "amount": 5, "kind": "credit" }"#).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(b.status, StatusCode::CREATED);
    assert_eq!(a.text, b.text);
    assert_eq!(app.balance(&id).await, 5);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_do_the_work_once() {
    let app = TestApp::new().await;
    let id = app.create_account("race@example.com", "EUR", 0).await;
    let path = format!("/api/v1/accounts/{id}/credits");
    let replies = futures::future::join_all((0..10).map(|_| {
        app.request(
            Method::POST,
            &path,
            Some(ADMIN_KEY),
            Some(credit_body(300)),
            &[("idempotency-key", "race-key")],
        )
    }))
    .await;
    let created: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert_eq!(created.len(), 10, "every caller gets the stored answer");
    assert!(created.iter().all(|r| r.text == created[0].text));
    assert_eq!(app.balance(&id).await, 300);
    assert_eq!(app.counts().await.idempotency_keys, 1);
}

#[tokio::test]
async fn a_failed_request_can_be_retried_with_its_key() {
    let app = TestApp::new().await;
    let id = app.create_account("retry@example.com", "EUR", 0).await;
    let path = format!("/api/v1/accounts/{id}/credits");
    let debit = json!({"kind": "debit", "amount": 400, "currency": "EUR", "reason": "fee"});
    let headers = [("idempotency-key", "fee-1")];
    let r = app
        .request(
            Method::POST,
            &path,
            Some(ADMIN_KEY),
            Some(debit.clone()),
            &headers,
        )
        .await;
    r.problem(402);
    app.credit(&id, 400, "EUR").await;
    let r = app
        .request(Method::POST, &path, Some(ADMIN_KEY), Some(debit), &headers)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(app.balance(&id).await, 0);
}

#[tokio::test]
async fn creating_an_account_twice_with_one_key_creates_one_account() {
    let app = TestApp::new().await;
    let body = json!({"email": "once@example.com", "name": "Once", "currency": "JPY"});
    let headers = [("idempotency-key", "signup-42")];
    let a = app
        .request(
            Method::POST,
            "/api/v1/accounts",
            Some(ADMIN_KEY),
            Some(body.clone()),
            &headers,
        )
        .await;
    let b = app
        .request(
            Method::POST,
            "/api/v1/accounts",
            Some(ADMIN_KEY),
            Some(body),
            &headers,
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.text, b.text);
    assert_eq!(app.counts().await.accounts, 1);
}

#[tokio::test]
async fn a_replayed_key_creation_does_not_reveal_the_secret_again() {
    let app = TestApp::new().await;
    let id = app.create_account("sec@example.com", "EUR", 0).await;
    let path = format!("/api/v1/accounts/{id}/api-keys");
    let headers = [("idempotency-key", "key-1")];
    let a = app
        .request(
            Method::POST,
            &path,
            Some(ADMIN_KEY),
            Some(json!({"name": "n"})),
            &headers,
        )
        .await;
    let b = app
        .request(
            Method::POST,
            &path,
            Some(ADMIN_KEY),
            Some(json!({"name": "n"})),
            &headers,
        )
        .await;
    assert!(a.json["secret"].is_string());
    assert!(b.json["secret"].is_null());
    assert_eq!(a.json["key"], b.json["key"]);
    assert_eq!(
        app.counts().await.api_keys,
        2,
        "admin key + one customer key"
    );
}
