//! The simulated data centre: servers, users, IP pools, operations,
//! tokens and injected faults. Plain data behind one mutex; every API
//! handler is one short critical section.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::fixture::{self, Fixture, Role};

/// An API error as DCImanager shapes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub code: i64,
    pub msg: String,
}

impl ApiError {
    pub fn new(status: u16, code: i64, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            msg: msg.into(),
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        ApiError::new(404, 3001, format!("{what} not found"))
    }

    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError::new(400, 3002, msg)
    }

    pub fn body(&self) -> Value {
        json!({"error": {"code": self.code, "msg": self.msg, "value": Value::Null}})
    }
}

pub type ApiResult = Result<Value, ApiError>;

/// A CIDR block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    pub network: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a CIDR"))?;
        let network: IpAddr = addr.parse().map_err(|_| format!("`{s}`: bad address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| format!("`{s}`: bad prefix"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        if prefix > max || max - prefix > 16 {
            return Err(format!(
                "`{s}`: the simulator supports /{}-/{max}",
                max - 16
            ));
        }
        Ok(Cidr { network, prefix })
    }

    pub fn family(&self) -> &'static str {
        if self.network.is_ipv4() {
            "ipv4"
        } else {
            "ipv6"
        }
    }

    fn offset(&self, n: u128) -> IpAddr {
        match self.network {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) + n as u32).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) + n).into()),
        }
    }

    fn size(&self) -> u128 {
        let bits = if self.network.is_ipv4() { 32 } else { 128 };
        1u128 << (bits - self.prefix as u32)
    }

    /// The gateway: the first address after the network's.
    pub fn gateway(&self) -> IpAddr {
        self.offset(1)
    }

    /// The addresses handed to servers: after the gateway, before the
    /// broadcast address.
    pub fn hosts(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let size = self.size();
        (2..size.saturating_sub(1)).map(move |n| self.offset(n))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub spec: fixture::Pool,
    pub cidrs: Vec<Cidr>,
}

impl Pool {
    fn has(&self, family: &str) -> bool {
        self.cidrs.iter().any(|c| c.family() == family)
    }

    fn family(&self) -> &'static str {
        match (self.has("ipv4"), self.has("ipv6")) {
            (true, true) => "ipv4+ipv6",
            (true, false) => "ipv4",
            _ => "ipv6",
        }
    }
}

#[derive(Debug, Clone)]
pub struct IpRecord {
    pub id: u64,
    pub address: IpAddr,
    pub pool: u64,
    pub cidr: String,
    pub gateway: IpAddr,
    pub server: u64,
    pub domain: String,
}

impl IpRecord {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.address.to_string(),
            "domain": self.domain,
            "family": if self.address.is_ipv4() { "ipv4" } else { "ipv6" },
            "gateway": self.gateway.to_string(),
            "network": self.cidr,
            "ipnet": self.pool,
            "ipnet_name": self.cidr,
            "status": "assigned",
            "status_info": {},
        })
    }
}

#[derive(Debug, Clone)]
pub struct SwitchConnection {
    pub id: u64,
    /// The switch's id.
    pub switch: u64,
    /// The port's id on the switch.
    pub connection_id: u64,
    pub description: String,
    pub admin_status: String,
    /// The BMC's port.
    pub is_ipmi: bool,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub spec: fixture::Server,
    pub owner: Option<u64>,
    pub domain: String,
    pub power: String,
    pub ips: Vec<u64>,
    pub switch: Vec<SwitchConnection>,
    pub last_operation: Option<u64>,
    pub os_template: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Operation {
    pub id: u64,
    pub server: u64,
    pub started: Instant,
    pub delay: Duration,
    pub failure: Option<String>,
    pub os_template: u64,
    pub recipes: Vec<u64>,
    pub password: String,
    /// How it ended, when the fixture says so (`canceled`…); else by
    /// `delay` and `failure`.
    pub outcome: Option<String>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: u64,
    pub email: String,
    pub full_name: String,
    pub role: String,
}

/// Faults to inject, set through `POST /sim/faults`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// The next N API calls answer 503.
    pub unavailable_next: u32,
    /// Every API call waits this long first.
    pub latency_ms: u64,
    /// The next install fails with this message.
    pub fail_next_install: Option<String>,
    /// After N more authenticated calls, every issued token expires.
    pub expire_tokens_after: Option<u32>,
}

