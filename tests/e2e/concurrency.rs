use axum::http::StatusCode;
use bursar_tests::{ADMIN_KEY, TestApp};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_debits_against_ten_debits_worth_leave_exactly_zero() {
    let app = TestApp::new().await;
    let id = app.create_account("conc@example.com", "EUR", 0).await;
    assert_eq!(
        app.credit(&id, 1000, "EUR").await.status,
        StatusCode::CREATED
    );

    let path = format!("/api/v1/accounts/{id}/credits");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let router = app.router.clone();
            let path = path.clone();
            tokio::spawn(async move {
                let req = axum::http::Request::builder()
                    .method("POST")
                    .uri(path)
                    .header("authorization", format!("Bearer {ADMIN_KEY}"))
                    .header("content-type", "application/json")
                    .header("idempotency-key", format!("debit-{i}"))
                    .body(axum::body::Body::from(
                        json!({"kind": "debit", "amount": 100, "currency": "EUR", "reason": "race"}).to_string(),
                    ))
                    .unwrap();
                let resp = tower::ServiceExt::oneshot(router, req).await.unwrap();
                let status = resp.status();
                let ct = resp
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                (status, ct)
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, ct) = t.await.unwrap();
        match status.as_u16() {
            201 => ok += 1,
            402 | 409 => {
                assert_eq!(ct, "application/problem+json");
                refused += 1
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 10);
    assert_eq!(refused, 40);
    assert_eq!(app.balance(&id).await, 0);
    app.assert_ledger_clean().await;
}
