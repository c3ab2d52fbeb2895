//! Every DCImanager 6 API path the module uses, in one place, so they can
//! be checked against a real instance's Swagger (`https://HOST/swagger/`)
//! without touching the provisioning logic.
//!
//! One [`Dci`] per plugin call: it logs in once, sends the token as the
//! `ses6` cookie and the `x-xsrf-token` header, logs in again once when a
//! request answers 401, and retries 503s (and transport failures) with
//! backoff until the call's time budget is spent.

use std::time::{Duration, Instant};

use bursar_plugin_sdk::http::{Request, Response};
use bursar_plugin_sdk::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

pub use crate::types::ErrorAnswer;

pub use crate::types::{Configuration, Named, Server, ServerOperation, User};
use crate::types::{Created, List, Started, Token, USER_ROLE};

/// `"` and `\` cannot appear in a quoted `where` value.
fn quoted(v: &str) -> Result<String, PluginError> {
    if v.contains('\'') || v.contains('\\') {
        return Err(PluginError::rejected(format!("`{v}` cannot be used in a DCImanager filter")));
    }
    Ok(format!("'{v}'"))
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A logged-in session for the length of one plugin call.
pub struct Dci {
    base: String,
    email: String,
    password: String,
    token: Option<String>,
    deadline: Instant,
}

/// The first backoff after a 503; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The longest a single request may wait for an answer.
const REQUEST_TIMEOUT_MS: u64 = 15_000;

impl Dci {
    /// From the settings `url`, `email`, `password`, `retry_budget_ms`.
    pub fn new(settings: &Params) -> Result<Dci, PluginError> {
        let base = settings.require("url")?.trim_end_matches('/').to_owned();
        let budget = settings.parse::<u64>("retry_budget_ms")?.unwrap_or(20_000);
        Ok(Dci {
            base,
            email: settings.require("email")?.to_owned(),
            password: settings.require("password")?.to_owned(),
            token: None,
            deadline: Instant::now() + Duration::from_millis(budget),
        })
    }

    fn login(&mut self) -> Result<(), PluginError> {
        let url = format!("{}/api/auth/v4/public/token", self.base);
        let body = json!({"email": self.email, "password": self.password});
        let r = self.with_retries(|| Request::new("POST", &url).json(&body))?;
        match r.status {
            200..=299 => {}
            400 | 401 | 403 => {
                return Err(PluginError::invalid_config(format!(
                    "DCImanager refused the login of {}: {}",
                    self.email,
                    message(&r)
                )));
            }
            _ => return Err(status_error("login", &r)),
        }
        self.token = Some(r.json::<Token>()?.token);
        Ok(())
    }

    /// Sends a request built by `build`, retrying 503s and transport
    /// failures with backoff while the budget lasts.
    fn with_retries(&self, build: impl Fn() -> Request) -> Result<Response, PluginError> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let last = match build().timeout_ms(REQUEST_TIMEOUT_MS).send() {
                Ok(r) if r.status != 503 => return Ok(r),
                Ok(r) => format!("DCImanager is unavailable (HTTP 503: {})", message(&r)),
                Err(PluginError::Unavailable(u)) => u.message,
                Err(e) => return Err(e),
            };
            if Instant::now() + backoff >= self.deadline {
                return Err(PluginError::unavailable(format!("{last}; gave up after the retry budget")));
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// An authenticated call; 401 → log in again once and repeat.
    fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<Response, PluginError> {
        if self.token.is_none() {
            self.login()?;
        }
        let url = format!("{}{path}", self.base);
        let mut relogged = false;
        loop {
            let token = self.token.clone().unwrap_or_default();
            let r = self.with_retries(|| {
                let req = Request::new(method, &url)
                    .header("x-xsrf-token", &token)
                    .header("cookie", &format!("ses6={token}"))
                    .header("isp-box-instance", "true");
                match body {
                    Some(b) => req.json(b),
                    None => req,
                }
            })?;
            if r.status == 401 && !relogged {
                log::info("DCImanager token expired; logging in again");
                relogged = true;
                self.login()?;
                continue;
            }
            return Ok(r);
        }
    }

    fn get<T: for<'de> Deserialize<'de>>(&mut self, what: &str, path: &str) -> Result<T, PluginError> {
        let r = self.call("GET", path, None)?;
        if !r.is_success() {
            return Err(status_error(what, &r));
        }
        r.json()
    }

    fn post(&mut self, what: &str, path: &str, body: Value) -> Result<Response, PluginError> {
        let r = self.call("POST", path, Some(&body))?;
        if !r.is_success() {
            return Err(status_error(what, &r));
        }
        Ok(r)
    }

    fn list<T: for<'de> Deserialize<'de>>(&mut self, what: &str, path: &str) -> Result<Vec<T>, PluginError> {
        Ok(self.get::<List<T>>(what, path)?.list)
    }

    // ---- reference data ----

    pub fn locations(&mut self) -> Result<Vec<Named>, PluginError> {
        self.list("locations", "/api/dci/v3/location")
    }

    pub fn configurations(&mut self, location: Option<u64>) -> Result<Vec<Configuration>, PluginError> {
        let path = match location {
            Some(l) => format!("/api/dci/v3/server/configuration?where={}", encode(&format!("location_id EQ {l}"))),
            None => "/api/dci/v3/server/configuration".to_owned(),
        };
        self.list("configurations", &path)
    }

    pub fn os_templates(&mut self) -> Result<Vec<Named>, PluginError> {
        self.list("OS templates", "/api/dci/v3/os")
    }

    pub fn scripts(&mut self) -> Result<Vec<Named>, PluginError> {
        self.list("scripts", "/api/dci/v3/script")
    }

    // ---- users ----

    pub fn user_by_email(&mut self, email: &str) -> Result<Option<User>, PluginError> {
        let path = format!("/api/dci/v3/user?where={}", encode(&format!("email EQ {}", quoted(email)?)));
        Ok(self.list::<User>("users", &path)?.into_iter().next())
    }

    pub fn user_by_id(&mut self, id: u64) -> Result<Option<User>, PluginError> {
        let path = format!("/api/dci/v3/user?where={}", encode(&format!("id EQ {id}")));
        Ok(self.list::<User>("users", &path)?.into_iter().next())
    }

    pub fn create_user(&mut self, email: &str, password: &str) -> Result<Response, PluginError> {
        self.call(
            "POST",
            "/api/dci/v3/user",
            Some(&json!({
                "email": email,
                "full_name": email,
                "password": password,
                "phone_number": "",
                "role": USER_ROLE,
            })),
        )
    }

    /// The id of a user just created.
    pub fn created_id(r: &Response) -> Result<u64, PluginError> {
        Ok(r.json::<Created>()?.id)
    }

    // ---- servers ----

    pub fn servers_where(&mut self, filter: &str) -> Result<Vec<Server>, PluginError> {
        self.list("servers", &format!("/api/dci/v3/server?where={}", encode(filter)))
    }

    pub fn server_by_domain(&mut self, domain: &str) -> Result<Option<Server>, PluginError> {
        Ok(self.servers_where(&format!("domain EQ {}", quoted(domain)?))?.into_iter().next())
    }

    /// Servers without an owner of a configuration (and location).
    pub fn unowned(&mut self, configuration: &str, location: Option<u64>) -> Result<Vec<Server>, PluginError> {
        let mut filter = format!("(owner_email IS null) AND configuration EQ {}", quoted(configuration)?);
        if let Some(l) = location {
            filter.push_str(&format!(" AND location_id EQ {l}"));
        }
        self.servers_where(&filter)
    }

    pub fn server(&mut self, id: u64) -> Result<Server, PluginError> {
        self.get("server", &format!("/api/dci/v3/server/{id}"))
    }

    /// Gives a server to a user (or takes it back with `None`).
    pub fn set_owner(&mut self, id: u64, owner: Option<u64>, domain: Option<&str>) -> Result<Response, PluginError> {
        let mut body = json!({"owner": owner});
        if let Some(d) = domain {
            body["domain"] = json!(d);
        }
        self.call("POST", &format!("/api/dci/v3/server/{id}"), Some(&body))
    }

    pub fn power(&mut self, id: u64, on: bool) -> Result<(), PluginError> {
        let action = if on { "power_on" } else { "power_off" };
        self.post("power", &format!("/api/dci/v3/server/{id}/{action}"), json!({}))?;
        Ok(())
    }

    pub fn switch_port(&mut self, id: u64, connection: u64, up: bool) -> Result<(), PluginError> {
        let status = if up { "up" } else { "down" };
        self.post(
            "switch port",
            &format!("/api/dci/v3/server/{id}/switch_connection/{connection}"),
            json!({"admin_status": status}),
        )?;
        Ok(())
    }

    /// Asks for `count` more addresses of `family` from the server's pool
    /// **[assumed]**; DCImanager picks the pool (rack → location →
    /// "public"). The answer as it came: a 4xx means none can be had.
    pub fn allocate_ips(&mut self, id: u64, count: u64, family: &str) -> Result<Response, PluginError> {
        self.call("POST", &format!("/api/dci/v3/server/{id}/ip"), Some(&json!({"count": count, "family": family})))
    }

    pub fn release_ip(&mut self, id: u64, ip: u64) -> Result<(), PluginError> {
        let r = self.call("DELETE", &format!("/api/dci/v3/server/{id}/ip/{ip}"), None)?;
        if !r.is_success() && r.status != 404 {
            return Err(status_error("IP release", &r));
        }
        Ok(())
    }

    /// Starts an OS install; returns DCImanager's operation id.
    pub fn install(&mut self, id: u64, template: u64, password: &str, recipes: &[u64]) -> Result<u64, PluginError> {
        let r = self.post(
            "OS install",
            &format!("/api/dci/v3/server/{id}/operation/install"),
            json!({"os_template": template, "password": password, "ssh_keys": [], "recipes": recipes}),
        )?;
        Ok(r.json::<Started>()?.operation)
    }

    pub fn operation(&mut self, id: u64) -> Result<ServerOperation, PluginError> {
        self.get("operation", &format!("/api/dci/v3/operation/{id}"))
    }
}

/// DCImanager's own error text, or the body.
pub fn message(r: &Response) -> String {
    serde_json::from_slice::<ErrorAnswer>(&r.body)
        .map(|e| e.error.msg)
        .unwrap_or_else(|_| r.text().chars().take(200).collect())
}

/// A non-success answer as the error the engine acts on.
pub fn status_error(what: &str, r: &Response) -> PluginError {
    let msg = format!("DCImanager {what}: HTTP {}: {}", r.status, message(r));
    match r.status {
        404 => PluginError::not_found(msg),
        400 | 409 | 422 => PluginError::rejected(msg),
        401 | 403 => PluginError::invalid_config(msg),
        _ => PluginError::unavailable(msg),
    }
}
