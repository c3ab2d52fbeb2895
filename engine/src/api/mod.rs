//! The HTTP API (axum): `/api/v1/…` plus health, readiness, metrics and the
//! OpenAPI document generated from the handlers.

pub mod accounts;
pub mod contract;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod invoices;
pub mod keys;
pub mod operations;
pub mod payments;
pub mod plans;
pub mod plugins;
pub mod policy;
pub mod public;
pub mod services;
mod system;
pub mod views;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::clock::SharedClock;
use crate::config::ApiConfig;
use crate::plugins::instances::PluginRegistry;
use crate::services::module::ModuleRegistry;
use crate::store::{Page, Store};
use error::Problem;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub store: Store,
    pub clock: SharedClock,
    pub api: ApiConfig,
    pub modules: ModuleRegistry,
    pub plugins: PluginRegistry,
    pub payments: crate::payments::PaymentsConfig,
    pub billing: crate::calendar::BillingConfig,
    /// When each API key was last recorded as used.
    pub key_use: keys::KeyUse,
    /// Keys already authenticated (see [`extract::KeyCache`]).
    pub key_cache: Arc<extract::KeyCache>,
    /// Orders committed together (see [`idempotency::GroupCommit`]).
    pub group_commit: Arc<idempotency::GroupCommit>,
    /// Rate, concurrency and size bounds of the public callbacks.
    pub callbacks: public::CallbackGuard,
    /// The keys service credentials are sealed with.
    pub secrets: Arc<crate::secrets::Secrets>,
    /// How often credentials may be revealed.
    pub reveals: services::RevealLimit,
    /// The templates documents (invoice HTML and PDF) are rendered from.
    pub templates: Arc<crate::templates::Templates>,
    /// Who the documents are from.
    pub company: crate::templates::CompanyConfig,
    /// The web console's sessions and login throttling.
    pub console: crate::config::ConsoleConfig,
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Store, clock: SharedClock, api: ApiConfig, modules: ModuleRegistry) -> Self {
        AppState::with_plugins(store, clock, api, modules, PluginRegistry::default())
    }

    pub fn with_plugins(
        store: Store,
        clock: SharedClock,
        api: ApiConfig,
        modules: ModuleRegistry,
        plugins: PluginRegistry,
    ) -> Self {
        let callbacks = public::CallbackGuard::new(&api.callbacks, &plugins);
        AppState(Arc::new(AppInner {
            store,
            clock,
            api,
            modules,
            plugins,
            payments: crate::payments::PaymentsConfig::default(),
            billing: Default::default(),
            key_use: Default::default(),
            key_cache: Default::default(),
            group_commit: Default::default(),
            callbacks,
            // A throw-away key until `with_secrets` (what `serve` and the
            // tests call) sets the configured one.
            secrets: Arc::new(
                crate::secrets::Secrets::with_key(&crate::secrets::generate_key())
                    .expect("a generated key is valid"),
            ),
            reveals: Default::default(),
            templates: crate::templates::Templates::shared_builtin(),
            company: Default::default(),
            console: Default::default(),
        }))
    }

    /// The state `bursar serve` builds: its settings from `config`, its
    /// credentials sealed with `secrets`.
    pub fn from_config(
        store: Store,
        clock: SharedClock,
        config: &crate::config::Config,
        modules: ModuleRegistry,
        plugins: PluginRegistry,
        secrets: Arc<crate::secrets::Secrets>,
    ) -> Self {
        AppState::with_plugins(store, clock, config.api.clone(), modules, plugins)
            .with_settings(config.payments.clone(), config.billing.clone())
            .with_secrets(secrets)
            .with_console(config.console.clone())
    }

    /// The same state with these console settings.
    pub fn with_console(self, console: crate::config::ConsoleConfig) -> Self {
        let mut inner = Arc::try_unwrap(self.0).unwrap_or_else(|shared| shared.copy());
        inner.console = console;
        AppState(Arc::new(inner))
    }

    /// The same state rendering documents from `templates` for `company`.
    pub fn with_documents(
        self,
        templates: Arc<crate::templates::Templates>,
        company: crate::templates::CompanyConfig,
    ) -> Self {
        let mut inner = Arc::try_unwrap(self.0).unwrap_or_else(|shared| shared.copy());
        inner.templates = templates;
        inner.company = company;
        AppState(Arc::new(inner))
    }

    /// The same state sealing credentials with `secrets`.
    pub fn with_secrets(self, secrets: Arc<crate::secrets::Secrets>) -> Self {
        let mut inner = Arc::try_unwrap(self.0).unwrap_or_else(|shared| shared.copy());
        inner.secrets = secrets;
        AppState(Arc::new(inner))
    }

    /// The same state with these `[payments]` and `[billing]` settings.
    pub fn with_settings(
        self,
        payments: crate::payments::PaymentsConfig,
        billing: crate::calendar::BillingConfig,
    ) -> Self {
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|shared| shared.copy());
        AppState(Arc::new(AppInner {
            payments,
            billing,
            ..inner
        }))
    }
}

