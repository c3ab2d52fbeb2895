//! E-mail notifications: recorded with their events, rendered in the
//! account's language, delivered over real SMTP (an in-process server) at
//! least once with a stable Message-ID, retried when the server refuses or
//! drops the connection; reminders on the simulated clock; invoices as PDF.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use bursar::clock::Clock;
use bursar::messages::Kind;
use bursar::notify::email::{
    CLAIM_SECS, EmailConfig, Mail, Mailer, SendError, Smtp, SmtpConfig, SmtpTls, Transport,
};
use bursar::services::OperationKind;
use bursar::services::module::{ModuleError, ModuleOutcome};
use bursar::templates::{CompanyConfig, Templates};
use bursar_tests::smtp::{Mode, SmtpSink};
use bursar_tests::{ADMIN_KEY, TestApp};
use futures::future::BoxFuture;
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::json;

const PORTAL: &str = "https://my.example.com";

fn company() -> CompanyConfig {
    CompanyConfig {
        name: "Example Hosting".into(),
        address: "1 Example Street, Berlin".into(),
        tax_id: "DE123456789".into(),
        email: "billing@example.com".into(),
        portal_url: PORTAL.into(),
    }
}

fn email_config() -> EmailConfig {
    EmailConfig {
        from: "Example Hosting <billing@example.com>".into(),
        staff_to: Some("ops@example.com".into()),
        per_minute: 100_000,
        ..Default::default()
    }
}

fn smtp_to(sink: &SmtpSink) -> Arc<dyn Transport> {
    Arc::new(
        Smtp::new(&SmtpConfig {
            host: "127.0.0.1".into(),
            port: Some(sink.addr.port()),
            tls: SmtpTls::None,
            timeout_secs: 5,
            ..Default::default()
        })
        .unwrap(),
    )
}

fn mailer(app: &TestApp, transport: Arc<dyn Transport>) -> Mailer {
    mailer_with(app, transport, Templates::shared_builtin())
}

fn mailer_with(app: &TestApp, transport: Arc<dyn Transport>, templates: Arc<Templates>) -> Mailer {
    Mailer::new(
        app.store().clone(),
        templates,
        email_config(),
        company(),
        transport,
        Some(app.secrets.clone()),
    )
    .unwrap()
}

async fn bank_app() -> TestApp {
    let bank: bursar::plugins::instances::PluginConfig = serde_json::from_value(json!({
        "name": "bank", "kind": "gateway", "component": "builtin:bank-transfer",
        "settings": {"beneficiary": "Hosting Ltd", "iban": "DE02120300000000202051", "bic": "BYLADEM1001"},
    }))
    .unwrap();
    TestApp::with_plugins(&[bank]).await
}

/// A message as a mail client reads it.
struct Read {
    message_id: String,
    to: String,
    subject: String,
    text: String,
    html: String,
    attachments: Vec<(String, Vec<u8>)>,
}

fn read(data: &[u8]) -> Read {
    let m = MessageParser::default()
        .parse(data)
        .expect("a MIME message");
    Read {
        message_id: m.message_id().unwrap_or_default().to_owned(),
        to: m
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or_default()
            .to_owned(),
        subject: m.subject().unwrap_or_default().to_owned(),
        text: m.body_text(0).unwrap_or_default().into_owned(),
        html: m.body_html(0).unwrap_or_default().into_owned(),
        attachments: m
            .attachments()
            .map(|a| {
                (
                    a.attachment_name().unwrap_or_default().to_owned(),
                    a.contents().to_vec(),
                )
            })
            .collect(),
    }
}

async fn kinds(app: &TestApp, status: &str) -> Vec<String> {
    let mut r = app.store().reader().await.unwrap();
    let q = "SELECT kind FROM notifications WHERE status = $1 ORDER BY id";
    let rows: Vec<(String,)> = match r.conn() {
        bursar::store::Conn::Sqlite(c) => sqlx::query_as(q).bind(status).fetch_all(&mut *c).await,
        bursar::store::Conn::Postgres(c) => sqlx::query_as(q).bind(status).fetch_all(&mut *c).await,
    }
    .unwrap();
    rows.into_iter().map(|(k,)| k).collect()
}

