//! Request extractors whose failures are problem+json: JSON bodies, query
//! strings, the bearer key and the `Idempotency-Key` header.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::accounts::{AccountStatus, Role, hash_key};
use crate::api::AppState;
use crate::api::error::{Problem, ProblemKind};
use crate::api::policy::{self, Action, Reach};
use crate::store::accounts::{KeyIdentity, find_key_by_hash};

/// A JSON body that must be `application/json`, fit the size limit, parse,
/// and have no unknown fields (request types use `deny_unknown_fields`).
/// Carries a hash of the request for idempotency checks.
pub struct ApiJson<T> {
    pub value: T,
    pub request_hash: String,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (json, request_hash) = read_json(req, state, false).await?;
        Ok(ApiJson {
            value: parse_body(json)?,
            request_hash,
        })
    }
}

/// Like [`ApiJson`], but an empty body (with or without a content type)
/// means `T::default()`: for actions such as `resume` that need no input.
pub struct OptionalJson<T> {
    pub value: T,
    pub request_hash: String,
}

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (json, request_hash) = read_json(req, state, true).await?;
        let value = match json {
            serde_json::Value::Null => T::default(),
            json => parse_body(json)?,
        };
        Ok(OptionalJson {
            value,
            request_hash,
        })
    }
}

fn parse_body<T: DeserializeOwned>(json: serde_json::Value) -> Result<T, Problem> {
    serde_json::from_value(json).map_err(|e| Problem::new(ProblemKind::InvalidBody, e.to_string()))
}

/// Reads a JSON body and hashes the request (method, path, canonical
/// body). With `allow_empty`, an empty body reads as `null`.
async fn read_json<S: Send + Sync>(
    req: Request,
    state: &S,
    allow_empty: bool,
) -> Result<(serde_json::Value, String), Problem> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned());
    let is_json = content_type.as_deref().is_some_and(|mime| {
        mime.eq_ignore_ascii_case("application/json")
            || (mime.starts_with("application/") && mime.ends_with("+json"))
    });
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(ProblemKind::PayloadTooLarge, rejection.body_text())
        } else {
            Problem::new(ProblemKind::UnreadableBody, rejection.body_text())
        }
    })?;
    let json: serde_json::Value = if allow_empty && bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Null
    } else if !is_json {
        return Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            "send the body as JSON with Content-Type: application/json",
        ));
    } else {
        parse_unique(&bytes).map_err(|e| {
            Problem::new(
                ProblemKind::MalformedJson,
                format!("the body is not valid JSON: {e}"),
            )
        })?
    };
    // Hash the canonical form (serde_json sorts object keys), so whitespace
    // and key order do not make two equal requests differ.
    let mut hasher = Sha256::new();
    hasher.update(method.as_str());
    hasher.update(b" ");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(json.to_string());
    Ok((json, hex::encode(hasher.finalize())))
}

/// Parses JSON, refusing an object that names a key twice: which of two
/// values counts is not a guess the server makes (parsers differ on it).
pub fn parse_unique(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = UniqueKeys.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Builds a JSON value, failing on a duplicate object key.
struct UniqueKeys;

impl<'de> serde::de::DeserializeSeed<'de> for UniqueKeys {
    type Value = serde_json::Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        // JSON has one number type: `27840.0` is the integer 27840 (as
        // JSON Schema's `integer` says), as long as a double holds it
        // exactly.
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        if v.fract() == 0.0 && v.abs() <= EXACT {
            return Ok((v as i64).into());
        }
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(UniqueKeys)? {
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "the key `{key}` appears twice"
                )));
            }
            let value = map.next_value_seed(UniqueKeys)?;
            object.insert(key, value);
        }
        Ok(serde_json::Value::Object(object))
    }
}

/// A query string; a malformed one is a 400 problem.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| Problem::new(ProblemKind::InvalidQuery, e.body_text()))
    }
}

/// Who is calling: resolved from `Authorization: Bearer <key>` by the
/// policy layer ([`crate::api::policy::enforce`]), with how far the route's
/// action lets it reach.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The API key's id, or the console login's (see `console`).
    pub key_id: String,
    /// A person logged in to the web console rather than an API key.
    pub console: bool,
    pub role: Role,
    /// The account a customer key is scoped to.
    pub account_id: Option<String>,
    /// How far this request's action reaches: a customer's own account, or
    /// any (staff).
    pub reach: Reach,
}

impl Principal {
    pub fn is_staff(&self) -> bool {
        self.role.is_staff()
    }

    /// The same caller with the reach of the action being taken.
    pub fn with_reach(mut self, reach: Reach) -> Self {
        self.reach = reach;
        self
    }

