//! Customers and API keys, free of I/O.

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::money::{Currency, MAX_AMOUNT};

/// A customer account status. Only `active` accounts may order, pay or use
/// their API keys; `blocked` is reversible, `closed` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    Blocked,
    Closed,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Blocked => "blocked",
            AccountStatus::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => AccountStatus::Active,
            "blocked" => AccountStatus::Blocked,
            "closed" => AccountStatus::Closed,
            _ => return None,
        })
    }
}

/// A customer of the hosting company.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: String,
    /// Unique, stored lower-cased.
    pub email: String,
    pub name: String,
    /// The one currency the account is billed in.
    pub currency: Currency,
    /// How far below zero the balance may go, in minor units (0 = prepaid).
    pub credit_limit: i64,
    pub status: AccountStatus,
    /// ISO 3166-1 alpha-2 country, which decides the taxes charged.
    pub country: Option<String>,
    /// IANA time zone its services count their periods in; none: the
    /// deployment's `[billing] time_zone`.
    pub time_zone: Option<crate::calendar::Zone>,
    /// The language its mail is written in (ISO 639-1, e.g. `en`, `ru`).
    pub language: String,
    /// Optional mail it turned off (only reminders can be).
    pub email_opt_out: Vec<crate::messages::Kind>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Invalid account input, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

/// Normalises and checks an e-mail address: trimmed, lower-cased, one `@`
/// with text on both sides and a dot in the domain, no spaces, at most 254
/// characters.
pub fn normalize_email(email: &str) -> Result<String, FieldError> {
    let ok = email.chars().count() <= 254
        && !email.chars().any(blank)
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if ok {
        Ok(email.to_lowercase())
    } else {
        Err(FieldError::new("email", "is not a valid e-mail address"))
    }
}

/// The pattern of an address [`normalize_email`] accepts, for the API
/// document (besides at most 254 characters).
pub const EMAIL_PATTERN: &str = r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f.][^@\x00-\x20\x7f]*\.[^@\x00-\x20\x7f]*[^@\x00-\x20\x7f.]$";

/// A space or an ASCII control character: what a name may not consist of
/// only, and an address may not hold at all. (One definition, so that the
/// document's patterns say exactly the same.)
fn blank(c: char) -> bool {
    c == ' ' || c.is_ascii_control()
}

/// The pattern of a free text [`check_text`] accepts (besides its length).
pub const TEXT_PATTERN: &str = r"[^\x00-\x20\x7f]";

/// Checks a free text such as a name or a reason: 1 to `max` characters,
/// not only spaces and control characters. Returns it without leading and
/// trailing ones.
pub fn check_text(field: &'static str, text: &str, max: usize) -> Result<String, FieldError> {
    let trimmed = text.trim_matches(blank);
    if trimmed.is_empty() || text.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {max} characters, not only spaces"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// What an account's name must match (as the contract states it): no
/// ASCII control character anywhere — a name goes into mail headers and
/// text, where a line break would forge a line — and not only spaces.
pub const NAME_PATTERN: &str = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$";

/// Checks a display name: 1 to 200 characters, not only spaces, no
/// control characters.
pub fn normalize_name(name: &str) -> Result<String, FieldError> {
    if name.chars().any(|c| c.is_ascii_control()) {
        return Err(FieldError::new(
            "name",
            "must not contain control characters (line breaks, tabs)",
        ));
    }
    check_text("name", name, 200)
}

pub fn check_credit_limit(limit: i64) -> Result<i64, FieldError> {
    if !(0..=MAX_AMOUNT).contains(&limit) {
        return Err(FieldError::new(
            "credit_limit",
            format!("must be between 0 and {MAX_AMOUNT} minor units"),
        ));
    }
    Ok(limit)
}

/// Who an API key (or a console session) acts as. What each role may do
/// is decided in one place: `api::policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Staff: sees and does everything.
    Admin,
    /// Staff: reads everything, suspends and resumes, works the manual queue.
    Support,
    /// Staff: reads everything, credits and debits, payments, refunds,
    /// tax rules.
    Accountant,
    /// A customer: only its own account.
    Customer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Support, Role::Accountant, Role::Customer];
    pub const STAFF: [Role; 3] = [Role::Admin, Role::Support, Role::Accountant];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Support => "support",
            Role::Accountant => "accountant",
            Role::Customer => "customer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn is_staff(self) -> bool {
        self != Role::Customer
    }
}

