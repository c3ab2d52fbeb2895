//! The DCImanager 6 module held to the documentation: the documented
//! example answers (`tests/dcimanager6-sim/fixtures/documented`) parse with
//! the module's own types, and the simulator answers the same questions in
//! the same shapes — so neither the module nor the simulator can drift
//! from what a real DCImanager 6 sends.

use std::net::SocketAddr;

use dcimanager6_sim::Fixture;
use serde_json::{Value, json};

#[path = "../../plugins/dcimanager6/src/types.rs"]
mod types;

const DOCUMENTED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/dcimanager6-sim/fixtures/documented"
);

fn documented(name: &str) -> Value {
    let path = format!("{DOCUMENTED}/{name}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, v: &Value) -> T {
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("{what} does not parse: {e}\n{v:#}"))
}

#[test]
fn the_module_parses_every_documented_answer() {
    let server: types::Server = parse("server.json", &documented("server.json"));
    assert_eq!(server.id, 17);
    let op = server.operation.as_ref().expect("a last operation");
    assert_eq!(op.status, "ok");
    assert_eq!(
        op.progress().as_deref(),
        Some("Installing the operating system (2/2)")
    );
    assert_eq!(server.not_free().as_deref(), Some("has an owner"));
    assert_eq!(server.switch_connection.len(), 2);
    assert_eq!(
        server.uplinks().count(),
        1,
        "the BMC's port is not an uplink"
    );
    assert!(server.switch_connection[1].is_ipmi_connection);
    assert_eq!(server.ip[0].family, "ipv4");

    let list: types::List<types::Server> =
        parse("server_list.json", &documented("server_list.json"));
    assert_eq!(list.list.len(), 2);
    assert_eq!(
        list.list[1].not_free(),
        None,
        "an unowned, healthy server is free"
    );

    let configurations: types::List<types::Configuration> = parse(
        "configuration_list.json",
        &documented("configuration_list.json"),
    );
    assert_eq!(configurations.list[0].free_server_count, 42);

    let users: types::List<types::User> = parse("user_list.json", &documented("user_list.json"));
    assert_eq!(users.list[0].roles, types::USER_ROLE);
    let created: types::Created = parse("user_create.json", &documented("user_create.json"));
    assert_eq!(created.id, 4);
    assert_eq!(
        documented("user_create_request.json")["role"],
        types::USER_ROLE
    );
    let error: types::ErrorAnswer = parse("error.json", &documented("error.json"));
    assert_eq!(error.error.code, 3003);
    let token: types::Token = parse("token.json", &documented("token.json"));
    assert!(token.expires_at.is_some());
}

#[test]
fn a_failed_operation_says_why_from_its_status_info_object() {
    let op: types::ServerOperation = parse(
        "operation",
        &json!({"id": 1, "status": "failed", "status_info": {"msg": "no disks found"},
                "progress_info": [{"name": "Partitioning", "status": "failed"}]}),
    );
    assert_eq!(op.reason(), "no disks found");
    assert_eq!(op.progress().as_deref(), Some("Partitioning (0/1)"));
    // Strings where the documentation has objects are not the documented
    // shape: they do not parse.
    assert!(
        serde_json::from_value::<types::ServerOperation>(
            json!({"id": 1, "status": "ok", "status_info": "", "progress_info": "Finished"})
        )
        .is_err()
    );
}