    /// Whether the policy lets this caller take `action` too (for a handler
    /// whose fields need more than its route's action).
    pub fn may(&self, action: Action) -> bool {
        policy::allowed(self.role, action).is_some()
    }

    /// Refuses unless the policy lets this caller take `action`.
    pub fn require(&self, action: Action) -> Result<(), Problem> {
        if self.may(action) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "the {} role may not do this",
                self.role.as_str()
            )))
        }
    }

    /// Staff reach any account; a customer only its own.
    pub fn require_account(&self, account_id: &str) -> Result<(), Problem> {
        match self.reach {
            Reach::Any => Ok(()),
            Reach::Own if self.account_id.as_deref() == Some(account_id) => Ok(()),
            Reach::Own => Err(Problem::forbidden(
                "this API key belongs to another account",
            )),
        }
    }

    /// Which account a list is about: a customer key's own (asking for
    /// another is refused), or for staff whatever they asked (all when
    /// `None`).
    pub fn scope(&self, asked: Option<&str>) -> Result<Option<String>, Problem> {
        match self.reach {
            Reach::Any => Ok(asked.map(str::to_owned)),
            Reach::Own => {
                let own = self
                    .account_id
                    .clone()
                    .ok_or_else(|| Problem::forbidden("this API key belongs to no account"))?;
                if asked.is_some_and(|a| a != own) {
                    return Err(Problem::forbidden(
                        "this API key belongs to another account",
                    ));
                }
                Ok(Some(own))
            }
        }
    }

    /// The string recorded as `created_by` on what this caller causes.
    pub fn actor(&self) -> String {
        if self.console {
            format!("login:{}", self.key_id)
        } else {
            format!("api_key:{}", self.key_id)
        }
    }

    /// Resolves the bearer key of a request: unknown, revoked or expired
    /// keys, and customer keys of accounts that are not active, are refused.
    pub async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Self, Problem> {
        let header = headers.get(header::AUTHORIZATION).ok_or_else(|| {
            Problem::unauthorized("send an API key as `Authorization: Bearer <key>`")
        })?;
        let secret = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be `Bearer <key>`")
            })?;
        let now = state.clock.now();
        let hash = hash_key(secret);
        let identity = match state.key_cache.get(&hash) {
            Some(identity) => identity,
            None => {
                let generation = state.key_cache.generation();
                let mut reader = state.store.reader().await.map_err(Problem::from)?;
                let identity = find_key_by_hash(reader.conn(), &hash)
                    .await
                    .map_err(Problem::from)?
                    .ok_or_else(|| Problem::unauthorized("unknown or revoked API key"))?;
                state.key_cache.put(hash, generation, &identity);
                identity
            }
        };
        if identity.key.expires_at.is_some_and(|at| at <= now) {
            return Err(Problem::unauthorized("this API key has expired"));
        }
        if identity.key.role == Role::Customer
            && identity.account_status != Some(AccountStatus::Active)
        {
            return Err(Problem::forbidden(
                "the account of this API key is not active",
            ));
        }
        state.key_use.record(&state.store, &identity.key, now).await;
        Ok(Principal {
            key_id: identity.key.id,
            console: false,
            role: identity.key.role,
            account_id: identity.key.account_id,
            reach: Reach::Own,
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Problem;

    /// The caller the policy layer admitted. A handler of a public route
    /// has none: asking for one there is a bug, answered as one.
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            tracing::error!(path = %parts.uri.path(), "a handler asked for a caller the policy layer did not admit");
            Problem::internal()
        })
    }
}

/// The optional `Idempotency-Key` header: 1 to 255 visible ASCII characters.
pub struct IdempotencyKey(pub Option<String>);

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(IDEMPOTENCY_KEY) else {
            return Ok(IdempotencyKey(None));
        };
        let key = value
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                Problem::new(
                    ProblemKind::InvalidIdempotencyKey,
                    "Idempotency-Key must be 1 to 255 visible ASCII characters",
                )
            })?;
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

/// How long a looked-up key is trusted without asking the database again.
/// A revocation or an account status change made through this process
/// empties the cache at once; one made by another process (the CLI,
/// another node) is seen within this.
pub const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The most keys the cache holds; beyond it, it starts over.
const KEY_CACHE_MAX: usize = 10_000;

/// Keys already authenticated, by the hash of their secret, so that a
/// request costs no key lookup. Unknown keys are never cached.
#[derive(Default)]
pub struct KeyCache {
    inner: std::sync::Mutex<KeyCacheInner>,
}