/// The whole simulated installation.
pub struct State {
    pub settings: fixture::Settings,
    admin: fixture::Admin,
    locations: Vec<fixture::Location>,
    racks: Vec<fixture::Rack>,
    pub pools: Vec<Pool>,
    pub servers: BTreeMap<u64, Server>,
    os: Vec<fixture::OsTemplate>,
    scripts: Vec<fixture::Script>,
    pub users: BTreeMap<u64, User>,
    pub ips: BTreeMap<u64, IpRecord>,
    pub operations: BTreeMap<u64, Operation>,
    tokens: BTreeMap<String, Instant>,
    pub faults: Faults,
    next_id: u64,
    /// Successful logins, for tests counting them.
    pub logins: u64,
    /// `METHOD /path` of every API call, in order.
    pub calls: Vec<String>,
}

impl State {
    pub fn new(f: Fixture) -> State {
        let pools = f
            .pools
            .iter()
            .map(|p| Pool {
                spec: p.clone(),
                cidrs: p
                    .cidrs
                    .iter()
                    .map(|c| Cidr::parse(c).expect("checked when parsed"))
                    .collect(),
            })
            .collect();
        let mut next_id = 1000;
        let mut operations = BTreeMap::new();
        let servers = f
            .servers
            .iter()
            .map(|s| {
                let mut switch: Vec<SwitchConnection> = (0..s.switch_ports)
                    .map(|i| {
                        next_id += 1;
                        SwitchConnection {
                            id: next_id,
                            switch: 100 + s.rack,
                            connection_id: s.id * 10 + u64::from(i),
                            description: format!("Ethernet1/{}", s.id * 10 + u64::from(i)),
                            admin_status: "down".into(),
                            is_ipmi: false,
                        }
                    })
                    .collect();
                if s.ipmi {
                    next_id += 1;
                    switch.push(SwitchConnection {
                        id: next_id,
                        switch: 900 + s.rack,
                        connection_id: s.id,
                        description: format!("mgmt{}", s.id),
                        admin_status: "up".into(),
                        is_ipmi: true,
                    });
                }
                let last_operation = s.last_operation.as_ref().map(|status| {
                    next_id += 1;
                    operations.insert(
                        next_id,
                        Operation {
                            id: next_id,
                            server: s.id,
                            started: Instant::now(),
                            delay: Duration::ZERO,
                            failure: (status == "failed")
                                .then(|| "RAID controller not found".into()),
                            os_template: 0,
                            recipes: vec![],
                            password: String::new(),
                            outcome: Some(status.clone()),
                        },
                    );
                    next_id
                });
                (
                    s.id,
                    Server {
                        spec: s.clone(),
                        owner: None,
                        domain: String::new(),
                        power: s.power.clone(),
                        ips: vec![],
                        switch,
                        last_operation,
                        os_template: None,
                    },
                )
            })
            .collect();
        let mut users = BTreeMap::new();
        users.insert(
            1,
            User {
                id: 1,
                email: f.admin.email.clone(),
                full_name: "Administrator".into(),
                role: "admin".into(),
            },
        );
        State {
            settings: f.settings,
            admin: f.admin,
            locations: f.locations,
            racks: f.racks,
            pools,
            servers,
            os: f.os,
            scripts: f.scripts,
            users,
            ips: BTreeMap::new(),
            operations,
            tokens: BTreeMap::new(),
            faults: Faults::default(),
            next_id,
            logins: 0,
            calls: vec![],
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    // ---- auth ----

    pub fn login(&mut self, email: &str, password: &str) -> ApiResult {
        if email != self.admin.email || password != self.admin.password {
            return Err(ApiError::new(401, 1001, "Invalid credentials"));
        }
        let token: String = {
            let mut rng = rand::rng();
            (0..32)
                .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
                .collect()
        };
        let ttl = Duration::from_secs(self.settings.token_ttl_secs);
        self.tokens.insert(token.clone(), Instant::now() + ttl);
        self.logins += 1;
        let expires_at = chrono::Utc::now() + chrono::Duration::seconds(ttl.as_secs() as i64);
        Ok(json!({"token": token, "expires_at": expires_at.to_rfc3339()}))
    }

    /// Checks a token, counting the call towards an injected expiry.
    pub fn authenticate(&mut self, token: Option<&str>) -> Result<(), ApiError> {
        if let Some(n) = self.faults.expire_tokens_after {
            if n == 0 {
                self.tokens.clear();
                self.faults.expire_tokens_after = None;
            } else {
                self.faults.expire_tokens_after = Some(n - 1);
            }
        }
        let now = Instant::now();
        self.tokens.retain(|_, exp| *exp > now);
        match token {
            Some(t) if self.tokens.contains_key(t) => Ok(()),
            Some(_) => Err(ApiError::new(401, 1002, "Token expired or invalid")),
            None => Err(ApiError::new(401, 1003, "Authorization required")),
        }
    }

    /// Takes one injected 503, if any are left.
    pub fn take_unavailable(&mut self) -> bool {
        if self.faults.unavailable_next > 0 {
            self.faults.unavailable_next -= 1;
            true
        } else {
            false
        }
    }

    // ---- reference data ----

    pub fn locations(&self) -> Vec<Value> {
        self.locations
            .iter()
            .map(|l| json!({"id": l.id, "name": l.name}))
            .collect()
    }

    pub fn racks(&self) -> Vec<Value> {
        self.racks
            .iter()
            .map(|r| json!({"id": r.id, "name": r.name, "location": r.location, "location_id": r.location}))
            .collect()
    }

    pub fn os_templates(&self) -> Vec<Value> {
        self.os
            .iter()
            .map(|o| json!({"id": o.id, "name": o.name, "tags": o.tags}))
            .collect()
    }

    pub fn scripts(&self) -> Vec<Value> {
        self.scripts
            .iter()
            .map(|s| json!({"id": s.id, "name": s.name, "access": s.access}))
            .collect()
    }

    pub fn pools_json(&self) -> Vec<Value> {
        self.pools
            .iter()
            .map(|p| {
                json!({
                    "id": p.spec.id,
                    "name": p.spec.name,
                    "family": p.family(),
                    "location": p.spec.location,
                    "rack": p.spec.rack,
                    "role": p.spec.role,
                    "cidrs": p.spec.cidrs,
                })
            })
            .collect()
    }

    pub fn ips_json(&self) -> Vec<Value> {
        self.ips.values().map(IpRecord::json).collect()
    }

    // ---- users ----

    /// Users as the list shows them: roles as `[@user]`, with their
    /// server counts.
    pub fn users_json(&self) -> Vec<Value> {
        self.users
            .values()
            .map(|u| {
                let servers = self.servers.values().filter(|s| s.owner == Some(u.id)).count();
                json!({
                    "id": u.id,
                    "email": u.email,
                    "full_name": u.full_name,
                    "roles": format!("[@{}]", u.role.trim_start_matches("[@").trim_end_matches(']')),
                    "server_count": servers,
                    "vlans_per_user": 0,
                })
            })
            .collect()
    }

    pub fn create_user(&mut self, body: &Value) -> ApiResult {
        let email = body["email"]
            .as_str()
            .filter(|e| e.contains('@'))
            .ok_or_else(|| ApiError::bad("`email` is required"))?
            .to_owned();
        if self
            .users
            .values()
            .any(|u| u.email.eq_ignore_ascii_case(&email))
        {
            return Err(ApiError::new(
                409,
                3003,
                format!("user {email} already exists"),
            ));
        }
        let id = self.id();
        self.users.insert(
            id,
            User {
                id,
                email,
                full_name: body["full_name"].as_str().unwrap_or_default().to_owned(),
                role: body["role"].as_str().unwrap_or("user").to_owned(),
            },
        );
        Ok(json!({"id": id}))
    }

    // ---- servers ----

    /// An operation's status, `status_info` (an object) and
    /// `progress_info` (an array of step objects).
    fn operation_status(&self, op: &Operation) -> (String, Value, Value) {
        if let Some(outcome) = &op.outcome {
            let info = match &op.failure {
                Some(msg) => json!({"msg": msg}),
                None => json!({}),
            };
            return (outcome.clone(), info, json!([]));
        }
        let steps = &self.settings.install_steps;
        let elapsed = op.started.elapsed();
        let finished = elapsed >= op.delay;
        let at = if finished || op.delay.is_zero() {
            steps.len()
        } else {
            (elapsed.as_micros() * steps.len() as u128 / op.delay.as_micros()) as usize
        };
        let progress: Vec<Value> = steps
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let status = match i.cmp(&at) {
                    std::cmp::Ordering::Less => "ok",
                    std::cmp::Ordering::Equal => "running",
                    std::cmp::Ordering::Greater => "waiting",
                };
                json!({"name": name, "status": status})
            })
            .collect();
        if !finished {
            return ("running".into(), json!({}), Value::Array(progress));
        }
        match &op.failure {
            Some(msg) => ("failed".into(), json!({"msg": msg}), Value::Array(progress)),
            None => ("ok".into(), json!({}), Value::Array(progress)),
        }
    }

