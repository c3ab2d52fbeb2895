//! `/api/v1/accounts`: customers, their balance, ledger, credits and API keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::accounts::{AccountStatus, Role};
use crate::api::error::Problem;
use crate::api::extract::{ApiJson, ApiQuery, IdempotencyKey, Principal};
use crate::api::idempotency::{Idempotency, Reply};
use crate::api::policy::Action;
use crate::api::views::*;
use crate::api::{AppState, ListQuery, PageBody, SeqListQuery, page_limit};
use crate::directory;
use crate::ledger::{LedgerAccountId, TransactionKind};
use crate::money::{Currency, Money};
use crate::store::accounts::{self as repo};
use crate::store::ledger::{self as ledger_repo};

/// A new customer account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Unique among accounts (compared case-insensitively).
    pub email: String,
    pub name: String,
    /// ISO 4217 code of the currency the account is billed in.
    #[schema(example = "EUR")]
    pub currency: String,
    /// How far below zero the balance may go, in minor units (default 0).
    #[serde(default)]
    pub credit_limit: i64,
    /// ISO 3166-1 alpha-2 country; decides the taxes charged.
    pub country: Option<String>,
    /// IANA time zone its services count their periods in (default: the
    /// deployment's `[billing] time_zone`).
    #[schema(example = "Europe/Berlin")]
    pub time_zone: Option<String>,
    /// ISO 639-1: the language of its mail (default `en`).
    #[schema(example = "en")]
    pub language: Option<String>,
    /// Optional mail to turn off: `renewal_due`, `balance_low`.
    #[serde(default)]
    pub email_opt_out: Vec<String>,
}

#[utoipa::path(post, path = "/api/v1/accounts", operation_id = "createAccount", tag = "accounts",
    request_body = CreateAccount,
    params(("Idempotency-Key" = Option<String>, Header, description = "replays return the first response")),
    responses((status = 201, body = AccountView), (status = 409, description = "e-mail taken"), (status = 422, description = "invalid field")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    body: ApiJson<CreateAccount>,
) -> Result<Response, Problem> {
    let req = body.value;
    let new = directory::AccountForm {
        email: &req.email,
        name: &req.name,
        currency: &req.currency,
        credit_limit: req.credit_limit,
        country: req.country.as_deref(),
        time_zone: req.time_zone.as_deref(),
        language: req.language.as_deref(),
        email_opt_out: &req.email_opt_out,
    }
    .check()?;
    let now = state.clock.now();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    idem.run(&state, |tx| {
        Box::pin(async move {
            let account = directory::create_account(tx.conn(), new, now).await?;
            Reply::new(StatusCode::CREATED, AccountView::from(account))
        })
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}", operation_id = "getAccount", tag = "accounts",
    params(("id" = String, Path)),
    responses((status = 200, body = AccountView), (status = 403), (status = 404)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<AccountView>, Problem> {
    principal.require_account(&id)?;
    let mut r = state.store.reader().await?;
    Ok(Json(repo::get(r.conn(), &id).await?.into()))
}

#[utoipa::path(get, path = "/api/v1/accounts", operation_id = "listAccounts", tag = "accounts",
    params(ListQuery),
    responses((status = 200, body = PageBody<AccountView>)),
    security(("bearer" = [])))]
/// Admins list all accounts; a customer key lists its own.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<PageBody<AccountView>>, Problem> {
    let limit = page_limit(&state, q.limit)?;
    let mut r = state.store.reader().await?;
    if let Some(own) = principal.scope(None)? {
        let account = repo::get(r.conn(), &own).await?;
        let data = if q.after.as_deref().is_some_and(|a| a >= own.as_str()) {
            vec![]
        } else {
            vec![account]
        };
        return Ok(Json(PageBody::all(data)));
    }
    let page = repo::list(r.conn(), q.after.as_deref(), limit).await?;
    Ok(Json(page.into()))
}

/// Changes to an account. `name` and `email` are the profile, which its
/// owner may change; the rest decides what the customer owes or how they
/// are billed, and is for staff (admins and accountants) only.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    pub email: Option<String>,
    pub name: Option<String>,
    /// Staff only.
    pub credit_limit: Option<i64>,
    /// Staff only.
    pub status: Option<AccountStatus>,
    /// Staff only: decides the taxes charged from now on.
    pub country: Option<String>,
    /// Staff only. For services ordered from now on; existing ones keep theirs.
    pub time_zone: Option<String>,
    /// ISO 639-1: the language of its mail.
    pub language: Option<String>,
    /// Optional mail turned off (replaces the list): `renewal_due`,
    /// `balance_low`. What the service depends on always goes out.
    pub email_opt_out: Option<Vec<String>>,
}

