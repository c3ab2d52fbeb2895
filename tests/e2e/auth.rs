use axum::http::{Method, StatusCode};
use bursar_tests::{ADMIN_KEY, TestApp};
use serde_json::json;

#[tokio::test]
async fn requests_without_a_valid_key_are_401() {
    let app = TestApp::new().await;
    let r = app
        .request(Method::GET, "/api/v1/accounts", None, None, &[])
        .await;
    assert_eq!(r.problem(401), "urn:bursar:problem:unauthorized");
    assert_eq!(r.headers.get("www-authenticate").unwrap(), "Bearer");
    app.get("/api/v1/accounts", "bsr_adm_not_a_real_key_0000000000")
        .await
        .problem(401);
    app.request(
        Method::GET,
        "/api/v1/accounts",
        None,
        None,
        &[("authorization", "Basic abc")],
    )
    .await
    .problem(401);
}

#[tokio::test]
async fn a_customer_key_reaches_only_its_own_account() {
    let app = TestApp::new().await;
    let mine = app.create_account("mine@example.com", "EUR", 0).await;
    let theirs = app.create_account("theirs@example.com", "EUR", 0).await;
    let key = app.customer_key(&mine).await;

    for path in ["", "/balance", "/ledger", "/api-keys"] {
        let own = app
            .get(&format!("/api/v1/accounts/{mine}{path}"), &key)
            .await;
        assert_eq!(own.status, StatusCode::OK, "{path}: {}", own.text);
        let other = app
            .get(&format!("/api/v1/accounts/{theirs}{path}"), &key)
            .await;
        assert_eq!(other.problem(403), "urn:bursar:problem:forbidden", "{path}");
    }
    let list = app.get("/api/v1/accounts", &key).await;
    let ids: Vec<&str> = list.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![mine.as_str()], "a customer lists only itself");

    // Staff-only actions.
    let before = app.counts().await;
    app.post(
        "/api/v1/accounts",
        &key,
        json!({"email": "x@example.com", "name": "X", "currency": "EUR"}),
    )
    .await
    .problem(403);
    app.post(
        &format!("/api/v1/accounts/{mine}/credits"),
        &key,
        json!({"kind": "credit", "amount": 100, "currency": "EUR", "reason": "free money"}),
    )
    .await
    .problem(403);
    app.request(
        Method::PATCH,
        &format!("/api/v1/accounts/{mine}"),
        Some(&key),
        Some(json!({"credit_limit": 100000})),
        &[],
    )
    .await
    .problem(403);
    app.post(
        &format!("/api/v1/accounts/{theirs}/api-keys"),
        &key,
        json!({"name": "steal"}),
    )
    .await
    .problem(403);
    assert_eq!(app.counts().await, before, "refused requests write nothing");

    // A customer may rename itself.
    let r = app
        .request(
            Method::PATCH,
            &format!("/api/v1/accounts/{mine}"),
            Some(&key),
            Some(json!({"name": "Renamed"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn admin_sees_every_account() {
    let app = TestApp::new().await;
    let a = app.create_account("a@example.com", "EUR", 0).await;
    let b = app.create_account("b@example.com", "JPY", 0).await;
    let list = app.get("/api/v1/accounts", ADMIN_KEY).await;
    let ids: Vec<&str> = list.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.as_str(), b.as_str()]);
    for id in [&a, &b] {
        assert_eq!(
            app.get(&format!("/api/v1/accounts/{id}/ledger"), ADMIN_KEY)
                .await
                .status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn keys_of_a_blocked_account_stop_working() {
    let app = TestApp::new().await;
    let id = app.create_account("blocked@example.com", "EUR", 0).await;
    let key = app.customer_key(&id).await;
    let r = app
        .request(
            Method::PATCH,
            &format!("/api/v1/accounts/{id}"),
            Some(ADMIN_KEY),
            Some(json!({"status": "blocked"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    app.get(&format!("/api/v1/accounts/{id}"), &key)
        .await
        .problem(403);
}
