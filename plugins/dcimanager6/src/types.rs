//! What DCImanager 6 answers, typed as ISPsystem's documentation shows it
//! ("Examples of API use", the API guide): objects where it has objects,
//! integers where it has integers. Unknown fields are ignored, so a newer
//! DCImanager that adds fields still parses.
//!
//! This file depends on serde alone: Bursar's tests compile it too, to
//! parse the documented examples and the simulator's answers with the very
//! same types.
//!
//! Everything read here that the documentation does not show is marked
//! **[assumed]** — check those against an installation's Swagger
//! (`https://HOST/swagger/`).

// Documented fields are parsed even where the module reads none of them:
// parsing is what checks the shape.
#![allow(dead_code)]

use serde::Deserialize;
use serde_json::{Map, Value};

/// A list answer: `{"list": [...], "size": N}`.
#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    pub list: Vec<T>,
    #[serde(default)]
    pub size: Option<u64>,
}

/// An error answer: `{"error": {"code": N, "msg": "...", "value": ...}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorAnswer {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    pub code: i64,
    pub msg: String,
    #[serde(default)]
    pub value: Value,
}

/// `POST /api/auth/v4/public/token`.
#[derive(Debug, Clone, Deserialize)]
pub struct Token {
    pub token: String,
    /// When the token stops working (Auth v4 answers `expires_at`, not
    /// `expires_in`).
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// `GET /api/dci/v3/server/configuration`.
#[derive(Debug, Clone, Deserialize)]
pub struct Configuration {
    pub configuration: String,
    pub free_server_count: u64,
}

/// An entry of `GET /api/dci/v3/user`.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: u64,
    pub email: String,
    #[serde(default)]
    pub server_count: u64,
    /// e.g. `"[@user]"`.
    #[serde(default)]
    pub roles: String,
}

/// `POST /api/dci/v3/user` answers the new user's id.
#[derive(Debug, Clone, Deserialize)]
pub struct Created {
    pub id: u64,
}

/// The role a customer's user is created with, as the user list shows
/// roles.
pub const USER_ROLE: &str = "[@user]";

/// A server's last operation.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerOperation {
    pub id: u64,
    pub status: String,
    /// An object (its keys are not documented).
    #[serde(default)]
    pub status_info: Option<Map<String, Value>>,
    /// The steps: an array of objects (their keys are not documented).
    #[serde(default)]
    pub progress_info: Option<Vec<Map<String, Value>>>,
}

impl ServerOperation {
    /// A step to show while it runs: the last step's `name` **[assumed]**,
    /// and how far through the steps it is.
    pub fn progress(&self) -> Option<String> {
        let steps = self.progress_info.as_ref().filter(|s| !s.is_empty())?;
        let done = steps
            .iter()
            .filter(|s| s.get("status").and_then(Value::as_str) == Some("ok"))
            .count();
        let current = steps
            .iter()
            .find(|s| s.get("status").and_then(Value::as_str) != Some("ok"))
            .or(steps.last())
            .and_then(|s| s.get("name").and_then(Value::as_str))
            .unwrap_or("working");
        Some(format!("{current} ({done}/{})", steps.len()))
    }