impl AppInner {
    /// A copy for a state derived from a shared one.
    fn copy(&self) -> AppInner {
        AppInner {
            store: self.store.clone(),
            clock: self.clock.clone(),
            api: self.api.clone(),
            modules: self.modules.clone(),
            plugins: self.plugins.clone(),
            payments: self.payments.clone(),
            billing: self.billing.clone(),
            key_use: Default::default(),
            key_cache: self.key_cache.clone(),
            group_commit: self.group_commit.clone(),
            callbacks: public::CallbackGuard::new(&self.api.callbacks, &self.plugins),
            secrets: self.secrets.clone(),
            reveals: Default::default(),
            templates: self.templates.clone(),
            company: self.company.clone(),
            console: self.console.clone(),
        }
    }
}

/// The `after` of a list ordered by id: the `next_cursor` of the previous
/// page (an id such as `acc_0192…`). Anything else is a 400.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct IdCursor(String);

/// The pattern of [`IdCursor`], as the OpenAPI document states it.
pub const ID_CURSOR_PATTERN: &str = "^[a-z]{1,8}_[0-9a-f]{32}$";

impl TryFrom<String> for IdCursor {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let valid = s.split_once('_').is_some_and(|(prefix, rest)| {
            (1..=8).contains(&prefix.len())
                && prefix.bytes().all(|b| b.is_ascii_lowercase())
                && rest.len() == 32
                && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if valid {
            Ok(IdCursor(s))
        } else {
            Err("`after` must be a `next_cursor` of this list".into())
        }
    }
}

impl std::ops::Deref for IdCursor {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// The `after` of a list ordered by sequence number (ledger entries,
/// service events).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub struct SeqCursor(pub i64);

impl TryFrom<String> for SeqCursor {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if (1..=18).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().map(SeqCursor).map_err(|e| e.to_string())
        } else {
            Err("`after` must be a `next_cursor` of this list".into())
        }
    }
}

/// `?account_id=` besides the paging parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccountListQuery {
    /// Staff: the account to list (all when absent). Customers: their own.
    pub account_id: Option<String>,
    /// Page size (default and maximum set in the configuration).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<String>, pattern = "^[a-z]{1,8}_[0-9a-f]{32}$")]
    pub after: Option<IdCursor>,
}

impl AccountListQuery {
    /// The account to list (a customer key: always its own), the cursor
    /// and the page size.
    pub fn resolve(
        self,
        state: &AppState,
        principal: &extract::Principal,
    ) -> Result<(Option<String>, Option<IdCursor>, usize), Problem> {
        let account = principal.scope(self.account_id.as_deref())?;
        let limit = page_limit(state, self.limit)?;
        Ok((account, self.after, limit))
    }
}

/// `?limit=&after=` of a list ordered by id.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size (default and maximum set in the configuration).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<String>, pattern = "^[a-z]{1,8}_[0-9a-f]{32}$")]
    pub after: Option<IdCursor>,
}

/// `?limit=&after=` of a list ordered by sequence number.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SeqListQuery {
    /// Page size (default and maximum set in the configuration).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<String>, pattern = "^[0-9]{1,18}$")]
    pub after: Option<SeqCursor>,
}

/// The page size a list request asked for, within the configured bounds.
pub fn page_limit(state: &AppState, limit: Option<usize>) -> Result<usize, Problem> {
    match limit {
        None => Ok(state.api.default_page_limit),
        Some(0) => Err(Problem::new(
            crate::api::error::ProblemKind::InvalidQuery,
            "`limit` must be at least 1",
        )),
        Some(l) if l > state.api.max_page_limit => Err(Problem::new(
            crate::api::error::ProblemKind::InvalidQuery,
            format!("`limit` must be at most {}", state.api.max_page_limit),
        )),
        Some(l) => Ok(l),
    }
}

/// One page of a list. Pass `next_cursor` as `after` to get the next page;
/// it is `null` on the last page.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageBody<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<V> PageBody<V> {
    /// A list that is never paged: everything on one page.
    pub fn all<T>(items: Vec<T>) -> Self
    where
        V: From<T>,
    {
        PageBody {
            data: items.into_iter().map(V::from).collect(),
            next_cursor: None,
        }
    }
}

