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

/// A pooled connection is not pinged on every use (that would be a second
/// round trip per read), only after it sat idle: so when the database drops
/// the idle connections (a restart, an administrator), the next reads get
/// fresh ones instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_on_after_the_database_drops_the_idle_connections() {
    use bursar::store::{Backend, Conn};
    use sqlx::Connection;

    const HELD: usize = 4;
    let app = TestApp::new().await;
    let backend_pid = |mut r: bursar::store::Reader| async move {
        let pid: i64 = match r.conn() {
            Conn::Postgres(c) => sqlx::query_scalar("SELECT pg_backend_pid()::BIGINT")
                .fetch_one(c)
                .await
                .unwrap(),
            Conn::Sqlite(c) => sqlx::query_scalar("SELECT 1").fetch_one(c).await.unwrap(),
        };
        (r, pid)
    };
    // Several connections in the pool at once, then all idle.
    let mut held = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..HELD {
        let (r, pid) = backend_pid(app.store().reader().await.unwrap()).await;
        held.push(r);
        pids.push(pid);
    }
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    if app.db.backend() == Backend::Postgres {
        // From a connection of its own, so only this test's are dropped.
        let mut admin = sqlx::PgConnection::connect(app.db.url()).await.unwrap();
        for pid in &pids {
            let dropped: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1::INT)")
                .bind(pid)
                .fetch_one(&mut admin)
                .await
                .unwrap();
            assert!(dropped, "backend {pid}");
        }
        admin.close().await.unwrap();
    }

    let mut held = Vec::new();
    for _ in 0..HELD {
        let r = app
            .store()
            .reader()
            .await
            .expect("a read connection after the old ones were dropped");
        let (r, pid) = backend_pid(r).await;
        if app.db.backend() == Backend::Postgres {
            assert!(!pids.contains(&pid), "a dropped connection was handed out");
        }
        held.push(r);
    }
    let id = app.create_account("after-drop@example.com", "EUR", 0).await;
    let got = app
        .get(
            &format!("/api/v1/accounts/{id}/balance"),
            bursar_tests::ADMIN_KEY,
        )
        .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
}
