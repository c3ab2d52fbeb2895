//! The WASM plugin host against real components built from `plugins/`:
//! hostile plugins are stopped by the sandbox, and a plan provisioned by a
//! WASM module goes through its whole life over the HTTP API.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bursar::calendar::Period;
use bursar::plugins::processing::InstanceLimits;
use bursar::plugins::{
    AllowedHost, HostOptions, HttpPolicy, PluginHost, ProcessingPlugin, builtin, check_export,
};
use bursar::services::OperationKind;
use bursar::services::module::{ModuleError, ModuleOutcome, ModuleRequest, ServiceContext};
use bursar_tests::{ADMIN_KEY, TestApp};
use serde_json::json;

fn host() -> &'static PluginHost {
    static HOST: OnceLock<PluginHost> = OnceLock::new();
    bursar::metrics::install();
    HOST.get_or_init(|| {
        // Compiled components are cached by content hash: reruns skip compiling.
        let cache_dir = Some(std::env::temp_dir().join("bursar-test-plugin-cache"));
        PluginHost::new(HostOptions {
            cache_dir,
            ..HostOptions::default()
        })
        .expect("plugin host")
    })
}

fn wasm(stem: &str) -> Vec<u8> {
    let path = std::path::Path::new(builtin::WASM_DIR).join(format!("{stem}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn limits(timeout_ms: u64, memory_mb: usize) -> InstanceLimits {
    InstanceLimits {
        timeout: Duration::from_millis(timeout_ms),
        memory_bytes: memory_mb << 20,
        max_response_bytes: 1 << 20,
    }
}

async fn hostile(allowed: &[&str], limits: InstanceLimits) -> ProcessingPlugin {
    let policy = HttpPolicy {
        instance: "hostile".into(),
        allowed: allowed
            .iter()
            .map(|h| AllowedHost::parse(h).unwrap())
            .collect(),
        timeout: limits.timeout,
        max_response_bytes: limits.max_response_bytes,
    };
    ProcessingPlugin::load(host(), "hostile", &wasm("hostile"), vec![], policy, limits)
        .await
        .expect("load the hostile plugin")
}

fn open_request(settings: &[(&str, &str)]) -> ModuleRequest {
    ModuleRequest {
        operation_id: "op_test".into(),
        kind: OperationKind::Open,
        poll: false,
        remote_ref: None,
        service: ServiceContext {
            service_id: "svc_test".into(),
            plan_id: "plan_test".into(),
            account_id: "acc_test".into(),
            account_email: "t@example.com".into(),
            period: Period::Month,
            settings: settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            params: BTreeMap::new(),
            addons: BTreeMap::new(),
        },
        payload: json!({}),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_infinite_loop_times_out_at_its_deadline_while_other_calls_go_on() {
    let plugin = Arc::new(hostile(&[], limits(400, 64)).await);
    let started = Instant::now();
    let looping = {
        let p = plugin.clone();
        tokio::spawn(async move { p.lifecycle(&open_request(&[("mode", "loop")])).await })
    };
    // On this single-threaded runtime the loop must yield for this to run.
    let ok = plugin.lifecycle(&open_request(&[("mode", "ok")])).await;
    let ok_done = started.elapsed();
    assert!(matches!(ok, Ok(ModuleOutcome::Done { .. })), "{ok:?}");
    let looped = looping.await.unwrap();
    let elapsed = started.elapsed();
    assert!(matches!(looped, Err(ModuleError::Timeout(_))), "{looped:?}");
    assert!(
        ok_done < elapsed,
        "the other call finished while the loop ran"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "stopped near its deadline, took {elapsed:?}"
    );
}

#[tokio::test]
async fn a_memory_bomb_fails_as_out_of_memory_at_the_cap() {
    let plugin = hostile(&[], limits(5_000, 32)).await;
    let r = plugin.lifecycle(&open_request(&[("mode", "memory")])).await;
    assert!(matches!(r, Err(ModuleError::OutOfMemory(_))), "{r:?}");
    // The host is fine: the next call works.
    assert!(plugin.lifecycle(&open_request(&[])).await.is_ok());
}

#[tokio::test]
async fn a_panic_traps_and_the_next_call_gets_a_fresh_instance() {
    let plugin = hostile(&[], limits(5_000, 64)).await;
    let r = plugin.lifecycle(&open_request(&[("mode", "panic")])).await;
    assert!(matches!(r, Err(ModuleError::Trap(_))), "{r:?}");
    let r = plugin.lifecycle(&open_request(&[])).await.unwrap();
    assert_eq!(
        r,
        ModuleOutcome::Done {
            params: vec![
                ("opened_by".into(), "hostile".into()),
                ("operation".into(), "op_test".into())
            ],
            secret_params: vec![]
        }
    );
}

#[tokio::test]
async fn the_sandbox_has_no_environment_and_no_files() {
    // SAFETY: tests in this binary do not read this variable concurrently.
    unsafe { std::env::set_var("BURSAR_SECRET_FOR_SANDBOX_TEST", "leak") };
    let plugin = hostile(&[], limits(5_000, 64)).await;
    let ModuleOutcome::Done { params, .. } = plugin
        .lifecycle(&open_request(&[("mode", "env")]))
        .await
        .unwrap()
    else {
        panic!("expected done")
    };
    let get = |k: &str| {
        params
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("env_vars"), Some("0"));
    assert_eq!(get("root_entries"), Some("0"));
    assert_eq!(get("read_etc_passwd"), Some("false"));
}

/// A local HTTP server: `/ping` answers at once, `/slow` after 10 s.
async fn local_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new()
        .route("/ping", axum::routing::get(|| async { "pong" }))
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                next.run(req)
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr.to_string(), hits)
}

#[tokio::test]
async fn http_reaches_allowed_hosts_only_and_denied_requests_never_leave() {
    let (addr, hits) = local_server().await;
    let url = format!("http://{addr}/ping");

    let denied = hostile(&["example.net:443"], limits(5_000, 64)).await;
    let r = denied
        .lifecycle(&open_request(&[("mode", "http"), ("url", &url)]))
        .await;
    assert!(
        matches!(&r, Err(ModuleError::InvalidConfig(m)) if m.contains("allowed_hosts")),
        "{r:?}"
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the request never reached the server"
    );

    let allowed = hostile(&[&addr], limits(5_000, 64)).await;
    let r = allowed
        .lifecycle(&open_request(&[("mode", "http"), ("url", &url)]))
        .await
        .unwrap();
    let ModuleOutcome::Done { params, .. } = r else {
        panic!("expected done")
    };
    assert!(params.contains(&("status".into(), "200".into())));
    assert!(params.contains(&("body".into(), "pong".into())));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_slow_http_server_makes_the_call_time_out() {
    let (addr, _) = local_server().await;
    let plugin = hostile(&[&addr], limits(600, 64)).await;
    let started = Instant::now();
    let r = plugin
        .lifecycle(&open_request(&[
            ("mode", "http"),
            ("url", &format!("http://{addr}/slow")),
        ]))
        .await;
    assert!(
        matches!(
            r,
            Err(ModuleError::Timeout(_)) | Err(ModuleError::Unavailable { .. })
        ),
        "{r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn garbage_results_are_rejected_by_validation() {
    let plugin = hostile(&[], limits(10_000, 128)).await;
    for mode in [
        "garbage-key",
        "garbage-huge",
        "garbage-many",
        "garbage-progress",
    ] {
        let r = plugin.lifecycle(&open_request(&[("mode", mode)])).await;
        assert!(
            matches!(r, Err(ModuleError::InvalidResult(_))),
            "{mode}: {r:?}"
        );
    }
    let garbage_catalog = ProcessingPlugin::load(
        host(),
        "hostile",
        &wasm("hostile"),
        vec![("mode".into(), "garbage-catalog".into())],
        HttpPolicy {
            instance: "hostile".into(),
            allowed: vec![],
            timeout: Duration::from_secs(5),
            max_response_bytes: 1024,
        },
        limits(5_000, 64),
    )
    .await
    .unwrap();
    assert!(matches!(
        garbage_catalog.catalog().await,
        Err(ModuleError::InvalidResult(_))
    ));
    let metrics = bursar::metrics::render();
    assert!(
        metrics.contains("bursar_plugin_failures_total"),
        "failures are counted"
    );
    assert!(metrics.contains("kind=\"invalid_result\""), "{metrics}");
    // Every call is timed, under the instance's name, through the handle
    // registered when the instance was loaded.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("bursar_plugin_call_seconds") && l.contains("plugin=\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_component_that_is_not_a_plugin_is_refused_naming_the_missing_export() {
    let component = host()
        .compile("not-a-plugin", &wasm("not-a-plugin"))
        .unwrap();
    let err = check_export(host().engine(), "not-a-plugin", &component, "processing")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing export `bursar:plugin/processing@0.1.0`"),
        "{err}"
    );
    assert!(
        err.contains("wasi:cli/run"),
        "says what it exports instead: {err}"
    );
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let cached = PluginHost::new(HostOptions {
        cache_dir: Some(dir.path().to_owned()),
        ..HostOptions::default()
    })
    .unwrap();
    let bytes = wasm("example_processing");
    cached.compile("example", &bytes).unwrap();
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let started = Instant::now();
    cached.compile("example", &bytes).unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn a_plan_on_a_wasm_module_goes_through_its_whole_life_over_the_api() {
    let plugin = hostile(&[], limits(5_000, 64)).await;
    let app = TestApp::with_modules(vec![("wasm-test", Arc::new(plugin))]).await;
    let plan = app
        .create_plan(json!({
            "name": "WASM VPS", "product_type": "vps", "module": "wasm-test",
            "prices": [{"period": "1m", "currency": "EUR", "amount": 1000}]
        }))
        .await;
    let acc = app.create_account("wasm@example.com", "EUR", 0).await;
    app.credit(&acc, 5000, "EUR").await;
    let r = app.order(&acc, &plan, "1m").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json["status"], "opening");
    app.run_operations().await;
    let s = app.service(&id).await;
    assert_eq!(s["status"], "active");
    assert_eq!(s["params"]["opened_by"], "hostile");

    for (action, body, expect) in [
        ("suspend", json!({"reason": "admin"}), "suspended"),
        ("resume", json!({}), "active"),
        ("close", json!({}), "closing"),
    ] {
        let r = app
            .post(&format!("/api/v1/services/{id}/{action}"), ADMIN_KEY, body)
            .await;
        assert_eq!(r.json["status"], expect, "{action}: {}", r.text);
        app.run_operations().await;
    }
    let s = app.service(&id).await;
    assert_eq!(s["status"], "closed");
    assert_eq!(s["params"]["closed"], "yes");
    let ops = app
        .get(&format!("/api/v1/services/{id}/operations"), ADMIN_KEY)
        .await;
    let statuses: Vec<&str> = ops.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["done"; 4]);
}

#[tokio::test]
async fn a_failing_wasm_module_records_the_failure_kind_on_the_operation() {
    let plugin = hostile(&[], limits(300, 64)).await;
    let app = TestApp::with_modules(vec![("wasm-loop", Arc::new(plugin))]).await;
    let plan = app
        .create_plan(json!({
            "name": "Looping", "product_type": "vps", "module": "wasm-loop", "module_settings": {"mode": "loop"},
            "prices": [{"period": "1m", "currency": "EUR", "amount": 100}]
        }))
        .await;
    let acc = app.create_account("loop@example.com", "EUR", 0).await;
    app.credit(&acc, 5000, "EUR").await;
    let id = app.order(&acc, &plan, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.runner().run_once().await.unwrap();
    let op = &app
        .get(&format!("/api/v1/services/{id}/operations"), ADMIN_KEY)
        .await
        .json["data"][0];
    assert_eq!(op["status"], "queued", "a timeout is retried");
    assert_eq!(op["error_kind"], "timeout");
    // The API keeps answering.
    assert_eq!(
        app.get("/api/v1/plans", ADMIN_KEY).await.status,
        StatusCode::OK
    );
}

fn instance(
    name: &str,
    component: &str,
    settings: serde_json::Value,
) -> bursar::plugins::instances::PluginConfig {
    serde_json::from_value(json!({
        "name": name, "kind": "processing", "component": component, "settings": settings, "timeout_ms": 5000
    }))
    .unwrap()
}

#[tokio::test]
async fn configured_instances_are_listed_and_checked_and_never_show_their_secrets() {
    // SAFETY: no other test reads this variable.
    unsafe { std::env::set_var("BURSAR_TEST_PLUGIN_SECRET", "s3cret-value") };
    let hostile_path = std::path::Path::new(builtin::WASM_DIR).join("hostile.wasm");
    let app = TestApp::with_plugins(&[
        instance(
            "example",
            "builtin:example-processing",
            json!({"hostname_prefix": "node", "token": {"env": "BURSAR_TEST_PLUGIN_SECRET"}}),
        ),
        instance(
            "broken",
            hostile_path.to_str().unwrap(),
            json!({"url": "http://127.0.0.1:9/"}),
        ),
    ])
    .await;
    let r = app.get("/api/v1/plugins", ADMIN_KEY).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        !r.text.contains("s3cret-value"),
        "secrets are never returned"
    );
    let list = r.json["data"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let example = list.iter().find(|p| p["name"] == "example").unwrap();
    assert_eq!(example["plugin_name"], "example-processing");
    assert_eq!(example["kind"], "processing");
    assert_eq!(example["version"], "0.1.0");
    assert_eq!(example["features"], json!(["suspend", "resume", "close"]));
    assert_eq!(example["health"]["status"], "unknown");

    let r = app
        .post("/api/v1/plugins/example/check", ADMIN_KEY, json!({}))
        .await;
    assert_eq!(r.json["ok"], true, "{}", r.text);
    assert_eq!(r.json["plugin"]["health"]["status"], "ok");
    // Not in allowed_hosts: the check fails and says so.
    let r = app
        .post("/api/v1/plugins/broken/check", ADMIN_KEY, json!({}))
        .await;
    assert_eq!(r.json["ok"], false, "{}", r.text);
    assert_eq!(r.json["error_kind"], "invalid_config");
    assert_eq!(r.json["plugin"]["health"]["status"], "failing");
    app.post("/api/v1/plugins/nope/check", ADMIN_KEY, json!({}))
        .await
        .problem(404);

    // A plan can name the built-in instance, and it provisions.
    let plan = app
        .create_plan(
            json!({"name": "Ex", "product_type": "generic", "module": "example",
                            "prices": [{"period": "1m", "currency": "EUR", "amount": 100}]}),
        )
        .await;
    let acc = app.create_account("ex@example.com", "EUR", 0).await;
    app.credit(&acc, 1000, "EUR").await;
    let id = app.order(&acc, &plan, "1m").await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_operations().await;
    let s = app.service(&id).await;
    assert_eq!(s["status"], "active");
    assert_eq!(s["params"]["hostname"], format!("node-{id}"));
}

#[test]
fn bad_instances_fail_with_a_message_naming_them() {
    let missing_env = instance(
        "dci",
        "builtin:example-processing",
        json!({"password": {"env": "BURSAR_TEST_UNSET_VARIABLE"}}),
    );
    let err = missing_env.resolve(512).unwrap_err().to_string();
    assert!(
        err.contains("dci")
            && err.contains("BURSAR_TEST_UNSET_VARIABLE")
            && err.contains("settings.password"),
        "{err}"
    );
    let unknown = instance("x", "builtin:nothing-like-it", json!({}));
    let err = unknown.component_bytes().unwrap_err().to_string();
    assert!(
        err.contains("nothing-like-it") && err.contains("example-processing"),
        "{err}"
    );
    let mut greedy = instance("big", "builtin:example-processing", json!({}));
    greedy.memory_mb = 100_000;
    assert!(
        greedy
            .resolve(512)
            .unwrap_err()
            .to_string()
            .contains("memory_mb")
    );
}

async fn echo_gateway(mode: &str) -> bursar::plugins::gateway::GatewayPlugin {
    let policy = HttpPolicy {
        instance: "echo".into(),
        allowed: vec![],
        timeout: Duration::from_secs(5),
        max_response_bytes: 1 << 20,
    };
    bursar::plugins::gateway::GatewayPlugin::load(
        host(),
        "echo",
        &wasm("gateway_echo"),
        vec![("mode".into(), mode.into())],
        policy,
        limits(5_000, 64),
    )
    .await
    .expect("load the echo gateway")
}

#[tokio::test]
async fn a_gateway_answering_garbage_money_is_rejected_by_validation() {
    let fine = echo_gateway("ok").await.query("echo-1").await.unwrap();
    let amount = fine.amount.expect("an amount");
    assert_eq!((amount.minor(), amount.currency().code()), (500, "EUR"));
    for (mode, expected) in [
        ("garbage-amount", "not positive"),
        ("garbage-currency", "not an ISO 4217 currency"),
        ("garbage-huge", "bytes long"),
    ] {
        match echo_gateway(mode).await.query("echo-1").await {
            Err(ModuleError::InvalidResult(m)) => assert!(m.contains(expected), "{mode}: {m}"),
            other => panic!("{mode}: expected invalid_result, got {other:?}"),
        }
    }
    let request = bursar::payments::PaymentRequest {
        payment_id: "pay_1".into(),
        amount: bursar::money::Money::new(1000, bursar::money::Currency::EUR).unwrap(),
        description: "top-up".into(),
        account_email: "a@example.com".into(),
        return_url: "https://shop.example/return".into(),
    };
    let created = echo_gateway("ok")
        .await
        .create_payment(request.clone())
        .await
        .unwrap();
    assert_eq!(created.gateway_ref, "echo-pay_1");
    match echo_gateway("garbage-redirect")
        .await
        .create_payment(request)
        .await
    {
        Err(ModuleError::InvalidResult(m)) => assert!(m.contains("http(s) URL"), "{m}"),
        other => panic!("expected invalid_result, got {other:?}"),
    }
}

#[tokio::test]
async fn a_configured_gateway_instance_is_listed_and_checked_but_has_no_catalog() {
    let app = TestApp::with_plugins(&[serde_json::from_value(json!({
        "name": "echo-pay", "kind": "gateway", "component": plugin_path("gateway_echo"),
    }))
    .unwrap()])
    .await;
    let r = app.get("/api/v1/plugins", ADMIN_KEY).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["data"][0]["kind"], "gateway");
    assert_eq!(r.json["data"][0]["plugin_name"], "gateway-echo");
    let r = app
        .post("/api/v1/plugins/echo-pay/check", ADMIN_KEY, json!({}))
        .await;
    assert_eq!(r.json["ok"], true, "{}", r.text);
    let r = app.get("/api/v1/plugins/echo-pay/catalog", ADMIN_KEY).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    // A gateway is never a processing module a plan could name.
    let r = app
        .post(
            "/api/v1/plans",
            ADMIN_KEY,
            json!({"name": "x", "product_type": "vps", "module": "echo-pay",
                   "prices": [{"period": "1m", "currency": "EUR", "amount": 100}]}),
        )
        .await;
    assert!(r.status.is_client_error(), "{}", r.text);
}

fn plugin_path(stem: &str) -> String {
    std::path::Path::new(builtin::WASM_DIR)
        .join(format!("{stem}.wasm"))
        .to_string_lossy()
        .into_owned()
}

/// The stripe gateway, loaded directly, with a webhook secret and no API
/// to reach.
async fn stripe_gateway() -> bursar::plugins::gateway::GatewayPlugin {
    let policy = HttpPolicy {
        instance: "stripe".into(),
        allowed: vec![],
        timeout: Duration::from_secs(5),
        max_response_bytes: 1 << 20,
    };
    bursar::plugins::gateway::GatewayPlugin::load(
        host(),
        "stripe",
        &wasm("stripe"),
        vec![
            ("secret_key".into(), "sk_test".into()),
            ("webhook_secrets".into(), "whsec_a,whsec_b".into()),
        ],
        policy,
        limits(5_000, 64),
    )
    .await
    .expect("load the stripe gateway")
}

fn stripe_callback(signature: String, body: Vec<u8>) -> bursar::payments::CallbackRequest {
    bursar::payments::CallbackRequest {
        method: "POST".into(),
        uri: "/api/v1/gateways/stripe/callback".into(),
        headers: vec![("stripe-signature".into(), signature)],
        body,
    }
}

#[tokio::test]
async fn stripe_reads_a_signature_header_strictly_so_a_forged_one_costs_nothing() {
    let stripe = stripe_gateway().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = vec![b'{'; 60 * 1024];
    let sig = "ab".repeat(32);
    for (header, why) in [
        (format!("t={now},{}", "v1=,".repeat(20_000)), "too long"),
        (format!("t={now},v1="), "not 64 hex digits"),
        (format!("t={now},v1=abcd"), "not 64 hex digits"),
        (
            format!("t={now},{}", format!("v1={sig},").repeat(5)),
            "too many signatures",
        ),
        (format!("t={now},t={now},v1={sig}"), "two timestamps"),
        (format!("t={now}"), "no v1 signature"),
        (format!("v1={sig}"), "no timestamp"),
    ] {
        let r = stripe
            .handle_callback(stripe_callback(header, body.clone()))
            .await;
        assert!(
            matches!(&r, Err(ModuleError::Rejected(m)) if m.contains(why)),
            "{why}: {r:?}"
        );
    }
    // Well-formed but wrong: refused after one MAC per secret.
    let r = stripe
        .handle_callback(stripe_callback(
            format!("t={now},v1={sig},v1={}", "cd".repeat(32)),
            body,
        ))
        .await;
    assert!(
        matches!(&r, Err(ModuleError::Rejected(m)) if m.contains("does not match")),
        "{r:?}"
    );
}

#[tokio::test]
async fn the_allow_list_cannot_be_walked_around() {
    let (addr, hits) = local_server().await;
    let port = addr.rsplit_once(':').unwrap().1.to_owned();
    let cases: [(&str, String); 5] = [
        // A bare host is the scheme's default port only.
        ("127.0.0.1", format!("http://127.0.0.1:{port}/ping")),
        // Other spellings of an allowed address are other hosts.
        (&addr, format!("http://2130706433:{port}/ping")),
        (&addr, format!("http://[::ffff:127.0.0.1]:{port}/ping")),
        (&addr, format!("http://0x7f.0.0.1:{port}/ping")),
        // A name that resolves to loopback is not the loopback address.
        ("localhost:*", format!("http://localhost:{port}/ping")),
    ];
    for (allowed, url) in cases {
        let plugin = hostile(&[allowed], limits(5_000, 64)).await;
        let r = plugin
            .lifecycle(&open_request(&[("mode", "http"), ("url", &url)]))
            .await;
        assert!(
            matches!(&r, Err(ModuleError::InvalidConfig(m)) if m.contains("allowed_hosts")),
            "{allowed} / {url}: {r:?}"
        );
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no request reached the server"
    );
    // Named explicitly, the address is reachable.
    let plugin = hostile(&[&addr], limits(5_000, 64)).await;
    let r = plugin
        .lifecycle(&open_request(&[
            ("mode", "http"),
            ("url", &format!("http://{addr}/ping")),
        ]))
        .await;
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test]
async fn a_component_whose_exports_have_the_wrong_types_is_refused_before_any_call() {
    let policy = HttpPolicy {
        instance: "wrong".into(),
        allowed: vec![],
        timeout: Duration::from_secs(5),
        max_response_bytes: 1 << 20,
    };
    let r = ProcessingPlugin::load(
        host(),
        "wrong",
        &wasm("wrong_signature"),
        vec![],
        policy,
        limits(5_000, 64),
    )
    .await;
    let Err(e) = r else {
        panic!("a component with the wrong types loaded")
    };
    let message = format!("{e:#}");
    // Refused by the type check, not by calling `info` (which panics).
    assert!(!message.contains("`info` failed"), "{message}");
    assert!(message.contains("wrong"), "{message}");
}

#[cfg(unix)]
#[test]
fn the_plugin_cache_loads_native_code_only_from_files_it_wrote() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let host = PluginHost::new(HostOptions {
        cache_dir: Some(cache.clone()),
        ..HostOptions::default()
    })
    .unwrap();
    let bytes = wasm("noop");
    host.compile("noop", &bytes).expect("compile and cache");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache), 0o700);
    let file = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .expect("a cached file");
    assert_eq!(mode(&file), 0o600);
    // Someone else could have written it: it is not loaded, but compiled
    // again and replaced.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::write(&file, b"not native code").unwrap();
    host.compile("noop", &bytes)
        .expect("refused the planted file and compiled anew");
    assert_eq!(mode(&file), 0o600);
    assert_ne!(std::fs::read(&file).unwrap(), b"not native code");
}
