//! Orders, the service state machine, prolongation and plan changes.

use axum::http::StatusCode;
use bursar::services::OperationKind;
use bursar::services::module::{ModuleError, ModuleOutcome};
use bursar_tests::{ADMIN_KEY, TestApp};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

async fn funded_account(app: &TestApp, email: &str, amount: i64) -> String {
    let id = app.create_account(email, "EUR", 0).await;
    if amount > 0 {
        assert_eq!(
            app.credit(&id, amount, "EUR").await.status,
            StatusCode::CREATED
        );
    }
    id
}

/// Puts a new service in `state` and returns its id.
async fn service_in(app: &TestApp, plan: &str, state: &str, n: usize) -> String {
    let email = format!("{state}{n}@example.com");
    if state == "ordered" {
        let acc = funded_account(app, &email, 0).await;
        let r = app.order(&acc, plan, "1m").await;
        assert_eq!(r.json["status"], "ordered", "{}", r.text);
        return r.json["id"].as_str().unwrap().to_owned();
    }
    let acc = funded_account(app, &email, 100_000).await;
    let r = app.order(&acc, plan, "1m").await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json["status"], "opening");
    if state == "opening" {
        return id;
    }
    app.run_operations().await;
    assert_eq!(app.service(&id).await["status"], "active");
    match state {
        "active" => {}
        "suspended" => {
            let r = app
                .post(
                    &format!("/api/v1/services/{id}/suspend"),
                    ADMIN_KEY,
                    json!({"reason": "admin"}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        }
        "closing" | "closed" => {
            let r = app
                .post(
                    &format!("/api/v1/services/{id}/close"),
                    ADMIN_KEY,
                    json!({}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            if state == "closed" {
                app.run_operations().await;
            }
        }
        _ => unreachable!(),
    }
    assert_eq!(app.service(&id).await["status"], state);
    if state == "suspended" {
        app.run_operations().await;
    }
    id
}

async fn history_len(app: &TestApp, id: &str) -> usize {
    let r = app
        .get(
            &format!("/api/v1/services/{id}/events?limit=500"),
            ADMIN_KEY,
        )
        .await;
    r.json["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn every_state_and_action_pair_transitions_and_logs_or_is_a_409_that_changes_nothing() {
    let app = TestApp::new().await;
    let plan = app.simple_plan(1000).await;
    let other = app.simple_plan(2000).await;
    app.allow_change(&plan, &other).await;
    // (state, action, body, the state after, or None for 409)
    let table: Vec<(&str, &str, Value, Option<&str>)> = {
        let mut t = Vec::new();
        for state in [
            "ordered",
            "opening",
            "active",
            "suspended",
            "closing",
            "closed",
        ] {
            let expect = |action: &str| -> Option<&'static str> {
                match (state, action) {
                    ("active", "suspend") => Some("suspended"),
                    ("suspended", "resume") => Some("active"),
                    ("ordered", "close") => Some("closed"),
                    ("active", "close") | ("suspended", "close") => Some("closing"),
                    ("active", "prolong") => Some("active"),
                    ("suspended", "prolong") => Some("suspended"),
                    ("active", "change-plan") => Some("active"),
                    _ => None,
                }
            };
            t.push((
                state,
                "suspend",
                json!({"reason": "abuse"}),
                expect("suspend"),
            ));
            t.push((state, "resume", json!({}), expect("resume")));
            t.push((state, "close", json!({}), expect("close")));
            t.push((state, "prolong", json!({"period": "1m"}), expect("prolong")));
            t.push((
                state,
                "change-plan",
                json!({"plan_id": other}),
                expect("change-plan"),
            ));
        }
        t
    };
    for (n, (state, action, body, after)) in table.into_iter().enumerate() {
        let id = service_in(&app, &plan, state, n).await;
        let events_before = history_len(&app, &id).await;
        let counts_before = app.counts().await;
        let r = app
            .post(&format!("/api/v1/services/{id}/{action}"), ADMIN_KEY, body)
            .await;
        match after {
            Some(next) => {
                // A plan change is asked of the module first.
                let status = if action == "change-plan" {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::OK
                };
                assert_eq!(r.status, status, "{state} + {action}: {}", r.text);
                let now = app.service(&id).await;
                assert_eq!(now["status"], next, "{state} + {action}");
                assert_eq!(
                    history_len(&app, &id).await,
                    events_before + 1,
                    "{state} + {action} is logged once"
                );
            }
            None => {
                assert_eq!(
                    r.problem(409),
                    "urn:bursar:problem:illegal-transition",
                    "{state} + {action}"
                );
                assert_eq!(r.json["current_status"], state);
                assert_eq!(app.service(&id).await["status"], state);
                assert_eq!(
                    history_len(&app, &id).await,
                    events_before,
                    "{state} + {action} logs nothing"
                );
                assert_eq!(
                    app.counts().await,
                    counts_before,
                    "{state} + {action} writes nothing"
                );
            }
        }
    }
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn an_order_paid_from_the_balance_opens_through_the_module_and_becomes_active() {
    let app = TestApp::new().await;
    let plan = app
        .create_plan(json!({
            "name": "VPS M", "product_type": "vps", "module": "test",
            "prices": [{"period": "1m", "currency": "EUR", "amount": 1500}],
            "setup_fees": [{"currency": "EUR", "amount": 500}],
            "addons": [{"kind": "integer", "code": "ips", "name": "IPv4", "min": 1, "max": 4, "included": 1,
                        "unit_prices": [{"period": "1m", "currency": "EUR", "amount": 200}]}]
        }))
        .await;
    let acc = funded_account(&app, "open@example.com", 5000).await;
    let r = app
        .post(
            "/api/v1/orders",
            ADMIN_KEY,
            json!({"account_id": acc, "plan_id": plan, "period": "1m", "addons": {"ips": 3}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["status"], "opening");
    assert_eq!(r.json["recurring_price"], 1500 + 2 * 200);
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(app.balance(&acc).await, 5000 - 1500 - 400 - 500);

    app.module.push(
        OperationKind::Open,
        false,
        Ok(ModuleOutcome::InProgress {
            remote_ref: "job-7".into(),
            poll_after: std::time::Duration::from_secs(30),
            progress: Some("installing".into()),
        }),
    );
    app.module.push(
        OperationKind::Open,
        true,
        Ok(ModuleOutcome::Done {
            params: vec![("server_id".into(), "42".into())],
            secret_params: vec![("root_password".into(), "hunter2".into())],
        }),
    );
    app.run_operations().await;
    let ops = app
        .get(&format!("/api/v1/services/{id}/operations"), ADMIN_KEY)
        .await;
    let op = &ops.json["data"][0];
    assert_eq!(op["status"], "waiting");
    assert_eq!(op["remote_ref"], "job-7");
    assert_eq!(op["progress"], "installing");
    assert_eq!(
        app.service(&id).await["status"],
        "opening",
        "not active until the module finished"
    );

    app.clock.advance(chrono::Duration::seconds(31));
    app.run_operations().await;
    let service = app.service(&id).await;
    assert_eq!(service["status"], "active");
    assert_eq!(service["params"]["server_id"], "42");
    assert!(
        service["params"].get("root_password").is_none(),
        "secret params are not listed"
    );
    assert!(
        !app.get(&format!("/api/v1/services/{id}"), ADMIN_KEY)
            .await
            .text
            .contains("hunter2")
    );
    let calls = app.module.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].operation_id,
        op["id"].as_str().unwrap(),
        "the operation id is the idempotency key"
    );
    assert_eq!(calls[1].operation_id, calls[0].operation_id);
    assert!(calls[1].poll);
    assert_eq!(calls[0].service.account_email, "open@example.com");
    assert_eq!(calls[0].service.addons["ips"], json!(3));
    let events = app
        .get(&format!("/api/v1/services/{id}/events"), ADMIN_KEY)
        .await;
    let actions: Vec<&str> = events.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["order", "pay", "opened"]);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn an_unpaid_order_waits_and_a_credit_opens_it() {
    let app = TestApp::new().await;
    let plan = app.simple_plan(3000).await;
    let acc = funded_account(&app, "unpaid@example.com", 1000).await;
    let r = app.order(&acc, &plan, "1m").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json["status"], "ordered");
    assert_eq!(r.json["amount_due"], 3000);
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(app.balance(&acc).await, 1000, "nothing charged");
    assert_eq!(app.run_operations().await, 0, "nothing to provision yet");

    app.credit(&acc, 1500, "EUR").await;
    assert_eq!(
        app.service(&id).await["status"],
        "ordered",
        "2500 still does not cover 3000"
    );
    let r = app.credit(&acc, 500, "EUR").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let s = app.service(&id).await;
    assert_eq!(s["status"], "opening");
    assert_eq!(s["amount_due"], 0);
    assert_eq!(app.balance(&acc).await, 0);
    app.run_operations().await;
    assert_eq!(app.service(&id).await["status"], "active");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn orders_that_cannot_be_sold_are_problems_and_write_nothing() {
    let app = TestApp::new().await;
    let plan = app
        .create_plan(json!({
            "name": "D", "product_type": "dedicated_server", "module": "test",
            "prices": [{"period": "1m", "currency": "EUR", "amount": 100}],
            "addons": [{"kind": "enum", "code": "os", "name": "OS", "choices": [{"value": "debian"}]}]
        }))
        .await;
    let archived = app.simple_plan(100).await;
    assert_eq!(
        app.post(
            &format!("/api/v1/plans/{archived}/archive"),
            ADMIN_KEY,
            json!({})
        )
        .await
        .status,
        StatusCode::OK
    );
    let acc = funded_account(&app, "no@example.com", 10_000).await;
    let usd = app.create_account("usd@example.com", "USD", 0).await;
    app.post(
        &format!("/api/v1/accounts/{usd}/credits"),
        ADMIN_KEY,
        json!({"kind": "credit", "amount": 10000, "currency": "USD", "reason": "r"}),
    )
    .await;
    let before = app.counts().await;
    let cases = [
        (
            json!({"account_id": acc, "plan_id": archived, "period": "1m"}),
            422,
            "plan-archived",
        ),
        (
            json!({"account_id": acc, "plan_id": plan, "period": "12m"}),
            422,
            "invalid-period",
        ),
        (
            json!({"account_id": usd, "plan_id": plan, "period": "1m"}),
            422,
            "invalid-period",
        ),
        (
            json!({"account_id": acc, "plan_id": plan, "period": "1m", "addons": {"os": "windows"}}),
            422,
            "invalid-field",
        ),
        (
            json!({"account_id": acc, "plan_id": plan, "period": "1m", "addons": {"gpu": true}}),
            422,
            "invalid-field",
        ),
        (
            json!({"account_id": acc, "plan_id": plan, "period": "2m"}),
            422,
            "invalid-body",
        ),
        (
            json!({"account_id": acc, "plan_id": "plan_nope", "period": "1m"}),
            404,
            "not-found",
        ),
    ];
    for (body, status, kind) in cases {
        let r = app.post("/api/v1/orders", ADMIN_KEY, body.clone()).await;
        assert_eq!(
            r.problem(status),
            format!("urn:bursar:problem:{kind}"),
            "{body}: {}",
            r.text
        );
    }
    assert_eq!(app.counts().await, before);
    let services = app.get("/api/v1/services", ADMIN_KEY).await;
    assert!(services.json["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn prolong_charges_the_balance_and_extends_from_the_anchor_across_month_ends() {
    let app = TestApp::new().await;
    app.clock
        .set(Utc.with_ymd_and_hms(2027, 1, 31, 10, 0, 0).unwrap());
    let plan = app.simple_plan(1000).await;
    let acc = funded_account(&app, "prolong@example.com", 3000).await;
    let id = app.order(&acc, &plan, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    let s = app.service(&id).await;
    assert_eq!(s["status"], "active");
    assert_eq!(
        s["paid_until"], "2027-02-28T10:00:00Z",
        "Jan 31 + 1 month clamps to Feb 28"
    );

    let path = format!("/api/v1/services/{id}/prolong");
    let r = app.post(&path, ADMIN_KEY, json!({"period": "1m"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json["paid_until"], "2027-03-31T10:00:00Z",
        "the anniversary day returns"
    );
    assert_eq!(app.balance(&acc).await, 1000);

    let before = app.counts().await;
    let r = app.post(&path, ADMIN_KEY, json!({"period": "3m"})).await;
    assert_eq!(r.problem(402), "urn:bursar:problem:insufficient-funds");
    assert_eq!(
        app.counts().await,
        before,
        "a refused prolong writes nothing"
    );
    assert_eq!(app.service(&id).await["paid_until"], "2027-03-31T10:00:00Z");

    let r = app.post(&path, ADMIN_KEY, json!({"period": "1m"})).await;
    assert_eq!(r.json["paid_until"], "2027-04-30T10:00:00Z");
    assert_eq!(app.balance(&acc).await, 0);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn prolonging_a_service_suspended_for_non_payment_resumes_it_but_not_an_abuse_suspension() {
    let app = TestApp::new().await;
    let plan = app.simple_plan(1000).await;
    let acc = funded_account(&app, "np@example.com", 10_000).await;
    let id = app.order(&acc, &plan, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    app.post(
        &format!("/api/v1/services/{id}/suspend"),
        ADMIN_KEY,
        json!({"reason": "non-payment"}),
    )
    .await;
    let r = app
        .post(
            &format!("/api/v1/services/{id}/prolong"),
            ADMIN_KEY,
            json!({"period": "1m"}),
        )
        .await;
    assert_eq!(r.json["status"], "active", "{}", r.text);

    app.post(
        &format!("/api/v1/services/{id}/suspend"),
        ADMIN_KEY,
        json!({"reason": "abuse"}),
    )
    .await;
    let r = app
        .post(
            &format!("/api/v1/services/{id}/prolong"),
            ADMIN_KEY,
            json!({"period": "1m"}),
        )
        .await;
    assert_eq!(r.json["status"], "suspended");
    assert_eq!(r.json["suspend_reason"], "abuse");
}

#[tokio::test]
async fn change_plan_prorates_by_calendar_days_and_the_amounts_add_up() {
    let app = TestApp::new().await;
    app.clock
        .set(Utc.with_ymd_and_hms(2028, 2, 1, 8, 0, 0).unwrap());
    let small = app.simple_plan(2900).await;
    let big = app.simple_plan(5800).await;
    app.allow_change(&small, &big).await;
    app.allow_change(&big, &small).await;
    let acc = funded_account(&app, "upgrade@example.com", 10_000).await;
    let id = app.order(&acc, &small, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    assert_eq!(app.balance(&acc).await, 7100);

    app.clock
        .set(Utc.with_ymd_and_hms(2028, 2, 15, 8, 0, 0).unwrap());
    let r = app
        .post(
            &format!("/api/v1/services/{id}/change-plan"),
            ADMIN_KEY,
            json!({"plan_id": big}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    // February 2028 has 29 days: 14 used, 15 left.
    assert_eq!(r.json["proration"]["total_days"], 29);
    assert_eq!(r.json["proration"]["remaining_days"], 15);
    assert_eq!(r.json["proration"]["credit"], 1500); // 2900 × 15/29
    assert_eq!(r.json["proration"]["charge"], 3000); // 5800 × 15/29
    // Nothing moved yet: the module makes the change first; what it costs
    // beyond what comes back is set aside meanwhile.
    assert_eq!(r.json["service"]["plan_id"], small.as_str());
    assert_eq!(r.json["hold"], 1500);
    assert_eq!(r.json["operation"]["kind"], "change_plan");
    assert_eq!(app.balance(&acc).await, 7100 - 1500);
    app.run_operations().await;
    let s = app.service(&id).await;
    assert_eq!(s["plan_id"], big.as_str());
    assert_eq!(s["recurring_price"], 5800);
    // What the change charged is what a later change can give back.
    let stored = {
        let mut r = app.db.store.reader().await.unwrap();
        bursar::store::services::get(r.conn(), &id).await.unwrap()
    };
    assert_eq!(stored.range_gross, 3000);
    assert_eq!(s.get("range_gross"), None, "proration ranges stay inside");
    assert_eq!(app.balance(&acc).await, 7100 + 1500 - 3000);

    // And back down with a day left: 1 of the 15 days the change paid for.
    app.clock
        .set(Utc.with_ymd_and_hms(2028, 2, 29, 8, 0, 0).unwrap());
    let r = app
        .post(
            &format!("/api/v1/services/{id}/change-plan"),
            ADMIN_KEY,
            json!({"plan_id": small}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["proration"]["remaining_days"], 1);
    assert_eq!(r.json["proration"]["credit"], 200); // 3000 × 1/15
    assert_eq!(r.json["proration"]["charge"], 100); // 2900 × 1/29
    assert_eq!(r.json["hold"], 0);
    app.run_operations().await;
    assert_eq!(app.service(&id).await["plan_id"], small.as_str());
    assert_eq!(app.balance(&acc).await, 7100 + 1500 - 3000 + 200 - 100);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn customers_act_only_on_their_own_services_and_where_the_plan_allows() {
    let app = TestApp::new().await;
    let open_plan = app.simple_plan(100).await;
    let locked_plan = app
        .create_plan(json!({
            "name": "Locked", "product_type": "generic", "module": "test", "customer_actions": [],
            "prices": [{"period": "1m", "currency": "EUR", "amount": 100}]
        }))
        .await;
    let mine = funded_account(&app, "me@example.com", 10_000).await;
    let theirs = funded_account(&app, "them@example.com", 10_000).await;
    let key = app.customer_key(&mine).await;

    let r = app
        .post(
            "/api/v1/orders",
            &key,
            json!({"plan_id": open_plan, "period": "1m"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let my_service = r.json["id"].as_str().unwrap().to_owned();
    let r = app
        .post(
            "/api/v1/orders",
            &key,
            json!({"account_id": theirs, "plan_id": open_plan, "period": "1m"}),
        )
        .await;
    r.problem(403);
    let locked = app
        .post(
            "/api/v1/orders",
            &key,
            json!({"plan_id": locked_plan, "period": "1m"}),
        )
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let their_service = app.order(&theirs, &open_plan, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;

    let r = app
        .post(
            &format!("/api/v1/services/{my_service}/prolong"),
            &key,
            json!({"period": "1m"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    app.post(
        &format!("/api/v1/services/{their_service}/prolong"),
        &key,
        json!({"period": "1m"}),
    )
    .await
    .problem(403);
    app.get(&format!("/api/v1/services/{their_service}"), &key)
        .await
        .problem(403);
    app.post(&format!("/api/v1/services/{locked}/close"), &key, json!({}))
        .await
        .problem(403);
    app.post(
        &format!("/api/v1/services/{my_service}/suspend"),
        &key,
        json!({"reason": "admin"}),
    )
    .await
    .problem(403);
    let list = app.get("/api/v1/services", &key).await;
    assert_eq!(list.json["data"].as_array().unwrap().len(), 2);
    let r = app
        .post(
            &format!("/api/v1/services/{my_service}/close"),
            &key,
            json!({}),
        )
        .await;
    assert_eq!(r.json["status"], "closing");
}

#[tokio::test]
async fn a_rejected_operation_goes_to_the_manual_queue_where_staff_retry_or_complete_it() {
    let app = TestApp::new().await;
    let plan = app.simple_plan(100).await;
    let acc = funded_account(&app, "manual@example.com", 10_000).await;
    let id = app.order(&acc, &plan, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.module.push(
        OperationKind::Open,
        false,
        Err(ModuleError::Rejected("no such configuration".into())),
    );
    app.run_operations().await;
    let manual = app.get("/api/v1/operations?status=manual", ADMIN_KEY).await;
    let ops = manual.json["data"].as_array().unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["error_kind"], "rejected");
    assert!(
        ops[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("no such configuration")
    );
    assert_eq!(
        app.service(&id).await["status"],
        "opening",
        "the service stays where it was"
    );
    let op_id = ops[0]["id"].as_str().unwrap().to_owned();

    // Completing something that is not in the manual queue is refused.
    let r = app
        .post(
            &format!("/api/v1/operations/{op_id}/retry"),
            ADMIN_KEY,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    app.post(
        &format!("/api/v1/operations/{op_id}/retry"),
        ADMIN_KEY,
        json!({}),
    )
    .await
    .problem(409);
    app.run_operations().await;
    assert_eq!(app.service(&id).await["status"], "active");

    // A `manual` plan: staff complete the work by hand.
    let manual_plan = app
        .create_plan(
            json!({"name": "Hand", "product_type": "generic", "module": "manual",
                            "prices": [{"period": "1m", "currency": "EUR", "amount": 100}]}),
        )
        .await;
    let sid = app.order(&acc, &manual_plan, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    let ops = app
        .get(&format!("/api/v1/services/{sid}/operations"), ADMIN_KEY)
        .await;
    assert_eq!(ops.json["data"][0]["status"], "manual");
    let op = ops.json["data"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .post(
            &format!("/api/v1/operations/{op}/complete"),
            ADMIN_KEY,
            json!({"params": {"server": "rack 4 unit 2"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let s = app.service(&sid).await;
    assert_eq!(s["status"], "active");
    assert_eq!(s["params"]["server"], "rack 4 unit 2");
}
