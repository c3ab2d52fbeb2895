//! Accounts and API keys: the workflows the HTTP API, the CLI and the
//! console share. Input is checked here, so every face refuses the same
//! bad field with the same `invalid-field`.

use chrono::{DateTime, Utc};

use crate::accounts::{
    Account, AccountStatus, ApiKey, ApiKeySecret, Role, check_country, check_credit_limit,
    check_key_label, check_language, check_opt_out, check_time_zone, normalize_email,
    normalize_name,
};
use crate::error::{Error, Result};
use crate::money::Currency;
use crate::store::Conn;
use crate::store::accounts::{self as repo, AccountChanges, NewAccount, NewKey};

/// A new customer account as a person or a client typed it.
#[derive(Debug, Clone, Copy)]
pub struct AccountForm<'a> {
    pub email: &'a str,
    pub name: &'a str,
    /// ISO 4217.
    pub currency: &'a str,
    pub credit_limit: i64,
    /// ISO 3166-1 alpha-2.
    pub country: Option<&'a str>,
    /// IANA name.
    pub time_zone: Option<&'a str>,
    /// ISO 639-1: the language of its mail.
    pub language: Option<&'a str>,
    /// Optional mail turned off.
    pub email_opt_out: &'a [String],
}

impl AccountForm<'_> {
    /// The account it describes, or the first field that is wrong.
    pub fn check(&self) -> Result<NewAccount> {
        Ok(NewAccount {
            email: normalize_email(self.email)?,
            name: normalize_name(self.name)?,
            currency: Currency::from_code(self.currency)
                .map_err(|e| crate::accounts::FieldError::new("currency", e.to_string()))?,
            credit_limit: check_credit_limit(self.credit_limit)?,
            country: self.country.map(check_country).transpose()?,
            time_zone: self.time_zone.map(check_time_zone).transpose()?,
            language: self.language.map(check_language).transpose()?,
            email_opt_out: check_opt_out(self.email_opt_out)?,
        })
    }
}

/// Opens a customer account with its balance. A taken e-mail is a
/// conflict.
pub async fn create_account(
    mut c: Conn<'_>,
    new: NewAccount,
    now: DateTime<Utc>,
) -> Result<Account> {
    let account = repo::create(c.reborrow(), new, now).await?;
    let data = serde_json::json!({"account_id": account.id});
    crate::notify::record(c, "account.created", data, now).await?;
    Ok(account)
}

/// Changes to an account as typed. `email` and `name` are the profile;
/// the rest decides what the customer owes or how, and is for staff.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountEdit<'a> {
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub credit_limit: Option<i64>,
    pub status: Option<AccountStatus>,
    pub country: Option<&'a str>,
    pub time_zone: Option<&'a str>,
    pub language: Option<&'a str>,
    pub email_opt_out: Option<&'a [String]>,
}

impl AccountEdit<'_> {
    /// Whether the change touches what the customer owes or how.
    pub fn touches_billing(&self) -> bool {
        self.credit_limit.is_some()
            || self.status.is_some()
            || self.country.is_some()
            || self.time_zone.is_some()
    }

    /// Whether the change touches the profile (name, e-mail, the
    /// language and choice of mail).
    pub fn touches_profile(&self) -> bool {
        self.email.is_some()
            || self.name.is_some()
            || self.language.is_some()
            || self.email_opt_out.is_some()
    }

    pub fn check(&self) -> Result<AccountChanges> {
        Ok(AccountChanges {
            email: self.email.map(normalize_email).transpose()?,
            name: self.name.map(normalize_name).transpose()?,
            credit_limit: self.credit_limit.map(check_credit_limit).transpose()?,
            status: self.status,
            country: self.country.map(check_country).transpose()?,
            time_zone: self.time_zone.map(check_time_zone).transpose()?,
            language: self.language.map(check_language).transpose()?,
            email_opt_out: self.email_opt_out.map(check_opt_out).transpose()?,
        })
    }
}

/// Changes an account; who may change which field is the caller's policy
/// (see [`AccountEdit::touches_billing`]). Billing changes are logged
/// with their actor.
pub async fn update_account(
    c: Conn<'_>,
    id: &str,
    edit: AccountEdit<'_>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Account> {
    let changes = edit.check()?;
    let account = repo::update(c, id, changes, now).await?;
    if edit.touches_billing() {
        tracing::info!(account = %id, %actor, "billing fields of an account changed");
    }
    Ok(account)
}

/// A key to create: a customer's (with its account) or a staff member's.
#[derive(Debug, Clone, Copy)]
pub struct KeyForm<'a> {
    pub role: Role,
    /// The customer's account; none for staff.
    pub account_id: Option<&'a str>,
    pub name: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Creates an API key and returns it with its secret, which is never
/// stored. A customer key needs an active account with fewer than `quota`
/// keys that work.
pub async fn create_key(
    mut c: Conn<'_>,
    form: KeyForm<'_>,
    quota: usize,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(ApiKey, ApiKeySecret)> {
    let name = check_key_label(form.name, form.expires_at, now)?;
    if (form.role == Role::Customer) != form.account_id.is_some() {
        return Err(Error::Forbidden(
            "a customer key belongs to an account; a staff key to none".into(),
        ));
    }
    if let Some(account_id) = form.account_id {
        let account = repo::get(c.reborrow(), account_id).await?;
        if account.status != AccountStatus::Active {
            return Err(Error::AccountNotActive {
                account_id: account.id,
                status: account.status.as_str(),
            });
        }
        if repo::count_live_keys(c.reborrow(), account_id, now).await? >= quota as i64 {
            return Err(Error::Quota {
                what: "api keys",
                message: format!(
                    "an account may have {quota} API keys that work; revoke one first"
                ),
            });
        }
    }
    let secret = ApiKeySecret::generate(form.role);
    let new = NewKey {
        secret: &secret,
        role: form.role,
        account_id: form.account_id,
        name: &name,
        expires_at: form.expires_at,
        managed: false,
    };
    let key = repo::insert_key(c, new, now).await?;
    if form.role != Role::Customer {
        tracing::info!(key = %key.id, role = form.role.as_str(), %actor, "staff key created");
    }
    Ok((key, secret))
}

/// Revokes one of an account's keys; it stops working at once.
pub async fn revoke_key(
    c: Conn<'_>,
    account_id: &str,
    key_id: &str,
    now: DateTime<Utc>,
) -> Result<ApiKey> {
    repo::revoke_key(c, account_id, key_id, now).await
}

/// Revokes a staff key (never the last admin key); it stops working at
/// once.
pub async fn revoke_staff_key(
    c: Conn<'_>,
    id: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<ApiKey> {
    let key = repo::revoke_staff_key(c, id, now).await?;
    tracing::info!(key = %key.id, %actor, "staff key revoked");
    Ok(key)
}
