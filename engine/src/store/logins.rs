//! People who log in to the web console, their sessions, failed logins and
//! password reset links.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use crate::accounts::Role;
use crate::clock::{from_micros, to_micros};
use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::sql;
use crate::store::Conn;

fn corrupt(what: String) -> Error {
    Error::Database(sqlx::Error::Decode(what.into()))
}

/// Which console a login belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Realm {
    Customer,
    Staff,
}

impl Realm {
    pub fn as_str(self) -> &'static str {
        match self {
            Realm::Customer => "customer",
            Realm::Staff => "staff",
        }
    }
}

/// A login as stored.
#[derive(Debug, Clone)]
pub struct Login {
    pub id: String,
    pub email: String,
    pub realm: Realm,
    pub role: Role,
    pub account_id: Option<String>,
    pub name: String,
    pub password_hash: String,
    /// Sealed TOTP secret, when two-factor is on.
    pub totp_secret: Option<String>,
    pub created_at: DateTime<Utc>,
    pub disabled: bool,
}

#[derive(FromRow)]
struct Row {
    id: String,
    email: String,
    realm: String,
    role: String,
    account_id: Option<String>,
    name: String,
    password_hash: String,
    totp_secret: Option<String>,
    created_at: i64,
    disabled_at: Option<i64>,
}

const COLUMNS: &str =
    "id, email, realm, role, account_id, name, password_hash, totp_secret, created_at, disabled_at";

impl TryFrom<Row> for Login {
    type Error = Error;
    fn try_from(r: Row) -> Result<Login> {
        let realm = match r.realm.as_str() {
            "customer" => Realm::Customer,
            "staff" => Realm::Staff,
            other => return Err(corrupt(format!("login {}: realm {other}", r.id))),
        };
        let role = Role::parse(&r.role)
            .ok_or_else(|| corrupt(format!("login {}: role {}", r.id, r.role)))?;
        Ok(Login {
            id: r.id,
            email: r.email,
            realm,
            role,
            account_id: r.account_id,
            name: r.name,
            password_hash: r.password_hash,
            totp_secret: r.totp_secret,
            created_at: from_micros(r.created_at),
            disabled: r.disabled_at.is_some(),
        })
    }
}

/// What a new login is made of.
pub struct NewLogin<'a> {
    pub email: &'a str,
    pub role: Role,
    pub account_id: Option<&'a str>,
    pub name: &'a str,
    pub password_hash: &'a str,
    pub totp_secret: Option<&'a str>,
}

/// Creates a login; `None` when the e-mail is taken in its realm.
pub async fn create(
    mut c: Conn<'_>,
    new: NewLogin<'_>,
    now: DateTime<Utc>,
) -> Result<Option<Login>> {
    let realm = if new.role.is_staff() {
        Realm::Staff
    } else {
        Realm::Customer
    };
    let id = new_id("lgn");
    let email = new.email.trim().to_lowercase();
    let q = format!(
        "INSERT INTO logins (id, email, realm, role, account_id, name, password_hash, totp_secret, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (realm, email) DO NOTHING RETURNING {COLUMNS}"
    );
    let row: Option<Row> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(&id).bind(&email).bind(realm.as_str()).bind(new.role.as_str())
        .bind(new.account_id).bind(new.name).bind(new.password_hash).bind(new.totp_secret)
        .bind(to_micros(now))
        .fetch_optional(&mut **c).await)?;
    row.map(Login::try_from).transpose()
}

pub async fn by_email(mut c: Conn<'_>, realm: Realm, email: &str) -> Result<Option<Login>> {
    let q = format!("SELECT {COLUMNS} FROM logins WHERE realm = $1 AND email = $2");
    let row: Option<Row> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(realm.as_str()).bind(email.trim().to_lowercase())
        .fetch_optional(&mut **c).await)?;
    row.map(Login::try_from).transpose()
}

pub async fn get(mut c: Conn<'_>, id: &str) -> Result<Option<Login>> {
    let q = format!("SELECT {COLUMNS} FROM logins WHERE id = $1");
    let row: Option<Row> =
        sql!(&mut c, c => sqlx::query_as(&q).bind(id).fetch_optional(&mut **c).await)?;
    row.map(Login::try_from).transpose()
}

/// Staff logins, newest first.
pub async fn staff(mut c: Conn<'_>) -> Result<Vec<Login>> {
    let q =
        format!("SELECT {COLUMNS} FROM logins WHERE realm = 'staff' ORDER BY created_at DESC, id");
    let rows: Vec<Row> = sql!(&mut c, c => sqlx::query_as(&q).fetch_all(&mut **c).await)?;
    rows.into_iter().map(Login::try_from).collect()
}

