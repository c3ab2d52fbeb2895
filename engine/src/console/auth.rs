//! Logins, sessions, CSRF tokens, throttling and TOTP for the console.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, header, request::Parts};
use chrono::{DateTime, Duration, Utc};
use cookie::{Cookie, SameSite};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::api::AppState;
use crate::api::extract::Principal;
use crate::api::policy::{self, Action};
use crate::error::Result;
use crate::store::logins::{self, Login, Realm};

/// The cookie of a customer's session (whole site).
pub const CUSTOMER_COOKIE: &str = "bursar_session";
/// The cookie of a staff session (only sent to `/staff`).
pub const STAFF_COOKIE: &str = "bursar_staff";
/// The cookie that pairs with the token of a form shown before login.
pub const FORM_COOKIE: &str = "bursar_form";

pub const MIN_PASSWORD: usize = 10;
pub const MAX_PASSWORD: usize = 256;

fn cookie_name(realm: Realm) -> &'static str {
    match realm {
        Realm::Customer => CUSTOMER_COOKIE,
        Realm::Staff => STAFF_COOKIE,
    }
}

fn cookie_path(realm: Realm) -> &'static str {
    match realm {
        Realm::Customer => "/",
        Realm::Staff => "/staff",
    }
}

/// 32 random bytes, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Why a password is not acceptable, if it is not.
pub fn password_problem(password: &str) -> Option<String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        Some(format!(
            "the password needs at least {MIN_PASSWORD} characters"
        ))
    } else if n > MAX_PASSWORD {
        Some(format!(
            "the password may have at most {MAX_PASSWORD} characters"
        ))
    } else {
        None
    }
}

/// At most this many argon2 hashes at once (each takes ~19 MiB): logins
/// beyond it wait their turn instead of exhausting memory.
const HASHES_AT_ONCE: usize = 4;

fn hash_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(HASHES_AT_ONCE))
}

/// argon2id with the crate's default cost, off the async threads.
pub async fn hash_password(password: &str) -> String {
    let password = password.to_owned();
    let _slot = hash_slots()
        .acquire()
        .await
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).expect("16 bytes make a salt");
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .expect("argon2 hashes any password")
            .to_string()
    })
    .await
    .expect("hashing does not panic")
}

pub async fn verify_password(hash: &str, password: &str) -> bool {
    let (hash, password) = (hash.to_owned(), password.to_owned());
    let _slot = hash_slots()
        .acquire()
        .await
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A hash to verify against when the e-mail is unknown, so that the answer
/// takes as long as for a known one.
pub async fn dummy_hash() -> &'static str {
    static HASH: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    HASH.get_or_init(|| hash_password("not a password anyone has"))
        .await
        .as_str()
}

/// A fresh TOTP secret, base32 (what authenticator apps take).
pub fn new_totp_secret() -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill_bytes(&mut bytes);
    totp_rs::Secret::Raw(bytes.to_vec())
        .to_encoded()
        .to_string()
}

fn totp(secret_b32: &str) -> Option<totp_rs::TOTP> {
    let bytes = totp_rs::Secret::Encoded(secret_b32.to_owned())
        .to_bytes()
        .ok()?;
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes).ok()
}

/// Whether `code` is the secret's code at `now` (one step either side).
pub fn totp_ok(secret_b32: &str, code: &str, now: DateTime<Utc>) -> bool {
    totp_step(secret_b32, code, now).is_some()
}

/// The time step whose code `code` is, within one step of `now`.
pub fn totp_step(secret_b32: &str, code: &str, now: DateTime<Utc>) -> Option<i64> {
    let code = code.trim();
    let t = totp(secret_b32)?;
    let step = now.timestamp().max(0) / 30;
    [step, step - 1, step + 1]
        .into_iter()
        .find(|s| *s >= 0 && same_secret(&t.generate((*s * 30) as u64), code))
}

/// The code an authenticator shows at `now` (for `bursar staff` and tests).
pub fn totp_code(secret_b32: &str, now: DateTime<Utc>) -> Option<String> {
    totp(secret_b32).map(|t| t.generate(now.timestamp().max(0) as u64))
}

