//! The DCImanager 6 module end to end: the HTTP API, the real plugin
//! compiled to wasm and loaded by the plugin host, and the DCImanager 6
//! simulator over HTTP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bursar_tests::{ADMIN_KEY, TestApp};
use dcimanager6_sim::{Faults, Fixture, Running};
use serde_json::{Value, json};

/// A data centre with one location, one rack and `servers` servers of one
/// configuration, and the given `[[pools]]` (TOML).
pub(crate) fn fixture(servers: u64, pools: &str) -> Fixture {
    let mut text = String::from(
        r#"
[settings]
install_delay_ms = 150
token_ttl_secs = 3600

[admin]
email = "billing@dci.test"
password = "pw-billing"

[[locations]]
id = 1
name = "Lab"

[[racks]]
id = 7
name = "R7"
location = 1

[[os]]
id = 4
name = "Debian 12"

[[scripts]]
id = 1
name = "Docker"
access = "all"

[[scripts]]
id = 2
name = "Firmware flash"
access = "admin"

[[pools]]
id = 90
name = "technical"
cidrs = ["10.90.0.0/28"]
role = "deallocation"
"#,
    );
    for id in 1..=servers {
        text.push_str(&format!(
            "\n[[servers]]\nid = {id}\nconfiguration = \"X1\"\nlocation = 1\nrack = 7\nswitch_ports = 2\n"
        ));
    }
    text.push_str(pools);
    Fixture::parse(&text).expect("test fixture")
}

pub(crate) const RACK_POOL: &str =
    "\n[[pools]]\nid = 1\nname = \"rack-7\"\ncidrs = [\"10.1.0.0/28\"]\nrack = 7\n";
const LOCATION_POOL: &str =
    "\n[[pools]]\nid = 2\nname = \"lab\"\ncidrs = [\"10.2.0.0/28\"]\nlocation = 1\n";
const PUBLIC_POOL: &str = "\n[[pools]]\nid = 3\nname = \"Public-v4\"\ncidrs = [\"10.3.0.0/28\"]\n";
const RACK_V6_POOL: &str =
    "\n[[pools]]\nid = 4\nname = \"rack-7-v6\"\ncidrs = [\"2001:db8:7::/120\"]\nrack = 7\n";
const LOCATION_V6_POOL: &str =
    "\n[[pools]]\nid = 5\nname = \"lab-v6\"\ncidrs = [\"2001:db8:1::/120\"]\nlocation = 1\n";

struct Lab {
    app: TestApp,
    sim: Running,
    account: String,
    plan: String,
}

async fn lab(fixture: Fixture, retry_budget_ms: u64) -> Lab {
    lab_selling(
        fixture,
        retry_budget_ms,
        json!({"configuration": "X1", "location": "1", "os_template": "4", "ip_count": "2"}),
    )
    .await
}