impl<T, V: From<T>> From<Page<T>> for PageBody<V> {
    fn from(p: Page<T>) -> Self {
        PageBody {
            data: p.items.into_iter().map(V::from).collect(),
            next_cursor: p.next_cursor,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Bursar API", description = "Billing engine for hosting companies"),
    paths(
        accounts::create, accounts::get, accounts::list, accounts::update, accounts::balance,
        accounts::ledger, accounts::credit, accounts::create_key, accounts::list_keys, accounts::revoke_key,
        keys::list, keys::create, keys::revoke,
        plans::create, plans::get, plans::list, plans::update, plans::archive,
        services::order, services::get, services::list, services::suspend, services::resume, services::close,
        services::prolong, services::auto_renew, services::change_plan, services::migrate, services::credentials,
        services::sync,
        services::operations, services::events,
        operations::list, operations::get, operations::retry, operations::complete,
        plugins::list, plugins::check, plugins::catalog,
        payments::create, payments::list, payments::get, payments::mark_paid, payments::refund,
        public::callback, payments::reconcile_now,
        invoices::list, invoices::get, invoices::html, invoices::pdf, invoices::create_rule, invoices::rules,
        system::openapi,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "accounts", description = "Customers, balances, ledger, credits and API keys"),
        (name = "plans", description = "The catalog: plans, prices, add-ons"),
        (name = "services", description = "Orders and the service lifecycle"),
        (name = "operations", description = "Provisioning operations and the manual queue"),
        (name = "plugins", description = "Plugin instances and their health"),
        (name = "payments", description = "Payments through gateway plugins, refunds, gateway callbacks"),
        (name = "invoices", description = "Invoices, receipts, credit notes, tax rules"),
        (name = "system", description = "The API itself"),
    )
)]
pub struct ApiDoc;

/// The OpenAPI document for this API configuration, pretty-printed.
pub fn openapi_json(api: &ApiConfig, max_payment: i64) -> String {
    serde_json::to_string_pretty(&contract::document(api, max_payment)).expect("JSON serializes")
}

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The HTTP API alone.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The HTTP application: the API and `pages` (the web console) beside it,
/// under the same request limits, metrics, tracing and panic guard.
pub fn router_with(state: AppState, pages: Router<AppState>) -> Router {
    let max_body = state.api.max_body_bytes;
    let v1 = Router::new()
        .route("/accounts", get(accounts::list).post(accounts::create))
        .route("/accounts/{id}", get(accounts::get).patch(accounts::update))
        .route("/accounts/{id}/balance", get(accounts::balance))
        .route("/accounts/{id}/ledger", get(accounts::ledger))
        .route("/accounts/{id}/credits", post(accounts::credit))
        .route(
            "/accounts/{id}/api-keys",
            get(accounts::list_keys).post(accounts::create_key),
        )
        .route(
            "/accounts/{id}/api-keys/{key_id}",
            delete(accounts::revoke_key),
        )
        .route("/staff-keys", get(keys::list).post(keys::create))
        .route("/staff-keys/{id}", delete(keys::revoke))
        .route("/plans", get(plans::list).post(plans::create))
        .route("/plans/{id}", get(plans::get).put(plans::update))
        .route("/plans/{id}/archive", post(plans::archive))
        .route("/orders", post(services::order))
        .route("/services", get(services::list))
        .route("/services/{id}", get(services::get))
        .route("/services/{id}/suspend", post(services::suspend))
        .route("/services/{id}/resume", post(services::resume))
        .route("/services/{id}/close", post(services::close))
        .route("/services/{id}/prolong", post(services::prolong))
        .route("/services/{id}/auto-renew", post(services::auto_renew))
        .route("/services/{id}/change-plan", post(services::change_plan))
        .route("/services/{id}/migrate", post(services::migrate))
        .route("/services/{id}/sync", post(services::sync))
        .route("/services/{id}/credentials", get(services::credentials))
        .route("/services/{id}/operations", get(services::operations))
        .route("/services/{id}/events", get(services::events))
        .route("/operations", get(operations::list))
        .route("/operations/{id}", get(operations::get))
        .route("/operations/{id}/retry", post(operations::retry))
        .route("/operations/{id}/complete", post(operations::complete))
        .route("/plugins", get(plugins::list))
        .route("/plugins/{name}/check", post(plugins::check))
        .route("/plugins/{name}/catalog", get(plugins::catalog))
        .route("/payments", get(payments::list).post(payments::create))
        .route("/payments/reconcile", post(payments::reconcile_now))
        .route("/payments/{id}", get(payments::get))
        .route("/payments/{id}/mark-paid", post(payments::mark_paid))
        .route("/payments/{id}/refunds", post(payments::refund))
        .route("/gateways/{instance}/callback", post(public::callback))
        .route("/invoices", get(invoices::list))
        .route("/invoices/{id}", get(invoices::get))
        .route("/invoices/{id}/html", get(invoices::html))
        .route("/invoices/{id}/pdf", get(invoices::pdf))
        .route(
            "/tax-rules",
            get(invoices::rules).post(invoices::create_rule),
        )
        .route("/openapi.json", get(system::openapi))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            policy::enforce,
        ));
    Router::new()
        .nest("/api/v1", v1)
        .merge(pages)
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(record_metrics))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(|_| {
            Problem::internal().into_response()
        }))
        .with_state(state)
}

/// Counts requests and their latency by route and status.
async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("bursar_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("bursar_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
