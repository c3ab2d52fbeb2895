//! Server time per console page with 5,000 accounts and 20,000 services:
//! each page requested in-process (the whole router: session lookup,
//! queries, rendering) many times; p50 and p99 printed.
//!
//! `cargo bench -p bursar --bench console_pages` (SQLite; set
//! `BURSAR_BENCH_DATABASE_URL` to a fresh PostgreSQL database to use it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use bursar::accounts::Role;
use bursar::api::{self, AppState};
use bursar::clock::{SharedClock, SystemClock};
use bursar::config::Config;
use bursar::console::auth;
use bursar::services::module::ModuleRegistry;
use bursar::store::logins::{self, NewLogin};
use bursar::store::{Store, StoreOptions};
use tower::ServiceExt;

const ACCOUNTS: usize = 5_000;
const SERVICES: usize = 20_000;
const RUNS: usize = 200;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn session(store: &Store, login_id: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let token = auth::random_token();
    let mut tx = store.begin().await.unwrap();
    logins::create_session(
        tx.conn(),
        &auth::sha256_hex(&token),
        login_id,
        &auth::random_token(),
        now,
        now + chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    token
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let url = std::env::var("BURSAR_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let now = clock.now();
    let started = Instant::now();
    let seeded = bursar::seed::due_renewals(
        &store,
        SERVICES,
        SERVICES / ACCOUNTS,
        1000,
        now - chrono::Duration::days(3),
    )
    .await
    .unwrap();
    eprintln!(
        "seeded {} accounts and {} services in {:.1?}",
        seeded.accounts.len(),
        seeded.services.len(),
        started.elapsed()
    );
    let config = Config::default();
    let secrets =
        Arc::new(bursar::secrets::Secrets::with_key(&bursar::secrets::generate_key()).unwrap());
    let staff = auth::create_staff(
        &store,
        &secrets,
        "bench.support@example.com",
        Role::Support,
        Some("bench password 1".into()),
        false,
        now,
    )
    .await
    .unwrap();
    let customer_account = seeded.accounts[ACCOUNTS / 2].clone();
    let customer = {
        let mut tx = store.begin().await.unwrap();
        let login = logins::create(
            tx.conn(),
            NewLogin {
                email: "bench.customer@example.com",
                role: Role::Customer,
                account_id: Some(&customer_account),
                name: "Bench",
                password_hash: "unused",
                totp_secret: None,
            },
            now,
        )
        .await
        .unwrap()
        .unwrap();
        tx.commit().await.unwrap();
        login
    };
    let staff_cookie = format!(
        "{}={}",
        auth::STAFF_COOKIE,
        session(&store, &staff.id, now).await
    );
    let customer_cookie = format!(
        "{}={}",
        auth::CUSTOMER_COOKIE,
        session(&store, &customer.id, now).await
    );
    let state = AppState::from_config(
        store.clone(),
        clock,
        &config,
        ModuleRegistry::default(),
        Default::default(),
        secrets,
    );
    let router = api::router_with(state, bursar::console::router());
    let account = &seeded.accounts[ACCOUNTS - 1];
    let pages = [
        ("staff dashboard", "/staff".to_owned(), &staff_cookie),
        (
            "staff dashboard, 36 months",
            "/staff?from=2024-01&to=2026-12".to_owned(),
            &staff_cookie,
        ),
        (
            "staff services (latest 200)",
            "/staff/services".to_owned(),
            &staff_cookie,
        ),
        (
            "staff services, by status and account",
            format!("/staff/services?status=active&account={account}"),
            &staff_cookie,
        ),
        (
            "staff service (timeline)",
            format!("/staff/services/{}", seeded.services[SERVICES / 2]),
            &staff_cookie,
        ),
        (
            "staff invoices (latest 200)",
            "/staff/invoices".to_owned(),
            &staff_cookie,
        ),
        (
            "staff accounts (latest 100)",
            "/staff/accounts".to_owned(),
            &staff_cookie,
        ),
        (
            "staff accounts, search",
            "/staff/accounts?q=due-49".to_owned(),
            &staff_cookie,
        ),
        (
            "staff account (4 services)",
            format!("/staff/accounts/{account}"),
            &staff_cookie,
        ),
        (
            "staff manual queue",
            "/staff/operations".to_owned(),
            &staff_cookie,
        ),
        (
            "staff payments",
            "/staff/payments".to_owned(),
            &staff_cookie,
        ),
        ("customer dashboard", "/".to_owned(), &customer_cookie),
    ];
    println!("| page | p50 | p99 | max |");
    println!("| --- | --- | --- | --- |");
    for (name, path, cookie) in pages {
        let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
        for i in 0..RUNS + 10 {
            let req = Request::get(&path)
                .header("cookie", cookie.as_str())
                .body(Body::empty())
                .unwrap();
            let t = Instant::now();
            let response = router.clone().oneshot(req).await.unwrap();
            let status = response.status();
            let _ = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let took = t.elapsed();
            assert_eq!(status, 200, "{path}");
            if i >= 10 {
                times.push(took);
            }
        }
        times.sort();
        let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {:.1} ms |",
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    }
}