/// A lab whose plan has these module settings.
async fn lab_selling(fixture: Fixture, retry_budget_ms: u64, settings: Value) -> Lab {
    let admin = fixture.admin.clone();
    let sim = dcimanager6_sim::spawn(fixture, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator");
    let config: bursar::plugins::instances::PluginConfig = serde_json::from_value(json!({
        "name": "dci",
        "kind": "processing",
        "component": "builtin:dcimanager6",
        "allowed_hosts": [sim.addr.to_string()],
        "timeout_ms": 20_000,
        "settings": {
            "url": sim.url(),
            "email": admin.email,
            "password": admin.password,
            "poll_ms": "100",
            "retry_budget_ms": retry_budget_ms.to_string(),
            "domain_template": "@ID@.lab.test",
        },
    }))
    .unwrap();
    let app = TestApp::with_plugins(&[config]).await;
    let plan = app
        .create_plan(json!({
            "name": "Dedicated X1",
            "product_type": "dedicated_server",
            "module": "dci",
            "module_settings": settings,
            "prices": [{"period": "1m", "currency": "EUR", "amount": 9900}],
            "addons": [{"kind": "boolean", "code": "script-1", "name": "Docker"}],
        }))
        .await;
    let account = app.create_account("ops@customer.test", "EUR", 0).await;
    app.credit(&account, 100_000, "EUR").await;
    Lab {
        app,
        sim,
        account,
        plan,
    }
}

impl Lab {
    async fn order(&self) -> String {
        let r = self.app.order(&self.account, &self.plan, "1m").await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert_eq!(r.json["status"], "opening");
        r.json["id"].as_str().unwrap().to_owned()
    }

    /// Runs operations, moving the clock on, until the service leaves
    /// `from` (or the real-time deadline passes).
    async fn settle(&self, id: &str, from: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.app.run_operations().await;
            let service = self.app.service(id).await;
            if service["status"] != from || Instant::now() > deadline {
                return service;
            }
            self.app.clock.advance(chrono::Duration::seconds(2));
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }

    async fn operations(&self, id: &str) -> Vec<Value> {
        let r = self
            .app
            .get(&format!("/api/v1/services/{id}/operations"), ADMIN_KEY)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json["data"].as_array().unwrap().clone()
    }

    async fn action(&self, id: &str, action: &str, body: Value) {
        let r = self
            .app
            .post(&format!("/api/v1/services/{id}/{action}"), ADMIN_KEY, body)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{action}: {}", r.text);
    }

    fn server(&self, id: u64) -> Value {
        self.sim.sim.server(id)
    }

    async fn charges(&self) -> usize {
        self.app.ledger_count(&self.account, "charge").await
    }
}

fn addresses(server: &Value) -> Vec<String> {
    server["ip"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The customer's switch ports (not the BMC's).
fn ports(server: &Value) -> Vec<String> {
    server["switch_connection"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["is_ipmi_connection"] != true)
        .map(|c| c["admin_status"].as_str().unwrap().to_owned())
        .collect()
}

/// The BMC's port.
fn ipmi_port(server: &Value) -> String {
    server["switch_connection"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["is_ipmi_connection"] == true)
        .map(|c| c["admin_status"].as_str().unwrap().to_owned())
        .expect("the server's BMC has a switch connection")
}

/// Order → opening → active, and which pool the addresses came from.
async fn provisioned_addresses(pools: &str) -> (Lab, Value) {
    let lab = lab(fixture(1, pools), 5_000).await;
    let id = lab.order().await;
    let service = lab.settle(&id, "opening").await;
    assert_eq!(service["status"], "active", "{service}");
    (lab, service)
}

#[tokio::test]
async fn addresses_come_from_the_rack_pool_when_the_rack_has_one() {
    let (lab, service) =
        provisioned_addresses(&[RACK_POOL, LOCATION_POOL, PUBLIC_POOL].concat()).await;
    let server = lab.server(1);
    let ips = addresses(&server);
    assert_eq!(ips.len(), 2, "the plan's two addresses: {ips:?}");
    assert!(ips.iter().all(|a| a.starts_with("10.1.0.")), "{ips:?}");
    assert_eq!(service["params"]["server_id"], "1");
    assert_eq!(service["params"]["ips"], ips.join(","));
    assert_eq!(service["params"]["os"], "Debian 12");
    assert_eq!(server["owner_email"], "ops@customer.test");
    assert!(
        server["domain"].as_str().unwrap().ends_with(".lab.test"),
        "{server}"
    );
    assert_eq!(ports(&server), ["up", "up"]);
    assert!(
        service["params"].get("root_password").is_none(),
        "the root password is a secret param, never shown with the service"
    );
    // The password the install got is the one the service keeps as a secret.
    let installs = lab.sim.sim.snapshot()["installs"].clone();
    assert_eq!(installs.as_array().unwrap().len(), 1);
    assert!(installs[0]["password"].as_str().unwrap().len() >= 16);
}

#[tokio::test]
async fn without_a_rack_pool_addresses_come_from_the_location_pool_never_an_ipv6_only_one() {
    let (lab, _) =
        provisioned_addresses(&[RACK_V6_POOL, LOCATION_POOL, PUBLIC_POOL].concat()).await;
    let ips = addresses(&lab.server(1));
    assert_eq!(ips.len(), 2);
    assert!(ips.iter().all(|a| a.starts_with("10.2.0.")), "{ips:?}");
}

#[tokio::test]
async fn with_only_a_public_pool_addresses_come_from_it() {
    let (lab, _) = provisioned_addresses(&[LOCATION_V6_POOL, PUBLIC_POOL].concat()).await;
    let ips = addresses(&lab.server(1));
    assert_eq!(ips.len(), 2);
    assert!(ips.iter().all(|a| a.starts_with("10.3.0.")), "{ips:?}");
}

#[tokio::test]
async fn suspend_resume_and_close_drive_ports_owner_addresses_and_power() {
    let (lab, service) = provisioned_addresses(RACK_POOL).await;
    let id = service["id"].as_str().unwrap().to_owned();
    let given: Vec<String> = addresses(&lab.server(1));

    lab.action(&id, "suspend", json!({"reason": "admin"})).await;
    lab.app.run_operations().await;
    assert_eq!(lab.app.service(&id).await["status"], "suspended");
    let server = lab.server(1);
    assert_eq!(ports(&server), ["down", "down"]);
    assert_eq!(ipmi_port(&server), "up", "the BMC's port is left alone");
    assert_eq!(
        server["power_status"], "on",
        "suspension keeps the power on"
    );

    lab.action(&id, "resume", json!({})).await;
    lab.app.run_operations().await;
    assert_eq!(lab.app.service(&id).await["status"], "active");
    assert_eq!(ports(&lab.server(1)), ["up", "up"]);
    assert_eq!(ipmi_port(&lab.server(1)), "up");

    lab.action(&id, "close", json!({})).await;
    lab.app.run_operations().await;
    assert_eq!(lab.app.service(&id).await["status"], "closed");
    let server = lab.server(1);
    assert_eq!(server["owner_email"], Value::Null);
    assert_eq!(server["power_status"], "off");
    assert_eq!(ports(&server), ["down", "down"]);
    assert_eq!(ipmi_port(&server), "up", "closing leaves the BMC reachable");
    let now: Vec<String> = addresses(&server);
    assert!(
        now.iter().all(|a| a.starts_with("10.90.0.")),
        "only a technical address from the deallocation pool is left: {now:?}"
    );
    let assigned: Vec<String> = lab.sim.sim.snapshot()["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        given.iter().all(|a| !assigned.contains(a)),
        "{given:?} are back in the pool"
    );
    assert_eq!(lab.charges().await, 1);
    lab.app.assert_ledger_clean().await;
}

#[tokio::test]
async fn a_503_storm_within_the_retry_budget_is_ridden_out_in_one_call() {
    let lab = lab(fixture(1, RACK_POOL), 5_000).await;
    lab.sim.sim.set_faults(Faults {
        unavailable_next: 3,
        ..Faults::default()
    });
    let id = lab.order().await;
    let service = lab.settle(&id, "opening").await;
    assert_eq!(service["status"], "active", "{service}");
    let open = &lab.operations(&id).await[0];
    assert_eq!(open["kind"], "open");
    assert_eq!(open["attempts"], 1, "no engine retry was needed: {open}");
}

#[tokio::test]
async fn a_503_storm_longer_than_the_budget_is_retried_by_the_engine_then_opens() {
    let lab = lab(fixture(1, RACK_POOL), 500).await;
    lab.sim.sim.set_faults(Faults {
        unavailable_next: 8,
        ..Faults::default()
    });
    let id = lab.order().await;
    lab.app.run_operations().await;
    let open = lab.operations(&id).await[0].clone();
    assert_eq!(open["status"], "queued", "{open}");
    assert_eq!(open["error_kind"], "unavailable");
    assert!(
        open["last_error"].as_str().unwrap().contains("503"),
        "{open}"
    );
    let service = lab.settle(&id, "opening").await;
    assert_eq!(service["status"], "active", "{service}");
    let open = lab.operations(&id).await[0].clone();
    assert!(open["attempts"].as_i64().unwrap() > 1, "{open}");
    assert_eq!(lab.charges().await, 1);
}

#[tokio::test]
async fn a_failed_install_goes_to_staff_with_dcimanagers_message_and_a_retry_finishes_it() {
    let lab = lab(fixture(2, RACK_POOL), 5_000).await;
    lab.sim.sim.set_faults(Faults {
        fail_next_install: Some("Disk /dev/sda not found".into()),
        ..Faults::default()
    });
    let id = lab.order().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let open = loop {
        lab.app.run_operations().await;
        let open = lab.operations(&id).await[0].clone();
        if open["status"] == "manual" || Instant::now() > deadline {
            break open;
        }
        lab.app.clock.advance(chrono::Duration::seconds(2));
        tokio::time::sleep(Duration::from_millis(40)).await;
    };
    assert_eq!(open["status"], "manual", "{open}");
    assert_eq!(open["error_kind"], "rejected");
    assert!(
        open["last_error"]
            .as_str()
            .unwrap()
            .contains("Disk /dev/sda not found"),
        "{open}"
    );
    assert_eq!(lab.app.service(&id).await["status"], "opening");

    let r = lab
        .app
        .post(
            &format!("/api/v1/operations/{}/retry", open["id"].as_str().unwrap()),
            ADMIN_KEY,
            json!({}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let service = lab.settle(&id, "opening").await;
    assert_eq!(service["status"], "active", "{service}");
    assert_eq!(
        service["params"]["server_id"], "1",
        "the retry reinstalled the server it had taken, not a second one"
    );
    assert_eq!(lab.server(2)["owner_email"], Value::Null);
    assert_eq!(
        lab.sim.sim.snapshot()["installs"].as_array().unwrap().len(),
        2
    );
    assert_eq!(lab.charges().await, 1, "nothing charged twice");
    lab.app.assert_ledger_clean().await;
}

#[tokio::test]
async fn an_expired_token_mid_call_is_renewed_by_logging_in_again() {
    let lab = lab(fixture(1, RACK_POOL), 5_000).await;
    lab.sim.sim.set_faults(Faults {
        expire_tokens_after: Some(2),
        ..Faults::default()
    });
    let id = lab.order().await;
    lab.app.runner().run_once().await.unwrap();
    let open = lab.operations(&id).await[0].clone();
    assert_eq!(open["status"], "waiting", "open went through: {open}");
    assert_eq!(
        lab.sim.sim.logins(),
        2,
        "one login, one re-login after the 401"
    );
    let service = lab.settle(&id, "opening").await;
    assert_eq!(service["status"], "active", "{service}");
}

#[tokio::test]
async fn no_free_server_is_a_clear_error_the_charge_is_held_and_the_order_opens_once_one_is_free() {
    let lab = lab(fixture(1, RACK_POOL), 5_000).await;
    let first = lab.order().await;
    assert_eq!(lab.settle(&first, "opening").await["status"], "active");
    let before = lab.app.balance(&lab.account).await;

    let second = lab.order().await;
    lab.app.run_operations().await;
    let open = lab.operations(&second).await[0].clone();
    assert_eq!(open["status"], "queued", "{open}");
    assert_eq!(open["error_kind"], "unavailable");
    let message = open["last_error"].as_str().unwrap();
    assert!(
        message.contains("no free server with configuration `X1` in location 1"),
        "{message}"
    );
    let held = lab.app.service(&second).await;
    assert_eq!(held["status"], "opening");
    assert_eq!(held["paid_until"], Value::Null, "paid time has not started");
    assert_eq!(
        lab.app.balance(&lab.account).await,
        before - 9900,
        "charged once and held"
    );

    // A server comes free: the waiting order gets it.
    lab.action(&first, "close", json!({})).await;
    lab.app.run_operations().await;
    lab.app.clock.advance(chrono::Duration::minutes(11));
    let service = lab.settle(&second, "opening").await;
    assert_eq!(service["status"], "active", "{service}");
    assert_eq!(service["params"]["server_id"], "1");
    assert_eq!(lab.charges().await, 2, "one charge per order");
    lab.app.assert_ledger_clean().await;
}

#[tokio::test]
async fn the_catalog_offers_configurations_templates_and_only_scripts_open_to_all() {
    let lab = lab(fixture(3, RACK_POOL), 5_000).await;
    let r = lab.app.get("/api/v1/plugins/dci/catalog", ADMIN_KEY).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let items = r.json["data"].as_array().unwrap();
    let config = items.iter().find(|i| i["kind"] == "configuration").unwrap();
    assert_eq!(config["details"]["configuration"], "X1");
    assert_eq!(config["details"]["location"], "1");
    assert_eq!(config["details"]["free_server_count"], "3");
    assert!(
        items
            .iter()
            .any(|i| i["kind"] == "os-template" && i["id"] == "4")
    );
    let addons: Vec<&str> = items
        .iter()
        .filter(|i| i["kind"] == "addon")
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        addons,
        ["script-1"],
        "the admin-only script is never offered"
    );

    let r = lab
        .app
        .post("/api/v1/plugins/dci/check", ADMIN_KEY, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["ok"], true, "{}", r.text);
}

#[tokio::test]
async fn the_simulator_requires_the_token_and_never_hands_out_an_address_twice() {
    let sim = dcimanager6_sim::spawn(
        fixture(2, PUBLIC_POOL),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/api/dci/v3/server", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let token = http
        .post(format!("{}/api/auth/v4/public/token", sim.url()))
        .json(&json!({"email": "billing@dci.test", "password": "pw-billing"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let authed = |req: reqwest::RequestBuilder| {
        req.header("x-xsrf-token", &token)
            .header("cookie", format!("ses6={token}"))
    };
    // Header without the cookie is not enough.
    let r = http
        .get(format!("{}/api/dci/v3/server", sim.url()))
        .header("x-xsrf-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let mut seen = std::collections::BTreeSet::new();
    for server in [1, 2] {
        let r = authed(http.post(format!("{}/api/dci/v3/server/{server}/ip", sim.url())))
            .json(&json!({"count": 6, "family": "ipv4"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        for ip in r.json::<Value>().await.unwrap()["list"].as_array().unwrap() {
            assert!(seen.insert(ip["name"].as_str().unwrap().to_owned()), "{ip}");
        }
    }
    // A /28 has 13 host addresses; 12 are taken, 2 more do not fit.
    let r = authed(http.post(format!("{}/api/dci/v3/server/1/ip", sim.url())))
        .json(&json!({"count": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let filtered = authed(http.get(format!(
        "{}/api/dci/v3/server?where=(owner_email IS null) AND id EQ 2",
        sim.url()
    )))
    .send()
    .await
    .unwrap()
    .json::<Value>()
    .await
    .unwrap();
    assert_eq!(filtered["size"], 1);
    assert_eq!(filtered["list"][0]["id"], 2);
}

#[tokio::test]
async fn the_module_knows_its_customer_by_the_user_it_created_not_by_an_e_mail_they_can_change() {
    let lab = lab(fixture(3, RACK_POOL), 5_000).await;
    let first = lab.order().await;
    assert_eq!(lab.settle(&first, "opening").await["status"], "active");
    let kept = lab
        .app
        .db
        .count(&format!(
            "SELECT CAST(value AS BIGINT) FROM account_module_params
             WHERE account_id = '{}' AND module = 'dci' AND key = 'dci_user_id'",
            lab.account
        ))
        .await;
    assert!(kept > 0, "the module's user id is kept for the customer");
    // Someone else's DCImanager user; the customer takes that address.
    let victim = lab.sim.sim.add_user("victim@other.test");
    let key = lab.app.customer_key(&lab.account).await;
    let r = lab
        .app
        .request(
            axum::http::Method::PATCH,
            &format!("/api/v1/accounts/{}", lab.account),
            Some(&key),
            Some(json!({"email": "victim@other.test"})),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let second = lab.order().await;
    assert_eq!(lab.settle(&second, "opening").await["status"], "active");
    let servers = lab.sim.sim.snapshot()["servers"].clone();
    let owned_by = |email: &str| {
        servers
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["owner_email"] == email)
            .count()
    };
    assert_eq!(
        owned_by("ops@customer.test"),
        2,
        "both servers to the customer's own user: {servers}"
    );
    assert_eq!(owned_by("victim@other.test"), 0);
    assert!(victim > 0);

    // A new customer whose e-mail an unrelated DCImanager user has gets no
    // server of that user's: the open waits for staff to decide.
    lab.sim.sim.add_user("legacy@other.test");
    let stranger = lab.app.create_account("legacy@other.test", "EUR", 0).await;
    lab.app.credit(&stranger, 100_000, "EUR").await;
    let r = lab.app.order(&stranger, &lab.plan, "1m").await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    lab.app.run_operations().await;
    let ops = lab.operations(&id).await;
    assert_eq!(ops[0]["error_kind"], "unavailable", "{ops:?}");
    assert!(
        ops[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("adopt_existing_users")
    );
    let servers = lab.sim.sim.snapshot()["servers"].clone();
    assert!(
        servers
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["owner_email"] != "legacy@other.test"),
        "{servers}"
    );
}

/// Servers of one configuration, only the last of which may be given out.
const UNTAKEABLE: &str = r#"
[[servers]]
id = 1
configuration = "X1"
location = 1
rack = 7
diagnostics = "running"

[[servers]]
id = 2
configuration = "X1"
location = 1
rack = 7
maintenance = true

[[servers]]
id = 3
configuration = "X1"
location = 1
rack = 7
error = "memory test failed"

[[servers]]
id = 4
configuration = "X1"
location = 1
rack = 7
last_operation = "failed"

[[servers]]
id = 5
configuration = "X1"
location = 1
rack = 7
last_operation = "running"

[[servers]]
id = 6
configuration = "X1"
location = 1
rack = 7
last_operation = "canceled"
"#;

#[tokio::test]
async fn only_a_server_free_by_the_documented_rule_is_taken() {
    let mut f = fixture(0, RACK_POOL);
    let extra = Fixture::parse(&format!(
        "[admin]\nemail = \"x@y.z\"\npassword = \"p\"\n[[locations]]\nid = 1\nname = \"Lab\"\n[[racks]]\nid = 7\nname = \"R7\"\nlocation = 1\n{UNTAKEABLE}"
    ))
    .unwrap();
    f.servers = extra.servers;
    let lab = lab(f, 5_000).await;
    let catalog = lab.app.get("/api/v1/plugins/dci/catalog", ADMIN_KEY).await;
    let x1 = catalog.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "configuration")
        .cloned()
        .unwrap();
    assert_eq!(x1["details"]["free_server_count"], "1", "{x1}");
    let id = lab.order().await;
    let service = lab.settle(&id, "opening").await;
    assert_eq!(service["status"], "active", "{service}");
    assert_eq!(service["params"]["server_id"], "6");
    for untouched in 1..=5 {
        assert_eq!(
            lab.server(untouched)["owner_email"],
            Value::Null,
            "server {untouched}"
        );
    }
    // None left: the next order waits with a clear reason.
    let next = lab.order().await;
    lab.app.run_operations().await;
    let ops = lab.operations(&next).await;
    assert_eq!(ops[0]["error_kind"], "unavailable");
    assert!(
        ops[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("no free server")
    );
}

const DUAL_STACK_RACK_POOL: &str = "\n[[pools]]\nid = 1\nname = \"rack-7\"\ncidrs = [\"10.1.0.0/28\", \"2001:db8:7::/120\"]\nrack = 7\n";

#[tokio::test]
async fn a_dual_stack_pool_gives_ipv4_and_ipv6_and_the_service_shows_both() {
    let (lab, service) = provisioned_addresses(DUAL_STACK_RACK_POOL).await;
    let ips = addresses(&lab.server(1));
    let v4: Vec<&String> = ips.iter().filter(|a| a.starts_with("10.1.0.")).collect();
    let v6: Vec<&String> = ips
        .iter()
        .filter(|a| a.starts_with("2001:db8:7::"))
        .collect();
    assert_eq!(v4.len(), 2, "the plan's two IPv4 addresses: {ips:?}");
    assert_eq!(v6.len(), 1, "and one IPv6: {ips:?}");
    assert_eq!(service["params"]["ipv6"], v6[0].as_str());
    assert_eq!(service["params"]["ips"], ips.join(","));
    assert_eq!(service["params"]["primary_ip"], v4[0].as_str());
}

#[tokio::test]
async fn the_demo_rack_pool_gives_a_server_both_families() {
    let lab = lab_selling(
        Fixture::demo(),
        5_000,
        json!({"configuration": "E3-1230v6-32GB-2x480SSD", "location": "1", "os_template": "1"}),
    )
    .await;
    lab.sim.sim.set_install_delay(Duration::from_millis(100));
    let id = lab.order().await;
    let service = lab.settle(&id, "opening").await;
    assert_eq!(service["status"], "active", "{service}");
    assert!(
        service["params"]["primary_ip"]
            .as_str()
            .unwrap()
            .starts_with("198.51.100."),
        "{service}"
    );
    assert!(
        service["params"]["ipv6"]
            .as_str()
            .unwrap()
            .starts_with("2001:db8:a01::"),
        "{service}"
    );
}

#[tokio::test]
async fn drift_between_a_service_and_its_server_is_found_and_repaired() {
    let (lab, service) = provisioned_addresses(RACK_POOL).await;
    let id = service["id"].as_str().unwrap().to_owned();
    // Someone switched the server off and pulled its ports down in
    // DCImanager: the service is still active.
    lab.sim.sim.set_power(1, false);
    lab.sim.sim.set_uplinks(1, "down");
    let r = lab
        .app
        .post(&format!("/api/v1/services/{id}/sync"), ADMIN_KEY, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    lab.app.run_operations().await;
    let server = lab.server(1);
    assert_eq!(server["power_status"], "on");
    assert_eq!(ports(&server), ["up", "up"]);
    let events = lab
        .app
        .get(&format!("/api/v1/services/{id}/events"), ADMIN_KEY)
        .await;
    let sync = events.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["action"] == "sync")
        .cloned()
        .expect("what was repaired is recorded");
    assert_eq!(sync["detail"], "drift repaired: 2 port(s) up, powered on");

    // Suspended, with its ports up again behind the engine's back: the
    // scheduled sync takes them down; the BMC stays up.
    lab.action(&id, "suspend", json!({"reason": "admin"})).await;
    lab.app.run_operations().await;
    lab.sim.sim.set_uplinks(1, "up");
    let config = bursar::automation::AutomationConfig {
        sync_interval_secs: 3_600,
        ..Default::default()
    };
    lab.app.clock.advance(chrono::Duration::hours(2));
    let queued = bursar::automation::schedule_syncs(
        lab.app.store(),
        &lab.app.modules,
        &config,
        bursar::clock::Clock::now(&*lab.app.clock),
    )
    .await
    .unwrap();
    assert_eq!(queued, 1);
    lab.app.run_operations().await;
    let server = lab.server(1);
    assert_eq!(ports(&server), ["down", "down"]);
    assert_eq!(ipmi_port(&server), "up");
    // In step again: nothing to repair, nothing recorded, not due again yet.
    let before = lab
        .app
        .get(&format!("/api/v1/services/{id}/events"), ADMIN_KEY)
        .await
        .json["data"]
        .as_array()
        .unwrap()
        .len();
    lab.app
        .post(&format!("/api/v1/services/{id}/sync"), ADMIN_KEY, json!({}))
        .await;
    lab.app.run_operations().await;
    let after = lab
        .app
        .get(&format!("/api/v1/services/{id}/events"), ADMIN_KEY)
        .await
        .json["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
    let queued = bursar::automation::schedule_syncs(
        lab.app.store(),
        &lab.app.modules,
        &config,
        bursar::clock::Clock::now(&*lab.app.clock),
    )
    .await
    .unwrap();
    assert_eq!(queued, 0);
}

#[tokio::test]
async fn a_plan_on_dcimanager_6_is_never_sold_without_an_operating_system() {
    let lab = lab(fixture(1, RACK_POOL), 5_000).await;
    let r = lab
        .app
        .post(
            "/api/v1/plans",
            ADMIN_KEY,
            json!({
                "name": "No OS", "product_type": "dedicated_server", "module": "dci",
                "module_settings": {"configuration": "X1", "location": "1"},
                "prices": [{"period": "1m", "currency": "EUR", "amount": 9900}],
            }),
        )
        .await;
    assert_eq!(r.problem(422), "urn:bursar:problem:invalid-field");
    assert_eq!(r.json["field"], "module_settings");
    assert!(r.json["detail"].as_str().unwrap().contains("os_template"));
    // An `os` add-on the customer picks from is a choice too.
    let r = lab
        .app
        .post(
            "/api/v1/plans",
            ADMIN_KEY,
            json!({
                "name": "Pick an OS", "product_type": "dedicated_server", "module": "dci",
                "module_settings": {"configuration": "X1", "location": "1"},
                "prices": [{"period": "1m", "currency": "EUR", "amount": 9900}],
                "addons": [{"kind": "enum", "code": "os", "name": "OS", "choices": [{"value": "4"}], "default": "4"}],
            }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}
