//! A DCImanager 6 simulator: the part of DCImanager 6's HTTP API that a
//! billing system uses, in memory, seeded from a [`Fixture`].
//!
//! Used by Bursar's end-to-end tests (in-process, [`spawn`]) and by
//! `bursar serve --demo`; also a binary, `dcimanager6-sim --listen ADDR
//! --fixture FILE`. Besides the API it has a control surface under
//! `/sim/`: `GET /sim/state` (everything, for assertions) and
//! `POST /sim/faults` (503s, latency, a failing install, token expiry).

pub mod filter;
pub mod fixture;
pub mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

pub use fixture::Fixture;
pub use state::{ApiError, Faults};
use state::{ApiResult, State};

/// A running simulator's shared state.
#[derive(Clone)]
pub struct Sim(Arc<Mutex<State>>);

impl Sim {
    pub fn new(fixture: Fixture) -> Sim {
        Sim(Arc::new(Mutex::new(State::new(fixture))))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything the simulator holds, as `GET /sim/state` shows it.
    pub fn snapshot(&self) -> Value {
        self.lock().snapshot()
    }

    /// One server as the API shows it.
    pub fn server(&self, id: u64) -> Value {
        self.lock().server_json(id).unwrap_or(Value::Null)
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// How many times the billing side logged in.
    pub fn logins(&self) -> u64 {
        self.lock().logins
    }

    /// `METHOD /path` of every API call so far.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Changes how long installs take (for installs started afterwards).
    /// Turns a server's power on or off behind the billing system's back.
    pub fn set_power(&self, id: u64, on: bool) {
        let action = if on { "power_on" } else { "power_off" };
        self.lock().power(id, action).expect("a server");
    }

    /// Sets every customer port (not the BMC's) of a server, behind the
    /// billing system's back.
    pub fn set_uplinks(&self, id: u64, status: &str) {
        let mut state = self.lock();
        let server = state.servers.get_mut(&id).expect("a server");
        for c in server.switch.iter_mut().filter(|c| !c.is_ipmi) {
            c.admin_status = status.to_owned();
        }
    }

    /// Adds a DCImanager user, as staff would in its panel; returns its id.
    pub fn add_user(&self, email: &str) -> u64 {
        self.lock()
            .create_user(
                &serde_json::json!({"email": email, "full_name": email, "role": "[@user]"}),
            )
            .ok()
            .and_then(|v| v["id"].as_u64())
            .expect("a new user")
    }

    pub fn set_install_delay(&self, delay: Duration) {
        self.lock().settings.install_delay_ms = delay.as_millis() as u64;
    }

    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/api/dci/v3/server", get(servers))
            .route("/api/dci/v3/server/configuration", get(configurations))
            .route("/api/dci/v3/server/{id}", get(server).post(edit_server))
            .route("/api/dci/v3/server/{id}/power_on", post(power_on))
            .route("/api/dci/v3/server/{id}/power_off", post(power_off))
            .route("/api/dci/v3/server/{id}/power_reset", post(power_reset))
            .route("/api/dci/v3/server/{id}/ip", post(allocate_ips))
            .route("/api/dci/v3/server/{id}/ip/{ip}", delete(release_ip))
            .route("/api/dci/v3/server/{id}/operation/install", post(install))
            .route(
                "/api/dci/v3/server/{id}/switch_connection/{conn}",
                post(switch_port),
            )
            .route("/api/dci/v3/operation/{id}", get(operation))
            .route("/api/dci/v3/os", get(os_templates))
            .route("/api/dci/v3/script", get(scripts))
            .route("/api/dci/v3/location", get(locations))
            .route("/api/dci/v3/rack", get(racks))
            .route("/api/dci/v3/user", get(users).post(create_user))
            .route("/api/ip/v3/ipnet", get(pools))
            .route("/api/ip/v3/ip", get(ips))
            .route_layer(middleware::from_fn_with_state(self.clone(), authenticated));
        Router::new()
            .route("/api/auth/v4/public/token", post(login))
            .merge(api)
            .layer(middleware::from_fn_with_state(self.clone(), faults))
            .route("/sim/state", get(sim_state))
            .route("/sim/faults", get(get_faults).post(post_faults))
            .with_state(self.clone())
    }
}

/// A simulator serving on a local port.
pub struct Running {
    pub sim: Sim,
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a simulator on `addr` (port 0 picks a free one).
pub async fn spawn(fixture: Fixture, addr: SocketAddr) -> std::io::Result<Running> {
    let sim = Sim::new(fixture);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = sim.router();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "DCImanager 6 simulator stopped");
        }
    });
    Ok(Running { sim, addr, task })
}

fn reply(result: ApiResult) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(e),
    }
}

fn error(e: ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(e.body())).into_response()
}

fn list(items: Vec<Value>) -> Response {
    let size = items.len();
    Json(json!({"list": items, "size": size})).into_response()
}

/// Latency and 503s for every API call, counted in `calls`.
async fn faults(AxState(sim): AxState<Sim>, req: Request, next: Next) -> Response {
    let (latency, unavailable) = {
        let mut s = sim.lock();
        s.calls
            .push(format!("{} {}", req.method(), req.uri().path()));
        (s.faults.latency_ms, s.take_unavailable())
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if unavailable {
        return error(ApiError::new(
            503,
            5003,
            "Service is starting, try again later",
        ));
    }
    next.run(req).await
}

/// The token must come both as the `ses6` cookie and the `x-xsrf-token`
/// header, and must not have expired.
async fn authenticated(AxState(sim): AxState<Sim>, req: Request, next: Next) -> Response {
    let token = token_of(req.headers());
    if let Err(e) = sim.lock().authenticate(token.as_deref()) {
        return error(e);
    }
    next.run(req).await
}

fn token_of(headers: &HeaderMap) -> Option<String> {
    let header = headers.get("x-xsrf-token")?.to_str().ok()?;
    let cookie = headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == "ses6")
        .map(|(_, v)| v)?;
    (header == cookie).then(|| header.to_owned())
}