impl UpdateAccount {
    fn edit(&self) -> directory::AccountEdit<'_> {
        directory::AccountEdit {
            email: self.email.as_deref(),
            name: self.name.as_deref(),
            credit_limit: self.credit_limit,
            status: self.status,
            country: self.country.as_deref(),
            time_zone: self.time_zone.as_deref(),
            language: self.language.as_deref(),
            email_opt_out: self.email_opt_out.as_deref(),
        }
    }
}

#[utoipa::path(patch, path = "/api/v1/accounts/{id}", operation_id = "updateAccount", tag = "accounts",
    params(("id" = String, Path)), request_body = UpdateAccount,
    responses((status = 200, body = AccountView), (status = 403, description = "a billing field changed by a customer"), (status = 409), (status = 422)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: ApiJson<UpdateAccount>,
) -> Result<Json<AccountView>, Problem> {
    principal.require_account(&id)?;
    let req = body.value;
    let edit = req.edit();
    if edit.touches_billing() {
        principal.require(Action::AccountEditBilling).map_err(|_| {
            Problem::forbidden(
                "country, credit_limit, status and time_zone are changed by staff only",
            )
        })?;
    }
    if edit.touches_profile() && !principal.may(Action::AccountEditProfile) {
        return Err(Problem::forbidden(
            "name, email, language and email_opt_out are changed by the customer or support",
        ));
    }
    let status_changes = edit.status.is_some();
    let mut tx = state.store.begin().await?;
    let account =
        directory::update_account(tx.conn(), &id, edit, &principal.actor(), state.clock.now())
            .await?;
    tx.commit().await?;
    if status_changes {
        // Its keys are looked up afresh: a blocked account's stop at once.
        state.key_cache.forget_account(&account.id);
    }
    Ok(Json(account.into()))
}

/// A customer's balance in minor units.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceView {
    pub account_id: String,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    /// Sum of the account's ledger entries (minor units).
    pub balance: i64,
    /// The same as a decimal string, e.g. `12.34`.
    pub balance_decimal: String,
    pub credit_limit: i64,
    /// What can still be spent: balance plus credit limit.
    pub available: i64,
}

/// The balance of account `id`, read in one statement (a 404 when there is
/// no such account).
async fn balance_view(conn: crate::store::Conn<'_>, id: &str) -> Result<BalanceView, Problem> {
    let (currency, b) = ledger_repo::customer_balance(conn, id)
        .await?
        .ok_or_else(|| crate::error::Error::not_found("account", id))?;
    let credit_limit = b.min_balance.map_or(0, |m| -m);
    Ok(BalanceView {
        account_id: id.to_owned(),
        currency,
        balance: b.balance,
        balance_decimal: Money::new(b.balance, currency)
            .map(Money::to_decimal_string)
            .unwrap_or_else(|_| b.balance.to_string()),
        credit_limit,
        available: b.balance.saturating_add(credit_limit),
    })
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}/balance", operation_id = "getBalance", tag = "accounts",
    params(("id" = String, Path)),
    responses((status = 200, body = BalanceView)),
    security(("bearer" = [])))]
pub async fn balance(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<BalanceView>, Problem> {
    principal.require_account(&id)?;
    let mut r = state.store.reader().await?;
    Ok(Json(balance_view(r.conn(), &id).await?))
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}/ledger", operation_id = "listLedgerEntries", tag = "accounts",
    params(("id" = String, Path), SeqListQuery),
    responses((status = 200, body = PageBody<StatementLineView>)),
    security(("bearer" = [])))]
/// The account's ledger entries, oldest first.
pub async fn ledger(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<SeqListQuery>,
) -> Result<Json<PageBody<StatementLineView>>, Problem> {
    principal.require_account(&id)?;
    let limit = page_limit(&state, q.limit)?;
    let after = q.after.map(|c| c.0);
    let mut r = state.store.reader().await?;
    repo::get(r.conn(), &id).await?;
    let page =
        ledger_repo::statement(r.conn(), &LedgerAccountId::customer(&id), after, limit).await?;
    Ok(Json(page.into()))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CreditKind {
    /// Add money to the balance.
    Credit,
    /// Take money from the balance (never below minus the credit limit).
    Debit,
}

/// A manual credit or debit by staff.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCredit {
    pub kind: CreditKind,
    /// Positive, in minor units of `currency`.
    pub amount: i64,
    /// Must be the account's currency.
    #[schema(example = "EUR")]
    pub currency: String,
    /// Why: shown on the customer's statement.
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditResult {
    pub transaction: TransactionView,
    pub balance: BalanceView,
}

#[utoipa::path(post, path = "/api/v1/accounts/{id}/credits", operation_id = "adjustBalance", tag = "accounts",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = CreateCredit,
    responses((status = 201, body = CreditResult), (status = 402, description = "insufficient funds"), (status = 422)),
    security(("bearer" = [])))]
