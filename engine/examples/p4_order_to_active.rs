//! P4: order → active with the DCImanager 6 simulator, and how much of it
//! is Bursar's own overhead beyond the simulator's install time.
//!
//! `cargo run --release -p bursar --example p4_order_to_active [ORDERS]`
//!
//! Everything runs in one process as `bursar serve` wires it: a SQLite
//! database, the plugin host with the real `dcimanager6` component, the
//! operation runner on the system clock, and the HTTP API (driven
//! in-process through the router); the simulator listens on a local port
//! and the plugin reaches it over HTTP. Each order is placed through
//! `POST /api/v1/orders` and its service read back every millisecond until
//! it is `active`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bursar::accounts::ApiKeySecret;
use bursar::api::{self, AppState};
use bursar::clock::{SharedClock, SystemClock};
use bursar::config::Config;
use bursar::lifecycle::runner::{OperationRunner, RunnerConfig};
use bursar::server;
use bursar::services::module::ModuleRegistry;
use dcimanager6_sim::Fixture;
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "bsr_adm_p4_benchmark_0123456789abcdef";
const INSTALL: Duration = Duration::from_millis(300);
/// How often the plugin polls the install, as a plan would configure it.
const POLL_MS: u64 = 10;

fn fixture(servers: usize) -> Fixture {
    let mut text = String::from(
        "[admin]\nemail = \"b@dci.test\"\npassword = \"pw\"\n\
         [[locations]]\nid = 1\nname = \"L\"\n[[racks]]\nid = 1\nname = \"R\"\nlocation = 1\n\
         [[pools]]\nid = 1\nname = \"r\"\ncidrs = [\"10.0.0.0/20\"]\nrack = 1\n\
         [[os]]\nid = 1\nname = \"Debian 12\"\n",
    );
    for id in 1..=servers {
        text.push_str(&format!(
            "[[servers]]\nid = {id}\nconfiguration = \"X\"\nlocation = 1\nrack = 1\n"
        ));
    }
    Fixture::parse(&text).expect("fixture")
}

async fn call(router: &axum::Router, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {ADMIN}"));
    let body = match body {
        Some(b) => {
            req = req
                .header("content-type", "application/json")
                .header("idempotency-key", uuid::Uuid::now_v7().to_string());
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let resp = router
        .clone()
        .oneshot(req.body(body).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert!(
        status == StatusCode::OK || status == StatusCode::CREATED,
        "{method} {path}: {status} {value}"
    );
    value
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let orders: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(30);
    let dir = tempfile::tempdir()?;
    let sim =
        dcimanager6_sim::spawn(fixture(orders), SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    sim.sim.set_install_delay(INSTALL);
    let mut config = Config::default();
    config.database.url = format!("sqlite://{}", dir.path().join("p4.db").display());
    config.plugin_host.cache_dir = Some(std::env::temp_dir().join("bursar-p4-plugin-cache"));
    config.secrets.key_file = dir.path().join("secret.key");
    config.plugins = vec![serde_json::from_value(json!({
        "name": "dci", "kind": "processing", "component": "builtin:dcimanager6",
        "allowed_hosts": [sim.addr.to_string()],
        "settings": {"url": sim.url(), "email": "b@dci.test", "password": "pw",
                     "poll_ms": POLL_MS.to_string()},
    }))?];
    let clock: SharedClock = Arc::new(SystemClock);
    let store = server::open_store(&config).await?;
    server::bootstrap_admin_key(
        &store,
        Some(ApiKeySecret::from_supplied(ADMIN.into())?),
        &clock,
    )
    .await?;
    let secrets = server::open_secrets(&config, &store).await?;
    let mut modules = ModuleRegistry::default();
    let plugins = server::load_plugins(&config, &mut modules).await?;
    let runner = Arc::new(OperationRunner::new(
        store.clone(),
        modules.clone(),
        clock.clone(),
        secrets.clone(),
        RunnerConfig {
            poll_interval_ms: 5,
            ..RunnerConfig::default()
        },
    ));
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    runner.spawn(stopped);
    let router = api::router(
        AppState::with_plugins(store.clone(), clock, config.api.clone(), modules, plugins)
            .with_secrets(secrets),
    );

    let plan = call(
        &router,
        "POST",
        "/api/v1/plans",
        Some(json!({
            "name": "X", "product_type": "dedicated_server", "module": "dci",
            "module_settings": {"configuration": "X", "location": "1", "os_template": "1"},
            "prices": [{"period": "1m", "currency": "EUR", "amount": 100}],
        })),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let account = call(
        &router,
        "POST",
        "/api/v1/accounts",
        Some(json!({
            "email": "p4@example.com", "name": "P4", "currency": "EUR"
        })),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    call(
        &router,
        "POST",
        &format!("/api/v1/accounts/{account}/credits"),
        Some(json!({
            "kind": "credit", "amount": 1_000_000, "currency": "EUR", "reason": "p4"
        })),
    )
    .await;

    let mut overheads = Vec::with_capacity(orders);
    for _ in 0..orders {
        let started = Instant::now();
        let service = call(
            &router,
            "POST",
            "/api/v1/orders",
            Some(json!({
                "account_id": account, "plan_id": plan, "period": "1m"
            })),
        )
        .await;
        let id = service["id"].as_str().unwrap().to_owned();
        loop {
            let s = call(&router, "GET", &format!("/api/v1/services/{id}"), None).await;
            if s["status"] == "active" {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "stuck: {s}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        overheads.push(started.elapsed().saturating_sub(INSTALL));
    }
    overheads.sort();
    let at = |q: f64| overheads[((overheads.len() - 1) as f64 * q).round() as usize];
    println!(
        "P4 order → active, {orders} orders, install {} ms, plugin poll every {POLL_MS} ms",
        INSTALL.as_millis()
    );
    println!(
        "engine overhead beyond the install: median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.95).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
    Ok(())
}
