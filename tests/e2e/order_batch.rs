//! Orders placed as one batch (`lifecycle::order_batch`, what a group
//! commit does on SQLite) against the same orders placed one by one
//! (`lifecycle::place_order`): the same services, charges, invoices,
//! events and operations, and the orders the item path refuses are left
//! to it.

use axum::http::{Method, StatusCode};
use bursar::calendar::{BillingConfig, Period};
use bursar::clock::Clock;
use bursar::lifecycle::order_batch::{BatchOrder, place_many};
use bursar::lifecycle::{OrderRequest, place_order};
use bursar::services::Service;
use bursar_tests::{ADMIN_KEY, TestApp};
use serde_json::{Value, json};

/// One customer of the scenario, created twice (once per path).
struct Customer {
    email: &'static str,
    country: Option<&'static str>,
    credit_limit: i64,
    credit: i64,
    blocked: bool,
}

const CUSTOMERS: [Customer; 4] = [
    // Taxed at 19 %: money for two orders of 1190, not three.
    Customer {
        email: "taxed",
        country: Some("DE"),
        credit_limit: 0,
        credit: 2 * 1190 + 100,
        blocked: false,
    },
    // No money: orders wait, at most two of them (the quota below).
    Customer {
        email: "broke",
        country: None,
        credit_limit: 0,
        credit: 0,
        blocked: false,
    },
    // A credit limit pays one order of 1000 (with its setup fee of 300).
    Customer {
        email: "credit",
        country: None,
        credit_limit: 1500,
        credit: 0,
        blocked: false,
    },
    Customer {
        email: "blocked",
        country: None,
        credit_limit: 0,
        credit: 5000,
        blocked: true,
    },
];