    pub fn operation_json(&self, id: u64) -> ApiResult {
        let op = self
            .operations
            .get(&id)
            .ok_or_else(|| ApiError::not_found(format!("operation {id}")))?;
        let (status, info, progress) = self.operation_status(op);
        Ok(json!({
            "id": op.id,
            "server": op.server,
            "name": "install",
            "status": status,
            "status_info": info,
            "progress_info": progress,
        }))
    }

    pub fn server_json(&self, id: u64) -> ApiResult {
        let s = self
            .servers
            .get(&id)
            .ok_or_else(|| ApiError::not_found(format!("server {id}")))?;
        let owner = s.owner.and_then(|o| self.users.get(&o));
        let rack = self.racks.iter().find(|r| r.id == s.spec.rack);
        let operation = s.last_operation.and_then(|o| self.operation_json(o).ok());
        let os = s
            .os_template
            .and_then(|o| self.os.iter().find(|t| t.id == o))
            .map(|o| json!({"id": o.id, "name": o.name, "tags": o.tags}));
        Ok(json!({
            "id": s.spec.id,
            "domain": s.domain,
            "configuration": s.spec.configuration,
            "state": s.spec.state,
            "state_info": s.spec.error.clone().unwrap_or_default(),
            "maintenance": s.spec.maintenance,
            "power_status": s.power,
            "owner": s.owner,
            "owner_email": owner.map(|u| u.email.clone()),
            "location_id": s.spec.location,
            "rack_id": s.spec.rack,
            "rack": rack.map(|r| json!({"id": r.id, "name": r.name})),
            "operation": operation,
            "os_template": os,
            "ip": s.ips.iter().filter_map(|i| self.ips.get(i)).map(IpRecord::json).collect::<Vec<_>>(),
            "switch_connection": s.switch.iter().map(|c| json!({
                "id": c.id,
                "switch": c.switch,
                "connection_id": c.connection_id,
                "description": c.description,
                "admin_status": c.admin_status,
                "oper_status": if c.admin_status == "up" && (s.power == "on" || c.is_ipmi) { "up" } else { "down" },
                "do_not_collect_traffic": c.is_ipmi,
                "is_ipmi_connection": c.is_ipmi,
            })).collect::<Vec<_>>(),
            "pdu_connection": {"port_id": s.spec.id, "pdu_id": 500 + s.spec.rack, "connection_id": s.spec.id},
            "hardware_info": {"cpu": s.spec.configuration},
            "perform_info": {},
            "settings": {"efi": false},
            "is_new": s.spec.diagnostics == fixture::Diagnostics::Running,
        }))
    }