pub async fn credit(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: ApiJson<CreateCredit>,
) -> Result<Response, Problem> {
    let req = body.value;
    let currency = Currency::from_code(&req.currency)
        .map_err(|e| Problem::invalid("currency", e.to_string()))?;
    if req.amount <= 0 {
        return Err(Problem::invalid(
            "amount",
            "must be a positive number of minor units",
        ));
    }
    let amount =
        Money::new(req.amount, currency).map_err(|e| Problem::invalid("amount", e.to_string()))?;
    let reason = crate::accounts::check_text("reason", &req.reason, 500)?;
    let kind = match req.kind {
        CreditKind::Credit => TransactionKind::Credit,
        CreditKind::Debit => TransactionKind::Debit,
    };
    let now = state.clock.now();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    let ledger_key = idem.ledger_key(kind.as_str());
    let actor = principal.actor();
    idem.run(&state, |tx| {
        Box::pin(async move {
            let adjustment = crate::billing::Adjustment {
                account_id: &id,
                kind,
                amount,
                reason: &reason,
                ledger_key,
                actor: &actor,
            };
            let transaction = crate::billing::adjust(tx.conn(), adjustment, now).await?;
            let balance = balance_view(tx.conn(), &id).await?;
            Reply::new(
                StatusCode::CREATED,
                CreditResult {
                    transaction: transaction.into(),
                    balance,
                },
            )
        })
    })
    .await
}

/// A new customer API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label to recognise the key by, e.g. "storefront".
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// After this the key no longer works; none: it works until revoked.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub key: ApiKeyView,
    /// The secret, shown only in this response. A replay of the request
    /// returns `null` here: the secret is never stored.
    pub secret: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/accounts/{id}/api-keys", operation_id = "createApiKey", tag = "accounts",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 409, description = "the account has as many keys as it may")),
    security(("bearer" = [])))]
pub async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    key: IdempotencyKey,
    body: ApiJson<CreateApiKey>,
) -> Result<Response, Problem> {
    principal.require_account(&id)?;
    let now = state.clock.now();
    let req = body.value;
    let quota = state.api.max_keys_per_account;
    let actor = principal.actor();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    idem.run(&state, |tx| {
        Box::pin(async move {
            let form = directory::KeyForm {
                role: Role::Customer,
                account_id: Some(&id),
                name: &req.name,
                expires_at: req.expires_at,
            };
            let (key, secret) = directory::create_key(tx.conn(), form, quota, &actor, now).await?;
            CreatedApiKey::reply(key.into(), &secret)
        })
    })
    .await
}

#[utoipa::path(get, path = "/api/v1/accounts/{id}/api-keys", operation_id = "listApiKeys", tag = "accounts",
    params(("id" = String, Path)),
    responses((status = 200, body = PageBody<ApiKeyView>)),
    security(("bearer" = [])))]
/// The account's keys that still work (revoked and expired ones are not
/// listed).
pub async fn list_keys(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<PageBody<ApiKeyView>>, Problem> {
    principal.require_account(&id)?;
    let mut r = state.store.reader().await?;
    repo::get(r.conn(), &id).await?;
    let data = repo::list_keys(r.conn(), &id, state.clock.now()).await?;
    Ok(Json(PageBody::all(data)))
}

#[utoipa::path(delete, path = "/api/v1/accounts/{id}/api-keys/{key_id}", operation_id = "revokeApiKey", tag = "accounts",
    params(("id" = String, Path), ("key_id" = String, Path)),
    responses((status = 200, body = ApiKeyView)),
    security(("bearer" = [])))]
/// Revokes a key; it stops working at once.
pub async fn revoke_key(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Json<ApiKeyView>, Problem> {
    principal.require_account(&id)?;
    let mut tx = state.store.begin().await?;
    let key = directory::revoke_key(tx.conn(), &id, &key_id, state.clock.now()).await?;
    tx.commit().await?;
    state.key_cache.forget_key(&key.id);
    Ok(Json(key.into()))
}
