//! The `stripe` gateway plugin against the Stripe-compatible test server:
//! checkout, signed webhooks (repeated, out of order, forged, late),
//! refunds and reconciliation.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bursar_tests::stripe::{Signing, StripeSim};
use bursar_tests::{ADMIN_KEY, Reply, TestApp};
use serde_json::{Value, json};

const SECRET_KEY: &str = "sk_test_bursar";
const WHSEC: &str = "whsec_current";
const OLD_WHSEC: &str = "whsec_previous";

struct Shop {
    app: TestApp,
    stripe: StripeSim,
    account: String,
}

async fn shop() -> Shop {
    let stripe = StripeSim::spawn(SECRET_KEY).await;
    let config: bursar::plugins::instances::PluginConfig = serde_json::from_value(json!({
        "name": "stripe", "kind": "gateway", "component": "builtin:stripe",
        "allowed_hosts": [stripe.addr.to_string()],
        "settings": {
            "api_base": stripe.url(),
            "secret_key": SECRET_KEY,
            "webhook_secrets": format!("{WHSEC},{OLD_WHSEC}"),
        },
    }))
    .unwrap();
    let app = TestApp::with_plugins(&[config]).await;
    let account = app.create_account("payer@example.com", "EUR", 0).await;
    Shop {
        app,
        stripe,
        account,
    }
}

