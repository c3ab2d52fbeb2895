//! The outbox of events for webhook endpoints.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::FromRow;

use crate::clock::{from_micros, to_micros};
use crate::error::Result;
use crate::ids::new_id;
use crate::sql;
use crate::store::{Conn, bulk};

/// An event waiting to be delivered.
pub struct OutboxEvent {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub payload: Value,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct Row {
    id: i64,
    event_id: String,
    r#type: String,
    payload: String,
    attempts: i64,
    created_at: i64,
}

/// Adds events (type and data each) to the outbox, pending delivery, and
/// the e-mail notifications they make (see [`crate::messages::from_event`]).
pub async fn insert(mut c: Conn<'_>, events: &[(String, Value)], now: DateTime<Utc>) -> Result<()> {
    let at = to_micros(now);
    let mut rows = bulk::Rows::new(6);
    for (event_type, data) in events {
        rows.push([
            new_id("evt").into(),
            event_type.as_str().into(),
            data.to_string().into(),
            at.into(),
            at.into(),
            "pending".into(),
        ]);
    }
    bulk::execute(
        c.reborrow(),
        "INSERT INTO outbox (event_id, type, payload, next_attempt_at, created_at, status) {rows}",
        &rows,
    )
    .await?;
    let messages: Vec<_> = events
        .iter()
        .filter_map(|(t, data)| crate::messages::from_event(t, data, now))
        .collect();
    super::notifications::insert(c, &messages, now).await?;
    Ok(())
}

/// The pending events due at `$1`, first due first, at most `$3`, read
/// through `outbox_pending` in order (migration 0014; see
/// [`crate::store::indexed_by`]).
pub fn due_events(backend: crate::store::Backend) -> String {
    let hint = crate::store::indexed_by(backend, "outbox_pending");
    format!(
        "SELECT id FROM outbox {hint} WHERE status = 'pending' AND next_attempt_at <= $1
         ORDER BY next_attempt_at, id LIMIT $3"
    )
}

/// Pending events due by `now`, first due first, claimed until `until` (a
/// conditional update, so two deliverers never claim one event at once).
pub async fn claim_due(
    mut c: Conn<'_>,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<OutboxEvent>> {
    let q = format!(
        "UPDATE outbox SET next_attempt_at = $2
         WHERE id IN ({})
           AND status = 'pending' AND next_attempt_at <= $1
         RETURNING id, event_id, type, payload, attempts, created_at",
        due_events(c.backend())
    );
    let rows: Vec<Row> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(to_micros(now)).bind(to_micros(until)).bind(limit as i64)
        .fetch_all(&mut **c).await)?;
    let mut events: Vec<OutboxEvent> = rows
        .into_iter()
        .map(|r| OutboxEvent {
            id: r.id,
            event_id: r.event_id,
            event_type: r.r#type,
            payload: serde_json::from_str(&r.payload).unwrap_or(Value::Null),
            attempts: r.attempts,
            created_at: from_micros(r.created_at),
        })
        .collect();
    events.sort_by_key(|e| e.id);
    Ok(events)
}

pub async fn delivered(mut c: Conn<'_>, id: i64, now: DateTime<Utc>) -> Result<()> {
    sql!(&mut c, c => sqlx::query(
        "UPDATE outbox SET status = 'delivered', delivered_at = $2, attempts = attempts + 1,
             last_error = NULL WHERE id = $1")
        .bind(id).bind(to_micros(now)).execute(&mut **c).await.map(drop))?;
    Ok(())
}

pub async fn failed(mut c: Conn<'_>, id: i64, error: &str, retry_at: DateTime<Utc>) -> Result<()> {
    sql!(&mut c, c => sqlx::query(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3
         WHERE id = $1")
        .bind(id).bind(error).bind(to_micros(retry_at)).execute(&mut **c).await.map(drop))?;
    Ok(())
}
