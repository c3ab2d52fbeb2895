//! Customers and API keys.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use crate::accounts::{Account, AccountStatus, ApiKey, ApiKeySecret, Role};
use crate::calendar::Zone;
use crate::clock::{from_micros, to_micros};
use crate::error::{Error, Result, is_unique_violation};
use crate::ids::new_id;
use crate::ledger::{LedgerAccountId, LedgerAccountKind};
use crate::money::Currency;
use crate::sql;
use crate::store::{Conn, Page, bulk};

#[derive(FromRow)]
struct AccountRow {
    id: String,
    email: String,
    name: String,
    currency: String,
    credit_limit: i64,
    status: String,
    country: Option<String>,
    time_zone: Option<String>,
    language: String,
    email_opt_out: String,
    created_at: i64,
    updated_at: i64,
}

impl AccountRow {
    fn into_account(self) -> Result<Account> {
        let corrupt = |what: &str| {
            Error::Database(sqlx::Error::Decode(
                format!("account {}: bad {what}", self.id).into(),
            ))
        };
        let time_zone = match self.time_zone.as_deref() {
            Some(name) => Some(Zone::parse(name).ok_or_else(|| corrupt("time zone"))?),
            None => None,
        };
        Ok(Account {
            currency: Currency::from_code(&self.currency).map_err(|_| corrupt("currency"))?,
            status: AccountStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?,
            id: self.id,
            email: self.email,
            name: self.name,
            credit_limit: self.credit_limit,
            country: self.country,
            time_zone,
            email_opt_out: decode_opt_out(&self.email_opt_out),
            language: self.language,
            created_at: from_micros(self.created_at),
            updated_at: from_micros(self.updated_at),
        })
    }
}

const ACCOUNT_COLUMNS: &str = "id, email, name, currency, credit_limit, status, country, time_zone, \
     language, email_opt_out, created_at, updated_at";

/// Kinds stored comma-separated; one this version does not know is left out.
fn decode_opt_out(text: &str) -> Vec<crate::messages::Kind> {
    text.split(',')
        .filter_map(crate::messages::Kind::parse)
        .collect()
}

