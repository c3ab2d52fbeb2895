use axum::http::StatusCode;
use bursar_tests::TestApp;
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
            app.spawn_post(
                &path,
                Some(&format!("debit-{i}")),
                json!({"kind": "debit", "amount": 100, "currency": "EUR", "reason": "race"}),
            )
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let reply = t.await.unwrap();
        match reply.status.as_u16() {
            201 => ok += 1,
            402 | 409 => {
                assert_eq!(reply.content_type, "application/problem+json");
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

/// The first credits of a deployment sent at once all open the engine's
/// own adjustments account on first use: one of them opens it, the others
/// (on PostgreSQL, seeing it appear between their update and their read)
/// post to it instead of being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_credits_sent_at_once_all_go_through() {
    for round in 0..3 {
        let app = TestApp::new().await;
        let mut accounts = Vec::new();
        for i in 0..12 {
            accounts.push(
                app.create_account(&format!("first{round}-{i}@example.com"), "EUR", 0)
                    .await,
            );
        }
        let tasks: Vec<_> = accounts
            .iter()
            .map(|id| {
                app.spawn_post(
                    &format!("/api/v1/accounts/{id}/credits"),
                    None,
                    json!({"kind": "credit", "amount": 500, "currency": "EUR", "reason": "first"}),
                )
            })
            .collect();
        for t in tasks {
            let reply = t.await.unwrap();
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
        }
        for id in &accounts {
            assert_eq!(app.balance(id).await, 500);
        }
        app.assert_ledger_clean().await;
    }
}

/// Orders sent at once are committed in groups (one transaction, placed as
/// one batch): each is paid while the balance covers it, a refused one
/// and a replay sit among them without disturbing the rest, and every
/// invoice number is used once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_sent_at_once_are_each_charged_once_and_a_refusal_among_them_leaves_the_rest_whole()
{
    let app = TestApp::new().await;
    let id = app.create_account("burst@example.com", "EUR", 0).await;
    let plan = app.simple_plan(500).await;
    assert_eq!(
        app.credit(&id, 10 * 500, "EUR").await.status,
        StatusCode::CREATED
    );
    let order = |key: String, plan: &str| {
        let task = app.spawn_post(
            "/api/v1/orders",
            Some(&key),
            json!({"account_id": id, "plan_id": plan, "period": "1m"}),
        );
        async move {
            let reply = task.await.unwrap();
            (reply.status.as_u16(), reply.json)
        }
    };
    // 20 orders (ten paid, ten unpaid: the most an account may have), each
    // key sent twice (a client retrying at once), and orders of a plan that
    // does not exist mixed in.
    let mut tasks = Vec::new();
    for i in 0..20 {
        tasks.push((format!("burst-{i}"), order(format!("burst-{i}"), &plan)));
        tasks.push((format!("burst-{i}"), order(format!("burst-{i}"), &plan)));
        if i % 6 == 0 {
            tasks.push((
                format!("bad-{i}"),
                order(format!("bad-{i}"), "plan_does_not_exist"),
            ));
        }
    }
    let mut answers: std::collections::HashMap<String, Vec<(u16, serde_json::Value)>> =
        Default::default();
    for (key, task) in tasks {
        answers.entry(key).or_default().push(task.await);
    }
    let mut opening = 0;
    let mut ordered = 0;
    for (key, replies) in &answers {
        if key.starts_with("bad-") {
            assert_eq!(replies[0].0, 404, "{key}: {}", replies[0].1);
            continue;
        }
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].0, 201, "{key}: {}", replies[0].1);
        assert_eq!(
            replies[0], replies[1],
            "{key}: both sends get the one answer"
        );
        match replies[0].1["status"].as_str() {
            Some("opening") => opening += 1,
            Some("ordered") => ordered += 1,
            other => panic!("{key}: {other:?}"),
        }
    }
    assert_eq!(opening, 10, "the balance pays for ten orders");
    assert_eq!(ordered, 10, "the rest wait for money");
    assert_eq!(
        app.db.count("SELECT COUNT(*) FROM services").await,
        20,
        "one service per key"
    );
    assert_eq!(app.balance(&id).await, 0);
    let numbers = app
        .db
        .count("SELECT COUNT(DISTINCT number) FROM invoices WHERE kind = 'invoice'")
        .await;
    assert_eq!(
        numbers,
        app.db
            .count("SELECT COUNT(*) FROM invoices WHERE kind = 'invoice'")
            .await
    );
    app.assert_ledger_clean().await;
}