/// An API key as stored: never the secret itself, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub role: Role,
    /// The customer account a customer key is scoped to.
    pub account_id: Option<String>,
    pub name: String,
    /// The first characters of the secret, to recognise a key in a list.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The key `BURSAR_ADMIN_KEY` supplies: a new value revokes it.
    pub managed: bool,
    /// When it last authenticated a request (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// After this it no longer authenticates.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A freshly generated secret. Shown once, then only its hash is kept.
pub struct ApiKeySecret(String);

/// Keys are long random strings, so a fast hash is enough to store them
/// safely (there is nothing to brute-force); SHA-256 keeps look-ups cheap.
impl ApiKeySecret {
    pub fn generate(role: Role) -> Self {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let tag = match role {
            Role::Admin => "adm",
            Role::Support => "sup",
            Role::Accountant => "acc",
            Role::Customer => "cus",
        };
        ApiKeySecret(format!("bsr_{tag}_{}", hex::encode(bytes)))
    }

    /// Wraps a secret supplied by the operator (`BURSAR_ADMIN_KEY`).
    pub fn from_supplied(secret: String) -> Result<Self, FieldError> {
        if secret.len() < 24 || secret.len() > 200 || !secret.is_ascii() || secret.contains(' ') {
            return Err(FieldError::new(
                "BURSAR_ADMIN_KEY",
                "must be 24 to 200 printable ASCII characters without spaces",
            ));
        }
        Ok(ApiKeySecret(secret))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> String {
        hash_key(&self.0)
    }

    pub fn prefix(&self) -> String {
        self.0.chars().take(12).collect()
    }
}

impl std::fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKeySecret(…)")
    }
}

/// The stored form of a presented key.
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Checks an ISO 3166-1 alpha-2 country code (`DE`): an assigned code, in
/// capitals. `ZZ`, `XX` and other user-assigned codes are not countries.
pub fn check_country(code: &str) -> Result<String, FieldError> {
    valid_country(code).ok_or_else(|| {
        FieldError::new(
            "country",
            format!("`{code}` is not an ISO 3166-1 alpha-2 country code"),
        )
    })
}

/// Checks an IANA time zone name.
pub fn check_time_zone(name: &str) -> Result<crate::calendar::Zone, FieldError> {
    crate::calendar::Zone::parse(name).ok_or_else(|| {
        FieldError::new(
            "time_zone",
            format!("`{name}` is not an IANA time zone (e.g. `UTC`, `Europe/Berlin`)"),
        )
    })
}

/// Pattern of a language code: ISO 639-1, lower case.
pub const LANGUAGE_PATTERN: &str = "^[a-z]{2}$";

/// Checks a language code (two lower-case letters, ISO 639-1).
pub fn check_language(code: &str) -> Result<String, FieldError> {
    if code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase()) {
        return Ok(code.to_owned());
    }
    Err(FieldError::new(
        "language",
        format!("`{code}` is not an ISO 639-1 language code (e.g. `en`, `ru`)"),
    ))
}