type Params = Query<HashMap<String, String>>;

fn filtered(items: Vec<Value>, q: &HashMap<String, String>) -> Response {
    match filter::apply(
        items,
        q.get("where").map(String::as_str),
        q.get("orderby").map(String::as_str),
        q.get("limit").map(String::as_str),
    ) {
        Ok(items) => list(items),
        Err(e) => error(ApiError::bad(format!("bad query: {e}"))),
    }
}

fn body_of(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("bad JSON: {e}")))
}

async fn login(AxState(sim): AxState<Sim>, body: axum::body::Bytes) -> Response {
    let body = match body_of(&body) {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    let (email, password) = (
        body["email"].as_str().unwrap_or_default(),
        body["password"].as_str().unwrap_or_default(),
    );
    reply(sim.lock().login(email, password))
}

async fn servers(AxState(sim): AxState<Sim>, Query(q): Params) -> Response {
    let items = sim.lock().servers_json();
    filtered(items, &q)
}

async fn configurations(AxState(sim): AxState<Sim>, Query(q): Params) -> Response {
    let keep = match q.get("where").filter(|w| !w.trim().is_empty()) {
        Some(w) => match filter::Filter::parse(w) {
            Ok(f) => Some(f),
            Err(e) => return error(ApiError::bad(format!("bad query: {e}"))),
        },
        None => None,
    };
    let items = sim
        .lock()
        .configurations(|s| keep.as_ref().is_none_or(|f| f.matches(s)));
    list(items)
}

async fn server(AxState(sim): AxState<Sim>, Path(id): Path<u64>) -> Response {
    reply(sim.lock().server_json(id))
}

async fn edit_server(
    AxState(sim): AxState<Sim>,
    Path(id): Path<u64>,
    body: axum::body::Bytes,
) -> Response {
    reply(body_of(&body).and_then(|b| sim.lock().edit_server(id, &b)))
}

async fn power_on(AxState(sim): AxState<Sim>, Path(id): Path<u64>) -> Response {
    reply(sim.lock().power(id, "power_on"))
}

async fn power_off(AxState(sim): AxState<Sim>, Path(id): Path<u64>) -> Response {
    reply(sim.lock().power(id, "power_off"))
}

async fn power_reset(AxState(sim): AxState<Sim>, Path(id): Path<u64>) -> Response {
    reply(sim.lock().power(id, "power_reset"))
}

async fn allocate_ips(
    AxState(sim): AxState<Sim>,
    Path(id): Path<u64>,
    body: axum::body::Bytes,
) -> Response {
    reply(body_of(&body).and_then(|b| sim.lock().allocate_ips(id, &b)))
}

async fn release_ip(AxState(sim): AxState<Sim>, Path((id, ip)): Path<(u64, u64)>) -> Response {
    reply(sim.lock().release_ip(id, ip))
}

async fn install(
    AxState(sim): AxState<Sim>,
    Path(id): Path<u64>,
    body: axum::body::Bytes,
) -> Response {
    reply(body_of(&body).and_then(|b| sim.lock().install(id, &b)))
}

async fn switch_port(
    AxState(sim): AxState<Sim>,
    Path((id, conn)): Path<(u64, u64)>,
    body: axum::body::Bytes,
) -> Response {
    reply(body_of(&body).and_then(|b| sim.lock().switch_port(id, conn, &b)))
}

async fn operation(AxState(sim): AxState<Sim>, Path(id): Path<u64>) -> Response {
    reply(sim.lock().operation_json(id))
}

async fn os_templates(AxState(sim): AxState<Sim>, Query(q): Params) -> Response {
    let items = sim.lock().os_templates();
    filtered(items, &q)
}

async fn scripts(AxState(sim): AxState<Sim>, Query(q): Params) -> Response {
    let items = sim.lock().scripts();
    filtered(items, &q)
}

async fn locations(AxState(sim): AxState<Sim>, Query(q): Params) -> Response {
    let items = sim.lock().locations();
    filtered(items, &q)
}

async fn racks(AxState(sim): AxState<Sim>, Query(q): Params) -> Response {
    let items = sim.lock().racks();
    filtered(items, &q)
}

async fn users(AxState(sim): AxState<Sim>, Query(q): Params) -> Response {
    let items = sim.lock().users_json();
    filtered(items, &q)
}

async fn create_user(AxState(sim): AxState<Sim>, body: axum::body::Bytes) -> Response {
    reply(body_of(&body).and_then(|b| sim.lock().create_user(&b)))
}

async fn pools(AxState(sim): AxState<Sim>, Query(q): Params) -> Response {
    let items = sim.lock().pools_json();
    filtered(items, &q)
}

async fn ips(AxState(sim): AxState<Sim>, Query(q): Params) -> Response {
    let items = sim.lock().ips_json();
    filtered(items, &q)
}

async fn sim_state(AxState(sim): AxState<Sim>) -> Response {
    Json(sim.snapshot()).into_response()
}

async fn get_faults(AxState(sim): AxState<Sim>) -> Response {
    Json(sim.faults()).into_response()
}

async fn post_faults(AxState(sim): AxState<Sim>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(f) => {
            sim.set_faults(f.clone());
            Json(f).into_response()
        }
        Err(e) => error(ApiError::bad(format!("bad faults: {e}"))),
    }
}