    /// Why it failed: `status_info`'s `msg` or `message` **[assumed]**,
    /// else the object as it is.
    pub fn reason(&self) -> String {
        let Some(info) = self.status_info.as_ref().filter(|i| !i.is_empty()) else {
            return "no reason given".into();
        };
        ["msg", "message"]
            .iter()
            .find_map(|k| info.get(*k).and_then(Value::as_str))
            .map(str::to_owned)
            .unwrap_or_else(|| Value::Object(info.clone()).to_string())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Rack {
    pub id: u64,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OsTemplate {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// An address of a server.
#[derive(Debug, Clone, Deserialize)]
pub struct Ip {
    pub id: u64,
    /// The address itself.
    pub name: String,
    #[serde(default)]
    pub domain: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    #[serde(default)]
    pub gateway: String,
    #[serde(default)]
    pub network: String,
    /// e.g. `allocating`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub status_info: Option<Map<String, Value>>,
}

impl Ip {
    pub fn is_v6(&self) -> bool {
        self.family == "ipv6"
    }
}

/// A switch port the server is connected to.
#[derive(Debug, Clone, Deserialize)]
pub struct SwitchConnection {
    pub id: u64,
    pub switch: u64,
    pub connection_id: u64,
    #[serde(default)]
    pub description: String,
    /// `up` or `down`.
    pub admin_status: String,
    #[serde(default)]
    pub oper_status: String,
    #[serde(default)]
    pub do_not_collect_traffic: bool,
    /// The BMC's port: management, never the customer's uplink. It stays
    /// up whatever happens to the service.
    #[serde(default)]
    pub is_ipmi_connection: bool,
}

/// `GET /api/dci/v3/server/{id}` and the entries of `GET /api/dci/v3/server`.
#[derive(Debug, Clone, Deserialize)]
pub struct Server {
    pub id: u64,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub configuration: String,
    /// e.g. `suspending`.
    #[serde(default)]
    pub state: String,
    /// **[assumed]** The text of a status or diagnostic error, empty when
    /// there is none.
    #[serde(default)]
    pub state_info: String,
    /// `on` or `off`.
    #[serde(default)]
    pub power_status: String,
    #[serde(default)]
    pub owner_email: Option<String>,
    #[serde(default)]
    pub location_id: u64,
    #[serde(default)]
    pub rack: Option<Rack>,
    #[serde(default)]
    pub operation: Option<ServerOperation>,
    #[serde(default)]
    pub os_template: Option<OsTemplate>,
    #[serde(default)]
    pub ip: Vec<Ip>,
    #[serde(default)]
    pub switch_connection: Vec<SwitchConnection>,
    /// **[assumed]** True until the server's first diagnostics finish.
    #[serde(default)]
    pub is_new: bool,
    /// **[assumed]** Set while staff have the server in maintenance.
    #[serde(default)]
    pub maintenance: bool,
    #[serde(default)]
    pub hardware_info: Option<Map<String, Value>>,
    #[serde(default)]
    pub perform_info: Option<Map<String, Value>>,
    #[serde(default)]
    pub settings: Option<Map<String, Value>>,
}

impl Server {
    /// Why a server may not be given to a customer, by the rule
    /// BILLmanager's module follows: it has no owner, its diagnostics are
    /// finished and its configuration known, its last operation is `ok` or
    /// `canceled`, it is not in maintenance and it has no diagnostic or
    /// status errors. `None`: it is free.
    pub fn not_free(&self) -> Option<String> {
        if self.owner_email.is_some() {
            return Some("has an owner".into());
        }
        if self.is_new {
            return Some("its diagnostics have not finished".into());
        }
        if self.configuration.is_empty() {
            return Some("its configuration is unknown".into());
        }
        if let Some(op) = &self.operation
            && op.status != "ok"
            && op.status != "canceled"
        {
            return Some(format!("its last operation is `{}`", op.status));
        }
        if self.maintenance || self.state == "maintenance" {
            return Some("it is in maintenance".into());
        }
        if !self.state_info.is_empty() {
            return Some(format!("it has an error: {}", self.state_info));
        }
        None
    }

    /// The customer's switch ports: every connection but the BMC's.
    pub fn uplinks(&self) -> impl Iterator<Item = &SwitchConnection> {
        self.switch_connection
            .iter()
            .filter(|c| !c.is_ipmi_connection)
    }
}

/// `POST /api/dci/v3/server/{id}/operation/install` **[assumed]**.
#[derive(Debug, Clone, Deserialize)]
pub struct Started {
    pub operation: u64,
}

/// A location, an OS template or a script **[assumed]**: `GET
/// /api/dci/v3/location`, `/os`, `/script`.
#[derive(Debug, Clone, Deserialize)]
pub struct Named {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Scripts: `all` (customers may order it) or `admin`.
    #[serde(default)]
    pub access: Option<String>,
}
