//! The real `bursar` binary: start-up on an empty database, configuration
//! errors, help, migrate and admin-key creation.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bursar_tests::{ADMIN_KEY, TestApp};
use serde_json::json;

/// Builds the binary once (a no-op when it is fresh) and returns its path.
fn bursar_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "bursar",
                "--bin",
                "bursar",
                "--message-format=json",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build");
        assert!(out.status.success(), "cargo build failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "bursar")
            .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
            .next_back()
            .expect("cargo reported the bursar executable")
    })
}

/// Runs it, asserts it succeeded (showing its stderr if not), returns what it printed.
pub(crate) fn succeed(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run bursar");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) fn bursar(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(bursar_bin());
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("BURSAR_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

struct Server {
    child: Child,
    addr: String,
    stdout_lines: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `bursar serve` on a free port and waits for its address line.
fn serve(dir: &std::path::Path, envs: &[(&str, &str)]) -> Server {
    let mut cmd = bursar(dir);
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn bursar serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        seen.push(line.clone());
        if let Some(addr) = line.strip_prefix("Bursar listening on http://") {
            return Server {
                child,
                addr: addr.trim().to_owned(),
                stdout_lines: seen,
            };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("bursar serve did not start; stdout: {seen:?}");
}

#[tokio::test]
async fn serve_on_an_empty_database_creates_the_schema_and_prints_one_admin_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    assert!(
        dir.path().join("data/bursar.db").exists(),
        "the default SQLite file is created"
    );
    let key = server
        .stdout_lines
        .iter()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("bsr_adm_")))
        .expect("an admin key is printed")
        .to_owned();
    let client = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let created = client
        .post(format!("{base}/api/v1/accounts"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"email": "cli@example.com", "name": "CLI", "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    drop(server);

    // A second start finds the admin key and prints none.
    let again = serve(dir.path(), &[]);
    assert!(
        !again.stdout_lines.iter().any(|l| l.contains("bsr_adm_")),
        "{:?}",
        again.stdout_lines
    );
}

#[tokio::test]
async fn serve_registers_the_admin_key_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let key = "bsr_adm_from_env_0123456789abcdef";
    let server = serve(dir.path(), &[("BURSAR_ADMIN_KEY", key)]);
    assert!(!server.stdout_lines.iter().any(|l| l.contains("bsr_adm_")));
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/v1/accounts", server.addr))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn a_bad_configuration_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[database]\nurl = \"mysql://nope\"\n",
    )
    .unwrap();
    let out = bursar(dir.path())
        .args(["serve", "--config", "bad.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("database.url"));

    std::fs::write(dir.path().join("typo.toml"), "lisen = \"127.0.0.1:1\"\n").unwrap();
    let out = bursar(dir.path())
        .args(["migrate", "--config", "typo.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));

    let out = bursar(dir.path())
        .args(["migrate", "--config", "missing.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));

    let out = bursar(dir.path())
        .arg("migrate")
        .env("BURSAR_DATABASE_MAX_CONNECTIONS", "many")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("max_connections")
    );

    let out = bursar(dir.path())
        .arg("serve")
        .env("BURSAR_ADMIN_KEY", "short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("BURSAR_ADMIN_KEY"));
}

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["admin-key", "--help"],
        vec!["admin-key", "create", "--help"],
        vec!["automation", "run", "--help"],
    ] {
        let out = bursar(dir.path()).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

#[tokio::test]
async fn migrate_then_admin_key_create_gives_a_working_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = bursar(dir.path()).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bursar(dir.path())
        .args(["admin-key", "create", "--name", "ops"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(key.starts_with("bsr_adm_"), "{key}");
    let server = serve(dir.path(), &[]);
    assert!(
        !server.stdout_lines.iter().any(|l| l.contains("bsr_adm_")),
        "the created key counts as the admin key"
    );
    let r = reqwest::Client::new()
        .get(format!("http://{}/api/v1/accounts", server.addr))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

fn plugin_file(stem: &str) -> String {
    std::path::Path::new(bursar::plugins::builtin::WASM_DIR)
        .join(format!("{stem}.wasm"))
        .display()
        .to_string()
}

#[test]
fn plugin_check_names_the_missing_export_and_accepts_a_real_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let out = bursar(dir.path())
        .args(["plugin", "check", &plugin_file("not-a-plugin")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing export `bursar:plugin/processing@0.1.0`"),
        "{err}"
    );

    let out = succeed(bursar(dir.path()).args(["plugin", "check", &plugin_file("hostile")]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["plugin"]["name"], "hostile");
}

#[test]
fn plugin_info_reports_world_version_exports_and_imports() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        succeed(bursar(dir.path()).args(["plugin", "info", &plugin_file("example_processing")]));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["world"], "processing-module");
    assert_eq!(info["wit_version"], "0.1.0");
    assert_eq!(
        info["exports"],
        serde_json::json!(["bursar:plugin/processing@0.1.0"])
    );
    assert!(
        info["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "bursar:plugin/host@0.1.0")
    );
    assert_eq!(info["plugin"]["name"], "example-processing");
}

#[test]
fn plugin_call_runs_one_call_in_the_sandbox_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("svc.json"),
        r#"{"id": "svc_42", "account_email": "a@example.com", "addons": {"ips": 2}}"#,
    )
    .unwrap();
    let out = bursar(dir.path())
        .args([
            "plugin",
            "call",
            &plugin_file("example_processing"),
            "open",
            "--settings",
            "hostname_prefix=web",
        ])
        .args(["--service", "svc.json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["ok"], "done");
    assert_eq!(result["params"]["hostname"], "web-svc_42");

    let out = bursar(dir.path())
        .args([
            "plugin",
            "call",
            &plugin_file("hostile"),
            "open",
            "--settings",
            "mode=loop",
            "--timeout-ms",
            "300",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a failed call exits non-zero");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["error"], "timeout");
    assert_eq!(result["retried_by_bursar"], true);
}

#[test]
fn a_gateway_component_is_recognised_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = succeed(bursar(dir.path()).args(["plugin", "info", &plugin_file("gateway_echo")]));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["world"], "payment-gateway");
    assert_eq!(
        info["exports"],
        serde_json::json!(["bursar:plugin/gateway@0.1.0"])
    );
    let out = succeed(bursar(dir.path()).args(["plugin", "check", &plugin_file("gateway_echo")]));
    let checked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(checked["ok"], true);
    assert_eq!(checked["world"], "payment-gateway");
    assert_eq!(checked["plugin"]["name"], "gateway-echo");
}

#[tokio::test]
async fn automation_run_once_reconciles_pending_payments_and_runs_due_operations() {
    let bank = r#"
[[plugin]]
name = "bank"
kind = "gateway"
component = "builtin:bank-transfer"
[plugin.settings]
beneficiary = "Example Hosting Ltd"
iban = "DE02120300000000202051"
bic = "BYLADEM1001"
"#;
    let app = TestApp::with_plugins(&[serde_json::from_value(json!({
        "name": "bank", "kind": "gateway", "component": "builtin:bank-transfer",
        "settings": {"beneficiary": "Example Hosting Ltd", "iban": "DE02120300000000202051", "bic": "BYLADEM1001"},
    }))
    .unwrap()])
    .await;
    let acc = app.create_account("cron@example.com", "EUR", 0).await;
    app.credit(&acc, 5000, "EUR").await;
    let plan = app
        .create_plan(json!({
            "name": "By hand", "product_type": "vps", "module": "manual",
            "prices": [{"period": "1m", "currency": "EUR", "amount": 1000}],
        }))
        .await;
    let order = app.order(&acc, &plan, "1m").await;
    assert_eq!(order.json["status"], "opening", "{}", order.text);
    let payment = app
        .post(
            "/api/v1/payments",
            ADMIN_KEY,
            json!({"account_id": acc, "gateway": "bank", "amount": 2000, "currency": "EUR"}),
        )
        .await;
    assert_eq!(payment.json["status"], "pending", "{}", payment.text);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bursar.toml"), bank).unwrap();
    let out = succeed(
        bursar(dir.path())
            .args(["automation", "run", "--once", "--config", "bursar.toml"])
            .env("BURSAR_DATABASE_URL", app.db.url()),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The bank gateway still says pending: asked, nothing changed.
    assert_eq!(report["payments"]["checked"], 1, "{report}");
    assert_eq!(report["payments"]["changed"], 0, "{report}");
    // The order's `open` ran: the manual module hands it to staff.
    assert_eq!(report["operations_run"], 1, "{report}");
    let id = order.json["id"].as_str().unwrap();
    let ops = app
        .get(&format!("/api/v1/services/{id}/operations"), ADMIN_KEY)
        .await;
    assert_eq!(ops.json["data"][0]["status"], "manual", "{}", ops.text);
}

#[test]
fn automation_run_once_makes_one_pass_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = succeed(bursar(dir.path()).args(["automation", "run", "--once"]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["actions"], serde_json::json!({}));
    assert_eq!(report["failures"], serde_json::json!({}));
    assert_eq!(report["operations_run"], 0);
    assert_eq!(report["payments"]["checked"], 0);
    let out = bursar(dir.path())
        .args(["automation", "run"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--once"));
}

#[test]
fn what_a_plugin_prints_goes_to_the_log_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = succeed(bursar(dir.path()).env("RUST_LOG", "info").args([
        "plugin",
        "call",
        &plugin_file("hostile"),
        "open",
        "--settings",
        "mode=print",
    ]));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["ok"], "done", "{result}");
    let log = String::from_utf8_lossy(&out.stderr);
    for line in [
        "hello from the guest's stdout",
        "and from its stderr",
        "and through host.log",
    ] {
        let logged = log.lines().find(|l| l.contains(line));
        assert!(
            logged.is_some_and(|l| l.contains("plugin=hostile")),
            "{line:?} not logged with the plugin's name:\n{log}"
        );
    }
    // Printing is not an answer: the JSON on stdout holds the result only.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hello"));
}

/// The interfaces `bursar plugin info` says a plugin file imports.
fn imports_of(dir: &std::path::Path, plugin: &str) -> Vec<String> {
    let out = succeed(bursar(dir).args(["plugin", "info", &plugin_file(plugin)]));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    info["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_plugin_that_does_no_io_imports_neither_http_nor_the_filesystem() {
    // What a plugin imports is what each fresh instance has to wire up:
    // the SDK must not pull in interfaces a plugin does not use.
    let dir = tempfile::tempdir().unwrap();
    let imports = imports_of(dir.path(), "noop_sdk");
    for unused in [
        "wasi:http/",
        "wasi:filesystem/",
        "wasi:sockets/",
        "bursar:plugin/host",
    ] {
        assert!(
            !imports.iter().any(|i| i.starts_with(unused)),
            "{unused} imported: {imports:?}"
        );
    }
    // Without `std` there is no WASI libc either: nothing but the types.
    assert_eq!(
        imports_of(dir.path(), "noop"),
        ["bursar:plugin/types@0.1.0"]
    );
    // The plugin importing them for its HTTP modes does show them.
    let imports = imports_of(dir.path(), "hostile");
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:http/outgoing-handler")),
        "{imports:?}"
    );

    for plugin in ["noop", "noop_sdk"] {
        let out =
            succeed(bursar(dir.path()).args(["plugin", "call", &plugin_file(plugin), "open"]));
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(result["ok"], "done", "{plugin}: {result}");
        assert_eq!(result["params"]["opened_by"], "noop", "{plugin}: {result}");
        assert!(
            result["params"]["operation"]
                .as_str()
                .is_some_and(|op| op.starts_with("op_")),
            "{plugin}: {result}"
        );
        let out = bursar(dir.path())
            .args(["plugin", "call", &plugin_file(plugin), "suspend"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{plugin} only opens");
        let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(result["error"], "unsupported", "{plugin}: {result}");
    }
}

#[tokio::test]
async fn admin_key_lists_and_revokes_staff_keys_and_a_new_bursar_admin_key_retires_the_old() {
    let dir = tempfile::tempdir().unwrap();
    const FIRST: &str = "bsr_adm_first_0123456789abcdef0123456789";
    const SECOND: &str = "bsr_adm_second_0123456789abcdef012345678";
    let get = |addr: &str, key: &str| {
        let url = format!("http://{addr}/api/v1/staff-keys");
        let key = key.to_owned();
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    {
        let server = serve(dir.path(), &[("BURSAR_ADMIN_KEY", FIRST)]);
        assert_eq!(get(&server.addr, FIRST).await, 200);
    }
    let out = succeed(bursar(dir.path()).args([
        "admin-key",
        "create",
        "--role",
        "support",
        "--name",
        "helpdesk",
        "--expires-in-days",
        "30",
    ]));
    let support = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(support.starts_with("bsr_sup_"), "{support}");
    let server = serve(dir.path(), &[("BURSAR_ADMIN_KEY", SECOND)]);
    assert_eq!(
        get(&server.addr, FIRST).await,
        401,
        "the old value is revoked"
    );
    assert_eq!(get(&server.addr, SECOND).await, 200);
    assert_eq!(
        get(&server.addr, &support).await,
        403,
        "support manages no keys"
    );
    drop(server);
    let out = succeed(bursar(dir.path()).args(["admin-key", "list"]));
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        list.contains("helpdesk") && list.contains("support"),
        "{list}"
    );
    assert!(list.contains("BURSAR_ADMIN_KEY (managed)"), "{list}");
    assert!(!list.contains(&support), "secrets are never listed");
    let id = list
        .lines()
        .find(|l| l.contains("helpdesk"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    succeed(bursar(dir.path()).args(["admin-key", "revoke", &id]));
    let server = serve(dir.path(), &[("BURSAR_ADMIN_KEY", SECOND)]);
    assert_eq!(get(&server.addr, &support).await, 401, "revoked at once");
}

#[test]
fn a_broken_template_stops_serve_at_start_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("tpl/email/ru")).unwrap();
    std::fs::write(
        dir.path().join("tpl/email/ru/service_suspended.txt"),
        "{% block subject %}Приостановлено{% endblock %}\n{% block body %}\n{% if service.deletion_date %}\nне закрыто\n{% endblock %}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bursar.toml"),
        "[email]\ntemplates_dir = \"tpl\"\n",
    )
    .unwrap();
    let out = bursar(dir.path())
        .args([
            "--config",
            "bursar.toml",
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("tpl/email/ru/service_suspended.txt, line 5"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data/bursar.db").exists(),
        "stopped before opening the database"
    );

    // `notify preview` renders with the same templates, and says so too.
    let out = bursar(dir.path())
        .args([
            "--config",
            "bursar.toml",
            "notify",
            "preview",
            "welcome",
            "--lang",
            "ru",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    std::fs::remove_file(dir.path().join("tpl/email/ru/service_suspended.txt")).unwrap();
    let out = bursar(dir.path())
        .args([
            "--config",
            "bursar.toml",
            "notify",
            "preview",
            "welcome",
            "--lang",
            "ru",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("Subject: Добро пожаловать"), "{stdout}");
}

/// `bursar config check`, `audit`, `backup` and `restore` as an operator
/// types them, on SQLite and — when the suite runs against PostgreSQL — on
/// two scratch PostgreSQL databases (pg_dump / pg_restore).
#[tokio::test]
async fn config_check_audit_backup_and_restore_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], envs: &[(&str, String)]| {
        let mut cmd = bursar(dir.path());
        cmd.args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = run(&["config", "check"], &[]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("configuration is valid"), "{stdout}");
    assert!(
        !dir.path().join("data").exists(),
        "config check touches no database"
    );
    std::fs::write(
        dir.path().join("bad.toml"),
        "[[plugin]]\nname = \"x\"\nkind = \"processing\"\ncomponent = \"missing.wasm\"\n",
    )
    .unwrap();
    let (ok, _, stderr) = run(&["--config", "bad.toml", "config", "check"], &[]);
    assert!(!ok);
    assert!(stderr.contains("missing.wasm"), "{stderr}");

    let mut targets = vec![(
        vec![],
        vec![(
            "BURSAR_DATABASE_URL",
            "sqlite://restored/bursar.db".to_owned(),
        )],
    )];
    let pg = std::env::var("BURSAR_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if let Some(url) = &pg {
        let admin = sqlx::PgPool::connect(url).await.unwrap();
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let (src, dst) = (format!("bk_src_{suffix}"), format!("bk_dst_{suffix}"));
        for db in [&src, &dst] {
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&admin)
                .await
                .unwrap();
        }
        let base = url.rsplit_once('/').unwrap().0;
        targets.push((
            vec![("BURSAR_DATABASE_URL", format!("{base}/{src}"))],
            vec![("BURSAR_DATABASE_URL", format!("{base}/{dst}"))],
        ));
    }
    for (i, (source, target)) in targets.into_iter().enumerate() {
        let key = [(
            "BURSAR_ADMIN_KEY",
            "bsr_adm_cli_backup_key_0123456789".to_owned(),
        )];
        let source_env: Vec<(&str, String)> = source.into_iter().chain(key).collect();
        let (ok, _, stderr) = run(&["migrate"], &source_env);
        assert!(ok, "{stderr}");
        let (ok, stdout, stderr) = run(&["audit"], &source_env);
        assert!(ok, "{stderr}");
        assert!(stdout.contains("\"document_gaps\": []"), "{stdout}");
        let file = format!("backup-{i}.bin");
        let (ok, stdout, stderr) = run(&["backup", "--to", &file], &source_env);
        assert!(ok, "{stderr}");
        assert!(stdout.contains("keep the secrets key"), "{stdout}");
        let (ok, _, stderr) = run(&["backup", "--to", &file], &source_env);
        assert!(!ok && stderr.contains("never overwrites"), "{stderr}");
        let (ok, stdout, stderr) = run(&["restore", "--from", &file], &target);
        assert!(ok, "{stderr}");
        assert!(stdout.contains("restored"), "{stdout}");
        let (ok, _, stderr) = run(&["restore", "--from", &file], &target);
        assert!(!ok, "a second restore over the first is refused: {stderr}");
        let (ok, _, stderr) = run(&["audit"], &target);
        assert!(ok, "{stderr}");
    }
}

#[test]
fn the_demo_listens_where_told_and_leaves_nothing_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = bursar(dir.path())
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .args(["--simulator-listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let done = line.starts_with("Bursar listening on");
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.starts_with(&format!("DCImanager 6 simulator: http://127.0.0.1:{port}"))),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.contains(".eml files into")),
        "{seen:?}"
    );
    // The printed console logins work: the customer's, and the staff
    // admin's with a code from its TOTP secret.
    let line = |prefix: &str| {
        seen.iter()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line: {seen:?}"))
            .clone()
    };
    let word_after = |l: &str, w: &str| {
        l.split_whitespace()
            .skip_while(|x| *x != w)
            .nth(1)
            .unwrap()
            .trim_end_matches(')')
            .to_owned()
    };
    let portal = line("Customer portal:");
    let staff = line("Staff console:");
    let totp = line("the staff admin's TOTP secret:");
    let base = word_after(&portal, "portal:")
        .trim_end_matches('/')
        .to_owned();
    let secret = word_after(&totp, "secret:");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (page, email, password, code, home) in [
            (
                "/login",
                word_after(&portal, "as"),
                word_after(&portal, "password"),
                None,
                "/",
            ),
            (
                "/staff/login",
                word_after(&staff, "as"),
                word_after(&staff, "password"),
                bursar::console::auth::totp_code(&secret, chrono::Utc::now()),
                "/staff",
            ),
        ] {
            let client = reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let form = client
                .get(format!("{base}{page}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let token = form
                .split("name=\"form_token\" value=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap()
                .to_owned();
            let mut fields = vec![
                ("email", email),
                ("password", password),
                ("form_token", token),
            ];
            if let Some(code) = code {
                fields.push(("code", code));
            }
            let r = client
                .post(format!("{base}{page}"))
                .form(&fields)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 303, "{page}: {}", r.text().await.unwrap());
            assert_eq!(r.headers()["location"], home);
        }
    });
    // Stopped as an operator stops it.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn plugin_tools_say_what_a_file_is_and_honour_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let check = |file: &str| {
        let out = bursar(dir.path())
            .args(["plugin", "check", file])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    std::fs::write(dir.path().join("text.wat"), "(component)\n").unwrap();
    let err = check("text.wat");
    assert!(err.contains("WebAssembly text (.wat)"), "{err}");
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let err = check("core.wasm");
    assert!(
        err.contains("a core WebAssembly module, not a component"),
        "{err}"
    );
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let err = check("notes.txt");
    assert!(err.contains("not WebAssembly"), "{err}");
    assert_eq!(
        err.matches("not WebAssembly").count(),
        1,
        "said once: {err}"
    );
    // A wasmtime error is said once too, not once more as its cause.
    let err = check(&plugin_file("wrong_signature"));
    assert_eq!(err.matches("type mismatch").count(), 1, "said once: {err}");

    // `info` on a component that is not a plugin fails, saying why.
    let out = bursar(dir.path())
        .args(["plugin", "info", &plugin_file("not-a-plugin")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(info["error"].as_str().unwrap().contains("exports neither"));

    // More memory than the default pool's 512 MiB is given, not capped.
    let out = succeed(bursar(dir.path()).args([
        "plugin",
        "call",
        &plugin_file("example_processing"),
        "info",
        "--memory-mb",
        "1024",
        "--max-response-bytes",
        "1024",
        "--operation-id",
        "op_retry_1",
    ]));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["name"], "example-processing");
}

/// Copies `from` into `to`, leaving out build output.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name();
        if name == "target" {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if src.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// docs/PLUGINS.md as an author follows it, on a scratch copy of the
/// plugins workspace: copy the template, add it to the members, put the
/// guide's code and dependencies in, build with the guide's command, and
/// `bursar plugin check` the result.
#[test]
fn the_plugin_guide_builds_a_module_from_the_template() {
    if std::env::var("BURSAR_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        // The same on either backend: once, in the SQLite run, is enough.
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let guide = std::fs::read_to_string(root.join("docs/PLUGINS.md")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path();
    copy_tree(&root.join("plugins"), &work.join("plugins"));
    copy_tree(&root.join("wit"), &work.join("wit"));
    std::fs::copy(
        root.join("rust-toolchain.toml"),
        work.join("rust-toolchain.toml"),
    )
    .unwrap();

    // Step 1: the template, renamed, in the workspace, with the guide's
    // dependencies.
    let module = work.join("plugins/my-module");
    copy_tree(&work.join("plugins/example-processing"), &module);
    let manifest = std::fs::read_to_string(module.join("Cargo.toml")).unwrap();
    let deps = guide
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap()
        .trim()
        .to_owned();
    assert!(deps.starts_with("[dependencies]"), "{deps}");
    let manifest = manifest.replace("name = \"example-processing\"", "name = \"my-module\"");
    let manifest = manifest.split("[dependencies]").next().unwrap().to_owned() + &deps + "\n";
    std::fs::write(module.join("Cargo.toml"), manifest).unwrap();
    let workspace = std::fs::read_to_string(work.join("plugins/Cargo.toml")).unwrap();
    std::fs::write(
        work.join("plugins/Cargo.toml"),
        workspace.replacen("members = [", "members = [\"my-module\", ", 1),
    )
    .unwrap();
    // Step 2: the guide's code.
    let code = guide
        .split("```rust\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    let code: String = code
        .lines()
        .map(|l| l.strip_prefix("   ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(module.join("src/lib.rs"), code).unwrap();
    // Step 3: the guide's build command, as written.
    let command = guide
        .lines()
        .find_map(|l| {
            let l = l.trim().trim_matches('`');
            l.starts_with("cargo build --release --target wasm32-wasip2")
                .then_some(l)
        })
        .unwrap();
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(&args)
        .current_dir(work)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Step 4: check it the way `serve` will.
    let wasm = work.join("plugins/target/wasm32-wasip2/release/my_module.wasm");
    let out = succeed(bursar(work).args(["plugin", "check", &wasm.to_string_lossy()]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["plugin"]["name"], "my-module");
}

/// The SDK sends a known body with its length (servers that do not read
/// chunked bodies see it whole), and a module that does not implement
/// `check-connection` says so instead of answering ok without asking.
#[tokio::test]
async fn the_sdk_sends_content_length_and_defaults_to_unsupported() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the head, then exactly Content-Length bytes of body.
        let (head, mut body) = loop {
            let n = s.read(&mut buf).await.unwrap();
            seen.extend_from_slice(&buf[..n]);
            if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                break (
                    String::from_utf8_lossy(&seen[..i]).to_lowercase(),
                    seen[i + 4..].to_vec(),
                );
            }
            assert!(n > 0, "closed before the head ended");
        };
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while body.len() < length {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            body.extend_from_slice(&buf[..n]);
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(reply.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
        head
    });
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || {
            succeed(bursar(&dir).args([
                "plugin",
                "call",
                &plugin_file("hostile"),
                "open",
                "--settings",
                "mode=post",
                &format!("url=http://{addr}/servers"),
                "--allow-host",
                &addr.to_string(),
            ]))
        }
    })
    .await
    .unwrap();
    let head = server.await.unwrap();
    assert!(head.contains("content-length: 17"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["params"]["body"], r#"{"hello":"world"}"#);

    let out = bursar(dir.path())
        .args([
            "plugin",
            "call",
            &plugin_file("noop_sdk"),
            "check-connection",
        ])
        .output()
        .unwrap();
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["error"], "unsupported", "{result}");
}

/// `bursar plugin new` makes a crate outside the repository that builds
/// with one command and passes `plugin check` as generated, for either
/// world.
#[test]
fn plugin_new_makes_a_standalone_crate_that_builds_and_checks() {
    if std::env::var("BURSAR_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        return; // backend-independent: the SQLite run covers it
    }
    let dir = tempfile::tempdir().unwrap();
    let shared_target = dir.path().join("target");
    for (name, kind, world) in [
        ("acme-dc", "processing", "processing-module"),
        ("acme-pay", "gateway", "payment-gateway"),
    ] {
        let out = succeed(bursar(dir.path()).args(["plugin", "new", name, "--kind", kind]));
        let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            made["build"]
                .as_str()
                .unwrap()
                .ends_with("cargo build --release")
        );
        let crate_dir = dir.path().join(name);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "--release"])
            .current_dir(&crate_dir)
            .env("CARGO_TARGET_DIR", &shared_target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
        let wasm = shared_target.join(format!(
            "wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ));
        let out = succeed(bursar(dir.path()).args(["plugin", "check", &wasm.to_string_lossy()]));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["ok"], true);
        assert_eq!(report["world"], world);
        assert_eq!(report["plugin"]["name"], name);
    }
    // A name taken, or not a name, is refused.
    for bad in ["acme-dc", "Acme", "../x"] {
        let out = bursar(dir.path())
            .args(["plugin", "new", bad, "--kind", "processing"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
    }
}
