//! Billing automation: renewals ahead of the period end, suspension for
//! non-payment, resumption once paid, deletion, cancellation of unpaid
//! orders — each exactly once, whoever gets there first.

use axum::http::StatusCode;
use bursar::automation::{AutomationConfig, Report, run_once};
use bursar::clock::Clock;
use bursar_tests::{ADMIN_KEY, TestApp};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

async fn pass(app: &TestApp) -> Report {
    run_once(app.store(), &AutomationConfig::default(), app.clock.now())
        .await
        .expect("automation pass")
}

fn did(report: &Report, action: &str) -> u64 {
    report.actions.get(action).copied().unwrap_or(0)
}

async fn active_service(app: &TestApp, account: &str, plan: &str) -> String {
    let r = app.order(account, plan, "1m").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    app.run_operations().await;
    assert_eq!(app.service(&id).await["status"], "active");
    id
}

async fn charges(app: &TestApp, account: &str) -> usize {
    app.ledger_count(account, "charge").await
}

fn until(service: &Value) -> String {
    service["paid_until"].as_str().unwrap()[..10].to_owned()
}

#[tokio::test]
async fn a_due_service_is_renewed_once_and_a_second_pass_changes_nothing() {
    let app = TestApp::new().await;
    let acc = app.create_account("r@example.com", "EUR", 0).await;
    app.credit(&acc, 3000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    let id = active_service(&app, &acc, &plan).await;
    assert_eq!(until(&app.service(&id).await), "2026-02-15");

    // Outside the renew-ahead window: nothing.
    app.clock
        .set(Utc.with_ymd_and_hms(2026, 2, 11, 0, 0, 0).unwrap());
    assert_eq!(pass(&app).await.total(), 0);
    app.clock
        .set(Utc.with_ymd_and_hms(2026, 2, 13, 0, 0, 0).unwrap());
    let report = pass(&app).await;
    assert_eq!(did(&report, "renewed"), 1, "{report:?}");
    let service = app.service(&id).await;
    assert_eq!(until(&service), "2026-03-15");
    assert_eq!(service["status"], "active");
    assert_eq!(pass(&app).await.total(), 0, "the same day again: nothing");
    assert_eq!(charges(&app, &acc).await, 2, "order + one renewal");
    assert_eq!(app.balance(&acc).await, 1000);
    let ops = app
        .get(&format!("/api/v1/services/{id}/operations"), ADMIN_KEY)
        .await;
    assert!(
        ops.json["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "prolong"),
        "the module hears of the renewal"
    );
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn without_money_it_is_suspended_then_resumed_when_paid_but_admin_suspensions_stay() {
    let app = TestApp::new().await;
    let acc = app.create_account("s@example.com", "EUR", 0).await;
    app.credit(&acc, 2000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    let unpaid = active_service(&app, &acc, &plan).await;
    let held = active_service(&app, &acc, &plan).await;
    let r = app
        .post(
            &format!("/api/v1/services/{held}/suspend"),
            ADMIN_KEY,
            json!({"reason": "abuse"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    app.clock
        .set(Utc.with_ymd_and_hms(2026, 2, 15, 12, 0, 1).unwrap());
    let report = pass(&app).await;
    assert_eq!(did(&report, "renewed"), 0);
    assert_eq!(did(&report, "suspended"), 1, "{report:?}");
    let s = app.service(&unpaid).await;
    assert_eq!(
        (s["status"].as_str(), s["suspend_reason"].as_str()),
        (Some("suspended"), Some("non-payment"))
    );

    app.credit(&acc, 1000, "EUR").await;
    let report = pass(&app).await;
    assert_eq!(did(&report, "resumed"), 1, "{report:?}");
    let s = app.service(&unpaid).await;
    assert_eq!(s["status"], "active");
    assert_eq!(until(&s), "2026-03-15");
    let h = app.service(&held).await;
    assert_eq!(
        (h["status"].as_str(), h["suspend_reason"].as_str()),
        (Some("suspended"), Some("abuse"))
    );
    assert_eq!(app.balance(&acc).await, 0);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn long_non_payment_suspensions_are_closed_and_unpaid_orders_canceled() {
    let app = TestApp::new().await;
    let acc = app.create_account("d@example.com", "EUR", 0).await;
    app.credit(&acc, 1000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    let id = active_service(&app, &acc, &plan).await;
    let unpaid = app.order(&acc, &plan, "1m").await;
    assert_eq!(unpaid.json["status"], "ordered");
    let order = unpaid.json["id"].as_str().unwrap().to_owned();

    app.clock
        .set(Utc.with_ymd_and_hms(2026, 2, 16, 0, 0, 0).unwrap());
    let report = pass(&app).await;
    assert_eq!(did(&report, "suspended"), 1);
    assert_eq!(
        did(&report, "canceled"),
        1,
        "unpaid for 14 days: {report:?}"
    );
    let canceled = app.service(&order).await;
    assert_eq!(canceled["status"], "closed", "{canceled}");
    assert_eq!(canceled["amount_due"], 0);

    // Suspended on Feb 16; the plan keeps it 30 days.
    app.clock
        .set(Utc.with_ymd_and_hms(2026, 3, 17, 23, 0, 0).unwrap());
    assert_eq!(did(&pass(&app).await, "closed"), 0);
    app.clock
        .set(Utc.with_ymd_and_hms(2026, 3, 18, 0, 0, 1).unwrap());
    let report = pass(&app).await;
    assert_eq!(did(&report, "closed"), 1, "{report:?}");
    app.run_operations().await;
    assert_eq!(app.service(&id).await["status"], "closed");
    assert_eq!(pass(&app).await.total(), 0);
}

#[tokio::test]
async fn a_payment_and_a_pass_racing_for_one_service_renew_it_once() {
    let echo = std::path::Path::new(bursar::plugins::builtin::WASM_DIR)
        .join("gateway_echo.wasm")
        .to_string_lossy()
        .into_owned();
    let app = TestApp::with_plugins(&[serde_json::from_value(json!({
        "name": "instant", "kind": "gateway", "component": echo,
    }))
    .unwrap()])
    .await;
    let acc = app.create_account("race@example.com", "EUR", 0).await;
    app.credit(&acc, 1000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    let id = active_service(&app, &acc, &plan).await;
    app.clock
        .set(Utc.with_ymd_and_hms(2026, 2, 15, 13, 0, 0).unwrap());
    assert_eq!(did(&pass(&app).await, "suspended"), 1);

    // The money arrives through a gateway while a pass runs.
    let payment = app.post(
        "/api/v1/payments",
        ADMIN_KEY,
        json!({"account_id": acc, "gateway": "instant", "amount": 1000, "currency": "EUR"}),
    );
    let (paid, report) = tokio::join!(payment, pass(&app));
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text);
    let report_after = pass(&app).await;
    let s = app.service(&id).await;
    assert_eq!(s["status"], "active", "{report:?} {report_after:?}");
    assert_eq!(until(&s), "2026-03-15", "one period, not two");
    assert_eq!(charges(&app, &acc).await, 2, "order + one renewal");
    assert_eq!(app.balance(&acc).await, 0);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn renewals_keep_the_anniversary_across_short_months_and_leap_days() {
    let app = TestApp::new().await;
    app.clock
        .set(Utc.with_ymd_and_hms(2028, 1, 31, 10, 0, 0).unwrap());
    let acc = app.create_account("cal@example.com", "EUR", 0).await;
    app.credit(&acc, 10_000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    let id = active_service(&app, &acc, &plan).await;
    let mut seen = vec![until(&app.service(&id).await)];
    for day in [(2, 27), (3, 29), (4, 28)] {
        app.clock
            .set(Utc.with_ymd_and_hms(2028, day.0, day.1, 10, 0, 0).unwrap());
        assert_eq!(did(&pass(&app).await, "renewed"), 1);
        seen.push(until(&app.service(&id).await));
    }
    assert_eq!(
        seen,
        ["2028-02-29", "2028-03-31", "2028-04-30", "2028-05-31"]
    );
}

#[tokio::test]
async fn renewals_keep_the_local_anniversary_of_the_billing_time_zone_across_dst() {
    let app = TestApp::with_time_zone("Europe/Berlin").await;
    // 00:30 on Jan 31 2028 in Berlin (CET, UTC+1).
    app.clock
        .set(Utc.with_ymd_and_hms(2028, 1, 30, 23, 30, 0).unwrap());
    let acc = app.create_account("tz@example.com", "EUR", 0).await;
    app.credit(&acc, 10_000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    let id = active_service(&app, &acc, &plan).await;
    let service = app.service(&id).await;
    assert_eq!(service["time_zone"], "Europe/Berlin");
    let mut seen = vec![service["paid_until"].as_str().unwrap().to_owned()];
    // Passes two days ahead of each end, twice that day: the second and a
    // later one the same day change nothing.
    for (m, d) in [(2, 27), (3, 29), (4, 28)] {
        app.clock
            .set(Utc.with_ymd_and_hms(2028, m, d, 6, 0, 0).unwrap());
        let report = pass(&app).await;
        assert_eq!(did(&report, "renewed"), 1, "{m}-{d}: {report:?}");
        assert_eq!(
            pass(&app).await.total(),
            0,
            "{m}-{d}: the same moment again"
        );
        app.clock
            .set(Utc.with_ymd_and_hms(2028, m, d, 21, 0, 0).unwrap());
        assert_eq!(pass(&app).await.total(), 0, "{m}-{d}: later that day");
        seen.push(
            app.service(&id).await["paid_until"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Feb 29 (leap year), Mar 31 and Apr 30 at 00:30 in Berlin; summer
    // time (UTC+2) starts on Mar 26.
    assert_eq!(
        seen,
        [
            "2028-02-28T23:30:00Z",
            "2028-03-30T22:30:00Z",
            "2028-04-29T22:30:00Z",
            "2028-05-30T22:30:00Z",
        ]
    );
    assert_eq!(charges(&app, &acc).await, 4, "order + three renewals");
    assert_eq!(app.balance(&acc).await, 6000);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_customers_own_time_zone_wins_over_the_deployments_and_bad_ones_are_refused() {
    let app = TestApp::with_time_zone("Europe/Berlin").await;
    // 01:00 on Jan 31 in Tokyo, still Jan 30 in Berlin.
    app.clock
        .set(Utc.with_ymd_and_hms(2026, 1, 30, 16, 0, 0).unwrap());
    let r = app
        .post(
            "/api/v1/accounts",
            ADMIN_KEY,
            json!({"email": "tokyo@example.com", "name": "Tokyo", "currency": "EUR", "time_zone": "Asia/Tokyo"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["time_zone"], "Asia/Tokyo");
    let tokyo = r.json["id"].as_str().unwrap().to_owned();
    let berlin = app.create_account("berlin@example.com", "EUR", 0).await;
    let plan = app.simple_plan(1000).await;
    for acc in [&tokyo, &berlin] {
        app.credit(acc, 1000, "EUR").await;
    }
    let in_tokyo = active_service(&app, &tokyo, &plan).await;
    let in_berlin = active_service(&app, &berlin, &plan).await;
    let s = app.service(&in_tokyo).await;
    assert_eq!(s["time_zone"], "Asia/Tokyo");
    // Jan 31 + 1 month = Feb 28, 01:00 in Tokyo.
    assert_eq!(s["paid_until"], "2026-02-27T16:00:00Z");
    let s = app.service(&in_berlin).await;
    assert_eq!(s["time_zone"], "Europe/Berlin");
    // Jan 30 + 1 month = Feb 28, 17:00 in Berlin.
    assert_eq!(s["paid_until"], "2026-02-28T16:00:00Z");

    // A later change is for new services only; a bad zone is refused.
    let r = app
        .request(
            axum::http::Method::PATCH,
            &format!("/api/v1/accounts/{tokyo}"),
            Some(ADMIN_KEY),
            Some(json!({"time_zone": "America/New_York"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["time_zone"], "America/New_York");
    assert_eq!(app.service(&in_tokyo).await["time_zone"], "Asia/Tokyo");
    let r = app
        .post(
            "/api/v1/accounts",
            ADMIN_KEY,
            json!({"email": "mars@example.com", "name": "Mars", "currency": "EUR", "time_zone": "Mars/Olympus"}),
        )
        .await;
    r.problem(422);
    assert!(r.text.contains("time_zone"), "{}", r.text);
}

#[tokio::test]
async fn max_items_bounds_a_pass_and_the_next_pass_goes_on() {
    let app = TestApp::new().await;
    let acc = app.create_account("bound@example.com", "EUR", 0).await;
    app.credit(&acc, 10_000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    for _ in 0..3 {
        active_service(&app, &acc, &plan).await;
    }
    app.clock
        .set(Utc.with_ymd_and_hms(2026, 2, 14, 0, 0, 0).unwrap());
    let bounded = AutomationConfig {
        max_items: 2,
        ..AutomationConfig::default()
    };
    let now = app.clock.now();
    let first = run_once(app.store(), &bounded, now).await.unwrap();
    assert_eq!(did(&first, "renewed"), 2, "{first:?}");
    let second = run_once(app.store(), &bounded, now).await.unwrap();
    assert_eq!(did(&second, "renewed"), 1, "{second:?}");
    assert_eq!(pass(&app).await.total(), 0);
    assert_eq!(charges(&app, &acc).await, 6, "three orders, three renewals");
}

#[tokio::test]
async fn two_passes_at_once_over_the_same_due_services_renew_each_once() {
    let app = TestApp::new().await;
    let acc = app.create_account("many@example.com", "EUR", 0).await;
    app.credit(&acc, 1_000_000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    let n = 120;
    for _ in 0..n {
        let r = app.order(&acc, &plan, "1m").await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    app.run_operations().await;
    app.clock
        .set(Utc.with_ymd_and_hms(2026, 2, 14, 0, 0, 0).unwrap());
    // A second process: its own connection pool on the same database.
    let other = app.db.another_pool().await;
    let config = AutomationConfig {
        batch: 16,
        ..AutomationConfig::default()
    };
    let now = app.clock.now();
    let (a, b) = tokio::join!(
        run_once(app.store(), &config, now),
        run_once(&other, &config, now)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(did(&a, "renewed") + did(&b, "renewed"), n, "{a:?} {b:?}");
    assert_eq!(charges(&app, &acc).await, 2 * n as usize);
    assert_eq!(app.balance(&acc).await, 1_000_000 - 2 * 1000 * n as i64);
    let r = app.get("/api/v1/services?limit=500", ADMIN_KEY).await;
    let services = r.json["data"].as_array().unwrap();
    assert_eq!(services.len(), n as usize);
    assert!(services.iter().all(|s| until(s) == "2026-03-15"));
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_batch_renews_what_each_balance_covers_in_order_with_tax_invoices_events_and_operations()
{
    let app = TestApp::new().await;
    let r = app
        .post(
            "/api/v1/tax-rules",
            ADMIN_KEY,
            json!({"country": "DE", "name": "VAT", "rate_bp": 1900, "inclusive": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app
        .post(
            "/api/v1/accounts",
            ADMIN_KEY,
            json!({"email": "de@example.com", "name": "DE", "currency": "EUR", "country": "DE"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let taxed = r.json["id"].as_str().unwrap().to_owned();
    let short = app.create_account("short@example.com", "EUR", 0).await;
    let broke = app.create_account("broke@example.com", "EUR", 0).await;
    let plan = app.simple_plan(1000).await;
    // Taxed: three orders at 1190, then money for exactly two renewals.
    app.credit(&taxed, 3 * 1190 + 2 * 1190, "EUR").await;
    // Short: two orders, then 1500 — one renewal, not two.
    app.credit(&short, 2 * 1000 + 1500, "EUR").await;
    app.credit(&broke, 1000, "EUR").await;
    let mut taxed_services = Vec::new();
    for _ in 0..3 {
        taxed_services.push(active_service(&app, &taxed, &plan).await);
    }
    let short_services = [
        active_service(&app, &short, &plan).await,
        active_service(&app, &short, &plan).await,
    ];
    let broke_service = active_service(&app, &broke, &plan).await;
    let count = |table: &str| format!("SELECT COUNT(*) FROM {table}");
    let before = [
        app.db.count(&count("service_events")).await,
        app.db.count(&count("outbox")).await,
        app.db.count(&count("operations")).await,
    ];

    app.clock
        .set(Utc.with_ymd_and_hms(2026, 2, 14, 0, 0, 0).unwrap());
    let report = pass(&app).await;
    assert_eq!(did(&report, "renewed"), 3, "{report:?}");
    assert!(report.failures.is_empty(), "{report:?}");
    // Each balance covers its services in id order, as one by one would.
    let renewed = |s: &Value| until(s) == "2026-03-15";
    assert!(renewed(&app.service(&taxed_services[0]).await));
    assert!(renewed(&app.service(&taxed_services[1]).await));
    assert!(!renewed(&app.service(&taxed_services[2]).await));
    assert!(renewed(&app.service(&short_services[0]).await));
    assert!(!renewed(&app.service(&short_services[1]).await));
    assert!(!renewed(&app.service(&broke_service).await));
    assert_eq!(app.balance(&taxed).await, 0);
    assert_eq!(app.balance(&short).await, 500);
    assert_eq!(app.balance(&broke).await, 0);
    assert_eq!(charges(&app, &taxed).await, 5);
    assert_eq!(charges(&app, &short).await, 3);

    // Every renewal has its invoice with the tax split, numbered on.
    let docs = app.invoices(Some(&taxed)).await;
    let renewals: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "invoice")
        .skip(3)
        .collect();
    assert_eq!(renewals.len(), 2, "{docs:?}");
    for d in &renewals {
        assert_eq!(d["total"], 1190);
        assert_eq!(d["tax"], 190);
        assert_eq!(d["net"], 1000);
        assert_eq!(d["tax_lines"][0]["name"], "VAT");
        assert_eq!(d["lines"][0]["total"], 1190);
    }
    let mut numbers: Vec<String> = app
        .invoices(None)
        .await
        .iter()
        .filter(|d| d["kind"] == "invoice")
        .map(|d| d["number"].as_str().unwrap().to_owned())
        .collect();
    numbers.sort();
    let seqs: Vec<i64> = numbers
        .iter()
        .map(|n| n.rsplit('-').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "no gaps");

    // The event log, the webhook outbox and the module hear of each one.
    let events = app
        .get(
            &format!("/api/v1/services/{}/events", taxed_services[1]),
            ADMIN_KEY,
        )
        .await;
    let last = events.json["data"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["action"], "prolong");
    assert_eq!(last["actor"], "system:automation");
    assert!(
        last["detail"].as_str().unwrap().contains("charged 1190"),
        "{last}"
    );
    let after = [
        app.db.count(&count("service_events")).await,
        app.db.count(&count("outbox")).await,
        app.db.count(&count("operations")).await,
    ];
    assert_eq!(
        [
            after[0] - before[0],
            after[1] - before[1],
            after[2] - before[2]
        ],
        [3, 6, 3],
        "an event, two outbox events (service.prolong, invoice.issued) and a prolong operation per renewal"
    );
    assert_eq!(pass(&app).await.total(), 0, "the same day again: nothing");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_batch_that_cannot_be_kept_whole_is_renewed_one_by_one_and_nobody_is_charged_twice() {
    use bursar::ledger::{
        LedgerAccountId, LedgerAccountKind, Posting, TransactionDraft, TransactionKind,
    };
    use bursar::money::{Currency, Money};

    let app = TestApp::new().await;
    let acc = app.create_account("whole@example.com", "EUR", 0).await;
    app.credit(&acc, 6000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    let services = [
        active_service(&app, &acc, &plan).await,
        active_service(&app, &acc, &plan).await,
        active_service(&app, &acc, &plan).await,
    ];
    // The middle one's renewal charge is already in the ledger (as if a
    // payment had posted it): the batch's key check fails it as a whole.
    let eur = Currency::from_code("EUR").unwrap();
    let draft = TransactionDraft {
        idempotency_key: format!("renewal:{}:1", services[1]),
        kind: TransactionKind::Charge,
        description: "posted earlier".into(),
        account_id: Some(acc.clone()),
        created_by: "test".into(),
        postings: vec![
            Posting::new(
                LedgerAccountId::customer(&acc),
                Money::new(-1000, eur).unwrap(),
            ),
            Posting::new(
                LedgerAccountId::system(LedgerAccountKind::Revenue, eur),
                Money::new(1000, eur).unwrap(),
            ),
        ],
    };
    let mut tx = app.store().begin().await.unwrap();
    bursar::store::ledger::post(tx.conn(), &draft, app.clock.now())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    app.clock
        .set(Utc.with_ymd_and_hms(2026, 2, 14, 0, 0, 0).unwrap());
    let report = pass(&app).await;
    assert_eq!(did(&report, "renewed"), 3, "{report:?}");
    for id in &services {
        assert_eq!(until(&app.service(id).await), "2026-03-15");
    }
    assert_eq!(charges(&app, &acc).await, 6, "three orders, three renewals");
    assert_eq!(app.balance(&acc).await, 0);
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_service_the_batch_cannot_price_fails_alone() {
    let app = TestApp::new().await;
    let acc = app.create_account("price@example.com", "EUR", 0).await;
    app.credit(&acc, 10_000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    let monthly = active_service(&app, &acc, &plan).await;
    // Paid two more months: to the same day as the quarter below.
    for key in ["more-1", "more-2"] {
        let r = app
            .request(
                axum::http::Method::POST,
                &format!("/api/v1/services/{monthly}/prolong"),
                Some(ADMIN_KEY),
                Some(json!({"period": "1m"})),
                &[("idempotency-key", key)],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let r = app.order(&acc, &plan, "3m").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let quarterly = r.json["id"].as_str().unwrap().to_owned();
    app.run_operations().await;
    // The plan stops selling the quarter: that renewal cannot be priced.
    let r = app
        .request(
            axum::http::Method::PUT,
            &format!("/api/v1/plans/{plan}"),
            Some(ADMIN_KEY),
            Some(json!({
                "name": "Plan 1000", "product_type": "vps", "module": "test",
                "prices": [{"period": "1m", "currency": "EUR", "amount": 1000}]
            })),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    app.clock
        .set(Utc.with_ymd_and_hms(2026, 4, 13, 0, 0, 0).unwrap());
    let report = pass(&app).await;
    assert_eq!(did(&report, "renewed"), 1, "{report:?}");
    assert_eq!(report.failures.get("renewed"), Some(&1), "{report:?}");
    assert_eq!(until(&app.service(&monthly).await), "2026-05-15");
    assert_eq!(until(&app.service(&quarterly).await), "2026-04-15");
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn with_auto_renew_off_nothing_renews_it_not_even_a_payment_until_the_customer_prolongs() {
    let app = TestApp::new().await;
    let acc = app.create_account("off@example.com", "EUR", 0).await;
    app.credit(&acc, 3000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    let id = active_service(&app, &acc, &plan).await;
    let key = app.customer_key(&acc).await;
    let r = app
        .post(
            &format!("/api/v1/services/{id}/auto-renew"),
            &key,
            json!({"auto_renew": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["auto_renew"], false);
    let events = app
        .get(&format!("/api/v1/services/{id}/events"), &key)
        .await;
    assert!(
        events.json["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "auto_renew" && e["detail"] == "off"),
        "{}",
        events.text
    );
    // Another customer's key reaches neither the switch nor the service.
    let other = app.create_account("other-off@example.com", "EUR", 0).await;
    let other_key = app.customer_key(&other).await;
    let r = app
        .post(
            &format!("/api/v1/services/{id}/auto-renew"),
            &other_key,
            json!({"auto_renew": true}),
        )
        .await;
    assert!(
        r.status == StatusCode::FORBIDDEN || r.status == StatusCode::NOT_FOUND,
        "{}",
        r.text
    );
    assert_eq!(app.service(&id).await["auto_renew"], false);

    // Due, with the money there: not renewed; past its end: suspended.
    app.clock
        .set(Utc.with_ymd_and_hms(2026, 2, 13, 0, 0, 0).unwrap());
    assert_eq!(did(&pass(&app).await, "renewed"), 0);
    app.clock
        .set(Utc.with_ymd_and_hms(2026, 2, 15, 12, 0, 1).unwrap());
    let report = pass(&app).await;
    assert_eq!(did(&report, "suspended"), 1, "{report:?}");
    // A payment does not renew it either.
    app.credit(&acc, 1000, "EUR").await;
    let report = pass(&app).await;
    assert_eq!(did(&report, "resumed"), 0, "{report:?}");
    assert_eq!(app.service(&id).await["status"], "suspended");
    assert_eq!(charges(&app, &acc).await, 1, "the order only");
    // The customer prolongs it by hand: charged once, resumed.
    let r = app
        .post(
            &format!("/api/v1/services/{id}/prolong"),
            &key,
            json!({"period": "1m"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(charges(&app, &acc).await, 2);
    // Turned on again, it renews; a closed one cannot be switched.
    let r = app
        .post(
            &format!("/api/v1/services/{id}/auto-renew"),
            &key,
            json!({"auto_renew": true}),
        )
        .await;
    assert_eq!(r.json["auto_renew"], true, "{}", r.text);
    let r = app
        .post(
            &format!("/api/v1/services/{id}/close"),
            ADMIN_KEY,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = app
        .post(
            &format!("/api/v1/services/{id}/auto-renew"),
            &key,
            json!({"auto_renew": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    app.assert_ledger_clean().await;
}