/// One automation pass at `at`.
async fn pass(
    app: &TestApp,
    config: &bursar::automation::AutomationConfig,
    at: chrono::DateTime<chrono::Utc>,
) {
    bursar::automation::run_once(app.store(), config, at)
        .await
        .unwrap();
}

/// The notifications of `kind` recorded so far, newest first.
async fn recorded(app: &TestApp, kind: Kind) -> Vec<bursar::store::notifications::Notification> {
    let mut r = app.store().reader().await.unwrap();
    bursar::store::notifications::recent(r.conn(), Some(kind), 100)
        .await
        .unwrap()
}

/// Every address in `text` starting with `http`.
fn links(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|w| w.starts_with("http"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn each_notification_arrives_once_with_its_headers_both_parts_and_the_account_language() {
    let app = bank_app().await;
    let sink = SmtpSink::start().await;
    // Ann writes in English; Boris in Russian.
    let ann = app.create_account("ann@example.com", "EUR", 0).await;
    let r = app
        .post(
            "/api/v1/accounts",
            ADMIN_KEY,
            json!({"email": "boris@example.com", "name": "Борис", "currency": "EUR", "language": "ru"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["language"], "ru");
    let boris = r.json["id"].as_str().unwrap().to_owned();
    let plan = app.simple_plan(1000).await;

    // Ann pays by bank transfer, which staff confirm; her order opens.
    let r = app
        .post(
            "/api/v1/payments",
            ADMIN_KEY,
            json!({"account_id": ann, "gateway": "bank", "amount": 5000, "currency": "EUR"}),
        )
        .await;
    let payment = r.json["id"].as_str().unwrap().to_owned();
    let r = app
        .post(
            &format!("/api/v1/payments/{payment}/mark-paid"),
            ADMIN_KEY,
            json!({"reason": "on the statement"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    app.module.push(
        OperationKind::Open,
        false,
        Ok(ModuleOutcome::Done {
            params: vec![("hostname".into(), "srv1.example.net".into())],
            secret_params: vec![("password".into(), "root-secret".into())],
        }),
    );
    let service = app.order(&ann, &plan, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    assert_eq!(app.service(&service).await["status"], "active");
    // Staff suspend it, resume it, and close it.
    for (action, body) in [
        ("suspend", json!({"reason": "admin"})),
        ("resume", json!({})),
        ("close", json!({})),
    ] {
        let r = app
            .post(
                &format!("/api/v1/services/{service}/{action}"),
                ADMIN_KEY,
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{action}: {}", r.text);
        app.run_operations().await;
    }
    // A part of Ann's payment is refunded: the mail says how much.
    let r = app
        .request(
            Method::POST,
            &format!("/api/v1/payments/{payment}/refunds"),
            Some(ADMIN_KEY),
            Some(json!({"amount": 1000, "reason": "goodwill"})),
            &[("idempotency-key", "refund-ann-1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Boris orders without money: it waits for payment.
    let r = app.order(&boris, &plan, "1m").await;
    assert_eq!(r.json["status"], "ordered", "{}", r.text);

    let sent = mailer(&app, smtp_to(&sink))
        .run_once(app.clock.now())
        .await
        .unwrap();
    let mails: Vec<Read> = sink.received().iter().map(|m| read(&m.data)).collect();
    assert_eq!(sent, mails.len());
    let to_ann: Vec<&Read> = mails.iter().filter(|m| m.to == "ann@example.com").collect();
    let subjects: Vec<&str> = to_ann.iter().map(|m| m.subject.as_str()).collect();
    for expected in [
        "Welcome to Example Hosting",
        "Payment received: 50.00 EUR",
        "Order",
        "Your Plan 1000 is ready",
        "Invoice INV-",
        "Plan 1000 is suspended",
        "Plan 1000 is running again",
        "Plan 1000 is closed",
        "Refund issued: 10.00 EUR",
    ] {
        assert_eq!(
            subjects.iter().filter(|s| s.starts_with(expected)).count(),
            1,
            "{expected:?} once among {subjects:?}"
        );
    }
    for m in &mails {
        assert!(
            m.message_id.starts_with("ntf_") && m.message_id.ends_with("@example.com"),
            "{}",
            m.message_id
        );
        assert!(!m.text.is_empty() && m.html.contains("<p"), "{}", m.subject);
        for link in links(&m.text) {
            assert!(link.starts_with(PORTAL), "{link} in {:?}", m.subject);
            assert!(m.html.contains(&format!("href=\"{link}\"")), "{link}");
        }
    }
    let ids: std::collections::BTreeSet<_> = mails.iter().map(|m| &m.message_id).collect();
    assert_eq!(ids.len(), mails.len(), "one Message-ID per notification");
    // The active mail names the server and links to the credentials; the
    // password stays out of mail by default.
    let active = to_ann
        .iter()
        .find(|m| m.subject.ends_with("is ready"))
        .unwrap();
    assert!(
        active.text.contains("hostname: srv1.example.net"),
        "{}",
        active.text
    );
    assert!(
        active
            .text
            .contains(&format!("{PORTAL}/services/{service}#credentials"))
    );
    assert!(!active.text.contains("root-secret") && !active.html.contains("root-secret"));
    // The invoice mail carries its PDF.
    let invoice = to_ann
        .iter()
        .find(|m| m.subject.starts_with("Invoice "))
        .unwrap();
    assert_eq!(invoice.attachments.len(), 1);
    let (name, pdf) = &invoice.attachments[0];
    assert!(name.starts_with("INV-") && name.ends_with(".pdf"), "{name}");
    let text = pdf_extract::extract_text_from_mem(pdf).unwrap();
    assert!(text.contains(name.trim_end_matches(".pdf")), "{text}");
    // Boris is written to in Russian, and told what is due.
    let to_boris: Vec<&Read> = mails
        .iter()
        .filter(|m| m.to == "boris@example.com")
        .collect();
    assert!(
        to_boris
            .iter()
            .any(|m| m.subject == "Добро пожаловать в Example Hosting")
    );
    let order = to_boris
        .iter()
        .find(|m| m.subject.starts_with("Заказ"))
        .unwrap();
    assert!(
        order.text.contains("Он ожидает оплаты: к оплате 10.00 EUR"),
        "{}",
        order.text
    );
    assert!(order.html.contains("lang=\"ru\""));

    // Nothing goes out twice.
    app.clock.advance(chrono::Duration::hours(2));
    let again = mailer(&app, smtp_to(&sink))
        .run_once(app.clock.now())
        .await
        .unwrap();
    assert_eq!(again, 0);
    assert_eq!(sink.received().len(), mails.len());
    assert!(kinds(&app, "pending").await.is_empty());
}

#[tokio::test]
async fn refused_and_dropped_connections_are_retried_and_nothing_is_lost_or_sent_twice() {
    let app = TestApp::new().await;
    let sink = SmtpSink::start().await;
    for i in 0..3 {
        app.create_account(&format!("c{i}@example.com"), "EUR", 0)
            .await;
    }
    let m = mailer(&app, smtp_to(&sink));
    sink.set_mode(Mode::Refuse);
    assert_eq!(m.run_once(app.clock.now()).await.unwrap(), 0);
    sink.set_mode(Mode::DropAfterData);
    // Not yet due again: nothing is tried.
    assert_eq!(m.run_once(app.clock.now()).await.unwrap(), 0);
    app.clock.advance(chrono::Duration::minutes(1));
    assert_eq!(m.run_once(app.clock.now()).await.unwrap(), 0);
    assert!(sink.received().is_empty());
    assert_eq!(kinds(&app, "pending").await.len(), 3, "nothing lost");
    sink.set_mode(Mode::Accept);
    app.clock.advance(chrono::Duration::minutes(5));
    assert_eq!(m.run_once(app.clock.now()).await.unwrap(), 3);
    app.clock.advance(chrono::Duration::hours(2));
    assert_eq!(m.run_once(app.clock.now()).await.unwrap(), 0);
    let got: Vec<Read> = sink.received().iter().map(|m| read(&m.data)).collect();
    let mut to: Vec<&str> = got.iter().map(|m| m.to.as_str()).collect();
    to.sort();
    assert_eq!(to, ["c0@example.com", "c1@example.com", "c2@example.com"]);

    // A recipient the server refuses for good is failed, not retried.
    app.create_account("gone@example.com", "EUR", 0).await;
    sink.set_mode(Mode::RejectRecipient);
    assert_eq!(m.run_once(app.clock.now()).await.unwrap(), 0);
    assert_eq!(kinds(&app, "failed").await, ["welcome"]);
    assert!(kinds(&app, "pending").await.is_empty());
}

/// Sends through `inner`, then hangs: the process "dies" after the server
/// took the mail and before Bursar recorded it.
struct DiesAfterSending {
    inner: Arc<dyn Transport>,
    sent: tokio::sync::mpsc::UnboundedSender<()>,
}

impl Transport for DiesAfterSending {
    fn send<'a>(&'a self, mail: &'a Mail) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            self.inner.send(mail).await?;
            let _ = self.sent.send(());
            std::future::pending().await
        })
    }
}

#[tokio::test]
async fn a_crash_between_sending_and_recording_repeats_the_same_message_at_most_once() {
    let app = TestApp::new().await;
    let sink = SmtpSink::start().await;
    app.create_account("crash@example.com", "EUR", 0).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let dying = mailer(
        &app,
        Arc::new(DiesAfterSending {
            inner: smtp_to(&sink),
            sent: tx,
        }),
    );
    let now = app.clock.now();
    let pass = tokio::spawn(async move { dying.run_once(now).await });
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the mail was sent");
    pass.abort();
    let _ = pass.await;
    assert_eq!(sink.received().len(), 1);
    assert_eq!(kinds(&app, "pending").await, ["welcome"], "not recorded");

    // Another mailer leaves the claim alone until it lapses, then sends.
    let m = mailer(&app, smtp_to(&sink));
    assert_eq!(m.run_once(app.clock.now()).await.unwrap(), 0);
    app.clock.advance(chrono::Duration::seconds(CLAIM_SECS + 1));
    assert_eq!(m.run_once(app.clock.now()).await.unwrap(), 1);
    app.clock.advance(chrono::Duration::hours(1));
    assert_eq!(m.run_once(app.clock.now()).await.unwrap(), 0);
    let got: Vec<Read> = sink.received().iter().map(|m| read(&m.data)).collect();
    assert_eq!(got.len(), 2, "one duplicate at most");
    assert_eq!(got[0].message_id, got[1].message_id);
    assert_eq!(got[0].subject, got[1].subject);
}

#[tokio::test]
async fn the_renewal_reminder_goes_out_once_per_period_only_when_the_balance_does_not_cover_it() {
    let app = TestApp::new().await;
    let config = bursar::automation::AutomationConfig {
        remind_renewal_days: 7,
        renew_ahead_days: 3,
        ..Default::default()
    };
    let plan = app.simple_plan(1000).await;
    let short = app.create_account("short@example.com", "EUR", 0).await;
    let covered = app.create_account("covered@example.com", "EUR", 0).await;
    app.credit(&short, 1000, "EUR").await;
    app.credit(&covered, 10_000, "EUR").await;
    let s1 = app.order(&short, &plan, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.order(&covered, &plan, "1m").await;
    app.run_operations().await;
    let paid_until = |s: serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(s["paid_until"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    let end = paid_until(app.service(&s1).await);
    pass(&app, &config, end - chrono::Duration::days(8)).await;
    assert!(
        recorded(&app, Kind::RenewalDue).await.is_empty(),
        "not yet 7 days ahead"
    );
    pass(&app, &config, end - chrono::Duration::days(6)).await;
    pass(&app, &config, end - chrono::Duration::days(5)).await;
    let first = recorded(&app, Kind::RenewalDue).await;
    assert_eq!(first.len(), 1, "once, for the short account only");
    assert_eq!(first[0].data["service_id"], s1.as_str());
    assert_eq!(first[0].data["renewal"]["missing"], "10.00 EUR");

    // Money arrives; it renews; the next period is short again: one more.
    app.credit(&short, 1000, "EUR").await;
    pass(&app, &config, end - chrono::Duration::days(2)).await;
    let next_end = paid_until(app.service(&s1).await);
    assert!(next_end > end, "renewed");
    pass(&app, &config, next_end - chrono::Duration::days(6)).await;
    pass(&app, &config, next_end - chrono::Duration::days(4)).await;
    assert_eq!(recorded(&app, Kind::RenewalDue).await.len(), 2);

    // Reminders are optional: turned off, the mail is skipped.
    let key = app.customer_key(&short).await;
    let r = app
        .request(
            Method::PATCH,
            &format!("/api/v1/accounts/{short}"),
            Some(&key),
            Some(json!({"email_opt_out": ["service_suspended"]})),
            &[],
        )
        .await;
    assert_eq!(r.problem(422), "urn:bursar:problem:invalid-field");
    let r = app
        .request(
            Method::PATCH,
            &format!("/api/v1/accounts/{short}"),
            Some(&key),
            Some(json!({"email_opt_out": ["renewal_due"]})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["email_opt_out"], json!(["renewal_due"]));
    let sink = SmtpSink::start().await;
    mailer(&app, smtp_to(&sink))
        .run_once(next_end)
        .await
        .unwrap();
    let got: Vec<Read> = sink.received().iter().map(|m| read(&m.data)).collect();
    assert!(
        !got.iter().any(|m| m.subject.contains("missing")),
        "skipped"
    );
    assert_eq!(kinds(&app, "skipped").await, ["renewal_due", "renewal_due"]);
}

#[tokio::test]
async fn staff_hear_of_an_operation_waiting_in_the_manual_queue() {
    let app = TestApp::new().await;
    let acc = app.create_account("q@example.com", "EUR", 0).await;
    app.credit(&acc, 1000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    app.module.push(
        OperationKind::Open,
        false,
        Err(ModuleError::Rejected("no server in stock".into())),
    );
    app.order(&acc, &plan, "1m").await;
    app.run_operations().await;
    let sink = SmtpSink::start().await;
    let m = mailer(&app, smtp_to(&sink));
    m.run_once(app.clock.now()).await.unwrap();
    let got: Vec<Read> = sink.received().iter().map(|m| read(&m.data)).collect();
    let staff: Vec<&Read> = got.iter().filter(|m| m.to == "ops@example.com").collect();
    assert_eq!(
        staff.len(),
        1,
        "{:?}",
        got.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    assert!(
        staff[0].subject.contains("needs staff"),
        "{}",
        staff[0].subject
    );
    assert!(
        staff[0].text.contains("no server in stock"),
        "{}",
        staff[0].text
    );
}

#[tokio::test]
async fn an_overridden_template_is_used() {
    let app = TestApp::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("email/en")).unwrap();
    std::fs::write(
        dir.path().join("email/en/welcome.txt"),
        "{% block subject %}Moin {{ account.name }}{% endblock %}{% block body %}Our own words.{% endblock %}",
    )
    .unwrap();
    let templates = Arc::new(Templates::load(Some(dir.path()), "en").unwrap());
    app.create_account("own@example.com", "EUR", 0).await;
    let sink = SmtpSink::start().await;
    mailer_with(&app, smtp_to(&sink), templates)
        .run_once(app.clock.now())
        .await
        .unwrap();
    let got = read(&sink.received()[0].data);
    assert!(got.subject.starts_with("Moin "), "{}", got.subject);
    assert_eq!(got.text.trim(), "Our own words.");
}

#[tokio::test]
async fn the_invoice_pdf_holds_its_number_lines_tax_and_total_and_is_the_owners_only() {
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
            json!({"email": "de@example.com", "name": "Deutsche Kundin", "currency": "EUR", "country": "DE"}),
        )
        .await;
    let acc = r.json["id"].as_str().unwrap().to_owned();
    app.credit(&acc, 10_000, "EUR").await;
    let plan = app.simple_plan(1000).await;
    app.order(&acc, &plan, "1m").await;
    let invoice = app.invoices(Some(&acc)).await[0].clone();
    let id = invoice["id"].as_str().unwrap();
    let number = invoice["number"].as_str().unwrap();
    let key = app.customer_key(&acc).await;
    for (path, accept) in [
        (format!("/api/v1/invoices/{id}/pdf"), "*/*"),
        (format!("/api/v1/invoices/{id}"), "application/pdf"),
    ] {
        let req = axum::http::Request::builder()
            .uri(&path)
            .header("authorization", format!("Bearer {key}"))
            .header("accept", accept)
            .body(axum::body::Body::empty())
            .unwrap();
        let r = app.send(req).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert_eq!(r.content_type, "application/pdf");
        assert_eq!(
            r.headers["vary"], "Accept",
            "caches keep JSON and PDF apart"
        );
        let text = pdf_extract::extract_text_from_mem(&r.body).unwrap();
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        for needle in [
            number,
            "Deutsche Kundin",
            "Plan 1000: service",
            "VAT 19.00 %",
            "1.90 EUR",
            "Total",
            "11.90 EUR",
        ] {
            assert!(words.contains(needle), "{needle:?} not in {words:?}");
        }
    }
    // JSON stays the default.
    let r = app.get(&format!("/api/v1/invoices/{id}"), &key).await;
    assert_eq!(r.json["number"], number);
    // Another customer finds nothing.
    let other = app.create_account("other@example.com", "EUR", 0).await;
    let other_key = app.customer_key(&other).await;
    let r = app
        .get(&format!("/api/v1/invoices/{id}/pdf"), &other_key)
        .await;
    r.problem(404);
}

#[tokio::test]
async fn a_deletion_warning_and_a_low_balance_are_told_once_each_time() {
    let app = TestApp::new().await;
    let mut low = std::collections::BTreeMap::new();
    low.insert("EUR".to_owned(), 500);
    let config = bursar::automation::AutomationConfig {
        warn_deletion_days: 3,
        remind_renewal_days: 0,
        low_balance: low,
        ..Default::default()
    };
    let plan = app
        .create_plan(json!({
            "name": "Short", "product_type": "vps", "module": "test",
            "prices": [{"period": "1m", "currency": "EUR", "amount": 1000}],
            "grace_days": 0, "deletion_days": 10,
        }))
        .await;
    let acc = app.create_account("del@example.com", "EUR", 0).await;
    app.credit(&acc, 1000, "EUR").await;
    let service = app.order(&acc, &plan, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    // The order took the balance to zero, below 5.00 EUR: told once.
    let now = app.clock.now();
    pass(&app, &config, now).await;
    pass(&app, &config, now + chrono::Duration::hours(1)).await;
    assert_eq!(recorded(&app, Kind::BalanceLow).await.len(), 1);
    // Back above, then below again (the next renewal): told again.
    app.credit(&acc, 1000, "EUR").await;
    pass(&app, &config, now + chrono::Duration::hours(2)).await;
    assert_eq!(recorded(&app, Kind::BalanceLow).await.len(), 1);
    let s = app.service(&service).await;
    let end = chrono::DateTime::parse_from_rfc3339(s["paid_until"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    pass(&app, &config, end - chrono::Duration::days(1)).await;
    assert_eq!(
        recorded(&app, Kind::BalanceLow).await.len(),
        2,
        "renewed, below again"
    );

    // Unpaid, it is suspended at the end of the next period; warned 3
    // days before its deletion, once.
    let next_end = end + chrono::Duration::days(31);
    pass(&app, &config, next_end + chrono::Duration::hours(1)).await;
    assert_eq!(app.service(&service).await["status"], "suspended");
    assert_eq!(recorded(&app, Kind::ServiceSuspended).await.len(), 1);
    pass(&app, &config, next_end + chrono::Duration::days(6)).await;
    assert_eq!(
        recorded(&app, Kind::DeletionWarning).await.len(),
        0,
        "not yet"
    );
    pass(&app, &config, next_end + chrono::Duration::days(8)).await;
    pass(&app, &config, next_end + chrono::Duration::days(9)).await;
    assert_eq!(recorded(&app, Kind::DeletionWarning).await.len(), 1);
    pass(&app, &config, next_end + chrono::Duration::days(11)).await;
    assert_eq!(
        recorded(&app, Kind::ServiceClosed).await.len(),
        0,
        "closing: the module closes it"
    );
    app.clock.set(next_end + chrono::Duration::days(11));
    app.run_operations().await;
    assert_eq!(recorded(&app, Kind::ServiceClosed).await.len(), 1);
    assert_eq!(recorded(&app, Kind::DeletionWarning).await.len(), 1);
}

#[tokio::test]
async fn a_line_break_in_a_name_neither_breaks_the_header_nor_stops_the_mailer() {
    let app = TestApp::new().await;
    let sink = SmtpSink::start().await;
    let acc = app.create_account("nl@example.com", "EUR", 0).await;
    let key = app.customer_key(&acc).await;
    let r = app
        .request(
            Method::PATCH,
            &format!("/api/v1/accounts/{acc}"),
            Some(&key),
            Some(json!({"name": "Eve\r\nBcc: victim@example.com"})),
            &[],
        )
        .await;
    assert_eq!(r.problem(422), "urn:bursar:problem:invalid-field");
    // A name stored before that rule is made harmless on its way out.
    let line_break = match app.db.backend() {
        bursar::store::Backend::Sqlite => "char(13) || char(10)",
        bursar::store::Backend::Postgres => "chr(13) || chr(10)",
    };
    app.db
        .exec(&format!(
            "UPDATE accounts SET name = 'Eve' || {line_break} || 'Bcc: victim@example.com' WHERE id = '{acc}'"
        ))
        .await;
    app.create_account("next@example.com", "EUR", 0).await;
    let sent = mailer(&app, smtp_to(&sink))
        .run_once(app.clock.now())
        .await
        .unwrap();
    assert_eq!(sent, 2);
    let got = sink.received();
    assert!(got.iter().all(|m| m.to.len() == 1), "no smuggled recipient");
    let first = String::from_utf8_lossy(&got[0].data).into_owned();
    assert!(!first.contains("\r\nBcc:"), "{first}");
    assert!(
        read(&got[0].data)
            .text
            .contains("Hello Eve Bcc: victim@example.com,")
    );
    assert_eq!(read(&got[1].data).to, "next@example.com");
}

/// A stop does not wait for a backlog the rate limit spreads out: the
/// mailer leaves between messages, and what it did not send stays to send.
#[tokio::test]
async fn a_stop_does_not_wait_for_the_mail_backlog() {
    let app = TestApp::new().await;
    for i in 0..10 {
        app.create_account(&format!("backlog-{i}@example.com"), "EUR", 0)
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::new(
        app.store().clone(),
        Templates::shared_builtin(),
        EmailConfig {
            // One a minute: the backlog takes ten minutes to send.
            per_minute: 1,
            ..email_config()
        },
        company(),
        Arc::new(bursar::notify::email::FileTransport(dir.path().into())),
        Some(app.secrets.clone()),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let clock: bursar::clock::SharedClock = app.clock.clone();
    let running = mailer.spawn(clock, stopped);
    let files = || std::fs::read_dir(dir.path()).unwrap().count();
    while files() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the mailer stops without sending the backlog")
        .unwrap();
    assert!(files() < 10, "it left before the backlog was sent");
    assert!(
        app.db
            .count("SELECT COUNT(*) FROM notifications WHERE status = 'pending'")
            .await
            > 0,
        "what it did not send is still to send"
    );
}