    pub fn servers_json(&self) -> Vec<Value> {
        self.servers
            .keys()
            .filter_map(|id| self.server_json(*id).ok())
            .collect()
    }

    /// Whether a server can be given to a customer: no owner, diagnostics
    /// finished, configuration known, last operation `ok` or `canceled`,
    /// not in maintenance, no errors.
    fn is_free(&self, s: &Server) -> bool {
        let last_ok = s.last_operation.is_none_or(|o| {
            self.operations
                .get(&o)
                .is_some_and(|op| matches!(self.operation_status(op).0.as_str(), "ok" | "canceled"))
        });
        s.owner.is_none()
            && s.spec.diagnostics == fixture::Diagnostics::Finished
            && !s.spec.configuration.is_empty()
            && s.spec.error.is_none()
            && !s.spec.maintenance
            && last_ok
    }

    /// Configurations with their free server counts, over the servers that
    /// pass `keep` (the request's `where`).
    pub fn configurations(&self, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for s in self.servers.values() {
            let json = self.server_json(s.spec.id).expect("listed server");
            if !keep(&json) {
                continue;
            }
            let free = counts.entry(s.spec.configuration.clone()).or_default();
            if self.is_free(s) {
                *free += 1;
            }
        }
        counts
            .into_iter()
            .map(|(c, n)| json!({"configuration": c, "free_server_count": n}))
            .collect()
    }

