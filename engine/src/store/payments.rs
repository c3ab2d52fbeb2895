//! Payments, the gateway events applied to them, refunds.

use chrono::{DateTime, Utc};
use sqlx::FromRow;

use crate::clock::{from_micros, to_micros};
use crate::error::{Error, Result};
use crate::ids::new_id;
use crate::money::{Currency, Money};
use crate::payments::{Payment, PaymentStatus, Refund, RefundStatus};
use crate::sql;
use crate::store::{Conn, Page};

#[derive(FromRow)]
struct PaymentRow {
    id: String,
    account_id: String,
    gateway: String,
    amount: i64,
    currency: String,
    status: String,
    gateway_ref: Option<String>,
    service_id: Option<String>,
    description: String,
    refunded_amount: i64,
    checkout: Option<String>,
    last_error: Option<String>,
    request_hash: String,
    created_by: String,
    created_at: i64,
    updated_at: i64,
    paid_at: Option<i64>,
    expires_at: Option<i64>,
    return_url: Option<String>,
}

const PAYMENT_COLUMNS: &str = "id, account_id, gateway, amount, currency, status, gateway_ref, \
     service_id, description, refunded_amount, checkout, last_error, request_hash, created_by, \
     created_at, updated_at, paid_at, expires_at, return_url";

fn corrupt(what: String) -> Error {
    Error::Database(sqlx::Error::Decode(what.into()))
}

impl PaymentRow {
    fn into_payment(self) -> Result<Payment> {
        let currency = Currency::from_code(&self.currency)
            .map_err(|_| corrupt(format!("payment {}: bad currency", self.id)))?;
        Ok(Payment {
            amount: self.amount,
            currency,
            refunded_amount: self.refunded_amount,
            status: PaymentStatus::parse(&self.status)
                .ok_or_else(|| corrupt(format!("payment {}: bad status", self.id)))?,
            checkout: self
                .checkout
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| corrupt(format!("payment {}: bad checkout", self.id)))?,
            id: self.id,
            account_id: self.account_id,
            gateway: self.gateway,
            gateway_ref: self.gateway_ref,
            service_id: self.service_id,
            description: self.description,
            last_error: self.last_error,
            request_hash: self.request_hash,
            created_by: self.created_by,
            created_at: from_micros(self.created_at),
            updated_at: from_micros(self.updated_at),
            paid_at: self.paid_at.map(from_micros),
            expires_at: self.expires_at.map(from_micros),
            return_url: self.return_url,
        })
    }
}

/// A payment about to be created.
pub struct NewPayment<'a> {
    pub account_id: &'a str,
    pub gateway: &'a str,
    pub amount: Money,
    pub service_id: Option<&'a str>,
    pub description: &'a str,
    pub request_key: &'a str,
    pub request_hash: &'a str,
    pub created_by: &'a str,
    /// When it expires if nobody paid it.
    pub expires_at: DateTime<Utc>,
    /// Where the payer returns after a redirect checkout.
    pub return_url: Option<&'a str>,
}

pub async fn create(mut c: Conn<'_>, new: NewPayment<'_>, now: DateTime<Utc>) -> Result<Payment> {
    let id = new_id("pay");
    let at = to_micros(now);
    sql!(&mut c, c => sqlx::query(
        "INSERT INTO payments (id, account_id, gateway, amount, currency, status, service_id,
             description, request_key, request_hash, created_by, created_at, updated_at, expires_at,
             return_url)
         VALUES ($1, $2, $3, $4, $5, 'new', $6, $7, $8, $9, $10, $11, $11, $12, $13)")
        .bind(&id).bind(new.account_id).bind(new.gateway).bind(new.amount.minor())
        .bind(new.amount.currency().code()).bind(new.service_id).bind(new.description)
        .bind(new.request_key).bind(new.request_hash).bind(new.created_by).bind(at)
        .bind(to_micros(new.expires_at)).bind(new.return_url)
        .execute(&mut **c).await.map(drop))?;
    get(c, &id).await
}

pub async fn get(mut c: Conn<'_>, id: &str) -> Result<Payment> {
    let q = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1");
    let row: Option<PaymentRow> =
        sql!(&mut c, c => sqlx::query_as(&q).bind(id).fetch_optional(&mut **c).await)?;
    row.ok_or_else(|| Error::not_found("payment", id))?
        .into_payment()
}

