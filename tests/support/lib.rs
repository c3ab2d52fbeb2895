//! Shared harness for Bursar's end-to-end tests.
//!
//! Every test gets its own database: a fresh SQLite file by default, or a
//! fresh schema in the PostgreSQL database named by
//! `BURSAR_TEST_DATABASE_URL` (e.g. `postgres://127.0.0.1/bursar_ci`).

pub mod smtp;
pub mod stripe;

use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::{TimeZone, Utc};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use bursar::accounts::ApiKeySecret;
use bursar::api::{self, AppState};
use bursar::clock::{ManualClock, SharedClock};
use bursar::config::Config;
use bursar::lifecycle::runner::{OperationRunner, RunnerConfig};
use bursar::server::bootstrap_admin_key;
use bursar::services::module::{ModuleRegistry, ScriptedModule};
use bursar::store::{Backend, Conn, Store, StoreOptions};

pub const ADMIN_KEY: &str = "bsr_adm_test_0123456789abcdef0123456789";

/// A database of its own for one test.
pub struct TestDb {
    pub store: Store,
    /// How to open another pool on the same database (as another node would).
    reopen: Reopen,
    /// The same database as a `database.url` for a `bursar` process.
    url: String,
    _dir: Option<tempfile::TempDir>,
}

enum Reopen {
    Sqlite(String),
    Postgres(Box<sqlx::postgres::PgConnectOptions>),
}