/// Every key of `documented` is in `got`, with the same JSON type (or
/// `null`); lists are compared item by item with the documented first item.
fn same_shape(documented: &Value, got: &Value, path: &str) -> Result<(), String> {
    match (documented, got) {
        (Value::Null, _) | (_, Value::Null) => Ok(()),
        (Value::Object(d), Value::Object(g)) => {
            for (k, dv) in d {
                let gv = g
                    .get(k)
                    .ok_or_else(|| format!("{path}.{k}: missing (the documentation has it)"))?;
                same_shape(dv, gv, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(d), Value::Array(g)) => {
            if let Some(first) = d.first() {
                for (i, item) in g.iter().enumerate() {
                    same_shape(first, item, &format!("{path}[{i}]"))?;
                }
            }
            Ok(())
        }
        (Value::Number(d), Value::Number(g)) => {
            if d.is_f64() == g.is_f64() {
                Ok(())
            } else {
                Err(format!("{path}: {g} where the documentation has {d}"))
            }
        }
        (Value::String(_), Value::String(_)) | (Value::Bool(_), Value::Bool(_)) => Ok(()),
        (d, g) => Err(format!(
            "{path}: {} where the documentation has {}",
            kind(g),
            kind(d)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn assert_shape(name: &str, got: &Value) {
    if let Err(e) = same_shape(&documented(name), got, name) {
        panic!("the simulator drifted from the documentation: {e}\n{got:#}");
    }
}

const FIXTURE: &str = r#"
[settings]
install_delay_ms = 0

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
tags = ["linux"]

[[pools]]
id = 1
name = "rack-7"
cidrs = ["10.1.0.0/28", "2001:db8:7::/120"]
rack = 7

[[servers]]
id = 1
configuration = "X1"
location = 1
rack = 7
switch_ports = 2

[[servers]]
id = 2
configuration = "X1"
location = 1
rack = 7
"#;

#[tokio::test]
async fn the_simulator_answers_in_the_documented_shapes() {
    let sim = dcimanager6_sim::spawn(
        Fixture::parse(FIXTURE).unwrap(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", sim.url());
    let token: Value = http
        .post(url("/api/auth/v4/public/token"))
        .json(&json!({"email": "billing@dci.test", "password": "pw-billing"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_shape("token.json", &token);
    let _: types::Token = parse("token", &token);
    let token = token["token"].as_str().unwrap().to_owned();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = http
            .request(method, url(path))
            .header("x-xsrf-token", &token)
            .header("cookie", format!("ses6={token}"))
            .header("isp-box-instance", "true");
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    use reqwest::Method;
    // A customer's user, a server given to it with addresses and an install.
    let request = documented("user_create_request.json");
    let (status, created) = call(Method::POST, "/api/dci/v3/user", Some(request.clone())).await;
    assert!(status.is_success(), "{created}");
    assert_shape("user_create.json", &created);
    let user = parse::<types::Created>("user create", &created).id;
    let (status, error) = call(Method::POST, "/api/dci/v3/user", Some(request)).await;
    assert_eq!(status, 409);
    assert_shape("error.json", &error);
    let _: types::ErrorAnswer = parse("error", &error);
    let (status, _) = call(
        Method::POST,
        "/api/dci/v3/server/1",
        Some(json!({"owner": user, "domain": "s1.lab.test"})),
    )
    .await;
    assert!(status.is_success());
    for family in ["ipv4", "ipv6"] {
        let (status, body) = call(
            Method::POST,
            "/api/dci/v3/server/1/ip",
            Some(json!({"count": 1, "family": family})),
        )
        .await;
        assert!(status.is_success(), "{family}: {body}");
    }
    let (status, _) = call(
        Method::POST,
        "/api/dci/v3/server/1/operation/install",
        Some(json!({"os_template": 4, "password": "Zk8-secret-Pw", "recipes": []})),
    )
    .await;
    assert!(status.is_success());

    let (_, server) = call(Method::GET, "/api/dci/v3/server/1", None).await;
    assert_shape("server.json", &server);
    let typed: types::Server = parse("server", &server);
    assert_eq!(
        typed.ip.iter().filter(|i| i.is_v6()).count(),
        1,
        "dual stack"
    );
    assert!(typed.switch_connection.iter().any(|c| c.is_ipmi_connection));
    let (_, list) = call(Method::GET, "/api/dci/v3/server", None).await;
    assert_shape("server_list.json", &list);
    let _: types::List<types::Server> = parse("server list", &list);
    let (_, configurations) = call(Method::GET, "/api/dci/v3/server/configuration", None).await;
    assert_shape("configuration_list.json", &configurations);
    let _: types::List<types::Configuration> = parse("configurations", &configurations);
    let (_, users) = call(Method::GET, "/api/dci/v3/user", None).await;
    assert_shape("user_list.json", &users);
    let users: types::List<types::User> = parse("users", &users);
    assert!(users.list.iter().any(|u| u.roles == types::USER_ROLE));
    // An operation on its own is a server's `operation`.
    let op_id = typed.operation.as_ref().unwrap().id;
    let (_, op) = call(Method::GET, &format!("/api/dci/v3/operation/{op_id}"), None).await;
    if let Err(e) = same_shape(&documented("server.json")["operation"], &op, "operation") {
        panic!("the simulator drifted from the documentation: {e}\n{op:#}");
    }
}