/// The payment row, locked for the rest of the transaction on PostgreSQL
/// (SQLite transactions hold the write lock already).
pub async fn get_for_update(mut c: Conn<'_>, id: &str) -> Result<Payment> {
    let lock = if matches!(c, Conn::Postgres(_)) {
        " FOR UPDATE"
    } else {
        ""
    };
    let q = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1{lock}");
    let row: Option<PaymentRow> =
        sql!(&mut c, c => sqlx::query_as(&q).bind(id).fetch_optional(&mut **c).await)?;
    row.ok_or_else(|| Error::not_found("payment", id))?
        .into_payment()
}

/// The payment a request (API key + Idempotency-Key) created, if any.
pub async fn find_by_request(mut c: Conn<'_>, request_key: &str) -> Result<Option<Payment>> {
    let q = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE request_key = $1");
    let row: Option<PaymentRow> =
        sql!(&mut c, c => sqlx::query_as(&q).bind(request_key).fetch_optional(&mut **c).await)?;
    row.map(PaymentRow::into_payment).transpose()
}

pub async fn find_by_gateway_ref(
    mut c: Conn<'_>,
    gateway: &str,
    gateway_ref: &str,
) -> Result<Option<Payment>> {
    let q =
        format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE gateway = $1 AND gateway_ref = $2");
    let row: Option<PaymentRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(gateway).bind(gateway_ref).fetch_optional(&mut **c).await)?;
    row.map(PaymentRow::into_payment).transpose()
}

/// Payments of one account (or all), newest last, after the cursor.
pub async fn list(
    mut c: Conn<'_>,
    account_id: Option<&str>,
    after: Option<&str>,
    limit: usize,
) -> Result<Page<Payment>> {
    let q = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments
         WHERE id > $1 AND ($2 = '' OR account_id = $2) ORDER BY id LIMIT $3"
    );
    let rows: Vec<PaymentRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(after.unwrap_or("")).bind(account_id.unwrap_or("")).bind(limit as i64 + 1)
        .fetch_all(&mut **c).await)?;
    let payments = rows
        .into_iter()
        .map(PaymentRow::into_payment)
        .collect::<Result<Vec<_>>>()?;
    Ok(Page::from_rows(payments, limit, |p| p.id.clone()))
}

/// The newest payments first, of one account or all (the consoles).
pub async fn list_recent(
    mut c: Conn<'_>,
    account_id: Option<&str>,
    limit: usize,
) -> Result<Vec<Payment>> {
    let q = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE $1 = '' OR account_id = $1
         ORDER BY created_at DESC, id DESC LIMIT $2"
    );
    let rows: Vec<PaymentRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(account_id.unwrap_or("")).bind(limit as i64).fetch_all(&mut **c).await)?;
    rows.into_iter().map(PaymentRow::into_payment).collect()
}

/// Pending payments of a gateway created before `before`, the ones asked
/// about least recently first: a pass works through all of them in turn.
pub async fn pending_before(
    mut c: Conn<'_>,
    gateway: &str,
    before: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Payment>> {
    let q = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments
         WHERE gateway = $1 AND status = 'pending' AND created_at < $2
         ORDER BY COALESCE(checked_at, 0), created_at, id LIMIT $3"
    );
    let rows: Vec<PaymentRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(gateway).bind(to_micros(before)).bind(limit as i64).fetch_all(&mut **c).await)?;
    rows.into_iter().map(PaymentRow::into_payment).collect()
}

/// Records that the gateway was asked about a payment at `now`.
pub async fn mark_checked(mut c: Conn<'_>, id: &str, now: DateTime<Utc>) -> Result<()> {
    sql!(&mut c, c => sqlx::query("UPDATE payments SET checked_at = $2 WHERE id = $1")
        .bind(id).bind(to_micros(now)).execute(&mut **c).await.map(drop))?;
    Ok(())
}

/// Open (`new` or `pending`) payments whose time ran out by `now`.
pub async fn expired(mut c: Conn<'_>, now: DateTime<Utc>, limit: usize) -> Result<Vec<Payment>> {
    let q = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments
         WHERE status IN ('new', 'pending') AND expires_at <= $1 ORDER BY expires_at, id LIMIT $2"
    );
    let rows: Vec<PaymentRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(to_micros(now)).bind(limit as i64).fetch_all(&mut **c).await)?;
    rows.into_iter().map(PaymentRow::into_payment).collect()
}