impl TestDb {
    pub async fn new() -> TestDb {
        let opts = StoreOptions::default();
        match std::env::var("BURSAR_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => {
                let base = sqlx::postgres::PgConnectOptions::from_str(&url)
                    .expect("BURSAR_TEST_DATABASE_URL");
                let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
                let admin = Store::connect_postgres(
                    base.clone(),
                    &StoreOptions {
                        max_connections: 1,
                        ..opts.clone()
                    },
                )
                .await
                .expect("connect to the test PostgreSQL");
                if let Store::Postgres(pool) = &admin {
                    sqlx::query(&format!("CREATE SCHEMA {schema}"))
                        .execute(pool)
                        .await
                        .expect("create test schema");
                }
                admin.close().await;
                let options = base.options([("search_path", schema.as_str())]);
                let sep = if url.contains('?') { '&' } else { '?' };
                let process_url = format!("{url}{sep}options[search_path]={schema}");
                let store = Store::connect_postgres(options.clone(), &opts)
                    .await
                    .expect("connect to the test schema");
                store.migrate().await.expect("migrate");
                TestDb {
                    store,
                    reopen: Reopen::Postgres(Box::new(options)),
                    url: process_url,
                    _dir: None,
                }
            }
            _ => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("bursar.db").display());
                let store = Store::connect(&url, &opts).await.expect("open SQLite");
                store.migrate().await.expect("migrate");
                TestDb {
                    store,
                    reopen: Reopen::Sqlite(url.clone()),
                    url,
                    _dir: Some(dir),
                }
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// A `database.url` another `bursar` process can open this database by.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One number from a SQL query (`SELECT COUNT(*) …`).
    pub async fn count(&self, sql: &str) -> i64 {
        let mut reader = self.store.reader().await.expect("a read connection");
        match reader.conn() {
            Conn::Sqlite(c) => sqlx::query_scalar(sql).fetch_one(c).await,
            Conn::Postgres(c) => sqlx::query_scalar(sql).fetch_one(c).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// One string from a SQL query.
    pub async fn text(&self, sql: &str) -> String {
        let mut reader = self.store.reader().await.expect("a read connection");
        match reader.conn() {
            Conn::Sqlite(c) => sqlx::query_scalar(sql).fetch_one(c).await,
            Conn::Postgres(c) => sqlx::query_scalar(sql).fetch_one(c).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The query plan the database picks for `sql` (its parameters written
    /// in as literals). On PostgreSQL sequential and bitmap scans and sorts
    /// are off: a test's tables are small enough for a scan and a sort, and
    /// what matters is which index the planner takes otherwise, and whether
    /// it can read it in order (a sort it cannot avoid still shows).
    pub async fn plan(&self, sql: &str) -> String {
        self.explain(sql, &["enable_seqscan", "enable_bitmapscan", "enable_sort"])
            .await
    }

    /// The plan PostgreSQL picks for `sql` from its statistics as they
    /// stand, nothing forbidden (on SQLite the same as [`Self::plan`]).
    pub async fn plan_as_estimated(&self, sql: &str) -> String {
        self.explain(sql, &[]).await
    }

    async fn explain(&self, sql: &str, off: &[&str]) -> String {
        match &self.store {
            Store::Sqlite { .. } => {
                let mut reader = self.store.reader().await.expect("a read connection");
                let Conn::Sqlite(c) = reader.conn() else {
                    unreachable!("a SQLite store reads from SQLite")
                };
                let rows: Vec<(i64, i64, i64, String)> =
                    sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                        .fetch_all(c)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await.expect("a transaction");
                for setting in off {
                    sqlx::query(&format!("SET LOCAL {setting} = off"))
                        .execute(&mut *tx)
                        .await
                        .expect("set");
                }
                let rows: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {sql}"))
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.join("\n")
            }
        }
    }

    /// Runs one statement (test set-up: corrupting, ageing, marking rows).
    pub async fn exec(&self, sql: &str) {
        match &self.store {
            Store::Sqlite { write, .. } => sqlx::query(sql).execute(write).await.map(drop),
            Store::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A second, independent pool on the same database.
    pub async fn another_pool(&self) -> Store {
        let opts = StoreOptions::default();
        match &self.reopen {
            Reopen::Sqlite(url) => Store::connect(url, &opts).await.expect("reopen SQLite"),
            Reopen::Postgres(o) => Store::connect_postgres((**o).clone(), &opts)
                .await
                .expect("reopen PostgreSQL"),
        }
    }
}

/// The HTTP application over a fresh database, driven in-process.
pub struct TestApp {
    pub db: TestDb,
    pub router: Router,
    pub clock: Arc<ManualClock>,
    /// The test double registered as module instance `test`.
    pub module: Arc<ScriptedModule>,
    pub modules: ModuleRegistry,
    /// The key this app seals service credentials with.
    pub secrets: Arc<bursar::secrets::Secrets>,
}

/// What a request returned.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub headers: axum::http::HeaderMap,
    pub text: String,
    pub json: Value,
    /// The body as sent (for binary answers such as PDFs).
    pub body: Vec<u8>,
}

impl Reply {
    /// Asserts a problem+json error with this status and returns its `type`.
    pub fn problem(&self, status: u16) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        assert_eq!(
            self.content_type, "application/problem+json",
            "body: {}",
            self.text
        );
        assert_eq!(self.json["status"], json!(status));
        self.json["type"].as_str().expect("problem type").to_owned()
    }
}

impl TestApp {
    pub async fn new() -> TestApp {
        TestApp::with_modules(vec![]).await
    }

    /// An app with extra processing module instances besides `test`.
    pub async fn with_modules(
        extra: Vec<(&str, Arc<dyn bursar::services::module::ProcessingModule>)>,
    ) -> TestApp {
        TestApp::build(extra, &[], Default::default()).await
    }

    /// An app whose new services count their periods in this time zone.
    pub async fn with_time_zone(name: &str) -> TestApp {
        let billing = bursar::calendar::BillingConfig {
            time_zone: bursar::calendar::Zone::parse(name).expect("IANA time zone"),
            ..Default::default()
        };
        TestApp::build(vec![], &[], billing).await
    }

    /// An app with `[[plugin]]` instances loaded by the real plugin host.
    pub async fn with_plugins(configs: &[bursar::plugins::instances::PluginConfig]) -> TestApp {
        TestApp::build(vec![], configs, Default::default()).await
    }

    /// An app whose configuration `edit` changes (plugins included).
    pub async fn with_config(edit: impl FnOnce(&mut Config)) -> TestApp {
        TestApp::build_with(vec![], &[], Default::default(), edit).await
    }

    async fn build(
        extra: Vec<(&str, Arc<dyn bursar::services::module::ProcessingModule>)>,
        plugin_configs: &[bursar::plugins::instances::PluginConfig],
        billing: bursar::calendar::BillingConfig,
    ) -> TestApp {
        TestApp::build_with(extra, plugin_configs, billing, |_| {}).await
    }

    async fn build_with(
        extra: Vec<(&str, Arc<dyn bursar::services::module::ProcessingModule>)>,
        plugin_configs: &[bursar::plugins::instances::PluginConfig],
        billing: bursar::calendar::BillingConfig,
        edit: impl FnOnce(&mut Config),
    ) -> TestApp {
        bursar::metrics::install();
        let db = TestDb::new().await;
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap(),
        ));
        let shared: SharedClock = clock.clone();
        let secret = ApiKeySecret::from_supplied(ADMIN_KEY.to_owned()).unwrap();
        bootstrap_admin_key(&db.store, Some(secret), &shared)
            .await
            .expect("admin key");
        let module = ScriptedModule::new();
        let mut modules = ModuleRegistry::default();
        modules.insert("test", module.clone());
        for (name, m) in extra {
            modules.insert(name, m);
        }
        let defaults = Config::default();
        let mut config = Config {
            plugins: plugin_configs.to_vec(),
            billing,
            plugin_host: bursar::plugins::instances::PluginHostConfig {
                cache_dir: Some(std::env::temp_dir().join("bursar-test-plugin-cache")),
                ..defaults.plugin_host.clone()
            },
            ..defaults
        };
        edit(&mut config);
        let plugins = bursar::server::load_plugins(&config, &mut modules)
            .await
            .expect("load plugins");
        let secrets = Arc::new(
            bursar::secrets::Secrets::with_key(&bursar::secrets::generate_key())
                .expect("a generated key"),
        );
        let state = AppState::from_config(
            db.store.clone(),
            shared,
            &config,
            modules.clone(),
            plugins,
            secrets.clone(),
        );
        TestApp {
            router: api::router_with(state, bursar::console::router()),
            db,
            clock,
            module,
            modules,
            secrets,
        }
    }

    /// Runner settings for tests: quick retries, few attempts.
    pub fn runner_config() -> RunnerConfig {
        RunnerConfig {
            lease_ms: 60_000,
            batch: 8,
            poll_interval_ms: 20,
            call_timeout_ms: 5_000,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
            max_attempts: 5,
        }
    }

    /// An operation runner over this app's database, modules and clock.
    pub fn runner(&self) -> OperationRunner {
        let clock: SharedClock = self.clock.clone();
        OperationRunner::new(
            self.db.store.clone(),
            self.modules.clone(),
            clock,
            self.secrets.clone(),
            Self::runner_config(),
        )
    }

    /// Runs due operations until none is left.
    pub async fn run_operations(&self) -> usize {
        self.runner().run_until_idle(100).await.expect("runner")
    }

    /// Creates a plan as admin from a JSON spec and returns its id.
    pub async fn create_plan(&self, spec: Value) -> String {
        let r = self.post("/api/v1/plans", ADMIN_KEY, spec).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["id"].as_str().expect("id").to_owned()
    }

    /// A simple monthly plan in EUR provisioned by the `test` module.
    pub async fn simple_plan(&self, monthly: i64) -> String {
        self.create_plan(json!({
            "name": format!("Plan {monthly}"),
            "product_type": "vps",
            "module": "test",
            "prices": [
                {"period": "1m", "currency": "EUR", "amount": monthly},
                {"period": "3m", "currency": "EUR", "amount": monthly * 3},
                {"period": "12m", "currency": "EUR", "amount": monthly * 12}
            ]
        }))
        .await
    }

    /// Adds `to` to the change list of plan `from` (as admin).
    pub async fn allow_change(&self, from: &str, to: &str) {
        let r = self.get(&format!("/api/v1/plans/{from}"), ADMIN_KEY).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let mut spec = r.json.clone();
        let obj = spec.as_object_mut().expect("a plan");
        for field in ["id", "status", "created_at", "updated_at"] {
            obj.remove(field);
        }
        let list = obj
            .entry("change_to")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("a list");
        list.push(json!(to));
        let r = self
            .request(
                Method::PUT,
                &format!("/api/v1/plans/{from}"),
                Some(ADMIN_KEY),
                Some(spec),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }

    /// Orders a plan for an account as admin; returns the reply.
    pub async fn order(&self, account_id: &str, plan_id: &str, period: &str) -> Reply {
        self.post(
            "/api/v1/orders",
            ADMIN_KEY,
            json!({"account_id": account_id, "plan_id": plan_id, "period": period}),
        )
        .await
    }

    pub async fn service(&self, id: &str) -> Value {
        let r = self.get(&format!("/api/v1/services/{id}"), ADMIN_KEY).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json
    }

    pub fn store(&self) -> &Store {
        &self.db.store
    }

    /// Sends one request. `body` is sent as JSON when given.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).expect("request")).await
    }

    /// Sends a prepared request.
    pub async fn send(&self, req: Request<Body>) -> Reply {
        send_to(self.router.clone(), req).await
    }

    /// Starts an admin POST of `body` (with an Idempotency-Key when given)
    /// on its own task, for requests that must be under way at once.
    pub fn spawn_post(
        &self,
        path: &str,
        idempotency_key: Option<&str>,
        body: Value,
    ) -> tokio::task::JoinHandle<Reply> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("authorization", format!("Bearer {ADMIN_KEY}"))
            .header("content-type", "application/json");
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        let req = req.body(Body::from(body.to_string())).expect("request");
        tokio::spawn(send_to(self.router.clone(), req))
    }

    pub async fn get(&self, path: &str, key: &str) -> Reply {
        self.request(Method::GET, path, Some(key), None, &[]).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Reply {
        self.request(Method::POST, path, Some(key), Some(body), &[])
            .await
    }

    /// Creates an account as admin and returns its id.
    pub async fn create_account(&self, email: &str, currency: &str, credit_limit: i64) -> String {
        let r = self
            .post(
                "/api/v1/accounts",
                ADMIN_KEY,
                json!({"email": email, "name": "Test Customer", "currency": currency, "credit_limit": credit_limit}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["id"].as_str().expect("id").to_owned()
    }

    /// Creates a customer API key for an account and returns its secret.
    pub async fn customer_key(&self, account_id: &str) -> String {
        let r = self
            .post(
                &format!("/api/v1/accounts/{account_id}/api-keys"),
                ADMIN_KEY,
                json!({"name": "test"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["secret"].as_str().expect("secret").to_owned()
    }

    /// Credits an account as admin.
    pub async fn credit(&self, account_id: &str, amount: i64, currency: &str) -> Reply {
        self.post(
            &format!("/api/v1/accounts/{account_id}/credits"),
            ADMIN_KEY,
            json!({"kind": "credit", "amount": amount, "currency": currency, "reason": "test credit"}),
        )
        .await
    }

    /// How many of the account's ledger entries are of `kind` (`charge`,
    /// `refund`…), as the API lists them.
    pub async fn ledger_count(&self, account_id: &str, kind: &str) -> usize {
        let r = self
            .get(
                &format!("/api/v1/accounts/{account_id}/ledger?limit=500"),
                ADMIN_KEY,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["data"]
            .as_array()
            .expect("a page")
            .iter()
            .filter(|e| e["kind"] == kind)
            .count()
    }

    /// The account's balance in minor units, as the API reports it.
    /// The documents (invoices, receipts, credit notes) of one account, or
    /// of all with `None`, oldest first.
    pub async fn invoices(&self, account_id: Option<&str>) -> Vec<Value> {
        let filter = account_id.map_or(String::new(), |a| format!("&account_id={a}"));
        let r = self
            .get(&format!("/api/v1/invoices?limit=500{filter}"), ADMIN_KEY)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["data"].as_array().expect("data").clone()
    }

    pub async fn balance(&self, account_id: &str) -> i64 {
        let r = self
            .get(&format!("/api/v1/accounts/{account_id}/balance"), ADMIN_KEY)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["balance"].as_i64().expect("balance")
    }

    /// Row counts of the tables that record work, to prove nothing was
    /// written.
    pub async fn counts(&self) -> Counts {
        counts(self.store()).await
    }

    /// Asserts the ledger's invariants over the whole database.
    pub async fn assert_ledger_clean(&self) {
        assert_ledger_clean(self.store()).await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub accounts: i64,
    pub api_keys: i64,
    pub transactions: i64,
    pub entries: i64,
    pub idempotency_keys: i64,
}

/// Sends a prepared request to `router`.
pub async fn send_to(router: Router, req: Request<Body>) -> Reply {
    let response = router.oneshot(req).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        content_type,
        headers,
        text,
        json,
        body: bytes.to_vec(),
    }
}

pub async fn counts(store: &Store) -> Counts {
    let mut r = store.reader().await.expect("reader");
    let mut n = Vec::new();
    for table in [
        "accounts",
        "api_keys",
        "ledger_transactions",
        "ledger_entries",
        "idempotency_keys",
    ] {
        let q = format!("SELECT COUNT(*) FROM {table}");
        let v: i64 = bursar::sql!(r.conn(), c => sqlx::query_scalar(&q).fetch_one(&mut *c).await)
            .expect("count");
        n.push(v);
    }
    Counts {
        accounts: n[0],
        api_keys: n[1],
        transactions: n[2],
        entries: n[3],
        idempotency_keys: n[4],
    }
}

pub async fn assert_ledger_clean(store: &Store) {
    let mut r = store.reader().await.expect("reader");
    let audit = bursar::store::ledger::audit(r.conn()).await.expect("audit");
    assert!(audit.is_clean(), "ledger audit failed: {audit:?}");
}