/// Checks the mail a customer turns off: only the optional kinds
/// ([`crate::messages::Kind::OPTIONAL`]); the rest always goes out.
pub fn check_opt_out(kinds: &[String]) -> Result<Vec<crate::messages::Kind>, FieldError> {
    let mut out = Vec::new();
    for name in kinds {
        match crate::messages::Kind::parse(name).filter(|k| k.is_optional()) {
            Some(k) if !out.contains(&k) => out.push(k),
            Some(_) => {}
            None => {
                return Err(FieldError::new(
                    "email_opt_out",
                    format!(
                        "`{name}` cannot be turned off; only {} can",
                        crate::messages::Kind::OPTIONAL
                            .map(|k| k.as_str())
                            .join(", ")
                    ),
                ));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checks an API key's label (1 to 100 characters after trimming) and
/// expiry (in the future, if any).
pub fn check_key_label(
    name: &str,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<String, FieldError> {
    let name = check_text("name", name, 100)?;
    if expires_at.is_some_and(|at| at <= now) {
        return Err(FieldError::new("expires_at", "must be in the future"));
    }
    Ok(name)
}

pub fn valid_country(code: &str) -> Option<String> {
    if code.len() != 2 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    isocountry::CountryCode::for_alpha2(code).ok()?;
    Some(code.to_owned())
}

/// Every code [`valid_country`] accepts.
pub fn country_codes() -> Vec<&'static str> {
    let mut codes: Vec<&str> = isocountry::CountryCode::iter()
        .map(|c| c.alpha2())
        .filter(|c| valid_country(c).is_some())
        .collect();
    codes.sort_unstable();
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email("Ann@Example.COM").unwrap(),
            "ann@example.com"
        );
        let pattern = regex::Regex::new(EMAIL_PATTERN).unwrap();
        for good in ["ann@example.com", "a@b.c", "Ann.Lee+x@mail.example.org"] {
            assert!(normalize_email(good).is_ok(), "{good} refused");
            assert!(pattern.is_match(good), "{good} does not match the pattern");
        }
        for bad in [
            "a\u{7f}@example.com",
            "a\tb@example.com",
            " ann@example.com",
            "ann@example.com ",
            "",
            "ann",
            "ann@",
            "@x.com",
            "a b@x.com",
            "a@b",
            "a@@b.com",
            "a@.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad} accepted");
            assert!(!pattern.is_match(bad), "{bad} matches the pattern");
        }
    }

    #[test]
    fn a_text_is_refused_when_only_spaces_and_controls() {
        let pattern = regex::Regex::new(TEXT_PATTERN).unwrap();
        for good in ["Ann", " Ann ", "\u{a0}", "\u{85}x"] {
            assert!(check_text("name", good, 10).is_ok(), "{good:?} refused");
            assert!(pattern.is_match(good), "{good:?} does not match");
        }
        assert_eq!(check_text("name", " Ann\t", 10).unwrap(), "Ann");
        for bad in ["", " ", "\t\n", "\u{7f}"] {
            assert!(check_text("name", bad, 10).is_err(), "{bad:?} accepted");
            assert!(!pattern.is_match(bad), "{bad:?} matches");
        }
        assert!(check_text("name", &"x".repeat(11), 10).is_err());
    }

    #[test]
    fn names_have_no_control_characters_as_the_contract_says() {
        let pattern = regex::Regex::new(NAME_PATTERN).unwrap();
        for good in ["Ann", " Ann ", "Борис", "\u{a0}x"] {
            assert!(normalize_name(good).is_ok(), "{good:?} refused");
            assert!(pattern.is_match(good), "{good:?} does not match");
        }
        for bad in ["", " ", "Eve\r\nBcc: x", "a\tb", "a\u{7f}", "\n"] {
            assert!(normalize_name(bad).is_err(), "{bad:?} accepted");
            assert!(!pattern.is_match(bad), "{bad:?} matches");
        }
    }

    #[test]
    fn only_assigned_country_codes_are_countries() {
        assert_eq!(valid_country("DE").as_deref(), Some("DE"));
        assert_eq!(valid_country("RU").as_deref(), Some("RU"));
        for bad in ["ZZ", "XX", "AA", "QM", "D", "DEU", "", "1A", "de", " DE"] {
            assert_eq!(valid_country(bad), None, "{bad} accepted");
        }
    }

    #[test]
    fn generated_keys_are_unique_and_only_their_hash_is_kept() {
        let a = ApiKeySecret::generate(Role::Customer);
        let b = ApiKeySecret::generate(Role::Customer);
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("bsr_cus_"));
        assert_eq!(a.hash(), hash_key(a.expose()));
        assert_ne!(a.hash(), a.expose());
        assert_eq!(format!("{a:?}"), "ApiKeySecret(…)");
    }
}