/// The `otpauth://` URI an authenticator app takes.
pub fn totp_uri(secret_b32: &str, issuer: &str, email: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!(
        "otpauth://totp/{}:{}?secret={secret_b32}&issuer={}&algorithm=SHA1&digits=6&period=30",
        enc(issuer),
        enc(email),
        enc(issuer)
    )
}

fn cookies(headers: &HeaderMap) -> impl Iterator<Item = Cookie<'static>> + '_ {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| Cookie::split_parse(v.to_owned()).filter_map(|c| c.ok()))
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    cookies(headers)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    path: &str,
    max_age: Option<Duration>,
) -> String {
    let mut c = Cookie::build((name.to_owned(), value.to_owned()))
        .path(path.to_owned())
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.console.secure_cookies);
    if let Some(age) = max_age {
        c = c.max_age(cookie::time::Duration::seconds(age.num_seconds()));
    }
    c.build().to_string()
}

/// A logged-in person.
#[derive(Debug, Clone)]
pub struct SessionCtx {
    pub login: Login,
    pub csrf: String,
}

impl SessionCtx {
    /// The caller as the API's policy sees it, for `action`; `None` when
    /// the policy refuses it.
    pub fn principal(&self, action: Action) -> Option<Principal> {
        let reach = policy::allowed(self.login.role, action)?;
        Some(Principal {
            key_id: self.login.id.clone(),
            console: true,
            role: self.login.role,
            account_id: self.login.account_id.clone(),
            reach,
        })
    }

    pub fn csrf_ok(&self, token: &str) -> bool {
        same_secret(&self.csrf, token)
    }
}

/// The session a request carries for `realm`, if it is live.
pub async fn current(
    state: &AppState,
    headers: &HeaderMap,
    realm: Realm,
) -> Result<Option<SessionCtx>> {
    let Some(token) = cookie_value(headers, cookie_name(realm)) else {
        return Ok(None);
    };
    let mut r = state.store.reader().await?;
    let session = logins::session(r.conn(), &sha256_hex(&token), state.clock.now()).await?;
    let Some(session) = session.filter(|s| s.login.realm == realm) else {
        return Ok(None);
    };
    // As for API keys: a blocked or closed account's people are out.
    if let Some(account) = &session.login.account_id
        && !account_active(r.conn(), account).await?
    {
        return Ok(None);
    }
    Ok(Some(SessionCtx {
        login: session.login,
        csrf: session.csrf,
    }))
}

async fn account_active(c: crate::store::Conn<'_>, account_id: &str) -> Result<bool> {
    let account = crate::store::accounts::get(c, account_id).await?;
    Ok(account.status == crate::accounts::AccountStatus::Active)
}

/// The request's live session for `realm`, or the response to give
/// instead: the realm's login page (or an error page).
pub async fn require(
    state: &AppState,
    headers: &HeaderMap,
    realm: Realm,
) -> std::result::Result<SessionCtx, axum::response::Response> {
    match current(state, headers, realm).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(super::view::see_other(match realm {
            Realm::Customer => "/login",
            Realm::Staff => "/staff/login",
        })),
        Err(e) => Err(super::view::failed(e)),
    }
}

/// A handler's signed-in staff member: a request without a live staff
/// session is sent to the staff login.
pub struct StaffSession(pub SessionCtx);

/// A handler's signed-in customer: a request without a live session is
/// sent to the login.
pub struct CustomerSession(pub SessionCtx);

impl axum::extract::FromRequestParts<AppState> for StaffSession {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> std::result::Result<Self, Self::Rejection> {
        require(state, &parts.headers, Realm::Staff)
            .await
            .map(StaffSession)
    }
}

impl axum::extract::FromRequestParts<AppState> for CustomerSession {
    type Rejection = axum::response::Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> std::result::Result<Self, Self::Rejection> {
        require(state, &parts.headers, Realm::Customer)
            .await
            .map(CustomerSession)
    }
}

