//! The attacks a customer key (or anyone on the network) once won with,
//! replayed: each must gain nothing and leave the books clean.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bursar::clock::Clock;
use bursar::services::OperationKind;
use bursar::services::module::{ModuleError, ModuleOutcome, ScriptedModule};
use bursar_tests::{ADMIN_KEY, TestApp};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

async fn funded(app: &TestApp, email: &str, amount: i64) -> (String, String) {
    let acc = app.create_account(email, "EUR", 0).await;
    if amount > 0 {
        let r = app.credit(&acc, amount, "EUR").await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let key = app.customer_key(&acc).await;
    (acc, key)
}

async fn patch(app: &TestApp, path: &str, key: &str, body: Value) -> bursar_tests::Reply {
    app.request(Method::PATCH, path, Some(key), Some(body), &[])
        .await
}

/// A staff key of `role`, created by the admin.
async fn staff_key(app: &TestApp, role: &str) -> String {
    let r = app
        .post(
            "/api/v1/staff-keys",
            ADMIN_KEY,
            json!({"name": role, "role": role}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.json["secret"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn customers_edit_their_profile_but_never_what_they_owe() {
    let app = TestApp::new().await;
    let (acc, key) = funded(&app, "self@example.com", 0).await;
    let path = format!("/api/v1/accounts/{acc}");
    for body in [
        json!({"country": "ZZ"}),
        json!({"country": "DE"}),
        json!({"time_zone": "Pacific/Kiritimati"}),
        json!({"credit_limit": 1_000_000}),
        json!({"status": "active"}),
        json!({"name": "Still me", "country": "US"}),
    ] {
        let r = patch(&app, &path, &key, body.clone()).await;
        assert_eq!(r.problem(403), "urn:bursar:problem:forbidden", "{body}");
    }
    let account = app.get(&path, ADMIN_KEY).await.json;
    assert_eq!(account["country"], Value::Null);
    assert_eq!(account["time_zone"], Value::Null);
    assert_eq!(account["credit_limit"], 0);
    assert_eq!(account["name"], "Test Customer");

    let r = patch(
        &app,
        &path,
        &key,
        json!({"name": "Ann Example", "email": "ann@example.com"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["name"], "Ann Example");

    // Staff: an accountant sets the country, support may not; a made-up
    // code is no country.
    let accountant = staff_key(&app, "accountant").await;
    let support = staff_key(&app, "support").await;
    let r = patch(&app, &path, &support, json!({"country": "DE"})).await;
    r.problem(403);
    let r = patch(&app, &path, &accountant, json!({"country": "ZZ"})).await;
    assert_eq!(r.problem(422), "urn:bursar:problem:invalid-field");
    assert_eq!(r.json["field"], "country");
    // Codes are capitals, as ISO 3166-1 writes them and the API document
    // states.
    let r = patch(&app, &path, &accountant, json!({"country": "de"})).await;
    assert_eq!(r.problem(422), "urn:bursar:problem:invalid-field");
    let r = patch(&app, &path, &accountant, json!({"country": "DE"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["country"], "DE");
}

/// Plans at 300.00 and 10.00 that change into each other, sold with 19 %
/// VAT on top in Germany.
async fn vat_shop() -> (TestApp, String, String) {
    let app = TestApp::new().await;
    let r = app
        .post(
            "/api/v1/tax-rules",
            ADMIN_KEY,
            json!({"country": "DE", "name": "VAT", "rate_bp": 1900, "inclusive": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let big = app.simple_plan(30_000).await;
    let small = app.simple_plan(1_000).await;
    app.allow_change(&big, &small).await;
    app.allow_change(&small, &big).await;
    (app, big, small)
}

#[tokio::test]
async fn the_country_and_plan_round_trip_that_minted_money_gives_nothing() {
    let (app, big, small) = vat_shop().await;
    app.clock
        .set(Utc.with_ymd_and_hms(2027, 4, 1, 9, 0, 0).unwrap());
    let (acc, key) = funded(&app, "vat@example.com", 100_000).await;
    let accountant = staff_key(&app, "accountant").await;
    let path = format!("/api/v1/accounts/{acc}");
    let r = patch(&app, &path, &accountant, json!({"country": "DE"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .post(
            "/api/v1/orders",
            &key,
            json!({"plan_id": big, "period": "1m"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    app.run_operations().await;
    let start = app.balance(&acc).await;
    assert_eq!(start, 100_000 - 35_700, "300.00 + 19 %");

    // Halfway through, around and around: down with the country on file,
    // up again after staff changed the country to one without VAT, and so
    // on. The customer's own attempt to change it is refused outright.
    assert_eq!(
        patch(&app, &path, &key, json!({"country": "US"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    app.clock
        .set(Utc.with_ymd_and_hms(2027, 4, 16, 9, 0, 0).unwrap());
    let mut highest = start;
    for (round, country) in ["US", "DE", "US", "DE"].into_iter().enumerate() {
        for to in [&small, &big] {
            let r = app
                .post(
                    &format!("/api/v1/services/{id}/change-plan"),
                    &key,
                    json!({"plan_id": to}),
                )
                .await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "round {round}: {}", r.text);
            app.run_operations().await;
            highest = highest.max(app.balance(&acc).await);
            let r = patch(&app, &path, &accountant, json!({"country": country})).await;
            assert_eq!(r.status, StatusCode::OK);
        }
    }
    assert!(
        highest <= 100_000,
        "the balance never rises above what was paid in: {highest}"
    );
    // Every credit note gives back tax only as it was charged.
    for doc in app.invoices(Some(&acc)).await {
        if doc["kind"] == "credit_note" {
            let net = doc["net"].as_i64().unwrap();
            let tax = doc["tax"].as_i64().unwrap();
            assert!(tax * 10_000 <= net * 1_900 + 10_000, "{doc}");
        }
    }
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_credit_gives_back_the_tax_that_was_charged_not_todays() {
    let (app, big, small) = vat_shop().await;
    app.clock
        .set(Utc.with_ymd_and_hms(2027, 4, 1, 9, 0, 0).unwrap());
    let (acc, key) = funded(&app, "exact@example.com", 100_000).await;
    let r = patch(
        &app,
        &format!("/api/v1/accounts/{acc}"),
        ADMIN_KEY,
        json!({"country": "DE"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let id = app
        .post(
            "/api/v1/orders",
            &key,
            json!({"plan_id": big, "period": "1m"}),
        )
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    // Staff move the customer to a country without VAT; halfway through
    // the customer downgrades.
    patch(
        &app,
        &format!("/api/v1/accounts/{acc}"),
        ADMIN_KEY,
        json!({"country": "US"}),
    )
    .await;
    app.clock
        .set(Utc.with_ymd_and_hms(2027, 4, 16, 9, 0, 0).unwrap());
    let r = app
        .post(
            &format!("/api/v1/services/{id}/change-plan"),
            &key,
            json!({"plan_id": small}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    // 15 of 30 days unused: half of 357.00 with half of its 57.00 tax.
    assert_eq!(r.json["proration"]["credit"], 17_850);
    assert_eq!(r.json["proration"]["credit_tax"], 2_850);
    app.run_operations().await;
    let notes: Vec<Value> = app
        .invoices(Some(&acc))
        .await
        .into_iter()
        .filter(|d| d["kind"] == "credit_note")
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0]["total"], 17_850);
    assert_eq!(notes[0]["tax"], 2_850);
    assert_eq!(notes[0]["net"], 15_000);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn plan_changes_stay_within_the_change_list_and_the_module() {
    let other = ScriptedModule::new();
    let app = TestApp::with_modules(vec![(
        "other",
        other.clone() as Arc<dyn bursar::services::module::ProcessingModule>,
    )])
    .await;
    let server = app.simple_plan(4_900).await;
    let cheap = app.simple_plan(1_000).await;
    let manual = app
        .create_plan(json!({
            "name": "Cheap elsewhere", "product_type": "vps", "module": "other",
            "prices": [{"period": "1m", "currency": "EUR", "amount": 1000}]
        }))
        .await;
    // A plan cannot list a plan of another module.
    let r = app
        .post(
            "/api/v1/plans",
            ADMIN_KEY,
            json!({
                "name": "Crossing", "product_type": "vps", "module": "test",
                "prices": [{"period": "1m", "currency": "EUR", "amount": 1}],
                "change_to": [manual],
            }),
        )
        .await;
    assert_eq!(r.problem(422), "urn:bursar:problem:invalid-field");
    assert_eq!(r.json["field"], "change_to");

    let (acc, key) = funded(&app, "mover@example.com", 100_000).await;
    let id = app
        .post(
            "/api/v1/orders",
            &key,
            json!({"plan_id": server, "period": "1m"}),
        )
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    let balance = app.balance(&acc).await;
    let counts = app.counts().await;
    for to in [&manual, &cheap] {
        let r = app
            .post(
                &format!("/api/v1/services/{id}/change-plan"),
                &key,
                json!({"plan_id": to}),
            )
            .await;
        assert_eq!(
            r.problem(422),
            "urn:bursar:problem:plan-change-not-allowed",
            "{}",
            r.text
        );
    }
    assert_eq!(app.counts().await, counts, "refused changes write nothing");
    assert_eq!(app.balance(&acc).await, balance);
    // Nor may the customer migrate.
    let r = app
        .post(
            &format!("/api/v1/services/{id}/migrate"),
            &key,
            json!({"plan_id": manual, "reason": "mine"}),
        )
        .await;
    r.problem(403);

    // Staff may, explicitly: closed on the old module, opened on the new.
    let r = app
        .post(
            &format!("/api/v1/services/{id}/migrate"),
            ADMIN_KEY,
            json!({"plan_id": manual, "reason": "moving off the old racks"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["service"]["plan_id"], manual.as_str());
    app.run_operations().await;
    let calls = |m: &ScriptedModule, kind| m.calls().iter().filter(|c| c.kind == kind).count();
    assert_eq!(
        calls(&app.module, OperationKind::Close),
        1,
        "the old module closed it"
    );
    assert_eq!(
        calls(&other, OperationKind::Open),
        1,
        "the new one opened it"
    );
    let s = app.service(&id).await;
    assert_eq!(s["status"], "active");
    let events = app
        .get(&format!("/api/v1/services/{id}/events"), ADMIN_KEY)
        .await;
    let migrate = events.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "migrate")
        .cloned()
        .expect("a migrate event");
    assert_eq!(migrate["reason"], "moving off the old racks");
    assert!(migrate["actor"].as_str().unwrap().starts_with("api_key:"));
    // Its close goes to the module it is on now.
    app.post(&format!("/api/v1/services/{id}/close"), &key, json!({}))
        .await;
    app.run_operations().await;
    assert_eq!(calls(&app.module, OperationKind::Close), 1);
    assert_eq!(calls(&other, OperationKind::Close), 1);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_plan_change_the_module_refuses_changes_nothing_and_moves_nothing() {
    let app = TestApp::new().await;
    let small = app.simple_plan(1_000).await;
    let big = app.simple_plan(5_000).await;
    app.allow_change(&small, &big).await;
    let (acc, key) = funded(&app, "refused@example.com", 20_000).await;
    let id = app
        .post(
            "/api/v1/orders",
            &key,
            json!({"plan_id": small, "period": "1m"}),
        )
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    let before = app.balance(&acc).await;
    for refusal in [
        ModuleError::Unsupported("no plan changes here".into()),
        ModuleError::Rejected("that configuration is sold out".into()),
    ] {
        app.module
            .push(OperationKind::ChangePlan, false, Err(refusal));
        let r = app
            .post(
                &format!("/api/v1/services/{id}/change-plan"),
                &key,
                json!({"plan_id": big}),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        assert!(app.balance(&acc).await < before, "set aside meanwhile");
        app.run_operations().await;
        let s = app.service(&id).await;
        assert_eq!(s["plan_id"], small.as_str());
        assert_eq!(app.balance(&acc).await, before, "given back");
        let op = &app
            .get(&format!("/api/v1/services/{id}/operations"), ADMIN_KEY)
            .await
            .json["data"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|o| o["kind"] == "change_plan")
            .cloned()
            .unwrap();
        assert_eq!(op["status"], "canceled");
    }
    assert_eq!(app.ledger_count(&acc, "charge").await, 1, "only the order");
    // The customer reads that it was refused, not the module's words.
    let events = app
        .get(&format!("/api/v1/services/{id}/events"), &key)
        .await;
    assert!(
        events.text.contains("change_plan_refused"),
        "{}",
        events.text
    );
    assert!(!events.text.contains("sold out"), "{}", events.text);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_second_plan_change_waits_for_the_first() {
    let app = TestApp::new().await;
    let small = app.simple_plan(1_000).await;
    let big = app.simple_plan(5_000).await;
    let bigger = app.simple_plan(9_000).await;
    app.allow_change(&small, &big).await;
    app.allow_change(&small, &bigger).await;
    let (_acc, key) = funded(&app, "twice@example.com", 50_000).await;
    let id = app
        .post(
            "/api/v1/orders",
            &key,
            json!({"plan_id": small, "period": "1m"}),
        )
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    let change = |to: String| {
        let (app, key, id) = (&app, key.clone(), id.clone());
        async move {
            app.post(
                &format!("/api/v1/services/{id}/change-plan"),
                &key,
                json!({"plan_id": to}),
            )
            .await
        }
    };
    assert_eq!(change(big.clone()).await.status, StatusCode::ACCEPTED);
    let r = change(bigger.clone()).await;
    assert_eq!(r.problem(409), "urn:bursar:problem:conflict");
}

#[tokio::test]
async fn credentials_are_sealed_revealed_to_their_owner_only_and_every_reveal_is_recorded() {
    let app = TestApp::new().await;
    let plan = app.simple_plan(1_000).await;
    let (acc, key) = funded(&app, "creds@example.com", 10_000).await;
    let (_other, other_key) = funded(&app, "nosy@example.com", 0).await;
    app.module.push(
        OperationKind::Open,
        false,
        Ok(ModuleOutcome::Done {
            params: vec![("ip".into(), "192.0.2.10".into())],
            secret_params: vec![("root_password".into(), "Hunter2-Kept-Secret".into())],
        }),
    );
    let id = app
        .post(
            "/api/v1/orders",
            &key,
            json!({"plan_id": plan, "period": "1m"}),
        )
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    // At rest: sealed.
    let stored = app
        .db
        .count(&format!(
            "SELECT COUNT(*) FROM services WHERE id = '{id}' AND secret_params LIKE '%Hunter2%'"
        ))
        .await;
    assert_eq!(stored, 0, "the password is not stored in the clear");
    let path = format!("/api/v1/services/{id}/credentials");
    let r = app.get(&path, &other_key).await;
    r.problem(403);
    let r = app.get(&path, &key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json["credentials"]["root_password"],
        "Hunter2-Kept-Secret"
    );
    assert_eq!(r.headers["cache-control"], "no-store");
    let r = app.get(&path, ADMIN_KEY).await;
    assert_eq!(r.status, StatusCode::OK);
    // Never in lists, events, operations or webhooks.
    for listed in [
        format!("/api/v1/services/{id}"),
        format!("/api/v1/services?account_id={acc}"),
        format!("/api/v1/services/{id}/events"),
        format!("/api/v1/services/{id}/operations"),
    ] {
        let r = app.get(&listed, ADMIN_KEY).await;
        assert!(!r.text.contains("Hunter2"), "{listed}: {}", r.text);
    }
    let outbox = app
        .db
        .count("SELECT COUNT(*) FROM outbox WHERE payload LIKE '%Hunter2%'")
        .await;
    assert_eq!(outbox, 0);
    let events = app
        .get(&format!("/api/v1/services/{id}/events"), ADMIN_KEY)
        .await;
    let reveals: Vec<&Value> = events.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "credentials_read")
        .collect();
    assert_eq!(reveals.len(), 2, "the owner's and the admin's");
    assert!(
        reveals
            .iter()
            .all(|e| e["actor"].as_str().unwrap().starts_with("api_key:"))
    );
}

#[tokio::test]
async fn customers_see_active_plans_without_module_settings_and_no_module_errors() {
    let app = TestApp::new().await;
    let plan = app
        .create_plan(json!({
            "name": "Secretive", "product_type": "vps", "module": "test",
            "module_settings": {"configuration": "rack-7-internal", "password_hint": "x"},
            "prices": [{"period": "1m", "currency": "EUR", "amount": 1000}]
        }))
        .await;
    let old = app.simple_plan(500).await;
    app.post(
        &format!("/api/v1/plans/{old}/archive"),
        ADMIN_KEY,
        json!({}),
    )
    .await;
    let (_acc, key) = funded(&app, "browse@example.com", 10_000).await;
    let r = app.get(&format!("/api/v1/plans/{plan}"), &key).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json.get("module_settings").is_none(), "{}", r.text);
    assert!(!r.text.contains("rack-7-internal"));
    let r = app.get("/api/v1/plans", &key).await;
    assert!(!r.text.contains("rack-7-internal"));
    assert!(!r.text.contains(&old));
    app.get(&format!("/api/v1/plans/{old}"), &key)
        .await
        .problem(404);
    let r = app.get(&format!("/api/v1/plans/{plan}"), ADMIN_KEY).await;
    assert_eq!(
        r.json["module_settings"]["configuration"],
        "rack-7-internal"
    );

    // A module failure's own words stay with staff.
    app.module.push(
        OperationKind::Open,
        false,
        Err(ModuleError::Rejected(
            "dci.internal.example:443 refused user 17: quota".into(),
        )),
    );
    let id = app
        .post(
            "/api/v1/orders",
            &key,
            json!({"plan_id": plan, "period": "1m"}),
        )
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    let mine = app
        .get(&format!("/api/v1/services/{id}/operations"), &key)
        .await;
    assert_eq!(mine.json["data"][0]["status"], "manual");
    assert!(!mine.text.contains("dci.internal"), "{}", mine.text);
    assert_eq!(
        mine.json["data"][0]["last_error"],
        "the provider refused it"
    );
    let staff = app
        .get(&format!("/api/v1/services/{id}/operations"), ADMIN_KEY)
        .await;
    assert!(staff.text.contains("dci.internal"));
}

#[tokio::test]
async fn a_json_body_naming_a_key_twice_is_refused() {
    let app = TestApp::new().await;
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/accounts")
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"email": "dup@example.com", "name": "A", "currency": "EUR", "credit_limit": 0, "credit_limit": 100000}"#,
        ))
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(r.problem(400), "urn:bursar:problem:malformed-json");
    assert!(r.text.contains("credit_limit"), "{}", r.text);
    assert_eq!(app.counts().await.accounts, 0);
}

#[tokio::test]
async fn a_new_bursar_admin_key_revokes_the_old_one_and_staff_keys_are_managed_over_the_api() {
    let app = TestApp::new().await;
    assert_eq!(
        app.get("/api/v1/staff-keys", ADMIN_KEY).await.status,
        StatusCode::OK
    );
    // Restarting with the same value changes nothing; with a new value the
    // old secret stops working.
    let clock: bursar::clock::SharedClock = app.clock.clone();
    let same = bursar::accounts::ApiKeySecret::from_supplied(ADMIN_KEY.into()).unwrap();
    bursar::server::bootstrap_admin_key(app.store(), Some(same), &clock)
        .await
        .unwrap();
    assert_eq!(
        app.get("/api/v1/staff-keys", ADMIN_KEY).await.status,
        StatusCode::OK
    );
    const NEXT: &str = "bsr_adm_rotated_0123456789abcdef0123456789";
    let next = bursar::accounts::ApiKeySecret::from_supplied(NEXT.into()).unwrap();
    bursar::server::bootstrap_admin_key(app.store(), Some(next), &clock)
        .await
        .unwrap();
    // Registered as another process would (a restart, the CLI): a running
    // server sees it once its cached keys expire.
    tokio::time::sleep(bursar::api::extract::KEY_CACHE_TTL).await;
    app.get("/api/v1/staff-keys", ADMIN_KEY).await.problem(401);
    let r = app.get("/api/v1/staff-keys", NEXT).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let keys = r.json["data"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert!(
        keys[0]["revoked_at"].is_string(),
        "the old managed key is revoked"
    );
    assert_eq!(keys[1]["managed"], true);
    // A revoked value cannot come back through the environment.
    let old = bursar::accounts::ApiKeySecret::from_supplied(ADMIN_KEY.into()).unwrap();
    assert!(
        bursar::server::bootstrap_admin_key(app.store(), Some(old), &clock)
            .await
            .is_err()
    );

    // Over the API: create, see it used, revoke; the last admin key stays.
    let expires = app.clock.now() + chrono::Duration::days(2);
    let r = app
        .post(
            "/api/v1/staff-keys",
            NEXT,
            json!({"name": "helpdesk", "role": "support", "expires_at": expires}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let support = r.json["secret"].as_str().unwrap().to_owned();
    let support_id = r.json["key"]["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json["key"]["role"], "support");
    assert_eq!(
        app.get("/api/v1/services", &support).await.status,
        StatusCode::OK
    );
    app.get("/api/v1/staff-keys", &support).await.problem(403);
    let listed = app.get("/api/v1/staff-keys", NEXT).await.json;
    let entry = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == support_id.as_str())
        .cloned()
        .unwrap();
    assert!(entry["last_used_at"].is_string(), "{entry}");
    // Past its expiry it no longer works.
    app.clock.advance(chrono::Duration::days(3));
    app.get("/api/v1/services", &support).await.problem(401);
    let r = app
        .request(
            Method::DELETE,
            &format!("/api/v1/staff-keys/{support_id}"),
            Some(NEXT),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let admin_id = keys[1]["id"].as_str().unwrap().to_owned();
    let r = app
        .request(
            Method::DELETE,
            &format!("/api/v1/staff-keys/{admin_id}"),
            Some(NEXT),
            None,
            &[],
        )
        .await;
    assert_eq!(
        r.problem(409),
        "urn:bursar:problem:conflict",
        "the last admin key"
    );
}

#[tokio::test]
async fn customers_have_quotas_on_keys() {
    let app = TestApp::with_config(|c| c.api.max_keys_per_account = 3).await;
    let (acc, key) = funded(&app, "keys@example.com", 0).await;
    for _ in 0..2 {
        let r = app
            .post(
                &format!("/api/v1/accounts/{acc}/api-keys"),
                &key,
                json!({"name": "more"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let r = app
        .post(
            &format!("/api/v1/accounts/{acc}/api-keys"),
            &key,
            json!({"name": "one too many"}),
        )
        .await;
    assert_eq!(r.problem(409), "urn:bursar:problem:quota-exceeded");
    assert_eq!(r.json["quota"], "api keys");
}

fn echo_gateway(name: &str, settings: Value) -> bursar::plugins::instances::PluginConfig {
    serde_json::from_value(json!({
        "name": name, "kind": "gateway",
        "component": format!("{}/gateway_echo.wasm", bursar::plugins::builtin::WASM_DIR),
        "settings": settings,
    }))
    .unwrap()
}

async fn callback(
    app: &TestApp,
    instance: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> bursar_tests::Reply {
    let mut req = Request::builder()
        .method("POST")
        .uri(format!("/api/v1/gateways/{instance}/callback"));
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    app.send(req.body(Body::from(body)).unwrap()).await
}

#[tokio::test]
async fn public_callbacks_are_bounded_and_their_errors_say_nothing_internal() {
    let app = TestApp::with_config(|c| {
        c.api.callbacks.concurrency_per_gateway = 1;
        c.api.callbacks.deadline_ms = 1_000;
        c.plugins = vec![
            echo_gateway("echo", json!({})),
            echo_gateway("leaky", json!({"mode": "leaky-callback"})),
            echo_gateway("panicky", json!({"mode": "panicky-callback"})),
            echo_gateway("busy", json!({"mode": "slow-callback", "sleep_ms": "600"})),
            echo_gateway(
                "stuck",
                json!({"mode": "slow-callback", "sleep_ms": "5000"}),
            ),
        ];
    })
    .await;
    let r = callback(&app, "echo", &[], b"{}".to_vec()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);

    // Too large: problem+json, before the plugin sees it.
    let r = callback(&app, "echo", &[], vec![b'x'; 300 * 1024]).await;
    assert_eq!(r.problem(413), "urn:bursar:problem:payload-too-large");
    let huge = ("stripe-signature", "v1=,".repeat(20_000));
    let r = callback(&app, "echo", &[huge], vec![b'x'; 60 * 1024]).await;
    assert_eq!(r.problem(431), "urn:bursar:problem:headers-too-large");

    // A plugin's own words (host names, panics) stay in the log.
    let r = callback(&app, "leaky", &[], b"{}".to_vec()).await;
    assert_eq!(r.problem(400), "urn:bursar:problem:callback-refused");
    assert!(!r.text.contains("db.internal"), "{}", r.text);
    let r = callback(&app, "panicky", &[], b"{}".to_vec()).await;
    assert!(r.status.is_client_error() || r.status.is_server_error());
    assert!(!r.text.contains("secret_handler"), "{}", r.text);
    assert!(!r.text.contains("panic"), "{}", r.text);

    // One at a time per gateway: the second waits for nobody, it is told
    // to deliver again.
    let (a, b) = tokio::join!(callback(&app, "busy", &[], b"{}".to_vec()), async {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        callback(&app, "busy", &[], b"{}".to_vec()).await
    });
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.text);
    assert_eq!(b.problem(503), "urn:bursar:problem:busy");
    // A callback past the deadline is cut short, well before the plugin's
    // own timeout.
    let r = callback(&app, "stuck", &[], b"{}".to_vec()).await;
    assert_eq!(r.problem(503), "urn:bursar:problem:callback-timeout");
}

#[tokio::test]
async fn one_address_cannot_flood_the_callbacks() {
    let app = TestApp::with_config(|c| {
        c.api.callbacks.per_address_per_minute = 5;
        c.plugins = vec![echo_gateway("echo", json!({}))];
    })
    .await;
    for _ in 0..5 {
        let r = callback(&app, "echo", &[], b"{}".to_vec()).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    }
    let r = callback(&app, "echo", &[], b"{}".to_vec()).await;
    assert_eq!(r.problem(429), "urn:bursar:problem:rate-limited");
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_file_and_its_directory_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let url = format!("sqlite://{}", data.join("bursar.db").display());
    let store = bursar::store::Store::connect(&url, &Default::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for file in ["bursar.db", "bursar.db-wal", "bursar.db-shm"] {
        let path = data.join(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }
}

#[tokio::test]
async fn unpaid_orders_are_bounded_so_a_payment_never_settles_a_flood_of_them() {
    let app = TestApp::with_config(|c| c.billing.max_unpaid_orders_per_account = 3).await;
    let plan = app.simple_plan(1_000).await;
    let (acc, key) = funded(&app, "flood@example.com", 0).await;
    for _ in 0..3 {
        let r = app
            .post(
                "/api/v1/orders",
                &key,
                json!({"plan_id": plan, "period": "1m"}),
            )
            .await;
        assert_eq!(r.json["status"], "ordered", "{}", r.text);
    }
    let r = app
        .post(
            "/api/v1/orders",
            &key,
            json!({"plan_id": plan, "period": "1m"}),
        )
        .await;
    assert_eq!(r.problem(409), "urn:bursar:problem:quota-exceeded");
    assert_eq!(r.json["quota"], "unpaid orders");
    // An order the balance pays at once is not held back.
    app.credit(&acc, 5_000, "EUR").await;
    let r = app
        .post(
            "/api/v1/orders",
            &key,
            json!({"plan_id": plan, "period": "1m"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

/// Every order counts the account's unpaid orders and every payment lists
/// them: both must reach them through the partial index of unpaid orders,
/// not by reading every service the account ever had.
#[tokio::test]
async fn an_accounts_unpaid_orders_are_read_without_its_other_services() {
    use bursar::store::services::{COUNT_UNPAID_OF_ACCOUNT, UNPAID_OF_ACCOUNT};
    let app = TestApp::new().await;
    for sql in [COUNT_UNPAID_OF_ACCOUNT, UNPAID_OF_ACCOUNT] {
        let plan = app.db.plan(&sql.replace("$1", "'acc_x'")).await;
        assert!(plan.contains("services_unpaid"), "{sql}:\n{plan}");
    }
}

#[tokio::test]
async fn a_service_is_not_prolonged_while_its_plan_change_waits_for_the_module() {
    let app = TestApp::new().await;
    let small = app.simple_plan(1_000).await;
    let big = app.simple_plan(4_000).await;
    app.allow_change(&small, &big).await;
    let (acc, key) = funded(&app, "waiting@example.com", 5_000).await;
    let id = app
        .post(
            "/api/v1/orders",
            &key,
            json!({"plan_id": small, "period": "1m"}),
        )
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    app.clock.advance(chrono::Duration::days(15));
    let r = app
        .post(
            &format!("/api/v1/services/{id}/change-plan"),
            &key,
            json!({"plan_id": big}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let r = app
        .post(
            &format!("/api/v1/services/{id}/prolong"),
            &key,
            json!({"period": "1m"}),
        )
        .await;
    assert_eq!(r.problem(409), "urn:bursar:problem:conflict");
    app.run_operations().await;
    assert_eq!(app.service(&id).await["plan_id"], big.as_str());
    assert!(app.balance(&acc).await >= 0);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_closed_service_keeps_no_credentials_and_revoked_keys_are_not_listed() {
    let app = TestApp::new().await;
    let plan = app.simple_plan(1_000).await;
    let (acc, key) = funded(&app, "gone@example.com", 10_000).await;
    app.module.push(
        OperationKind::Open,
        false,
        Ok(ModuleOutcome::Done {
            params: vec![],
            secret_params: vec![("root_password".into(), "Old-Secret-9".into())],
        }),
    );
    let id = app
        .post(
            "/api/v1/orders",
            &key,
            json!({"plan_id": plan, "period": "1m"}),
        )
        .await
        .json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    app.post(&format!("/api/v1/services/{id}/close"), &key, json!({}))
        .await;
    app.run_operations().await;
    assert_eq!(app.service(&id).await["status"], "closed");
    let r = app
        .get(&format!("/api/v1/services/{id}/credentials"), &key)
        .await;
    assert_eq!(r.json["credentials"], json!({}), "{}", r.text);

    let spare = app
        .post(
            &format!("/api/v1/accounts/{acc}/api-keys"),
            &key,
            json!({"name": "spare"}),
        )
        .await;
    let spare_id = spare.json["key"]["id"].as_str().unwrap().to_owned();
    app.request(
        Method::DELETE,
        &format!("/api/v1/accounts/{acc}/api-keys/{spare_id}"),
        Some(&key),
        None,
        &[],
    )
    .await;
    let listed = app
        .get(&format!("/api/v1/accounts/{acc}/api-keys"), &key)
        .await;
    assert!(!listed.text.contains(&spare_id), "{}", listed.text);
}

/// What a customer may now write for mail — `language`, `email_opt_out`,
/// their name — reaches neither a file, nor a header, nor another
/// account, and turns off nothing the service depends on; another's
/// invoice stays out of reach as PDF too. Money does not move.
#[tokio::test]
async fn the_mail_fields_a_customer_writes_reach_nothing_that_is_not_theirs() {
    let app = TestApp::new().await;
    let (mallory, key) = funded(&app, "mallory@example.com", 5000).await;
    let (victim, _) = funded(&app, "victim@example.com", 5000).await;
    let plan = app.simple_plan(1000).await;
    app.order(&victim, &plan, "1m").await;
    let invoice = app.invoices(Some(&victim)).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/accounts/{mallory}");
    for body in [
        json!({"language": "../../../etc"}),
        json!({"language": "EN"}),
        json!({"email_opt_out": ["service_suspended"]}),
        json!({"email_opt_out": ["deletion_warning", "renewal_due"]}),
        json!({"name": "Mallory\r\nBcc: everyone@example.com"}),
    ] {
        let r = patch(&app, &path, &key, body.clone()).await;
        assert_eq!(r.problem(422), "urn:bursar:problem:invalid-field", "{body}");
    }
    // Another account's mail settings are not hers to write.
    let r = patch(
        &app,
        &format!("/api/v1/accounts/{victim}"),
        &key,
        json!({"email_opt_out": ["renewal_due"], "language": "ru"}),
    )
    .await;
    assert!(matches!(r.status.as_u16(), 403 | 404), "{}", r.text);
    // Nor another's invoice, whichever way it is asked for.
    for (uri, accept) in [
        (format!("/api/v1/invoices/{invoice}/pdf"), "*/*"),
        (format!("/api/v1/invoices/{invoice}"), "application/pdf"),
        (format!("/api/v1/invoices/{invoice}/html"), "*/*"),
    ] {
        let r = app
            .request(Method::GET, &uri, Some(&key), None, &[("accept", accept)])
            .await;
        r.problem(404);
    }
    assert_eq!(app.balance(&mallory).await, 5000);
    assert_eq!(app.balance(&victim).await, 4000);
    app.assert_ledger_clean().await;
}