impl Shop {
    /// A 50.00 EUR top-up; returns (payment id, session id).
    async fn checkout(&self, amount: i64) -> (String, String) {
        let r = self
            .app
            .post(
                "/api/v1/payments",
                ADMIN_KEY,
                json!({"account_id": self.account, "gateway": "stripe", "amount": amount, "currency": "EUR",
                       "return_url": "https://shop.example/thanks"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["status"], "pending");
        let session = r.json["gateway_ref"].as_str().unwrap().to_owned();
        assert_eq!(r.json["checkout"]["type"], "redirect");
        assert!(
            r.json["checkout"]["url"]
                .as_str()
                .unwrap()
                .ends_with(&session)
        );
        let stored = self.stripe.session(&session);
        assert_eq!(stored["amount_total"], amount);
        assert_eq!(stored["currency"], "eur");
        assert_eq!(stored["client_reference_id"], r.json["id"]);
        (r.json["id"].as_str().unwrap().to_owned(), session)
    }

    async fn deliver(&self, instance: &str, event: &Value, signing: &Signing) -> Reply {
        let (headers, body) = StripeSim::signed(event, signing);
        let mut req = Request::builder()
            .method("POST")
            .uri(format!("/api/v1/gateways/{instance}/callback"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        self.app.send(req.body(Body::from(body)).unwrap()).await
    }

    async fn payment(&self, id: &str) -> Value {
        self.app
            .get(&format!("/api/v1/payments/{id}"), ADMIN_KEY)
            .await
            .json
    }
}

#[tokio::test]
async fn a_signed_webhook_credits_once_however_often_and_in_whatever_order_it_comes() {
    let shop = shop().await;
    let (payment, session) = shop.checkout(5000).await;
    shop.stripe.pay(&session);
    let completed = shop
        .stripe
        .event("checkout.session.completed", &session, json!({}));
    for _ in 0..5 {
        let r = shop
            .deliver("stripe", &completed, &Signing::now(WHSEC))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["received"], true);
    }
    // A later event, and an earlier one arriving late.
    let succeeded = shop.stripe.event(
        "checkout.session.async_payment_succeeded",
        &session,
        json!({}),
    );
    let stale = shop.stripe.event(
        "checkout.session.async_payment_failed",
        &session,
        json!({"payment_status": "unpaid"}),
    );
    for event in [&succeeded, &stale, &completed] {
        let r = shop.deliver("stripe", event, &Signing::now(WHSEC)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert_eq!(shop.payment(&payment).await["status"], "paid");
    assert_eq!(shop.app.balance(&shop.account).await, 5000, "credited once");
    shop.app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_webhook_signed_with_the_previous_secret_is_accepted_during_rotation() {
    let shop = shop().await;
    let (payment, session) = shop.checkout(1200).await;
    shop.stripe.pay(&session);
    let event = shop
        .stripe
        .event("checkout.session.completed", &session, json!({}));
    let r = shop
        .deliver("stripe", &event, &Signing::now(OLD_WHSEC))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(shop.payment(&payment).await["status"], "paid");
}

#[tokio::test]
async fn forged_tampered_late_or_misaddressed_webhooks_are_refused_and_write_nothing() {
    let shop = shop().await;
    let (payment, session) = shop.checkout(5000).await;
    shop.stripe.pay(&session);
    let event = shop
        .stripe
        .event("checkout.session.completed", &session, json!({}));
    let before = shop.app.counts().await;
    let now = Signing::now(WHSEC);
    for (what, signing, instance) in [
        (
            "bad signature",
            Signing {
                bad_signature: true,
                ..now.clone()
            },
            "stripe",
        ),
        (
            "tampered body",
            Signing {
                tamper: true,
                ..now.clone()
            },
            "stripe",
        ),
        (
            "older than the tolerance",
            Signing {
                timestamp: now.timestamp - 301,
                ..now.clone()
            },
            "stripe",
        ),
        ("unknown instance", now.clone(), "paypal"),
    ] {
        let r = shop.deliver(instance, &event, &signing).await;
        assert!(
            r.status.is_client_error(),
            "{what}: {} {}",
            r.status,
            r.text
        );
    }
    let r = shop
        .app
        .post(
            "/api/v1/gateways/stripe/callback",
            "",
            json!({"type": "checkout.session.completed"}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "no signature: {}",
        r.text
    );
    assert_eq!(shop.app.counts().await, before);
    assert_eq!(shop.payment(&payment).await["status"], "pending");
    assert_eq!(shop.app.balance(&shop.account).await, 0);
}

#[tokio::test]
async fn a_webhook_claiming_paid_is_not_believed_when_the_api_says_unpaid() {
    let shop = shop().await;
    let (payment, session) = shop.checkout(5000).await;
    let lie = shop.stripe.event(
        "checkout.session.completed",
        &session,
        json!({"status": "complete", "payment_status": "paid"}),
    );
    let r = shop.deliver("stripe", &lie, &Signing::now(WHSEC)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(shop.payment(&payment).await["status"], "pending");
    assert_eq!(shop.app.balance(&shop.account).await, 0);
}

#[tokio::test]
async fn refunds_go_through_stripe_and_cannot_exceed_the_payment() {
    let shop = shop().await;
    let (payment, session) = shop.checkout(4000).await;
    shop.stripe.pay(&session);
    let event = shop
        .stripe
        .event("checkout.session.completed", &session, json!({}));
    shop.deliver("stripe", &event, &Signing::now(WHSEC)).await;
    for (amount, status) in [
        (1500, StatusCode::CREATED),
        (2500, StatusCode::CREATED),
        (1, StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let r = shop
            .app
            .post(
                &format!("/api/v1/payments/{payment}/refunds"),
                ADMIN_KEY,
                json!({"amount": amount, "reason": "goodwill"}),
            )
            .await;
        assert_eq!(r.status, status, "{}", r.text);
    }
    let refunds = shop.stripe.refunds();
    assert_eq!(
        refunds
            .iter()
            .map(|r| r["amount"].as_i64().unwrap())
            .sum::<i64>(),
        4000
    );
    let p = shop.payment(&payment).await;
    assert_eq!(p["refunded_amount"], 4000);
    assert!(
        p["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["gateway_ref"].as_str().unwrap().starts_with("re_test_"))
    );
    assert_eq!(shop.app.balance(&shop.account).await, 0);
    shop.app.assert_ledger_clean().await;
}

#[tokio::test]
async fn reconciliation_settles_payments_whose_webhook_never_came() {
    let shop = shop().await;
    let (paid, paid_session) = shop.checkout(3000).await;
    let (expired, expired_session) = shop.checkout(1000).await;
    let (waiting, _) = shop.checkout(700).await;
    shop.stripe.pay(&paid_session);
    shop.stripe.expire(&expired_session);
    // Too young to be asked about.
    let r = shop
        .app
        .post("/api/v1/payments/reconcile", ADMIN_KEY, json!({}))
        .await;
    assert_eq!(r.json["checked"], 0, "{}", r.text);
    shop.app.clock.advance(chrono::Duration::minutes(20));
    let r = shop
        .app
        .post("/api/v1/payments/reconcile", ADMIN_KEY, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["checked"], 3);
    assert_eq!(r.json["changed"], 2);
    assert_eq!(shop.payment(&paid).await["status"], "paid");
    assert_eq!(shop.payment(&expired).await["status"], "expired");
    assert_eq!(shop.payment(&waiting).await["status"], "pending");
    assert_eq!(shop.app.balance(&shop.account).await, 3000);
    // Asking again changes nothing.
    let r = shop
        .app
        .post("/api/v1/payments/reconcile", ADMIN_KEY, json!({}))
        .await;
    assert_eq!(r.json["changed"], 0);
    assert_eq!(shop.app.balance(&shop.account).await, 3000);
}

#[tokio::test]
async fn abandoned_bank_transfers_neither_starve_the_reconciler_nor_live_for_ever() {
    let stripe = StripeSim::spawn(SECRET_KEY).await;
    let stripe_config: bursar::plugins::instances::PluginConfig = serde_json::from_value(json!({
        "name": "stripe", "kind": "gateway", "component": "builtin:stripe",
        "allowed_hosts": [stripe.addr.to_string()],
        "payment_expire_after_secs": 86_400,
        "settings": {"api_base": stripe.url(), "secret_key": SECRET_KEY, "webhook_secrets": WHSEC},
    }))
    .unwrap();
    let bank_config: bursar::plugins::instances::PluginConfig = serde_json::from_value(json!({
        "name": "bank", "kind": "gateway", "component": "builtin:bank-transfer",
        "settings": {"beneficiary": "Hosting Ltd", "iban": "DE02120300000000202051", "bic": "BYLADEM1001"},
    }))
    .unwrap();
    let app = TestApp::with_config(|c| {
        c.plugins = vec![stripe_config, bank_config];
        c.payments.reconcile_batch = 5;
        c.payments.max_open_per_account = 10;
        c.payments.expire_after_secs = 3 * 86_400;
    })
    .await;
    // Customers leave thirty bank transfers open (ten each: the quota).
    let mut bank = vec![];
    for n in 0..3 {
        let acc = app
            .create_account(&format!("idle{n}@example.com"), "EUR", 0)
            .await;
        let key = app.customer_key(&acc).await;
        for _ in 0..10 {
            let r = app
                .post(
                    "/api/v1/payments",
                    &key,
                    json!({"account_id": acc, "gateway": "bank", "amount": 100, "currency": "EUR"}),
                )
                .await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
            bank.push(r.json["id"].as_str().unwrap().to_owned());
        }
        let r = app
            .post(
                "/api/v1/payments",
                &key,
                json!({"account_id": acc, "gateway": "bank", "amount": 100, "currency": "EUR"}),
            )
            .await;
        assert_eq!(r.problem(409), "urn:bursar:problem:quota-exceeded");
        assert_eq!(r.json["quota"], "open payments");
    }
    // Then a card payment whose webhook is lost.
    let payer = app.create_account("payer@example.com", "EUR", 0).await;
    let r = app
        .post(
            "/api/v1/payments",
            ADMIN_KEY,
            json!({"account_id": payer, "gateway": "stripe", "amount": 2500, "currency": "EUR"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let card = r.json["id"].as_str().unwrap().to_owned();
    stripe.pay(r.json["gateway_ref"].as_str().unwrap());

    app.clock.advance(chrono::Duration::minutes(20));
    let r = app
        .post("/api/v1/payments/reconcile", ADMIN_KEY, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json["checked"], 6,
        "five bank transfers and the card: {}",
        r.text
    );
    let paid = app
        .get(&format!("/api/v1/payments/{card}"), ADMIN_KEY)
        .await;
    assert_eq!(paid.json["status"], "paid", "the card is not starved");
    assert_eq!(app.balance(&payer).await, 2500);
    // Pass after pass the bank transfers take their turns.
    for _ in 0..5 {
        app.post("/api/v1/payments/reconcile", ADMIN_KEY, json!({}))
            .await;
    }
    let asked = app
        .db
        .count("SELECT COUNT(*) FROM payments WHERE gateway = 'bank' AND checked_at IS NOT NULL")
        .await;
    assert_eq!(asked, 30, "every one was asked about");

    // Left open past their time, they expire, and the quota frees up.
    app.clock.advance(chrono::Duration::days(4));
    let r = app
        .post("/api/v1/payments/reconcile", ADMIN_KEY, json!({}))
        .await;
    assert_eq!(r.json["expired"], 30, "{}", r.text);
    for id in &bank {
        let p = app.get(&format!("/api/v1/payments/{id}"), ADMIN_KEY).await;
        assert_eq!(p.json["status"], "expired");
    }
    app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_payment_whose_creation_was_cut_short_is_finished_by_the_reconciler_exactly_once() {
    let shop = shop().await;
    // Stripe cannot answer: the payment stays `new`, nothing is owed.
    shop.stripe.fail_next(1);
    let r = shop
        .app
        .post(
            "/api/v1/payments",
            ADMIN_KEY,
            json!({"account_id": shop.account, "gateway": "stripe", "amount": 4000, "currency": "EUR"}),
        )
        .await;
    assert_eq!(r.problem(502), "urn:bursar:problem:gateway-failed");
    assert!(r.text.contains("unavailable"), "{}", r.text);
    let listed = shop
        .app
        .get(
            &format!("/api/v1/payments?account_id={}", shop.account),
            ADMIN_KEY,
        )
        .await;
    let first = listed.json["data"][0].clone();
    assert_eq!(first["status"], "new");
    // And one as a process killed right after storing it leaves it.
    let killed = {
        let mut tx = shop.app.store().begin().await.unwrap();
        let p = bursar::store::payments::create(
            tx.conn(),
            bursar::store::payments::NewPayment {
                account_id: &shop.account,
                gateway: "stripe",
                amount: bursar::money::Money::new(1500, bursar::money::Currency::EUR).unwrap(),
                service_id: None,
                description: "top-up",
                request_key: "killed:1",
                request_hash: "h",
                created_by: "test",
                expires_at: bursar::clock::Clock::now(&*shop.app.clock) + chrono::Duration::days(1),
                return_url: Some("https://shop.example/thanks"),
            },
            bursar::clock::Clock::now(&*shop.app.clock),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        p
    };
    assert!(shop.stripe.sessions().is_empty());
    shop.app.clock.advance(chrono::Duration::minutes(20));
    for _ in 0..2 {
        let r = shop
            .app
            .post("/api/v1/payments/reconcile", ADMIN_KEY, json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert_eq!(
        shop.stripe.sessions().len(),
        2,
        "one session each, however often asked"
    );
    for id in [first["id"].as_str().unwrap(), killed.id.as_str()] {
        let p = shop.payment(id).await;
        assert_eq!(p["status"], "pending", "{p}");
        shop.stripe.pay(p["gateway_ref"].as_str().unwrap());
    }
    shop.app.clock.advance(chrono::Duration::minutes(20));
    shop.app
        .post("/api/v1/payments/reconcile", ADMIN_KEY, json!({}))
        .await;
    assert_eq!(
        shop.app.balance(&shop.account).await,
        5500,
        "each paid once"
    );
    shop.app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_refund_cut_short_is_made_by_the_reconciler_or_its_money_comes_back() {
    let shop = shop().await;
    let (payment, session) = shop.checkout(5000).await;
    shop.stripe.pay(&session);
    let event = shop
        .stripe
        .event("checkout.session.completed", &session, json!({}));
    shop.deliver("stripe", &event, &Signing::now(WHSEC)).await;
    assert_eq!(shop.app.balance(&shop.account).await, 5000);
    let refund = |amount: i64| {
        let app = &shop.app;
        let path = format!("/api/v1/payments/{payment}/refunds");
        async move {
            app.post(
                &path,
                ADMIN_KEY,
                json!({"amount": amount, "reason": "asked"}),
            )
            .await
        }
    };
    // Stripe cannot answer: the refund waits, its debit posted.
    shop.stripe.fail_next(1);
    let r = refund(1000).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.json["status"], "pending");
    assert_eq!(shop.app.balance(&shop.account).await, 4000);
    assert!(shop.stripe.refunds().is_empty());
    // The reconciler makes it, once.
    shop.app.clock.advance(chrono::Duration::minutes(20));
    for _ in 0..2 {
        shop.app
            .post("/api/v1/payments/reconcile", ADMIN_KEY, json!({}))
            .await;
    }
    assert_eq!(shop.stripe.refunds().len(), 1);
    assert_eq!(
        shop.payment(&payment).await["refunds"][0]["status"],
        "succeeded"
    );
    assert_eq!(shop.app.balance(&shop.account).await, 4000);

    // Cut short again, and then refused for good: the money comes back.
    shop.stripe.fail_next(1);
    let r = refund(2000).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(shop.app.balance(&shop.account).await, 2000);
    shop.stripe.refuse_refunds(true);
    shop.app.clock.advance(chrono::Duration::minutes(20));
    shop.app
        .post("/api/v1/payments/reconcile", ADMIN_KEY, json!({}))
        .await;
    let p = shop.payment(&payment).await;
    assert_eq!(p["refunds"][1]["status"], "failed", "{p}");
    assert_eq!(p["refunded_amount"], 1000);
    assert_eq!(
        shop.app.balance(&shop.account).await,
        4000,
        "the debit went back"
    );
    assert_eq!(shop.stripe.refunds().len(), 1);
    shop.app.assert_ledger_clean().await;
}
