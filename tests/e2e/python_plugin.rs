//! The processing module written in Python (`plugins/examples/python-processing`),
//! built by its documented command, loaded from a `[[plugin]]` instance by
//! the real host and driven over the API against a small fake server API:
//! the WIT is the contract, Rust is one way to meet it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use bursar_tests::{ADMIN_KEY, TestApp};
use serde_json::{Value, json};

const TOKEN: &str = "py-api-token";

/// The component, built once per run with the command docs/PLUGINS.md
/// gives (which does nothing when the component is newer than its sources).
fn component() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let out = root.join("target/plugins/python-processing.wasm");
            let status = Command::new("bash")
                .arg(root.join("plugins/examples/python-processing/build.sh"))
                .arg(&out)
                .status()
                .expect("bash");
            assert!(status.success(), "build.sh failed");
            out
        })
        .clone()
}

#[derive(Default)]
struct Api {
    /// id → server.
    servers: HashMap<String, Value>,
    /// request_id → id: a repeated order finds the server it made.
    requests: HashMap<String, String>,
    /// Every order as received: its Content-Length, its real length, its body.
    bodies: Vec<(Option<String>, usize, Value)>,
    /// How many times each server was read: it is active from the second read.
    reads: HashMap<String, u32>,
}

type Shared = Arc<Mutex<Api>>;

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn fake_api() -> (String, Shared) {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route(
            "/api/ping",
            get(|headers: HeaderMap| async move {
                if authorized(&headers) {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                }
            }),
        )
        .route(
            "/api/servers",
            post(
                |State(api): State<Shared>, headers: HeaderMap, raw: axum::body::Bytes| async move {
                    if !authorized(&headers) {
                        return (StatusCode::UNAUTHORIZED, Json(json!({})));
                    }
                    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
                        return (StatusCode::BAD_REQUEST, Json(json!({})));
                    };
                    let mut api = api.lock().unwrap();
                    let length = headers
                        .get("content-length")
                        .map(|v| v.to_str().unwrap().to_owned());
                    api.bodies.push((length, raw.len(), body.clone()));
                    let request = body["request_id"].as_str().unwrap_or_default().to_owned();
                    if let Some(id) = api.requests.get(&request) {
                        let server = api.servers[id].clone();
                        return (StatusCode::OK, Json(server));
                    }
                    let id = format!("{}", 100 + api.servers.len());
                    let server = json!({
                        "id": id, "state": "installing", "hostname": body["hostname"],
                        "ip": format!("192.0.2.{}", api.servers.len() + 10),
                        "password": format!("pw-{id}-secret"),
                    });
                    api.servers.insert(id.clone(), server.clone());
                    api.requests.insert(request, id);
                    (StatusCode::CREATED, Json(server))
                },
            ),
        )
        .route(
            "/api/servers/{id}",
            get(
                |State(api): State<Shared>, UrlPath(id): UrlPath<String>| async move {
                    let mut api = api.lock().unwrap();
                    let reads = {
                        let n = api.reads.entry(id.clone()).or_default();
                        *n += 1;
                        *n
                    };
                    let Some(server) = api.servers.get_mut(&id) else {
                        return (StatusCode::NOT_FOUND, Json(json!({})));
                    };
                    if reads >= 2 && server["state"] == "installing" {
                        server["state"] = json!("active");
                    }
                    (StatusCode::OK, Json(server.clone()))
                },
            )
            .delete(
                |State(api): State<Shared>, UrlPath(id): UrlPath<String>| async move {
                    match api.lock().unwrap().servers.remove(&id) {
                        Some(_) => StatusCode::NO_CONTENT,
                        None => StatusCode::NOT_FOUND,
                    }
                },
            ),
        )
        .route(
            "/api/servers/{id}/{action}",
            post(
                |State(api): State<Shared>, UrlPath((id, action)): UrlPath<(String, String)>| async move {
                    let mut api = api.lock().unwrap();
                    let Some(server) = api.servers.get_mut(&id) else {
                        return StatusCode::NOT_FOUND;
                    };
                    server["state"] = json!(match action.as_str() {
                        "suspend" => "suspended",
                        "resume" => "active",
                        _ => return StatusCode::NOT_FOUND,
                    });
                    StatusCode::OK
                },
            ),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, state)
}