/// A form's request id: 64 hex digits, fixed when the form was shown.
pub fn request_id_ok(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Starts a session for `login`; returns the `Set-Cookie` value.
pub async fn start(state: &AppState, login: &Login) -> Result<String> {
    let token = random_token();
    let now = state.clock.now();
    let hours = Duration::hours(i64::from(state.console.session_hours.max(1)));
    let mut tx = state.store.begin().await?;
    logins::create_session(
        tx.conn(),
        &sha256_hex(&token),
        &login.id,
        &random_token(),
        now,
        now + hours,
    )
    .await?;
    tx.commit().await?;
    Ok(set_cookie(
        state,
        cookie_name(login.realm),
        &token,
        cookie_path(login.realm),
        Some(hours),
    ))
}

/// Ends the request's session; returns the `Set-Cookie` that clears it.
pub async fn end(state: &AppState, headers: &HeaderMap, realm: Realm) -> Result<String> {
    if let Some(token) = cookie_value(headers, cookie_name(realm)) {
        let mut tx = state.store.begin().await?;
        logins::end_session(tx.conn(), &sha256_hex(&token), state.clock.now()).await?;
        tx.commit().await?;
    }
    Ok(set_cookie(
        state,
        cookie_name(realm),
        "",
        cookie_path(realm),
        Some(Duration::zero()),
    ))
}

/// The token a form shown before login carries, and the cookie that goes
/// with it when the browser has none yet (double submit).
pub fn form_token(state: &AppState, headers: &HeaderMap) -> (String, Option<String>) {
    match cookie_value(headers, FORM_COOKIE).filter(|v| v.len() == 64) {
        Some(token) => (token, None),
        None => {
            let token = random_token();
            let cookie = set_cookie(state, FORM_COOKIE, &token, "/", None);
            (token, Some(cookie))
        }
    }
}

/// Whether a form posted before login carries the token its cookie has.
pub fn form_token_ok(headers: &HeaderMap, token: &str) -> bool {
    cookie_value(headers, FORM_COOKIE).is_some_and(|c| c.len() == 64 && same_secret(&c, token))
}

/// The client's address (the proxy's, behind one).
pub fn client_addr(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

fn subjects(realm: Realm, email: &str, addr: IpAddr) -> (String, String) {
    (
        format!("{}:email:{}", realm.as_str(), email.trim().to_lowercase()),
        format!("addr:{addr}"),
    )
}

/// Whether logins for this e-mail or from this address are refused for now.
pub async fn throttled(state: &AppState, realm: Realm, email: &str, addr: IpAddr) -> Result<bool> {
    let cfg = &state.console;
    let since = state.clock.now() - Duration::minutes(i64::from(cfg.failure_window_minutes));
    let (by_email, by_addr) = subjects(realm, email, addr);
    let mut r = state.store.reader().await?;
    Ok(logins::failures_since(r.conn(), &by_email, since).await?
        >= i64::from(cfg.max_failures_per_email)
        || logins::failures_since(r.conn(), &by_addr, since).await?
            >= i64::from(cfg.max_failures_per_address))
}

/// After reserving an attempt: more than the limit counted.
async fn over_limit(state: &AppState, realm: Realm, email: &str, addr: IpAddr) -> Result<bool> {
    let cfg = &state.console;
    let since = state.clock.now() - Duration::minutes(i64::from(cfg.failure_window_minutes));
    let (by_email, by_addr) = subjects(realm, email, addr);
    let mut r = state.store.reader().await?;
    Ok(logins::failures_since(r.conn(), &by_email, since).await?
        > i64::from(cfg.max_failures_per_email)
        || logins::failures_since(r.conn(), &by_addr, since).await?
            > i64::from(cfg.max_failures_per_address))
}

/// Takes back the attempt reserved at `at` (it succeeded).
async fn forgive(
    state: &AppState,
    realm: Realm,
    email: &str,
    addr: IpAddr,
    at: DateTime<Utc>,
) -> Result<()> {
    let (by_email, by_addr) = subjects(realm, email, addr);
    let mut tx = state.store.begin().await?;
    logins::forget_failure(tx.conn(), &by_email, at).await?;
    logins::forget_failure(tx.conn(), &by_addr, at).await?;
    tx.commit().await
}

pub async fn record_failure(
    state: &AppState,
    realm: Realm,
    email: &str,
    addr: IpAddr,
) -> Result<()> {
    let (by_email, by_addr) = subjects(realm, email, addr);
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    logins::record_failure(tx.conn(), &by_email, now).await?;
    logins::record_failure(tx.conn(), &by_addr, now).await?;
    tx.commit().await
}

/// Whether another sign-up from this address is allowed now (and counts
/// it): at most `max_signups_per_address` per window.
pub async fn signup_allowed(state: &AppState, addr: IpAddr) -> Result<bool> {
    allowed_per_address(state, "signup", addr).await
}

/// The same bound for `what` (`signup`, `reset`) from one address.
pub async fn allowed_per_address(state: &AppState, what: &str, addr: IpAddr) -> Result<bool> {
    let cfg = &state.console;
    let subject = format!("{what}:{addr}");
    let now = state.clock.now();
    let since = now - Duration::minutes(i64::from(cfg.failure_window_minutes));
    let mut tx = state.store.begin().await?;
    let n = logins::failures_since(tx.conn(), &subject, since).await?;
    if n >= i64::from(cfg.max_signups_per_address) {
        tx.rollback().await?;
        return Ok(false);
    }
    logins::record_failure(tx.conn(), &subject, now).await?;
    tx.commit().await?;
    Ok(true)
}

/// How long a password reset link works.
pub const RESET_HOURS: i64 = 2;

/// A reset link for `login_id`: the token is random, only its hash is
/// stored, it works once and for [`RESET_HOURS`].
pub async fn issue_reset(state: &AppState, login_id: &str) -> Result<String> {
    let token = random_token();
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    logins::create_reset(
        tx.conn(),
        &sha256_hex(&token),
        login_id,
        now,
        now + Duration::hours(RESET_HOURS),
    )
    .await?;
    tx.commit().await?;
    Ok(state.company.link(&format!("password/reset/{token}")))
}

/// Sets a new password with a reset token; every session of the login
/// ends. `None` when the token is unknown, used or expired.
pub async fn reset_password(
    state: &AppState,
    token: &str,
    password: &str,
) -> Result<Option<Login>> {
    let hash = hash_password(password).await;
    let now = state.clock.now();
    let mut tx = state.store.begin().await?;
    let Some(login_id) = logins::use_reset(tx.conn(), &sha256_hex(token), now).await? else {
        tx.rollback().await?;
        return Ok(None);
    };
    logins::set_password(tx.conn(), &login_id, &hash).await?;
    logins::end_sessions_of(tx.conn(), &login_id, now).await?;
    let login = logins::get(tx.conn(), &login_id).await?;
    tx.commit().await?;
    Ok(login)
}

/// What a login attempt came to.
pub enum Attempt {
    Ok(Login),
    /// Wrong e-mail or password (which one is not said).
    Wrong,
    /// The password was right; the TOTP code is missing or wrong.
    NeedsCode,
    Throttled,
    /// The account is blocked or closed.
    NotActive,
}

/// Checks a login attempt: throttling first (no password is checked while
/// throttled), then the password, then the TOTP code when the login has
/// two-factor on. Failures are recorded.
pub async fn attempt(
    state: &AppState,
    realm: Realm,
    email: &str,
    password: &str,
    code: Option<&str>,
    addr: IpAddr,
) -> Result<Attempt> {
    if throttled(state, realm, email, addr).await? {
        return Ok(Attempt::Throttled);
    }
    // The attempt counts as a failure before the password is checked, and
    // the count is read again: of many attempts at once, only as many as
    // the limit allows get a password checked. A success takes it back.
    record_failure(state, realm, email, addr).await?;
    if over_limit(state, realm, email, addr).await? {
        return Ok(Attempt::Throttled);
    }
    let attempted_at = state.clock.now();
    let login = {
        let mut r = state.store.reader().await?;
        logins::by_email(r.conn(), realm, email).await?
    };
    let hash = match &login {
        Some(l) => l.password_hash.clone(),
        None => dummy_hash().await.to_owned(),
    };
    let password_ok = verify_password(&hash, password).await;
    let Some(login) = login.filter(|l| password_ok && !l.disabled) else {
        return Ok(Attempt::Wrong);
    };
    if let Some(account) = &login.account_id {
        let mut r = state.store.reader().await?;
        if !account_active(r.conn(), account).await? {
            return Ok(Attempt::NotActive);
        }
    }
    if let Some(sealed) = &login.totp_secret {
        let secret = state.secrets.open(sealed).map_err(|e| {
            crate::error::Error::Conflict(format!("the TOTP secret cannot be opened: {e}"))
        })?;
        match code.filter(|c| !c.trim().is_empty()) {
            None => {
                // The password was right: asking for the code is no failure.
                forgive(state, realm, email, addr, attempted_at).await?;
                return Ok(Attempt::NeedsCode);
            }
            Some(c) => {
                // A code is good once: the step it is for is recorded, and a
                // second use of it (or of an earlier one) is refused.
                let Some(step) = totp_step(&secret, c, state.clock.now()) else {
                    return Ok(Attempt::NeedsCode);
                };
                let mut tx = state.store.begin().await?;
                let fresh = logins::use_totp_step(tx.conn(), &login.id, step).await?;
                tx.commit().await?;
                if !fresh {
                    return Ok(Attempt::NeedsCode);
                }
            }
        }
    }
    forgive(state, realm, email, addr, attempted_at).await?;
    Ok(Attempt::Ok(login))
}

/// A staff login just made: what to hand its owner, once.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StaffCreated {
    pub id: String,
    pub email: String,
    pub role: &'static str,
    /// Set when the password was generated here.
    pub password: Option<String>,
    /// The TOTP secret (base32) and its `otpauth://` URI, when on.
    pub totp_secret: Option<String>,
    pub totp_uri: Option<String>,
}

/// Creates a staff login (`bursar staff create`, and the demo). Admins
/// always get TOTP; other roles when `totp` is set. Without a password one
/// is generated.
pub async fn create_staff(
    store: &crate::store::Store,
    secrets: &crate::secrets::Secrets,
    email: &str,
    role: crate::accounts::Role,
    password: Option<String>,
    totp: bool,
    now: DateTime<Utc>,
) -> Result<StaffCreated> {
    use crate::error::Error;
    if !role.is_staff() {
        return Err(Error::Conflict("a staff login needs a staff role".into()));
    }
    let email = crate::accounts::normalize_email(email)?;
    let generated = password.is_none();
    let password = password.unwrap_or_else(|| random_token()[..24].to_owned());
    if let Some(problem) = password_problem(&password) {
        return Err(Error::Conflict(problem));
    }
    let hash = hash_password(&password).await;
    let totp_secret = (totp || role == crate::accounts::Role::Admin).then(new_totp_secret);
    let sealed = totp_secret.as_deref().map(|s| secrets.seal(s));
    let mut tx = store.begin().await?;
    let login = logins::create(
        tx.conn(),
        logins::NewLogin {
            email: &email,
            role,
            account_id: None,
            name: &email,
            password_hash: &hash,
            totp_secret: sealed.as_deref(),
        },
        now,
    )
    .await?;
    let Some(login) = login else {
        tx.rollback().await?;
        return Err(Error::Conflict(format!("a staff login for {email} exists")));
    };
    tx.commit().await?;
    Ok(StaffCreated {
        id: login.id,
        email: email.clone(),
        role: role.as_str(),
        password: generated.then_some(password),
        totp_uri: totp_secret
            .as_deref()
            .map(|s| totp_uri(s, "Bursar", &email)),
        totp_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_totp_code_is_good_for_its_step_and_the_next_not_later() {
        let secret = new_totp_secret();
        let at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 1, 15, 12, 0, 0).unwrap();
        let code = totp_code(&secret, at).unwrap();
        assert_eq!(code.len(), 6);
        assert!(totp_ok(&secret, &code, at));
        assert!(
            totp_ok(&secret, &code, at + Duration::seconds(30)),
            "one step of skew"
        );
        assert!(!totp_ok(&secret, &code, at + Duration::seconds(120)));
        assert!(!totp_ok(&secret, "12345", at));
        assert!(!totp_ok("not base32!", &code, at));
        let step = at.timestamp() / 30;
        assert_eq!(totp_step(&secret, &code, at), Some(step));
        assert_eq!(
            totp_step(&secret, &code, at + Duration::seconds(30)),
            Some(step)
        );
    }

    #[test]
    fn passwords_have_bounds_and_secrets_compare_whole() {
        assert!(password_problem("short").is_some());
        assert!(password_problem("long enough pw").is_none());
        assert!(password_problem(&"x".repeat(MAX_PASSWORD + 1)).is_some());
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hash = hash_password("correct horse").await;
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse").await);
        assert!(!verify_password(&hash, "correct horsE").await);
        assert!(!verify_password("garbage", "correct horse").await);
    }
}