fn encode_opt_out(kinds: &[crate::messages::Kind]) -> String {
    kinds
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A new customer, already validated.
pub struct NewAccount {
    pub email: String,
    pub name: String,
    pub currency: Currency,
    pub credit_limit: i64,
    /// ISO 3166-1 alpha-2, for taxes.
    pub country: Option<String>,
    /// Its own billing time zone, if not the deployment's.
    pub time_zone: Option<Zone>,
    /// ISO 639-1; `en` when not given.
    pub language: Option<String>,
    pub email_opt_out: Vec<crate::messages::Kind>,
}

/// Creates a customer and its balance account. A taken e-mail is a
/// conflict.
pub async fn create(mut c: Conn<'_>, new: NewAccount, now: DateTime<Utc>) -> Result<Account> {
    let id = new_id("acc");
    let at = to_micros(now);
    let language = new.language.unwrap_or_else(|| "en".to_owned());
    let inserted = sql!(&mut c, c => sqlx::query(
        "INSERT INTO accounts (id, email, name, currency, credit_limit, status, country, time_zone,
             language, email_opt_out, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'active', $6, $8, $9, $10, $7, $7)")
        .bind(&id).bind(&new.email).bind(&new.name).bind(new.currency.code())
        .bind(new.credit_limit).bind(new.country.as_deref()).bind(at).bind(new.time_zone.map(Zone::name))
        .bind(&language).bind(encode_opt_out(&new.email_opt_out))
        .execute(&mut **c).await.map(|r| r.rows_affected()));
    if let Err(e) = inserted {
        if is_unique_violation(&e) {
            return Err(Error::Conflict(format!(
                "an account with e-mail {} already exists",
                new.email
            )));
        }
        return Err(e.into());
    }
    let ledger_id = LedgerAccountId::customer(&id);
    sql!(&mut c, c => sqlx::query(
        "INSERT INTO ledger_accounts (id, kind, account_id, currency, balance, min_balance, created_at)
         VALUES ($1, $2, $3, $4, 0, $5, $6)")
        .bind(ledger_id.as_str()).bind(LedgerAccountKind::Customer.as_str()).bind(&id)
        .bind(new.currency.code()).bind(-new.credit_limit).bind(at)
        .execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(Account {
        id,
        email: new.email,
        name: new.name,
        currency: new.currency,
        credit_limit: new.credit_limit,
        country: new.country,
        time_zone: new.time_zone,
        language,
        email_opt_out: new.email_opt_out,
        status: AccountStatus::Active,
        created_at: now,
        updated_at: now,
    })
}

pub async fn get(mut c: Conn<'_>, id: &str) -> Result<Account> {
    let q = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1");
    let row: Option<AccountRow> =
        sql!(&mut c, c => sqlx::query_as(&q).bind(id).fetch_optional(&mut **c).await)?;
    row.ok_or_else(|| Error::not_found("account", id))?
        .into_account()
}

/// Those of the accounts `ids` that exist, in no particular order.
pub async fn get_many(c: Conn<'_>, ids: &[&str]) -> Result<Vec<Account>> {
    let q = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id IN {{ids}}");
    let rows: Vec<AccountRow> = bulk::fetch_in(c, &q, ids).await?;
    rows.into_iter().map(AccountRow::into_account).collect()
}

/// The billing country (if any) of each of the accounts `ids` that exist.
pub async fn countries(c: Conn<'_>, ids: &[&str]) -> Result<Vec<(String, Option<String>)>> {
    bulk::fetch_in(c, "SELECT id, country FROM accounts WHERE id IN {ids}", ids).await
}

/// Accounts in id (creation) order, starting after the cursor.
pub async fn list(mut c: Conn<'_>, after: Option<&str>, limit: usize) -> Result<Page<Account>> {
    let q = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id > $1 ORDER BY id LIMIT $2");
    let rows: Vec<AccountRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(after.unwrap_or("")).bind(limit as i64 + 1)
        .fetch_all(&mut **c).await)?;
    let accounts = rows
        .into_iter()
        .map(AccountRow::into_account)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page::from_rows(accounts, limit, |a| a.id.clone()))
}

/// Changes to an account; `None` leaves a field as it is.
#[derive(Default)]
pub struct AccountChanges {
    pub email: Option<String>,
    pub name: Option<String>,
    pub credit_limit: Option<i64>,
    pub status: Option<AccountStatus>,
    pub country: Option<String>,
    pub time_zone: Option<Zone>,
    pub language: Option<String>,
    pub email_opt_out: Option<Vec<crate::messages::Kind>>,
}

pub async fn update(
    mut c: Conn<'_>,
    id: &str,
    changes: AccountChanges,
    now: DateTime<Utc>,
) -> Result<Account> {
    let current = get(c.reborrow(), id).await?;
    if current.status == AccountStatus::Closed
        && changes.status.is_some_and(|s| s != AccountStatus::Closed)
    {
        return Err(Error::Conflict(format!(
            "account {id} is closed; a closed account stays closed"
        )));
    }
    if let Some(limit) = changes.credit_limit {
        let used = crate::store::ledger::balance(c.reborrow(), &LedgerAccountId::customer(id))
            .await?
            .balance;
        if used < 0 && limit < -used {
            return Err(Error::Conflict(format!(
                "credit_limit cannot go below the {} minor units already used; credit the account first",
                -used
            )));
        }
    }
    let email = changes.email.unwrap_or(current.email);
    let name = changes.name.unwrap_or(current.name);
    let credit_limit = changes.credit_limit.unwrap_or(current.credit_limit);
    let status = changes.status.unwrap_or(current.status);
    let country = changes.country.or(current.country);
    let time_zone = changes.time_zone.or(current.time_zone);
    let language = changes.language.unwrap_or(current.language);
    let opt_out = changes.email_opt_out.unwrap_or(current.email_opt_out);
    let updated = sql!(&mut c, c => sqlx::query(
        "UPDATE accounts SET email = $2, name = $3, credit_limit = $4, status = $5, updated_at = $6,
             country = $7, time_zone = $8, language = $9, email_opt_out = $10 WHERE id = $1")
        .bind(id).bind(&email).bind(&name).bind(credit_limit).bind(status.as_str()).bind(to_micros(now))
        .bind(country.as_deref()).bind(time_zone.map(Zone::name))
        .bind(&language).bind(encode_opt_out(&opt_out))
        .execute(&mut **c).await.map(|r| r.rows_affected()));
    if let Err(e) = updated {
        if is_unique_violation(&e) {
            return Err(Error::Conflict(format!(
                "an account with e-mail {email} already exists"
            )));
        }
        return Err(e.into());
    }
    if credit_limit != current.credit_limit {
        sql!(&mut c, c => sqlx::query("UPDATE ledger_accounts SET min_balance = $2 WHERE id = $1")
            .bind(LedgerAccountId::customer(id).as_str()).bind(-credit_limit)
            .execute(&mut **c).await.map(|r| r.rows_affected()))?;
    }
    get(c, id).await
}

#[derive(FromRow)]
struct ApiKeyRow {
    id: String,
    role: String,
    account_id: Option<String>,
    name: String,
    prefix: String,
    created_at: i64,
    revoked_at: Option<i64>,
    managed: bool,
    last_used_at: Option<i64>,
    expires_at: Option<i64>,
}

impl ApiKeyRow {
    fn into_key(self) -> Result<ApiKey> {
        Ok(ApiKey {
            role: Role::parse(&self.role).ok_or_else(|| {
                Error::Database(sqlx::Error::Decode(
                    format!("api key {}: bad role", self.id).into(),
                ))
            })?,
            id: self.id,
            account_id: self.account_id,
            name: self.name,
            prefix: self.prefix,
            created_at: from_micros(self.created_at),
            revoked_at: self.revoked_at.map(from_micros),
            managed: self.managed,
            last_used_at: self.last_used_at.map(from_micros),
            expires_at: self.expires_at.map(from_micros),
        })
    }
}

const KEY_COLUMNS: &str =
    "id, role, account_id, name, prefix, created_at, revoked_at, managed, last_used_at, expires_at";

/// A key to store: its secret's hash, role and scope.
pub struct NewKey<'a> {
    pub secret: &'a ApiKeySecret,
    pub role: Role,
    /// The customer account; `None` for staff keys.
    pub account_id: Option<&'a str>,
    pub name: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    /// The key `BURSAR_ADMIN_KEY` supplies.
    pub managed: bool,
}

/// Stores the hash of a new key. The secret itself is never written.
pub async fn insert_key(mut c: Conn<'_>, new: NewKey<'_>, now: DateTime<Utc>) -> Result<ApiKey> {
    let id = new_id("key");
    let inserted = sql!(&mut c, c => sqlx::query(
        "INSERT INTO api_keys (id, key_hash, prefix, role, account_id, name, created_at, managed, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(&id).bind(new.secret.hash()).bind(new.secret.prefix()).bind(new.role.as_str())
        .bind(new.account_id).bind(new.name).bind(to_micros(now)).bind(new.managed)
        .bind(new.expires_at.map(to_micros))
        .execute(&mut **c).await.map(|r| r.rows_affected()));
    if let Err(e) = inserted {
        if is_unique_violation(&e) {
            return Err(Error::Conflict("this key is already registered".into()));
        }
        return Err(e.into());
    }
    Ok(ApiKey {
        id,
        role: new.role,
        account_id: new.account_id.map(str::to_owned),
        name: new.name.to_owned(),
        prefix: new.secret.prefix(),
        created_at: now,
        revoked_at: None,
        managed: new.managed,
        last_used_at: None,
        expires_at: new.expires_at,
    })
}

/// Stores a key that never expires and is not managed.
pub async fn create_key(
    c: Conn<'_>,
    secret: &ApiKeySecret,
    role: Role,
    account_id: Option<&str>,
    name: &str,
    now: DateTime<Utc>,
) -> Result<ApiKey> {
    let new = NewKey {
        secret,
        role,
        account_id,
        name,
        expires_at: None,
        managed: false,
    };
    insert_key(c, new, now).await
}

/// What registering `BURSAR_ADMIN_KEY` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagedKey {
    /// The value was new: stored, and this many earlier managed keys revoked.
    Registered { revoked: u64 },
    /// The value is the managed key already.
    Unchanged,
}

/// Registers the operator-supplied admin key as the managed one: a value
/// seen before stays; a new value is stored and every earlier managed key
/// revoked, so changing `BURSAR_ADMIN_KEY` retires the old secret. A value
/// that was revoked is refused rather than brought back.
pub async fn register_managed_key(
    mut c: Conn<'_>,
    secret: &ApiKeySecret,
    now: DateTime<Utc>,
) -> Result<ManagedKey> {
    let known: Option<(String, Option<i64>, String)> = sql!(&mut c, c => sqlx::query_as(
        "SELECT id, revoked_at, role FROM api_keys WHERE key_hash = $1")
        .bind(secret.hash()).fetch_optional(&mut **c).await)?;
    let (keep, new) = match known {
        Some((_, Some(_), _)) => {
            return Err(Error::Conflict(
                "BURSAR_ADMIN_KEY holds a key that was revoked; set a new value".into(),
            ));
        }
        Some((_, None, role)) if role != Role::Admin.as_str() => {
            return Err(Error::Conflict(
                "BURSAR_ADMIN_KEY holds a key that is not an admin key".into(),
            ));
        }
        Some((id, None, _)) => {
            sql!(&mut c, c => sqlx::query("UPDATE api_keys SET managed = TRUE WHERE id = $1")
                .bind(&id).execute(&mut **c).await.map(|r| r.rows_affected()))?;
            (id, false)
        }
        None => {
            let new = NewKey {
                secret,
                role: Role::Admin,
                account_id: None,
                name: "BURSAR_ADMIN_KEY",
                expires_at: None,
                managed: true,
            };
            (insert_key(c.reborrow(), new, now).await?.id, true)
        }
    };
    let revoked = sql!(&mut c, c => sqlx::query(
        "UPDATE api_keys SET revoked_at = $2 WHERE managed AND revoked_at IS NULL AND id <> $1")
        .bind(&keep).bind(to_micros(now)).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(if new {
        ManagedKey::Registered { revoked }
    } else {
        ManagedKey::Unchanged
    })
}

pub async fn count_admin_keys(mut c: Conn<'_>) -> Result<i64> {
    Ok(sql!(&mut c, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL")
        .fetch_one(&mut **c).await)?)
}

/// What a presented key authenticates as: the key, and for a customer key
/// the status of its account.
#[derive(Clone)]
pub struct KeyIdentity {
    pub key: ApiKey,
    pub account_status: Option<AccountStatus>,
}

/// Finds an unrevoked key by the hash of its secret.
pub async fn find_key_by_hash(mut c: Conn<'_>, hash: &str) -> Result<Option<KeyIdentity>> {
    #[derive(FromRow)]
    struct Row {
        #[sqlx(flatten)]
        key: ApiKeyRow,
        account_status: Option<String>,
    }
    let row: Option<Row> = sql!(&mut c, c => sqlx::query_as(
        "SELECT k.id, k.role, k.account_id, k.name, k.prefix, k.created_at, k.revoked_at,
                k.managed, k.last_used_at, k.expires_at, a.status AS account_status
         FROM api_keys k LEFT JOIN accounts a ON a.id = k.account_id
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL")
        .bind(hash).fetch_optional(&mut **c).await)?;
    row.map(|r| {
        Ok(KeyIdentity {
            account_status: r.account_status.as_deref().and_then(AccountStatus::parse),
            key: r.key.into_key()?,
        })
    })
    .transpose()
}

/// Records that a key was used at `now`.
pub async fn touch_key(mut c: Conn<'_>, id: &str, now: DateTime<Utc>) -> Result<()> {
    sql!(&mut c, c => sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
        .bind(id).bind(to_micros(now)).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// The customer's keys that still work (at most the quota of them).
pub async fn list_keys(
    mut c: Conn<'_>,
    account_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<ApiKey>> {
    let q = format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL
             AND (expires_at IS NULL OR expires_at > $2) ORDER BY id"
    );
    let rows: Vec<ApiKeyRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(account_id).bind(to_micros(now)).fetch_all(&mut **c).await)?;
    rows.into_iter().map(ApiKeyRow::into_key).collect()
}

/// The customer's keys that still work (for the per-account quota).
pub async fn count_live_keys(mut c: Conn<'_>, account_id: &str, now: DateTime<Utc>) -> Result<i64> {
    Ok(sql!(&mut c, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL
             AND (expires_at IS NULL OR expires_at > $2)")
        .bind(account_id).bind(to_micros(now)).fetch_one(&mut **c).await)?)
}

/// Staff keys (admin, support, accountant), oldest first.
pub async fn list_staff_keys(mut c: Conn<'_>) -> Result<Vec<ApiKey>> {
    let q = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE account_id IS NULL ORDER BY id");
    let rows: Vec<ApiKeyRow> = sql!(&mut c, c => sqlx::query_as(&q).fetch_all(&mut **c).await)?;
    rows.into_iter().map(ApiKeyRow::into_key).collect()
}

/// Revokes a customer key of `account_id`. Revoking twice is harmless.
pub async fn revoke_key(
    mut c: Conn<'_>,
    account_id: &str,
    key_id: &str,
    now: DateTime<Utc>,
) -> Result<ApiKey> {
    let q = format!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE id = $1 AND account_id = $2 RETURNING {KEY_COLUMNS}"
    );
    let row: Option<ApiKeyRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(key_id).bind(account_id).bind(to_micros(now))
        .fetch_optional(&mut **c).await)?;
    row.ok_or_else(|| Error::not_found("api key", key_id))?
        .into_key()
}

/// Revokes a staff key. The last admin key that works cannot be revoked:
/// nobody could manage the engine any more.
pub async fn revoke_staff_key(mut c: Conn<'_>, key_id: &str, now: DateTime<Utc>) -> Result<ApiKey> {
    let q = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1 AND account_id IS NULL");
    let row: Option<ApiKeyRow> =
        sql!(&mut c, c => sqlx::query_as(&q).bind(key_id).fetch_optional(&mut **c).await)?;
    let key = row
        .ok_or_else(|| Error::not_found("staff key", key_id))?
        .into_key()?;
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    if key.role == Role::Admin {
        let others: i64 = sql!(&mut c, c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL AND id <> $1
                 AND (expires_at IS NULL OR expires_at > $2)")
            .bind(key_id).bind(to_micros(now)).fetch_one(&mut **c).await)?;
        if others == 0 {
            return Err(Error::Conflict(
                "this is the last admin key that works; create another before revoking it".into(),
            ));
        }
    }
    let q = format!("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 RETURNING {KEY_COLUMNS}");
    let row: ApiKeyRow = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(key_id).bind(to_micros(now)).fetch_one(&mut **c).await)?;
    row.into_key()
}

/// What module instance `module` keeps about a customer (key → value).
pub async fn module_params(
    mut c: Conn<'_>,
    account_id: &str,
    module: &str,
) -> Result<Vec<(String, String)>> {
    Ok(sql!(&mut c, c => sqlx::query_as(
        "SELECT key, value FROM account_module_params WHERE account_id = $1 AND module = $2 ORDER BY key")
        .bind(account_id).bind(module).fetch_all(&mut **c).await)?)
}

/// Stores what module instance `module` keeps about a customer.
pub async fn set_module_params(
    mut c: Conn<'_>,
    account_id: &str,
    module: &str,
    params: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<()> {
    for (key, value) in params {
        sql!(&mut c, c => sqlx::query(
            "INSERT INTO account_module_params (account_id, module, key, value, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account_id, module, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at")
            .bind(account_id).bind(module).bind(key).bind(value).bind(to_micros(now))
            .execute(&mut **c).await.map(|r| r.rows_affected()))?;
    }
    Ok(())
}