/// Runs operations, moving the clock on, until the service leaves `from`.
async fn settle(app: &TestApp, id: &str, from: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        app.run_operations().await;
        let service = app.service(id).await;
        if service["status"] != from || Instant::now() > deadline {
            return service;
        }
        app.clock.advance(chrono::Duration::seconds(3));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_processing_module_written_in_python_opens_suspends_resumes_and_closes_a_server() {
    let wasm = component();
    let (addr, api) = fake_api().await;
    let config: bursar::plugins::instances::PluginConfig = serde_json::from_value(json!({
        "name": "py",
        "kind": "processing",
        "component": wasm.display().to_string(),
        "allowed_hosts": [addr],
        "timeout_ms": 20_000,
        "settings": {"api_url": format!("http://{addr}"), "api_token": TOKEN},
    }))
    .unwrap();
    let app = TestApp::with_plugins(&[config]).await;

    // Listed and checked like any plugin: its own name, a real ping.
    let r = app.get("/api/v1/plugins", ADMIN_KEY).await;
    let listed = &r.json["data"][0];
    assert_eq!(listed["plugin_name"], "python-processing", "{}", r.text);
    assert_eq!(
        listed["features"],
        json!(["suspend", "resume", "close", "prolong"])
    );
    let r = app
        .post("/api/v1/plugins/py/check", ADMIN_KEY, json!({}))
        .await;
    assert_eq!(r.json["ok"], true, "{}", r.text);

    let plan = app
        .create_plan(json!({
            "name": "Python VPS", "product_type": "vps", "module": "py",
            "module_settings": {"hostname_prefix": "vps"},
            "prices": [{"period": "1m", "currency": "EUR", "amount": 1500}]
        }))
        .await;
    let acc = app.create_account("py@example.com", "EUR", 0).await;
    app.credit(&acc, 5000, "EUR").await;
    let r = app.order(&acc, &plan, "1m").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();

    // The install answers `in-progress`; polling makes it active.
    let service = settle(&app, &id, "opening").await;
    assert_eq!(service["status"], "active", "{service}");
    assert_eq!(service["params"]["server_id"], "100");
    assert_eq!(service["params"]["ip"], "192.0.2.10");
    assert_eq!(service["params"]["hostname"], format!("vps-{id}"));
    assert!(
        service["params"].get("root_password").is_none(),
        "the password is a secret param: {service}"
    );
    let r = app
        .get(&format!("/api/v1/services/{id}/credentials"), ADMIN_KEY)
        .await;
    assert_eq!(
        r.json["credentials"]["root_password"], "pw-100-secret",
        "{}",
        r.text
    );
    let ops = app
        .get(&format!("/api/v1/services/{id}/operations"), ADMIN_KEY)
        .await;
    let open_op = ops.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "open")
        .expect("the open operation")["id"]
        .clone();
    {
        let api = api.lock().unwrap();
        assert_eq!(api.servers.len(), 1, "one server ordered");
        let (length, received, body) = &api.bodies[0];
        // The body went with its length, and the operation id as the
        // remote idempotency key.
        assert_eq!(length.as_deref(), Some(received.to_string().as_str()));
        assert_eq!(body["request_id"], open_op, "{body}");
        assert_eq!(body["hostname"], format!("vps-{id}"));
    }

    // Prolonging charges the period; the module has nothing to do remotely.
    let r = app
        .post(
            &format!("/api/v1/services/{id}/prolong"),
            ADMIN_KEY,
            json!({"period": "1m"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_ne!(r.json["paid_until"], service["paid_until"]);
    assert_eq!(app.balance(&acc).await, 5000 - 2 * 1500);
    app.run_operations().await;

    for (action, body, expect, remote) in [
        (
            "suspend",
            json!({"reason": "admin"}),
            "suspended",
            Some("suspended"),
        ),
        ("resume", json!({}), "active", Some("active")),
        ("close", json!({}), "closing", None),
    ] {
        let r = app
            .post(&format!("/api/v1/services/{id}/{action}"), ADMIN_KEY, body)
            .await;
        assert_eq!(r.json["status"], expect, "{action}: {}", r.text);
        app.run_operations().await;
        let state = api
            .lock()
            .unwrap()
            .servers
            .get("100")
            .map(|s| s["state"].clone());
        assert_eq!(state, remote.map(|s| json!(s)), "{action}");
    }
    assert_eq!(app.service(&id).await["status"], "closed");
    app.assert_ledger_clean().await;
}

/// A wrong token is a configuration error: the order waits for staff, and
/// nothing is ordered remotely.
#[tokio::test]
async fn the_python_module_reports_a_refused_token_as_invalid_config() {
    let wasm = component();
    let (addr, api) = fake_api().await;
    let config: bursar::plugins::instances::PluginConfig = serde_json::from_value(json!({
        "name": "py",
        "kind": "processing",
        "component": wasm.display().to_string(),
        "allowed_hosts": [addr],
        "timeout_ms": 20_000,
        "settings": {"api_url": format!("http://{addr}"), "api_token": "wrong"},
    }))
    .unwrap();
    let app = TestApp::with_plugins(&[config]).await;
    let r = app
        .post("/api/v1/plugins/py/check", ADMIN_KEY, json!({}))
        .await;
    assert_eq!(r.json["ok"], false, "{}", r.text);
    assert_eq!(r.json["error_kind"], "invalid_config", "{}", r.text);
    assert!(api.lock().unwrap().servers.is_empty());
}

/// `bursar plugin check`, as an author runs it, accepts the Python
/// component: it names itself and its world.
#[test]
fn plugin_check_accepts_the_python_component() {
    if std::env::var("BURSAR_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        // No database involved: once, in the SQLite run, is enough.
        return;
    }
    let wasm = component();
    let dir = tempfile::tempdir().unwrap();
    let out = crate::cli::succeed(crate::cli::bursar(dir.path()).args([
        "plugin",
        "check",
        &wasm.to_string_lossy(),
    ]));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["plugin"]["name"], "python-processing");
    assert_eq!(report["world"], "processing-module");
}
