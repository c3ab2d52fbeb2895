//! E-mail notifications waiting to be sent, and those sent.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::FromRow;

use crate::clock::{from_micros, to_micros};
use crate::error::Result;
use crate::ids::new_id;
use crate::messages::{Kind, NewMessage};
use crate::sql;
use crate::store::{Conn, bulk};

/// A notification as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub id: i64,
    /// Stable across retries: the mail's `Message-ID`.
    pub notification_id: String,
    pub kind: Kind,
    pub data: Value,
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub recipient: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
struct Row {
    id: i64,
    notification_id: String,
    kind: String,
    data: String,
    status: String,
    attempts: i64,
    last_error: Option<String>,
    recipient: Option<String>,
    created_at: i64,
    sent_at: Option<i64>,
}

impl Row {
    /// None for a kind this version does not know (written by a newer one).
    fn into_notification(self) -> Option<Notification> {
        Some(Notification {
            id: self.id,
            notification_id: self.notification_id,
            kind: Kind::parse(&self.kind)?,
            data: serde_json::from_str(&self.data).unwrap_or(Value::Null),
            status: self.status,
            attempts: self.attempts,
            last_error: self.last_error,
            recipient: self.recipient,
            created_at: from_micros(self.created_at),
            sent_at: self.sent_at.map(from_micros),
        })
    }
}

const COLUMNS: &str =
    "id, notification_id, kind, data, status, attempts, last_error, recipient, created_at, sent_at";

/// Records messages, pending; one whose key was recorded before is left
/// out. Returns how many were new.
pub async fn insert(c: Conn<'_>, messages: &[NewMessage], now: DateTime<Utc>) -> Result<u64> {
    if messages.is_empty() {
        return Ok(0);
    }
    let at = to_micros(now);
    let mut rows = bulk::Rows::new(7);
    for m in messages {
        rows.push([
            new_id("ntf").into(),
            m.kind.as_str().into(),
            m.dedup_key.as_deref().into(),
            m.data.to_string().into(),
            "pending".into(),
            at.into(),
            at.into(),
        ]);
    }
    bulk::execute(
        c,
        "INSERT INTO notifications (notification_id, kind, dedup_key, data, status, next_attempt_at, created_at)
         {rows} ON CONFLICT (dedup_key) DO NOTHING",
        &rows,
    )
    .await
}

/// Whether a message with this key was recorded.
pub async fn has_key(mut c: Conn<'_>, key: &str) -> Result<bool> {
    let n: i64 = sql!(&mut c, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM notifications WHERE dedup_key = $1")
        .bind(key).fetch_one(&mut **c).await)?;
    Ok(n > 0)
}

/// The pending notifications due at `$1`, first due first, at most `$3`,
/// read through `notifications_pending` in order (migration 0014; see
/// [`crate::store::indexed_by`]).
pub fn due_notifications(backend: crate::store::Backend) -> String {
    let hint = crate::store::indexed_by(backend, "notifications_pending");
    format!(
        "SELECT id FROM notifications {hint} WHERE status = 'pending' AND next_attempt_at <= $1
         ORDER BY next_attempt_at, id LIMIT $3"
    )
}

/// Pending notifications due by `now`, first due first, claimed until
/// `until` (so two mailers never send one at once).
pub async fn claim_due(
    mut c: Conn<'_>,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Notification>> {
    let due = due_notifications(c.backend());
    let q = format!(
        "UPDATE notifications SET next_attempt_at = $2
         WHERE id IN ({due})
           AND status = 'pending' AND next_attempt_at <= $1
         RETURNING {COLUMNS}"
    );
    let rows: Vec<Row> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(to_micros(now)).bind(to_micros(until)).bind(limit as i64)
        .fetch_all(&mut **c).await)?;
    let mut out: Vec<Notification> = rows
        .into_iter()
        .filter_map(Row::into_notification)
        .collect();
    out.sort_by_key(|n| n.id);
    Ok(out)
}

/// How a claimed notification ended this time.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<'a> {
    Sent {
        recipient: &'a str,
    },
    /// Not to be sent (turned off, no staff address): kept, with why.
    Skipped {
        why: &'a str,
    },
    /// Tried again at `retry_at`.
    Retry {
        error: &'a str,
        retry_at: DateTime<Utc>,
    },
    /// Cannot be sent, ever (its account is gone).
    Failed {
        error: &'a str,
    },
}

