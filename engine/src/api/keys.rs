//! `/api/v1/staff-keys`: API keys for staff (admin, support, accountant),
//! and the record of when each key was last used.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::accounts::{ApiKey, ApiKeySecret, Role};
use crate::api::accounts::CreatedApiKey;
use crate::api::error::Problem;
use crate::api::extract::{ApiJson, IdempotencyKey, Principal};
use crate::api::idempotency::{Idempotency, Reply};
use crate::api::views::*;
use crate::api::{AppState, PageBody};
use crate::directory;
use crate::store::Store;
use crate::store::accounts::{self as repo};

/// How often a key's `last_used_at` is written at most.
const TOUCH_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// Remembers when each key's use was last written, so a busy key costs one
/// write a minute, not one per request.
#[derive(Default)]
pub struct KeyUse {
    written: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl KeyUse {
    /// Records that `key` authenticated a request at `now`.
    pub async fn record(&self, store: &Store, key: &ApiKey, now: DateTime<Utc>) {
        let last = key.last_used_at.into_iter().chain(
            self.written
                .lock()
                .ok()
                .and_then(|w| w.get(&key.id).copied()),
        );
        if last.max().is_some_and(|at| now - at < TOUCH_EVERY) {
            return;
        }
        if let Ok(mut w) = self.written.lock() {
            w.insert(key.id.clone(), now);
        }
        let touched = async {
            let mut tx = store.begin().await?;
            repo::touch_key(tx.conn(), &key.id, now).await?;
            tx.commit().await
        };
        if let Err(e) = touched.await {
            tracing::warn!(key = %key.id, error = %e, "could not record the key's use");
        }
    }
}

/// A new staff key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStaffKey {
    /// A label to recognise the key by, e.g. "alice" or "monitoring".
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    pub role: StaffRole,
    /// After this the key no longer works; none: it works until revoked.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The staff roles a key can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StaffRole {
    Admin,
    Support,
    Accountant,
}

impl From<StaffRole> for Role {
    fn from(r: StaffRole) -> Role {
        match r {
            StaffRole::Admin => Role::Admin,
            StaffRole::Support => Role::Support,
            StaffRole::Accountant => Role::Accountant,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/staff-keys", operation_id = "listStaffKeys", tag = "accounts",
    responses((status = 200, body = PageBody<ApiKeyView>)),
    security(("bearer" = [])))]
/// Every staff key, revoked ones included, with when each was last used.
pub async fn list(State(state): State<AppState>) -> Result<Json<PageBody<ApiKeyView>>, Problem> {
    let mut r = state.store.reader().await?;
    Ok(Json(PageBody::all(repo::list_staff_keys(r.conn()).await?)))
}

#[utoipa::path(post, path = "/api/v1/staff-keys", operation_id = "createStaffKey", tag = "accounts",
    params(("Idempotency-Key" = Option<String>, Header)),
    request_body = CreateStaffKey,
    responses((status = 201, body = CreatedApiKey)),
    security(("bearer" = [])))]
/// Creates a staff key; its secret is in this answer only.
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    body: ApiJson<CreateStaffKey>,
) -> Result<Response, Problem> {
    let now = state.clock.now();
    let req = body.value;
    let role = Role::from(req.role);
    let actor = principal.actor();
    let idem = Idempotency {
        principal: &principal,
        key: &key,
        request_hash: &body.request_hash,
    };
    idem.run(&state, |tx| {
        Box::pin(async move {
            let form = directory::KeyForm {
                role,
                account_id: None,
                name: &req.name,
                expires_at: req.expires_at,
            };
            let (key, secret) = directory::create_key(tx.conn(), form, 0, &actor, now).await?;
            CreatedApiKey::reply(key.into(), &secret)
        })
    })
    .await
}

#[utoipa::path(delete, path = "/api/v1/staff-keys/{id}", operation_id = "revokeStaffKey", tag = "accounts",
    params(("id" = String, Path)),
    responses((status = 200, body = ApiKeyView), (status = 404), (status = 409, description = "the last admin key")),
    security(("bearer" = [])))]
/// Revokes a staff key; it stops working at once.
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyView>, Problem> {
    let mut tx = state.store.begin().await?;
    let key =
        directory::revoke_staff_key(tx.conn(), &id, &principal.actor(), state.clock.now()).await?;
    tx.commit().await?;
    state.key_cache.forget_key(&key.id);
    Ok(Json(key.into()))
}

/// `Reply` of a key creation: the secret in the answer, never in the
/// stored replay.
impl CreatedApiKey {
    pub fn reply(key: ApiKeyView, secret: &ApiKeySecret) -> Result<Reply, Problem> {
        let stored = serde_json::to_value(CreatedApiKey {
            key: key.clone(),
            secret: None,
        })
        .map_err(|_| Problem::internal())?;
        let mut reply = Reply::new(
            StatusCode::CREATED,
            CreatedApiKey {
                key,
                secret: Some(secret.expose().to_owned()),
            },
        )?;
        reply.stored_body = Some(stored);
        Ok(reply)
    }
}