/// How many payments of the account are open (`new` or `pending`).
pub async fn count_open(mut c: Conn<'_>, account_id: &str) -> Result<i64> {
    Ok(sql!(&mut c, c => sqlx::query_scalar(
        "SELECT COUNT(*) FROM payments WHERE account_id = $1 AND status IN ('new', 'pending')")
        .bind(account_id).fetch_one(&mut **c).await)?)
}

/// What the gateway said when the payment was created.
pub async fn record_checkout(
    mut c: Conn<'_>,
    id: &str,
    gateway_ref: &str,
    checkout: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<()> {
    sql!(&mut c, c => sqlx::query(
        "UPDATE payments SET gateway_ref = $2, checkout = $3, status = 'pending', updated_at = $4
         WHERE id = $1 AND status = 'new'")
        .bind(id).bind(gateway_ref).bind(checkout.to_string()).bind(to_micros(now))
        .execute(&mut **c).await.map(drop))?;
    Ok(())
}

/// Moves a payment that is not paid yet to `status`.
pub async fn set_status(
    mut c: Conn<'_>,
    id: &str,
    status: PaymentStatus,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    let at = to_micros(now);
    let paid_at = (status == PaymentStatus::Paid).then_some(at);
    sql!(&mut c, c => sqlx::query(
        "UPDATE payments SET status = $2, last_error = COALESCE($3, last_error), updated_at = $4,
             paid_at = COALESCE($5, paid_at)
         WHERE id = $1 AND status <> 'paid'")
        .bind(id).bind(status.as_str()).bind(error).bind(at).bind(paid_at)
        .execute(&mut **c).await.map(drop))?;
    Ok(())
}

pub async fn add_refunded(mut c: Conn<'_>, id: &str, delta: i64, now: DateTime<Utc>) -> Result<()> {
    let n = sql!(&mut c, c => sqlx::query(
        "UPDATE payments SET refunded_amount = refunded_amount + $2, updated_at = $3
         WHERE id = $1 AND refunded_amount + $2 BETWEEN 0 AND amount")
        .bind(id).bind(delta).bind(to_micros(now))
        .execute(&mut **c).await.map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(Error::Conflict(format!(
            "payment {id}: refunds would exceed the amount paid"
        )));
    }
    Ok(())
}

/// Records a gateway event; false when this event was applied before.
pub async fn record_event(
    mut c: Conn<'_>,
    gateway: &str,
    event_id: &str,
    payment_id: Option<&str>,
    status: PaymentStatus,
    now: DateTime<Utc>,
) -> Result<bool> {
    let n = sql!(&mut c, c => sqlx::query(
        "INSERT INTO payment_events (gateway, event_id, payment_id, status, received_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
        .bind(gateway).bind(event_id).bind(payment_id).bind(status.as_str()).bind(to_micros(now))
        .execute(&mut **c).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

#[derive(FromRow)]
struct RefundRow {
    id: String,
    payment_id: String,
    amount: i64,
    status: String,
    gateway_ref: Option<String>,
    reason: String,
    forced: bool,
    last_error: Option<String>,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

const REFUND_COLUMNS: &str = "id, payment_id, amount, status, gateway_ref, reason, forced, \
     last_error, created_by, created_at, updated_at";

impl RefundRow {
    fn into_refund(self, currency: Currency) -> Result<Refund> {
        Ok(Refund {
            amount: self.amount,
            currency,
            status: RefundStatus::parse(&self.status)
                .ok_or_else(|| corrupt(format!("refund {}: bad status", self.id)))?,
            id: self.id,
            payment_id: self.payment_id,
            gateway_ref: self.gateway_ref,
            reason: self.reason,
            forced: self.forced,
            last_error: self.last_error,
            created_by: self.created_by,
            created_at: from_micros(self.created_at),
            updated_at: from_micros(self.updated_at),
        })
    }
}

/// A refund about to be created.
pub struct NewRefund<'a> {
    pub amount: Money,
    pub reason: &'a str,
    pub forced: bool,
    pub request_key: Option<&'a str>,
    pub created_by: &'a str,
}

pub async fn create_refund(
    mut c: Conn<'_>,
    payment: &Payment,
    new: NewRefund<'_>,
    now: DateTime<Utc>,
) -> Result<Refund> {
    let id = new_id("rfd");
    sql!(&mut c, c => sqlx::query(
        "INSERT INTO refunds (id, payment_id, amount, status, reason, forced, request_key,
             created_by, created_at, updated_at)
         VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $8)")
        .bind(&id).bind(&payment.id).bind(new.amount.minor()).bind(new.reason).bind(new.forced)
        .bind(new.request_key).bind(new.created_by).bind(to_micros(now))
        .execute(&mut **c).await.map(drop))?;
    get_refund(c, &id, payment.currency).await
}

pub async fn get_refund(mut c: Conn<'_>, id: &str, currency: Currency) -> Result<Refund> {
    let q = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1");
    let row: Option<RefundRow> =
        sql!(&mut c, c => sqlx::query_as(&q).bind(id).fetch_optional(&mut **c).await)?;
    row.ok_or_else(|| Error::not_found("refund", id))?
        .into_refund(currency)
}

/// The refund a request (API key + Idempotency-Key) created, if any.
pub async fn find_refund_by_request(
    mut c: Conn<'_>,
    request_key: &str,
    currency: Currency,
) -> Result<Option<Refund>> {
    let q = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE request_key = $1");
    let row: Option<RefundRow> =
        sql!(&mut c, c => sqlx::query_as(&q).bind(request_key).fetch_optional(&mut **c).await)?;
    row.map(|r| r.into_refund(currency)).transpose()
}

pub async fn refunds_of(mut c: Conn<'_>, payment: &Payment) -> Result<Vec<Refund>> {
    let q = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE payment_id = $1 ORDER BY id");
    let rows: Vec<RefundRow> =
        sql!(&mut c, c => sqlx::query_as(&q).bind(&payment.id).fetch_all(&mut **c).await)?;
    rows.into_iter()
        .map(|r| r.into_refund(payment.currency))
        .collect()
}

pub async fn finish_refund(
    mut c: Conn<'_>,
    id: &str,
    status: RefundStatus,
    gateway_ref: Option<&str>,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    sql!(&mut c, c => sqlx::query(
        "UPDATE refunds SET status = $2, gateway_ref = $3, last_error = $4, updated_at = $5
         WHERE id = $1 AND status = 'pending'")
        .bind(id).bind(status.as_str()).bind(gateway_ref).bind(error).bind(to_micros(now))
        .execute(&mut **c).await.map(drop))?;
    Ok(())
}

/// Payments left `new` since before `cutoff`: created, but the gateway's
/// answer was never recorded (the process stopped in between).
pub async fn new_before(
    mut c: Conn<'_>,
    cutoff: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Payment>> {
    let q = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status = 'new' AND created_at < $1
         ORDER BY created_at, id LIMIT $2"
    );
    let rows: Vec<PaymentRow> = sql!(&mut c, c => sqlx::query_as(&q)
        .bind(to_micros(cutoff)).bind(limit as i64).fetch_all(&mut **c).await)?;
    rows.into_iter().map(PaymentRow::into_payment).collect()
}

/// Refunds left `pending` since before `cutoff` (their debit posted, the
/// gateway's answer never recorded), with the payment of each.
pub async fn pending_refunds_before(
    mut c: Conn<'_>,
    cutoff: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<(Payment, Refund)>> {
    let ids: Vec<(String, String)> = sql!(&mut c, c => sqlx::query_as(
        "SELECT id, payment_id FROM refunds WHERE status = 'pending' AND updated_at < $1
         ORDER BY updated_at, id LIMIT $2")
        .bind(to_micros(cutoff)).bind(limit as i64).fetch_all(&mut **c).await)?;
    let mut out = Vec::with_capacity(ids.len());
    for (refund, payment) in ids {
        let payment = get(c.reborrow(), &payment).await?;
        let refund = get_refund(c.reborrow(), &refund, payment.currency).await?;
        out.push((payment, refund));
    }
    Ok(out)
}

/// Records that a pending refund was tried again at `now`.
pub async fn touch_refund(mut c: Conn<'_>, id: &str, now: DateTime<Utc>) -> Result<()> {
    sql!(&mut c, c => sqlx::query("UPDATE refunds SET updated_at = $2 WHERE id = $1 AND status = 'pending'")
        .bind(id).bind(to_micros(now)).execute(&mut **c).await.map(drop))?;
    Ok(())
}