pub async fn finish(
    mut c: Conn<'_>,
    id: i64,
    outcome: Outcome<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    let at = to_micros(now);
    sql!(&mut c, c => match &outcome {
        Outcome::Sent { recipient } => sqlx::query(
            "UPDATE notifications SET status = 'sent', sent_at = $2, attempts = attempts + 1,
                 recipient = $3, last_error = NULL WHERE id = $1")
            .bind(id).bind(at).bind(*recipient).execute(&mut **c).await.map(drop),
        Outcome::Skipped { why } => sqlx::query(
            "UPDATE notifications SET status = 'skipped', last_error = $2 WHERE id = $1")
            .bind(id).bind(*why).execute(&mut **c).await.map(drop),
        Outcome::Retry { error, retry_at } => sqlx::query(
            "UPDATE notifications SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3
             WHERE id = $1")
            .bind(id).bind(*error).bind(to_micros(*retry_at)).execute(&mut **c).await.map(drop),
        Outcome::Failed { error } => sqlx::query(
            "UPDATE notifications SET status = 'failed', attempts = attempts + 1, last_error = $2
             WHERE id = $1")
            .bind(id).bind(*error).execute(&mut **c).await.map(drop),
    })?;
    Ok(())
}

/// Notifications, newest first (of one kind when given).
pub async fn recent(
    mut c: Conn<'_>,
    kind: Option<Kind>,
    limit: usize,
) -> Result<Vec<Notification>> {
    let q = format!(
        "SELECT {COLUMNS} FROM notifications WHERE ($1 = '' OR kind = $1) ORDER BY id DESC LIMIT $2"
    );
    let rows: Vec<Row> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(kind.map(Kind::as_str).unwrap_or_default()).bind(limit as i64)
        .fetch_all(&mut **c).await)?;
    Ok(rows
        .into_iter()
        .filter_map(Row::into_notification)
        .collect())
}

const CUSTOMER: &str = "customer";

/// Accounts in `currency` told their balance was low whose balance is
/// back at `threshold` or above: told again next time it falls.
pub async fn rearm_low_balance(
    mut c: Conn<'_>,
    currency: crate::money::Currency,
    threshold: i64,
) -> Result<()> {
    sql!(&mut c, c => sqlx::query(
        "UPDATE accounts SET balance_low_at = NULL
         WHERE currency = $1 AND balance_low_at IS NOT NULL
           AND id IN (SELECT account_id FROM ledger_accounts
                      WHERE kind = $3 AND currency = $1 AND balance >= $2)")
        .bind(currency.code()).bind(threshold).bind(CUSTOMER)
        .execute(&mut **c).await.map(drop))?;
    Ok(())
}

/// Active accounts in `currency` with a running (or suspended) service
/// whose balance is below `threshold` and who were not told yet: id and
/// balance.
pub async fn newly_low_balance(
    mut c: Conn<'_>,
    currency: crate::money::Currency,
    threshold: i64,
    limit: usize,
) -> Result<Vec<(String, i64)>> {
    Ok(sql!(&mut c, c => sqlx::query_as(
        "SELECT a.id, l.balance FROM accounts a
         JOIN ledger_accounts l ON l.account_id = a.id AND l.kind = $3
         WHERE a.currency = $1 AND a.status = 'active' AND a.balance_low_at IS NULL
           AND l.balance < $2
           AND EXISTS (SELECT 1 FROM services s WHERE s.account_id = a.id
                       AND s.status IN ('active', 'suspended'))
         ORDER BY a.id LIMIT $4")
        .bind(currency.code()).bind(threshold).bind(CUSTOMER).bind(limit as i64)
        .fetch_all(&mut **c).await)?)
}

/// Notes that this account is told its balance is low; false if another
/// pass did first (only that one records the message).
pub async fn mark_low_balance(mut c: Conn<'_>, id: &str, now: DateTime<Utc>) -> Result<bool> {
    let n = sql!(&mut c, c => sqlx::query(
        "UPDATE accounts SET balance_low_at = $2 WHERE id = $1 AND balance_low_at IS NULL")
        .bind(id).bind(to_micros(now)).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    pub idempotency_keys: u64,
    pub delivered_events: u64,
    pub finished_notifications: u64,
}

/// Removes stored idempotent responses created before `keys_before`, and
/// outbox events delivered and notifications finished (sent, skipped,
/// failed) before `done_before`. Events of the service log and the ledger
/// are never removed.
pub async fn prune(
    mut c: Conn<'_>,
    keys_before: Option<DateTime<Utc>>,
    done_before: Option<DateTime<Utc>>,
) -> Result<Pruned> {
    let mut pruned = Pruned::default();
    if let Some(at) = keys_before {
        pruned.idempotency_keys = sql!(&mut c, c => sqlx::query(
            "DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(to_micros(at)).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    }
    if let Some(at) = done_before {
        pruned.delivered_events = sql!(&mut c, c => sqlx::query(
            "DELETE FROM outbox WHERE status = 'delivered' AND delivered_at < $1")
            .bind(to_micros(at)).execute(&mut **c).await.map(|r| r.rows_affected()))?;
        pruned.finished_notifications = sql!(&mut c, c => sqlx::query(
            "DELETE FROM notifications WHERE status IN ('sent', 'skipped', 'failed') AND created_at < $1")
            .bind(to_micros(at)).execute(&mut **c).await.map(|r| r.rows_affected()))?;
    }
    Ok(pruned)
}
