use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bursar_tests::{ADMIN_KEY, TestApp};
use serde_json::json;

fn raw(path: &str, content_type: Option<&str>, body: &str) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("authorization", format!("Bearer {ADMIN_KEY}"));
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

#[tokio::test]
async fn bad_credit_requests_are_problems_and_write_nothing() {
    let app = TestApp::new().await;
    let id = app.create_account("bad@example.com", "EUR", 0).await;
    let path = format!("/api/v1/accounts/{id}/credits");
    let before = app.counts().await;

    let cases: Vec<(Request<Body>, u16, &str)> = vec![
        (
            raw(&path, Some("application/json"), "{\"kind\": \"credit\","),
            400,
            "malformed-json",
        ),
        (
            raw(&path, Some("application/json"), "not json"),
            400,
            "malformed-json",
        ),
        (
            raw(
                &path,
                None,
                r#"{"kind":"credit","amount":1,"currency":"EUR","reason":"r"}"#,
            ),
            415,
            "unsupported-media-type",
        ),
        (
            raw(
                &path,
                Some("text/plain"),
                r#"{"kind":"credit","amount":1,"currency":"EUR","reason":"r"}"#,
            ),
            415,
            "unsupported-media-type",
        ),
        (
            raw(
                &path,
                Some("application/json"),
                r#"{"kind":"credit","amount":1,"currency":"EUR","reason":"r","extra":true}"#,
            ),
            422,
            "invalid-body",
        ),
        (
            raw(
                &path,
                Some("application/json"),
                r#"{"kind":"credit","amount":0,"currency":"EUR","reason":"r"}"#,
            ),
            422,
            "invalid-field",
        ),
        (
            raw(
                &path,
                Some("application/json"),
                r#"{"kind":"credit","amount":-5,"currency":"EUR","reason":"r"}"#,
            ),
            422,
            "invalid-field",
        ),
        (
            raw(
                &path,
                Some("application/json"),
                r#"{"kind":"credit","amount":99999999999999999999999,"currency":"EUR","reason":"r"}"#,
            ),
            422,
            "invalid-body",
        ),
        (
            raw(
                &path,
                Some("application/json"),
                r#"{"kind":"credit","amount":9223372036854775807,"currency":"EUR","reason":"r"}"#,
            ),
            422,
            "invalid-field",
        ),
        (
            raw(
                &path,
                Some("application/json"),
                r#"{"kind":"credit","amount":1.5,"currency":"EUR","reason":"r"}"#,
            ),
            422,
            "invalid-body",
        ),
        (
            raw(
                &path,
                Some("application/json"),
                r#"{"kind":"credit","amount":10,"currency":"XYZ","reason":"r"}"#,
            ),
            422,
            "invalid-field",
        ),
        (
            raw(
                &path,
                Some("application/json"),
                r#"{"kind":"credit","amount":10,"currency":"USD","reason":"r"}"#,
            ),
            422,
            "currency-mismatch",
        ),
        (
            raw(
                &path,
                Some("application/json"),
                r#"{"kind":"steal","amount":10,"currency":"EUR","reason":"r"}"#,
            ),
            422,
            "invalid-body",
        ),
        (
            raw(
                &path,
                Some("application/json"),
                r#"{"kind":"credit","amount":10,"currency":"EUR","reason":"  "}"#,
            ),
            422,
            "invalid-field",
        ),
        (
            raw(
                &path,
                Some("application/json"),
                r#"{"kind":"credit","currency":"EUR","reason":"r"}"#,
            ),
            422,
            "invalid-body",
        ),
    ];
    for (req, status, kind) in cases {
        let r = app.send(req).await;
        assert_eq!(
            r.problem(status),
            format!("urn:bursar:problem:{kind}"),
            "{}",
            r.text
        );
    }
    let huge = format!(
        r#"{{"kind":"credit","amount":1,"currency":"EUR","reason":"{}"}}"#,
        "x".repeat(200_000)
    );
    let r = app.send(raw(&path, Some("application/json"), &huge)).await;
    r.problem(413);
    assert_eq!(app.counts().await, before, "nothing was written");
    assert_eq!(app.balance(&id).await, 0);
}

#[tokio::test]
async fn bad_account_input_names_the_field() {
    let app = TestApp::new().await;
    let cases = [
        (
            json!({"email": "nope", "name": "N", "currency": "EUR"}),
            "email",
        ),
        (
            json!({"email": "a@example.com", "name": "", "currency": "EUR"}),
            "name",
        ),
        (
            json!({"email": "a@example.com", "name": "N", "currency": "EURO"}),
            "currency",
        ),
        (
            json!({"email": "a@example.com", "name": "N", "currency": "EUR", "credit_limit": -1}),
            "credit_limit",
        ),
    ];
    for (body, field) in cases {
        let r = app.post("/api/v1/accounts", ADMIN_KEY, body).await;
        r.problem(422);
        assert_eq!(r.json["field"], field, "{}", r.text);
    }
    assert_eq!(app.counts().await.accounts, 0);
}

#[tokio::test]
async fn unknown_routes_methods_and_queries_are_problems() {
    let app = TestApp::new().await;
    app.get("/api/v1/nothing-here", ADMIN_KEY)
        .await
        .problem(404);
    let account = app.get("/api/v1/accounts/acc_missing", ADMIN_KEY).await;
    account.problem(404);
    // The balance is read without the account row: a missing account is
    // the same 404, naming the account.
    let balance = app
        .get("/api/v1/accounts/acc_missing/balance", ADMIN_KEY)
        .await;
    balance.problem(404);
    assert_eq!(
        balance.json["detail"], account.json["detail"],
        "{}",
        balance.text
    );
    app.request(Method::PUT, "/api/v1/accounts", Some(ADMIN_KEY), None, &[])
        .await
        .problem(405);
    app.get("/api/v1/accounts?limit=0", ADMIN_KEY)
        .await
        .problem(400);
    app.get("/api/v1/accounts?limit=abc", ADMIN_KEY)
        .await
        .problem(400);
    app.get("/api/v1/accounts?limit=100000", ADMIN_KEY)
        .await
        .problem(400);
    app.get("/api/v1/accounts?colour=red", ADMIN_KEY)
        .await
        .problem(400);
    let r = app
        .request(
            Method::POST,
            "/api/v1/accounts",
            Some(ADMIN_KEY),
            Some(json!({"email": "a@example.com", "name": "N", "currency": "EUR"})),
            &[("idempotency-key", "")],
        )
        .await;
    r.problem(400);
    assert_eq!(StatusCode::NOT_FOUND.as_u16(), 404);
}