async fn customers(app: &TestApp, twin: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for c in &CUSTOMERS {
        let r = app
            .post(
                "/api/v1/accounts",
                ADMIN_KEY,
                json!({"email": format!("{}-{twin}@example.com", c.email), "name": c.email,
                       "currency": "EUR", "credit_limit": c.credit_limit, "country": c.country}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.json["id"].as_str().unwrap().to_owned();
        if c.credit > 0 {
            assert_eq!(
                app.credit(&id, c.credit, "EUR").await.status,
                StatusCode::CREATED
            );
        }
        if c.blocked {
            let r = app
                .request(
                    Method::PATCH,
                    &format!("/api/v1/accounts/{id}"),
                    Some(ADMIN_KEY),
                    Some(json!({"status": "blocked"})),
                    &[],
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        }
        ids.push(id);
    }
    ids
}

/// The scenario's orders: (customer, plan: 0 the plan, 1 with a setup fee,
/// 2 archived, 3 missing; add-ons).
const ORDERS: [(usize, usize, &str); 13] = [
    (0, 0, "{}"),
    (1, 0, "{}"),
    (0, 1, "{}"),
    (1, 0, "{}"),
    (3, 0, "{}"),
    (0, 0, "{}"),
    (1, 0, "{}"), // the quota: a third unpaid order is refused
    (2, 1, r#"{"ips": 2}"#),
    (2, 0, "{}"), // the credit limit is used up: it waits
    (0, 2, "{}"),
    (0, 3, "{}"),
    (0, 1, r#"{"ips": 9}"#), // out of range
    (0, 0, "{}"),
];

fn requests(accounts: &[String], plans: &[String]) -> Vec<OrderRequest> {
    ORDERS
        .iter()
        .map(|(customer, plan, addons)| OrderRequest {
            account_id: accounts[*customer].clone(),
            plan_id: plans[*plan].clone(),
            period: serde_json::from_value::<Period>(json!("1m")).unwrap(),
            addons: serde_json::from_str(addons).unwrap(),
            auto_renew: None,
        })
        .collect()
}

/// What a service is, without its ids.
fn shape(s: &Service) -> Value {
    json!({
        "status": s.status.as_str(), "amount_due": s.amount_due, "recurring_price": s.recurring_price,
        "setup_fee": s.setup_fee, "range_gross": s.range_gross, "range_tax": s.range_tax,
        "currency": s.currency.code(), "auto_renew": s.auto_renew, "time_zone": s.time_zone.name(),
        "addons": s.addons, "paid_until": s.paid_until, "plan": s.plan_id,
    })
}

/// Everything an account's orders wrote, without ids: balance, services
/// with their event logs, invoices, queued operations, webhook events.
async fn written(app: &TestApp, account: &str, plans: &[String]) -> Value {
    let services = app
        .get(&format!("/api/v1/services?account_id={account}"), ADMIN_KEY)
        .await;
    assert_eq!(services.status, StatusCode::OK, "{}", services.text);
    let mut out = Vec::new();
    for s in services.json["data"].as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let plan = plans
            .iter()
            .position(|p| p == s["plan_id"].as_str().unwrap())
            .unwrap();
        let events = app
            .get(&format!("/api/v1/services/{id}/events"), ADMIN_KEY)
            .await;
        assert_eq!(events.status, StatusCode::OK, "{}", events.text);
        let events: Vec<Value> = events.json["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                json!({"action": e["action"], "from": e["from_status"], "to": e["to_status"],
                       "detail": e["detail"].as_str().map(|d| d.replace(id, "SVC")), "actor": e["actor"]})
            })
            .collect();
        let announced = app
            .db
            .count(&format!(
                "SELECT COUNT(*) FROM outbox WHERE payload LIKE '%\"service_id\":\"{id}\"%'"
            ))
            .await;
        let ops = app
            .db
            .count(&format!(
                "SELECT COUNT(*) FROM operations WHERE service_id = '{id}' AND kind = 'open' AND status = 'queued'"
            ))
            .await;
        out.push(json!({
            "plan": plan, "status": s["status"], "amount_due": s["amount_due"],
            "recurring_price": s["recurring_price"], "setup_fee": s["setup_fee"],
            "addons": s["addons"], "events": events, "announced": announced,
            "open_operations": ops,
        }));
    }
    out.sort_by_key(Value::to_string);
    let mut invoices: Vec<Value> = app
        .invoices(Some(account))
        .await
        .into_iter()
        .filter(|i| i["kind"] == "invoice")
        .map(|i| {
            let lines: Vec<Value> = i["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| json!([l["net"], l["tax"], l["total"]]))
                .collect();
            json!({"net": i["net"], "tax": i["tax"], "total": i["total"], "lines": lines,
                   "tax_lines": i["tax_lines"]})
        })
        .collect();
    invoices.sort_by_key(Value::to_string);
    let announced = app
        .db
        .count(&format!(
            "SELECT COUNT(*) FROM outbox WHERE type = 'invoice.issued' AND payload LIKE '%{account}%'"
        ))
        .await;
    json!({
        "balance": app.balance(account).await,
        "services": out,
        "invoices": invoices,
        "invoices_announced": announced,
    })
}

#[tokio::test]
async fn a_batch_of_orders_writes_what_the_same_orders_one_by_one_write() {
    let app = TestApp::new().await;
    let r = app
        .post(
            "/api/v1/tax-rules",
            ADMIN_KEY,
            json!({"country": "DE", "name": "VAT", "rate_bp": 1900, "inclusive": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let mut plans = vec![app.simple_plan(1000).await];
    plans.push(
        app.create_plan(json!({
            "name": "With setup", "product_type": "dedicated_server", "module": "test",
            "prices": [{"period": "1m", "currency": "EUR", "amount": 1000}],
            "setup_fees": [{"currency": "EUR", "amount": 300}],
            "addons": [{"kind": "integer", "code": "ips", "name": "IPv4", "min": 1, "max": 4, "included": 1,
                        "unit_prices": [{"period": "1m", "currency": "EUR", "amount": 100}]}]
        }))
        .await,
    );
    let archived = app.simple_plan(700).await;
    let r = app
        .post(
            &format!("/api/v1/plans/{archived}/archive"),
            ADMIN_KEY,
            json!({}),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    plans.push(archived);
    plans.push("plan_does_not_exist".to_owned());
    let billing = BillingConfig {
        max_unpaid_orders_per_account: 2,
        ..BillingConfig::default()
    };
    let now = app.clock.now();

    // One by one, each in its own transaction (as `Idempotency::run`).
    let one_by_one = customers(&app, "item").await;
    let mut item = Vec::new();
    for req in requests(&one_by_one, &plans) {
        let mut tx = app.store().begin().await.unwrap();
        match place_order(tx.conn(), req, &billing, "test", now).await {
            Ok(s) => {
                tx.commit().await.unwrap();
                item.push(Some(s));
            }
            Err(_) => item.push(None),
        }
    }

    // The same orders as one batch.
    let batched = customers(&app, "batch").await;
    let orders: Vec<BatchOrder> = requests(&batched, &plans)
        .into_iter()
        .map(|req| BatchOrder {
            req,
            actor: "test".to_owned(),
            billing: billing.clone(),
        })
        .collect();
    let mut tx = app.store().begin().await.unwrap();
    let batch = place_many(tx.conn(), &orders, now).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(batch.len(), ORDERS.len());
    for (i, (one, many)) in item.iter().zip(&batch).enumerate() {
        match (one, many) {
            (Some(one), Some(many)) => assert_eq!(shape(one), shape(many), "order {i}"),
            (None, None) => {}
            _ => panic!("order {i}: one by one {one:?}, in the batch {many:?}"),
        }
    }
    // The scenario reaches every branch: paid (taxed, with a setup fee
    // and add-ons, on credit), waiting, and each refusal left out.
    let statuses: Vec<Option<&str>> = batch
        .iter()
        .map(|s| s.as_ref().map(|s| s.status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            Some("opening"),
            Some("ordered"),
            Some("ordered"),
            Some("ordered"),
            None,
            Some("opening"),
            None,
            Some("opening"),
            Some("ordered"),
            None,
            None,
            None,
            Some("ordered"),
        ]
    );
    for (one, many) in one_by_one.iter().zip(&batched) {
        assert_eq!(
            written(&app, one, &plans).await,
            written(&app, many, &plans).await,
            "what the orders of {one} and {many} wrote"
        );
    }
    assert_eq!(app.balance(&batched[0]).await, 100);
    assert_eq!(app.balance(&batched[2]).await, -1400);
    app.assert_ledger_clean().await;
}

/// Orders that wait together for the writer (on SQLite they are committed
/// as one group, placed as one batch): a replay, a key reused for another
/// order, a key sent twice within the group, an order of a missing plan
/// and orders beyond the balance each get the answer they get alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_waiting_together_get_the_answers_they_get_alone() {
    let app = TestApp::new().await;
    let plan = app.simple_plan(500).await;
    let rich = app.create_account("rich@example.com", "EUR", 0).await;
    let poor = app.create_account("poor@example.com", "EUR", 0).await;
    assert_eq!(
        app.credit(&rich, 3 * 500, "EUR").await.status,
        StatusCode::CREATED
    );
    let body =
        |account: &str, plan: &str| json!({"account_id": account, "plan_id": plan, "period": "1m"});
    let early = app
        .request(
            Method::POST,
            "/api/v1/orders",
            Some(ADMIN_KEY),
            Some(body(&rich, &plan)),
            &[("idempotency-key", "early")],
        )
        .await;
    assert_eq!(early.status, StatusCode::CREATED, "{}", early.text);
    let send = |key: &'static str, body: Value| {
        let task = app.spawn_post("/api/v1/orders", Some(key), body);
        async move {
            let reply = task.await.unwrap();
            let replayed = reply.headers.contains_key("idempotent-replayed");
            (key, reply.status.as_u16(), replayed, reply.json)
        }
    };
    // The writer is busy: every order below waits for it.
    let busy = app.store().begin().await.unwrap();
    let mut sent = vec![send("first", body(&poor, &plan))];
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    sent.push(send("early", body(&rich, &plan)));
    sent.push(send("early", body(&poor, &plan)));
    sent.push(send("missing", body(&rich, "plan_does_not_exist")));
    for key in ["r1", "r2", "r3", "r1", "p1"] {
        let account = if key.starts_with('r') { &rich } else { &poor };
        sent.push(send(key, body(account, &plan)));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    busy.rollback().await.unwrap();
    let mut answers: std::collections::HashMap<&str, Vec<(u16, bool, Value)>> = Default::default();
    for task in sent {
        let (key, status, replayed, json) = task.await;
        answers
            .entry(key)
            .or_default()
            .push((status, replayed, json));
    }
    let early_answers = &answers["early"];
    let replay = early_answers
        .iter()
        .find(|(status, _, _)| *status == 201)
        .unwrap_or_else(|| panic!("the same order again is answered: {early_answers:?}"));
    assert!(replay.1, "and marked as a replay");
    assert_eq!(replay.2, early.json, "with the first answer");
    assert!(
        early_answers.iter().any(|(status, _, _)| *status == 409),
        "another order under the same key is a conflict: {early_answers:?}"
    );
    assert_eq!(answers["missing"][0].0, 404, "{:?}", answers["missing"]);
    let r1 = &answers["r1"];
    assert_eq!(r1.len(), 2);
    assert_eq!(r1[0].0, 201, "{r1:?}");
    assert_eq!(r1[0].2, r1[1].2, "a key sent twice gets one answer");
    assert_eq!(
        r1.iter().filter(|(_, replayed, _)| *replayed).count(),
        1,
        "the second of them a replay"
    );
    // Three orders' worth of money: `early` and two of r1, r2, r3 paid.
    let mut statuses: Vec<&str> = ["r1", "r2", "r3"]
        .iter()
        .map(|k| answers[k][0].2["status"].as_str().unwrap())
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["opening", "opening", "ordered"]);
    for key in ["first", "p1"] {
        assert_eq!(answers[key][0].0, 201, "{:?}", answers[key]);
        assert_eq!(answers[key][0].2["status"], "ordered");
    }
    assert_eq!(app.balance(&rich).await, 0);
    assert_eq!(app.balance(&poor).await, 0);
    assert_eq!(
        app.db.count("SELECT COUNT(*) FROM services").await,
        6,
        "early, r1, r2, r3, first, p1"
    );
    assert_eq!(app.counts().await.idempotency_keys, 6);
    app.assert_ledger_clean().await;
}

/// Orders and credits sent at once for the same accounts (on PostgreSQL a
/// batch holds several customers' ledger rows while credits pay waiting
/// orders): every request is answered, none fails for a lock taken out of
/// order, and the money adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_and_credits_at_once_on_the_same_accounts_all_go_through() {
    let app = TestApp::new().await;
    let plan = app.simple_plan(300).await;
    let mut accounts = Vec::new();
    for i in 0..3 {
        accounts.push(
            app.create_account(&format!("mixed{i}@example.com"), "EUR", 0)
                .await,
        );
    }
    let mut tasks = Vec::new();
    for round in 0..8 {
        for (i, account) in accounts.iter().enumerate() {
            let (path, body, key) = if (round + i) % 3 == 0 {
                (
                    format!("/api/v1/accounts/{account}/credits"),
                    json!({"amount": 300, "currency": "EUR", "reason": "top-up", "kind": "credit"}),
                    format!("credit-{round}-{i}"),
                )
            } else {
                (
                    "/api/v1/orders".to_owned(),
                    json!({"account_id": account, "plan_id": plan, "period": "1m"}),
                    format!("order-{round}-{i}"),
                )
            };
            tasks.push(app.spawn_post(&path, Some(&key), body));
        }
    }
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let mut credited = 0;
    for account in &accounts {
        let credits = app
            .db
            .count(&format!(
                "SELECT COUNT(*) FROM ledger_transactions WHERE account_id = '{account}' AND kind = 'credit'"
            ))
            .await;
        credited += credits;
        let paid = app
            .db
            .count(&format!(
                "SELECT COUNT(*) FROM services WHERE account_id = '{account}' AND status = 'opening'"
            ))
            .await;
        let waiting = app
            .db
            .count(&format!(
                "SELECT COUNT(*) FROM services WHERE account_id = '{account}' AND status = 'ordered'"
            ))
            .await;
        assert_eq!(
            app.balance(account).await,
            0,
            "{account}: every credit pays one order"
        );
        assert_eq!(
            paid, credits,
            "{account}: each credit paid exactly one order"
        );
        assert_eq!(
            paid + waiting,
            8 - credits,
            "{account}: every order placed once"
        );
    }
    assert_eq!(credited, 8, "one credit a round");
    assert_eq!(app.db.count("SELECT COUNT(*) FROM services").await, 16);
    app.assert_ledger_clean().await;
}

/// A batch that fails as a whole (here: the shop's revenue account would
/// leave its allowed range, which the batch checks only when it writes) is
/// undone with its transaction, and its orders get the answers they get
/// one by one: the first that fits is placed, the others are refused, and
/// nothing of the failed batch stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_that_fails_is_undone_and_its_orders_answered_one_by_one() {
    let app = TestApp::new().await;
    let plan = app.simple_plan(500).await;
    let rich = app.create_account("undone@example.com", "EUR", 0).await;
    assert_eq!(
        app.credit(&rich, 4 * 500, "EUR").await.status,
        StatusCode::CREATED
    );
    let first = app.order(&rich, &plan, "1m").await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    let keys = app.counts().await.idempotency_keys;
    let revenue = app
        .db
        .text("SELECT id FROM ledger_accounts WHERE kind = 'revenue'")
        .await;
    let before = app
        .db
        .count(&format!(
            "SELECT balance FROM ledger_accounts WHERE id = '{revenue}'"
        ))
        .await;
    // Room for one more order's revenue, not for two.
    let max = bursar::ledger::MAX_BALANCE;
    let near = if before >= 0 { max - 700 } else { -(max - 700) };
    app.db
        .exec(&format!(
            "UPDATE ledger_accounts SET balance = {near} WHERE id = '{revenue}'"
        ))
        .await;

    let send = |key: &'static str| {
        app.spawn_post(
            "/api/v1/orders",
            Some(key),
            json!({"account_id": rich, "plan_id": plan, "period": "1m"}),
        )
    };
    // On SQLite the writer is held so that the three wait and go as one
    // batch; on PostgreSQL they go as they come, with the same answers.
    let busy = if app.db.backend() == bursar::store::Backend::Sqlite {
        Some(app.store().begin().await.unwrap())
    } else {
        None
    };
    let sent: Vec<_> = ["u1", "u2", "u3"].into_iter().map(send).collect();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    if let Some(busy) = busy {
        busy.rollback().await.unwrap();
    }
    let mut statuses = Vec::new();
    for task in sent {
        let reply = task.await.unwrap();
        let (status, body) = (reply.status.as_u16(), reply.text);
        assert!(status == 201 || status == 409, "{status} {body}");
        if status == 409 {
            assert!(body.contains("allowed range"), "{body}");
        }
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409], "one more order fits");
    assert_eq!(app.db.count("SELECT COUNT(*) FROM services").await, 2);
    assert_eq!(
        app.counts().await.idempotency_keys,
        keys + 1,
        "the one placed"
    );
    assert_eq!(app.balance(&rich).await, 2 * 500);
    let after = app
        .db
        .count(&format!(
            "SELECT balance FROM ledger_accounts WHERE id = '{revenue}'"
        ))
        .await;
    assert_eq!((after - near).abs(), 500, "one order's revenue moved");
    app.db
        .exec(&format!(
            "UPDATE ledger_accounts SET balance = {} WHERE id = '{revenue}'",
            before + (after - near)
        ))
        .await;
    app.assert_ledger_clean().await;
}