    fn server_mut(&mut self, id: u64) -> Result<&mut Server, ApiError> {
        self.servers
            .get_mut(&id)
            .ok_or_else(|| ApiError::not_found(format!("server {id}")))
    }

    /// `POST /server/{id}`: owner and domain.
    pub fn edit_server(&mut self, id: u64, body: &Value) -> ApiResult {
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::bad("a JSON object is expected"))?;
        if let Some(owner) = obj.get("owner") {
            let owner = match owner {
                Value::Null => None,
                v => {
                    let uid = v
                        .as_u64()
                        .ok_or_else(|| ApiError::bad("`owner` must be a user id or null"))?;
                    if !self.users.contains_key(&uid) {
                        return Err(ApiError::not_found(format!("user {uid}")));
                    }
                    Some(uid)
                }
            };
            let current = self.server_mut(id)?.owner;
            match (current, owner) {
                (Some(a), Some(b)) if a != b => {
                    return Err(ApiError::new(
                        409,
                        3004,
                        format!("server {id} already has an owner"),
                    ));
                }
                (_, Some(_)) => {
                    // Given to a customer: the technical addresses go back.
                    self.release_role(id, Role::Deallocation);
                    self.server_mut(id)?.owner = owner;
                }
                (Some(_), None) => {
                    self.server_mut(id)?.owner = None;
                    // Released: a technical address from the deallocation pool.
                    if self.pick_pool(id, Role::Deallocation).is_some() {
                        self.allocate(id, 1, "ipv4", Role::Deallocation)?;
                    }
                }
                (None, None) => {}
            }
        }
        if let Some(domain) = obj.get("domain") {
            let domain = domain
                .as_str()
                .ok_or_else(|| ApiError::bad("`domain` must be a string"))?
                .to_owned();
            self.server_mut(id)?.domain = domain;
        }
        Ok(json!({"id": id}))
    }

    pub fn power(&mut self, id: u64, action: &str) -> ApiResult {
        let s = self.server_mut(id)?;
        s.power = match action {
            "power_on" | "power_reset" => "on".into(),
            _ => "off".into(),
        };
        Ok(json!({"id": id}))
    }

    pub fn switch_port(&mut self, id: u64, conn: u64, body: &Value) -> ApiResult {
        let status = match body["admin_status"].as_str() {
            Some(s @ ("up" | "down")) => s.to_owned(),
            _ => return Err(ApiError::bad("`admin_status` must be \"up\" or \"down\"")),
        };
        let s = self.server_mut(id)?;
        let c = s.switch.iter_mut().find(|c| c.id == conn).ok_or_else(|| {
            ApiError::not_found(format!("switch connection {conn} of server {id}"))
        })?;
        c.admin_status = status;
        Ok(json!({"id": conn}))
    }

    /// The pool a server's addresses come from: its rack's, else its
    /// location's, else one whose name contains "public"; IPv4 pools only.
    fn pick_pool(&self, server: u64, role: Role) -> Option<usize> {
        let s = self.servers.get(&server)?;
        let usable = |p: &&Pool| p.spec.role == role && p.has("ipv4");
        let by = |pred: &dyn Fn(&Pool) -> bool| {
            self.pools
                .iter()
                .enumerate()
                .filter(|(_, p)| usable(p))
                .find(|(_, p)| pred(p))
                .map(|(i, _)| i)
        };
        by(&|p| p.spec.rack == Some(s.spec.rack))
            .or_else(|| by(&|p| p.spec.rack.is_none() && p.spec.location == Some(s.spec.location)))
            .or_else(|| by(&|p| p.spec.name.to_lowercase().contains("public")))
    }

    fn allocate(&mut self, server: u64, count: u64, family: &str, role: Role) -> ApiResult {
        let Some(pi) = self.pick_pool(server, role) else {
            return Err(ApiError::new(
                400,
                4001,
                format!(
                    "no IPv4 pool for server {server}: neither its rack, its location nor a public pool has one"
                ),
            ));
        };
        let used: BTreeSet<IpAddr> = self.ips.values().map(|r| r.address).collect();
        let pool = &self.pools[pi];
        let picked: Vec<(IpAddr, String, IpAddr)> = pool
            .cidrs
            .iter()
            .filter(|c| c.family() == family)
            .flat_map(|c| c.hosts().map(move |a| (a, c.to_string(), c.gateway())))
            .filter(|(a, _, _)| !used.contains(a))
            .take(count as usize)
            .collect();
        if (picked.len() as u64) < count {
            return Err(ApiError::new(
                400,
                4002,
                format!(
                    "pool `{}` has only {} free {family} addresses",
                    pool.spec.name,
                    picked.len()
                ),
            ));
        }
        let pool_id = pool.spec.id;
        let domain = self.servers[&server].domain.clone();
        let mut out = vec![];
        for (address, cidr, gateway) in picked {
            let id = self.id();
            let rec = IpRecord {
                id,
                address,
                pool: pool_id,
                cidr,
                gateway,
                server,
                domain: domain.clone(),
            };
            out.push(rec.json());
            self.ips.insert(id, rec);
            self.servers.get_mut(&server).expect("exists").ips.push(id);
        }
        Ok(json!({"list": out, "size": out.len()}))
    }

    /// `POST /server/{id}/ip`.
    pub fn allocate_ips(&mut self, server: u64, body: &Value) -> ApiResult {
        self.server_mut(server)?;
        let count = body["count"].as_u64().unwrap_or(1);
        if count == 0 || count > 256 {
            return Err(ApiError::bad("`count` must be 1-256"));
        }
        let family = body["family"].as_str().unwrap_or("ipv4");
        if family != "ipv4" && family != "ipv6" {
            return Err(ApiError::bad("`family` must be ipv4 or ipv6"));
        }
        self.allocate(server, count, family, Role::Allocation)
    }

    fn release_role(&mut self, server: u64, role: Role) {
        let ids: Vec<u64> = self.servers[&server]
            .ips
            .iter()
            .copied()
            .filter(|i| {
                self.ips.get(i).is_some_and(|r| {
                    self.pools
                        .iter()
                        .any(|p| p.spec.id == r.pool && p.spec.role == role)
                })
            })
            .collect();
        for id in ids {
            self.ips.remove(&id);
            self.servers
                .get_mut(&server)
                .expect("exists")
                .ips
                .retain(|i| *i != id);
        }
    }

    /// `DELETE /server/{id}/ip/{ip}`: the address goes back to its pool.
    pub fn release_ip(&mut self, server: u64, ip: u64) -> ApiResult {
        let s = self.server_mut(server)?;
        if !s.ips.contains(&ip) {
            return Err(ApiError::not_found(format!("ip {ip} of server {server}")));
        }
        s.ips.retain(|i| *i != ip);
        self.ips.remove(&ip);
        Ok(json!({"id": ip}))
    }

    /// `POST /server/{id}/operation/install`.
    pub fn install(&mut self, server: u64, body: &Value) -> ApiResult {
        let template = body["os_template"]
            .as_u64()
            .ok_or_else(|| ApiError::bad("`os_template` is required"))?;
        if !self.os.iter().any(|o| o.id == template) {
            return Err(ApiError::not_found(format!("os template {template}")));
        }
        let recipes: Vec<u64> = match &body["recipes"] {
            Value::Null => vec![],
            Value::Array(a) => a
                .iter()
                .map(|v| {
                    v.as_u64()
                        .ok_or_else(|| ApiError::bad("`recipes` are script ids"))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(ApiError::bad("`recipes` must be a list of script ids")),
        };
        for r in &recipes {
            if !self.scripts.iter().any(|s| s.id == *r) {
                return Err(ApiError::not_found(format!("script {r}")));
            }
        }
        let password = body["password"].as_str().unwrap_or_default().to_owned();
        if password.len() < 8 {
            return Err(ApiError::bad("`password` must be at least 8 characters"));
        }
        let last = self.server_mut(server)?.last_operation;
        if let Some(op) = last.and_then(|o| self.operations.get(&o))
            && self.operation_status(op).0 == "running"
        {
            return Err(ApiError::new(
                409,
                3005,
                format!("server {server} has an operation running"),
            ));
        }
        let id = self.id();
        let failure = self.faults.fail_next_install.take();
        self.operations.insert(
            id,
            Operation {
                id,
                server,
                started: Instant::now(),
                delay: Duration::from_millis(self.settings.install_delay_ms),
                failure,
                os_template: template,
                recipes,
                password,
                outcome: None,
            },
        );
        let s = self.server_mut(server)?;
        s.last_operation = Some(id);
        s.os_template = Some(template);
        s.power = "on".into();
        Ok(json!({"operation": id}))
    }

    /// Everything, for assertions.
    pub fn snapshot(&self) -> Value {
        json!({
            "servers": self.servers_json(),
            "users": self.users_json(),
            "pools": self.pools_json(),
            "ips": self.ips_json(),
            "operations": self.operations.keys().filter_map(|o| self.operation_json(*o).ok()).collect::<Vec<_>>(),
            "installs": self.operations.values().map(|o| json!({
                "operation": o.id,
                "server": o.server,
                "os_template": o.os_template,
                "recipes": o.recipes,
                "password": o.password,
            })).collect::<Vec<_>>(),
            "logins": self.logins,
            "calls": self.calls.len(),
            "faults": self.faults,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_hosts_skip_network_gateway_and_broadcast() {
        let c = Cidr::parse("10.0.0.0/29").unwrap();
        let hosts: Vec<String> = c.hosts().map(|a| a.to_string()).collect();
        assert_eq!(
            hosts,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        assert_eq!(c.gateway().to_string(), "10.0.0.1");
        assert!(Cidr::parse("10.0.0.0/8").is_err());
        assert!(Cidr::parse("2001:db8::/120").is_ok());
    }
}