#[derive(Default)]
struct KeyCacheInner {
    /// Bumped by every forgetting ([`KeyCache::forget_key`],
    /// [`KeyCache::forget_account`]): a lookup that started
    /// before it is not stored.
    generation: u64,
    keys: std::collections::HashMap<String, (std::time::Instant, KeyIdentity)>,
}

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeyCacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, hash: &str) -> Option<KeyIdentity> {
        let inner = self.lock();
        let (at, identity) = inner.keys.get(hash)?;
        (at.elapsed() < KEY_CACHE_TTL).then(|| identity.clone())
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    fn put(&self, hash: String, generation: u64, identity: &KeyIdentity) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.keys.len() >= KEY_CACHE_MAX {
            inner.keys.clear();
        }
        inner
            .keys
            .insert(hash, (std::time::Instant::now(), identity.clone()));
    }

    /// Forgets a key once its revocation is committed; the other keys stay.
    pub fn forget_key(&self, key_id: &str) {
        self.forget(|identity| identity.key.id == key_id);
    }

    /// Forgets an account's keys once a change of its status is committed.
    pub fn forget_account(&self, account_id: &str) {
        self.forget(|identity| identity.key.account_id.as_deref() == Some(account_id));
    }

    /// Forgets the keys `gone` picks. Every lookup under way is kept out
    /// too (whichever key it was for): it may have read the key before the
    /// change.
    fn forget(&self, gone: impl Fn(&KeyIdentity) -> bool) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.keys.retain(|_, (_, identity)| !gone(identity));
    }
}

#[cfg(test)]
mod tests {
    use super::{KeyCache, parse_unique};
    use crate::accounts::{AccountStatus, ApiKey, Role};
    use crate::store::accounts::KeyIdentity;
    use serde_json::json;

    fn identity(key_id: &str, account_id: &str) -> KeyIdentity {
        KeyIdentity {
            key: ApiKey {
                id: key_id.into(),
                role: Role::Customer,
                account_id: Some(account_id.into()),
                name: "shop".into(),
                prefix: "bsr_cus_abc".into(),
                created_at: chrono::Utc::now(),
                revoked_at: None,
                managed: false,
                last_used_at: None,
                expires_at: None,
            },
            account_status: Some(AccountStatus::Active),
        }
    }

    #[test]
    fn the_key_cache_forgets_what_changed_and_keeps_no_lookup_that_raced_it() {
        let cache = KeyCache::default();
        let generation = cache.generation();
        cache.put("h1".into(), generation, &identity("key_1", "acc_1"));
        cache.put("h2".into(), generation, &identity("key_2", "acc_1"));
        cache.put("h3".into(), generation, &identity("key_3", "acc_2"));
        assert!(
            cache.get("h1").is_some(),
            "a looked-up key is served from the cache"
        );
        assert!(cache.get("h4").is_none(), "an unknown hash is a miss");

        // A lookup that started before a revocation finished after it: what
        // it read may be the key before the revocation, so it is not kept.
        let before = cache.generation();
        cache.forget_key("key_1");
        assert!(cache.get("h1").is_none(), "a revoked key is forgotten");
        assert!(cache.get("h2").is_some(), "the account's other key stays");
        assert!(cache.get("h3").is_some(), "other accounts' keys stay");
        cache.put("h1".into(), before, &identity("key_1", "acc_1"));
        assert!(cache.get("h1").is_none(), "a stale lookup is not stored");
        cache.put("h4".into(), before, &identity("key_4", "acc_3"));
        assert!(
            cache.get("h4").is_none(),
            "no lookup under way at a revocation is stored, whatever its key"
        );
        cache.put("h1".into(), cache.generation(), &identity("key_1", "acc_1"));
        assert!(cache.get("h1").is_some());

        // A status change forgets every key of that account, only those.
        let before = cache.generation();
        cache.forget_account("acc_1");
        assert!(cache.get("h1").is_none() && cache.get("h2").is_none());
        assert!(cache.get("h3").is_some());
        cache.put("h2".into(), before, &identity("key_2", "acc_1"));
        assert!(cache.get("h2").is_none(), "a stale lookup is not stored");
    }

    #[test]
    fn an_integral_number_written_with_a_point_is_an_integer() {
        let v = parse_unique(br#"{"amount": 27840.0, "rate": 1.5, "big": 1e300}"#).unwrap();
        assert_eq!(v["amount"], json!(27840));
        assert!(v["amount"].is_i64());
        assert_eq!(v["rate"], json!(1.5));
        assert!(v["big"].is_f64(), "beyond 2^53 a double is not exact");
    }

    #[test]
    fn a_key_named_twice_is_refused() {
        assert!(parse_unique(br#"{"a": 1, "a": 2}"#).is_err());
    }
}