pub async fn set_password(mut c: Conn<'_>, id: &str, password_hash: &str) -> Result<()> {
    sql!(&mut c, c => sqlx::query("UPDATE logins SET password_hash = $2 WHERE id = $1")
        .bind(id).bind(password_hash).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Disables a login (it cannot log in; its sessions end) or enables it again.
pub async fn set_disabled(
    mut c: Conn<'_>,
    id: &str,
    disabled: bool,
    now: DateTime<Utc>,
) -> Result<bool> {
    let at = disabled.then(|| to_micros(now));
    let changed = sql!(&mut c, c => sqlx::query("UPDATE logins SET disabled_at = $2 WHERE id = $1")
        .bind(id).bind(at).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    if disabled {
        end_sessions_of(c, id, now).await?;
    }
    Ok(changed == 1)
}

/// Records that the login used the TOTP code of `step`; false when it (or
/// a later one) was used already.
pub async fn use_totp_step(mut c: Conn<'_>, id: &str, step: i64) -> Result<bool> {
    let n = sql!(&mut c, c => sqlx::query(
        "UPDATE logins SET totp_last_step = $2
         WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)")
        .bind(id).bind(step).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Sets (or, with `None`, removes) the login's sealed TOTP secret.
pub async fn set_totp(mut c: Conn<'_>, id: &str, sealed: Option<&str>) -> Result<()> {
    sql!(&mut c, c => sqlx::query("UPDATE logins SET totp_secret = $2, totp_last_step = NULL WHERE id = $1")
        .bind(id).bind(sealed).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// A live session: who, and the form token that goes with it.
#[derive(Debug, Clone)]
pub struct Session {
    pub login: Login,
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

pub async fn create_session(
    mut c: Conn<'_>,
    id_hash: &str,
    login_id: &str,
    csrf: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sql!(&mut c, c => sqlx::query(
        "INSERT INTO console_sessions (id_hash, login_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(id_hash).bind(login_id).bind(csrf).bind(to_micros(now)).bind(to_micros(expires_at))
        .execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

#[derive(FromRow)]
struct SessionRow {
    csrf: String,
    expires_at: i64,
    login_id: String,
}

/// The session with this hash, if it has not ended or expired and its
/// login is not disabled.
pub async fn session(
    mut c: Conn<'_>,
    id_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<Session>> {
    let row: Option<SessionRow> = sql!(&mut c, c => sqlx::query_as(
        "SELECT csrf, expires_at, login_id FROM console_sessions
         WHERE id_hash = $1 AND ended_at IS NULL AND expires_at > $2")
        .bind(id_hash).bind(to_micros(now)).fetch_optional(&mut **c).await)?;
    let Some(row) = row else { return Ok(None) };
    let Some(login) = get(c.reborrow(), &row.login_id).await? else {
        return Ok(None);
    };
    if login.disabled {
        return Ok(None);
    }
    Ok(Some(Session {
        login,
        csrf: row.csrf,
        expires_at: from_micros(row.expires_at),
    }))
}

pub async fn end_session(mut c: Conn<'_>, id_hash: &str, now: DateTime<Utc>) -> Result<()> {
    sql!(&mut c, c => sqlx::query(
        "UPDATE console_sessions SET ended_at = $2 WHERE id_hash = $1 AND ended_at IS NULL")
        .bind(id_hash).bind(to_micros(now)).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Ends every session of a login (its password changed).
pub async fn end_sessions_of(mut c: Conn<'_>, login_id: &str, now: DateTime<Utc>) -> Result<()> {
    sql!(&mut c, c => sqlx::query(
        "UPDATE console_sessions SET ended_at = $2 WHERE login_id = $1 AND ended_at IS NULL")
        .bind(login_id).bind(to_micros(now)).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn record_failure(mut c: Conn<'_>, subject: &str, now: DateTime<Utc>) -> Result<()> {
    sql!(&mut c, c => sqlx::query("INSERT INTO login_failures (subject, at) VALUES ($1, $2)")
        .bind(subject).bind(to_micros(now)).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Takes back one attempt recorded at `at` (it succeeded).
pub async fn forget_failure(mut c: Conn<'_>, subject: &str, at: DateTime<Utc>) -> Result<()> {
    let at = to_micros(at);
    match &mut c {
        Conn::Sqlite(c) => sqlx::query(
            "DELETE FROM login_failures WHERE rowid IN
             (SELECT rowid FROM login_failures WHERE subject = $1 AND at = $2 LIMIT 1)",
        )
        .bind(subject)
        .bind(at)
        .execute(&mut **c)
        .await
        .map(drop)?,
        Conn::Postgres(c) => sqlx::query(
            "DELETE FROM login_failures WHERE ctid IN
             (SELECT ctid FROM login_failures WHERE subject = $1 AND at = $2 LIMIT 1)",
        )
        .bind(subject)
        .bind(at)
        .execute(&mut **c)
        .await
        .map(drop)?,
    }
    Ok(())
}

/// Failed logins for `subject` since `since`.
pub async fn failures_since(mut c: Conn<'_>, subject: &str, since: DateTime<Utc>) -> Result<i64> {
    Ok(sql!(&mut c, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM login_failures WHERE subject = $1 AND at > $2")
        .bind(subject).bind(to_micros(since)).fetch_one(&mut **c).await)?)
}

/// Forgets failures older than `before` and sessions that ended or expired
/// before it. Returns how many rows went.
pub async fn prune(mut c: Conn<'_>, before: DateTime<Utc>) -> Result<u64> {
    let at = to_micros(before);
    let a = sql!(&mut c, c => sqlx::query("DELETE FROM login_failures WHERE at < $1")
        .bind(at).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    let b = sql!(&mut c, c => sqlx::query(
        "DELETE FROM console_sessions WHERE expires_at < $1 OR ended_at < $1")
        .bind(at).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(a + b)
}

pub async fn create_reset(
    mut c: Conn<'_>,
    token_hash: &str,
    login_id: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<()> {
    sql!(&mut c, c => sqlx::query(
        "INSERT INTO password_resets (token_hash, login_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(token_hash).bind(login_id).bind(to_micros(now)).bind(to_micros(expires_at))
        .execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Uses a reset link: the login it is for, once, before it expires.
pub async fn use_reset(
    mut c: Conn<'_>,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    Ok(sql!(&mut c, c => sqlx::query_scalar(
        "UPDATE password_resets SET used_at = $2
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING login_id")
        .bind(token_hash).bind(to_micros(now)).fetch_optional(&mut **c).await)?)
}
