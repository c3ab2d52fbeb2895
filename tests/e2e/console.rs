//! The web console in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver. One browser session serves
//! every scenario, run one after another in one test; each starts from no
//! cookies. Screenshots of the pages go to `target/console-screenshots/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bursar::accounts::Role;
use bursar::clock::Clock;
use bursar::console::auth;
use bursar::services::OperationKind;
use bursar::services::module::{ModuleError, ModuleOutcome};
use bursar_tests::TestApp;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// chromedriver on a free port; killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn browser() -> (Driver, Client) {
    let driver_bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect(
            "chromedriver is missing: the console tests need Debian's `chromium` and \
             `chromium-driver` (apt-get install chromium chromium-driver; .ci/run does)",
        );
    let port = free_port();
    let child = Command::new(driver_bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver { child, port };
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]}),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        let attempt = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await;
        match attempt {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start a Chromium session: {e}"),
        }
    };
    (driver, client)
}

/// Serves the app over TCP, as `bursar serve` does.
async fn serve(app: &TestApp) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    format!("http://{addr}")
}

fn shots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn fill(c: &Client, css: &str, text: &str) {
    let field = c
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// Clicks something that does not load a page (a checkbox).
async fn tick(c: &Client, css: &str) {
    find(c, css).await.click().await.unwrap();
}

/// Clicks a link or a submit button and waits for the next page.
async fn click(c: &Client, css: &str) {
    let old = c.find(Locator::Css("html")).await.unwrap();
    find(c, css).await.click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // The old document's root goes stale once the new page replaced it.
    while old.tag_name().await.is_ok() {
        assert!(Instant::now() < deadline, "clicking {css} loaded no page");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The element, or a panic that shows where the browser is and what it shows.
async fn find(c: &Client, css: &str) -> fantoccini::elements::Element {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e,
        Err(e) => {
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let page = c.source().await.unwrap_or_default();
            panic!("{css} not found on {url}: {e}\n{page}");
        }
    }
}

async fn text(c: &Client, css: &str) -> String {
    find(c, css).await.text().await.unwrap()
}

async fn value(c: &Client, css: &str) -> String {
    find(c, css)
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn plan_spec(app: &TestApp, plan: &str) -> serde_json::Value {
    let text = app
        .db
        .text(&format!("SELECT spec FROM plans WHERE id = '{plan}'"))
        .await;
    serde_json::from_str(&text).unwrap()
}

async fn path(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_owned()
}

/// Asserts the browser is on `want`, showing the page when it is not.
async fn expect_path(c: &Client, want: &str) {
    let at = path(c).await;
    if at != want {
        let page = c.source().await.unwrap_or_default();
        panic!("expected to be on {want}, on {at}:\n{page}");
    }
}

async fn log_in(c: &Client, base: &str, page: &str, email: &str, password: &str) {
    c.goto(&format!("{base}{page}")).await.unwrap();
    fill(c, "#email", email).await;
    fill(c, "#password", password).await;
    click(c, "button[type=submit]").await;
}

/// The browser's session cookie, to replay requests outside the browser.
async fn cookie(c: &Client, name: &str) -> String {
    c.get_named_cookie(name).await.unwrap().value().to_owned()
}

/// The value of the first hidden field `name` on a page.
fn form_field(page: &str, name: &str) -> String {
    page.split(&format!("name=\"{name}\" value=\""))
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no field {name}"))
        .to_owned()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

const CUSTOMER_PASSWORD: &str = "correct horse battery";
const STAFF_PASSWORD: &str = "staff password 123";

#[tokio::test]
async fn the_console_in_a_real_browser() {
    let bank: bursar::plugins::instances::PluginConfig = serde_json::from_value(json!({
        "name": "bank", "kind": "gateway", "component": "builtin:bank-transfer",
        "settings": {"beneficiary": "Hosting Ltd", "iban": "DE02120300000000202051", "bic": "BYLADEM1001"},
    }))
    .unwrap();
    // A DCImanager 6 (the simulator) behind the reference module, with two
    // operating systems and a script customers may order.
    let fixture = crate::dcimanager6::fixture(
        2,
        &format!(
            "{}\n[[os]]\nid = 5\nname = \"Ubuntu 24.04\"\n",
            crate::dcimanager6::RACK_POOL
        ),
    );
    let admin_login = fixture.admin.clone();
    let sim = dcimanager6_sim::spawn(fixture, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator");
    let dci: bursar::plugins::instances::PluginConfig = serde_json::from_value(json!({
        "name": "dci", "kind": "processing", "component": "builtin:dcimanager6",
        "allowed_hosts": [sim.addr.to_string()], "timeout_ms": 20_000,
        "settings": {
            "url": sim.url(), "email": admin_login.email, "password": admin_login.password,
            "poll_ms": "100", "retry_budget_ms": "5000", "domain_template": "@ID@.lab.test",
        },
    }))
    .unwrap();
    let app = TestApp::with_plugins(&[bank, dci]).await;
    let base = serve(&app).await;
    let (_driver, c) = browser().await;

    // 1. A customer signs up; an accountant credits the account; the
    //    customer sees the money, orders, sees the service active and
    //    reveals its password.
    c.goto(&format!("{base}/signup")).await.unwrap();
    shot(&c, "signup").await;
    fill(&c, "#name", "Ann Example").await;
    fill(&c, "#email", "ann@example.com").await;
    fill(&c, "#password", CUSTOMER_PASSWORD).await;
    fill(&c, "#country", "DE").await;
    click(&c, "button[type=submit]").await;
    expect_path(&c, "/").await;
    assert_eq!(text(&c, "#balance").await, "€0.00");

    // Top up by bank transfer: the instructions carry the reference.
    click(&c, "a[href='/payments/new']").await;
    fill(&c, "#amount", "50.00").await;
    click(&c, "#pay").await;
    assert!(path(&c).await.starts_with("/payments/pay_"));
    let instructions = text(&c, "#instructions").await;
    assert!(
        instructions.contains("DE02120300000000202051"),
        "{instructions}"
    );
    assert_eq!(text(&c, "#status").await, "pending");
    shot(&c, "top-up").await;

    // A staff accountant marks it paid.
    let accountant = auth::create_staff(
        app.store(),
        &app.secrets,
        "acc@example.com",
        Role::Accountant,
        Some(STAFF_PASSWORD.into()),
        false,
        app.clock.now(),
    )
    .await
    .unwrap();
    log_in(&c, &base, "/staff/login", &accountant.email, STAFF_PASSWORD).await;
    expect_path(&c, "/staff").await;
    c.goto(&format!("{base}/staff/payments")).await.unwrap();
    fill(&c, "#payments .reference", "BANK-REF-0042").await;
    click(&c, "#payments .mark-paid").await;
    assert_eq!(text(&c, "#payments tbody .status-cell").await, "paid");
    shot(&c, "staff-payments").await;
    c.goto(&format!("{base}/staff/accounts?q=ann"))
        .await
        .unwrap();
    click(&c, "#accounts tbody a").await;
    let account_id = path(&c).await.rsplit('/').next().unwrap().to_owned();
    assert_eq!(text(&c, "#balance").await, "€50.00");
    // A credit with a reason, and a debit taking it back.
    for (kind, amount, balance) in [("credit", "5.00", "€55.00"), ("debit", "5.00", "€50.00")] {
        c.find(Locator::Css("#kind"))
            .await
            .unwrap()
            .select_by_value(kind)
            .await
            .unwrap();
        fill(&c, "#amount", amount).await;
        fill(&c, "#reason", "goodwill, then corrected").await;
        click(&c, "#adjust").await;
        assert_eq!(text(&c, "#balance").await, balance);
    }
    shot(&c, "staff-account").await;
    c.goto(&format!("{base}/staff")).await.unwrap();
    shot(&c, "staff-dashboard").await;

    // The customer orders from the catalog: an add-on, the price preview,
    // then the order, paid from the balance.
    let plan = app
        .create_plan(json!({
            "name": "VPS S", "product_type": "vps", "module": "test",
            "prices": [{"period": "1m", "currency": "EUR", "amount": 1200}],
            "addons": [{"kind": "boolean", "code": "backup", "name": "Daily backup",
                        "prices": [{"period": "1m", "currency": "EUR", "amount": 300}]}],
        }))
        .await;
    app.module.push(
        OperationKind::Open,
        false,
        Ok(ModuleOutcome::Done {
            params: vec![("hostname".into(), "ann-1.example.net".into())],
            secret_params: vec![("root_password".into(), "Pa55-in-the-browser".into())],
        }),
    );
    c.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(text(&c, "#balance").await, "€50.00");
    click(&c, "a[href='/order']").await;
    click(&c, &format!("a[href='/order/{plan}']")).await;
    tick(&c, "#addon-backup").await;
    click(&c, "#preview").await;
    assert_eq!(
        text(&c, "#total").await,
        "€15.00",
        "the quote: plan and add-on"
    );
    shot(&c, "order").await;
    click(&c, "#place").await;
    let service_id = path(&c).await.rsplit('/').next().unwrap().to_owned();
    assert!(service_id.starts_with("svc_"), "{service_id}");
    assert_eq!(text(&c, "#status").await, "opening");
    assert!(text(&c, "#progress").await.contains("waiting"));
    app.run_operations().await;
    c.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(text(&c, "#balance").await, "€35.00");
    assert!(text(&c, "#services").await.contains("ann-1.example.net"));
    assert!(text(&c, "#invoices").await.contains("invoice"));
    shot(&c, "dashboard").await;
    click(&c, "#services tbody a").await;
    assert_eq!(text(&c, "#status").await, "active");
    assert!(!c.source().await.unwrap().contains("Pa55-in-the-browser"));
    click(&c, "#reveal").await;
    assert!(
        text(&c, "#credentials")
            .await
            .contains("Pa55-in-the-browser")
    );
    shot(&c, "service").await;
    // The invoice, printable, from the dashboard.
    c.goto(&format!("{base}/")).await.unwrap();
    let number = text(&c, "#invoices tbody a").await;
    assert!(number.starts_with("INV-"), "{number}");
    click(&c, "#invoices tbody a").await;
    assert!(c.source().await.unwrap().contains(&number));

    // Forms without their CSRF token order nothing and reveal nothing.
    let services_before = app.db.count("SELECT COUNT(*) FROM services").await;
    let session = cookie(&c, auth::CUSTOMER_COOKIE).await;
    for (path, form) in [
        (
            format!("/order/{plan}"),
            vec![
                ("period", "1m"),
                ("request_id", "c".repeat(64).leak() as &str),
            ],
        ),
        (format!("/services/{service_id}/credentials"), vec![]),
        (
            "/payments/new".to_owned(),
            vec![("amount", "10"), ("gateway", "bank")],
        ),
    ] {
        let r = http()
            .post(format!("{base}{path}"))
            .header("cookie", format!("{}={session}", auth::CUSTOMER_COOKIE))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert!(!r.text().await.unwrap().contains("Pa55-in-the-browser"));
    }
    assert_eq!(
        app.db.count("SELECT COUNT(*) FROM services").await,
        services_before
    );

    // A hostile customer with a valid token: an unsold period, a negative
    // or sub-cent top-up, an unknown gateway, an archived plan. Each is
    // refused and nothing is ordered, charged or created.
    let page = http()
        .get(format!("{base}/order/{plan}"))
        .header("cookie", format!("{}={session}", auth::CUSTOMER_COOKIE))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = form_field(&page, "csrf");
    let balance_before = app.balance(&account_id).await;
    let payments_before = app.db.count("SELECT COUNT(*) FROM payments").await;
    let archived = app
        .create_plan(
            json!({"name": "Old", "product_type": "vps", "module": "test",
            "prices": [{"period": "1m", "currency": "EUR", "amount": 1}]}),
        )
        .await;
    app.post(
        &format!("/api/v1/plans/{archived}/archive"),
        bursar_tests::ADMIN_KEY,
        json!({}),
    )
    .await;
    for (path, fields, status) in [
        (format!("/order/{plan}"), vec![("period", "36m")], 422),
        (format!("/order/{archived}"), vec![("period", "1m")], 404),
        (
            "/payments/new".to_owned(),
            vec![("amount", "-5"), ("gateway", "bank")],
            422,
        ),
        (
            "/payments/new".to_owned(),
            vec![("amount", "0.001"), ("gateway", "bank")],
            422,
        ),
        (
            "/payments/new".to_owned(),
            vec![("amount", "10"), ("gateway", "nope")],
            422,
        ),
    ] {
        let rid = auth::random_token();
        let mut form = fields.clone();
        form.push(("csrf", csrf.as_str()));
        form.push(("request_id", rid.as_str()));
        let r = http()
            .post(format!("{base}{path}"))
            .header("cookie", format!("{}={session}", auth::CUSTOMER_COOKIE))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path} {fields:?}");
    }
    assert_eq!(app.balance(&account_id).await, balance_before);
    assert_eq!(
        app.db.count("SELECT COUNT(*) FROM services").await,
        services_before
    );
    assert_eq!(
        app.db.count("SELECT COUNT(*) FROM payments").await,
        payments_before
    );

    // 3. A form without its CSRF token is refused and changes nothing.
    let session = cookie(&c, auth::CUSTOMER_COOKIE).await;
    let r = http()
        .post(format!("{base}/logout"))
        .header("cookie", format!("{}={session}", auth::CUSTOMER_COOKIE))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http()
        .get(format!("{base}/"))
        .header("cookie", format!("{}={session}", auth::CUSTOMER_COOKIE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the session survived the forged logout");
    // The staff credit form without its token moves no money. (The staff
    // cookie is only visible under /staff.)
    c.goto(&format!("{base}/staff")).await.unwrap();
    let staff_session = cookie(&c, auth::STAFF_COOKIE).await;
    let r = http()
        .post(format!("{base}/staff/accounts/{account_id}/credit"))
        .header("cookie", format!("{}={staff_session}", auth::STAFF_COOKIE))
        .form(&[
            ("kind", "credit"),
            ("amount", "1000"),
            ("reason", "x"),
            ("request_id", &"a".repeat(64)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(app.balance(&account_id).await, 3500);

    // 4. A customer reaches neither another customer's pages nor /staff.
    let other = app.create_account("bob@example.com", "EUR", 0).await;
    app.credit(&other, 5000, "EUR").await;
    app.module.push(
        OperationKind::Open,
        false,
        Ok(ModuleOutcome::Done {
            params: vec![],
            secret_params: vec![("root_password".into(), "Bobs-Secret".into())],
        }),
    );
    let bobs = app.order(&other, &plan, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    c.delete_all_cookies().await.unwrap();
    log_in(&c, &base, "/login", "ann@example.com", CUSTOMER_PASSWORD).await;
    expect_path(&c, "/").await;
    c.goto(&format!("{base}/services/{bobs}")).await.unwrap();
    assert_eq!(text(&c, "h1").await, "Not found");
    let bobs_invoice = app.invoices(Some(&other)).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.goto(&format!("{base}/invoices/{bobs_invoice}"))
        .await
        .unwrap();
    assert_eq!(text(&c, "h1").await, "Not found");
    let session = cookie(&c, auth::CUSTOMER_COOKIE).await;
    let csrf_page = http()
        .get(format!("{base}/services/{service_id}"))
        .header("cookie", format!("{}={session}", auth::CUSTOMER_COOKIE))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = form_field(&csrf_page, "csrf");
    let r = http()
        .post(format!("{base}/services/{bobs}/credentials"))
        .header("cookie", format!("{}={session}", auth::CUSTOMER_COOKIE))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.text().await.unwrap().contains("Bobs-Secret"));
    c.goto(&format!("{base}/staff")).await.unwrap();
    assert_eq!(path(&c).await, "/staff/login", "no staff session");
    // A customer's password is not a staff login.
    log_in(
        &c,
        &base,
        "/staff/login",
        "ann@example.com",
        CUSTOMER_PASSWORD,
    )
    .await;
    expect_path(&c, "/staff/login").await;
    assert!(
        text(&c, "#error")
            .await
            .contains("Wrong e-mail or password")
    );

    // A support user sees accounts but cannot move money.
    let support = auth::create_staff(
        app.store(),
        &app.secrets,
        "help@example.com",
        Role::Support,
        Some(STAFF_PASSWORD.into()),
        false,
        app.clock.now(),
    )
    .await
    .unwrap();
    log_in(&c, &base, "/staff/login", &support.email, STAFF_PASSWORD).await;
    c.goto(&format!("{base}/staff/accounts/{account_id}"))
        .await
        .unwrap();
    assert_eq!(text(&c, "#balance").await, "€35.00");
    assert!(
        c.find(Locator::Css("#adjust")).await.is_err(),
        "no credit form for support"
    );
    let support_session = cookie(&c, auth::STAFF_COOKIE).await; // on /staff/accounts/…
    let page = http()
        .get(format!("{base}/staff"))
        .header(
            "cookie",
            format!("{}={support_session}", auth::STAFF_COOKIE),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = form_field(&page, "csrf");
    let r = http()
        .post(format!("{base}/staff/accounts/{account_id}/credit"))
        .header(
            "cookie",
            format!("{}={support_session}", auth::STAFF_COOKIE),
        )
        .form(&[
            ("csrf", csrf.as_str()),
            ("kind", "credit"),
            ("amount", "1000"),
            ("reason", "support tries"),
            ("request_id", &"b".repeat(64)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(app.balance(&account_id).await, 3500);

    // 3. Logging out ends the session on the server, not only the cookie.
    c.delete_all_cookies().await.unwrap();
    log_in(&c, &base, "/login", "ann@example.com", CUSTOMER_PASSWORD).await;
    let session = cookie(&c, auth::CUSTOMER_COOKIE).await;
    click(&c, "header form button").await;
    expect_path(&c, "/login").await;
    c.goto(&format!("{base}/")).await.unwrap();
    expect_path(&c, "/login").await;
    let r = http()
        .get(format!("{base}/"))
        .header("cookie", format!("{}={session}", auth::CUSTOMER_COOKIE))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        303,
        "the old cookie no longer opens the dashboard"
    );
    shot(&c, "login").await;

    // 3. Wrong passwords are throttled: after five, even the right one is
    //    refused until the window passes.
    for _ in 0..5 {
        log_in(&c, &base, "/login", "ann@example.com", "wrong password!").await;
        assert!(
            text(&c, "#error")
                .await
                .contains("Wrong e-mail or password")
        );
    }
    log_in(&c, &base, "/login", "ann@example.com", CUSTOMER_PASSWORD).await;
    expect_path(&c, "/login").await;
    assert!(
        text(&c, "#error")
            .await
            .contains("Too many failed attempts")
    );
    app.clock.advance(chrono::Duration::minutes(16));
    log_in(&c, &base, "/login", "ann@example.com", CUSTOMER_PASSWORD).await;
    assert_eq!(path(&c).await, "/", "the window passed");

    // 3. TOTP is required for a staff admin.
    let admin = auth::create_staff(
        app.store(),
        &app.secrets,
        "boss@example.com",
        Role::Admin,
        Some(STAFF_PASSWORD.into()),
        false,
        app.clock.now(),
    )
    .await
    .unwrap();
    let secret = admin.totp_secret.clone().expect("an admin always has TOTP");
    log_in(&c, &base, "/staff/login", &admin.email, STAFF_PASSWORD).await;
    expect_path(&c, "/staff/login").await;
    assert!(text(&c, "#error").await.contains("authenticator"));
    fill(&c, "#password", STAFF_PASSWORD).await;
    fill(&c, "#code", "000000").await;
    // A wrong code (000000 is right once in a million; move on if so).
    if auth::totp_code(&secret, app.clock.now()).as_deref() != Some("000000") {
        click(&c, "button[type=submit]").await;
        expect_path(&c, "/staff/login").await;
        assert!(text(&c, "#error").await.contains("not right"));
    }
    let code = auth::totp_code(&secret, app.clock.now()).unwrap();
    fill(&c, "#password", STAFF_PASSWORD).await;
    fill(&c, "#code", &code).await;
    click(&c, "button[type=submit]").await;
    expect_path(&c, "/staff").await;
    // A code is good once: seen over a shoulder, it logs nobody in.
    c.delete_all_cookies().await.unwrap();
    log_in(&c, &base, "/staff/login", &admin.email, STAFF_PASSWORD).await;
    fill(&c, "#password", STAFF_PASSWORD).await;
    fill(&c, "#code", &code).await;
    click(&c, "button[type=submit]").await;
    expect_path(&c, "/staff/login").await;
    assert!(text(&c, "#error").await.contains("not right"));

    // 2. An install fails; it waits in the manual queue with the module's
    //    error; support retries it and the service becomes active.
    app.module.push(
        OperationKind::Open,
        false,
        Err(ModuleError::Rejected("no free server in rack 7".into())),
    );
    app.module.push(
        OperationKind::Open,
        false,
        Ok(ModuleOutcome::Done {
            params: vec![("hostname".into(), "ann-2.example.net".into())],
            secret_params: vec![],
        }),
    );
    let second = app.order(&account_id, &plan, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    assert_eq!(app.service(&second).await["status"], "opening");
    c.delete_all_cookies().await.unwrap();
    log_in(&c, &base, "/staff/login", &support.email, STAFF_PASSWORD).await;
    c.goto(&format!("{base}/staff/operations")).await.unwrap();
    let queue = text(&c, "main").await;
    assert!(queue.contains(&second), "{queue}");
    assert!(queue.contains("no free server in rack 7"), "{queue}");
    shot(&c, "staff-manual-queue").await;
    click(&c, ".operation .retry").await;
    expect_path(&c, "/staff/operations").await;
    app.run_operations().await;
    assert_eq!(app.service(&second).await["status"], "active");
    c.goto(&format!("{base}/staff/operations")).await.unwrap();
    assert!(text(&c, "#empty").await.contains("Nothing is waiting"));

    // The customer prolongs the service — once, though the form is sent
    // twice — and closes it.
    c.delete_all_cookies().await.unwrap();
    log_in(&c, &base, "/login", "ann@example.com", CUSTOMER_PASSWORD).await;
    c.goto(&format!("{base}/services/{second}")).await.unwrap();
    let before = app.balance(&account_id).await;
    let paid_until = app.service(&second).await["paid_until"].clone();
    let page = c.source().await.unwrap();
    let (csrf, request_id) = (form_field(&page, "csrf"), form_field(&page, "request_id"));
    let session = cookie(&c, auth::CUSTOMER_COOKIE).await;
    for _ in 0..2 {
        let r = http()
            .post(format!("{base}/services/{second}/prolong"))
            .header("cookie", format!("{}={session}", auth::CUSTOMER_COOKIE))
            .form(&[
                ("csrf", csrf.as_str()),
                ("period", "1m"),
                ("request_id", request_id.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    }
    assert_eq!(
        app.balance(&account_id).await,
        before - 1200,
        "charged once"
    );
    assert_ne!(app.service(&second).await["paid_until"], paid_until);
    // Auto-renew off, from the service page.
    c.goto(&format!("{base}/services/{second}")).await.unwrap();
    assert!(text(&c, "#auto-renew").await.starts_with("yes"));
    click(&c, "#toggle-renew").await;
    assert_eq!(text(&c, "#auto-renew").await, "no");
    assert_eq!(app.service(&second).await["auto_renew"], false);
    // A plan change within the plan's change list: to a smaller plan, the
    // unused difference given back once the module has made the change.
    let smaller = app
        .create_plan(json!({
            "name": "VPS XS", "product_type": "vps", "module": "test",
            "prices": [{"period": "1m", "currency": "EUR", "amount": 600}],
            "addons": [{"kind": "boolean", "code": "backup", "name": "Daily backup",
                        "prices": [{"period": "1m", "currency": "EUR", "amount": 300}]}],
        }))
        .await;
    app.allow_change(&plan, &smaller).await;
    let before_change = app.balance(&account_id).await;
    c.goto(&format!("{base}/services/{second}")).await.unwrap();
    select(&c, "#change-plan-to", &smaller).await;
    click(&c, "#change-plan").await;
    expect_path(&c, &format!("/services/{second}")).await;
    app.run_operations().await;
    assert_eq!(app.service(&second).await["plan_id"], smaller.as_str());
    assert!(
        app.balance(&account_id).await > before_change,
        "the difference came back"
    );
    c.goto(&format!("{base}/services/{second}")).await.unwrap();
    click(&c, "#close").await;
    assert!(text(&c, "#message").await.contains("Tick the box"));
    c.goto(&format!("{base}/services/{second}")).await.unwrap();
    tick(&c, "#close-confirm").await;
    click(&c, "#close").await;
    assert_eq!(text(&c, "#status").await, "closing");
    app.run_operations().await;
    assert_eq!(app.service(&second).await["status"], "closed");

    // API keys self-service: made here (the secret shown once), it works
    // on the API for this account only; revoked here, it stops at once.
    click(&c, "a[href='/keys']").await;
    fill(&c, "#name", "my panel").await;
    click(&c, "#create-key").await;
    let api_key = text(&c, "#secret").await;
    let balance = app
        .get(&format!("/api/v1/accounts/{account_id}/balance"), &api_key)
        .await;
    assert_eq!(balance.status, 200, "{}", balance.text);
    let other_balance = app
        .get(&format!("/api/v1/accounts/{other}/balance"), &api_key)
        .await;
    assert_eq!(other_balance.status, 403);
    c.goto(&format!("{base}/keys")).await.unwrap();
    assert!(
        !c.source().await.unwrap().contains(&api_key),
        "shown once only"
    );
    click(&c, "#keys .revoke").await;
    let after = app
        .get(&format!("/api/v1/accounts/{account_id}/balance"), &api_key)
        .await;
    assert_eq!(after.status, 401);

    // A forgotten password: the page says the same for any address, the
    // mail carries a link that sets a new one once and ends old sessions.
    c.delete_all_cookies().await.unwrap();
    for email in ["nobody@example.com", "ann@example.com"] {
        c.goto(&format!("{base}/login")).await.unwrap();
        click(&c, "#forgot").await;
        fill(&c, "#email", email).await;
        click(&c, "button[type=submit]").await;
        assert!(
            text(&c, "#sent")
                .await
                .contains("If this address has an account")
        );
    }
    assert_eq!(
        app.db
            .count("SELECT COUNT(*) FROM notifications WHERE kind = 'password_reset'")
            .await,
        1,
        "only the customer's address gets a link"
    );
    let data: serde_json::Value = serde_json::from_str(
        &app.db
            .text("SELECT data FROM notifications WHERE kind = 'password_reset'")
            .await,
    )
    .unwrap();
    let link = data["reset"]["url"].as_str().unwrap();
    let reset_path = format!("/password/reset/{}", link.rsplit('/').next().unwrap());
    const NEW_PASSWORD: &str = "a brand new passphrase";
    c.goto(&format!("{base}{reset_path}")).await.unwrap();
    fill(&c, "#password", NEW_PASSWORD).await;
    click(&c, "button[type=submit]").await;
    expect_path(&c, "/login").await;
    log_in(&c, &base, "/login", "ann@example.com", CUSTOMER_PASSWORD).await;
    assert!(
        text(&c, "#error")
            .await
            .contains("Wrong e-mail or password")
    );
    log_in(&c, &base, "/login", "ann@example.com", NEW_PASSWORD).await;
    expect_path(&c, "/").await;
    c.goto(&format!("{base}{reset_path}")).await.unwrap();
    fill(&c, "#password", "yet another password").await;
    click(&c, "button[type=submit]").await;
    assert!(
        text(&c, "#error")
            .await
            .contains("used already or has expired")
    );
    // Staff can issue a link too (support may: it edits profiles).
    c.delete_all_cookies().await.unwrap();
    log_in(&c, &base, "/staff/login", &support.email, STAFF_PASSWORD).await;
    c.goto(&format!("{base}/staff/accounts/{account_id}"))
        .await
        .unwrap();
    click(&c, "#reset-link").await;
    let notice = text(&c, "#error").await;
    assert!(notice.contains("/password/reset/"), "{notice}");
    let staff_path = format!(
        "/password/reset/{}",
        notice.rsplit('/').next().unwrap().trim()
    );
    c.delete_all_cookies().await.unwrap();
    c.goto(&format!("{base}{staff_path}")).await.unwrap();
    fill(&c, "#password", CUSTOMER_PASSWORD).await;
    click(&c, "button[type=submit]").await;
    expect_path(&c, "/login").await;

    // A blocked account's people are out, as its API keys are.
    c.delete_all_cookies().await.unwrap();
    log_in(&c, &base, "/login", "ann@example.com", CUSTOMER_PASSWORD).await;
    expect_path(&c, "/").await;
    let r = app
        .request(
            axum::http::Method::PATCH,
            &format!("/api/v1/accounts/{account_id}"),
            Some(bursar_tests::ADMIN_KEY),
            Some(json!({"status": "blocked"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    c.goto(&format!("{base}/")).await.unwrap();
    expect_path(&c, "/login").await;
    log_in(&c, &base, "/login", "ann@example.com", CUSTOMER_PASSWORD).await;
    expect_path(&c, "/login").await;
    assert!(text(&c, "#error").await.contains("blocked or closed"));
    c.delete_all_cookies().await.unwrap();
    app.clock.advance(chrono::Duration::seconds(30));
    log_in(&c, &base, "/staff/login", &admin.email, STAFF_PASSWORD).await;
    let code = auth::totp_code(&secret, app.clock.now()).unwrap();
    fill(&c, "#password", STAFF_PASSWORD).await;
    fill(&c, "#code", &code).await;
    click(&c, "button[type=submit]").await;
    expect_path(&c, "/staff").await;

    dedicated_server_from_the_catalog(
        &app,
        &c,
        &base,
        &sim,
        &accountant.email,
        &support.email,
        &admin.email,
        &secret,
    )
    .await;

    // Readable on a phone: the dashboard at 375 px.
    c.set_window_size(375, 800).await.unwrap();
    c.goto(&format!("{base}/staff")).await.unwrap();
    shot(&c, "staff-dashboard-375").await;

    c.close().await.unwrap();
    app.assert_ledger_clean().await;
}

/// Logs a staff member in, with the TOTP code when they have a secret.
async fn staff_log_in(c: &Client, base: &str, app: &TestApp, email: &str, totp: Option<&str>) {
    c.delete_all_cookies().await.unwrap();
    log_in(c, base, "/staff/login", email, STAFF_PASSWORD).await;
    if let Some(secret) = totp {
        // Each code logs in once: the next login waits for the next one.
        app.clock.advance(chrono::Duration::seconds(30));
        let code = auth::totp_code(secret, app.clock.now()).unwrap();
        fill(c, "#password", STAFF_PASSWORD).await;
        fill(c, "#code", &code).await;
        click(c, "button[type=submit]").await;
    }
    expect_path(c, "/staff").await;
}

async fn select(c: &Client, css: &str, value: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .select_by_value(value)
        .await
        .unwrap();
}

/// Runs operations, moving the clock on, until the service leaves `from`.
async fn settle(app: &TestApp, id: &str, from: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        app.run_operations().await;
        let service = app.service(id).await;
        if service["status"] != from || Instant::now() > deadline {
            return service;
        }
        app.clock.advance(chrono::Duration::seconds(2));
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// A POST with a staff session's cookie and the page's CSRF token.
async fn staff_post(
    base: &str,
    session: &str,
    page: &str,
    action: &str,
    form: &[(&str, &str)],
) -> u16 {
    let csrf = form_field(page, "csrf");
    let mut fields = vec![("csrf", csrf.as_str())];
    fields.extend_from_slice(form);
    http()
        .post(format!("{base}{action}"))
        .header("cookie", format!("{}={session}", auth::STAFF_COOKIE))
        .form(&fields)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Scenario 1 on a real module: an admin builds a plan from DCImanager 6's
/// own catalog; a customer tops up by bank transfer, an accountant marks it
/// paid, the customer orders a server with an OS template and a script,
/// watches it become active and reveals its root password; the invoice is
/// in both consoles. Then the rest of the staff console: services with
/// filters, suspend and resume with the timeline, a refund (not by
/// support), staff-only fields, tax rules, plugin health, staff logins and
/// the dashboard's range.
#[allow(clippy::too_many_arguments)]
async fn dedicated_server_from_the_catalog(
    app: &TestApp,
    c: &Client,
    base: &str,
    sim: &dcimanager6_sim::Running,
    accountant: &str,
    support: &str,
    admin: &str,
    admin_totp: &str,
) {
    // The admin builds the plan from the module's catalog: its
    // configuration, both OS templates (the customer picks), the script
    // as a paid add-on.
    staff_log_in(c, base, app, admin, Some(admin_totp)).await;
    c.goto(&format!("{base}/staff/plans")).await.unwrap();
    select(c, "#np-module", "dci").await;
    fill(c, "#np-currencies", "EUR").await;
    click(c, "#np-next").await;
    let form = text(c, "main").await;
    assert!(
        form.contains("X1 (Lab)"),
        "the catalog's configuration: {form}"
    );
    assert!(
        form.contains("Ubuntu 24.04") && form.contains("Docker"),
        "{form}"
    );
    assert!(
        !form.contains("Firmware flash"),
        "admin-only scripts are not offered"
    );
    shot(c, "staff-plan-editor").await;
    fill(c, "#p-name", "Dedicated X1").await;
    select(c, "#p-type", "dedicated_server").await;
    fill(c, "#price_1m_EUR", "99.00").await;
    tick(c, "#os-4").await;
    tick(c, "#os-5").await;
    tick(c, "#addon-script-1").await;
    fill(c, "#addon_price_script-1_EUR", "2.00").await;
    click(c, "#save-plan").await;
    expect_path(c, "/staff/plans").await;
    assert!(text(c, "#plans").await.contains("Dedicated X1"));
    let plan = app
        .db
        .text("SELECT id FROM plans WHERE name = 'Dedicated X1'")
        .await;
    let spec = plan_spec(app, &plan).await;
    assert_eq!(spec["module_settings"]["configuration"], "X1");
    assert_eq!(spec["module_settings"]["location"], "1");
    assert_eq!(spec["addons"][0]["code"], "os", "{spec}");
    assert_eq!(spec["addons"][1]["code"], "script-1", "{spec}");

    // The editor opens the plan as it was saved, and saved unchanged it
    // stays that plan; a stale form (someone saved in between) is refused.
    c.goto(&format!("{base}/staff/plans")).await.unwrap();
    click(c, &format!("#edit-{plan}")).await;
    let stale = c.source().await.unwrap();
    assert_eq!(value(c, "#p-name").await, "Dedicated X1");
    assert_eq!(value(c, "#price_1m_EUR").await, "99.00");
    assert_eq!(value(c, "#addon_price_script-1_EUR").await, "2.00");
    for ticked in ["#os-4", "#os-5", "#addon-script-1", "#cfg-1"] {
        assert!(
            find(c, ticked).await.is_selected().await.unwrap(),
            "{ticked}"
        );
    }
    shot(c, "staff-plan-edit").await;
    click(c, "#save-plan").await;
    expect_path(c, "/staff/plans").await;
    assert_eq!(plan_spec(app, &plan).await, spec, "saved unchanged");
    let status = staff_post(
        base,
        &cookie(c, auth::STAFF_COOKIE).await,
        &stale,
        &format!("/staff/plans/{plan}"),
        &[
            ("request_id", &form_field(&stale, "request_id")),
            ("updated_at", &form_field(&stale, "updated_at")),
            ("module", "dci"),
            ("currencies", "EUR"),
            ("name", "Stale"),
            ("product_type", "dedicated_server"),
            ("price_1m_EUR", "1.00"),
        ],
    )
    .await;
    assert_eq!(status, 409, "a form older than the plan's last save");
    assert_eq!(plan_spec(app, &plan).await, spec);

    // A counted add-on: extra IPv4 addresses at €3.00 a month each.
    click(c, &format!("#edit-{plan}")).await;
    fill(c, "#count_code_0", "extra_ips").await;
    fill(c, "#count_name_0", "Extra IPv4 addresses").await;
    fill(c, "#count_max_0", "4").await;
    fill(c, "#count_price_0_EUR", "3.00").await;
    click(c, "#save-plan").await;
    expect_path(c, "/staff/plans").await;
    let spec = plan_spec(app, &plan).await;
    assert_eq!(
        spec["addons"][2],
        json!({"kind": "integer", "code": "extra_ips", "name": "Extra IPv4 addresses",
               "min": 0, "max": 4, "included": 0,
               "unit_prices": [{"period": "1m", "currency": "EUR", "amount": 300}]}),
        "{spec}"
    );

    // A new customer tops up by bank transfer; an accountant marks it paid.
    c.delete_all_cookies().await.unwrap();
    c.goto(&format!("{base}/signup")).await.unwrap();
    fill(c, "#name", "Cara Servers").await;
    fill(c, "#email", "cara@example.com").await;
    fill(c, "#password", CUSTOMER_PASSWORD).await;
    fill(c, "#country", "DE").await;
    click(c, "button[type=submit]").await;
    expect_path(c, "/").await;
    click(c, "a[href='/payments/new']").await;
    fill(c, "#amount", "150.00").await;
    click(c, "#pay").await;
    let payment = path(c).await.rsplit('/').next().unwrap().to_owned();
    assert!(payment.starts_with("pay_"), "{payment}");
    let bob = app
        .db
        .text("SELECT id FROM accounts WHERE email = 'cara@example.com'")
        .await;
    staff_log_in(c, base, app, accountant, None).await;
    c.goto(&format!("{base}/staff/payments")).await.unwrap();
    fill(c, &format!("#pay-{payment} .reference"), "BANK-REF-0099").await;
    click(c, &format!("#pay-{payment} .mark-paid")).await;
    assert_eq!(app.balance(&bob).await, 15_000);

    // The customer orders the server: Ubuntu and the Docker script.
    c.delete_all_cookies().await.unwrap();
    log_in(c, base, "/login", "cara@example.com", CUSTOMER_PASSWORD).await;
    c.goto(&format!("{base}/order/{plan}")).await.unwrap();
    select(c, "#addon-os", "5").await;
    tick(c, "#addon-script-1").await;
    fill(c, "#addon-extra_ips", "1").await;
    click(c, "#preview").await;
    assert_eq!(
        text(c, "#total").await,
        "€104.00",
        "the server, the script and one more address"
    );
    click(c, "#place").await;
    let service = path(c).await.rsplit('/').next().unwrap().to_owned();
    assert!(service.starts_with("svc_"), "{service}");
    assert_eq!(text(c, "#status").await, "opening");
    assert!(
        c.find(Locator::Css("#progress")).await.is_ok(),
        "the install progress is shown"
    );
    let opened = settle(app, &service, "opening").await;
    assert_eq!(opened["status"], "active", "{opened}");
    assert_eq!(opened["params"]["os"], "Ubuntu 24.04");
    let ips = opened["params"]["ips"].as_str().unwrap_or_default();
    assert_eq!(
        ips.split(',').count(),
        2,
        "one address and one extra: {opened}"
    );
    let installs = sim.sim.snapshot()["installs"].clone();
    assert_eq!(installs[0]["os_template"], 5, "{installs}");
    assert_eq!(installs[0]["recipes"], json!([1]), "{installs}");
    c.goto(&format!("{base}/services/{service}")).await.unwrap();
    assert_eq!(text(c, "#status").await, "active");
    click(c, "#reveal").await;
    let root = installs[0]["password"].as_str().unwrap();
    assert!(
        text(c, "#credentials").await.contains(root),
        "the root password DCImanager installed with"
    );
    shot(c, "service-dedicated").await;
    let number = app
        .db
        .text(&format!(
            "SELECT number FROM invoices WHERE account_id = '{bob}' AND kind = 'invoice'"
        ))
        .await;
    c.goto(&format!("{base}/")).await.unwrap();
    assert!(
        text(c, "#invoices").await.contains(&number),
        "the invoice in the portal"
    );

    // The invoice in the staff console, its list and its page; the
    // account page shows it with the ledger, payments and events.
    staff_log_in(c, base, app, accountant, None).await;
    c.goto(&format!("{base}/staff/invoices")).await.unwrap();
    assert!(text(c, "#invoices").await.contains(&number));
    click(c, "#invoices a[href^='/staff/invoices/']").await;
    assert!(c.source().await.unwrap().contains(&number));
    c.goto(&format!("{base}/staff/accounts/{bob}"))
        .await
        .unwrap();
    assert!(text(c, "#account-invoices").await.contains(&number));
    assert!(text(c, "#account-payments").await.contains(&payment));
    let ledger = text(c, "#ledger").await;
    assert!(
        ledger.contains("€150.00") && ledger.contains("−€"),
        "{ledger}"
    );
    assert!(text(c, "#events").await.contains(&service));
    shot(c, "staff-account-full").await;

    // Staff-only fields: the accountant gives a credit limit.
    fill(c, "#b-limit", "25.00").await;
    click(c, "#save-billing").await;
    assert!(text(c, "#credit-limit").await.contains("25.00"));
    assert_eq!(
        app.db
            .count(&format!(
                "SELECT credit_limit FROM accounts WHERE id = '{bob}'"
            ))
            .await,
        2500
    );

    // A refund, by the accountant; the form sent twice refunds once.
    c.goto(&format!("{base}/staff/payments/{payment}"))
        .await
        .unwrap();
    let page = c.source().await.unwrap();
    let session = cookie(c, auth::STAFF_COOKIE).await;
    let request_id = form_field(&page, "request_id");
    for _ in 0..2 {
        let status = staff_post(
            base,
            &session,
            &page,
            &format!("/staff/payments/{payment}/refund"),
            &[
                ("amount", "10.00"),
                ("reason", "goodwill"),
                ("request_id", &request_id),
            ],
        )
        .await;
        assert_eq!(status, 303);
    }
    assert_eq!(
        app.balance(&bob).await,
        15_000 - 10_400 - 1_000,
        "refunded once"
    );
    c.goto(&format!("{base}/staff/payments/{payment}"))
        .await
        .unwrap();
    assert_eq!(text(c, "#refunded").await, "€10.00");
    shot(c, "staff-payment-refund").await;

    // Tax rules: the accountant adds one; a bad rate is refused.
    c.goto(&format!("{base}/staff/tax-rules")).await.unwrap();
    fill(c, "#t-country", "FR").await;
    fill(c, "#t-name", "TVA").await;
    fill(c, "#t-rate", "20,5").await;
    click(c, "#add-rule").await;
    assert!(text(c, "#error").await.contains("percentage"));
    fill(c, "#t-country", "FR").await;
    fill(c, "#t-name", "TVA").await;
    fill(c, "#t-rate", "20").await;
    click(c, "#add-rule").await;
    assert!(text(c, "#tax-rules").await.contains("20.00 %"));
    assert_eq!(
        app.db
            .count("SELECT rate_bp FROM tax_rules WHERE country = 'FR'")
            .await,
        2000
    );

    // 4. Support cannot refund: no form, and the POST is refused.
    staff_log_in(c, base, app, support, None).await;
    c.goto(&format!("{base}/staff/payments/{payment}"))
        .await
        .unwrap();
    assert!(
        c.find(Locator::Css("#refund")).await.is_err(),
        "no refund form for support"
    );
    let page = c.source().await.unwrap();
    let session = cookie(c, auth::STAFF_COOKIE).await;
    let status = staff_post(
        base,
        &session,
        &page,
        &format!("/staff/payments/{payment}/refund"),
        &[
            ("amount", "5.00"),
            ("reason", "support tries"),
            ("request_id", &"c".repeat(64)),
        ],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(app.balance(&bob).await, 3_600);
    c.goto(&format!("{base}/staff/accounts/{bob}"))
        .await
        .unwrap();
    assert!(
        c.find(Locator::Css("#billing")).await.is_err(),
        "support does not edit billing fields"
    );

    // Services: filtered by status and module; suspend with a reason,
    // resume; the timeline shows who did what.
    c.goto(&format!("{base}/staff/services?status=active&module=dci"))
        .await
        .unwrap();
    let listed = text(c, "#services").await;
    assert!(
        listed.contains(&service) && listed.contains("cara@example.com"),
        "{listed}"
    );
    c.goto(&format!("{base}/staff/services?status=closed&module=dci"))
        .await
        .unwrap();
    assert!(!text(c, "#services").await.contains(&service));
    c.goto(&format!("{base}/staff/services/{service}"))
        .await
        .unwrap();
    select(c, "#suspend-why", "abuse").await;
    click(c, "#suspend").await;
    assert_eq!(text(c, "#status").await, "suspended");
    assert!(text(c, "#suspend-reason").await.contains("abuse"));
    settle(app, &service, "").await;
    c.goto(&format!("{base}/staff/services/{service}"))
        .await
        .unwrap();
    click(c, "#resume").await;
    assert_eq!(text(c, "#status").await, "active");
    let timeline = text(c, "#timeline").await;
    assert!(
        timeline.contains("suspend") && timeline.contains("abuse"),
        "{timeline}"
    );
    assert!(
        timeline.contains("login:"),
        "staff actions carry their actor: {timeline}"
    );
    shot(c, "staff-service").await;
    assert!(
        c.find(Locator::Css("#prolong")).await.is_err(),
        "support may not prolong"
    );

    // Plugins: the DCImanager instance with its calls and a live check.
    staff_log_in(c, base, app, admin, Some(admin_totp)).await;
    c.goto(&format!("{base}/staff/plugins")).await.unwrap();
    let calls: u64 = text(c, "#plugin-dci .calls").await.parse().unwrap();
    assert!(calls >= 3, "open, poll, suspend, resume… counted: {calls}");
    click(c, "#plugin-dci .check").await;
    assert!(text(c, "#notice").await.contains("connection ok"));
    assert!(text(c, "#plugin-dci .health").await.starts_with("ok"));
    shot(c, "staff-plugins").await;

    // The admin prolongs beyond the balance: refused, nothing charged.
    c.goto(&format!("{base}/staff/services/{service}"))
        .await
        .unwrap();
    click(c, "#prolong").await;
    assert!(!text(c, "#error").await.is_empty());
    assert_eq!(app.balance(&bob).await, 3_600);

    // Staff logins: the admin makes a support login (its password shown
    // once), then disables it; it can no longer log in.
    c.goto(&format!("{base}/staff/users")).await.unwrap();
    fill(c, "#u-email", "night@example.com").await;
    select(c, "#u-role", "support").await;
    click(c, "#create-user").await;
    let password = text(c, "#new-password").await;
    assert!(password.len() >= 16, "{password}");
    let night = app
        .db
        .text("SELECT id FROM logins WHERE email = 'night@example.com'")
        .await;
    c.goto(&format!("{base}/staff/users")).await.unwrap();
    assert!(!c.source().await.unwrap().contains(&password), "shown once");
    click(c, &format!("#user-{night} .disable")).await;
    assert_eq!(text(c, &format!("#user-{night} .state")).await, "disabled");
    c.delete_all_cookies().await.unwrap();
    log_in(c, base, "/staff/login", "night@example.com", &password).await;
    expect_path(c, "/staff/login").await;
    assert!(text(c, "#error").await.contains("Wrong e-mail or password"));
    // Only admins manage staff.
    staff_log_in(c, base, app, support, None).await;
    let r = http()
        .get(format!("{base}/staff/users"))
        .header(
            "cookie",
            format!(
                "{}={}",
                auth::STAFF_COOKIE,
                cookie(c, auth::STAFF_COOKIE).await
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // The dashboard: this month's figures, and an empty range.
    staff_log_in(c, base, app, admin, Some(admin_totp)).await;
    let new_services: i64 = text(c, "#new-total").await.parse().unwrap();
    assert_eq!(
        new_services,
        app.db.count("SELECT COUNT(*) FROM services").await
    );
    let revenue = app
        .db
        .count(
            "SELECT CAST(COALESCE(SUM(CASE WHEN kind = 'invoice' THEN net
                                           WHEN payment_id IS NULL THEN -net ELSE 0 END), 0) AS BIGINT)
             FROM invoices WHERE kind <> 'receipt'",
        )
        .await;
    assert_eq!(
        text(c, "#revenue-total-EUR").await,
        format!("€{}.{:02}", revenue / 100, revenue % 100)
    );
    assert_eq!(text(c, "#mrr-EUR").await.chars().next(), Some('€'));
    assert!(text(c, "#gateways").await.contains("bank"));
    // Tall enough for the charts in one picture.
    c.set_window_size(1280, 2200).await.unwrap();
    shot(c, "staff-dashboard").await;
    c.set_window_size(1280, 900).await.unwrap();
    c.goto(&format!("{base}/staff?from=2001-01&to=2001-03"))
        .await
        .unwrap();
    assert_eq!(text(c, "#new-total").await, "0");
    assert!(text(c, "#revenue-h").await.contains("Revenue"));
    assert!(
        text(c, "main")
            .await
            .contains("Nothing invoiced in these months")
    );

    // A customer turns two-factor on: the next login asks for a code.
    c.delete_all_cookies().await.unwrap();
    log_in(c, base, "/login", "cara@example.com", CUSTOMER_PASSWORD).await;
    c.goto(&format!("{base}/security")).await.unwrap();
    let secret = text(c, "#totp-secret").await;
    fill(c, "#password", CUSTOMER_PASSWORD).await;
    fill(c, "#code", "000000").await;
    if auth::totp_code(&secret, app.clock.now()).as_deref() != Some("000000") {
        click(c, "#totp-on").await;
        assert!(text(c, "#error").await.contains("not right"));
        assert!(text(c, "#totp-state").await.starts_with("Off"));
    }
    let secret = text(c, "#totp-secret").await;
    fill(c, "#password", CUSTOMER_PASSWORD).await;
    fill(
        c,
        "#code",
        &auth::totp_code(&secret, app.clock.now()).unwrap(),
    )
    .await;
    click(c, "#totp-on").await;
    assert!(text(c, "#totp-state").await.starts_with("On"));
    c.delete_all_cookies().await.unwrap();
    log_in(c, base, "/login", "cara@example.com", CUSTOMER_PASSWORD).await;
    expect_path(c, "/login").await;
    assert!(text(c, "#error").await.contains("authenticator"));
    app.clock.advance(chrono::Duration::seconds(30));
    fill(c, "#password", CUSTOMER_PASSWORD).await;
    fill(
        c,
        "#code",
        &auth::totp_code(&secret, app.clock.now()).unwrap(),
    )
    .await;
    click(c, "button[type=submit]").await;
    expect_path(c, "/").await;
}
